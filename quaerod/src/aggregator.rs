//! The aggregator: turns commits into refresh triggers.
//!
//! The store's writer tells it, after each flush, which scopes got events (O(scopes) map
//! inserts under a short lock: it never waits on a client). Once per `time_threshold` a
//! tick hands each client one merged `refresh_step_events` naming the steps with new
//! events; a finished step gets a `finished` trigger at once, after its last events were
//! committed. Every client has an [`Outbox`] that merges what the client has not taken
//! yet, so a slow client costs bounded memory and never slows ingest.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quaero_shared::{
    Event, JobPath, JobStatusChange, QueuesList, RefreshStepEvents, ServerMessage, Stats, StepProgress,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::WsMode;
use crate::store::{CommitListener, Committed};
use crate::time::{clock, now_ms, rfc3339};

/// Most `job_log` messages (push mode) queued for one client before new ones are dropped.
pub const PUSH_QUEUE: usize = 10_000;

/// A message ready for a client: typed, or pre-serialised once for all clients (push mode).
#[derive(Debug, Clone)]
pub enum OutMsg {
    Msg(ServerMessage),
    Raw(Arc<str>),
}

/// What a client has not taken yet. Everything here merges, so its size is bounded by
/// live jobs, not by time.
#[derive(Debug, Default)]
struct Pending {
    refresh: Option<(BTreeSet<JobPath>, BTreeSet<u64>, u64)>,
    /// Never merged away: each finished step keeps its own trigger.
    finished: VecDeque<RefreshStepEvents>,
    /// Latest change per job, in first-seen order.
    status: Vec<JobStatusChange>,
    progress: BTreeMap<String, StepProgress>,
    stats: Option<Stats>,
    queues: Option<Arc<QueuesList>>,
    logs: VecDeque<Arc<str>>,
    /// Push mode: `job_log` messages dropped since the client last took its messages.
    logs_dropped: u64,
    errors: Vec<String>,
}

/// One client's mailbox.
#[derive(Debug, Default)]
pub struct Outbox {
    pending: Mutex<Pending>,
    pub notify: Notify,
    /// Subscribed manager numbers; empty = all.
    filter: Mutex<HashSet<u64>>,
}

impl Outbox {
    fn wants(&self, mgr: u64) -> bool {
        let f = self.filter.lock().expect("filter");
        f.is_empty() || f.contains(&mgr)
    }

    pub fn subscribe(&self, managers: HashSet<u64>) {
        *self.filter.lock().expect("filter") = managers;
    }

    fn with(&self, f: impl FnOnce(&mut Pending)) {
        f(&mut self.pending.lock().expect("pending"));
        self.notify.notify_one();
    }

    fn add_refresh(&self, steps: &[JobPath], last_seq: u64) {
        let steps: Vec<JobPath> = steps.iter().copied().filter(|p| self.wants(p.manager)).collect();
        if steps.is_empty() {
            return;
        }
        self.with(|p| {
            let finished: HashSet<String> = p.finished.iter().flat_map(|f| f.step_ids.iter().cloned()).collect();
            let (s, m, l) = p.refresh.get_or_insert_with(Default::default);
            if !s.is_empty() || !m.is_empty() {
                crate::metrics::METRICS.triggers_merged.inc();
            }
            for st in steps {
                if st.step > 0 && !finished.contains(&st.to_string()) {
                    s.insert(st);
                }
                m.insert(st.manager);
            }
            *l = (*l).max(last_seq);
        });
    }

    fn add_finished(&self, scope: JobPath, last_seq: u64) {
        if !self.wants(scope.manager) {
            return;
        }
        self.with(|p| {
            // Nothing names a finished step after its finished trigger.
            if let Some((s, _, _)) = &mut p.refresh {
                s.remove(&scope);
            }
            p.finished.push_back(RefreshStepEvents {
                step_ids: if scope.step > 0 { vec![scope.to_string()] } else { vec![] },
                manager_ids: vec![scope.manager_path().to_string()],
                timestamp: rfc3339(now_ms()),
                finished: true,
                last_seq,
            });
        });
    }

    fn add_status(&self, mgr: u64, c: &JobStatusChange) {
        if !self.wants(mgr) {
            return;
        }
        self.with(|p| match p.status.iter_mut().find(|s| s.job_id == c.job_id) {
            Some(s) => *s = c.clone(),
            None => p.status.push(c.clone()),
        });
    }

    fn add_progress(&self, mgr: u64, sp: &StepProgress) {
        if !self.wants(mgr) {
            return;
        }
        self.with(|p| {
            p.progress.insert(sp.step_id.clone(), sp.clone());
        });
    }

    fn add_stats(&self, s: Stats) {
        self.with(|p| p.stats = Some(s));
    }

    fn add_queues(&self, q: &Arc<QueuesList>) {
        self.with(|p| p.queues = Some(q.clone()));
    }

    /// Push mode: one commit's `job_log` messages (manager number, message), under one lock.
    fn add_logs(&self, logs: &[(u64, Arc<str>)]) {
        let filter = self.filter.lock().expect("filter").clone();
        let mut dropped = 0;
        self.with(|p| {
            for (mgr, json) in logs {
                if !(filter.is_empty() || filter.contains(mgr)) {
                    continue;
                }
                if p.logs.len() >= PUSH_QUEUE {
                    dropped += 1;
                } else {
                    p.logs.push_back(json.clone());
                }
            }
            p.logs_dropped += dropped;
        });
        if dropped > 0 {
            crate::metrics::METRICS.push_messages_dropped.inc_by(dropped);
        }
    }

    pub fn add_error(&self, message: String) {
        self.with(|p| p.errors.push(message));
    }

    /// Everything pending, in the order a client should apply it.
    pub fn take(&self) -> Vec<OutMsg> {
        let p = std::mem::take(&mut *self.pending.lock().expect("pending"));
        let mut out = Vec::new();
        out.extend(
            p.errors.into_iter().map(|message| OutMsg::Msg(ServerMessage::Error(quaero_shared::WsError { message }))),
        );
        out.extend(p.logs.into_iter().map(OutMsg::Raw));
        if p.logs_dropped > 0 {
            // Said, not silent: the client knows its event stream has a gap.
            out.push(OutMsg::Msg(ServerMessage::Error(quaero_shared::WsError {
                message: format!(
                    "push mode: {} job_log messages were dropped because this client reads too slowly (at most {PUSH_QUEUE} are queued); fetch GET /api/jobs/<id>/logs to fill the gap",
                    p.logs_dropped
                ),
            })));
        }
        if let Some((steps, managers, last_seq)) = p.refresh
            && (!steps.is_empty() || !managers.is_empty())
        {
            out.push(OutMsg::Msg(ServerMessage::RefreshStepEvents(RefreshStepEvents {
                step_ids: steps.iter().map(|s| s.to_string()).collect(),
                manager_ids: managers.iter().map(|m| JobPath::manager(*m).to_string()).collect(),
                timestamp: rfc3339(now_ms()),
                finished: false,
                last_seq,
            })));
        }
        out.extend(p.finished.into_iter().map(|f| OutMsg::Msg(ServerMessage::RefreshStepEvents(f))));
        out.extend(p.status.into_iter().map(|s| OutMsg::Msg(ServerMessage::JobStatusChange(s))));
        out.extend(p.progress.into_values().map(|s| OutMsg::Msg(ServerMessage::StepProgress(s))));
        if let Some(s) = p.stats {
            out.push(OutMsg::Msg(ServerMessage::QueueStats(s)));
        }
        if let Some(q) = p.queues {
            out.push(OutMsg::Msg(ServerMessage::Queues((*q).clone())));
        }
        out
    }
}

#[derive(Default)]
struct State {
    /// Scopes (steps, or managers for their own events) with events since the last tick.
    dirty: HashMap<JobPath, u64>,
    last_seq: u64,
    /// Step progress since the last tick, latest per step.
    progress: HashMap<JobPath, StepProgress>,
    /// Names of running steps, for push-mode `job_log` events.
    step_names: HashMap<JobPath, String>,
    clients: HashMap<u64, Arc<Outbox>>,
    /// The store's job counts as it last reported them, and as clients last got them.
    stats: Option<Stats>,
    last_stats: Option<Stats>,
}

pub struct Aggregator {
    /// A std Mutex: every critical section is a few map operations, and the writer thread
    /// (not async) takes it after each flush.
    state: Mutex<State>,
    pub threshold: Duration,
    pub mode: WsMode,
    next_client: AtomicU64,
    /// Reads the named queues (set by the engine); what it returns is sent at a tick when
    /// it changed since the last one.
    queues_probe: Mutex<Option<QueuesProbe>>,
    last_queues: Mutex<Option<Arc<QueuesList>>>,
}

pub type QueuesProbe = Box<dyn Fn() -> QueuesList + Send + Sync>;

impl Aggregator {
    pub fn new(threshold: Duration, mode: WsMode) -> Arc<Aggregator> {
        Arc::new(Aggregator {
            state: Mutex::new(State::default()),
            threshold,
            mode,
            next_client: AtomicU64::new(1),
            queues_probe: Mutex::new(None),
            last_queues: Mutex::new(None),
        })
    }

    /// Where the tick reads the named queues from.
    pub fn set_queues_probe(&self, probe: QueuesProbe) {
        *self.queues_probe.lock().expect("probe") = Some(probe);
    }

    /// The queues, if they changed since the last tick that sent them.
    fn queues_changed(&self) -> Option<Arc<QueuesList>> {
        let now = self.queues_probe.lock().expect("probe").as_ref().map(|f| f())?;
        let mut last = self.last_queues.lock().expect("last queues");
        if last.as_deref() == Some(&now) {
            return None;
        }
        let now = Arc::new(now);
        *last = Some(now.clone());
        Some(now)
    }

    pub fn register(&self) -> (u64, Arc<Outbox>) {
        let id = self.next_client.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox::default());
        self.state.lock().expect("state").clients.insert(id, outbox.clone());
        (id, outbox)
    }

    pub fn unregister(&self, id: u64) {
        self.state.lock().expect("state").clients.remove(&id);
    }

    pub fn client_count(&self) -> usize {
        self.state.lock().expect("state").clients.len()
    }

    /// Entries the aggregator holds about jobs (not clients): bounded by live steps.
    pub fn tracked(&self) -> usize {
        let s = self.state.lock().expect("state");
        s.dirty.len() + s.progress.len() + s.step_names.len()
    }

    /// The engine: a step or manager changed status.
    pub fn status_changed(&self, c: JobStatusChange) {
        let Some(path) = JobPath::parse(&c.job_id) else { return };
        let mut s = self.state.lock().expect("state");
        if let (Some(name), false) = (&c.step_name, c.status.is_terminal()) {
            s.step_names.insert(path, name.clone());
        }
        for o in s.clients.values() {
            o.add_status(path.manager, &c);
        }
    }

    /// The engine: a step's child counts changed. Sent coalesced, at the next tick.
    pub fn step_progress(&self, p: StepProgress) {
        let Some(path) = JobPath::parse(&p.step_id) else { return };
        self.state.lock().expect("state").progress.insert(path, p);
    }

    /// The engine: a step is terminal and its events are flushed. Its `finished` trigger
    /// goes out now; the step is forgotten.
    pub fn step_finished(&self, step: JobPath) {
        self.finished(step);
    }

    /// The engine: a manager is terminal and its events are flushed.
    pub fn manager_finished(&self, mgr: JobPath) {
        self.finished(mgr);
    }

    fn finished(&self, scope: JobPath) {
        let mut s = self.state.lock().expect("state");
        s.dirty.remove(&scope);
        s.step_names.remove(&scope);
        // Its last counts must not be lost: flush them to clients with the trigger.
        let progress = s.progress.remove(&scope);
        let last_seq = s.last_seq;
        for o in s.clients.values() {
            if let Some(p) = &progress {
                o.add_progress(scope.manager, p);
            }
            o.add_finished(scope, last_seq);
        }
        crate::metrics::METRICS.triggers_sent.inc_by(s.clients.len() as u64);
    }

    /// One tick: periodic triggers, coalesced progress and stats to every client.
    pub fn tick(&self) {
        let queues = self.queues_changed();
        let mut s = self.state.lock().expect("state");
        let dirty: Vec<JobPath> = s.dirty.drain().map(|(k, _)| k).collect();
        let progress: Vec<StepProgress> = s.progress.drain().map(|(_, v)| v).collect();
        let stats = match s.stats {
            Some(st) if s.last_stats != Some(st) => {
                s.last_stats = Some(st);
                Some(st)
            }
            _ => None,
        };
        if dirty.is_empty() && progress.is_empty() && stats.is_none() && queues.is_none() {
            return;
        }
        let last_seq = s.last_seq;
        for o in s.clients.values() {
            if !dirty.is_empty() {
                o.add_refresh(&dirty, last_seq);
            }
            for p in &progress {
                if let Some(path) = JobPath::parse(&p.manager_id) {
                    o.add_progress(path.manager, p);
                }
            }
            if let Some(st) = stats {
                o.add_stats(st);
            }
            if let Some(q) = &queues {
                o.add_queues(q);
            }
        }
        if !dirty.is_empty() {
            crate::metrics::METRICS.triggers_sent.inc_by(s.clients.len() as u64);
        }
    }

    /// Ticks every `threshold` on tokio's clock until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(self.threshold);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => self.tick(),
            }
        }
    }
}

impl CommitListener for Aggregator {
    fn committed(&self, c: &Committed<'_>) {
        let mut s = self.state.lock().expect("state");
        s.last_seq = s.last_seq.max(c.last_seq);
        if self.mode == WsMode::Trigger {
            for &(scope, seq) in c.scopes {
                s.dirty.insert(scope, seq);
            }
            return;
        }
        // Push mode: the old design, one message per event to every client. What needs
        // the state is copied out under the lock; the serialising and the queueing happen
        // without it, so WebSocket tasks and the engine never wait on a large batch.
        let names: HashMap<JobPath, String> =
            c.scopes.iter().filter_map(|(scope, _)| s.step_names.get(scope).map(|n| (*scope, n.clone()))).collect();
        let clients: Vec<Arc<Outbox>> = s.clients.values().cloned().collect();
        drop(s);
        let logs: Vec<(u64, Arc<str>)> = c
            .events
            .iter()
            .map(|(seq, e)| {
                let p = e.path;
                let step = p.step_path();
                let event = Event {
                    seq: *seq,
                    job_id: p.to_string(),
                    step_id: step.map(|s| s.to_string()),
                    manager_id: p.manager_path().to_string(),
                    step_name: step.and_then(|st| names.get(&st).cloned()),
                    level: e.level,
                    message: e.message.clone(),
                    originator: e.originator,
                    timestamp: clock(e.ts_ms),
                    full_timestamp: rfc3339(e.ts_ms),
                };
                let json = serde_json::to_string(&ServerMessage::JobLog(quaero_shared::JobLog { event }))
                    .expect("event serialises");
                (p.manager, json.into())
            })
            .collect();
        for o in clients {
            o.add_logs(&logs);
        }
    }

    fn wants_events(&self) -> bool {
        self.mode == WsMode::Push
    }

    fn stats_changed(&self, stats: Stats) {
        self.state.lock().expect("state").stats = Some(stats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewEvent;
    use quaero_shared::{Level, Originator};

    fn commit(a: &Aggregator, scopes: &[(JobPath, u64)]) {
        let last = scopes.iter().map(|s| s.1).max().unwrap_or(0);
        a.committed(&Committed { scopes, last_seq: last, events: &[] });
    }

    fn refreshes(o: &Outbox) -> Vec<RefreshStepEvents> {
        o.take()
            .into_iter()
            .filter_map(|m| match m {
                OutMsg::Msg(ServerMessage::RefreshStepEvents(r)) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn step(m: u64, s: u32) -> JobPath {
        JobPath::step(m, s)
    }

    #[tokio::test(start_paused = true)]
    async fn many_events_in_one_tick_make_one_trigger() {
        let a = Aggregator::new(Duration::from_secs(1), WsMode::Trigger);
        let (_, o) = a.register();
        let stop = CancellationToken::new();
        let task = tokio::spawn(a.clone().run(stop.clone()));
        tokio::time::advance(Duration::from_millis(10)).await;
        tokio::task::yield_now().await;
        // 10,000 events on 3 steps, committed in many small batches within one tick.
        for seq in 1..=10_000u64 {
            commit(&a, &[(step(1, (seq % 3) as u32 + 1), seq)]);
        }
        tokio::time::advance(Duration::from_millis(1000)).await;
        tokio::task::yield_now().await;
        let r = refreshes(&o);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].step_ids, vec!["m1-s1", "m1-s2", "m1-s3"]);
        assert_eq!(r[0].manager_ids, vec!["m1"]);
        assert!(!r[0].finished);
        assert_eq!(r[0].last_seq, 10_000);
        // Nothing new: no trigger at the next tick.
        tokio::time::advance(Duration::from_millis(1000)).await;
        tokio::task::yield_now().await;
        assert!(refreshes(&o).is_empty());
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn finished_trigger_goes_out_before_the_next_tick() {
        let a = Aggregator::new(Duration::from_secs(1), WsMode::Trigger);
        let (_, o) = a.register();
        let stop = CancellationToken::new();
        tokio::spawn(a.clone().run(stop.clone()));
        tokio::task::yield_now().await;
        commit(&a, &[(step(4, 1), 7)]);
        a.step_finished(step(4, 1));
        // No time passes: the finished trigger is already there.
        let r = refreshes(&o);
        assert_eq!(r.len(), 1);
        assert!(r[0].finished);
        assert_eq!(r[0].step_ids, vec!["m4-s1"]);
        // And the step is never named again.
        tokio::time::advance(Duration::from_secs(2)).await;
        tokio::task::yield_now().await;
        assert!(refreshes(&o).is_empty());
        stop.cancel();
    }

    #[test]
    fn slow_client_merges_but_keeps_finished_triggers() {
        let a = Aggregator::new(Duration::from_secs(1), WsMode::Trigger);
        let (_, slow) = a.register();
        for t in 0..50u64 {
            commit(&a, &[(step(1, 1), t * 2 + 1), (step(2, 1), t * 2 + 2)]);
            a.tick();
        }
        a.step_finished(step(2, 1));
        for t in 50..60u64 {
            commit(&a, &[(step(1, 1), t * 2 + 1)]);
            a.tick();
        }
        // The client reads only now: one merged periodic trigger and the finished one.
        let r = refreshes(&slow);
        assert_eq!(r.len(), 2, "{r:?}");
        let periodic = r.iter().find(|t| !t.finished).unwrap();
        assert_eq!(periodic.step_ids, vec!["m1-s1"], "finished step merged away from periodic");
        let fin = r.iter().find(|t| t.finished).unwrap();
        assert_eq!(fin.step_ids, vec!["m2-s1"]);
    }

    #[test]
    fn memory_returns_to_empty_when_steps_finish() {
        let a = Aggregator::new(Duration::from_secs(1), WsMode::Trigger);
        let (_, _o) = a.register();
        for m in 1..=100u64 {
            a.status_changed(JobStatusChange {
                job_id: step(m, 1).to_string(),
                parent_id: Some(format!("m{m}")),
                manager_id: format!("m{m}"),
                kind: quaero_shared::JobKind::Step,
                status: quaero_shared::JobStatus::Running,
                step_name: Some("s".into()),
                error: None,
                timestamp: String::new(),
            });
            commit(&a, &[(step(m, 1), m), (JobPath::manager(m), m)]);
            a.step_progress(StepProgress {
                step_id: step(m, 1).to_string(),
                manager_id: format!("m{m}"),
                child_counts: Default::default(),
            });
        }
        assert!(a.tracked() >= 300);
        for m in 1..=100u64 {
            a.step_finished(step(m, 1));
            a.manager_finished(JobPath::manager(m));
        }
        assert_eq!(a.tracked(), 0);
    }

    #[test]
    fn subscription_filters_other_managers() {
        let a = Aggregator::new(Duration::from_secs(1), WsMode::Trigger);
        let (_, o) = a.register();
        o.subscribe([1u64].into_iter().collect());
        commit(&a, &[(step(2, 1), 1)]);
        a.tick();
        a.step_finished(step(2, 1));
        assert!(o.take().is_empty());
        commit(&a, &[(step(1, 1), 2)]);
        a.tick();
        assert_eq!(refreshes(&o).len(), 1);
    }

    #[test]
    fn push_mode_sends_each_event_and_drops_when_full() {
        let a = Aggregator::new(Duration::from_secs(1), WsMode::Push);
        let (_, o) = a.register();
        let evs: Vec<(u64, NewEvent)> = (1..=PUSH_QUEUE as u64 + 5)
            .map(|s| {
                (
                    s,
                    NewEvent {
                        path: step(1, 1),
                        level: Level::Info,
                        originator: Originator::Step,
                        ts_ms: 0,
                        message: format!("e{s}"),
                    },
                )
            })
            .collect();
        a.committed(&Committed { scopes: &[(step(1, 1), 1)], last_seq: evs.len() as u64, events: &evs });
        let msgs = o.take();
        assert_eq!(msgs.len(), PUSH_QUEUE + 1);
        let OutMsg::Raw(first) = &msgs[0] else { panic!() };
        assert!(first.contains("\"job_log\"") && first.contains("\"e1\""));
        // The gap is announced once, after the messages that made it.
        let OutMsg::Msg(ServerMessage::Error(e)) = &msgs[PUSH_QUEUE] else { panic!("{:?}", msgs.last()) };
        assert!(e.message.contains("5 job_log messages were dropped"), "{}", e.message);
        a.committed(&Committed { scopes: &[(step(1, 1), 1)], last_seq: 1, events: &evs[..1] });
        assert_eq!(o.take().len(), 1, "one job_log, no repeated error");
    }

    /// The store reports its counts; each tick sends them once, and again only when they
    /// changed.
    #[test]
    fn queue_stats_follow_what_the_store_reports() {
        let a = Aggregator::new(Duration::from_secs(1), WsMode::Trigger);
        let (_, o) = a.register();
        let stats_sent = |o: &Outbox| {
            o.take()
                .into_iter()
                .filter_map(|m| match m {
                    OutMsg::Msg(ServerMessage::QueueStats(s)) => Some(s.running_jobs),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        a.tick();
        assert!(stats_sent(&o).is_empty(), "nothing reported yet");
        let mut st = Stats::default();
        st.add(quaero_shared::JobStatus::Running, 2);
        a.stats_changed(st);
        a.tick();
        assert_eq!(stats_sent(&o), [2]);
        a.stats_changed(st);
        a.tick();
        assert!(stats_sent(&o).is_empty(), "unchanged counts are not sent again");
        st.add(quaero_shared::JobStatus::Running, 1);
        a.stats_changed(st);
        a.tick();
        assert_eq!(stats_sent(&o), [3]);
    }
}
