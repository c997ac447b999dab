//! Everything that touches sled. Nothing else in the daemon does.
//!
//! Trees (one per kind of record, never one per job):
//! - `managers`: `mgr:u64be` → [`ManagerRecord`] JSON (its steps are embedded).
//! - `children`: `mgr:u64be step:u32be child:u32be` → [`ChildRecord`] JSON.
//! - `events`: `mgr:u64be step:u32be first_seq:u64be` → a packed block of events
//!   ([`block`]). Step 0 holds manager-level events. Steps run one after another, so a
//!   step's events are a seq range of its manager's: the manager scope is a merge of its
//!   step-0 blocks with the chain of its steps' blocks, and no event is written twice.
//! - `meta`: counters reserved ahead (`seq`, `manager`), so a number is never reused, also
//!   after `kill -9`.
//! - `definitions`: definitions created over the API.
//!
//! All writes go through one writer thread ([`writer`]) that batches whatever is queued,
//! applies it and flushes; a job's status becomes visible as terminal only after that
//! job's events were applied before it (and the engine waits for [`Store::sync`]).

pub mod block;
#[cfg(test)]
mod proptests;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use quaero_shared::{ChildCounts, JobDefinition, JobPath, JobStatus, Level, Order, Stats, StepType};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use block::RawEvent;
pub use writer::{CommitListener, Committed};

/// Events of one block at most; a reader decodes at most two blocks to serve a small read.
pub const BLOCK_EVENTS: usize = 512;
/// Written once when a data directory is created; checked at every open.
const FORMAT_KEY: &str = "format";
const FORMAT: &str = "quaero-store-1";
/// A random id made when a data directory is created: marks the processes its daemons
/// start (see [`Store::instance`]).
const INSTANCE_KEY: &str = "instance";
/// How far ahead counters are reserved; one durable write per this many numbers.
const SEQ_RESERVE: u64 = 100_000;
const MANAGER_RESERVE: u64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("the store's writer has stopped")]
    Closed,
    #[error("{0}")]
    Conflict(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A manager and its steps, as stored. Times are ms since the epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManagerRecord {
    pub num: u64,
    pub definition_id: String,
    pub name: String,
    pub status: JobStatus,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub error: Option<String>,
    pub steps: Vec<StepRecord>,
    /// The definition as it was when the run started, so a rerun repeats it exactly.
    pub definition: JobDefinition,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub step_type: StepType,
    pub description: String,
    pub status: JobStatus,
    pub child_counts: ChildCounts,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildRecord {
    pub path: JobPath,
    pub name: String,
    pub status: JobStatus,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub error: Option<String>,
}

/// An event as a producer hands it to the store; the writer gives it its seq.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub path: JobPath,
    pub level: Level,
    pub originator: quaero_shared::Originator,
    pub ts_ms: i64,
    pub message: String,
}

/// A read of a scope's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LogQuery {
    pub path: JobPath,
    pub limit: usize,
    pub order: Order,
    pub after: Option<u64>,
    pub min_level: Option<Level>,
}

#[derive(Debug, Clone, Default)]
pub struct LogPage {
    pub events: Vec<RawEvent>,
    /// Highest seq of the scope at the time of the read (0 if none).
    pub last_seq: u64,
}

pub(crate) fn manager_key(mgr: u64) -> [u8; 8] {
    mgr.to_be_bytes()
}

pub(crate) fn scope_key(mgr: u64, step: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&mgr.to_be_bytes());
    k[8..].copy_from_slice(&step.to_be_bytes());
    k
}

pub(crate) fn block_key(mgr: u64, step: u32, first_seq: u64) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..12].copy_from_slice(&scope_key(mgr, step));
    k[12..].copy_from_slice(&first_seq.to_be_bytes());
    k
}

pub(crate) fn child_key(p: JobPath) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..12].copy_from_slice(&scope_key(p.manager, p.step));
    k[12..].copy_from_slice(&p.child.to_be_bytes());
    k
}

/// When each scope's events last changed, for caches of read results: per live manager,
/// per step (0: the manager's own events), the highest seq handed out by the commit that
/// last added (or trimmed) events of that step, and the same for any scope of the manager.
/// The writer updates it after applying a batch and before announcing it.
///
/// Finished and deleted managers are forgotten, so it holds live jobs only: a scope it has
/// no entry for reads as `floor`, the writer's position when a manager was last forgotten,
/// which is at or above that scope's last change. (A page kept from before a forgotten
/// manager's last change has a lower version and is read again; one read after it is
/// served while nothing changes, and a finished job's events do not change.)
#[derive(Debug, Default)]
pub(crate) struct Versions {
    managers: HashMap<u64, ManagerVersions>,
    floor: u64,
}

#[derive(Debug, Default)]
struct ManagerVersions {
    any: u64,
    steps: HashMap<u32, u64>,
}

impl Versions {
    fn changed(&mut self, scope: JobPath, version: u64) {
        let m = self.managers.entry(scope.manager).or_default();
        m.any = version;
        m.steps.insert(scope.step, version);
    }

    /// `now`: the highest seq handed out so far.
    fn forget(&mut self, mgr: u64, now: u64) {
        self.managers.remove(&mgr);
        self.floor = self.floor.max(now);
    }

    fn get(&self, path: JobPath) -> u64 {
        let Some(m) = self.managers.get(&path.manager) else { return self.floor };
        if path.step == 0 { m.any } else { m.steps.get(&path.step).copied().unwrap_or(self.floor) }
    }
}

/// 128 random bits as hex, from the kernel.
fn random_id() -> String {
    let mut buf = [0u8; 16];
    // SAFETY: getrandom(2) writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        // No getrandom: time and pid are unique enough for a marker that is not a secret.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        buf[..8].copy_from_slice(&(t.as_nanos() as u64).to_le_bytes());
        buf[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Status counts of every job, kept by the writer as it commits records (new status in,
/// previously stored status out), so stats are O(1) to read however many jobs exist.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub stats: Stats,
}

impl Counters {
    fn replace(&mut self, old: Option<JobStatus>, new: Option<JobStatus>) {
        if old == new {
            return;
        }
        if let Some(o) = old {
            self.stats.add(o, -1);
        }
        if let Some(n) = new {
            self.stats.add(n, 1);
        }
    }
}

/// Statuses of a manager and its steps, in order.
fn manager_statuses(m: &ManagerRecord) -> impl Iterator<Item = JobStatus> + '_ {
    std::iter::once(m.status).chain(m.steps.iter().map(|s| s.status))
}

pub(crate) enum WriteOp {
    Events(Vec<NewEvent>),
    PutManager(Box<ManagerRecord>),
    PutChildren(Vec<ChildRecord>),
    DeleteManager(u64, oneshot::Sender<Result<(u64, u64)>>),
    /// Acknowledged once everything queued before it is applied and flushed.
    Sync(oneshot::Sender<()>),
}

/// Handle to the store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    managers: sled::Tree,
    children: sled::Tree,
    events: sled::Tree,
    meta: sled::Tree,
    definitions: sled::Tree,
    /// Bounded so that producers feel back-pressure when ingest outruns the disk, instead
    /// of queueing without limit in memory.
    tx: mpsc::Sender<WriteOp>,
    counters: Arc<Mutex<Counters>>,
    versions: Arc<Mutex<Versions>>,
    /// Manager numbers: next to hand out and the reserved ceiling. A std Mutex: held for a
    /// few instructions, and once per MANAGER_RESERVE for one durable write.
    managers_alloc: Mutex<(u64, u64)>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    instance: String,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "cannot open the data directory {path}: {source} (nothing was deleted; start with --recover to move it aside and begin empty)"
    )]
    Sled {
        path: String,
        #[source]
        source: sled::Error,
    },
    #[error(
        "data directory {path} holds a record that cannot be read ({detail}) (nothing was deleted; start with --recover to move it aside and begin empty)"
    )]
    Corrupt { path: String, detail: String },
    /// Another process holds the directory's lock: nothing is wrong with it, and
    /// `--recover` must never move it aside.
    #[error(
        "the data directory {path} is in use by another process (another quaerod?); stop that one first, or give this one another directory with --data"
    )]
    InUse { path: String },
}

/// Whether another process holds the lock sled takes on `<path>/db` (an exclusive
/// `flock`). The probe's own lock goes with its descriptor when this returns.
fn locked_by_another(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::File::open(path.join("db")) else { return false };
    // SAFETY: flock(2) on a descriptor `file` owns; no memory involved.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
}

/// Store settings from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// `[storage] max_events_per_job`: a job (a manager's own events, a step, a child)
    /// keeps at most this many events; 0 = no limit.
    pub max_events_per_job: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { max_events_per_job: 100_000 }
    }
}

impl Store {
    /// Opens (or creates) the store at `path` with the default options. `listener` hears
    /// of every commit.
    pub fn open(path: &Path, listener: Arc<dyn CommitListener>) -> Result<Store, OpenError> {
        Store::open_with(path, listener, StoreOptions::default())
    }

    /// Opens (or creates) the store at `path`.
    pub fn open_with(path: &Path, listener: Arc<dyn CommitListener>, opts: StoreOptions) -> Result<Store, OpenError> {
        let shown = path.display().to_string();
        let sled_err = |source: sled::Error| match &source {
            // sled's own lock check, should another process take the lock after ours.
            sled::Error::Io(e)
                if e.to_string().starts_with("could not acquire lock") && e.to_string().contains("WouldBlock") =>
            {
                OpenError::InUse { path: shown.clone() }
            }
            _ => OpenError::Sled { path: shown.clone(), source },
        };
        if locked_by_another(path) {
            return Err(OpenError::InUse { path: shown });
        }
        // sled treats a damaged log as the end of the log and would open it as (partly)
        // empty; a directory whose sled file exists but that lacks our format marker is
        // reported instead of silently started over.
        let had_db = std::fs::metadata(path.join("db")).is_ok_and(|m| m.len() > 0);
        let db = sled::Config::new()
            .path(path)
            // The page cache dominates RSS; 64 MiB keeps recent blocks hot and the daemon
            // small.
            .cache_capacity(64 * 1024 * 1024)
            // We flush after every batch ourselves.
            .flush_every_ms(None)
            .open()
            .map_err(sled_err)?;
        let tree = |name: &str| db.open_tree(name);
        let managers = tree("managers").map_err(sled_err)?;
        let children = tree("children").map_err(sled_err)?;
        let events = tree("events").map_err(sled_err)?;
        let meta = tree("meta").map_err(sled_err)?;
        let definitions = tree("definitions").map_err(sled_err)?;

        let read_counter = |key: &str| -> Result<u64, OpenError> {
            match meta.get(key).map_err(sled_err)? {
                None => Ok(0),
                Some(v) => v
                    .as_ref()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| OpenError::Corrupt { path: shown.clone(), detail: format!("meta/{key}") }),
            }
        };
        match meta.get(FORMAT_KEY).map_err(sled_err)? {
            Some(v) if v.as_ref() == FORMAT.as_bytes() => {}
            Some(v) => {
                return Err(OpenError::Corrupt {
                    path: shown.clone(),
                    detail: format!("unknown store format {:?}", String::from_utf8_lossy(&v)),
                });
            }
            None if had_db => {
                return Err(OpenError::Corrupt {
                    path: shown.clone(),
                    detail: "its sled file has no Quaero format marker: it is damaged or not a Quaero data directory"
                        .into(),
                });
            }
            None => {
                meta.insert(FORMAT_KEY, FORMAT.as_bytes()).map_err(sled_err)?;
                db.flush().map_err(sled_err)?;
            }
        }
        let instance = match meta.get(INSTANCE_KEY).map_err(sled_err)? {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => {
                let id = random_id();
                meta.insert(INSTANCE_KEY, id.as_bytes()).map_err(sled_err)?;
                db.flush().map_err(sled_err)?;
                id
            }
        };
        // Everything below a reservation may have been handed out before a crash: start
        // above it.
        let seq_reserved = read_counter("seq")?;
        let mgr_reserved = read_counter("manager")?;

        let counters = Arc::new(Mutex::new(Counters::default()));
        {
            let mut c = counters.lock().expect("counters");
            for item in managers.iter() {
                let (_, v) = item.map_err(sled_err)?;
                let m: ManagerRecord = serde_json::from_slice(&v)
                    .map_err(|e| OpenError::Corrupt { path: shown.clone(), detail: format!("manager record: {e}") })?;
                for st in manager_statuses(&m) {
                    c.replace(None, Some(st));
                }
            }
            for item in children.iter() {
                let (_, v) = item.map_err(sled_err)?;
                let ch: ChildRecord = serde_json::from_slice(&v)
                    .map_err(|e| OpenError::Corrupt { path: shown.clone(), detail: format!("child record: {e}") })?;
                c.replace(None, Some(ch.status));
            }
        }

        listener.stats_changed(counters.lock().expect("counters").stats);
        let versions = Arc::new(Mutex::new(Versions::default()));
        let (tx, rx) = mpsc::channel(256);
        let writer = writer::Writer::new(
            db.clone(),
            events.clone(),
            managers.clone(),
            children.clone(),
            meta.clone(),
            seq_reserved + 1,
            seq_reserved,
            counters.clone(),
            versions.clone(),
            listener,
            opts.max_events_per_job,
        );
        let handle = std::thread::Builder::new()
            .name("quaero-writer".into())
            .spawn(move || writer.run(rx))
            .expect("spawn writer thread");

        Ok(Store {
            inner: Arc::new(Inner {
                db,
                managers,
                children,
                events,
                meta,
                definitions,
                tx,
                counters,
                versions,
                managers_alloc: Mutex::new((mgr_reserved + 1, mgr_reserved)),
                instance,
                writer: Mutex::new(Some(handle)),
            }),
        })
    }

    /// This data directory's id (32 hex digits, made when it was created). Every process a
    /// daemon on it starts carries it in `QUAERO_INSTANCE`, so that the next daemon on the
    /// same directory can find what a crashed one left running.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// A manager number never handed out before, also across crashes.
    pub fn alloc_manager(&self) -> Result<u64> {
        let mut a = self.inner.managers_alloc.lock().expect("alloc");
        if a.0 > a.1 {
            let ceiling = a.1 + MANAGER_RESERVE;
            self.inner.meta.insert("manager", &ceiling.to_be_bytes())?;
            self.inner.meta.flush()?;
            a.1 = ceiling;
        }
        let n = a.0;
        a.0 += 1;
        Ok(n)
    }

    async fn send(&self, op: WriteOp) -> Result<()> {
        self.inner.tx.send(op).await.map_err(|_| StoreError::Closed)
    }

    pub async fn append(&self, events: Vec<NewEvent>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.send(WriteOp::Events(events)).await
    }

    pub async fn put_manager(&self, rec: ManagerRecord) -> Result<()> {
        self.send(WriteOp::PutManager(Box::new(rec))).await
    }

    pub async fn put_children(&self, recs: Vec<ChildRecord>) -> Result<()> {
        if recs.is_empty() {
            return Ok(());
        }
        self.send(WriteOp::PutChildren(recs)).await
    }

    /// Waits until everything queued before this call is applied and on disk.
    pub async fn sync(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::Sync(tx)).await?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// Deletes a manager with its children and events; returns (jobs, events) deleted.
    pub async fn delete_manager(&self, mgr: u64) -> Result<(u64, u64)> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::DeleteManager(mgr, tx)).await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub fn stats(&self) -> Stats {
        self.inner.counters.lock().expect("counters").stats
    }

    pub fn get_manager(&self, mgr: u64) -> Result<Option<ManagerRecord>> {
        match self.inner.managers.get(manager_key(mgr))? {
            None => Ok(None),
            Some(v) => {
                serde_json::from_slice(&v).map(Some).map_err(|e| StoreError::Corrupt(format!("manager m{mgr}: {e}")))
            }
        }
    }

    /// Every manager, newest first. `f` returns false to stop.
    pub fn for_each_manager_desc(&self, mut f: impl FnMut(ManagerRecord) -> bool) -> Result<()> {
        for item in self.inner.managers.iter().rev() {
            let (_, v) = item?;
            let m: ManagerRecord = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if !f(m) {
                break;
            }
        }
        Ok(())
    }

    pub fn get_child(&self, p: JobPath) -> Result<Option<ChildRecord>> {
        match self.inner.children.get(child_key(p))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(|e| StoreError::Corrupt(format!("child {p}: {e}"))),
        }
    }

    /// The children of a step, in index order.
    pub fn children_of(&self, mgr: u64, step: u32) -> Result<Vec<ChildRecord>> {
        let mut out = Vec::new();
        for item in self.inner.children.scan_prefix(scope_key(mgr, step)) {
            let (_, v) = item?;
            out.push(serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
        Ok(out)
    }

    /// Reads events of a manager, step or child scope. Cost is O(limit + one block) for a
    /// manager or a step whatever the log's size; a child's read scans its step's blocks.
    pub fn read_logs(&self, q: &LogQuery) -> Result<LogPage> {
        reader::read(&self.inner.events, q)
    }

    /// A number that changes whenever the result of a read of `path`'s events may have:
    /// equal before and after, nothing was added to or removed from that scope in between
    /// (a child shares its step's number). Increases only.
    pub fn version(&self, path: JobPath) -> u64 {
        self.inner.versions.lock().expect("versions").get(path)
    }

    pub fn put_definition(&self, def: &JobDefinition) -> Result<()> {
        let v = serde_json::to_vec(def).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.inner.definitions.insert(def.id.as_bytes(), v)?;
        self.inner.definitions.flush()?;
        Ok(())
    }

    pub fn delete_definition(&self, id: &str) -> Result<bool> {
        let old = self.inner.definitions.remove(id.as_bytes())?;
        self.inner.definitions.flush()?;
        Ok(old.is_some())
    }

    pub fn definitions(&self) -> Result<Vec<JobDefinition>> {
        let mut out = Vec::new();
        for item in self.inner.definitions.iter() {
            let (_, v) = item?;
            out.push(serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
        Ok(out)
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.inner.db.size_on_disk().unwrap_or(0)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The sender is dropped with Inner after this runs; join the writer so that its
        // final flush has happened before the process exits.
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        let (tx, _) = mpsc::channel(1);
        let _ = std::mem::replace(&mut self.tx, tx);
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

mod reader {
    //! Scope reads over the packed blocks.

    use super::block::{self, Filter, RawEvent};
    use super::*;

    /// Walks the blocks of one or more consecutive scopes in seq order (both directions),
    /// yielding records. A block's kept records are located when it is reached, but each
    /// is decoded only when it is taken: the last 100 of a 512-record block cost 100.
    struct Cursor {
        iter: Box<dyn DoubleEndedIterator<Item = sled::Result<(sled::IVec, sled::IVec)>>>,
        desc: bool,
        filter: Filter,
        /// The block being walked, its step, and where its records not yet taken lie.
        block: sled::IVec,
        step: u32,
        spans: std::collections::VecDeque<std::ops::Range<usize>>,
        done: bool,
    }

    impl Cursor {
        /// Reaches the next record, loading blocks as needed; false at the end.
        fn fill(&mut self) -> Result<bool> {
            while self.spans.is_empty() {
                if self.done {
                    return Ok(false);
                }
                let item = if self.desc { self.iter.next_back() } else { self.iter.next() };
                match item {
                    None => self.done = true,
                    Some(kv) => {
                        let (k, v) = kv?;
                        self.step = u32::from_be_bytes(k[8..12].try_into().expect("block key"));
                        self.spans = block::kept_spans(&v, &self.filter).into();
                        self.block = v;
                    }
                }
            }
            Ok(true)
        }

        fn front(&self) -> Option<&std::ops::Range<usize>> {
            if self.desc { self.spans.back() } else { self.spans.front() }
        }

        fn next(&mut self) -> Result<Option<RawEvent>> {
            if !self.fill()? {
                return Ok(None);
            }
            let span = if self.desc { self.spans.pop_back() } else { self.spans.pop_front() };
            Ok(span.map(|r| block::decode_at(&self.block, r, self.step)))
        }

        fn peek_seq(&mut self) -> Result<Option<u64>> {
            if !self.fill()? {
                return Ok(None);
            }
            Ok(self.front().map(|r| block::seq_at(&self.block, r.clone())))
        }
    }

    /// Key range of scopes `[from_step, to_step]` of a manager, starting at the block that
    /// may hold `after + 1` when reading forward.
    fn cursor(
        events: &sled::Tree,
        mgr: u64,
        from_step: u32,
        to_step: u32,
        desc: bool,
        filter: Filter,
    ) -> Result<Cursor> {
        let lo = block_key(mgr, from_step, 0);
        let hi = block_key(mgr, to_step, u64::MAX);
        let mut start = lo.to_vec();
        if !desc
            && filter.after > 0
            && let Some(k) = forward_start(events, mgr, from_step, to_step, filter.after)?
        {
            start = k;
        }
        Ok(Cursor {
            iter: Box::new(events.range(start..=hi.to_vec())),
            desc,
            filter,
            block: sled::IVec::default(),
            step: 0,
            spans: Default::default(),
            done: false,
        })
    }

    /// The first block a forward read after `after` must look at: scopes in the range are
    /// seq-ordered one after another, so it is the last block (in key order) whose first
    /// seq is ≤ after+1 in the last scope that has one; everything before it is ≤ after.
    fn forward_start(
        events: &sled::Tree,
        mgr: u64,
        from_step: u32,
        to_step: u32,
        after: u64,
    ) -> Result<Option<Vec<u8>>> {
        let end = block_key(mgr, to_step, u64::MAX);
        let mut best = None;
        let mut step = from_step;
        loop {
            // Jump to the next scope that has blocks.
            let Some(kv) = events.range(block_key(mgr, step, 0)..=end).next() else { break };
            let (k, _) = kv?;
            let s = u32::from_be_bytes(k[8..12].try_into().expect("block key"));
            let probe = block_key(mgr, s, after.saturating_add(1));
            if let Some(kv) = events.range(block_key(mgr, s, 0)..=probe).next_back() {
                best = Some(kv?.0.to_vec());
            }
            let later = events.range(probe..=block_key(mgr, s, u64::MAX)).next();
            if later.is_some() || s >= to_step {
                // This scope goes on past `after`, so later scopes cannot hold the start.
                break;
            }
            step = s + 1;
        }
        Ok(best)
    }

    pub(super) fn read(events: &sled::Tree, q: &LogQuery) -> Result<LogPage> {
        let p = q.path;
        let desc = q.after.is_none();
        let filter = Filter { child: p.child, min_level: q.min_level, after: q.after.unwrap_or(0) };
        // Manager scope: its own (step 0) blocks merged with its steps' chain.
        let mut cursors = if p.step == 0 {
            vec![cursor(events, p.manager, 0, 0, desc, filter)?, cursor(events, p.manager, 1, u32::MAX, desc, filter)?]
        } else {
            vec![cursor(events, p.manager, p.step, p.step, desc, filter)?]
        };
        let mut out = Vec::with_capacity(q.limit.min(5000));
        while out.len() < q.limit {
            let mut pick: Option<(usize, u64)> = None;
            for (i, c) in cursors.iter_mut().enumerate() {
                if let Some(s) = c.peek_seq()? {
                    let better = match pick {
                        None => true,
                        Some((_, best)) => (desc && s > best) || (!desc && s < best),
                    };
                    if better {
                        pick = Some((i, s));
                    }
                }
            }
            let Some((i, _)) = pick else { break };
            out.push(cursors[i].next()?.expect("peeked"));
        }
        let last_seq = if desc && q.min_level.is_none() {
            out.first().map(|e| e.seq).unwrap_or(0)
        } else {
            scope_last_seq(events, p)?
        };
        if desc && q.order == Order::Asc {
            out.reverse();
        }
        // `after` reads are always oldest first (docs/rest-api.md), whatever `order` says.
        Ok(LogPage { events: out, last_seq })
    }

    /// Highest seq of a scope: the last record of its last block (for a child, the last
    /// of its records, scanning back through its step's blocks).
    fn scope_last_seq(events: &sled::Tree, p: JobPath) -> Result<u64> {
        let filter = Filter { child: p.child, ..Default::default() };
        let ranges: Vec<(u32, u32)> = if p.step == 0 { vec![(0, 0), (1, u32::MAX)] } else { vec![(p.step, p.step)] };
        let mut best = 0;
        for (a, b) in ranges {
            for kv in events.range(block_key(p.manager, a, 0)..=block_key(p.manager, b, u64::MAX)).rev() {
                let (_, v) = kv?;
                if let Some(s) = block::last_seq(&v, &filter) {
                    best = best.max(s);
                    break;
                }
            }
        }
        Ok(best)
    }
}

#[cfg(test)]
mod versions_tests {
    use super::*;

    /// What the page cache relies on: a page kept at the version read before it moves
    /// past that version with every later change of its scope, also when the change comes
    /// with the manager's end (and the manager is forgotten in the same commit).
    #[test]
    fn a_kept_page_is_outdated_by_every_later_change() {
        let mut v = Versions::default();
        let (s1, s2) = (JobPath::step(1, 1), JobPath::step(1, 2));
        assert_eq!(v.get(s1), 0);
        v.changed(s1, 10);
        let kept = v.get(s1);
        assert_eq!((kept, v.get(JobPath::manager(1)), v.get(JobPath::child(1, 1, 7))), (10, 10, 10));
        v.changed(s2, 15);
        assert_eq!(v.get(s1), kept, "another step's events leave this page current");
        assert_eq!(v.get(JobPath::manager(1)), 15, "the manager's page covers all its steps");
        // The last events and the end of the manager in one commit.
        v.changed(s1, 20);
        v.forget(1, 20);
        assert!(v.get(s1) > kept && v.get(JobPath::manager(1)) > 15);
        let reread = v.get(s1);
        // Other managers ending only ever move it up (one more read), never back.
        v.changed(JobPath::step(2, 1), 30);
        v.forget(2, 30);
        assert!(v.get(s1) >= reread);
        assert!(v.managers.is_empty(), "finished managers are not kept");
    }
}
