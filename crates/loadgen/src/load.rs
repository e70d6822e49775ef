//! Bulk loading for `init`: rows written as text into a bounded buffer and
//! sent as one `COPY ... FROM STDIN` (text format) or one multi-row
//! `INSERT ... VALUES` per batch; units of work spread over parallel
//! connections; a progress bar.
//!
//! ```text
//!   units (e.g. "stock of warehouse 3, items 1-10000") ──► N loader connections
//!        each: TableSink ── row ── row ── ... ──► flush every `batch` rows
//!                                  (COPY t (cols) FROM STDIN   or   INSERT INTO t (cols) VALUES (...),(...))
//!   Progress: rows done / rows expected, rate, ETA (indicatif on a terminal,
//!             a plain line every 5 s otherwise)
//! ```
//!
//! Each batch is its own transaction, so memory stays bounded by
//! `batch × row size` per connection and a distributed server never sees a
//! giant transaction. A load that fails half-way leaves a half-loaded
//! database: run `init --drop` again.

use std::collections::VecDeque;
use std::future::Future;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::SinkExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::conn::{Hosts, Session};
use crate::error::{Error, Result};

/// How rows travel to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadMethod {
    /// `COPY t (cols) FROM STDIN`, text format.
    Copy,
    /// Multi-row `INSERT INTO t (cols) VALUES (...), (...)`.
    Insert,
}

/// `value / 10^scale` as an exact decimal literal: `decimal(-1000, 2)` is
/// "-10.00".
pub fn decimal(value: i64, scale: u32) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let v = value.unsigned_abs();
    if scale == 0 {
        return format!("{sign}{v}");
    }
    let p = 10u64.pow(scale);
    format!("{sign}{}.{:0width$}", v / p, v % p, width = scale as usize)
}

/// A wall-clock time as a TIMESTAMP literal, `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn timestamp_text(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Rows formatted for one batch: COPY text format or the tuples of a
/// multi-row INSERT. Pure formatting, no I/O.
pub struct RowBuf {
    method: LoadMethod,
    buf: String,
    rows: usize,
    fields: usize,
}

impl RowBuf {
    pub fn new(method: LoadMethod) -> RowBuf {
        RowBuf {
            method,
            buf: String::new(),
            rows: 0,
            fields: 0,
        }
    }

    fn sep(&mut self) {
        if self.fields == 0 {
            if self.method == LoadMethod::Insert {
                if self.rows > 0 {
                    self.buf.push(',');
                }
                self.buf.push('(');
            }
        } else {
            self.buf.push(match self.method {
                LoadMethod::Copy => '\t',
                LoadMethod::Insert => ',',
            });
        }
        self.fields += 1;
    }

    /// An integer field.
    pub fn int(&mut self, v: i64) -> &mut Self {
        self.sep();
        self.buf.push_str(&v.to_string());
        self
    }

    /// A NUMERIC field of `value / 10^scale`.
    pub fn num(&mut self, value: i64, scale: u32) -> &mut Self {
        self.sep();
        self.buf.push_str(&decimal(value, scale));
        self
    }

    /// A text field (also used for TIMESTAMP and BYTEA hex literals).
    pub fn text(&mut self, s: &str) -> &mut Self {
        self.sep();
        match self.method {
            LoadMethod::Copy => {
                for c in s.chars() {
                    match c {
                        '\\' => self.buf.push_str("\\\\"),
                        '\t' => self.buf.push_str("\\t"),
                        '\n' => self.buf.push_str("\\n"),
                        '\r' => self.buf.push_str("\\r"),
                        c => self.buf.push(c),
                    }
                }
            }
            LoadMethod::Insert => {
                self.buf.push('\'');
                for c in s.chars() {
                    if c == '\'' {
                        self.buf.push('\'');
                    }
                    self.buf.push(c);
                }
                self.buf.push('\'');
            }
        }
        self
    }

    /// A NULL field.
    pub fn null(&mut self) -> &mut Self {
        self.sep();
        self.buf.push_str(match self.method {
            LoadMethod::Copy => "\\N",
            LoadMethod::Insert => "NULL",
        });
        self
    }

    /// Ends the row.
    pub fn end_row(&mut self) {
        match self.method {
            LoadMethod::Copy => self.buf.push('\n'),
            LoadMethod::Insert => self.buf.push(')'),
        }
        self.fields = 0;
        self.rows += 1;
    }

    /// Complete rows buffered.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The buffered text; the buffer starts over empty.
    pub fn take(&mut self) -> String {
        self.rows = 0;
        self.fields = 0;
        std::mem::take(&mut self.buf)
    }
}

/// Rows of one table on their way to the server, sent every `batch` rows.
pub struct TableSink<'a> {
    session: &'a Session,
    table: &'static str,
    columns: &'static str,
    batch: usize,
    progress: &'a Progress,
    rows: RowBuf,
}

impl<'a> TableSink<'a> {
    /// `columns` is the parenthesised column list, `(a, b, c)`.
    pub fn new(
        session: &'a Session,
        table: &'static str,
        columns: &'static str,
        method: LoadMethod,
        batch: usize,
        progress: &'a Progress,
    ) -> TableSink<'a> {
        TableSink {
            session,
            table,
            columns,
            batch: batch.max(1),
            progress,
            rows: RowBuf::new(method),
        }
    }

    /// The row being written.
    pub fn row(&mut self) -> &mut RowBuf {
        &mut self.rows
    }

    /// Ends the row; sends the batch when it is full.
    pub async fn end_row(&mut self) -> Result<()> {
        self.rows.end_row();
        if self.rows.rows() >= self.batch {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends what is buffered.
    pub async fn flush(&mut self) -> Result<()> {
        let n = self.rows.rows();
        if n == 0 {
            return Ok(());
        }
        let method = self.rows.method;
        let data = self.rows.take();
        match method {
            LoadMethod::Copy => {
                let stmt = format!("COPY {} {} FROM STDIN", self.table, self.columns);
                let client = self.session.client();
                let sink = client
                    .copy_in::<_, bytes::Bytes>(stmt.as_str())
                    .await
                    .map_err(|e| Error::sql(&stmt, &e))?;
                futures::pin_mut!(sink);
                sink.send(bytes::Bytes::from(data))
                    .await
                    .map_err(|e| Error::sql(&stmt, &e))?;
                sink.as_mut()
                    .finish()
                    .await
                    .map_err(|e| Error::sql(&stmt, &e))?;
            }
            LoadMethod::Insert => {
                let stmt = format!("INSERT INTO {} {} VALUES {data}", self.table, self.columns);
                self.session.batch(&stmt).await?;
            }
        }
        self.progress.add(n as u64);
        Ok(())
    }

    /// Sends the rest. Must be called: dropping a sink loses its rows.
    pub async fn finish(mut self) -> Result<()> {
        self.flush().await
    }
}

/// Rows loaded so far, shown as a bar on a terminal and as a plain line
/// every few seconds otherwise. Both go to stderr.
pub struct Progress {
    rows: AtomicU64,
    total: u64,
    label: String,
    started: Instant,
    done: AtomicBool,
}

impl Progress {
    /// Starts showing progress towards `total` rows (an estimate).
    pub fn start(label: &str, total: u64) -> (Arc<Progress>, tokio::task::JoinHandle<()>) {
        let p = Arc::new(Progress {
            rows: AtomicU64::new(0),
            total: total.max(1),
            label: label.to_string(),
            started: Instant::now(),
            done: AtomicBool::new(false),
        });
        let shown = p.clone();
        let task = tokio::spawn(async move { shown.show().await });
        (p, task)
    }

    pub fn add(&self, rows: u64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
    }

    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// The plain progress line.
    pub fn line(&self) -> String {
        let rows = self.rows();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = rows as f64 / secs;
        let eta = if rate > 0.0 && rows < self.total {
            format!("{:.0} s", (self.total - rows) as f64 / rate)
        } else {
            "-".into()
        };
        format!(
            "{}: {rows} / ~{} rows ({:.0}%), {rate:.0} rows/s, {secs:.0} s elapsed, ETA {eta}",
            self.label,
            self.total,
            100.0 * rows as f64 / self.total as f64
        )
    }

    async fn show(self: Arc<Self>) {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(self.total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{elapsed_precise}] {wide_bar} {human_pos}/~{human_len} rows ({per_sec}, ETA {eta})",
            ) {
                bar.set_style(style);
            }
            bar.set_message(self.label.clone());
            while !self.done.load(Ordering::Relaxed) {
                bar.set_position(self.rows().min(self.total));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            bar.finish_and_clear();
        } else {
            let mut last = Instant::now();
            while !self.done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if last.elapsed() >= Duration::from_secs(5) {
                    eprintln!("{}", self.line());
                    last = Instant::now();
                }
            }
        }
    }

    /// Stops the display and prints the final line.
    pub async fn finish(&self, task: tokio::task::JoinHandle<()>) {
        self.done.store(true, Ordering::Relaxed);
        let _ = task.await;
        let secs = self.started.elapsed().as_secs_f64();
        eprintln!(
            "{}: {} rows in {secs:.1} s ({:.0} rows/s)",
            self.label,
            self.rows(),
            self.rows() as f64 / secs.max(1e-3)
        );
    }
}

/// Runs `work` on every unit over `concurrency` connections (spread over
/// the hosts). The first error stops the others and is returned.
pub async fn parallel<U, F, Fut>(
    hosts: &Arc<Hosts>,
    concurrency: usize,
    units: Vec<U>,
    work: F,
) -> Result<()>
where
    U: Send + 'static,
    F: Fn(U, Session) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Session>> + Send + 'static,
{
    let queue = Arc::new(Mutex::new(VecDeque::from(units)));
    let work = Arc::new(work);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (queue, work, hosts) = (queue.clone(), work.clone(), hosts.clone());
        tasks.spawn(async move {
            let mut session = None;
            loop {
                let unit = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                let Some(unit) = unit else { return Ok(()) };
                let s = match session.take() {
                    Some(s) => s,
                    None => hosts.connect().await?,
                };
                session = Some(work(unit, s).await?);
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let outcome = match joined {
            Ok(r) => r,
            Err(e) => Err(Error::Usage(format!("a loader task failed: {e}"))),
        };
        if let Err(e) = outcome {
            tasks.abort_all();
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact_literals() {
        assert_eq!(decimal(1234, 2), "12.34");
        assert_eq!(decimal(-1000, 2), "-10.00");
        assert_eq!(decimal(5, 4), "0.0005");
        assert_eq!(decimal(30_000_000, 2), "300000.00");
        assert_eq!(decimal(7, 0), "7");
        assert_eq!(decimal(i64::MIN, 2), "-92233720368547758.08");
    }

    #[test]
    fn timestamps_are_civil_utc() {
        assert_eq!(timestamp_text(UNIX_EPOCH), "1970-01-01 00:00:00");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661); // 2000-02-29 01:01:01
        assert_eq!(timestamp_text(t), "2000-02-29 01:01:01");
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_599); // 2024-12-31 23:59:59
        assert_eq!(timestamp_text(t), "2024-12-31 23:59:59");
    }

    #[test]
    fn copy_rows_escape_text_and_mark_nulls() {
        let mut s = RowBuf::new(LoadMethod::Copy);
        s.int(1).text("a\tb\\c\nd").null().num(-5, 2);
        s.end_row();
        s.int(2).text("x").text("\\x00ff").num(1, 0);
        s.end_row();
        assert_eq!(s.rows(), 2);
        assert_eq!(
            s.take(),
            "1\ta\\tb\\\\c\\nd\t\\N\t-0.05\n2\tx\t\\\\x00ff\t1\n"
        );
        assert_eq!((s.rows(), s.take().as_str()), (0, ""));
    }

    #[test]
    fn insert_rows_quote_text_and_separate_tuples() {
        let mut s = RowBuf::new(LoadMethod::Insert);
        s.int(1).text("it's").null().num(250, 2);
        s.end_row();
        s.int(2).text("\\x00ff").text("b").int(-3);
        s.end_row();
        assert_eq!(s.take(), "(1,'it''s',NULL,2.50),(2,'\\x00ff','b',-3)");
        // After a flush the next batch starts without a leading comma.
        s.int(3).end_row();
        assert_eq!(s.take(), "(3)");
    }
}
