//! The distributed KV client: routing and transactions.
//!
//! SQL talks to the cluster only through this crate. A [`Db`] hands out
//! transactions ([`Txn`]); a transaction's requests go through the
//! [`DistSender`], which finds the range of each key, sends the request to the
//! range's leader (in process if the leader is this node, over gRPC if not)
//! and retries elsewhere when the leader moved or a node is unreachable.
//!
//! ```text
//!   sql ─► Txn (read ts from the HLC, write buffer, read spans)
//!            │ get / scan: BatchRequest{txn header, reads}
//!            │ commit:     BatchRequest{CommitRequest{writes, read spans}}
//!            ▼
//!        DistSender ─ range cache ─ leader cache ─► Store::batch (local)
//!                                                 └► Internal.Batch (gRPC)
//! ```
//!
//! # Transactions
//! A transaction reads at its read timestamp (the gateway's clock when it
//! began) and sees a consistent snapshot there. Its writes are buffered here
//! and overlay its own reads, then go to the leader with the commit, which
//! evaluates them under latches and the timestamp cache and replicates them
//! as one Raft command (one-phase commit). If the commit timestamp must move
//! above the read timestamp, the leader refreshes the transaction's reads; if
//! something it read has changed, the transaction gets a retry error
//! (SQLSTATE 40001 at the SQL layer).
//!
//! A read that meets a value in its uncertainty window (read ts, read ts +
//! max offset] moves the read timestamp above it after refreshing the earlier
//! reads, or fails with a retry error if they changed.
//!
//! A transaction whose writes span several ranges commits in two phases:
//! a transaction record on the range of its first written key, intents on
//! every range it writes, the record switched to COMMITTED (the commit
//! point), then the intents resolved in the background. See `txn::twopc`
//! for the protocol and for what happens when a transaction meets another's
//! intent.
//!
//! `SELECT … FOR UPDATE` locks keys early ([`Txn::lock_keys`]): lock-only
//! intents through the transaction's record, which then commits through it.
//!
//! Large transactions (a bulk load of a million rows in one transaction)
//! never become one huge Raft command or gRPC message: above
//! [`txn::ONE_PHASE_MAX_WRITES`] writes or [`txn::ONE_PHASE_MAX_BYTES`]
//! they commit in two phases even within one range, each range's intents
//! are written in chunks of at most [`txn::CHUNK_MAX_WRITES`] writes and
//! [`txn::CHUNK_MAX_BYTES`] (several PrepareRequests per range, a few in
//! flight at once), and they are resolved in spans holding at most as much.
//! The write buffer itself is capped at [`txn::MAX_BUFFER_BYTES`]
//! ([`Error::OutOfMemory`]). The limits are fields of [`TxnLimits`].
//!
//! # Not done yet
//! - Writes are laid down as intents only at commit (they are buffered
//!   until then).
//! - Records of transactions aborted by pushers after their coordinator
//!   died stay until a record GC by age is built.

pub mod admin;
pub mod sender;
pub mod txn;

pub use admin::RangeInfo;
pub use sender::DistSender;
pub use txn::{failpoints, Db, Resolver, Txn, TxnLimits, ASSUMED_READ_CHANGED};

/// Errors of the KV client, as the SQL layer sees them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The transaction must restart (SQLSTATE 40001).
    #[error("restart transaction: {reason} (key {}, transaction {txn})", concord_storage::fmt_key(.key))]
    TransactionRetry {
        /// The conflicting key (raw; the SQL layer names its table and
        /// primary key). Empty if there is no single one.
        key: Vec<u8>,
        txn: String,
        reason: String,
    },
    /// A read met a value in its uncertainty window; the transaction moves
    /// its read timestamp to `ts` (handled inside [`Txn`]).
    #[error("read within uncertainty interval: a value on key {key} was written at {ts}")]
    Uncertainty {
        key: String,
        ts: concord_hlc::Timestamp,
    },
    /// The commit timestamp moved: reads must be refreshed to `ts` and the
    /// commit retried (handled inside [`Txn`]).
    #[error("the transaction must refresh its reads to {ts}")]
    NeedsRefresh { ts: concord_hlc::Timestamp },
    /// A request met another transaction's intent (handled inside [`Txn`]:
    /// the other transaction is pushed, and the request sent again).
    #[error("conflicting intent on key {} of transaction {}", concord_storage::fmt_key(.key), concord_storage::fmt_txn_id(&.intent.id))]
    WriteIntent {
        key: Vec<u8>,
        intent: Box<concord_proto::meta::TxnMeta>,
    },
    /// The transaction was aborted by a conflicting transaction (SQLSTATE
    /// 40001).
    #[error("restart transaction: TRANSACTION_ABORTED: {0}")]
    TxnAborted(String),
    /// A write in a read-only (historical) transaction.
    #[error("{0}")]
    ReadOnly(String),
    /// A timestamp that cannot be read at.
    #[error("{0}")]
    InvalidTimestamp(String),
    /// The range refused an admin request for now.
    #[error("range busy: {0}")]
    RangeBusy(String),
    /// The range of a request changed bounds (split): the caller must
    /// regroup its keys by range and send again (handled inside [`Txn`]).
    #[error("the range of the request changed; regroup and retry")]
    RangeChanged,
    /// A write may or may not have committed (SQLSTATE 40003).
    #[error("result is ambiguous: {0}")]
    AmbiguousResult(String),
    /// No replica could serve the request in time.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The disk is full.
    #[error("disk full: {0}")]
    DiskFull(String),
    /// The transaction's buffered writes passed
    /// [`txn::MAX_BUFFER_BYTES`] (SQLSTATE 53200 at the SQL layer): the
    /// write was refused, and the transaction should be rolled back and its
    /// work split into smaller transactions.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// A storage failure on a node.
    #[error("storage error: {0}")]
    Storage(String),
    /// A clock is further off than the max offset.
    #[error("clock offset: {0}")]
    ClockOffset(String),
    /// The transaction is already finished.
    #[error("transaction is already {0}")]
    TxnFinished(&'static str),
    /// Not supported yet.
    #[error("unimplemented: {0}")]
    Unimplemented(String),
    /// The cluster is not initialized yet.
    #[error("the cluster is not initialized yet: run `concord init`")]
    NotInitialized,
    /// A bug or impossible state.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether the transaction may simply be run again (SQLSTATE 40001).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::TransactionRetry { .. }
                | Error::TxnAborted(_)
                | Error::Uncertainty { .. }
                | Error::NeedsRefresh { .. }
                | Error::WriteIntent { .. }
        )
    }
}

/// Result of KV operations.
pub type Result<T> = std::result::Result<T, Error>;
