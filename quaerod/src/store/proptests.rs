//! Property tests: the store against a plain in-memory model.
//!
//! The model keeps, per manager, its records and every event appended to it in append
//! order, which is seq order. The store packs events into blocks per (manager, step) and
//! derives the manager's scope by merging its step-0 blocks with its steps' chain, and a
//! child's by filtering its step's blocks; the model derives nothing, it filters one list.
//! Operations are generated the way the engine issues them: a manager's steps start one
//! after another, so a step only gets events (its own or its children's) while it is the
//! current one; manager-level events come at any time.
//!
//! Seqs are not predicted (how far the store reserves ahead is its own business): the
//! commit listener reports each event with its seq, and the test binds them to the model
//! in order, checking that they only ever grow, across reopens too.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use quaero_shared::{
    ChildCounts, JobDefinition, JobPath, JobStatus, Level, OnError, Order, Originator, Stats, StepDefinition, StepType,
};

use super::{
    ChildRecord, CommitListener, Committed, LogQuery, ManagerQuery, ManagerRecord, NewEvent, RawEvent, StepRecord,
    Store,
};

/// Hears every commit with its events, so that the test learns the seqs the writer gave.
#[derive(Default)]
struct Recorder {
    log: Mutex<Recorded>,
}

#[derive(Default)]
struct Recorded {
    events: Vec<(u64, NewEvent)>,
    last_seq: u64,
    /// Broken promises of `Committed`, asserted on the test thread (a panic on the writer
    /// thread would only show up as a closed store).
    problems: Vec<String>,
}

impl CommitListener for Recorder {
    fn committed(&self, c: &Committed<'_>) {
        let mut guard = self.log.lock().expect("recorder");
        let log = &mut *guard;
        for (seq, e) in c.events {
            if *seq <= log.last_seq {
                log.problems.push(format!("seq {seq} committed after seq {}", log.last_seq));
            }
            log.last_seq = *seq;
            let scope =
                if e.path.step == 0 { e.path.manager_path() } else { JobPath::step(e.path.manager, e.path.step) };
            if !c.scopes.iter().any(|(p, s)| *p == scope && s >= seq) {
                log.problems
                    .push(format!("commit of seq {seq} for {scope:?} does not name it in scopes {:?}", c.scopes));
            }
            if c.last_seq < *seq {
                log.problems.push(format!("commit says last_seq {} but holds seq {seq}", c.last_seq));
            }
            log.events.push((*seq, e.clone()));
        }
    }

    fn wants_events(&self) -> bool {
        true
    }
}

#[derive(Debug, Clone)]
struct Ev {
    /// Manager, current step, or one of the current step's children.
    target: Index,
    level: Level,
    originator: Originator,
    ts_ms: i64,
    message: String,
}

#[derive(Debug, Clone)]
enum ReadKind {
    Last {
        limit: usize,
        order: Order,
    },
    /// `before` is picked among the seqs around the manager's events.
    Before {
        from: Index,
        limit: usize,
        order: Order,
    },
    /// `after` is picked among the seqs around the manager's events.
    After {
        from: Index,
        /// Also a `before` (a range), picked the same way.
        upto: Option<Index>,
        limit: usize,
    },
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        steps: u32,
    },
    /// Starts the next step of a manager (the previous one completes) and fans it out.
    Advance {
        mgr: Index,
        children: u32,
    },
    Append {
        mgr: Index,
        events: Vec<Ev>,
    },
    Status {
        mgr: Index,
        target: Index,
        status: JobStatus,
    },
    Sync,
    /// `mgr` picks among every manager ever created, deleted ones included.
    Read {
        mgr: Index,
        scope: Index,
        level: Option<Level>,
        kind: ReadKind,
    },
    Delete {
        mgr: Index,
    },
    /// Drops the store (its writer drains and flushes) and opens it again.
    Reopen,
}

fn level() -> impl Strategy<Value = Level> {
    prop_oneof![Just(Level::Debug), Just(Level::Info), Just(Level::Warn), Just(Level::Error)]
}

fn status() -> impl Strategy<Value = JobStatus> {
    prop::sample::select(JobStatus::ALL.to_vec())
}

fn event(message: impl Strategy<Value = String>) -> impl Strategy<Value = Ev> {
    let originator = prop_oneof![Just(Originator::Manager), Just(Originator::Step), Just(Originator::Worker)];
    (any::<Index>(), level(), originator, any::<i64>(), message)
        .prop_map(|(target, level, originator, ts_ms, message)| Ev { target, level, originator, ts_ms, message })
}

fn events() -> impl Strategy<Value = Vec<Ev>> {
    prop_oneof![
        12 => vec(event("\\PC{0,24}"), 1..8),
        // More than BLOCK_EVENTS for one scope in one commit: blocks sealed by count.
        1 => vec(event("[a-z ]{0,8}"), 600..1300),
        // Past BLOCK_BYTES in one commit: blocks sealed by size.
        1 => vec(event(Just("x".repeat(100_000))), 4..8),
    ]
}

fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..=4, 1usize..=40, Just(5000)]
}

fn read_kind() -> impl Strategy<Value = ReadKind> {
    prop_oneof![
        (limit(), prop_oneof![Just(Order::Desc), Just(Order::Asc)])
            .prop_map(|(limit, order)| ReadKind::Last { limit, order }),
        (any::<Index>(), proptest::option::of(any::<Index>()), limit())
            .prop_map(|(from, upto, limit)| ReadKind::After { from, upto, limit }),
        (any::<Index>(), limit(), prop_oneof![Just(Order::Desc), Just(Order::Asc)])
            .prop_map(|(from, limit, order)| ReadKind::Before { from, limit, order }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1u32..=4).prop_map(|steps| Op::Create { steps }),
        3 => (any::<Index>(), 0u32..=3).prop_map(|(mgr, children)| Op::Advance { mgr, children }),
        8 => (any::<Index>(), events()).prop_map(|(mgr, events)| Op::Append { mgr, events }),
        1 => (any::<Index>(), any::<Index>(), status())
            .prop_map(|(mgr, target, status)| Op::Status { mgr, target, status }),
        1 => Just(Op::Sync),
        6 => (any::<Index>(), any::<Index>(), prop::option::of(level()), read_kind())
            .prop_map(|(mgr, scope, level, kind)| Op::Read { mgr, scope, level, kind }),
        1 => any::<Index>().prop_map(|mgr| Op::Delete { mgr }),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone)]
struct MEvent {
    /// Known once the listener has reported the commit.
    seq: Option<u64>,
    path: JobPath,
    level: Level,
    originator: Originator,
    ts_ms: i64,
    message: String,
}

impl MEvent {
    fn raw(&self) -> RawEvent {
        RawEvent {
            seq: self.seq.expect("bound before any read"),
            ts_ms: self.ts_ms,
            level: self.level,
            originator: self.originator,
            step: self.path.step,
            child: self.path.child,
            message: self.message.clone(),
        }
    }
}

struct MManager {
    rec: ManagerRecord,
    children: BTreeMap<JobPath, ChildRecord>,
    /// The step that runs now (0 before the first).
    current: u32,
    events: Vec<MEvent>,
    deleted: bool,
}

impl MManager {
    fn num(&self) -> u64 {
        self.rec.num
    }

    /// Every scope a read can name: the manager, each step, each child, and a child that
    /// does not exist.
    fn scopes(&self) -> Vec<JobPath> {
        let n = self.num();
        let mut out = vec![JobPath::manager(n)];
        out.extend((1..=self.rec.steps.len() as u32).map(|s| JobPath::step(n, s)));
        out.extend(self.children.keys().copied());
        out.push(JobPath::child(n, 1, 999));
        out
    }

    fn event_targets(&self) -> Vec<JobPath> {
        let n = self.num();
        let mut out = vec![JobPath::manager(n)];
        if self.current > 0 {
            out.push(JobPath::step(n, self.current));
            out.extend(self.children.keys().filter(|p| p.step == self.current).copied());
        }
        out
    }

    fn stats(&self, into: &mut Stats) {
        into.add(self.rec.status, 1);
        for s in &self.rec.steps {
            into.add(s.status, 1);
        }
        for c in self.children.values() {
            into.add(c.status, 1);
        }
    }
}

#[derive(Default)]
struct Model {
    managers: Vec<MManager>,
    /// Appended events the listener has not reported yet: (manager index, event index).
    pending: Vec<(usize, usize)>,
    /// Something was sent to the writer since the last sync.
    dirty: bool,
    last_seq: u64,
    last_num: u64,
}

impl Model {
    fn alive(&self) -> Vec<usize> {
        (0..self.managers.len()).filter(|&i| !self.managers[i].deleted).collect()
    }

    fn pick_alive(&self, ix: &Index) -> Option<usize> {
        let alive = self.alive();
        (!alive.is_empty()).then(|| alive[ix.index(alive.len())])
    }

    /// What a read must return: (events, last_seq).
    fn expect(&self, q: &LogQuery) -> (Vec<RawEvent>, u64) {
        let Some(m) = self.managers.iter().find(|m| m.num() == q.path.manager && !m.deleted) else {
            return (Vec::new(), 0);
        };
        let p = q.path;
        let scope: Vec<&MEvent> = m
            .events
            .iter()
            .filter(|e| p.step == 0 || (e.path.step == p.step && (p.child == 0 || e.path.child == p.child)))
            .collect();
        let last_seq = scope.last().map(|e| e.raw().seq).unwrap_or(0);
        let kept: Vec<RawEvent> =
            scope.iter().filter(|e| q.min_level.is_none_or(|l| e.level >= l)).map(|e| e.raw()).collect();
        let out = match q.after {
            Some(after) => {
                kept.into_iter().filter(|e| e.seq > after && q.before.is_none_or(|b| e.seq < b)).take(q.limit).collect()
            }
            None => {
                let kept: Vec<RawEvent> = kept.into_iter().filter(|e| q.before.is_none_or(|b| e.seq < b)).collect();
                let mut newest = kept[kept.len().saturating_sub(q.limit)..].to_vec();
                if q.order == Order::Desc {
                    newest.reverse();
                }
                newest
            }
        };
        (out, last_seq)
    }
}

struct Harness {
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    store: Option<Arc<dyn Store>>,
    recorder: Arc<Recorder>,
    model: Model,
}

fn open(path: &Path) -> (Arc<dyn Store>, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    // sled 0.34 releases its file lock from background threads shortly after the last
    // handle is dropped (spacejam/sled#1289), so an in-process reopen can briefly find it
    // held. A daemon restart is a new process; here, wait for the lock.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match super::open(path, recorder.clone(), super::StoreOptions::default()) {
            Ok(store) => return (store, recorder),
            Err(super::OpenError::InUse { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("open store: {e}"),
        }
    }
}

fn manager_record(num: u64, steps: u32) -> ManagerRecord {
    let names: Vec<String> = (1..=steps).map(|i| format!("step-{i}")).collect();
    // Runs of two definitions, on two queues, with tags, some started by a schedule: the
    // index has several values per dimension to keep apart.
    let def = if num.is_multiple_of(2) { "prop" } else { "other" };
    ManagerRecord {
        num,
        definition_id: def.into(),
        name: format!("Run {}", num % 4),
        status: JobStatus::Pending,
        created_ms: num as i64,
        started_ms: None,
        finished_ms: None,
        error: None,
        steps: names
            .iter()
            .map(|name| StepRecord {
                name: name.clone(),
                step_type: StepType::Emit,
                description: String::new(),
                status: JobStatus::Pending,
                child_counts: ChildCounts::default(),
                started_ms: None,
                finished_ms: None,
                error: None,
                attempt: 0,
                next_attempt_ms: None,
            })
            .collect(),
        definition: JobDefinition {
            id: def.into(),
            queue: num.is_multiple_of(3).then(|| "batch".to_string()),
            tags: (0..num % 3).map(|t| format!("t{t}")).collect(),
            name: String::new(),
            description: String::new(),
            timeout: None,
            steps: names
                .into_iter()
                .map(|name| StepDefinition {
                    name,
                    step_type: StepType::Emit.into(),
                    description: String::new(),
                    on_error: OnError::Fail,
                    config: serde_json::json!({}),
                    retry: None,
                    timeout: None,
                })
                .collect(),
            ..Default::default()
        },
        params: Default::default(),
        scheduled_ms: None,
        trigger: None,
        schedule_ms: num.is_multiple_of(5).then_some(num as i64 * 1_000),
    }
}

/// The listings a check asks for: each filter alone, some together, by status.
fn manager_queries() -> Vec<ManagerQuery> {
    let mut out = Vec::new();
    let statuses = [vec![], vec![JobStatus::Running], vec![JobStatus::Pending, JobStatus::Failed]];
    for st in statuses {
        let base = ManagerQuery { statuses: st, limit: 3, ..Default::default() };
        out.push(base.clone());
        out.push(ManagerQuery { definition: Some("prop".into()), ..base.clone() });
        out.push(ManagerQuery { definition: Some("other".into()), scheduled: true, ..base.clone() });
        out.push(ManagerQuery { tag: Some("t1".into()), ..base.clone() });
        out.push(ManagerQuery { queue: Some("default".into()), ..base.clone() });
        out.push(ManagerQuery { queue: Some("batch".into()), tag: Some("t0".into()), ..base.clone() });
        out.push(ManagerQuery { search: Some("run 1".into()), ..base.clone() });
        out.push(ManagerQuery { search: Some("R".into()), ..base.clone() });
        out.push(ManagerQuery { search: Some("nothing".into()), ..base.clone() });
        out.push(ManagerQuery { finished_before: Some(975), ..base.clone() });
        out.push(ManagerQuery { finished_before: Some(990), tag: Some("t1".into()), ..base.clone() });
    }
    out
}

/// Whether the model's record matches a listing's filters.
fn model_matches(q: &ManagerQuery, m: &ManagerRecord) -> bool {
    (q.statuses.is_empty() || q.statuses.contains(&m.status))
        && q.definition.as_ref().is_none_or(|d| *d == m.definition_id)
        && q.tag.as_ref().is_none_or(|t| m.definition.tags.contains(t))
        && q.queue.as_ref().is_none_or(|n| m.definition.queue.as_deref().unwrap_or("default") == n)
        && q.search.as_ref().is_none_or(|s| {
            let s = s.to_lowercase();
            m.name.to_lowercase().contains(&s) || m.definition_id.to_lowercase().contains(&s)
        })
        && (!q.scheduled || m.schedule_ms.is_some())
        && q.finished_before.is_none_or(|t| m.status.is_terminal() && m.finished_ms.is_some_and(|f| f < t))
}

impl Harness {
    fn new() -> Harness {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, recorder) = open(dir.path());
        Harness { rt, dir, store: Some(store), recorder, model: Model::default() }
    }

    fn store(&self) -> &dyn Store {
        self.store.as_deref().expect("open")
    }

    /// Gives the model's pending events the seqs the listener reported, in order.
    fn bind(&mut self) -> Result<(), TestCaseError> {
        let mut log = self.recorder.log.lock().expect("recorder");
        prop_assert!(log.problems.is_empty(), "commit listener: {:?}", log.problems);
        let reported = std::mem::take(&mut log.events);
        drop(log);
        prop_assert_eq!(reported.len(), self.model.pending.len(), "events reported vs appended");
        for ((seq, e), (mi, ei)) in reported.into_iter().zip(std::mem::take(&mut self.model.pending)) {
            let want = &mut self.model.managers[mi].events[ei];
            prop_assert_eq!(
                (e.path, e.level, e.originator, e.ts_ms, &e.message),
                (want.path, want.level, want.originator, want.ts_ms, &want.message)
            );
            prop_assert!(seq > self.model.last_seq, "seq {} not above {}", seq, self.model.last_seq);
            self.model.last_seq = seq;
            want.seq = Some(seq);
        }
        Ok(())
    }

    /// Makes everything sent so far committed and known to the model.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        if self.model.dirty {
            self.rt.block_on(self.store().sync()).expect("sync");
            self.model.dirty = false;
        }
        self.bind()
    }

    fn check_read(&mut self, q: LogQuery) -> Result<(), TestCaseError> {
        self.settle()?;
        let page = self.store().read_logs(&q).expect("read_logs");
        let (events, last_seq) = self.model.expect(&q);
        prop_assert_eq!(&page.events, &events, "events of {:?}", q);
        prop_assert_eq!(page.last_seq, last_seq, "last_seq of {:?}", q);
        Ok(())
    }

    /// Every record and every scope of every manager, deleted ones included.
    fn check_all(&mut self) -> Result<(), TestCaseError> {
        self.settle()?;
        let mut stats = Stats::default();
        for m in self.model.managers.iter().filter(|m| !m.deleted) {
            m.stats(&mut stats);
        }
        prop_assert_eq!(self.store().stats(), stats);
        let mut listed = Vec::new();
        self.store()
            .for_each_manager_desc(&mut |m| {
                listed.push(m);
                true
            })
            .expect("list managers");
        let mut want: Vec<&ManagerRecord> =
            self.model.alive().into_iter().map(|i| &self.model.managers[i].rec).collect();
        want.reverse();
        prop_assert_eq!(listed.iter().collect::<Vec<_>>(), want.clone());

        // The index: every listing, paged by cursor and by offset, and its count.
        for q in manager_queries() {
            let expect: Vec<&ManagerRecord> = want.iter().copied().filter(|m| model_matches(&q, m)).collect();
            prop_assert_eq!(self.store().count_managers(&q).expect("count"), expect.len() as u64, "count of {:?}", q);
            let (mut by_cursor, mut by_offset) = (Vec::new(), Vec::new());
            let mut cursor = None;
            loop {
                let page = self.store().list_managers(&ManagerQuery { before: cursor, ..q.clone() }).expect("list");
                prop_assert!(page.managers.len() <= q.limit);
                by_cursor.extend(page.managers.iter().cloned());
                if !page.more {
                    break;
                }
                cursor = page.managers.last().map(|m| m.num);
            }
            loop {
                let page =
                    self.store().list_managers(&ManagerQuery { offset: by_offset.len(), ..q.clone() }).expect("list");
                by_offset.extend(page.managers.iter().cloned());
                if !page.more {
                    break;
                }
            }
            prop_assert_eq!(by_cursor.iter().collect::<Vec<_>>(), expect.clone(), "by cursor: {:?}", q);
            prop_assert_eq!(by_offset.iter().collect::<Vec<_>>(), expect.clone(), "by offset: {:?}", q);
            let nums = self.store().manager_nums(&ManagerQuery { limit: usize::MAX, ..q.clone() }).expect("nums");
            prop_assert_eq!(nums, expect.iter().map(|m| m.num).collect::<Vec<_>>(), "numbers of {:?}", q);
        }
        let mut defs: Vec<String> = want.iter().map(|m| m.definition_id.clone()).collect();
        defs.sort();
        defs.dedup();
        prop_assert_eq!(self.store().run_definitions().expect("definitions"), defs);
        for cutoff in [0, 970, 2_000] {
            let mut expect: Vec<(i64, u64)> = want
                .iter()
                .filter(|m| m.status.is_terminal())
                .filter_map(|m| m.finished_ms.filter(|f| *f < cutoff).map(|f| (f, m.num)))
                .collect();
            expect.sort();
            let got = self.store().finished_before(cutoff, usize::MAX).expect("finished_before");
            prop_assert_eq!(got, expect.iter().map(|e| e.1).collect::<Vec<_>>(), "finished before {}", cutoff);
        }

        let mut reads = Vec::new();
        for m in &self.model.managers {
            let num = m.num();
            let rec = self.store().get_manager(num).expect("get_manager");
            prop_assert_eq!(rec.as_ref(), (!m.deleted).then_some(&m.rec), "manager {}", num);
            for step in 1..=m.rec.steps.len() as u32 {
                let got = self.store().children_of(num, step).expect("children_of");
                let want: Vec<ChildRecord> = if m.deleted {
                    Vec::new()
                } else {
                    m.children.values().filter(|c| c.path.step == step).cloned().collect()
                };
                prop_assert_eq!(&got, &want, "children of m{} step {}", num, step);
                for statuses in [vec![], vec![JobStatus::Completed], vec![JobStatus::Running, JobStatus::Failed]] {
                    let keep: Vec<&ChildRecord> =
                        want.iter().filter(|c| statuses.is_empty() || statuses.contains(&c.status)).collect();
                    let (mut paged, mut after) = (Vec::new(), None);
                    loop {
                        let (page, more) =
                            self.store().children_page(num, step, &statuses, after, 0, 2).expect("children_page");
                        paged.extend(page.iter().cloned());
                        if !more {
                            break;
                        }
                        after = page.last().map(|c| c.path.child);
                    }
                    prop_assert_eq!(
                        paged.iter().collect::<Vec<_>>(),
                        keep,
                        "children of m{} step {} by status",
                        num,
                        step
                    );
                }
            }
            for (p, c) in &m.children {
                let got = self.store().get_child(*p).expect("get_child");
                prop_assert_eq!(got.as_ref(), (!m.deleted).then_some(c), "child {:?}", p);
            }
            for path in m.scopes() {
                for min_level in [None, Some(Level::Warn)] {
                    let all =
                        LogQuery { path, limit: 1_000_000, order: Order::Asc, after: None, before: None, min_level };
                    reads.push(all);
                    // Following the scope page by page gives every event exactly once.
                    let n = self.model.expect(&all).0.len();
                    let page = if n <= 200 { 7 } else { n / 13 + 1 };
                    let mut after = 0;
                    loop {
                        let q = LogQuery {
                            path,
                            limit: page,
                            order: Order::Desc,
                            after: Some(after),
                            before: None,
                            min_level,
                        };
                        let got = self.store().read_logs(&q).expect("read_logs");
                        let (want, last_seq) = self.model.expect(&q);
                        prop_assert_eq!(&got.events, &want, "page of {:?}", q);
                        prop_assert_eq!(got.last_seq, last_seq, "last_seq of {:?}", q);
                        match got.events.last() {
                            Some(e) => after = e.seq,
                            None => break,
                        }
                    }
                    // And backwards, page by page with `before`, to the first event.
                    let mut before = None;
                    loop {
                        let q = LogQuery { path, limit: page, order: Order::Desc, after: None, before, min_level };
                        let got = self.store().read_logs(&q).expect("read_logs");
                        let (want, last_seq) = self.model.expect(&q);
                        prop_assert_eq!(&got.events, &want, "page of {:?}", q);
                        prop_assert_eq!(got.last_seq, last_seq, "last_seq of {:?}", q);
                        match got.events.last() {
                            Some(e) => before = Some(e.seq),
                            None => break,
                        }
                    }
                }
            }
        }
        for q in reads {
            self.check_read(q)?;
        }
        Ok(())
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Create { steps } => {
                let num = self.store().alloc_manager().expect("alloc_manager");
                prop_assert!(num > self.model.last_num, "manager number {} reused", num);
                self.model.last_num = num;
                let rec = manager_record(num, steps);
                self.rt.block_on(self.store().put_manager(rec.clone())).expect("put_manager");
                self.model.managers.push(MManager {
                    rec,
                    children: BTreeMap::new(),
                    current: 0,
                    events: Vec::new(),
                    deleted: false,
                });
                self.model.dirty = true;
            }
            Op::Advance { mgr, children } => {
                let Some(i) = self.model.pick_alive(&mgr) else { return Ok(()) };
                let m = &mut self.model.managers[i];
                if m.current as usize >= m.rec.steps.len() {
                    return Ok(());
                }
                if m.current > 0 {
                    m.rec.steps[m.current as usize - 1].status = JobStatus::Completed;
                }
                m.current += 1;
                m.rec.status = JobStatus::Running;
                m.rec.steps[m.current as usize - 1].status = JobStatus::Running;
                let kids: Vec<ChildRecord> = (1..=children)
                    .map(|c| ChildRecord {
                        path: JobPath::child(m.num(), m.current, c),
                        name: format!("child {c}"),
                        status: JobStatus::Pending,
                        created_ms: 0,
                        started_ms: None,
                        finished_ms: None,
                        error: None,
                        attempt: 0,
                        next_attempt_ms: None,
                    })
                    .collect();
                m.children.extend(kids.iter().map(|c| (c.path, c.clone())));
                let rec = m.rec.clone();
                self.rt.block_on(self.store().put_manager(rec)).expect("put_manager");
                self.rt.block_on(self.store().put_children(kids)).expect("put_children");
                self.model.dirty = true;
            }
            Op::Append { mgr, events } => {
                let Some(i) = self.model.pick_alive(&mgr) else { return Ok(()) };
                let m = &mut self.model.managers[i];
                let targets = m.event_targets();
                let mut batch = Vec::with_capacity(events.len());
                for e in events {
                    let path = targets[e.target.index(targets.len())];
                    batch.push(NewEvent {
                        path,
                        level: e.level,
                        originator: e.originator,
                        ts_ms: e.ts_ms,
                        message: e.message.clone(),
                    });
                    self.model.pending.push((i, m.events.len()));
                    m.events.push(MEvent {
                        seq: None,
                        path,
                        level: e.level,
                        originator: e.originator,
                        ts_ms: e.ts_ms,
                        message: e.message,
                    });
                }
                self.rt.block_on(self.store().append(batch)).expect("append");
                self.model.dirty = true;
            }
            Op::Status { mgr, target, status } => {
                let Some(i) = self.model.pick_alive(&mgr) else { return Ok(()) };
                let m = &mut self.model.managers[i];
                let n_steps = m.rec.steps.len();
                let t = target.index(1 + n_steps + m.children.len());
                if t == 0 {
                    m.rec.status = status;
                    // Finished at a time that is not the creation order, as retries make.
                    m.rec.finished_ms = status.is_terminal().then_some(1_000 - (m.rec.num as i64 * 7) % 50);
                } else if t <= n_steps {
                    m.rec.steps[t - 1].status = status;
                } else {
                    let c = m.children.values_mut().nth(t - 1 - n_steps).expect("child");
                    c.status = status;
                    let c = c.clone();
                    self.rt.block_on(self.store().put_children(vec![c])).expect("put_children");
                    self.model.dirty = true;
                    return Ok(());
                }
                let rec = m.rec.clone();
                self.rt.block_on(self.store().put_manager(rec)).expect("put_manager");
                self.model.dirty = true;
            }
            Op::Sync => {
                self.rt.block_on(self.store().sync()).expect("sync");
                self.model.dirty = false;
                self.bind()?;
            }
            Op::Read { mgr, scope, level, kind } => {
                self.settle()?;
                let (path, m) = match self.model.managers.len() {
                    0 => (JobPath::manager(u64::MAX / 2), None),
                    n => {
                        let m = &self.model.managers[mgr.index(n)];
                        let scopes = m.scopes();
                        (scopes[scope.index(scopes.len())], Some(m))
                    }
                };
                let q = match kind {
                    ReadKind::Last { limit, order } => {
                        LogQuery { path, limit, order, after: None, before: None, min_level: level }
                    }
                    ReadKind::After { from, upto, limit } => {
                        // Around every event of the manager: before, at and after it.
                        let mut around = vec![0, self.model.last_seq + 10];
                        for e in m.map(|m| m.events.as_slice()).unwrap_or_default() {
                            let s = e.raw().seq;
                            around.extend([s - 1, s, s + 1]);
                        }
                        let after = around[from.index(around.len())];
                        let before = upto.map(|u| around[u.index(around.len())]);
                        LogQuery { path, limit, order: Order::Asc, after: Some(after), before, min_level: level }
                    }
                    ReadKind::Before { from, limit, order } => {
                        let mut around = vec![0, 1, self.model.last_seq + 10];
                        for e in m.map(|m| m.events.as_slice()).unwrap_or_default() {
                            let s = e.raw().seq;
                            around.extend([s - 1, s, s + 1]);
                        }
                        let before = around[from.index(around.len())];
                        LogQuery { path, limit, order, after: None, before: Some(before), min_level: level }
                    }
                };
                self.check_read(q)?;
            }
            Op::Delete { mgr } => {
                let Some(i) = self.model.pick_alive(&mgr) else { return Ok(()) };
                let num = self.model.managers[i].num();
                let got = self.rt.block_on(self.store().delete_manager(num)).expect("delete_manager");
                self.model.dirty = false;
                self.bind()?;
                let m = &mut self.model.managers[i];
                let jobs = 1 + m.rec.steps.len() as u64 + m.children.len() as u64;
                prop_assert_eq!(got, (jobs, m.events.len() as u64), "deleted (jobs, events) of m{}", num);
                m.deleted = true;
                // Deleting it again finds nothing.
                let again = self.rt.block_on(self.store().delete_manager(num)).expect("delete_manager");
                prop_assert_eq!(again, (0, 0));
                self.check_all()?;
            }
            Op::Reopen => {
                // Dropping the store joins its writer, which commits whatever was queued.
                drop(self.store.take());
                self.model.dirty = false;
                self.bind()?;
                let (store, recorder) = open(self.dir.path());
                self.store = Some(store);
                self.recorder = recorder;
                self.check_all()?;
            }
        }
        Ok(())
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut h = Harness::new();
    for op in ops {
        h.apply(op)?;
    }
    h.check_all()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in vec(op(), 1..80)) {
        run(ops)?;
    }
}
