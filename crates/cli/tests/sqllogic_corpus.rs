//! SQLite's sqllogictest corpus, select1–select5 (10,706 statements and
//! queries), through the PostgreSQL protocol on a 3-node cluster, with the
//! `sqllogictest` crate's runner.
//!
//! The files live beside the project (`../shared/sqllogictest/`, or
//! `CONCORD_SLT_CORPUS`) and are read from there, never copied in; without
//! them the test says SKIPPED and passes.
//!
//! Unlike the runner's own `run_file`, which stops a file at its first
//! failure, every record is run and counted: each file gets a fresh
//! cluster, its records go one by one to the three nodes in turn (so every
//! node answers for what another one wrote), and the test fails if
//! a file passes fewer records than `sqllogic_corpus.baseline` records
//! for it. The baseline only rises: when a change makes more records pass,
//! the test prints the new counts to write there. The target is every
//! record of every file.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use sqllogictest::{DBOutput, DefaultColumnType, Record};
use tokio_postgres::{Client, SimpleQueryMessage};

const FILES: [&str; 5] = ["select1", "select2", "select3", "select4", "select5"];

/// Records (statements and queries) per file, as SQLite's corpus has them.
const RECORDS: [usize; 5] = [1031, 1031, 3351, 3857, 1436];

/// Each record has this long; one that takes longer counts as failed.
const RECORD_TIMEOUT: Duration = Duration::from_secs(30);

fn corpus_dir() -> PathBuf {
    match std::env::var_os("CONCORD_SLT_CORPUS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/sqllogictest"),
    }
}

/// The minimum passing records per file, from `sqllogic_corpus.baseline`
/// (lines `select1 1031`; `#` starts a comment).
fn baseline() -> BTreeMap<String, usize> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sqllogic_corpus.baseline"
    );
    let text = std::fs::read_to_string(path).expect("the baseline file is part of the repository");
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, n) = l
                .split_once(' ')
                .expect("baseline lines are `<file> <count>`");
            (
                name.to_string(),
                n.trim().parse().expect("baseline counts are integers"),
            )
        })
        .collect()
}

/// A database connection for the runner: one client per node, used in turn.
struct Nodes {
    clients: Vec<Client>,
    next: usize,
}

#[derive(Debug)]
struct SqlError(String);
impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for SqlError {}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Nodes {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let client = &self.clients[self.next % self.clients.len()];
        self.next += 1;
        let messages = match tokio::time::timeout(RECORD_TIMEOUT, client.simple_query(sql)).await {
            Err(_) => return Err(SqlError(format!("no answer in {RECORD_TIMEOUT:?}"))),
            Ok(Err(e)) => {
                return Err(SqlError(match e.as_db_error() {
                    Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
                    None => e.to_string(),
                }));
            }
            Ok(Ok(m)) => m,
        };
        let mut columns = None;
        let mut rows = Vec::new();
        let mut count = 0;
        for m in messages {
            match m {
                SimpleQueryMessage::RowDescription(cols) => columns = Some(cols.len()),
                SimpleQueryMessage::Row(row) => {
                    columns.get_or_insert(row.len());
                    rows.push(
                        (0..row.len())
                            .map(|i| match row.get(i) {
                                None => "NULL".to_string(),
                                Some("") => "(empty)".to_string(),
                                Some(v) => v.to_string(),
                            })
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(n) => count = n,
                _ => {}
            }
        }
        Ok(match columns {
            Some(n) => DBOutput::Rows {
                types: vec![DefaultColumnType::Any; n],
                rows,
            },
            None => DBOutput::StatementComplete(count),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "postgresql"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await
    }
}

/// What one file came to.
struct FileResult {
    records: usize,
    passed: usize,
    /// The first few failures, for the report.
    failures: Vec<String>,
}

async fn run_file(name: &str) -> FileResult {
    let path = corpus_dir().join(format!("{name}.test"));
    let records = sqllogictest::parse_file::<DefaultColumnType>(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let c = start_cluster(3, &[]);
    let mut clients = Vec::new();
    for n in &c.nodes {
        clients.push(connect(&n.sql_url()).await);
    }
    let mut db = Some(Nodes { clients, next: 0 });
    let mut runner = sqllogictest::Runner::new(move || {
        let db = db.take();
        async move { db.ok_or_else(|| SqlError("the runner opens one connection".into())) }
    });
    let mut result = FileResult {
        records: 0,
        passed: 0,
        failures: Vec::new(),
    };
    for record in records {
        let counted = matches!(record, Record::Statement { .. } | Record::Query { .. });
        let outcome = runner.run_async(record).await;
        if !counted {
            outcome.unwrap_or_else(|e| panic!("{name}: a control record failed: {e}"));
            continue;
        }
        result.records += 1;
        match outcome {
            Ok(_) => result.passed += 1,
            Err(e) if result.failures.len() < 5 => result.failures.push(e.to_string()),
            Err(_) => {}
        }
    }
    drop(c);
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_select_corpus_through_the_postgres_protocol() {
    if !corpus_dir().join("select1.test").exists() {
        eprintln!(
            "sqllogic corpus: SKIPPED, no select1.test in {}",
            corpus_dir().display()
        );
        return;
    }
    let baseline = baseline();
    let mut report = Vec::new();
    let mut regressions = Vec::new();
    let mut raised = Vec::new();
    for (name, expected_records) in FILES.iter().zip(RECORDS) {
        let r = run_file(name).await;
        assert_eq!(
            r.records, expected_records,
            "{name}: the corpus file holds {expected_records} statements and queries"
        );
        let floor = baseline.get(*name).copied().unwrap_or(0);
        report.push(format!(
            "{name}: {} of {} records pass (baseline {floor})",
            r.passed, r.records
        ));
        for f in &r.failures {
            report.push(format!("    {}", f.lines().next().unwrap_or("")));
        }
        if r.passed < floor {
            regressions.push(format!("{name}: {} < {floor}", r.passed));
        }
        if r.passed > floor {
            raised.push(format!("{name} {}", r.passed));
        }
    }
    eprintln!("{}", report.join("\n"));
    if !raised.is_empty() {
        eprintln!(
            "sqllogic corpus: more records pass than the baseline says; raise it:\n{}",
            raised.join("\n")
        );
    }
    assert!(
        regressions.is_empty(),
        "fewer records pass than before: {}",
        regressions.join(", ")
    );
}
