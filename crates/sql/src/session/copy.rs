//! `COPY … FROM STDIN` and `COPY … TO STDOUT` in a session.
//!
//! ```text
//!  COPY t FROM STDIN ──► copy_in_start: table, columns, defaults, checks;
//!                        the open block's transaction, or the COPY's own
//!  CopyData …        ──► copy_data: decode lines (crate::copy), convert
//!                        fields with the columns' input functions, insert
//!                        every COPY_BATCH rows through the INSERT path
//!                        (defaults, NOT NULL, CHECK, UNIQUE, indexes)
//!  CopyDone          ──► copy_done: the last rows; commit the COPY's own
//!                        transaction; "COPY n"
//!  CopyFail          ──► copy_fail: roll back (57014)
//! ```
//!
//! The first error (bad data, a constraint) is kept and reported at
//! CopyDone, as PostgreSQL ignores the CopyData that follows an error; an
//! open block is then aborted. A COPY in its own transaction is not retried
//! on 40001: the data is gone once consumed, so the client gets the error.
//!
//! `COPY TO STDOUT` runs `SELECT cols FROM t` (or the query) and encodes one
//! CopyData per row.
//!
//! Not done: the binary format (0A000); COPY rows are held in the
//! transaction's write buffer until commit (the KV layer chunks large
//! commits), so a load is bounded by memory.

use sqlparser::ast::Statement;

use concord_kv::Txn;

use super::{Session, StatementResult, TxnState};
use crate::catalog::{self, Table};
use crate::copy::{
    encode_header, encode_row, CopyDecoder, CopyDirection, CopyFormat, CopyRow, CopyStmt,
    CopyTarget,
};
use crate::error::{Error, Result};
use crate::exec::{self, Row};
use crate::expr::Expr;
use crate::plan::{Node, OnConflict, Plan};
use crate::planner;
use crate::types::{parse_text, Value};

/// Rows inserted per batch of a COPY.
const COPY_BATCH: usize = 10_000;

/// A `COPY FROM STDIN` under way.
pub(super) struct CopyIn {
    table: Table,
    /// The table column each field fills.
    columns: Vec<usize>,
    defaults: Vec<Option<Expr>>,
    checks: Vec<(String, Expr)>,
    decoder: CopyDecoder,
    pending: Vec<Row>,
    count: u64,
    /// The COPY's own transaction, when no block was open.
    own: Option<Box<Txn>>,
    error: Option<Error>,
}

impl Session {
    /// Starts a COPY: FROM STDIN waits for data ([`Session::copy_data`]);
    /// TO STDOUT returns the data.
    pub(super) async fn copy(&mut self, c: &CopyStmt) -> Result<StatementResult> {
        if c.options.format == CopyFormat::Binary {
            return Err(Error::FeatureNotSupported("COPY in binary format".into()));
        }
        match c.direction {
            CopyDirection::FromStdin => {
                let r = self.copy_in_start(c).await;
                if r.is_err() {
                    self.abort_block();
                }
                r
            }
            CopyDirection::ToStdout => self.copy_out(c).await,
        }
    }

    async fn copy_in_start(&mut self, c: &CopyStmt) -> Result<StatementResult> {
        let CopyTarget::Table { name, columns } = &c.target else {
            return Err(Error::Syntax("COPY (query) can only be TO STDOUT".into()));
        };
        let name = planner::table_name(name)?;
        let (table, own) = match &mut self.state {
            TxnState::Aborted => return Err(Error::InFailedTransaction),
            TxnState::Open(t) => (catalog::must_get_table(t, &name).await?, None),
            TxnState::Idle => {
                let mut txn = self.db.begin();
                let t = catalog::must_get_table(&mut txn, &name).await?;
                (t, Some(Box::new(txn)))
            }
        };
        let positions: Vec<usize> = if columns.is_empty() {
            (0..table.columns.len())
                .filter(|&i| !table.columns[i].hidden)
                .collect()
        } else {
            let mut out = Vec::with_capacity(columns.len());
            for c in columns {
                let i = table
                    .column_index(c)
                    .filter(|&i| !table.columns[i].hidden)
                    .ok_or_else(|| Error::UndefinedColumnOf {
                        column: c.clone(),
                        table: table.name.clone(),
                    })?;
                if out.contains(&i) {
                    return Err(Error::DuplicateColumn(c.clone()));
                }
                out.push(i);
            }
            out
        };
        let defaults = table
            .columns
            .iter()
            .map(|c| c.default.as_deref().map(planner::bind_default).transpose())
            .collect::<Result<Vec<_>>>()?;
        let checks = planner::bind_checks(&table)?;
        let names = positions
            .iter()
            .map(|&i| table.columns[i].name.clone())
            .collect();
        let decoder = CopyDecoder::new(&c.options).with_columns(&table.name, names);
        let n = positions.len();
        self.copy = Some(CopyIn {
            table,
            columns: positions,
            defaults,
            checks,
            decoder,
            pending: Vec::new(),
            count: 0,
            own,
            error: None,
        });
        Ok(StatementResult::CopyIn { columns: n })
    }

    /// Whether a `COPY FROM STDIN` is waiting for data.
    pub fn copy_in_progress(&self) -> bool {
        self.copy.is_some()
    }

    /// One CopyData payload. An error is kept for [`Session::copy_done`].
    pub async fn copy_data(&mut self, data: &[u8]) {
        let Some(mut c) = self.copy.take() else {
            return;
        };
        if c.error.is_none() {
            let r = match c.decoder.feed(data) {
                Ok(rows) => self.copy_rows(&mut c, rows, false).await,
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                c.error = Some(e);
            }
        }
        self.copy = Some(c);
    }

    /// CopyDone: inserts the last rows and commits the COPY's own
    /// transaction; the number of rows copied.
    pub async fn copy_done(&mut self) -> Result<u64> {
        let Some(mut c) = self.copy.take() else {
            return Err(Error::ProtocolViolation("CopyDone without a COPY".into()));
        };
        let r = async {
            if let Some(e) = c.error.take() {
                return Err(e);
            }
            let rows = c.decoder.finish()?;
            self.copy_rows(&mut c, rows, true).await?;
            if let Some(txn) = c.own.as_mut() {
                txn.commit().await?;
            }
            Ok(c.count)
        }
        .await;
        if r.is_err() {
            if let Some(mut txn) = c.own.take() {
                txn.rollback();
            }
            self.abort_block();
        }
        r
    }

    /// CopyFail: the client gave up; everything copied is rolled back.
    pub fn copy_fail(&mut self, message: &str) -> Error {
        if let Some(mut c) = self.copy.take() {
            if let Some(mut txn) = c.own.take() {
                txn.rollback();
            }
        }
        self.abort_block();
        Error::QueryCanceled(format!("COPY from stdin failed: {message}"))
    }

    /// Converts decoded rows and inserts them in batches (all of them when
    /// `last`).
    async fn copy_rows(&mut self, c: &mut CopyIn, rows: Vec<CopyRow>, last: bool) -> Result<()> {
        for fields in rows {
            let mut row = Vec::with_capacity(fields.len());
            for (f, &col) in fields.into_iter().zip(&c.columns) {
                row.push(match f {
                    None => Value::Null,
                    Some(s) => parse_text(&s, &c.table.columns[col].ty)?,
                });
            }
            c.pending.push(row);
            if c.pending.len() >= COPY_BATCH {
                self.copy_flush(c).await?;
            }
        }
        if last && !c.pending.is_empty() {
            self.copy_flush(c).await?;
        }
        Ok(())
    }

    async fn copy_flush(&mut self, c: &mut CopyIn) -> Result<()> {
        let rows = std::mem::take(&mut c.pending);
        let plan = Plan::Insert {
            table: c.table.clone(),
            columns: c.columns.clone(),
            defaults: c.defaults.clone(),
            source: Node::Values {
                rows: rows
                    .into_iter()
                    .map(|r| r.into_iter().map(Expr::Literal).collect())
                    .collect(),
            },
            on_conflict: OnConflict::Error,
            returning: None,
            checks: c.checks.clone(),
        };
        let txn = match (&mut c.own, &mut self.state) {
            (Some(t), _) => t,
            (None, TxnState::Open(t)) => t,
            (None, _) => return Err(Error::Internal("COPY's transaction block is gone".into())),
        };
        c.count += exec::execute_dml(&plan, txn).await?.count;
        Ok(())
    }

    /// `COPY t [(cols)] TO STDOUT` / `COPY (query) TO STDOUT`.
    async fn copy_out(&mut self, c: &CopyStmt) -> Result<StatementResult> {
        let stmt = match &c.target {
            CopyTarget::Table { name, columns } => {
                let cols = if columns.is_empty() {
                    "*".to_string()
                } else {
                    columns
                        .iter()
                        .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                match crate::parse(&format!("SELECT {cols} FROM {name}"))?.pop() {
                    Some(crate::parser::Stmt::Sql(s)) => *s,
                    _ => return Err(Error::Internal("COPY TO did not parse as a SELECT".into())),
                }
            }
            CopyTarget::Query(q) => Statement::Query(q.clone()),
        };
        let StatementResult::Query { columns, rows } = self.execute_statement(&stmt).await? else {
            return Err(Error::Internal("COPY TO's query returned no rows".into()));
        };
        let mut data = Vec::with_capacity(rows.len() + 1);
        let mut header = Vec::new();
        if c.options.header {
            let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            encode_header(&c.options, &names, &mut header);
        }
        for row in &rows {
            let fields: Vec<Option<String>> = row
                .iter()
                .zip(&columns)
                .map(|(v, col)| v.to_text_as(&col.ty))
                .collect();
            let refs: Vec<Option<&str>> = fields.iter().map(|f| f.as_deref()).collect();
            // The header travels with the first row: the client counts
            // rows by CopyData messages.
            let mut line = std::mem::take(&mut header);
            encode_row(&c.options, &refs, &mut line);
            data.push(line);
        }
        if !header.is_empty() {
            data.push(header);
        }
        Ok(StatementResult::CopyOut {
            columns: columns.len(),
            data,
        })
    }
}
