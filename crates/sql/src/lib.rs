//! Concord's SQL layer: from a query string to rows, inside KV transactions.
//!
//! # The life of a statement
//!
//! ```text
//!  "SELECT v FROM kv WHERE k = 7"
//!      │ parse (sqlparser, PostgreSQL dialect)          → ast::Statement
//!      │ session: which transaction? (explicit BEGIN, or an implicit one)
//!      │ plan: bind names and types against the catalog,
//!      │       read through the transaction              → Plan (tree of Nodes)
//!      │ optimize: key selection (k = 7 → point lookup), limit pushdown,
//!      │           sort elimination
//!      │ execute: Scan → KV get/scan at the txn's read timestamp; Filter,
//!      │          Project, Aggregate, Sort, Limit in the gateway
//!      │ commit (implicit txn): writes → one Raft command on the range
//!      ▼
//!  StatementResult::Query { columns, rows }  → pgwire encodes it
//! ```
//!
//! 1. [`parse`] turns text into `sqlparser` statements; a syntax error is
//!    SQLSTATE 42601.
//! 2. A [`Session`] keeps the connection's transaction state. A statement
//!    outside `BEGIN` runs in its own transaction, which is retried on
//!    serialization failures.
//! 3. [`planner`] binds the statement: table names through the [`catalog`]
//!    (descriptors stored in KV and read in the same transaction, so DDL is
//!    transactional), column names through a scope, types checked and
//!    coerced as PostgreSQL does. The result is a [`plan::Plan`].
//! 4. [`exec`] runs the plan. Rows are stored as described in [`encoding`]:
//!    clustered by primary key with an order-preserving key encoding, so key
//!    lookups and ranges are KV gets and scans.
//! 5. Errors are [`Error`]s, each with its SQLSTATE ([`Error::sqlstate`]).
//!
//! # Not done yet
//! LATERAL, NUMERIC beyond 28 digits (and its NaN and infinities), views
//! that can be written through, ON CONFLICT on an index other than the
//! primary key, sequences (SERIAL is a unique row id), descriptor leases,
//! statistics and cost-based planning, streaming execution, pushdown to
//! ranges: see `docs/plans/sql-engine.md`.

pub mod catalog;
pub mod copy;
pub mod datetime;
pub mod encoding;
pub mod error;
pub mod exec;
pub mod expr;
pub mod numeric;
pub mod parser;
pub mod pg_catalog;
pub mod plan;
pub mod planner;
pub mod prepared;
pub mod rowid;
pub mod session;
pub mod types;

pub use error::{Error, Result};
pub use parser::{parse, AsOf, Stmt};
pub use session::{CancelSignal, Prepared, Session, StatementResult, TxnStatus};
pub use types::{DataType, Value};

/// The PostgreSQL version Concord reports to clients.
pub const PG_SERVER_VERSION: &str = "16.0";

/// The text of `SELECT version()`.
pub fn version_string() -> String {
    format!(
        "PostgreSQL {PG_SERVER_VERSION} (Concord {}, a distributed SQL database)",
        env!("CARGO_PKG_VERSION")
    )
}
