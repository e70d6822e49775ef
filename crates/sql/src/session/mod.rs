//! Sessions: one per client connection, holding its transaction state and
//! settings, and running statements one at a time.
//!
//! ```text
//!            BEGIN                 error
//!   Idle ───────────► Open(txn) ───────────► Aborted
//!    ▲  ◄───────────    │  ◄─── COMMIT/ROLLBACK ──┘
//!    │  COMMIT/ROLLBACK │
//!    └── any other statement runs in its own implicit transaction,
//!        retried automatically on serialization failures (40001)
//! ```
//!
//! In `Aborted`, every statement but COMMIT/ROLLBACK fails with 25P02, as in
//! PostgreSQL. An explicit transaction that fails with 40001 must be retried
//! by the client; an implicit one is retried here, up to a bound, with
//! jittered backoff.

mod copy;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use concord_kv::{Db, Txn};
use sqlparser::ast::{ObjectName, Query, Statement};

use crate::catalog;
use crate::error::{Error, Result};
use crate::exec::{self, Row};
use crate::parser::Stmt;
use crate::plan::{OutputColumn, Plan};
use crate::planner;
use crate::types::{DataType, Value};

/// How many times an implicit transaction is retried on 40001.
const MAX_AUTO_RETRIES: u32 = 20;

/// A prepared statement: what Parse made of a query string.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// None for an empty query string.
    pub stmt: Option<Stmt>,
    pub param_types: Vec<DataType>,
    /// The result columns; None when the statement returns no rows.
    pub columns: Option<Vec<OutputColumn>>,
}

/// The outcome of one statement.
#[derive(Debug, Clone)]
pub enum StatementResult {
    /// Rows, with their columns.
    Query {
        columns: Vec<OutputColumn>,
        rows: Vec<Row>,
    },
    /// A command and its tag (`INSERT 0 3`, `CREATE TABLE`, …).
    Command { tag: String },
    /// `COPY … FROM STDIN` waits for this many columns of data
    /// ([`Session::copy_data`], [`Session::copy_done`]).
    CopyIn { columns: usize },
    /// `COPY … TO STDOUT`: one CopyData payload per row.
    CopyOut { columns: usize, data: Vec<Vec<u8>> },
}

/// Where the session is with respect to transactions (for ReadyForQuery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnStatus {
    Idle,
    InTransaction,
    Failed,
}

enum TxnState {
    Idle,
    Open(Box<Txn>),
    Aborted,
}

/// A client session.
pub struct Session {
    db: Db,
    state: TxnState,
    vars: BTreeMap<String, String>,
    /// Reported settings changed by SET, not yet sent to the client.
    reports: Vec<(String, String)>,
    /// A `COPY FROM STDIN` waiting for its data.
    copy: Option<copy::CopyIn>,
    /// Names of the protocol's prepared statements (the wire layer keeps
    /// the statements; DEALLOCATE names them in SQL).
    prepared_names: BTreeSet<String>,
    /// Statements DEALLOCATE removed, for the wire layer to drop.
    deallocated: Vec<String>,
    /// Resolves when the client asks to cancel what runs now (a
    /// CancelRequest); the wire layer arms it for each query.
    cancel: Option<CancelSignal>,
}

/// A future that resolves when the running statement is to be canceled.
pub type CancelSignal = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>;

/// Settings a client is told about (PostgreSQL's GUC_REPORT set).
const REPORTED: [&str; 13] = [
    "application_name",
    "client_encoding",
    "DateStyle",
    "default_transaction_read_only",
    "in_hot_standby",
    "integer_datetimes",
    "IntervalStyle",
    "is_superuser",
    "server_encoding",
    "server_version",
    "session_authorization",
    "standard_conforming_strings",
    "TimeZone",
];

/// `statement_timeout` as a duration: milliseconds, or a number with a
/// unit (`ms`, `s`, `min`, `h`); 0 is none.
fn parse_timeout(v: &str) -> Option<Duration> {
    let v = v.trim().trim_matches('\'').to_lowercase();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().ok()?;
    let ms = match unit.trim() {
        "" | "ms" => n,
        "s" => n.checked_mul(1000)?,
        "min" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// Session variables and their defaults: what drivers ask about.
pub fn default_vars() -> BTreeMap<String, String> {
    [
        ("application_name", ""),
        ("client_encoding", "UTF8"),
        ("datestyle", "ISO, MDY"),
        ("default_transaction_isolation", "serializable"),
        ("default_transaction_read_only", "off"),
        ("in_hot_standby", "off"),
        ("is_superuser", "on"),
        ("session_authorization", "root"),
        ("extra_float_digits", "1"),
        ("integer_datetimes", "on"),
        ("intervalstyle", "postgres"),
        ("search_path", "public"),
        ("server_encoding", "UTF8"),
        ("server_version", crate::PG_SERVER_VERSION),
        ("standard_conforming_strings", "on"),
        ("statement_timeout", "0"),
        ("timezone", "UTC"),
        ("transaction_isolation", "serializable"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Session {
    /// A new idle session.
    pub fn new(db: Db) -> Self {
        Session {
            db,
            state: TxnState::Idle,
            vars: default_vars(),
            reports: Vec::new(),
            copy: None,
            prepared_names: BTreeSet::new(),
            deallocated: Vec::new(),
            cancel: None,
        }
    }

    /// Arms (or, with `None`, disarms) cancellation: the statement running
    /// when `signal` resolves stops with 57014, as if its statement_timeout
    /// had passed. A COMMIT is never cut short (its outcome would be
    /// unknown).
    pub fn set_cancel(&mut self, signal: Option<CancelSignal>) {
        self.cancel = signal;
    }

    /// The transaction status.
    pub fn txn_status(&self) -> TxnStatus {
        match self.state {
            TxnState::Idle => TxnStatus::Idle,
            TxnState::Open(_) => TxnStatus::InTransaction,
            TxnState::Aborted => TxnStatus::Failed,
        }
    }

    /// A session variable.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(&name.to_lowercase()).map(String::as_str)
    }

    /// Parses and runs a query string of one or more statements. Stops at
    /// the first error, as PostgreSQL's simple query protocol does.
    pub async fn execute(&mut self, sql: &str) -> Vec<Result<StatementResult>> {
        let stmts = match crate::parse(sql) {
            Ok(s) => s,
            Err(e) => {
                // A parse error inside a transaction aborts it, as in PostgreSQL.
                if matches!(self.state, TxnState::Open(_)) {
                    self.state = TxnState::Aborted;
                }
                return vec![Err(e)];
            }
        };
        let mut out = Vec::with_capacity(stmts.len());
        for stmt in &stmts {
            let r = self.execute_stmt(stmt).await;
            let failed = r.is_err();
            out.push(r);
            if failed {
                break;
            }
        }
        out
    }

    /// Runs one parsed statement (of Concord's or sqlparser's).
    pub async fn execute_stmt(&mut self, stmt: &Stmt) -> Result<StatementResult> {
        // A COMMIT is not timed: cutting it short would leave its outcome
        // unknown.
        let is_commit = matches!(stmt, Stmt::Sql(s) if matches!(**s, Statement::Commit { .. }));
        let limit = self
            .vars
            .get("statement_timeout")
            .and_then(|v| parse_timeout(v))
            .filter(|d| !d.is_zero() && !is_commit);
        let mut cancel = if is_commit { None } else { self.cancel.take() };
        // A statement cut short leaves an open transaction block aborted
        // (see `execute_statement`), as PostgreSQL does.
        let timed = async {
            match limit {
                None => self.execute_stmt_inner(stmt).await,
                Some(d) => match tokio::time::timeout(d, self.execute_stmt_inner(stmt)).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::QueryCanceled(
                        "canceling statement due to statement timeout".into(),
                    )),
                },
            }
        };
        let r = match cancel.as_mut() {
            None => timed.await,
            Some(signal) => {
                let r = tokio::select! {
                    r = timed => Some(r),
                    _ = signal => None,
                };
                match r {
                    Some(r) => r,
                    None => {
                        // Fired: this query is canceled; the signal is spent.
                        cancel = None;
                        Err(Error::QueryCanceled(
                            "canceling statement due to user request".into(),
                        ))
                    }
                }
            }
        };
        if cancel.is_some() {
            self.cancel = cancel;
        }
        r
    }

    async fn execute_stmt_inner(&mut self, stmt: &Stmt) -> Result<StatementResult> {
        let r = match stmt {
            Stmt::Sql(s) => self.execute_statement(s).await,
            Stmt::SplitAt { table, rows } => {
                self.admin("ALTER TABLE ... SPLIT AT", |s| {
                    Box::pin(s.split_at(table, rows))
                })
                .await
            }
            Stmt::ShowRanges { table } => {
                self.admin("SHOW RANGES", |s| Box::pin(s.show_ranges(table.as_ref())))
                    .await
            }
            Stmt::AsOf { stmt, at } => {
                self.admin("AS OF SYSTEM TIME", |s| Box::pin(s.as_of(stmt, at)))
                    .await
            }
            Stmt::Vacuum { tables } => self.admin("VACUUM", |s| Box::pin(s.vacuum(tables))).await,
            Stmt::Copy(c) => self.copy(c).await,
        };
        match r {
            Err(Error::RetryOnKey { reason, key, txn }) => {
                Err(self.describe_conflict(reason, &key, txn).await)
            }
            other => other,
        }
    }

    /// Prepares a statement (the extended protocol's Parse): parses it,
    /// plans it once to learn its parameter types (`hints` are the ones the
    /// client gave, Unknown elsewhere) and its result columns. Errors a
    /// plan finds (an unknown table, …) come out here, as in PostgreSQL.
    pub async fn prepare(&mut self, sql: &str, hints: &[DataType]) -> Result<Prepared> {
        let r = self.prepare_inner(sql, hints).await;
        // Any error inside a block aborts it, as in PostgreSQL.
        if r.is_err() {
            self.abort_block();
        }
        r
    }

    /// Aborts the open transaction block, if there is one (after an error
    /// inside it, or a statement that may not run in one).
    fn abort_block(&mut self) {
        if matches!(self.state, TxnState::Open(_)) {
            if let TxnState::Open(mut txn) = std::mem::replace(&mut self.state, TxnState::Aborted) {
                txn.rollback();
            }
        }
    }

    async fn prepare_inner(&mut self, sql: &str, hints: &[DataType]) -> Result<Prepared> {
        let mut stmts = crate::parse(sql)?;
        if stmts.len() > 1 {
            return Err(Error::Syntax(
                "cannot insert multiple commands into a prepared statement".into(),
            ));
        }
        let Some(stmt) = stmts.pop() else {
            return Ok(Prepared {
                stmt: None,
                param_types: vec![],
                columns: None,
            });
        };
        let Stmt::Sql(sql_stmt) = &stmt else {
            // Concord's own statements take no parameters; their results
            // are described when they run.
            return Ok(Prepared {
                stmt: Some(stmt),
                param_types: vec![],
                columns: None,
            });
        };
        if let Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Set(_)
        | Statement::Deallocate { .. } = sql_stmt.as_ref()
        {
            // Nothing to describe, and they must prepare even in an aborted
            // block (ROLLBACK is how a client leaves it).
            return Ok(Prepared {
                stmt: Some(stmt),
                param_types: vec![],
                columns: None,
            });
        }
        let count = crate::prepared::parameter_count(sql_stmt).max(hints.len());
        let mut types = hints.to_vec();
        types.resize(count, DataType::Unknown);
        let mut own = None;
        let txn = match &mut self.state {
            TxnState::Open(t) => t,
            TxnState::Aborted => return Err(Error::InFailedTransaction),
            TxnState::Idle => own.insert(self.db.begin()),
        };
        // SELECT … FOR UPDATE describes as the SELECT it runs (the locks
        // are taken on what it read; see `run_unchecked`).
        let sql_stmt = &without_locks(sql_stmt);
        let described = match planner::PlanCtx::load(sql_stmt, txn).await {
            Ok(cx) => Ok(planner::params::describe(types, || {
                planner::plan_with(sql_stmt, &cx)
            })),
            Err(e) => Err(e),
        };
        let described = match described {
            Ok((Err(e), _)) | Err(e) => Err(blame_stale_schema(txn, e).await),
            Ok(ok) => Ok(ok),
        };
        if let Some(mut t) = own {
            t.rollback();
        }
        let (plan, param_types) = described?;
        let columns = match plan? {
            Plan::Query { columns, .. } => Some(columns),
            Plan::Insert { returning, .. }
            | Plan::Update { returning, .. }
            | Plan::Delete { returning, .. } => returning.map(|r| r.columns),
            Plan::Explain(_) => Some(vec![text_column("QUERY PLAN")]),
            Plan::ShowTables => Some(vec![text_column("table_name")]),
            Plan::ShowVariable { name } => Some(if name == "all" {
                vec![text_column("name"), text_column("setting")]
            } else {
                vec![text_column(match name.as_str() {
                    "transaction isolation level" => "transaction_isolation",
                    n => n,
                })]
            }),
            _ => None,
        };
        Ok(Prepared {
            stmt: Some(stmt),
            param_types,
            columns,
        })
    }

    /// Runs a prepared statement with its parameter values (Bind +
    /// Execute): the values are put into the statement as typed literals
    /// and it is planned again ("custom plans").
    pub async fn execute_prepared(
        &mut self,
        prepared: &Prepared,
        params: &[Value],
    ) -> Result<StatementResult> {
        let Some(stmt) = &prepared.stmt else {
            return Ok(StatementResult::Command { tag: String::new() });
        };
        if params.len() != prepared.param_types.len() {
            return Err(Error::ProtocolViolation(format!(
                "bind message supplies {} parameters, but prepared statement requires {}",
                params.len(),
                prepared.param_types.len()
            )));
        }
        let stmt = match stmt {
            Stmt::Sql(s) if !params.is_empty() => {
                Stmt::Sql(Box::new(crate::prepared::substitute(s, params)?))
            }
            other => other.clone(),
        };
        self.execute_stmt(&stmt).await
    }

    /// Runs an administrative statement: not inside a transaction block
    /// (trying aborts the block, as in PostgreSQL).
    async fn admin<'a, F>(&'a mut self, what: &str, f: F) -> Result<StatementResult>
    where
        F: FnOnce(
            &'a mut Session,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<StatementResult>> + Send + 'a>,
        >,
    {
        match self.state {
            TxnState::Idle => f(self).await,
            TxnState::Aborted => Err(Error::InFailedTransaction),
            TxnState::Open(_) => {
                self.abort_block();
                Err(Error::ActiveTransaction(format!(
                    "{what} cannot run inside a transaction block"
                )))
            }
        }
    }

    /// After `CREATE TABLE` ran in `txn`: gives the new table a range of
    /// its own by splitting at its key prefix, as CockroachDB does, so that
    /// its rows never share a Raft group with the system keyspace (range 1:
    /// meta2 and the descriptors, which every node reads) or with another
    /// table. The split happens before the commit: the prefix holds no rows
    /// yet, and if the transaction aborts an empty range is all that is
    /// left. It is best effort: a table whose split failed works the same,
    /// it only shares a range until the split queue cuts it by size.
    async fn split_off_new_table(&self, stmt: &Statement, txn: &mut Txn) {
        let Statement::CreateTable(ct) = stmt else {
            return;
        };
        let Ok(name) = planner::table_name(&ct.name) else {
            return;
        };
        let table = match catalog::get_table(txn, &name).await {
            Ok(Some(t)) if !t.is_view() => t,
            _ => return,
        };
        let prefix = crate::encoding::table_prefix(table.id);
        if let Err(e) = self.db.admin_split(&prefix).await {
            tracing::warn!(table = %name, "could not split a new table into its own range: {e}");
        }
    }

    /// `ALTER TABLE t SPLIT AT <rows>`: splits the table's ranges at the
    /// primary keys (or key prefixes) the rows give.
    async fn split_at(&mut self, table: &ObjectName, rows: &Query) -> Result<StatementResult> {
        let mut txn = self.db.begin();
        let name = planner::table_name(table)?;
        let t = catalog::must_get_table(&mut txn, &name).await?;
        let values =
            match planner::plan(&Statement::Query(Box::new(rows.clone())), &mut txn).await? {
                Plan::Query { node, .. } => exec::execute_node(&node, &mut txn).await?,
                _ => {
                    return Err(Error::Internal(
                        "SPLIT AT rows did not plan as a query".into(),
                    ))
                }
            };
        txn.rollback();
        let mut out = Vec::new();
        for row in values {
            if row.is_empty() || row.len() > t.pk.len() {
                return Err(Error::Syntax(format!(
                    "SPLIT AT rows need 1 to {} values (the primary key of {})",
                    t.pk.len(),
                    t.name
                )));
            }
            let mut pk = Vec::with_capacity(row.len());
            for (v, &col) in row.into_iter().zip(&t.pk) {
                let v = v.assign(&t.columns[col].ty)?;
                if v.is_null() {
                    return Err(Error::InvalidParameterValue(
                        "SPLIT AT values cannot be NULL".into(),
                    ));
                }
                pk.push(v);
            }
            let key = t.key_from_pk_values(&pk)?;
            let (_, right) = self.db.admin_split(&key).await?;
            out.push(vec![
                Value::Text(crate::encoding::pretty_key(&key, std::slice::from_ref(&t))),
                Value::Int(right.range_id as i64),
            ]);
        }
        Ok(StatementResult::Query {
            columns: vec![
                text_column("key"),
                OutputColumn {
                    name: "range_id".into(),
                    ty: DataType::Int8,
                },
            ],
            rows: out,
        })
    }

    /// `VACUUM`: MVCC garbage is collected by each range's GC queue, so
    /// there is nothing to do beyond checking that the tables exist.
    async fn vacuum(&mut self, tables: &[ObjectName]) -> Result<StatementResult> {
        let mut txn = self.db.begin();
        let names = tables
            .iter()
            .map(planner::table_name)
            .collect::<Result<Vec<_>>>()?;
        let found = catalog::get_tables(&mut txn, &names).await;
        txn.rollback();
        if let Some((name, _)) = names.iter().zip(found?).find(|(_, t)| t.is_none()) {
            return Err(Error::UndefinedTable(name.clone()));
        }
        Ok(tag("VACUUM"))
    }

    /// `SHOW RANGES [FROM TABLE t]`.
    /// A read-only statement at a past timestamp (`AS OF SYSTEM TIME`),
    /// served by the nearest replica that has closed that timestamp.
    async fn as_of(&mut self, stmt: &Statement, at: &crate::AsOf) -> Result<StatementResult> {
        if !matches!(stmt, Statement::Query(_)) {
            return Err(Error::Syntax(
                "AS OF SYSTEM TIME applies to SELECT statements".into(),
            ));
        }
        let now = self.db.sender().clock().now();
        let ts = match at {
            crate::AsOf::Ago(d) => now.wall.saturating_sub(d.as_nanos() as u64),
            crate::AsOf::WallNanos(n) => *n,
            // The closed timestamp trails by 3 s and is published every
            // second: 4.8 s back is closed everywhere that keeps up.
            crate::AsOf::FollowerRead => now.wall.saturating_sub(4_800_000_000),
        };
        let mut txn = self
            .db
            .begin_as_of(concord_hlc::Timestamp::new(ts, 0))
            .map_err(Error::from)?;
        let result = run(stmt, &mut txn).await;
        txn.rollback();
        result
    }

    /// A 40001 error that names the conflicting key's table and primary key.
    async fn describe_conflict(&self, reason: String, key: &[u8], txn: String) -> Error {
        let mut t = self.db.begin();
        let tables = catalog::list_tables(&mut t).await.unwrap_or_default();
        t.rollback();
        let pretty = crate::encoding::pretty_key(key, &tables);
        let table = crate::encoding::table_id_of(key)
            .and_then(|id| tables.iter().find(|t| t.id == id))
            .map(|t| format!(" of table {}", t.name))
            .unwrap_or_default();
        Error::SerializationFailure(format!(
            "{reason}: conflict on key {pretty}{table} with transaction {txn}"
        ))
    }

    async fn show_ranges(&mut self, table: Option<&ObjectName>) -> Result<StatementResult> {
        let mut txn = self.db.begin();
        let (start, end, tables) = match table {
            Some(n) => {
                let t = catalog::must_get_table(&mut txn, &planner::table_name(n)?).await?;
                let (s, e) = t.span();
                (s, e, vec![t])
            }
            None => (vec![], vec![], catalog::list_tables(&mut txn).await?),
        };
        txn.rollback();
        let infos = self.db.ranges(&start, &end).await?;
        let int = |name: &str| OutputColumn {
            name: name.into(),
            ty: DataType::Int8,
        };
        let rows = infos
            .into_iter()
            .map(|i| {
                let d = &i.descriptor;
                let nodes: Vec<String> = d
                    .replicas
                    .iter()
                    .map(|r| format!("{}{}", r.node_id, if r.learner { "(learner)" } else { "" }))
                    .collect();
                vec![
                    Value::Int(d.range_id as i64),
                    Value::Text(crate::encoding::pretty_key(&d.start_key, &tables)),
                    Value::Text(if d.end_key.is_empty() {
                        "/Max".into()
                    } else {
                        crate::encoding::pretty_key(&d.end_key, &tables)
                    }),
                    Value::Text(format!("{{{}}}", nodes.join(","))),
                    if i.leader_node_id == 0 {
                        Value::Null
                    } else {
                        Value::Int(i.leader_node_id as i64)
                    },
                    Value::Int(i.size_bytes as i64),
                ]
            })
            .collect();
        Ok(StatementResult::Query {
            columns: vec![
                int("range_id"),
                text_column("start_key"),
                text_column("end_key"),
                text_column("replicas"),
                int("leader"),
                int("size_bytes"),
            ],
            rows,
        })
    }

    /// Runs one parsed statement.
    pub async fn execute_statement(&mut self, stmt: &Statement) -> Result<StatementResult> {
        let is_commit = matches!(stmt, Statement::Commit { .. });
        let is_rollback = matches!(stmt, Statement::Rollback { .. });
        let is_begin = matches!(stmt, Statement::StartTransaction { .. });
        // While a statement of an open block runs, the session says
        // Aborted: if the statement is cut short (a timeout, a cancel, a
        // dropped connection) the block stays aborted rather than vanishing.
        match std::mem::replace(&mut self.state, TxnState::Aborted) {
            TxnState::Aborted => {
                if is_commit || is_rollback {
                    self.state = TxnState::Idle;
                    return Ok(tag("ROLLBACK"));
                }
                Err(Error::InFailedTransaction)
            }
            TxnState::Open(mut txn) => {
                if is_commit {
                    // COMMIT ends the block whatever happens, even if it is
                    // cut short (its outcome is then unknown to us too).
                    self.state = TxnState::Idle;
                    txn.commit().await?;
                    return Ok(tag("COMMIT"));
                }
                if is_rollback {
                    txn.rollback();
                    self.state = TxnState::Idle;
                    return Ok(tag("ROLLBACK"));
                }
                if is_begin {
                    // PostgreSQL warns and carries on.
                    self.state = TxnState::Open(txn);
                    return Ok(tag("BEGIN"));
                }
                let r = match self.session_statement(stmt) {
                    Ok(Some(r)) => Ok(r),
                    Ok(None) => {
                        let r = run(stmt, &mut txn).await;
                        if r.is_ok() {
                            self.split_off_new_table(stmt, &mut txn).await;
                        }
                        r
                    }
                    Err(e) => Err(e),
                };
                match r {
                    Ok(r) => {
                        self.state = TxnState::Open(txn);
                        Ok(r)
                    }
                    Err(e) => {
                        txn.rollback();
                        Err(e)
                    }
                }
            }
            TxnState::Idle => {
                self.state = TxnState::Idle;
                if is_begin {
                    let mut txn = self.db.begin();
                    // In a block, a conflict found at COMMIT costs the
                    // client the whole block: lock rows as they are updated.
                    txn.set_lock_updates(true);
                    self.state = TxnState::Open(Box::new(txn));
                    return Ok(tag("BEGIN"));
                }
                if is_commit {
                    return Ok(tag("COMMIT"));
                }
                if is_rollback {
                    return Ok(tag("ROLLBACK"));
                }
                if let Some(r) = self.session_statement(stmt)? {
                    return Ok(r);
                }
                self.run_implicit(stmt).await
            }
        }
    }

    /// Runs a statement in its own transaction, retrying serialization
    /// failures.
    async fn run_implicit(&mut self, stmt: &Statement) -> Result<StatementResult> {
        let mut backoff = Duration::from_millis(2);
        let mut attempt = 0;
        loop {
            // Each retry runs with a higher priority in conflicts.
            let mut txn = self.db.begin_attempt(attempt);
            let result = match run(stmt, &mut txn).await {
                Ok(r) => {
                    self.split_off_new_table(stmt, &mut txn).await;
                    txn.commit().await.map(|_| r).map_err(Error::from)
                }
                Err(e) => {
                    txn.rollback();
                    Err(e)
                }
            };
            match result {
                Err(e) if e.is_retryable() && attempt < MAX_AUTO_RETRIES => {
                    attempt += 1;
                    let jitter = rand::random::<u64>() % (backoff.as_millis() as u64 + 1);
                    tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }

    /// Sets a session variable (SET, or a startup parameter), checking the
    /// value as PostgreSQL does for the variables drivers send. Variables
    /// the client must hear about are queued for [`Session::take_reports`].
    pub fn set_var(&mut self, name: &str, value: &str) -> Result<()> {
        let name = name.to_lowercase();
        let invalid = || {
            Error::InvalidParameterValue(format!(
                "invalid value for parameter \"{name}\": \"{value}\""
            ))
        };
        let value = match name.as_str() {
            "statement_timeout" => {
                parse_timeout(value).ok_or_else(invalid)?;
                value.to_string()
            }
            "extra_float_digits" => match value.trim().parse::<i32>() {
                Ok(n) if (-15..=3).contains(&n) => n.to_string(),
                _ => return Err(invalid()),
            },
            "client_encoding" => match value.to_uppercase().replace(['-', '_'], "").as_str() {
                "UTF8" | "UNICODE" => "UTF8".to_string(),
                _ => return Err(invalid()),
            },
            "datestyle" => {
                if !value.to_uppercase().contains("ISO") && !value.eq_ignore_ascii_case("default") {
                    return Err(Error::FeatureNotSupported(format!(
                        "DateStyle {value}: only ISO output is supported"
                    )));
                }
                "ISO, MDY".to_string()
            }
            "timezone" => match value.to_uppercase().as_str() {
                "UTC" | "GMT" | "ETC/UTC" | "Z" | "ZULU" | "UCT" | "DEFAULT" | "LOCAL" => {
                    "UTC".to_string()
                }
                _ => return Err(invalid()),
            },
            "transaction_isolation" | "default_transaction_isolation" => {
                if !value.eq_ignore_ascii_case("serializable") {
                    return Err(Error::FeatureNotSupported(format!(
                        "isolation level {value}: Concord runs every transaction SERIALIZABLE"
                    )));
                }
                "serializable".to_string()
            }
            // Read-only settings.
            "server_version" | "server_encoding" | "integer_datetimes" => {
                return Err(Error::CantChangeRuntimeParam(name));
            }
            // Custom settings (`myapp.x`) are free, as in PostgreSQL.
            n if self.vars.contains_key(n) || n.contains('.') => value.to_string(),
            _ => return Err(Error::UndefinedObject(name)),
        };
        if let Some(reported) = REPORTED.iter().find(|r| r.eq_ignore_ascii_case(&name)) {
            self.reports.push((reported.to_string(), value.clone()));
        }
        self.vars.insert(name, value);
        Ok(())
    }

    /// The settings PostgreSQL reports to a client at startup
    /// (ParameterStatus), with their names as PostgreSQL spells them.
    pub fn reported_vars(&self) -> Vec<(String, String)> {
        REPORTED
            .iter()
            .map(|r| {
                let v = self
                    .vars
                    .get(&r.to_lowercase())
                    .cloned()
                    .unwrap_or_else(|| match *r {
                        "is_superuser" => "on".into(),
                        "session_authorization" => "root".into(),
                        _ => "off".into(),
                    });
                (r.to_string(), v)
            })
            .collect()
    }

    /// Reported settings changed since the last call (for ParameterStatus
    /// after SET).
    pub fn take_reports(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.reports)
    }

    /// The wire layer prepared a named statement.
    pub fn statement_prepared(&mut self, name: &str) {
        if !name.is_empty() {
            self.prepared_names.insert(name.to_string());
        }
    }

    /// The wire layer closed a named statement.
    pub fn statement_closed(&mut self, name: &str) {
        self.prepared_names.remove(name);
    }

    /// Named statements DEALLOCATE removed since the last call, for the
    /// wire layer to drop from its store.
    pub fn take_deallocated(&mut self) -> Vec<String> {
        std::mem::take(&mut self.deallocated)
    }

    /// `DEALLOCATE [PREPARE] name | ALL`.
    fn deallocate(&mut self, name: &sqlparser::ast::Ident) -> Result<StatementResult> {
        if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") {
            let all = std::mem::take(&mut self.prepared_names);
            self.deallocated.extend(all);
            return Ok(tag("DEALLOCATE ALL"));
        }
        if !self.prepared_names.remove(&name.value) {
            return Err(Error::InvalidSqlStatementName(name.value.clone()));
        }
        self.deallocated.push(name.value.clone());
        Ok(tag("DEALLOCATE"))
    }

    /// SET, SHOW and DEALLOCATE, which touch only the session.
    fn session_statement(&mut self, stmt: &Statement) -> Result<Option<StatementResult>> {
        if let Statement::Deallocate { name, .. } = stmt {
            return self.deallocate(name).map(Some);
        }
        if !matches!(stmt, Statement::Set(_) | Statement::ShowVariable { .. }) {
            return Ok(None);
        }
        let plan = planner::plan_session_statement(stmt)?;
        Ok(Some(match plan {
            Plan::SetVariable { name, value } => {
                if name.is_empty() {
                    return Ok(Some(tag("SET")));
                }
                let name = name.trim_start_matches("session.").to_string();
                if name == "transaction_isolation" || name == "default_transaction_isolation" {
                    let v = value.to_lowercase();
                    if v != "serializable" {
                        return Err(Error::FeatureNotSupported(format!(
                            "isolation level {value}: Concord runs every transaction SERIALIZABLE"
                        )));
                    }
                }
                self.set_var(&name, &value)?;
                tag("SET")
            }
            Plan::ShowVariable { name } => {
                let key = match name.as_str() {
                    "transaction isolation level" => "transaction_isolation".to_string(),
                    // `SHOW myapp.x` arrives as the words myapp x.
                    n if n.contains(' ') && !self.vars.contains_key(n) => n.replace(' ', "."),
                    n => n.to_string(),
                };
                let value = match key.as_str() {
                    "all" => {
                        let rows = self
                            .vars
                            .iter()
                            .map(|(k, v)| vec![Value::Text(k.clone()), Value::Text(v.clone())])
                            .collect();
                        return Ok(Some(StatementResult::Query {
                            columns: vec![text_column("name"), text_column("setting")],
                            rows,
                        }));
                    }
                    k => self
                        .vars
                        .get(k)
                        .cloned()
                        .ok_or_else(|| Error::UndefinedObject(k.to_string()))?,
                };
                StatementResult::Query {
                    columns: vec![text_column(&key)],
                    rows: vec![vec![Value::Text(value)]],
                }
            }
            _ => return Ok(None),
        }))
    }
}

fn tag(t: &str) -> StatementResult {
    StatementResult::Command { tag: t.to_string() }
}

fn text_column(name: &str) -> OutputColumn {
    OutputColumn {
        name: name.to_string(),
        ty: DataType::Text,
    }
}

/// Plans and executes a statement inside `txn`.
pub async fn run(stmt: &Statement, txn: &mut Txn) -> Result<StatementResult> {
    match run_unchecked(stmt, txn).await {
        Err(e) => Err(blame_stale_schema(txn, e).await),
        ok => ok,
    }
}

/// After a statement failed with `e` in a transaction that planned with
/// cached descriptors ([`catalog::get_tables`]): a stale one may be to
/// blame (a column "does not exist" that another node just added), so the
/// cached reads are checked now. A stale one turns the failure into 40001
/// (and empties the cache), which an implicit transaction retries.
async fn blame_stale_schema(txn: &mut Txn, e: Error) -> Error {
    if e.is_retryable() || !txn.has_assumed_reads() {
        return e;
    }
    match txn.check_assumed_reads().await {
        Err(stale) => Error::from(stale),
        Ok(()) => e,
    }
}

/// A SELECT … FOR UPDATE / FOR SHARE as the plain SELECT; any other
/// statement as it is.
fn without_locks(stmt: &Statement) -> std::borrow::Cow<'_, Statement> {
    match stmt {
        Statement::Query(q) if !q.locks.is_empty() => {
            let mut plain = q.clone();
            plain.locks.clear();
            std::borrow::Cow::Owned(Statement::Query(plain))
        }
        other => std::borrow::Cow::Borrowed(other),
    }
}

async fn run_unchecked(stmt: &Statement, txn: &mut Txn) -> Result<StatementResult> {
    if let Statement::Query(q) = stmt {
        if !q.locks.is_empty() {
            // SELECT … FOR UPDATE / FOR SHARE: run the query, then lock
            // every row it read (shared locks are exclusive here).
            let plain = without_locks(stmt);
            txn.collect_reads();
            let plan = planner::plan(&plain, txn).await?;
            let result = execute_plan(plan, txn).await?;
            txn.lock_collected().await?;
            return Ok(result);
        }
    }
    let plan = planner::plan(stmt, txn).await?;
    execute_plan(plan, txn).await
}

async fn execute_plan(plan: Plan, txn: &mut Txn) -> Result<StatementResult> {
    Ok(match plan {
        Plan::CreateTable {
            table,
            if_not_exists,
        } => {
            if catalog::get_table(txn, &table.name).await?.is_some() {
                if if_not_exists {
                    return Ok(tag("CREATE TABLE"));
                }
                return Err(Error::DuplicateTable(table.name));
            }
            catalog::create_table(txn, table).await?;
            tag("CREATE TABLE")
        }
        Plan::CreateView {
            mut table,
            or_replace,
            if_not_exists,
        } => {
            match catalog::get_table(txn, &table.name).await? {
                None => {
                    catalog::create_table(txn, table).await?;
                }
                Some(_) if if_not_exists => {}
                Some(old) if or_replace && old.is_view() => {
                    // PostgreSQL keeps the old columns, in order: a new
                    // query may only add columns after them.
                    let keeps = old.columns.len() <= table.columns.len()
                        && old
                            .columns
                            .iter()
                            .zip(&table.columns)
                            .all(|(a, b)| a.name == b.name && a.ty == b.ty);
                    if !keeps {
                        return Err(Error::InvalidTableDefinition(
                            if old.columns.len() > table.columns.len() {
                                "cannot drop columns from view".into()
                            } else {
                                format!(
                                    "cannot change the name or type of a column of view \"{}\"",
                                    old.name
                                )
                            },
                        ));
                    }
                    table.id = old.id;
                    table.version = old.version;
                    catalog::update_table(txn, &mut table)?;
                }
                Some(old) => return Err(Error::DuplicateTable(old.name)),
            }
            tag("CREATE VIEW")
        }
        Plan::DropView { names, if_exists } => {
            for name in names {
                match catalog::get_table(txn, &name).await? {
                    Some(t) if t.is_view() => catalog::drop_table(txn, &t).await?,
                    Some(t) => {
                        return Err(Error::WrongObjectType(format!(
                            "\"{}\" is not a view",
                            t.name
                        )))
                    }
                    None if if_exists => {}
                    None => return Err(Error::UndefinedViewToDrop(name)),
                }
            }
            tag("DROP VIEW")
        }
        Plan::DropTable { names, if_exists } => {
            for name in names {
                match catalog::get_table(txn, &name).await? {
                    Some(t) => {
                        t.must_be_table()?;
                        catalog::drop_table(txn, &t).await?
                    }
                    None if if_exists => {}
                    None => return Err(Error::UndefinedTableToDrop(name)),
                }
            }
            tag("DROP TABLE")
        }
        Plan::CreateIndex {
            table,
            name,
            columns,
            unique,
            if_not_exists,
        } => {
            exec::create_index(txn, &table, name, &columns, unique, if_not_exists).await?;
            tag("CREATE INDEX")
        }
        Plan::AlterTable {
            table,
            if_exists,
            ops,
        } => {
            exec::alter_table(txn, &table, if_exists, &ops).await?;
            tag("ALTER TABLE")
        }
        Plan::Truncate { names } => {
            let found = catalog::get_tables(txn, &names).await?;
            for (name, t) in names.iter().zip(&found) {
                if t.is_none() {
                    return Err(Error::UndefinedTable(name.clone()));
                }
            }
            for t in found.iter().flatten() {
                t.must_be_table()?;
                exec::truncate(txn, t).await?;
            }
            tag("TRUNCATE TABLE")
        }
        Plan::Analyze { names } => {
            let found = catalog::get_tables(txn, &names).await?;
            if let Some((name, _)) = names.iter().zip(found).find(|(_, t)| t.is_none()) {
                return Err(Error::UndefinedTable(name.clone()));
            }
            tag("ANALYZE")
        }
        Plan::DropIndex { names, if_exists } => {
            for name in names {
                match catalog::table_of_index(txn, &name).await? {
                    Some(mut t) => {
                        t.indexes.retain(|i| i.name != name);
                        catalog::update_table(txn, &mut t)?;
                    }
                    None if if_exists => {}
                    None => return Err(Error::UndefinedIndex(name)),
                }
            }
            tag("DROP INDEX")
        }
        Plan::Query { node, columns } => {
            let rows = exec::execute_node(&node, txn).await?;
            StatementResult::Query { columns, rows }
        }
        ref dml @ (Plan::Insert { .. } | Plan::Update { .. } | Plan::Delete { .. }) => {
            let result = exec::execute_dml(dml, txn).await?;
            let returning_columns = match dml {
                Plan::Insert { returning, .. }
                | Plan::Update { returning, .. }
                | Plan::Delete { returning, .. } => returning.as_ref().map(|r| r.columns.clone()),
                _ => None,
            };
            match (result.returning, returning_columns) {
                (Some(rows), Some(columns)) => StatementResult::Query { columns, rows },
                _ => tag(&match dml {
                    Plan::Insert { .. } => format!("INSERT 0 {}", result.count),
                    Plan::Update { .. } => format!("UPDATE {}", result.count),
                    _ => format!("DELETE {}", result.count),
                }),
            }
        }
        Plan::Explain(inner) => StatementResult::Query {
            columns: vec![text_column("QUERY PLAN")],
            rows: inner
                .explain()
                .lines()
                .map(|l| vec![Value::Text(l.to_string())])
                .collect(),
        },
        Plan::ShowTables => {
            let tables = catalog::list_tables(txn).await?;
            StatementResult::Query {
                columns: vec![text_column("table_name")],
                rows: tables
                    .into_iter()
                    .map(|t| vec![Value::Text(t.name)])
                    .collect(),
            }
        }
        Plan::Begin
        | Plan::Commit
        | Plan::Rollback
        | Plan::SetVariable { .. }
        | Plan::ShowVariable { .. } => {
            return Err(Error::Internal(
                "session statement reached the executor".into(),
            ))
        }
    })
}
