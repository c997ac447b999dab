//! The job engine: definitions, managers and their steps, the worker pool.
//!
//! A live manager is held in memory ([`LiveManager`]) while it runs; its record is the
//! truth the API shows and is persisted through the store's writer as snapshots. A status
//! becomes terminal in memory only after the store confirmed that the job's events are
//! flushed, so whoever sees "completed" can read every event of the job.

pub mod definition;
mod leftovers;
pub mod queues;
mod read;
mod run;
pub mod runners;
pub mod schedule;

pub use read::{JobsQuery, LogsRequest};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use quaero_shared::{
    ChildCounts, DefinitionInfo, ExecuteRequest, Job, JobDefinition, JobKind, JobPath, JobStatus, JobStatusChange,
    LastRun, Overlap, StepSummary, Trigger,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::aggregator::Aggregator;
use crate::config::Config;
use crate::page_cache::PageCache;
use crate::store::{ChildRecord, ManagerQuery, ManagerRecord, StepRecord, Store, StoreError};
use crate::time::{now_ms, rfc3339};
use definition::{Loaded, Plan, Source};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the daemon is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A task the request waited on panicked or was cancelled.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Deletes sent to the store together by a bulk delete: they share one flush.
pub const BULK_BATCH: usize = 100;
/// Why a manager's token was cancelled.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    /// Cancelled over the API.
    Cancelled,
    /// The definition's timeout elapsed.
    Timeout(String),
    /// The daemon is stopping: leave the job as it is, to be resumed at the next start.
    Shutdown,
}

/// A manager that is running (or about to) in this process.
pub struct LiveManager {
    pub num: u64,
    /// The record the API shows. A std Mutex: held only to copy or change a few fields.
    pub record: Mutex<ManagerRecord>,
    pub cancel: CancellationToken,
    pub reason: Mutex<Option<StopReason>>,
    pub plan: Arc<Plan>,
    /// The queue its work runs on.
    pub queue: Arc<queues::Queue>,
    /// Tokens of the running steps' children, for cancelling one child.
    pub child_tokens: Mutex<HashMap<JobPath, CancellationToken>>,
    /// Its definition's priority within the queue.
    pub priority: i32,
}

impl LiveManager {
    pub fn snapshot(&self) -> ManagerRecord {
        self.record.lock().expect("record").clone()
    }
    pub fn stop(&self, reason: StopReason) {
        let mut r = self.reason.lock().expect("reason");
        if r.is_none() {
            *r = Some(reason);
        }
        self.cancel.cancel();
    }
    /// Why the manager's token was cancelled (`None` while it is not). [`Self::stop`] sets
    /// the reason before it cancels; a token cancelled without one was cancelled by its
    /// parent, the daemon's shutdown token: every task that wakes from it sees `Shutdown`,
    /// however early it looks.
    pub fn stop_reason(&self) -> Option<StopReason> {
        let r = self.reason.lock().expect("reason");
        r.clone().or_else(|| self.cancel.is_cancelled().then_some(StopReason::Shutdown))
    }
}

pub struct Engine {
    store: Arc<dyn Store>,
    aggregator: Arc<Aggregator>,
    config: Config,
    definitions: RwLock<BTreeMap<String, Loaded>>,
    /// What enable/disable set, by definition id (stored as settings, so kept across restarts).
    enabled_overrides: RwLock<BTreeMap<String, bool>>,
    live: Mutex<HashMap<u64, Arc<LiveManager>>>,
    /// The named queues (`default` always), each with its own worker slots: one per unit
    /// of work (a child job, or a step that does not fan out).
    queues: BTreeMap<String, Arc<queues::Queue>>,
    http: reqwest::Client,
    /// Logs pages read for one client and shared with the others asking for the same.
    pages: PageCache,
    tasks: TaskTracker,
    shutting_down: CancellationToken,
    scheduler: Arc<schedule::Scheduler>,
    /// The live runs of each definition, by number (for `overlap`).
    active: Mutex<HashMap<String, BTreeSet<u64>>>,
    /// Woken whenever a live run ends.
    run_ended: tokio::sync::Notify,
    /// The newest run of each definition.
    /// Kept as runs start and change status, so listing definitions reads no run.
    last_runs: Mutex<HashMap<String, (u64, LastRun)>>,
    /// The newest scheduled time of each definition found in the stored runs at the start.
    stored_slots: Mutex<HashMap<String, i64>>,
}

/// Takes a run out of the live and active sets when its task ends, however it ends.
struct RunEnded {
    engine: Arc<Engine>,
    def_id: String,
    num: u64,
}

impl Drop for RunEnded {
    fn drop(&mut self) {
        let e = &self.engine;
        if let Ok(mut live) = e.live.lock() {
            live.remove(&self.num);
        }
        if let Ok(mut active) = e.active.lock()
            && let Some(set) = active.get_mut(&self.def_id)
        {
            set.remove(&self.num);
            if set.is_empty() {
                active.remove(&self.def_id);
            }
        }
        e.run_ended.notify_waiters();
    }
}

/// How a run comes to start.
#[derive(Debug, Clone, Copy, Default)]
struct StartAs {
    /// A delayed run: not before this time.
    scheduled_ms: Option<i64>,
    trigger: Trigger,
    /// The scheduled time it runs for.
    schedule_ms: Option<i64>,
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, aggregator: Arc<Aggregator>, config: Config) -> Arc<Engine> {
        Self::with_clock(store, aggregator, config, schedule::Clock::System)
    }

    /// An engine whose schedules read the wall time from `clock`.
    pub fn with_clock(
        store: Arc<dyn Store>,
        aggregator: Arc<Aggregator>,
        config: Config,
        clock: schedule::Clock,
    ) -> Arc<Engine> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("quaerod/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("http client");
        Arc::new(Engine {
            queues: std::iter::once((queues::DEFAULT.to_string(), config.concurrency))
                .chain(config.queues.iter().map(|(n, c)| (n.clone(), *c)))
                .map(|(n, c)| (n.clone(), queues::Queue::new(&n, c, false)))
                .collect(),
            pages: PageCache::new(config.share_log_pages),
            store,
            aggregator,
            config,
            definitions: RwLock::new(BTreeMap::new()),
            enabled_overrides: RwLock::new(BTreeMap::new()),
            live: Mutex::new(HashMap::new()),
            http,
            tasks: TaskTracker::new(),
            shutting_down: CancellationToken::new(),
            scheduler: schedule::Scheduler::new(clock),
            active: Mutex::new(HashMap::new()),
            run_ended: tokio::sync::Notify::new(),
            last_runs: Mutex::new(HashMap::new()),
            stored_slots: Mutex::new(HashMap::new()),
        })
    }

    /// Loads the definitions dir and the API-created definitions kept in the store.
    /// Lets the aggregator read the queues at each tick, to send their changes to clients.
    pub fn watch_queues(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.aggregator.set_queues_probe(Box::new(move || quaero_shared::QueuesList {
            queues: weak.upgrade().map(|e| e.queues()).unwrap_or_default(),
        }));
    }

    pub fn load_definitions(&self) -> Result<()> {
        let mut map = BTreeMap::new();
        for l in definition::load_dir(&self.config.definitions_dir) {
            map.entry(l.def.id.clone()).or_insert(l);
        }
        for def in self.store.definitions()? {
            let valid = definition::check(&def);
            map.insert(def.id.clone(), Loaded { def, valid, source: Source::Api, parsed: true });
        }
        for l in map.values_mut() {
            if let (Ok(()), Some(e)) = (&l.valid, self.queue_error(&l.def)) {
                l.valid = Err(e);
            }
        }
        *self.definitions.write().expect("definitions") = map;
        let overrides = self.store.settings()?;
        for (name, q) in &self.queues {
            q.set_paused(overrides.get(&format!("{PAUSED_PREFIX}{name}")).is_some_and(|v| v == "true"));
        }
        *self.enabled_overrides.write().expect("overrides") = overrides
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(ENABLED_PREFIX)?.to_string(), v == "true")))
            .collect();
        Ok(())
    }

    pub fn list_definitions(&self) -> Vec<DefinitionInfo> {
        self.definitions.read().expect("definitions").values().map(|l| self.info(l)).collect()
    }

    pub fn get_definition(&self, id: &str) -> Result<DefinitionInfo> {
        self.definitions
            .read()
            .expect("definitions")
            .get(id)
            .map(|l| self.info(l))
            .ok_or_else(|| EngineError::NotFound(format!("no job definition {id:?}")))
    }

    /// Whether a definition may run: what enable/disable last set, else its `enabled`.
    fn enabled(&self, def: &JobDefinition) -> bool {
        self.enabled_overrides.read().expect("overrides").get(&def.id).copied().unwrap_or(def.enabled)
    }

    /// Why `def` cannot run here: a queue this daemon does not have.
    fn queue_error(&self, def: &JobDefinition) -> Option<String> {
        let name = def.queue.as_deref()?;
        let have: Vec<&str> = self.queues.keys().map(String::as_str).collect();
        (!self.queues.contains_key(name))
            .then(|| format!("queue: no queue {name:?} here (configured: {})", have.join(", ")))
    }

    /// Every queue with its counts.
    pub fn queues(&self) -> Vec<quaero_shared::QueueInfo> {
        self.queues.values().map(|q| q.info()).collect()
    }

    /// Pauses or resumes a queue, kept across restarts.
    pub fn set_queue_paused(&self, name: &str, paused: bool) -> Result<quaero_shared::QueueInfo> {
        let q = self.queues.get(name).ok_or_else(|| EngineError::NotFound(format!("no queue {name:?}")))?;
        self.store.put_setting(&format!("{PAUSED_PREFIX}{name}"), paused.then_some("true"))?;
        q.set_paused(paused);
        Ok(q.info())
    }

    /// Drops what enable/disable set for `id`.
    fn forget_enabled(&self, id: &str) -> Result<()> {
        if self.enabled_overrides.write().expect("overrides").remove(id).is_some() {
            self.store.put_setting(&format!("{ENABLED_PREFIX}{id}"), None)?;
        }
        Ok(())
    }

    fn info(&self, l: &Loaded) -> DefinitionInfo {
        let mut info = definition_info(l, self.enabled(&l.def));
        if let Some(s) = def_schedule(&l.def) {
            info.schedule_text = Some(s.describe());
            info.next_run_at = self.scheduler.next_run(&l.def.id).map(rfc3339);
        }
        info.last_run = self.last_runs.lock().expect("last runs").get(&l.def.id).map(|(_, r)| r.clone());
        info
    }

    /// Puts `id`'s schedule in the scheduler as its definition now says (valid, enabled,
    /// with a schedule), or takes it out. A schedule put in counts from now: the times
    /// before (while it was disabled, or before it was posted) never run, also not as a
    /// catch-up at the next start, so now is kept as its last time acted on.
    fn reschedule(&self, id: &str) -> Result<()> {
        let schedule = {
            let defs = self.definitions.read().expect("definitions");
            defs.get(id).filter(|l| l.valid.is_ok() && self.enabled(&l.def)).and_then(|l| def_schedule(&l.def))
        };
        if schedule.is_some() {
            let now = self.scheduler.now_ms();
            let key = format!("{SLOT_PREFIX}{id}");
            let kept = self.store.setting(&key)?.and_then(|v| v.parse::<i64>().ok());
            if kept.is_none_or(|k| k < now) {
                self.store.put_setting(&key, Some(&now.to_string()))?;
            }
            self.scheduler.set(id, schedule, Some(now));
        } else {
            self.scheduler.set(id, None, None);
        }
        Ok(())
    }

    /// At the start: every scheduled definition counts from the last time it acted on
    /// (a setting, or the newest run the schedule started, whichever is later); times
    /// missed while the daemon was down run as its `catch_up` says; `auto_start`
    /// definitions run once; then the schedules run until the daemon stops.
    pub async fn start_scheduling(self: &Arc<Self>) -> Result<()> {
        let settings = self.store.settings()?;
        let stored = std::mem::take(&mut *self.stored_slots.lock().expect("slots"));
        let mut missed = Vec::new();
        let mut auto = Vec::new();
        {
            let defs = self.definitions.read().expect("definitions");
            for l in defs.values().filter(|l| l.valid.is_ok() && self.enabled(&l.def)) {
                let id = &l.def.id;
                if l.def.auto_start {
                    auto.push(id.clone());
                }
                let Some(sched) = def_schedule(&l.def) else { continue };
                let kept = settings.get(&format!("{SLOT_PREFIX}{id}")).and_then(|v| v.parse::<i64>().ok());
                let last = kept.max(stored.get(id).copied());
                let due = self.scheduler.catch_up(id, &sched, last, l.def.catch_up);
                self.scheduler.set(id, Some(sched), last.max(due.as_ref().map(|d| d.slot_ms)));
                missed.extend(due);
            }
        }
        // Catch-up first: an auto_start run would otherwise make it skip (overlap = skip).
        self.fire(missed).await;
        for id in auto {
            let as_ = StartAs { trigger: Trigger::AutoStart, ..Default::default() };
            if let Err(e) = self.start_with_defaults(&id, as_).await {
                tracing::warn!(definition = %id, error = %e, "auto_start: could not start a run");
            }
        }
        let (engine, stop) = (self.clone(), self.shutting_down.clone());
        let scheduler = self.scheduler.clone();
        tokio::spawn(scheduler.run(stop, move |due| {
            let engine = engine.clone();
            async move { engine.fire(due).await }
        }));
        Ok(())
    }

    /// Acts on scheduled times that came: a run each, unless `overlap = "skip"` finds one
    /// active; then keeps each time as the definition's last (after the runs are durable).
    async fn fire(self: &Arc<Self>, due: Vec<schedule::Due>) {
        if due.is_empty() {
            return;
        }
        let mut kept = Vec::with_capacity(due.len());
        for d in due {
            let keep = (format!("{SLOT_PREFIX}{}", d.id), Some(d.slot_ms.to_string()));
            let Some(trigger) = d.trigger else {
                tracing::info!(definition = %d.id, time = %rfc3339(d.slot_ms), "catch_up = none: a scheduled time missed while the daemon was down does not run");
                kept.push(keep);
                continue;
            };
            if trigger == Trigger::Schedule {
                // How late the run is created, not when the batch was taken.
                let late = self.scheduler.now_ms() - d.slot_ms;
                crate::metrics::METRICS.schedule_lateness.observe(late.max(0) as f64 / 1000.0);
            }
            let overlap = self.definitions.read().expect("definitions").get(&d.id).map(|l| l.def.overlap);
            let busy = self.has_older_runs(&d.id, u64::MAX);
            if busy && overlap == Some(Overlap::Skip) {
                crate::metrics::METRICS.schedule_skipped.inc();
                tracing::info!(definition = %d.id, time = %rfc3339(d.slot_ms), "overlap = skip: a run is still active; this scheduled time does not run");
                kept.push(keep);
                continue;
            }
            let as_ = StartAs { trigger, schedule_ms: Some(d.slot_ms), scheduled_ms: None };
            match self.start_with_defaults(&d.id, as_).await {
                // Gone, invalid or disabled meanwhile: this time is passed over.
                Ok(_) | Err(EngineError::Conflict(_)) => kept.push(keep),
                // Shutting down, or the store failed: not kept, so the next start sees it
                // missed (catch_up) rather than done.
                Err(e) => tracing::warn!(definition = %d.id, error = %e, "schedule: could not start a run"),
            }
        }
        if let Err(e) = self.store.sync().await {
            tracing::warn!(error = %e, "schedule: the runs started could not be made durable");
            return;
        }
        if let Err(e) = self.store.put_settings(&kept) {
            tracing::warn!(error = %e, "schedule: could not keep the last scheduled times");
        }
    }

    /// Starts a run of `id` with its parameters' defaults, if it is valid and enabled.
    async fn start_with_defaults(self: &Arc<Self>, id: &str, as_: StartAs) -> Result<String> {
        let def = {
            let defs = self.definitions.read().expect("definitions");
            match defs.get(id) {
                Some(l) if l.valid.is_ok() && self.enabled(&l.def) => l.def.clone(),
                _ => return Err(EngineError::Conflict(format!("definition {id:?} is gone, invalid or disabled"))),
            }
        };
        let params = definition::resolve_params(&def, &Default::default()).map_err(EngineError::Invalid)?;
        let plan = definition::plan_with(&def, &params).map_err(EngineError::Invalid)?;
        self.start(def, params, plan, as_).await
    }

    /// Whether a run of `def_id` older than `num` is live.
    /// A run put off to a later time (`delay`, `run_at`) counts only once its time has come:
    /// a run delayed to tomorrow does not hold back today's schedule.
    pub(crate) fn has_older_runs(&self, def_id: &str, num: u64) -> bool {
        let older: Vec<u64> = self
            .active
            .lock()
            .expect("active")
            .get(def_id)
            .map(|s| s.range(..num).copied().collect())
            .unwrap_or_default();
        let now = now_ms();
        older.into_iter().any(|n| {
            self.live(n).is_none_or(|l| l.record.lock().expect("record").scheduled_ms.is_none_or(|t| t <= now))
        })
    }

    /// Waits until every run of `def_id` older than `num` has ended (`overlap = "queue"`);
    /// false when cancelled first.
    pub(crate) async fn until_older_runs_end(&self, def_id: &str, num: u64, cancel: &CancellationToken) -> bool {
        loop {
            let ended = self.run_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let older =
                self.active.lock().expect("active").get(def_id).is_some_and(|s| s.range(..num).next().is_some());
            if !older {
                return true;
            }
            tokio::select! {
                _ = ended => {}
                _ = cancel.cancelled() => return false,
            }
        }
    }

    /// Enables or disables a definition (file or API), kept across restarts.
    pub fn set_enabled(&self, id: &str, enabled: bool) -> Result<DefinitionInfo> {
        let defs = self.definitions.read().expect("definitions");
        let l = defs.get(id).ok_or_else(|| EngineError::NotFound(format!("no job definition {id:?}")))?;
        self.store.put_setting(&format!("{ENABLED_PREFIX}{id}"), Some(if enabled { "true" } else { "false" }))?;
        self.enabled_overrides.write().expect("overrides").insert(id.to_string(), enabled);
        let info = self.info(l);
        drop(defs);
        self.reschedule(id)?;
        Ok(self.get_definition(id).unwrap_or(info))
    }

    pub fn put_definition(&self, def: JobDefinition) -> Result<DefinitionInfo> {
        definition::check(&def).map_err(EngineError::Invalid)?;
        if let Some(e) = self.queue_error(&def) {
            return Err(EngineError::Invalid(e));
        }
        self.store.put_definition(&def)?;
        // A definition posted anew says itself whether it is enabled.
        self.forget_enabled(&def.id)?;
        let id = def.id.clone();
        let loaded = Loaded { def, valid: Ok(()), source: Source::Api, parsed: true };
        self.definitions.write().expect("definitions").insert(id.clone(), loaded);
        self.reschedule(&id)?;
        self.get_definition(&id)
    }

    pub fn delete_definition(&self, id: &str) -> Result<()> {
        let mut defs = self.definitions.write().expect("definitions");
        match defs.get(id) {
            None => Err(EngineError::NotFound(format!("no job definition {id:?}"))),
            Some(l) if l.source != Source::Api => Err(EngineError::Conflict(format!(
                "definition {id:?} comes from {}; remove the file instead",
                l.source
            ))),
            Some(_) => {
                self.store.delete_definition(id)?;
                defs.remove(id);
                drop(defs);
                self.scheduler.set(id, None, None);
                // A later definition with this id counts its schedule from its own start.
                self.store.put_setting(&format!("{SLOT_PREFIX}{id}"), None)?;
                // A later definition with this id starts from its own `enabled`.
                self.forget_enabled(id)?;
                Ok(())
            }
        }
    }

    /// Starts a run of a definition, now or at the time `req` asks, with its parameters;
    /// returns the new manager's id.
    pub async fn execute(self: &Arc<Self>, def_id: &str, req: ExecuteRequest) -> Result<String> {
        let def = {
            let defs = self.definitions.read().expect("definitions");
            let l = defs.get(def_id).ok_or_else(|| EngineError::NotFound(format!("no job definition {def_id:?}")))?;
            if let Err(e) = &l.valid {
                return Err(EngineError::Invalid(format!("definition {def_id:?} is invalid: {e}")));
            }
            if !self.enabled(&l.def) {
                return Err(EngineError::Conflict(format!(
                    "definition {def_id:?} is disabled; enable it first (POST /api/job-definitions/{def_id}/enable)"
                )));
            }
            l.def.clone()
        };
        let scheduled_ms = start_time(&req, now_ms()).map_err(EngineError::Invalid)?;
        let params = definition::resolve_params(&def, &req.params).map_err(EngineError::Invalid)?;
        let plan = definition::plan_with(&def, &params).map_err(EngineError::Invalid)?;
        self.start(def, params, plan, StartAs { scheduled_ms, ..Default::default() }).await
    }

    async fn start(
        self: &Arc<Self>,
        def: JobDefinition,
        params: definition::Params,
        plan: Plan,
        as_: StartAs,
    ) -> Result<String> {
        let scheduled_ms = as_.scheduled_ms;
        if self.shutting_down.is_cancelled() {
            return Err(EngineError::ShuttingDown);
        }
        let num = self.store.alloc_manager()?;
        let rec = ManagerRecord {
            num,
            definition_id: def.id.clone(),
            name: if def.name.is_empty() { def.id.clone() } else { def.name.clone() },
            status: JobStatus::Pending,
            created_ms: now_ms(),
            started_ms: None,
            finished_ms: None,
            error: None,
            steps: def
                .steps
                .iter()
                .zip(&plan.steps)
                .map(|(s, p)| StepRecord {
                    name: s.name.clone(),
                    step_type: p.step_type(),
                    description: s.description.clone(),
                    status: JobStatus::Pending,
                    child_counts: ChildCounts::default(),
                    started_ms: None,
                    finished_ms: None,
                    error: None,
                    attempt: 0,
                    next_attempt_ms: None,
                })
                .collect(),
            definition: def,
            params,
            scheduled_ms,
            trigger: Some(as_.trigger),
            schedule_ms: as_.schedule_ms,
        };
        self.note_run(&rec);
        self.store.put_manager(rec.clone()).await?;
        // Clients hear of a run that waits (delayed, on a paused queue, queued behind an
        // earlier run) before it starts.
        self.status_change(&rec, 0);
        if let Some(at) = scheduled_ms {
            let left = std::time::Duration::from_millis((at - now_ms()).max(0) as u64 / 1000 * 1000);
            let msg = format!("scheduled: starts at {} (in {})", rfc3339(at), humantime::format_duration(left));
            self.manager_event(JobPath::manager(num), quaero_shared::Level::Info, msg).await;
        }
        let id = JobPath::manager(num).to_string();
        self.spawn_manager(rec, Arc::new(plan));
        Ok(id)
    }

    fn spawn_manager(self: &Arc<Self>, rec: ManagerRecord, plan: Arc<Plan>) {
        let name = rec.definition.queue.as_deref().unwrap_or(queues::DEFAULT);
        // A run stored on a queue the config no longer has goes to the default queue.
        let queue = self.queues.get(name).unwrap_or_else(|| &self.queues[queues::DEFAULT]).clone();
        let live = Arc::new(LiveManager {
            queue,
            priority: rec.definition.priority,
            num: rec.num,
            record: Mutex::new(rec),
            cancel: self.shutting_down.child_token(),
            reason: Mutex::new(None),
            plan,
            child_tokens: Mutex::new(HashMap::new()),
        });
        self.live.lock().expect("live").insert(live.num, live.clone());
        let def_id = live.record.lock().expect("record").definition_id.clone();
        self.active.lock().expect("active").entry(def_id.clone()).or_default().insert(live.num);
        let engine = self.clone();
        self.tasks.spawn(async move {
            // Also when the run panics: a live run left behind would block its definition's
            // schedule (overlap) for good.
            let _ended = RunEnded { engine: engine.clone(), def_id, num: live.num };
            run::run_manager(engine, live).await;
        });
    }

    /// At start: every manager a crash or a stop left pending or running is resumed; its
    /// interrupted step runs again from the start (children that finished are kept).
    pub async fn recover(self: &Arc<Self>) -> Result<usize> {
        // Through the index: what is unfinished, and per definition its newest run and its
        // newest scheduled one; a long finished history is not read.
        let unfinished = ManagerQuery {
            statuses: vec![JobStatus::Pending, JobStatus::Running],
            limit: usize::MAX,
            ..Default::default()
        };
        let mut stale = self.store.list_managers(&unfinished)?.managers;
        let (mut newest, mut slots) = (HashMap::new(), HashMap::new());
        for def in self.store.run_definitions()? {
            let q = ManagerQuery { definition: Some(def.clone()), limit: 1, ..Default::default() };
            if let Some(m) = self.store.list_managers(&q)?.managers.first() {
                newest.insert(def.clone(), (m.num, last_run(m)));
            }
            // Scheduled runs are made in the order of their times; a few newest cover any
            // made out of order by a catch-up.
            let q = ManagerQuery { definition: Some(def.clone()), scheduled: true, limit: 16, ..Default::default() };
            if let Some(t) = self.store.list_managers(&q)?.managers.iter().filter_map(|m| m.schedule_ms).max() {
                slots.insert(def, t);
            }
        }
        *self.last_runs.lock().expect("last runs") = newest;
        *self.stored_slots.lock().expect("slots") = slots;
        stale.sort_by_key(|m| m.num);
        let n = stale.len();
        // A daemon killed without a chance to stop its commands left them running; they
        // go before their steps run again, or two copies would run side by side.
        let resuming: std::collections::HashSet<u64> = stale.iter().map(|m| m.num).collect();
        for (group, cmdline) in leftovers::kill_leftovers(self.store.instance(), &resuming) {
            tracing::warn!(group, command = %cmdline, "killed a command an earlier daemon on this data directory left running");
        }
        for m in stale {
            match definition::plan_with(&m.definition, &m.params) {
                Ok(plan) => {
                    let was = m.status;
                    let step = m.steps.iter().position(|s| !s.status.is_terminal());
                    let msg = match step {
                        Some(i) if m.steps[i].status == JobStatus::Running => format!(
                            "quaerod restarted: resuming this job (it was {was} when the daemon stopped); step {:?} runs again from its start, its finished child jobs are kept",
                            m.steps[i].name
                        ),
                        _ => format!("quaerod restarted: resuming this job (it was {was} when the daemon stopped)"),
                    };
                    let path = JobPath::manager(m.num);
                    // A delayed run that never started has nothing to resume: it waits on.
                    if m.started_ms.is_some() {
                        self.manager_event(path, quaero_shared::Level::Warn, msg).await;
                    }
                    self.spawn_manager(m, Arc::new(plan));
                }
                Err(e) => {
                    // The stored definition no longer validates (a newer daemon tightened
                    // a rule): fail it rather than leave it running forever.
                    let mut m = m;
                    let msg = format!("quaerod restarted: cannot resume this job, its definition is invalid now: {e}");
                    self.manager_event(JobPath::manager(m.num), quaero_shared::Level::Error, msg.clone()).await;
                    let now = now_ms();
                    for s in m.steps.iter_mut().filter(|s| !s.status.is_terminal()) {
                        s.status = JobStatus::Failed;
                        s.finished_ms = Some(now);
                        s.next_attempt_ms = None;
                    }
                    for i in 0..m.steps.len() {
                        self.fail_stale_children(m.num, i as u32 + 1).await?;
                    }
                    m.status = JobStatus::Failed;
                    m.error = Some(msg);
                    m.finished_ms = Some(now);
                    self.note_run(&m);
                    self.store.put_manager(m).await?;
                }
            }
        }
        self.store.sync().await?;
        Ok(n)
    }

    async fn fail_stale_children(&self, mgr: u64, step: u32) -> Result<()> {
        let now = now_ms();
        let stale: Vec<ChildRecord> = self
            .store
            .children_of(mgr, step)?
            .into_iter()
            .filter(|c| !c.status.is_terminal())
            .map(|mut c| {
                c.status = JobStatus::Failed;
                c.error = Some("quaerod restarted while this job ran".into());
                c.finished_ms = Some(now);
                c.next_attempt_ms = None;
                c
            })
            .collect();
        self.store.put_children(stale).await?;
        Ok(())
    }

    async fn manager_event(&self, path: JobPath, level: quaero_shared::Level, message: String) {
        let sink = runners::Sink { store: self.store.clone(), path, originator: quaero_shared::Originator::Manager };
        sink.send(level, message).await;
    }

    fn live(&self, num: u64) -> Option<Arc<LiveManager>> {
        self.live.lock().expect("live").get(&num).cloned()
    }

    /// The record of a manager: live copy first, then the store.
    pub fn manager_record(&self, num: u64) -> Result<Option<ManagerRecord>> {
        if let Some(l) = self.live(num) {
            return Ok(Some(l.snapshot()));
        }
        Ok(self.store.get_manager(num)?)
    }

    fn not_found(id: &str) -> EngineError {
        EngineError::NotFound(format!("no job {id:?}"))
    }

    /// Resolves any id to its path, checking that the job exists.
    pub fn resolve(&self, id: &str) -> Result<(JobPath, ManagerRecord)> {
        let path = JobPath::parse(id).ok_or_else(|| Self::not_found(id))?;
        let m = self.manager_record(path.manager)?.ok_or_else(|| Self::not_found(id))?;
        if path.step as usize > m.steps.len() {
            return Err(Self::not_found(id));
        }
        if path.child > 0 && self.store.get_child(path)?.is_none() {
            return Err(Self::not_found(id));
        }
        Ok((path, m))
    }

    pub fn get_job(&self, id: &str) -> Result<Job> {
        let (path, m) = self.resolve(id)?;
        match path.kind() {
            JobKind::Manager => Ok(manager_job(&m)),
            JobKind::Step => Ok(step_job(&m, path.step)),
            JobKind::Job => {
                let c = self.store.get_child(path)?.ok_or_else(|| Self::not_found(id))?;
                Ok(child_job(&m, &c))
            }
        }
    }

    /// `GET /api/jobs`: managers (newest first), a manager's steps, or a step's children.
    /// A page of jobs, the number the filters match, and the cursor of the next page.
    /// Managers and a step's children are read through the store's index: a page costs
    /// O(limit), or O(offset + limit) with `offset`, however long the history.
    pub fn list_jobs(&self, q: &read::JobsQuery) -> Result<(Vec<Job>, u64, Option<u64>)> {
        let keep = |s: JobStatus| q.statuses.is_empty() || q.statuses.contains(&s);
        match q.parent.as_deref() {
            None | Some("root") => {
                let mq = ManagerQuery {
                    statuses: q.statuses.clone(),
                    definition: q.definition.clone(),
                    tag: q.tag.clone(),
                    queue: q.queue.clone(),
                    search: q.search.clone(),
                    scheduled: false,
                    finished_before: None,
                    before: q.cursor,
                    offset: q.offset,
                    limit: q.limit,
                };
                let page = self.store.list_managers(&mq)?;
                let total = self.store.count_managers(&mq)?;
                let next = if page.more { page.managers.last().map(|m| m.num) } else { None };
                let live = self.live.lock().expect("live");
                // A live run's record may be a step ahead of the stored one it was found by.
                // One whose live status no longer matches the filter (its new status not yet
                // stored) is left out rather than shown under the wrong filter.
                let jobs = page
                    .managers
                    .into_iter()
                    .map(|m| live.get(&m.num).map_or_else(|| manager_job(&m), |l| manager_job(&l.snapshot())))
                    .filter(|j| keep(j.status))
                    .collect();
                Ok((jobs, total, next))
            }
            Some(id) => {
                let (path, m) = self.resolve(id)?;
                let run_matches = m.definition_id == *q.definition.as_deref().unwrap_or(&m.definition_id)
                    && q.tag.as_ref().is_none_or(|t| m.definition.tags.contains(t))
                    && q.queue.as_ref().is_none_or(|n| m.definition.queue.as_deref().unwrap_or(queues::DEFAULT) == n);
                if !run_matches {
                    return Ok((Vec::new(), 0, None));
                }
                match path.kind() {
                    JobKind::Manager => {
                        let steps: Vec<Job> =
                            (1..=m.steps.len() as u32).map(|i| step_job(&m, i)).filter(|j| keep(j.status)).collect();
                        let total = steps.len() as u64;
                        let jobs = steps.into_iter().skip(q.offset).take(q.limit).collect();
                        Ok((jobs, total, None))
                    }
                    JobKind::Step => {
                        let after = q.cursor.map(|c| c.min(u32::MAX as u64) as u32);
                        let (children, more) =
                            self.store.children_page(path.manager, path.step, &q.statuses, after, q.offset, q.limit)?;
                        let counts = &m.steps[path.step as usize - 1].child_counts;
                        let total = if q.statuses.is_empty() {
                            counts.total
                        } else {
                            q.statuses.iter().map(|s| counts.get(*s)).sum()
                        };
                        let next = if more { children.last().map(|c| c.path.child as u64) } else { None };
                        Ok((children.iter().map(|c| child_job(&m, c)).collect(), total, next))
                    }
                    JobKind::Job => Ok((Vec::new(), 0, None)),
                }
            }
        }
    }

    pub async fn cancel(&self, id: &str) -> Result<String> {
        let (path, m) = self.resolve(id)?;
        let live = self.live(path.manager);
        let status = match path.kind() {
            JobKind::Manager => m.status,
            JobKind::Step => m.steps[path.step as usize - 1].status,
            JobKind::Job => self.store.get_child(path)?.map(|c| c.status).unwrap_or(JobStatus::Completed),
        };
        if status.is_terminal() {
            return Err(EngineError::Conflict(format!("job {id} is already {status}")));
        }
        let Some(live) = live else {
            return Err(EngineError::Conflict(format!("job {id} is not running in this daemon")));
        };
        match path.kind() {
            JobKind::Manager | JobKind::Step => {
                // A step cannot be skipped on its own: steps run in order, so cancelling
                // one cancels the run it belongs to.
                live.stop(StopReason::Cancelled);
                Ok(format!("cancelling {}", JobPath::manager(path.manager)))
            }
            JobKind::Job => {
                let token = live.child_tokens.lock().expect("tokens").get(&path).cloned();
                match token {
                    Some(t) => {
                        t.cancel();
                        Ok(format!("cancelling {id}"))
                    }
                    None => Err(EngineError::Conflict(format!("job {id} is not running"))),
                }
            }
        }
    }

    pub async fn delete(&self, id: &str) -> Result<(u64, u64)> {
        let (path, m) = self.resolve(id)?;
        if path.kind() != JobKind::Manager {
            return Err(EngineError::Invalid(format!(
                "{id} is not a manager; delete its manager {}",
                JobPath::manager(path.manager)
            )));
        }
        if !m.status.is_terminal() || self.live(path.manager).is_some() {
            return Err(EngineError::Conflict(format!("job {id} is {}; cancel it first", m.status)));
        }
        let deleted = self.store.delete_manager(path.manager).await?;
        self.forget_run(&m.definition_id, m.num);
        Ok(deleted)
    }

    /// Deletes every finished manager `q` matches, in the background, in batches of
    /// [`BULK_BATCH`] deletes that share one flush, so that ingest goes on between them.
    /// Returns how many matched (runs still live are left out).
    pub async fn delete_matching(self: &Arc<Self>, mut q: ManagerQuery) -> Result<u64> {
        let terminal: Vec<JobStatus> = JobStatus::ALL.into_iter().filter(|s| s.is_terminal()).collect();
        if q.statuses.is_empty() {
            q.statuses = terminal;
        } else if let Some(s) = q.statuses.iter().find(|s| !s.is_terminal()) {
            return Err(EngineError::Invalid(format!(
                "status: only finished runs (completed, failed, cancelled) can be deleted, not {s}"
            )));
        }
        q.offset = 0;
        q.limit = usize::MAX;
        let store = self.store.clone();
        let nums = tokio::task::spawn_blocking(move || store.manager_nums(&q))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??;
        let nums: Vec<u64> = nums.into_iter().filter(|n| self.live(*n).is_none()).collect();
        let count = nums.len() as u64;
        let eng = self.clone();
        self.tasks.spawn(async move {
            let started = std::time::Instant::now();
            let (mut managers, mut jobs, mut events) = (0u64, 0u64, 0u64);
            for batch in nums.chunks(BULK_BATCH) {
                if eng.shutting_down.is_cancelled() {
                    tracing::info!(managers, "bulk delete: stopped by the shutdown (the rest stays)");
                    return;
                }
                let deletes = batch.iter().map(|n| async {
                    let def = eng.store.get_manager(*n).ok().flatten().map(|m| m.definition_id);
                    (*n, def, eng.store.delete_manager(*n).await)
                });
                for (num, def, result) in futures_util::future::join_all(deletes).await {
                    match result {
                        Ok((j, e)) => {
                            if let Some(d) = def {
                                eng.forget_run(&d, num);
                            }
                            managers += u64::from(j > 0);
                            (jobs, events) = (jobs + j, events + e);
                        }
                        Err(e) => {
                            tracing::error!(manager = %JobPath::manager(num), error = %e, "bulk delete: a delete failed; stopping");
                            return;
                        }
                    }
                }
                tokio::task::yield_now().await;
            }
            tracing::info!(managers, jobs, events, elapsed = ?started.elapsed(), "bulk delete: done");
        });
        Ok(count)
    }

    /// A run started or changed status: its definition's last run, if it is the newest.
    fn note_run(&self, m: &ManagerRecord) {
        let mut last = self.last_runs.lock().expect("last runs");
        match last.get_mut(&m.definition_id) {
            Some((num, _)) if *num > m.num => {}
            Some(entry) => *entry = (m.num, last_run(m)),
            None => {
                last.insert(m.definition_id.clone(), (m.num, last_run(m)));
            }
        }
    }

    /// A run was deleted: its definition shows no last run if it was that one (an older
    /// run is not looked for).
    fn forget_run(&self, def_id: &str, num: u64) {
        let mut last = self.last_runs.lock().expect("last runs");
        if last.get(def_id).is_some_and(|(n, _)| *n == num) {
            last.remove(def_id);
        }
    }

    /// Deletes finished managers (with their steps, children and events) that finished
    /// longer than `retention` ago; returns how many. Managers still live are kept.
    pub async fn sweep_retention(&self, retention: std::time::Duration) -> Result<usize> {
        let cutoff = now_ms() - retention.as_millis() as i64;
        let mut n = 0;
        // Through the finish-time index, oldest first: O(expired), not O(history).
        loop {
            let old = self.store.finished_before(cutoff, 256)?;
            let mut deleted = 0;
            for num in &old {
                if self.live(*num).is_some() {
                    continue;
                }
                let def_id = self.store.get_manager(*num)?.map(|m| m.definition_id);
                let (jobs, events) = self.store.delete_manager(*num).await?;
                if let Some(d) = def_id {
                    self.forget_run(&d, *num);
                }
                tracing::info!(manager = %JobPath::manager(*num), jobs, events, "retention: deleted a finished manager");
                deleted += 1;
            }
            n += deleted;
            if old.len() < 256 || deleted == 0 {
                break;
            }
        }
        Ok(n)
    }

    pub async fn rerun(self: &Arc<Self>, id: &str) -> Result<String> {
        let (path, m) = self.resolve(id)?;
        if path.kind() != JobKind::Manager {
            return Err(EngineError::Invalid(format!(
                "{id} is not a manager; rerun its manager {}",
                JobPath::manager(path.manager)
            )));
        }
        let plan = definition::plan_with(&m.definition, &m.params).map_err(EngineError::Invalid)?;
        let as_ = StartAs { trigger: Trigger::Rerun, ..Default::default() };
        self.start(m.definition, m.params, plan, as_).await
    }

    /// Stops taking work, interrupts running jobs (they stay running in the store and are
    /// resumed at the next start), and waits for the managers to wind down.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        for l in self.live.lock().expect("live").values() {
            l.stop(StopReason::Shutdown);
        }
        // After the reasons are set; a manager spawned in between is cancelled through its
        // parent token and reads as `Shutdown` too (see `LiveManager::stop_reason`).
        self.shutting_down.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            tracing::warn!("some jobs did not stop within {grace:?}");
        }
        let _ = self.store.sync().await;
    }

    /// The configuration the daemon runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    #[cfg(test)]
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    #[cfg(test)]
    pub(crate) fn pages(&self) -> &PageCache {
        &self.pages
    }

    /// The aggregator that turns commits into client triggers (the WebSocket route
    /// registers its clients there).
    pub(crate) fn aggregator(&self) -> &Arc<Aggregator> {
        &self.aggregator
    }

    pub(crate) fn status_change(&self, m: &ManagerRecord, step: u32) {
        if step == 0 {
            self.note_run(m);
        }
        let mgr_id = JobPath::manager(m.num).to_string();
        let change = if step == 0 {
            JobStatusChange {
                job_id: mgr_id.clone(),
                parent_id: None,
                manager_id: mgr_id,
                kind: JobKind::Manager,
                status: m.status,
                step_name: None,
                error: m.error.clone(),
                timestamp: rfc3339(now_ms()),
            }
        } else {
            let s = &m.steps[step as usize - 1];
            JobStatusChange {
                job_id: JobPath::step(m.num, step).to_string(),
                parent_id: Some(mgr_id.clone()),
                manager_id: mgr_id,
                kind: JobKind::Step,
                status: s.status,
                step_name: Some(s.name.clone()),
                error: s.error.clone(),
                timestamp: rfc3339(now_ms()),
            }
        };
        self.aggregator.status_changed(change);
    }
}

/// The setting key of a definition's enabled switch: `definition.enabled.<id>`.
const ENABLED_PREFIX: &str = "definition.enabled.";
/// The setting key of a paused queue: `queue.paused.<name>` = `true`.
const PAUSED_PREFIX: &str = "queue.paused.";
/// The setting key of the last scheduled time a definition acted on (ms since the epoch):
/// `schedule.last.<id>`.
const SLOT_PREFIX: &str = "schedule.last.";

fn last_run(m: &ManagerRecord) -> LastRun {
    LastRun { job_id: JobPath::manager(m.num).to_string(), status: m.status, finished_at: m.finished_ms.map(rfc3339) }
}

/// A definition's parsed schedule, if it has a valid one.
fn def_schedule(def: &JobDefinition) -> Option<Arc<schedule::Schedule>> {
    let expr = def.schedule.as_deref()?;
    schedule::Schedule::parse(expr, def.timezone.as_deref()).ok().map(Arc::new)
}

fn definition_info(l: &Loaded, enabled: bool) -> DefinitionInfo {
    DefinitionInfo {
        id: l.def.id.clone(),
        name: if l.def.name.is_empty() { l.def.id.clone() } else { l.def.name.clone() },
        description: l.def.description.clone(),
        steps: l.def.steps.clone(),
        valid: l.valid.is_ok(),
        error: l.valid.as_ref().err().cloned(),
        source: l.source.wire(),
        timeout: l.def.timeout.clone(),
        params: l.def.params.clone(),
        tags: l.def.tags.clone(),
        enabled,
        queue: l.def.queue.clone().unwrap_or_else(|| queues::DEFAULT.to_string()),
        priority: l.def.priority,
        schedule: l.def.schedule.clone(),
        timezone: l.def.schedule.as_ref().map(|_| l.def.timezone.clone().unwrap_or_else(|| "UTC".into())),
        schedule_text: None,
        next_run_at: None,
        last_run: None,
        auto_start: l.def.auto_start,
        overlap: l.def.overlap,
        catch_up: l.def.catch_up,
    }
}

/// When a run asked for with `req` starts: `None` for now, else ms since the epoch. A
/// time in the past starts at once.
fn start_time(req: &ExecuteRequest, now: i64) -> std::result::Result<Option<i64>, String> {
    /// The furthest a run can be put off.
    const MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);
    let at = match (&req.run_at, &req.delay) {
        (Some(_), Some(_)) => return Err("run_at, delay: give one of them, not both".into()),
        (None, None) => return Ok(None),
        (None, Some(d)) => {
            let d = humantime::parse_duration(d.trim())
                .map_err(|e| format!("delay: {d:?} is not a duration like \"10m\" or \"90s\": {e}"))?;
            if d > MAX_DELAY {
                return Err(format!("delay: {} is more than a year", humantime::format_duration(d)));
            }
            now + d.as_millis() as i64
        }
        (Some(t), None) => {
            let at = crate::time::parse_rfc3339_ms(t.trim())
                .ok_or_else(|| format!("run_at: {t:?} is not an RFC 3339 time like \"2026-12-01T08:00:00Z\""))?;
            if at - now > MAX_DELAY.as_millis() as i64 {
                return Err(format!("run_at: {t:?} is more than a year away"));
            }
            at
        }
    };
    Ok((at > now).then_some(at))
}

fn duration(start: Option<i64>, end: Option<i64>, running: bool) -> Option<u64> {
    let start = start?;
    let end = end.or_else(|| running.then(now_ms))?;
    Some((end - start).max(0) as u64)
}

fn sum_counts(m: &ManagerRecord) -> ChildCounts {
    let mut t = ChildCounts::default();
    for s in &m.steps {
        let c = s.child_counts;
        t.total += c.total;
        t.pending += c.pending;
        t.running += c.running;
        t.completed += c.completed;
        t.failed += c.failed;
        t.cancelled += c.cancelled;
    }
    t
}

pub fn step_summary(m: &ManagerRecord, step: u32) -> StepSummary {
    let s = &m.steps[step as usize - 1];
    let (attempt, max_attempts, next_attempt_at) = attempts_shown(m, step, s.attempt, s.next_attempt_ms);
    StepSummary {
        id: JobPath::step(m.num, step).to_string(),
        index: step,
        name: s.name.clone(),
        step_type: s.step_type,
        description: s.description.clone(),
        status: s.status,
        child_counts: s.child_counts,
        started_at: s.started_ms.map(rfc3339),
        finished_at: s.finished_ms.map(rfc3339),
        error: s.error.clone(),
        attempt,
        max_attempts,
        next_attempt_at,
    }
}

/// How a step's attempts (or a child's) show on the wire: only for a step with a retry
/// policy, or one tried more than once; `next_attempt_at` while it waits to retry.
fn attempts_shown(
    m: &ManagerRecord,
    step: u32,
    attempt: u32,
    next: Option<i64>,
) -> (Option<u32>, Option<u32>, Option<String>) {
    let max = m.definition.steps.get(step as usize - 1).and_then(|s| s.retry.as_ref()).map_or(1, |r| r.max_attempts);
    if max <= 1 && attempt <= 1 {
        return (None, None, None);
    }
    ((attempt > 0).then_some(attempt), Some(max), next.map(rfc3339))
}

pub fn manager_job(m: &ManagerRecord) -> Job {
    Job {
        id: JobPath::manager(m.num).to_string(),
        kind: JobKind::Manager,
        parent_id: None,
        manager_id: JobPath::manager(m.num).to_string(),
        definition_id: m.definition_id.clone(),
        name: m.name.clone(),
        status: m.status,
        created_at: rfc3339(m.created_ms),
        started_at: m.started_ms.map(rfc3339),
        finished_at: m.finished_ms.map(rfc3339),
        duration_ms: duration(m.started_ms, m.finished_ms, m.status == JobStatus::Running),
        error: m.error.clone(),
        child_counts: sum_counts(m),
        steps: Some((1..=m.steps.len() as u32).map(|i| step_summary(m, i)).collect()),
        params: m.params.clone(),
        scheduled_at: m.scheduled_ms.map(rfc3339),
        tags: m.definition.tags.clone(),
        attempt: None,
        max_attempts: None,
        next_attempt_at: None,
        trigger: m.trigger,
        schedule_time: m.schedule_ms.map(rfc3339),
        queue: Some(m.definition.queue.clone().unwrap_or_else(|| queues::DEFAULT.to_string())),
    }
}

pub fn step_job(m: &ManagerRecord, step: u32) -> Job {
    let s = &m.steps[step as usize - 1];
    let (attempt, max_attempts, next_attempt_at) = attempts_shown(m, step, s.attempt, s.next_attempt_ms);
    Job {
        id: JobPath::step(m.num, step).to_string(),
        kind: JobKind::Step,
        parent_id: Some(JobPath::manager(m.num).to_string()),
        manager_id: JobPath::manager(m.num).to_string(),
        definition_id: m.definition_id.clone(),
        name: s.name.clone(),
        status: s.status,
        created_at: rfc3339(m.created_ms),
        started_at: s.started_ms.map(rfc3339),
        finished_at: s.finished_ms.map(rfc3339),
        duration_ms: duration(s.started_ms, s.finished_ms, s.status == JobStatus::Running),
        error: s.error.clone(),
        child_counts: s.child_counts,
        steps: None,
        params: Default::default(),
        scheduled_at: None,
        tags: Vec::new(),
        attempt,
        max_attempts,
        next_attempt_at,
        trigger: None,
        schedule_time: None,
        queue: None,
    }
}

pub fn child_job(m: &ManagerRecord, c: &ChildRecord) -> Job {
    let (attempt, max_attempts, next_attempt_at) = attempts_shown(m, c.path.step, c.attempt, c.next_attempt_ms);
    Job {
        id: c.path.to_string(),
        kind: JobKind::Job,
        parent_id: c.path.parent().map(|p| p.to_string()),
        manager_id: JobPath::manager(m.num).to_string(),
        definition_id: m.definition_id.clone(),
        name: c.name.clone(),
        status: c.status,
        created_at: rfc3339(c.created_ms),
        started_at: c.started_ms.map(rfc3339),
        finished_at: c.finished_ms.map(rfc3339),
        duration_ms: duration(c.started_ms, c.finished_ms, c.status == JobStatus::Running),
        error: c.error.clone(),
        child_counts: ChildCounts::default(),
        steps: None,
        params: Default::default(),
        scheduled_at: None,
        tags: Vec::new(),
        attempt,
        max_attempts,
        next_attempt_at,
        trigger: None,
        schedule_time: None,
        queue: None,
    }
}
