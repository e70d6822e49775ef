//! End-to-end runs against a throwaway PostgreSQL 15, when one is
//! installed (Debian's postgresql-15 and root, to run it as `postgres`);
//! otherwise each test prints that it skipped.
//!
//! They prove that the workloads load, run and check against a stock
//! server, that the checkers catch corruption (they are not always-ok), that
//! a dead host in --hosts does not stop a run, and that an unexpected
//! server error stops a run with the statement and SQLSTATE.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::Parser;
use concord_loadgen::{tpcc, ConnArgs, Error, WorkloadCommand};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL server in a temporary directory, stopped on drop (also
/// when the test panics).
struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
}

fn run_as_postgres(args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
}

impl Postgres {
    /// Starts one, or returns None (with a message) when this machine
    /// cannot.
    fn start(test: &str) -> Option<Postgres> {
        let initdb = Path::new(PG_BIN).join("initdb");
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let has_user = Command::new("id")
            .arg("postgres")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !initdb.exists() || !is_root || !has_user {
            eprintln!(
                "{test}: skipped (needs {} , root and a postgres user)",
                initdb.display()
            );
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("loadgen-pg-")
            .tempdir()
            .expect("temp dir");
        // PostgreSQL runs as postgres: it must reach and own its directory.
        Command::new("chmod")
            .arg("777")
            .arg(dir.path())
            .status()
            .expect("chmod");
        let data = dir.path().join("data");
        let port = free_port();
        let out = run_as_postgres(&[
            initdb.to_str().expect("utf-8 path"),
            "-D",
            data.to_str().expect("utf-8 path"),
            "-A",
            "trust",
            "--no-sync",
        ])
        .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = Postgres { dir, port };
        let opts = format!(
            "-p {port} -k {} -c fsync=off -c max_connections=100",
            pg.dir.path().display()
        );
        let log = pg.dir.path().join("log");
        let out = run_as_postgres(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            data.to_str().expect("utf-8 path"),
            "-o",
            &opts,
            "-l",
            log.to_str().expect("utf-8 path"),
            "-w",
            "start",
        ])
        .expect("pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Some(pg)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    async fn sql(&self, sql: &str) -> u64 {
        let (client, conn) = tokio_postgres::connect(
            &format!("{}?connect_timeout=5", self.url()),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect");
        tokio::spawn(conn);
        client.execute(sql, &[]).await.expect(sql)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = run_as_postgres(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            data.to_str().unwrap_or_default(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: WorkloadCommand,
}

/// Runs `workload <line>` in-process.
async fn workload(line: &str) -> Result<ExitCode, Error> {
    let cli = Cli::try_parse_from(std::iter::once("workload").chain(line.split_whitespace()))
        .unwrap_or_else(|e| panic!("{line}: {e}"));
    concord_loadgen::run(cli.cmd).await
}

fn ok(code: Result<ExitCode, Error>, what: &str) {
    match code {
        Ok(c) => assert_eq!(c, ExitCode::SUCCESS, "{what}"),
        Err(e) => panic!("{what}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpcc_loads_runs_clean_and_the_check_catches_corruption() {
    let Some(pg) = Postgres::start("tpcc") else {
        return;
    };
    let url = pg.url();
    ok(
        workload(&format!(
            "init tpcc --warehouses 1 --concurrency 4 --url {url}"
        ))
        .await,
        "init tpcc",
    );
    // A second init without --drop refuses to touch the tables.
    match workload(&format!("init tpcc --warehouses 1 --url {url}")).await {
        Err(Error::TablesExist(t)) => assert!(t.contains(&"warehouse".to_string())),
        other => panic!("init over existing tables: {other:?}"),
    }
    let report = tpcc::check(&ConnArgs::url(&url)).await.expect("check");
    assert!(report.is_ok(), "fresh load:\n{report}");

    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("run.json");
    let plot = dir.path().join("run.svg");
    let hist = dir.path().join("run.hlog");
    let args = tpcc::RunArgs {
        warehouses: None,
        wait: false,
        concurrency: Some(4),
        time: concord_loadgen::RunTimeArgs {
            duration: std::time::Duration::from_secs(10),
            ramp: std::time::Duration::from_secs(1),
            json: Some(json.clone()),
            histograms: Some(hist.clone()),
            plot: Some(plot.clone()),
        },
        conn: ConnArgs::url(&url),
    };
    let figures = tpcc::run(&args).await.expect("run tpcc");
    assert!(figures.tpmc > 0.0, "no new-order completed: {figures:?}");
    // The files are there and say what they should.
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("valid json");
    assert_eq!(j["workload"], "tpcc");
    assert!(j["result"]["tpmC"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(j["series"].as_array().map_or(0, |s| s.len()) >= 10);
    assert_eq!(j["summary"]["kinds"].as_array().map_or(0, |k| k.len()), 5);
    let log = std::fs::read_to_string(&hist).expect("hlog");
    for tag in tpcc_names() {
        assert!(
            log.contains(&format!("Tag={tag},")),
            "no {tag} interval in the log"
        );
    }
    assert!(std::fs::read_to_string(&plot)
        .expect("svg")
        .contains("<svg"));

    let report = tpcc::check(&ConnArgs::url(&url)).await.expect("check");
    assert!(report.is_ok(), "after the run:\n{report}");
    ok(
        workload(&format!("check tpcc --url {url}")).await,
        "check tpcc",
    );

    // Corrupt one district's YTD and one order's line count.
    pg.sql("UPDATE district SET d_ytd = d_ytd + 1 WHERE d_w_id = 1 AND d_id = 1")
        .await;
    let n = pg
        .sql("UPDATE orders SET o_ol_cnt = o_ol_cnt + 1 WHERE o_w_id = 1 AND o_d_id = 2 AND o_id = 5")
        .await;
    assert_eq!(n, 1);
    let report = tpcc::check(&ConnArgs::url(&url)).await.expect("check");
    assert!(report.violated("3.3.2.1"), "{report}");
    assert!(report.violated("3.3.2.4"), "{report}");
    assert!(
        !report.violated("3.3.2.2") && !report.violated("3.3.2.3"),
        "{report}"
    );
    let v4 = &report.conditions[3].violations;
    assert_eq!((v4.len(), v4[0].warehouse, v4[0].district), (1, 1, Some(2)));
    let code = workload(&format!("check tpcc --url {url}"))
        .await
        .expect("check runs");
    assert_eq!(code, ExitCode::FAILURE);
}

fn tpcc_names() -> [&'static str; 5] {
    concord_loadgen::random::TxnKind::NAMES
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_conserves_money_and_rides_over_a_dead_host_in_the_list() {
    let Some(pg) = Postgres::start("bank") else {
        return;
    };
    let url = pg.url();
    ok(
        workload(&format!("init bank --accounts 200 --url {url}")).await,
        "init bank",
    );
    // Port 1 refuses: it leaves the rotation and the run goes on.
    let hosts = format!("127.0.0.1:1,127.0.0.1:{}", pg.port);
    ok(
        workload(&format!(
            "run bank --duration 4s --concurrency 4 --audit-percent 10 --url {url} --hosts {hosts}"
        ))
        .await,
        "run bank",
    );
    ok(
        workload(&format!("check bank --url {url}")).await,
        "check bank",
    );
    ok(
        workload(&format!("check bank --accounts 200 --url {url}")).await,
        "check bank with count",
    );
    // Money created from nothing is caught.
    pg.sql("UPDATE accounts SET balance = balance + 1 WHERE id = 7")
        .await;
    let code = workload(&format!("check bank --url {url}"))
        .await
        .expect("check runs");
    assert_eq!(code, ExitCode::FAILURE);
    // ... and a live audit stops the run with exit 1.
    match workload(&format!(
        "run bank --duration 10s --audit-percent 100 --url {url}"
    ))
    .await
    {
        Err(Error::Inconsistent(msg)) => assert!(msg.contains("VIOLATED"), "{msg}"),
        other => panic!("run over an inconsistent bank: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_reads_and_upserts_and_a_server_error_stops_the_run() {
    let Some(pg) = Postgres::start("kv") else {
        return;
    };
    let url = pg.url();
    ok(
        workload(&format!("init kv --keys 2000 --value-bytes 16 --url {url}")).await,
        "init kv",
    );
    ok(
        workload(&format!(
            "run kv --duration 3s --batch 4 --read-percent 50 --distribution zipfian --url {url}"
        ))
        .await,
        "run kv zipfian",
    );
    // Insert mode on an empty table.
    ok(
        workload(&format!(
            "init kv --keys 0 --drop --load-method insert --url {url}"
        ))
        .await,
        "init kv empty",
    );
    ok(
        workload(&format!(
            "run kv --keys 0 --duration 2s --batch 2 --url {url}"
        ))
        .await,
        "run kv inserting",
    );
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let row = client
        .query_one("SELECT count(*) FROM kv", &[])
        .await
        .expect("count");
    assert!(row.get::<_, i64>(0) > 0, "insert mode wrote nothing");

    // A server that refuses for good (no such database) fails at once,
    // not after the 30 s a dead host gets.
    let started = std::time::Instant::now();
    let bad = format!("postgres://postgres@127.0.0.1:{}/nosuchdb", pg.port);
    match workload(&format!("run kv --duration 5s --url {bad}")).await {
        Err(e) => assert!(e.to_string().contains("SQLSTATE 3D000"), "{e}"),
        Ok(code) => panic!("ran against a missing database: {code:?}"),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    // A server error that is neither a conflict nor a lost connection
    // stops the run with the statement and the SQLSTATE.
    pg.sql("ALTER TABLE kv ADD CONSTRAINT small CHECK (k < 0) NOT VALID")
        .await;
    match workload(&format!(
        "run kv --keys 0 --read-percent 0 --duration 10s --url {url}"
    ))
    .await
    {
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains("SQLSTATE 23514"), "{text}");
            assert!(text.contains("statement: INSERT INTO kv"), "{text}");
        }
        Ok(code) => panic!("the run went on: {code:?}"),
    }
}
