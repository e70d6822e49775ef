//! Multi-process tests of many ranges: splits under load, replacement of a
//! dead node's replicas, rebalancing onto a new node, decommissioning.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use std::sync::Mutex;

/// Keys in a full scan: every acknowledged key, no unknown key, none twice.
fn check_scan(rows: &[Vec<String>], acked: &BTreeSet<i64>, maybe: &BTreeSet<i64>) {
    let keys: Vec<i64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    let set: BTreeSet<i64> = keys.iter().copied().collect();
    assert_eq!(set.len(), keys.len(), "a key came back twice");
    for k in acked {
        assert!(set.contains(k), "acknowledged key {k} is missing");
    }
    for k in &set {
        assert!(
            acked.contains(k) || maybe.contains(k),
            "key {k} was never written"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_under_insert_load_lose_and_duplicate_nothing() {
    let c = start_cluster(3, &[]);
    let a = connect(&c.nodes[0].sql_url()).await;
    exec_retry(
        &a,
        "CREATE TABLE t (k INT PRIMARY KEY, v TEXT)",
        Duration::from_secs(30),
    )
    .await
    .unwrap();

    // Writer: single-row inserts through node 1, remembering what was
    // acknowledged (and what may have been, after an ambiguous error).
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let maybe = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (acked, maybe, stop) = (acked.clone(), maybe.clone(), stop.clone());
        let url = c.nodes[0].sql_url();
        tokio::spawn(async move {
            let w = connect(&url).await;
            let mut k = 0i64;
            let started = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(60)
            {
                match w
                    .simple_query(&format!("INSERT INTO t VALUES ({k}, 'v{k}')"))
                    .await
                {
                    Ok(_) => {
                        acked.lock().unwrap().insert(k);
                        k += 1;
                    }
                    Err(e) => {
                        let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
                        if code == "40003" {
                            maybe.lock().unwrap().insert(k);
                            k += 1;
                        } else if code == "23505" {
                            // An earlier ambiguous attempt did commit.
                            acked.lock().unwrap().insert(k);
                            k += 1;
                        } else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
            k
        })
    };

    // Meanwhile: split through node 2, scan through node 3.
    let b = connect(&c.nodes[1].sql_url()).await;
    let s = connect(&c.nodes[2].sql_url()).await;
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let at = split_values(round * 20 + 10, round * 20 + 30, 10);
        exec_retry(
            &b,
            &format!("ALTER TABLE t SPLIT AT VALUES {at}"),
            Duration::from_secs(30),
        )
        .await
        .expect("split");
        let before = acked.lock().unwrap().clone();
        let rows = query_retry(&s, "SELECT k FROM t").await;
        let after = acked.lock().unwrap().clone();
        let mut allowed: BTreeSet<i64> = after.difference(&before).copied().collect();
        allowed.extend(maybe.lock().unwrap().iter().copied());
        // Writes racing the scan may or may not be in it.
        let next = after.iter().next_back().copied().unwrap_or(-1) + 1;
        allowed.insert(next);
        check_scan(&rows, &before, &allowed.union(&after).copied().collect());
    }
    // More splits at keys ahead of the writer.
    exec_retry(
        &b,
        &format!(
            "ALTER TABLE t SPLIT AT VALUES {}",
            split_values(200, 600, 100)
        ),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(
        written > 50,
        "the writer made progress during the splits ({written} rows)"
    );

    let ranges = show_ranges(&s, Some("t")).await;
    assert!(ranges.len() >= 10, "at least 10 ranges: {ranges:?}");
    for r in &ranges {
        assert_eq!(
            r.voters.len() + r.learners,
            3,
            "range {} has 3 replicas: {r:?}",
            r.range_id
        );
    }
    let rows = query_retry(&s, "SELECT k FROM t").await;
    check_scan(&rows, &acked.lock().unwrap(), &maybe.lock().unwrap());
}

/// Creates `t (k INT PRIMARY KEY, v TEXT)` with `rows` rows, split every
/// `split_every` keys; returns a client on node 1.
async fn table_with_ranges(c: &Cluster, rows: i64, split_every: i64) -> tokio_postgres::Client {
    let a = connect(&c.nodes[0].sql_url()).await;
    exec_retry(
        &a,
        "CREATE TABLE t (k INT PRIMARY KEY, v TEXT)",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    exec_retry(
        &a,
        &format!(
            "INSERT INTO t SELECT i, 'v' || i FROM generate_series(0, {}) AS g(i)",
            rows - 1
        ),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    exec_retry(
        &a,
        &format!(
            "ALTER TABLE t SPLIT AT VALUES {}",
            split_values(split_every, rows, split_every)
        ),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    a
}

/// Replicas per node among the ranges listed, and leaders per node.
fn counts(ranges: &[RangeRow]) -> (HashMap<u64, usize>, HashMap<u64, usize>) {
    let mut replicas = HashMap::new();
    let mut leaders = HashMap::new();
    for r in ranges {
        for v in &r.voters {
            *replicas.entry(*v).or_insert(0) += 1;
        }
        if let Some(l) = r.leader {
            *leaders.entry(l).or_insert(0) += 1;
        }
    }
    (replicas, leaders)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_replicas_are_replaced_and_it_rejoins_cleanly() {
    let mut c = start_cluster(5, &["--dead-after", "5s"]);
    let a = table_with_ranges(&c, 1000, 100).await;
    // Let the cluster settle to 3 replicas per range, and 5 for range 1
    // (the system tables) while 5 nodes are live.
    let full = |r: &RangeRow| r.voters.len() == if r.range_id == 1 { 5 } else { 3 };
    let settled = eventually(Duration::from_secs(60), || async {
        show_ranges(&a, None)
            .await
            .iter()
            .all(|r| full(r) && r.learners == 0)
    })
    .await;
    assert!(settled, "{:?}", show_ranges(&a, None).await);

    // kill -9 a node that holds replicas (not node 1, our gateway). With 4
    // live nodes range 1 falls back to 3 replicas, like every range.
    let (replicas, _) = counts(&show_ranges(&a, None).await);
    let victim_id = (2..=5u64)
        .max_by_key(|n| replicas.get(n).copied().unwrap_or(0))
        .unwrap();
    c.nodes[victim_id as usize - 1].kill();
    let started = Instant::now();
    let repaired = eventually(Duration::from_secs(90), || async {
        let ranges = show_ranges(&a, None).await;
        ranges
            .iter()
            .all(|r| r.voters.len() == 3 && r.learners == 0 && !r.voters.contains(&victim_id))
    })
    .await;
    if !repaired {
        c.dump_logs();
    }
    assert!(
        repaired,
        "every range back to 3 replicas on live nodes: {:?}",
        show_ranges(&a, None).await
    );
    eprintln!(
        "re-replicated {:?} after the kill (dead-after 5s)",
        started.elapsed()
    );
    assert_eq!(
        count_retry(&a, "SELECT count(*) FROM t").await,
        1000,
        "every row readable"
    );

    // The killed node comes back: its stale replicas go, it takes load again,
    // and it serves every row.
    c.nodes[victim_id as usize - 1].start();
    let v = connect(&c.nodes[victim_id as usize - 1].sql_url()).await;
    assert_eq!(count_retry(&v, "SELECT count(*) FROM t").await, 1000);
    let rebalanced = eventually(Duration::from_secs(90), || async {
        let ranges = show_ranges(&a, None).await;
        let (replicas, _) = counts(&ranges);
        replicas.get(&victim_id).copied().unwrap_or(0) > 0
            && ranges.iter().all(|r| full(r) && r.learners == 0)
    })
    .await;
    assert!(
        rebalanced,
        "the restarted node holds replicas again: {:?}",
        show_ranges(&a, None).await
    );
    assert_eq!(count_retry(&v, "SELECT sum(k) FROM t").await, 499_500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_gets_its_share_of_replicas_and_leaders() {
    let mut c = start_cluster(3, &[]);
    let a = table_with_ranges(&c, 3000, 100).await;
    assert!(show_ranges(&a, None).await.len() >= 30);

    add_node(&mut c, &[]);
    let started = Instant::now();
    let within = |n: usize, mean: f64| (n as f64) >= mean * 0.8 && (n as f64) <= mean * 1.2;
    let balanced = eventually(Duration::from_secs(150), || async {
        let ranges = show_ranges(&a, None).await;
        if ranges
            .iter()
            .any(|r| r.learners > 0 || r.voters.len() != 3 || r.leader.is_none())
        {
            return false;
        }
        let (replicas, leaders) = counts(&ranges);
        let rmean = ranges.len() as f64 * 3.0 / 4.0;
        let lmean = ranges.len() as f64 / 4.0;
        (1..=4u64).all(|n| {
            within(replicas.get(&n).copied().unwrap_or(0), rmean)
                && within(leaders.get(&n).copied().unwrap_or(0), lmean)
        })
    })
    .await;
    let (replicas, leaders) = counts(&show_ranges(&a, None).await);
    if !balanced {
        c.dump_logs();
    }
    assert!(balanced, "replicas {replicas:?} leaders {leaders:?}");
    eprintln!(
        "balanced after {:?}: replicas {replicas:?} leaders {leaders:?}",
        started.elapsed()
    );
    assert_eq!(count_retry(&a, "SELECT count(*) FROM t").await, 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommission_drains_a_node_while_data_stays_readable() {
    let c = start_cluster(4, &[]);
    let a = table_with_ranges(&c, 1000, 100).await;
    // Wait until node 4 holds replicas (rebalancing from the initial 3).
    let loaded = eventually(Duration::from_secs(60), || async {
        counts(&show_ranges(&a, None).await)
            .0
            .get(&4)
            .copied()
            .unwrap_or(0)
            > 0
    })
    .await;
    assert!(loaded);
    // Drain node 4 while reading.
    let grpc = c.nodes[1].grpc.clone();
    let drain = tokio::task::spawn_blocking(move || {
        run_cli(&[
            "node",
            "decommission",
            "4",
            "--host",
            &grpc,
            "--wait",
            "120s",
        ])
    });
    let reader = connect(&c.nodes[2].sql_url()).await;
    while !drain.is_finished() {
        assert_eq!(
            count_retry(&reader, "SELECT count(*) FROM t").await,
            1000,
            "readable during the drain"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (ok, out) = drain.await.unwrap();
    assert!(ok && out.contains("drained"), "{out}");
    let ranges = show_ranges(&a, None).await;
    assert!(
        ranges
            .iter()
            .all(|r| !r.voters.contains(&4) && r.voters.len() == 3),
        "{ranges:?}"
    );
    assert_eq!(count_retry(&a, "SELECT sum(k) FROM t").await, 499_500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_split_by_themselves_when_they_grow() {
    let c = start_cluster(3, &["--range-max-bytes", "20000"]);
    let a = connect(&c.nodes[0].sql_url()).await;
    exec_retry(
        &a,
        "CREATE TABLE t (k INT PRIMARY KEY, v TEXT)",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let before = show_ranges(&a, Some("t")).await.len();
    // About 150 KB of rows, inserted in small batches (each within one range).
    for b in 0..60 {
        let values: Vec<String> = (0..25)
            .map(|i| format!("({}, '{}')", b * 25 + i, "x".repeat(80)))
            .collect();
        exec_retry(
            &a,
            &format!("INSERT INTO t VALUES {}", values.join(", ")),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    }
    let split = eventually(Duration::from_secs(60), || async {
        show_ranges(&a, Some("t")).await.len() >= before + 3
    })
    .await;
    assert!(
        split,
        "size-based splits happened: {:?}",
        show_ranges(&a, Some("t")).await
    );
    assert_eq!(count_retry(&a, "SELECT count(*) FROM t").await, 1500);
}
