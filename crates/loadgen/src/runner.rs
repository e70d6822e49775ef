//! The driver shared by every workload's `run`: terminals, the retry
//! policy, the once-a-second reporter and the outputs.
//!
//! ```text
//!   terminal 1 ─┐   loop: pick txn ─ keying time ─ attempt(s) ─ record ─ think time
//!   terminal 2 ─┼─► Pool (N sessions over Hosts) ─► server(s)
//!   terminal K ─┘        │
//!                        ▼
//!                     Recorder ──(every second)──► Series ──► live line, HDR log
//!                                                     └──► Summary, JSON, plot
//! ```
//!
//! An attempt that fails is handled by its [`ErrorClass`]:
//!
//! - retryable (40001, 40P01): ROLLBACK on the same connection, count a
//!   retry, run the same transaction again;
//! - connection: count an error, drop the connection (its host is marked
//!   dead), take another connection and run the transaction again. A
//!   COMMIT cut off this way may have committed: running it again is a
//!   second business transaction, which every workload here tolerates
//!   (TPC-C's consistency conditions and the bank's conservation hold);
//! - fatal: the run stops at once, prints what it has measured so far and
//!   returns the error, which names the statement and the server's answer.
//!
//! The run ends `ramp + duration` after it starts; terminals still inside a
//! transaction then are cancelled (their connections dropped, so the server
//! rolls them back) and nothing after the end is counted.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use rand::Rng;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::conn::{Hosts, Pool, Session};
use crate::error::{Error, ErrorClass, Result};
use crate::stats::{Outcome, Recorder, Second, Series, Summary};

/// One simulated user: it chooses transactions and runs them.
pub trait Terminal: Send + 'static {
    /// Chooses the next transaction and its inputs; returns its type (an
    /// index into the workload's type names). Retries run the same inputs.
    fn next(&mut self) -> usize;

    /// Time to wait before submitting transaction `kind` (TPC-C's keying
    /// time); zero by default.
    fn keying_time(&mut self, _kind: usize) -> Duration {
        Duration::ZERO
    }

    /// Time to wait after it completed (TPC-C's think time); zero by
    /// default.
    fn think_time(&mut self, _kind: usize) -> Duration {
        Duration::ZERO
    }

    /// Runs the chosen transaction once, from BEGIN to COMMIT (or the
    /// business rollback). On error the driver rolls back or drops the
    /// session.
    fn execute<'a>(&'a mut self, session: &'a mut Session) -> BoxFuture<'a, Result<Outcome>>;
}

/// Files to write at the end of a run (and during it, for the HDR log).
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    pub json: Option<PathBuf>,
    pub histograms: Option<PathBuf>,
    pub plot: Option<PathBuf>,
}

/// What a run is.
pub struct RunConfig {
    /// `tpcc`, `bank`, `kv`.
    pub workload: &'static str,
    /// Transaction type names, indexed by [`Terminal::next`].
    pub names: &'static [&'static str],
    pub ramp: Duration,
    pub duration: Duration,
    /// Sessions in use at once.
    pub connections: usize,
    pub outputs: Outputs,
}

/// What a run measured, and the fatal error that stopped it, if one did.
pub struct RunResult {
    pub series: Series,
    pub summary: Summary,
    pub fatal: Option<Error>,
}

/// Checks the files can be written before the run spends minutes.
pub fn check_outputs(o: &Outputs) -> Result<()> {
    if let Some(p) = &o.plot {
        crate::plot::check_path(p)?;
    }
    for p in [&o.json, &o.histograms, &o.plot].into_iter().flatten() {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|e| Error::file(p, e))?;
    }
    Ok(())
}

async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    if d.is_zero() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

/// Runs one business transaction until it completes, retrying conflicts
/// and reconnecting after connection losses.
async fn run_transaction(
    t: &mut dyn Terminal,
    kind: usize,
    pool: &Pool,
    rec: &Recorder,
) -> Result<Outcome> {
    let mut attempt: u32 = 0;
    loop {
        let mut lease = pool.lease().await;
        let session = pool.session(&mut lease).await?;
        let err = match t.execute(session).await {
            Ok(outcome) => {
                pool.give_back(lease);
                return Ok(outcome);
            }
            Err(e) => e,
        };
        match err.class() {
            ErrorClass::Retryable => {
                rec.retry(kind);
                let rollback = match lease.session.as_ref() {
                    Some(s) => s.batch("ROLLBACK").await,
                    None => Ok(()),
                };
                match rollback {
                    Ok(()) => pool.give_back(lease),
                    Err(e) if e.class() == ErrorClass::Connection => {
                        pool.discard(lease, &e.to_string())
                    }
                    // The session is in a state we cannot vouch for: drop
                    // it (the server rolls back) and start afresh.
                    Err(_) => pool.close(lease),
                }
                attempt = attempt.saturating_add(1);
                // A little jitter so that two transactions that keep
                // conflicting do not keep colliding in lockstep.
                let cap = (attempt.min(20) * 5) as u64;
                let ms = rand::rng().random_range(0..=cap);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            ErrorClass::Connection => {
                rec.error(kind);
                pool.discard(lease, &err.to_string());
            }
            ErrorClass::Fatal => return Err(err),
        }
    }
}

async fn terminal_loop(
    mut t: Box<dyn Terminal>,
    pool: Arc<Pool>,
    rec: Arc<Recorder>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    loop {
        let kind = t.next();
        let keying = t.keying_time(kind);
        if !sleep_or_stop(keying, &mut stop).await {
            return Ok(());
        }
        let start = Instant::now();
        let outcome = run_transaction(t.as_mut(), kind, &pool, &rec).await?;
        rec.record(kind, start.elapsed(), outcome);
        let think = t.think_time(kind);
        if !sleep_or_stop(think, &mut stop).await {
            return Ok(());
        }
    }
}

/// The live output: a header, then one line per type per second.
pub fn header() -> String {
    format!(
        "{:>8} {:<13} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7}",
        "elapsed", "type", "ops/s", "p50(ms)", "p95(ms)", "p99(ms)", "retries", "errors"
    )
}

/// The lines of one second.
pub fn live_lines(names: &[String], s: &Second) -> Vec<String> {
    names
        .iter()
        .zip(&s.kinds)
        .map(|(name, k)| {
            let lat = |v: f64| {
                if k.ops == 0 {
                    "-".to_string()
                } else {
                    format!("{v:.1}")
                }
            };
            format!(
                "{:>7.0}s {:<13} {:>9.1} {:>9} {:>9} {:>9} {:>8} {:>7}{}",
                s.elapsed_s,
                name,
                k.ops_per_s,
                lat(k.p50_ms),
                lat(k.p95_ms),
                lat(k.p99_ms),
                k.retries,
                k.errors,
                if s.warmup { "  (warm-up)" } else { "" }
            )
        })
        .collect()
}

/// The final table.
pub fn summary_lines(s: &Summary) -> Vec<String> {
    let mut out = vec![format!(
        "{:>8} {:<13} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7}",
        "elapsed",
        "type",
        "count",
        "ops/s",
        "p50(ms)",
        "p95(ms)",
        "p99(ms)",
        "max(ms)",
        "retries",
        "errors"
    )];
    for k in &s.kinds {
        out.push(format!(
            "{:>7.1}s {:<13} {:>9} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>8} {:>7}",
            s.measured_s,
            k.name,
            k.count,
            k.ops_per_s,
            k.p50_ms,
            k.p95_ms,
            k.p99_ms,
            k.max_ms,
            k.retries,
            k.errors
        ));
    }
    let rate = if s.measured_s > 0.0 {
        s.total_count as f64 / s.measured_s
    } else {
        0.0
    };
    out.push(format!(
        "{:>7.1}s {:<13} {:>9} {:>9.1} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7}",
        s.measured_s, "total", s.total_count, rate, "", "", "", "", s.total_retries, s.total_errors
    ));
    out.push(
        "retries: attempts rolled back on 40001/40P01 and run again; errors: attempts cut off \
         by a lost connection and run again on another connection"
            .into(),
    );
    out
}

/// Runs `terminals` against `hosts` for the configured time, printing a
/// line per type every second.
pub async fn drive(
    hosts: Arc<Hosts>,
    terminals: Vec<Box<dyn Terminal>>,
    cfg: &RunConfig,
) -> Result<RunResult> {
    let rec = Arc::new(Recorder::new(cfg.names.len()));
    let pool = Arc::new(Pool::new(hosts, cfg.connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (fatal_tx, mut fatal_rx) = mpsc::channel::<Error>(1);

    // The HDR interval log, written as the run goes.
    let mut log_file = match &cfg.outputs.histograms {
        Some(p) => Some((
            std::io::BufWriter::new(std::fs::File::create(p).map_err(|e| Error::file(p, e))?),
            p.clone(),
        )),
        None => None,
    };
    let mut serializer = V2DeflateSerializer::new();
    let wall_start = SystemTime::now();
    let mut hdr_log = match log_file.as_mut() {
        Some((w, p)) => Some(
            IntervalLogWriterBuilder::new()
                .add_comment(&format!(
                    "concord workload run {}: one interval per second per transaction type (tag); values in microseconds",
                    cfg.workload
                ))
                .with_start_time(wall_start)
                .with_base_time(wall_start)
                .with_max_value_divisor(1000.0)
                .begin_log_with(w, &mut serializer)
                .map_err(|e| Error::file(p.clone(), e))?,
        ),
        None => None,
    };

    let start = Instant::now();
    let end = start + cfg.ramp + cfg.duration;
    let mut tasks = JoinSet::new();
    for t in terminals {
        let (pool, rec, stop) = (pool.clone(), rec.clone(), stop_rx.clone());
        let fatal = fatal_tx.clone();
        tasks.spawn(async move {
            if let Err(e) = terminal_loop(t, pool, rec, stop).await {
                let _ = fatal.try_send(e);
            }
        });
    }
    drop(fatal_tx);

    let mut series = Series::new(cfg.names);
    let mut fatal = None;
    let mut last = start;
    let mut next_tick = start + Duration::from_secs(1);
    let mut out = std::io::stdout();
    let mut lines_since_header = usize::MAX;
    loop {
        let tick = next_tick.min(end);
        tokio::select! {
            _ = tokio::time::sleep_until(tick.into()) => {}
            Some(e) = fatal_rx.recv() => { fatal = Some(e); }
        }
        let now = if fatal.is_some() {
            Instant::now()
        } else {
            tick
        };
        let intervals = rec.take();
        let len = now.saturating_duration_since(last);
        let warmup = now.saturating_duration_since(start) <= cfg.ramp && !cfg.ramp.is_zero();
        if let Some(log) = hdr_log.as_mut() {
            for (name, i) in cfg.names.iter().zip(&intervals) {
                log.write_histogram(
                    &i.hist,
                    last.saturating_duration_since(start),
                    len,
                    Tag::new(name),
                )
                .map_err(|e| Error::Histogram(format!("{e:?}")))?;
            }
        }
        series.push(
            now.saturating_duration_since(start),
            len,
            warmup,
            &intervals,
        );
        if lines_since_header >= 20 {
            let _ = writeln!(out, "{}", header());
            lines_since_header = 0;
        }
        lines_since_header += 1;
        if let Some(second) = series.seconds().last() {
            for line in live_lines(series.names(), second) {
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = out.flush();
        last = now;
        if fatal.is_some() || now >= end {
            break;
        }
        next_tick += Duration::from_secs(1);
    }
    let _ = stop_tx.send(true);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    drop(hdr_log);
    if let Some((mut w, p)) = log_file {
        w.flush().map_err(|e| Error::file(p, e))?;
    }
    let summary = series.summary();
    Ok(RunResult {
        series,
        summary,
        fatal,
    })
}

/// The JSON file: the summary, the workload's own figures and every second.
#[derive(Serialize)]
struct JsonReport<'a> {
    workload: &'a str,
    summary: &'a Summary,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    result: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    fatal_error: Option<String>,
    series: &'a [Second],
}

/// Prints the final table and writes the JSON and the plot.
pub fn finish(cfg: &RunConfig, result: &RunResult, extra: serde_json::Value) -> Result<()> {
    println!();
    for line in summary_lines(&result.summary) {
        println!("{line}");
    }
    if let Some(p) = &cfg.outputs.json {
        let report = JsonReport {
            workload: cfg.workload,
            summary: &result.summary,
            result: extra,
            fatal_error: result.fatal.as_ref().map(|e| e.to_string()),
            series: result.series.seconds(),
        };
        let f = std::fs::File::create(p).map_err(|e| Error::file(p, e))?;
        let mut w = std::io::BufWriter::new(f);
        serde_json::to_writer_pretty(&mut w, &report)?;
        w.flush().map_err(|e| Error::file(p, e))?;
    }
    if let Some(p) = &cfg.outputs.plot {
        crate::plot::draw(
            p,
            &format!("concord workload run {}", cfg.workload),
            result.series.names(),
            result.series.seconds(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::KindSecond;

    #[test]
    fn live_lines_mark_the_warmup_and_blank_latencies_of_idle_types() {
        let k = |ops| KindSecond {
            ops,
            ops_per_s: ops as f64,
            p50_ms: 1.25,
            p95_ms: 2.0,
            p99_ms: 3.0,
            max_ms: 4.0,
            retries: 2,
            errors: 1,
        };
        let s = Second {
            elapsed_s: 3.0,
            warmup: true,
            kinds: vec![k(10), k(0)],
        };
        let lines = live_lines(&["a".into(), "b".into()], &s);
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].contains("10.0")
                && lines[0].contains("1.2")
                && lines[0].ends_with("(warm-up)")
        );
        assert!(lines[1].contains(" - "), "{}", lines[1]);
        assert_eq!(header().len(), lines[1].len() - "  (warm-up)".len());
    }
}
