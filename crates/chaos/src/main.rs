//! `concord-chaos`: fault campaigns against Concord container clusters.
//!
//! The harness drives containers of the `concord` image (built by
//! `docker/build.sh`) from the host. Each run creates a fresh cluster,
//! runs three workloads through the PostgreSQL protocol while a seeded
//! nemesis kills, freezes, partitions, skews clocks, splits ranges, moves
//! leaders and fills disks, then heals everything, reads the final state,
//! checks every history and measures availability around each fault.
//!
//! ```text
//!  concord-chaos run ──► docker.rs (compose, kill, nsenter iptables, tmpfs)
//!        │          ├──► workloads.rs (bank, list-append, register workers)
//!        │          ├──► nemesis.rs   (seeded faults + availability probes)
//!        │          └──► history.jsonl ──► concord_workload checkers ──► verdict.json
//!  concord-chaos campaign = N runs (3 and 5 nodes) ──► campaign.md
//! ```
//!
//! Needs the Docker engine, docker-compose, and root on the host (for
//! `nsenter … iptables` and the tmpfs stores). See docs/chaos.md.
//!
//! # Not done
//! - Faults are injected one at a time; no composed faults (a partition
//!   during a kill).
//! - No message delay or reordering: there is no `tc netem` here, so slow
//!   networks come only from pauses and clock strobes.
//! - Real-time (strict serializability) edges are checked only by the
//!   register workload, not by list-append.

mod client;
mod docker;
mod history;
mod nemesis;
mod run;
mod workloads;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "concord-chaos",
    about = "Fault campaigns against Concord container clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One run on a fresh cluster; exits non-zero unless it passes.
    Run {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// How long the workloads and the nemesis run, e.g. 60s or 3m.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        time: Duration,
        /// Seed of the nemesis and the workloads (printed; replayable).
        #[arg(long)]
        seed: Option<u64>,
        /// `all` or a comma-separated list of: kill, kill-leader, kill-all,
        /// pause, partition, clock, split, transfer-leader, disk.
        #[arg(long, default_value = "all")]
        nemesis: String,
        #[arg(long, default_value = "concord:latest")]
        image: String,
        /// Where runs write their history, verdict and node logs.
        #[arg(long, default_value = "chaos-runs")]
        out: PathBuf,
        /// Leave the cluster running after the run.
        #[arg(long)]
        keep: bool,
    },
    /// Many runs, alternating 3- and 5-node clusters; writes a results
    /// table (campaign.md) and exits non-zero unless every run passes.
    Campaign {
        #[arg(long, default_value_t = 20)]
        runs: u64,
        #[arg(long, default_value = "3m", value_parser = parse_duration)]
        time: Duration,
        /// Seed of the first run; run k uses seed + k.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "all")]
        nemesis: String,
        #[arg(long, default_value = "concord:latest")]
        image: String,
        #[arg(long, default_value = "chaos-runs")]
        out: PathBuf,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    match unit {
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("invalid duration {s:?}: use e.g. 90s or 3m")),
    }
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    match rt.block_on(main_async(cli)) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("concord-chaos: {e:#}");
            std::process::exit(2);
        }
    }
}

async fn main_async(cli: Cli) -> Result<bool> {
    match cli.command {
        Cmd::Run {
            nodes,
            time,
            seed,
            nemesis,
            image,
            out,
            keep,
        } => {
            if nodes < 3 {
                bail!("--nodes must be at least 3");
            }
            let seed = seed.unwrap_or_else(|| rand::random::<u32>() as u64);
            let cfg = run::RunConfig {
                nodes,
                duration: time,
                seed,
                nemeses: nemesis::parse(&nemesis)?,
                image,
                out,
                keep,
            };
            let v = run::run(cfg).await?;
            print_verdict(&v);
            Ok(v.valid)
        }
        Cmd::Campaign {
            runs,
            time,
            seed,
            nemesis,
            image,
            out,
        } => {
            let kinds = nemesis::parse(&nemesis)?;
            std::fs::create_dir_all(&out)?;
            let mut verdicts = Vec::new();
            let mut failed_runs = Vec::new();
            for k in 0..runs {
                let cfg = run::RunConfig {
                    nodes: if k % 2 == 0 { 3 } else { 5 },
                    duration: time,
                    seed: seed + k,
                    nemeses: kinds.clone(),
                    image: image.clone(),
                    out: out.clone(),
                    keep: false,
                };
                match run::run(cfg).await {
                    Ok(v) => {
                        print_verdict(&v);
                        verdicts.push(v);
                    }
                    Err(e) => {
                        eprintln!("run with seed {} reached no verdict: {e:#}", seed + k);
                        failed_runs.push((seed + k, format!("{e:#}")));
                    }
                }
                let table = campaign_table(&verdicts, &failed_runs, time);
                std::fs::File::create(out.join("campaign.md"))?.write_all(table.as_bytes())?;
            }
            println!("{}", campaign_table(&verdicts, &failed_runs, time));
            Ok(failed_runs.is_empty() && verdicts.iter().all(|v| v.valid))
        }
    }
}

fn print_verdict(v: &run::Verdict) {
    println!(
        "seed {} ({} nodes): {} — {} ok, {} fail, {} info; {}",
        v.config.seed,
        v.config.nodes,
        if v.valid { "PASS" } else { "FAIL" },
        v.ok,
        v.fail,
        v.info,
        v.dir.join("verdict.json").display()
    );
    for p in &v.problems {
        println!("  problem: {p}");
    }
    for a in &v.availability {
        println!(
            "  {:<24} writes back after {:>6}  all nodes back {:>6} after heal   ({})",
            a.fault.name,
            secs(a.writes_back),
            secs(a.all_back),
            a.fault.detail
        );
    }
}

fn secs(s: Option<f64>) -> String {
    s.map_or_else(|| "—".to_string(), |s| format!("{s:.1}s"))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

/// The results table of a campaign (markdown).
fn campaign_table(verdicts: &[run::Verdict], failed: &[(u64, String)], time: Duration) -> String {
    let mut s = String::from(
        "| seed | nodes | length | faults injected | ok | fail | info | verdict |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for v in verdicts {
        let mut kinds: Vec<String> = v
            .availability
            .iter()
            .map(|a| a.fault.name.clone())
            .collect();
        kinds.sort();
        kinds.dedup();
        s += &format!(
            "| {} | {} | {}s | {} ({}) | {} | {} | {} | {} |\n",
            v.config.seed,
            v.config.nodes,
            time.as_secs(),
            v.availability.len(),
            kinds.join(", "),
            v.ok,
            v.fail,
            v.info,
            if v.valid { "valid" } else { "**INVALID**" }
        );
    }
    for (seed, e) in failed {
        s += &format!("| {seed} | | | | | | | **no verdict**: {e} |\n");
    }
    s += "\nAvailability (seconds; writes back = from the fault until a write succeeds through a node the fault did not touch; all back = from the heal until every node has served a write):\n\n| fault | count | writes back median | writes back worst | all back median | all back worst |\n|---|---|---|---|---|---|\n";
    let mut by: BTreeMap<String, (Vec<f64>, Vec<f64>, usize)> = BTreeMap::new();
    for a in verdicts.iter().flat_map(|v| v.availability.iter()) {
        let e = by.entry(a.fault.name.clone()).or_default();
        e.2 += 1;
        if let Some(w) = a.writes_back {
            e.0.push(w);
        }
        if let Some(b) = a.all_back {
            e.1.push(b);
        }
    }
    for (name, (w, b, count)) in by {
        let worst = |v: &Vec<f64>| {
            v.iter()
                .copied()
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
        };
        s += &format!(
            "| {name} | {count} | {} | {} | {} | {} |\n",
            secs(median(w.clone())),
            secs(worst(&w)),
            secs(median(b.clone())),
            secs(worst(&b))
        );
    }
    s
}
