//! Multi-process cluster tests: the real `concord` binary, three nodes on
//! loopback ports, a PostgreSQL client, and `kill -9`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const BIN: &str = env!("CARGO_BIN_EXE_concord");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One node process.
struct NodeProc {
    id: usize,
    grpc: String,
    sql: String,
    http: String,
    store: PathBuf,
    log: PathBuf,
    join: String,
    child: Option<Child>,
}

impl NodeProc {
    fn start(&mut self) {
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
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn concord start");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9");
            c.wait().unwrap();
        }
    }

    fn sql_url(&self) -> String {
        format!("postgres://root@{}/defaultdb", self.sql)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Cluster {
    nodes: Vec<NodeProc>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
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
                child: None,
            })
            .collect();
        Cluster { nodes, _dir: dir }
    }

    fn dump_logs(&self) {
        for n in &self.nodes {
            let log = std::fs::read_to_string(&n.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("---- node {} log (last lines) ----", n.id);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

fn run_cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().expect("run concord");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn http_get(addr: &str, path: &str) -> Option<String> {
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

/// A gauge of range 1 from a node's /metrics.
fn metric(node: &NodeProc, name: &str, field: Option<&str>) -> Option<i64> {
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

fn leader_of(c: &Cluster, timeout: Duration) -> Option<usize> {
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

async fn connect(url: &str) -> Client {
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
async fn exec_retry(c: &Client, sql: &str, timeout: Duration) -> Result<u64, String> {
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

async fn count(c: &Client, sql: &str) -> Result<i64, tokio_postgres::Error> {
    let msgs = c.simple_query(sql).await?;
    for m in msgs {
        if let SimpleQueryMessage::Row(r) = m {
            return Ok(r.get(0).unwrap_or("0").parse().unwrap_or(-1));
        }
    }
    Ok(-1)
}

async fn count_retry(c: &Client, sql: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match count(c, sql).await {
            Ok(n) => return n,
            Err(e) if Instant::now() > deadline => panic!("{sql}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn insert_rows(from: usize, to: usize, tag: &str) -> String {
    let values: Vec<String> = (from..to).map(|i| format!("({i}, '{tag}{i}')")).collect();
    format!("INSERT INTO kv VALUES {}", values.join(", "))
}

fn wait_caught_up(c: &Cluster, node: usize, leader: usize) -> bool {
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

fn store_exists(p: &Path) -> bool {
    p.join("CURRENT").exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_cluster_survives_kill_and_restart_and_loses_nothing() {
    let mut c = Cluster::new(3);
    for n in &mut c.nodes {
        n.start();
    }
    // Nodes wait for init; init forms the cluster once, and only once.
    let (ok, out) = run_cli(&["init", "--host", &c.nodes[0].grpc]);
    if !ok {
        c.dump_logs();
    }
    assert!(ok, "concord init: {out}");
    let (ok, out) = run_cli(&["init", "--host", &c.nodes[0].grpc]);
    assert!(
        !ok && out.contains("already been initialized"),
        "second init refused: {out}"
    );
    assert!(store_exists(&c.nodes[0].store));

    // 1,000 rows through node 1, read back through nodes 2 and 3.
    let n1 = connect(&c.nodes[0].sql_url()).await;
    exec_retry(
        &n1,
        "CREATE TABLE kv (k INT PRIMARY KEY, v TEXT)",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let mut acknowledged = 0usize;
    for batch in 0..10 {
        let n = exec_retry(
            &n1,
            &insert_rows(batch * 100, batch * 100 + 100, "a"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert_eq!(n, 100);
        acknowledged += 100;
    }
    for node in [1, 2] {
        let client = connect(&c.nodes[node].sql_url()).await;
        assert_eq!(
            count_retry(&client, "SELECT count(*) FROM kv").await,
            1000,
            "node {} sees every row",
            node + 1
        );
        assert_eq!(count_retry(&client, "SELECT sum(k) FROM kv").await, 499_500);
    }

    // Malformed SQL and unknown tables: SQLSTATE codes, session still usable.
    let err = n1.simple_query("SELEKT 1").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42601");
    let err = n1.simple_query("SELECT * FROM missing").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42P01");
    assert_eq!(count_retry(&n1, "SELECT count(*) FROM kv").await, 1000);

    // kill -9 the Raft leader; the others keep serving reads and writes.
    let leader = leader_of(&c, Duration::from_secs(10)).expect("a leader");
    c.nodes[leader].kill();
    let survivor = (0..3).find(|i| *i != leader).unwrap();
    let s = connect(&c.nodes[survivor].sql_url()).await;
    let started = Instant::now();
    exec_retry(&s, &insert_rows(1000, 1100, "b"), Duration::from_secs(30))
        .await
        .expect("writes resume");
    acknowledged += 100;
    eprintln!(
        "writes resumed {:?} after the leader was killed",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the survivors serve within a few seconds"
    );
    for i in 1100..1120 {
        exec_retry(
            &s,
            &format!("INSERT INTO kv VALUES ({i}, 'c{i}')"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        acknowledged += 1;
    }
    assert_eq!(
        count_retry(&s, "SELECT count(*) FROM kv").await,
        acknowledged as i64
    );

    // The killed node restarts on its store and catches up.
    c.nodes[leader].start();
    let new_leader = leader_of(&c, Duration::from_secs(10)).expect("a leader");
    assert!(
        wait_caught_up(&c, leader, new_leader),
        "the restarted node applied everything"
    );
    let r = connect(&c.nodes[leader].sql_url()).await;
    assert_eq!(
        count_retry(&r, "SELECT count(*) FROM kv").await,
        acknowledged as i64
    );
    assert_eq!(
        count_retry(&r, "SELECT count(*) FROM kv WHERE v LIKE 'b%'").await,
        100
    );

    // Two of three down: a write fails in bounded time, with a code.
    let keep = leader;
    let down: Vec<usize> = (0..3).filter(|i| *i != keep).collect();
    for &d in &down {
        c.nodes[d].kill();
    }
    let started = Instant::now();
    let result = r.simple_query(&insert_rows(2000, 2050, "lost")).await;
    let elapsed = started.elapsed();
    let err = result.expect_err("no quorum: the write must fail");
    let code = err.code().map(|c| c.code().to_string()).unwrap_or_default();
    assert!(
        ["08006", "40003", "40001"].contains(&code.as_str()),
        "error with a SQLSTATE: {err} ({code})"
    );
    assert!(
        elapsed < Duration::from_secs(30),
        "the failed write returned after {elapsed:?}"
    );

    // Back up: nothing half-applied, nothing acknowledged lost.
    for &d in &down {
        c.nodes[d].start();
    }
    let lost = count_retry(&r, "SELECT count(*) FROM kv WHERE k >= 2000").await;
    assert!(
        lost == 0 || lost == 50,
        "the failed multi-row insert is all or nothing, found {lost} rows"
    );
    assert_eq!(
        count_retry(&r, "SELECT count(*) FROM kv WHERE k < 2000").await,
        acknowledged as i64,
        "every acknowledged write survived"
    );
}

#[test]
fn demo_starts_a_cluster_and_runs_statements() {
    let (ok, out) = run_cli(&[
        "demo",
        "--nodes",
        "3",
        "-e",
        "CREATE TABLE t (id INT PRIMARY KEY, name TEXT)",
        "-e",
        "INSERT INTO t VALUES (1, 'one'), (2, 'two')",
        "-e",
        "SELECT name FROM t ORDER BY id",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains(" one\n two\n(2 rows)"), "{out}");
}

#[test]
fn nodes_wait_for_init_and_say_so() {
    let mut c = Cluster::new(1);
    c.nodes[0].start();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = String::new();
    while Instant::now() < deadline {
        let (_, o) = run_cli(&["node", "status", "--host", &c.nodes[0].grpc]);
        out = o;
        if out.contains("not initialized") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(out.contains("not initialized"), "{out}");
    let ready = http_get(&c.nodes[0].http, "/ready").unwrap_or_default();
    assert!(ready.contains("503"), "{ready}");
    let health = http_get(&c.nodes[0].http, "/health").unwrap_or_default();
    assert!(health.contains("200"), "{health}");
    // A single-node cluster initializes and serves.
    let (ok, out) = run_cli(&["init", "--host", &c.nodes[0].grpc]);
    assert!(ok, "{out}");
    let (ok, out) = run_cli(&[
        "sql",
        "--url",
        &c.nodes[0].sql_url(),
        "--wait",
        "20s",
        "-e",
        "SELECT 1 + 1",
    ]);
    assert!(ok && out.contains(" 2\n(1 row)"), "{out}");
}
