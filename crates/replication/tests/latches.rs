//! A write's latches outlive its proposer's patience.
//!
//! A command is evaluated under latches and then proposed; the proposer
//! waits at most the Raft timeout, and its future may be dropped sooner (a
//! cancelled RPC). If the latches went with it, a reader could take them
//! while the command is still in the Raft log, read the key without the
//! write, record its read timestamp, and then see the command apply with a
//! version below that timestamp: a non-repeatable read, and a snapshot
//! that sees half a transaction (the chaos bank check caught one). These
//! tests stop the ready loop so that a command cannot apply in time, and
//! check that nobody can latch its key until it has applied.
//!
//! A request takes its latches in one place in line; the last test checks
//! that a prepare that also creates its transaction record does.

use std::time::Duration;

use concord_hlc::Timestamp;
use concord_proto::kv::{self, kv_error::Kind, request::Request as Req, KvError};
use concord_proto::meta::TxnMeta;
use concord_replication::latch::LatchSpan;
use concord_replication::testing::{fast_config, one_phase_commit, single_node_store, wait_until};
use concord_replication::{Store, StoreConfig};
use concord_storage::mvcc;

fn config() -> StoreConfig {
    StoreConfig {
        raft_timeout: Duration::from_millis(300),
        ..fast_config()
    }
}

/// A one-phase commit of `key` = `value` through the store's own entry.
async fn commit(store: Store, key: &[u8], value: &[u8]) -> Option<KvError> {
    let req = one_phase_commit(
        store.clock().now(),
        vec![(key.to_vec(), Some(value.to_vec()))],
    );
    store.batch(req).await.error
}

fn applied(store: &Store, key: &[u8]) -> Option<Vec<u8>> {
    mvcc::get(
        store.engine().as_ref(),
        key,
        mvcc::ReadOpts::at(Timestamp::MAX),
    )
    .expect("local read")
}

/// Whether a read latch on `key` can be taken within `wait`; if so, also
/// whether the command had applied when it was.
async fn latch_then_read(store: &Store, key: &[u8], wait: Duration) -> Option<Option<Vec<u8>>> {
    let replica = store.replica(1).expect("range 1");
    let guard = tokio::time::timeout(
        wait,
        replica.latches.acquire(vec![LatchSpan::read_key(key)]),
    )
    .await
    .ok()?;
    let seen = applied(store, key);
    drop(guard);
    Some(seen)
}

/// `k` cannot be latched while its write is in flight, and can be once it
/// has applied (the frozen loop runs again).
async fn assert_latched_until_applied(store: &Store) {
    assert_eq!(
        latch_then_read(store, b"k", Duration::from_millis(200)).await,
        None,
        "the key was latched again while its write was still in flight"
    );
    assert_eq!(
        latch_then_read(store, b"k", Duration::from_secs(10)).await,
        Some(Some(b"v".to_vec())),
        "the latch came free only once the write had applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_proposer_timed_out_keeps_its_latches_until_it_applies() {
    let store = single_node_store(config()).await;
    store.freeze_ready_loop(Duration::from_millis(1500));
    let err = commit(store.clone(), b"k", b"v")
        .await
        .expect("the loop is frozen past the Raft timeout");
    assert_eq!(err.kind, Kind::AmbiguousResult as i32, "{err:?}");
    assert_eq!(applied(&store, b"k"), None, "the loop is still frozen");
    assert_latched_until_applied(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_request_was_dropped_keeps_its_latches_until_it_applies() {
    let store = single_node_store(config()).await;
    store.freeze_ready_loop(Duration::from_millis(1500));
    let task = tokio::spawn(commit(store.clone(), b"k", b"v"));
    // Once the request holds its latches it proposes at once; then it goes
    // away, as a cancelled RPC's handler does.
    let replica = store.replica(1).expect("range 1");
    assert!(wait_until(Duration::from_secs(5), || !replica.latches.is_empty()).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    task.abort();
    assert!(task.await.is_err_and(|e| e.is_cancelled()));
    assert_latched_until_applied(&store).await;
}

/// A transaction's first write to `key` that also creates its record (a
/// prepare with `begin`), anchored on the same key, on range 1.
async fn prepare_with_record(store: Store, key: &[u8]) -> Option<KvError> {
    let now = store.clock().now();
    let id = rand::random::<[u8; 16]>().to_vec();
    let req = kv::BatchRequest {
        gateway_node_id: 0,
        range_id: 1,
        now: None,
        txn: Some(kv::TxnHeader {
            id: id.clone(),
            read_ts: Some(now.into()),
            uncertainty_limit: Some(now.into()),
            historical: false,
        }),
        requests: vec![kv::Request {
            request: Some(Req::Prepare(kv::PrepareRequest {
                txn: Some(TxnMeta {
                    id,
                    write_ts: Some(now.into()),
                    read_ts: Some(now.into()),
                    epoch: 0,
                    priority: 0,
                    anchor_key: key.to_vec(),
                }),
                writes: vec![kv::Write::put_or_delete(key.to_vec(), Some(b"v".to_vec()))],
                begin: true,
                in_memory: false,
            })),
        }],
    };
    store.batch(req).await.error
}

/// The record's latch and the keys' are one place in line. Taken one after
/// the other, a request queued between the two that wants both (here a
/// whole-range latch to close a timestamp; on the first range, whose span
/// covers every record latch, also a split or GC) waits for the record
/// while the prepare waits for it behind the keys, and neither ever runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepare_that_creates_its_record_and_a_whole_range_latch_do_not_deadlock() {
    let store = single_node_store(config()).await;
    let replica = store.replica(1).expect("range 1");
    // The whole range is latched, so the prepare queues...
    let everything = replica
        .latches
        .acquire(vec![LatchSpan::write_span(b"", b"")])
        .await;
    let prepare = tokio::spawn(prepare_with_record(store.clone(), b"k"));
    assert!(wait_until(Duration::from_secs(5), || replica.latches.len() == 2).await);
    // ...and a request for the whole range queues behind it.
    let close = tokio::spawn({
        let store = store.clone();
        async move { store.close_timestamp(1, Duration::ZERO).await }
    });
    assert!(wait_until(Duration::from_secs(5), || replica.latches.len() == 3).await);
    drop(everything);
    let answer = tokio::time::timeout(Duration::from_secs(20), prepare)
        .await
        .expect("the prepare ran: it did not wait for the request queued behind it")
        .expect("the prepare task");
    assert_eq!(answer, None);
    let closed = tokio::time::timeout(Duration::from_secs(20), close)
        .await
        .expect("the timestamp closed once the prepare had applied")
        .expect("the close task");
    assert!(closed.is_ok(), "{closed:?}");
}
