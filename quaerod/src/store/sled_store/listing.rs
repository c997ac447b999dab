//! Listings through the index ([`super::index`]): a query is driven by one dimension (the
//! narrowest it names), read as one reverse range per (value, status) and merged newest
//! first, so a page costs O(offset + limit) key reads and `limit` record decodes however
//! long the history. Filters the driving dimension does not cover are checked on the
//! record.

use quaero_shared::JobStatus;

use super::index::{self, Counters};
use super::keys::{child_key, manager_key};
use crate::store::{ChildRecord, ManagerPage, ManagerQuery, ManagerRecord, Result, StoreError};

/// One index range, walked newest first, with its next manager number.
struct Stream {
    iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>>,
    head: Option<u64>,
}

impl Stream {
    fn new(iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>>) -> Result<Stream> {
        let mut s = Stream { iter, head: None };
        s.advance()?;
        Ok(s)
    }

    fn advance(&mut self) -> Result<()> {
        self.head = match self.iter.next() {
            None => None,
            Some(kv) => Some(index::mgr_of(&kv?.0)),
        };
        Ok(())
    }
}

/// Several streams merged into one, newest first, without repeats.
struct Merge {
    streams: Vec<Stream>,
    last: Option<u64>,
}

impl Merge {
    fn next(&mut self) -> Result<Option<u64>> {
        loop {
            let heads = self.streams.iter().enumerate().filter_map(|(i, s)| s.head.map(|h| (h, i)));
            let best = heads.max();
            let Some((num, i)) = best else { return Ok(None) };
            self.streams[i].advance()?;
            if self.last == Some(num) {
                continue;
            }
            self.last = Some(num);
            return Ok(Some(num));
        }
    }
}

/// How a query is read: which (dimension, value) pairs drive it, and whether each
/// candidate's record must be checked against the rest of the query.
pub(super) struct Plan {
    drivers: Vec<(u8, String)>,
    statuses: Vec<JobStatus>,
    check: bool,
}

/// Made under the counts' lock (search reads the names and ids there); the walk needs none.
pub(super) fn plan(q: &ManagerQuery, counts: &Counters) -> Plan {
    let statuses = if q.statuses.is_empty() { JobStatus::ALL.to_vec() } else { q.statuses.clone() };
    let (drivers, covered) = match (&q.definition, &q.tag, &q.queue, &q.search) {
        (Some(d), ..) if q.scheduled => (vec![(index::SCHEDULED, d.clone())], 2),
        (Some(d), ..) => (vec![(index::DEF, d.clone())], 1),
        (None, Some(t), ..) => (vec![(index::TAG, t.clone())], 1),
        (None, None, Some(n), _) => (vec![(index::QUEUE, n.clone())], 1),
        (None, None, None, Some(s)) => (search_drivers(s, counts), 1),
        (None, None, None, None) => (vec![(index::ALL, String::new())], 0),
    };
    let given = [
        q.definition.is_some(),
        q.tag.is_some(),
        q.queue.is_some(),
        q.search.is_some(),
        q.scheduled,
        q.finished_before.is_some(),
    ]
    .into_iter()
    .filter(|g| *g)
    .count();
    Plan { drivers, statuses, check: given > covered }
}

/// The names and definition ids that contain `s` (case-insensitive), from the counts in
/// memory: O(distinct names and definitions), no disk read.
fn search_drivers(s: &str, counts: &Counters) -> Vec<(u8, String)> {
    let needle = s.to_lowercase();
    let mut out: Vec<(u8, String)> = Vec::new();
    for dim in [index::DEF, index::NAME] {
        let prefix = index::count_dim_prefix(dim);
        for k in counts.managers.by_key.keys().filter(|k| k.starts_with(&prefix)) {
            if let Some((value, _)) = index::parse_count_key(k)
                && value.to_lowercase().contains(&needle)
                && !out.iter().any(|(d, v)| *d == dim && *v == value)
            {
                out.push((dim, value));
            }
        }
    }
    out
}

/// Whether a record matches the query's filters (the status comes from the index).
fn matches(q: &ManagerQuery, m: &ManagerRecord) -> bool {
    q.definition.as_ref().is_none_or(|d| &m.definition_id == d)
        && q.tag.as_ref().is_none_or(|t| m.definition.tags.contains(t))
        && q.queue.as_ref().is_none_or(|n| m.definition.queue.as_deref().unwrap_or(index::DEFAULT_QUEUE) == n)
        && q.search.as_ref().is_none_or(|s| {
            let s = s.to_lowercase();
            m.name.to_lowercase().contains(&s) || m.definition_id.to_lowercase().contains(&s)
        })
        && (!q.scheduled || m.schedule_ms.is_some())
        && q.finished_before.is_none_or(|t| m.status.is_terminal() && m.finished_ms.is_some_and(|f| f < t))
}

fn merge(tree: &sled::Tree, p: &Plan, before: Option<u64>) -> Result<Merge> {
    let mut streams = Vec::new();
    for (dim, value) in &p.drivers {
        for st in &p.statuses {
            let prefix = index::list_prefix(*dim, value, *st);
            let iter: Box<dyn Iterator<Item = _>> = match before {
                None => Box::new(tree.scan_prefix(&prefix).rev()),
                Some(b) => {
                    let mut hi = prefix.clone();
                    hi.extend_from_slice(&b.to_be_bytes());
                    Box::new(tree.range(prefix..hi).rev())
                }
            };
            streams.push(Stream::new(iter)?);
        }
    }
    Ok(Merge { streams, last: None })
}

fn decode(v: &[u8], num: u64) -> Result<ManagerRecord> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt(format!("manager m{num}: {e}")))
}

pub(super) fn list(tree: &sled::Tree, p: &Plan, q: &ManagerQuery) -> Result<ManagerPage> {
    let mut m = merge(tree, p, q.before)?;
    let mut page = ManagerPage::default();
    let mut skipped = 0;
    while let Some(num) = m.next()? {
        let rec = if p.check || skipped >= q.offset {
            // An index key whose record is gone would be a bug; the record wins.
            let Some(v) = tree.get(manager_key(num))? else { continue };
            let rec = decode(&v, num)?;
            if p.check && !matches(q, &rec) {
                continue;
            }
            Some(rec)
        } else {
            None
        };
        if skipped < q.offset {
            skipped += 1;
            continue;
        }
        if page.managers.len() >= q.limit {
            page.more = true;
            break;
        }
        page.managers.extend(rec);
    }
    Ok(page)
}

/// The numbers of the managers a query matches (records read only to check filters).
pub(super) fn nums(tree: &sled::Tree, p: &Plan, q: &ManagerQuery) -> Result<Vec<u64>> {
    let only_time = q.definition.is_none()
        && q.tag.is_none()
        && q.queue.is_none()
        && q.search.is_none()
        && !q.scheduled
        && q.before.is_none();
    if let (Some(cut), true) = (q.finished_before, only_time) {
        // By the finish-time index: O(runs finished before the cut), each checked for its
        // status by one key lookup, no record read.
        let (lo, hi) = index::finished_range(cut);
        let mut out = Vec::new();
        for kv in tree.range(lo..hi) {
            let num = index::mgr_of(&kv?.0);
            for st in &p.statuses {
                let mut k = index::list_prefix(index::ALL, "", *st);
                k.extend_from_slice(&num.to_be_bytes());
                if tree.contains_key(k)? {
                    out.push(num);
                    break;
                }
            }
        }
        out.sort_unstable_by(|a, b| b.cmp(a));
        return Ok(out.into_iter().skip(q.offset).take(q.limit).collect());
    }
    let mut m = merge(tree, p, q.before)?;
    let mut out = Vec::new();
    let mut skipped = 0;
    while out.len() < q.limit
        && let Some(num) = m.next()?
    {
        if p.check {
            let Some(v) = tree.get(manager_key(num))? else { continue };
            if !matches(q, &decode(&v, num)?) {
                continue;
            }
        }
        if skipped < q.offset {
            skipped += 1;
            continue;
        }
        out.push(num);
    }
    Ok(out)
}

/// The count from the counts kept, when the plan allows (under the counts' lock).
pub(super) fn counted(p: &Plan, counts: &Counters) -> Option<u64> {
    let one_dim = p.drivers.iter().all(|(d, _)| *d == p.drivers.first().map_or(0, |f| f.0));
    if p.check || !one_dim {
        return None;
    }
    // Values of one dimension are disjoint: each manager is counted once.
    let mut n = 0;
    for (dim, value) in &p.drivers {
        for st in &p.statuses {
            n += counts.managers.get(&index::count_key(*dim, value, *st));
        }
    }
    Some(n)
}

/// The count by walking the plan's index (when [`counted`] cannot say).
pub(super) fn count(tree: &sled::Tree, p: &Plan, q: &ManagerQuery) -> Result<u64> {
    let mut m = merge(tree, p, None)?;
    let mut n = 0;
    while let Some(num) = m.next()? {
        if p.check {
            let Some(v) = tree.get(manager_key(num))? else { continue };
            if !matches(q, &decode(&v, num)?) {
                continue;
            }
        }
        n += 1;
    }
    Ok(n)
}

pub(super) fn run_definitions(counts: &Counters) -> Vec<String> {
    let prefix = index::count_dim_prefix(index::DEF);
    let mut ids: Vec<String> = counts
        .managers
        .by_key
        .iter()
        .filter(|(k, n)| k.starts_with(&prefix) && **n > 0)
        .filter_map(|(k, _)| index::parse_count_key(k).map(|(v, _)| v))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

pub(super) fn finished_before(tree: &sled::Tree, cutoff_ms: i64, limit: usize) -> Result<Vec<u64>> {
    let (lo, hi) = index::finished_range(cutoff_ms);
    let mut out = Vec::new();
    for kv in tree.range(lo..hi).take(limit) {
        let (k, _) = kv?;
        out.push(index::mgr_of(&k));
    }
    Ok(out)
}

pub(super) fn children_page(
    tree: &sled::Tree,
    (mgr, step): (u64, u32),
    statuses: &[JobStatus],
    after: Option<u32>,
    offset: usize,
    limit: usize,
) -> Result<(Vec<ChildRecord>, bool)> {
    let from = after.map_or(0, |a| a as u64 + 1);
    let mut out = Vec::new();
    let mut more = false;
    let decode_child = |v: &[u8]| -> Result<ChildRecord> {
        serde_json::from_slice(v).map_err(|e| StoreError::Corrupt(format!("child of m{mgr} step {step}: {e}")))
    };
    if from > u32::MAX as u64 {
        return Ok((out, false));
    }
    let first = |m: u64, s: u32, c: u32| child_key(quaero_shared::JobPath { manager: m, step: s, child: c });
    if statuses.is_empty() {
        let lo = first(mgr, step, from as u32);
        let hi = first(mgr, step, u32::MAX);
        for kv in tree.range(lo..=hi).skip(offset) {
            let (_, v) = kv?;
            if out.len() >= limit {
                more = true;
                break;
            }
            out.push(decode_child(&v)?);
        }
        return Ok((out, more));
    }
    // By status: the step's children read in order and filtered (no status index).
    let lo = first(mgr, step, from as u32);
    let hi = first(mgr, step, u32::MAX);
    let mut skipped = 0;
    for kv in tree.range(lo..=hi) {
        let (_, v) = kv?;
        let c = decode_child(&v)?;
        if !statuses.contains(&c.status) {
            continue;
        }
        if skipped < offset {
            skipped += 1;
            continue;
        }
        if out.len() >= limit {
            more = true;
            break;
        }
        out.push(c);
    }
    Ok((out, more))
}
