//! The packed event block: a run of consecutive events of one (manager, step) scope stored
//! under one sled key. sled's cost is per key, not per byte, so packing is what makes
//! ingest fast; the records are length-prefixed so a reader can walk a block without
//! parsing messages it will not return.
//!
//! Record layout (little endian): `u32 len` of what follows, `u64 seq`, `i64 ts_ms`,
//! `u8 level`, `u8 originator`, `u32 child` (0 = the step or manager itself), message bytes.

use std::ops::Range;

use quaero_shared::{Level, Originator};

const HEADER: usize = 8 + 8 + 1 + 1 + 4;

/// One stored event, before it is dressed in ids for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    pub seq: u64,
    pub ts_ms: i64,
    pub level: Level,
    pub originator: Originator,
    /// Step index (1-based); 0 for manager-level events.
    pub step: u32,
    /// Child index (1-based); 0 for the step or manager itself.
    pub child: u32,
    pub message: String,
}

/// The on-disk byte of each level and originator, both ways, in one place.
const LEVELS: [Level; 4] = [Level::Debug, Level::Info, Level::Warn, Level::Error];
const ORIGINATORS: [Originator; 3] = [Originator::Manager, Originator::Step, Originator::Worker];

pub fn level_byte(l: Level) -> u8 {
    LEVELS.iter().position(|x| *x == l).expect("every level has a byte") as u8
}

pub fn originator_byte(o: Originator) -> u8 {
    ORIGINATORS.iter().position(|x| *x == o).expect("every originator has a byte") as u8
}

pub fn encode_into(
    buf: &mut Vec<u8>,
    seq: u64,
    ts_ms: i64,
    level: Level,
    originator: Originator,
    child: u32,
    message: &str,
) {
    let len = (HEADER + message.len()) as u32;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&ts_ms.to_le_bytes());
    buf.push(level_byte(level));
    buf.push(originator_byte(originator));
    buf.extend_from_slice(&child.to_le_bytes());
    buf.extend_from_slice(message.as_bytes());
}

/// Where each record body of a block lies. Stops at the first damaged record (a length
/// past the block, a level or originator byte out of range) rather than trusting it, so
/// the decoders below index only checked bytes.
fn spans(block: &[u8]) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let len_bytes = block.get(pos..pos + 4)?;
        let len = u32::from_le_bytes(len_bytes.try_into().ok()?) as usize;
        let body = pos + 4..pos + 4 + len;
        if len < HEADER || body.end > block.len() {
            return None;
        }
        // A level or originator byte no version wrote is damage too, not an `error` event.
        if usize::from(block[body.start + 16]) >= LEVELS.len()
            || usize::from(block[body.start + 17]) >= ORIGINATORS.len()
        {
            return None;
        }
        pos = body.end;
        Some(body)
    })
}

/// The record bodies of a block.
fn records(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    spans(block).map(|r| &block[r])
}

fn seq_of(body: &[u8]) -> u64 {
    u64::from_le_bytes(body[0..8].try_into().expect("header checked"))
}

fn child_of(body: &[u8]) -> u32 {
    u32::from_le_bytes(body[18..22].try_into().expect("header checked"))
}

fn level_of(body: &[u8]) -> Level {
    LEVELS[usize::from(body[16])]
}

fn decode(body: &[u8], step: u32) -> RawEvent {
    RawEvent {
        seq: seq_of(body),
        ts_ms: i64::from_le_bytes(body[8..16].try_into().expect("header checked")),
        level: level_of(body),
        originator: ORIGINATORS[usize::from(body[17])],
        step,
        child: child_of(body),
        message: String::from_utf8_lossy(&body[HEADER..]).into_owned(),
    }
}

/// Which records of a block a read wants.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter {
    /// Only this child's records (0 = all records of the scope).
    pub child: u32,
    pub min_level: Option<Level>,
    /// Only records with `seq > after`.
    pub after: u64,
    /// Only records with `seq < before`.
    pub before: Option<u64>,
}

impl Filter {
    fn keeps(&self, body: &[u8]) -> bool {
        (self.child == 0 || child_of(body) == self.child)
            && self.min_level.is_none_or(|l| level_of(body) >= l)
            && seq_of(body) > self.after
            && self.before.is_none_or(|b| seq_of(body) < b)
    }
}

/// Decodes the records of `block` that `filter` keeps, in ascending seq order.
#[cfg(test)]
pub fn decode_block(block: &[u8], step: u32, filter: &Filter) -> Vec<RawEvent> {
    records(block).filter(|b| filter.keeps(b)).map(|b| decode(b, step)).collect()
}

/// Where the records of `block` that `filter` keeps lie, in ascending seq order, for a
/// reader that decodes only those it returns ([`seq_at`], [`decode_at`]).
pub fn kept_spans(block: &[u8], filter: &Filter) -> Vec<Range<usize>> {
    spans(block).filter(|r| filter.keeps(&block[r.clone()])).collect()
}

/// The seq of the record at `span` (from [`kept_spans`] of the same block).
pub fn seq_at(block: &[u8], span: Range<usize>) -> u64 {
    seq_of(&block[span])
}

/// The record at `span` (from [`kept_spans`] of the same block).
pub fn decode_at(block: &[u8], span: Range<usize>, step: u32) -> RawEvent {
    decode(&block[span], step)
}

/// Per child (0 = the step or manager itself): how many records a block holds.
pub fn count_by_child(block: &[u8], into: &mut impl FnMut(u32)) {
    for b in records(block) {
        into(child_of(b));
    }
}

/// Drops up to `n` of the oldest records of `child` (0 = the scope's own records) from a
/// block; returns the rewritten block and how many were dropped.
pub fn drop_oldest(block: &[u8], child: u32, mut n: u64) -> (Vec<u8>, u64) {
    let mut out = Vec::with_capacity(block.len());
    let mut dropped = 0;
    for b in records(block) {
        if n > 0 && child_of(b) == child {
            n -= 1;
            dropped += 1;
            continue;
        }
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }
    (out, dropped)
}

/// Number of records in a block.
pub fn count(block: &[u8]) -> u64 {
    records(block).count() as u64
}

/// Highest seq in a block that `filter` keeps.
pub fn last_seq(block: &[u8], filter: &Filter) -> Option<u64> {
    records(block).filter(|b| filter.keeps(b)).map(seq_of).last()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn round_trip_and_filters() {
        let mut buf = Vec::new();
        encode_into(&mut buf, 5, 1000, Level::Info, Originator::Step, 0, "hello");
        encode_into(&mut buf, 6, 1001, Level::Error, Originator::Worker, 3, "bad ü");
        encode_into(&mut buf, 9, 1002, Level::Debug, Originator::Worker, 4, "");
        let all = decode_block(&buf, 2, &Filter::default());
        let spans = kept_spans(&buf, &Filter::default());
        assert_eq!(spans.iter().map(|r| seq_at(&buf, r.clone())).collect::<Vec<_>>(), [5, 6, 9]);
        assert_eq!(spans.iter().map(|r| decode_at(&buf, r.clone(), 2)).collect::<Vec<_>>(), all);
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].message, "bad ü");
        assert_eq!(all[1].child, 3);
        assert_eq!(all[1].step, 2);
        let f = Filter { child: 3, ..Default::default() };
        assert_eq!(decode_block(&buf, 2, &f).len(), 1);
        let f = Filter { min_level: Some(Level::Info), ..Default::default() };
        assert_eq!(decode_block(&buf, 2, &f).len(), 2);
        let f = Filter { after: 5, ..Default::default() };
        assert_eq!(last_seq(&buf, &f), Some(9));
        assert_eq!(count(&buf), 3);
        let (rest, n) = drop_oldest(&buf, 3, 5);
        assert_eq!(n, 1);
        assert_eq!(decode_block(&rest, 2, &Filter::default()).iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 9]);
        let mut per = HashMap::new();
        count_by_child(&buf, &mut |c| *per.entry(c).or_insert(0) += 1);
        assert_eq!(per, HashMap::from([(0, 1), (3, 1), (4, 1)]));
        // A truncated block yields the whole records before the damage.
        assert_eq!(count(&buf[..buf.len() - 3]), 2);
        // So does a record whose level or originator byte no version wrote (it used to
        // read as an `error` or `worker` event).
        let second = 4 + spans[0].len();
        for (at, byte) in [(second + 4 + 16, 4u8), (second + 4 + 17, 200u8)] {
            let mut bad = buf.clone();
            bad[at] = byte;
            assert_eq!(decode_block(&bad, 2, &Filter::default()).iter().map(|e| e.seq).collect::<Vec<_>>(), [5]);
        }
    }
}
