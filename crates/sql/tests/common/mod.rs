//! A single-node cluster in this process, for SQL tests: the real store,
//! Raft group (of one), KV client and SQL layer, on an in-memory engine.

use std::sync::Arc;
use std::time::Duration;

use concord_kv::{Db, DistSender};
use concord_replication::testing::single_node_store;
use concord_replication::StoreConfig;

pub async fn single_node_db() -> Db {
    let store = single_node_store(StoreConfig {
        tick_interval: Duration::from_millis(10),
        ..StoreConfig::default()
    })
    .await;
    Db::new(Arc::new(DistSender::new(store)))
}
