//! The one writer: drains whatever is queued, gives events their seq, packs them into
//! blocks per (manager, step), applies all trees' batches, flushes once, then tells the
//! listener what is now committed and acknowledges waiting `sync`s.
//!
//! It runs on its own OS thread because every sled call here blocks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use quaero_shared::{JobPath, JobStatus, Level, Originator, Stats};
use tokio::sync::mpsc;

use super::block;
use super::{
    BLOCK_EVENTS, ChildRecord, Counters, ManagerRecord, NewEvent, Result, SEQ_RESERVE, Versions, WriteOp, block_key,
    child_key, manager_key,
};

/// Events per batch at most: bounds the writer's memory and the latency of a sync queued
/// behind a burst.
const MAX_BATCH_EVENTS: usize = 64 * 1024;
/// Bytes of one block at most (a few huge lines must not make a multi-megabyte value).
const BLOCK_BYTES: usize = 256 * 1024;

/// What one flush made durable.
pub struct Committed<'a> {
    /// Each scope (a step, or a manager for its own events) that got events, with the
    /// highest seq it got.
    pub scopes: &'a [(JobPath, u64)],
    /// Highest seq handed out so far.
    pub last_seq: u64,
    /// The events themselves with their seq, only when the listener asked for them
    /// (push mode).
    pub events: &'a [(u64, NewEvent)],
}

/// Hears of every commit, on the writer thread: implementations must return at once.
pub trait CommitListener: Send + Sync {
    fn committed(&self, c: &Committed<'_>);
    /// Whether `Committed::events` should carry the events (costs a copy per event).
    fn wants_events(&self) -> bool {
        false
    }
    /// The job counts by status changed (at open, and after a commit or a delete changed
    /// them): what `queue_stats` tells clients.
    fn stats_changed(&self, _stats: Stats) {}
}

pub(super) struct Writer {
    db: sled::Db,
    events: sled::Tree,
    managers: sled::Tree,
    children: sled::Tree,
    meta: sled::Tree,
    next_seq: u64,
    seq_reserved: u64,
    counters: Arc<Mutex<Counters>>,
    versions: Arc<Mutex<Versions>>,
    listener: Arc<dyn CommitListener>,
    /// `[storage] max_events_per_job` (0 = no limit).
    max_events_per_job: u64,
    /// Stored events per job — (manager, step, child), child 0 being the step (or, for
    /// step 0, the manager) itself — for the jobs written to in this daemon's life.
    counts: HashMap<(u64, u32, u32), u64>,
    /// Steps whose stored events `counts` already covers (counted once, at first write
    /// after start, so that jobs resumed after a restart are bounded too).
    counted_steps: HashSet<(u64, u32)>,
}

struct OpenBlock {
    first_seq: u64,
    buf: Vec<u8>,
    n: usize,
}

impl Writer {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        db: sled::Db,
        events: sled::Tree,
        managers: sled::Tree,
        children: sled::Tree,
        meta: sled::Tree,
        next_seq: u64,
        seq_reserved: u64,
        counters: Arc<Mutex<Counters>>,
        versions: Arc<Mutex<Versions>>,
        listener: Arc<dyn CommitListener>,
        max_events_per_job: u64,
    ) -> Self {
        Writer {
            db,
            events,
            managers,
            children,
            meta,
            next_seq,
            seq_reserved,
            counters,
            versions,
            listener,
            max_events_per_job,
            counts: HashMap::new(),
            counted_steps: HashSet::new(),
        }
    }

    /// Counts the stored events of a step (or of a manager's own events, step 0) by job,
    /// once per daemon life.
    fn count_step(&mut self, mgr: u64, step: u32) -> Result<()> {
        if !self.counted_steps.insert((mgr, step)) {
            return Ok(());
        }
        let counts = &mut self.counts;
        for kv in self.events.range(block_key(mgr, step, 0)..=block_key(mgr, step, u64::MAX)) {
            let (_, v) = kv?;
            block::count_by_child(&v, &mut |child| *counts.entry((mgr, step, child)).or_insert(0) += 1);
        }
        Ok(())
    }

    /// Bounds a job's stored events: when it holds more than `max_events_per_job`, its
    /// oldest events are dropped down to 90% of the limit (so that a job writing without
    /// end rewrites blocks once per tenth of the limit, not on every batch) and a warning
    /// event says how many. Returns the marker event's seq.
    fn trim(&mut self, (mgr, step, child): (u64, u32, u32)) -> Result<Option<u64>> {
        let max = self.max_events_per_job;
        let count = self.counts.get(&(mgr, step, child)).copied().unwrap_or(0);
        if max == 0 || count <= max {
            return Ok(None);
        }
        let keep = max.saturating_sub(1 + max / 10);
        let mut left = count - keep;
        let mut batch = sled::Batch::default();
        for kv in self.events.range(block_key(mgr, step, 0)..=block_key(mgr, step, u64::MAX)) {
            if left == 0 {
                break;
            }
            let (k, v) = kv?;
            let (rest, n) = block::drop_oldest(&v, child, left);
            if n == 0 {
                continue;
            }
            left -= n;
            if rest.is_empty() {
                batch.remove(k);
            } else {
                batch.insert(k, rest);
            }
        }
        let dropped = count - keep - left;
        crate::metrics::METRICS.events_dropped.inc_by(dropped);
        let seq = self.next_seq;
        self.reserve_seq(seq + 1)?;
        self.next_seq += 1;
        let originator = match (step, child) {
            (0, _) => Originator::Manager,
            (_, 0) => Originator::Step,
            _ => Originator::Worker,
        };
        let mut buf = Vec::new();
        block::encode_into(
            &mut buf,
            seq,
            crate::time::now_ms(),
            Level::Warn,
            originator,
            child,
            &format!("{dropped} older events of this job were dropped (storage.max_events_per_job = {max})"),
        );
        batch.insert(&block_key(mgr, step, seq)[..], buf);
        self.events.apply_batch(batch)?;
        self.counts.insert((mgr, step, child), count - dropped + 1);
        Ok(Some(seq))
    }

    /// Forgets the counts and versions of a manager that is finished or gone.
    fn forget(&mut self, mgr: u64) {
        self.counts.retain(|k, _| k.0 != mgr);
        self.counted_steps.retain(|k| k.0 != mgr);
        self.versions.lock().expect("versions").forget(mgr, self.next_seq - 1);
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<WriteOp>) {
        while let Some(first) = rx.blocking_recv() {
            let events_in = |op: &WriteOp| if let WriteOp::Events(e) = op { e.len() } else { 0 };
            let mut n_events = events_in(&first);
            let mut ops = vec![first];
            while n_events < MAX_BATCH_EVENTS {
                match rx.try_recv() {
                    Ok(op) => {
                        n_events += events_in(&op);
                        ops.push(op);
                    }
                    Err(_) => break,
                }
            }
            if let Err(e) = self.commit(ops) {
                // A failed write is not retried blindly: the daemon logs it loudly; the
                // waiting syncs see their channel closed and report the store as failed.
                tracing::error!(error = %e, "event log write failed");
            }
        }
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
    }

    fn reserve_seq(&mut self, upto: u64) -> Result<()> {
        if upto > self.seq_reserved {
            let ceiling = upto.max(self.seq_reserved) + SEQ_RESERVE;
            self.meta.insert("seq", &ceiling.to_be_bytes())?;
            // Durable before any seq under it is: a crash can then never reuse one.
            self.meta.flush()?;
            self.seq_reserved = ceiling;
        }
        Ok(())
    }

    fn commit(&mut self, ops: Vec<WriteOp>) -> Result<()> {
        let started = std::time::Instant::now();
        let wants_events = self.listener.wants_events();
        let total: usize = ops.iter().map(|o| if let WriteOp::Events(e) = o { e.len() } else { 0 }).sum();
        self.reserve_seq(self.next_seq + total as u64)?;

        let mut blocks: HashMap<(u64, u32), OpenBlock> = HashMap::new();
        let mut event_batch = sled::Batch::default();
        let mut scopes: HashMap<JobPath, u64> = HashMap::new();
        let mut pushed: Vec<(u64, NewEvent)> = Vec::new();
        let mut managers: HashMap<u64, Box<ManagerRecord>> = HashMap::new();
        let mut children: HashMap<JobPath, ChildRecord> = HashMap::new();
        let mut deletes = Vec::new();
        let mut syncs = Vec::new();
        let mut touched: HashSet<(u64, u32, u32)> = HashSet::new();

        for op in ops {
            match op {
                WriteOp::Events(evs) => {
                    for e in evs {
                        let seq = self.next_seq;
                        self.next_seq += 1;
                        let p = e.path;
                        if self.max_events_per_job > 0 {
                            self.count_step(p.manager, p.step)?;
                            *self.counts.entry((p.manager, p.step, p.child)).or_insert(0) += 1;
                            touched.insert((p.manager, p.step, p.child));
                        }
                        let b = blocks.entry((p.manager, p.step)).or_insert_with(|| OpenBlock {
                            first_seq: seq,
                            buf: Vec::with_capacity(16 * 1024),
                            n: 0,
                        });
                        if b.n >= BLOCK_EVENTS || b.buf.len() >= BLOCK_BYTES {
                            let full = std::mem::replace(
                                b,
                                OpenBlock { first_seq: seq, buf: Vec::with_capacity(16 * 1024), n: 0 },
                            );
                            event_batch.insert(&block_key(p.manager, p.step, full.first_seq)[..], full.buf);
                        }
                        block::encode_into(&mut b.buf, seq, e.ts_ms, e.level, e.originator, p.child, &e.message);
                        b.n += 1;
                        let scope = if p.step == 0 { p.manager_path() } else { JobPath::step(p.manager, p.step) };
                        scopes.insert(scope, seq);
                        if wants_events {
                            pushed.push((seq, e));
                        }
                    }
                }
                WriteOp::PutManager(m) => {
                    managers.insert(m.num, m);
                }
                WriteOp::PutChildren(cs) => {
                    for c in cs {
                        children.insert(c.path, c);
                    }
                }
                WriteOp::DeleteManager(mgr, reply) => deletes.push((mgr, reply)),
                WriteOp::Sync(reply) => syncs.push(reply),
            }
        }
        for ((mgr, step), b) in blocks {
            event_batch.insert(&block_key(mgr, step, b.first_seq)[..], b.buf);
        }

        // Events first: a reader that sees a job's new status sees its events too.
        self.events.apply_batch(event_batch)?;
        let mut trimmed = Ok(());
        for job in touched {
            let (mgr, step, _) = job;
            let scope = if step == 0 { JobPath::manager(mgr) } else { JobPath::step(mgr, step) };
            match self.trim(job) {
                Ok(Some(seq)) => {
                    scopes.insert(scope, seq);
                }
                Ok(None) => {}
                Err(e) => {
                    // Part of it may be applied: the scope counts as changed either way.
                    scopes.entry(scope).or_insert(0);
                    trimmed = Err(e);
                    break;
                }
            }
        }
        // Readable now (also when a trim failed halfway): move the scopes' versions before
        // anyone hears of the commit.
        if !scopes.is_empty() {
            let mut v = self.versions.lock().expect("versions");
            for scope in scopes.keys() {
                v.changed(*scope, self.next_seq - 1);
            }
        }
        trimmed?;
        // Stats move by the difference between what was stored and what is stored now.
        let mut diffs: Vec<(Option<JobStatus>, Option<JobStatus>)> = Vec::new();
        let mut child_batch = sled::Batch::default();
        for (p, c) in &children {
            let key = child_key(*p);
            let old = self.children.get(key)?.and_then(|v| serde_json::from_slice::<ChildRecord>(&v).ok());
            diffs.push((old.map(|o| o.status), Some(c.status)));
            let v = serde_json::to_vec(c).expect("child record serialises");
            child_batch.insert(&key[..], v);
        }
        self.children.apply_batch(child_batch)?;
        let mut mgr_batch = sled::Batch::default();
        for (num, m) in &managers {
            if m.status.is_terminal() {
                self.forget(*num);
            }
            let key = manager_key(*num);
            let old = self.managers.get(key)?.and_then(|v| serde_json::from_slice::<ManagerRecord>(&v).ok());
            let old: Vec<JobStatus> = old.map(|o| super::manager_statuses(&o).collect()).unwrap_or_default();
            let new: Vec<JobStatus> = super::manager_statuses(m).collect();
            for i in 0..old.len().max(new.len()) {
                diffs.push((old.get(i).copied(), new.get(i).copied()));
            }
            let v = serde_json::to_vec(m).expect("manager record serialises");
            mgr_batch.insert(&key[..], v);
        }
        self.managers.apply_batch(mgr_batch)?;
        if !scopes.is_empty() || !managers.is_empty() || !children.is_empty() || !syncs.is_empty() {
            self.db.flush()?;
        }
        if total > 0 {
            let m = &crate::metrics::METRICS;
            m.events_ingested.inc_by(total as u64);
            m.ingest_batch_events.observe(total as f64);
            m.ingest_batch_seconds.observe(started.elapsed().as_secs_f64());
        }
        if !diffs.is_empty() {
            let stats = {
                let mut c = self.counters.lock().expect("counters");
                for (old, new) in diffs {
                    c.replace(old, new);
                }
                c.stats
            };
            self.listener.stats_changed(stats);
        }

        if !scopes.is_empty() {
            let scopes: Vec<(JobPath, u64)> = scopes.into_iter().collect();
            self.listener.committed(&Committed { scopes: &scopes, last_seq: self.next_seq - 1, events: &pushed });
        }

        for (mgr, reply) in deletes {
            self.forget(mgr);
            let _ = reply.send(self.delete_manager(mgr));
        }
        for s in syncs {
            let _ = s.send(());
        }
        Ok(())
    }

    /// Removes a manager, its children and its events; returns (jobs, events) removed.
    fn delete_manager(&mut self, mgr: u64) -> Result<(u64, u64)> {
        let Some(v) = self.managers.get(manager_key(mgr))? else {
            return Ok((0, 0));
        };
        let m: ManagerRecord = serde_json::from_slice(&v).map_err(|e| super::StoreError::Corrupt(e.to_string()))?;
        let mut gone: Vec<JobStatus> = super::manager_statuses(&m).collect();
        let mut batch = sled::Batch::default();
        for kv in self.children.scan_prefix(manager_key(mgr)) {
            let (k, v) = kv?;
            if let Ok(c) = serde_json::from_slice::<ChildRecord>(&v) {
                gone.push(c.status);
            }
            batch.remove(k);
        }
        self.children.apply_batch(batch)?;
        let mut batch = sled::Batch::default();
        let mut n_events = 0;
        for kv in self.events.scan_prefix(manager_key(mgr)) {
            let (k, v) = kv?;
            n_events += block::count(&v);
            batch.remove(k);
        }
        self.events.apply_batch(batch)?;
        self.managers.remove(manager_key(mgr))?;
        self.db.flush()?;
        let stats = {
            let mut c = self.counters.lock().expect("counters");
            for st in &gone {
                c.replace(Some(*st), None);
            }
            c.stats
        };
        self.listener.stats_changed(stats);
        Ok((gone.len() as u64, n_events))
    }
}
