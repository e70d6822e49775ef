//! psycopg 3 (Python) against a 3-node cluster: the program in
//! `tests/python/test_psycopg.py` uses the driver as an application would —
//! connection info, parameterised statements (psycopg always speaks the
//! extended protocol), server-side prepared statements, binary results of
//! every supported type, executemany, COPY in text and CSV, transactions
//! and their failed state, SQLSTATEs, and concurrent transfers on every
//! node retried on 40001. Each check prints what it proved.
//!
//! psycopg comes from Debian's `python3-psycopg` (scripts/setup.sh installs
//! it). Without a Python that can import it the test says so and passes.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const PROGRAM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/test_psycopg.py");

/// The whole program runs in well under a minute; this is its hard limit.
const TIMEOUT: Duration = Duration::from_secs(120);

/// The first Python on hand that imports psycopg 3.1 or later (the program
/// uses `executemany(..., returning=True)`, new in 3.1): the one on PATH
/// (which may be a pyenv build without Debian's packages), then the system
/// one.
fn python_with_psycopg() -> Option<&'static str> {
    const CHECK: &str = "import sys, psycopg; \
        sys.exit(tuple(map(int, psycopg.__version__.split('.')[:2])) < (3, 1))";
    ["python3", "/usr/bin/python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", CHECK])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_prepares_binds_copies_and_retries_serialization_failures() {
    let Some(python) = python_with_psycopg() else {
        println!("skipped: psycopg not installed (scripts/setup.sh installs it)");
        return;
    };
    let c = start_cluster(3, &[]);
    let urls: Vec<String> = c.nodes.iter().map(|n| n.sql_url()).collect();

    // Every node serves SQL and sees the catalog before the program starts.
    let a = connect(&urls[0]).await;
    exec_retry(
        &a,
        "CREATE TABLE psy_ready (id INT PRIMARY KEY)",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    for url in &urls {
        let n = connect(url).await;
        assert_eq!(count_retry(&n, "SELECT count(*) FROM psy_ready").await, 0);
    }

    // Output goes to a file, read once the program ends: no pipe to fill.
    let out_path = c.dir.path().join("psycopg.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let started = Instant::now();
    let mut child = Command::new(python)
        .arg(PROGRAM)
        .args(&urls)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python} {PROGRAM}: {e}"));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > TIMEOUT {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    println!("{output}");
    println!(
        "{python} {PROGRAM}: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    match status {
        Some(s) if s.success() => {}
        Some(s) => {
            c.dump_logs();
            panic!("the psycopg program failed ({s}):\n{output}");
        }
        None => {
            c.dump_logs();
            panic!("the psycopg program did not finish in {TIMEOUT:?}:\n{output}");
        }
    }
}
