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
//!                       [range id][0x06]            bytes held by the range (u64)
//! ```
//!
//! # The entry cache
//! raft-rs reads every entry back through [`raft::Storage::entries`] after
//! it is persisted: to apply it once committed (on every replica) and to
//! send it to followers. Each such read was a RocksDB iterator over the
//! `raft` CF (a seek through the memtable and every level), about a tenth
//! of a follower's CPU under pgbench. The storage therefore keeps the
//! newest entries it appended in memory, a contiguous run ending at the last
//! index:
//!
//! ```text
//!   engine:  [truncated+1 ........................................ last]
//!   cache:                         [cache_first ................. last]
//!   entries(low, high): low >= cache_first -> cloned from the cache
//!                       otherwise          -> read from the engine
//! ```
//!
//! It mirrors the log exactly: `append` adds to it (dropping a conflicting
//! suffix first, as in the engine), `truncate` and `apply_snapshot` drop
//! from it what they drop from the engine. It holds at most
//! [`ENTRY_CACHE_MAX_BYTES`] per range, and every range of the process
//! together at most [`ENTRY_CACHE_BUDGET`]: past either, the oldest entries
//! go (an append that does not fit empties the range's cache), and reads
//! fall back to the engine. Entries share their payload (`Bytes`), so a
//! cached entry costs a clone of a few fields to hand out.
//!
//! # Truncation and snapshots
//! Once entries are applied and their effects durable, the replication layer
//! [`RaftLogStorage::truncate`]s the log behind them. A follower that needs an
//! entry that is gone gets a snapshot instead: [`raft::Storage::snapshot`]
//! builds one from the engine at the durable applied index (the range's
//! descriptor and every key of its span, see [`crate::snapshot`]), and the
//! receiver replaces its log with [`RaftLogStorage::apply_snapshot`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use concord_proto::meta::{AppliedState, RangeDescriptor};
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::engine::{Cf, Engine, WriteBatch};
use crate::keys;
use crate::{Error, Result};

/// The index and term at which a new range's log starts.
pub const RAFT_INITIAL_INDEX: u64 = 5;
/// See [`RAFT_INITIAL_INDEX`].
pub const RAFT_INITIAL_TERM: u64 = 5;

const RAFT_CONF_STATE: u8 = 0x04;
const RAFT_TRUNCATED_STATE: u8 = 0x05;
const RAFT_RANGE_BYTES: u8 = 0x06;

fn raft_key(range_id: u64, suffix: u8) -> Vec<u8> {
    let mut k = range_id.to_be_bytes().to_vec();
    k.push(suffix);
    k
}

/// How many recent entry terms are kept in memory for `term()`.
const TERM_CACHE: usize = 4096;

/// At most this many bytes of entries are cached per range.
pub const ENTRY_CACHE_MAX_BYTES: usize = 1 << 20;
/// At most this many bytes of entries are cached by all ranges of the
/// process together.
pub const ENTRY_CACHE_BUDGET: usize = 256 << 20;

/// Bytes cached by every [`EntryCache`] of the process.
static ENTRY_CACHE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// The newest entries of one range's log, contiguous and ending at its last
/// index (see the module doc).
#[derive(Default)]
struct EntryCache {
    entries: VecDeque<Entry>,
    bytes: usize,
}

fn entry_bytes(e: &Entry) -> usize {
    e.data.len() + e.context.len() + 32
}

impl EntryCache {
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index)
    }

    /// Adds entries that the log appends after dropping everything from
    /// their first index on.
    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first().map(|e| e.index) else {
            return;
        };
        // Drop the conflicting suffix (or everything, if the new entries do
        // not follow what is cached).
        match self.first() {
            Some(cf) if first > cf => {
                while self.entries.back().is_some_and(|e| e.index >= first) {
                    self.pop_back();
                }
                if self.entries.back().is_some_and(|e| e.index + 1 != first) {
                    self.clear();
                }
            }
            _ => self.clear(),
        }
        let add: usize = entries.iter().map(entry_bytes).sum();
        if add > ENTRY_CACHE_MAX_BYTES {
            self.clear();
            return;
        }
        while !self.entries.is_empty()
            && (self.bytes + add > ENTRY_CACHE_MAX_BYTES
                || ENTRY_CACHE_BYTES.load(Ordering::Relaxed) + add > ENTRY_CACHE_BUDGET)
        {
            self.pop_front();
        }
        if ENTRY_CACHE_BYTES.load(Ordering::Relaxed) + add > ENTRY_CACHE_BUDGET {
            return;
        }
        self.entries.extend(entries.iter().cloned());
        self.bytes += add;
        ENTRY_CACHE_BYTES.fetch_add(add, Ordering::Relaxed);
    }

    /// Drops the entries up to and including `index`.
    fn truncate(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index <= index) {
            self.pop_front();
        }
    }

    /// The entries `[low, high)`, if all of them are cached.
    fn get(&self, low: u64, high: u64) -> Option<impl Iterator<Item = &Entry>> {
        let first = self.first()?;
        let last = self.entries.back()?.index;
        if low < first || high > last + 1 || low >= high {
            return None;
        }
        let from = (low - first) as usize;
        Some(self.entries.range(from..from + (high - low) as usize))
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.release(entry_bytes(&e));
        }
    }

    fn pop_back(&mut self) {
        if let Some(e) = self.entries.pop_back() {
            self.release(entry_bytes(&e));
        }
    }

    fn release(&mut self, n: usize) {
        self.bytes -= n;
        ENTRY_CACHE_BYTES.fetch_sub(n, Ordering::Relaxed);
    }

    fn clear(&mut self) {
        self.entries.clear();
        ENTRY_CACHE_BYTES.fetch_sub(self.bytes, Ordering::Relaxed);
        self.bytes = 0;
    }
}

impl Drop for EntryCache {
    fn drop(&mut self) {
        self.clear();
    }
}

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
    /// The range's descriptor as this replica knows it (for snapshots).
    descriptor: Option<RangeDescriptor>,
    /// The applied state that is durable in the engine: what a snapshot taken
    /// now contains.
    durable_applied: AppliedState,
    /// Snapshots generated for followers.
    snapshots_sent: Arc<AtomicU64>,
    /// The newest entries, to read them back without the engine.
    cache: EntryCache,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Corruption(format!("{what}: {e}"))
}

fn to_raft_err(e: Error) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

impl RaftLogStorage {
    /// Writes the initial Raft state of a new range: an empty log that
    /// starts after [`RAFT_INITIAL_INDEX`] (as if a snapshot at that index had
    /// been applied), the given configuration, and an applied state at that
    /// index. Used at bootstrap and by splits, on every replica alike.
    ///
    /// Starting above zero means a replica created later from scratch (a new
    /// member) can never be brought up from the log alone: the leader must
    /// send it a snapshot, which carries the range's data. Data that exists
    /// before the range's first entry (the right side of a split) is thereby
    /// never skipped.
    ///
    /// No hard state is written: [`RaftLogStorage::open`] derives the
    /// initial one (term and commit at the initial index) from the
    /// truncation point. A replica of the range may already exist on this
    /// node, created empty by a message of the range's new leader (a vote
    /// or an append that arrived before this node applied the split); the
    /// hard state it wrote stays, whatever order its writes and this batch
    /// land in, and with it its vote in a term above the initial one, which
    /// must never be forgotten (a second vote in that term could elect two
    /// leaders).
    pub fn initialize(batch: &mut WriteBatch, range_id: u64, conf_state: &ConfState) -> Result<()> {
        batch.put(
            Cf::Raft,
            raft_key(range_id, RAFT_CONF_STATE),
            conf_state
                .write_to_bytes()
                .map_err(|e| corrupt("conf state", e))?,
        );
        let initial = AppliedState {
            index: RAFT_INITIAL_INDEX,
            term: RAFT_INITIAL_TERM,
        };
        batch.put(
            Cf::Raft,
            raft_key(range_id, RAFT_TRUNCATED_STATE),
            initial.encode_to_vec(),
        );
        save_applied_state(batch, range_id, &initial);
        Ok(())
    }

    /// Removes every trace of a range's Raft state (the replica is destroyed).
    pub fn destroy(batch: &mut WriteBatch, range_id: u64) {
        batch.delete_range(
            Cf::Raft,
            keys::raft_range_start(range_id),
            keys::raft_range_end(range_id),
        );
    }

    /// Loads a range's Raft state from the engine.
    pub fn open(engine: Arc<dyn Engine>, range_id: u64) -> Result<Self> {
        let mut hard_state = match engine.get(Cf::Raft, &keys::raft_hard_state(range_id))? {
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
        // Everything up to the truncation point is committed, and a
        // replica's term is never below that of an entry it holds. A new
        // range has no hard state yet, and a replica created empty and then
        // initialized by a split (see `initialize`) has one below them:
        // raise it. A vote belongs to its term, so it goes if the term moves.
        if hard_state.term < truncated.1 {
            hard_state.term = truncated.1;
            hard_state.vote = 0;
        }
        if hard_state.commit < truncated.0 {
            hard_state.commit = truncated.0;
        }
        let mut storage = RaftLogStorage {
            range_id,
            engine,
            hard_state,
            conf_state,
            truncated,
            last_index: truncated.0,
            terms: BTreeMap::new(),
            descriptor: None,
            durable_applied: AppliedState::default(),
            snapshots_sent: Arc::new(AtomicU64::new(0)),
            cache: EntryCache::default(),
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

    /// Sets the descriptor that snapshots of this range carry.
    pub fn set_descriptor(&mut self, desc: RangeDescriptor) {
        self.descriptor = Some(desc);
    }

    /// Records the applied state whose data is durable in the engine.
    pub fn set_durable_applied(&mut self, applied: AppliedState) {
        self.durable_applied = applied;
    }

    /// The counter of snapshots generated for followers.
    pub fn snapshots_sent(&self) -> Arc<AtomicU64> {
        self.snapshots_sent.clone()
    }

    /// The index of the first entry still in the log.
    pub fn first_index_value(&self) -> u64 {
        self.truncated.0 + 1
    }

    /// Removes log entries up to and including `index` (which must be
    /// applied) and records the new truncation point in `batch`. The entries
    /// are the write-ahead log of data that is now durable in the engine.
    pub fn truncate(&mut self, index: u64, batch: &mut WriteBatch) -> Result<()> {
        if index <= self.truncated.0 || index > self.last_index {
            return Ok(());
        }
        let term = match self.terms.get(&index) {
            Some(t) => *t,
            None => self.read_entry(index)?.term,
        };
        batch.delete_range(
            Cf::Raft,
            keys::raft_log_entry(self.range_id, self.truncated.0 + 1),
            keys::raft_log_entry(self.range_id, index + 1),
        );
        let state = AppliedState { index, term };
        batch.put(
            Cf::Raft,
            raft_key(self.range_id, RAFT_TRUNCATED_STATE),
            state.encode_to_vec(),
        );
        self.truncated = (index, term);
        self.terms.retain(|i, _| *i > index);
        self.cache.truncate(index);
        Ok(())
    }

    /// Replaces the log with a snapshot's position: every entry goes, the
    /// log restarts after the snapshot's index, and the configuration and
    /// commit index follow the snapshot. The caller writes the data.
    pub fn apply_snapshot(
        &mut self,
        meta: &SnapshotMetadata,
        batch: &mut WriteBatch,
    ) -> Result<()> {
        batch.delete_range(
            Cf::Raft,
            keys::raft_log_entry(self.range_id, 0),
            keys::raft_log_entry(self.range_id, u64::MAX),
        );
        let state = AppliedState {
            index: meta.index,
            term: meta.term,
        };
        batch.put(
            Cf::Raft,
            raft_key(self.range_id, RAFT_TRUNCATED_STATE),
            state.encode_to_vec(),
        );
        self.truncated = (meta.index, meta.term);
        self.last_index = meta.index;
        self.terms.clear();
        self.cache.clear();
        let mut hs = self.hard_state.clone();
        hs.term = hs.term.max(meta.term);
        hs.commit = hs.commit.max(meta.index);
        self.set_hard_state(&hs, batch)?;
        let cs = meta.get_conf_state().clone();
        self.set_conf_state(&cs, batch)?;
        Ok(())
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
        self.cache.append(entries);
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

/// The bytes a range holds, as counted at apply time (0 if never counted).
pub fn load_range_bytes(engine: &dyn Engine, range_id: u64) -> Result<u64> {
    match engine.get(Cf::Raft, &raft_key(range_id, RAFT_RANGE_BYTES))? {
        Some(raw) => Ok(u64::from_be_bytes(
            raw.as_slice()
                .try_into()
                .map_err(|_| corrupt("range bytes", "not 8 bytes"))?,
        )),
        None => Ok(0),
    }
}

/// Records the bytes a range holds, next to the writes that changed it.
pub fn save_range_bytes(batch: &mut WriteBatch, range_id: u64, bytes: u64) {
    batch.put(
        Cf::Raft,
        raft_key(range_id, RAFT_RANGE_BYTES),
        bytes.to_be_bytes().to_vec(),
    );
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
        if let Some(cached) = self.cache.get(low, high) {
            let mut out: Vec<Entry> = cached.cloned().collect();
            raft::util::limit_size(&mut out, max_size);
            return Ok(out);
        }
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

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let Some(desc) = &self.descriptor else {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        };
        let applied = self.durable_applied;
        if applied.index < request_index || applied.index < self.truncated.0 {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let data = crate::snapshot::build(self.engine.as_ref(), desc).map_err(to_raft_err)?;
        let mut snap = Snapshot {
            data: data.encode_to_vec().into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = applied.index;
        meta.term = applied.term;
        meta.set_conf_state(self.conf_state.clone());
        self.snapshots_sent.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            range_id = self.range_id,
            to,
            index = applied.index,
            keys = data.kvs.len(),
            "sending a range snapshot"
        );
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryEngine;
    use raft::Storage as _;

    fn hs(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            ..Default::default()
        }
    }

    /// Opens range 7 after `before` (the hard state an empty replica wrote,
    /// if any) and a split's initialization, in either order.
    fn open_after(before: Option<HardState>, init_first: bool) -> HardState {
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let mut init = WriteBatch::new();
        RaftLogStorage::initialize(&mut init, 7, &ConfState::default()).unwrap();
        let mut own = WriteBatch::new();
        if let Some(h) = &before {
            own.put(
                Cf::Raft,
                keys::raft_hard_state(7),
                h.write_to_bytes().unwrap(),
            );
        }
        let (a, b) = if init_first { (init, own) } else { (own, init) };
        engine.write(a, false).unwrap();
        engine.write(b, false).unwrap();
        RaftLogStorage::open(engine, 7)
            .unwrap()
            .hard_state()
            .clone()
    }

    #[test]
    fn a_new_range_starts_at_the_initial_term_and_commit() {
        assert_eq!(open_after(None, true), hs(5, 0, 5));
    }

    #[test]
    fn a_split_keeps_the_vote_an_empty_replica_cast_whatever_lands_last() {
        // The new range's leader asked for a vote in term 6 before this
        // node applied the split; the empty replica voted for replica 2.
        for init_first in [true, false] {
            assert_eq!(
                open_after(Some(hs(6, 2, 0)), init_first),
                hs(6, 2, 5),
                "init_first={init_first}"
            );
        }
        // A pre-vote changes no term: nothing was written.
        assert_eq!(open_after(None, false), hs(5, 0, 5));
        // A hard state below the initial term is raised, and its vote
        // (of that older term) goes.
        assert_eq!(open_after(Some(hs(3, 1, 0)), false), hs(5, 0, 5));
    }

    /// Drives one range's log through appends (some replacing a suffix,
    /// some too large to cache), truncations and snapshots, in a seeded
    /// pseudo-random order, and after each step reads ranges of entries
    /// both through the storage (served by its entry cache where it can)
    /// and through a storage opened fresh from the engine (no cache): they
    /// must agree, entry for entry, whatever the size limit.
    #[test]
    fn the_entry_cache_always_agrees_with_the_engine() {
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let mut init = WriteBatch::new();
        RaftLogStorage::initialize(&mut init, 7, &ConfState::default()).unwrap();
        engine.write(init, false).unwrap();
        let mut log = RaftLogStorage::open(engine.clone(), 7).unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n.max(1)
        };
        let mut term = RAFT_INITIAL_TERM;
        let (mut from_cache, mut reads) = (0, 0);
        for step in 0..2_000 {
            let mut batch = WriteBatch::new();
            let (first, last) = (log.first_index_value(), log.last_index_value());
            match next(20) {
                // Replace a suffix (a new leader's entries) or append.
                0..=15 => {
                    let start = if next(4) == 0 {
                        first + next(last + 2 - first)
                    } else {
                        last + 1
                    };
                    if start < last + 1 {
                        term += 1;
                    }
                    let big = next(50) == 0;
                    let entries: Vec<Entry> = (0..1 + next(5))
                        .map(|i| Entry {
                            index: start + i,
                            term,
                            data: vec![
                                step as u8;
                                if big {
                                    ENTRY_CACHE_MAX_BYTES
                                } else {
                                    next(300) as usize
                                }
                            ]
                            .into(),
                            ..Default::default()
                        })
                        .collect();
                    log.append(&entries, &mut batch).unwrap();
                }
                16..=18 if last > first + 2 => {
                    log.truncate(first + next(last - first - 1), &mut batch)
                        .unwrap();
                }
                19 => {
                    let meta = SnapshotMetadata {
                        index: last + 1 + next(3),
                        term,
                        ..Default::default()
                    };
                    log.apply_snapshot(&meta, &mut batch).unwrap();
                }
                _ => continue,
            }
            engine.write(batch, false).unwrap();
            let fresh = RaftLogStorage::open(engine.clone(), 7).unwrap();
            let (first, last) = (log.first_index_value(), log.last_index_value());
            assert_eq!(
                (fresh.first_index_value(), fresh.last_index_value()),
                (first, last)
            );
            for _ in 0..3 {
                let low = first + next(last + 1 - first + 1);
                let high = low + next(last + 2 - low);
                let max = [None, Some(0), Some(next(2_000))][next(3) as usize];
                if log.cache.get(low, high).is_some() {
                    from_cache += 1;
                }
                reads += 1;
                let ctx = || GetEntriesContext::empty(false);
                let got = log.entries(low, high, max, ctx());
                let want = fresh.entries(low, high, max, ctx());
                match (got, want) {
                    (Ok(g), Ok(w)) => {
                        assert_eq!(g, w, "step {step}: entries [{low}, {high}) max {max:?}")
                    }
                    (g, w) => assert_eq!(
                        format!("{g:?}"),
                        format!("{w:?}"),
                        "step {step}: entries [{low}, {high})"
                    ),
                }
            }
        }
        // The comparison proves something only if the cache served reads.
        assert!(
            from_cache > reads / 2,
            "{from_cache} of {reads} reads from the cache"
        );
    }
}
