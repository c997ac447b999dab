//! The job index: secondary keys kept in the same tree as the records they index, so that
//! one sled batch writes a record, its index keys and the counts they move atomically
//! (sled applies a tree's batch all or nothing, also across a crash).
//!
//! Every index key starts with 0xFF; record keys start with a manager number's first byte,
//! which never reaches 0xFF, so records and index never mix in a scan.
//!
//! In `managers`:
//! - `FF 'I' dim len:u16be value status mgr:u64be` → empty: managers newest first per
//!   (dimension, value, status). Dimensions: [`ALL`] (value empty), [`DEF`], [`QUEUE`],
//!   [`TAG`] (one key per tag), [`NAME`], [`SCHEDULED`] (definition id, only runs the
//!   schedule started).
//! - `FF 'C' dim len:u16be value status` → u64be: how many keys the `I` prefix holds.
//! - `FF 'F' finished:u64be mgr:u64be` → empty: finished managers by finish time (for
//!   retention and bulk delete: O(expired)).
//! - `FF 'G' status` → u64be: jobs (managers and steps) by status, for `stats`.
//! - `FF 'V'` → the index's format, written once it is complete.
//!
//! In `children`:
//! - `FF 'G' status` → u64be: children by status (no status index: see [`Delta::child`]).

use std::collections::{BTreeSet, HashMap};

use quaero_shared::JobStatus;

use crate::store::{ChildRecord, ManagerRecord};

pub(crate) const MARK: u8 = 0xFF;
pub(crate) const ALL: u8 = b'A';
pub(crate) const DEF: u8 = b'D';
pub(crate) const QUEUE: u8 = b'Q';
pub(crate) const TAG: u8 = b'T';
pub(crate) const NAME: u8 = b'N';
pub(crate) const SCHEDULED: u8 = b'X';
/// The index format; a store without it (made by an older quaerod) is indexed at open.
pub(crate) const VERSION_KEY: [u8; 2] = [MARK, b'V'];
pub(crate) const VERSION: &[u8] = b"1";
/// The queue a definition without one runs on (as the engine names it).
pub(crate) const DEFAULT_QUEUE: &str = "default";

pub(crate) fn status_byte(s: JobStatus) -> u8 {
    JobStatus::ALL.iter().position(|x| *x == s).expect("every status has a byte") as u8
}

/// The first bytes of a dimension's keys for one value (`kind` is `I` or `C`).
fn dim_prefix(kind: u8, dim: u8, value: &str) -> Vec<u8> {
    // Values longer than 64 KiB are cut (no definition id, queue, tag or name is).
    let v = &value.as_bytes()[..value.len().min(u16::MAX as usize)];
    let mut k = Vec::with_capacity(5 + v.len() + 9);
    k.extend_from_slice(&[MARK, kind, dim]);
    k.extend_from_slice(&(v.len() as u16).to_be_bytes());
    k.extend_from_slice(v);
    k
}

/// The prefix of the managers of (dim, value) with one status; a manager number follows.
pub(crate) fn list_prefix(dim: u8, value: &str, status: JobStatus) -> Vec<u8> {
    let mut k = dim_prefix(b'I', dim, value);
    k.push(status_byte(status));
    k
}

pub(crate) fn count_key(dim: u8, value: &str, status: JobStatus) -> Vec<u8> {
    let mut k = dim_prefix(b'C', dim, value);
    k.push(status_byte(status));
    k
}

/// The prefix of every count key of a dimension: lists its values.
pub(crate) fn count_dim_prefix(dim: u8) -> [u8; 3] {
    [MARK, b'C', dim]
}

/// Splits a count key into (value, status byte).
pub(crate) fn parse_count_key(k: &[u8]) -> Option<(String, u8)> {
    let len = u16::from_be_bytes(k.get(3..5)?.try_into().ok()?) as usize;
    let value = k.get(5..5 + len)?;
    let status = *k.get(5 + len)?;
    Some((String::from_utf8_lossy(value).into_owned(), status))
}

pub(crate) fn global_key(status: JobStatus) -> [u8; 3] {
    [MARK, b'G', status_byte(status)]
}

/// Finish times as keys: ms since the epoch, offset so that byte order is numeric order.
fn finished_bytes(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

pub(crate) fn finished_key(ms: i64, mgr: u64) -> [u8; 18] {
    let mut k = [0u8; 18];
    k[..2].copy_from_slice(&[MARK, b'F']);
    k[2..10].copy_from_slice(&finished_bytes(ms));
    k[10..].copy_from_slice(&mgr.to_be_bytes());
    k
}

/// Bounds of the finished keys before `cutoff_ms`.
pub(crate) fn finished_range(cutoff_ms: i64) -> (Vec<u8>, Vec<u8>) {
    let mut hi = vec![MARK, b'F'];
    hi.extend_from_slice(&finished_bytes(cutoff_ms));
    (vec![MARK, b'F'], hi)
}

pub(crate) fn mgr_of(key: &[u8]) -> u64 {
    u64::from_be_bytes(key[key.len() - 8..].try_into().expect("index keys end with a manager"))
}

/// The (dimension, value) pairs a manager is listed under.
pub(crate) fn dims_of(m: &ManagerRecord) -> Vec<(u8, String)> {
    let mut d = vec![
        (ALL, String::new()),
        (DEF, m.definition_id.clone()),
        (QUEUE, m.definition.queue.clone().unwrap_or_else(|| DEFAULT_QUEUE.to_string())),
        (NAME, m.name.clone()),
    ];
    let tags: BTreeSet<&String> = m.definition.tags.iter().collect();
    d.extend(tags.into_iter().map(|t| (TAG, t.clone())));
    if m.schedule_ms.is_some() {
        d.push((SCHEDULED, m.definition_id.clone()));
    }
    d
}

/// Whether two versions of a manager have the same index keys and count toward the same
/// counts (compared field by field, nothing built).
fn same_keys(a: &ManagerRecord, b: &ManagerRecord) -> bool {
    a.status == b.status
        && a.finished_ms == b.finished_ms
        && a.schedule_ms.is_some() == b.schedule_ms.is_some()
        && a.definition_id == b.definition_id
        && a.name == b.name
        && a.definition.queue == b.definition.queue
        && a.definition.tags == b.definition.tags
        && a.steps.len() == b.steps.len()
        && a.steps.iter().zip(&b.steps).all(|(x, y)| x.status == y.status)
}

/// Every index key of a manager (empty values), and the count keys they add one to.
pub(crate) fn manager_keys(m: &ManagerRecord) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut keys = Vec::new();
    let mut counts = Vec::new();
    for (dim, value) in dims_of(m) {
        let mut k = list_prefix(dim, &value, m.status);
        k.extend_from_slice(&m.num.to_be_bytes());
        keys.push(k);
        counts.push(count_key(dim, &value, m.status));
    }
    if let (true, Some(f)) = (m.status.is_terminal(), m.finished_ms) {
        keys.push(finished_key(f, m.num).to_vec());
    }
    (keys, counts)
}

/// Counts kept in memory and written with every batch that moves them.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) by_key: HashMap<Vec<u8>, u64>,
}

impl Counts {
    pub(crate) fn get(&self, key: &[u8]) -> u64 {
        self.by_key.get(key).copied().unwrap_or(0)
    }
}

/// The index changes of one tree's batch: keys to insert and remove, counts to move.
#[derive(Default)]
pub(crate) struct Delta {
    pub(crate) insert: Vec<Vec<u8>>,
    pub(crate) remove: Vec<Vec<u8>>,
    pub(crate) counts: HashMap<Vec<u8>, i64>,
}

impl Delta {
    /// From a manager stored as `old` to `new` (either may be absent).
    pub(crate) fn manager(&mut self, old: Option<&ManagerRecord>, new: Option<&ManagerRecord>) {
        if let (Some(o), Some(n)) = (old, new)
            && same_keys(o, n)
        {
            // Most writes of a running manager only move its steps' child counts.
            return;
        }
        let (old_keys, old_counts) = old.map(manager_keys).unwrap_or_default();
        let (new_keys, new_counts) = new.map(manager_keys).unwrap_or_default();
        let old_set: BTreeSet<&Vec<u8>> = old_keys.iter().collect();
        let new_set: BTreeSet<&Vec<u8>> = new_keys.iter().collect();
        self.remove.extend(old_set.difference(&new_set).map(|k| (*k).clone()));
        self.insert.extend(new_set.difference(&old_set).map(|k| (*k).clone()));
        for k in old_counts {
            *self.counts.entry(k).or_default() -= 1;
        }
        for k in new_counts {
            *self.counts.entry(k).or_default() += 1;
        }
        let statuses = |m: Option<&ManagerRecord>| -> Vec<JobStatus> {
            m.map(|m| crate::store::counters::manager_statuses(m).collect()).unwrap_or_default()
        };
        for s in statuses(old) {
            *self.counts.entry(global_key(s).to_vec()).or_default() -= 1;
        }
        for s in statuses(new) {
            *self.counts.entry(global_key(s).to_vec()).or_default() += 1;
        }
    }

    /// From a child stored as `old` to `new` (either may be absent): only the counts move.
    /// Children have no status index: with one, every status change of a child was two more
    /// writes to the children tree, and a fan-out of 50,000 no-op children ran at 60% of
    /// its speed (BENCHMARKS.md); a step's children are filtered by status as they are read.
    pub(crate) fn child(&mut self, old: Option<&ChildRecord>, new: Option<&ChildRecord>) {
        if let Some(o) = old {
            *self.counts.entry(global_key(o.status).to_vec()).or_default() -= 1;
        }
        if let Some(n) = new {
            *self.counts.entry(global_key(n.status).to_vec()).or_default() += 1;
        }
    }

    /// Writes the keys and the moved counts into `batch`; returns the counts' new values
    /// (to set in memory once the batch is applied).
    pub(crate) fn write(self, counts: &Counts, batch: &mut sled::Batch) -> Vec<(Vec<u8>, u64)> {
        for k in self.remove {
            batch.remove(k);
        }
        for k in self.insert {
            batch.insert(k, &[][..]);
        }
        let mut set = Vec::new();
        for (k, d) in self.counts {
            if d == 0 {
                continue;
            }
            let n = (counts.get(&k) as i64 + d).max(0) as u64;
            if n == 0 {
                batch.remove(k.clone());
            } else {
                batch.insert(k.clone(), &n.to_be_bytes()[..]);
            }
            set.push((k, n));
        }
        set
    }
}

/// The counts of both trees, shared by the writer (which moves them) and the readers.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) managers: Counts,
    pub(crate) children: Counts,
}

impl Counters {
    /// Jobs by status: managers and steps, and children.
    pub(crate) fn stats(&self) -> quaero_shared::Stats {
        let mut s = quaero_shared::Stats::default();
        for st in JobStatus::ALL {
            let k = global_key(st);
            s.add(st, (self.managers.get(&k) + self.children.get(&k)) as i64);
        }
        s
    }
}

/// Reads a tree's count keys (`FF 'C' …` and `FF 'G' …`): a few per definition, tag,
/// queue and name, never one per job.
pub(crate) fn load_counts(tree: &sled::Tree) -> sled::Result<Counts> {
    let mut c = Counts::default();
    for prefix in [&[MARK, b'C'][..], &[MARK, b'G'][..]] {
        for kv in tree.scan_prefix(prefix) {
            let (k, v) = kv?;
            let n = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            c.by_key.insert(k.to_vec(), n);
        }
    }
    Ok(c)
}
