//! Scenarios 9 and 10: scale on one machine.
//!
//! 9 `history`: two daemons side by side, one holding 1,000 finished runs and one holding
//! 1,000,000 with 10 events each. The history is written straight into the data directory
//! through quaerod's own store (`quaerod::store`, the code the daemon writes with) before
//! the daemon starts: the same records and index a million runs would leave, in minutes
//! instead of a million HTTP calls. Then: the listing calls a dashboard makes, alternating
//! between the two daemons; the start with that history; RSS after paging through it all.
//!
//! 10 `idle-websockets`: the daemon's memory per connected WebSocket client that only
//! listens.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use quaero_shared::{ChildCounts, JobDefinition, JobPath, JobStatus, Level, Originator, StepDefinition, StepType};
use quaerod::store::{CommitListener, Committed, ManagerRecord, NewEvent, StepRecord, StoreOptions};
use serde::Serialize;
use serde_json::json;

use super::{Ctx, mb, ms};
use crate::daemon::Daemon;
use crate::report::{Metric, ScenarioReport, Target, percentile};

/// Definitions the filled runs belong to; runs of `def-0` … `def-4` carry the tag `nightly`.
const DEFINITIONS: u64 = 20;
const EVENTS_PER_RUN: usize = 10;

struct Quiet;

impl CommitListener for Quiet {
    fn committed(&self, _: &Committed<'_>) {}
}

/// Run `i` of a fill: mostly completed, 1 in 50 failed, 1 in 97 cancelled.
fn record(num: u64, i: u64, now_ms: i64, total: u64) -> ManagerRecord {
    let def = format!("def-{}", i % DEFINITIONS);
    let status = if i % 50 == 7 {
        JobStatus::Failed
    } else if i % 97 == 5 {
        JobStatus::Cancelled
    } else {
        JobStatus::Completed
    };
    // Spread over the last four days, oldest first.
    let created = now_ms - ((total - i) as i64 * 4 * 86_400_000 / total.max(1) as i64) - 1_000;
    let step_def = StepDefinition {
        name: "emit".into(),
        step_type: StepType::Emit.into(),
        description: String::new(),
        on_error: Default::default(),
        config: json!({ "count": EVENTS_PER_RUN }),
        retry: None,
        timeout: None,
    };
    let definition = JobDefinition {
        id: def.clone(),
        name: format!("Definition {}", i % DEFINITIONS),
        tags: if i % DEFINITIONS < 5 { vec!["nightly".into()] } else { Vec::new() },
        steps: vec![step_def],
        ..Default::default()
    };
    ManagerRecord {
        num,
        definition_id: def,
        name: definition.name.clone(),
        status,
        created_ms: created,
        started_ms: Some(created + 5),
        finished_ms: Some(created + 500),
        error: (status == JobStatus::Failed).then(|| "step emit failed".to_string()),
        steps: vec![StepRecord {
            name: "emit".into(),
            step_type: StepType::Emit,
            description: String::new(),
            status,
            child_counts: ChildCounts::default(),
            started_ms: Some(created + 10),
            finished_ms: Some(created + 490),
            error: None,
            attempt: 1,
            next_attempt_ms: None,
        }],
        definition,
        params: Default::default(),
        scheduled_ms: None,
        trigger: None,
        schedule_ms: None,
    }
}

/// Writes `runs` finished runs (and `events` events each) into the data directory `path`
/// through quaerod's store, as the daemon's writer would have.
fn fill(path: &Path, runs: u64, events: usize) -> Result<Duration> {
    let started = Instant::now();
    let store =
        quaerod::store::open(path, Arc::new(Quiet), StoreOptions::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let now = quaerod::time::now_ms();
    rt.block_on(async {
        for i in 0..runs {
            let num = store.alloc_manager()?;
            let rec = record(num, i, now, runs);
            let at = rec.created_ms + 20;
            store.put_manager(rec).await?;
            if events > 0 {
                let evs = (0..events)
                    .map(|k| NewEvent {
                        path: JobPath::step(num, 1),
                        level: Level::Info,
                        originator: Originator::Step,
                        ts_ms: at + k as i64,
                        message: format!("event {} of {events}", k + 1),
                    })
                    .collect();
                store.append(evs).await?;
            }
        }
        store.sync().await
    })?;
    drop(store);
    Ok(started.elapsed())
}

/// A daemon started on a data directory filled with `runs` runs.
fn filled(bin: &Path, runs: u64, events: usize) -> Result<(Daemon, Duration, Duration)> {
    let mut d = crate::daemon::start(bin, &["--retention", "off"])?;
    d.try_stop(Duration::from_secs(15))?;
    let took = fill(d.data_path(), runs, events).context("fill")?;
    let t = Instant::now();
    d.restart();
    Ok((d, took, t.elapsed()))
}

#[derive(Debug, Clone, Serialize)]
struct Call {
    name: &'static str,
    small_p50_ms: f64,
    small_p99_ms: f64,
    big_p50_ms: f64,
    big_p99_ms: f64,
}

async fn get(api: &crate::client::Api, url: &str) -> Result<(f64, serde_json::Value)> {
    let t = Instant::now();
    let r = api.http().get(url).send().await?;
    let status = r.status();
    let body = r.bytes().await?;
    let took = t.elapsed().as_secs_f64();
    if !status.is_success() {
        bail!("GET {url} → {status}");
    }
    Ok((took, serde_json::from_slice(&body)?))
}

/// The same call on both daemons, alternating in chunks of 20, each answer a page of the
/// length wanted; latencies sorted.
async fn compare(
    small: (&crate::client::Api, &str, usize),
    big: (&crate::client::Api, &str, usize),
    n: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut s, mut b) = (Vec::new(), Vec::new());
    while s.len() < n {
        for ((api, url, want), out) in [(small, &mut s), (big, &mut b)] {
            for _ in 0..20 {
                let (t, body) = get(api, url).await?;
                let len = body["jobs"].as_array().map_or(usize::MAX, |j| j.len());
                if len != want {
                    bail!("GET {url}: {len} jobs, expected {want}");
                }
                out.push(t);
            }
        }
    }
    s.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    Ok((s, b))
}

pub async fn history(ctx: &Ctx) -> Result<ScenarioReport> {
    // 1,000,000 is the target; filling it takes ~25 min on this machine (the fill slows as
    // the tree grows), so the scenario runs 200,000 unless QUAERO_BENCH_HISTORY_RUNS says.
    let big_runs: u64 = std::env::var("QUAERO_BENCH_HISTORY_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if ctx.quick { 20_000 } else { 200_000 });
    let small_runs: u64 = 1_000;
    let n = if ctx.quick { 100 } else { 400 };
    eprintln!("  filling {small_runs} and {big_runs} runs × {EVENTS_PER_RUN} events");
    let bin = ctx.bin.clone();
    let (small, _, _) = tokio::task::spawn_blocking(move || filled(&bin, small_runs, EVENTS_PER_RUN)).await??;
    let bin = ctx.bin.clone();
    let (mut big, fill_took, _) = tokio::task::spawn_blocking(move || filled(&bin, big_runs, EVENTS_PER_RUN)).await??;
    eprintln!("  filled in {:.1} s", fill_took.as_secs_f64());
    // The start measured on its own: stop, then start again with the page cache warm (as a
    // restart after an upgrade would be).
    big.try_stop(Duration::from_secs(30))?;
    let t = Instant::now();
    big.restart();
    let start_s = t.elapsed().as_secs_f64();
    let rss_start = big.rss()?;
    let disk_bytes = big.disk_bytes().0;
    // Bytes per run without events, from a side fill of a tenth as many runs.
    let side_runs = (big_runs / 10).max(1_000);
    let side = tempfile::Builder::new().prefix("quaero-bench-runs-").tempdir()?;
    let side_path = side.path().join("data");
    let sp = side_path.clone();
    tokio::task::spawn_blocking(move || fill(&sp, side_runs, 0)).await??;
    let side_bytes = quaero_tests::daemon::proc::dir_bytes(&side_path).0;
    let per_run = side_bytes as f64 / side_runs as f64;
    let per_event = (disk_bytes as f64 - per_run * big_runs as f64) / (big_runs as f64 * EVENTS_PER_RUN as f64);

    let (sa, ba) = (crate::client::api(&small)?, crate::client::api(&big)?);
    let mut calls = Vec::new();
    for (name, small_q, big_q) in [
        ("first page", "/api/jobs?limit=50".to_string(), "/api/jobs?limit=50".to_string()),
        // 20 a page: the 1,000 runs hold 20 failed ones.
        ("failed, first page", "/api/jobs?limit=20&status=failed".into(), "/api/jobs?limit=20&status=failed".into()),
        (
            "one definition, first page",
            "/api/jobs?limit=50&definition=def-7".into(),
            "/api/jobs?limit=50&definition=def-7".into(),
        ),
        (
            "a page 90% deep, by cursor",
            format!("/api/jobs?limit=50&cursor={}", small_runs / 10),
            format!("/api/jobs?limit=50&cursor={}", big_runs / 10),
        ),
    ] {
        let (s_url, b_url) = (format!("{}{small_q}", small.base), format!("{}{big_q}", big.base));
        let want = if name.starts_with("failed") { 20 } else { 50 };
        let (ws, wb) = (want, want);
        // Warm both (connections, caches), then measure.
        compare((&sa, &s_url, ws), (&ba, &b_url, wb), 20).await?;
        let (s, b) = compare((&sa, &s_url, ws), (&ba, &b_url, wb), n).await?;
        let call = Call {
            name,
            small_p50_ms: ms(percentile(&s, 50.0)),
            small_p99_ms: ms(percentile(&s, 99.0)),
            big_p50_ms: ms(percentile(&b, 50.0)),
            big_p99_ms: ms(percentile(&b, 99.0)),
        };
        eprintln!(
            "  {name:<30} p99 {:.2} ms at {small_runs}, {:.2} ms at {big_runs} ({:.2}×)",
            call.small_p99_ms,
            call.big_p99_ms,
            call.big_p99_ms / call.small_p99_ms
        );
        calls.push(call);
    }
    let stats_url = format!("{}/api/jobs/stats", big.base);
    let mut stats = Vec::new();
    for _ in 0..n {
        let (t, v) = get(&ba, &stats_url).await?;
        if v["total_jobs"] != big_runs * 2 {
            bail!("stats: total_jobs must count every run and its step: {v}");
        }
        stats.push(t);
    }
    stats.sort_by(f64::total_cmp);

    // Every run once, a page of 1,000 at a time, by cursor.
    let t = Instant::now();
    let (mut seen, mut cursor) = (0u64, String::new());
    loop {
        let (_, page) = get(&ba, &format!("{}/api/jobs?limit=1000&cursor={cursor}", big.base)).await?;
        seen += page["jobs"].as_array().map_or(0, |j| j.len()) as u64;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    let paging_s = t.elapsed().as_secs_f64();
    if seen != big_runs {
        bail!("paging by cursor saw {seen} runs of {big_runs}");
    }
    let rss_paged = big.rss()?;
    eprintln!(
        "  start {start_s:.2} s, RSS {:.0} MB after start, {:.0} MB after paging all {big_runs} in {paging_s:.1} s",
        mb(rss_start),
        mb(rss_paged)
    );
    crate::daemon::stop(small)?;
    crate::daemon::stop(big)?;

    let one = |v: f64| vec![v];
    let mut metrics = Vec::new();
    for c in &calls {
        metrics.push(Metric::rounds(
            format!("{}: p99 at {big_runs}", c.name),
            "ms",
            one(c.big_p99_ms),
            Target::at_most(5.0, "≤ 5"),
        ));
        metrics.push(Metric::rounds(
            format!("{}: p99 ratio {big_runs} / {small_runs}", c.name),
            "×",
            one(c.big_p99_ms / c.small_p99_ms),
            Target::at_most(1.5, "≤ 1.5"),
        ));
    }
    metrics.push(Metric::rounds("stats p99", "ms", one(ms(percentile(&stats, 99.0))), Target::at_most(1.0, "≤ 1")));
    metrics.push(Metric::rounds(
        "start with the history (to listening)",
        "s",
        one(start_s),
        Target::at_most(3.0, "≤ 3"),
    ));
    metrics.push(Metric::rounds("RSS after the start", "MB", one(mb(rss_start)), Target::at_most(150.0, "≤ 150")));
    metrics.push(Metric::rounds(
        "RSS after paging through every run",
        "MB",
        one(mb(rss_paged)),
        Target::at_most(150.0, "≤ 150"),
    ));
    metrics.push(Metric::rounds("paging through every run, 1,000 a page", "s", one(paging_s), None));
    metrics.push(Metric::rounds("store on disk", "MB", one(mb(disk_bytes)), None));
    metrics.push(Metric::rounds("disk per run (record and index)", "bytes", one(per_run), None));
    metrics.push(Metric::rounds("disk per event", "bytes", one(per_event), None));
    metrics.push(Metric::rounds("fill (through the store, not HTTP)", "s", one(fill_took.as_secs_f64()), None));
    Ok(ScenarioReport {
        id: 9,
        name: "history",
        title: "Listing with a long history",
        setup: format!(
            "two daemons: {small_runs} and {big_runs} finished runs of {DEFINITIONS} definitions ({EVENTS_PER_RUN} events each; 1 in 50 failed), written into the data directory through quaerod's store before the start; each call {n} times per daemon, alternating in chunks of 20, one keep-alive connection each; start timed from spawn to the start line; disk per run from a side fill of {side_runs} runs without events"
        ),
        metrics,
        details: json!({ "calls": calls, "start_s": start_s, "rss_start_mb": mb(rss_start), "rss_paged_mb": mb(rss_paged) }),
        error: None,
    })
}

/// Raises this process's descriptor limit to its hard limit (the clients need one each).
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

pub async fn idle_websockets(ctx: &Ctx) -> Result<ScenarioReport> {
    let limit = raise_fd_limit();
    let want: usize = if ctx.quick { 500 } else { 10_000 };
    let n = want.min(limit.saturating_sub(200) as usize);
    let d = crate::daemon::start(&ctx.bin, &[])?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss0 = d.rss()?;
    let url = d.ws_url();
    let mut clients = Vec::with_capacity(n);
    let t = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let conns = futures_util::future::join_all(chunk.iter().map(|_| async {
            let mut s = crate::client::connect_idle(&url).await?;
            // The hello: the connection is served.
            match tokio::time::timeout(Duration::from_secs(10), s.next()).await {
                Ok(Some(Ok(m))) if m.is_text() => Ok(s),
                other => bail!("no hello: {other:?}"),
            }
        }))
        .await;
        for c in conns {
            clients.push(c?);
        }
    }
    let connect_s = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = d.rss()?;
    let per_client_kb = (rss1.saturating_sub(rss0)) as f64 / 1024.0 / n as f64;
    eprintln!(
        "  {n} idle clients: RSS {:.0} → {:.0} MB, {per_client_kb:.1} KB each (connected in {connect_s:.1} s)",
        mb(rss0),
        mb(rss1)
    );
    drop(clients);
    crate::daemon::stop(d)?;
    let one = |v: f64| vec![v];
    Ok(ScenarioReport {
        id: 10,
        name: "idle-websockets",
        title: "Memory per idle WebSocket client",
        setup: format!(
            "{n} WebSocket clients connected (200 at a time), each having read its hello, then idle 2 s; daemon RSS before and after"
        ),
        metrics: vec![
            Metric::rounds("daemon RSS per idle client", "KB", one(per_client_kb), Target::at_most(20.0, "≤ 20")),
            Metric::rounds(
                format!("daemon RSS with {n} clients"),
                "MB",
                one(mb(rss1)),
                if n >= 10_000 { Target::at_most(250.0, "≤ 250") } else { None },
            ),
            Metric::rounds("daemon RSS before", "MB", one(mb(rss0)), None),
        ],
        details: json!({ "clients": n, "connect_s": connect_s }),
        error: None,
    })
}
