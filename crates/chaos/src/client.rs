//! PostgreSQL clients that cannot hang a run, and what their answers mean.
//!
//! Every request has a deadline: a frozen or cut-off node turns into a
//! timeout, never into a stuck worker. Each answer is classified:
//!
//! | answer                                   | meaning                      |
//! |------------------------------------------|------------------------------|
//! | rows / command complete                  | `Ok`: it happened            |
//! | 40001, 23xxx, 25P02, 57P03, 53100 (disk  | `Fail`: it definitely did not |
//! | full: refused before it was proposed)    |                              |
//! | timeout, lost connection, 40003, 08xxx,  | `Info`: unknown — it may have |
//! | 58030, 57P01, any other failure          | happened, or not             |
//!
//! Concord answers 53100 only for a command it refused before proposing it;
//! a proposed command whose replica then failed is 40003 (ambiguous).
//!
//! Codes that no fault explains (a syntax error, 22xxx, XX000) are
//! *unexpected*: the worker records them and the run fails, because a
//! workload that errors proves nothing.

use std::time::Duration;

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// Deadline of one statement.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Rows as text (`None` = SQL NULL).
pub type Rows = Vec<Vec<Option<String>>>;

/// The classified answer to one statement.
#[derive(Debug)]
pub enum Answer {
    /// Done: the rows, and the row count of the last command.
    Ok(Rows, u64),
    /// Definitely not done: the SQLSTATE and message.
    Fail(String, String),
    /// Unknown outcome: the SQLSTATE (or "timeout"/"connection") and message.
    Info(String, String),
    /// An error no fault explains: a bug in Concord or in the workload.
    Unexpected(String, String),
}

/// Connects to `addr` (`ip:port`) as root, giving up after a few seconds.
pub async fn connect(addr: &str) -> Option<Client> {
    let (host, port) = addr.rsplit_once(':')?;
    let url = format!("host={host} port={port} user=root dbname=defaultdb connect_timeout=3");
    match tokio::time::timeout(Duration::from_secs(4), tokio_postgres::connect(&url, NoTls)).await {
        Ok(Ok((client, conn))) => {
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Some(client)
        }
        _ => None,
    }
}

/// Runs one statement (simple protocol) with the request deadline.
pub async fn exec(c: &Client, sql: &str) -> Answer {
    exec_within(c, sql, REQUEST_TIMEOUT).await
}

/// Runs one statement with the given deadline.
pub async fn exec_within(c: &Client, sql: &str, deadline: Duration) -> Answer {
    match tokio::time::timeout(deadline, c.simple_query(sql)).await {
        Err(_) => Answer::Info("timeout".into(), format!("no answer within {deadline:?}")),
        Ok(Ok(msgs)) => {
            let mut rows = Vec::new();
            let mut count = 0;
            for m in msgs {
                match m {
                    SimpleQueryMessage::Row(r) => {
                        rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                    }
                    SimpleQueryMessage::CommandComplete(n) => count = n,
                    _ => {}
                }
            }
            Answer::Ok(rows, count)
        }
        Ok(Err(e)) => {
            let msg = e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string());
            let Some(code) = e.code().map(|c| c.code().to_string()) else {
                return Answer::Info("connection".into(), msg);
            };
            classify(&code, msg, c.is_closed())
        }
    }
}

fn classify(code: &str, msg: String, closed: bool) -> Answer {
    let code_s = code.to_string();
    if closed {
        return Answer::Info(code_s, msg);
    }
    match code {
        "40001" | "25P02" | "57P03" | "53100" => Answer::Fail(code_s, msg),
        c if c.starts_with("23") => Answer::Fail(code_s, msg),
        "40003" | "58030" | "57P01" | "57014" => Answer::Info(code_s, msg),
        c if c.starts_with("08") => Answer::Info(code_s, msg),
        _ => Answer::Unexpected(code_s, msg),
    }
}

/// The first column of the first row as an integer.
pub fn first_int(rows: &Rows) -> Option<i64> {
    rows.first()?.first()?.as_deref()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_by_what_they_promise() {
        assert!(matches!(
            classify("40001", "x".into(), false),
            Answer::Fail(..)
        ));
        assert!(matches!(
            classify("23505", "x".into(), false),
            Answer::Fail(..)
        ));
        assert!(matches!(
            classify("40003", "x".into(), false),
            Answer::Info(..)
        ));
        assert!(matches!(
            classify("53100", "x".into(), false),
            Answer::Fail(..)
        ));
        assert!(matches!(
            classify("08006", "x".into(), false),
            Answer::Info(..)
        ));
        // A definite code on a connection that then closed is still unknown.
        assert!(matches!(
            classify("40001", "x".into(), true),
            Answer::Info(..)
        ));
        assert!(matches!(
            classify("42601", "x".into(), false),
            Answer::Unexpected(..)
        ));
        assert!(matches!(
            classify("XX000", "x".into(), false),
            Answer::Unexpected(..)
        ));
    }
}
