//! The engine of `concord workload`: load generators and consistency
//! checkers that drive any PostgreSQL-protocol server — a Concord cluster
//! or a stock PostgreSQL — through tokio-postgres, so the two can be
//! compared with the same tool and the same numbers.
//!
//! ```text
//!   WorkloadCommand (clap) ──► command::run
//!        │
//!        ├─ init  ──► tpcc::init | bank::init | kv::init
//!        │             DDL, (Concord: ALTER TABLE ... SPLIT AT), load::parallel
//!        │             ──► N connections, COPY FROM STDIN or multi-row INSERT, progress bar
//!        │
//!        ├─ run   ──► runner::drive
//!        │             terminals (tpcc::txn, bank, kv) ─► conn::Pool ─► conn::Hosts ─► servers
//!        │                 │  retry 40001/40P01, reconnect on lost connections,
//!        │                 │  stop on anything else
//!        │                 ▼
//!        │             stats::Recorder ─(1 s)─► stats::Series ─► live lines, HDR log
//!        │                                          └─► Summary, tpmC, JSON, plot::draw (SVG)
//!        │
//!        └─ check ──► tpcc::check (clause 3.3.2.1-4) | bank::check
//! ```
//!
//! How a run is put together:
//!
//! - A [`runner::Terminal`] is one simulated user: it deals the next
//!   transaction, generates its inputs once (so a retry runs the same
//!   business transaction) and runs it as BEGIN ... COMMIT with statements
//!   prepared once per connection ([`conn::Session`]).
//! - Terminals borrow connections from a [`conn::Pool`], which connects
//!   through [`conn::Hosts`]: round-robin or random over `--hosts`, a host
//!   whose connection fails leaves the rotation for a backoff (1 s doubling
//!   to 10 s), and when every host has failed for 30 s the run stops.
//! - [`error::classify`] decides what an error means: 40001/40P01 are
//!   retried (and counted), lost connections are reconnected (and
//!   counted), everything else stops the run with exit code 1 and the
//!   statement and server error printed. Nothing is dropped silently.
//! - Latencies go into HDR histograms per type ([`stats`]); every second
//!   the reporter prints them and keeps them; the warm-up (`--ramp`) is
//!   shown but left out of the summary.
//!
//! Modules: [`command`] (the CLI), [`conn`], [`runner`], [`stats`],
//! [`plot`], [`load`], [`random`] (TPC-C and YCSB generators), [`values`]
//! (lenient integer/decimal decoding), [`error`], and the workloads
//! [`tpcc`], [`bank`], [`kv`].
//!
//! # Not done
//!
//! - TLS: connections are plain TCP or Unix sockets (`NoTls`).
//! - No statement timeout: a server that accepts a statement and never
//!   answers (SIGSTOP, a partition without RST) stalls that terminal until
//!   the run ends; the stall shows as a throughput dip, not as errors.
//! - An interrupted COMMIT is retried as a new business transaction: the
//!   tool does not find out whether the first one committed. TPC-C's
//!   consistency conditions and the bank's conservation still hold, but
//!   the database may then hold one more transaction than was counted.
//! - TPC-C: delivery runs inline in the terminal, not deferred through a
//!   queue as the spec allows; the 90th-percentile response-time limits
//!   are reported, not enforced; only consistency conditions 1 to 4 are
//!   checked; `init` is not resumable (a failed load needs `--drop`).
//! - Connections are not rebalanced: after a dead host comes back, only
//!   new connections go to it, and a run's pool usually has all it needs.
//! - `init` does not survive a node failure: a lost connection fails the
//!   load. Only `run` rides through node failures.
//! - kv with `--keys 0` reads uniformly (the zipfian needs a fixed key
//!   space), and no YCSB "latest" distribution.
//! - Only SVG plots (no bitmap backend is built).

pub mod bank;
pub mod command;
pub mod conn;
pub mod error;
pub mod kv;
pub mod load;
pub mod plot;
pub mod random;
pub mod runner;
pub mod stats;
pub mod tpcc;
pub mod values;

pub use command::{
    run, CheckWorkload, ConnArgs, InitWorkload, LoadArgs, RunTimeArgs, RunWorkload, WorkloadCommand,
};
pub use error::{Error, ErrorClass, Result};
