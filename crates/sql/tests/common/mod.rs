//! A single-node cluster in this process, for SQL tests: the real store,
//! Raft group (of one), KV client and SQL layer, on an in-memory engine.

use std::sync::Arc;
use std::time::Duration;

use concord_hlc::Clock;
use concord_kv::{Db, DistSender};
use concord_proto::meta::{NodeDescriptor, RangeDescriptor, ReplicaDescriptor, StoreIdent};
use concord_replication::{NodeRegistry, RaftTransport, Store, StoreConfig};
use concord_storage::MemoryEngine;

/// A single-node cluster sends no Raft messages.
struct NoPeers;
impl RaftTransport for NoPeers {
    fn send(&self, _: u64, _: u64, _: raft::prelude::Message) {}
}

pub async fn single_node_db() -> Db {
    let store = Store::start(
        Arc::new(MemoryEngine::new()),
        Clock::new(Duration::from_millis(500)).unwrap(),
        Arc::new(NodeRegistry::new()),
        Arc::new(NoPeers),
        StoreConfig {
            tick_interval: Duration::from_millis(10),
            ..StoreConfig::default()
        },
    )
    .unwrap();
    store
        .bootstrap(
            StoreIdent {
                cluster_id: b"slt".to_vec(),
                node_id: 1,
            },
            vec![NodeDescriptor {
                node_id: 1,
                ..Default::default()
            }],
            RangeDescriptor {
                range_id: 1,
                replicas: vec![ReplicaDescriptor {
                    node_id: 1,
                    replica_id: 1,
                    learner: false,
                }],
                next_replica_id: 2,
                generation: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Wait for the single replica to elect itself.
    for _ in 0..500 {
        if store.replica(1).unwrap().status.lock().leader_ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Db::new(Arc::new(DistSender::new(store)))
}
