//! Scenarios 1 and 2: a `load-demo`-shaped run watched by nobody, by 100 WebSocket clients
//! (30 never read, 70 refetch like the dashboard), and the same in `mode = "push"`.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::{Ctx, check_children_events, definition, emit_step, parse_time, secs_between, wait_finished};
use crate::client::{Finished, WatchStats, Watcher, connect_idle};
use crate::daemon::Daemon;
use crate::report::{Metric, ScenarioReport, Target};

#[derive(Debug, Clone, Copy, Serialize)]
struct Shape {
    warmup: u64,
    children: u64,
    per_child: u64,
    idle_clients: usize,
    reading_clients: usize,
    /// Pause between a child's events (ms): 0 writes as fast as the store takes them.
    child_interval_ms: u64,
}

impl Shape {
    fn new(ctx: &Ctx) -> Shape {
        if ctx.quick {
            Shape { warmup: 5, children: 20, per_child: 50, idle_clients: 6, reading_clients: 14, child_interval_ms: 0 }
        } else {
            // jobs/load-demo.toml
            Shape {
                warmup: 20,
                children: 200,
                per_child: 500,
                idle_clients: 30,
                reading_clients: 70,
                child_interval_ms: 0,
            }
        }
    }

    /// The same events paced over ≥ 10 s of steady ingest (16 children at a time, each
    /// 500 events 2 ms apart: about 13 s), so that a reading client gets a periodic trigger
    /// every second and refetches on each, instead of a run over in 0.25 s.
    fn paced(ctx: &Ctx) -> Shape {
        let s = Shape::new(ctx);
        if ctx.quick { Shape { child_interval_ms: 5, ..s } } else { Shape { child_interval_ms: 2, ..s } }
    }
    fn clients(&self) -> usize {
        self.idle_clients + self.reading_clients
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Side {
    label: &'static str,
    mode: &'static str,
    watched: bool,
    /// `[server] share_log_pages`.
    share: bool,
}

/// One run, as measured.
#[derive(Debug, Clone, Serialize)]
struct Run {
    side: &'static str,
    /// The daemon's pid and the measured window (CLOCK_MONOTONIC seconds, as `perf record
    /// -k CLOCK_MONOTONIC` stamps samples), to match this run in a system-wide profile.
    pid: u32,
    window: (f64, f64),
    /// The manager's own duration (server clock, start to terminal).
    terminal_s: f64,
    /// From the execute request to the bench seeing it terminal (polling every 10 ms).
    wall_s: f64,
    /// Each step's duration (server clock), to see where a difference comes from.
    steps_s: Vec<f64>,
    /// CPU seconds the bench process itself (the clients) used from execute to terminal:
    /// on a 2-core machine it competes with the daemon.
    bench_cpu_s: f64,
    /// The daemon's write syscalls and bytes written to disk from execute to terminal.
    write_syscalls: u64,
    write_bytes: u64,
    /// Server CPU from execute to terminal, as % of one core (the machine has nproc × 100%).
    cpu_pct: f64,
    /// Server CPU seconds from execute until every reading client had the manager's
    /// `finished` trigger (push mode delivers a backlog after the job ends).
    cpu_s: f64,
    drained_s: f64,
    events: u64,
    /// Averages over the reading clients.
    msgs_per_client: f64,
    bytes_per_client: f64,
    job_logs_per_client: f64,
    fetches_per_client: f64,
    /// Push mode: `job_log` messages a reading client got, as % of the run's events.
    delivered_pct: f64,
    clients: Vec<WatchStats>,
}

fn load_demo(shape: &Shape) -> serde_json::Value {
    definition(
        "load-demo",
        vec![
            emit_step("warm-up", json!({ "count": shape.warmup, "interval_ms": 10, "message": "warming up {i}/{n}" })),
            emit_step(
                "fan-out",
                json!({ "count": shape.per_child, "children": shape.children, "interval_ms": shape.child_interval_ms, "message": "child {child}: event {i} of {n}" }),
            ),
        ],
    )
}

async fn run_once(ctx: &Ctx, shape: &Shape, side: Side) -> Result<Run> {
    let share = if side.share { "true" } else { "false" };
    let daemon = crate::daemon::start(&ctx.bin, &["--mode", side.mode, "--share-log-pages", share])?;
    let res = measure(&daemon, shape, side).await;
    let stopped = crate::daemon::stop(daemon);
    let run = res?;
    stopped?;
    Ok(run)
}

async fn measure(daemon: &Daemon, shape: &Shape, side: Side) -> Result<Run> {
    let api = crate::client::api(daemon)?;
    api.put_definition(&load_demo(shape)).await?;
    let (ftx, mut frx) = mpsc::unbounded_channel::<Finished>();
    let mut idle = Vec::new();
    let mut readers = Vec::new();
    if side.watched {
        for _ in 0..shape.idle_clients {
            idle.push(connect_idle(&daemon.ws_url()).await?);
        }
        // The readers share one HTTP connection pool, as tabs of one browser would.
        let http = crate::client::api(daemon)?;
        for _ in 0..shape.reading_clients {
            readers.push(Watcher::start(&daemon.ws_url(), Some(http.clone()), Some(ftx.clone())).await?);
        }
    }
    drop(ftx);

    let cpu0 = daemon.cpu_seconds()?;
    let io0 = daemon.io_writes()?;
    let bench0 = crate::daemon::own_cpu_seconds()?;
    let m0 = crate::daemon::monotonic();
    let t0 = Instant::now();
    let mgr = api.execute("load-demo").await?.job_id;
    let job = api.wait_terminal(&mgr, Duration::from_millis(10), Duration::from_secs(600)).await?;
    let wall_s = t0.elapsed().as_secs_f64();
    let cpu_term = daemon.cpu_seconds()? - cpu0;
    let bench_cpu_s = crate::daemon::own_cpu_seconds()? - bench0;
    let io1 = daemon.io_writes()?;
    let window = (m0, crate::daemon::monotonic());
    // Every reading client must get the manager's finished trigger: proves delivery
    // works, and bounds the CPU the server spends on a push backlog.
    for _ in 0..readers.len() {
        wait_finished(&mut frx, &mgr, Duration::from_secs(300)).await?;
    }
    let drained_s = t0.elapsed().as_secs_f64();
    let cpu_s = daemon.cpu_seconds()? - cpu0;
    let mut clients = Vec::new();
    for r in readers {
        clients.push(r.stop().await?);
    }
    drop(idle);

    if job.status != quaero_shared::JobStatus::Completed {
        bail!("{mgr} ended {} ({:?})", job.status, job.error);
    }
    let events = check_children_events(&api, &mgr, shape.children, shape.per_child).await?;
    let fetch_errors: u64 = clients.iter().map(|c| c.fetch_errors).sum();
    if fetch_errors > 0 {
        bail!("{fetch_errors} refetches by reading clients failed");
    }
    let n = clients.len().max(1) as f64;
    let avg = |f: fn(&WatchStats) -> u64| clients.iter().map(f).sum::<u64>() as f64 / n;
    let job_logs_per_client = avg(|c| c.job_logs);
    Ok(Run {
        side: side.label,
        pid: daemon.pid(),
        window,
        terminal_s: job.duration_ms.unwrap_or(0) as f64 / 1000.0,
        wall_s,
        steps_s: job
            .steps
            .iter()
            .flatten()
            .map(|s| match (s.started_at.as_deref(), s.finished_at.as_deref()) {
                (Some(a), Some(b)) => Ok(secs_between(parse_time(a)?, parse_time(b)?)),
                _ => Ok(f64::NAN),
            })
            .collect::<Result<_>>()?,
        bench_cpu_s,
        write_syscalls: io1.0 - io0.0,
        write_bytes: io1.1 - io0.1,
        cpu_pct: cpu_term / wall_s * 100.0,
        cpu_s,
        drained_s,
        events,
        msgs_per_client: avg(|c| c.messages),
        bytes_per_client: avg(|c| c.bytes),
        job_logs_per_client,
        fetches_per_client: avg(|c| c.fetches),
        delivered_pct: job_logs_per_client / events as f64 * 100.0,
        clients: if clients.len() > 3 { clients[..3].to_vec() } else { clients },
    })
}

/// Runs the sides one after another (A B C A B C …), `rounds` times each.
async fn alternate<const N: usize>(ctx: &Ctx, shape: &Shape, sides: [Side; N], rounds: usize) -> Result<[Vec<Run>; N]> {
    let mut out: [Vec<Run>; N] = std::array::from_fn(|_| Vec::new());
    for round in 1..=rounds {
        for (side, runs) in sides.iter().zip(out.iter_mut()) {
            let r = run_once(ctx, shape, *side).await?;
            eprintln!(
                "  round {round}/{rounds} {:<28} terminal {:.3} s, server CPU {:.2} s",
                side.label, r.terminal_s, r.cpu_s
            );
            runs.push(r);
        }
    }
    Ok(out)
}

fn col(runs: &[Run], f: fn(&Run) -> f64) -> Vec<f64> {
    runs.iter().map(f).collect()
}

/// The step that carries the events (the last one), on the server clock.
fn fan_out_s(r: &Run) -> f64 {
    r.steps_s.last().copied().unwrap_or(f64::NAN)
}

fn ratios(a: &[Run], b: &[Run]) -> Vec<f64> {
    a.iter().zip(b).map(|(a, b)| b.terminal_s / a.terminal_s).collect()
}

fn setup(shape: &Shape, rounds: usize, unshared_side: bool) -> String {
    let unshared = if unshared_side {
        "; \"pages not shared\" = the same with share_log_pages = false (every refetch read from the store)"
    } else {
        ""
    };
    format!(
        "load-demo shape: warm-up step ({} events, 10 ms apart) + {} children × {} events{}; watched = {} WebSocket clients ({} never read, {} refetch last-100 per trigger like the dashboard){unshared}; {} rounds alternating",
        shape.warmup,
        shape.children,
        shape.per_child,
        if shape.child_interval_ms > 0 {
            format!(" {} ms apart (16 children at a time)", shape.child_interval_ms)
        } else {
            String::new()
        },
        shape.clients(),
        shape.idle_clients,
        shape.reading_clients,
        rounds
    )
}

/// Scenario 1: watching is free.
pub async fn watching(ctx: &Ctx) -> Result<ScenarioReport> {
    let shape = Shape::paced(ctx);
    // Each run is ~13 s of steady ingest: three rounds per side.
    let rounds = ctx.rounds(3);
    let a = Side { label: "0 clients", mode: "trigger", watched: false, share: true };
    let b = Side { label: "watched (trigger)", mode: "trigger", watched: true, share: true };
    let c = Side { label: "watched, pages not shared", mode: "trigger", watched: true, share: false };
    let [ra, rb, rc] = alternate(ctx, &shape, [a, b, c], rounds).await?;
    let n = shape.clients();
    let metrics = vec![
        Metric::rounds("time to terminal, 0 clients", "s", col(&ra, |r| r.terminal_s), None),
        Metric::rounds(format!("time to terminal, {n} clients"), "s", col(&rb, |r| r.terminal_s), None),
        Metric::rounds(
            format!("ratio {n} clients / 0 clients"),
            "×",
            ratios(&ra, &rb),
            Target::at_most(1.05, "≤ 1.05"),
        ),
        Metric::rounds(
            format!("time to terminal, {n} clients, pages not shared"),
            "s",
            col(&rc, |r| r.terminal_s),
            None,
        ),
        Metric::rounds(format!("ratio {n} clients, pages not shared / 0 clients"), "×", ratios(&ra, &rc), None),
        Metric::rounds("server CPU, 0 clients", "s", col(&ra, |r| r.cpu_s), None),
        Metric::rounds(
            format!("server CPU ratio {n} clients / 0 clients"),
            "×",
            ra.iter().zip(&rb).map(|(a, b)| b.cpu_s / a.cpu_s).collect(),
            None,
        ),
        Metric::rounds(format!("server CPU, {n} clients"), "s", col(&rb, |r| r.cpu_s), None),
        Metric::rounds(format!("server CPU, {n} clients, pages not shared"), "s", col(&rc, |r| r.cpu_s), None),
        Metric::rounds(format!("bench (clients) CPU, {n} clients"), "s", col(&rb, |r| r.bench_cpu_s), None),
        Metric::rounds("fan-out step alone, 0 clients", "s", col(&ra, fan_out_s), None),
        Metric::rounds(format!("fan-out step alone, {n} clients"), "s", col(&rb, fan_out_s), None),
        Metric::rounds("messages per reading client", "", col(&rb, |r| r.msgs_per_client), None),
        Metric::rounds("refetches per reading client", "", col(&rb, |r| r.fetches_per_client), None),
    ];
    Ok(ScenarioReport {
        id: 1,
        name: "watching",
        title: "Watching is free",
        setup: setup(&shape, rounds, true),
        metrics,
        details: json!({ "shape": shape, "unwatched": ra, "watched": rb, "watched_not_shared": rc }),
        error: None,
    })
}

/// Scenario 2: trigger vs push.
pub async fn push(ctx: &Ctx) -> Result<ScenarioReport> {
    let shape = Shape::new(ctx);
    let rounds = ctx.rounds(5);
    let a = Side { label: "trigger, watched", mode: "trigger", watched: true, share: true };
    let b = Side { label: "push, watched", mode: "push", watched: true, share: true };
    let [ra, rb] = alternate(ctx, &shape, [a, b], rounds).await?;
    let kb = |r: &Run| r.bytes_per_client / 1024.0;
    let metrics = vec![
        Metric::rounds("time to terminal, trigger", "s", col(&ra, |r| r.terminal_s), None),
        Metric::rounds("time to terminal, push", "s", col(&rb, |r| r.terminal_s), None),
        Metric::rounds("ratio push / trigger", "×", ratios(&ra, &rb), None),
        Metric::rounds("server CPU while running, trigger", "%", col(&ra, |r| r.cpu_pct), None),
        Metric::rounds("server CPU while running, push", "%", col(&rb, |r| r.cpu_pct), None),
        Metric::rounds("server CPU until delivered, trigger", "s", col(&ra, |r| r.cpu_s), None),
        Metric::rounds("server CPU until delivered, push", "s", col(&rb, |r| r.cpu_s), None),
        Metric::rounds("messages per reading client, trigger", "", col(&ra, |r| r.msgs_per_client), None),
        Metric::rounds("messages per reading client, push", "", col(&rb, |r| r.msgs_per_client), None),
        Metric::rounds("KiB per reading client, trigger", "KiB", col(&ra, kb), None),
        Metric::rounds("KiB per reading client, push", "KiB", col(&rb, kb), None),
        Metric::rounds("push: events delivered per reading client", "%", col(&rb, |r| r.delivered_pct), None),
    ];
    Ok(ScenarioReport {
        id: 2,
        name: "push",
        title: "Trigger vs push",
        setup: setup(&shape, rounds, false),
        metrics,
        details: json!({ "shape": shape, "trigger": ra, "push": rb }),
        error: None,
    })
}
