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

use std::collections::BTreeMap;

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
    spans: Vec<(Vec<u8>, Vec<u8>, Entry)>,
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
            spans: Vec::new(),
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
        if ts <= self.low_water {
            return;
        }
        let reader = txn.map(|t| t.to_vec());
        if let Some((_, _, e)) = self
            .spans
            .iter_mut()
            .find(|(s, en, _)| s == start && en == end)
        {
            merge(e, ts, &reader);
        } else {
            self.spans
                .push((start.to_vec(), end.to_vec(), Entry { ts, reader }));
        }
        self.maybe_fold();
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
        for (s, en, e) in &self.spans {
            let covers = s.as_slice() <= key && (en.is_empty() || key < en.as_slice());
            if covers && counts(e) && e.ts > max {
                max = e.ts;
            }
        }
        max
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
            .chain(self.spans.iter().map(|(_, _, e)| e.ts))
            .collect();
        all.sort();
        let cutoff = all[all.len() / 2];
        self.set_low_water(cutoff);
        self.points.retain(|_, e| e.ts > cutoff);
        self.spans.retain(|(_, _, e)| e.ts > cutoff);
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
}
