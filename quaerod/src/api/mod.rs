//! The REST API on warp: `filters` (one function per route), `handlers` (plain async
//! functions on typed arguments, one engine call each), the generated OpenAPI document, and
//! one [`recover`] that turns every rejection into the JSON error body.

use std::convert::Infallible;

use quaero_shared::ErrorBody;
use warp::Rejection;
use warp::http::StatusCode;

use crate::engine::EngineError;

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
            EngineError::Store(_) | EngineError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
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

pub mod filters;
pub mod handlers;
mod openapi;

pub use openapi::ApiDoc;

/// Turns every rejection into `{"error": …}` with a fitting status.
pub async fn recover(err: Rejection) -> Result<warp::reply::Response, Infallible> {
    let mut allow = None;
    let (status, message) = if let Some(e) = err.find::<ApiError>() {
        (e.status, e.message.clone())
    } else if let Some(e) = err.find::<filters::MethodNotAllowed>() {
        allow = Some(e.allow.clone());
        (StatusCode::METHOD_NOT_ALLOWED, format!("method not allowed on this route (allowed: {})", e.allow))
    } else if err.find::<warp::ws::MissingConnectionUpgrade>().is_some() {
        (StatusCode::BAD_REQUEST, "not a WebSocket upgrade: Connection: upgrade is missing".to_string())
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
    if let Some(allow) = allow.and_then(|a: String| warp::http::HeaderValue::from_str(&a).ok()) {
        resp.headers_mut().insert(warp::http::header::ALLOW, allow);
    }
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
    use crate::engine::Engine;
    use serde_json::Value;
    use std::sync::Arc;
    use warp::Filter;

    struct Fixture {
        engine: Arc<Engine>,
        _dir: tempfile::TempDir,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let agg = Aggregator::new(std::time::Duration::from_secs(1), WsMode::Trigger);
        let store = crate::store::open(&dir.path().join("data"), agg.clone(), Default::default()).unwrap();
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
        use quaero_shared::{JobPath, Level, Originator};
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
            let store = f.engine.store().clone();
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
        let reads = f.engine.pages().reads();
        assert_eq!(page(step.clone()).await, before);
        assert_eq!(f.engine.pages().reads(), reads, "an unchanged page is shared, not read again");

        append(path, "late line").await;
        let after = page(step.clone()).await;
        assert_eq!(after.len(), before.len() + 1);
        assert_eq!(after.last().map(String::as_str), Some("late line"));

        // An event of the manager itself: the step's page stays shared, the manager's changes.
        let manager_page = page(mgr.clone()).await;
        let reads = f.engine.pages().reads();
        append(path.manager_path(), "manager line").await;
        assert_eq!(page(step.clone()).await, after);
        assert_eq!(f.engine.pages().reads(), reads, "another scope's event does not invalidate the step's page");
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

    /// `docs/openapi.json` is what the code generates. After changing a route or a wire
    /// type: `UPDATE_OPENAPI=1 cargo nextest run -p quaerod openapi` writes it.
    #[test]
    fn the_checked_in_openapi_document_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        let generated = openapi::document_json();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/openapi.json differs from the generated document; run UPDATE_OPENAPI=1 cargo nextest run -p quaerod openapi"
        );
        let doc: Value = serde_json::from_str(generated).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
    }

    /// The router serves every documented operation, and nothing it serves is undocumented.
    #[tokio::test]
    async fn every_route_served_is_documented_and_every_documented_route_is_served() {
        let f = fixture().await;
        let routes = crate::server::routes(f.engine.clone()).recover(recover);
        let doc: Value = serde_json::from_str(openapi::document_json()).unwrap();
        let mut documented = std::collections::BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let served = filters::documented_routes();
        assert_eq!(served, documented, "routes the router serves vs operations the document lists");
        for (method, path) in &documented {
            let concrete = path
                .replace("{job_id}", "m1")
                .replace("{definition_id}", "three")
                .replace("{file}", "queue.js")
                .replace("{queue}", "default");
            let r = warp::test::request()
                .method(&method.to_uppercase())
                .path(&concrete)
                .header("host", "127.0.0.1")
                .header("content-type", "application/json")
                .body("{}")
                .reply(&routes)
                .await;
            let body: Value = serde_json::from_slice(r.body()).unwrap_or(Value::Null);
            assert!(
                r.status() != StatusCode::METHOD_NOT_ALLOWED && body["error"] != "no such route",
                "{method} {concrete} is documented but not served: {} {body}",
                r.status()
            );
        }
    }

    /// What schemathesis found against the document, kept: each was a 500, a response the
    /// document did not allow, or bad input that was accepted.
    #[tokio::test]
    async fn fuzzer_findings_stay_fixed() {
        let f = fixture().await;
        let routes = crate::server::routes(f.engine.clone()).recover(recover);
        let send = |method: &str, path: &str, body: &'static str| {
            warp::test::request()
                .method(method)
                .path(path)
                .header("host", "127.0.0.1")
                .header("content-type", "application/json")
                .body(body)
        };
        // A GET of /ws that is not an upgrade was an unhandled rejection: 500.
        let r = send("GET", "/ws", "").header("connection", "keep-alive").reply(&routes).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        // A method no route serves on a served path: 405 with `Allow` (RFC 9110); DELETE
        // of /api/jobs/stats used to reach the job route ("stats" as an id) and say 415.
        for (method, path, allow) in [
            ("DELETE", "/api/jobs/stats", "GET"),
            ("TRACE", "/api/health", "GET"),
            ("PUT", "/api/jobs/m1", "DELETE, GET"),
            ("POST", "/queue", "GET, HEAD"),
        ] {
            let r = send(method, path, "").reply(&routes).await;
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_eq!(r.headers()["allow"], allow, "{method} {path}");
        }
        // A mutation's body is `{}` or nothing; other bytes were accepted and ignored.
        let id = run_three(&f).await;
        for body in ["\r", "[]", "x", "null"] {
            let r = send("POST", &format!("/api/jobs/{id}/rerun"), body).reply(&routes).await;
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "body {body:?}");
        }
        assert_eq!(
            send("POST", &format!("/api/jobs/{id}/rerun"), "").reply(&routes).await.status(),
            StatusCode::CREATED
        );
        // Query numbers past what the document allows are 400s, not read modulo or clamped.
        let r = send("GET", "/api/jobs?offset=9223372036854775808", "").reply(&routes).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = send("GET", &format!("/api/jobs/{id}/logs?after=9223372036854775808"), "").reply(&routes).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        // `status=` (empty) means every status, as the document's pattern allows.
        let r = send("GET", "/api/jobs?status=", "").reply(&routes).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = send("GET", "/api/jobs?status=running,", "").reply(&routes).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
}
