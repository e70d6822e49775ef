//! A replicated write through one 3-replica range, in process: leader
//! evaluation, Raft append with fsync on every replica (RocksDB), commit and
//! apply, measured one at a time (latency) and 32 at a time (throughput with
//! group commit).
//!
//! Run: `cargo bench --profile dev -p concord-benches --bench replication`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use concord_replication::testing::{fast_config, TestCluster};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench_replicated_write(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = rt.block_on(TestCluster::start(3, fast_config()));
    let leader = rt
        .block_on(cluster.leader(Duration::from_secs(10)))
        .expect("leader");
    let n = AtomicU64::new(0);
    let mut g = c.benchmark_group("replication");
    g.sample_size(30);
    g.bench_function("write_1_at_a_time", |b| {
        b.to_async(&rt).iter(|| async {
            let i = n.fetch_add(1, Ordering::Relaxed);
            cluster
                .commit(
                    leader,
                    vec![(format!("k{i:010}").into_bytes(), Some(vec![b'v'; 100]))],
                )
                .await
                .unwrap();
        })
    });
    g.throughput(Throughput::Elements(32));
    g.bench_function("write_32_concurrent", |b| {
        b.to_async(&rt).iter(|| async {
            let futs = (0..32).map(|_| {
                let i = n.fetch_add(1, Ordering::Relaxed);
                cluster.commit(
                    leader,
                    vec![(format!("k{i:010}").into_bytes(), Some(vec![b'v'; 100]))],
                )
            });
            for r in futures::future::join_all(futs).await {
                r.unwrap();
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench_replicated_write);
criterion_main!(benches);
