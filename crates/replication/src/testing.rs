//! Test support: in-process clusters of stores connected by a message mesh
//! that can cut links. Compiled only for tests and benchmarks (the `testing`
//! feature); the product uses [`crate::GrpcTransport`].
//!
//! ```text
//!   TestCluster
//!     ├─ node 1: Store ─┐
//!     ├─ node 2: Store ─┼─ Mesh (delivers Raft messages, drops cut links)
//!     └─ node 3: Store ─┘
//! ```
//!
//! Stores run on RocksDB in temporary directories, so a node can be stopped
//! and restarted on its data, as after a crash.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use concord_hlc::{Clock, Timestamp};
use concord_proto::kv::{
    self, request::Request as Req, response::Response as Resp, BatchRequest, TxnHeader,
};
use concord_proto::meta::{NodeDescriptor, RangeDescriptor, ReplicaDescriptor, StoreIdent};
use concord_storage::{Engine, RocksEngine};
use parking_lot::RwLock;
use raft::prelude::{Message, MessageType};

use crate::{NodeRegistry, RaftTransport, Store, StoreConfig};

/// Delivers Raft messages between in-process stores.
#[derive(Default)]
pub struct Mesh {
    stores: RwLock<HashMap<u64, Store>>,
    cut: RwLock<HashSet<(u64, u64)>>,
    /// Message types lost when this node sends them.
    dropped: RwLock<HashSet<(u64, MessageType)>>,
}

impl Mesh {
    /// Drops every message between `a` and `b`, both ways.
    pub fn partition(&self, a: u64, b: u64) {
        let mut cut = self.cut.write();
        cut.insert((a, b));
        cut.insert((b, a));
    }

    /// Cuts `node` off from every other node.
    pub fn isolate(&self, node: u64, all: &[u64]) {
        for &other in all {
            if other != node {
                self.partition(node, other);
            }
        }
    }

    /// Drops every message of type `t` that `node` sends (a new leader
    /// whose appends are lost can win an election but not commit).
    pub fn drop_from(&self, node: u64, t: MessageType) {
        self.dropped.write().insert((node, t));
    }

    /// Restores every link and every message type.
    pub fn heal(&self) {
        self.cut.write().clear();
        self.dropped.write().clear();
    }
}

/// The transport of one node on the mesh.
pub struct MeshTransport {
    from: u64,
    mesh: Arc<Mesh>,
}

impl RaftTransport for MeshTransport {
    fn send(&self, to_node: u64, range_id: u64, msg: Message) {
        if self.mesh.cut.read().contains(&(self.from, to_node))
            || self
                .mesh
                .dropped
                .read()
                .contains(&(self.from, msg.get_msg_type()))
        {
            return;
        }
        if let Some(store) = self.mesh.stores.read().get(&to_node) {
            store.deliver_raft_message(range_id, msg, self.from);
        }
    }
}

/// A cluster of stores in this process, sharing one range.
pub struct TestCluster {
    pub mesh: Arc<Mesh>,
    dirs: Vec<tempfile::TempDir>,
    pub config: StoreConfig,
    pub nodes: Vec<NodeDescriptor>,
    pub range: RangeDescriptor,
}

/// Fast Raft timing for tests: 20 ms ticks.
pub fn fast_config() -> StoreConfig {
    StoreConfig {
        tick_interval: Duration::from_millis(20),
        raft_timeout: Duration::from_secs(2),
        ..StoreConfig::default()
    }
}

impl TestCluster {
    /// Starts `n` nodes and bootstraps range 1 with a replica on each.
    pub async fn start(n: usize, config: StoreConfig) -> TestCluster {
        let mesh = Arc::new(Mesh::default());
        let nodes: Vec<NodeDescriptor> = (1..=n as u64)
            .map(|id| NodeDescriptor {
                node_id: id,
                address: format!("mesh:{id}"),
                ..Default::default()
            })
            .collect();
        let range = RangeDescriptor {
            range_id: 1,
            start_key: vec![],
            end_key: vec![],
            replicas: nodes
                .iter()
                .map(|d| ReplicaDescriptor {
                    node_id: d.node_id,
                    replica_id: d.node_id,
                    learner: false,
                })
                .collect(),
            next_replica_id: n as u64 + 1,
            generation: 1,
        };
        let mut cluster = TestCluster {
            mesh,
            dirs: (0..n)
                .map(|_| tempfile::tempdir().expect("temp dir"))
                .collect(),
            config,
            nodes,
            range,
        };
        for id in 1..=n as u64 {
            let store = cluster.open(id);
            store
                .bootstrap(
                    StoreIdent {
                        cluster_id: b"test".to_vec(),
                        node_id: id,
                    },
                    cluster.nodes.clone(),
                    cluster.range.clone(),
                )
                .await
                .expect("bootstrap");
            cluster.mesh.stores.write().insert(id, store);
        }
        cluster
    }

    /// The data directory of a node.
    pub fn dir(&self, node: u64) -> PathBuf {
        self.dirs[(node - 1) as usize].path().to_path_buf()
    }

    fn open(&mut self, node: u64) -> Store {
        let engine: Arc<dyn Engine> =
            Arc::new(RocksEngine::open(self.dir(node)).expect("open rocksdb"));
        let clock = Clock::new(Duration::from_millis(500)).expect("clock");
        let transport = Arc::new(MeshTransport {
            from: node,
            mesh: self.mesh.clone(),
        });
        Store::start(
            engine,
            clock,
            Arc::new(NodeRegistry::new()),
            transport,
            self.config.clone(),
        )
        .expect("start store")
    }

    /// The store of a running node.
    pub fn store(&self, node: u64) -> Store {
        self.mesh
            .stores
            .read()
            .get(&node)
            .cloned()
            .expect("node is running")
    }

    /// Node ids of running nodes.
    pub fn running(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.mesh.stores.read().keys().copied().collect();
        v.sort();
        v
    }

    /// Stops a node, as a crash would (nothing is flushed beyond what the
    /// store already synced).
    pub async fn stop(&self, node: u64) {
        let store = self
            .mesh
            .stores
            .write()
            .remove(&node)
            .expect("node is running");
        store.stop();
        drop(store);
        // Wait until the ready loop has released the engine.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Restarts a stopped node on its data.
    pub async fn restart(&mut self, node: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        // RocksDB's lock is released once the stopped store's last
        // reference is dropped.
        while RocksEngine::open(self.dir(node)).is_err() {
            assert!(
                Instant::now() < deadline,
                "node {node}'s store stays locked"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let store = self.open(node);
        self.mesh.stores.write().insert(node, store);
    }

    /// Waits for a leader that may serve requests among running nodes.
    pub async fn leader(&self, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            for id in self.running() {
                if let Ok(r) = self.store(id).replica(1) {
                    if r.status.lock().leader_ready {
                        return Some(id);
                    }
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Commits writes through `node` in one transaction.
    pub async fn commit(
        &self,
        node: u64,
        writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<Timestamp, kv::KvError> {
        let store = self.store(node);
        let req = one_phase_commit(store.clock().now(), writes);
        let resp = store.batch(req).await;
        if let Some(e) = resp.error {
            return Err(e);
        }
        match resp.responses.into_iter().next().and_then(|r| r.response) {
            Some(Resp::Commit(c)) => Ok(concord_proto::ts(c.commit_ts)),
            other => panic!("unexpected commit response {other:?}"),
        }
    }

    /// Reads a key through `node` (linearizable, served by the leader).
    pub async fn get(&self, node: u64, key: &[u8]) -> Result<Option<Vec<u8>>, kv::KvError> {
        let store = self.store(node);
        let req = BatchRequest {
            gateway_node_id: 0,
            range_id: 1,
            now: None,
            txn: None,
            requests: vec![kv::Request {
                request: Some(Req::Get(kv::GetRequest { key: key.to_vec() })),
            }],
        };
        let resp = store.batch(req).await;
        if let Some(e) = resp.error {
            return Err(e);
        }
        match resp.responses.into_iter().next().and_then(|r| r.response) {
            Some(Resp::Get(g)) => Ok(g.found.then_some(g.value)),
            other => panic!("unexpected get response {other:?}"),
        }
    }

    /// Reads a key from a node's local engine, bypassing Raft: what that
    /// replica has applied.
    pub fn local_get(&self, node: u64, key: &[u8]) -> Option<Vec<u8>> {
        let store = self.store(node);
        concord_storage::mvcc::get(
            store.engine().as_ref(),
            key,
            concord_storage::mvcc::ReadOpts::at(Timestamp::MAX),
        )
        .expect("local read")
    }

    /// Raft log entries of range 1 actually stored in a node's engine.
    pub fn log_entries_on_disk(&self, node: u64) -> usize {
        let store = self.store(node);
        let lower = concord_storage::keys::raft_log_entry(1, 0);
        let upper = concord_storage::keys::raft_log_entry(1, u64::MAX);
        store
            .engine()
            .scan(concord_storage::Cf::Raft, &lower, Some(&upper), 0)
            .map(|v| v.len())
            .unwrap_or(0)
    }

    /// The applied index of range 1 on a node.
    pub fn applied(&self, node: u64) -> u64 {
        self.store(node)
            .replica(1)
            .map(|r| r.status.lock().applied_index)
            .unwrap_or(0)
    }
}

/// A one-phase commit of `writes` (a `None` value deletes) by a new
/// transaction reading at `now`, for range 1.
pub fn one_phase_commit(now: Timestamp, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> BatchRequest {
    BatchRequest {
        gateway_node_id: 0,
        range_id: 1,
        now: None,
        txn: Some(TxnHeader {
            id: rand::random::<[u8; 16]>().to_vec(),
            read_ts: Some(now.into()),
            uncertainty_limit: Some(now.into()),
            historical: false,
        }),
        requests: vec![kv::Request {
            request: Some(Req::Commit(kv::CommitRequest {
                writes: writes
                    .into_iter()
                    .map(|(key, v)| kv::Write::put_or_delete(key, v))
                    .collect(),
                read_spans: vec![],
                reads_elsewhere: false,
            })),
        }],
    }
}

/// A single-node cluster sends no Raft messages.
struct NoPeers;
impl RaftTransport for NoPeers {
    fn send(&self, _: u64, _: u64, _: Message) {}
}

/// A bootstrapped single-node store on an in-memory engine whose range 1
/// has elected itself: the real store and Raft groups (one per range) for
/// tests of the layers above.
pub async fn single_node_store(config: StoreConfig) -> Store {
    let store = Store::start(
        Arc::new(concord_storage::MemoryEngine::new()),
        Clock::new(Duration::from_millis(500)).expect("a system clock after the epoch"),
        Arc::new(NodeRegistry::new()),
        Arc::new(NoPeers),
        config,
    )
    .expect("start an in-memory store");
    store
        .bootstrap(
            StoreIdent {
                cluster_id: b"single".to_vec(),
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
        .expect("bootstrap a fresh store");
    wait_until(Duration::from_secs(5), || {
        store.replica(1).is_ok_and(|r| r.status.lock().leader_ready)
    })
    .await;
    store
}

/// Polls `f` every 20 ms until it holds or `timeout` passes; returns
/// whether it held.
pub async fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}
