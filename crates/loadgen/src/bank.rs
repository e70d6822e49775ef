//! The bank: accounts that start with equal balances and transfers that
//! must conserve the money.
//!
//! ```text
//!   accounts(id INT PRIMARY KEY, balance BIGINT)   N rows × 1000
//!   transfer: BEGIN; SELECT balance ... FOR UPDATE (both, lower id first);
//!             UPDATE both to the computed balances; COMMIT
//!   audit:    SELECT id, balance FROM accounts (one statement, one snapshot)
//!             ─► concord_workload::bank::check ─► a wrong total, a negative
//!                balance or a missing account stops the run (exit 1)
//! ```
//!
//! Transfers write absolute balances computed from what they read, so a
//! lost update (two transfers from one stale balance) breaks the total,
//! and a server whose FOR UPDATE or isolation is wrong is caught by the
//! next audit, not only by the final `check bank`.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::types::Type;

use crate::command::{ConnArgs, LoadArgs, RunTimeArgs};
use crate::conn::{Session, Sql};
use crate::error::{Error, Result};
use crate::load::{parallel, Progress, TableSink};
use crate::runner::{self, RunConfig, Terminal};
use crate::stats::Outcome;
use crate::tpcc::{existing_tables, first_session, prepare_tables};
use crate::values::{get_i32, get_i64};

/// Every account's balance after `init`.
pub const INITIAL_BALANCE: i64 = 1000;
const NAMES: [&str; 2] = ["transfer", "audit"];

/// `workload init bank`
#[derive(Args, Debug, Clone)]
pub struct InitArgs {
    #[arg(long, default_value_t = 1000)]
    pub accounts: i32,
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// `workload run bank`
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Accounts to expect (default: as many as the table holds).
    #[arg(long)]
    pub accounts: Option<i32>,
    /// Percent of operations that are audits (whole-table sums).
    #[arg(long, default_value_t = 5)]
    pub audit_percent: u32,
    /// Largest amount moved by one transfer.
    #[arg(long, default_value_t = 100)]
    pub max_transfer: i64,
    /// Workers (one connection each).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    #[command(flatten)]
    pub time: RunTimeArgs,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `workload check bank`
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Accounts `init` created (default: as many as the table holds).
    #[arg(long)]
    pub accounts: Option<i32>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

const CREATE: &str = "CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL)";
const COUNT: Sql = Sql::new("SELECT count(*) FROM accounts", &[]);
const LOCK: Sql = Sql::new(
    "SELECT balance FROM accounts WHERE id = $1 FOR UPDATE",
    &[Type::INT4],
);
const UPDATE: Sql = Sql::new(
    "UPDATE accounts SET balance = $2 WHERE id = $1",
    &[Type::INT4, Type::INT8],
);
const ALL: Sql = Sql::new("SELECT id, balance FROM accounts", &[]);

/// `workload init bank`.
pub async fn init(args: &InitArgs) -> Result<()> {
    let n = args.accounts;
    if n < 2 {
        return Err(Error::Usage("--accounts must be at least 2".into()));
    }
    let hosts = Arc::new(args.conn.hosts()?);
    let (s, _) = first_session(&hosts).await?;
    prepare_tables(&s, &["accounts"], args.load.drop).await?;
    s.batch(CREATE).await?;
    let started = Instant::now();
    let (progress, shown) = Progress::start("bank load", n as u64);
    let chunk = 10_000;
    let units: Vec<(i32, i32)> = (0..n)
        .step_by(chunk)
        .map(|from| (from, (from + chunk as i32).min(n)))
        .collect();
    let (method, batch, p) = (
        args.load.load_method,
        args.load.batch_rows,
        progress.clone(),
    );
    let result = parallel(
        &hosts,
        args.load.concurrency,
        units,
        move |(from, to), s| {
            let p = p.clone();
            async move {
                {
                    let mut sink =
                        TableSink::new(&s, "accounts", "(id, balance)", method, batch, &p);
                    for id in from..to {
                        sink.row().int(id.into()).int(INITIAL_BALANCE);
                        sink.end_row().await?;
                    }
                    sink.finish().await?;
                }
                Ok(s)
            }
        },
    )
    .await;
    progress.finish(shown).await;
    result?;
    println!(
        "loaded bank with {n} accounts of {INITIAL_BALANCE} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn count_accounts(s: &mut Session) -> Result<i64> {
    if existing_tables(s, &["accounts"]).await?.is_empty() {
        return Err(Error::Usage(
            "no accounts table: run `workload init bank` first".into(),
        ));
    }
    let row = s.query_one(COUNT, &[]).await?;
    get_i64(&row, 0, COUNT.text)
}

/// Every balance, read by one statement.
async fn read_all(s: &mut Session) -> Result<concord_workload::bank::Snapshot> {
    let rows = s.query(ALL, &[]).await?;
    let mut snap = Vec::with_capacity(rows.len());
    for row in rows {
        let id = get_i32(&row, 0, ALL.text)?;
        let balance = get_i64(&row, 1, ALL.text)?;
        snap.push((u64::try_from(id).unwrap_or(u64::MAX), balance));
    }
    Ok(snap)
}

/// What `check bank` (and each audit) found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BankReport {
    pub expected_accounts: i64,
    pub accounts: usize,
    pub expected_total: i64,
    pub total: i128,
    /// Every violation, one line each.
    pub problems: Vec<String>,
}

impl BankReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for BankReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ok() {
            return write!(
                f,
                "bank: ok ({} accounts, total {} as expected, no negative balance)",
                self.accounts, self.total
            );
        }
        write!(
            f,
            "bank: VIOLATED ({} accounts, total {}, expected {} accounts and total {})",
            self.accounts, self.total, self.expected_accounts, self.expected_total
        )?;
        for p in self.problems.iter().take(20) {
            write!(f, "\n  {p}")?;
        }
        if self.problems.len() > 20 {
            write!(f, "\n  ... and {} more", self.problems.len() - 20)?;
        }
        Ok(())
    }
}

/// Judges one snapshot of every balance against `accounts` accounts of
/// [`INITIAL_BALANCE`].
pub fn judge(accounts: i64, snapshot: &concord_workload::bank::Snapshot) -> BankReport {
    let expected_total = accounts.saturating_mul(INITIAL_BALANCE);
    let report = concord_workload::bank::check(expected_total, std::slice::from_ref(snapshot));
    let mut problems: Vec<String> = report.anomalies.iter().map(|a| a.to_string()).collect();
    if snapshot.len() as i64 != accounts {
        problems.push(format!(
            "{} accounts read, {accounts} expected",
            snapshot.len()
        ));
    }
    BankReport {
        expected_accounts: accounts,
        accounts: snapshot.len(),
        expected_total,
        total: snapshot.iter().map(|&(_, b)| i128::from(b)).sum(),
        problems,
    }
}

/// `workload check bank`.
pub async fn check(args: &CheckArgs) -> Result<BankReport> {
    let hosts = args.conn.hosts()?;
    let (mut s, _) = first_session(&hosts).await?;
    let count = count_accounts(&mut s).await?;
    let expected = args.accounts.map_or(count, i64::from);
    let snap = read_all(&mut s).await?;
    Ok(judge(expected, &snap))
}

enum Op {
    Transfer { from: i32, to: i32, amount: i64 },
    Audit,
}

struct BankTerminal {
    rng: StdRng,
    accounts: i64,
    audit_percent: u32,
    max_transfer: i64,
    op: Op,
}

impl BankTerminal {
    async fn execute_op(&mut self, s: &mut Session) -> Result<Outcome> {
        match self.op {
            Op::Transfer { from, to, amount } => {
                s.batch("BEGIN").await?;
                // Lock in id order: two opposite transfers do not deadlock.
                let (lo, hi) = (from.min(to), from.max(to));
                let row = s.query_one(LOCK, &[&lo]).await?;
                let lo_balance = get_i64(&row, 0, LOCK.text)?;
                let row = s.query_one(LOCK, &[&hi]).await?;
                let hi_balance = get_i64(&row, 0, LOCK.text)?;
                let (from_balance, to_balance) = if from == lo {
                    (lo_balance, hi_balance)
                } else {
                    (hi_balance, lo_balance)
                };
                // Never overdraw: move what there is, up to the amount.
                let moved = amount.min(from_balance.max(0));
                if moved > 0 {
                    s.execute(UPDATE, &[&from, &(from_balance - moved)]).await?;
                    s.execute(UPDATE, &[&to, &(to_balance + moved)]).await?;
                }
                s.batch("COMMIT").await?;
            }
            Op::Audit => {
                let snap = read_all(s).await?;
                let report = judge(self.accounts, &snap);
                if !report.is_ok() {
                    return Err(Error::Inconsistent(report.to_string()));
                }
            }
        }
        Ok(Outcome::Committed)
    }
}

impl Terminal for BankTerminal {
    fn next(&mut self) -> usize {
        if self.rng.random_range(0..100) < self.audit_percent {
            self.op = Op::Audit;
            return 1;
        }
        let n = self.accounts.clamp(2, i32::MAX as i64) as i32;
        let from = self.rng.random_range(0..n);
        let mut to = self.rng.random_range(0..n - 1);
        if to >= from {
            to += 1;
        }
        self.op = Op::Transfer {
            from,
            to,
            amount: self.rng.random_range(1..=self.max_transfer.max(1)),
        };
        0
    }

    fn execute<'a>(&'a mut self, session: &'a mut Session) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(self.execute_op(session))
    }
}

/// `workload run bank`.
pub async fn run(args: &RunArgs) -> Result<()> {
    args.time.validate()?;
    let hosts = Arc::new(args.conn.hosts()?);
    let (mut s, _) = first_session(&hosts).await?;
    let count = count_accounts(&mut s).await?;
    drop(s);
    let accounts = args.accounts.map_or(count, i64::from);
    if accounts != count {
        return Err(Error::Usage(format!(
            "--accounts {accounts}, but the table holds {count} accounts"
        )));
    }
    if accounts < 2 {
        return Err(Error::Usage("the bank needs at least 2 accounts".into()));
    }
    let terminals: Vec<Box<dyn Terminal>> = (0..args.concurrency.max(1))
        .map(|_| {
            Box::new(BankTerminal {
                rng: StdRng::from_rng(&mut rand::rng()),
                accounts,
                audit_percent: args.audit_percent.min(100),
                max_transfer: args.max_transfer,
                op: Op::Audit,
            }) as Box<dyn Terminal>
        })
        .collect();
    println!(
        "bank: {accounts} accounts, {} workers over {}",
        terminals.len(),
        hosts.describe()
    );
    let cfg = RunConfig {
        workload: "bank",
        names: &NAMES,
        ramp: args.time.ramp,
        duration: args.time.duration,
        connections: args.concurrency.max(1),
        outputs: args.time.outputs(),
    };
    let result = runner::drive(hosts, terminals, &cfg).await?;
    runner::finish(&cfg, &result, serde_json::json!({ "accounts": accounts }))?;
    match result.fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conserved_money_passes_and_every_kind_of_loss_is_reported() {
        let ok: Vec<(u64, i64)> = vec![(0, 900), (1, 1100), (2, 1000)];
        assert!(judge(3, &ok).is_ok());
        let lost = vec![(0, 900), (1, 1000), (2, 1000)];
        let r = judge(3, &lost);
        assert!(!r.is_ok() && r.total == 2900);
        assert!(r.to_string().contains("VIOLATED"));
        let negative = vec![(0, -100), (1, 2100), (2, 1000)];
        assert!(!judge(3, &negative).is_ok());
        let missing = vec![(0, 1000), (1, 2000)];
        let r = judge(3, &missing);
        assert!(
            r.problems
                .iter()
                .any(|p| p.contains("2 accounts read, 3 expected")),
            "{r}"
        );
    }

    #[test]
    fn transfers_pick_two_different_accounts_and_audits_follow_the_percent() {
        let mut t = BankTerminal {
            rng: StdRng::seed_from_u64(3),
            accounts: 5,
            audit_percent: 10,
            max_transfer: 50,
            op: Op::Audit,
        };
        let mut audits = 0;
        for _ in 0..10_000 {
            if t.next() == 1 {
                audits += 1;
                continue;
            }
            match t.op {
                Op::Transfer { from, to, amount } => {
                    assert!(from != to && (0..5).contains(&from) && (0..5).contains(&to));
                    assert!((1..=50).contains(&amount));
                }
                Op::Audit => panic!("index 0 must be a transfer"),
            }
        }
        assert!((800..1200).contains(&audits), "{audits}");
    }
}
