//! The types generated from the `.proto` files in `proto/`: Concord's
//! metadata (range descriptors, node identities, Raft commands), the KV batch
//! API and the inter-node gRPC services.
//!
//! Raft messages themselves are not defined here: they travel as opaque
//! `bytes` encoded with raft-rs's own protobuf codec, so the two protobuf
//! stacks (raft-rs's `protobuf` 2 and tonic's `prost`) never mix.

#![allow(clippy::all, missing_docs)]

pub mod meta {
    tonic::include_proto!("concord.meta");
}

pub mod kv {
    tonic::include_proto!("concord.kv");
}

pub mod admin {
    tonic::include_proto!("concord.admin");
}

pub mod catalog {
    tonic::include_proto!("concord.catalog");
}

impl From<concord_hlc::Timestamp> for meta::Timestamp {
    fn from(ts: concord_hlc::Timestamp) -> Self {
        meta::Timestamp {
            wall: ts.wall,
            logical: ts.logical,
        }
    }
}

impl From<meta::Timestamp> for concord_hlc::Timestamp {
    fn from(ts: meta::Timestamp) -> Self {
        concord_hlc::Timestamp::new(ts.wall, ts.logical)
    }
}

impl kv::Write {
    /// A write of `key`: `Some(value)` puts it, `None` deletes it (a
    /// tombstone), as a transaction's write buffer holds them.
    pub fn put_or_delete(key: Vec<u8>, value: Option<Vec<u8>>) -> Self {
        kv::Write {
            lock_only: false,
            key,
            tombstone: value.is_none(),
            value: value.unwrap_or_default(),
        }
    }
}

/// A timestamp from an optional proto field (absent = zero).
pub fn ts(t: Option<meta::Timestamp>) -> concord_hlc::Timestamp {
    t.map(Into::into).unwrap_or_default()
}
