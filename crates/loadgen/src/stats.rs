//! Latency and throughput bookkeeping.
//!
//! Workers record into a shared [`Recorder`]: one HDR histogram (1 µs to
//! 60 s, 3 significant figures) and a few counters per transaction type,
//! each behind its own mutex. Once a second the reporter swaps them out
//! ([`Recorder::take`]) and hands the [`Interval`]s to [`Series::push`],
//! which keeps the per-second figures for the live line, the JSON and the
//! plot, and merges the intervals after the warm-up into the totals of the
//! final [`Summary`].
//!
//! ```text
//!   workers ──record──► Recorder (per type: histogram + counters)
//!                          │ take() every second
//!                          ▼
//!                       Series ──► Second (live line, JSON, plot, HDR log)
//!                          │ after the ramp only
//!                          ▼
//!                       totals ──► Summary (final table, JSON, tpmC)
//! ```
//!
//! Latency is the whole business transaction as the worker saw it, from the
//! first attempt to the answer to COMMIT, including retries and reconnects
//! (and, in TPC-C with --wait, not the keying and think times).

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Smallest and largest latencies recorded, in microseconds.
const LOWEST_US: u64 = 1;
const HIGHEST_US: u64 = 60_000_000;
const SIGFIG: u8 = 3;

/// A fresh latency histogram (µs).
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; this cannot fail.
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIG)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

/// How a business transaction ended, when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    /// Rolled back on purpose as part of the business transaction (the 1%
    /// of TPC-C new-orders with an unused item): a success.
    RolledBack,
}

/// One type's figures over one interval.
#[derive(Clone)]
pub struct Interval {
    pub hist: Histogram<u64>,
    pub committed: u64,
    pub rolled_back: u64,
    /// Attempts rolled back on 40001/40P01 and run again.
    pub retries: u64,
    /// Attempts cut short by a lost connection and run again elsewhere.
    pub errors: u64,
}

impl Interval {
    pub fn new() -> Interval {
        Interval {
            hist: new_histogram(),
            committed: 0,
            rolled_back: 0,
            retries: 0,
            errors: 0,
        }
    }

    /// Completed business transactions.
    pub fn count(&self) -> u64 {
        self.committed + self.rolled_back
    }

    /// The latency at quantile `q`, in milliseconds (0 with no samples).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            0.0
        } else {
            ms(self.hist.value_at_quantile(q))
        }
    }

    /// The highest latency, in milliseconds (0 with no samples).
    pub fn max_ms(&self) -> f64 {
        if self.hist.is_empty() {
            0.0
        } else {
            ms(self.hist.max())
        }
    }

    fn merge(&mut self, other: &Interval) {
        // Same bounds on both sides: add cannot fail.
        let _ = self.hist.add(&other.hist);
        self.committed += other.committed;
        self.rolled_back += other.rolled_back;
        self.retries += other.retries;
        self.errors += other.errors;
    }
}

impl Default for Interval {
    fn default() -> Self {
        Interval::new()
    }
}

/// Where workers record. Shared by all workers of a run.
pub struct Recorder {
    kinds: Vec<Mutex<Interval>>,
}

impl Recorder {
    pub fn new(kinds: usize) -> Recorder {
        Recorder {
            kinds: (0..kinds).map(|_| Mutex::new(Interval::new())).collect(),
        }
    }

    fn with(&self, kind: usize, f: impl FnOnce(&mut Interval)) {
        if let Some(m) = self.kinds.get(kind) {
            let mut i = m.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut i);
        }
    }

    /// A business transaction of type `kind` completed in `latency`.
    pub fn record(&self, kind: usize, latency: Duration, outcome: Outcome) {
        let us = (latency.as_micros() as u64).clamp(LOWEST_US, HIGHEST_US);
        self.with(kind, |i| {
            i.hist.saturating_record(us);
            match outcome {
                Outcome::Committed => i.committed += 1,
                Outcome::RolledBack => i.rolled_back += 1,
            }
        });
    }

    pub fn retry(&self, kind: usize) {
        self.with(kind, |i| i.retries += 1);
    }

    pub fn error(&self, kind: usize) {
        self.with(kind, |i| i.errors += 1);
    }

    /// The intervals since the last call, one per type; the recorder starts
    /// over from zero.
    pub fn take(&self) -> Vec<Interval> {
        self.kinds
            .iter()
            .map(|m| {
                let mut i = m.lock().unwrap_or_else(|p| p.into_inner());
                let out = i.clone();
                i.hist.reset();
                i.committed = 0;
                i.rolled_back = 0;
                i.retries = 0;
                i.errors = 0;
                out
            })
            .collect()
    }
}

/// Milliseconds of a histogram quantile (µs inside).
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// One type's figures in one second of the run.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct KindSecond {
    pub ops: u64,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub retries: u64,
    pub errors: u64,
}

/// One second of the run.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Second {
    /// Seconds since the start of the run (warm-up included) at the end of
    /// this interval.
    pub elapsed_s: f64,
    /// In the warm-up (--ramp): shown live, left out of the summary.
    pub warmup: bool,
    /// Per type, in the workload's type order.
    pub kinds: Vec<KindSecond>,
}

/// One type's figures over the measured window.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct KindSummary {
    pub name: String,
    /// Completed business transactions (committed + rolled back on purpose).
    pub count: u64,
    pub committed: u64,
    pub rolled_back: u64,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub retries: u64,
    pub errors: u64,
}

/// The final figures over the measured window (after the ramp).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    pub measured_s: f64,
    pub kinds: Vec<KindSummary>,
    pub total_count: u64,
    pub total_retries: u64,
    pub total_errors: u64,
}

/// The run's history: every second, plus the merged measured intervals.
pub struct Series {
    names: Vec<String>,
    seconds: Vec<Second>,
    totals: Vec<Interval>,
    measured: Duration,
}

impl Series {
    pub fn new(names: &[&str]) -> Series {
        Series {
            names: names.iter().map(|s| s.to_string()).collect(),
            seconds: Vec::new(),
            totals: names.iter().map(|_| Interval::new()).collect(),
            measured: Duration::ZERO,
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Adds one interval of length `len` ending `elapsed` after the start.
    /// Warm-up intervals are kept in the series but not in the totals.
    pub fn push(
        &mut self,
        elapsed: Duration,
        len: Duration,
        warmup: bool,
        intervals: &[Interval],
    ) -> &Second {
        let secs = len.as_secs_f64().max(1e-9);
        let kinds = intervals
            .iter()
            .map(|i| KindSecond {
                ops: i.count(),
                ops_per_s: i.count() as f64 / secs,
                p50_ms: i.quantile_ms(0.50),
                p95_ms: i.quantile_ms(0.95),
                p99_ms: i.quantile_ms(0.99),
                max_ms: i.max_ms(),
                retries: i.retries,
                errors: i.errors,
            })
            .collect();
        if !warmup {
            for (total, i) in self.totals.iter_mut().zip(intervals) {
                total.merge(i);
            }
            self.measured += len;
        }
        self.seconds.push(Second {
            elapsed_s: elapsed.as_secs_f64(),
            warmup,
            kinds,
        });
        self.seconds
            .last()
            .unwrap_or_else(|| unreachable!("just pushed"))
    }

    pub fn seconds(&self) -> &[Second] {
        &self.seconds
    }

    /// The measured totals of type `kind`.
    pub fn total(&self, kind: usize) -> Option<&Interval> {
        self.totals.get(kind)
    }

    /// The length of the measured window.
    pub fn measured(&self) -> Duration {
        self.measured
    }

    pub fn summary(&self) -> Summary {
        let secs = self.measured.as_secs_f64();
        let kinds: Vec<KindSummary> = self
            .names
            .iter()
            .zip(&self.totals)
            .map(|(name, t)| KindSummary {
                name: name.clone(),
                count: t.count(),
                committed: t.committed,
                rolled_back: t.rolled_back,
                ops_per_s: if secs > 0.0 {
                    t.count() as f64 / secs
                } else {
                    0.0
                },
                p50_ms: t.quantile_ms(0.50),
                p95_ms: t.quantile_ms(0.95),
                p99_ms: t.quantile_ms(0.99),
                max_ms: t.max_ms(),
                retries: t.retries,
                errors: t.errors,
            })
            .collect();
        Summary {
            measured_s: secs,
            total_count: kinds.iter().map(|k| k.count).sum(),
            total_retries: kinds.iter().map(|k| k.retries).sum(),
            total_errors: kinds.iter().map(|k| k.errors).sum(),
            kinds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_hands_over_what_was_recorded_and_starts_over() {
        let r = Recorder::new(2);
        r.record(0, Duration::from_millis(2), Outcome::Committed);
        r.record(0, Duration::from_millis(4), Outcome::RolledBack);
        r.retry(0);
        r.error(1);
        r.record(7, Duration::from_millis(1), Outcome::Committed); // unknown type: ignored
        let got = r.take();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].committed, got[0].rolled_back, got[0].count()),
            (1, 1, 2)
        );
        assert_eq!((got[0].retries, got[0].errors), (1, 0));
        assert_eq!((got[1].count(), got[1].errors), (0, 1));
        assert_eq!(got[0].hist.len(), 2);
        let again = r.take();
        assert!(again.iter().all(|i| i.count() == 0 && i.hist.is_empty()));
    }

    #[test]
    fn latencies_outside_the_histogram_range_are_clamped_not_lost() {
        let r = Recorder::new(1);
        r.record(0, Duration::ZERO, Outcome::Committed);
        r.record(0, Duration::from_secs(3600), Outcome::Committed);
        let i = &r.take()[0];
        assert_eq!(i.hist.len(), 2);
        assert!(i.hist.max() >= 59_000_000);
    }

    fn interval(latencies_ms: &[u64], retries: u64, errors: u64) -> Interval {
        let mut i = Interval::new();
        for &l in latencies_ms {
            i.hist.saturating_record(l * 1000);
            i.committed += 1;
        }
        i.retries = retries;
        i.errors = errors;
        i
    }

    #[test]
    fn warmup_seconds_are_shown_but_left_out_of_the_summary() {
        let mut s = Series::new(&["a", "b"]);
        let sec = Duration::from_secs(1);
        let w = s.push(
            sec,
            sec,
            true,
            &[interval(&[1000; 5], 9, 9), interval(&[], 0, 0)],
        );
        assert!(w.warmup);
        assert_eq!(w.kinds[0].ops, 5);
        s.push(
            2 * sec,
            sec,
            false,
            &[interval(&[10, 20], 1, 0), interval(&[5], 0, 2)],
        );
        s.push(
            3 * sec,
            sec,
            false,
            &[interval(&[30, 40], 0, 0), interval(&[], 0, 0)],
        );
        assert_eq!(s.seconds().len(), 3);
        let sum = s.summary();
        assert_eq!(sum.measured_s, 2.0);
        assert_eq!(sum.kinds[0].count, 4);
        assert_eq!(sum.kinds[0].ops_per_s, 2.0);
        assert_eq!(sum.kinds[0].retries, 1);
        assert_eq!(sum.kinds[1].errors, 2);
        assert_eq!(
            (sum.total_count, sum.total_retries, sum.total_errors),
            (5, 1, 2)
        );
        // The 1000 ms warm-up latencies did not leak into the totals.
        assert!(sum.kinds[0].max_ms < 41.0, "{}", sum.kinds[0].max_ms);
        assert!((sum.kinds[0].p50_ms - 20.0).abs() < 0.1);
    }

    #[test]
    fn per_second_rates_use_the_real_interval_length() {
        let mut s = Series::new(&["a"]);
        let second = s
            .push(
                Duration::from_millis(500),
                Duration::from_millis(500),
                false,
                &[interval(&[1, 2, 3], 0, 0)],
            )
            .clone();
        assert_eq!(second.kinds[0].ops, 3);
        assert_eq!(second.kinds[0].ops_per_s, 6.0);
        assert_eq!(second.elapsed_s, 0.5);
        // An empty interval reports zeros, not garbage quantiles.
        let empty = s
            .push(
                Duration::from_secs(1),
                Duration::from_millis(500),
                false,
                &[interval(&[], 0, 0)],
            )
            .clone();
        assert_eq!((empty.kinds[0].p99_ms, empty.kinds[0].max_ms), (0.0, 0.0));
    }
}
