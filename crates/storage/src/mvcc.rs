//! Multi-version concurrency control on top of an [`Engine`].
//!
//! Committed data lives in the `data` column family as versions of a key,
//! newest first (see [`crate::keys`]). A read at timestamp `T` returns the
//! newest version at or below `T`; a tombstone version hides older ones.
//! Unfinished transactions keep *intents* in the `lock` column family, one per
//! key, holding the provisional value and the writer's [`TxnMeta`].
//!
//! ```text
//!  key "a":  lock: Intent{txn 7, ts 30, "a3"}
//!            data: a@20="a2"  a@10="a1"
//!  read @25 by txn 9         → WriteIntent{a, txn 7}? no: 30 > 25 (and > limit) → "a2"
//!  read @35 by txn 9         → WriteIntent (txn 7 may commit at ≤ 35: resolve first)
//!  read @35 by txn 7         → "a3" (a transaction reads its own intents)
//!  read @15, limit @22       → ReadWithinUncertainty(a@20): restart above 20
//! ```
//!
//! # Uncertainty
//! A reader carries an *uncertainty limit* (its start time plus the max clock
//! offset). A version in `(read_ts, limit]` may have been written before the
//! reader started on a node whose clock runs ahead, so the reader cannot know
//! whether to see it: it gets [`MvccError::ReadWithinUncertainty`] and must move
//! its read timestamp above that version.
//!
//! # Writes
//! Writers check [`check_write`]: another transaction's intent is a conflict
//! ([`MvccError::WriteIntent`]); a committed version at or above the write
//! timestamp is [`MvccError::WriteTooOld`] (the writer must move above it).
//! Committed versions are laid down by [`put_version`] (one-phase commits and
//! intent resolution).
//!
//! All functions here read the engine directly and add their writes to a
//! [`WriteBatch`]; the caller holds latches so that no concurrent command
//! touches the same keys between the read and the write.
//!
//! # Garbage collection
//! [`gc_candidates`] finds the versions no read at or above a GC threshold
//! can see: below the newest version at or under the threshold, everything;
//! and that version itself if it is a deletion. The range records the
//! threshold and refuses reads below it.
//!
//! ```text
//!  threshold 25:  a@30 a@20 a@10  → delete a@10 (a@20 is what a read @25 sees)
//!                 b@20(tombstone) b@5 → delete both
//! ```
//!
//! # Not done yet
//! - Reverse scans.

use std::collections::BTreeMap;

use concord_hlc::Timestamp;
use concord_proto::meta::{Intent, TxnMeta};
use prost::Message;

use crate::engine::{Cf, Engine, WriteBatch};
use crate::keys::{decode_mvcc_key, escape, mvcc_key, mvcc_key_after_versions, mvcc_key_prefix};
use crate::{fmt_key, Error};

const TAG_TOMBSTONE: u8 = 0x00;
const TAG_VALUE: u8 = 0x01;

/// Errors of MVCC operations. All but `Storage` are deterministic outcomes of
/// the data, the same on every replica.
#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    /// Another transaction holds an intent on the key.
    #[error("conflicting intent on key {} of transaction {}", fmt_key(.key), crate::fmt_txn_id(&.intent.id))]
    WriteIntent { key: Vec<u8>, intent: Box<TxnMeta> },
    /// A version exists in the reader's uncertainty window.
    #[error("read at {read_ts} encountered a write at {value_ts} on key {} within the uncertainty interval", fmt_key(.key))]
    ReadWithinUncertainty {
        key: Vec<u8>,
        read_ts: Timestamp,
        value_ts: Timestamp,
    },
    /// A committed version at or above the write timestamp exists.
    #[error("write at {write_ts} on key {} is too old: a version exists at {existing_ts}", fmt_key(.key))]
    WriteTooOld {
        key: Vec<u8>,
        write_ts: Timestamp,
        existing_ts: Timestamp,
    },
    /// The storage engine failed.
    #[error(transparent)]
    Storage(#[from] Error),
}

/// How a read sees the data.
#[derive(Clone, Copy, Debug)]
pub struct ReadOpts<'a> {
    /// The snapshot timestamp.
    pub read_ts: Timestamp,
    /// Versions in `(read_ts, uncertainty_limit]` are uncertain. Equal to
    /// `read_ts` for reads without uncertainty.
    pub uncertainty_limit: Timestamp,
    /// The reading transaction, which sees its own intents.
    pub txn_id: Option<&'a [u8]>,
}

impl<'a> ReadOpts<'a> {
    /// A plain snapshot read at `ts`, without uncertainty or transaction.
    pub fn at(ts: Timestamp) -> Self {
        ReadOpts {
            read_ts: ts,
            uncertainty_limit: ts,
            txn_id: None,
        }
    }

    fn limit(&self) -> Timestamp {
        self.uncertainty_limit.max(self.read_ts)
    }
}

/// A scan's rows, and where to resume if the limit cut it short.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanResult {
    pub rows: Vec<(Vec<u8>, Vec<u8>)>,
    pub resume_key: Option<Vec<u8>>,
}

/// Encodes a version's value (`None` = tombstone).
pub fn encode_value(value: Option<&[u8]>) -> Vec<u8> {
    match value {
        None => vec![TAG_TOMBSTONE],
        Some(v) => {
            let mut out = Vec::with_capacity(v.len() + 1);
            out.push(TAG_VALUE);
            out.extend_from_slice(v);
            out
        }
    }
}

/// Decodes a version's value (`None` = tombstone).
pub fn decode_value(raw: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    match raw.split_first() {
        Some((&TAG_VALUE, v)) => Ok(Some(v.to_vec())),
        Some((&TAG_TOMBSTONE, [])) => Ok(None),
        _ => Err(Error::Corruption(format!(
            "bad mvcc value {}",
            fmt_key(raw)
        ))),
    }
}

/// Reads the intent on a key, if any.
pub fn get_intent(engine: &dyn Engine, key: &[u8]) -> Result<Option<Intent>, Error> {
    match engine.get(Cf::Lock, key)? {
        None => Ok(None),
        Some(raw) => Intent::decode(raw.as_slice())
            .map(Some)
            .map_err(|e| Error::Corruption(format!("intent on {}: {e}", fmt_key(key)))),
    }
}

fn intent_ts(intent: &Intent) -> Timestamp {
    concord_proto::ts(intent.txn.as_ref().and_then(|t| t.write_ts))
}

/// What a reader makes of an intent: its own value, a conflict, or nothing.
enum IntentOutcome {
    Own(Option<Vec<u8>>),
    Ignore,
}

fn check_intent(key: &[u8], intent: Intent, opts: &ReadOpts) -> Result<IntentOutcome, MvccError> {
    if intent.lock_only {
        // A lock blocks writers, not readers: read the committed versions.
        return Ok(IntentOutcome::Ignore);
    }
    let txn = intent.txn.clone().unwrap_or_default();
    if opts.txn_id == Some(txn.id.as_slice()) {
        let value = if intent.tombstone {
            None
        } else {
            Some(intent.value)
        };
        return Ok(IntentOutcome::Own(value));
    }
    if intent_ts(&intent) <= opts.limit() {
        return Err(MvccError::WriteIntent {
            key: key.to_vec(),
            intent: Box::new(txn),
        });
    }
    Ok(IntentOutcome::Ignore)
}

/// The committed value visible at `opts` among the versions of one key, with
/// the uncertainty check.
fn read_versions(
    engine: &dyn Engine,
    key: &[u8],
    opts: &ReadOpts,
) -> Result<Option<Vec<u8>>, MvccError> {
    let upper = mvcc_key_after_versions(key);
    let it = engine.iter(Cf::Data, &mvcc_key(key, opts.limit()), Some(&upper));
    if it.valid()? {
        let (_, ts) = decode_mvcc_key(it.key())?;
        if ts > opts.read_ts {
            return Err(MvccError::ReadWithinUncertainty {
                key: key.to_vec(),
                read_ts: opts.read_ts,
                value_ts: ts,
            });
        }
        return Ok(decode_value(it.value())?);
    }
    Ok(None)
}

/// Reads one key.
pub fn get(engine: &dyn Engine, key: &[u8], opts: ReadOpts) -> Result<Option<Vec<u8>>, MvccError> {
    if let Some(intent) = get_intent(engine, key)? {
        if let IntentOutcome::Own(v) = check_intent(key, intent, &opts)? {
            return Ok(v);
        }
    }
    read_versions(engine, key, &opts)
}

/// Reads the keys in `[start, end)` (to the end of the keyspace if `end` is
/// `None`), at most `limit` rows (0 = no limit).
pub fn scan(
    engine: &dyn Engine,
    start: &[u8],
    end: Option<&[u8]>,
    limit: usize,
    opts: ReadOpts,
) -> Result<ScanResult, MvccError> {
    // Intents are read only as far as this page can reach. Resolved
    // intents leave RocksDB tombstones in the lock column family until a
    // compaction; reading them to the end of the span for every page made
    // a paged scan over a freshly loaded range quadratic.
    let reach = if limit > 0 {
        page_reach(engine, start, end, limit)?
    } else {
        None
    };
    let lock_upper: Option<Vec<u8>> = match &reach {
        Some(last) => Some([last.as_slice(), &[0u8]].concat()),
        None => end.map(<[u8]>::to_vec),
    };
    let mut intents: BTreeMap<Vec<u8>, Intent> = BTreeMap::new();
    for (k, v) in engine.scan(Cf::Lock, start, lock_upper.as_deref(), 0)? {
        let intent = Intent::decode(v.as_slice())
            .map_err(|e| Error::Corruption(format!("intent on {}: {e}", fmt_key(&k))))?;
        intents.insert(k, intent);
    }
    let lower = escape(start);
    let upper = end.map(escape);
    let mut it = engine.iter(Cf::Data, &lower, upper.as_deref());
    let mut result = ScanResult::default();
    let mut uncertain: Option<(Vec<u8>, Timestamp)> = None;
    loop {
        let data_key = if it.valid()? {
            Some(decode_mvcc_key(it.key())?.0)
        } else {
            None
        };
        let intent_key = intents.keys().next().cloned();
        let key = match (data_key, intent_key) {
            (None, None) => break,
            (Some(d), None) => d,
            (None, Some(i)) => i,
            (Some(d), Some(i)) => d.min(i),
        };
        // Past the reach, an intent may sit before `key` unseen: resume
        // right after the last key this page could see.
        if let Some(last) = reach.as_ref().filter(|last| key > **last) {
            result.resume_key = Some([last.as_slice(), &[0u8]].concat());
            break;
        }
        if limit > 0 && result.rows.len() >= limit {
            result.resume_key = Some(key);
            break;
        }
        let mut value = None;
        let mut decided = false;
        if let Some(intent) = intents.remove(&key) {
            if let IntentOutcome::Own(v) = check_intent(&key, intent, &opts)? {
                value = v;
                decided = true;
            }
        }
        // The versions of `key` under the iterator, newest first. One
        // iterator serves the whole scan: position it at the newest version
        // the reader may need (its uncertainty limit), read one version,
        // then skip the rest of the key's versions.
        let prefix = escape(&key);
        let on_key = |k: &[u8]| k.len() == prefix.len() + 12 && k.starts_with(&prefix);
        if it.valid()? && on_key(it.key()) {
            let (_, newest) = decode_mvcc_key(it.key())?;
            if newest > opts.limit() {
                it.seek(&mvcc_key(&key, opts.limit()));
            }
            if !decided && it.valid()? && on_key(it.key()) {
                let (_, ts) = decode_mvcc_key(it.key())?;
                if ts > opts.read_ts {
                    // Keep scanning: report the newest uncertain value, so
                    // that one restart clears them all.
                    if uncertain.as_ref().is_none_or(|(_, t)| ts > *t) {
                        uncertain = Some((key.clone(), ts));
                    }
                } else {
                    value = decode_value(it.value())?;
                }
            }
            // Usually the next entry is already the next key.
            if it.valid()? && on_key(it.key()) {
                it.next();
                if it.valid()? && on_key(it.key()) {
                    it.seek(&mvcc_key_after_versions(&key));
                }
            }
        }
        if let Some(v) = value {
            result.rows.push((key, v));
        }
    }
    if let Some((key, value_ts)) = uncertain {
        return Err(MvccError::ReadWithinUncertainty {
            key,
            read_ts: opts.read_ts,
            value_ts,
        });
    }
    Ok(result)
}

/// The `limit`-th distinct key with versions in `[start, end)`: how far a
/// page of `limit` rows can reach (None if there are fewer keys).
fn page_reach(
    engine: &dyn Engine,
    start: &[u8],
    end: Option<&[u8]>,
    limit: usize,
) -> Result<Option<Vec<u8>>, MvccError> {
    let upper = end.map(escape);
    let mut it = engine.iter(Cf::Data, &escape(start), upper.as_deref());
    let mut seen = 0;
    while it.valid()? {
        let key = decode_mvcc_key(it.key())?.0;
        seen += 1;
        if seen == limit {
            return Ok(Some(key));
        }
        it.seek(&mvcc_key_after_versions(&key));
    }
    Ok(None)
}

/// The timestamp of the newest committed version of a key.
pub fn newest_version_ts(engine: &dyn Engine, key: &[u8]) -> Result<Option<Timestamp>, Error> {
    let upper = mvcc_key_after_versions(key);
    let it = engine.iter(Cf::Data, &mvcc_key_prefix(key), Some(&upper));
    if it.valid()? {
        return Ok(Some(decode_mvcc_key(it.key())?.1));
    }
    Ok(None)
}

/// Checks that `txn_id` may write `key` at `write_ts`: no other transaction's
/// intent, and no committed version at or above `write_ts`.
pub fn check_write(
    engine: &dyn Engine,
    key: &[u8],
    write_ts: Timestamp,
    txn_id: Option<&[u8]>,
) -> Result<(), MvccError> {
    if let Some(intent) = get_intent(engine, key)? {
        let txn = intent.txn.unwrap_or_default();
        if Some(txn.id.as_slice()) != txn_id {
            return Err(MvccError::WriteIntent {
                key: key.to_vec(),
                intent: Box::new(txn),
            });
        }
    }
    if let Some(existing_ts) = newest_version_ts(engine, key)? {
        if existing_ts >= write_ts {
            return Err(MvccError::WriteTooOld {
                key: key.to_vec(),
                write_ts,
                existing_ts,
            });
        }
    }
    Ok(())
}

/// Lays down a committed version (`None` = deletion).
pub fn put_version(batch: &mut WriteBatch, key: &[u8], ts: Timestamp, value: Option<&[u8]>) {
    batch.put(Cf::Data, mvcc_key(key, ts), encode_value(value));
}

/// Writes an intent for `txn` after checking for conflicts; replaces the
/// transaction's own earlier intent on the key.
pub fn put_intent(
    engine: &dyn Engine,
    batch: &mut WriteBatch,
    key: &[u8],
    value: Option<&[u8]>,
    txn: &TxnMeta,
) -> Result<(), MvccError> {
    let write_ts = concord_proto::ts(txn.write_ts);
    check_write(engine, key, write_ts, Some(&txn.id))?;
    let intent = Intent {
        txn: Some(txn.clone()),
        value: value.map(|v| v.to_vec()).unwrap_or_default(),
        tombstone: value.is_none(),
        lock_only: false,
    };
    batch.put(Cf::Lock, key.to_vec(), intent.encode_to_vec());
    Ok(())
}

/// How a transaction ended, for intent resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Committed at this timestamp: the intent becomes a version.
    Commit(Timestamp),
    /// Aborted: the intent is removed.
    Abort,
}

/// Resolves `txn_id`'s intent on `key`. Returns whether there was one.
pub fn resolve_intent(
    engine: &dyn Engine,
    batch: &mut WriteBatch,
    key: &[u8],
    txn_id: &[u8],
    resolution: Resolution,
) -> Result<bool, Error> {
    let Some(intent) = get_intent(engine, key)? else {
        return Ok(false);
    };
    if intent.txn.as_ref().map(|t| t.id.as_slice()) != Some(txn_id) {
        return Ok(false);
    }
    batch.delete(Cf::Lock, key.to_vec());
    if let Resolution::Commit(ts) = resolution {
        let value = if intent.tombstone {
            None
        } else {
            Some(intent.value.as_slice())
        };
        put_version(batch, key, ts, value);
    }
    Ok(true)
}

/// Finds a write that a transaction which read `[start, end)` at `after` did
/// not see, up to `up_to`: a committed version in `(after, up_to]`, or another
/// transaction's intent at or below `up_to`. `end = None` means the single
/// key `start`. Used to refresh reads when a commit timestamp moves up.
pub fn find_write_in_span(
    engine: &dyn Engine,
    start: &[u8],
    end: Option<&[u8]>,
    after: Timestamp,
    up_to: Timestamp,
    txn_id: Option<&[u8]>,
) -> Result<Option<(Vec<u8>, Timestamp)>, Error> {
    let point_end;
    let end = match end {
        Some(e) => e,
        None => {
            point_end = [start, &[0u8]].concat();
            &point_end
        }
    };
    for (k, v) in engine.scan(Cf::Lock, start, Some(end), 0)? {
        let intent = Intent::decode(v.as_slice())
            .map_err(|e| Error::Corruption(format!("intent on {}: {e}", fmt_key(&k))))?;
        let ts = intent_ts(&intent);
        if !intent.lock_only
            && intent.txn.as_ref().map(|t| t.id.as_slice()) != txn_id
            && ts <= up_to
        {
            return Ok(Some((k, ts)));
        }
    }
    let upper = escape(end);
    let mut it = engine.iter(Cf::Data, &escape(start), Some(&upper));
    while it.valid()? {
        let (key, _) = decode_mvcc_key(it.key())?;
        it.seek(&mvcc_key(&key, up_to));
        if it.valid()? {
            let (k2, ts) = decode_mvcc_key(it.key())?;
            if k2 == key && ts > after {
                return Ok(Some((key, ts)));
            }
        }
        it.seek(&mvcc_key_after_versions(&key));
    }
    Ok(None)
}

/// Engine keys (data CF) of versions in `[start, end)` that no read at or
/// above `threshold` can see, at most `limit` of them, with their sizes in
/// bytes, and the user key to resume from if the limit was reached.
pub type GcBatch = (Vec<Vec<u8>>, u64, Option<Vec<u8>>);

/// Finds garbage versions (see the module doc).
pub fn gc_candidates(
    engine: &dyn Engine,
    start: &[u8],
    end: Option<&[u8]>,
    threshold: Timestamp,
    limit: usize,
) -> Result<GcBatch, Error> {
    let upper = end.map(escape);
    let mut it = engine.iter(Cf::Data, &escape(start), upper.as_deref());
    let mut doomed = Vec::new();
    let mut bytes = 0u64;
    let mut current: Option<Vec<u8>> = None;
    // Whether the current key's version visible at the threshold was seen.
    let mut seen_visible = false;
    while it.valid()? {
        let (key, ts) = decode_mvcc_key(it.key())?;
        if current.as_deref() != Some(key.as_slice()) {
            if doomed.len() >= limit {
                return Ok((doomed, bytes, Some(key)));
            }
            current = Some(key.clone());
            seen_visible = false;
        }
        if ts <= threshold {
            let delete = if seen_visible {
                true
            } else {
                seen_visible = true;
                decode_value(it.value())?.is_none()
            };
            if delete {
                bytes += (it.key().len() + it.value().len()) as u64;
                doomed.push(it.key().to_vec());
            }
        }
        it.next();
    }
    Ok((doomed, bytes, None))
}

#[cfg(test)]
mod gc_tests {
    use super::*;
    use crate::MemoryEngine;

    fn ts(w: u64) -> Timestamp {
        Timestamp::new(w, 0)
    }

    #[test]
    fn gc_keeps_exactly_what_reads_at_or_above_the_threshold_see() {
        let e = MemoryEngine::new();
        let mut b = WriteBatch::new();
        for (k, t, v) in [
            (&b"a"[..], 30, Some(&b"a30"[..])),
            (b"a", 20, Some(b"a20")),
            (b"a", 10, Some(b"a10")),
            (b"b", 20, None),
            (b"b", 5, Some(b"b5")),
            (b"c", 40, Some(b"c40")),
            (b"d", 15, Some(b"d15")),
        ] {
            put_version(&mut b, k, ts(t), v);
        }
        e.write(b, false).unwrap();
        let threshold = ts(25);
        let before: Vec<_> = [&b"a"[..], b"b", b"c", b"d"]
            .iter()
            .flat_map(|k| [25u64, 35, 50].map(|r| get(&e, k, ReadOpts::at(ts(r))).unwrap()))
            .collect();
        let (doomed, bytes, resume) = gc_candidates(&e, b"", None, threshold, 100).unwrap();
        assert!(resume.is_none());
        let names: Vec<(Vec<u8>, Timestamp)> =
            doomed.iter().map(|k| decode_mvcc_key(k).unwrap()).collect();
        assert_eq!(
            names,
            vec![
                (b"a".to_vec(), ts(10)),
                (b"b".to_vec(), ts(20)),
                (b"b".to_vec(), ts(5)),
            ]
        );
        assert!(bytes > 0);
        let mut b = WriteBatch::new();
        for k in doomed {
            b.delete(Cf::Data, k);
        }
        e.write(b, false).unwrap();
        let after: Vec<_> = [&b"a"[..], b"b", b"c", b"d"]
            .iter()
            .flat_map(|k| [25u64, 35, 50].map(|r| get(&e, k, ReadOpts::at(ts(r))).unwrap()))
            .collect();
        assert_eq!(
            before, after,
            "reads at or above the threshold are unchanged"
        );

        // The limit cuts between keys and says where to resume.
        let (doomed, _, resume) = gc_candidates(&e, b"", None, ts(35), 1).unwrap();
        assert_eq!(doomed.len(), 1);
        assert_eq!(resume, Some(b"c".to_vec()));
    }
}
