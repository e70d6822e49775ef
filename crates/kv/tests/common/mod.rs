//! A single-node cluster in this process for KV tests: the real store and
//! Raft groups (one per range) on an in-memory engine.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use concord_hlc::Clock;
use concord_kv::{Db, DistSender};
use concord_proto::meta::{NodeDescriptor, RangeDescriptor, ReplicaDescriptor, StoreIdent};
use concord_replication::{NodeRegistry, RaftTransport, Store, StoreConfig};
use concord_storage::keys::MIN_SPLIT_KEY;
use concord_storage::MemoryEngine;

/// A single-node cluster sends no Raft messages.
struct NoPeers;
impl RaftTransport for NoPeers {
    fn send(&self, _: u64, _: u64, _: raft::prelude::Message) {}
}

/// Transaction records expire after this without a heartbeat.
pub const EXPIRY: Duration = Duration::from_secs(2);

pub async fn db() -> (Db, Store) {
    let store = Store::start(
        Arc::new(MemoryEngine::new()),
        Clock::new(Duration::from_millis(500)).unwrap(),
        Arc::new(NodeRegistry::new()),
        Arc::new(NoPeers),
        StoreConfig {
            tick_interval: Duration::from_millis(10),
            txn_expiry: EXPIRY,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    store
        .bootstrap(
            StoreIdent {
                cluster_id: b"2pc".to_vec(),
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
    for _ in 0..500 {
        if store.replica(1).unwrap().status.lock().leader_ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
