//! Running one manager: its steps in order, each either as one unit of work on the pool or
//! fanned out into child jobs; engine events for every transition.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quaero_shared::{ChildCounts, JobPath, JobStatus, Level, Originator, Overlap, StepProgress, Trigger};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::definition::{StepPlan, StepPolicy};
use super::runners::{self, Failure, Outcome, Sink};
use super::{Engine, LiveManager, StopReason};
use crate::store::ChildRecord;
use crate::time::now_ms;

/// How often a fan-out step persists its counts while children run.
const PROGRESS_SAVE: Duration = Duration::from_millis(50);
/// How often a fan-out step writes a "children: …" event while children run.
const PROGRESS_EVENT: Duration = Duration::from_secs(1);

fn fmt_dur(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        format!("{:.3}s", d.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

/// The `Instant` of a start recorded as `started_ms`: a job or step resumed after a restart
/// reports its duration from its first start, as the API's `duration_ms` does.
fn since(started_ms: i64) -> Instant {
    let ago = Duration::from_millis(now_ms().saturating_sub(started_ms).max(0) as u64);
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

struct Ctx {
    engine: Arc<Engine>,
    live: Arc<LiveManager>,
}

impl Ctx {
    fn sink(&self, path: JobPath, originator: Originator) -> Sink {
        Sink { store: self.engine.store.clone(), path, originator }
    }

    async fn event(&self, step: u32, level: Level, msg: String) {
        let (path, orig) = if step == 0 {
            (JobPath::manager(self.live.num), Originator::Manager)
        } else {
            (JobPath::step(self.live.num, step), Originator::Step)
        };
        self.sink(path, orig).send(level, msg).await;
    }

    /// Changes the live record and persists a snapshot (not waiting for the disk).
    async fn update(&self, f: impl FnOnce(&mut crate::store::ManagerRecord)) {
        let snap = {
            let mut r = self.live.record.lock().expect("record");
            f(&mut r);
            r.clone()
        };
        let _ = self.engine.store.put_manager(snap).await;
    }

    /// Sets a step's child counts in the live record and saves it.
    async fn set_child_counts(&self, i: u32, counts: ChildCounts) {
        self.live.record.lock().expect("record").steps[i as usize - 1].child_counts = counts;
        self.update(|_| {}).await;
    }

    /// A terminal transition: persisted and flushed (after every event queued before it)
    /// before the live record, and so the API and the clients, show it.
    async fn finish(&self, f: impl FnOnce(&mut crate::store::ManagerRecord)) {
        let mut snap = self.live.snapshot();
        f(&mut snap);
        let _ = self.engine.store.put_manager(snap.clone()).await;
        let _ = self.engine.store.sync().await;
        *self.live.record.lock().expect("record") = snap;
    }
}

pub(super) async fn run_manager(engine: Arc<Engine>, live: Arc<LiveManager>) {
    let ctx = Ctx { engine: engine.clone(), live: live.clone() };
    if !wait_for_start(&ctx).await {
        if live.stop_reason() != Some(StopReason::Shutdown) {
            cancel_before_start(&ctx).await;
        }
        // At a shutdown it stays pending in the store and waits again at the next start.
        return;
    }
    let started = Instant::now();
    if let Some(t) = live.plan.timeout {
        let l = live.clone();
        let token = live.cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = tokio::time::sleep(t) => l.stop(StopReason::Timeout(format!("timed out after {}", humantime::format_duration(t)))),
            }
        });
    }

    let (fresh, n_steps, name) = {
        let r = live.record.lock().expect("record");
        (r.started_ms.is_none(), r.steps.len(), r.name.clone())
    };
    ctx.update(|r| {
        r.status = JobStatus::Running;
        r.started_ms.get_or_insert_with(now_ms);
    })
    .await;
    let started = if fresh { started } else { live.record.lock().expect("record").started_ms.map_or(started, since) };
    engine.status_change(&live.snapshot(), 0);
    if fresh {
        ctx.event(0, Level::Info, format!("job started: {name} ({n_steps} steps)")).await;
    }

    let mut failure: Option<(u32, String)> = None;
    for i in 1..=n_steps as u32 {
        let status = live.record.lock().expect("record").steps[i as usize - 1].status;
        if status.is_terminal() {
            continue;
        }
        if live.cancel.is_cancelled() {
            break;
        }
        match run_step(&ctx, i).await {
            StepEnd::Done => {}
            StepEnd::Failed(msg, continue_on) => {
                if !continue_on {
                    failure = Some((i, msg));
                    break;
                }
            }
            StepEnd::Stopped => break,
        }
    }

    let reason = live.stop_reason();
    if reason == Some(StopReason::Shutdown) {
        ctx.event(
            0,
            Level::Warn,
            "quaerod is stopping: this job is interrupted and resumes when the daemon starts again".into(),
        )
        .await;
        let _ = engine.store.sync().await;
        return;
    }
    let (status, error) = match (&reason, failure) {
        (Some(StopReason::Timeout(msg)), _) => (JobStatus::Failed, Some(msg.clone())),
        (Some(StopReason::Cancelled), _) => (JobStatus::Cancelled, None),
        (_, Some((i, msg))) => {
            let step_name = live.record.lock().expect("record").steps[i as usize - 1].name.clone();
            (JobStatus::Failed, Some(format!("step {i} ({step_name}) failed: {msg}")))
        }
        _ => (JobStatus::Completed, None),
    };
    // Steps that never ran are not left pending forever.
    let skipped_status = JobStatus::Cancelled;
    let msg = match status {
        JobStatus::Completed => format!("job completed in {}", fmt_dur(started.elapsed())),
        JobStatus::Cancelled => format!("job cancelled after {}", fmt_dur(started.elapsed())),
        _ => format!("job failed after {}: {}", fmt_dur(started.elapsed()), error.clone().unwrap_or_default()),
    };
    let level = if status == JobStatus::Completed { Level::Info } else { Level::Error };
    ctx.event(0, level, msg).await;
    let mut newly_skipped = Vec::new();
    ctx.finish(|r| {
        let now = now_ms();
        for (k, s) in r.steps.iter_mut().enumerate() {
            if !s.status.is_terminal() {
                s.status = skipped_status;
                s.finished_ms = Some(now);
                s.next_attempt_ms = None;
                s.error = Some("not run: an earlier step ended the job".into());
                newly_skipped.push(k as u32 + 1);
            }
        }
        r.status = status;
        r.error = error;
        r.finished_ms = Some(now);
    })
    .await;
    let snap = live.snapshot();
    record_finished(&snap);
    for k in newly_skipped {
        engine.status_change(&snap, k);
        // Every step that reaches a terminal status gets its finished trigger (docs/websocket.md).
        engine.aggregator.step_finished(JobPath::step(live.num, k));
    }
    engine.status_change(&snap, 0);
    engine.aggregator.manager_finished(JobPath::manager(live.num));
}

/// A run that has not started waits for its time if it was delayed (on tokio's clock, from
/// the wall-clock time left, so a restart waits only for what is left), then for its queue
/// if that is paused. False when it was stopped while waiting.
async fn wait_for_start(ctx: &Ctx) -> bool {
    let (at, started) = {
        let r = ctx.live.record.lock().expect("record");
        (r.scheduled_ms, r.started_ms.is_some())
    };
    if started {
        return true;
    }
    let left = at.map_or(0, |at| at - now_ms());
    if left > 0 {
        tokio::select! {
            _ = ctx.live.cancel.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(left as u64)) => {}
        }
    }
    // A scheduled run of a definition with `overlap = "queue"` waits for the runs before it.
    let (def_id, waits) = {
        let r = ctx.live.record.lock().expect("record");
        let scheduled = matches!(r.trigger, Some(Trigger::Schedule | Trigger::CatchUp));
        (r.definition_id.clone(), scheduled && r.definition.overlap == Overlap::Queue)
    };
    if waits && ctx.engine.has_older_runs(&def_id, ctx.live.num) {
        let msg = format!("waiting: an earlier run of {def_id} is still active (overlap = \"queue\")");
        ctx.event(0, Level::Info, msg).await;
        if !ctx.engine.until_older_runs_end(&def_id, ctx.live.num, &ctx.live.cancel).await {
            return false;
        }
    }
    // A run on a paused queue stays pending until the queue resumes.
    if ctx.live.queue.is_paused() {
        let msg = format!("waiting: queue {} is paused; this run starts when it resumes", ctx.live.queue.name);
        ctx.event(0, Level::Info, msg).await;
    }
    ctx.live.queue.until_resumed(&ctx.live.cancel).await
}

/// A delayed run cancelled before its time: it and its steps end cancelled, never started.
async fn cancel_before_start(ctx: &Ctx) {
    ctx.event(0, Level::Info, "job cancelled before it started".into()).await;
    let mut steps = Vec::new();
    ctx.finish(|r| {
        let now = now_ms();
        for (k, s) in r.steps.iter_mut().enumerate() {
            s.status = JobStatus::Cancelled;
            s.finished_ms = Some(now);
            s.error = Some("not run: the job was cancelled before it started".into());
            steps.push(k as u32 + 1);
        }
        r.status = JobStatus::Cancelled;
        r.finished_ms = Some(now);
    })
    .await;
    let snap = ctx.live.snapshot();
    record_finished(&snap);
    for k in steps {
        ctx.engine.status_change(&snap, k);
        ctx.engine.aggregator.step_finished(JobPath::step(ctx.live.num, k));
    }
    ctx.engine.status_change(&snap, 0);
    ctx.engine.aggregator.manager_finished(JobPath::manager(ctx.live.num));
}

/// Counts a run that ended, and how long it ran, by definition.
fn record_finished(m: &crate::store::ManagerRecord) {
    let metrics = &crate::metrics::METRICS;
    metrics.jobs_finished.with_label_values(&[m.definition_id.as_str(), m.status.as_str()]).inc();
    if let (Some(start), Some(end)) = (m.started_ms, m.finished_ms) {
        let secs = (end - start).max(0) as f64 / 1000.0;
        metrics.job_seconds.with_label_values(&[m.definition_id.as_str()]).observe(secs);
    }
}

enum StepEnd {
    Done,
    /// Failed with this message; `true` when `on_error = "continue"`.
    Failed(String, bool),
    /// Cancelled, timed out or interrupted by shutdown: the manager stops here.
    Stopped,
}

async fn run_step(ctx: &Ctx, i: u32) -> StepEnd {
    let engine = &ctx.engine;
    let live = &ctx.live;
    let plan = live.plan.steps[i as usize - 1].clone();
    let continue_on = live.record.lock().expect("record").definition.steps[i as usize - 1].on_error
        == quaero_shared::OnError::Continue;
    let started = Instant::now();
    let (name, resumed) = {
        let r = live.record.lock().expect("record");
        let s = &r.steps[i as usize - 1];
        (s.name.clone(), s.started_ms.is_some())
    };
    ctx.update(|r| {
        let s = &mut r.steps[i as usize - 1];
        s.status = JobStatus::Running;
        s.started_ms.get_or_insert_with(now_ms);
    })
    .await;
    let started = if resumed {
        live.record.lock().expect("record").steps[i as usize - 1].started_ms.map_or(started, since)
    } else {
        started
    };
    engine.status_change(&live.snapshot(), i);
    let again = if resumed { " again" } else { "" };
    ctx.event(i, Level::Info, format!("step {i} started{again}: {name} ({})", plan.step_type().as_str())).await;

    let outcome = if plan.children() > 0 { fan_out(ctx, i, &plan).await } else { run_step_unit(ctx, i, &plan).await };

    if live.stop_reason() == Some(StopReason::Shutdown) {
        // Leave the step running in the store: it runs again at the next start.
        return StepEnd::Stopped;
    }
    let took = fmt_dur(started.elapsed());
    let (status, error, level, msg) = match &outcome {
        Ok(()) => (JobStatus::Completed, None, Level::Info, format!("step {i} completed in {took}: {name}")),
        Err(Failure::Cancelled) => {
            let why = match live.stop_reason() {
                Some(StopReason::Timeout(m)) => m,
                _ => "cancelled".into(),
            };
            (JobStatus::Cancelled, Some(why.clone()), Level::Warn, format!("step {i} {why} after {took}: {name}"))
        }
        Err(Failure::Failed(e)) => {
            (JobStatus::Failed, Some(e.clone()), Level::Error, format!("step {i} failed after {took}: {name}: {e}"))
        }
    };
    ctx.event(i, level, msg).await;
    ctx.finish(|r| {
        let s = &mut r.steps[i as usize - 1];
        s.status = status;
        s.error = error;
        s.finished_ms = Some(now_ms());
        s.next_attempt_ms = None;
    })
    .await;
    engine.status_change(&live.snapshot(), i);
    engine.aggregator.step_finished(JobPath::step(live.num, i));
    match outcome {
        Ok(()) => StepEnd::Done,
        Err(Failure::Cancelled) if live.cancel.is_cancelled() => StepEnd::Stopped,
        Err(Failure::Cancelled) => StepEnd::Failed("cancelled".into(), continue_on),
        Err(Failure::Failed(e)) => StepEnd::Failed(e, continue_on),
    }
}

/// A step without children: attempt by attempt under its retry policy, each waiting for a
/// worker slot (none is held while waiting to retry). The attempt state is saved in the
/// step's record, so the API shows it and a restart resumes from it.
async fn run_step_unit(ctx: &Ctx, i: u32, plan: &StepPlan) -> Outcome {
    let engine = &ctx.engine;
    let live = &ctx.live;
    let sink = ctx.sink(JobPath::step(live.num, i), Originator::Step);
    let cancel = live.cancel.clone();
    let policy = live.plan.policies[i as usize - 1].clone();
    let stored = {
        let r = live.record.lock().expect("record");
        let s = &r.steps[i as usize - 1];
        AttemptState { attempt: s.attempt, next_ms: s.next_attempt_ms }
    };
    let mut tries = Attempts::new(&policy, stored);
    let save = |st: AttemptState| async move {
        ctx.update(|r| {
            let s = &mut r.steps[i as usize - 1];
            (s.attempt, s.next_attempt_ms) = (st.attempt, st.next_ms);
        })
        .await;
        engine.status_change(&live.snapshot(), i);
    };
    loop {
        if !tries.wait(&cancel).await {
            return Err(Failure::Cancelled);
        }
        let Some(permit) = live.queue.slot(live.priority, &cancel).await else { return Err(Failure::Cancelled) };
        save(AttemptState { attempt: tries.state.attempt, next_ms: None }).await;
        if let Some(msg) = tries.started_message() {
            sink.send(Level::Info, msg).await;
        }
        let attempt = cancel.child_token();
        let unit = run_unit(engine, plan, None, tries.state.attempt, &sink, &attempt);
        let o = with_timeout(policy.timeout, &cancel, &attempt, unit).await;
        drop(permit);
        live.queue.unit_ended();
        match o {
            Err(Failure::Failed(e)) if !cancel.is_cancelled() => match tries.failed(&e) {
                Some(msg) => {
                    sink.send(Level::Warn, msg).await;
                    save(tries.state).await;
                }
                None => return Err(Failure::Failed(tries.final_error(e))),
            },
            other => return other,
        }
    }
}

/// One unit of work: the whole step, or one child (`item` = its index and item).
async fn run_unit(
    engine: &Engine,
    plan: &StepPlan,
    item: Option<(u32, &str)>,
    attempt: u32,
    sink: &Sink,
    cancel: &CancellationToken,
) -> Outcome {
    match plan {
        StepPlan::Command(c) => runners::command(c, item.map(|(_, it)| it), sink, cancel).await,
        StepPlan::Emit(e) => runners::emit(e, attempt, sink, cancel).await,
        StepPlan::HttpFetch(h) => {
            let url = item.map(|(_, u)| u).unwrap_or_default();
            runners::http_get(&engine.http, url, h, sink, cancel).await
        }
    }
}

enum ChildMsg {
    Started,
    /// Finished with this status; `true` when it had started (was counted as running).
    Done(JobStatus, bool),
    /// Stopped by the daemon's shutdown; `true` when it had started. It runs again at the
    /// next start, so it counts as pending, not as cancelled.
    Interrupted(bool),
}

impl ChildMsg {
    /// Moves the step's child counts by what a child reported; whether they changed.
    fn apply(self, counts: &mut ChildCounts) -> bool {
        match self {
            ChildMsg::Started => {
                counts.pending = counts.pending.saturating_sub(1);
                counts.running += 1;
            }
            ChildMsg::Done(status, started) => {
                if started {
                    counts.running = counts.running.saturating_sub(1);
                } else {
                    counts.pending = counts.pending.saturating_sub(1);
                }
                counts.add(status, 1);
            }
            ChildMsg::Interrupted(started) => {
                if !started {
                    return false;
                }
                counts.running = counts.running.saturating_sub(1);
                counts.pending += 1;
            }
        }
        true
    }
}

/// Fans a step out into child jobs on the worker pool and waits for all of them.
async fn fan_out(ctx: &Ctx, i: u32, plan: &StepPlan) -> Outcome {
    let items: Vec<String> = match plan {
        StepPlan::Command(c) => c.for_each.clone().unwrap_or_default(),
        StepPlan::HttpFetch(h) => h.urls.clone(),
        StepPlan::Emit(_) => (1..=plan.children() as u32).map(|k| format!("child {k}")).collect(),
    };
    let (counts, todo) = plan_children(ctx, i, &items).await;
    let step_path = JobPath::step(ctx.live.num, i);
    ctx.set_child_counts(i, counts).await;
    let done = items.len() - todo.len();
    ctx.event(i, Level::Info, format!("fanning out {} child jobs ({done} already done)", items.len())).await;
    report_progress(&ctx.engine, step_path, counts);

    let (tx, rx) = mpsc::unbounded_channel::<ChildMsg>();
    let plan = Arc::new(plan.clone());
    for (k, resume) in todo {
        let token = ctx.live.cancel.child_token();
        ctx.live.child_tokens.lock().expect("tokens").insert(JobPath::child(ctx.live.num, i, k), token.clone());
        let child = Child { engine: ctx.engine.clone(), live: ctx.live.clone(), step: i, index: k, token, resume };
        tokio::spawn(child.run(plan.clone(), items[k as usize - 1].clone(), tx.clone()));
    }
    drop(tx);
    let counts = follow_children(ctx, i, counts, rx).await;

    if ctx.live.cancel.is_cancelled() {
        return Err(Failure::Cancelled);
    }
    let allowed = match &*plan {
        StepPlan::HttpFetch(h) => h.allow_failures,
        _ => 0,
    };
    let bad = counts.failed + counts.cancelled;
    if bad > allowed {
        return Err(Failure::Failed(format!(
            "{} of {} child jobs failed{}",
            bad,
            counts.total,
            if allowed > 0 { format!(" (allowed: {allowed})") } else { String::new() }
        )));
    }
    Ok(())
}

/// Writes the step's children as pending, keeping those that finished before a restart;
/// returns the counts and the children still to run.
async fn plan_children(ctx: &Ctx, i: u32, items: &[String]) -> (ChildCounts, Vec<(u32, AttemptState)>) {
    let num = ctx.live.num;
    let n = items.len() as u32;
    let existing: std::collections::HashMap<u32, ChildRecord> =
        ctx.engine.store.children_of(num, i).unwrap_or_default().into_iter().map(|c| (c.path.child, c)).collect();
    let now = now_ms();
    let mut counts = ChildCounts { total: u64::from(n), ..Default::default() };
    let mut todo = Vec::new();
    let mut records = Vec::new();
    for k in 1..=n {
        match existing.get(&k) {
            Some(c) if c.status.is_terminal() => counts.add(c.status, 1),
            _ => {
                counts.pending += 1;
                let old = existing.get(&k);
                // A child waiting to retry when the daemon stopped keeps its attempt and time.
                let resume = old.map_or_else(AttemptState::default, |c| AttemptState {
                    attempt: c.attempt,
                    next_ms: c.next_attempt_ms,
                });
                todo.push((k, resume));
                records.push(ChildRecord {
                    path: JobPath::child(num, i, k),
                    name: items[k as usize - 1].clone(),
                    status: JobStatus::Pending,
                    created_ms: old.map_or(now, |c| c.created_ms),
                    started_ms: None,
                    finished_ms: None,
                    error: None,
                    attempt: resume.attempt,
                    next_attempt_ms: resume.next_ms,
                });
            }
        }
    }
    for chunk in records.chunks(4096) {
        let _ = ctx.engine.store.put_children(chunk.to_vec()).await;
    }
    (counts, todo)
}

/// Follows the children's reports until all are done: the step's counts are saved at
/// most every [`PROGRESS_SAVE`] and told in an event at most every [`PROGRESS_EVENT`],
/// and both once more at the end.
async fn follow_children(
    ctx: &Ctx,
    i: u32,
    mut counts: ChildCounts,
    mut rx: mpsc::UnboundedReceiver<ChildMsg>,
) -> ChildCounts {
    let step_path = JobPath::step(ctx.live.num, i);
    let mut save = tokio::time::interval(PROGRESS_SAVE);
    let mut last_save = Instant::now();
    let mut last_event = Instant::now();
    let mut dirty = false;
    let mut announced = counts;
    let mut running = true;
    while running {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => dirty |= msg.apply(&mut counts),
                None => running = false,
            },
            _ = save.tick() => {}
        }
        if dirty && (!running || last_save.elapsed() >= PROGRESS_SAVE) {
            last_save = Instant::now();
            ctx.set_child_counts(i, counts).await;
            report_progress(&ctx.engine, step_path, counts);
            dirty = false;
        }
        if (last_event.elapsed() >= PROGRESS_EVENT || !running) && counts != announced {
            last_event = Instant::now();
            announced = counts;
            ctx.event(i, Level::Info, progress_text(&counts)).await;
        }
    }
    if dirty {
        ctx.set_child_counts(i, counts).await;
        report_progress(&ctx.engine, step_path, counts);
    }
    counts
}

/// One child job of a fan-out step, run on its own task.
struct Child {
    engine: Arc<Engine>,
    live: Arc<LiveManager>,
    step: u32,
    index: u32,
    token: CancellationToken,
    /// Its attempts so far, from the store when the step is resumed.
    resume: AttemptState,
}

impl Child {
    /// Runs attempt by attempt (each waits for a worker slot; none is held while waiting
    /// to retry) and records the outcome after the child's events; reports to the step on
    /// `tx`.
    async fn run(self, plan: Arc<StepPlan>, item: String, tx: mpsc::UnboundedSender<ChildMsg>) {
        let Child { engine, live, step, index, token, resume } = self;
        let path = JobPath::child(live.num, step, index);
        let sink = Sink { store: engine.store.clone(), path, originator: Originator::Worker };
        let policy = live.plan.policies[step as usize - 1].clone();
        let mut rec = ChildRecord {
            path,
            name: item.clone(),
            status: JobStatus::Running,
            created_ms: now_ms(),
            started_ms: None,
            finished_ms: None,
            error: None,
            attempt: resume.attempt,
            next_attempt_ms: resume.next_ms,
        };
        let mut tries = Attempts::new(&policy, resume);
        let mut started = false;
        let outcome = loop {
            if !tries.wait(&token).await {
                break Err(Failure::Cancelled);
            }
            let Some(permit) = live.queue.slot(live.priority, &token).await else { break Err(Failure::Cancelled) };
            if !started {
                started = true;
                rec.started_ms = Some(now_ms());
                let _ = tx.send(ChildMsg::Started);
            }
            (rec.attempt, rec.next_attempt_ms) = (tries.state.attempt, None);
            let _ = engine.store.put_children(vec![rec.clone()]).await;
            if let Some(msg) = tries.started_message() {
                sink.send(Level::Info, msg).await;
            }
            let attempt = token.child_token();
            let run = run_unit(&engine, &plan, Some((index, &item)), tries.state.attempt, &sink, &attempt);
            let o = with_timeout(policy.timeout, &token, &attempt, run).await;
            drop(permit);
            live.queue.unit_ended();
            match o {
                Err(Failure::Failed(e)) if !token.is_cancelled() => match tries.failed(&e) {
                    Some(msg) => {
                        sink.send(Level::Warn, msg).await;
                        (rec.attempt, rec.next_attempt_ms) = (tries.state.attempt, tries.state.next_ms);
                        let _ = engine.store.put_children(vec![rec.clone()]).await;
                    }
                    None => break Err(Failure::Failed(tries.final_error(e))),
                },
                other => break other,
            }
        };
        live.child_tokens.lock().expect("tokens").remove(&path);
        if live.stop_reason() == Some(StopReason::Shutdown) {
            // Left as it is in the store; it runs again at the next start.
            let _ = tx.send(ChildMsg::Interrupted(started));
            return;
        }
        let (status, error) = match outcome {
            Ok(()) => (JobStatus::Completed, None),
            Err(Failure::Cancelled) => (JobStatus::Cancelled, Some("cancelled".to_string())),
            Err(Failure::Failed(e)) => (JobStatus::Failed, Some(e)),
        };
        rec.status = status;
        rec.error = error;
        rec.finished_ms = Some(now_ms());
        rec.next_attempt_ms = None;
        // Queued after the child's events: never readable as finished before them.
        let _ = engine.store.put_children(vec![rec]).await;
        let _ = tx.send(ChildMsg::Done(status, started));
    }
}

/// Where a unit of work (a step without children, or a child) stands in its attempts.
#[derive(Debug, Clone, Copy, Default)]
struct AttemptState {
    /// The attempt running or next, 1-based (0: none yet).
    attempt: u32,
    /// While waiting to retry: when the next attempt starts (ms since the epoch).
    next_ms: Option<i64>,
}

/// A unit's attempts under its step's retry policy.
struct Attempts<'a> {
    policy: &'a StepPolicy,
    state: AttemptState,
}

impl<'a> Attempts<'a> {
    /// Resumes from a stored state (a restart keeps the attempt number and the time).
    fn new(policy: &'a StepPolicy, stored: AttemptState) -> Self {
        Attempts { policy, state: AttemptState { attempt: stored.attempt.max(1), next_ms: stored.next_ms } }
    }

    /// Waits for the next attempt's time, if one is set; false when cancelled meanwhile.
    async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        if let Some(at) = self.state.next_ms {
            let left = Duration::from_millis((at - now_ms()).max(0) as u64);
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(left) => {}
            }
            self.state.next_ms = None;
        }
        !cancel.is_cancelled()
    }

    fn started_message(&self) -> Option<String> {
        let max = self.policy.retry.max_attempts;
        (max > 1).then(|| format!("attempt {}/{max} started", self.state.attempt))
    }

    /// The attempt failed with `error`: when another is allowed, moves to it (with the time
    /// it starts) and returns the event that says so; None when this was the last.
    fn failed(&mut self, error: &str) -> Option<String> {
        let max = self.policy.retry.max_attempts;
        if self.state.attempt >= max {
            return None;
        }
        let wait = self.policy.retry.delay(self.state.attempt, random_unit());
        let wait = Duration::from_millis(wait.as_millis() as u64);
        let shown = humantime::format_duration(wait);
        let msg = format!("attempt {}/{max} failed: {error}; next attempt in {shown}", self.state.attempt);
        crate::metrics::METRICS.retries.inc();
        self.state =
            AttemptState { attempt: self.state.attempt + 1, next_ms: Some(now_ms() + wait.as_millis() as i64) };
        Some(msg)
    }

    /// The error a unit ends with after its last attempt.
    fn final_error(&self, error: String) -> String {
        let max = self.policy.retry.max_attempts;
        if max > 1 { format!("{error} (attempt {max} of {max})") } else { error }
    }
}

/// Runs one attempt, failing it when it takes longer than `timeout`: then `attempt` (the
/// attempt's own token) is cancelled so the runner stops its work, and the attempt fails
/// with a timeout, unless the whole job was cancelled meanwhile.
async fn with_timeout(
    timeout: Option<Duration>,
    job: &CancellationToken,
    attempt: &CancellationToken,
    run: impl std::future::Future<Output = Outcome>,
) -> Outcome {
    let Some(limit) = timeout else { return run.await };
    tokio::pin!(run);
    tokio::select! {
        o = &mut run => return o,
        _ = tokio::time::sleep(limit) => {}
    }
    attempt.cancel();
    let stopped = run.await;
    match stopped {
        // Cancelled while its command was being stopped: a cancel, not a timeout.
        Err(Failure::Cancelled) if job.is_cancelled() => Err(Failure::Cancelled),
        Err(Failure::Cancelled) => {
            Err(Failure::Failed(format!("timed out after {}", humantime::format_duration(limit))))
        }
        other => other,
    }
}

/// A number in [0, 1) for jitter: std's per-process random hash keys over the clock.
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

fn report_progress(engine: &Engine, step: JobPath, counts: ChildCounts) {
    engine.aggregator.step_progress(StepProgress {
        step_id: step.to_string(),
        manager_id: step.manager_path().to_string(),
        child_counts: counts,
    });
}

fn progress_text(c: &ChildCounts) -> String {
    format!(
        "children: {}/{} done ({} completed, {} failed, {} cancelled), {} running, {} pending",
        c.terminal(),
        c.total,
        c.completed,
        c.failed,
        c.cancelled,
        c.running,
        c.pending
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::definition::{Retry, StepPolicy};

    fn policy(backoff: quaero_shared::Backoff, jitter: bool) -> StepPolicy {
        StepPolicy {
            retry: Retry {
                max_attempts: 5,
                backoff,
                initial: Duration::from_secs(1),
                max_delay: Duration::from_secs(5),
                jitter,
            },
            timeout: None,
        }
    }

    /// Each wait on tokio's (paused) clock, from a failure to the next attempt's start.
    async fn waits(p: &StepPolicy) -> Vec<u64> {
        let mut tries = Attempts::new(p, AttemptState { attempt: 0, next_ms: None });
        let cancel = CancellationToken::new();
        let mut out = Vec::new();
        while tries.failed("boom").is_some() {
            let t = tokio::time::Instant::now();
            assert!(tries.wait(&cancel).await);
            out.push(t.elapsed().as_millis() as u64);
        }
        assert_eq!(tries.state.attempt, 5, "four failures lead to the fifth and last attempt");
        out
    }

    fn near(got: &[u64], want: &[u64]) -> bool {
        got.len() == want.len() && got.iter().zip(want).all(|(g, w)| g.abs_diff(*w) <= 50)
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_up_to_its_cap_or_stays_fixed() {
        let got = waits(&policy(quaero_shared::Backoff::Exponential, false)).await;
        assert!(near(&got, &[1000, 2000, 4000, 5000]), "{got:?}");
        let got = waits(&policy(quaero_shared::Backoff::Fixed, false)).await;
        assert!(near(&got, &[1000, 1000, 1000, 1000]), "{got:?}");
        // Jitter: a random 50% to 100% of each.
        let got = waits(&policy(quaero_shared::Backoff::Exponential, true)).await;
        for (g, full) in got.iter().zip([1000u64, 2000, 4000, 5000]) {
            assert!((full / 2 - 50..=full + 50).contains(g), "{got:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancel_ends_the_wait_without_another_attempt() {
        let p = policy(quaero_shared::Backoff::Fixed, false);
        let mut tries = Attempts::new(&p, AttemptState { attempt: 0, next_ms: None });
        tries.failed("boom").unwrap();
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            c.cancel();
        });
        let t = tokio::time::Instant::now();
        assert!(!tries.wait(&cancel).await);
        assert!(t.elapsed() < Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_fails_the_attempt_and_a_cancel_stays_a_cancel() {
        let (job, attempt) = (CancellationToken::new(), CancellationToken::new());
        let slow = |tok: CancellationToken| async move {
            tok.cancelled().await;
            Err(Failure::Cancelled)
        };
        let o = with_timeout(Some(Duration::from_secs(10)), &job, &attempt, slow(attempt.clone())).await;
        assert!(matches!(o, Err(Failure::Failed(ref m)) if m == "timed out after 10s"), "{o:?}");
        let (job, attempt) = (CancellationToken::new(), CancellationToken::new());
        job.cancel();
        let o = with_timeout(Some(Duration::from_secs(10)), &job, &attempt, slow(attempt.clone())).await;
        assert!(matches!(o, Err(Failure::Cancelled)), "{o:?}");
    }
}
