//! Scenario 4: job throughput. One step fans out N no-op child jobs (`emit` with
//! `count = 0`); jobs/s from the execute request to the step's `finished` trigger (sent
//! after every child's final record is flushed).

use std::time::{Duration, SystemTime};

use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::{Ctx, fan_out_definition, secs_between, wait_finished};
use crate::client::{Finished, Watcher};
use crate::report::{Metric, ScenarioReport, Target};

#[derive(Debug, Clone, Serialize)]
struct Run {
    jobs_per_s: f64,
    seconds: f64,
    /// The step's own duration on the server clock (before its final flush).
    step_s: f64,
    cpu_s: f64,
    peak_rss_mb: f64,
}

async fn run_once(ctx: &Ctx, n: u64) -> Result<Run> {
    let daemon = crate::daemon::start(&ctx.bin, &[])?;
    let res = async {
        let api = crate::client::api(&daemon)?;
        api.put_definition(&fan_out_definition("noop", n, 0)).await?;
        let (ftx, mut frx) = mpsc::unbounded_channel::<Finished>();
        let watcher = Watcher::start(&daemon.ws_url(), None, Some(ftx)).await?;
        let cpu0 = daemon.cpu_seconds()?;
        let t0 = SystemTime::now();
        let mgr = api.execute("noop").await?.job_id;
        let step = format!("{mgr}-s1");
        let t1 = wait_finished(&mut frx, &step, Duration::from_secs(600)).await?;
        let cpu_s = daemon.cpu_seconds()? - cpu0;
        watcher.stop().await?;
        let job = api.job(&step).await?;
        let c = job.child_counts;
        if job.status != quaero_shared::JobStatus::Completed || c.completed != n || c.total != n {
            bail!("{step} ended {} with child counts {c:?}, expected {n} completed", job.status);
        }
        let seconds = secs_between(t0, t1);
        Ok::<_, anyhow::Error>(Run {
            jobs_per_s: n as f64 / seconds,
            seconds,
            step_s: job.duration_ms.unwrap_or(0) as f64 / 1000.0,
            cpu_s,
            peak_rss_mb: super::mb(daemon.peak_rss()?),
        })
    }
    .await;
    let stopped = crate::daemon::stop(daemon);
    let run = res?;
    stopped?;
    Ok(run)
}

pub async fn run(ctx: &Ctx) -> Result<ScenarioReport> {
    let n = if ctx.quick { 500 } else { 10_000 };
    let rounds = ctx.rounds(3);
    let mut runs = Vec::new();
    for round in 1..=rounds {
        let r = run_once(ctx, n).await?;
        eprintln!(
            "  round {round}/{rounds} {:>8.0} jobs/s ({:.3} s, server CPU {:.2} s)",
            r.jobs_per_s, r.seconds, r.cpu_s
        );
        runs.push(r);
    }
    let col = |f: fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<_>>();
    let metrics = vec![
        Metric::rounds("no-op child jobs", "jobs/s", col(|r| r.jobs_per_s), Target::at_least(15_000.0, "≥ 15,000")),
        Metric::rounds("server CPU", "s", col(|r| r.cpu_s), None),
        Metric::rounds("peak RSS", "MB", col(|r| r.peak_rss_mb), None),
    ];
    Ok(ScenarioReport {
        id: 4,
        name: "jobs",
        title: "Job throughput",
        setup: format!(
            "one emit step with children = {n}, count = 0 (default 16 workers); from the execute request to the step's finished trigger; {rounds} rounds"
        ),
        metrics,
        details: json!({ "jobs": n, "runs": runs }),
        error: None,
    })
}
