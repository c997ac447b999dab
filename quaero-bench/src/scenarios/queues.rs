//! Scenarios 7 and 8: the queue features under load.
//!
//! - `retries`: job throughput through four named queues with a retry policy, with one
//!   child in ten failing its first attempt, against the same with none failing; both in
//!   each round, alternating which goes first. Every retried child's events are checked.
//! - `schedules`: many definitions scheduled at the same second of every minute: the
//!   daemon's CPU while nothing fires, and how late each run started after its time.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use quaero_shared::client::Follower;
use quaero_shared::{JobStatus, Originator};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Ctx, mb, parse_time, secs_between};
use crate::client::{Finished, Watcher};
use crate::report::{Metric, ScenarioReport, Target, percentile};

const QUEUES: [&str; 4] = ["default", "q1", "q2", "q3"];
/// Slots per queue: 4 × 4 = the 16 workers of the jobs scenario.
const SLOTS: usize = 4;
const FLAKY_EVERY: u64 = 10;

fn retry_definition(queue: &str, children: u64, flaky: bool) -> Value {
    json!({
        "id": format!("fan-{queue}"),
        "queue": queue,
        "steps": [{
            "name": "fan", "type": "emit",
            "retry": {"max_attempts": 2, "backoff": "fixed", "initial": "10ms", "jitter": false},
            "config": {"count": 1, "children": children, "message": "child {child} event",
                       "flaky_every": if flaky { FLAKY_EVERY } else { 0 }}
        }]
    })
}

fn config_file() -> Result<tempfile::NamedTempFile> {
    let mut text = format!("[queue]\nconcurrency = {SLOTS}\n");
    for q in &QUEUES[1..] {
        text.push_str(&format!("[queues.{q}]\nconcurrency = {SLOTS}\n"));
    }
    let f = tempfile::NamedTempFile::new()?;
    std::fs::write(f.path(), text)?;
    Ok(f)
}

#[derive(Debug, Clone, Serialize)]
struct RetryRun {
    flaky: bool,
    jobs_per_s: f64,
    seconds: f64,
    cpu_s: f64,
    peak_rss_mb: f64,
    retried: u64,
}

async fn retry_once(ctx: &Ctx, n: u64, flaky: bool) -> Result<RetryRun> {
    let cfg = config_file()?;
    let daemon = crate::daemon::start(&ctx.bin, &["--config", cfg.path().to_str().context("temp path")?])?;
    let res = async {
        let api = crate::client::api(&daemon)?;
        let per = n / QUEUES.len() as u64;
        for q in QUEUES {
            api.put_definition(&retry_definition(q, per, flaky)).await?;
        }
        let (ftx, mut frx) = mpsc::unbounded_channel::<Finished>();
        let watcher = Watcher::start(&daemon.ws_url(), None, Some(ftx)).await?;
        let cpu0 = daemon.cpu_seconds()?;
        let t0 = SystemTime::now();
        let mut steps = Vec::new();
        for q in QUEUES {
            steps.push(format!("{}-s1", api.execute(&format!("fan-{q}")).await?.job_id));
        }
        // The steps finish in any order: take every trigger until each was seen.
        let mut last = t0;
        let mut left: std::collections::HashSet<&str> = steps.iter().map(String::as_str).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        while !left.is_empty() {
            let f = tokio::time::timeout_at(deadline, frx.recv())
                .await
                .with_context(|| format!("no finished trigger for {left:?} within 600 s"))?
                .context("watcher gone")?;
            for s in &f.step_ids {
                if left.remove(s.as_str()) {
                    last = last.max(f.at);
                }
            }
        }
        let cpu_s = daemon.cpu_seconds()? - cpu0;
        watcher.stop().await?;
        let mut retried = 0;
        for step in &steps {
            let job = api.job(step).await?;
            let c = job.child_counts;
            if job.status != JobStatus::Completed || c.completed != per || c.total != per {
                bail!("{step} ended {} with child counts {c:?}, expected {per} completed", job.status);
            }
            retried += check_retried(&api, step, per, flaky).await?;
        }
        let seconds = secs_between(t0, last);
        Ok::<_, anyhow::Error>(RetryRun {
            flaky,
            jobs_per_s: n as f64 / seconds,
            seconds,
            cpu_s,
            peak_rss_mb: mb(daemon.peak_rss()?),
            retried,
        })
    }
    .await;
    let stopped = crate::daemon::stop(daemon);
    let run = res?;
    stopped?;
    Ok(run)
}

/// Every child of `step` wrote its event once per attempt; a retried child (every
/// `FLAKY_EVERY`th) wrote it twice, with its failure and its second attempt between.
/// Returns how many children were retried.
async fn check_retried(api: &crate::client::Api, step: &str, children: u64, flaky: bool) -> Result<u64> {
    #[derive(Default)]
    struct Seen {
        events: u64,
        failed: bool,
        second: bool,
    }
    let mut seen: std::collections::HashMap<String, Seen> = std::collections::HashMap::new();
    Follower::new(step, 0)
        .drain(api, |e| {
            let s = seen.entry(e.job_id.clone()).or_default();
            if e.originator == Originator::Worker && e.message.ends_with(" event") {
                s.events += 1;
            }
            s.failed |= e.message.starts_with("attempt 1/2 failed");
            s.second |= e.message == "attempt 2/2 started";
        })
        .await?;
    let mut retried = 0;
    for k in 1..=children {
        let id = format!("{step}-c{k}");
        let s = seen.get(&id).with_context(|| format!("{id}: no events"))?;
        let should = flaky && k % FLAKY_EVERY == 0;
        let want = if should { 2 } else { 1 };
        if s.events != want || s.failed != should || s.second != should {
            bail!(
                "{id}: {} events (want {want}), failure shown {}, second attempt shown {} (retried: {should})",
                s.events,
                s.failed,
                s.second
            );
        }
        retried += u64::from(should);
    }
    Ok(retried)
}

pub async fn retries(ctx: &Ctx) -> Result<ScenarioReport> {
    // 50,000 jobs: over a second of steady work per run, not its start-up.
    let n = if ctx.quick { 400 } else { 50_000 };
    let rounds = ctx.rounds(3);
    let (mut clean, mut flaky) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Alternate which goes first, so drift in the machine's load falls on both.
        let order = if round % 2 == 1 { [false, true] } else { [true, false] };
        for f in order {
            let r = retry_once(ctx, n, f).await?;
            eprintln!(
                "  round {round}/{rounds} {:<8} {:>8.0} jobs/s ({:.3} s, server CPU {:.2} s, {} retried)",
                if f { "flaky" } else { "clean" },
                r.jobs_per_s,
                r.seconds,
                r.cpu_s,
                r.retried
            );
            if f { flaky.push(r) } else { clean.push(r) }
        }
    }
    let col = |rs: &[RetryRun], f: fn(&RetryRun) -> f64| rs.iter().map(f).collect::<Vec<_>>();
    let ratios: Vec<f64> = clean.iter().zip(&flaky).map(|(c, f)| f.jobs_per_s / c.jobs_per_s).collect();
    let metrics = vec![
        Metric::rounds("jobs/s, none failing", "jobs/s", col(&clean, |r| r.jobs_per_s), None),
        Metric::rounds("jobs/s, 1 in 10 failing once", "jobs/s", col(&flaky, |r| r.jobs_per_s), None),
        Metric::rounds("ratio failing / none", "×", ratios, Target::at_least(0.9, "≥ 0.9")),
        Metric::rounds("server CPU, none failing", "s", col(&clean, |r| r.cpu_s), None),
        Metric::rounds("server CPU, 1 in 10 failing once", "s", col(&flaky, |r| r.cpu_s), None),
        Metric::rounds("peak RSS, 1 in 10 failing once", "MB", col(&flaky, |r| r.peak_rss_mb), None),
    ];
    Ok(ScenarioReport {
        id: 7,
        name: "retries",
        title: "Throughput through 4 queues with retries",
        setup: format!(
            "4 queues × {SLOTS} slots, one emit fan-out of {} children (1 event each) per queue, retry max_attempts = 2 after 10 ms; failing: every {FLAKY_EVERY}th child fails its first attempt; from the 4 executes to the last step's finished trigger; every child's events checked; {rounds} rounds, alternating",
            n / 4
        ),
        metrics,
        details: json!({ "jobs": n, "clean": clean, "flaky": flaky }),
        error: None,
    })
}

#[derive(Debug, Clone, Serialize)]
struct ScheduleRun {
    definitions: usize,
    start_s: f64,
    idle_cpu_per_min_s: f64,
    fire_cpu_s: f64,
    runs: usize,
    late_p50_ms: f64,
    late_p99_ms: f64,
    late_max_ms: f64,
    rss_mb: f64,
}

/// When the definitions fire within each minute.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
enum Spread {
    /// Definition i at second i mod 60: a minute's fires spread over the minute.
    Seconds,
    /// All at second 0: one burst of every definition.
    Burst,
}

async fn schedules_once(ctx: &Ctx, n: usize, spread: Spread, idle: Duration) -> Result<ScheduleRun> {
    let mut b = crate::daemon::Daemon::builder().bin(&ctx.bin);
    for i in 0..n {
        let schedule = match (ctx.quick, spread) {
            (true, Spread::Seconds) => format!("{}-59/5 * * * * *", i % 5),
            (true, Spread::Burst) => "*/5 * * * * *".to_string(),
            (false, Spread::Seconds) => format!("{} * * * * *", i % 60),
            (false, Spread::Burst) => "0 * * * * *".to_string(),
        };
        let toml = format!(
            "id = \"s{i}\"\nschedule = \"{schedule}\"\n[[steps]]\nname = \"tick\"\ntype = \"emit\"\n[steps.config]\ncount = 1\n"
        );
        b = b.definition(&format!("s{i}.toml"), &toml);
    }
    let t0 = std::time::Instant::now();
    let daemon = b.try_start()?;
    let start_s = t0.elapsed().as_secs_f64();
    let res = async {
        let api = crate::client::api(&daemon)?;
        // Wait for the first fire and its runs to end, so the idle window starts clean.
        let fired = wait_runs(&api, n, Duration::from_secs(120)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cpu0 = daemon.cpu_seconds()?;
        tokio::time::sleep(idle).await;
        let idle_cpu = daemon.cpu_seconds()? - cpu0;
        // The next fire: every definition again.
        let cpu1 = daemon.cpu_seconds()?;
        let jobs = wait_runs(&api, 2 * n, Duration::from_secs(120)).await?;
        let fire_cpu_s = daemon.cpu_seconds()? - cpu1;
        let first: std::collections::HashSet<&str> = fired.iter().filter_map(|f| f["id"].as_str()).collect();
        let second: Vec<&Value> = jobs.iter().filter(|j| !first.contains(j["id"].as_str().unwrap_or(""))).collect();
        let mut late = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for j in &jobs {
            let slot = j["schedule_time"].as_str().context("a run without schedule_time")?;
            if !seen.insert((j["definition_id"].as_str().unwrap_or("").to_string(), slot.to_string())) {
                bail!("{} ran twice for {slot}", j["definition_id"]);
            }
        }
        let mut defs = std::collections::HashSet::new();
        for j in &second {
            defs.insert(j["definition_id"].as_str().unwrap_or(""));
            let slot = j["schedule_time"].as_str().context("schedule_time")?;
            let created = parse_time(j["created_at"].as_str().context("created_at")?)?;
            late.push(secs_between(parse_time(slot)?, created) * 1000.0);
        }
        if defs.len() != n {
            bail!("after the first fire of every definition, {} of {n} fired again", defs.len());
        }
        late.sort_by(f64::total_cmp);
        Ok::<_, anyhow::Error>(ScheduleRun {
            definitions: n,
            start_s,
            idle_cpu_per_min_s: idle_cpu * 60.0 / idle.as_secs_f64(),
            fire_cpu_s,
            runs: second.len(),
            late_p50_ms: percentile(&late, 50.0),
            late_p99_ms: percentile(&late, 99.0),
            late_max_ms: late.last().copied().unwrap_or(f64::NAN),
            rss_mb: mb(daemon.rss()?),
        })
    }
    .await;
    let stopped = crate::daemon::stop(daemon);
    let run = res?;
    stopped?;
    Ok(run)
}

/// Waits until `want` runs exist and every one has ended (read from the job counts, which
/// cost the daemon nothing), then lists them.
async fn wait_runs(api: &crate::client::Api, want: usize, limit: Duration) -> Result<Vec<Value>> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let s = api.stats().await?;
        // Each run is a manager and its one step.
        if s.completed_jobs >= 2 * want as u64 && s.pending_jobs + s.running_jobs == 0 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("after {limit:?}: {s:?}, waiting for {want} runs to complete");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Runs keep coming while it pages (newest first, by offset), so a page may repeat the
    // end of the one before: keep each run once, by id.
    let mut all = Vec::new();
    let mut ids = std::collections::HashSet::new();
    let mut offset = 0;
    loop {
        let page: Value = api.get(&format!("/api/jobs?limit=1000&offset={offset}")).await?;
        let jobs = page["jobs"].as_array().cloned().unwrap_or_default();
        let total = page["total_count"].as_u64().unwrap_or(0) as usize;
        if jobs.is_empty() {
            break;
        }
        offset += jobs.len();
        all.extend(jobs.into_iter().filter(|j| ids.insert(j["id"].as_str().unwrap_or("").to_string())));
        if offset >= total {
            break;
        }
    }
    Ok(all)
}

pub async fn schedules(ctx: &Ctx) -> Result<ScenarioReport> {
    // Quick: 200 definitions over 5 s; full: 10,000, every minute.
    let (n, idle) = if ctx.quick { (200, Duration::from_secs(1)) } else { (10_000, Duration::from_secs(20)) };
    let rounds = ctx.rounds(1);
    let (mut spread, mut burst) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        for (kind, out) in [(Spread::Seconds, &mut spread), (Spread::Burst, &mut burst)] {
            let r = schedules_once(ctx, n, kind, idle).await?;
            eprintln!(
                "  round {round}/{rounds} {n} definitions {kind:?}: start {:.1} s, idle CPU {:.3} s/min, late p50 {:.0} ms p99 {:.0} ms max {:.0} ms, fire CPU {:.2} s",
                r.start_s, r.idle_cpu_per_min_s, r.late_p50_ms, r.late_p99_ms, r.late_max_ms, r.fire_cpu_s
            );
            out.push(r);
        }
    }
    let col = |rs: &[ScheduleRun], f: fn(&ScheduleRun) -> f64| rs.iter().map(f).collect::<Vec<_>>();
    let metrics = vec![
        Metric::rounds(
            "lateness p99, spread over the minute",
            "ms",
            col(&spread, |r| r.late_p99_ms),
            Target::at_most(50.0, "≤ 50 ms"),
        ),
        Metric::rounds("lateness max, spread over the minute", "ms", col(&spread, |r| r.late_max_ms), None),
        Metric::rounds("lateness p50, all at second 0", "ms", col(&burst, |r| r.late_p50_ms), None),
        Metric::rounds("lateness p99, all at second 0", "ms", col(&burst, |r| r.late_p99_ms), None),
        Metric::rounds("daemon CPU while idle", "s/min", col(&spread, |r| r.idle_cpu_per_min_s), None),
        Metric::rounds(
            "daemon CPU for a minute's fires and runs, all at second 0",
            "s",
            col(&burst, |r| r.fire_cpu_s),
            None,
        ),
        Metric::rounds("start with the definitions", "s", col(&spread, |r| r.start_s), None),
        Metric::rounds("RSS after", "MB", col(&burst, |r| r.rss_mb), None),
    ];
    Ok(ScenarioReport {
        id: 8,
        name: "schedules",
        title: "Scheduled definitions",
        setup: format!(
            "{n} definition files with one emit step of 1 event, scheduled once a minute{}: spread (definition i at second i mod 60) and burst (all at second 0); lateness = a run's created_at − its schedule_time over one minute's runs; idle CPU over {} s with no fire (burst); {rounds} round(s)",
            if ctx.quick { " (quick: every 5 s)" } else { "" },
            idle.as_secs()
        ),
        metrics,
        details: json!({ "spread": spread, "burst": burst }),
        error: None,
    })
}
