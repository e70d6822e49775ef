//! The `concord` command.
//!
//! ```text
//! concord start   run a node (waits for `init` if its store is new)
//! concord init    form a cluster from the nodes in a node's --join list
//! concord sql     an interactive SQL shell (or -e to run statements)
//! concord demo    a local multi-node cluster in this process, with a shell
//! concord node    node status
//! concord workload init|run|check tpcc|bank|kv   benchmarks and consistency checks
//! ```
//!
//! Every flag of `start` can also be given as an environment variable
//! (`CONCORD_STORE`, `CONCORD_LISTEN_ADDR`, …); the flag wins.

mod shell;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use concord_replication::StoreConfig;
use concord_server::{Listeners, Node, NodeConfig};

/// The process allocator: jemalloc, for Rust and, unprefixed, for RocksDB's
/// C++ too. Under pgbench, glibc's malloc was the largest single item of
/// the gateway's profile (14% of its samples, much of it in
/// `malloc_consolidate` and `unlink_chunk`); see docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "concord",
    version,
    about = "Concord: a distributed, transactional SQL database"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node.
    Start(Box<StartArgs>),
    /// Initialize a new cluster from the nodes in the --join list of --host.
    Init {
        /// gRPC address of one node of the new cluster.
        #[arg(long, default_value = "127.0.0.1:26257", env = "CONCORD_HOST")]
        host: String,
        /// Succeed (exit 0) if the cluster is already initialized, as a
        /// one-shot init service that runs at every start wants.
        #[arg(long)]
        allow_initialized: bool,
    },
    /// Open a SQL shell (or run statements with -e).
    Sql(shell::SqlArgs),
    /// Start a local cluster in this process and open a SQL shell on it.
    Demo(DemoArgs),
    /// Inspect nodes.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Act on ranges.
    Range {
        #[command(subcommand)]
        command: RangeCommand,
    },
    /// Load, run and check TPC-C, bank and kv workloads against Concord or
    /// any PostgreSQL server (see docs/benchmarks.md).
    Workload {
        #[command(subcommand)]
        command: concord_loadgen::WorkloadCommand,
    },
}

#[derive(Subcommand)]
enum RangeCommand {
    /// Hand the Raft leadership of a range to its replica on another node.
    /// --host must be the node that leads the range now (see `concord node
    /// status`).
    TransferLeader {
        range_id: u64,
        /// The node that should lead the range.
        to_node: u64,
        /// gRPC address of the range's current leader.
        #[arg(long, default_value = "127.0.0.1:26257", env = "CONCORD_HOST")]
        host: String,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Show the cluster's nodes (as one node sees them) and that node's ranges.
    Status {
        /// gRPC address of the node to ask.
        #[arg(long, default_value = "127.0.0.1:26257", env = "CONCORD_HOST")]
        host: String,
    },
    /// Move every replica off a node, reporting progress until it holds none.
    Decommission {
        /// Id of the node to drain.
        node_id: u64,
        /// gRPC address of any live node.
        #[arg(long, default_value = "127.0.0.1:26257", env = "CONCORD_HOST")]
        host: String,
        /// Give up waiting after this long (the drain continues).
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        wait: Duration,
    },
    /// Undo a decommission: the node may hold replicas again.
    Recommission {
        node_id: u64,
        #[arg(long, default_value = "127.0.0.1:26257", env = "CONCORD_HOST")]
        host: String,
    },
}

#[derive(Args, Clone)]
struct StartArgs {
    /// Directory of this node's data (created if missing).
    #[arg(long, default_value = "concord-data", env = "CONCORD_STORE")]
    store: PathBuf,
    /// Address for traffic between nodes (gRPC).
    #[arg(long, default_value = "127.0.0.1:26257", env = "CONCORD_LISTEN_ADDR")]
    listen_addr: String,
    /// Address other nodes use to reach this one, if not --listen-addr
    /// (e.g. behind NAT or when listening on 0.0.0.0).
    #[arg(long, env = "CONCORD_ADVERTISE_ADDR")]
    advertise_addr: Option<String>,
    /// Address for SQL clients (PostgreSQL wire protocol).
    #[arg(long, default_value = "127.0.0.1:5432", env = "CONCORD_SQL_ADDR")]
    sql_addr: String,
    /// Address for HTTP: /health, /ready, /metrics.
    #[arg(long, default_value = "127.0.0.1:8080", env = "CONCORD_HTTP_ADDR")]
    http_addr: String,
    /// Comma-separated gRPC addresses of the initial cluster's nodes
    /// (this one included). `concord init` forms the cluster from them.
    #[arg(long, value_delimiter = ',', env = "CONCORD_JOIN")]
    join: Vec<String>,
    /// Maximum clock offset between nodes, e.g. 500ms. Transactions rely on
    /// it: clocks further apart can break serializability.
    #[arg(long, default_value = "500ms", value_parser = parse_duration, env = "CONCORD_MAX_OFFSET")]
    max_offset: Duration,
    /// Raft tick interval, e.g. 100ms. Elections take 10-20 ticks.
    #[arg(long, default_value = "100ms", value_parser = parse_duration, env = "CONCORD_RAFT_TICK")]
    raft_tick: Duration,
    /// Replicas per range.
    #[arg(long, default_value_t = 3, env = "CONCORD_REPLICAS")]
    replicas: usize,
    /// A node not heard from for this long is dead and its replicas are
    /// replaced elsewhere, e.g. 60s or 2m.
    #[arg(long, default_value = "60s", value_parser = parse_duration, env = "CONCORD_DEAD_AFTER")]
    dead_after: Duration,
    /// Ranges that grow past this many bytes are split in two.
    #[arg(long, default_value_t = 64 << 20, env = "CONCORD_RANGE_MAX_BYTES")]
    range_max_bytes: u64,
    /// Applied Raft log entries a range keeps before truncating its log
    /// (followers further behind catch up from a snapshot).
    #[arg(
        long,
        default_value_t = 1000,
        env = "CONCORD_RAFT_LOG_TRUNCATION_THRESHOLD"
    )]
    raft_log_truncation_threshold: u64,
    /// How long old MVCC versions are kept (reads further in the past are
    /// refused), e.g. 25h or 10m. Use the same value on every node.
    #[arg(long, default_value = "25h", value_parser = parse_duration, env = "CONCORD_GC_TTL")]
    gc_ttl: Duration,
    /// Free space (bytes; K, M, G suffixes) the store's file system keeps:
    /// below it the node refuses writes with SQLSTATE 53100 and hands its
    /// leaderships to other nodes, until twice as much is free again.
    #[arg(long, default_value = "64M", value_parser = parse_bytes, env = "CONCORD_MIN_FREE_SPACE")]
    min_free_space: u64,
    /// Testing only: skews this node's clock by this much (e.g. 2s or -2s),
    /// to check that skew beyond --max-offset stops the node.
    #[arg(long, hide = true, default_value = "0s", allow_hyphen_values = true, value_parser = parse_signed_duration)]
    debug_clock_offset: i64,
    /// Testing only: lets `PUT /debug/clock-offset` on the HTTP port skew this
    /// node's clock while it runs (fault injection).
    #[arg(long, hide = true, env = "CONCORD_DEBUG_CLOCK_ENDPOINT")]
    debug_clock_endpoint: bool,
    /// Log filter (tracing syntax), e.g. info or concord=debug,raft=info.
    #[arg(long, default_value = "info", env = "CONCORD_LOG")]
    log: String,
}

#[derive(Args)]
struct DemoArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Keep the nodes' data in this directory (default: a temporary
    /// directory removed on exit).
    #[arg(long)]
    store_dir: Option<PathBuf>,
    /// Run these statements and exit instead of opening the shell.
    #[arg(short = 'e', long = "execute")]
    execute: Vec<String>,
}

/// Parses durations written like `500ms`, `15s`, `2m`, `1h`.
/// A duration with an optional leading `-`, in nanoseconds.
fn parse_signed_duration(s: &str) -> Result<i64, String> {
    let (sign, rest) = match s.strip_prefix('-') {
        Some(r) => (-1, r),
        None => (1, s),
    };
    let d = parse_duration(rest)?;
    i64::try_from(d.as_nanos())
        .map(|n| sign * n)
        .map_err(|_| format!("duration {s} is too long"))
}

/// Parses sizes written like `64M`, `1G`, `512K` or plain bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected e.g. 64M or 1G"))?;
    let mult: u64 = match unit.trim_end_matches(['B', 'b', 'i']) {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        _ => return Err(format!("invalid size unit in {s:?}: use K, M or G")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms, 15s, 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "us" => n / 1e6,
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s, m or h")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn init_logging(filter: &str, file: Option<&std::path::Path>) -> Result<()> {
    let env_filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| anyhow!("--log {filter:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_target(false);
    match file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening log file {}", path.display()))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}

fn node_config(a: &StartArgs) -> NodeConfig {
    let mut c = NodeConfig::new(
        a.store.clone(),
        &a.listen_addr,
        &a.sql_addr,
        &a.http_addr,
        a.join.clone(),
    );
    c.advertise_addr = a.advertise_addr.clone();
    c.max_offset = a.max_offset;
    c.store_config = StoreConfig {
        tick_interval: a.raft_tick,
        log_truncation_threshold: a.raft_log_truncation_threshold,
        ..StoreConfig::default()
    };
    c.replicas = a.replicas.max(1);
    c.dead_after = a.dead_after;
    c.range_max_bytes = a.range_max_bytes;
    c.debug_clock_offset_nanos = a.debug_clock_offset;
    c.debug_clock_endpoint = a.debug_clock_endpoint;
    c.gc_ttl = a.gc_ttl;
    c.min_free_space = a.min_free_space;
    c
}

async fn start(args: StartArgs) -> Result<()> {
    init_logging(&args.log, None)?;
    let node = Node::start(node_config(&args)).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut fatal = node.fatal();
    let fatal_error = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
        r = fatal.wait_for(|f| f.is_some()) => r.ok().and_then(|f| f.clone()),
    };
    tracing::info!("shutting down");
    node.stop().await;
    match fatal_error {
        Some(why) => bail!("the node stopped: {why}"),
        None => Ok(()),
    }
}

async fn init(host: &str, allow_initialized: bool) -> Result<()> {
    // The node may still be starting: keep trying to reach it for a while.
    // Init itself waits for the other nodes of the --join list; give it time.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut client = loop {
        match concord_server::grpc::admin_client(host, Duration::from_secs(60)).await {
            Ok(c) => break c,
            Err(e) if std::time::Instant::now() > deadline => bail!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    match client.init(concord_proto::admin::InitRequest {}).await {
        Ok(resp) => {
            let resp = resp.into_inner();
            println!(
                "Cluster {} initialized with {} node(s):",
                hex(&resp.cluster_id),
                resp.nodes.len()
            );
            for n in resp.nodes {
                println!(
                    "  node {}: {} (sql {})",
                    n.node_id, n.address, n.sql_address
                );
            }
            Ok(())
        }
        Err(s) if s.code() == tonic::Code::AlreadyExists && allow_initialized => {
            println!("{}", s.message());
            Ok(())
        }
        Err(s) if s.code() == tonic::Code::AlreadyExists => bail!("{}", s.message()),
        Err(s) => bail!("init failed: {}", s.message()),
    }
}

async fn transfer_leader(range_id: u64, to_node: u64, host: &str) -> Result<()> {
    let mut client = concord_server::grpc::admin_client(host, Duration::from_secs(10))
        .await
        .map_err(|e| anyhow!(e))?;
    client
        .transfer_leader(concord_proto::admin::TransferLeaderRequest {
            range_id,
            to_node_id: to_node,
        })
        .await
        .map_err(|s| anyhow!("{}", s.message()))?;
    println!("range {range_id}: leadership transfer to node {to_node} started");
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn node_status(host: &str) -> Result<()> {
    let mut client = concord_server::grpc::admin_client(host, Duration::from_secs(5))
        .await
        .map_err(|e| anyhow!(e))?;
    let st = client
        .node_status(concord_proto::admin::NodeStatusRequest {})
        .await
        .map_err(|s| anyhow!("status failed: {}", s.message()))?
        .into_inner();
    if !st.initialized {
        println!("node at {host}: not initialized (waiting for `concord init`)");
        return Ok(());
    }
    println!(
        "node {} of cluster {} (build {})",
        st.node_id,
        hex(&st.cluster_id),
        st.build
    );
    println!(
        "  grpc {}  sql {}  http {}",
        st.address, st.sql_address, st.http_address
    );
    println!("nodes (as node {} sees them):", st.node_id);
    println!(
        "  {:>4}  {:<22} {:<6} {:>8} {:>7}  state",
        "id", "address", "live", "replicas", "leaders"
    );
    for l in &st.liveness {
        println!(
            "  {:>4}  {:<22} {:<6} {:>8} {:>7}  {}",
            l.node_id,
            l.address,
            if l.live { "yes" } else { "DEAD" },
            l.replicas,
            l.leaders,
            if l.decommissioning {
                "decommissioning"
            } else {
                "active"
            }
        );
    }
    println!("ranges on this node:");
    for r in &st.ranges {
        let d = r.descriptor.clone().unwrap_or_default();
        let nodes: Vec<String> = d.replicas.iter().map(|x| x.node_id.to_string()).collect();
        println!(
            "  range {}: replicas on nodes [{}], leader replica {}, term {}, commit {}, applied {}",
            d.range_id,
            nodes.join(", "),
            r.leader_replica_id,
            r.term,
            r.commit_index,
            r.applied_index
        );
    }
    Ok(())
}

async fn decommission(node_id: u64, host: &str, wait: Duration, on: bool) -> Result<()> {
    let mut client = concord_server::grpc::admin_client(host, Duration::from_secs(10))
        .await
        .map_err(|e| anyhow!(e))?;
    client
        .decommission(concord_proto::admin::DecommissionRequest {
            node_id,
            recommission: !on,
        })
        .await
        .map_err(|s| anyhow!("{}", s.message()))?;
    if !on {
        println!("node {node_id} recommissioned");
        return Ok(());
    }
    println!("node {node_id} is decommissioning; its replicas move to other nodes");
    let deadline = std::time::Instant::now() + wait;
    let mut last = u64::MAX;
    loop {
        let st = client
            .node_status(concord_proto::admin::NodeStatusRequest {})
            .await
            .map_err(|s| anyhow!("{}", s.message()))?
            .into_inner();
        let replicas = st
            .liveness
            .iter()
            .find(|l| l.node_id == node_id)
            .map(|l| l.replicas)
            .unwrap_or(0);
        if replicas != last {
            println!("  node {node_id}: {replicas} replica(s) left");
            last = replicas;
        }
        if replicas == 0 {
            println!("node {node_id} is drained: it holds no replicas and can be stopped");
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("node {node_id} still holds {replicas} replica(s) after {wait:?}; the drain continues");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn demo(args: DemoArgs) -> Result<()> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let tmp;
    let dir = match &args.store_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new().prefix("concord-demo-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("demo.log");
    init_logging("info", Some(&log))?;
    // Every node's sockets are bound before the first node starts, and stay
    // bound: the join list needs every gRPC address up front.
    let mut sockets = Vec::new();
    for _ in 0..args.nodes {
        let l = Listeners::bind_loopback()?;
        let addrs = l.addrs()?;
        sockets.push((l, addrs));
    }
    let join: Vec<String> = sockets.iter().map(|(_, (g, _, _))| g.to_string()).collect();
    let mut nodes = Vec::new();
    for (i, (listeners, (g, s, h))) in sockets.into_iter().enumerate() {
        let cfg = NodeConfig::new(
            dir.join(format!("n{}", i + 1)),
            &g.to_string(),
            &s.to_string(),
            &h.to_string(),
            join.clone(),
        );
        nodes.push(Node::start_on(cfg, listeners).await?);
    }
    let already = nodes[0].ctx.store.is_bootstrapped();
    if !already {
        init(&join[0], false).await?;
    }
    eprintln!(
        "Concord demo: {} node(s), data in {}, log in {}",
        args.nodes,
        dir.display(),
        log.display()
    );
    for n in &nodes {
        eprintln!(
            "  node {}: sql postgres://root@{}/defaultdb  http http://{}",
            n.ctx.store.node_id().max(1),
            n.ctx.sql_addr,
            n.ctx.http_addr
        );
    }
    let url = format!("postgres://root@{}/defaultdb", nodes[0].ctx.sql_addr);
    let result = shell::run(shell::SqlArgs {
        url,
        execute: args.execute,
        wait: Duration::from_secs(30),
    })
    .await;
    for n in nodes {
        n.stop().await;
    }
    result
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // A message for people, not a backtrace.
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<std::process::ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("concord")
        .build()?;
    let code = runtime.block_on(async move {
        match cli.command {
            // A check that finds a violation exits 1 without an error.
            Command::Workload { command } => return Ok(concord_loadgen::run(command).await?),
            Command::Start(a) => start(*a).await,
            Command::Init {
                host,
                allow_initialized,
            } => init(&host, allow_initialized).await,
            Command::Sql(a) => shell::run(a).await,
            Command::Demo(a) => demo(a).await,
            Command::Node {
                command: NodeCommand::Status { host },
            } => node_status(&host).await,
            Command::Node {
                command:
                    NodeCommand::Decommission {
                        node_id,
                        host,
                        wait,
                    },
            } => decommission(node_id, &host, wait, true).await,
            Command::Node {
                command: NodeCommand::Recommission { node_id, host },
            } => decommission(node_id, &host, Duration::ZERO, false).await,
            Command::Range {
                command:
                    RangeCommand::TransferLeader {
                        range_id,
                        to_node,
                        host,
                    },
            } => transfer_leader(range_id, to_node, &host).await,
        }
        .map(|()| std::process::ExitCode::SUCCESS)
    });
    // Let blocking work (RocksDB scans of the split and GC queues) finish
    // before the process exits under it; a plain drop would not wait.
    runtime.shutdown_timeout(Duration::from_secs(5));
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_bytes("64M").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_duration("5 days").is_err());
    }
}
