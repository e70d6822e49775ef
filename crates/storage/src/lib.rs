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

/// Bytes an unprivileged writer can still use on the file system holding
/// `path` (`statvfs`'s `f_bavail × f_frsize`).
pub fn free_space(path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call and
    // `st` points to writable memory of the right size; statvfs only writes it.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u32 or u64).
    #[allow(clippy::unnecessary_cast)]
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    Ok(free)
}

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
