//! Concord's storage layer: one storage engine per node, MVCC on top of it,
//! and the persistence of every range's Raft log.
//!
//! ```text
//!            replication (ready loop)         kv evaluation (leader)
//!                 │            │                       │
//!          raft_log::RaftLogStorage          mvcc::{get, scan, check_write, put_version}
//!                 │  (raft::Storage)                   │
//!                 └──────────────┬─────────────────────┘
//!                        engine::Engine  (get / iter / write batch / sync)
//!                      ┌─────────┴──────────┐
//!                RocksEngine            MemoryEngine
//!             (the product)        (unit tests, simulation)
//! ```
//!
//! The [`Engine`] trait is deliberately small: point reads, bounded seekable
//! iterators and atomic write batches with an optional fsync. Column
//! families ([`Cf`]) separate the Raft log, intents, committed versions and
//! local metadata; [`keys`] holds every key encoding in one place.
//!
//! Apply is deterministic: every replica runs the same writes in the same
//! order. Errors here say whether they are deterministic: [`mvcc::MvccError`]
//! variants other than `Storage` are outcomes of the data; [`Error`] is a
//! failure of the machine (I/O, full disk, corruption) after which a node must
//! not keep applying.
//!
//! # Not done yet
//! - MVCC garbage collection, reverse scans (see [`mvcc`]).
//! - RocksDB checkpoints for backups.

pub mod engine;
pub mod keys;
pub mod local;
pub mod memory;
pub mod mvcc;
pub mod raft_log;
pub mod rocks;
pub mod snapshot;
pub mod txn;

pub use engine::{Cf, Engine, EngineIterator, WriteBatch};
pub use memory::MemoryEngine;
pub use raft_log::RaftLogStorage;
pub use rocks::RocksEngine;

/// Errors of the storage layer: the machine failed, not the request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The disk is full: writes are refused until space is freed.
    #[error("disk full: {0}")]
    NoSpace(String),
    /// Any other I/O failure of the engine.
    #[error("storage I/O error: {0}")]
    Io(String),
    /// Stored bytes that do not decode: a bug or a damaged disk.
    #[error("corrupt data: {0}")]
    Corruption(String),
}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        let msg = e.into_string();
        if msg.contains("No space left") || msg.contains("NoSpace") {
            Error::NoSpace(msg)
        } else if msg.contains("Corruption") {
            Error::Corruption(msg)
        } else {
            Error::Io(msg)
        }
    }
}

/// Result of storage operations.
pub type Result<T> = std::result::Result<T, Error>;

/// A key for humans: printable ASCII as is, other bytes as `\xNN`.
pub fn fmt_key(key: &[u8]) -> String {
    let mut s = String::with_capacity(key.len());
    for &b in key {
        if b.is_ascii_graphic() || b == b' ' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

/// A transaction id for humans: the first 8 hex digits.
pub fn fmt_txn_id(id: &[u8]) -> String {
    id.iter().take(4).map(|b| format!("{b:02x}")).collect()
}
