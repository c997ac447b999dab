//! Scenario 5: read latency. The last 100 events of a step over HTTP (what the dashboard
//! fetches for an open panel), sequentially on one keep-alive connection, against two
//! daemons side by side: one holding 10k events, one holding 1M. Requests alternate
//! between them in chunks of 100. Both run with `share_log_pages = false`: every request is
//! a read from the store, not a page shared from the previous request.

use std::time::Instant;

use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::json;

use super::ingest::{Shape, ingest_into};
use super::{Ctx, ms};
use crate::client::{Api, LAST_100};
use crate::daemon::Daemon;
use crate::report::{Metric, ScenarioReport, Target, percentile};

const CHUNK: usize = 100;

#[derive(Debug, Clone, Serialize)]
struct Round {
    small_p50_ms: f64,
    small_p99_ms: f64,
    big_p50_ms: f64,
    big_p99_ms: f64,
    small_max_ms: f64,
    big_max_ms: f64,
    /// Server CPU per request (user + system), each daemon over its own requests.
    small_cpu_us: f64,
    big_cpu_us: f64,
    /// CLOCK_MONOTONIC window of the round and the daemons' pids, to cut it out of a
    /// system-wide profile.
    window: (f64, f64),
    pids: (u32, u32),
}

struct Target100 {
    api: Api,
    url: String,
}

impl Target100 {
    async fn new(d: &Daemon, step: &str) -> Result<Target100> {
        // One connection, reused: the latency of the read, not of connecting.
        let api = crate::client::api(d)?;
        Ok(Target100 { url: format!("{}/api/jobs/{step}/{LAST_100}", d.base), api })
    }

    /// One request; returns its latency in seconds after checking the body.
    async fn once(&self) -> Result<f64> {
        let t = Instant::now();
        let r = self.api.http().get(&self.url).send().await?;
        let status = r.status();
        let body = r.bytes().await?;
        let took = t.elapsed().as_secs_f64();
        if !status.is_success() {
            bail!("GET {} → {status}", self.url);
        }
        let page: quaero_shared::LogsResponse = serde_json::from_slice(&body)?;
        if page.count != 100 {
            bail!("GET {}: {} events, expected 100", self.url, page.count);
        }
        Ok(took)
    }
}

pub async fn run(ctx: &Ctx) -> Result<ScenarioReport> {
    let (small, big) = if ctx.quick {
        (Shape { children: 10, per_child: 100 }, Shape { children: 10, per_child: 2_000 })
    } else {
        (Shape { children: 10, per_child: 1_000 }, Shape { children: 100, per_child: 10_000 })
    };
    let requests = if ctx.quick { 200 } else { 2_000 };
    let rounds = ctx.rounds(3);
    // Unshared, so that every request is a read from the store: the same page asked for
    // again would otherwise be served from the first read.
    let args = ["--share-log-pages", "false"];
    let ds = crate::daemon::start(&ctx.bin, &args)?;
    let db = crate::daemon::start(&ctx.bin, &args)?;
    let res = async {
        let (small_step, ..) = ingest_into(&ds, small).await?;
        let (big_step, ..) = ingest_into(&db, big).await?;
        let a = Target100::new(&ds, &small_step).await?;
        let b = Target100::new(&db, &big_step).await?;
        for _ in 0..CHUNK {
            a.once().await?;
            b.once().await?;
        }
        let mut out = Vec::new();
        for round in 1..=rounds {
            let (mut la, mut lb) = (Vec::with_capacity(requests), Vec::with_capacity(requests));
            let (ca, cb) = (ds.cpu_seconds()?, db.cpu_seconds()?);
            let m0 = crate::daemon::monotonic();
            while la.len() < requests {
                for _ in 0..CHUNK.min(requests - la.len()) {
                    la.push(a.once().await?);
                }
                for _ in 0..CHUNK.min(requests - lb.len()) {
                    lb.push(b.once().await?);
                }
            }
            let window = (m0, crate::daemon::monotonic());
            let per = |cpu: f64| cpu / requests as f64 * 1e6;
            let (small_cpu_us, big_cpu_us) = (per(ds.cpu_seconds()? - ca), per(db.cpu_seconds()? - cb));
            la.sort_by(f64::total_cmp);
            lb.sort_by(f64::total_cmp);
            let r = Round {
                small_p50_ms: ms(percentile(&la, 50.0)),
                small_p99_ms: ms(percentile(&la, 99.0)),
                big_p50_ms: ms(percentile(&lb, 50.0)),
                big_p99_ms: ms(percentile(&lb, 99.0)),
                small_max_ms: ms(*la.last().unwrap_or(&f64::NAN)),
                big_max_ms: ms(*lb.last().unwrap_or(&f64::NAN)),
                small_cpu_us,
                big_cpu_us,
                window,
                pids: (ds.pid(), db.pid()),
            };
            eprintln!(
                "  round {round}/{rounds} p50/p99: {} events {:.3}/{:.3} ms, {} events {:.3}/{:.3} ms",
                small.events(),
                r.small_p50_ms,
                r.small_p99_ms,
                big.events(),
                r.big_p50_ms,
                r.big_p99_ms
            );
            out.push(r);
        }
        Ok::<_, anyhow::Error>(out)
    }
    .await;
    let stopped = (crate::daemon::stop(ds), crate::daemon::stop(db));
    let out = res?;
    stopped.0?;
    stopped.1?;

    let col = |f: fn(&Round) -> f64| out.iter().map(f).collect::<Vec<_>>();
    let (ns, nb) = (crate::report::fmt_num(small.events() as f64), crate::report::fmt_num(big.events() as f64));
    let metrics = vec![
        Metric::rounds(format!("last-100 p50, {ns} events"), "ms", col(|r| r.small_p50_ms), None),
        Metric::rounds(format!("last-100 p50, {nb} events"), "ms", col(|r| r.big_p50_ms), None),
        Metric::rounds(format!("last-100 p99, {ns} events"), "ms", col(|r| r.small_p99_ms), None),
        Metric::rounds(
            format!("last-100 p99, {nb} events"),
            "ms",
            col(|r| r.big_p99_ms),
            Target::at_most(2.0, "≤ 2 ms"),
        ),
        Metric::rounds(format!("server CPU per request, {ns} events"), "µs", col(|r| r.small_cpu_us), None),
        Metric::rounds(format!("server CPU per request, {nb} events"), "µs", col(|r| r.big_cpu_us), None),
        Metric::rounds(
            format!("p99 ratio {nb} / {ns}"),
            "×",
            out.iter().map(|r| r.big_p99_ms / r.small_p99_ms).collect(),
            Target::at_most(1.5, "≤ 1.5"),
        ),
    ];
    Ok(ScenarioReport {
        id: 5,
        name: "reads",
        title: "Read latency",
        setup: format!(
            "GET /api/jobs/<step>/{LAST_100}, sequential on one keep-alive connection, share_log_pages = false (every request reads the store); the step holds all events ({} × {} and {} × {}); {requests} requests per side per round, alternating in chunks of {CHUNK}; {rounds} rounds (percentiles per round, median of rounds)",
            small.children, small.per_child, big.children, big.per_child
        ),
        metrics,
        details: json!({ "small": small, "big": big, "rounds": out }),
        error: None,
    })
}
