//! Large transactions on a real store (one node, in-memory engine, a Raft
//! group per range): tens of thousands of writes in one transaction commit
//! in two phases with their intents written and resolved in chunks, so no
//! Raft command carries more than a chunk; they read back whole, abort
//! leaving nothing, and the write buffer is capped.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{key, EXPIRY};
use concord_kv::{failpoints, Db, DistSender, Error, TxnLimits};
use concord_replication::testing::{single_node_store, wait_until};
use concord_replication::{Store, StoreConfig};
use concord_storage::Cf;

const ROWS: usize = 50_000;

/// A store whose Raft logs are never truncated during a test (so every
/// command can be measured afterwards), and a database with `limits`.
async fn db_with(limits: TxnLimits) -> (Db, Store) {
    let store = single_node_store(StoreConfig {
        tick_interval: Duration::from_millis(10),
        txn_expiry: EXPIRY,
        log_truncation_threshold: 1_000_000,
        ..StoreConfig::default()
    })
    .await;
    let mut db = Db::new(Arc::new(DistSender::new(store.clone())));
    db.set_limits(limits);
    (db, store)
}

/// Small chunks: many per range, cut by bytes before the write count.
fn small_chunks() -> TxnLimits {
    TxnLimits {
        one_phase_max_writes: 1000,
        one_phase_max_bytes: 64 << 10,
        chunk_max_writes: 1000,
        chunk_max_bytes: 64 << 10,
        prepare_in_flight: 3,
        prepare_in_flight_per_range: 2,
        resolve_in_flight: 3,
        ..TxnLimits::default()
    }
}

fn row_key(i: usize) -> Vec<u8> {
    key(&format!("row{i:06}"))
}

/// About 100 bytes, like a pgbench_accounts row.
fn row_value(i: usize, tag: &str) -> Vec<u8> {
    format!("{tag}-{i:06}-{}", "x".repeat(88)).into_bytes()
}

fn intents(store: &Store) -> usize {
    store.engine().scan(Cf::Lock, b"", None, 0).unwrap().len()
}

fn records(store: &Store) -> usize {
    store.engine().scan(Cf::Txn, b"", None, 0).unwrap().len()
}

/// The largest value in the Raft column family: every log entry (one Raft
/// command each) of every range, plus small per-range state.
fn largest_raft_entry(store: &Store) -> usize {
    store
        .engine()
        .scan(Cf::Raft, b"", None, 0)
        .unwrap()
        .iter()
        .map(|(_, v)| v.len())
        .max()
        .unwrap_or(0)
}

async fn write_rows(db: &Db, tag: &str) -> Result<(), Error> {
    let mut t = db.begin();
    for i in 0..ROWS {
        t.put(row_key(i), row_value(i, tag))?;
    }
    t.commit().await.map(|_| ())
}

/// Reads every row back from a new transaction: count and values.
async fn check_rows(db: &Db, tag: &str) {
    let mut t = db.begin();
    let rows = t.scan(&key("row"), &key("row\u{ff}"), 0).await.unwrap();
    assert_eq!(rows.len(), ROWS, "rows read back");
    for (i, (k, v)) in rows.iter().enumerate() {
        assert_eq!(k, &row_key(i));
        assert_eq!(v, &row_value(i, tag), "value of row {i}");
    }
    for i in [0, 1, ROWS / 2 - 1, ROWS / 2, ROWS - 1] {
        assert_eq!(t.get(&row_key(i)).await.unwrap(), Some(row_value(i, tag)));
    }
}

async fn wait_clean(store: &Store) {
    assert!(
        wait_until(Duration::from_secs(30), || intents(store) == 0
            && records(store) == 0)
        .await,
        "left {} intents and {} records",
        intents(store),
        records(store)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_transaction_in_one_range_commits_in_chunks() {
    let limits = TxnLimits::default();
    let (db, store) = db_with(limits).await;
    let started = Instant::now();
    write_rows(&db, "v1").await.unwrap();
    let committed = started.elapsed();
    check_rows(&db, "v1").await;
    wait_clean(&store).await;
    let largest = largest_raft_entry(&store);
    eprintln!(
        "{ROWS} writes, one range, default limits: committed in {committed:?}, \
         clean after {:?}; largest Raft entry {largest} bytes",
        started.elapsed()
    );
    // The whole transaction is about 9 MB of intents: one command would
    // be more than a chunk.
    assert!(
        largest <= limits.chunk_max_bytes + (16 << 10),
        "a Raft entry of {largest} bytes"
    );
    // A second large transaction over the same rows (rewrites, as ALTER
    // TABLE does) replaces every value.
    write_rows(&db, "v2").await.unwrap();
    check_rows(&db, "v2").await;
    wait_clean(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_transaction_across_ranges_commits_in_small_chunks() {
    let limits = small_chunks();
    let (db, store) = db_with(limits).await;
    db.admin_split(&row_key(ROWS / 3)).await.unwrap();
    db.admin_split(&row_key(2 * ROWS / 3)).await.unwrap();
    let started = Instant::now();
    write_rows(&db, "v1").await.unwrap();
    let committed = started.elapsed();
    check_rows(&db, "v1").await;
    wait_clean(&store).await;
    let largest = largest_raft_entry(&store);
    eprintln!(
        "{ROWS} writes, three ranges, 64 KiB chunks: committed in {committed:?}, \
         clean after {:?}; largest Raft entry {largest} bytes",
        started.elapsed()
    );
    assert!(
        largest <= limits.chunk_max_bytes + (4 << 10),
        "a Raft entry of {largest} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_large_transaction_leaves_nothing() {
    let (db, store) = db_with(small_chunks()).await;
    db.admin_split(&row_key(ROWS / 2)).await.unwrap();
    // The large transaction reads a row that another one then changes, and
    // writes it too: its intent there is pushed above the other's version,
    // so its commit timestamp moves, and its read fails to refresh.
    let mut big = db.begin();
    assert_eq!(big.get(&row_key(7)).await.unwrap(), None);
    let mut other = db.begin();
    other.put(row_key(7), b"other".to_vec()).unwrap();
    other.commit().await.unwrap();
    for i in 0..ROWS {
        big.put(row_key(i), row_value(i, "big")).unwrap();
    }
    let err = big.commit().await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    wait_clean(&store).await;
    let mut t = db.begin();
    let rows = t.scan(&key("row"), &key("row\u{ff}"), 0).await.unwrap();
    assert_eq!(
        rows,
        vec![(row_key(7), b"other".to_vec())],
        "only the other transaction's row"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_large_transaction_with_locks_leaves_nothing() {
    let (db, store) = db_with(small_chunks()).await;
    db.admin_split(&row_key(ROWS / 2)).await.unwrap();
    let mut t = db.begin();
    // Locks on every 10th row (their intents are written at once), then
    // writes everywhere, then a rollback.
    let locked: Vec<Vec<u8>> = (0..ROWS).step_by(10).map(row_key).collect();
    t.lock_keys(&locked).await.unwrap();
    let in_memory: usize = store.replicas().iter().map(|r| r.locks.lock().len()).sum();
    assert_eq!(
        intents(&store) + in_memory,
        locked.len(),
        "a lock per key: the first an intent with the record, the others in the leaders' memory \
         (or intents, past the lock table's bounds)"
    );
    assert!(in_memory > 0, "later locks are held in memory");
    for i in 0..ROWS {
        t.put(row_key(i), row_value(i, "gone")).unwrap();
    }
    t.rollback();
    wait_clean(&store).await;
    assert!(
        wait_until(Duration::from_secs(10), || store
            .replicas()
            .iter()
            .all(|r| r.locks.lock().is_empty()))
        .await,
        "the rollback released the in-memory locks"
    );
    let mut r = db.begin();
    let rows = r.scan(&key("row"), &key("row\u{ff}"), 0).await.unwrap();
    assert!(rows.is_empty(), "{} rows", rows.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_resolve_a_stopped_large_commit_span_by_span() {
    let (db, store) = db_with(small_chunks()).await;
    db.admin_split(&row_key(ROWS / 2)).await.unwrap();
    db.enable_failpoint(failpoints::AFTER_COMMIT);
    let err = write_rows(&db, "v1").await.unwrap_err();
    assert!(err.to_string().contains("failpoint"), "{err}");
    db.disable_failpoint(failpoints::AFTER_COMMIT);
    assert_eq!(intents(&store), ROWS, "nobody resolved the intents yet");
    // A reader meets the intents of a COMMITTED record and resolves the
    // record's span around each one it meets: a chunk at a time, not a
    // key at a time.
    let started = Instant::now();
    check_rows(&db, "v1").await;
    let took = started.elapsed();
    eprintln!("a reader resolved {ROWS} committed intents in {took:?}");
    assert_eq!(intents(&store), 0);
    // A key at a time would be 50,000 pushes, resolutions and scans (about
    // an hour here); a span at a time is about 120 of each.
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transactions_skip_the_one_phase_commit() {
    let (db, store) = db_with(TxnLimits {
        one_phase_max_writes: 10,
        ..TxnLimits::default()
    })
    .await;
    // The failpoint stops two-phase commits after prepare; one-phase
    // commits never reach it.
    db.enable_failpoint(failpoints::AFTER_PREPARE);
    let mut small = db.begin();
    for i in 0..10 {
        small.put(row_key(i), row_value(i, "small")).unwrap();
    }
    small.commit().await.unwrap();
    assert_eq!(intents(&store), 0, "committed in one phase");
    let mut large = db.begin();
    for i in 100..111 {
        large.put(row_key(i), row_value(i, "large")).unwrap();
    }
    let err = large.commit().await.unwrap_err();
    assert!(err.to_string().contains("failpoint"), "{err}");
    assert_eq!(intents(&store), 11, "prepared in two phases");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_buffer_is_capped() {
    const CAP: usize = 1 << 20;
    let (db, _store) = db_with(TxnLimits {
        max_buffer_bytes: CAP,
        ..TxnLimits::default()
    })
    .await;
    let mut t = db.begin();
    let mut written = 0;
    let err = loop {
        match t.put(row_key(written), row_value(written, "v")) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
        assert!(written < CAP, "the cap never hit");
    };
    assert!(matches!(err, Error::OutOfMemory(_)), "{err}");
    assert!(!err.is_retryable());
    let per_write =
        row_key(0).len() + row_value(0, "v").len() + concord_kv::txn::BUFFERED_WRITE_OVERHEAD;
    assert_eq!(written, CAP / per_write, "writes buffered before the cap");
    assert!(t.buffered_bytes() <= CAP);
    // Replacing a buffered value by one of the same size still fits;
    // deletions free room (a value each, more than a write's overhead).
    t.put(row_key(0), row_value(0, "w")).unwrap();
    t.delete(row_key(1)).unwrap();
    t.delete(row_key(2)).unwrap();
    t.put(row_key(written), row_value(written, "v")).unwrap();
    assert!(t.buffered_bytes() <= CAP);
    // The refused write was not buffered; the rest commit.
    t.commit().await.unwrap();
    let mut r = db.begin();
    let rows = r.scan(&key("row"), &key("row\u{ff}"), 0).await.unwrap();
    assert_eq!(
        rows.len(),
        written - 1,
        "all but the two deleted rows, plus one"
    );
    assert_eq!(rows[0].1, row_value(0, "w"));
    assert_eq!(rows[1].0, row_key(3));
}
