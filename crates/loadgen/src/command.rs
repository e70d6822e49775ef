//! The command line of `concord workload`: a clap [`WorkloadCommand`] that
//! the `concord` binary nests under `workload`, and [`run`], which
//! dispatches it.
//!
//! ```text
//!   workload init  tpcc|bank|kv  [--drop] [--concurrency N] ...
//!   workload run   tpcc|bank|kv  [--duration D] [--ramp D] [--hosts ...] ...
//!   workload check tpcc|bank
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::conn::{Balance, Hosts};
use crate::error::{Error, Result};
use crate::load::LoadMethod;
use crate::runner::Outputs;
use crate::{bank, kv, tpcc};

/// `concord workload ...`
#[derive(Subcommand, Debug, Clone)]
pub enum WorkloadCommand {
    /// Create a workload's tables and load its initial data.
    Init {
        #[command(subcommand)]
        workload: InitWorkload,
    },
    /// Run a workload for a while, printing throughput and latency every
    /// second and a summary at the end.
    Run {
        #[command(subcommand)]
        workload: RunWorkload,
    },
    /// Check a workload's consistency conditions on the data it left.
    /// Exits with 1 if one is violated.
    Check {
        #[command(subcommand)]
        workload: CheckWorkload,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum InitWorkload {
    /// TPC-C: nine tables, loaded as clause 4.3 says.
    Tpcc(tpcc::InitArgs),
    /// Accounts with equal balances, for transfers that must conserve money.
    Bank(bank::InitArgs),
    /// One key-value table.
    Kv(kv::InitArgs),
}

#[derive(Subcommand, Debug, Clone)]
pub enum RunWorkload {
    /// The five TPC-C transactions in the spec's mix.
    Tpcc(tpcc::RunArgs),
    /// Transfers between random accounts, and audits of the total.
    Bank(bank::RunArgs),
    /// Point reads and upserts over uniform or zipfian keys.
    Kv(kv::RunArgs),
}

#[derive(Subcommand, Debug, Clone)]
pub enum CheckWorkload {
    /// Consistency conditions 3.3.2.1 to 3.3.2.4.
    Tpcc(tpcc::CheckArgs),
    /// Total of balances and no negative balance.
    Bank(bank::CheckArgs),
}

/// Where the servers are.
#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    /// PostgreSQL URL: user, password and database (and the server, unless
    /// --hosts is given). A URL without a user connects as root.
    #[arg(long, default_value = "postgres://root@127.0.0.1:5432/defaultdb")]
    pub url: String,
    /// Servers to spread connections over, `host:port,host:port,...`
    /// (overrides the URL's host).
    #[arg(long)]
    pub hosts: Option<String>,
    /// How each new connection picks its server.
    #[arg(long, value_enum, default_value_t = Balance::RoundRobin)]
    pub balance: Balance,
}

impl ConnArgs {
    /// A connection config for `url` alone.
    pub fn url(url: &str) -> ConnArgs {
        ConnArgs {
            url: url.to_string(),
            hosts: None,
            balance: Balance::RoundRobin,
        }
    }

    pub fn hosts(&self) -> Result<Hosts> {
        Hosts::new(&self.url, self.hosts.as_deref(), self.balance)
    }
}

/// How `init` loads.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Connections loading in parallel.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Drop the workload's tables first if they exist.
    #[arg(long)]
    pub drop: bool,
    /// COPY FROM STDIN (text) or multi-row INSERT.
    #[arg(long, value_enum, default_value_t = LoadMethod::Copy)]
    pub load_method: LoadMethod,
    /// Rows per COPY or INSERT statement (each is its own transaction).
    #[arg(long, default_value_t = 1000)]
    pub batch_rows: usize,
    /// On Concord, do not pre-split the tables with ALTER TABLE ... SPLIT AT.
    #[arg(long)]
    pub no_split: bool,
}

/// How long a run lasts and where its results go.
#[derive(Args, Debug, Clone)]
pub struct RunTimeArgs {
    /// Measured time, after the ramp (e.g. 90s, 5m, 1h30m).
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub duration: Duration,
    /// Warm-up before the measured time: shown live, left out of the
    /// summary.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub ramp: Duration,
    /// Write the summary and the per-second series as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the per-second histograms (HDR interval log, tagged by type).
    #[arg(long)]
    pub histograms: Option<PathBuf>,
    /// Draw throughput and latency over time (SVG).
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

impl RunTimeArgs {
    pub fn outputs(&self) -> Outputs {
        Outputs {
            json: self.json.clone(),
            histograms: self.histograms.clone(),
            plot: self.plot.clone(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.duration.is_zero() {
            return Err(Error::Usage("--duration must be more than 0".into()));
        }
        crate::runner::check_outputs(&self.outputs())
    }
}

/// Parses `90`, `90s`, `500ms`, `5m`, `1h30m`, `1.5s`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("`{s}`: a number needs a unit (ms, s, m, h)"))?;
        if digits == 0 {
            return Err(format!("`{s}`: expected a number at `{rest}`"));
        }
        let value: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{s}`: bad number `{}`", &rest[..digits]))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => return Err(format!("`{s}`: unknown unit `{u}` (ms, s, m, h)")),
        };
        total += Duration::try_from_secs_f64(value * scale).map_err(|e| format!("`{s}`: {e}"))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Runs a `concord workload` command. `Ok(ExitCode::FAILURE)` means a
/// check found a violation; an `Err` is a failure to run (including a
/// fatal error during a run), for which the caller should print the error
/// and exit with 1.
pub async fn run(cmd: WorkloadCommand) -> Result<ExitCode> {
    match cmd {
        WorkloadCommand::Init { workload } => match workload {
            InitWorkload::Tpcc(a) => tpcc::init(&a).await.map(|_| ExitCode::SUCCESS),
            InitWorkload::Bank(a) => bank::init(&a).await.map(|_| ExitCode::SUCCESS),
            InitWorkload::Kv(a) => kv::init(&a).await.map(|_| ExitCode::SUCCESS),
        },
        WorkloadCommand::Run { workload } => match workload {
            RunWorkload::Tpcc(a) => tpcc::run(&a).await.map(|_| ExitCode::SUCCESS),
            RunWorkload::Bank(a) => bank::run(&a).await.map(|_| ExitCode::SUCCESS),
            RunWorkload::Kv(a) => kv::run(&a).await.map(|_| ExitCode::SUCCESS),
        },
        WorkloadCommand::Check { workload } => {
            let ok = match workload {
                CheckWorkload::Tpcc(a) => {
                    let report = tpcc::check(&a.conn).await?;
                    print!("{report}");
                    report.is_ok()
                }
                CheckWorkload::Bank(a) => {
                    let report = bank::check(&a).await?;
                    println!("{report}");
                    report.is_ok()
                }
            };
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: WorkloadCommand,
    }

    #[test]
    fn durations_take_units_and_compounds() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-3").is_err());
    }

    #[test]
    fn the_documented_command_lines_parse() {
        let parse = |s: &str| Cli::try_parse_from(s.split_whitespace()).map(|c| c.cmd);
        let cmd = parse("w run tpcc --warehouses 10 --duration 5m --ramp 30s --hosts 127.0.0.1:5432,127.0.0.1:5433 --balance round-robin --wait=false --concurrency 4 --json a.json --histograms h.hlog --plot p.svg").unwrap();
        match cmd {
            WorkloadCommand::Run {
                workload: RunWorkload::Tpcc(a),
            } => {
                assert_eq!(a.warehouses, Some(10));
                assert!(!a.wait);
                assert_eq!(a.concurrency, Some(4));
                assert_eq!(a.time.duration, Duration::from_secs(300));
                assert_eq!(a.time.ramp, Duration::from_secs(30));
                assert_eq!(
                    a.conn.hosts.as_deref(),
                    Some("127.0.0.1:5432,127.0.0.1:5433")
                );
            }
            other => panic!("{other:?}"),
        }
        // --wait alone means true, and it is the default.
        for line in ["w run tpcc --wait", "w run tpcc", "w run tpcc --wait=true"] {
            match parse(line).unwrap() {
                WorkloadCommand::Run {
                    workload: RunWorkload::Tpcc(a),
                } => assert!(a.wait, "{line}"),
                other => panic!("{other:?}"),
            }
        }
        parse("w init tpcc --warehouses 10 --url postgres://root@127.0.0.1:5432/defaultdb --concurrency 8 --drop").unwrap();
        parse("w check tpcc --url postgres://u@h/db").unwrap();
        parse("w init bank --accounts 100").unwrap();
        parse("w run bank --accounts 100 --duration 10s").unwrap();
        parse("w check bank").unwrap();
        parse("w init kv --keys 1000 --value-bytes 10").unwrap();
        parse("w run kv --read-percent 95 --distribution zipfian --batch 4 --keys 1000 --value-bytes 8").unwrap();
        assert!(parse("w run kv --distribution pareto").is_err());
        assert!(parse("w run tpcc --balance sideways").is_err());
    }
}
