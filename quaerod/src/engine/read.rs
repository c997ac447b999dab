//! The engine's read side, one method per API operation: the HTTP layer parses a request,
//! calls one of these and writes what it returns; it never reaches the store, the page
//! cache or the pool itself.

use std::sync::Arc;

use bytes::Bytes;
use quaero_shared::{JobStatus, JobsList, Level, Order, Stats};

use super::{Engine, EngineError, Result};
use crate::page_cache::PageKey;
use crate::store::LogQuery;
use crate::wire::LogsBody;

/// Events per chunk of a log streamed as text.
pub const TEXT_CHUNK: usize = 1000;
/// A text log's client that takes no chunk for this long is dropped.
pub const TEXT_STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// `GET /api/jobs`, parsed.
#[derive(Debug, Clone, Default)]
pub struct JobsQuery {
    /// `None` or `root`: managers; else a manager's steps or a step's children.
    pub parent: Option<String>,
    /// Empty: every status.
    pub statuses: Vec<JobStatus>,
    pub limit: usize,
    pub offset: usize,
    /// Only runs of this definition.
    pub definition: Option<String>,
    /// Only runs of definitions with this tag.
    pub tag: Option<String>,
    /// Only runs on this named queue.
    pub queue: Option<String>,
    /// Managers whose name or definition id contains this (ignoring case).
    pub search: Option<String>,
    /// The previous page's `next_cursor`: managers numbered below it, or children
    /// numbered above it.
    pub cursor: Option<u64>,
}

/// `GET /api/jobs/{id}/logs`, parsed.
#[derive(Debug, Clone, Copy)]
pub struct LogsRequest {
    pub limit: usize,
    pub order: Order,
    pub after: Option<u64>,
    /// The newest `limit` events older than this seq (with `after`: the oldest between).
    pub before: Option<u64>,
    /// `None`: every level.
    pub min_level: Option<Level>,
}

impl LogsRequest {
    /// The `level` the response echoes.
    fn level_name(&self) -> &'static str {
        self.min_level.map_or("all", Level::as_str)
    }
}

impl Engine {
    /// `GET /api/jobs/stats`: counts kept by the store's writer.
    pub fn stats(&self) -> Stats {
        self.store.stats()
    }

    /// `GET /api/jobs`, on a blocking thread (listing managers reads the store).
    pub async fn jobs_page(self: &Arc<Self>, q: JobsQuery) -> Result<JobsList> {
        let eng = self.clone();
        let (limit, offset) = (q.limit as u64, q.offset as u64);
        let (jobs, total_count, next) = tokio::task::spawn_blocking(move || eng.list_jobs(&q))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??;
        Ok(JobsList { jobs, total_count, limit, offset, next_cursor: next.map(|n| n.to_string()) })
    }

    /// `GET /api/jobs/{id}/logs` as the JSON body. Clients that ask for the same page
    /// while nothing in its scope changed share one read (see `page_cache`).
    pub async fn logs_page(&self, id: &str, req: LogsRequest) -> Result<Bytes> {
        let (path, m) = self.resolve(id)?;
        // Read before the page is: see page_cache for why that order makes sharing safe.
        let version = self.store.version(path);
        let query = LogQuery {
            path,
            limit: req.limit,
            order: req.order,
            after: req.after,
            before: req.before,
            min_level: req.min_level,
        };
        let key = PageKey { id: id.to_string(), query };
        let store = self.store.clone();
        let id = id.to_string();
        let read = || async move {
            tokio::task::spawn_blocking(move || {
                let page = store.read_logs(&query)?;
                // `after` reads are always oldest first.
                let order = if req.after.is_some() { Order::Asc } else { req.order };
                let body =
                    LogsBody::new(&id, &m, &page.events, req.limit as u64, order, req.level_name(), page.last_seq);
                Ok(Bytes::from(crate::wire::to_json(&body)))
            })
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?
        };
        self.pages.get_or_read(key, version, read).await
    }

    /// `GET /api/jobs/{id}/logs?format=text`: the job's whole log as it stands now, oldest
    /// first, one line per event, in chunks of [`TEXT_CHUNK`] events read as the client
    /// takes them (at most a few chunks in memory, however long the log). Each chunk is
    /// read on a blocking thread and let go; a client that takes nothing for
    /// [`TEXT_STUCK_AFTER`] is dropped, so a stalled reader holds no thread.
    pub fn logs_text(&self, id: &str, min_level: Option<Level>) -> Result<tokio::sync::mpsc::Receiver<Bytes>> {
        let (path, _) = self.resolve(id)?;
        let store = self.store.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            let mut after = 0;
            let mut until = None;
            loop {
                let q = LogQuery {
                    path,
                    limit: TEXT_CHUNK,
                    order: Order::Asc,
                    after: Some(after),
                    before: None,
                    min_level,
                };
                let st = store.clone();
                let page = match tokio::task::spawn_blocking(move || st.read_logs(&q)).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(e)) => {
                        // The status line has gone: the client sees the text end with this.
                        let line = Bytes::from(format!("error: reading the log failed: {e}\n"));
                        let _ = tokio::time::timeout(TEXT_STUCK_AFTER, tx.send(line)).await;
                        return;
                    }
                    Err(_) => return,
                };
                // The log as it was at the first read: a job still writing does not keep
                // the response open.
                let until = *until.get_or_insert(page.last_seq);
                let mut chunk = String::new();
                for e in page.events.iter().filter(|e| e.seq <= until) {
                    crate::wire::text_line(&mut chunk, path.manager, e);
                }
                if !chunk.is_empty()
                    && !matches!(tokio::time::timeout(TEXT_STUCK_AFTER, tx.send(Bytes::from(chunk))).await, Ok(Ok(())))
                {
                    return;
                }
                match page.events.last().map(|e| e.seq) {
                    Some(s) if s < until && page.events.len() == TEXT_CHUNK => after = s,
                    _ => return,
                }
            }
        });
        Ok(rx)
    }

    /// `GET /metrics`: the Prometheus text, with the gauges read now.
    pub async fn metrics_text(self: &Arc<Self>) -> Result<String> {
        let eng = self.clone();
        tokio::task::spawn_blocking(move || {
            let m = &crate::metrics::METRICS;
            let stats = eng.store.stats();
            for (status, n) in [
                ("pending", stats.pending_jobs),
                ("running", stats.running_jobs),
                ("completed", stats.completed_jobs),
                ("failed", stats.failed_jobs),
                ("cancelled", stats.cancelled_jobs),
            ] {
                m.jobs.with_label_values(&[status]).set(n as i64);
            }
            m.queue_depth.set(stats.pending_jobs as i64);
            let queues = eng.queues.values();
            m.workers.set(queues.clone().map(|q| q.concurrency as i64).sum());
            m.workers_busy.set(queues.map(|q| q.running() as i64).sum());
            for q in eng.queues() {
                m.queue.with_label_values(&[q.name.as_str(), "pending"]).set(q.pending as i64);
                m.queue.with_label_values(&[q.name.as_str(), "running"]).set(q.running as i64);
                m.queue.with_label_values(&[q.name.as_str(), "paused"]).set(i64::from(q.paused));
            }
            m.ws_clients.set(eng.aggregator.client_count() as i64);
            m.store_bytes.set(eng.store.size_on_disk() as i64);
            m.render()
        })
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))
    }
}
