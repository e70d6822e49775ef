//! The timestamp cache: the highest timestamp at which each key or span was
//! read, kept in memory by a range's leader.
//!
//! A write to a key at or below a read of that key by *another* transaction
//! would change what that reader saw after the fact. So the leader pushes such
//! a write above the cached read timestamp; the writer must then refresh its
//! own reads to the new timestamp or restart. This is what makes Concord's
//! transactions serializable rather than snapshot-isolated.
//!
//! Memory is bounded: when the cache grows past its limit, the oldest half of
//! its entries is folded into a *low water mark*, a timestamp below which every
//! key counts as read. Folding only ever raises what the cache reports, so it
//! can push more writes than necessary but never fewer. A new leader starts
//! with a low water mark at its clock plus the max offset, above any read the
//! previous leader may have served.
//!
//! Spans are kept as disjoint segments ordered by start key, so a lookup is
//! one ordered-map probe however many scans were recorded. Adding a span
//! cuts the segments it overlaps and raises each piece to the new read:
//!
//! ```text
//! before:   [b────e)@7          [m──p)@9
//! add:          [d──────────────────o)@8
//! after:    [b─d)@7 [d─e)@8 [e─m)@8 [m──p)@9   (adjacent equal pieces merge:
//!                   [d──────m)@8                 three segments remain)
//! ```
//!
//! A merged piece keeps one reader: the newest, or none when two readers
//! share the top timestamp. Forgetting an older reader is safe because a
//! transaction writes at or above its own read timestamp, so a read below
//! the newest one never pushes a write the newest one does not.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Included, Unbounded};

use concord_hlc::Timestamp;

/// Who read: the reading transaction, or `None` if several did (or none).
type Reader = Option<Vec<u8>>;

#[derive(Clone, Debug)]
struct Entry {
    ts: Timestamp,
    reader: Reader,
}

/// The timestamp cache of one range.
#[derive(Debug)]
pub struct TimestampCache {
    low_water: Timestamp,
    points: BTreeMap<Vec<u8>, Entry>,
    /// Disjoint segments: start -> (end, read); an empty end is the end of
    /// the keyspace.
    spans: BTreeMap<Vec<u8>, (Vec<u8>, Entry)>,
    max_entries: usize,
}

fn merge(existing: &mut Entry, ts: Timestamp, reader: &Reader) {
    if ts > existing.ts {
        *existing = Entry {
            ts,
            reader: reader.clone(),
        };
    } else if ts == existing.ts && existing.reader != *reader {
        existing.reader = None;
    }
}

impl TimestampCache {
    /// An empty cache whose low water mark is `low_water`.
    pub fn new(low_water: Timestamp, max_entries: usize) -> Self {
        TimestampCache {
            low_water,
            points: BTreeMap::new(),
            spans: BTreeMap::new(),
            max_entries: max_entries.max(2),
        }
    }

    /// Forgets everything below `ts`: every key counts as read at `ts`.
    pub fn set_low_water(&mut self, ts: Timestamp) {
        if ts > self.low_water {
            self.low_water = ts;
        }
    }

    /// The low water mark.
    pub fn low_water(&self) -> Timestamp {
        self.low_water
    }

    /// Records a read of one key at `ts` by `txn`.
    pub fn add_point(&mut self, key: &[u8], ts: Timestamp, txn: Option<&[u8]>) {
        if ts <= self.low_water {
            return;
        }
        let reader = txn.map(|t| t.to_vec());
        match self.points.get_mut(key) {
            Some(e) => merge(e, ts, &reader),
            None => {
                self.points.insert(key.to_vec(), Entry { ts, reader });
            }
        }
        self.maybe_fold();
    }

    /// Records a read of `[start, end)` at `ts` by `txn` (`end` empty: to the
    /// end of the keyspace).
    pub fn add_span(&mut self, start: &[u8], end: &[u8], ts: Timestamp, txn: Option<&[u8]>) {
        if ts <= self.low_water || (!end.is_empty() && start >= end) {
            return;
        }
        let new = Entry {
            ts,
            reader: txn.map(|t| t.to_vec()),
        };
        // The segments that overlap [start, end): the one starting before
        // `start` if it reaches past it, then those starting inside.
        let mut overlapping: Vec<(Vec<u8>, Vec<u8>, Entry)> = Vec::new();
        if let Some((s, (e, _))) = self
            .spans
            .range::<[u8], _>((Unbounded, Excluded(start)))
            .next_back()
        {
            if e.is_empty() || e.as_slice() > start {
                let s = s.clone();
                let (e, entry) = self.spans.remove(&s).expect("invariant: key just seen");
                overlapping.push((s, e, entry));
            }
        }
        let inside: Vec<Vec<u8>> = self
            .spans
            .range::<[u8], _>((Included(start), Unbounded))
            .take_while(|(s, _)| end.is_empty() || s.as_slice() < end)
            .map(|(s, _)| s.clone())
            .collect();
        for s in inside {
            let (e, entry) = self.spans.remove(&s).expect("invariant: key just seen");
            overlapping.push((s, e, entry));
        }
        // Rebuild [start, end) piece by piece, and the parts of the first
        // and last overlapped segments that stick out of it.
        let mut pieces: Vec<(Vec<u8>, Vec<u8>, Entry)> = Vec::new();
        let mut cursor = start.to_vec();
        for (s, e, entry) in overlapping {
            if s.as_slice() < start {
                pieces.push((s.clone(), start.to_vec(), entry.clone()));
            } else if s > cursor {
                pieces.push((cursor.clone(), s.clone(), new.clone()));
                cursor = s.clone();
            }
            let seg_past_end = !end.is_empty() && (e.is_empty() || e.as_slice() > end);
            let piece_end = if seg_past_end {
                end.to_vec()
            } else {
                e.clone()
            };
            let mut merged = entry.clone();
            merge(&mut merged, ts, &new.reader);
            pieces.push((cursor.clone(), piece_end.clone(), merged));
            if seg_past_end {
                pieces.push((end.to_vec(), e, entry));
            }
            cursor = piece_end;
        }
        // What is left of [start, end) after the last segment (an empty
        // cursor means a segment already ran to the end of the keyspace).
        let covered = !pieces.is_empty() && cursor.is_empty();
        if !covered && (end.is_empty() || cursor.as_slice() < end) {
            pieces.push((cursor, end.to_vec(), new));
        }
        for (s, e, entry) in pieces {
            self.insert_segment(s, e, entry);
        }
        self.maybe_fold();
    }

    /// Inserts a segment, merging it into its left neighbour when that one
    /// ends where it starts and holds the same read.
    fn insert_segment(&mut self, start: Vec<u8>, end: Vec<u8>, entry: Entry) {
        if let Some((_, (prev_end, prev))) = self
            .spans
            .range_mut::<[u8], _>((Unbounded, Excluded(start.as_slice())))
            .next_back()
        {
            if *prev_end == start && prev.ts == entry.ts && prev.reader == entry.reader {
                *prev_end = end;
                return;
            }
        }
        self.spans.insert(start, (end, entry));
    }

    /// The highest read timestamp of `key` by any transaction other than
    /// `txn`; reads by `txn` itself do not count (a transaction may write what
    /// it read).
    pub fn max_read(&self, key: &[u8], txn: Option<&[u8]>) -> Timestamp {
        let counts = |e: &Entry| match (&e.reader, txn) {
            (Some(r), Some(t)) => r.as_slice() != t,
            _ => true,
        };
        let mut max = self.low_water;
        if let Some(e) = self.points.get(key) {
            if counts(e) && e.ts > max {
                max = e.ts;
            }
        }
        if let Some((_, (en, e))) = self
            .spans
            .range::<[u8], _>((Unbounded, Included(key)))
            .next_back()
        {
            let covers = en.is_empty() || key < en.as_slice();
            if covers && counts(e) && e.ts > max {
                max = e.ts;
            }
        }
        max
    }

    /// Number of single-key entries held.
    pub fn points_len(&self) -> usize {
        self.points.len()
    }

    /// Number of span entries held.
    pub fn spans_len(&self) -> usize {
        self.spans.len()
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.points.len() + self.spans.len()
    }

    /// Whether the cache holds no entries (the low water mark still counts).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn maybe_fold(&mut self) {
        if self.len() <= self.max_entries {
            return;
        }
        let mut all: Vec<Timestamp> = self
            .points
            .values()
            .map(|e| e.ts)
            .chain(self.spans.values().map(|(_, e)| e.ts))
            .collect();
        all.sort();
        let cutoff = all[all.len() / 2];
        self.set_low_water(cutoff);
        self.points.retain(|_, e| e.ts > cutoff);
        self.spans.retain(|_, (_, e)| e.ts > cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(w: u64) -> Timestamp {
        Timestamp::new(w, 0)
    }

    #[test]
    fn reads_by_others_push_but_own_reads_do_not() {
        let mut c = TimestampCache::new(ts(1), 100);
        c.add_point(b"a", ts(10), Some(b"t1"));
        assert_eq!(c.max_read(b"a", Some(b"t2")), ts(10));
        assert_eq!(
            c.max_read(b"a", Some(b"t1")),
            ts(1),
            "own read does not push"
        );
        c.add_point(b"a", ts(10), Some(b"t2"));
        assert_eq!(
            c.max_read(b"a", Some(b"t1")),
            ts(10),
            "a shared timestamp pushes both"
        );
        assert_eq!(c.max_read(b"b", None), ts(1));
    }

    #[test]
    fn spans_cover_their_keys_only() {
        let mut c = TimestampCache::new(ts(0), 100);
        c.add_span(b"b", b"d", ts(7), None);
        assert_eq!(c.max_read(b"c", None), ts(7));
        assert_eq!(c.max_read(b"d", None), ts(0));
        c.add_span(b"x", b"", ts(9), None);
        assert_eq!(c.max_read(b"zzzz", None), ts(9));
    }

    #[test]
    fn folding_never_lowers_what_is_reported() {
        let mut c = TimestampCache::new(ts(0), 10);
        for i in 0..100u64 {
            c.add_point(format!("k{i:03}").as_bytes(), ts(i + 1), None);
        }
        assert!(c.len() <= 10);
        for i in 0..100u64 {
            assert!(c.max_read(format!("k{i:03}").as_bytes(), None) >= ts(i + 1));
        }
    }

    #[test]
    fn overlapping_spans_report_the_newest_read_of_each_key() {
        let mut c = TimestampCache::new(ts(0), 1000);
        c.add_span(b"b", b"e", ts(7), None);
        c.add_span(b"m", b"p", ts(9), None);
        c.add_span(b"d", b"o", ts(8), None);
        let got: Vec<u64> = [b"a", b"b", b"d", b"e", b"h", b"m", b"o", b"p"]
            .iter()
            .map(|k| c.max_read(*k, None).wall)
            .collect();
        assert_eq!(got, vec![0, 7, 8, 8, 8, 9, 9, 0]);
        assert_eq!(c.spans_len(), 3, "[b,d)@7 [d,m)@8 [m,p)@9");
        // A newer read over everything collapses the segments into one.
        c.add_span(b"a", b"", ts(20), None);
        assert_eq!(c.spans_len(), 1);
        assert_eq!(c.max_read(b"zzz", None), ts(20));
    }

    #[test]
    fn spans_match_a_naive_list_of_reads() {
        // A deterministic generator, so a failure replays.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let key = |i: u64| vec![b'a' + i as u8];
        let mut c = TimestampCache::new(ts(0), 100_000);
        let mut naive: Vec<(Vec<u8>, Vec<u8>, u64)> = Vec::new();
        for round in 0..2000 {
            let a = next(20);
            let b = a + 1 + next(20 - a);
            let end = if b == 20 { Vec::new() } else { key(b) };
            let t = 1 + next(50);
            c.add_span(&key(a), &end, ts(t), None);
            naive.push((key(a), end, t));
            if round % 50 == 0 {
                for k in 0..20 {
                    let k = key(k);
                    let want = naive
                        .iter()
                        .filter(|(s, e, _)| *s <= k && (e.is_empty() || k < *e))
                        .map(|(_, _, t)| *t)
                        .max()
                        .unwrap_or(0);
                    assert_eq!(c.max_read(&k, None), ts(want), "key {k:?} round {round}");
                }
                // Segments stay disjoint and ordered.
                let mut prev_end: Option<Vec<u8>> = None;
                for (s, (e, _)) in &c.spans {
                    if let Some(pe) = &prev_end {
                        assert!(!pe.is_empty() && pe <= s, "overlap at {s:?}");
                    }
                    assert!(e.is_empty() || s < e);
                    prev_end = Some(e.clone());
                }
                assert!(c.spans_len() <= 20, "at most one segment per key");
            }
        }
    }

    #[test]
    fn a_span_read_by_another_transaction_pushes_even_inside_an_own_read() {
        let mut c = TimestampCache::new(ts(0), 100);
        c.add_span(b"a", b"z", ts(5), Some(b"t1"));
        c.add_span(b"c", b"d", ts(6), Some(b"t2"));
        assert_eq!(c.max_read(b"c", Some(b"t1")), ts(6));
        assert_eq!(c.max_read(b"b", Some(b"t1")), ts(0));
        assert_eq!(c.max_read(b"b", Some(b"t2")), ts(5));
    }
}
