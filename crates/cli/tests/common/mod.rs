//! Helpers for multi-process cluster tests: real `concord` processes on
//! loopback ports, driven like an operator would (CLI, PostgreSQL client,
//! HTTP metrics, `kill -9`).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

pub const BIN: &str = env!("CARGO_BIN_EXE_concord");

/// A loopback port no other node of this test binary will use.
///
/// Ports come from below Linux's ephemeral range (32768–60999), handed out
/// by a counter: a port taken with `bind(0)` and released could be handed
/// to a concurrent test (or to an outgoing connection) before the node
/// binds it, and a node would then join somebody else's cluster.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const HIGH: u32 = 32_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Spread test binaries (run one after another) over the range too.
    let base = (std::process::id() % 100) * 200;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (base + n) % (HIGH - LOW)) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Multi-process clusters of one test binary run one at a time: on a
/// 2-core machine several 3–5 node clusters at once starve each other and
/// turn timing-based checks (re-replication, rebalancing) into noise.
fn cluster_slot() -> std::sync::MutexGuard<'static, ()> {
    static SLOT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SLOT.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One node process.
pub struct NodeProc {
    pub id: usize,
    pub grpc: String,
    pub sql: String,
    pub http: String,
    pub store: PathBuf,
    pub log: PathBuf,
    pub join: String,
    pub extra: Vec<String>,
    pub child: Option<Child>,
}

impl NodeProc {
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(BIN)
            .args(["start", "--store"])
            .arg(&self.store)
            .args([
                "--listen-addr",
                &self.grpc,
                "--sql-addr",
                &self.sql,
                "--http-addr",
                &self.http,
            ])
            .args(["--join", &self.join, "--log", "info"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn concord start");
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9");
            c.wait().unwrap();
        }
    }

    pub fn sql_url(&self) -> String {
        format!("postgres://root@{}/defaultdb", self.sql)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Cluster {
    pub nodes: Vec<NodeProc>,
    pub dir: tempfile::TempDir,
    /// Stops the watchdog when the cluster is dropped.
    _watchdog: Watchdog,
    /// Held while the cluster lives; dropped last, after the nodes.
    _slot: std::sync::MutexGuard<'static, ()>,
}

/// How long a cluster may live before its watchdog ends it: far above the
/// longest test (a few minutes), so it only fires on a hang.
/// `CONCORD_TEST_CLUSTER_TIMEOUT_SECS` overrides it.
fn cluster_timeout() -> Duration {
    let secs = std::env::var("CONCORD_TEST_CLUSTER_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(900);
    Duration::from_secs(secs)
}

/// Turns a hung test into a failed one. The client calls in these tests
/// have no timeouts of their own (a production client would not either),
/// so a request the cluster never answers would hang the test binary and
/// CI with it; it once did, for an hour, with nothing to show why. After
/// [`cluster_timeout`] the watchdog prints every node's log and kills the
/// cluster's processes (found by their store directory), so the pending
/// calls fail with a connection error and the test fails where it waited.
/// A test still stuck 200 s later (past the longest retry loop of these
/// tests) aborts its binary.
struct Watchdog {
    done: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl Watchdog {
    fn start(dir: PathBuf) -> Watchdog {
        let done = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let timeout = cluster_timeout();
        let test = std::thread::current()
            .name()
            .unwrap_or("unnamed test")
            .to_string();
        let shared = done.clone();
        std::thread::spawn(move || {
            // Whether the cluster is dropped within `d`.
            let dropped_within = |d: Duration| {
                let (lock, cvar) = &*shared;
                let finished = lock.lock().unwrap_or_else(|p| p.into_inner());
                *cvar
                    .wait_timeout_while(finished, d, |finished| !*finished)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            };
            if dropped_within(timeout) {
                return;
            }
            uncaptured(&format!(
                "watchdog: the cluster of {test} is still up after {} s; its logs follow, then its nodes are killed\n{}",
                timeout.as_secs(),
                dir_logs(&dir, 200)
            ));
            kill_processes_using(&dir);
            if !dropped_within(Duration::from_secs(200)) {
                uncaptured(&format!(
                    "watchdog: {test} is still stuck after its cluster was killed; its threads follow, then it aborts\n{}",
                    own_backtraces()
                ));
                std::process::abort();
            }
        });
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.done;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cvar.notify_all();
    }
}

/// Every thread's stack of this process, as gdb prints them (bounded at
/// 60 s; empty where gdb is missing or may not attach): where a hung test
/// waits, when nothing else says.
fn own_backtraces() -> String {
    let pid = std::process::id().to_string();
    Command::new("timeout")
        .args([
            "60",
            "gdb",
            "-p",
            &pid,
            "-batch",
            "-ex",
            "thread apply all bt",
        ])
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Writes to the process's stderr past the test harness's capture. The
/// watchdog's thread inherits its test's capture, and a capture is lost
/// when the watchdog aborts the binary: CI once showed only "SIGABRT".
fn uncaptured(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// The last `lines` lines of every `*.log` file in `dir`, each under a
/// header.
fn dir_logs(dir: &Path, lines: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    logs.retain(|p| p.extension().is_some_and(|e| e == "log"));
    logs.sort();
    for p in logs {
        let log = std::fs::read_to_string(&p).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        let _ = writeln!(out, "---- {} (last {} lines) ----", p.display(), tail.len());
        for l in tail.iter().rev() {
            let _ = writeln!(out, "{l}");
        }
    }
    out
}

/// Sends SIGKILL to every process whose command line mentions `dir` (the
/// nodes of one cluster: each has its store under it).
fn kill_processes_using(dir: &Path) {
    // The directory followed by `/`: a store path under it, not another
    // directory whose name merely starts the same.
    let needle = [dir.as_os_str().as_encoded_bytes(), b"/"].concat();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .windows(needle.len())
            .any(|w| w == needle.as_slice())
        {
            uncaptured(&format!("watchdog: kill -9 {pid}\n"));
            let _ = Command::new("sh")
                .args(["-c", &format!("kill -9 {pid}")])
                .status();
        }
    }
}

impl Cluster {
    pub fn new(n: usize) -> Cluster {
        let slot = cluster_slot();
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let join = ports
            .iter()
            .map(|p| format!("127.0.0.1:{}", p.0))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, (g, s, h))| NodeProc {
                id: i + 1,
                grpc: format!("127.0.0.1:{g}"),
                sql: format!("127.0.0.1:{s}"),
                http: format!("127.0.0.1:{h}"),
                store: dir.path().join(format!("n{}", i + 1)),
                log: dir.path().join(format!("n{}.log", i + 1)),
                join: join.clone(),
                extra: vec![],
                child: None,
            })
            .collect();
        Cluster {
            nodes,
            _watchdog: Watchdog::start(dir.path().to_path_buf()),
            dir,
            _slot: slot,
        }
    }

    pub fn dump_logs(&self) {
        eprint!("{}", dir_logs(self.dir.path(), 40));
    }
}

pub fn run_cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().expect("run concord");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// A PUT with a small body; the whole response, status line included.
pub fn http_put(addr: &str, path: &str, body: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A gauge of range 1 from a node's /metrics.
pub fn metric(node: &NodeProc, name: &str, field: Option<&str>) -> Option<i64> {
    let text = http_get(&node.http, "/metrics")?;
    let needle = match field {
        Some(f) => format!("{name}{{field=\"{f}\",range_id=\"1\"}}"),
        None => format!("{name}{{range_id=\"1\"}}"),
    };
    text.lines()
        .find(|l| l.starts_with(&needle))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as i64)
}

pub fn leader_of(c: &Cluster, timeout: Duration) -> Option<usize> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for (i, n) in c.nodes.iter().enumerate() {
            if n.child.is_some() && metric(n, "concord_range_is_leader", None) == Some(1) {
                return Some(i);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

pub async fn connect(url: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match tokio_postgres::connect(url, NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                return client;
            }
            Err(e) if Instant::now() > deadline => panic!("cannot connect to {url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Runs a statement, retrying transient errors (unavailable, retry) until
/// it succeeds or the deadline passes. Ambiguous results are returned.
pub async fn exec_retry(c: &Client, sql: &str, timeout: Duration) -> Result<u64, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match c.simple_query(sql).await {
            Ok(msgs) => {
                return Ok(msgs
                    .iter()
                    .filter_map(|m| match m {
                        SimpleQueryMessage::CommandComplete(n) => Some(*n),
                        _ => None,
                    })
                    .sum())
            }
            Err(e) => {
                let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
                if code == "40003" || Instant::now() > deadline {
                    return Err(format!("{code}: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

pub async fn count(c: &Client, sql: &str) -> Result<i64, tokio_postgres::Error> {
    let msgs = c.simple_query(sql).await?;
    for m in msgs {
        if let SimpleQueryMessage::Row(r) = m {
            return Ok(r.get(0).unwrap_or("0").parse().unwrap_or(-1));
        }
    }
    Ok(-1)
}

pub async fn count_retry(c: &Client, sql: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match count(c, sql).await {
            Ok(n) => return n,
            Err(e) if Instant::now() > deadline => panic!(
                "{sql}: {:?}",
                e.as_db_error()
                    .map(|d| (d.code().code().to_string(), d.message().to_string()))
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

pub fn insert_rows(from: usize, to: usize, tag: &str) -> String {
    let values: Vec<String> = (from..to).map(|i| format!("({i}, '{tag}{i}')")).collect();
    format!("INSERT INTO kv VALUES {}", values.join(", "))
}

pub fn wait_caught_up(c: &Cluster, node: usize, leader: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    let target =
        metric(&c.nodes[leader], "concord_range_raft", Some("commit_index")).unwrap_or(i64::MAX);
    while Instant::now() < deadline {
        if metric(&c.nodes[node], "concord_range_raft", Some("applied_index")).unwrap_or(0)
            >= target
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

pub fn store_exists(p: &Path) -> bool {
    p.join("CURRENT").exists()
}

/// The rows of a query, as text (NULL as "NULL").
pub async fn query(c: &Client, sql: &str) -> Result<Vec<Vec<String>>, tokio_postgres::Error> {
    let mut out = Vec::new();
    for m in c.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(r) = m {
            out.push(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            );
        }
    }
    Ok(out)
}

/// `query`, retried on errors for up to 30 s.
pub async fn query_retry(c: &Client, sql: &str) -> Vec<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match query(c, sql).await {
            Ok(rows) => return rows,
            Err(e) if Instant::now() > deadline => panic!(
                "{sql}: {:?}",
                e.as_db_error()
                    .map(|d| (d.code().code().to_string(), d.message().to_string()))
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// One row of SHOW RANGES.
#[derive(Debug, Clone)]
pub struct RangeRow {
    pub range_id: u64,
    /// Node ids of voters (learners excluded).
    pub voters: Vec<u64>,
    pub learners: usize,
    pub leader: Option<u64>,
}

/// SHOW RANGES [FROM TABLE t], parsed.
pub async fn show_ranges(c: &Client, table: Option<&str>) -> Vec<RangeRow> {
    let sql = match table {
        Some(t) => format!("SHOW RANGES FROM TABLE {t}"),
        None => "SHOW RANGES".to_string(),
    };
    query_retry(c, &sql)
        .await
        .into_iter()
        .map(|r| {
            let reps: Vec<&str> = r[3]
                .trim_matches(|c| c == '{' || c == '}')
                .split(',')
                .collect();
            RangeRow {
                range_id: r[0].parse().unwrap(),
                voters: reps
                    .iter()
                    .filter(|x| !x.contains("learner"))
                    .filter_map(|x| x.parse().ok())
                    .collect(),
                learners: reps.iter().filter(|x| x.contains("learner")).count(),
                leader: r[4].parse().ok(),
            }
        })
        .collect()
}

/// Polls `f` every 500 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Starts `n` nodes with extra flags, initializes the cluster from node 1.
pub fn start_cluster(n: usize, extra: &[&str]) -> Cluster {
    let mut c = Cluster::new(n);
    for node in &mut c.nodes {
        node.extra = extra.iter().map(|s| s.to_string()).collect();
        node.start();
    }
    let (ok, out) = run_cli(&["init", "--host", &c.nodes[0].grpc]);
    if !ok {
        c.dump_logs();
    }
    assert!(ok, "concord init: {out}");
    c
}

/// Adds a node that joins the running cluster through node 1.
pub fn add_node(c: &mut Cluster, extra: &[&str]) -> usize {
    let (g, s, h) = (free_port(), free_port(), free_port());
    let id = c.nodes.len() + 1;
    let mut node = NodeProc {
        id,
        grpc: format!("127.0.0.1:{g}"),
        sql: format!("127.0.0.1:{s}"),
        http: format!("127.0.0.1:{h}"),
        store: c.dir.path().join(format!("n{id}")),
        log: c.dir.path().join(format!("n{id}.log")),
        join: format!("{},127.0.0.1:{g}", c.nodes[0].grpc),
        extra: extra.iter().map(|s| s.to_string()).collect(),
        child: None,
    };
    node.start();
    c.nodes.push(node);
    id - 1
}

pub fn split_values(from: i64, to: i64, step: i64) -> String {
    (from..to)
        .step_by(step as usize)
        .map(|k| format!("({k})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every request of a workload client has this long; a node that does not
/// answer in time is treated like a dead one.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// What one statement of a workload client came to.
pub enum Step {
    Ok,
    /// A retryable error (40001) or any other error on a live connection.
    Retry,
    /// The connection (or node) failed, or the request timed out.
    Broken,
}

/// Runs one statement with the request timeout.
pub async fn run_stmt(c: &Client, sql: &str) -> (Step, Vec<Vec<String>>) {
    match tokio::time::timeout(REQUEST_TIMEOUT, query(c, sql)).await {
        Err(_) => (Step::Broken, vec![]),
        Ok(Ok(rows)) => (Step::Ok, rows),
        Ok(Err(e)) => match e.code().map(|c| c.code().to_string()) {
            Some(code) if code == "40001" => (Step::Retry, vec![]),
            Some(code) if code == "40003" => (Step::Broken, vec![]),
            Some(_) if !c.is_closed() => (Step::Retry, vec![]),
            _ => (Step::Broken, vec![]),
        },
    }
}

/// Connects to the first node (from `seed` on, round robin) that accepts.
pub async fn connect_any(urls: &[String], seed: u64) -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = seed as usize;
    loop {
        let url = &urls[i % urls.len()];
        if let Ok(Ok((client, conn))) =
            tokio::time::timeout(Duration::from_secs(2), tokio_postgres::connect(url, NoTls)).await
        {
            tokio::spawn(conn);
            return client;
        }
        assert!(Instant::now() < deadline, "no node accepted a connection");
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The nemesis of the workload tests: every few seconds, `kill -9` one node
/// (round robin, node 1 last) and restart it 3 s later, for `total`.
/// Returns the number of kills.
pub async fn kill_and_restart_one_at_a_time(c: &mut Cluster, total: Duration) -> usize {
    let started = Instant::now();
    let mut victim = 1;
    let mut kills = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(4)).await;
        if started.elapsed() >= total {
            return kills;
        }
        c.nodes[victim].kill();
        kills += 1;
        tokio::time::sleep(Duration::from_secs(3)).await;
        c.nodes[victim].start();
        victim = (victim + 1) % c.nodes.len();
    }
}
