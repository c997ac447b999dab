//! Scope reads over the packed blocks.

use quaero_shared::{JobPath, Order};

use super::keys::block_key;
use crate::store::block::{self, Filter, RawEvent};
use crate::store::{LogPage, LogQuery, Result};

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
fn cursor(events: &sled::Tree, mgr: u64, from_step: u32, to_step: u32, desc: bool, filter: Filter) -> Result<Cursor> {
    let lo = block_key(mgr, from_step, 0);
    let mut hi = block_key(mgr, to_step, u64::MAX).to_vec();
    if let Some(before) = filter.before {
        // Backwards from the last block that may hold `before - 1`: the blocks after it
        // hold only later seqs, and are not read.
        match forward_start(events, mgr, from_step, to_step, before.saturating_sub(2))? {
            Some(k) if before > 1 => hi = k,
            _ => hi = lo.to_vec(),
        }
    }
    let mut start = lo.to_vec();
    if !desc
        && filter.after > 0
        && let Some(k) = forward_start(events, mgr, from_step, to_step, filter.after)?
    {
        start = k;
    }
    // `after` at or past `before`: nothing between them (the filter keeps none).
    if start > hi {
        start = hi.clone();
    }
    Ok(Cursor {
        iter: Box::new(events.range(start..=hi)),
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
fn forward_start(events: &sled::Tree, mgr: u64, from_step: u32, to_step: u32, after: u64) -> Result<Option<Vec<u8>>> {
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
    let before = q.before;
    let filter = Filter { child: p.child, min_level: q.min_level, after: q.after.unwrap_or(0), before };
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
    let last_seq = if desc && q.min_level.is_none() && before.is_none() {
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
