//! A Concord node: everything one `concord start` runs.
//!
//! ```text
//!                 ┌──────────────────────── Node ────────────────────────┐
//!  psql ─────────►│ pg (pgwire) ─► sql::Session ─► kv::Db ─► DistSender  │
//!                 │                                          │           │
//!  other nodes ──►│ grpc: Internal.RaftMessages ─► Store     │ local     │
//!                 │       Internal.Batch ────────► Store ◄───┘ or gRPC   │
//!  concord init ─►│       Admin.{Init,Bootstrap,NodeStatus}             │
//!  monitoring ───►│ http: /health /ready /metrics                        │
//!                 │ Store (replication) ─► RocksEngine (storage)         │
//!                 └──────────────────────────────────────────────────────┘
//! ```
//!
//! # Bootstrap
//! Nodes start uninitialized: they serve gRPC and answer `NodeStatus`, but
//! hold no data. `concord init --host H` asks H to form a cluster from the
//! nodes in H's `--join` list: H checks that each is reachable and not part of
//! a cluster, gives them node ids (itself 1, the others in list order),
//! creates the first range with a replica on each, and sends every node a
//! `Bootstrap` with the cluster id, its node id, the node list and the range.
//! Each node persists that atomically and starts its replica. A second
//! `init` finds H initialized and fails without touching anything.
//!
//! A node started with `--join` naming a running cluster joins it instead
//! (`Admin.Join`); replicas reach it through the replicate queue
//! ([`queues`]), which every node runs for the ranges it leads, fed by the
//! liveness heartbeats ([`liveness`]).
//!
//! # Not done yet
//! - TLS and authentication: the server runs in insecure mode and accepts
//!   any user without a password.

pub mod grpc;
pub mod http;
pub mod liveness;
pub mod pg;
pub mod queues;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use concord_hlc::Clock;
use concord_kv::{Db, DistSender};
use concord_replication::{GrpcTransport, NodeRegistry, Store, StoreConfig};
use concord_storage::RocksEngine;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How a node is configured.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Directory of the node's store (RocksDB).
    pub store: PathBuf,
    /// Address for inter-node gRPC.
    pub listen_addr: String,
    /// Address other nodes use to reach this one (default: `listen_addr`).
    pub advertise_addr: Option<String>,
    /// PostgreSQL wire protocol address.
    pub sql_addr: String,
    /// HTTP address (health, metrics).
    pub http_addr: String,
    /// The gRPC addresses of the initial cluster, this node included.
    pub join: Vec<String>,
    /// Maximum clock offset between nodes.
    pub max_offset: Duration,
    /// Testing only: a skew added to this node's physical clock.
    pub debug_clock_offset_nanos: i64,
    /// Testing only: `PUT /debug/clock-offset` may change the skew while the
    /// node runs (fault injection: clock jumps and strobes).
    pub debug_clock_endpoint: bool,
    /// MVCC versions shadowed for longer than this are garbage-collected.
    pub gc_ttl: Duration,
    /// Below this many free bytes on the store's file system the node
    /// refuses writes (SQLSTATE 53100) and hands its leaderships away.
    pub min_free_space: u64,
    /// Raft and store tunables.
    pub store_config: StoreConfig,
    /// Replicas per range.
    pub replicas: usize,
    /// A node silent this long is dead: its replicas are replaced.
    pub dead_after: Duration,
    /// Ranges larger than this are split.
    pub range_max_bytes: u64,
    /// Time between liveness heartbeats.
    pub heartbeat_interval: Duration,
    /// Time between rounds of the replicate, split and GC queues.
    pub queue_interval: Duration,
}

impl NodeConfig {
    /// A configuration with the defaults of `concord start`.
    pub fn new(
        store: PathBuf,
        listen_addr: &str,
        sql_addr: &str,
        http_addr: &str,
        join: Vec<String>,
    ) -> Self {
        NodeConfig {
            store,
            listen_addr: listen_addr.to_string(),
            advertise_addr: None,
            sql_addr: sql_addr.to_string(),
            http_addr: http_addr.to_string(),
            join,
            max_offset: Duration::from_millis(500),
            store_config: StoreConfig::default(),
            replicas: 3,
            dead_after: Duration::from_secs(60),
            range_max_bytes: 64 << 20,
            heartbeat_interval: Duration::from_secs(1),
            queue_interval: Duration::from_secs(1),
            debug_clock_offset_nanos: 0,
            debug_clock_endpoint: false,
            gc_ttl: Duration::from_secs(25 * 3600),
            min_free_space: 64 << 20,
        }
    }
}

impl NodeConfig {
    /// The address other nodes should use.
    pub fn advertised(&self) -> String {
        self.advertise_addr
            .clone()
            .unwrap_or_else(|| self.listen_addr.clone())
    }
}

/// Errors of starting or running a node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open the store at {path}: {source}")]
    Store {
        path: String,
        source: concord_storage::Error,
    },
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        addr: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Replication(#[from] concord_replication::Error),
    #[error("clock: {0}")]
    Clock(#[from] concord_hlc::Error),
    #[error("cannot start the network runtime: {0}")]
    Runtime(std::io::Error),
}

/// What the node's parts share.
pub struct NodeContext {
    pub config: NodeConfig,
    pub store: Store,
    pub db: Db,
    pub transport: Arc<GrpcTransport>,
    /// The actual bound addresses (useful when configured with port 0).
    pub grpc_addr: SocketAddr,
    pub sql_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// This node's view of the other nodes.
    pub liveness: liveness::Liveness,
    /// Set when the node must stop serving (e.g. its clock is too far off).
    pub fatal: watch::Sender<Option<String>>,
    /// The runtime that evaluates requests and runs SQL sessions (the one
    /// the node was started on); the gRPC server hands incoming KV batches
    /// to it from the network runtime (see [`Node`]).
    pub work: tokio::runtime::Handle,
}

impl NodeContext {
    /// How other nodes reach this one.
    pub fn descriptor(&self) -> concord_proto::meta::NodeDescriptor {
        concord_proto::meta::NodeDescriptor {
            node_id: self.store.node_id(),
            address: self.config.advertised(),
            sql_address: self.sql_addr.to_string(),
            http_address: self.http_addr.to_string(),
        }
    }
}

/// Watches the store's disk space and health, every second.
///
/// - Free space below `--min-free-space`: the store refuses new commands
///   (SQLSTATE 53100) and the queues hand this node's leaderships to other
///   replicas, so that the cluster keeps writing and this disk never runs
///   out under RocksDB. Twice that much free space lifts it.
/// - A failed store stops the node, so that whatever runs it (systemd, a
///   container's restart policy) restarts it and it recovers from what is
///   durable (see `concord_replication::store`). A store that failed on a
///   full disk anyway is the exception while the disk stays full: the node
///   stays up and answers 53100, which says what is wrong better than a
///   node that is gone, and stops once the file system has room again.
async fn watch_store(ctx: Arc<NodeContext>, mut shutdown: watch::Receiver<bool>) {
    let min_free = ctx.config.min_free_space;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let free = concord_storage::free_space(&ctx.config.store).ok();
        if let Some(free) = free {
            let full = ctx.store.disk_full();
            if !full && free < min_free {
                tracing::error!(
                    free_bytes = free,
                    "the store's disk is nearly full (less than --min-free-space {} MiB free): \
                     refusing writes and handing leaderships away until space is freed",
                    min_free >> 20
                );
                ctx.store.set_disk_full(true);
            } else if full && free >= min_free.saturating_mul(2) {
                tracing::info!(
                    free_bytes = free,
                    "disk space is back: accepting writes again"
                );
                ctx.store.set_disk_full(false);
            }
        }
        let Some(failure) = ctx.store.failure() else {
            continue;
        };
        let why = match failure {
            concord_storage::Error::NoSpace(_) => match free {
                Some(free) if free >= min_free.saturating_mul(2) => format!(
                    "the store stopped on a full disk and {} MiB are free again; \
                         restart the node to recover from its log",
                    free >> 20
                ),
                _ => continue,
            },
            other => {
                format!("the store failed ({other}); restart the node to recover from its log")
            }
        };
        tracing::error!("{why}");
        let _ = ctx.fatal.send(Some(why));
        return;
    }
}

/// A running node.
/// A running node.
///
/// Two tokio runtimes: the one `start` is called on runs SQL sessions,
/// request evaluation and the background queues; a small runtime of the
/// node's own (`concord-net`) runs the gRPC server's connections and the
/// Raft message streams to peers. Tokio does not preempt a task, so a
/// gateway busy with CPU-heavy statements (a bulk COPY on every core)
/// delayed its Raft heartbeats and answers by seconds when they shared one
/// runtime, and its leaders stepped down mid-load. Incoming KV batches are
/// evaluated on the work runtime, so the network runtime only moves bytes.
/// Worker threads of a node's network runtime (see [`Node`]).
const NET_THREADS: usize = 2;

pub struct Node {
    pub ctx: Arc<NodeContext>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _net: NetRuntime,
}

/// The network runtime, shut down without blocking when dropped (a runtime
/// may not block its way down inside another one, where nodes live).
struct NetRuntime(Option<tokio::runtime::Runtime>);

impl Drop for NetRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The three sockets a node serves on, bound before it starts.
///
/// [`Node::start`] binds them from the configured addresses. A caller that
/// picks ports itself (`concord demo`) binds them first with
/// [`Listeners::bind_loopback`] and keeps them bound until the node takes
/// them: a port found free with `bind(0)` and released could be taken by an
/// outgoing connection before the node binds it again.
pub struct Listeners {
    pub grpc: std::net::TcpListener,
    pub sql: std::net::TcpListener,
    pub http: std::net::TcpListener,
}

impl Listeners {
    /// Binds the configured addresses.
    pub fn bind(config: &NodeConfig) -> Result<Listeners, Error> {
        Ok(Listeners {
            grpc: bind(&config.listen_addr, "gRPC")?,
            sql: bind(&config.sql_addr, "SQL")?,
            http: bind(&config.http_addr, "HTTP")?,
        })
    }

    /// Three loopback sockets on ports the kernel picks.
    pub fn bind_loopback() -> Result<Listeners, Error> {
        Ok(Listeners {
            grpc: bind("127.0.0.1:0", "gRPC")?,
            sql: bind("127.0.0.1:0", "SQL")?,
            http: bind("127.0.0.1:0", "HTTP")?,
        })
    }

    /// The bound addresses: gRPC, SQL, HTTP.
    pub fn addrs(&self) -> Result<(SocketAddr, SocketAddr, SocketAddr), Error> {
        Ok((
            local(&self.grpc, "gRPC")?,
            local(&self.sql, "SQL")?,
            local(&self.http, "HTTP")?,
        ))
    }
}

fn bind(addr: &str, what: &'static str) -> Result<std::net::TcpListener, Error> {
    std::net::TcpListener::bind(addr).map_err(|source| Error::Listen {
        addr: addr.to_string(),
        what,
        source,
    })
}

fn local(l: &std::net::TcpListener, what: &'static str) -> Result<SocketAddr, Error> {
    l.local_addr().map_err(|source| Error::Listen {
        addr: "?".to_string(),
        what,
        source,
    })
}

fn into_tokio(l: std::net::TcpListener, what: &'static str) -> Result<TcpListener, Error> {
    l.set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(l))
        .map_err(|source| Error::Listen {
            addr: "?".to_string(),
            what,
            source,
        })
}

impl Node {
    /// Binds the configured addresses, opens the store and starts every
    /// server of the node.
    pub async fn start(config: NodeConfig) -> Result<Node, Error> {
        let listeners = Listeners::bind(&config)?;
        Node::start_on(config, listeners).await
    }

    /// Opens the store and starts every server of the node on sockets the
    /// caller bound. The configured addresses are then only what the node
    /// advertises; `listeners` decide where it serves.
    pub async fn start_on(config: NodeConfig, listeners: Listeners) -> Result<Node, Error> {
        let engine = RocksEngine::open(&config.store).map_err(|source| Error::Store {
            path: config.store.display().to_string(),
            source,
        })?;
        let clock = Clock::new(config.max_offset)?;
        if config.debug_clock_offset_nanos != 0 {
            tracing::warn!(
                offset_nanos = config.debug_clock_offset_nanos,
                "clock deliberately skewed (--debug-clock-offset)"
            );
            clock.set_test_offset(config.debug_clock_offset_nanos);
        }
        let net = NetRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(NET_THREADS)
                .thread_name("concord-net")
                .enable_all()
                .build()
                .map_err(Error::Runtime)?,
        ));
        let net_handle = net.0.as_ref().expect("just built").handle().clone();
        let nodes = Arc::new(NodeRegistry::new());
        let transport = Arc::new(GrpcTransport::new(
            0,
            clock.clone(),
            nodes.clone(),
            net_handle.clone(),
        ));
        let store = Store::start(
            Arc::new(engine),
            clock,
            nodes,
            transport.clone(),
            config.store_config.clone(),
        )?;
        transport.set_node_id(store.node_id());
        concord_sql::rowid::set_node_id(store.node_id());
        let db = Db::new(Arc::new(DistSender::new(store.clone())));

        let (grpc_addr, sql_addr, http_addr) = listeners.addrs()?;
        // The gRPC listener is registered with the network runtime, whose
        // reactor drives the server that accepts on it.
        let grpc_listener = {
            let _enter = net_handle.enter();
            into_tokio(listeners.grpc, "gRPC")?
        };
        let sql_listener = into_tokio(listeners.sql, "SQL")?;
        let http_listener = into_tokio(listeners.http, "HTTP")?;
        let ctx = Arc::new(NodeContext {
            grpc_addr,
            sql_addr,
            http_addr,
            liveness: liveness::Liveness::new(config.dead_after),
            fatal: watch::channel(None).0,
            work: tokio::runtime::Handle::current(),
            config,
            store,
            db,
            transport,
        });
        let (shutdown, rx) = watch::channel(false);
        let tasks = vec![
            net_handle.spawn(grpc::serve(ctx.clone(), grpc_listener, rx.clone())),
            tokio::spawn(pg::serve(ctx.clone(), sql_listener, rx.clone())),
            tokio::spawn(http::serve(ctx.clone(), http_listener, rx.clone())),
            tokio::spawn(liveness::run(ctx.clone(), rx.clone())),
            tokio::spawn(queues::run(ctx.clone(), rx.clone())),
            tokio::spawn(watch_store(ctx.clone(), rx.clone())),
            tokio::spawn(grpc::join_when_cluster_exists(ctx.clone(), rx)),
        ];
        tracing::info!(
            node_id = ctx.store.node_id(),
            grpc = %ctx.grpc_addr,
            sql = %ctx.sql_addr,
            http = %ctx.http_addr,
            store = %ctx.config.store.display(),
            "node started{}",
            if ctx.store.is_bootstrapped() { "" } else { "; waiting for `concord init`" }
        );
        Ok(Node {
            ctx,
            shutdown,
            tasks,
            _net: net,
        })
    }

    /// Becomes `Some(reason)` when the node must stop serving: the process
    /// running it should stop it and exit with an error.
    pub fn fatal(&self) -> watch::Receiver<Option<String>> {
        self.ctx.fatal.subscribe()
    }

    /// Stops the servers and the store.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        // Servers finish in-flight requests briefly; long-lived streams
        // (Raft message streams from peers) are cut after that.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                abort.abort();
            }
        }
        self.ctx.store.stop();
        // Wait for the ready loop's thread and the network runtime's
        // threads to finish, on a thread that may block: a process that
        // exited while they still dropped their state (and with it the
        // store's RocksDB handles) crashed in libc, on either thread (seen
        // about once in ten stops under load).
        let store = self.ctx.store.clone();
        let net = self._net.0.take();
        let _ = tokio::task::spawn_blocking(move || {
            if !store.wait_stopped(STOP_WAIT) {
                tracing::warn!("the ready loop did not stop within {STOP_WAIT:?}");
            }
            if let Some(rt) = net {
                rt.shutdown_timeout(STOP_WAIT);
            }
        })
        .await;
    }
}

/// How long [`Node::stop`] waits for the ready loop's thread, and then for
/// the network runtime's threads.
const STOP_WAIT: Duration = Duration::from_secs(5);
