//! Commit latency and throughput of one-phase versus two-phase commits on a
//! 3-node cluster in this process: real nodes (RocksDB, a Raft group per
//! range, gRPC on loopback), a KV transaction from node 1 writing two keys
//! that are in one range (1PC) or in two ranges (2PC: record, two prepares,
//! commit record; intents resolved in the background).
//!
//! Run: `cargo bench --profile dev -p concord-benches --bench txn`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use concord_kv::Db;
use concord_proto::admin::InitRequest;
use concord_server::{Node, NodeConfig};
use concord_storage::keys::MIN_SPLIT_KEY;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("local address")
        .port()
}

fn key(prefix: &str, i: u64) -> Vec<u8> {
    [MIN_SPLIT_KEY, format!("{prefix}{i:010}").as_bytes()].concat()
}

async fn start_cluster(dir: &std::path::Path) -> Vec<Node> {
    let ports: Vec<(u16, u16, u16)> = (0..3)
        .map(|_| (free_port(), free_port(), free_port()))
        .collect();
    let join: Vec<String> = ports
        .iter()
        .map(|(g, _, _)| format!("127.0.0.1:{g}"))
        .collect();
    let mut nodes = Vec::new();
    for (i, (g, s, h)) in ports.iter().enumerate() {
        let cfg = NodeConfig::new(
            dir.join(format!("n{}", i + 1)),
            &format!("127.0.0.1:{g}"),
            &format!("127.0.0.1:{s}"),
            &format!("127.0.0.1:{h}"),
            join.clone(),
        );
        nodes.push(Node::start(cfg).await.expect("start node"));
    }
    let mut admin = concord_server::grpc::admin_client(&join[0], Duration::from_secs(30))
        .await
        .expect("admin client");
    admin.init(InitRequest {}).await.expect("init");
    nodes
}

async fn commit(db: &Db, keys: &[Vec<u8>]) {
    for _ in 0..100 {
        let mut t = db.begin();
        for k in keys {
            t.put(k.clone(), vec![b'v'; 100]).expect("put");
        }
        match t.commit().await {
            Ok(_) => return,
            Err(e) if e.is_retryable() => continue,
            Err(e) => panic!("commit: {e}"),
        }
    }
    panic!("commit kept retrying");
}

fn bench_commits(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let nodes = rt.block_on(start_cluster(dir.path()));
    let db = nodes[0].ctx.db.clone();
    rt.block_on(async {
        // Wait for the cluster to serve writes, then split off a second range.
        for attempt in 0.. {
            let mut t = db.begin();
            t.put(key("warmup", 0), b"x".to_vec()).expect("put");
            match t.commit().await {
                Ok(_) => break,
                Err(_) if attempt < 300 => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => panic!("cluster never served a write: {e}"),
            }
        }
        db.admin_split(&key("m", 0)).await.expect("split");
        // Let leaders settle (leader balancing moves some; a new leader
        // pushes writes up to --max-offset into the future for a while,
        // and commits wait that out), then warm up.
        tokio::time::sleep(Duration::from_secs(8)).await;
        for i in 0..100 {
            commit(&db, &[key("w", i), key("x", i)]).await;
        }
    });
    let n = AtomicU64::new(1);
    let mut g = c.benchmark_group("txn");
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(10));
    for (name, second) in [("1pc", "b"), ("2pc", "z")] {
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("commit_{name}_two_keys"), |b| {
            b.to_async(&rt).iter(|| async {
                let i = n.fetch_add(1, Ordering::Relaxed);
                commit(&db, &[key("a", i), key(second, i)]).await;
            })
        });
        g.throughput(Throughput::Elements(16));
        g.bench_function(format!("commit_{name}_two_keys_16_concurrent"), |b| {
            b.to_async(&rt).iter(|| async {
                let futs = (0..16).map(|_| {
                    let i = n.fetch_add(1, Ordering::Relaxed);
                    let db = db.clone();
                    async move { commit(&db, &[key("a", i), key(second, i)]).await }
                });
                futures::future::join_all(futs).await;
            })
        });
    }
    g.finish();
    rt.block_on(async {
        for node in nodes {
            node.stop().await;
        }
    });
}

criterion_group!(benches, bench_commits);
criterion_main!(benches);
