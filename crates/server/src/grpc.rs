//! The node's gRPC services: `Internal` (Raft transport, KV batches) and
//! `Admin` (init, bootstrap, status).

use std::sync::Arc;
use std::time::{Duration, Instant};

use concord_proto::admin::admin_client::AdminClient;
use concord_proto::admin::admin_server::{Admin, AdminServer};
use concord_proto::admin::{
    BootstrapRequest, BootstrapResponse, DecommissionRequest, DecommissionResponse,
    HeartbeatRequest, HeartbeatResponse, InitRequest, InitResponse, JoinRequest, JoinResponse,
    NodeStatusRequest, NodeStatusResponse, RangeStatus, TransferLeaderRequest,
    TransferLeaderResponse,
};
use concord_proto::kv::internal_server::{Internal, InternalServer};
use concord_proto::kv::{BatchRequest, BatchResponse, RaftMessageBatch, RaftMessagesResponse};
use concord_proto::meta::{NodeDescriptor, RangeDescriptor, ReplicaDescriptor, StoreIdent};
use protobuf::Message as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::NodeContext;

/// Serves gRPC until shutdown.
pub async fn serve(
    ctx: Arc<NodeContext>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    // Our own listener: the builder's `tcp_nodelay` applies only to sockets
    // tonic accepts itself, so set it here. Without it every response waits
    // for the peer's delayed ACK (~40 ms on Linux).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let internal = InternalServer::new(InternalService { ctx: ctx.clone() })
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20);
    let admin = AdminServer::new(AdminService { ctx: ctx.clone() });
    let result = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(1)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // HTTP/2's default 64 KiB windows make a sender wait for a window
        // update per 64 KiB: a bulk load's Raft appends (a megabyte per
        // command) then queue for seconds, and heartbeats behind them.
        .http2_adaptive_window(Some(true))
        .add_service(internal)
        .add_service(admin)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!("gRPC server failed: {e}");
    }
}

struct InternalService {
    ctx: Arc<NodeContext>,
}

#[tonic::async_trait]
impl Internal for InternalService {
    async fn raft_messages(
        &self,
        request: Request<Streaming<RaftMessageBatch>>,
    ) -> Result<Response<RaftMessagesResponse>, Status> {
        let mut stream = request.into_inner();
        let store = self.ctx.store.clone();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            if let Some(now) = batch.now {
                if let Err(e) = store.clock().update(now.into()) {
                    tracing::warn!(from = batch.from_node, "raft messages refused: {e}");
                    continue;
                }
            }
            for env in batch.messages {
                match raft::prelude::Message::parse_from_bytes(&env.message) {
                    Ok(msg) => store.deliver_raft_message(env.range_id, msg, batch.from_node),
                    Err(e) => tracing::warn!(
                        from = batch.from_node,
                        "undecodable raft message dropped: {e}"
                    ),
                }
            }
        }
        Ok(Response::new(RaftMessagesResponse {}))
    }

    async fn batch(
        &self,
        request: Request<BatchRequest>,
    ) -> Result<Response<BatchResponse>, Status> {
        // Evaluated on the work runtime (see `Node`); a caller that goes
        // away does not cut an evaluation short.
        let store = self.ctx.store.clone();
        let req = request.into_inner();
        self.ctx
            .work
            .spawn(async move { store.batch(req).await })
            .await
            .map(Response::new)
            .map_err(|e| Status::internal(format!("evaluation task failed: {e}")))
    }
}

struct AdminService {
    ctx: Arc<NodeContext>,
}

async fn status_of(ctx: &NodeContext) -> Result<NodeStatusResponse, Status> {
    let ident = ctx
        .store
        .ident()
        .map_err(|e| Status::internal(e.to_string()))?
        .unwrap_or_default();
    let ranges = ctx
        .store
        .replicas()
        .iter()
        .map(|r| {
            let st = r.status.lock().clone();
            RangeStatus {
                descriptor: Some(r.desc.read().clone()),
                leader_replica_id: st.leader_replica_id,
                term: st.term,
                commit_index: st.commit_index,
                applied_index: st.applied_index,
            }
        })
        .collect();
    let me = ctx.store.node_id();
    let mut liveness = Vec::new();
    if me != 0 {
        let decommissioning = ctx.db.decommissioning_nodes().await.unwrap_or_default();
        // Replica counts from meta2 (authoritative); leaders as reported.
        let metas = ctx.db.meta_ranges(&[], &[]).await.unwrap_or_default();
        for n in ctx.store.nodes().all() {
            let mut l = ctx
                .liveness
                .describe(&n, me, decommissioning.contains(&n.node_id));
            l.replicas = metas
                .iter()
                .filter(|d| d.replicas.iter().any(|r| r.node_id == n.node_id))
                .count() as u64;
            if n.node_id == me {
                l.leaders = ctx.store.replica_counts().1;
            }
            liveness.push(l);
        }
    }
    Ok(NodeStatusResponse {
        liveness,
        initialized: ctx.store.is_bootstrapped(),
        cluster_id: ident.cluster_id,
        node_id: ident.node_id,
        address: ctx.config.advertised(),
        sql_address: ctx.sql_addr.to_string(),
        http_address: ctx.http_addr.to_string(),
        nodes: ctx.store.nodes().all(),
        ranges,
        now: Some(ctx.store.clock().now().into()),
        build: env!("CARGO_PKG_VERSION").to_string(),
    })
}

/// Connects an admin client to a node.
pub async fn admin_client(
    addr: &str,
    timeout: Duration,
) -> Result<AdminClient<tonic::transport::Channel>, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad address {addr}: {e}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    Ok(AdminClient::new(channel))
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn init(&self, _request: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        let ctx = &self.ctx;
        if ctx.store.is_bootstrapped() {
            return Err(Status::already_exists(
                "cluster has already been initialized",
            ));
        }
        // The members: this node first, then the rest of the join list.
        let me = ctx.config.advertised();
        let mut addrs = vec![me.clone()];
        for a in &ctx.config.join {
            let a = a.trim().to_string();
            if !a.is_empty() && a != me && a != ctx.config.listen_addr && !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        // Ask every other member for its status, waiting a little for nodes
        // that are still starting.
        let mut nodes = vec![NodeDescriptor {
            node_id: 1,
            address: me.clone(),
            sql_address: ctx.sql_addr.to_string(),
            http_address: ctx.http_addr.to_string(),
        }];
        for (i, addr) in addrs.iter().enumerate().skip(1) {
            let deadline = Instant::now() + Duration::from_secs(15);
            let status = loop {
                let attempt = async {
                    let mut c = admin_client(addr, Duration::from_secs(2)).await?;
                    c.node_status(NodeStatusRequest {})
                        .await
                        .map(|r| r.into_inner())
                        .map_err(|e| e.to_string())
                };
                match attempt.await {
                    Ok(s) => break s,
                    Err(e) if Instant::now() > deadline => {
                        return Err(Status::unavailable(format!(
                            "node {addr} in the --join list is unreachable ({e}); start every node of the initial cluster before `concord init`"
                        )))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            };
            if status.initialized {
                return Err(Status::failed_precondition(format!(
                    "node {addr} already belongs to a cluster (node id {})",
                    status.node_id
                )));
            }
            nodes.push(NodeDescriptor {
                node_id: i as u64 + 1,
                address: addr.clone(),
                sql_address: status.sql_address,
                http_address: status.http_address,
            });
        }
        let cluster_id = rand::random::<[u8; 16]>().to_vec();
        let first_range = RangeDescriptor {
            range_id: 1,
            start_key: vec![],
            end_key: vec![],
            replicas: nodes
                .iter()
                .take(ctx.config.replicas.max(1))
                .map(|n| ReplicaDescriptor {
                    node_id: n.node_id,
                    replica_id: n.node_id,
                    learner: false,
                })
                .collect(),
            next_replica_id: nodes.len().min(ctx.config.replicas.max(1)) as u64 + 1,
            generation: 1,
        };
        // This node first: once it is bootstrapped, a second init fails.
        bootstrap_local(ctx, &cluster_id, 1, &nodes, &first_range).await?;
        // Then the others; a member that fails now gets it in the background.
        for n in nodes.iter().skip(1) {
            let req = BootstrapRequest {
                cluster_id: cluster_id.clone(),
                node_id: n.node_id,
                nodes: nodes.clone(),
                first_range: Some(first_range.clone()),
            };
            let addr = n.address.clone();
            let first_try = async {
                let mut c = admin_client(&addr, Duration::from_secs(3)).await?;
                c.bootstrap(req.clone()).await.map_err(|e| e.to_string())
            };
            if let Err(e) = first_try.await {
                tracing::warn!("bootstrap of node {addr} failed ({e}); retrying in the background");
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if let Ok(mut c) = admin_client(&addr, Duration::from_secs(3)).await {
                            match c.bootstrap(req.clone()).await {
                                Ok(_) => return,
                                Err(s) if s.code() == tonic::Code::AlreadyExists => {
                                    tracing::error!("node {addr} joined another cluster: {s}");
                                    return;
                                }
                                Err(_) => {}
                            }
                        }
                    }
                });
            }
        }
        tracing::info!(nodes = nodes.len(), "cluster initialized");
        Ok(Response::new(InitResponse { cluster_id, nodes }))
    }

    async fn bootstrap(
        &self,
        request: Request<BootstrapRequest>,
    ) -> Result<Response<BootstrapResponse>, Status> {
        let req = request.into_inner();
        let range = req
            .first_range
            .ok_or_else(|| Status::invalid_argument("bootstrap without a first range"))?;
        bootstrap_local(&self.ctx, &req.cluster_id, req.node_id, &req.nodes, &range).await?;
        Ok(Response::new(BootstrapResponse {}))
    }

    async fn node_status(
        &self,
        _request: Request<NodeStatusRequest>,
    ) -> Result<Response<NodeStatusResponse>, Status> {
        Ok(Response::new(status_of(&self.ctx).await?))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let req = request.into_inner();
        if let Some(now) = req.now {
            // A reading too far ahead is not observed, but the heartbeat is
            // still answered: the sender measures the offset and stops.
            if let Err(e) = self.ctx.store.clock().update(now.into()) {
                tracing::warn!("heartbeat: {e}");
            }
        }
        Ok(Response::new(crate::liveness::handle_heartbeat(
            &self.ctx, req,
        )))
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let ctx = &self.ctx;
        let ident = ctx
            .store
            .ident()
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::failed_precondition("this node is not part of a cluster yet"))?;
        let node = request
            .into_inner()
            .node
            .ok_or_else(|| Status::invalid_argument("join without a node descriptor"))?;
        // Idempotent by address: a node that asks again (or an initial
        // member that joins instead of being bootstrapped) keeps its id.
        let known = ctx.store.nodes().all();
        let node_id = match known.iter().find(|n| n.address == node.address) {
            Some(n) => n.node_id,
            None => {
                let first = known.iter().map(|n| n.node_id).max().unwrap_or(0) + 1;
                ctx.db
                    .next_sequence("node-id", first)
                    .await
                    .map_err(|e| Status::unavailable(e.to_string()))?
            }
        };
        let desc = NodeDescriptor { node_id, ..node };
        ctx.store
            .upsert_node(desc.clone())
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(node_id, address = %desc.address, "node joined");
        Ok(Response::new(JoinResponse {
            cluster_id: ident.cluster_id,
            node_id,
            nodes: ctx.store.nodes().all(),
        }))
    }

    async fn decommission(
        &self,
        request: Request<DecommissionRequest>,
    ) -> Result<Response<DecommissionResponse>, Status> {
        let req = request.into_inner();
        if self.ctx.store.nodes().get(req.node_id).is_none() {
            return Err(Status::not_found(format!("no node {}", req.node_id)));
        }
        self.ctx
            .db
            .set_decommissioning(req.node_id, !req.recommission)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(DecommissionResponse {}))
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        let req = request.into_inner();
        let replica =
            self.ctx.store.replica(req.range_id).map_err(|_| {
                Status::not_found(format!("no replica of range {} here", req.range_id))
            })?;
        if replica.status.lock().role != "leader" {
            return Err(Status::failed_precondition(format!(
                "node {} does not lead range {}",
                self.ctx.store.node_id(),
                req.range_id
            )));
        }
        let to = replica
            .desc
            .read()
            .replicas
            .iter()
            .find(|r| r.node_id == req.to_node_id)
            .map(|r| r.replica_id)
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "range {} has no replica on node {}",
                    req.range_id, req.to_node_id
                ))
            })?;
        self.ctx
            .store
            .transfer_leader(req.range_id, to)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(TransferLeaderResponse {}))
    }
}

/// A node started with an empty store and `--join` waits: either `concord
/// init` bootstraps it, or, if a node it can reach already belongs to a
/// cluster, it joins that cluster.
pub async fn join_when_cluster_exists(ctx: Arc<NodeContext>, mut shutdown: watch::Receiver<bool>) {
    if ctx.store.is_bootstrapped() || ctx.config.join.is_empty() {
        return;
    }
    let started = Instant::now();
    let me = ctx.config.advertised();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if ctx.store.is_bootstrapped() {
            return;
        }
        // Give a concurrent `concord init` time to bootstrap this node.
        if started.elapsed() < Duration::from_secs(3) {
            continue;
        }
        for addr in &ctx.config.join {
            if addr == &me || addr == &ctx.config.listen_addr {
                continue;
            }
            let Ok(mut client) = admin_client(addr, Duration::from_secs(2)).await else {
                continue;
            };
            let Ok(status) = client.node_status(NodeStatusRequest {}).await else {
                continue;
            };
            if !status.into_inner().initialized {
                continue;
            }
            let mut desc = ctx.descriptor();
            desc.node_id = 0;
            match client.join(JoinRequest { node: Some(desc) }).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    let ident = StoreIdent {
                        cluster_id: resp.cluster_id,
                        node_id: resp.node_id,
                    };
                    match ctx.store.join(ident, resp.nodes) {
                        Ok(()) => {
                            ctx.transport.set_node_id(resp.node_id);
                            tracing::info!(node_id = resp.node_id, via = %addr, "joined the cluster");
                        }
                        Err(e) => tracing::warn!("joining failed: {e}"),
                    }
                    return;
                }
                Err(e) => tracing::info!(via = %addr, "join refused for now: {}", e.message()),
            }
        }
    }
}

async fn bootstrap_local(
    ctx: &NodeContext,
    cluster_id: &[u8],
    node_id: u64,
    nodes: &[NodeDescriptor],
    range: &RangeDescriptor,
) -> Result<(), Status> {
    let ident = StoreIdent {
        cluster_id: cluster_id.to_vec(),
        node_id,
    };
    ctx.store
        .bootstrap(ident, nodes.to_vec(), range.clone())
        .await
        .map_err(|e| match e {
            concord_replication::Error::AlreadyBootstrapped(m) => Status::already_exists(m),
            other => Status::internal(other.to_string()),
        })?;
    ctx.transport.set_node_id(node_id);
    tracing::info!(node_id, "node bootstrapped");
    Ok(())
}
