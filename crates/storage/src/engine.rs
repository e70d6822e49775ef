//! The storage engine interface.
//!
//! Everything above this module talks to storage through [`Engine`]: point
//! reads, seekable iterators over one column family, and atomic write batches
//! that are optionally synced to disk. [`crate::RocksEngine`] implements it for
//! the product; [`crate::MemoryEngine`] implements it for fast unit tests and
//! deterministic simulation. Nothing above the `storage` crate names RocksDB.

use std::fmt;

use crate::Result;

/// The column families of a Concord store, one RocksDB instance per node.
///
/// | CF     | key                               | value                      |
/// |--------|-----------------------------------|----------------------------|
/// | `raft` | range id, kind, (log index)       | log entries, hard state, applied state |
/// | `lock` | user key                          | intent (provisional write) |
/// | `data` | escaped user key, timestamp desc  | committed MVCC version     |
/// | `meta` | node- and range-local metadata    | store ident, descriptors   |
/// | `txn`  | escaped anchor key, txn id        | transaction record         |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// The Raft log and Raft state of every range: the write-ahead log.
    Raft,
    /// Intents of unfinished transactions.
    Lock,
    /// Committed MVCC versions.
    Data,
    /// Node- and range-local metadata.
    Meta,
    /// Transaction records, keyed by their anchor key (so that they move
    /// with the range that holds it) and transaction id.
    Txn,
}

impl Cf {
    /// Every column family, in a fixed order.
    pub const ALL: [Cf; 5] = [Cf::Raft, Cf::Lock, Cf::Data, Cf::Meta, Cf::Txn];

    /// The RocksDB column family name.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Raft => "raft",
            Cf::Lock => "lock",
            Cf::Data => "data",
            Cf::Meta => "meta",
            Cf::Txn => "txn",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Cf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One operation of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Sets `key` to `value`.
    Put {
        cf: Cf,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Removes `key`.
    Delete { cf: Cf, key: Vec<u8> },
    /// Removes every key in `[start, end)`.
    DeleteRange {
        cf: Cf,
        start: Vec<u8>,
        end: Vec<u8>,
    },
}

/// An atomic group of writes, across column families.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
    size: usize,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        let (key, value) = (key.into(), value.into());
        self.size += key.len() + value.len();
        self.ops.push(BatchOp::Put { cf, key, value });
    }

    /// Adds a delete.
    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        let key = key.into();
        self.size += key.len();
        self.ops.push(BatchOp::Delete { cf, key });
    }

    /// Adds a range deletion of `[start, end)`.
    pub fn delete_range(&mut self, cf: Cf, start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) {
        let (start, end) = (start.into(), end.into());
        self.size += start.len() + end.len();
        self.ops.push(BatchOp::DeleteRange { cf, start, end });
    }

    /// Appends every operation of another batch.
    pub fn extend(&mut self, other: WriteBatch) {
        self.size += other.size;
        self.ops.extend(other.ops);
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Approximate payload size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// Takes the operations out.
    pub fn into_ops(self) -> Vec<BatchOp> {
        self.ops
    }
}

/// A positioned iterator over one column family, bounded to `[lower, upper)`.
///
/// The shape follows RocksDB's raw iterator so that MVCC code can seek past
/// old versions instead of stepping through them.
pub trait EngineIterator {
    /// Positions at the first key `>= key` (clamped to the bounds).
    fn seek(&mut self, key: &[u8]);
    /// Moves to the next key. Only valid when [`EngineIterator::valid`].
    fn next(&mut self);
    /// Whether the iterator is positioned on an entry; an I/O error surfaces here.
    fn valid(&self) -> Result<bool>;
    /// The current key. Only valid when [`EngineIterator::valid`].
    fn key(&self) -> &[u8];
    /// The current value. Only valid when [`EngineIterator::valid`].
    fn value(&self) -> &[u8];
}

/// A key-value pair.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// A storage engine: one per node.
pub trait Engine: Send + Sync + 'static {
    /// Reads one key.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// An iterator over `[lower, upper)` of one column family (no upper bound
    /// if `None`), positioned at `lower`. It sees a consistent point-in-time
    /// view of the column family.
    fn iter<'a>(
        &'a self,
        cf: Cf,
        lower: &[u8],
        upper: Option<&[u8]>,
    ) -> Box<dyn EngineIterator + 'a>;

    /// Applies a batch atomically. With `sync`, it is durable (fsynced) when
    /// this returns.
    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()>;

    /// Approximate bytes stored in `[start, end)` of a column family.
    fn approximate_size(&self, cf: Cf, start: &[u8], end: Option<&[u8]>) -> Result<u64>;

    /// A short description for logs and status pages.
    fn describe(&self) -> String;

    /// Every pair in `[lower, upper)`, at most `limit` of them (0 = all).
    fn scan(
        &self,
        cf: Cf,
        lower: &[u8],
        upper: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KvPair>> {
        let mut it = self.iter(cf, lower, upper);
        let mut out = Vec::new();
        while it.valid()? {
            out.push((it.key().to_vec(), it.value().to_vec()));
            if limit > 0 && out.len() >= limit {
                break;
            }
            it.next();
        }
        Ok(out)
    }
}
