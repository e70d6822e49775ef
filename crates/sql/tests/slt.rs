//! SQL semantics as sqllogictest files (`tests/slt/*.slt`), run against a
//! single-node cluster in this process: the real store, Raft group (of one),
//! KV client, planner and executor, on an in-memory engine.
//!
//! Errors are reported as `<message> (SQLSTATE <code>)`, so a file can check
//! the code with `statement error SQLSTATE 23505`.

mod common;

use std::time::Duration;

use common::single_node_db;
use concord_sql::{Session, StatementResult};
use sqllogictest::{DBOutput, DefaultColumnType};

struct Concord {
    session: Session,
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
impl sqllogictest::AsyncDB for Concord {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let mut last = DBOutput::StatementComplete(0);
        for r in self.session.execute(sql).await {
            match r {
                Ok(StatementResult::Query { columns, rows }) => {
                    let types = columns
                        .iter()
                        .map(|c| {
                            if c.ty.is_integer() {
                                DefaultColumnType::Integer
                            } else if c.ty.is_float() {
                                DefaultColumnType::FloatingPoint
                            } else if c.ty.is_string() {
                                DefaultColumnType::Text
                            } else {
                                DefaultColumnType::Any
                            }
                        })
                        .collect();
                    let rows = rows
                        .into_iter()
                        .map(|r| {
                            r.iter()
                                .zip(&columns)
                                .map(|(v, c)| v.to_text_as(&c.ty).unwrap_or_else(|| "NULL".into()))
                                .collect()
                        })
                        .collect();
                    last = DBOutput::Rows { types, rows };
                }
                Ok(StatementResult::Command { tag }) => {
                    let n = tag
                        .split_whitespace()
                        .last()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    last = DBOutput::StatementComplete(n);
                }
                Ok(other) => {
                    return Err(SqlError(format!("COPY is not for this runner: {other:?}")))
                }
                Err(e) => return Err(SqlError(format!("{e} (SQLSTATE {})", e.sqlstate()))),
            }
        }
        Ok(last)
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "concord"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await
    }
}

async fn run_file(name: &str) {
    let db = single_node_db().await;
    let mut runner = sqllogictest::Runner::new(move || {
        let db = db.clone();
        async move {
            Ok(Concord {
                session: Session::new(db),
            })
        }
    });
    let path = format!("{}/tests/slt/{name}.slt", env!("CARGO_MANIFEST_DIR"));
    runner
        .run_file_async(&path)
        .await
        .unwrap_or_else(|e| panic!("{}", e.display(true)));
}

macro_rules! slt {
    ($($name:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            run_file(stringify!($name)).await;
        }
    )*};
}

slt!(
    ddl,
    dml,
    select,
    types,
    errors,
    transactions,
    ranges,
    history,
    joins,
    subqueries,
    setops,
    rowid,
    indexes,
    cte,
    constraints,
    session,
    datetime,
    alter,
    numeric,
    bytea_uuid,
    upsert,
    views
);
