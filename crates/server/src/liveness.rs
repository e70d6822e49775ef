//! Node liveness: every node heartbeats every other node it knows, once per
//! heartbeat interval, over gRPC (`Admin.Heartbeat`).
//!
//! A heartbeat carries the sender's descriptor (so a node that joined becomes
//! known everywhere within a round), its replica and leader counts (the load
//! that rebalancing evens out) and its clock reading. Each node keeps its own
//! view: a node is *live* if a heartbeat to or from it succeeded within
//! `--dead-after`. The view is local and approximate, which is all the
//! replicate queue needs: it acts only on ranges this node leads, and a
//! wrong guess costs an extra replica move, never data.
//!
//! Clock offsets are measured NTP-style on every heartbeat (see
//! `concord_hlc::measure_offset`) and reported on `/metrics` and in
//! `concord node status`. A node whose offset to a majority of the cluster's
//! other nodes exceeds 80% of `--max-offset` stops serving: it logs why and
//! exits (its own clock is the odd one out). A heartbeat is answered even
//! when the sender's clock is too far ahead, so that the sender can measure
//! the offset and learn that it must stop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use concord_proto::admin::{HeartbeatRequest, HeartbeatResponse, NodeLiveness};
use concord_proto::meta::NodeDescriptor;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::NodeContext;

#[derive(Clone, Debug, Default)]
struct Seen {
    at: Option<Instant>,
    replicas: u64,
    leaders: u64,
    offset_nanos: i64,
    /// When `offset_nanos` was last measured (by our own heartbeat).
    offset_at: Option<Instant>,
    /// Half the round trip of that measurement: the offset is known only
    /// within ± this.
    offset_error_nanos: u64,
    /// The read timestamp of the node's oldest open transaction.
    oldest_read: Option<concord_hlc::Timestamp>,
    /// The node said its disk is nearly full.
    disk_full: bool,
}

/// This node's view of the cluster's nodes.
pub struct Liveness {
    dead_after: Duration,
    seen: Mutex<HashMap<u64, Seen>>,
    started: Instant,
}

impl Liveness {
    /// A view where nodes count as dead after `dead_after` of silence.
    pub fn new(dead_after: Duration) -> Self {
        Liveness {
            dead_after,
            seen: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }

    /// Records a successful exchange with a node.
    pub fn record(&self, node_id: u64, replicas: u64, leaders: u64, offset_nanos: Option<i64>) {
        let mut seen = self.seen.lock();
        let e = seen.entry(node_id).or_default();
        e.at = Some(Instant::now());
        e.replicas = replicas;
        e.leaders = leaders;
        if let Some(o) = offset_nanos {
            e.offset_nanos = o;
            e.offset_at = Some(Instant::now());
        }
    }

    /// Records the oldest open transaction's read timestamp on a node.
    pub fn set_oldest_read(&self, node_id: u64, ts: Option<concord_hlc::Timestamp>) {
        self.seen.lock().entry(node_id).or_default().oldest_read = ts;
    }

    /// The oldest read timestamp of any open transaction on a live node
    /// (this node's own `local` included).
    pub fn oldest_read(
        &self,
        me: u64,
        local: Option<concord_hlc::Timestamp>,
    ) -> Option<concord_hlc::Timestamp> {
        let others: Vec<(u64, Option<concord_hlc::Timestamp>)> = self
            .seen
            .lock()
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(id, s)| (*id, s.oldest_read))
            .collect();
        others
            .into_iter()
            .filter(|(id, _)| self.is_live(*id, me))
            .filter_map(|(_, ts)| ts)
            .chain(local)
            .min()
    }

    /// Records whether a node's disk is nearly full.
    pub fn set_disk_full(&self, node_id: u64, full: bool) {
        self.seen.lock().entry(node_id).or_default().disk_full = full;
    }

    /// Whether a node last said its disk is nearly full.
    pub fn disk_full(&self, node_id: u64) -> bool {
        self.seen.lock().get(&node_id).is_some_and(|s| s.disk_full)
    }

    /// Records the uncertainty of the latest offset measured to a node.
    pub fn set_offset_error(&self, node_id: u64, err_nanos: u64) {
        self.seen
            .lock()
            .entry(node_id)
            .or_default()
            .offset_error_nanos = err_nanos;
    }

    /// If this node's clock is off by more than `limit` from a majority of
    /// the other `peers` nodes of the cluster (as measured recently), says
    /// so. With fewer measurements than a majority nothing is concluded:
    /// with one peer down, a disagreement with the other says nothing about
    /// whose clock is wrong.
    pub fn clock_too_far(&self, me: u64, peers: usize, limit: Duration) -> Option<String> {
        let seen = self.seen.lock();
        let fresh = self.dead_after.min(Duration::from_secs(10));
        let measured: Vec<(u64, i64)> = seen
            .iter()
            .filter(|(id, s)| **id != me && s.offset_at.is_some_and(|at| at.elapsed() < fresh))
            .map(|(id, s)| (*id, s.offset_nanos))
            .collect();
        let far: Vec<&(u64, i64)> = measured
            .iter()
            .filter(|(id, o)| {
                let err = seen.get(id).map_or(0, |s| s.offset_error_nanos);
                o.unsigned_abs().saturating_sub(err) > limit.as_nanos() as u64
            })
            .collect();
        if far.is_empty() || far.len() * 2 <= peers.max(measured.len()) {
            return None;
        }
        let list: Vec<String> = far
            .iter()
            .map(|(id, o)| format!("node {id}: {:+.3}s", *o as f64 / 1e9))
            .collect();
        Some(format!(
            "this node's clock is off by more than {limit:?} (80% of --max-offset) from {} of the {} nodes it measured (their clock minus ours: {}); fix its clock (NTP) and restart it",
            far.len(),
            measured.len(),
            list.join(", ")
        ))
    }

    /// Whether a node is live in this view. A node never heard from counts
    /// as live until `dead_after` has passed since this node started, so a
    /// restarted node does not declare everyone dead at once.
    pub fn is_live(&self, node_id: u64, me: u64) -> bool {
        if node_id == me {
            return true;
        }
        match self.seen.lock().get(&node_id).and_then(|s| s.at) {
            Some(at) => at.elapsed() < self.dead_after,
            None => self.started.elapsed() < self.dead_after,
        }
    }

    /// The last reported (replicas, leaders) of a node.
    pub fn load(&self, node_id: u64) -> (u64, u64) {
        self.seen
            .lock()
            .get(&node_id)
            .map(|s| (s.replicas, s.leaders))
            .unwrap_or((0, 0))
    }

    /// The view of one node, for status and metrics.
    pub fn describe(&self, node: &NodeDescriptor, me: u64, decommissioning: bool) -> NodeLiveness {
        let s = self
            .seen
            .lock()
            .get(&node.node_id)
            .cloned()
            .unwrap_or_default();
        NodeLiveness {
            node_id: node.node_id,
            address: node.address.clone(),
            live: self.is_live(node.node_id, me),
            decommissioning,
            replicas: s.replicas,
            leaders: s.leaders,
            last_seen_ms: if node.node_id == me {
                0
            } else {
                s.at.map(|a| a.elapsed().as_millis() as u64)
                    .unwrap_or(u64::MAX)
            },
            clock_offset_nanos: s.offset_nanos,
        }
    }
}

/// Answers a heartbeat: records the sender, returns our own state.
pub fn handle_heartbeat(ctx: &NodeContext, req: HeartbeatRequest) -> HeartbeatResponse {
    if let Some(from) = req.from {
        let _ = ctx.store.upsert_node(from.clone());
        ctx.liveness
            .record(from.node_id, req.replicas, req.leaders, None);
        ctx.liveness
            .set_oldest_read(from.node_id, req.oldest_read_ts.map(|t| t.into()));
        ctx.liveness.set_disk_full(from.node_id, req.disk_full);
    }
    let (replicas, leaders) = ctx.store.replica_counts();
    ctx.liveness
        .record(ctx.store.node_id(), replicas, leaders, Some(0));
    // The physical clock, not the HLC: the sender measures clock offsets
    // with it, and the HLC may legitimately run ahead of physical time.
    let physical = concord_hlc::Timestamp::new(ctx.store.clock().physical_now(), 0);
    HeartbeatResponse {
        oldest_read_ts: ctx.db.oldest_active_read_ts().map(Into::into),
        node: Some(ctx.descriptor()),
        now: Some(physical.into()),
        replicas,
        leaders,
        disk_full: ctx.store.disk_full(),
    }
}

/// Heartbeats every known node until shutdown.
pub async fn run(ctx: Arc<NodeContext>, mut shutdown: watch::Receiver<bool>) {
    let interval = ctx.config.heartbeat_interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let me = ctx.store.node_id();
        if me == 0 {
            continue;
        }
        let limit = ctx.store.clock().max_offset().mul_f64(0.8);
        let peers = ctx.store.nodes().all().len().saturating_sub(1);
        if let Some(why) = ctx.liveness.clock_too_far(me, peers, limit) {
            tracing::error!("{why}; stopping");
            let _ = ctx.fatal.send(Some(why));
            return;
        }
        let (replicas, leaders) = ctx.store.replica_counts();
        ctx.liveness.record(me, replicas, leaders, Some(0));
        for node in ctx.store.nodes().all() {
            if node.node_id == me {
                continue;
            }
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let clock = ctx.store.clock().clone();
                let send = clock.physical_now();
                let req = HeartbeatRequest {
                    oldest_read_ts: ctx.db.oldest_active_read_ts().map(Into::into),
                    from: Some(ctx.descriptor()),
                    now: Some(clock.now().into()),
                    replicas,
                    leaders,
                    disk_full: ctx.store.disk_full(),
                };
                let timeout = ctx
                    .config
                    .heartbeat_interval
                    .max(Duration::from_millis(500));
                let Ok(mut client) = crate::grpc::admin_client(&node.address, timeout).await else {
                    return;
                };
                if let Ok(Ok(resp)) = tokio::time::timeout(timeout, client.heartbeat(req)).await {
                    let resp = resp.into_inner();
                    let recv = clock.physical_now();
                    let remote = concord_proto::ts(resp.now);
                    let _ = clock.update(remote);
                    let offset = concord_hlc::measure_offset(send, remote.wall, recv);
                    ctx.liveness
                        .set_offset_error(node.node_id, recv.saturating_sub(send) / 2);
                    if let Some(n) = resp.node {
                        let _ = ctx.store.upsert_node(n);
                    }
                    ctx.liveness
                        .set_oldest_read(node.node_id, resp.oldest_read_ts.map(|t| t.into()));
                    ctx.liveness.set_disk_full(node.node_id, resp.disk_full);
                    ctx.liveness
                        .record(node.node_id, resp.replicas, resp.leaders, Some(offset));
                }
            });
        }
    }
}
