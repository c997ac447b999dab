//! The embedded store on sled. Nothing outside this module names sled.
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
//! - The index ([`index`]) lives in `managers` and `children` beside the records, under
//!   keys that start with 0xFF, so one batch writes a record with its index keys and counts.
//!
//! All writes go through one writer thread ([`writer`]) that batches whatever is queued,
//! applies it and flushes; a job's status becomes visible as terminal only after that
//! job's events were applied before it (and the engine waits for [`Store::sync`]).

mod index;
mod keys;
mod listing;
mod reader;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex};

use quaero_shared::{JobDefinition, JobPath, Stats};
use tokio::sync::{mpsc, oneshot};

use super::versions::Versions;
use super::{
    BoxFuture, ChildRecord, CommitListener, LogPage, LogQuery, ManagerPage, ManagerQuery, ManagerRecord, NewEvent,
    OpenError, Result, Store, StoreError, StoreOptions,
};
use index::Counters;
use keys::{child_key, manager_key, scope_key};

/// Events of one block at most; a reader decodes at most two blocks to serve a small read.
pub const BLOCK_EVENTS: usize = 512;
/// Written once when a data directory is created; checked at every open.
const FORMAT_KEY: &str = "format";
const FORMAT: &str = "quaero-store-2";
/// The format before the index: opened, indexed, and marked [`FORMAT`]. A quaerod older
/// than the index then refuses the directory naming its format, instead of misreading the
/// index keys as records.
const FORMAT_BEFORE_INDEX: &str = "quaero-store-1";
/// A random id made when a data directory is created: marks the processes its daemons
/// start (see [`Store::instance`]).
const INSTANCE_KEY: &str = "instance";
/// How far ahead counters are reserved; one durable write per this many numbers.
const SEQ_RESERVE: u64 = 100_000;
const MANAGER_RESERVE: u64 = 1_000;

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

/// Where a delete answers with (jobs, events) deleted.
type DeleteReply = oneshot::Sender<Result<(u64, u64)>>;

enum WriteOp {
    Events(Vec<NewEvent>),
    PutManager(Box<ManagerRecord>),
    PutChildren(Vec<ChildRecord>),
    DeleteManager(u64, DeleteReply),
    /// Acknowledged once everything queued before it is applied and flushed.
    Sync(oneshot::Sender<()>),
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

/// Whether another process holds the lock sled takes on `<path>/db` (an exclusive
/// `flock`). The probe's own lock goes with its descriptor when this returns.
fn locked_by_another(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::File::open(path.join("db")) else { return false };
    // SAFETY: flock(2) on a descriptor `file` owns; no memory involved.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
}

/// The sled store. Its writer thread is joined when it is dropped.
pub(super) struct SledStore {
    db: sled::Db,
    managers: sled::Tree,
    children: sled::Tree,
    events: sled::Tree,
    meta: sled::Tree,
    definitions: sled::Tree,
    /// Settings kept across restarts (a definition enabled or disabled).
    settings: sled::Tree,
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

/// The steps of opening a data directory, with its path for the errors.
struct Opening {
    shown: String,
}

impl Opening {
    fn sled(&self, source: sled::Error) -> OpenError {
        match &source {
            // sled's own lock check, should another process take the lock after ours.
            sled::Error::Io(e)
                if e.to_string().starts_with("could not acquire lock") && e.to_string().contains("WouldBlock") =>
            {
                OpenError::InUse { path: self.shown.clone() }
            }
            _ => OpenError::Backend { path: self.shown.clone(), source: Box::new(source) },
        }
    }

    fn corrupt(&self, detail: impl Into<String>) -> OpenError {
        OpenError::Corrupt { path: self.shown.clone(), detail: detail.into() }
    }

    /// The format marker: written to a new directory, checked in an existing one.
    fn check_format(&self, db: &sled::Db, meta: &sled::Tree, had_db: bool) -> Result<(), OpenError> {
        match meta.get(FORMAT_KEY).map_err(|e| self.sled(e))? {
            Some(v) if v.as_ref() == FORMAT.as_bytes() || v.as_ref() == FORMAT_BEFORE_INDEX.as_bytes() => Ok(()),
            Some(v) => Err(self.corrupt(format!("unknown store format {:?}", String::from_utf8_lossy(&v)))),
            None if had_db => {
                Err(self
                    .corrupt("its sled file has no Quaero format marker: it is damaged or not a Quaero data directory"))
            }
            None => {
                meta.insert(FORMAT_KEY, FORMAT.as_bytes()).map_err(|e| self.sled(e))?;
                db.flush().map_err(|e| self.sled(e))?;
                Ok(())
            }
        }
    }

    /// The directory's instance id, made on first open.
    fn instance(&self, db: &sled::Db, meta: &sled::Tree) -> Result<String, OpenError> {
        match meta.get(INSTANCE_KEY).map_err(|e| self.sled(e))? {
            Some(v) => Ok(String::from_utf8_lossy(&v).into_owned()),
            None => {
                let id = random_id();
                meta.insert(INSTANCE_KEY, id.as_bytes()).map_err(|e| self.sled(e))?;
                db.flush().map_err(|e| self.sled(e))?;
                Ok(id)
            }
        }
    }

    /// A counter reserved ahead (0 if never written).
    fn counter(&self, meta: &sled::Tree, key: &str) -> Result<u64, OpenError> {
        match meta.get(key).map_err(|e| self.sled(e))? {
            None => Ok(0),
            Some(v) => v.as_ref().try_into().map(u64::from_be_bytes).map_err(|_| self.corrupt(format!("meta/{key}"))),
        }
    }

    /// Builds the index of a store an older quaerod made (the one full read, done once);
    /// a build a crash interrupted starts over. Returns the counts.
    fn index(&self, db: &sled::Db, managers: &sled::Tree, children: &sled::Tree) -> Result<Counters, OpenError> {
        let load = |t: &sled::Tree| index::load_counts(t).map_err(|e| self.sled(e));
        if managers.get(index::VERSION_KEY).map_err(|e| self.sled(e))?.is_some() {
            return Ok(Counters { managers: load(managers)?, children: load(children)? });
        }
        let started = std::time::Instant::now();
        for tree in [managers, children] {
            let mut batch = sled::Batch::default();
            for kv in tree.range(&[index::MARK][..]..) {
                batch.remove(kv.map_err(|e| self.sled(e))?.0);
            }
            tree.apply_batch(batch).map_err(|e| self.sled(e))?;
        }
        let mut counters = Counters::default();
        let mut n = 0u64;
        for (tree, is_managers) in [(children, false), (managers, true)] {
            let counts = if is_managers { &mut counters.managers } else { &mut counters.children };
            let mut delta = index::Delta::default();
            let mut pending = 0;
            let flush = |delta: index::Delta, counts: &mut index::Counts| -> Result<(), OpenError> {
                let mut batch = sled::Batch::default();
                for (k, v) in delta.write(counts, &mut batch) {
                    counts.by_key.insert(k, v);
                }
                tree.apply_batch(batch).map_err(|e| self.sled(e))
            };
            for kv in tree.range(..&[index::MARK][..]) {
                let (_, v) = kv.map_err(|e| self.sled(e))?;
                if is_managers {
                    let m: ManagerRecord =
                        serde_json::from_slice(&v).map_err(|e| self.corrupt(format!("manager record: {e}")))?;
                    delta.manager(None, Some(&m));
                } else {
                    let c: ChildRecord =
                        serde_json::from_slice(&v).map_err(|e| self.corrupt(format!("child record: {e}")))?;
                    delta.child(None, Some(&c));
                }
                n += 1;
                pending += 1;
                if pending == 10_000 {
                    flush(std::mem::take(&mut delta), counts)?;
                    pending = 0;
                }
            }
            flush(delta, counts)?;
        }
        managers.insert(index::VERSION_KEY, index::VERSION).map_err(|e| self.sled(e))?;
        db.open_tree("meta").and_then(|meta| meta.insert(FORMAT_KEY, FORMAT)).map_err(|e| self.sled(e))?;
        db.flush().map_err(|e| self.sled(e))?;
        if n > 0 {
            tracing::info!(records = n, elapsed = ?started.elapsed(), "indexed the jobs of a store from an older quaerod (once)");
        }
        Ok(counters)
    }
}

impl SledStore {
    /// Opens (or creates) the store at `path`: checks the lock and the format marker,
    /// counts the stored jobs by status, and starts the writer thread.
    pub(super) fn open(
        path: &Path,
        listener: Arc<dyn CommitListener>,
        opts: StoreOptions,
    ) -> Result<SledStore, OpenError> {
        let o = Opening { shown: path.display().to_string() };
        if locked_by_another(path) {
            return Err(OpenError::InUse { path: o.shown });
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
            .map_err(|e| o.sled(e))?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| o.sled(e));
        let (managers, children, events) = (tree("managers")?, tree("children")?, tree("events")?);
        let (meta, definitions, settings) = (tree("meta")?, tree("definitions")?, tree("settings")?);

        o.check_format(&db, &meta, had_db)?;
        let instance = o.instance(&db, &meta)?;
        // Everything below a reservation may have been handed out before a crash: start
        // above it.
        let seq_reserved = o.counter(&meta, "seq")?;
        let mgr_reserved = o.counter(&meta, "manager")?;
        let counters = Arc::new(Mutex::new(o.index(&db, &managers, &children)?));
        listener.stats_changed(counters.lock().expect("counters").stats());

        let versions = Arc::new(Mutex::new(Versions::default()));
        let (tx, rx) = mpsc::channel(256);
        let writer = writer::Writer::new(writer::WriterSetup {
            db: db.clone(),
            events: events.clone(),
            managers: managers.clone(),
            children: children.clone(),
            meta: meta.clone(),
            seq_reserved,
            counters: counters.clone(),
            versions: versions.clone(),
            listener,
            max_events_per_job: opts.max_events_per_job,
        });
        let handle = std::thread::Builder::new()
            .name("quaero-writer".into())
            .spawn(move || writer.run(rx))
            .expect("spawn writer thread");

        Ok(SledStore {
            db,
            managers,
            children,
            events,
            meta,
            definitions,
            settings,
            tx,
            counters,
            versions,
            managers_alloc: Mutex::new((mgr_reserved + 1, mgr_reserved)),
            instance,
            writer: Mutex::new(Some(handle)),
        })
    }

    async fn send(&self, op: WriteOp) -> Result<()> {
        self.tx.send(op).await.map_err(|_| StoreError::Closed)
    }
}

impl Store for SledStore {
    /// This data directory's id (32 hex digits, made when it was created). Every process a
    /// daemon on it starts carries it in `QUAERO_INSTANCE`, so that the next daemon on the
    /// same directory can find what a crashed one left running.
    fn instance(&self) -> &str {
        &self.instance
    }

    /// A manager number never handed out before, also across crashes.
    fn alloc_manager(&self) -> Result<u64> {
        let mut a = self.managers_alloc.lock().expect("alloc");
        if a.0 > a.1 {
            let ceiling = a.1 + MANAGER_RESERVE;
            self.meta.insert("manager", &ceiling.to_be_bytes())?;
            self.meta.flush()?;
            a.1 = ceiling;
        }
        let n = a.0;
        a.0 += 1;
        Ok(n)
    }

    fn append(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if events.is_empty() {
                return Ok(());
            }
            self.send(WriteOp::Events(events)).await
        })
    }

    fn put_manager(&self, rec: ManagerRecord) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.send(WriteOp::PutManager(Box::new(rec))).await })
    }

    fn put_children(&self, recs: Vec<ChildRecord>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if recs.is_empty() {
                return Ok(());
            }
            self.send(WriteOp::PutChildren(recs)).await
        })
    }

    /// Waits until everything queued before this call is applied and on disk.
    fn sync(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            self.send(WriteOp::Sync(tx)).await?;
            rx.await.map_err(|_| StoreError::Closed)
        })
    }

    /// Deletes a manager with its children and events; returns (jobs, events) deleted.
    fn delete_manager(&self, mgr: u64) -> BoxFuture<'_, Result<(u64, u64)>> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            self.send(WriteOp::DeleteManager(mgr, tx)).await?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn stats(&self) -> Stats {
        self.counters.lock().expect("counters").stats()
    }

    fn get_manager(&self, mgr: u64) -> Result<Option<ManagerRecord>> {
        match self.managers.get(manager_key(mgr))? {
            None => Ok(None),
            Some(v) => {
                serde_json::from_slice(&v).map(Some).map_err(|e| StoreError::Corrupt(format!("manager m{mgr}: {e}")))
            }
        }
    }

    /// Every manager, newest first. `f` returns false to stop.
    fn for_each_manager_desc(&self, f: &mut dyn FnMut(ManagerRecord) -> bool) -> Result<()> {
        for item in self.managers.range(..&[index::MARK][..]).rev() {
            let (_, v) = item?;
            let m: ManagerRecord = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if !f(m) {
                break;
            }
        }
        Ok(())
    }

    fn list_managers(&self, q: &ManagerQuery) -> Result<ManagerPage> {
        let plan = listing::plan(q, &self.counters.lock().expect("counters"));
        listing::list(&self.managers, &plan, q)
    }

    fn count_managers(&self, q: &ManagerQuery) -> Result<u64> {
        let plan = {
            let counters = self.counters.lock().expect("counters");
            let plan = listing::plan(q, &counters);
            if let Some(n) = listing::counted(&plan, &counters) {
                return Ok(n);
            }
            plan
        };
        listing::count(&self.managers, &plan, q)
    }

    fn manager_nums(&self, q: &ManagerQuery) -> Result<Vec<u64>> {
        let plan = listing::plan(q, &self.counters.lock().expect("counters"));
        listing::nums(&self.managers, &plan, q)
    }

    fn run_definitions(&self) -> Result<Vec<String>> {
        Ok(listing::run_definitions(&self.counters.lock().expect("counters")))
    }

    fn finished_before(&self, cutoff_ms: i64, limit: usize) -> Result<Vec<u64>> {
        listing::finished_before(&self.managers, cutoff_ms, limit)
    }

    fn children_page(
        &self,
        mgr: u64,
        step: u32,
        statuses: &[quaero_shared::JobStatus],
        after: Option<u32>,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<ChildRecord>, bool)> {
        listing::children_page(&self.children, (mgr, step), statuses, after, offset, limit)
    }

    fn get_child(&self, p: JobPath) -> Result<Option<ChildRecord>> {
        match self.children.get(child_key(p))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(|e| StoreError::Corrupt(format!("child {p}: {e}"))),
        }
    }

    /// The children of a step, in index order.
    fn children_of(&self, mgr: u64, step: u32) -> Result<Vec<ChildRecord>> {
        let mut out = Vec::new();
        for item in self.children.scan_prefix(scope_key(mgr, step)) {
            let (_, v) = item?;
            out.push(serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
        Ok(out)
    }

    /// Reads events of a manager, step or child scope. Cost is O(limit + one block) for a
    /// manager or a step whatever the log's size; a child's read scans its step's blocks.
    fn read_logs(&self, q: &LogQuery) -> Result<LogPage> {
        reader::read(&self.events, q)
    }

    /// A number that changes whenever the result of a read of `path`'s events may have:
    /// equal before and after, nothing was added to or removed from that scope in between
    /// (a child shares its step's number). Increases only.
    fn version(&self, path: JobPath) -> u64 {
        self.versions.lock().expect("versions").get(path)
    }

    fn put_definition(&self, def: &JobDefinition) -> Result<()> {
        let v = serde_json::to_vec(def).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.definitions.insert(def.id.as_bytes(), v)?;
        self.definitions.flush()?;
        Ok(())
    }

    fn delete_definition(&self, id: &str) -> Result<bool> {
        let old = self.definitions.remove(id.as_bytes())?;
        self.definitions.flush()?;
        Ok(old.is_some())
    }

    fn definitions(&self) -> Result<Vec<JobDefinition>> {
        let mut out = Vec::new();
        for item in self.definitions.iter() {
            let (_, v) = item?;
            out.push(serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
        Ok(out)
    }

    /// Bytes the database occupies on disk.
    fn put_setting(&self, key: &str, value: Option<&str>) -> Result<()> {
        match value {
            Some(v) => self.settings.insert(key.as_bytes(), v.as_bytes()).map(drop)?,
            None => self.settings.remove(key.as_bytes()).map(drop)?,
        }
        self.settings.flush()?;
        Ok(())
    }

    fn put_settings(&self, kv: &[(String, Option<String>)]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (k, v) in kv {
            match v {
                Some(v) => batch.insert(k.as_bytes(), v.as_bytes()),
                None => batch.remove(k.as_bytes()),
            }
        }
        self.settings.apply_batch(batch)?;
        self.settings.flush()?;
        Ok(())
    }

    fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(self.settings.get(key.as_bytes())?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn settings(&self) -> Result<std::collections::BTreeMap<String, String>> {
        let mut out = std::collections::BTreeMap::new();
        for item in self.settings.iter() {
            let (k, v) = item?;
            out.insert(String::from_utf8_lossy(&k).into_owned(), String::from_utf8_lossy(&v).into_owned());
        }
        Ok(out)
    }

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // Close the writer's queue (swap our sender for one of a dead channel: the writer
        // drains what is queued and stops), then join it, so that its final flush has
        // happened before the process exits.
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        let (tx, _) = mpsc::channel(1);
        let _ = std::mem::replace(&mut self.tx, tx);
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}
