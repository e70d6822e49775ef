//! List-append transactions (Elle's workload) across ranges, through the
//! PostgreSQL protocol, while nodes are killed and restarted and one node's
//! clock runs 300 ms behind (inside `--max-offset`): the history
//! must show no G0, G1a, G1b, G1c, G-single or G2 anomaly
//! (`concord_workload::listappend`).
//!
//! `CONCORD_LISTAPPEND_SECS` sets the length of the run (default 20 s).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use concord_workload::listappend::{self, Op, Status, Txn};

const KEYS: u64 = 8;
const CLIENTS: u64 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_append_history_under_kills_has_no_cycles() {
    let secs: u64 = std::env::var("CONCORD_LISTAPPEND_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let mut c = Cluster::new(3);
    for (i, node) in c.nodes.iter_mut().enumerate() {
        if i == 2 {
            // Inside the max offset (500 ms): must cause no anomaly.
            node.extra = vec!["--debug-clock-offset".into(), "-300ms".into()];
        }
        node.start();
    }
    let (ok, out) = run_cli(&["init", "--host", &c.nodes[0].grpc]);
    assert!(ok, "concord init: {out}");
    let a = connect(&c.nodes[0].sql_url()).await;
    for sql in [
        "CREATE TABLE lists (k INT PRIMARY KEY, v TEXT NOT NULL)".to_string(),
        format!(
            "INSERT INTO lists SELECT i, '' FROM generate_series(0, {}) AS g(i)",
            KEYS - 1
        ),
        // Every key in its own range: multi-key transactions commit in two phases.
        format!(
            "ALTER TABLE lists SPLIT AT VALUES {}",
            split_values(1, KEYS as i64, 1)
        ),
    ] {
        exec_retry(&a, &sql, Duration::from_secs(60)).await.unwrap();
    }

    let urls: Vec<String> = c.nodes.iter().map(|n| n.sql_url()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(Mutex::new(Vec::<Txn>::new()));
    let mut clients = Vec::new();
    for w in 0..CLIENTS {
        let (urls, stop, history) = (urls.clone(), stop.clone(), history.clone());
        clients.push(tokio::spawn(async move {
            let mut client = connect_any(&urls, w).await;
            let mut seed = w.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = w * 1_000_000 + n;
                let len = 1 + next() % 4;
                let mut planned = Vec::new();
                for i in 0..len {
                    let key = next() % KEYS;
                    if next() % 2 == 0 {
                        planned.push(Op::append(key, id * 10 + i));
                    } else {
                        planned.push(Op::read_unobserved(key));
                    }
                }
                let mut ops = Vec::new();
                let mut status = Status::Committed;
                let mut broken = false;
                if let (step @ (Step::Retry | Step::Broken), _) = run_stmt(&client, "BEGIN").await {
                    broken = matches!(step, Step::Broken);
                    status = Status::Aborted;
                }
                for op in &planned {
                    if status != Status::Committed {
                        break;
                    }
                    let (step, rows) = match op {
                        Op::Append { key, value } => {
                            let sql =
                                format!("UPDATE lists SET v = v || ',{value}' WHERE k = {key}");
                            run_stmt(&client, &sql).await
                        }
                        Op::Read { key, .. } => {
                            let sql = format!("SELECT v FROM lists WHERE k = {key}");
                            run_stmt(&client, &sql).await
                        }
                    };
                    match step {
                        Step::Ok => ops.push(match op {
                            Op::Append { .. } => op.clone(),
                            Op::Read { key, .. } => {
                                let list: Vec<u64> = rows
                                    .first()
                                    .map(|r| {
                                        r[0].split(',')
                                            .filter(|s| !s.is_empty())
                                            .map(|s| s.parse().expect("list element"))
                                            .collect()
                                    })
                                    .unwrap_or_default();
                                Op::read(*key, list)
                            }
                        }),
                        Step::Retry => status = Status::Aborted,
                        Step::Broken => {
                            status = Status::Aborted;
                            broken = true;
                        }
                    }
                }
                if status == Status::Committed {
                    match run_stmt(&client, "COMMIT").await.0 {
                        Step::Ok => {}
                        Step::Retry => status = Status::Aborted,
                        Step::Broken => {
                            status = Status::Unknown;
                            broken = true;
                        }
                    }
                } else if !broken {
                    let _ = run_stmt(&client, "ROLLBACK").await;
                }
                history.lock().unwrap().push(Txn::new(id, status, ops));
                if broken {
                    client = connect_any(&urls, next()).await;
                }
            }
        }));
    }
    let kills = kill_and_restart_one_at_a_time(&mut c, Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.await.unwrap();
    }
    let history = history.lock().unwrap().clone();
    let report = listappend::check(&history);
    let committed = history
        .iter()
        .filter(|t| t.status == Status::Committed)
        .count();
    eprintln!(
        "list-append: {secs}s, {kills} kills, {} transactions, {committed} committed; {report}",
        history.len()
    );
    assert!(
        committed > 30,
        "too few transactions committed: {committed}"
    );
    assert!(report.is_valid(), "{report}");
}
