//! Key encodings, one section per column family. Reading this file tells the
//! whole on-disk key layout.
//!
//! ```text
//! data  escape(user key) ++ !wall(8, BE) ++ !logical(4, BE)   newest version first
//! lock  user key                                                one intent per key
//! raft  range id(8, BE) ++ 0x01                                 HardState
//!       range id(8, BE) ++ 0x02                                 AppliedState
//!       range id(8, BE) ++ 0x03 ++ index(8, BE)                 log entry
//! meta  "ident"                                                 StoreIdent
//!       "node/" ++ node id(8, BE)                               NodeDescriptor
//!       "range/" ++ range id(8, BE)                             RangeDescriptor
//!       "tombstone/" ++ range id(8, BE)                         ReplicaTombstone
//! ```
//!
//! User keys are escaped so that a key's versions sort together and before
//! any longer key: every 0x00 byte becomes 0x00 0xFF and the key ends with
//! 0x00 0x01. The encoding is order-preserving and prefix-free, so a span of
//! user keys `[a, b)` is exactly the span `[escape(a), escape(b))` of
//! encoded keys. Timestamps are stored inverted so that a forward scan meets
//! the newest version of a key first.

use concord_hlc::Timestamp;

use crate::{Error, Result};

const ESCAPE: u8 = 0x00;
const ESCAPED_00: u8 = 0xff;
const TERMINATOR: u8 = 0x01;

/// Appends the escaped, terminated form of a user key.
pub fn escape_into(key: &[u8], out: &mut Vec<u8>) {
    out.reserve(key.len() + 2);
    for &b in key {
        if b == ESCAPE {
            out.extend_from_slice(&[ESCAPE, ESCAPED_00]);
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(&[ESCAPE, TERMINATOR]);
}

/// The escaped, terminated form of a user key.
pub fn escape(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    escape_into(key, &mut out);
    out
}

/// Splits an escaped key off the front of `input`: the user key and the rest.
pub fn unescape(input: &[u8]) -> Result<(Vec<u8>, &[u8])> {
    let mut key = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b != ESCAPE {
            key.push(b);
            i += 1;
            continue;
        }
        match input.get(i + 1) {
            Some(&ESCAPED_00) => {
                key.push(ESCAPE);
                i += 2;
            }
            Some(&TERMINATOR) => return Ok((key, &input[i + 2..])),
            _ => break,
        }
    }
    Err(Error::Corruption(format!(
        "unterminated escaped key {:?}",
        crate::fmt_key(input)
    )))
}

/// The data-CF key of one version of `key`.
pub fn mvcc_key(key: &[u8], ts: Timestamp) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 14);
    escape_into(key, &mut out);
    out.extend_from_slice(&(!ts.wall).to_be_bytes());
    out.extend_from_slice(&(!ts.logical).to_be_bytes());
    out
}

/// Decodes a data-CF key into the user key and version timestamp.
pub fn decode_mvcc_key(encoded: &[u8]) -> Result<(Vec<u8>, Timestamp)> {
    let (key, rest) = unescape(encoded)?;
    if rest.len() != 12 {
        return Err(Error::Corruption(format!(
            "mvcc key {} has a {}-byte timestamp",
            crate::fmt_key(encoded),
            rest.len()
        )));
    }
    let wall = !u64::from_be_bytes(rest[..8].try_into().expect("checked length"));
    let logical = !u32::from_be_bytes(rest[8..].try_into().expect("checked length"));
    Ok((key, Timestamp::new(wall, logical)))
}

/// The smallest data-CF key of any version of `key` (its newest possible version).
pub fn mvcc_key_prefix(key: &[u8]) -> Vec<u8> {
    escape(key)
}

/// The smallest data-CF key after every version of `key`.
pub fn mvcc_key_after_versions(key: &[u8]) -> Vec<u8> {
    let mut out = escape(key);
    out.extend_from_slice(&[0xff; 12]);
    out.push(0x00);
    out
}

/// Suffixes of the per-range keys in the raft CF.
const RAFT_HARD_STATE: u8 = 0x01;
const RAFT_APPLIED_STATE: u8 = 0x02;
const RAFT_LOG: u8 = 0x03;

fn raft_key(range_id: u64, suffix: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.extend_from_slice(&range_id.to_be_bytes());
    k.push(suffix);
    k
}

/// The raft-CF key of a range's hard state.
pub fn raft_hard_state(range_id: u64) -> Vec<u8> {
    raft_key(range_id, RAFT_HARD_STATE)
}

/// The raft-CF key of a range's applied state.
pub fn raft_applied_state(range_id: u64) -> Vec<u8> {
    raft_key(range_id, RAFT_APPLIED_STATE)
}

/// The raft-CF key of a range's log entry.
pub fn raft_log_entry(range_id: u64, index: u64) -> Vec<u8> {
    let mut k = raft_key(range_id, RAFT_LOG);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The index of a raft log entry key.
pub fn decode_raft_log_index(key: &[u8]) -> Result<u64> {
    if key.len() != 17 || key[8] != RAFT_LOG {
        return Err(Error::Corruption(format!(
            "not a raft log key: {}",
            crate::fmt_key(key)
        )));
    }
    Ok(u64::from_be_bytes(
        key[9..].try_into().expect("checked length"),
    ))
}

/// The first key after every raft-CF key of a range.
pub fn raft_range_end(range_id: u64) -> Vec<u8> {
    raft_key(range_id, 0xff)
}

/// The first raft-CF key of a range.
pub fn raft_range_start(range_id: u64) -> Vec<u8> {
    raft_key(range_id, 0x00)
}

/// The meta-CF key of the store identity.
pub const META_IDENT: &[u8] = b"ident";

/// The meta-CF key of a node's descriptor.
pub fn meta_node(node_id: u64) -> Vec<u8> {
    let mut k = b"node/".to_vec();
    k.extend_from_slice(&node_id.to_be_bytes());
    k
}

/// The meta-CF prefix of node descriptors.
pub const META_NODE_PREFIX: &[u8] = b"node/";
/// The first key after the node descriptors.
pub const META_NODE_END: &[u8] = b"node0";

/// The meta-CF key of a range's descriptor as this replica knows it.
pub fn meta_range(range_id: u64) -> Vec<u8> {
    let mut k = b"range/".to_vec();
    k.extend_from_slice(&range_id.to_be_bytes());
    k
}

/// The meta-CF key of a removed range's tombstone.
pub fn meta_tombstone(range_id: u64) -> Vec<u8> {
    let mut k = b"tombstone/".to_vec();
    k.extend_from_slice(&range_id.to_be_bytes());
    k
}

/// The meta-CF key of a range's MVCC GC threshold: versions at or below it
/// that a newer version (at or below it) shadows are gone, and reads below
/// it are refused.
pub fn meta_gc_threshold(range_id: u64) -> Vec<u8> {
    let mut k = b"gc/".to_vec();
    k.extend_from_slice(&range_id.to_be_bytes());
    k
}

/// The meta-CF prefix of range descriptors.
pub const META_RANGE_PREFIX: &[u8] = b"range/";
/// The first key after the range descriptors.
pub const META_RANGE_END: &[u8] = b"range0";

// ---------------------------------------------------------------------------
// The user keyspace: keys that are replicated through Raft and read with MVCC.
//
//   0x02 'm' ++ end key         meta2: every range's descriptor, by end key
//   0x04 ...                    system keys (id sequences, node records)
//   0x88 ++ table id ++ …       SQL tables (system tables 1–3, then users')
//
// Range 1 always starts at the empty key and is never split below
// `MIN_SPLIT_KEY`, so it holds meta2, the system keys and the SQL catalog:
// finding any range starts with range 1.
// ---------------------------------------------------------------------------

/// The prefix of meta2 keys.
pub const META2_PREFIX: &[u8] = b"\x02m";
/// The first key after every meta2 key.
pub const META2_END: &[u8] = b"\x02n";

/// The meta2 key of a range with this end key (empty: the last range).
pub fn meta2_key(end_key: &[u8]) -> Vec<u8> {
    let mut k = META2_PREFIX.to_vec();
    if end_key.is_empty() {
        k.extend_from_slice(&[0xff, 0xff]);
    } else {
        k.extend_from_slice(end_key);
    }
    k
}

/// Where to start scanning meta2 for the range that holds `key`: the first
/// meta2 key whose end key is greater than `key`.
pub fn meta2_lookup_start(key: &[u8]) -> Vec<u8> {
    let mut k = META2_PREFIX.to_vec();
    k.extend_from_slice(key);
    k.push(0);
    k
}

/// The prefix of system keys.
pub const SYSTEM_PREFIX: &[u8] = b"\x04";

/// A system key.
pub fn system_key(name: &str) -> Vec<u8> {
    let mut k = SYSTEM_PREFIX.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// Ranges may be split only at or above this key: the first key of SQL
/// table 100, the first user table.
pub const MIN_SPLIT_KEY: &[u8] = &[0x88, 0x00, 0x00, 0x00, 0x64];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_keys_keep_order_and_prefix_freedom() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"\x00",
            b"\x00\x00",
            b"\x00\x01",
            b"a",
            b"a\x00",
            b"a\x00b",
            b"ab",
            b"b",
            b"\xff",
        ];
        for w in keys.windows(2) {
            assert!(escape(w[0]) < escape(w[1]), "{:?} < {:?}", w[0], w[1]);
            // every version of the smaller key sorts before every version of the larger
            assert!(mvcc_key(w[0], Timestamp::ZERO) < mvcc_key(w[1], Timestamp::MAX));
        }
        for k in keys {
            let encoded = escape(k);
            let (back, rest) = unescape(&encoded).unwrap();
            assert_eq!(back, k);
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn versions_sort_newest_first() {
        let new = mvcc_key(b"k", Timestamp::new(10, 1));
        let old = mvcc_key(b"k", Timestamp::new(10, 0));
        let older = mvcc_key(b"k", Timestamp::new(9, 5));
        assert!(mvcc_key_prefix(b"k") < new && new < old && old < older);
        assert!(older < mvcc_key_after_versions(b"k"));
        assert!(mvcc_key_after_versions(b"k") < mvcc_key(b"k\x00", Timestamp::MAX));
        assert_eq!(
            decode_mvcc_key(&old).unwrap(),
            (b"k".to_vec(), Timestamp::new(10, 0))
        );
    }

    #[test]
    fn corrupt_keys_are_errors_not_panics() {
        assert!(decode_mvcc_key(b"abc").is_err());
        assert!(decode_mvcc_key(&escape(b"abc")).is_err());
        assert!(decode_raft_log_index(b"short").is_err());
    }
}
