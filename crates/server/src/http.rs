//! The node's HTTP endpoints.
//!
//! - `GET /health`: 200 while the process serves (liveness).
//! - `GET /ready`: 200 once the node belongs to a cluster and its store has
//!   not failed; 503 otherwise (readiness, for load balancers).
//! - `GET /metrics`: Prometheus text format: node identity, per-range Raft
//!   state, HLC reading.
//! - `GET /`: a short human-readable status page.
//! - `PUT /debug/clock-offset` (only with the hidden `--debug-clock-endpoint`
//!   flag, for fault injection): body = signed nanoseconds to add to this
//!   node's physical clock from now on.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::Router;
use prometheus::{Encoder, GaugeVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::NodeContext;

/// Serves HTTP until shutdown.
pub async fn serve(
    ctx: Arc<NodeContext>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/", get(status_page))
        .route("/debug/clock-offset", put(set_clock_offset))
        .with_state(ctx);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!("HTTP server failed: {e}");
    }
}

/// Fault injection: skews this node's physical clock while it runs. The HLC
/// never goes backwards, so a negative jump only slows it down until the
/// physical clock catches up.
async fn set_clock_offset(State(ctx): State<Arc<NodeContext>>, body: String) -> impl IntoResponse {
    if !ctx.config.debug_clock_endpoint {
        return (
            StatusCode::FORBIDDEN,
            "clock offsets can be set only on a node started with --debug-clock-endpoint\n"
                .to_string(),
        );
    }
    match body.trim().parse::<i64>() {
        Ok(nanos) => {
            tracing::warn!(
                offset_nanos = nanos,
                "clock deliberately skewed (debug endpoint)"
            );
            ctx.store.clock().set_test_offset(nanos);
            (StatusCode::OK, format!("clock offset {nanos} ns\n"))
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("expected a signed number of nanoseconds: {e}\n"),
        ),
    }
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(ctx): State<Arc<NodeContext>>) -> impl IntoResponse {
    if ctx.store.failure().is_some() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "store failed\n".to_string(),
        );
    }
    if !ctx.store.is_bootstrapped() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not initialized: run `concord init`\n".to_string(),
        );
    }
    (StatusCode::OK, "ready\n".to_string())
}

/// Renders the metrics of a node in Prometheus text format.
pub fn render_metrics(ctx: &NodeContext) -> Result<String, prometheus::Error> {
    let registry = Registry::new();
    let node_id = IntGauge::new("concord_node_id", "This node's id (0 before init).")?;
    node_id.set(ctx.store.node_id() as i64);
    registry.register(Box::new(node_id.clone()))?;
    let initialized = IntGauge::new(
        "concord_node_initialized",
        "1 once the node belongs to a cluster.",
    )?;
    initialized.set(ctx.store.is_bootstrapped() as i64);
    registry.register(Box::new(initialized.clone()))?;
    let failed = IntGauge::new(
        "concord_store_failed",
        "1 if the store hit a storage error and stopped.",
    )?;
    failed.set(ctx.store.failure().is_some() as i64);
    registry.register(Box::new(failed.clone()))?;
    let follower_reads = IntGauge::new(
        "concord_follower_reads",
        "Reads served by a follower replica here below its closed timestamp.",
    )?;
    follower_reads.set(ctx.store.follower_reads() as i64);
    registry.register(Box::new(follower_reads.clone()))?;
    let locks_in_memory = IntGauge::new(
        "concord_locks_in_memory",
        "Locks that leaders here held in memory instead of replicating them.",
    )?;
    locks_in_memory.set(ctx.store.locks_in_memory() as i64);
    registry.register(Box::new(locks_in_memory.clone()))?;
    let lease_reads = IntGauge::new(
        "concord_lease_reads",
        "Reads that leaders here served from their lease, without a quorum round.",
    )?;
    lease_reads.set(ctx.store.lease_reads() as i64);
    registry.register(Box::new(lease_reads.clone()))?;
    let hlc = IntGauge::new(
        "concord_hlc_wall_nanos",
        "Wall time of this node's hybrid logical clock.",
    )?;
    hlc.set(ctx.store.clock().now().wall as i64);
    registry.register(Box::new(hlc.clone()))?;
    let replicas = IntGauge::new("concord_replicas", "Replicas on this node.")?;
    let leaders = IntGauge::new(
        "concord_replicas_leaders",
        "Replicas on this node that are Raft leaders.",
    )?;
    let raft = IntGaugeVec::new(
        Opts::new("concord_range_raft", "Raft state of each local replica."),
        &["range_id", "field"],
    )?;
    let is_leader = GaugeVec::new(
        Opts::new("concord_range_is_leader", "1 if this node leads the range."),
        &["range_id"],
    )?;
    let mut n_leaders = 0;
    let all = ctx.store.replicas();
    for r in &all {
        let st = r.status.lock().clone();
        let id = r.range_id.to_string();
        raft.with_label_values(&[id.as_str(), "term"])
            .set(st.term as i64);
        raft.with_label_values(&[id.as_str(), "commit_index"])
            .set(st.commit_index as i64);
        raft.with_label_values(&[id.as_str(), "applied_index"])
            .set(st.applied_index as i64);
        raft.with_label_values(&[id.as_str(), "log_entries"])
            .set(st.log_entries as i64);
        raft.with_label_values(&[id.as_str(), "snapshots_sent"])
            .set(st.snapshots_sent as i64);
        raft.with_label_values(&[id.as_str(), "snapshots_applied"])
            .set(st.snapshots_applied as i64);
        raft.with_label_values(&[id.as_str(), "bytes"])
            .set(st.bytes as i64);
        raft.with_label_values(&[id.as_str(), "leader_replica_id"])
            .set(st.leader_replica_id as i64);
        let (points, spans) = {
            let c = r.tscache.lock();
            (c.points_len(), c.spans_len())
        };
        raft.with_label_values(&[id.as_str(), "tscache_points"])
            .set(points as i64);
        raft.with_label_values(&[id.as_str(), "tscache_spans"])
            .set(spans as i64);
        raft.with_label_values(&[id.as_str(), "locks_held"])
            .set(r.locks.lock().len() as i64);
        let leading = st.role == "leader";
        n_leaders += leading as i64;
        is_leader
            .with_label_values(&[id.as_str()])
            .set(if leading { 1.0 } else { 0.0 });
    }
    replicas.set(all.len() as i64);
    leaders.set(n_leaders);
    registry.register(Box::new(replicas))?;
    registry.register(Box::new(leaders))?;
    registry.register(Box::new(raft))?;
    registry.register(Box::new(is_leader))?;
    let live = IntGaugeVec::new(
        Opts::new(
            "concord_node_live",
            "1 if this node sees the node as live (heartbeats within --dead-after).",
        ),
        &["node_id"],
    )?;
    let offset = IntGaugeVec::new(
        Opts::new(
            "concord_node_clock_offset_nanos",
            "Estimated clock offset of each node from this one.",
        ),
        &["node_id"],
    )?;
    let me = ctx.store.node_id();
    for n in ctx.store.nodes().all() {
        let l = ctx.liveness.describe(&n, me, false);
        let id = n.node_id.to_string();
        live.with_label_values(&[id.as_str()]).set(l.live as i64);
        offset
            .with_label_values(&[id.as_str()])
            .set(l.clock_offset_nanos);
    }
    registry.register(Box::new(live))?;
    registry.register(Box::new(offset))?;
    let mut buf = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

async fn metrics(State(ctx): State<Arc<NodeContext>>) -> impl IntoResponse {
    match render_metrics(&ctx) {
        Ok(text) => (StatusCode::OK, text),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("metrics: {e}\n")),
    }
}

async fn status_page(State(ctx): State<Arc<NodeContext>>) -> String {
    let mut s = format!(
        "Concord node {} ({})\nsql: {}  grpc: {}  http: {}\nstore: {}\n\nranges:\n",
        ctx.store.node_id(),
        if ctx.store.is_bootstrapped() {
            "initialized"
        } else {
            "waiting for init"
        },
        ctx.sql_addr,
        ctx.grpc_addr,
        ctx.http_addr,
        ctx.config.store.display()
    );
    for r in ctx.store.replicas() {
        let st = r.status.lock().clone();
        let desc = r.desc.read().clone();
        let nodes: Vec<String> = desc
            .replicas
            .iter()
            .map(|x| x.node_id.to_string())
            .collect();
        s.push_str(&format!(
            "  range {}: {} (leader replica {}), term {}, applied {}, replicas on nodes [{}]\n",
            r.range_id,
            st.role,
            st.leader_replica_id,
            st.term,
            st.applied_index,
            nodes.join(", ")
        ));
    }
    s
}
