//! `GET /metrics` in the Prometheus text format.
//!
//! Counters and histograms are updated where things happen (the writer thread, the
//! aggregator, the WebSocket tasks, the request log); gauges that describe the present
//! (jobs by status, workers busy, clients, store size) are read at scrape time, so nothing
//! on the ingest path waits for a scrape. The daemon's own logs never feed the job event
//! log or the triggers, and neither do metrics.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub events_ingested: IntCounter,
    pub events_dropped: IntCounter,
    pub ingest_batch_events: Histogram,
    pub ingest_batch_seconds: Histogram,
    pub jobs: IntGaugeVec,
    pub queue_depth: IntGauge,
    pub workers_busy: IntGauge,
    pub workers: IntGauge,
    pub ws_clients: IntGauge,
    pub triggers_sent: IntCounter,
    pub triggers_merged: IntCounter,
    pub ws_clients_dropped: IntCounter,
    pub http_requests: IntCounterVec,
    pub http_seconds: HistogramVec,
    pub log_pages: IntCounterVec,
    pub http_connections_shed: IntCounter,
    pub push_messages_dropped: IntCounter,
    pub store_bytes: IntGauge,
    pub retries: IntCounter,
    pub queue: IntGaugeVec,
    pub jobs_finished: IntCounterVec,
    pub job_seconds: HistogramVec,
    pub schedule_lateness: Histogram,
    pub schedule_skipped: IntCounter,
}

/// One set per process: several daemons in one test process add to the same counters,
/// which is harmless for counters that only ever grow.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
            r.register(Box::new(c.clone())).expect("metric names are unique");
            c
        }
        let counter = |name: &str, help: &str| reg(&registry, IntCounter::new(name, help).expect("metric"));
        let gauge = |name: &str, help: &str| reg(&registry, IntGauge::new(name, help).expect("metric"));
        Metrics {
            events_ingested: counter("quaero_events_ingested_total", "Events committed to the event log."),
            retries: counter(
                "quaero_retries_total",
                "Failed attempts of steps and child jobs that were given another attempt.",
            ),
            events_dropped: counter(
                "quaero_events_dropped_total",
                "Old events dropped because a job exceeded storage.max_events_per_job.",
            ),
            ingest_batch_events: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new("quaero_ingest_batch_events", "Events per writer batch (one flush each).")
                        .buckets(prometheus::exponential_buckets(1.0, 4.0, 9).expect("buckets")),
                )
                .expect("metric"),
            ),
            ingest_batch_seconds: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "quaero_ingest_batch_seconds",
                        "Time to apply and flush one writer batch, in seconds.",
                    )
                    .buckets(prometheus::exponential_buckets(0.0005, 2.5, 10).expect("buckets")),
                )
                .expect("metric"),
            ),
            jobs: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new("quaero_jobs", "Jobs stored, by status (managers, steps and children)."),
                    &["status"],
                )
                .expect("metric"),
            ),
            queue_depth: gauge("quaero_queue_depth", "Jobs pending (waiting to run)."),
            workers_busy: gauge("quaero_workers_busy", "Worker pool slots running a child job now."),
            workers: gauge("quaero_workers", "Worker pool size (queue.concurrency)."),
            ws_clients: gauge("quaero_ws_clients", "WebSocket clients connected."),
            triggers_sent: counter("quaero_triggers_sent_total", "refresh_step_events triggers queued to clients."),
            triggers_merged: counter(
                "quaero_triggers_merged_total",
                "Triggers merged into one still pending for a client that reads slowly.",
            ),
            ws_clients_dropped: counter(
                "quaero_ws_clients_dropped_total",
                "WebSocket clients disconnected because they did not read for 30 s.",
            ),
            queue: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "quaero_queue",
                        "Named queues: state=pending (runs and units waiting), running (units), paused (1 or 0).",
                    ),
                    &["queue", "state"],
                )
                .expect("metric"),
            ),
            jobs_finished: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new("quaero_jobs_finished_total", "Runs (managers) that ended, by definition and status."),
                    &["definition", "status"],
                )
                .expect("metric"),
            ),
            schedule_lateness: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "quaero_schedule_lateness_seconds",
                        "How long after its scheduled time a schedule started its run, in seconds.",
                    )
                    .buckets(prometheus::exponential_buckets(0.001, 2.5, 12).expect("buckets")),
                )
                .expect("metric"),
            ),
            schedule_skipped: counter(
                "quaero_schedule_skipped_total",
                "Scheduled times that started no run because one was still active (overlap = skip).",
            ),
            job_seconds: reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "quaero_job_duration_seconds",
                        "Time from a run's start to its end, by definition, in seconds.",
                    )
                    .buckets(prometheus::exponential_buckets(0.01, 4.0, 12).expect("buckets")),
                    &["definition"],
                )
                .expect("metric"),
            ),
            http_requests: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new("quaero_http_requests_total", "HTTP requests by route and status."),
                    &["route", "status"],
                )
                .expect("metric"),
            ),
            http_seconds: reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new("quaero_http_request_seconds", "HTTP request latency by route, in seconds.")
                        .buckets(prometheus::exponential_buckets(0.0001, 3.0, 10).expect("buckets")),
                    &["route"],
                )
                .expect("metric"),
            ),
            log_pages: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "quaero_log_pages_total",
                        "Logs pages served: result=read (read from the store) or shared (a page already \
                         read for the same request at the same version).",
                    ),
                    &["result"],
                )
                .expect("metric"),
            ),
            http_connections_shed: counter(
                "quaero_http_connections_shed_total",
                "Idle HTTP connections closed to stay within the connection budget (file-descriptor limit).",
            ),
            push_messages_dropped: counter(
                "quaero_push_messages_dropped_total",
                "Push mode: job_log messages dropped for clients that read too slowly (each such client is told).",
            ),
            store_bytes: gauge("quaero_store_size_bytes", "Size of the data directory on disk, in bytes."),
            registry,
        }
    }

    /// Renders every metric in the text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }

    /// Counts one HTTP request under a route pattern (ids replaced, so labels stay few).
    pub fn request(&self, path: &str, status: u16, secs: f64) {
        let route = route_of(path);
        self.http_requests.with_label_values(&[route, &status.to_string()]).inc();
        self.http_seconds.with_label_values(&[route]).observe(secs);
    }
}

/// The route pattern of a request path: `/api/jobs/m7-s1/logs` → `/api/jobs/{id}/logs`.
pub fn route_of(path: &str) -> &'static str {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match parts.as_slice() {
        ["api", "health"] => "/api/health",
        ["api", "jobs"] => "/api/jobs",
        ["api", "jobs", "stats"] => "/api/jobs/stats",
        ["api", "jobs", _] => "/api/jobs/{id}",
        ["api", "jobs", _, "logs"] => "/api/jobs/{id}/logs",
        ["api", "jobs", _, "cancel"] => "/api/jobs/{id}/cancel",
        ["api", "jobs", _, "rerun"] => "/api/jobs/{id}/rerun",
        ["api", "job-definitions"] => "/api/job-definitions",
        ["api", "job-definitions", _] => "/api/job-definitions/{id}",
        ["api", "job-definitions", _, "execute"] => "/api/job-definitions/{id}/execute",
        ["ws"] => "/ws",
        ["metrics"] => "/metrics",
        [] | ["queue"] => "/queue",
        ["assets", ..] => "/assets",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_keep_labels_few() {
        assert_eq!(route_of("/api/jobs/m7-s1/logs"), "/api/jobs/{id}/logs");
        assert_eq!(route_of("/api/jobs/stats"), "/api/jobs/stats");
        assert_eq!(route_of("/api/job-definitions/x/execute"), "/api/job-definitions/{id}/execute");
        assert_eq!(route_of("/no/such/thing/at/all"), "other");
        assert_eq!(route_of("/"), "/queue");
    }

    #[test]
    fn renders_text_format() {
        METRICS.events_ingested.inc_by(3);
        let text = METRICS.render();
        assert!(text.contains("# TYPE quaero_events_ingested_total counter"), "{text}");
        assert!(text.contains("quaero_ingest_batch_seconds_bucket"), "{text}");
    }
}
