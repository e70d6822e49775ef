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

use std::time::Duration;

use concord_hlc::Timestamp;
use concord_proto::kv::{kv_error::Kind, KvError};
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
