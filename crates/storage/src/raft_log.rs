//! A range's Raft log and Raft state in the `raft` column family, exposed to
//! raft-rs through its [`raft::Storage`] trait.
//!
//! The log is Concord's write-ahead log: a command is durable once its entry
//! is in this log on a quorum, long before it is applied. Writes go through
//! [`RaftLogStorage::append`] and [`RaftLogStorage::set_hard_state`], which
//! add to a [`WriteBatch`] that the replication layer's ready loop writes,
//! together with every other replica's, in one synced RocksDB write (group
//! commit). The in-memory bookkeeping (first/last index, recent terms) is
//! updated at append time; raft-rs only reads appended entries back after the
//! ready loop has written the batch and called `advance`.
//!
//! ```text
//! raft CF, per range:   [range id][0x01]            HardState {term, vote, commit}
//!                       [range id][0x02]            AppliedState {index, term}
//!                       [range id][0x03][index]     Entry
//!                       [range id][0x04]            ConfState (voters, learners)
//!                       [range id][0x05]            TruncatedState {index, term}
//! ```
//!
//! # Not done yet
//! - Log truncation behind the applied index and snapshots for followers that
//!   fall behind it (the ranges issue). `snapshot()` reports
//!   `SnapshotTemporarilyUnavailable` until then, and the log is kept whole.

use std::collections::BTreeMap;
use std::sync::Arc;

use concord_proto::meta::AppliedState;
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::engine::{Cf, Engine, WriteBatch};
use crate::keys;
use crate::{Error, Result};

const RAFT_CONF_STATE: u8 = 0x04;
const RAFT_TRUNCATED_STATE: u8 = 0x05;

fn raft_key(range_id: u64, suffix: u8) -> Vec<u8> {
    let mut k = range_id.to_be_bytes().to_vec();
    k.push(suffix);
    k
}

/// How many recent entry terms are kept in memory for `term()`.
const TERM_CACHE: usize = 4096;

/// The Raft storage of one range on one node.
pub struct RaftLogStorage {
    range_id: u64,
    engine: Arc<dyn Engine>,
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the last entry removed from the log (0, 0 if none).
    truncated: (u64, u64),
    last_index: u64,
    terms: BTreeMap<u64, u64>,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Corruption(format!("{what}: {e}"))
}

fn to_raft_err(e: Error) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

impl RaftLogStorage {
    /// Writes the initial Raft state of a new range replica: an empty log and
    /// the given configuration. Used at bootstrap (and later by splits).
    pub fn initialize(batch: &mut WriteBatch, range_id: u64, conf_state: &ConfState) -> Result<()> {
        let hs = HardState::default();
        batch.put(
            Cf::Raft,
            keys::raft_hard_state(range_id),
            hs.write_to_bytes().map_err(|e| corrupt("hard state", e))?,
        );
        batch.put(
            Cf::Raft,
            raft_key(range_id, RAFT_CONF_STATE),
            conf_state
                .write_to_bytes()
                .map_err(|e| corrupt("conf state", e))?,
        );
        Ok(())
    }

    /// Loads a range's Raft state from the engine.
    pub fn open(engine: Arc<dyn Engine>, range_id: u64) -> Result<Self> {
        let hard_state = match engine.get(Cf::Raft, &keys::raft_hard_state(range_id))? {
            Some(raw) => HardState::parse_from_bytes(&raw).map_err(|e| corrupt("hard state", e))?,
            None => HardState::default(),
        };
        let conf_state = match engine.get(Cf::Raft, &raft_key(range_id, RAFT_CONF_STATE))? {
            Some(raw) => ConfState::parse_from_bytes(&raw).map_err(|e| corrupt("conf state", e))?,
            None => ConfState::default(),
        };
        let truncated = match engine.get(Cf::Raft, &raft_key(range_id, RAFT_TRUNCATED_STATE))? {
            Some(raw) => {
                let s = AppliedState::decode(raw.as_slice())
                    .map_err(|e| corrupt("truncated state", e))?;
                (s.index, s.term)
            }
            None => (0, 0),
        };
        let mut storage = RaftLogStorage {
            range_id,
            engine,
            hard_state,
            conf_state,
            truncated,
            last_index: truncated.0,
            terms: BTreeMap::new(),
        };
        // Find the last entry: scan the log keys backwards is not in the
        // engine interface, so walk the tail forward from the truncation point
        // in chunks; logs are short once truncation (issue 3) runs.
        let lower = keys::raft_log_entry(range_id, truncated.0 + 1);
        let upper = keys::raft_log_entry(range_id, u64::MAX);
        let mut it = storage.engine.iter(Cf::Raft, &lower, Some(&upper));
        while it.valid()? {
            let index = keys::decode_raft_log_index(it.key())?;
            let entry = Entry::parse_from_bytes(it.value()).map_err(|e| corrupt("entry", e))?;
            storage.last_index = index;
            storage.terms.insert(index, entry.term);
            if storage.terms.len() > TERM_CACHE {
                storage.terms.pop_first();
            }
            it.next();
        }
        drop(it);
        Ok(storage)
    }

    /// The range this log belongs to.
    pub fn range_id(&self) -> u64 {
        self.range_id
    }

    /// The persisted hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The current configuration.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// The index of the last entry in the log.
    pub fn last_index_value(&self) -> u64 {
        self.last_index
    }

    /// Appends entries (replacing any conflicting suffix) to `batch`.
    pub fn append(&mut self, entries: &[Entry], batch: &mut WriteBatch) -> Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.truncated.0 {
            return Err(Error::Corruption(format!(
                "range {}: append at {} at or below the truncation point {}",
                self.range_id, first.index, self.truncated.0
            )));
        }
        let new_last = entries.last().map(|e| e.index).unwrap_or(first.index);
        for e in entries {
            batch.put(
                Cf::Raft,
                keys::raft_log_entry(self.range_id, e.index),
                e.write_to_bytes().map_err(|err| corrupt("entry", err))?,
            );
            self.terms.insert(e.index, e.term);
        }
        if new_last < self.last_index {
            batch.delete_range(
                Cf::Raft,
                keys::raft_log_entry(self.range_id, new_last + 1),
                keys::raft_log_entry(self.range_id, self.last_index + 1),
            );
            let stale: Vec<u64> = self.terms.range(new_last + 1..).map(|(i, _)| *i).collect();
            for i in stale {
                self.terms.remove(&i);
            }
        }
        self.last_index = new_last;
        while self.terms.len() > TERM_CACHE {
            self.terms.pop_first();
        }
        Ok(())
    }

    /// Records a new hard state in `batch`.
    pub fn set_hard_state(&mut self, hs: &HardState, batch: &mut WriteBatch) -> Result<()> {
        batch.put(
            Cf::Raft,
            keys::raft_hard_state(self.range_id),
            hs.write_to_bytes().map_err(|e| corrupt("hard state", e))?,
        );
        self.hard_state = hs.clone();
        Ok(())
    }

    /// Records a new configuration in `batch` (when a conf change applies).
    pub fn set_conf_state(&mut self, cs: &ConfState, batch: &mut WriteBatch) -> Result<()> {
        batch.put(
            Cf::Raft,
            raft_key(self.range_id, RAFT_CONF_STATE),
            cs.write_to_bytes().map_err(|e| corrupt("conf state", e))?,
        );
        self.conf_state = cs.clone();
        Ok(())
    }

    fn read_entry(&self, index: u64) -> Result<Entry> {
        let raw = self
            .engine
            .get(Cf::Raft, &keys::raft_log_entry(self.range_id, index))?
            .ok_or_else(|| {
                Error::Corruption(format!(
                    "range {}: raft log entry {index} missing",
                    self.range_id
                ))
            })?;
        Entry::parse_from_bytes(&raw).map_err(|e| corrupt("entry", e))
    }
}

/// Reads a range's applied state (index 0 if nothing was applied yet).
pub fn load_applied_state(engine: &dyn Engine, range_id: u64) -> Result<AppliedState> {
    match engine.get(Cf::Raft, &keys::raft_applied_state(range_id))? {
        Some(raw) => AppliedState::decode(raw.as_slice()).map_err(|e| corrupt("applied state", e)),
        None => Ok(AppliedState::default()),
    }
}

/// Records a range's applied state in `batch`, next to the data it applied.
pub fn save_applied_state(batch: &mut WriteBatch, range_id: u64, state: &AppliedState) {
    batch.put(
        Cf::Raft,
        keys::raft_applied_state(range_id),
        state.encode_to_vec(),
    );
}

impl raft::Storage for RaftLogStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into();
        let lower = keys::raft_log_entry(self.range_id, low);
        let upper = keys::raft_log_entry(self.range_id, high);
        let mut it = self.engine.iter(Cf::Raft, &lower, Some(&upper));
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        let mut expect = low;
        while it.valid().map_err(to_raft_err)? {
            let entry = Entry::parse_from_bytes(it.value())
                .map_err(|e| to_raft_err(corrupt("entry", e)))?;
            if entry.index != expect {
                return Err(to_raft_err(Error::Corruption(format!(
                    "range {}: raft log has a gap at {expect}",
                    self.range_id
                ))));
            }
            size += u64::from(protobuf::Message::compute_size(&entry));
            out.push(entry);
            expect += 1;
            if let Some(max) = max_size {
                if size > max && out.len() > 1 {
                    out.pop();
                    break;
                }
            }
            it.next();
        }
        if out.is_empty() && low < high {
            return Err(to_raft_err(Error::Corruption(format!(
                "range {}: raft log entries [{low}, {high}) missing",
                self.range_id
            ))));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated.0 {
            return Ok(self.truncated.1);
        }
        if idx < self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if let Some(t) = self.terms.get(&idx) {
            return Ok(*t);
        }
        self.read_entry(idx).map(|e| e.term).map_err(to_raft_err)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated.0 + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}
