//! The one writer: drains whatever is queued, gives events their seq, packs them into
//! blocks per (manager, step), applies all trees' batches, flushes once, then tells the
//! listener what is now committed and acknowledges waiting `sync`s.
//!
//! It runs on its own OS thread because every sled call here blocks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use quaero_shared::{JobPath, Level, Originator};
use tokio::sync::{mpsc, oneshot};

use super::index::{Counters, Delta};
use super::keys::{block_key, child_key, manager_key};
use super::{BLOCK_EVENTS, DeleteReply, SEQ_RESERVE, WriteOp};
use crate::store::block;
use crate::store::versions::Versions;
use crate::store::{ChildRecord, CommitListener, Committed, ManagerRecord, NewEvent, Result, StoreError};

/// Events per batch at most: bounds the writer's memory and the latency of a sync queued
/// behind a burst.
const MAX_BATCH_EVENTS: usize = 64 * 1024;
/// Bytes of one block at most (a few huge lines must not make a multi-megabyte value).
const BLOCK_BYTES: usize = 256 * 1024;

/// What the writer is made from: the trees it writes, where seqs stand, and the state it
/// shares with the store's readers.
pub(super) struct WriterSetup {
    pub db: sled::Db,
    pub events: sled::Tree,
    pub managers: sled::Tree,
    pub children: sled::Tree,
    pub meta: sled::Tree,
    /// The `seq` reservation read at open.
    pub seq_reserved: u64,
    pub counters: Arc<Mutex<Counters>>,
    pub versions: Arc<Mutex<Versions>>,
    pub listener: Arc<dyn CommitListener>,
    /// `[storage] max_events_per_job` (0 = no limit).
    pub max_events_per_job: u64,
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

impl OpenBlock {
    fn new(first_seq: u64) -> Self {
        OpenBlock { first_seq, buf: Vec::with_capacity(16 * 1024), n: 0 }
    }
}

/// One batch of queued operations, sorted by kind as [`Writer::commit`] applies them.
#[derive(Default)]
struct Batch {
    /// Blocks being filled, per (manager, step), and blocks already sealed.
    blocks: HashMap<(u64, u32), OpenBlock>,
    sealed: sled::Batch,
    /// Each scope that got events, with the highest seq it got.
    scopes: HashMap<JobPath, u64>,
    /// The events with their seq, when the listener wants them (push mode).
    pushed: Vec<(u64, NewEvent)>,
    managers: HashMap<u64, Box<ManagerRecord>>,
    children: HashMap<JobPath, ChildRecord>,
    deletes: Vec<(u64, DeleteReply)>,
    syncs: Vec<oneshot::Sender<()>>,
    /// Jobs that got events, to bound (`max_events_per_job`).
    touched: HashSet<(u64, u32, u32)>,
}

impl Writer {
    pub(super) fn new(s: WriterSetup) -> Self {
        Writer {
            db: s.db,
            events: s.events,
            managers: s.managers,
            children: s.children,
            meta: s.meta,
            // Everything up to the reservation may have been handed out before a crash.
            next_seq: s.seq_reserved + 1,
            seq_reserved: s.seq_reserved,
            counters: s.counters,
            versions: s.versions,
            listener: s.listener,
            max_events_per_job: s.max_events_per_job,
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

    /// Applies one batch of queued operations: events first (a reader that sees a job's
    /// new status sees its events too), then child and manager records, one flush, and
    /// only then tells the listener and answers deletes and syncs.
    fn commit(&mut self, ops: Vec<WriteOp>) -> Result<()> {
        let started = std::time::Instant::now();
        let total: usize = ops.iter().map(|o| if let WriteOp::Events(e) = o { e.len() } else { 0 }).sum();
        self.reserve_seq(self.next_seq + total as u64)?;

        let mut b = Batch::default();
        for op in ops {
            match op {
                WriteOp::Events(evs) => self.pack(&mut b, evs)?,
                WriteOp::PutManager(m) => {
                    b.managers.insert(m.num, m);
                }
                WriteOp::PutChildren(cs) => b.children.extend(cs.into_iter().map(|c| (c.path, c))),
                WriteOp::DeleteManager(mgr, reply) => b.deletes.push((mgr, reply)),
                WriteOp::Sync(reply) => b.syncs.push(reply),
            }
        }
        self.apply_events(&mut b)?;
        let moved = self.apply_records(&b)?;
        if !b.scopes.is_empty() || !b.managers.is_empty() || !b.children.is_empty() || !b.syncs.is_empty() {
            self.db.flush()?;
        }
        if total > 0 {
            let m = &crate::metrics::METRICS;
            m.events_ingested.inc_by(total as u64);
            m.ingest_batch_events.observe(total as f64);
            m.ingest_batch_seconds.observe(started.elapsed().as_secs_f64());
        }
        self.count(moved);
        self.announce(b);
        Ok(())
    }

    /// Gives events their seq and packs them into blocks per (manager, step); a block
    /// that is full is sealed into the batch.
    fn pack(&mut self, b: &mut Batch, evs: Vec<NewEvent>) -> Result<()> {
        let wants_events = self.listener.wants_events();
        for e in evs {
            let seq = self.next_seq;
            self.next_seq += 1;
            let p = e.path;
            if self.max_events_per_job > 0 {
                self.count_step(p.manager, p.step)?;
                *self.counts.entry((p.manager, p.step, p.child)).or_insert(0) += 1;
                b.touched.insert((p.manager, p.step, p.child));
            }
            let open = b.blocks.entry((p.manager, p.step)).or_insert_with(|| OpenBlock::new(seq));
            if open.n >= BLOCK_EVENTS || open.buf.len() >= BLOCK_BYTES {
                let full = std::mem::replace(open, OpenBlock::new(seq));
                b.sealed.insert(&block_key(p.manager, p.step, full.first_seq)[..], full.buf);
            }
            block::encode_into(&mut open.buf, seq, e.ts_ms, e.level, e.originator, p.child, &e.message);
            open.n += 1;
            let scope = if p.step == 0 { p.manager_path() } else { JobPath::step(p.manager, p.step) };
            b.scopes.insert(scope, seq);
            if wants_events {
                b.pushed.push((seq, e));
            }
        }
        Ok(())
    }

    /// Writes the batch's blocks, bounds the jobs that grew, and moves the versions of the
    /// scopes that changed (before anyone hears of the commit).
    fn apply_events(&mut self, b: &mut Batch) -> Result<()> {
        let mut batch = std::mem::take(&mut b.sealed);
        for ((mgr, step), open) in b.blocks.drain() {
            batch.insert(&block_key(mgr, step, open.first_seq)[..], open.buf);
        }
        self.events.apply_batch(batch)?;
        let mut trimmed = Ok(());
        for job in std::mem::take(&mut b.touched) {
            let (mgr, step, _) = job;
            let scope = if step == 0 { JobPath::manager(mgr) } else { JobPath::step(mgr, step) };
            match self.trim(job) {
                Ok(Some(seq)) => {
                    b.scopes.insert(scope, seq);
                }
                Ok(None) => {}
                Err(e) => {
                    // Part of it may be applied: the scope counts as changed either way.
                    b.scopes.entry(scope).or_insert(0);
                    trimmed = Err(e);
                    break;
                }
            }
        }
        // Readable now (also when a trim failed halfway).
        if !b.scopes.is_empty() {
            let mut v = self.versions.lock().expect("versions");
            for scope in b.scopes.keys() {
                v.changed(*scope, self.next_seq - 1);
            }
        }
        trimmed
    }

    /// Writes child and manager records with their index keys and the counts they move
    /// (each tree in one batch); returns the counts' new values (children's, managers').
    /// A finished manager's counts and versions are forgotten.
    fn apply_records(&mut self, b: &Batch) -> Result<Moved> {
        let mut moved = Moved::default();
        if !b.children.is_empty() {
            let mut delta = Delta::default();
            let mut batch = sled::Batch::default();
            for (p, c) in &b.children {
                let key = child_key(*p);
                let old = self.children.get(key)?.and_then(|v| serde_json::from_slice::<ChildRecord>(&v).ok());
                delta.child(old.as_ref(), Some(c));
                batch.insert(&key[..], serde_json::to_vec(c).expect("child record serialises"));
            }
            let set = delta.write(&self.counters.lock().expect("counters").children, &mut batch);
            self.children.apply_batch(batch)?;
            moved.set(&self.counters, Tree::Children, set);
        }
        if !b.managers.is_empty() {
            let mut delta = Delta::default();
            let mut batch = sled::Batch::default();
            for (num, m) in &b.managers {
                if m.status.is_terminal() {
                    self.forget(*num);
                }
                let key = manager_key(*num);
                let old = self.managers.get(key)?.and_then(|v| serde_json::from_slice::<ManagerRecord>(&v).ok());
                delta.manager(old.as_ref(), Some(m));
                batch.insert(&key[..], serde_json::to_vec(m).expect("manager record serialises"));
            }
            let set = delta.write(&self.counters.lock().expect("counters").managers, &mut batch);
            self.managers.apply_batch(batch)?;
            moved.set(&self.counters, Tree::Managers, set);
        }
        Ok(moved)
    }

    /// Tells the listener the job counts changed, when a commit moved them.
    fn count(&mut self, moved: Moved) {
        if !moved.0 {
            return;
        }
        let stats = self.counters.lock().expect("counters").stats();
        self.listener.stats_changed(stats);
    }

    /// Once durable: tells the listener what was committed, then runs the deletes and
    /// answers the syncs queued in this batch.
    fn announce(&mut self, b: Batch) {
        if !b.scopes.is_empty() {
            let scopes: Vec<(JobPath, u64)> = b.scopes.into_iter().collect();
            self.listener.committed(&Committed { scopes: &scopes, last_seq: self.next_seq - 1, events: &b.pushed });
        }
        // The deletes of a batch share one flush (a bulk delete sends many at once).
        let done: Vec<_> = b
            .deletes
            .into_iter()
            .map(|(mgr, reply)| {
                self.forget(mgr);
                (self.delete_manager(mgr), reply)
            })
            .collect();
        let flushed = if done.is_empty() { Ok(0) } else { self.db.flush() };
        for (result, reply) in done {
            let result = match (&flushed, result) {
                (Err(e), Ok(_)) => Err(StoreError::Backend(e.to_string().into())),
                (_, r) => r,
            };
            let _ = reply.send(result);
        }
        for s in b.syncs {
            let _ = s.send(());
        }
    }

    /// Removes a manager, its children and its events with their index keys; returns
    /// (jobs, events) removed.
    fn delete_manager(&mut self, mgr: u64) -> Result<(u64, u64)> {
        let Some(v) = self.managers.get(manager_key(mgr))? else {
            return Ok((0, 0));
        };
        let m: ManagerRecord = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut jobs = crate::store::counters::manager_statuses(&m).count() as u64;
        let mut delta = Delta::default();
        let mut batch = sled::Batch::default();
        for kv in self.children.scan_prefix(manager_key(mgr)) {
            let (k, v) = kv?;
            if let Ok(c) = serde_json::from_slice::<ChildRecord>(&v) {
                delta.child(Some(&c), None);
                jobs += 1;
            }
            batch.remove(k);
        }
        let mut moved = Moved::default();
        let set = delta.write(&self.counters.lock().expect("counters").children, &mut batch);
        self.children.apply_batch(batch)?;
        moved.set(&self.counters, Tree::Children, set);
        let mut batch = sled::Batch::default();
        let mut n_events = 0;
        for kv in self.events.scan_prefix(manager_key(mgr)) {
            let (k, v) = kv?;
            n_events += block::count(&v);
            batch.remove(k);
        }
        self.events.apply_batch(batch)?;
        let mut delta = Delta::default();
        delta.manager(Some(&m), None);
        let mut batch = sled::Batch::default();
        batch.remove(&manager_key(mgr)[..]);
        let set = delta.write(&self.counters.lock().expect("counters").managers, &mut batch);
        self.managers.apply_batch(batch)?;
        moved.set(&self.counters, Tree::Managers, set);
        self.count(moved);
        Ok((jobs, n_events))
    }
}

enum Tree {
    Children,
    Managers,
}

/// Whether a commit moved any count. The counts in memory are set as soon as the batch
/// that stored them is applied: a write failing later must not leave memory behind the
/// disk (the next batch computes its counts from memory).
#[derive(Default)]
struct Moved(bool);

impl Moved {
    fn set(&mut self, counters: &Mutex<Counters>, tree: Tree, set: Vec<(Vec<u8>, u64)>) {
        if set.is_empty() {
            return;
        }
        self.0 = true;
        let mut c = counters.lock().expect("counters");
        let counts = match tree {
            Tree::Children => &mut c.children,
            Tree::Managers => &mut c.managers,
        };
        counts.by_key.extend(set);
    }
}
