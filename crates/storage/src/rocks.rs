//! The RocksDB [`Engine`]: one RocksDB instance per node, one column family
//! per [`Cf`].
//!
//! Tuning is deliberately plain: LZ4 for the data column family (the only
//! compression library compiled in), a shared 128 MiB block cache, two
//! background jobs to match the machines we run on, and 16 MiB memtables
//! for the column families whose keys live briefly (raft, lock, txn). Writes that must be
//! durable are written with `sync = true`; the replication layer groups many
//! replicas' Raft appends into one such write.
//!
//! # Prefix filters on the data column family
//! Finding a key's versions (the newest one before a write, the visible one
//! for a read) seeks an iterator, and a seek visits every memtable, every
//! level-0 file and one file per deeper level: under pgbench the check for
//! a newer version was 7% of the gateway's samples, nearly all of it in
//! `MergingIterator::Seek`. The data column family therefore has a prefix
//! extractor, the escaped user key ([`user_key_prefix`]), and its files
//! carry Bloom filters of those prefixes, so such a seek skips the files
//! that hold no version of the key. [`Engine::iter`] picks the mode the way
//! RocksDB's `auto_prefix_mode` would (which the Rust binding does not
//! expose): a prefix seek only when both bounds lie inside one key's
//! versions ([`within_one_key`]), where it returns exactly what a
//! total-order seek returns; every other iterator is a total-order one.

use std::path::{Path, PathBuf};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType,
    DBRawIteratorWithThreadMode, Options, ReadOptions, SliceTransform, WriteOptions, DB,
};

use crate::engine::{BatchOp, Cf, Engine, EngineIterator, WriteBatch};
use crate::{Error, Result};

/// The memtable size of the column families whose keys live briefly.
const SHORT_LIVED_WRITE_BUFFER: usize = 16 << 20;

/// The RocksDB engine.
pub struct RocksEngine {
    db: DB,
    path: PathBuf,
}

impl RocksEngine {
    /// Opens (creating if missing) the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path)
            .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        let cache = Cache::new_lru_cache(128 << 20);
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        db_opts.set_keep_log_file_num(5);
        let cf_descriptors = Cf::ALL.iter().map(|cf| {
            let mut opts = Options::default();
            let mut block = BlockBasedOptions::default();
            block.set_block_cache(&cache);
            block.set_bloom_filter(10.0, false);
            if *cf == Cf::Data {
                // Nothing gets a whole data key: the filters hold prefixes.
                block.set_whole_key_filtering(false);
                opts.set_prefix_extractor(SliceTransform::create(
                    "concord.user_key.v1",
                    user_key_prefix,
                    Some(has_user_key_prefix),
                ));
            }
            opts.set_block_based_table_factory(&block);
            if matches!(*cf, Cf::Raft | Cf::Lock | Cf::Txn) {
                // Short-lived keys: log entries until truncation, intents
                // and records until resolution. A smaller memtable keeps
                // the skiplist each write and read searches shallow.
                opts.set_write_buffer_size(SHORT_LIVED_WRITE_BUFFER);
            }
            opts.set_compression_type(match cf {
                Cf::Data => DBCompressionType::Lz4,
                _ => DBCompressionType::None,
            });
            ColumnFamilyDescriptor::new(cf.name(), opts)
        });
        let db = DB::open_cf_descriptors(&db_opts, &path, cf_descriptors)?;
        Ok(RocksEngine { db, path })
    }

    fn cf(&self, cf: Cf) -> &ColumnFamily {
        self.db
            .cf_handle(cf.name())
            .expect("invariant: every column family is created when the store is opened")
    }

    /// The directory of the store.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The prefix the data column family's filters index: the escaped user key,
/// up to and including its terminator (0x00 0x01, which the escaping never
/// produces earlier: a 0x00 inside the key is written 0x00 0xFF). Every
/// version of a key shares it, and no other key's versions do, because the
/// escaping is prefix-free. A key without a terminator is its own prefix
/// (out of the domain: RocksDB then never consults the filter for it).
fn user_key_prefix(key: &[u8]) -> &[u8] {
    match terminator_end(key) {
        Some(end) => &key[..end],
        None => key,
    }
}

fn has_user_key_prefix(key: &[u8]) -> bool {
    terminator_end(key).is_some()
}

/// The index just past the first 0x00 0x01 of `key`.
fn terminator_end(key: &[u8]) -> Option<usize> {
    key.windows(2)
        .position(|w| w == [0x00, 0x01])
        .map(|i| i + 2)
}

/// Whether every data key in `[lower, upper)` belongs to the user key whose
/// prefix `lower` starts with: `lower` holds a whole escaped key P and
/// `upper` starts with P. A data key K in the bounds with another escaped
/// key Q differs from P at a position inside both (the escaping is
/// prefix-free), so it sorts below `lower` or above `upper`.
fn within_one_key(lower: &[u8], upper: Option<&[u8]>) -> bool {
    match (terminator_end(lower), upper) {
        (Some(end), Some(upper)) => upper.starts_with(&lower[..end]),
        _ => false,
    }
}

struct RocksIterator<'a> {
    inner: DBRawIteratorWithThreadMode<'a, DB>,
}

impl EngineIterator for RocksIterator<'_> {
    fn seek(&mut self, key: &[u8]) {
        self.inner.seek(key);
    }
    fn next(&mut self) {
        self.inner.next();
    }
    fn valid(&self) -> Result<bool> {
        if self.inner.valid() {
            return Ok(true);
        }
        self.inner.status()?;
        Ok(false)
    }
    fn key(&self) -> &[u8] {
        self.inner
            .key()
            .expect("invariant: key() is only called on a valid iterator")
    }
    fn value(&self) -> &[u8] {
        self.inner
            .value()
            .expect("invariant: value() is only called on a valid iterator")
    }
}

impl Engine for RocksEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(cf), key)?)
    }

    fn iter<'a>(
        &'a self,
        cf: Cf,
        lower: &[u8],
        upper: Option<&[u8]>,
    ) -> Box<dyn EngineIterator + 'a> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(lower.to_vec());
        if let Some(upper) = upper {
            opts.set_iterate_upper_bound(upper.to_vec());
        }
        if cf == Cf::Data && within_one_key(lower, upper) {
            // Every key in the bounds has `lower`'s prefix, and so does
            // every seek target a caller may give inside them.
            opts.set_prefix_same_as_start(true);
        } else {
            opts.set_total_order_seek(true);
        }
        let mut inner = self.db.raw_iterator_cf_opt(self.cf(cf), opts);
        inner.seek(lower);
        Box::new(RocksIterator { inner })
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        let mut wb = rocksdb::WriteBatch::default();
        for op in batch.into_ops() {
            match op {
                BatchOp::Put { cf, key, value } => wb.put_cf(self.cf(cf), key, value),
                BatchOp::Delete { cf, key } => wb.delete_cf(self.cf(cf), key),
                BatchOp::DeleteRange { cf, start, end } => {
                    wb.delete_range_cf(self.cf(cf), start, end)
                }
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db.write_opt(wb, &opts)?;
        Ok(())
    }

    fn approximate_size(&self, cf: Cf, start: &[u8], end: Option<&[u8]>) -> Result<u64> {
        let end = end.map(|e| e.to_vec()).unwrap_or_else(|| vec![0xff; 16]);
        let sizes = self
            .db
            .get_approximate_sizes_cf(self.cf(cf), &[rocksdb::Range::new(start, &end)]);
        Ok(sizes.first().copied().unwrap_or(0))
    }

    fn describe(&self) -> String {
        format!("rocksdb at {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryEngine;
    use crate::mvcc::{self, ReadOpts};
    use concord_hlc::Timestamp;

    /// Keys whose escaped forms would collide under a careless prefix: one
    /// a prefix of another, 0x00 and 0x01 bytes inside, the empty key.
    fn keys() -> Vec<Vec<u8>> {
        vec![
            b"".to_vec(),
            b"a".to_vec(),
            b"a\x00".to_vec(),
            b"a\x00\x01".to_vec(),
            b"a\x01".to_vec(),
            b"ab".to_vec(),
            b"b\x00\x00".to_vec(),
            b"\x01".to_vec(),
        ]
    }

    #[test]
    fn prefix_filtered_seeks_find_what_an_unfiltered_engine_finds() {
        // Versions are written in rounds, each flushed to its own file, so
        // a key's versions are spread over files that hold some keys and
        // not others: a seek that consulted the wrong prefix's filter would
        // skip a file holding the version it needs.
        let dir = tempfile::tempdir().expect("temp dir");
        let rocks = RocksEngine::open(dir.path()).expect("open rocksdb");
        let memory = MemoryEngine::new();
        let keys = keys();
        for round in 1..=6u64 {
            let mut batch = WriteBatch::new();
            for (i, key) in keys.iter().enumerate() {
                if (i as u64 + round).is_multiple_of(3) {
                    let value = format!("{i}@{round}");
                    mvcc::put_version(
                        &mut batch,
                        key,
                        Timestamp::new(round * 10, 0),
                        Some(value.as_bytes()),
                    );
                }
            }
            rocks.write(batch.clone(), false).expect("write rocksdb");
            memory.write(batch, false).expect("write memory");
            rocks
                .db
                .flush_cf(rocks.cf(Cf::Data))
                .expect("flush the data column family");
        }
        let mut absent = keys.clone();
        absent.extend([b"a\x00\x00".to_vec(), b"c".to_vec(), b"ab\x00".to_vec()]);
        for key in &absent {
            assert_eq!(
                mvcc::newest_version_ts(&rocks, key).expect("rocksdb"),
                mvcc::newest_version_ts(&memory, key).expect("memory"),
                "newest version of {key:?}"
            );
            for at in [5, 10, 25, 30, 45, 60, 100] {
                let opts = ReadOpts::at(Timestamp::new(at, 0));
                assert_eq!(
                    mvcc::get(&rocks, key, opts).expect("rocksdb"),
                    mvcc::get(&memory, key, opts).expect("memory"),
                    "{key:?} at {at}"
                );
            }
        }
        // Spans over several keys take the total-order path and see all of
        // them.
        let all = |e: &dyn Engine| {
            mvcc::scan(e, b"", None, 0, ReadOpts::at(Timestamp::new(100, 0)))
                .expect("scan")
                .rows
        };
        assert_eq!(all(&rocks), all(&memory));
        assert_eq!(all(&rocks).len(), keys.len());
    }

    #[test]
    fn the_prefix_is_the_escaped_key_and_one_key_bounds_are_recognized() {
        let k = crate::keys::escape(b"a\x00b");
        let v = crate::keys::mvcc_key(b"a\x00b", Timestamp::new(7, 1));
        assert_eq!(user_key_prefix(&v), k.as_slice());
        assert_eq!(user_key_prefix(&k), k.as_slice());
        assert!(!has_user_key_prefix(b"a\x00\xff"));
        let after = crate::keys::mvcc_key_after_versions(b"a\x00b");
        assert!(within_one_key(&k, Some(&after)));
        assert!(within_one_key(&v, Some(&after)));
        // Two different keys, or no upper bound: a total-order seek.
        let next = crate::keys::escape(b"a\x00c");
        assert!(!within_one_key(&k, Some(&next)));
        assert!(!within_one_key(&k, None));
        assert!(!within_one_key(b"", Some(&after)));
    }
}
