//! Replication: Raft-replicated ranges on a node (Multi-Raft).
//!
//! A node has one [`Store`]. The store holds a replica of every range that has
//! a copy on this node; each replica is a raft-rs `RawNode` whose log lives in
//! the node's storage engine ([`concord_storage::RaftLogStorage`]). One ready
//! loop drives all of them and batches their log appends into one synced write
//! per iteration (group commit); see [`store`] for the loop and its order.
//!
//! ```text
//!        kv client / gRPC Batch                 gRPC RaftMessages
//!                 │                                     │
//!        Store::batch (eval, on the leader)      Store::deliver_raft_message
//!        latches ─ tscache ─ MVCC reads                 │
//!                 │ propose / read_index                │
//!                 ▼                                     ▼
//!        ┌──────────────── ready loop (one thread) ───────────────┐
//!        │  RawNode(range 1)   RawNode(range 2)   …               │
//!        │  one WriteBatch + fsync for all appends, then apply    │
//!        └──────────────────────────┬─────────────────────────────┘
//!                                   │ RaftTransport::send
//!                          GrpcTransport (one stream per peer node)
//! ```
//!
//! Raft runs with pre-vote and check-quorum: a partitioned node cannot disrupt
//! the cluster with term bumps, and a leader that loses contact with a quorum
//! steps down within an election timeout, so requests to it fail fast instead
//! of hanging. Reads go through ReadIndex (the leader confirms it still leads
//! before serving) or the leader's read lease, so they are linearizable.
//!
//! Replica ids are Raft peer ids and are distinct from node ids: a range
//! descriptor maps one to the other.
//!
//! The range lifecycle (creation, split, truncation, snapshots, membership
//! changes, removal) is described in [`ready_loop`]'s module doc and in
//! `docs/architecture.md`.
//!
//! # Not done yet
//! - Range merges; streaming snapshots in chunks.
//! - Epoch-based range leases: a read is served under the leader's Raft read
//!   lease (see `ready_loop`'s module doc) or pays a ReadIndex heartbeat
//!   round (shared by all reads that arrive together).

pub mod eval;
pub mod latch;
pub mod locktable;
mod logging;
pub mod origins;
pub mod ready_loop;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transport;
pub mod tscache;
pub mod txn_eval;

pub use store::{PeerProgress, ReplicaHandle, ReplicaStatus, Store, StoreConfig};
pub use transport::{GrpcTransport, NodeRegistry, RaftTransport};

use concord_storage::mvcc::MvccError;

/// A step slower than this (a latch wait, a ReadIndex round, a proposal
/// until it applied, a ready-loop iteration, a whole batch) is logged at
/// debug level under the target `concord::slow`, so that a latency tail can
/// be traced to where it was spent: start a node with
/// `--log info,concord::slow=debug`. Off by default: under a saturating
/// load every step is slow.
pub const SLOW_STEP: std::time::Duration = std::time::Duration::from_millis(20);

/// Errors of the replication layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This replica is not the leader; `leader_node` is the leader if known.
    #[error("range {range_id}: not the leader{}", .leader_node.map(|n| format!(" (leader is node {n})")).unwrap_or_default())]
    NotLeader {
        range_id: u64,
        leader_node: Option<u64>,
    },
    /// No replica of the range on this node.
    #[error("range {0} not found on this node")]
    RangeNotFound(u64),
    /// A key outside the range was addressed to it.
    #[error("key {} is outside range {range_id}", concord_storage::fmt_key(.key))]
    RangeKeyMismatch {
        range_id: u64,
        key: Vec<u8>,
        desc: Box<concord_proto::meta::RangeDescriptor>,
    },
    /// A write was proposed, but whether it applied is unknown.
    #[error("result is ambiguous: {0}")]
    AmbiguousResult(String),
    /// Raft could not make progress in time (no quorum).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The commit timestamp had to move and reads on other ranges must be
    /// refreshed to it by the coordinator before committing.
    #[error("the transaction must refresh its reads to {ts} before committing")]
    NeedsRefresh { ts: concord_hlc::Timestamp },
    /// The transaction was aborted (by a conflicting transaction, or because
    /// its coordinator stopped heartbeating).
    #[error("transaction {txn} was aborted: {reason}")]
    TxnAborted { txn: String, reason: String },
    /// A transaction must restart or refresh.
    #[error("transaction must retry on key {}: {reason}", concord_storage::fmt_key(.key))]
    TransactionRetry { key: Vec<u8>, reason: String },
    /// An MVCC outcome (conflict, uncertainty) or storage failure.
    #[error(transparent)]
    Mvcc(#[from] MvccError),
    /// The storage engine failed.
    #[error(transparent)]
    Storage(#[from] concord_storage::Error),
    /// A remote clock is too far ahead.
    #[error(transparent)]
    ClockOffset(#[from] concord_hlc::Error),
    /// The range cannot do this now (e.g. split while changing replicas).
    #[error("range busy: {0}")]
    RangeBusy(String),
    /// A malformed request.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The store already belongs to a cluster.
    #[error("already bootstrapped: {0}")]
    AlreadyBootstrapped(String),
    /// The store is shutting down.
    #[error("store stopped")]
    Stopped,
    /// A bug or an impossible state.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Clone for Error {
    fn clone(&self) -> Self {
        match self {
            Error::NotLeader {
                range_id,
                leader_node,
            } => Error::NotLeader {
                range_id: *range_id,
                leader_node: *leader_node,
            },
            Error::RangeNotFound(r) => Error::RangeNotFound(*r),
            Error::AmbiguousResult(s) => Error::AmbiguousResult(s.clone()),
            Error::Unavailable(s) => Error::Unavailable(s.clone()),
            Error::Storage(e) => Error::Storage(e.clone()),
            Error::Stopped => Error::Stopped,
            Error::RangeBusy(s) => Error::RangeBusy(s.clone()),
            Error::NeedsRefresh { ts } => Error::NeedsRefresh { ts: *ts },
            other => Error::Internal(other.to_string()),
        }
    }
}
