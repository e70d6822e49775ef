//! The crate's one error type, and the classification that decides what a
//! worker does with an error: retry the transaction, reconnect elsewhere and
//! retry, or stop the whole run.
//!
//! ```text
//!   SQLSTATE 40001 / 40P01                         ─► Retryable   (ROLLBACK, run it again)
//!   class 08, 57P01-57P03, I/O, closed connection  ─► Connection  (host marked dead, reconnect, run it again)
//!   anything else                                  ─► Fatal       (stop, exit 1, print statement + error)
//! ```
//!
//! A fatal error carries the statement text and the server's SQLSTATE and
//! message, so the one line the user sees says what failed and why.

use std::fmt;
use std::path::PathBuf;

/// What a worker does about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// A serialization failure or deadlock: roll back and run the same
    /// transaction again on the same connection.
    Retryable,
    /// The connection is gone (or the server is going away): mark the host
    /// dead, connect to another one and run the transaction again.
    Connection,
    /// Anything else: the run stops with exit code 1.
    Fatal,
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::Retryable => "retryable",
            ErrorClass::Connection => "connection",
            ErrorClass::Fatal => "fatal",
        })
    }
}

/// Classifies an error from its SQLSTATE (when the server sent one) and
/// whether the client saw the connection break (an I/O error or a closed
/// connection). Pure, so the policy is unit-tested without a server.
pub fn classify(sqlstate: Option<&str>, connection_broken: bool) -> ErrorClass {
    match sqlstate {
        Some("40001" | "40P01") => ErrorClass::Retryable,
        // admin_shutdown, crash_shutdown, cannot_connect_now
        Some("57P01" | "57P02" | "57P03") => ErrorClass::Connection,
        Some(code) if code.starts_with("08") => ErrorClass::Connection,
        Some(_) => ErrorClass::Fatal,
        None if connection_broken => ErrorClass::Connection,
        None => ErrorClass::Fatal,
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A statement failed, on the server or on the way to it.
    #[error("{}{message}\n  statement: {statement}", code.as_ref().map(|c| format!("SQLSTATE {c}: ")).unwrap_or_default())]
    Sql {
        statement: String,
        code: Option<String>,
        message: String,
        class: ErrorClass,
    },
    /// Connecting to one host failed (refused, timed out, rejected).
    #[error("cannot connect to {host}: {message}")]
    Connect { host: String, message: String },
    /// No host accepted a connection for too long.
    #[error("no host reachable for {seconds} s (hosts: {hosts}); last error: {last}")]
    AllHostsDown {
        seconds: u64,
        hosts: String,
        last: String,
    },
    /// The server answered something the workload cannot make sense of: a
    /// row that must exist is missing, a column of an unexpected type.
    #[error("unexpected answer to `{statement}`: {detail}")]
    Unexpected { statement: String, detail: String },
    /// A live consistency check failed during a run (the bank's
    /// conservation of money).
    #[error("inconsistent read: {0}")]
    Inconsistent(String),
    /// `init` found the workload's tables already there.
    #[error("tables already exist: {} (use --drop to replace them)", .0.join(", "))]
    TablesExist(Vec<String>),
    /// A bad argument or a combination of them.
    #[error("{0}")]
    Usage(String),
    /// Reading or writing a file.
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Writing the JSON summary.
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Encoding the histogram log.
    #[error("writing the histogram log: {0}")]
    Histogram(String),
    /// Drawing the plot.
    #[error("drawing the plot: {0}")]
    Plot(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a tokio-postgres error with the statement that caused it and
    /// classifies it.
    pub fn sql(statement: &str, e: &tokio_postgres::Error) -> Error {
        let code = e.code().map(|c| c.code().to_string());
        let message = match e.as_db_error() {
            Some(db) => {
                let mut m = db.message().to_string();
                if let Some(detail) = db.detail() {
                    m.push_str(&format!(" (detail: {detail})"));
                }
                if let Some(hint) = db.hint() {
                    m.push_str(&format!(" (hint: {hint})"));
                }
                m
            }
            None => chain(e),
        };
        let broken = e.is_closed() || has_io_source(e);
        Error::Sql {
            statement: shorten(statement),
            class: classify(code.as_deref(), broken),
            code,
            message,
        }
    }

    /// What a worker does about this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Sql { class, .. } => *class,
            Error::Connect { .. } => ErrorClass::Connection,
            _ => ErrorClass::Fatal,
        }
    }

    /// The SQLSTATE, when the server sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Sql { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    pub(crate) fn unexpected(statement: &str, detail: impl Into<String>) -> Error {
        Error::Unexpected {
            statement: statement.to_string(),
            detail: detail.into(),
        }
    }

    pub(crate) fn file(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::File {
            path: path.into(),
            source,
        }
    }
}

/// A statement as shown in an error: a multi-row INSERT of a load is cut
/// after its first few hundred characters.
fn shorten(statement: &str) -> String {
    const MAX: usize = 300;
    match statement.char_indices().nth(MAX) {
        Some((cut, _)) => format!(
            "{} ... ({} bytes in all)",
            &statement[..cut],
            statement.len()
        ),
        None => statement.to_string(),
    }
}

/// The error and its sources, joined by ": ".
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

fn has_io_source(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialization_failures_and_deadlocks_are_retried() {
        assert_eq!(classify(Some("40001"), false), ErrorClass::Retryable);
        assert_eq!(classify(Some("40P01"), false), ErrorClass::Retryable);
    }

    #[test]
    fn lost_connections_and_shutdowns_reconnect() {
        for code in [
            "08000", "08003", "08006", "08001", "57P01", "57P02", "57P03",
        ] {
            assert_eq!(
                classify(Some(code), false),
                ErrorClass::Connection,
                "{code}"
            );
        }
        // An I/O error or a closed connection has no SQLSTATE.
        assert_eq!(classify(None, true), ErrorClass::Connection);
    }

    #[test]
    fn everything_else_stops_the_run() {
        // unique_violation, undefined_table, syntax_error, other class-40
        // codes that are not safe to retry blindly, query_canceled.
        for code in [
            "23505", "42P01", "42601", "40002", "40003", "57014", "XX000",
        ] {
            assert_eq!(classify(Some(code), false), ErrorClass::Fatal, "{code}");
        }
        // A client-side error (a type mismatch) with an intact connection.
        assert_eq!(classify(None, false), ErrorClass::Fatal);
        // A SQLSTATE wins over a broken connection flag: the server said why.
        assert_eq!(classify(Some("23505"), true), ErrorClass::Fatal);
    }

    #[test]
    fn fatal_errors_show_the_statement_and_the_servers_code() {
        let e = Error::Sql {
            statement: "INSERT INTO t VALUES (1)".into(),
            code: Some("23505".into()),
            message: "duplicate key".into(),
            class: ErrorClass::Fatal,
        };
        let text = e.to_string();
        assert!(text.contains("SQLSTATE 23505: duplicate key"), "{text}");
        assert!(
            text.contains("statement: INSERT INTO t VALUES (1)"),
            "{text}"
        );
        assert_eq!(e.class(), ErrorClass::Fatal);
        assert_eq!(e.code(), Some("23505"));
        let usage = Error::Usage("bad".into());
        assert_eq!(usage.class(), ErrorClass::Fatal);
        assert_eq!(shorten("SELECT 1"), "SELECT 1");
        let long = format!("INSERT INTO t VALUES {}", "(1),".repeat(1000));
        let short = shorten(&long);
        assert!(
            short.len() < 400 && short.ends_with("(4021 bytes in all)"),
            "{short}"
        );
        let connect = Error::Connect {
            host: "h:1".into(),
            message: "refused".into(),
        };
        assert_eq!(connect.class(), ErrorClass::Connection);
    }
}
