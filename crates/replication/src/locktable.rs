//! Unreplicated locks: the leader's in-memory lock table.
//!
//! A transaction that already has a record (its first lock or prepare wrote
//! it) takes its further `SELECT … FOR UPDATE` and UPDATE-in-a-block locks
//! here, on the leader of each key's range, instead of writing a lock-only
//! intent through Raft: a lock costs a ReadIndex round (the leader confirms
//! it leads, as for a read) rather than an fsynced log entry on a majority.
//! CockroachDB's unreplicated locks make the same trade.
//!
//! ```text
//!  Prepare{lock-only, in_memory} ─► ReadIndex, latches, same checks as a
//!                                   replicated lock (intents, locks, newer
//!                                   versions, tscache) ─► table[key] = txn
//!  another txn's write or lock on key ─► WriteIntent{holder} ─► it pushes
//!                                   the holder's record, exactly as for an
//!                                   intent (wait, abort, or resolve)
//!  ResolveIntents(txn, span)      ─► entries of txn in span removed
//!  leadership changes             ─► table cleared
//! ```
//!
//! A lock is a promise to make conflicting writers wait, not what makes
//! transactions serializable: the holder read the key at the lock's
//! timestamp, and its commit refreshes that read. So losing the table (a
//! new leader, a split moving the key to another range, a full table) only
//! costs the holder a possible retry (40001) if someone else wrote the key
//! meanwhile; it never lets a stale read commit.
//!
//! The table is bounded ([`MAX_ENTRIES`]); a request that would pass the
//! bound, or locks more than [`MAX_KEYS_PER_REQUEST`] keys at once, is
//! replicated as before. Entries whose transaction ended without resolving
//! them (its cleanup lost) stay until a conflicting writer pushes the
//! finished record and resolves them, or until leadership changes.

use std::collections::BTreeMap;

use concord_proto::meta::TxnMeta;

/// The most locks one range's leader holds in memory.
pub const MAX_ENTRIES: usize = 65_536;
/// A lock request for more keys than this is replicated (a big `SELECT …
/// FOR UPDATE`), so one request cannot fill the table.
pub const MAX_KEYS_PER_REQUEST: usize = 1024;

/// Locks held in memory by a range's leader: key → holder.
#[derive(Debug, Default)]
pub struct LockTable {
    locks: BTreeMap<Vec<u8>, TxnMeta>,
}

impl LockTable {
    /// The transaction holding `key`, if any.
    pub fn holder(&self, key: &[u8]) -> Option<&TxnMeta> {
        self.locks.get(key)
    }

    /// Whether `n` more locks fit (and `n` is small enough to be held here).
    pub fn has_room(&self, n: usize) -> bool {
        n <= MAX_KEYS_PER_REQUEST && self.locks.len() + n <= MAX_ENTRIES
    }

    /// Records `holder` as holding `key`.
    pub fn insert(&mut self, key: Vec<u8>, holder: TxnMeta) {
        self.locks.insert(key, holder);
    }

    /// Removes the locks `txn_id` holds on `start` (`end` empty) or in
    /// `[start, end)`; returns how many.
    pub fn release(&mut self, txn_id: &[u8], start: &[u8], end: &[u8]) -> usize {
        if end.is_empty() {
            return match self.locks.get(start) {
                Some(h) if h.id == txn_id => {
                    self.locks.remove(start);
                    1
                }
                _ => 0,
            };
        }
        if start >= end {
            return 0;
        }
        let keys: Vec<Vec<u8>> = self
            .locks
            .range(start.to_vec()..end.to_vec())
            .filter(|(_, h)| h.id == txn_id)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            self.locks.remove(k);
        }
        keys.len()
    }

    /// Drops the locks on keys at or after `from` (a split gave them to the
    /// right side, which does not know them).
    pub fn truncate_from(&mut self, from: &[u8]) {
        self.locks.split_off(from);
    }

    /// Forgets every lock (leadership changed).
    pub fn clear(&mut self) {
        self.locks.clear();
    }

    /// How many locks are held.
    pub fn len(&self) -> usize {
        self.locks.len()
    }

    /// Whether no lock is held.
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(id: u8) -> TxnMeta {
        TxnMeta {
            id: vec![id],
            ..Default::default()
        }
    }

    #[test]
    fn release_removes_only_the_transactions_own_locks_in_the_span() {
        let mut t = LockTable::default();
        t.insert(b"a".to_vec(), txn(1));
        t.insert(b"b".to_vec(), txn(2));
        t.insert(b"c".to_vec(), txn(1));
        t.insert(b"d".to_vec(), txn(1));
        assert_eq!(t.release(&[1], b"a", b"d"), 2, "a and c, not b, not d");
        assert_eq!(t.holder(b"b").map(|h| h.id.clone()), Some(vec![2]));
        assert_eq!(t.holder(b"d").map(|h| h.id.clone()), Some(vec![1]));
        assert_eq!(t.release(&[2], b"d", b""), 0, "d is not txn 2's");
        assert_eq!(t.release(&[1], b"d", b""), 1);
        assert_eq!(t.release(&[2], b"b", b""), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn a_split_drops_the_locks_of_the_right_side() {
        let mut t = LockTable::default();
        for k in [b"a", b"m", b"z"] {
            t.insert(k.to_vec(), txn(1));
        }
        t.truncate_from(b"m");
        assert_eq!(t.len(), 1);
        assert!(t.holder(b"a").is_some());
        assert!(t.holder(b"m").is_none());
    }

    #[test]
    fn room_is_bounded_per_request_and_per_table() {
        let t = LockTable::default();
        assert!(t.has_room(MAX_KEYS_PER_REQUEST));
        assert!(!t.has_room(MAX_KEYS_PER_REQUEST + 1));
        let mut full = LockTable::default();
        for i in 0..MAX_ENTRIES as u32 {
            full.insert(i.to_be_bytes().to_vec(), txn(1));
        }
        assert!(full.has_room(0));
        assert!(!full.has_room(1));
    }
}
