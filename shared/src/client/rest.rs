//! Typed REST calls against `quaerod`. Errors keep the cases callers act on apart: a 404
//! is an exit code for the tail and a message for the dashboard, while a transport error
//! means "retry".

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{
    BulkDeleteResponse, CancelResponse, DefinitionInfo, DefinitionsList, DeleteResponse, ErrorBody, ExecuteRequest,
    ExecuteResponse, Job, JobStatus, JobsList, Level, LogsResponse, Order, QueueInfo, QueuesList, RerunResponse, Stats,
};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server could not be reached or the connection broke: worth retrying.
    #[error("server unreachable: {0}")]
    Unreachable(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("HTTP {status}: {message}")]
    Status { status: u16, message: String },
    #[error("bad response: {0}")]
    Decode(String),
    /// The server address is not usable: not worth retrying.
    #[error("--server {0}")]
    BadServer(String),
    /// A wait ([`Client::wait_terminal`]) ran out of time.
    #[error("timed out: {0}")]
    TimedOut(String),
}

impl ApiError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable(_) => true,
            // A daemon that is starting or stopping may answer 5xx for a moment.
            Self::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// Query of `GET /api/jobs/{id}/logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    pub after: Option<u64>,
    /// History: the newest events with a smaller seq (not with `after`).
    pub before: Option<u64>,
    pub limit: Option<u32>,
    pub order: Option<Order>,
    pub level: Option<Level>,
}

/// How the HTTP connections behave. The defaults suit an interactive client; the bench
/// holds more idle connections and waits longer for big pages.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Bounded so a hung daemon turns into a retry instead of a frozen client.
    pub timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// Ignore `HTTP_PROXY` and friends (the bench measures the daemon, not a proxy).
    pub no_proxy: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(30), pool_max_idle_per_host: 8, no_proxy: false }
    }
}

/// A response as it came, for callers that check the wire itself (the end-to-end tests).
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// `base` is the daemon's address: `http://host:port`, or `host:port` (http is meant).
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ApiError> {
        Self::with_options(base, token, &ClientOptions::default())
    }

    pub fn with_options(base: &str, token: Option<String>, o: &ClientOptions) -> Result<Self, ApiError> {
        let base = normalize_base(base)?;
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(o.timeout)
            .pool_max_idle_per_host(o.pool_max_idle_per_host)
            // The daemon closes keep-alive connections idle for 10 s: drop them first, so
            // a request never goes out on one the daemon is closing.
            .pool_idle_timeout(Duration::from_secs(5));
        if o.no_proxy {
            b = b.no_proxy();
        }
        let http = b.build().map_err(|e| ApiError::Unreachable(e.to_string()))?;
        Ok(Self { http, base, token })
    }

    /// The same client with another token (or none); connections are shared.
    pub fn with_token(&self, token: Option<String>) -> Self {
        Self { token, ..self.clone() }
    }

    /// The underlying HTTP client, for requests that are measured rather than typed.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// `ws://host:port/ws` for the `http://host:port` base (the only scheme `normalize_base`
    /// lets through).
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.base.strip_prefix("http://").unwrap_or(&self.base))
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut rb = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        rb
    }

    async fn send<T: DeserializeOwned>(&self, rb: RequestBuilder) -> Result<T, ApiError> {
        let resp = rb.send().await.map_err(|e| ApiError::Unreachable(e.to_string()))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| ApiError::Unreachable(e.to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| ApiError::Decode(e.to_string()));
        }
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        Err(if status == StatusCode::NOT_FOUND {
            ApiError::NotFound(message)
        } else {
            ApiError::Status { status: status.as_u16(), message }
        })
    }

    /// Any request, answered as it came; `body` is sent as JSON (`Content-Type:
    /// application/json`), so mutations pass the daemon's content-type check.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<RawResponse, ApiError> {
        let mut rb = self.request(method, path);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = rb.send().await.map_err(|e| ApiError::Unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| ApiError::Unreachable(e.to_string()))?.to_vec();
        Ok(RawResponse { status, headers, body })
    }

    /// GET of any path (with its query) decoded as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, ApiError> {
        self.send(self.request(Method::GET, path_and_query)).await
    }

    /// Mutating requests carry a JSON body so the daemon's content-type check passes.
    fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path).header(reqwest::header::CONTENT_TYPE, "application/json").body("{}")
    }

    pub async fn job(&self, id: &str) -> Result<Job, ApiError> {
        self.send(self.request(Method::GET, &format!("/api/jobs/{}", enc(id)))).await
    }

    pub async fn logs(&self, id: &str, q: &LogQuery) -> Result<LogsResponse, ApiError> {
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(a) = q.after {
            params.push(("after", a.to_string()));
        }
        if let Some(b) = q.before {
            params.push(("before", b.to_string()));
        }
        if let Some(l) = q.limit {
            params.push(("limit", l.to_string()));
        }
        if let Some(o) = q.order {
            params.push(("order", if o == Order::Asc { "asc" } else { "desc" }.into()));
        }
        if let Some(l) = q.level {
            params.push(("level", l.as_str().into()));
        }
        let rb = self.request(Method::GET, &format!("/api/jobs/{}/logs", enc(id))).query(&params);
        self.send(rb).await
    }

    /// Managers only (`parent_id=root`), newest first as the daemon lists them.
    pub async fn managers(&self, status: Option<JobStatus>, limit: u32, offset: u64) -> Result<JobsList, ApiError> {
        let mut params: Vec<(&str, String)> =
            vec![("parent_id", "root".into()), ("limit", limit.to_string()), ("offset", offset.to_string())];
        if let Some(s) = status {
            params.push(("status", s.as_str().into()));
        }
        self.send(self.request(Method::GET, "/api/jobs").query(&params)).await
    }

    pub async fn stats(&self) -> Result<Stats, ApiError> {
        self.send(self.request(Method::GET, "/api/jobs/stats")).await
    }

    pub async fn definitions(&self) -> Result<DefinitionsList, ApiError> {
        self.send(self.request(Method::GET, "/api/job-definitions")).await
    }

    /// Creates or replaces a definition (`POST /api/job-definitions`).
    pub async fn put_definition(&self, definition: &impl Serialize) -> Result<DefinitionInfo, ApiError> {
        self.send(self.request(Method::POST, "/api/job-definitions").json(definition)).await
    }

    /// Polls a job every `every` until it is terminal; an error after `within`.
    pub async fn wait_terminal(&self, id: &str, every: Duration, within: Duration) -> Result<Job, ApiError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let j = self.job(id).await?;
            if j.status.is_terminal() {
                return Ok(j);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::TimedOut(format!("{id} still {} after {within:?}", j.status)));
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Runs a definition now with its defaults.
    pub async fn execute(&self, definition_id: &str) -> Result<ExecuteResponse, ApiError> {
        self.execute_with(definition_id, &ExecuteRequest::default()).await
    }

    /// Runs a definition with parameters, now or later (`run_at`, `delay`).
    pub async fn execute_with(&self, definition_id: &str, req: &ExecuteRequest) -> Result<ExecuteResponse, ApiError> {
        let path = format!("/api/job-definitions/{}/execute", enc(definition_id));
        self.send(self.request(Method::POST, &path).json(req)).await
    }

    /// Enables or disables a definition (kept across restarts).
    pub async fn set_enabled(&self, definition_id: &str, enabled: bool) -> Result<DefinitionInfo, ApiError> {
        let verb = if enabled { "enable" } else { "disable" };
        self.send(self.post(&format!("/api/job-definitions/{}/{verb}", enc(definition_id)))).await
    }

    /// Every named queue with its counts.
    pub async fn queues(&self) -> Result<QueuesList, ApiError> {
        self.send(self.request(Method::GET, "/api/queues")).await
    }

    /// Pauses or resumes a named queue (kept across restarts).
    pub async fn set_queue_paused(&self, queue: &str, paused: bool) -> Result<QueueInfo, ApiError> {
        let verb = if paused { "pause" } else { "resume" };
        self.send(self.post(&format!("/api/queues/{}/{verb}", enc(queue)))).await
    }

    pub async fn cancel(&self, id: &str) -> Result<CancelResponse, ApiError> {
        self.send(self.post(&format!("/api/jobs/{}/cancel", enc(id)))).await
    }

    pub async fn rerun(&self, id: &str) -> Result<RerunResponse, ApiError> {
        self.send(self.post(&format!("/api/jobs/{}/rerun", enc(id)))).await
    }

    /// Deletes every finished run with one of `statuses` (comma-separated), in the
    /// daemon's background; answers with how many matched.
    pub async fn delete_finished(&self, statuses: &str) -> Result<BulkDeleteResponse, ApiError> {
        let req = self.request(Method::DELETE, "/api/jobs").query(&[("status", statuses)]);
        self.send(req.header(reqwest::header::CONTENT_TYPE, "application/json")).await
    }

    pub async fn delete(&self, id: &str) -> Result<DeleteResponse, ApiError> {
        // Every mutating request says it is JSON (the daemon refuses others with 415).
        let req = self.request(Method::DELETE, &format!("/api/jobs/{}", enc(id)));
        self.send(req.header(reqwest::header::CONTENT_TYPE, "application/json")).await
    }
}

/// The daemon's base URL from a `--server` value, checked before anything is sent: a bare
/// `host:port` means http; https and other schemes are refused (quaerod serves plain HTTP;
/// put TLS in a proxy and point this at it over http, or use an SSH tunnel).
fn normalize_base(raw: &str) -> Result<String, ApiError> {
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") { raw.to_string() } else { format!("http://{raw}") };
    let url =
        reqwest::Url::parse(&with_scheme).map_err(|e| ApiError::BadServer(format!("{raw:?} is not a URL: {e}")))?;
    if url.scheme() != "http" {
        return Err(ApiError::BadServer(format!(
            "{raw:?}: only http:// is supported (this build has no TLS); use an SSH tunnel or a proxy"
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::BadServer(format!("{raw:?} has no host")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ApiError::BadServer(format!(
            "{raw:?}: give the daemon's address only, like http://127.0.0.1:8080"
        )));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// What a path segment keeps as is: RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Ids are URL-safe by contract, but a user-typed id is input: escape anything else so it
/// cannot change the path.
fn enc(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_url_follows_the_base() {
        let c = Client::new("http://127.0.0.1:9/", None).unwrap();
        assert_eq!(c.ws_url(), "ws://127.0.0.1:9/ws");
    }

    #[test]
    fn server_addresses_are_checked_before_use() {
        assert_eq!(Client::new("127.0.0.1:8080", None).unwrap().base(), "http://127.0.0.1:8080");
        assert_eq!(Client::new("localhost:9", None).unwrap().ws_url(), "ws://localhost:9/ws");
        assert_eq!(Client::new(" http://[::1]:8080/ ", None).unwrap().base(), "http://[::1]:8080");
        assert_eq!(Client::new("HTTP://Host:1", None).unwrap().ws_url(), "ws://host:1/ws");
        assert_eq!(Client::new("http://h:1/quaero/", None).unwrap().base(), "http://h:1/quaero");
        for bad in ["https://127.0.0.1:8080", "ftp://host", "http://", "http://h:99999", "http://h:1/?x=1"] {
            let e = Client::new(bad, None).err().unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(matches!(e, ApiError::BadServer(_)), "{bad}: {e}");
            assert!(!e.is_transient(), "{bad}");
        }
    }

    #[test]
    fn ids_cannot_escape_the_path() {
        assert_eq!(enc("m1-s2"), "m1-s2");
        assert_eq!(enc("../x?y"), "..%2Fx%3Fy");
    }
}
