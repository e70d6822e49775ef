//! TPC-C (revision 5.11), as far as a PostgreSQL client can drive it:
//! `init` creates and loads the nine tables, `run` drives the five
//! transactions from terminals, `check` judges the consistency conditions.
//!
//! ```text
//!   init:  [drop] ─► create tables + indexes ─► split (Concord only) ─► tpcc_meta ─► parallel load
//!   run:   tpcc_meta ─► 10 terminals per warehouse (--wait) or N flat-out workers ─► runner
//!          ─► summary, tpmC, efficiency
//!   check: 3.3.2.1 - 3.3.2.4 in one read transaction
//! ```
//!
//! With `--wait` (the default) each terminal keys and thinks as clause
//! 5.2.5 says, so a warehouse cannot exceed 12.86 new-orders a minute and
//! the efficiency (tpmC / (12.86 × warehouses)) says how close the server
//! comes to that. Without it, workers run back to back and tpmC is just a
//! throughput figure.
//!
//! Modules: [`schema`] (DDL and splits), [`load`] (the initial
//! population), [`txn`] (the transactions and the terminal), [`mod@check`]
//! (the consistency conditions).

pub mod check;
pub mod load;
pub mod schema;
pub mod txn;

use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use serde::Serialize;

use crate::command::{ConnArgs, LoadArgs, RunTimeArgs};
use crate::conn::{Hosts, ServerKind, Session, Sql};
use crate::error::{Error, Result};
use crate::load::{parallel, Progress};
use crate::random::{NuRandC, TxnKind};
use crate::runner::{self, RunConfig, Terminal};
use crate::values::get_i32;

pub use check::CheckReport;

/// The most new-orders a warehouse's ten terminals can complete per
/// minute with the keying and think times, at zero response time.
pub const MAX_TPMC_PER_WAREHOUSE: f64 = 12.86;

/// `workload init tpcc`
#[derive(Args, Debug, Clone)]
pub struct InitArgs {
    #[arg(long, default_value_t = 1)]
    pub warehouses: i32,
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// `workload run tpcc`
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Warehouses to drive (default: all that `init` loaded).
    #[arg(long)]
    pub warehouses: Option<i32>,
    /// Keying and think times of the spec (true), or none (false).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub wait: bool,
    /// With --wait=false: the number of workers. With --wait: the number
    /// of connections the 10-per-warehouse terminals share. Default
    /// min(10 × warehouses, 64).
    #[arg(long)]
    pub concurrency: Option<usize>,
    #[command(flatten)]
    pub time: RunTimeArgs,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `workload check tpcc`
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// tpmC: new-orders completed per minute of the measured window.
pub fn tpmc(new_orders: u64, measured_secs: f64) -> f64 {
    if measured_secs <= 0.0 {
        0.0
    } else {
        new_orders as f64 * 60.0 / measured_secs
    }
}

/// Efficiency, in percent of the spec's ceiling for `warehouses`.
pub fn efficiency(tpmc: f64, warehouses: i32) -> f64 {
    if warehouses <= 0 {
        0.0
    } else {
        tpmc / (MAX_TPMC_PER_WAREHOUSE * warehouses as f64) * 100.0
    }
}

/// Which of `tables` exist (a `SELECT` from each; 42P01 means absent).
pub(crate) async fn existing_tables(s: &Session, tables: &[&str]) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for t in tables {
        let sql = format!("SELECT 1 FROM {t} LIMIT 1");
        match s.client().query(sql.as_str(), &[]).await {
            Ok(_) => found.push(t.to_string()),
            Err(e) if e.code().map(|c| c.code()) == Some("42P01") => {}
            Err(e) => return Err(Error::sql(&sql, &e)),
        }
    }
    Ok(found)
}

/// Drops `tables` if `drop`, else fails if any exists.
pub(crate) async fn prepare_tables(s: &Session, tables: &[&str], drop: bool) -> Result<()> {
    let found = existing_tables(s, tables).await?;
    if found.is_empty() {
        return Ok(());
    }
    if !drop {
        return Err(Error::TablesExist(found));
    }
    for t in tables.iter().rev() {
        if found.iter().any(|f| f == t) {
            s.batch(&format!("DROP TABLE {t}")).await?;
        }
    }
    Ok(())
}

/// Connects once and says to what.
pub(crate) async fn first_session(hosts: &Hosts) -> Result<(Session, ServerKind)> {
    let s = hosts.connect().await?;
    let (kind, version) = s.server_kind().await?;
    eprintln!("server at {}: {version}", hosts.name(s.host));
    Ok((s, kind))
}

/// `workload init tpcc`: create, split, load.
pub async fn init(args: &InitArgs) -> Result<()> {
    let w = args.warehouses;
    if w < 1 {
        return Err(Error::Usage("--warehouses must be at least 1".into()));
    }
    let hosts = Arc::new(args.conn.hosts()?);
    let (s, kind) = first_session(&hosts).await?;
    prepare_tables(&s, &schema::TABLES, args.load.drop).await?;
    for ddl in schema::CREATE {
        s.batch(ddl).await?;
    }
    if kind == ServerKind::Concord && !args.load.no_split {
        let started = Instant::now();
        let points: Vec<i64> = (2..=w as i64).collect();
        let mut n = 0;
        for t in schema::SPLIT_BY_WAREHOUSE {
            for stmt in schema::split_statements(t, &points) {
                s.batch(&stmt).await?;
            }
            n += points.len();
        }
        let item_points: Vec<i64> = (1..10).map(|k| k * 10_000 + 1).collect();
        for stmt in schema::split_statements("item", &item_points) {
            s.batch(&stmt).await?;
        }
        n += item_points.len();
        eprintln!(
            "split the tables at {n} points in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let c = NuRandC::random(&mut rand::rng());
    s.batch(&format!(
        "INSERT INTO tpcc_meta (id, warehouses, c_last, c_id, ol_i_id) VALUES (1, {w}, {}, {}, {})",
        c.c_last, c.c_id, c.ol_i_id
    ))
    .await?;

    let started = Instant::now();
    let (progress, shown) = Progress::start(
        &format!("tpcc load, {w} warehouse{}", if w == 1 { "" } else { "s" }),
        load::expected_rows(w),
    );
    let ctx = Arc::new(load::LoadCtx::new(
        args.load.load_method,
        args.load.batch_rows,
        c,
        progress.clone(),
    ));
    let result = parallel(
        &hosts,
        args.load.concurrency,
        load::units(w),
        move |unit, session| load::load_unit(unit, session, ctx.clone()),
    )
    .await;
    progress.finish(shown).await;
    result?;
    if kind == ServerKind::Postgres {
        s.batch("ANALYZE").await?;
    }
    println!(
        "loaded tpcc with {w} warehouse{} ({} rows) in {:.1} s",
        if w == 1 { "" } else { "s" },
        progress.rows(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

const META: Sql = Sql::new(
    "SELECT warehouses, c_last, c_id, ol_i_id FROM tpcc_meta WHERE id = 1",
    &[],
);

/// The warehouses and constants `init` chose.
async fn read_meta(s: &mut Session) -> Result<(i32, NuRandC)> {
    if existing_tables(s, &["tpcc_meta"]).await?.is_empty() {
        return Err(Error::Usage(
            "no tpcc_meta table: run `workload init tpcc` first".into(),
        ));
    }
    let row = s.query_one(META, &[]).await?;
    Ok((
        get_i32(&row, 0, META.text)?,
        NuRandC {
            c_last: get_i32(&row, 1, META.text)?,
            c_id: get_i32(&row, 2, META.text)?,
            ol_i_id: get_i32(&row, 3, META.text)?,
        },
    ))
}

/// The figures `run tpcc` adds to the summary.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TpccResult {
    pub warehouses: i32,
    pub wait: bool,
    pub terminals: usize,
    pub connections: usize,
    #[serde(rename = "tpmC")]
    pub tpmc: f64,
    /// Percent of 12.86 × warehouses; meaningful only with `wait`.
    pub efficiency_pct: f64,
    /// New-orders rolled back on purpose (the unused item), included in
    /// tpmC.
    pub new_orders_rolled_back: u64,
}

/// `workload run tpcc`. Returns the figures; a fatal error during the run
/// is returned after the summary was printed and the files written.
pub async fn run(args: &RunArgs) -> Result<TpccResult> {
    args.time.validate()?;
    let hosts = Arc::new(args.conn.hosts()?);
    let (mut s, _) = first_session(&hosts).await?;
    let (loaded, c_load) = read_meta(&mut s).await?;
    drop(s);
    let w = args.warehouses.unwrap_or(loaded);
    if w < 1 || w > loaded {
        return Err(Error::Usage(format!(
            "--warehouses {w}: the database has warehouses 1 to {loaded}"
        )));
    }
    if args.concurrency == Some(0) {
        return Err(Error::Usage("--concurrency must be at least 1".into()));
    }
    let c = NuRandC::for_run(c_load, &mut rand::rng());
    let default = (10 * w as usize).min(64);
    let (terminals, connections): (Vec<Box<dyn Terminal>>, usize) = if args.wait {
        let t = (0..10 * w)
            .map(|i| {
                Box::new(txn::TpccTerminal::new(i / 10 + 1, i % 10 + 1, w, c, true))
                    as Box<dyn Terminal>
            })
            .collect();
        (t, args.concurrency.unwrap_or(default))
    } else {
        let n = args.concurrency.unwrap_or(default);
        let t = (0..n)
            .map(|i| {
                let home = (i % w as usize) as i32 + 1;
                let district = ((i / w as usize) % 10) as i32 + 1;
                Box::new(txn::TpccTerminal::new(home, district, w, c, false)) as Box<dyn Terminal>
            })
            .collect();
        (t, n)
    };
    let n_terminals = terminals.len();
    println!(
        "tpcc: {w} warehouse{}, {n_terminals} {} over {connections} connection{} to {}; {}",
        if w == 1 { "" } else { "s" },
        if args.wait { "terminals" } else { "workers" },
        if connections == 1 { "" } else { "s" },
        hosts.describe(),
        if args.wait {
            "keying and think times on"
        } else {
            "no waits"
        }
    );
    let cfg = RunConfig {
        workload: "tpcc",
        names: &TxnKind::NAMES,
        ramp: args.time.ramp,
        duration: args.time.duration,
        connections,
        outputs: args.time.outputs(),
    };
    let result = runner::drive(hosts, terminals, &cfg).await?;
    let new_order = result.series.total(TxnKind::NewOrder as usize);
    let (no_count, no_rolled_back) = new_order.map_or((0, 0), |i| (i.count(), i.rolled_back));
    let tpmc = tpmc(no_count, result.summary.measured_s);
    let figures = TpccResult {
        warehouses: w,
        wait: args.wait,
        terminals: n_terminals,
        connections,
        tpmc,
        efficiency_pct: efficiency(tpmc, w),
        new_orders_rolled_back: no_rolled_back,
    };
    runner::finish(&cfg, &result, serde_json::to_value(&figures)?)?;
    println!(
        "tpmC {:.1} (new-orders per minute over {:.1} s, {} of them rolled back on purpose)",
        figures.tpmc, result.summary.measured_s, no_rolled_back
    );
    if args.wait {
        println!(
            "efficiency {:.1}% of {MAX_TPMC_PER_WAREHOUSE} × {w} warehouse{}",
            figures.efficiency_pct,
            if w == 1 { "" } else { "s" }
        );
    } else {
        println!(
            "efficiency {:.1}% (not meaningful without --wait)",
            figures.efficiency_pct
        );
    }
    match result.fatal {
        Some(e) => Err(e),
        None => Ok(figures),
    }
}

/// `workload check tpcc`: the consistency conditions.
pub async fn check(conn: &ConnArgs) -> Result<CheckReport> {
    let hosts = conn.hosts()?;
    let (mut s, kind) = first_session(&hosts).await?;
    check::check_session(&mut s, kind).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpmc_counts_new_orders_per_minute_of_the_measured_window() {
        assert_eq!(tpmc(100, 60.0), 100.0);
        assert_eq!(tpmc(50, 30.0), 100.0);
        assert_eq!(tpmc(1, 120.0), 0.5);
        assert_eq!(tpmc(10, 0.0), 0.0);
    }

    #[test]
    fn efficiency_is_relative_to_12_86_per_warehouse() {
        assert!((efficiency(12.86, 1) - 100.0).abs() < 1e-9);
        assert!((efficiency(128.6, 10) - 100.0).abs() < 1e-9);
        assert!((efficiency(64.3, 10) - 50.0).abs() < 1e-9);
        assert_eq!(efficiency(10.0, 0), 0.0);
    }

    #[test]
    fn the_ceiling_follows_from_the_mix_and_the_cycle_times() {
        // A terminal's mean cycle: keying + think (+ ~0 response time)
        // over the mix; 45% of its transactions are new-orders.
        let cycle: f64 = TxnKind::ALL
            .iter()
            .zip(TxnKind::CARDS)
            .map(|(k, n)| {
                n as f64 / 100.0
                    * (k.keying_time().as_secs_f64() + k.mean_think_time().as_secs_f64())
            })
            .sum();
        let per_warehouse = 10.0 * 60.0 / cycle * 0.45;
        // 12.86 is that bound at zero response time, rounded down: any
        // latency only lowers it.
        assert!(
            per_warehouse > MAX_TPMC_PER_WAREHOUSE && per_warehouse < 13.0,
            "{per_warehouse}"
        );
    }
}
