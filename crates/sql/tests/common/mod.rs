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

/// Runs a query string in a session; the rows of its last query.
#[allow(dead_code)] // not every test file uses it
pub async fn exec(
    s: &mut concord_sql::Session,
    sql: &str,
) -> Result<Vec<Vec<concord_sql::Value>>, concord_sql::Error> {
    let mut rows = vec![];
    for r in s.execute(sql).await {
        if let concord_sql::StatementResult::Query { rows: r, .. } = r? {
            rows = r;
        }
    }
    Ok(rows)
}
