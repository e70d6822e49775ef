//! In-process cluster tests of one Raft-replicated range: real stores on
//! RocksDB, Raft messages through a mesh that can cut links, nodes stopped
//! and restarted on their data.

use std::time::{Duration, Instant};

use concord_proto::kv::kv_error::Kind;
use concord_replication::testing::{fast_config, wait_until, TestCluster};

fn kv(i: usize) -> (Vec<u8>, Option<Vec<u8>>) {
    (
        format!("key{i:05}").into_bytes(),
        Some(format!("value{i}").into_bytes()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_elect_a_leader_and_apply_writes_everywhere() {
    let c = TestCluster::start(3, fast_config()).await;
    let leader = c
        .leader(Duration::from_secs(10))
        .await
        .expect("a leader is elected");
    for i in 0..50 {
        c.commit(leader, vec![kv(i)])
            .await
            .expect("commit on the leader");
    }
    for node in 1..=3 {
        let ok = wait_until(Duration::from_secs(5), || {
            c.local_get(node, b"key00049") == Some(b"value49".to_vec())
        })
        .await;
        assert!(ok, "node {node} applied every write");
    }
    assert_eq!(
        c.get(leader, b"key00007").await.unwrap(),
        Some(b"value7".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_refuse_requests_and_name_the_leader() {
    let c = TestCluster::start(3, fast_config()).await;
    let leader = c.leader(Duration::from_secs(10)).await.expect("leader");
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    // A follower that has heard from the leader names it.
    let ok = wait_until(Duration::from_secs(5), || {
        c.store(follower).replica(1).unwrap().leader_node() == Some(leader)
    })
    .await;
    assert!(ok);
    let err = c.commit(follower, vec![kv(1)]).await.unwrap_err();
    assert_eq!(err.kind, Kind::NotLeader as i32, "{err:?}");
    assert_eq!(err.leader_node_id, leader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_elects_a_new_leader_and_keeps_acknowledged_writes() {
    let mut c = TestCluster::start(3, fast_config()).await;
    let old = c.leader(Duration::from_secs(10)).await.expect("leader");
    for i in 0..20 {
        c.commit(old, vec![kv(i)]).await.expect("commit");
    }
    c.stop(old).await;
    let new = c
        .leader(Duration::from_secs(10))
        .await
        .expect("a new leader among the survivors");
    assert_ne!(new, old);
    for i in 0..20 {
        let (k, v) = kv(i);
        assert_eq!(
            c.get(new, &k).await.unwrap(),
            v,
            "acknowledged write {i} survives the leader's crash"
        );
    }
    for i in 20..40 {
        c.commit(new, vec![kv(i)])
            .await
            .expect("the survivors keep accepting writes");
    }
    // The crashed node comes back on its data and catches up.
    c.restart(old).await;
    let ok = wait_until(Duration::from_secs(10), || {
        c.local_get(old, b"key00039") == Some(b"value39".to_vec())
    })
    .await;
    assert!(
        ok,
        "the restarted node caught up with writes made while it was down"
    );
    assert_eq!(c.local_get(old, b"key00005"), Some(b"value5".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_replays_nothing_twice_and_keeps_the_applied_index() {
    let mut c = TestCluster::start(3, fast_config()).await;
    let leader = c.leader(Duration::from_secs(10)).await.expect("leader");
    for i in 0..10 {
        c.commit(leader, vec![kv(i)]).await.unwrap();
    }
    // Stop every node and restart them all: recovery from the logs alone.
    for n in 1..=3 {
        wait_until(Duration::from_secs(5), || {
            c.local_get(n, b"key00009").is_some()
        })
        .await;
    }
    let applied_before: Vec<u64> = (1..=3).map(|n| c.applied(n)).collect();
    for n in 1..=3 {
        c.stop(n).await;
    }
    for n in 1..=3 {
        c.restart(n).await;
    }
    for (i, n) in (1..=3).enumerate() {
        assert!(
            c.applied(n) >= applied_before[i],
            "node {n} restarts at its durable applied index"
        );
    }
    let leader = c
        .leader(Duration::from_secs(10))
        .await
        .expect("leader after full restart");
    for i in 0..10 {
        let (k, v) = kv(i);
        assert_eq!(c.get(leader, &k).await.unwrap(), v);
    }
    c.commit(leader, vec![kv(100)])
        .await
        .expect("writes after a full restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_cannot_commit_and_fails_in_bounded_time() {
    let c = TestCluster::start(3, fast_config()).await;
    let leader = c.leader(Duration::from_secs(10)).await.expect("leader");
    c.commit(leader, vec![kv(1)]).await.unwrap();
    // Cut the leader off from both followers.
    c.mesh.isolate(leader, &[1, 2, 3]);
    let started = Instant::now();
    let result = c.commit(leader, vec![kv(2)]).await;
    assert!(result.is_err(), "an isolated leader cannot commit");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the failure comes in bounded time"
    );
    // The majority side elects a leader and carries on.
    let new = new_leader_besides(&c, leader).await;
    c.commit(new, vec![kv(3)])
        .await
        .expect("the majority commits");
    // After healing, the old leader learns everything and the write it
    // could not commit is either absent everywhere or present everywhere.
    c.mesh.heal();
    let ok = wait_until(Duration::from_secs(10), || {
        c.local_get(leader, b"key00003").is_some()
    })
    .await;
    assert!(ok, "the old leader catches up after the partition heals");
    let v2: Vec<Option<Vec<u8>>> = (1..=3).map(|n| c.local_get(n, b"key00002")).collect();
    assert!(
        v2.iter().all(|v| v == &v2[0]),
        "no replica diverges: {v2:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_follower_does_not_bump_its_term() {
    // Pre-vote: a follower cut off for many election timeouts campaigns only
    // as a pre-candidate, which cannot win and does not raise its term, so it
    // cannot depose a healthy leader with a higher term when it returns.
    let c = TestCluster::start(3, fast_config()).await;
    let leader = c.leader(Duration::from_secs(10)).await.expect("leader");
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    let replica = c.store(follower).replica(1).unwrap();
    let term_before = replica.status.lock().term;
    c.mesh.isolate(follower, &[1, 2, 3]);
    // 1.5 s is several election timeouts at 20 ms ticks.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let st = replica.status.lock().clone();
    assert_eq!(
        st.term, term_before,
        "the isolated follower's term did not move"
    );
    assert_ne!(st.role, "leader");
    c.mesh.heal();
}

fn small_log_config() -> concord_replication::StoreConfig {
    concord_replication::StoreConfig {
        log_truncation_threshold: 20,
        ..fast_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_truncated_log_catches_up_by_snapshot() {
    let mut c = TestCluster::start(3, small_log_config()).await;
    let leader = c.leader(Duration::from_secs(10)).await.expect("leader");
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    c.commit(leader, vec![kv(0)]).await.unwrap();
    c.stop(follower).await;
    // Far more than 10x the truncation threshold while it is away.
    for i in 1..=300 {
        c.commit(leader, vec![kv(i)])
            .await
            .expect("the majority commits");
    }
    let st = c.store(leader).replica(1).unwrap().status.lock().clone();
    assert!(
        st.log_entries < 200,
        "the leader truncated behind the stopped follower: {} entries",
        st.log_entries
    );
    c.restart(follower).await;
    let ok = wait_until(Duration::from_secs(20), || {
        c.local_get(follower, b"key00300") == Some(b"value300".to_vec())
    })
    .await;
    assert!(ok, "the restarted follower caught up");
    let sent: u64 = (1..=3)
        .map(|n| c.store(n).replica(1).unwrap().status.lock().snapshots_sent)
        .sum();
    let applied = c
        .store(follower)
        .replica(1)
        .unwrap()
        .status
        .lock()
        .snapshots_applied;
    assert!(sent >= 1, "a snapshot was sent");
    assert_eq!(applied, 1, "the follower applied exactly one snapshot");
    for i in [0, 1, 150, 299] {
        let (k, v) = kv(i);
        assert_eq!(
            c.local_get(follower, &k),
            v,
            "row {i} arrived with the snapshot"
        );
    }
    // And it keeps up through the log afterwards.
    c.commit(leader, vec![kv(301)]).await.unwrap();
    let ok = wait_until(Duration::from_secs(10), || {
        c.local_get(follower, b"key00301").is_some()
    })
    .await;
    assert!(ok);
}

/// Writes `n` small values through the leader and returns the most Raft log
/// entries any replica held on disk, sampled every 100 writes.
async fn max_log_on_disk(c: &TestCluster, leader: u64, n: usize) -> usize {
    let mut max_seen = 0;
    for i in 0..n {
        c.commit(leader, vec![kv(i % 50)]).await.unwrap();
        if i % 100 == 99 {
            for node in 1..=3 {
                max_seen = max_seen.max(c.log_entries_on_disk(node));
            }
        }
    }
    max_seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_logs_stay_bounded_under_sustained_writes() {
    let c = TestCluster::start(3, small_log_config()).await;
    let leader = c.leader(Duration::from_secs(10)).await.expect("leader");
    // Threshold 20: a follower keeps at most ~20 applied entries, the leader
    // at most what followers lag by (they keep up here) plus the threshold.
    let max_seen = max_log_on_disk(&c, leader, 1000).await;
    assert!(max_seen <= 60, "a log held {max_seen} entries on disk");
}

/// The long variant: 200,000 writes (about an hour of a light workload).
/// Run with `cargo test -p concord-replication --test cluster -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: 200k writes, about two minutes"]
async fn raft_logs_stay_bounded_over_200k_writes() {
    let c = TestCluster::start(
        3,
        concord_replication::StoreConfig {
            log_truncation_threshold: 1000,
            ..fast_config()
        },
    )
    .await;
    let leader = c.leader(Duration::from_secs(10)).await.expect("leader");
    let max_seen = max_log_on_disk(&c, leader, 200_000).await;
    eprintln!("most entries on disk during 200k writes: {max_seen}");
    assert!(max_seen <= 2000, "a log held {max_seen} entries on disk");
}

/// Read leases: once a quorum answered one of its ReadIndex rounds, a
/// leader serves reads without asking again for half an election timeout.
/// A leader that is cut off and frozen (a long pause) past the time a new
/// leader takes to be elected and to overwrite a key must not serve the old
/// value when it wakes: its lease ran out on the clock while it slept
/// (followers refuse votes for an election timeout after they last heard
/// from it, so a lease of half that ends before anyone else can lead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_reads_under_its_lease_and_a_paused_one_never_reads_stale() {
    let c = TestCluster::start(3, fast_config()).await;
    let leader = c.leader(Duration::from_secs(10)).await.expect("leader");
    c.commit(leader, vec![kv(1)]).await.unwrap();
    let store = c.store(leader);
    let before = store.lease_reads();
    for _ in 0..20 {
        assert_eq!(c.get(leader, b"key00001").await.unwrap(), kv(1).1);
    }
    assert!(
        store.lease_reads() > before,
        "reads after the first ReadIndex come from the lease"
    );

    // Cut the leader off and freeze it for 1.5 s (the election timeout is
    // 0.4 s); a read sent to it waits in its inbox.
    c.mesh.isolate(leader, &[1, 2, 3]);
    store.freeze_ready_loop(Duration::from_millis(1500));
    let frozen = Instant::now();
    let stale_read = {
        let store = store.clone();
        tokio::spawn(async move { store.batch(get_request(b"key00001")).await })
    };
    let new = new_leader_besides(&c, leader).await;
    let overwrite = (b"key00001".to_vec(), Some(b"new".to_vec()));
    c.commit(new, vec![overwrite])
        .await
        .expect("the majority commits");
    assert!(
        frozen.elapsed() < Duration::from_millis(1500),
        "the overwrite landed while the old leader slept (else the test proves nothing)"
    );
    let resp = stale_read.await.unwrap();
    assert!(
        resp.error.is_some(),
        "the paused old leader answered a read from an expired lease: {:?}",
        resp.responses
    );
    c.mesh.heal();
}

/// Waits for a node other than `old` to lead range 1 (the majority side
/// of a partition elects one) and returns it.
async fn new_leader_besides(c: &TestCluster, old: u64) -> u64 {
    let leads = |n: u64| c.store(n).replica(1).unwrap().status.lock().leader_ready;
    let ok = wait_until(Duration::from_secs(10), || {
        (1..=3).filter(|n| *n != old).any(leads)
    })
    .await;
    assert!(ok, "the majority elects a new leader");
    (1..=3).find(|n| *n != old && leads(*n)).unwrap()
}

fn get_request(key: &[u8]) -> concord_proto::kv::BatchRequest {
    use concord_proto::kv::{request::Request as Req, BatchRequest, GetRequest, Request};
    BatchRequest {
        gateway_node_id: 0,
        range_id: 1,
        now: None,
        txn: None,
        requests: vec![Request {
            request: Some(Req::Get(GetRequest { key: key.to_vec() })),
        }],
    }
}

/// A read that reaches a new leader before it has committed an entry of its
/// term waits for that entry. raft-rs drops a ReadIndex request until then
/// without a word, so started at once the read waited out the Raft timeout
/// and failed (after every election, on a busy cluster).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_at_a_new_leader_waits_for_its_first_commit() {
    let c = TestCluster::start(3, fast_config()).await;
    let old = c
        .leader(Duration::from_secs(10))
        .await
        .expect("a leader is elected");
    let new = if old == 1 { 2 } else { 1 };
    // The new leader's appends are lost: it wins its election (a transfer)
    // but cannot commit the entry that opens its term.
    c.mesh.drop_from(new, raft::prelude::MessageType::MsgAppend);
    c.store(old).transfer_leader(1, new).expect("transfer");
    let leads = wait_until(Duration::from_secs(10), || {
        c.store(new)
            .replica(1)
            .is_ok_and(|r| r.status.lock().role == "leader")
    })
    .await;
    assert!(leads, "node {new} took over");
    let store = c.store(new);
    let read = tokio::spawn(async move { store.read_index(1).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.mesh.heal();
    let answer = read.await.expect("the read task");
    assert!(answer.is_ok(), "the read was answered: {answer:?}");
}
