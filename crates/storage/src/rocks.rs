//! The RocksDB [`Engine`]: one RocksDB instance per node, one column family
//! per [`Cf`].
//!
//! Tuning is deliberately plain: LZ4 for the data column family (the only
//! compression library compiled in), a shared 128 MiB block cache, and two
//! background jobs to match the machines we run on. Writes that must be
//! durable are written with `sync = true`; the replication layer groups many
//! replicas' Raft appends into one such write.

use std::path::{Path, PathBuf};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType,
    DBRawIteratorWithThreadMode, Options, ReadOptions, WriteOptions, DB,
};

use crate::engine::{BatchOp, Cf, Engine, EngineIterator, WriteBatch};
use crate::{Error, Result};

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
            opts.set_block_based_table_factory(&block);
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
