//! Transaction records: the commit point of two-phase commits.
//!
//! A transaction whose writes span several ranges keeps one record in the
//! range that holds its *anchor key* (its first written key). The record is
//! stored in the `txn` column family under `escape(anchor) ‖ txn id`, so it
//! sorts inside the anchor's range span: splits and snapshots carry it along
//! with the range's intents and versions.
//!
//! ```text
//!   txn CF:  escape("users/7") ‖ 9f3a…  →  TxnRecord{PENDING, heartbeat 12:00:01}
//!   lock CF: "users/7" → Intent{txn 9f3a…}     (range 4)
//!            "orders/3" → Intent{txn 9f3a…}    (range 9)
//! ```

use concord_proto::meta::{TxnMeta, TxnRecord};
use prost::Message;

use crate::engine::{Cf, Engine, WriteBatch};
use crate::keys::escape;
use crate::{fmt_key, Error, Result};

/// The engine key of a transaction's record.
pub fn record_key(anchor: &[u8], txn_id: &[u8]) -> Vec<u8> {
    let mut k = escape(anchor);
    k.extend_from_slice(txn_id);
    k
}

/// Reads a transaction's record.
pub fn get_record(engine: &dyn Engine, txn: &TxnMeta) -> Result<Option<TxnRecord>> {
    match engine.get(Cf::Txn, &record_key(&txn.anchor_key, &txn.id))? {
        None => Ok(None),
        Some(raw) => TxnRecord::decode(raw.as_slice()).map(Some).map_err(|e| {
            Error::Corruption(format!(
                "transaction record at {}: {e}",
                fmt_key(&txn.anchor_key)
            ))
        }),
    }
}

/// Writes a transaction's record (keyed by its meta's anchor and id).
pub fn put_record(batch: &mut WriteBatch, record: &TxnRecord) {
    let meta = record.meta.clone().unwrap_or_default();
    batch.put(
        Cf::Txn,
        record_key(&meta.anchor_key, &meta.id),
        record.encode_to_vec(),
    );
}

/// Every record whose anchor lies in `[start, end)` (`end` empty: no bound).
pub fn records_in_span(engine: &dyn Engine, start: &[u8], end: &[u8]) -> Result<Vec<TxnRecord>> {
    let upper = (!end.is_empty()).then(|| escape(end));
    engine
        .scan(Cf::Txn, &escape(start), upper.as_deref(), 0)?
        .into_iter()
        .map(|(k, v)| {
            TxnRecord::decode(v.as_slice())
                .map_err(|e| Error::Corruption(format!("transaction record {}: {e}", fmt_key(&k))))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryEngine;

    #[test]
    fn records_sort_inside_their_anchor_range() {
        let e = MemoryEngine::new();
        let mut b = WriteBatch::new();
        for anchor in [&b"a"[..], b"b", b"b\x00", b"c"] {
            put_record(
                &mut b,
                &TxnRecord {
                    meta: Some(TxnMeta {
                        id: vec![0xff; 16],
                        anchor_key: anchor.to_vec(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            );
        }
        e.write(b, false).unwrap();
        let anchors: Vec<Vec<u8>> = records_in_span(&e, b"b", b"c")
            .unwrap()
            .into_iter()
            .map(|r| r.meta.unwrap().anchor_key)
            .collect();
        assert_eq!(anchors, vec![b"b".to_vec(), b"b\x00".to_vec()]);
        let meta = TxnMeta {
            id: vec![0xff; 16],
            anchor_key: b"c".to_vec(),
            ..Default::default()
        };
        assert!(get_record(&e, &meta).unwrap().is_some());
    }
}
