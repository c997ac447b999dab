//! The store: job records, definitions and the event log, behind one trait, [`Store`].
//! The engine, the API and the WebSocket code see only the trait and the records defined
//! here; `sled_store` is the embedded implementation (the only code that names sled),
//! opened by [`open`].
//!
//! What every implementation promises (docs/storage.md):
//! - `seq` strictly increases in commit order, so `after=` never skips or repeats an event;
//! - a job's status written after its events becomes visible only after those events;
//! - [`Store::sync`] returns once everything queued before it is durable;
//! - numbers (managers, seqs) are never handed out twice, also after a crash;
//! - the [`CommitListener`] hears of every commit, and of every change of the job counts.

pub mod block;
mod counters;
#[cfg(test)]
mod proptests;
mod sled_store;
mod versions;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use quaero_shared::{ChildCounts, JobDefinition, JobPath, JobStatus, Level, Order, Stats, StepType};
use serde::{Deserialize, Serialize};

pub use block::RawEvent;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, the database).
    #[error("storage error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
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
    /// The parameter values of this run (a rerun keeps them).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub params: std::collections::BTreeMap<String, String>,
    /// A delayed run: it stays pending until this time (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_ms: Option<i64>,
    /// What started it (`None` in records from before triggers: an execute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<quaero_shared::Trigger>,
    /// Started by the schedule: the scheduled time it ran for. The scheduler counts from
    /// the newest of these at a start, so no time runs twice after a crash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_ms: Option<i64>,
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
    /// The attempt running or next (1-based; 0 before the first), and while it waits to
    /// retry, when the next one starts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_ms: Option<i64>,
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
    /// The attempt running or next (1-based; 0 before the first), and while it waits to
    /// retry, when the next one starts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_ms: Option<i64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Which managers a listing wants. Every filter given must match.
#[derive(Debug, Clone, Default)]
pub struct ManagerQuery {
    /// Empty: every status.
    pub statuses: Vec<JobStatus>,
    pub definition: Option<String>,
    pub tag: Option<String>,
    /// The queue runs are on (`default` for a definition without one).
    pub queue: Option<String>,
    /// A case-insensitive part of the run's name or of its definition id.
    pub search: Option<String>,
    /// Only runs the schedule started.
    pub scheduled: bool,
    /// Only runs that finished before this (ms since the epoch).
    pub finished_before: Option<i64>,
    /// Keyset cursor: only managers numbered below this.
    pub before: Option<u64>,
    pub offset: usize,
    pub limit: usize,
}

/// A page of managers, and whether more match after it.
#[derive(Debug, Clone, Default)]
pub struct ManagerPage {
    pub managers: Vec<ManagerRecord>,
    pub more: bool,
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
    /// Only events with a smaller seq: older history page by page, or with `after` the
    /// end of a range.
    pub before: Option<u64>,
    pub min_level: Option<Level>,
}

#[derive(Debug, Clone, Default)]
pub struct LogPage {
    pub events: Vec<RawEvent>,
    /// Highest seq of the scope at the time of the read (0 if none).
    pub last_seq: u64,
}

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

/// The future of a write: it resolves once the store has queued (or, for
/// [`Store::sync`] and [`Store::delete_manager`], applied) it.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A store the daemon runs on. Writes are queued in order and applied in batches; reads
/// see what is committed. Shared as `Arc<dyn Store>`.
pub trait Store: Send + Sync {
    /// This data store's id (32 hex digits, made when it was created). Every process a
    /// daemon on it starts carries it in `QUAERO_INSTANCE`, so that the next daemon on the
    /// same store can find what a crashed one left running.
    fn instance(&self) -> &str;
    /// A manager number never handed out before, also across crashes.
    fn alloc_manager(&self) -> Result<u64>;
    /// Queues events; the store gives them their seq.
    fn append(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<()>>;
    fn put_manager(&self, rec: ManagerRecord) -> BoxFuture<'_, Result<()>>;
    fn put_children(&self, recs: Vec<ChildRecord>) -> BoxFuture<'_, Result<()>>;
    /// Waits until everything queued before this call is applied and durable.
    fn sync(&self) -> BoxFuture<'_, Result<()>>;
    /// Deletes a manager with its children and events; returns (jobs, events) deleted.
    fn delete_manager(&self, mgr: u64) -> BoxFuture<'_, Result<(u64, u64)>>;
    /// Jobs by status, kept as records are written (never counted by a scan).
    fn stats(&self) -> Stats;
    fn get_manager(&self, mgr: u64) -> Result<Option<ManagerRecord>>;
    /// Every manager, newest first. `f` returns false to stop. Reads every record: for
    /// tests and one-off migrations; listings go through [`Store::list_managers`].
    fn for_each_manager_desc(&self, f: &mut dyn FnMut(ManagerRecord) -> bool) -> Result<()>;
    /// Managers newest first through the index: O(offset + limit) for one filter
    /// dimension, whatever the history (see [`ManagerQuery`]).
    fn list_managers(&self, q: &ManagerQuery) -> Result<ManagerPage>;
    /// How many managers `q` matches (its cursor, offset and limit aside): read from counts
    /// kept as the writer commits when `q` filters by status and at most one of definition,
    /// tag, queue or search; else by walking the narrowest index.
    fn count_managers(&self, q: &ManagerQuery) -> Result<u64>;
    /// The numbers of the managers `q` matches, newest first (its offset and limit apply):
    /// no record is read unless a filter needs it.
    fn manager_nums(&self, q: &ManagerQuery) -> Result<Vec<u64>>;
    /// Definition ids that have stored runs.
    fn run_definitions(&self) -> Result<Vec<String>>;
    /// Finished managers that finished before `cutoff_ms`, oldest finish first, at most
    /// `limit`: O(limit), whatever the history.
    fn finished_before(&self, cutoff_ms: i64, limit: usize) -> Result<Vec<u64>>;
    /// A step's children in index order, only those with one of `statuses` (empty: all),
    /// numbered above `after`, skipping `offset` of them; at most `limit`, and whether
    /// more follow.
    fn children_page(
        &self,
        mgr: u64,
        step: u32,
        statuses: &[JobStatus],
        after: Option<u32>,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<ChildRecord>, bool)>;
    fn get_child(&self, p: JobPath) -> Result<Option<ChildRecord>>;
    /// The children of a step, in index order.
    fn children_of(&self, mgr: u64, step: u32) -> Result<Vec<ChildRecord>>;
    /// Reads events of a manager, step or child scope.
    fn read_logs(&self, q: &LogQuery) -> Result<LogPage>;
    /// A number that changes whenever the result of a read of `path`'s events may have:
    /// equal before and after, nothing was added to or removed from that scope in between
    /// (a child shares its step's number). Increases only.
    fn version(&self, path: JobPath) -> u64;
    fn put_definition(&self, def: &JobDefinition) -> Result<()>;
    fn delete_definition(&self, id: &str) -> Result<bool>;
    /// Definitions created over the API.
    fn definitions(&self) -> Result<Vec<JobDefinition>>;
    /// Keeps a setting across restarts (`None` removes it).
    fn put_setting(&self, key: &str, value: Option<&str>) -> Result<()>;
    /// Sets or removes several settings at once, durably.
    fn put_settings(&self, kv: &[(String, Option<String>)]) -> Result<()>;
    /// One setting.
    fn setting(&self, key: &str) -> Result<Option<String>>;
    /// Every setting kept, by key.
    fn settings(&self) -> Result<std::collections::BTreeMap<String, String>>;
    /// Bytes the store occupies on disk.
    fn size_on_disk(&self) -> u64;
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "cannot open the data directory {path}: {source} (nothing was deleted; start with --recover to move it aside and begin empty)"
    )]
    Backend {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
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

/// Opens (or creates) the embedded store at `path`. `listener` hears of every commit.
pub fn open(path: &Path, listener: Arc<dyn CommitListener>, opts: StoreOptions) -> Result<Arc<dyn Store>, OpenError> {
    Ok(Arc::new(sled_store::SledStore::open(path, listener, opts)?))
}
