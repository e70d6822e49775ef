//! Moving Raft messages between nodes.
//!
//! The ready loop hands every outgoing message to a [`RaftTransport`] and
//! never waits on the network: `send` only queues. The product transport,
//! [`GrpcTransport`], keeps one queue and one long-lived gRPC client stream
//! (`Internal.RaftMessages`) per destination node; a sender task drains the
//! queue into [`RaftMessageBatch`]es, so the traffic of every range between
//! two nodes shares one stream and one HTTP/2 connection. Messages carry
//! raft-rs's own protobuf encoding as opaque bytes.
//!
//! Raft tolerates loss, so the transport drops rather than blocks: a full
//! queue or a broken connection loses messages, and Raft's retries (heartbeats,
//! append probes) repair the gap once the peer is reachable again.
//!
//! Tests use their own `RaftTransport` (a channel mesh that can partition and
//! drop); the gRPC path is exercised by the multi-process tests.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use concord_hlc::Clock;
use concord_proto::kv::internal_client::InternalClient;
use concord_proto::kv::{RaftEnvelope, RaftMessageBatch};
use concord_proto::meta::NodeDescriptor;
use parking_lot::{Mutex, RwLock};
use protobuf::Message as _;
use raft::prelude::Message;
use tokio::sync::mpsc;

/// Sends Raft messages to other nodes.
pub trait RaftTransport: Send + Sync + 'static {
    /// Queues `msg` of range `range_id` for node `to_node`. Must not block.
    fn send(&self, to_node: u64, range_id: u64, msg: Message);
}

/// What this node knows about every node's addresses.
#[derive(Default)]
pub struct NodeRegistry {
    nodes: RwLock<HashMap<u64, NodeDescriptor>>,
}

impl NodeRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds or replaces a node.
    pub fn upsert(&self, node: NodeDescriptor) {
        self.nodes.write().insert(node.node_id, node);
    }
    /// A node's descriptor.
    pub fn get(&self, node_id: u64) -> Option<NodeDescriptor> {
        self.nodes.read().get(&node_id).cloned()
    }
    /// Every node, by id.
    pub fn all(&self) -> Vec<NodeDescriptor> {
        let mut v: Vec<_> = self.nodes.read().values().cloned().collect();
        v.sort_by_key(|n| n.node_id);
        v
    }
}

const QUEUE_CAPACITY: usize = 8192;
const MAX_BATCH: usize = 1024;

/// The gRPC transport.
pub struct GrpcTransport {
    node_id: std::sync::atomic::AtomicU64,
    clock: Clock,
    nodes: Arc<NodeRegistry>,
    runtime: tokio::runtime::Handle,
    queues: Mutex<HashMap<u64, mpsc::Sender<RaftEnvelope>>>,
}

impl GrpcTransport {
    /// A transport for node `node_id`; sender tasks run on `runtime`.
    pub fn new(
        node_id: u64,
        clock: Clock,
        nodes: Arc<NodeRegistry>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        GrpcTransport {
            node_id: std::sync::atomic::AtomicU64::new(node_id),
            clock,
            nodes,
            runtime,
            queues: Mutex::new(HashMap::new()),
        }
    }
}

impl GrpcTransport {
    /// Sets this node's id once it is known (after bootstrap).
    pub fn set_node_id(&self, node_id: u64) {
        self.node_id
            .store(node_id, std::sync::atomic::Ordering::Relaxed);
    }
}

impl RaftTransport for GrpcTransport {
    fn send(&self, to_node: u64, range_id: u64, msg: Message) {
        let bytes = match msg.write_to_bytes() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("cannot encode raft message for node {to_node}: {e}");
                return;
            }
        };
        let env = RaftEnvelope {
            range_id,
            message: bytes.into(),
        };
        let mut queues = self.queues.lock();
        let tx = queues.entry(to_node).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
            let sender = Sender {
                from_node: self.node_id.load(std::sync::atomic::Ordering::Relaxed),
                to_node,
                clock: self.clock.clone(),
                nodes: self.nodes.clone(),
            };
            self.runtime.spawn(sender.run(rx));
            tx
        });
        // A full queue means the peer is slow or gone: drop, Raft retries.
        let _ = tx.try_send(env);
    }
}

struct Sender {
    from_node: u64,
    to_node: u64,
    clock: Clock,
    nodes: Arc<NodeRegistry>,
}

impl Sender {
    async fn run(self, mut rx: mpsc::Receiver<RaftEnvelope>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            if rx.is_closed() {
                return;
            }
            match self.stream(&mut rx).await {
                Ok(()) => return, // the queue closed: the transport is gone
                Err(e) => {
                    tracing::debug!(to = self.to_node, "raft stream to node broke: {e}");
                    // Messages queued while the peer is unreachable are stale
                    // by the time it is back; drop them.
                    while rx.try_recv().is_ok() {}
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    async fn stream(&self, rx: &mut mpsc::Receiver<RaftEnvelope>) -> Result<(), String> {
        let addr = self
            .nodes
            .get(self.to_node)
            .map(|n| n.address)
            .ok_or_else(|| format!("no address for node {}", self.to_node))?;
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(1))
            .http2_adaptive_window(true)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(3));
        let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
        let mut client = InternalClient::new(channel);
        let (stx, srx) = mpsc::channel::<RaftMessageBatch>(64);
        let call = tokio::spawn(async move {
            client
                .raft_messages(tokio_stream::wrappers::ReceiverStream::new(srx))
                .await
        });
        loop {
            let Some(first) = rx.recv().await else {
                return Ok(());
            };
            let mut messages = vec![first];
            while messages.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => messages.push(m),
                    Err(_) => break,
                }
            }
            let batch = RaftMessageBatch {
                now: Some(self.clock.now().into()),
                from_node: self.from_node,
                to_node: self.to_node,
                messages,
            };
            if call.is_finished() || stx.send(batch).await.is_err() {
                let outcome = call.await;
                return Err(match outcome {
                    Ok(Err(status)) => status.to_string(),
                    Ok(Ok(_)) => "stream closed by peer".to_string(),
                    Err(e) => e.to_string(),
                });
            }
        }
    }
}
