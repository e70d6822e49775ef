//! Bank transfers in explicit transactions across many ranges, through the
//! PostgreSQL protocol, while nodes are killed with `kill -9` and restarted
//! one at a time, with one node's clock skewed inside `--max-offset`.
//!
//! What must hold: every sample and the end state conserve the total and
//! have no negative balance; every transfer acknowledged as committed is in
//! the transfer log (and nothing else but transfers whose COMMIT had an
//! unknown outcome); each balance equals its initial value plus what the
//! log says came in minus what went out.
//!
//! `CONCORD_BANK_SECS` sets the length of the run (default 30 s).
//!
//! MVCC GC runs throughout (`--gc-ttl 5s`); at the end, `AS OF SYSTEM TIME
//! follower_read_timestamp()` totals are read through every node, some of
//! them served by followers.
//!
//! Also here: a node whose clock is beyond `--max-offset` stops and says why.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use concord_workload::bank::{check_ledger, Transfer};
use tokio_postgres::Client;

const ACCOUNTS: i64 = 50;
const INITIAL: i64 = 1000;
const CLIENTS: u64 = 16;
#[derive(Default)]
struct Outcomes {
    acked: BTreeSet<u64>,
    maybe: BTreeSet<u64>,
    retries: u64,
}

/// One transfer attempt. Returns what happened to the COMMIT: `None` if it
/// was never sent.
async fn transfer(c: &Client, tid: i64, from: i64, to: i64, amount: i64) -> (Step, bool) {
    let stmts_before_commit = [
        "BEGIN".to_string(),
        format!("SELECT balance FROM bank WHERE id = {from}"),
    ];
    for s in &stmts_before_commit {
        match run_stmt(c, s).await {
            (Step::Ok, rows) => {
                if s.starts_with("SELECT") {
                    let bal: i64 = rows
                        .first()
                        .and_then(|r| r[0].parse().ok())
                        .expect("every account exists");
                    if bal < amount {
                        let _ = run_stmt(c, "ROLLBACK").await;
                        return (Step::Ok, false);
                    }
                }
            }
            (other, _) => {
                let _ = run_stmt(c, "ROLLBACK").await;
                return (other, false);
            }
        }
    }
    for s in [
        format!("UPDATE bank SET balance = balance - {amount} WHERE id = {from}"),
        format!("UPDATE bank SET balance = balance + {amount} WHERE id = {to}"),
        format!("INSERT INTO transfers VALUES ({tid}, {from}, {to}, {amount})"),
    ] {
        if let (step @ (Step::Retry | Step::Broken), _) = run_stmt(c, &s).await {
            let _ = run_stmt(c, "ROLLBACK").await;
            return (step, false);
        }
    }
    (run_stmt(c, "COMMIT").await.0, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bank_transfers_survive_node_kills_and_conserve_money() {
    let secs: u64 = std::env::var("CONCORD_BANK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let mut c = Cluster::new(3);
    for (i, node) in c.nodes.iter_mut().enumerate() {
        // MVCC GC runs all along, a few seconds behind the workload.
        node.extra = vec!["--gc-ttl".into(), "5s".into()];
        if i == 2 {
            // Inside the max offset (500 ms): must cause no anomaly.
            node.extra
                .extend(["--debug-clock-offset".into(), "250ms".into()]);
        }
        node.start();
    }
    let (ok, out) = run_cli(&["init", "--host", &c.nodes[0].grpc]);
    assert!(ok, "concord init: {out}");
    let a = connect(&c.nodes[0].sql_url()).await;
    for sql in [
        "CREATE TABLE bank (id INT PRIMARY KEY, balance INT NOT NULL)".to_string(),
        "CREATE TABLE transfers (id INT PRIMARY KEY, src INT, dst INT, amount INT)".to_string(),
        format!(
            "INSERT INTO bank SELECT i, {INITIAL} FROM generate_series(0, {}) AS g(i)",
            ACCOUNTS - 1
        ),
        format!(
            "ALTER TABLE bank SPLIT AT VALUES {}",
            split_values(5, ACCOUNTS, 5)
        ),
        "ALTER TABLE transfers SPLIT AT VALUES (1000000), (4000000), (8000000), (12000000)"
            .to_string(),
    ] {
        exec_retry(&a, &sql, Duration::from_secs(60)).await.unwrap();
    }
    let ranges = show_ranges(&a, Some("bank")).await;
    assert!(ranges.len() >= 10, "bank spans {} ranges", ranges.len());

    let urls: Vec<String> = c.nodes.iter().map(|n| n.sql_url()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for w in 0..CLIENTS {
        let (urls, stop, outcomes) = (urls.clone(), stop.clone(), outcomes.clone());
        clients.push(tokio::spawn(async move {
            let mut client = connect_any(&urls, w).await;
            let mut seed = w.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut seq = 0i64;
            while !stop.load(Ordering::Relaxed) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let from = (seed % ACCOUNTS as u64) as i64;
                let to = (from + 1 + ((seed >> 20) % (ACCOUNTS as u64 - 1)) as i64) % ACCOUNTS;
                let amount = 1 + ((seed >> 40) % 100) as i64;
                seq += 1;
                let tid = w as i64 * 1_000_000 + seq;
                let (step, committing) = transfer(&client, tid, from, to, amount).await;
                let broken = {
                    let mut o = outcomes.lock().unwrap();
                    match (step, committing) {
                        (Step::Ok, true) => {
                            o.acked.insert(tid as u64);
                            false
                        }
                        (Step::Ok, false) => false,
                        (Step::Retry, _) => {
                            o.retries += 1;
                            false
                        }
                        (Step::Broken, committing) => {
                            if committing {
                                o.maybe.insert(tid as u64);
                            }
                            true
                        }
                    }
                };
                if broken {
                    client = connect_any(&urls, seed).await;
                }
            }
        }));
    }
    let sampler = {
        let (urls, stop, violations) = (urls.clone(), stop.clone(), violations.clone());
        tokio::spawn(async move {
            let mut samples = 0;
            let mut client = connect_any(&urls, 0).await;
            while !stop.load(Ordering::Relaxed) {
                let sql = "SELECT sum(balance), min(balance), count(*) FROM bank";
                match run_stmt(&client, sql).await {
                    (Step::Ok, rows) => {
                        let r = &rows[0];
                        if r[0] != (ACCOUNTS * INITIAL).to_string()
                            || r[1].parse::<i64>().unwrap_or(-1) < 0
                            || r[2] != ACCOUNTS.to_string()
                        {
                            violations.lock().unwrap().push(format!("sample {r:?}"));
                        }
                        samples += 1;
                    }
                    (Step::Retry, _) => {}
                    (Step::Broken, _) => client = connect_any(&urls, samples).await,
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            samples
        })
    };

    let kills = kill_and_restart_one_at_a_time(&mut c, Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.await.unwrap();
    }
    let samples = sampler.await.unwrap();

    // Final checks, through any node.
    let v = connect_any(&urls, 1).await;
    let balances: BTreeMap<i64, i64> = query_retry(&v, "SELECT id, balance FROM bank")
        .await
        .into_iter()
        .map(|r| (r[0].parse().unwrap(), r[1].parse().unwrap()))
        .collect();
    let log = query_retry(&v, "SELECT id, src, dst, amount FROM transfers").await;
    let o = std::mem::take(&mut *outcomes.lock().unwrap());
    eprintln!(
        "bank: {secs}s, {kills} kills, {} acknowledged, {} unknown, {} retries, {} log rows, {samples} samples",
        o.acked.len(),
        o.maybe.len(),
        o.retries,
        log.len()
    );
    let violations = violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "snapshots broke the invariants: {violations:?}"
    );
    assert_eq!(balances.len() as i64, ACCOUNTS);
    assert_eq!(
        balances.values().sum::<i64>(),
        ACCOUNTS * INITIAL,
        "money conserved"
    );
    assert!(balances.values().all(|b| *b >= 0), "no negative balance");
    // Every acknowledged transfer is in the log, every logged one was
    // acknowledged or in doubt, and the balances are what the log says.
    let initial: BTreeMap<u64, i64> = (0..ACCOUNTS as u64).map(|i| (i, INITIAL)).collect();
    let transfers: Vec<Transfer> = log
        .iter()
        .map(|r| Transfer {
            id: r[0].parse().unwrap(),
            from: r[1].parse().unwrap(),
            to: r[2].parse().unwrap(),
            amount: r[3].parse().unwrap(),
        })
        .collect();
    let finals: BTreeMap<u64, i64> = balances.iter().map(|(k, v)| (*k as u64, *v)).collect();
    let found = check_ledger(&initial, &o.acked, &o.maybe, &transfers, &finals);
    assert!(
        found.is_empty(),
        "the final state disagrees with what clients were told: {found:?}"
    );
    assert!(
        o.acked.len() > 50,
        "too few transfers committed: {}",
        o.acked.len()
    );
    assert!(samples > 0);
    let gc_ran = c.nodes.iter().any(|n| {
        std::fs::read_to_string(&n.log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("MVCC GC") && l.contains("versions"))
    });
    assert!(gc_ran, "MVCC GC collected old balances during the run");

    // Follower reads: a consistent historical total through every node,
    // served (for ranges a node does not lead) by its own replicas.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for n in &c.nodes {
        let Ok(Ok((cl, conn))) = tokio::time::timeout(
            Duration::from_secs(20),
            tokio_postgres::connect(&n.sql_url(), tokio_postgres::NoTls),
        )
        .await
        else {
            c.dump_logs();
            panic!("node {} does not accept connections", n.id);
        };
        tokio::spawn(conn);
        let sum = count_retry(
            &cl,
            "SELECT sum(balance) FROM bank AS OF SYSTEM TIME follower_read_timestamp()",
        )
        .await;
        assert_eq!(
            sum,
            ACCOUNTS * INITIAL,
            "historical total through node {}",
            n.id
        );
    }
    let follower_reads: i64 = c
        .nodes
        .iter()
        .filter_map(|n| http_get(&n.http, "/metrics"))
        .flat_map(|m| {
            m.lines()
                .filter(|l| l.starts_with("concord_follower_reads "))
                .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .sum::<f64>() as i64;
    assert!(follower_reads > 0, "some reads were served by followers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_clock_is_beyond_max_offset_stops_and_says_why() {
    let mut c = Cluster::new(3);
    for (i, node) in c.nodes.iter_mut().enumerate() {
        if i == 2 {
            node.extra = vec!["--debug-clock-offset".into(), "2s".into()];
        }
        node.start();
    }
    let (ok, out) = run_cli(&["init", "--host", &c.nodes[0].grpc]);
    assert!(ok, "concord init: {out}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = c.nodes[2].child.as_mut().unwrap().try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the skewed node kept running");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!status.success(), "it exits with an error");
    c.nodes[2].child = None;
    let log = std::fs::read_to_string(&c.nodes[2].log).unwrap();
    assert!(
        log.contains("clock is off by more than"),
        "the log says why: {}",
        log.lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
    // The others, whose clocks agree, keep serving.
    let a = connect(&c.nodes[0].sql_url()).await;
    exec_retry(
        &a,
        "CREATE TABLE t (k INT PRIMARY KEY)",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    exec_retry(&a, "INSERT INTO t VALUES (1), (2)", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(count_retry(&a, "SELECT count(*) FROM t").await, 2);
    for n in &c.nodes[..2] {
        assert!(n.child.is_some());
    }
}
