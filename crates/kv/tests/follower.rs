//! Follower reads: a historical read (AS OF SYSTEM TIME) at or below a
//! range's closed timestamp is served by a follower from its own applied
//! state, even when it is cut off from the leader; above it, the follower
//! does not serve it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use concord_kv::{Db, DistSender};
use concord_replication::testing::{fast_config, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_follower_serves_reads_below_its_closed_timestamp() {
    let cluster = TestCluster::start(3, fast_config()).await;
    let leader = cluster
        .leader(Duration::from_secs(10))
        .await
        .expect("leader");
    let follower = (1..=3u64).find(|n| *n != leader).unwrap();
    cluster
        .commit(leader, vec![(b"k".to_vec(), Some(b"v1".to_vec()))])
        .await
        .unwrap();
    let closed = cluster
        .store(leader)
        .close_timestamp(1, Duration::ZERO)
        .await
        .unwrap()
        .expect("a new closed timestamp");
    // A write after the close lands above it.
    let later = cluster
        .commit(leader, vec![(b"k".to_vec(), Some(b"v2".to_vec()))])
        .await
        .unwrap();
    assert!(
        later > closed,
        "writes are pushed above the closed timestamp"
    );

    let handle = cluster.store(follower).replica(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while *handle.closed_ts.lock() < closed {
        assert!(
            Instant::now() < deadline,
            "the follower never applied the close"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.mesh.isolate(follower, &[1, 2, 3]);

    let mut sender = DistSender::new(cluster.store(follower));
    sender.deadline = Duration::from_secs(1);
    let db = Db::new(Arc::new(sender));
    let mut t = db.begin_as_of(closed).unwrap();
    assert_eq!(t.get(b"k").await.unwrap(), Some(b"v1".to_vec()));
    assert!(cluster.store(follower).follower_reads() >= 1);
    assert!(t.put(b"k".to_vec(), b"x".to_vec()).is_err(), "read-only");

    // Above the closed timestamp the follower cannot answer alone.
    let mut t = db.begin_as_of(db.sender().clock().now()).unwrap();
    assert!(t.get(b"k").await.is_err());
    cluster.mesh.heal();
}
