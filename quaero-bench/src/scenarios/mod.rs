//! The scenarios of BENCHMARKS.md. Each starts fresh daemons, measures, then checks that the
//! run did what it should (every event present, every job completed): a run that did not
//! is an error, whatever its numbers.

mod ingest;
mod jobs;
mod queues;
mod reads;
mod scale;
mod trigger;
mod watching;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::client::{Api, Finished};
use crate::report::ScenarioReport;

/// What every scenario gets.
pub struct Ctx {
    pub bin: PathBuf,
    pub quick: bool,
    /// Rounds for comparisons (`--rounds`); each scenario has its own default.
    pub rounds: Option<usize>,
}

impl Ctx {
    fn rounds(&self, full: usize) -> usize {
        self.rounds.unwrap_or(if self.quick { 1 } else { full }).max(1)
    }
}

/// Scenario names for `--scenario`, in the order.
pub const NAMES: [&str; 10] = [
    "watching",
    "push",
    "ingest",
    "jobs",
    "reads",
    "trigger-latency",
    "retries",
    "schedules",
    "history",
    "idle-websockets",
];

pub async fn run(name: &str, ctx: &Ctx) -> Result<ScenarioReport> {
    match name {
        "watching" => watching::watching(ctx).await,
        "push" => watching::push(ctx).await,
        "ingest" => ingest::run(ctx).await,
        "jobs" => jobs::run(ctx).await,
        "reads" => reads::run(ctx).await,
        "trigger-latency" => trigger::run(ctx).await,
        "retries" => queues::retries(ctx).await,
        "schedules" => queues::schedules(ctx).await,
        "history" => scale::history(ctx).await,
        "idle-websockets" => scale::idle_websockets(ctx).await,
        other => bail!("unknown scenario {other:?}"),
    }
}

/// An `emit` step.
fn emit_step(name: &str, config: Value) -> Value {
    json!({ "name": name, "type": "emit", "config": config })
}

fn definition(id: &str, steps: Vec<Value>) -> Value {
    json!({ "id": id, "name": id, "steps": steps })
}

/// One step fanning out `children` child jobs of `per_child` events each: the shape of
/// the ingest runs, with messages like the load demo's.
fn fan_out_definition(id: &str, children: u64, per_child: u64) -> Value {
    definition(
        id,
        vec![emit_step(
            "emit",
            json!({ "count": per_child, "children": children, "message": "child {child}: event {i} of {n}" }),
        )],
    )
}

/// Waits for the `finished` trigger of `id` (a step id, or a manager id for the manager's
/// own trigger) and returns when the client received it.
async fn wait_finished(rx: &mut mpsc::UnboundedReceiver<Finished>, id: &str, limit: Duration) -> Result<SystemTime> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let f = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .with_context(|| format!("no finished trigger for {id} within {limit:?}"))?
            .context("watcher gone")?;
        let hit = if id.contains("-s") {
            f.step_ids.iter().any(|s| s == id)
        } else {
            f.step_ids.is_empty() && f.manager_ids.iter().any(|m| m == id)
        };
        if hit {
            return Ok(f.at);
        }
    }
}

fn parse_time(rfc3339: &str) -> Result<SystemTime> {
    humantime::parse_rfc3339(rfc3339).with_context(|| format!("bad timestamp {rfc3339:?}"))
}

/// Seconds from `a` to `b` (negative if b is earlier).
fn secs_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Counts the worker (child job) events of a scope per job id and checks that each of
/// `children` children has exactly `per_child`; returns how many events the scope holds.
async fn check_children_events(api: &Api, scope: &str, children: u64, per_child: u64) -> Result<u64> {
    let mut per_job: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let total = quaero_shared::client::Follower::new(scope, 0)
        .drain(api, |e| {
            if e.originator == quaero_shared::Originator::Worker {
                *per_job.entry(e.job_id.clone()).or_insert(0) += 1;
            }
        })
        .await?;
    let worker: u64 = per_job.values().sum();
    if per_job.len() as u64 != children || per_job.values().any(|&n| n != per_child) {
        let short: Vec<String> =
            per_job.iter().filter(|(_, n)| **n != per_child).take(5).map(|(j, n)| format!("{j}: {n}")).collect();
        bail!(
            "{scope}: expected {children} children × {per_child} events, found {} children with {worker} events (e.g. {})",
            per_job.len(),
            short.join(", ")
        );
    }
    Ok(total)
}

/// The first event of a child job in a scope: when emitting began.
async fn first_worker_event(api: &Api, scope: &str) -> Result<SystemTime> {
    let page: quaero_shared::LogsResponse = api.get(&format!("/api/jobs/{scope}/logs?after=0&limit=200")).await?;
    let e = page
        .logs
        .iter()
        .find(|e| e.originator == quaero_shared::Originator::Worker)
        .with_context(|| format!("{scope}: no child event among its first 200"))?;
    parse_time(&e.full_timestamp)
}

fn ms(d: f64) -> f64 {
    d * 1000.0
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
