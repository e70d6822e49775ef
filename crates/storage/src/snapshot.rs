//! Range snapshots: a range's whole state as one message, for a replica that
//! cannot catch up from the Raft log (it fell behind the truncation point, or
//! it is new).
//!
//! A snapshot holds the range descriptor and every engine key in the range's
//! span: intents (lock CF, keyed by user key), versions (data CF, keyed by
//! escaped user key and timestamp) and transaction records (txn CF, keyed by
//! escaped anchor key and transaction id). Raft's snapshot metadata says which log
//! index and configuration it corresponds to. Applying one replaces the span's
//! contents wholesale, so a replica never mixes stale keys with new ones.
//!
//! Snapshots are built in memory: fine for ranges of the default size
//! (64 MiB); streaming in chunks is future work.

use concord_proto::meta::snapshot_kv::Family;
use concord_proto::meta::{RangeDescriptor, RangeSnapshot, SnapshotKv};

use crate::engine::{Cf, Engine, WriteBatch};
use crate::{keys, local, Result};

/// The data CF bounds of a descriptor's span.
fn data_bounds(desc: &RangeDescriptor) -> (Vec<u8>, Option<Vec<u8>>) {
    let lower = keys::escape(&desc.start_key);
    let upper = (!desc.end_key.is_empty()).then(|| keys::escape(&desc.end_key));
    (lower, upper)
}

/// The bytes (keys and values) a snapshot of the range would hold,
/// counted by iterating, without building it.
pub fn span_bytes(engine: &dyn Engine, desc: &RangeDescriptor) -> Result<u64> {
    let mut total = 0u64;
    let mut add = |cf: Cf, lower: &[u8], upper: Option<&[u8]>| -> Result<()> {
        let mut it = engine.iter(cf, lower, upper);
        while it.valid()? {
            total += (it.key().len() + it.value().len()) as u64;
            it.next();
        }
        Ok(())
    };
    let end = (!desc.end_key.is_empty()).then_some(desc.end_key.as_slice());
    add(Cf::Lock, &desc.start_key, end)?;
    let (lower, upper) = data_bounds(desc);
    add(Cf::Data, &lower, upper.as_deref())?;
    add(Cf::Txn, &lower, upper.as_deref())?;
    Ok(total)
}

/// Reads a range's state from the engine.
pub fn build(engine: &dyn Engine, desc: &RangeDescriptor) -> Result<RangeSnapshot> {
    let mut kvs = Vec::new();
    let end = (!desc.end_key.is_empty()).then_some(desc.end_key.as_slice());
    for (key, value) in engine.scan(Cf::Lock, &desc.start_key, end, 0)? {
        kvs.push(SnapshotKv {
            family: Family::Lock as i32,
            key,
            value,
        });
    }
    let (lower, upper) = data_bounds(desc);
    for (key, value) in engine.scan(Cf::Data, &lower, upper.as_deref(), 0)? {
        kvs.push(SnapshotKv {
            family: Family::Data as i32,
            key,
            value,
        });
    }
    // Transaction records are keyed like versions: escaped anchor key first.
    for (key, value) in engine.scan(Cf::Txn, &lower, upper.as_deref(), 0)? {
        kvs.push(SnapshotKv {
            family: Family::Txn as i32,
            key,
            value,
        });
    }
    Ok(RangeSnapshot {
        descriptor: Some(desc.clone()),
        kvs,
        gc_threshold: Some(local::load_gc_threshold(engine, desc.range_id)?.into()),
    })
}

/// Deletes every intent and version in a descriptor's span.
pub fn clear_range_data(batch: &mut WriteBatch, desc: &RangeDescriptor) {
    let lock_end = if desc.end_key.is_empty() {
        vec![0xff; 16]
    } else {
        desc.end_key.clone()
    };
    batch.delete_range(Cf::Lock, desc.start_key.clone(), lock_end);
    let (lower, upper) = data_bounds(desc);
    let upper = upper.unwrap_or_else(|| vec![0xff; 16]);
    batch.delete_range(Cf::Data, lower.clone(), upper.clone());
    batch.delete_range(Cf::Txn, lower, upper);
}

/// Writes a snapshot's data into `batch`: the span is cleared first, then
/// filled with the snapshot's keys, and the descriptor is recorded.
pub fn apply(batch: &mut WriteBatch, snapshot: &RangeSnapshot) {
    let desc = snapshot.descriptor.clone().unwrap_or_default();
    clear_range_data(batch, &desc);
    for kv in &snapshot.kvs {
        let cf = match Family::try_from(kv.family) {
            Ok(Family::Lock) => Cf::Lock,
            Ok(Family::Txn) => Cf::Txn,
            _ => Cf::Data,
        };
        batch.put(cf, kv.key.clone(), kv.value.clone());
    }
    local::save_range(batch, &desc);
    local::save_gc_threshold(
        batch,
        desc.range_id,
        concord_proto::ts(snapshot.gc_threshold),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc;
    use crate::MemoryEngine;
    use concord_hlc::Timestamp;

    fn desc(start: &[u8], end: &[u8]) -> RangeDescriptor {
        RangeDescriptor {
            range_id: 7,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn snapshot_copies_exactly_the_span_and_replaces_stale_keys() {
        let src = MemoryEngine::new();
        let mut b = WriteBatch::new();
        for k in [&b"a"[..], b"b", b"b\x00", b"c", b"d"] {
            mvcc::put_version(&mut b, k, Timestamp::new(10, 0), Some(k));
        }
        src.write(b, false).unwrap();
        let snap = build(&src, &desc(b"b", b"d")).unwrap();
        assert_eq!(snap.kvs.len(), 3, "b, b\\0 and c: not a, not d");

        let dst = MemoryEngine::new();
        let mut b = WriteBatch::new();
        mvcc::put_version(&mut b, b"bb", Timestamp::new(5, 0), Some(b"stale"));
        mvcc::put_version(&mut b, b"z", Timestamp::new(5, 0), Some(b"outside"));
        dst.write(b, false).unwrap();
        let mut b = WriteBatch::new();
        apply(&mut b, &snap);
        dst.write(b, false).unwrap();
        let read = |k: &[u8]| mvcc::get(&dst, k, mvcc::ReadOpts::at(Timestamp::MAX)).unwrap();
        assert_eq!(read(b"b"), Some(b"b".to_vec()));
        assert_eq!(read(b"c"), Some(b"c".to_vec()));
        assert_eq!(read(b"bb"), None, "a stale key inside the span is gone");
        assert_eq!(
            read(b"z"),
            Some(b"outside".to_vec()),
            "keys outside the span are untouched"
        );
        assert_eq!(read(b"a"), None);
    }
}
