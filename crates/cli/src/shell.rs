//! `concord sql`: a SQL shell that speaks the PostgreSQL protocol.
//!
//! It is an ordinary PostgreSQL client (`tokio-postgres`, simple query
//! protocol), so it works against any node, and against PostgreSQL itself.
//! Lines are edited with rustyline (history in `~/.concord_sql_history`); a
//! statement may span lines and ends with `;`. Results print as aligned
//! tables in the style of psql.
//!
//! Shell commands: `\q` quits, `\dt` lists tables, `\?` helps.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// Flags of `concord sql`.
#[derive(Args)]
pub struct SqlArgs {
    /// Connection URL.
    #[arg(
        long,
        default_value = "postgres://root@127.0.0.1:5432/defaultdb",
        env = "CONCORD_URL"
    )]
    pub url: String,
    /// Run these statements (each flag one query string) and exit.
    #[arg(short = 'e', long = "execute")]
    pub execute: Vec<String>,
    /// How long to keep retrying the connection at startup.
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    pub wait: Duration,
}

async fn connect(url: &str, wait: Duration) -> Result<Client> {
    let deadline = Instant::now() + wait;
    loop {
        match tokio_postgres::connect(url, NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        eprintln!("connection lost: {e}");
                    }
                });
                return Ok(client);
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(anyhow!("cannot connect to {url}: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Formats the messages of one simple query as psql would.
pub fn format_results(messages: &[SimpleQueryMessage]) -> String {
    let mut out = String::new();
    let mut header: Option<Vec<String>> = None;
    let mut rows: Vec<Vec<String>> = Vec::new();
    let flush =
        |out: &mut String, header: &mut Option<Vec<String>>, rows: &mut Vec<Vec<String>>| {
            if let Some(h) = header.take() {
                out.push_str(&format_table(&h, rows));
                rows.clear();
            }
        };
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                flush(&mut out, &mut header, &mut rows);
                header = Some(cols.iter().map(|c| c.name().to_string()).collect());
            }
            SimpleQueryMessage::Row(r) => {
                if header.is_none() {
                    header = Some(r.columns().iter().map(|c| c.name().to_string()).collect());
                }
                rows.push(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("NULL").to_string())
                        .collect(),
                );
            }
            SimpleQueryMessage::CommandComplete(n) => {
                if header.is_some() {
                    flush(&mut out, &mut header, &mut rows);
                } else {
                    out.push_str(&format!("OK {n}\n"));
                }
            }
            _ => {}
        }
    }
    flush(&mut out, &mut header, &mut rows);
    out
}

/// An aligned table with a row count footer.
pub fn format_table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, v) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(v.chars().count());
            }
        }
    }
    let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w.saturating_sub(s.chars().count())));
    let mut out = String::new();
    let line: Vec<String> = header
        .iter()
        .zip(&widths)
        .map(|(h, w)| format!(" {} ", pad(h, *w)))
        .collect();
    out.push_str(line.join("|").trim_end());
    out.push('\n');
    let sep: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
    out.push_str(&sep.join("+"));
    out.push('\n');
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!(" {} ", pad(v, *w)))
            .collect();
        out.push_str(line.join("|").trim_end());
        out.push('\n');
    }
    out.push_str(&format!(
        "({} row{})\n",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    out
}

fn format_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("ERROR: {}\nSQLSTATE: {}", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!("\nDETAIL: {d}"));
            }
            s
        }
        None => format!("ERROR: {e}"),
    }
}

/// Runs one query string and prints its results. Returns false on error.
async fn run_query(client: &Client, sql: &str) -> bool {
    match client.simple_query(sql).await {
        Ok(msgs) => {
            print!("{}", format_results(&msgs));
            true
        }
        Err(e) => {
            eprintln!("{}", format_error(&e));
            false
        }
    }
}

/// Whether `buf` holds a complete statement: ends with `;` outside quotes.
fn statement_complete(buf: &str) -> bool {
    let mut in_single = false;
    let mut in_double = false;
    let mut last_significant = None;
    for c in buf.chars() {
        match c {
            '\'' if !in_double => in_single = !in_single,
            '"' if !in_single => in_double = !in_double,
            _ => {}
        }
        if !c.is_whitespace() {
            last_significant = Some((c, in_single || in_double));
        }
    }
    matches!(last_significant, Some((';', false)))
}

/// Runs the shell.
pub async fn run(args: SqlArgs) -> Result<()> {
    let client = connect(&args.url, args.wait).await?;
    if !args.execute.is_empty() {
        for sql in &args.execute {
            if !run_query(&client, sql).await {
                bail!("statement failed");
            }
        }
        return Ok(());
    }
    println!(
        "Connected to {}. End statements with ';'. \\q quits, \\? helps.",
        args.url
    );
    let history =
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".concord_sql_history"));
    // rustyline blocks: run it on a thread and hand lines over a channel.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<String>>(1);
    let (ack_tx, ack_rx) = std::sync::mpsc::channel::<()>();
    let history_for_thread = history.clone();
    std::thread::spawn(move || -> Result<()> {
        let mut rl = rustyline::DefaultEditor::new().context("terminal")?;
        if let Some(h) = &history_for_thread {
            let _ = rl.load_history(h);
        }
        let mut buf = String::new();
        loop {
            let prompt = if buf.is_empty() {
                "concord> "
            } else {
                "      -> "
            };
            match rl.readline(prompt) {
                Ok(line) => {
                    let trimmed = line.trim();
                    if buf.is_empty() && trimmed == "\\q" {
                        break;
                    }
                    if buf.is_empty() && trimmed.starts_with('\\') {
                        let _ = rl.add_history_entry(trimmed);
                        if tx.blocking_send(Some(trimmed.to_string())).is_err() {
                            break;
                        }
                        let _ = ack_rx.recv();
                        continue;
                    }
                    buf.push_str(&line);
                    buf.push('\n');
                    if statement_complete(&buf) {
                        let stmt = buf.trim().to_string();
                        let _ = rl.add_history_entry(&stmt);
                        buf.clear();
                        if tx.blocking_send(Some(stmt)).is_err() {
                            break;
                        }
                        let _ = ack_rx.recv();
                    }
                }
                Err(rustyline::error::ReadlineError::Interrupted) => buf.clear(),
                Err(_) => break,
            }
        }
        if let Some(h) = &history_for_thread {
            let _ = rl.save_history(h);
        }
        let _ = tx.blocking_send(None);
        Ok(())
    });
    while let Some(Some(input)) = rx.recv().await {
        match input.as_str() {
            "\\q" => break,
            "\\?" => println!("\\q quit   \\dt list tables   statements end with ';'"),
            "\\dt" => {
                run_query(&client, "SHOW TABLES").await;
            }
            s if s.starts_with('\\') => eprintln!("unknown command {s}; \\? lists commands"),
            sql => {
                run_query(&client, sql).await;
            }
        }
        let _ = ack_tx.send(());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_end_at_a_semicolon_outside_quotes() {
        assert!(statement_complete("SELECT 1;"));
        assert!(statement_complete("SELECT 1;  \n"));
        assert!(!statement_complete("SELECT ';'"));
        assert!(!statement_complete("SELECT 1"));
        assert!(statement_complete("SELECT ';';"));
    }

    #[test]
    fn tables_are_aligned() {
        let t = format_table(
            &["id".into(), "name".into()],
            &[
                vec!["1".into(), "alice".into()],
                vec!["22".into(), "b".into()],
            ],
        );
        assert_eq!(
            t,
            " id | name\n----+-------\n 1  | alice\n 22 | b\n(2 rows)\n"
        );
    }
}
