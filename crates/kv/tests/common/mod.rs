//! A single-node cluster in this process for KV tests: the real store and
//! Raft groups (one per range) on an in-memory engine.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use concord_kv::{Db, DistSender};
use concord_replication::testing::single_node_store;
use concord_replication::{Store, StoreConfig};
use concord_storage::keys::MIN_SPLIT_KEY;

/// Transaction records expire after this without a heartbeat.
pub const EXPIRY: Duration = Duration::from_secs(2);

pub async fn db() -> (Db, Store) {
    let store = single_node_store(StoreConfig {
        tick_interval: Duration::from_millis(10),
        txn_expiry: EXPIRY,
        ..StoreConfig::default()
    })
    .await;
    let db = Db::new(Arc::new(DistSender::new(store.clone())));
    (db, store)
}

pub fn key(s: &str) -> Vec<u8> {
    [MIN_SPLIT_KEY, s.as_bytes()].concat()
}

/// Splits so that each of `names` is in its own range.
pub async fn split_between(db: &Db, names: &[&str]) {
    for n in names.iter().skip(1) {
        db.admin_split(&key(n)).await.unwrap();
    }
}

pub async fn read(db: &Db, k: &str) -> Option<Vec<u8>> {
    let mut t = db.begin();
    t.get(&key(k)).await.unwrap()
}
