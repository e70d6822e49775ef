//! MVCC on the RocksDB engine: committing a version (synced and unsynced),
//! point reads, and scans of 100 rows.
//!
//! Run: `cargo bench --profile dev -p concord-benches --bench mvcc`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use concord_hlc::Timestamp;
use concord_storage::mvcc::{self, ReadOpts};
use concord_storage::{Engine, RocksEngine, WriteBatch};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const ROWS: u64 = 10_000;

fn key(i: u64) -> Vec<u8> {
    format!("table/1/{i:010}").into_bytes()
}

fn loaded_engine() -> (tempfile::TempDir, RocksEngine) {
    let dir = tempfile::tempdir().unwrap();
    let engine = RocksEngine::open(dir.path()).unwrap();
    let mut batch = WriteBatch::new();
    for i in 0..ROWS {
        // Three versions per key, as a row that was updated twice.
        for v in 1..=3u64 {
            mvcc::put_version(
                &mut batch,
                &key(i),
                Timestamp::new(v * 10, 0),
                Some(&[b'x'; 100]),
            );
        }
    }
    engine.write(batch, true).unwrap();
    (dir, engine)
}

fn bench_put(c: &mut Criterion) {
    let mut g = c.benchmark_group("mvcc/put");
    let (_dir, engine) = loaded_engine();
    let n = AtomicU64::new(0);
    for sync in [false, true] {
        g.bench_function(
            BenchmarkId::from_parameter(if sync { "synced" } else { "unsynced" }),
            |b| {
                b.iter(|| {
                    let i = n.fetch_add(1, Ordering::Relaxed);
                    let mut batch = WriteBatch::new();
                    mvcc::put_version(
                        &mut batch,
                        &key(i % ROWS),
                        Timestamp::new(1000 + i, 0),
                        Some(&[b'y'; 100]),
                    );
                    engine.write(batch, sync).unwrap();
                })
            },
        );
    }
    g.finish();
}

fn bench_get(c: &mut Criterion) {
    let (_dir, engine) = loaded_engine();
    let mut i = 0u64;
    c.bench_function("mvcc/get", |b| {
        b.iter(|| {
            i = (i + 7919) % ROWS;
            black_box(mvcc::get(&engine, &key(i), ReadOpts::at(Timestamp::new(25, 0))).unwrap())
        })
    });
}

fn bench_scan(c: &mut Criterion) {
    let (_dir, engine) = loaded_engine();
    let mut g = c.benchmark_group("mvcc/scan");
    g.throughput(Throughput::Elements(100));
    let mut i = 0u64;
    g.bench_function("100_rows", |b| {
        b.iter(|| {
            i = (i + 7919) % (ROWS - 100);
            let r = mvcc::scan(
                &engine,
                &key(i),
                Some(&key(i + 100)),
                0,
                ReadOpts::at(Timestamp::new(25, 0)),
            )
            .unwrap();
            assert_eq!(r.rows.len(), 100);
            black_box(r)
        })
    });
    g.finish();
}

criterion_group!(benches, bench_put, bench_get, bench_scan);
criterion_main!(benches);
