//! The three workloads, run together during every fault campaign run, each
//! through the PostgreSQL protocol only:
//!
//! - **bank**: transfers between 20 accounts in explicit transactions that
//!   also log the transfer; readers read every balance in one statement.
//!   Checked by [`concord_workload::bank`]: every snapshot conserves money
//!   with no negative balance, and after the run the final balances and the
//!   transfer log agree with what clients were told (no lost update).
//! - **list-append**: Elle's transactions of appends and reads over 8 keys
//!   in 8 ranges; checked by [`concord_workload::listappend`] for G0, G1a,
//!   G1b, G1c, G-single and G2, plus a final read for lost appends.
//! - **register**: single-statement reads, writes and compare-and-sets on
//!   independent rows, a few keys at a time (the keys rotate every 5 s so
//!   each key's history stays small enough to search); checked for
//!   linearizability by [`concord_workload::register`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use concord_workload::{bank, listappend, register};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio_postgres::Client;

use crate::client::{self, Answer, Rows};
use crate::history::History;

pub const ACCOUNTS: u64 = 20;
pub const INITIAL: i64 = 100;
pub const LIST_KEYS: u64 = 8;
pub const REGISTERS: u64 = 1200;
const ACTIVE_REGISTERS: u64 = 4;
const REGISTER_ROTATION: Duration = Duration::from_secs(5);

/// What the workers share and what they leave for the checkers.
pub struct Shared {
    pub addrs: Arc<RwLock<Vec<String>>>,
    pub history: Arc<History>,
    pub stop: AtomicBool,
    pub started: Instant,
    next_process: AtomicU64,
    next_id: AtomicU64,
    /// Errors no fault explains; any makes the run fail.
    pub unexpected: Mutex<Vec<String>>,
    /// Answers with SQLSTATE 53100 (disk full).
    pub disk_full: AtomicU64,
    pub transfers_acked: Mutex<BTreeSet<u64>>,
    pub transfers_unknown: Mutex<BTreeSet<u64>>,
    pub snapshots: Mutex<Vec<bank::Snapshot>>,
    pub lists: Mutex<Vec<listappend::Txn>>,
    pub registers: Mutex<Vec<register::Operation>>,
}

impl Shared {
    pub fn new(addrs: Arc<RwLock<Vec<String>>>, history: Arc<History>) -> Shared {
        Shared {
            addrs,
            history,
            stop: AtomicBool::new(false),
            started: Instant::now(),
            next_process: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            unexpected: Mutex::new(Vec::new()),
            disk_full: AtomicU64::new(0),
            transfers_acked: Mutex::new(BTreeSet::new()),
            transfers_unknown: Mutex::new(BTreeSet::new()),
            snapshots: Mutex::new(Vec::new()),
            lists: Mutex::new(Vec::new()),
            registers: Mutex::new(Vec::new()),
        }
    }

    fn process(&self) -> u64 {
        self.next_process.fetch_add(1, Ordering::Relaxed)
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// The statements that create and load every workload's tables.
pub fn setup_statements() -> Vec<String> {
    let split = |from: u64, to: u64, step: u64| {
        (from..to)
            .step_by(step as usize)
            .map(|k| format!("({k})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        "CREATE TABLE bank (id INT PRIMARY KEY, balance INT NOT NULL)".into(),
        "CREATE TABLE transfers (id INT PRIMARY KEY, src INT, dst INT, amount INT)".into(),
        format!(
            "INSERT INTO bank SELECT i, {INITIAL} FROM generate_series(0, {}) AS g(i)",
            ACCOUNTS - 1
        ),
        format!("ALTER TABLE bank SPLIT AT VALUES {}", split(5, ACCOUNTS, 5)),
        "CREATE TABLE lists (k INT PRIMARY KEY, v TEXT NOT NULL)".into(),
        format!(
            "INSERT INTO lists SELECT i, '' FROM generate_series(0, {}) AS g(i)",
            LIST_KEYS - 1
        ),
        format!(
            "ALTER TABLE lists SPLIT AT VALUES {}",
            split(1, LIST_KEYS, 1)
        ),
        "CREATE TABLE registers (k INT PRIMARY KEY, v INT NOT NULL)".into(),
        format!(
            "INSERT INTO registers SELECT i, 0 FROM generate_series(0, {}) AS g(i)",
            REGISTERS - 1
        ),
        format!(
            "ALTER TABLE registers SPLIT AT VALUES {}",
            split(REGISTERS / 3, REGISTERS, REGISTERS / 3)
        ),
        "CREATE TABLE probe (k INT PRIMARY KEY, v INT NOT NULL)".into(),
        "INSERT INTO probe SELECT i, 0 FROM generate_series(0, 9) AS g(i)".into(),
    ]
}

/// One client: a connection to one node, a process number, a random source.
pub struct Worker {
    pub shared: Arc<Shared>,
    pub process: u64,
    node: usize,
    conn: Option<Client>,
    pub rng: StdRng,
    workload: &'static str,
}

impl Worker {
    pub fn new(shared: Arc<Shared>, workload: &'static str, node: usize, seed: u64) -> Worker {
        let process = shared.process();
        Worker {
            shared,
            process,
            node,
            conn: None,
            rng: StdRng::seed_from_u64(seed),
            workload,
        }
    }

    fn nodes(&self) -> usize {
        self.shared
            .addrs
            .read()
            .expect("address lock poisoned")
            .len()
    }

    /// The node this worker talks to now.
    pub fn node(&self) -> usize {
        self.node
    }

    /// Connects if needed; `false` (after a short pause, having moved on to
    /// the next node) if the node does not accept connections.
    async fn ensure_connected(&mut self) -> bool {
        if self.conn.as_ref().is_some_and(|c| !c.is_closed()) {
            return true;
        }
        let addr = self.shared.addrs.read().expect("address lock poisoned")[self.node].clone();
        match client::connect(&addr).await {
            Some(c) => {
                self.conn = Some(c);
                true
            }
            None => {
                self.node = (self.node + 1) % self.nodes();
                tokio::time::sleep(Duration::from_millis(300)).await;
                false
            }
        }
    }

    /// Runs one statement. An unknown outcome drops the connection and gives
    /// the worker a new process number (the old request may still run).
    pub async fn exec(&mut self, sql: &str) -> Answer {
        let Some(c) = self.conn.as_ref() else {
            return Answer::Info("connection".into(), "not connected".into());
        };
        let a = client::exec(c, sql).await;
        match &a {
            Answer::Fail(code, _) if code == "53100" => {
                self.shared.disk_full.fetch_add(1, Ordering::Relaxed);
            }
            Answer::Unexpected(code, msg) => {
                self.shared
                    .unexpected
                    .lock()
                    .expect("lock poisoned")
                    .push(format!("{}: {sql}: {code} {msg}", self.workload));
            }
            Answer::Info(..) => {
                self.conn = None;
                self.process = self.shared.process();
                self.node = (self.node + 1) % self.nodes();
            }
            _ => {}
        }
        a
    }

    fn record(
        &self,
        process: u64,
        kind: &str,
        f: &str,
        value: serde_json::Value,
        err: Option<String>,
    ) -> u64 {
        self.shared
            .history
            .complete(self.workload, process, kind, f, value, err.as_deref())
    }
}

fn err_text(code: &str, msg: &str) -> Option<String> {
    Some(format!("{code}: {msg}"))
}

/// Runs `BEGIN`, `stmts` and `COMMIT`. Returns the rows of each statement
/// and how the transaction ended (committed, aborted, or unknown). The
/// optional `guard` sees each statement's rows and may abort the
/// transaction (ROLLBACK) by returning false.
async fn transaction(
    w: &mut Worker,
    stmts: &[String],
    mut guard: impl FnMut(usize, &Rows) -> bool,
) -> (listappend::Status, Vec<Rows>, Option<String>) {
    use listappend::Status;
    let mut results = Vec::new();
    let all: Vec<String> = std::iter::once("BEGIN".to_string())
        .chain(stmts.iter().cloned())
        .collect();
    for (i, s) in all.iter().enumerate() {
        match w.exec(s).await {
            Answer::Ok(rows, _) => {
                if i > 0 {
                    if !guard(i - 1, &rows) {
                        let _ = w.exec("ROLLBACK").await;
                        return (
                            Status::Aborted,
                            results,
                            Some("refused by the client".into()),
                        );
                    }
                    results.push(rows);
                }
            }
            // No COMMIT was sent: whatever happened, it did not commit.
            a @ (Answer::Fail(..) | Answer::Unexpected(..)) => {
                let _ = w.exec("ROLLBACK").await;
                return (Status::Aborted, results, describe(&a));
            }
            a @ Answer::Info(..) => return (Status::Aborted, results, describe(&a)),
        }
    }
    match w.exec("COMMIT").await {
        Answer::Ok(..) => (Status::Committed, results, None),
        a @ (Answer::Fail(..) | Answer::Unexpected(..)) => (Status::Aborted, results, describe(&a)),
        a @ Answer::Info(..) => (Status::Unknown, results, describe(&a)),
    }
}

fn describe(a: &Answer) -> Option<String> {
    match a {
        Answer::Ok(..) => None,
        Answer::Fail(c, m) | Answer::Info(c, m) | Answer::Unexpected(c, m) => err_text(c, m),
    }
}

/// A bank worker: transfers, and every fifth operation a full read.
pub async fn bank_worker(mut w: Worker) {
    use listappend::Status;
    while !w.shared.stopped() {
        if !w.ensure_connected().await {
            continue;
        }
        let p = w.process;
        if w.rng.random_ratio(1, 5) {
            w.shared.history.invoke(p, "read", json!(null), w.node());
            match w.exec("SELECT id, balance FROM bank").await {
                Answer::Ok(rows, _) => {
                    let snap: bank::Snapshot = rows
                        .iter()
                        .filter_map(|r| {
                            Some((
                                r[0].as_deref()?.parse().ok()?,
                                r[1].as_deref()?.parse().ok()?,
                            ))
                        })
                        .collect();
                    w.record(p, "ok", "read", json!(snap), None);
                    w.shared.snapshots.lock().expect("lock poisoned").push(snap);
                }
                a @ (Answer::Fail(..) | Answer::Unexpected(..)) => {
                    w.record(p, "fail", "read", json!(null), describe(&a));
                }
                a @ Answer::Info(..) => {
                    w.record(p, "info", "read", json!(null), describe(&a));
                }
            }
            continue;
        }
        let id = w.shared.id();
        let from = w.rng.random_range(0..ACCOUNTS);
        let to = (from + w.rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
        let amount = w.rng.random_range(1..=30i64);
        let value = json!({"id": id, "from": from, "to": to, "amount": amount});
        w.shared
            .history
            .invoke(p, "transfer", value.clone(), w.node());
        let stmts = [
            format!("SELECT balance FROM bank WHERE id = {from}"),
            format!("UPDATE bank SET balance = balance - {amount} WHERE id = {from}"),
            format!("UPDATE bank SET balance = balance + {amount} WHERE id = {to}"),
            format!("INSERT INTO transfers VALUES ({id}, {from}, {to}, {amount})"),
        ];
        let (status, _, err) = transaction(&mut w, &stmts, |i, rows| {
            i != 0 || client::first_int(rows).is_some_and(|b| b >= amount)
        })
        .await;
        match status {
            Status::Committed => {
                w.shared
                    .transfers_acked
                    .lock()
                    .expect("lock poisoned")
                    .insert(id);
                w.record(p, "ok", "transfer", value, None);
            }
            Status::Aborted => {
                w.record(p, "fail", "transfer", value, err);
            }
            Status::Unknown => {
                w.shared
                    .transfers_unknown
                    .lock()
                    .expect("lock poisoned")
                    .insert(id);
                w.record(p, "info", "transfer", value, err);
            }
        }
    }
}

/// A list-append worker: transactions of 1–4 appends and reads.
pub async fn list_append_worker(mut w: Worker) {
    use listappend::{Op, Status, Txn};
    while !w.shared.stopped() {
        if !w.ensure_connected().await {
            continue;
        }
        let p = w.process;
        let id = w.shared.id();
        let len = w.rng.random_range(1..=4u64);
        let planned: Vec<Op> = (0..len)
            .map(|i| {
                let key = w.rng.random_range(0..LIST_KEYS);
                if w.rng.random_bool(0.5) {
                    Op::append(key, id * 10 + i)
                } else {
                    Op::read_unobserved(key)
                }
            })
            .collect();
        let show = |ops: &[Op]| {
            json!(ops
                .iter()
                .map(|o| match o {
                    Op::Append { key, value } => json!(["append", key, value]),
                    Op::Read { key, value } => json!(["r", key, value]),
                })
                .collect::<Vec<_>>())
        };
        w.shared.history.invoke(p, "txn", show(&planned), w.node());
        let stmts: Vec<String> = planned
            .iter()
            .map(|op| match op {
                Op::Append { key, value } => {
                    format!("UPDATE lists SET v = v || ',{value}' WHERE k = {key}")
                }
                Op::Read { key, .. } => format!("SELECT v FROM lists WHERE k = {key}"),
            })
            .collect();
        let (status, results, err) = transaction(&mut w, &stmts, |_, _| true).await;
        let ops: Vec<Op> = planned
            .iter()
            .zip(results.iter())
            .map(|(op, rows)| match op {
                Op::Read { key, .. } => Op::read(*key, parse_list(rows)),
                other => other.clone(),
            })
            .collect();
        let kind = match status {
            Status::Committed => "ok",
            Status::Aborted => "fail",
            Status::Unknown => "info",
        };
        let ops = if status == Status::Committed {
            ops
        } else {
            planned
        };
        w.record(p, kind, "txn", show(&ops), err);
        w.shared
            .lists
            .lock()
            .expect("lock poisoned")
            .push(Txn::new(id, status, ops));
    }
}

/// Parses a list column (`,1,2,3`).
pub fn parse_list(rows: &Rows) -> Vec<u64> {
    rows.first()
        .and_then(|r| r.first().cloned().flatten())
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default()
}

/// A register worker: reads, writes and compare-and-sets on the active keys.
pub async fn register_worker(mut w: Worker) {
    use register::{Op, Operation, Outcome};
    while !w.shared.stopped() {
        if !w.ensure_connected().await {
            continue;
        }
        let p = w.process;
        let epoch = w.shared.started.elapsed().as_secs() / REGISTER_ROTATION.as_secs();
        let key = (epoch * ACTIVE_REGISTERS + w.rng.random_range(0..ACTIVE_REGISTERS)) % REGISTERS;
        let choice = w.rng.random_range(0..4);
        let v = w.rng.random_range(1..=5i64);
        let old = w.rng.random_range(0..=5i64);
        let (f, sql, value) = match choice {
            0 | 1 => (
                "read",
                format!("SELECT v FROM registers WHERE k = {key}"),
                json!([key, null]),
            ),
            2 => (
                "write",
                format!("UPDATE registers SET v = {v} WHERE k = {key}"),
                json!([key, v]),
            ),
            _ => (
                "cas",
                format!("UPDATE registers SET v = {v} WHERE k = {key} AND v = {old}"),
                json!([key, [old, v]]),
            ),
        };
        let invoked = w.shared.history.invoke(p, f, value.clone(), w.node());
        let answer = w.exec(&sql).await;
        let (kind, op, err) = match answer {
            Answer::Ok(rows, count) => match f {
                "read" => {
                    let seen = client::first_int(&rows);
                    ("ok", Some(Op::Read(seen)), None)
                }
                "write" => ("ok", Some(Op::Write(v)), None),
                _ if count == 1 => ("ok", Some(Op::Cas { old, new: v }), None),
                _ => ("fail", Some(Op::CasFailed { old }), None),
            },
            a @ (Answer::Fail(..) | Answer::Unexpected(..)) => ("fail", None, describe(&a)),
            a @ Answer::Info(..) => {
                let op = match f {
                    "read" => None,
                    "write" => Some(Op::Write(v)),
                    _ => Some(Op::Cas { old, new: v }),
                };
                ("info", op, describe(&a))
            }
        };
        let shown = match &op {
            Some(Op::Read(seen)) => json!([key, seen]),
            _ => value,
        };
        let completed = w.record(p, kind, f, shown, err);
        if let Some(op) = op {
            let outcome = if kind == "info" {
                Outcome::Info
            } else {
                Outcome::Ok
            };
            w.shared
                .registers
                .lock()
                .expect("lock poisoned")
                .push(Operation {
                    process: p,
                    key,
                    op,
                    outcome,
                    invoked,
                    completed,
                });
        }
    }
}

/// Runs one statement through any node that answers, retrying for up to
/// `patience`: setup, nemesis statements and the final reads.
pub async fn exec_retry(addrs: &[String], sql: &str, patience: Duration) -> anyhow::Result<Rows> {
    let deadline = Instant::now() + patience;
    let mut last = String::new();
    let mut i = 0;
    while Instant::now() < deadline {
        i += 1;
        let addr = &addrs[i % addrs.len()];
        if let Some(c) = client::connect(addr).await {
            match client::exec_within(&c, sql, Duration::from_secs(10)).await {
                Answer::Ok(rows, _) => return Ok(rows),
                Answer::Fail(code, m) | Answer::Info(code, m) | Answer::Unexpected(code, m) => {
                    last = format!("{code}: {m}")
                }
            }
        } else {
            last = format!("cannot connect to {addr}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("final read `{sql}` failed for {patience:?}: {last}")
}

/// The final state of the bank: balances and the transfer log.
pub async fn bank_final(
    addrs: &[String],
) -> anyhow::Result<(BTreeMap<u64, i64>, Vec<bank::Transfer>)> {
    let patience = Duration::from_secs(90);
    let int = |s: &Option<String>| {
        s.as_deref()
            .and_then(|x| x.parse::<i64>().ok())
            .unwrap_or(-1)
    };
    let balances = exec_retry(addrs, "SELECT id, balance FROM bank", patience)
        .await?
        .iter()
        .map(|r| (int(&r[0]) as u64, int(&r[1])))
        .collect();
    let log = exec_retry(
        addrs,
        "SELECT id, src, dst, amount FROM transfers",
        patience,
    )
    .await?
    .iter()
    .map(|r| bank::Transfer {
        id: int(&r[0]) as u64,
        from: int(&r[1]) as u64,
        to: int(&r[2]) as u64,
        amount: int(&r[3]),
    })
    .collect();
    Ok((balances, log))
}
