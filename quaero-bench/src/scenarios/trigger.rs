//! Scenario 6: trigger latency. Managers of many short `emit` steps run one after another
//! while a client listens; for each step, the time from its `finished_at` (stamped just
//! before its terminal record is committed, so this includes the commit's flush) to the
//! moment the client received its `finished` trigger.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::{Ctx, definition, emit_step, ms, parse_time, secs_between};
use crate::client::{Finished, Watcher};
use crate::report::{Metric, ScenarioReport, Target, percentile};

#[derive(Debug, Clone, Serialize)]
struct Round {
    steps: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

async fn run_once(ctx: &Ctx, steps_per_manager: usize, managers: usize, events_per_step: u64) -> Result<Round> {
    let daemon = crate::daemon::start(&ctx.bin, &[])?;
    let res = async {
        let api = crate::client::api(&daemon)?;
        let steps = (1..=steps_per_manager)
            .map(|i| emit_step(&format!("step-{i}"), json!({ "count": events_per_step })))
            .collect();
        api.put_definition(&definition("many-steps", steps)).await?;
        let (ftx, mut frx) = mpsc::unbounded_channel::<Finished>();
        let watcher = Watcher::start(&daemon.ws_url(), None, Some(ftx)).await?;
        let mut received: HashMap<String, SystemTime> = HashMap::new();
        let mut mgrs = Vec::new();
        for _ in 0..managers {
            let mgr = api.execute("many-steps").await?.job_id;
            // Collect the steps' triggers until the manager's own one arrives.
            loop {
                let f = tokio::time::timeout(Duration::from_secs(120), frx.recv())
                    .await
                    .context("no finished trigger within 120 s")?
                    .context("watcher gone")?;
                for s in &f.step_ids {
                    if received.insert(s.clone(), f.at).is_some() {
                        bail!("two finished triggers for {s}");
                    }
                }
                if f.step_ids.is_empty() && f.manager_ids.contains(&mgr) {
                    break;
                }
            }
            mgrs.push(mgr);
        }
        watcher.stop().await?;
        let mut lat = Vec::new();
        for mgr in &mgrs {
            let job = api.job(mgr).await?;
            if job.status != quaero_shared::JobStatus::Completed {
                bail!("{mgr} ended {}", job.status);
            }
            for s in job.steps.unwrap_or_default() {
                let done = parse_time(s.finished_at.as_deref().context("step without finished_at")?)?;
                let got = received.get(&s.id).with_context(|| format!("no finished trigger for {}", s.id))?;
                lat.push(secs_between(done, *got));
            }
        }
        if lat.len() != steps_per_manager * managers {
            bail!("{} steps measured, expected {}", lat.len(), steps_per_manager * managers);
        }
        lat.sort_by(f64::total_cmp);
        Ok::<_, anyhow::Error>(Round {
            steps: lat.len(),
            p50_ms: ms(percentile(&lat, 50.0)),
            p99_ms: ms(percentile(&lat, 99.0)),
            max_ms: ms(*lat.last().unwrap_or(&f64::NAN)),
        })
    }
    .await;
    let stopped = crate::daemon::stop(daemon);
    let r = res?;
    stopped?;
    Ok(r)
}

pub async fn run(ctx: &Ctx) -> Result<ScenarioReport> {
    let (steps, managers, events) = if ctx.quick { (20, 2, 10) } else { (100, 2, 100) };
    let rounds = ctx.rounds(3);
    let mut out = Vec::new();
    for round in 1..=rounds {
        let r = run_once(ctx, steps, managers, events).await?;
        eprintln!(
            "  round {round}/{rounds} {} steps: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            r.steps, r.p50_ms, r.p99_ms, r.max_ms
        );
        out.push(r);
    }
    let col = |f: fn(&Round) -> f64| out.iter().map(f).collect::<Vec<_>>();
    let metrics = vec![
        Metric::rounds("finished trigger p50", "ms", col(|r| r.p50_ms), None),
        Metric::rounds("finished trigger p99", "ms", col(|r| r.p99_ms), Target::at_most(50.0, "≤ 50 ms")),
        Metric::rounds("finished trigger max", "ms", col(|r| r.max_ms), None),
    ];
    Ok(ScenarioReport {
        id: 6,
        name: "trigger-latency",
        title: "Trigger latency",
        setup: format!(
            "{managers} managers × {steps} emit steps of {events} events, one after another, one WebSocket client; step finished_at (server, ms) → trigger received; {} steps per round, {rounds} rounds",
            steps * managers
        ),
        metrics,
        details: json!({ "rounds": out }),
        error: None,
    })
}
