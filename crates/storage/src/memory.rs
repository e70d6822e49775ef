//! An in-memory [`Engine`] for unit tests and deterministic simulation.
//!
//! Each column family is a `BTreeMap` behind one lock. Iterators copy the
//! bounded span when they are created, which gives them the point-in-time view
//! that RocksDB iterators have. `sync` is a no-op: nothing survives the
//! process. Tests that need crash recovery use [`crate::RocksEngine`].

use std::collections::BTreeMap;
use std::ops::Bound;

use parking_lot::RwLock;

use crate::engine::{BatchOp, Cf, Engine, EngineIterator, WriteBatch};
use crate::Result;

/// The in-memory engine.
#[derive(Default)]
pub struct MemoryEngine {
    cfs: RwLock<[BTreeMap<Vec<u8>, Vec<u8>>; 5]>,
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }
}

struct MemoryIterator {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    pos: usize,
}

impl EngineIterator for MemoryIterator {
    fn seek(&mut self, key: &[u8]) {
        self.pos = self.entries.partition_point(|(k, _)| k.as_slice() < key);
    }
    fn next(&mut self) {
        self.pos += 1;
    }
    fn valid(&self) -> Result<bool> {
        Ok(self.pos < self.entries.len())
    }
    fn key(&self) -> &[u8] {
        &self.entries[self.pos].0
    }
    fn value(&self) -> &[u8] {
        &self.entries[self.pos].1
    }
}

impl Engine for MemoryEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.cfs.read()[cf.index()].get(key).cloned())
    }

    fn iter<'a>(
        &'a self,
        cf: Cf,
        lower: &[u8],
        upper: Option<&[u8]>,
    ) -> Box<dyn EngineIterator + 'a> {
        let cfs = self.cfs.read();
        let upper = match upper {
            Some(u) => Bound::Excluded(u.to_vec()),
            None => Bound::Unbounded,
        };
        let entries = if matches!(&upper, Bound::Excluded(u) if u.as_slice() <= lower) {
            Vec::new()
        } else {
            cfs[cf.index()]
                .range((Bound::Included(lower.to_vec()), upper))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        Box::new(MemoryIterator { entries, pos: 0 })
    }

    fn write(&self, batch: WriteBatch, _sync: bool) -> Result<()> {
        let mut cfs = self.cfs.write();
        for op in batch.into_ops() {
            match op {
                BatchOp::Put { cf, key, value } => {
                    cfs[cf.index()].insert(key, value);
                }
                BatchOp::Delete { cf, key } => {
                    cfs[cf.index()].remove(&key);
                }
                BatchOp::DeleteRange { cf, start, end } => {
                    if start < end {
                        let doomed: Vec<Vec<u8>> = cfs[cf.index()]
                            .range(start..end)
                            .map(|(k, _)| k.clone())
                            .collect();
                        for k in doomed {
                            cfs[cf.index()].remove(&k);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn approximate_size(&self, cf: Cf, start: &[u8], end: Option<&[u8]>) -> Result<u64> {
        Ok(self
            .scan(cf, start, end, 0)?
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum())
    }

    fn describe(&self) -> String {
        "in-memory engine".to_string()
    }
}
