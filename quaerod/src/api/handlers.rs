//! One plain async function per operation: typed arguments in (the filters parse the
//! request), one call to the engine, a response out. Each carries its `#[utoipa::path]`,
//! from which both the OpenAPI document and the route that serves it are made.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use quaero_shared::{
    BulkDeleteResponse, CancelResponse, DefinitionDeleted, DefinitionInfo, DefinitionsList, DeleteResponse, ErrorBody,
    ExecuteRequest, ExecuteResponse, Health, Job, JobDefinition, JobStatus, JobsList, Level, LogsResponse, Order,
    QueueInfo, QueuesList, RerunResponse, Stats,
};
use warp::http::StatusCode;
use warp::http::header::{CONTENT_TYPE, HeaderValue};
use warp::{Rejection, Reply as _};

use super::{ApiError, DEFAULT_JOBS_LIMIT, DEFAULT_LOG_LIMIT, MAX_JOBS_LIMIT, MAX_LOG_LIMIT, json, json_bytes, reject};
use crate::engine::{Engine, JobsQuery, LogsRequest};

type Reply = Result<warp::reply::Response, Rejection>;

/// A count or seq in a query: 0 up to `i64::MAX`, as the document says.
fn non_negative(name: &str, v: &str) -> Result<u64, Rejection> {
    match v.trim().parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n as u64),
        _ => Err(ApiError::bad_request(format!("{name}: must be an integer from 0 to {}, got {v:?}", i64::MAX))),
    }
}

fn positive(name: &str, v: &str) -> Result<usize, Rejection> {
    match v.trim().parse::<i64>() {
        Ok(n) if n > 0 => Ok(n as usize),
        _ => Err(ApiError::bad_request(format!("{name}: must be a positive integer, got {v:?}"))),
    }
}

/// Liveness; needs no token.
#[utoipa::path(get, path = "/api/health", tag = "daemon", responses((status = 200, body = Health)))]
pub async fn health() -> Reply {
    Ok(json(StatusCode::OK, &Health { status: "ok".into(), version: env!("CARGO_PKG_VERSION").into() }))
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "daemon", security(("bearer" = []), ()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"),
        (status = 401, body = ErrorBody)))]
pub async fn openapi() -> Reply {
    Ok(json_bytes(StatusCode::OK, super::openapi::document_json()))
}

/// Counts of jobs (all depths) by status.
#[utoipa::path(get, path = "/api/jobs/stats", tag = "jobs", security(("bearer" = []), ()),
    responses((status = 200, body = Stats), (status = 401, body = ErrorBody)))]
pub async fn stats(eng: Arc<Engine>) -> Reply {
    Ok(json(StatusCode::OK, &eng.stats()))
}

/// Jobs: managers newest first (the default), a manager's steps, or a step's children.
#[utoipa::path(get, path = "/api/jobs", tag = "jobs", security(("bearer" = []), ()),
    params(
        ("limit" = Option<i64>, Query, minimum = 1, description = "page size, default 50; above 1000 is read as 1000"),
        ("offset" = Option<i64>, Query, minimum = 0, description = "jobs to skip, default 0"),
        ("status" = Option<String>, Query, pattern = r"^((pending|running|completed|failed|cancelled)(,(pending|running|completed|failed|cancelled))*)?$",
            description = "comma-separated statuses to keep; empty or absent: all"),
        ("parent_id" = Option<String>, Query, pattern = r"^(root|m[0-9]+(-s[0-9]+(-c[0-9]+)?)?)$", description = "`root` (the default) lists managers; a manager id its steps; a step id its children"),
        ("definition" = Option<String>, Query, description = "only runs of this definition id"),
        ("tag" = Option<String>, Query, description = "only runs of definitions with this tag"),
        ("queue" = Option<String>, Query, description = "only runs on this named queue"),
        ("q" = Option<String>, Query, description = "managers whose name or definition id contains this, ignoring case"),
        ("cursor" = Option<String>, Query, pattern = r"^[0-9]{0,19}$", description = "the `next_cursor` of the previous page: the page after it, at the cost of one page at any depth (`offset` walks the skipped jobs)"),
    ),
    responses((status = 200, body = JobsList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, description = "no such parent job", body = ErrorBody)))]
pub async fn list_jobs(eng: Arc<Engine>, q: HashMap<String, String>) -> Reply {
    let limit = match q.get("limit") {
        None => DEFAULT_JOBS_LIMIT,
        Some(v) => positive("limit", v)?.min(MAX_JOBS_LIMIT),
    };
    let offset = match q.get("offset") {
        None => 0,
        Some(v) => non_negative("offset", v)? as usize,
    };
    let statuses = parse_statuses(&q)?;
    let query = JobsQuery {
        parent: q.get("parent_id").cloned(),
        statuses,
        limit,
        offset,
        definition: q.get("definition").filter(|d| !d.is_empty()).cloned(),
        tag: q.get("tag").filter(|t| !t.is_empty()).cloned(),
        queue: q.get("queue").filter(|t| !t.is_empty()).cloned(),
        search: q.get("q").map(|s| s.trim()).filter(|s| !s.is_empty()).map(str::to_string),
        cursor: match q.get("cursor").filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => Some(c.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("cursor: {c:?} is not a cursor this daemon handed out (next_cursor)"))
            })?),
        },
    };
    let page = eng.jobs_page(query).await.map_err(reject)?;
    Ok(json(StatusCode::OK, &page))
}

/// One job; a manager includes its steps.
#[utoipa::path(get, path = "/api/jobs/{job_id}", tag = "jobs", security(("bearer" = []), ()),
    params(("job_id" = String, Path, pattern = r"^m[0-9]+(-s[0-9]+(-c[0-9]+)?)?$", description = "`m<N>`, `m<N>-s<I>` or `m<N>-s<I>-c<K>`")),
    responses((status = 200, body = Job), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_job(id: String, eng: Arc<Engine>) -> Reply {
    eng.get_job(&id).map(|j| json(StatusCode::OK, &j)).map_err(reject)
}

/// A job's events: the newest `limit`, or with `after` the oldest `limit` after a seq.
#[utoipa::path(get, path = "/api/jobs/{job_id}/logs", tag = "jobs", security(("bearer" = []), ()),
    params(
        ("job_id" = String, Path, pattern = r"^m[0-9]+(-s[0-9]+(-c[0-9]+)?)?$", description = "any job id; a step's or manager's events include its children's"),
        ("limit" = Option<i64>, Query, minimum = 1, description = "default 1000; above 5000 is read as 5000"),
        ("order" = Option<Order>, Query, description = "without `after`: `desc` (default) newest first, `asc` the same events oldest first"),
        ("after" = Option<i64>, Query, minimum = 0, description = "follow: events with a greater seq, oldest first"),
        ("before" = Option<i64>, Query, minimum = 0, description = "history: the newest `limit` events with a smaller seq; with `after`, the oldest `limit` events between the two"),
        ("format" = Option<String>, Query, pattern = "^(json|text)$", description = "`text`: the job's whole log, oldest first, one line per event, streamed (`limit`, `order`, `after` and `before` do not apply)"),
        ("level" = Option<String>, Query, pattern = "^(debug|info|warn|error|all)$", description = "minimum level, default all"),
    ),
    responses((status = 200, description = "a page of events (JSON), or with `format=text` the whole log as text",
            content((LogsResponse = "application/json"), (String = "text/plain"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn logs(id: String, eng: Arc<Engine>, q: HashMap<String, String>) -> Reply {
    let limit = match q.get("limit") {
        None => DEFAULT_LOG_LIMIT,
        Some(v) => positive("limit", v)?.min(MAX_LOG_LIMIT),
    };
    let order = match q.get("order").map(String::as_str) {
        None | Some("desc") => Order::Desc,
        Some("asc") => Order::Asc,
        Some(o) => return Err(ApiError::bad_request(format!("order: must be asc or desc, got {o:?}"))),
    };
    let after = match q.get("after") {
        None => None,
        Some(v) => Some(non_negative("after", v)?),
    };
    let min_level = match q.get("level").map(String::as_str) {
        None | Some("all") => None,
        Some(l @ ("debug" | "info" | "warn" | "error")) => l.parse::<Level>().ok(),
        Some(l) => {
            return Err(ApiError::bad_request(format!("level: must be debug, info, warn, error or all, got {l:?}")));
        }
    };
    let before = match q.get("before") {
        None => None,
        Some(v) => Some(non_negative("before", v)?),
    };
    match q.get("format").map(String::as_str) {
        None | Some("json") => {}
        Some("text") => {
            let mut lines = eng.logs_text(&id, min_level).map_err(reject)?;
            let body = futures_util::stream::poll_fn(move |cx| lines.poll_recv(cx).map(|b| b.map(Ok::<_, Infallible>)));
            let mut res = warp::reply::stream(body).into_response();
            res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            return Ok(res);
        }
        Some(f) => return Err(ApiError::bad_request(format!("format: must be json or text, got {f:?}"))),
    }
    let page = eng.logs_page(&id, LogsRequest { limit, order, after, before, min_level }).await.map_err(reject)?;
    Ok(json_bytes(StatusCode::OK, page))
}

/// Cancels a running or pending job (a manager with its steps and children).
#[utoipa::path(post, path = "/api/jobs/{job_id}/cancel", tag = "jobs", security(("bearer" = []), ()),
    params(("job_id" = String, Path, pattern = r"^m[0-9]+(-s[0-9]+(-c[0-9]+)?)?$")), request_body(content = Object, description = "`{}` or nothing", content_type = "application/json"),

    responses((status = 200, body = CancelResponse), (status = 400, description = "a body that is not a JSON object", body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "already terminal", body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn cancel(id: String, eng: Arc<Engine>) -> Reply {
    let message = eng.cancel(&id).await.map_err(reject)?;
    Ok(json(StatusCode::OK, &CancelResponse { job_id: id, message }))
}

/// Deletes a terminal manager with its steps, children and events.
#[utoipa::path(delete, path = "/api/jobs/{job_id}", tag = "jobs", security(("bearer" = []), ()),
    params(("job_id" = String, Path, pattern = r"^m[0-9]+$", description = "a manager id")), request_body(content = Object, description = "`{}` or nothing", content_type = "application/json"),
    responses((status = 200, body = DeleteResponse), (status = 400, description = "not a manager id", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "still running", body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn delete_job(id: String, eng: Arc<Engine>) -> Reply {
    let (deleted_jobs, deleted_events) = eng.delete(&id).await.map_err(reject)?;
    Ok(json(StatusCode::OK, &DeleteResponse { job_id: id, deleted_jobs, deleted_events }))
}

/// Deletes every finished run that matches, in the background (in batches that leave
/// ingest room); answers at once with how many matched.
#[utoipa::path(delete, path = "/api/jobs", tag = "jobs", security(("bearer" = []), ()),
    params(
        ("status" = Option<String>, Query, pattern = r"^((completed|failed|cancelled)(,(completed|failed|cancelled))*)?$",
            description = "comma-separated finished statuses; absent: every finished run"),
        ("finished_before" = Option<String>, Query, format = DateTime, description = "only runs that finished before this time (RFC 3339)"),
        ("definition" = Option<String>, Query, description = "only runs of this definition id"),
        ("tag" = Option<String>, Query, description = "only runs of definitions with this tag"),
        ("queue" = Option<String>, Query, description = "only runs on this named queue"),
        ("q" = Option<String>, Query, description = "only managers whose name or definition id contains this, ignoring case"),
    ),
    request_body(content = Object, description = "`{}` or nothing", content_type = "application/json"),
    responses((status = 202, body = BulkDeleteResponse), (status = 400, description = "a bad filter, naming it", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn delete_jobs(eng: Arc<Engine>, q: HashMap<String, String>) -> Reply {
    let statuses = parse_statuses(&q)?;
    let finished_before = match q.get("finished_before") {
        None => None,
        // Any RFC 3339 time, also before 1970 or with a leap second (jiff reads them all).
        Some(t) => Some(t.parse::<jiff::Timestamp>().map(|ts| ts.as_millisecond()).map_err(|_| {
            ApiError::bad_request(format!("finished_before: {t:?} is not an RFC 3339 time (2026-11-30T12:00:00Z)"))
        })?),
    };
    let query = crate::store::ManagerQuery {
        statuses,
        definition: q.get("definition").filter(|d| !d.is_empty()).cloned(),
        tag: q.get("tag").filter(|t| !t.is_empty()).cloned(),
        queue: q.get("queue").filter(|t| !t.is_empty()).cloned(),
        search: q.get("q").map(|s| s.trim()).filter(|s| !s.is_empty()).map(str::to_string),
        finished_before,
        ..Default::default()
    };
    let count = eng.delete_matching(query).await.map_err(reject)?;
    let message = format!("deleting {count} finished runs with their steps, children and events");
    Ok(json(StatusCode::ACCEPTED, &BulkDeleteResponse { count, message }))
}

/// `status`: comma-separated statuses (empty or absent: none given).
fn parse_statuses(q: &HashMap<String, String>) -> Result<Vec<JobStatus>, Rejection> {
    let mut statuses = Vec::new();
    if let Some(s) = q.get("status").filter(|s| !s.is_empty()) {
        for part in s.split(',') {
            statuses.push(part.parse::<JobStatus>().map_err(|_| {
                ApiError::bad_request(format!(
                    "status: {part:?} is not one of pending, running, completed, failed, cancelled"
                ))
            })?);
        }
    }
    // `failed,failed` is `failed`: each status counted once in `total_count`.
    statuses.sort_by_key(|s| JobStatus::ALL.iter().position(|x| x == s));
    statuses.dedup();
    Ok(statuses)
}

/// Runs a manager's definition (as stored with it) again as a new manager.
#[utoipa::path(post, path = "/api/jobs/{job_id}/rerun", tag = "jobs", security(("bearer" = []), ()),
    params(("job_id" = String, Path, pattern = r"^m[0-9]+$", description = "a manager id")), request_body(content = Object, description = "`{}` or nothing", content_type = "application/json"),
    responses((status = 201, body = RerunResponse), (status = 400, description = "not a manager id", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 503, description = "shutting down", body = ErrorBody)))]
pub async fn rerun(id: String, eng: Arc<Engine>) -> Reply {
    let new_job_id = eng.rerun(&id).await.map_err(reject)?;
    Ok(json(StatusCode::CREATED, &RerunResponse { original_job_id: id, new_job_id }))
}

/// Every definition, valid or not (an invalid one carries its error).
#[utoipa::path(get, path = "/api/job-definitions", tag = "definitions", security(("bearer" = []), ()),
    responses((status = 200, body = DefinitionsList), (status = 401, body = ErrorBody)))]
pub async fn list_definitions(eng: Arc<Engine>) -> Reply {
    Ok(json(StatusCode::OK, &DefinitionsList { job_definitions: eng.list_definitions() }))
}

/// Creates or replaces a definition from JSON (kept in the store, never as a file).
#[utoipa::path(post, path = "/api/job-definitions", tag = "definitions", security(("bearer" = []), ()),
    request_body = JobDefinition,
    responses((status = 201, body = DefinitionInfo), (status = 400, description = "invalid, naming the field", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, body = ErrorBody), (status = 411, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn put_definition(eng: Arc<Engine>, body: bytes::Bytes) -> Reply {
    // The path of a field that fails to decode is named (`overlap: unknown variant …`).
    let mut de = serde_json::Deserializer::from_slice(&body);
    let def: JobDefinition = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| match e.path().to_string().as_str() {
            "." => ApiError::bad_request(format!("invalid job definition: {}", e.inner())),
            path => ApiError::bad_request(format!("invalid job definition: {path}: {}", e.inner())),
        })
        .and_then(|d| de.end().map(|_| d).map_err(|e| ApiError::bad_request(format!("invalid job definition: {e}"))))?;
    let info = eng.put_definition(def).map_err(reject)?;
    Ok(json(StatusCode::CREATED, &info))
}

/// One definition.
#[utoipa::path(get, path = "/api/job-definitions/{definition_id}", tag = "definitions", security(("bearer" = []), ()),
    params(("definition_id" = String, Path, pattern = r"^[a-z0-9_-]{1,64}$")),
    responses((status = 200, body = DefinitionInfo), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_definition(id: String, eng: Arc<Engine>) -> Reply {
    eng.get_definition(&id).map(|d| json(StatusCode::OK, &d)).map_err(reject)
}

/// Deletes a definition made over the API (file definitions are removed by deleting the file).
#[utoipa::path(delete, path = "/api/job-definitions/{definition_id}", tag = "definitions", security(("bearer" = []), ()),
    params(("definition_id" = String, Path, pattern = r"^[a-z0-9_-]{1,64}$")), request_body(content = Object, description = "`{}` or nothing", content_type = "application/json"),
    responses((status = 200, body = DefinitionDeleted), (status = 400, description = "a body that is not a JSON object", body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "a file definition", body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn delete_definition(id: String, eng: Arc<Engine>) -> Reply {
    eng.delete_definition(&id).map_err(reject)?;
    Ok(json(StatusCode::OK, &DefinitionDeleted { id, deleted: true }))
}

/// Runs a definition, now or later, with parameters; the new manager's id comes back at
/// once (a delayed run is `pending` with `scheduled_at` until its time).
#[utoipa::path(post, path = "/api/job-definitions/{definition_id}/execute", tag = "definitions", security(("bearer" = []), ()),
    params(("definition_id" = String, Path, pattern = r"^[a-z0-9_-]{1,64}$")), request_body(content = ExecuteRequest, description = "all optional: `{}` or nothing runs it now with its defaults", content_type = "application/json"),
    responses((status = 202, body = ExecuteResponse), (status = 400, description = "the definition is invalid, or a parameter, `run_at` or `delay` is (naming it)", body = ErrorBody),
        (status = 409, description = "the definition is disabled", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 503, description = "shutting down", body = ErrorBody)))]
pub async fn execute(id: String, req: ExecuteRequest, eng: Arc<Engine>) -> Reply {
    let job_id = eng.execute(&id, req).await.map_err(reject)?;
    Ok(json(StatusCode::ACCEPTED, &ExecuteResponse { job_id }))
}

/// Lets a definition run again (kept across restarts).
#[utoipa::path(post, path = "/api/job-definitions/{definition_id}/enable", tag = "definitions", security(("bearer" = []), ()),
    params(("definition_id" = String, Path, pattern = r"^[a-z0-9_-]{1,64}$")), request_body(content = Object, description = "`{}` or nothing", content_type = "application/json"),
    responses((status = 200, description = "the definition as listed, now enabled", body = DefinitionInfo), (status = 400, description = "a body that is not a JSON object", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn enable_definition(id: String, eng: Arc<Engine>) -> Reply {
    eng.set_enabled(&id, true).map(|d| json(StatusCode::OK, &d)).map_err(reject)
}

/// Stops a definition from running: execute is refused with 409 until it is enabled
/// (kept across restarts; runs already started go on).
#[utoipa::path(post, path = "/api/job-definitions/{definition_id}/disable", tag = "definitions", security(("bearer" = []), ()),
    params(("definition_id" = String, Path, pattern = r"^[a-z0-9_-]{1,64}$")), request_body(content = Object, description = "`{}` or nothing", content_type = "application/json"),
    responses((status = 200, description = "the definition as listed, now disabled", body = DefinitionInfo), (status = 400, description = "a body that is not a JSON object", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn disable_definition(id: String, eng: Arc<Engine>) -> Reply {
    eng.set_enabled(&id, false).map(|d| json(StatusCode::OK, &d)).map_err(reject)
}

/// Every queue: its slots, whether it is paused, and what waits and runs on it.
#[utoipa::path(get, path = "/api/queues", tag = "queues", security(("bearer" = []), ()),
    responses((status = 200, body = QueuesList), (status = 401, body = ErrorBody)))]
pub async fn queues(eng: Arc<Engine>) -> Reply {
    Ok(json(StatusCode::OK, &QueuesList { queues: eng.queues() }))
}

/// Pauses a queue: it starts nothing new (runs on it stay pending, units wait for a slot);
/// what runs goes on. Kept across restarts.
#[utoipa::path(post, path = "/api/queues/{queue}/pause", tag = "queues", security(("bearer" = []), ()),
    params(("queue" = String, Path, pattern = r"^[a-z0-9_-]{1,64}$")), request_body(content = Object, description = "`{}` or nothing", content_type = "application/json"),
    responses((status = 200, description = "the queue, now paused", body = QueueInfo), (status = 400, description = "a body that is not a JSON object", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn pause_queue(name: String, eng: Arc<Engine>) -> Reply {
    eng.set_queue_paused(&name, true).map(|q| json(StatusCode::OK, &q)).map_err(reject)
}

/// Resumes a paused queue.
#[utoipa::path(post, path = "/api/queues/{queue}/resume", tag = "queues", security(("bearer" = []), ()),
    params(("queue" = String, Path, pattern = r"^[a-z0-9_-]{1,64}$")), request_body(content = Object, description = "`{}` or nothing", content_type = "application/json"),
    responses((status = 200, description = "the queue, now running", body = QueueInfo), (status = 400, description = "a body that is not a JSON object", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn resume_queue(name: String, eng: Arc<Engine>) -> Reply {
    eng.set_queue_paused(&name, false).map(|q| json(StatusCode::OK, &q)).map_err(reject)
}

/// The Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "daemon", security(("bearer" = []), ()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, body = ErrorBody)))]
pub async fn metrics(eng: Arc<Engine>) -> Reply {
    let text = eng.metrics_text().await.map_err(reject)?;
    Ok(warp::http::Response::builder()
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .body(text.into())
        .expect("response"))
}
