//! The REST API on warp: `filters` (one function per route), `handlers` (plain async
//! functions on typed arguments) and one [`recover`] that turns every rejection into the
//! JSON error body.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use quaero_shared::{
    CancelResponse, DefinitionsList, DeleteResponse, ErrorBody, ExecuteResponse, Health, JobDefinition, JobStatus,
    JobsList, Level, Order, RerunResponse,
};
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::engine::{Engine, EngineError};
use crate::page_cache::PageKey;
use crate::store::LogQuery;
use crate::wire::LogsBody;

/// JSON bodies larger than this are refused (413).
pub const MAX_BODY: u64 = 1024 * 1024;
pub const DEFAULT_LOG_LIMIT: usize = 1000;
pub const MAX_LOG_LIMIT: usize = 5000;
pub const DEFAULT_JOBS_LIMIT: usize = 50;
pub const MAX_JOBS_LIMIT: usize = 1000;

/// An error a handler returns: status and message for the JSON body.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    pub fn forbidden(msg: impl Into<String>) -> Rejection {
        warp::reject::custom(ApiError { status: StatusCode::FORBIDDEN, message: msg.into() })
    }
    pub fn bad_request(msg: impl Into<String>) -> Rejection {
        warp::reject::custom(ApiError { status: StatusCode::BAD_REQUEST, message: msg.into() })
    }
    #[allow(clippy::new_ret_no_self)] // builds the rejection that carries an ApiError
    fn new(status: StatusCode, msg: impl Into<String>) -> Rejection {
        warp::reject::custom(ApiError { status, message: msg.into() })
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::NotFound(_) => StatusCode::NOT_FOUND,
            EngineError::Conflict(_) => StatusCode::CONFLICT,
            EngineError::Invalid(_) => StatusCode::BAD_REQUEST,
            EngineError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "request failed");
        }
        ApiError { status, message: e.to_string() }
    }
}

fn reject(e: EngineError) -> Rejection {
    warp::reject::custom(ApiError::from(e))
}

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> warp::reply::Response {
    json_bytes(status, crate::wire::to_json(body))
}

/// A body already serialised as JSON.
fn json_bytes(status: StatusCode, body: impl Into<bytes::Bytes>) -> warp::reply::Response {
    warp::http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.into().into())
        .expect("response")
}

/// Compares in constant time, so response timing does not reveal how much of a guessed
/// token was right.
pub fn token_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut diff = (a.len() ^ b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

pub mod filters {
    use super::*;

    pub fn with_engine(engine: Arc<Engine>) -> impl Filter<Extract = (Arc<Engine>,), Error = Infallible> + Clone {
        warp::any().map(move || engine.clone())
    }

    /// Requires `Authorization: Bearer <token>` when a token is configured.
    pub fn auth(token: Option<Arc<str>>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
        warp::header::optional::<String>("authorization")
            .and_then(move |h: Option<String>| {
                let token = token.clone();
                async move {
                    match &token {
                        None => Ok(()),
                        Some(t) => match h.as_deref().and_then(|h| h.strip_prefix("Bearer ")) {
                            Some(given) if token_matches(given.trim(), t) => Ok(()),
                            _ => Err(ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")),
                        },
                    }
                }
            })
            .untuple_one()
    }

    /// Mutations must say `Content-Type: application/json`: a browser page on another
    /// origin cannot send that without a CORS preflight, which we never grant.
    pub fn json_content_type() -> impl Filter<Extract = (), Error = Rejection> + Clone {
        warp::header::optional::<String>("content-type")
            .and_then(|ct: Option<String>| async move {
                match ct {
                    Some(ct)
                        if ct.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")) =>
                    {
                        Ok(())
                    }
                    _ => Err(ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "mutating requests need Content-Type: application/json",
                    )),
                }
            })
            .untuple_one()
    }

    /// Reads and drops a mutation's body (at most [`MAX_BODY`]) for routes that take none.
    /// A body left unread may arrive after the response went out, and hyper then closes the
    /// keep-alive connection without a `Connection: close`: a pooled client's next request
    /// on it fails.
    pub fn drain_body() -> impl Filter<Extract = (), Error = Rejection> + Clone {
        warp::header::optional::<u64>("content-length")
            .and_then(|len: Option<u64>| async move {
                match len {
                    Some(n) if n > MAX_BODY => Err(too_large()),
                    _ => Ok(()),
                }
            })
            .untuple_one()
            .and(warp::body::stream())
            .and_then(drain)
            .untuple_one()
    }

    async fn drain<B: bytes::Buf>(
        body: impl futures_util::Stream<Item = Result<B, warp::Error>>,
    ) -> Result<(), Rejection> {
        use futures_util::StreamExt;
        let mut body = std::pin::pin!(body);
        let mut read = 0usize;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
            read += chunk.remaining();
            if read as u64 > MAX_BODY {
                return Err(too_large());
            }
        }
        Ok(())
    }

    fn too_large() -> Rejection {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("body larger than {MAX_BODY} bytes"))
    }

    fn query() -> impl Filter<Extract = (HashMap<String, String>,), Error = Infallible> + Clone {
        warp::query::<HashMap<String, String>>().or(warp::any().map(HashMap::new)).unify()
    }

    /// Every API route.
    pub fn api(
        engine: Arc<Engine>,
        token: Option<Arc<str>>,
    ) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
        let health = warp::path!("api" / "health")
            .and(warp::get())
            .map(|| json(StatusCode::OK, &Health { status: "ok".into(), version: env!("CARGO_PKG_VERSION").into() }));
        let e = || with_engine(engine.clone());
        let a = || auth(token.clone());
        let mutate = || json_content_type();
        let drained = || drain_body();

        // GET /api/jobs/stats
        let stats = warp::path!("api" / "jobs" / "stats")
            .and(warp::get())
            .and(a())
            .and(e())
            .map(|eng: Arc<Engine>| json(StatusCode::OK, &eng.store.stats()));
        // GET /api/jobs
        let list =
            warp::path!("api" / "jobs").and(warp::get()).and(a()).and(e()).and(query()).and_then(handlers::list_jobs);
        // GET /api/jobs/{id}
        let get = warp::path!("api" / "jobs" / String).and(warp::get()).and(a()).and(e()).and_then(handlers::get_job);
        // GET /api/jobs/{id}/logs
        let logs = warp::path!("api" / "jobs" / String / "logs")
            .and(warp::get())
            .and(a())
            .and(e())
            .and(query())
            .and_then(handlers::logs);
        // POST /api/jobs/{id}/cancel
        let cancel = warp::path!("api" / "jobs" / String / "cancel")
            .and(warp::post())
            .and(a())
            .and(mutate())
            .and(drained())
            .and(e())
            .and_then(handlers::cancel);
        // DELETE /api/jobs/{id}
        let delete = warp::path!("api" / "jobs" / String)
            .and(warp::delete())
            .and(a())
            .and(mutate())
            .and(drained())
            .and(e())
            .and_then(handlers::delete_job);
        // POST /api/jobs/{id}/rerun
        let rerun = warp::path!("api" / "jobs" / String / "rerun")
            .and(warp::post())
            .and(a())
            .and(mutate())
            .and(drained())
            .and(e())
            .and_then(handlers::rerun);
        // GET /api/job-definitions
        let defs =
            warp::path!("api" / "job-definitions").and(warp::get()).and(a()).and(e()).map(|eng: Arc<Engine>| {
                json(StatusCode::OK, &DefinitionsList { job_definitions: eng.list_definitions() })
            });
        // POST /api/job-definitions
        let put_def = warp::path!("api" / "job-definitions")
            .and(warp::post())
            .and(a())
            .and(mutate())
            .and(e())
            .and(warp::body::content_length_limit(MAX_BODY))
            .and(warp::body::bytes())
            .and_then(handlers::put_definition);
        // GET /api/job-definitions/{id}
        let get_def = warp::path!("api" / "job-definitions" / String).and(warp::get()).and(a()).and(e()).and_then(
            |id: String, eng: Arc<Engine>| async move {
                eng.get_definition(&id).map(|d| json(StatusCode::OK, &d)).map_err(reject)
            },
        );
        // DELETE /api/job-definitions/{id}
        let del_def = warp::path!("api" / "job-definitions" / String)
            .and(warp::delete())
            .and(a())
            .and(mutate())
            .and(drained())
            .and(e())
            .and_then(|id: String, eng: Arc<Engine>| async move {
                eng.delete_definition(&id).map_err(reject)?;
                Ok::<_, Rejection>(json(StatusCode::OK, &serde_json::json!({ "id": id, "deleted": true })))
            });
        // POST /api/job-definitions/{id}/execute
        let execute = warp::path!("api" / "job-definitions" / String / "execute")
            .and(warp::post())
            .and(a())
            .and(mutate())
            .and(drained())
            .and(e())
            .and_then(handlers::execute);

        health
            .or(stats)
            .or(list)
            .or(logs)
            .or(get)
            .or(cancel)
            .or(delete)
            .or(rerun)
            .or(defs)
            .or(put_def)
            .or(get_def)
            .or(del_def)
            .or(execute)
    }
}

pub mod handlers {
    use super::*;

    fn positive(name: &str, v: &str) -> Result<usize, Rejection> {
        match v.trim().parse::<i64>() {
            Ok(n) if n > 0 => Ok(n as usize),
            _ => Err(ApiError::bad_request(format!("{name}: must be a positive integer, got {v:?}"))),
        }
    }

    pub async fn list_jobs(eng: Arc<Engine>, q: HashMap<String, String>) -> Result<warp::reply::Response, Rejection> {
        let limit = match q.get("limit") {
            None => DEFAULT_JOBS_LIMIT,
            Some(v) => positive("limit", v)?.min(MAX_JOBS_LIMIT),
        };
        let offset = match q.get("offset") {
            None => 0,
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("offset: must be a non-negative integer, got {v:?}")))?,
        };
        let mut statuses = Vec::new();
        if let Some(s) = q.get("status") {
            for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                statuses.push(part.parse::<JobStatus>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "status: {part:?} is not one of pending, running, completed, failed, cancelled"
                    ))
                })?);
            }
        }
        let parent = q.get("parent_id").map(String::as_str);
        let eng2 = eng.clone();
        let parent_owned = parent.map(str::to_string);
        let (jobs, total) =
            tokio::task::spawn_blocking(move || eng2.list_jobs(parent_owned.as_deref(), &statuses, limit, offset))
                .await
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
                .map_err(reject)?;
        Ok(json(StatusCode::OK, &JobsList { jobs, total_count: total, limit: limit as u64, offset: offset as u64 }))
    }

    pub async fn get_job(id: String, eng: Arc<Engine>) -> Result<warp::reply::Response, Rejection> {
        eng.get_job(&id).map(|j| json(StatusCode::OK, &j)).map_err(reject)
    }

    pub async fn logs(
        id: String,
        eng: Arc<Engine>,
        q: HashMap<String, String>,
    ) -> Result<warp::reply::Response, Rejection> {
        let limit = match q.get("limit") {
            None => DEFAULT_LOG_LIMIT,
            Some(v) => positive("limit", v)?.min(MAX_LOG_LIMIT),
        };
        let order = match q.get("order").map(String::as_str) {
            None | Some("desc") => Order::Desc,
            Some("asc") => Order::Asc,
            Some(o) => return Err(ApiError::bad_request(format!("order: must be asc or desc, got {o:?}"))),
        };
        let after =
            match q.get("after") {
                None => None,
                Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("after: must be a seq number (0 or more), got {v:?}"))
                })?),
            };
        let (min_level, level_name) = match q.get("level").map(String::as_str) {
            None | Some("all") => (None, "all".to_string()),
            Some(l @ ("debug" | "info" | "warn" | "error")) => (l.parse::<Level>().ok(), l.to_string()),
            Some(l) => {
                return Err(ApiError::bad_request(format!(
                    "level: must be debug, info, warn, error or all, got {l:?}"
                )));
            }
        };
        let (path, m) = eng.resolve(&id).map_err(reject)?;
        // Read before the page is: see page_cache for why that order makes sharing safe.
        let version = eng.store.version(path);
        let query = LogQuery { path, limit, order, after, min_level };
        let key = PageKey { id: id.clone(), query };
        let store = eng.store.clone();
        let read = || async move {
            tokio::task::spawn_blocking(move || {
                let page = store.read_logs(&query).map_err(|e| reject(e.into()))?;
                // `after` reads are always oldest first.
                let order = if after.is_some() { Order::Asc } else { order };
                let body = LogsBody::new(&id, &m, &page.events, limit as u64, order, &level_name, page.last_seq);
                Ok::<_, Rejection>(bytes::Bytes::from(crate::wire::to_json(&body)))
            })
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        };
        let bytes = eng.pages.get_or_read(key, version, read).await?;
        Ok(json_bytes(StatusCode::OK, bytes))
    }

    pub async fn cancel(id: String, eng: Arc<Engine>) -> Result<warp::reply::Response, Rejection> {
        let message = eng.cancel(&id).await.map_err(reject)?;
        Ok(json(StatusCode::OK, &CancelResponse { job_id: id, message }))
    }

    pub async fn delete_job(id: String, eng: Arc<Engine>) -> Result<warp::reply::Response, Rejection> {
        let (deleted_jobs, deleted_events) = eng.delete(&id).await.map_err(reject)?;
        Ok(json(StatusCode::OK, &DeleteResponse { job_id: id, deleted_jobs, deleted_events }))
    }

    pub async fn rerun(id: String, eng: Arc<Engine>) -> Result<warp::reply::Response, Rejection> {
        let new_job_id = eng.rerun(&id).await.map_err(reject)?;
        Ok(json(StatusCode::CREATED, &RerunResponse { original_job_id: id, new_job_id }))
    }

    pub async fn execute(id: String, eng: Arc<Engine>) -> Result<warp::reply::Response, Rejection> {
        let job_id = eng.execute(&id).await.map_err(reject)?;
        Ok(json(StatusCode::ACCEPTED, &ExecuteResponse { job_id }))
    }

    pub async fn put_definition(eng: Arc<Engine>, body: bytes::Bytes) -> Result<warp::reply::Response, Rejection> {
        let def: JobDefinition =
            serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid job definition: {e}")))?;
        let info = eng.put_definition(def).map_err(reject)?;
        Ok(json(StatusCode::CREATED, &info))
    }
}

/// Turns every rejection into `{"error": …}` with a fitting status.
pub async fn recover(err: Rejection) -> Result<warp::reply::Response, Infallible> {
    let (status, message) = if let Some(e) = err.find::<ApiError>() {
        (e.status, e.message.clone())
    } else if err.is_not_found() {
        (StatusCode::NOT_FOUND, "no such route".to_string())
    } else if err.find::<warp::reject::PayloadTooLarge>().is_some() {
        (StatusCode::PAYLOAD_TOO_LARGE, format!("body larger than {MAX_BODY} bytes"))
    } else if err.find::<warp::reject::LengthRequired>().is_some() {
        (StatusCode::LENGTH_REQUIRED, "a Content-Length is required".to_string())
    } else if err.find::<warp::reject::UnsupportedMediaType>().is_some() {
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json".to_string())
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        (StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route".to_string())
    } else if let Some(e) = err.find::<warp::reject::InvalidQuery>() {
        (StatusCode::BAD_REQUEST, e.to_string())
    } else if let Some(e) = err.find::<warp::reject::InvalidHeader>() {
        (StatusCode::BAD_REQUEST, e.to_string())
    } else if let Some(e) = err.find::<warp::reject::MissingHeader>() {
        (StatusCode::BAD_REQUEST, e.to_string())
    } else {
        tracing::warn!(?err, "unhandled rejection");
        (StatusCode::INTERNAL_SERVER_ERROR, "internal error".to_string())
    };
    let mut resp = json(status, &ErrorBody { error: message });
    if status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::LENGTH_REQUIRED {
        // The body was not read: the connection cannot be reused, so say so rather than
        // let the client send its next request on a socket that is about to close.
        resp.headers_mut().insert(warp::http::header::CONNECTION, warp::http::HeaderValue::from_static("close"));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    //! The filters called in-process with `warp::test::request()`: parameter checking,
    //! content types and auth, without a socket.

    use super::*;
    use crate::aggregator::Aggregator;
    use crate::config::{Config, WsMode};
    use crate::store::Store;
    use serde_json::Value;

    struct Fixture {
        engine: Arc<Engine>,
        _dir: tempfile::TempDir,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let agg = Aggregator::new(std::time::Duration::from_secs(1), WsMode::Trigger);
        let store = Store::open(&dir.path().join("data"), agg.clone()).unwrap();
        let config = Config { definitions_dir: dir.path().join("none"), ..Config::default() };
        let engine = Engine::new(store, agg, config);
        engine
            .put_definition(
                serde_json::from_value(serde_json::json!({
                    "id": "three", "steps": [{"name": "e", "type": "emit", "config": {"count": 3}}]
                }))
                .unwrap(),
            )
            .unwrap();
        Fixture { engine, _dir: dir }
    }

    async fn call(
        f: &Fixture,
        token: Option<&str>,
        req: warp::test::RequestBuilder,
    ) -> (StatusCode, Value, warp::http::HeaderMap) {
        let routes = filters::api(f.engine.clone(), token.map(Arc::from)).recover(recover);
        let r = req.reply(&routes).await;
        let body = serde_json::from_slice(r.body()).unwrap_or(Value::Null);
        (r.status(), body, r.headers().clone())
    }

    async fn run_three(f: &Fixture) -> String {
        let (s, b, _) = call(
            f,
            None,
            warp::test::request()
                .method("POST")
                .path("/api/job-definitions/three/execute")
                .header("content-type", "application/json")
                .body("{}"),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        let id = b["job_id"].as_str().unwrap().to_string();
        for _ in 0..200 {
            let (_, b, _) = call(f, None, warp::test::request().path(&format!("/api/jobs/{id}"))).await;
            if b["status"] == "completed" {
                return id;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("{id} did not complete");
    }

    #[tokio::test]
    async fn bad_log_parameters_are_400s_that_name_them() {
        let f = fixture().await;
        let id = run_three(&f).await;
        for (q, name) in [
            ("limit=abc", "limit"),
            ("limit=0", "limit"),
            ("limit=-1", "limit"),
            ("level=loud", "level"),
            ("order=up", "order"),
            ("after=x", "after"),
        ] {
            let (s, b, _) = call(&f, None, warp::test::request().path(&format!("/api/jobs/{id}/logs?{q}"))).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {b}");
            assert!(b["error"].as_str().unwrap().starts_with(name), "{q}: {b}");
        }
        let (s, b, _) = call(&f, None, warp::test::request().path(&format!("/api/jobs/{id}/logs?limit=99999"))).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b["limit"], 5000);
        // After reads are oldest first whatever `order` says.
        let (_, b, _) = call(&f, None, warp::test::request().path(&format!("/api/jobs/{id}-s1/logs?after=0"))).await;
        let seqs: Vec<u64> = b["logs"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert!(seqs.len() >= 3 && seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        let (s, _, _) = call(&f, None, warp::test::request().path("/api/jobs/m999/logs")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }

    /// Logs pages are shared between requests only while nothing changed in their scope:
    /// an event in the scope is in the very next read; events elsewhere do not cost a read.
    #[tokio::test]
    async fn shared_pages_never_hide_a_commit() {
        use crate::store::NewEvent;
        use quaero_shared::{JobPath, Originator};
        let f = fixture().await;
        let mgr = run_three(&f).await;
        let step = format!("{mgr}-s1");
        let path = JobPath::parse(&step).unwrap();
        let page = |id: String| {
            let f = &f;
            async move {
                let (s, b, _) =
                    call(f, None, warp::test::request().path(&format!("/api/jobs/{id}/logs?limit=100&order=asc")))
                        .await;
                assert_eq!(s, StatusCode::OK, "{b}");
                let msgs: Vec<String> =
                    b["logs"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().to_string()).collect();
                msgs
            }
        };
        let append = |p: JobPath, message: &str| {
            let store = f.engine.store.clone();
            let e = NewEvent {
                path: p,
                level: Level::Info,
                originator: Originator::Step,
                ts_ms: 0,
                message: message.into(),
            };
            async move {
                store.append(vec![e]).await.unwrap();
                store.sync().await.unwrap();
            }
        };
        let before = page(step.clone()).await;
        let reads = f.engine.pages.reads();
        assert_eq!(page(step.clone()).await, before);
        assert_eq!(f.engine.pages.reads(), reads, "an unchanged page is shared, not read again");

        append(path, "late line").await;
        let after = page(step.clone()).await;
        assert_eq!(after.len(), before.len() + 1);
        assert_eq!(after.last().map(String::as_str), Some("late line"));

        // An event of the manager itself: the step's page stays shared, the manager's changes.
        let manager_page = page(mgr.clone()).await;
        let reads = f.engine.pages.reads();
        append(path.manager_path(), "manager line").await;
        assert_eq!(page(step.clone()).await, after);
        assert_eq!(f.engine.pages.reads(), reads, "another scope's event does not invalidate the step's page");
        let manager_after = page(mgr.clone()).await;
        assert_eq!(manager_after.len(), manager_page.len() + 1);
        assert_eq!(manager_after.last().map(String::as_str), Some("manager line"));
        // Events of a step are in its manager's page too.
        append(path, "step line").await;
        assert_eq!(page(mgr.clone()).await.last().map(String::as_str), Some("step line"));
    }

    #[tokio::test]
    async fn mutations_need_json_and_the_token() {
        let f = fixture().await;
        let (s, _, _) = call(
            &f,
            None,
            warp::test::request()
                .method("POST")
                .path("/api/job-definitions/three/execute")
                .header("content-type", "text/plain")
                .body("{}"),
        )
        .await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let (_, list, _) = call(&f, None, warp::test::request().path("/api/jobs")).await;
        assert_eq!(list["total_count"], 0, "the refused request ran nothing: {list}");

        let token = Some("0123456789abcdef");
        let (s, _, _) = call(&f, token, warp::test::request().path("/api/jobs")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, _, _) =
            call(&f, token, warp::test::request().path("/api/jobs").header("authorization", "Bearer nope")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, _, h) = call(
            &f,
            token,
            warp::test::request()
                .path("/api/jobs")
                .header("authorization", "Bearer 0123456789abcdef")
                .header("origin", "http://evil.example"),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert!(h.get("access-control-allow-origin").is_none());
        let (s, _, _) = call(&f, token, warp::test::request().path("/api/health")).await;
        assert_eq!(s, StatusCode::OK);
    }
}
