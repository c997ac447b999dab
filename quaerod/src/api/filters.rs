//! One function per route, each named after its handler. A route's method and path come
//! from the handler's `#[utoipa::path]` through [`endpoint`], so the router serves exactly
//! what the OpenAPI document lists.

#[cfg(test)]
use std::collections::BTreeSet;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use utoipa::openapi::path::HttpMethod;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Rejection};

use super::{ApiError, MAX_BODY, handlers, token_matches};
use crate::engine::Engine;

/// Every (path, method) that [`endpoint`] made a filter for, with the template it matches:
/// the router's own list, for the `Allow` header of a 405 and for a test that holds it
/// against the document. Keyed, so building the routes again adds nothing.
static SERVED: Mutex<BTreeMap<(String, &'static str), Served>> = Mutex::new(BTreeMap::new());

struct Served {
    template: Arc<[Segment]>,
    /// A page's GET answers HEAD too (not an operation of its own in the document).
    with_head: bool,
}

/// The (method, path) pairs the router serves and the document lists, as the document
/// spells them (`get`, `/api/jobs/{job_id}`).
#[cfg(test)]
pub(crate) fn documented_routes() -> BTreeSet<(String, String)> {
    let served = SERVED.lock().expect("served");
    served.keys().map(|(path, m)| (m.to_lowercase(), path.clone())).collect()
}

#[derive(Clone)]
enum Segment {
    Literal(String),
    /// A `{name}` segment and the values it accepts: ids have a shape, so a literal route
    /// beside a parameter (`/api/jobs/stats` beside `/api/jobs/{job_id}`) never overlaps it.
    Param(fn(&str) -> bool),
}

impl Segment {
    fn parse(template_segment: &str) -> Segment {
        match template_segment {
            "{job_id}" => Segment::Param(|s| quaero_shared::JobPath::parse(s).is_some()),
            "{definition_id}" | "{queue}" => Segment::Param(|s| {
                s.len() <= crate::engine::definition::MAX_ID_LEN
                    && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            }),
            p if p.starts_with('{') => Segment::Param(|_| true),
            l => Segment::Literal(l.to_string()),
        }
    }
}

fn template(path: &str) -> Arc<[Segment]> {
    path.trim_start_matches('/').split('/').filter(|s| !s.is_empty()).map(Segment::parse).collect()
}

/// Matches the method and path of the operation `P` (a handler's `#[utoipa::path]`) and
/// extracts its `{param}` segments in order.
pub(crate) fn endpoint<P: utoipa::Path>() -> impl Filter<Extract = (Vec<String>,), Error = Rejection> + Clone {
    route::<P>(false)
}

/// [`endpoint`] of a GET operation that answers HEAD like GET (hyper drops the body), for
/// `curl -I` and link checkers.
pub(crate) fn endpoint_with_head<P: utoipa::Path>() -> impl Filter<Extract = (Vec<String>,), Error = Rejection> + Clone
{
    route::<P>(true)
}

fn route<P: utoipa::Path>(with_head: bool) -> impl Filter<Extract = (Vec<String>,), Error = Rejection> + Clone {
    let path = P::path();
    let methods = P::methods();
    assert_eq!(methods.len(), 1, "{path}: one method per operation");
    let method = methods[0].clone();
    let template = template(&path);
    {
        let served = Served { template: template.clone(), with_head };
        SERVED.lock().expect("served").insert((path, method_name(&method)), served);
    }
    let method = match method {
        HttpMethod::Get if with_head => warp::get().or(warp::head()).unify().boxed(),
        m => method_filter(&m),
    };
    warp::path::full()
        .and_then(move |full: warp::path::FullPath| {
            let template = template.clone();
            async move { matches(&template, full.as_str()).ok_or_else(warp::reject::not_found) }
        })
        .and(method)
}

/// The `{param}` values of `path` if it has the template's shape (one trailing `/` allowed).
fn matches(template: &[Segment], path: &str) -> Option<Vec<String>> {
    let path = path.strip_prefix('/')?;
    let path = path.strip_suffix('/').unwrap_or(path);
    let mut params = Vec::new();
    let mut segs = (!path.is_empty()).then(|| path.split('/')).into_iter().flatten();
    for t in template {
        let seg = segs.next()?;
        match t {
            Segment::Literal(l) if l == seg => {}
            Segment::Param(accepts) if !seg.is_empty() && accepts(seg) => params.push(seg.to_string()),
            _ => return None,
        }
    }
    segs.next().is_none().then_some(params)
}

fn method_name(m: &HttpMethod) -> &'static str {
    match m {
        HttpMethod::Get => "GET",
        HttpMethod::Post => "POST",
        HttpMethod::Put => "PUT",
        HttpMethod::Delete => "DELETE",
        HttpMethod::Options => "OPTIONS",
        HttpMethod::Head => "HEAD",
        HttpMethod::Patch => "PATCH",
        HttpMethod::Trace => "TRACE",
    }
}

/// The last route: a path that some route serves, asked with a method none serves, gets
/// a 405 that lists in `Allow` the methods that are (RFC 9110); any other path a 404.
pub fn method_not_allowed() -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path::full().and(warp::method()).and_then(
        |full: warp::path::FullPath, method: warp::http::Method| async move {
            let mut methods: Vec<&str> = SERVED
                .lock()
                .expect("served")
                .iter()
                .filter(|(_, s)| matches(&s.template, full.as_str()).is_some())
                .flat_map(|((_, m), s)| [Some(*m), s.with_head.then_some("HEAD")])
                .flatten()
                .collect();
            methods.sort_unstable();
            methods.dedup();
            // A served method was refused by its route for another reason, which stands.
            if methods.is_empty() || methods.contains(&method.as_str()) {
                return Err(warp::reject::not_found());
            }
            Err(warp::reject::custom(MethodNotAllowed { allow: methods.join(", ") }))
        },
    )
}

/// A 405 with the methods the path does serve.
#[derive(Debug)]
pub struct MethodNotAllowed {
    pub allow: String,
}

impl warp::reject::Reject for MethodNotAllowed {}

fn method_filter(m: &HttpMethod) -> BoxedFilter<()> {
    match m {
        HttpMethod::Get => warp::get().boxed(),
        HttpMethod::Post => warp::post().boxed(),
        HttpMethod::Put => warp::put().boxed(),
        HttpMethod::Delete => warp::delete().boxed(),
        HttpMethod::Patch => warp::patch().boxed(),
        HttpMethod::Head => warp::head().boxed(),
        HttpMethod::Options => warp::options().boxed(),
        HttpMethod::Trace => panic!("no operation is served on TRACE"),
    }
}

/// An endpoint without path parameters.
pub(crate) fn endpoint0<P: utoipa::Path>() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    no_params(endpoint::<P>())
}

/// An endpoint with one path parameter (a job or definition id).
pub(crate) fn endpoint1<P: utoipa::Path>() -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    assert_eq!(P::path().matches('{').count(), 1, "{}: one path parameter", P::path());
    one_param(endpoint::<P>())
}

pub(crate) fn no_params(
    f: impl Filter<Extract = (Vec<String>,), Error = Rejection> + Clone,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    f.map(|_: Vec<String>| ()).untuple_one()
}

pub(crate) fn one_param(
    f: impl Filter<Extract = (Vec<String>,), Error = Rejection> + Clone,
) -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    f.map(|mut p: Vec<String>| p.swap_remove(0))
}

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

/// [`auth`], or, for a browser's WebSocket (which cannot set headers), the token as a
/// subprotocol (`bearer.<token>` or the bare token) or as `?token=`.
pub fn auth_or_browser_token(token: Option<Arc<str>>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    #[derive(serde::Deserialize)]
    struct TokenQuery {
        token: Option<String>,
    }
    let browser = warp::header::optional::<String>("sec-websocket-protocol")
        .and(warp::query::<TokenQuery>().or(warp::any().map(|| TokenQuery { token: None })).unify())
        .and_then({
            let token = token.clone();
            move |proto: Option<String>, q: TokenQuery| {
                let token = token.clone();
                async move {
                    let Some(t) = &token else { return Ok(()) };
                    let in_protocol = proto.as_deref().is_some_and(|p| {
                        p.split(',').map(str::trim).any(|p| token_matches(p.strip_prefix("bearer.").unwrap_or(p), t))
                    });
                    if in_protocol || q.token.as_deref().is_some_and(|g| token_matches(g, t)) {
                        Ok(())
                    } else {
                        Err(ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"))
                    }
                }
            }
        })
        .untuple_one();
    auth(token).or(browser).unify()
}

/// Mutations must say `Content-Type: application/json`: a browser page on another
/// origin cannot send that without a CORS preflight, which we never grant.
pub fn json_content_type() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and_then(|ct: Option<String>| async move {
            match ct {
                Some(ct) if ct.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")) => {
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

/// A mutation's body, for routes whose body carries nothing yet: empty, or a JSON object
/// (`{}`), at most [`MAX_BODY`]; anything else is a 400. It is read whole before the
/// response, also when unused: a body left unread may arrive after the response went out,
/// and hyper then closes the keep-alive connection without a `Connection: close`, so a
/// pooled client's next request on it fails.
pub fn object_body() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    whole_body()
        .and_then(|bytes: Vec<u8>| async move {
            if bytes.is_empty() {
                return Ok(());
            }
            match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(serde_json::Value::Object(_)) => Ok(()),
                Ok(_) => Err(ApiError::bad_request("body: must be a JSON object, such as {}")),
                Err(e) => Err(ApiError::bad_request(format!("body: not JSON: {e}"))),
            }
        })
        .untuple_one()
}

/// A mutation's body decoded as `T`; empty is `T::default()`. A bad field is a 400
/// naming it (`params.env: …`). Read whole, as [`object_body`] says why.
pub fn typed_body<T>() -> impl Filter<Extract = (T,), Error = Rejection> + Clone
where
    T: serde::de::DeserializeOwned + Default + Send,
{
    whole_body().and_then(|bytes: Vec<u8>| async move {
        if bytes.is_empty() {
            return Ok::<T, Rejection>(T::default());
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let inner = e.inner().to_string();
            // serde's words for a value of none of a parameter's types.
            let inner = if inner.contains("untagged enum ParamValue") {
                "must be text, a number or true/false".to_string()
            } else {
                inner
            };
            match e.path().to_string().as_str() {
                "." => ApiError::bad_request(format!("body: {inner}")),
                path => ApiError::bad_request(format!("{path}: {inner}")),
            }
        })?;
        de.end().map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
        Ok(value)
    })
}

/// The body, read whole (at most [`MAX_BODY`]).
fn whole_body() -> impl Filter<Extract = (Vec<u8>,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and_then(|len: Option<u64>| async move {
            match len {
                Some(n) if n > MAX_BODY => Err(too_large()),
                _ => Ok(()),
            }
        })
        .untuple_one()
        .and(warp::body::stream())
        .and_then(read_whole)
}

async fn read_whole<B: bytes::Buf>(
    body: impl futures_util::Stream<Item = Result<B, warp::Error>>,
) -> Result<Vec<u8>, Rejection> {
    use bytes::BufMut;
    use futures_util::StreamExt;
    let mut body = std::pin::pin!(body);
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        if (bytes.len() + chunk.remaining()) as u64 > MAX_BODY {
            return Err(too_large());
        }
        bytes.put(chunk);
    }
    Ok(bytes)
}

fn too_large() -> Rejection {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("body larger than {MAX_BODY} bytes"))
}

fn query() -> impl Filter<Extract = (HashMap<String, String>,), Error = Infallible> + Clone {
    warp::query::<HashMap<String, String>>().or(warp::any().map(HashMap::new)).unify()
}

/// What every route but the health check shares: the token, then the engine.
struct Ctx {
    engine: Arc<Engine>,
    token: Option<Arc<str>>,
}

impl Ctx {
    fn guarded(&self) -> impl Filter<Extract = (Arc<Engine>,), Error = Rejection> + Clone + use<> {
        auth(self.token.clone()).and(with_engine(self.engine.clone()))
    }

    /// A mutation whose body carries nothing (yet): JSON content type, `{}` or no body.
    fn mutation(&self) -> impl Filter<Extract = (Arc<Engine>,), Error = Rejection> + Clone + use<> {
        auth(self.token.clone()).and(json_content_type()).and(object_body()).and(with_engine(self.engine.clone()))
    }
}

/// GET /api/health
pub fn health() -> BoxedFilter<(warp::reply::Response,)> {
    endpoint0::<handlers::__path_health>().and_then(handlers::health).boxed()
}

/// GET /api/openapi.json
fn openapi(c: &Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    endpoint0::<handlers::__path_openapi>().and(auth(c.token.clone())).and_then(handlers::openapi).boxed()
}

/// GET /api/queues
fn queues(c: &Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    endpoint0::<handlers::__path_queues>().and(c.guarded()).and_then(handlers::queues).boxed()
}

/// POST /api/queues/{queue}/pause
fn pause_queue(c: &Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    endpoint1::<handlers::__path_pause_queue>().and(c.mutation()).and_then(handlers::pause_queue).boxed()
}

/// POST /api/queues/{queue}/resume
fn resume_queue(c: &Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    endpoint1::<handlers::__path_resume_queue>().and(c.mutation()).and_then(handlers::resume_queue).boxed()
}

/// GET /api/jobs/stats
fn stats(c: &Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    endpoint0::<handlers::__path_stats>().and(c.guarded()).and_then(handlers::stats).boxed()
}

/// GET /api/jobs
fn list_jobs(c: &Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    endpoint0::<handlers::__path_list_jobs>().and(c.guarded()).and(query()).and_then(handlers::list_jobs).boxed()
}

/// GET /api/jobs/{job_id}
fn get_job(c: &Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    endpoint1::<handlers::__path_get_job>().and(c.guarded()).and_then(handlers::get_job).boxed()
}

/// GET /api/jobs/{job_id}/logs
fn logs(c: &Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    endpoint1::<handlers::__path_logs>().and(c.guarded()).and(query()).and_then(handlers::logs).boxed()
}

/// POST /api/jobs/{job_id}/cancel
fn cancel(c: &Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    endpoint1::<handlers::__path_cancel>().and(c.mutation()).and_then(handlers::cancel).boxed()
}

/// DELETE /api/jobs/{job_id}
fn delete_job(c: &Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    endpoint1::<handlers::__path_delete_job>().and(c.mutation()).and_then(handlers::delete_job).boxed()
}

/// DELETE /api/jobs
fn delete_jobs(c: &Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    endpoint0::<handlers::__path_delete_jobs>().and(c.mutation()).and(query()).and_then(handlers::delete_jobs).boxed()
}

/// POST /api/jobs/{job_id}/rerun
fn rerun(c: &Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    endpoint1::<handlers::__path_rerun>().and(c.mutation()).and_then(handlers::rerun).boxed()
}

/// GET /api/job-definitions
fn list_definitions(c: &Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    endpoint0::<handlers::__path_list_definitions>().and(c.guarded()).and_then(handlers::list_definitions).boxed()
}

/// POST /api/job-definitions (JSON body, at most [`MAX_BODY`])
fn put_definition(c: &Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    endpoint0::<handlers::__path_put_definition>()
        .and(auth(c.token.clone()))
        .and(json_content_type())
        .and(with_engine(c.engine.clone()))
        .and(warp::body::content_length_limit(MAX_BODY))
        .and(warp::body::bytes())
        .and_then(handlers::put_definition)
        .boxed()
}

/// GET /api/job-definitions/{definition_id}
fn get_definition(c: &Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    endpoint1::<handlers::__path_get_definition>().and(c.guarded()).and_then(handlers::get_definition).boxed()
}

/// POST /api/job-definitions/{definition_id}/enable
fn enable_definition(c: &Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    endpoint1::<handlers::__path_enable_definition>().and(c.mutation()).and_then(handlers::enable_definition).boxed()
}

/// POST /api/job-definitions/{definition_id}/disable
fn disable_definition(c: &Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    endpoint1::<handlers::__path_disable_definition>().and(c.mutation()).and_then(handlers::disable_definition).boxed()
}

/// DELETE /api/job-definitions/{definition_id}
fn delete_definition(c: &Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    endpoint1::<handlers::__path_delete_definition>().and(c.mutation()).and_then(handlers::delete_definition).boxed()
}

/// POST /api/job-definitions/{definition_id}/execute
fn execute(c: &Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    endpoint1::<handlers::__path_execute>()
        .and(auth(c.token.clone()))
        .and(json_content_type())
        .and(typed_body::<quaero_shared::ExecuteRequest>())
        .and(with_engine(c.engine.clone()))
        .and_then(handlers::execute)
        .boxed()
}

/// GET /metrics
pub fn metrics(engine: Arc<Engine>, token: Option<Arc<str>>) -> BoxedFilter<(warp::reply::Response,)> {
    let c = Ctx { engine, token };
    endpoint0::<handlers::__path_metrics>().and(c.guarded()).and_then(handlers::metrics).boxed()
}

/// Every `/api` route. Their paths never overlap (ids have a shape, see [`Segment`]), so
/// the order does not matter.
/// Boxed (here and halfway) so that the chain's type stays small enough for the compiler
/// to reason about in the server's composition.
pub fn api(engine: Arc<Engine>, token: Option<Arc<str>>) -> BoxedFilter<(warp::reply::Response,)> {
    let c = Ctx { engine, token };
    let jobs = health()
        .or(openapi(&c))
        .unify()
        .or(stats(&c))
        .unify()
        .or(list_jobs(&c))
        .unify()
        .or(logs(&c))
        .unify()
        .or(get_job(&c))
        .unify()
        .or(cancel(&c))
        .unify()
        .or(delete_job(&c))
        .unify()
        .or(delete_jobs(&c))
        .unify()
        .or(rerun(&c))
        .unify()
        .boxed();
    jobs.or(list_definitions(&c))
        .unify()
        .or(put_definition(&c))
        .unify()
        .or(get_definition(&c))
        .unify()
        .or(delete_definition(&c))
        .unify()
        .or(execute(&c))
        .unify()
        .or(enable_definition(&c))
        .unify()
        .or(disable_definition(&c))
        .unify()
        .or(queues(&c))
        .unify()
        .or(pause_queue(&c))
        .unify()
        .or(resume_queue(&c))
        .unify()
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_their_templates_only() {
        let logs = template("/api/jobs/{job_id}/logs");
        assert_eq!(matches(&logs, "/api/jobs/m1-s2/logs"), Some(vec!["m1-s2".to_string()]));
        assert_eq!(matches(&logs, "/api/jobs/m1/logs/"), Some(vec!["m1".to_string()]));
        for other in [
            "/api/jobs//logs",
            "/api/jobs/m1",
            "/api/jobs/m1/logs/x",
            "/api/job/m1/logs",
            "/api/jobs/stats/logs",
            "",
            "/",
        ] {
            assert_eq!(matches(&logs, other), None, "{other}");
        }
        assert_eq!(matches(&template("/"), "/"), Some(vec![]));
        assert_eq!(matches(&template("/"), "/queue"), None);
        let def = template("/api/job-definitions/{definition_id}");
        assert_eq!(matches(&def, "/api/job-definitions/nightly_2-x"), Some(vec!["nightly_2-x".to_string()]));
        assert_eq!(matches(&def, "/api/job-definitions/Nightly"), None);
    }
}
