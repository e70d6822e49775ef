//! kv: one table of keys and values, point reads and upserts, like
//! CockroachDB's `kv` and YCSB's A/B/C workloads.
//!
//! ```text
//!   kv(k BIGINT PRIMARY KEY, v BYTEA)
//!   read  (--read-percent):  SELECT k, v FROM kv WHERE k IN ($1, ..., $batch)
//!   write (the rest):        INSERT INTO kv (k, v) VALUES ($1, $2), ... (batch rows)
//!                            ON CONFLICT (k) DO UPDATE SET v = excluded.v
//!   keys: uniform, or YCSB's scrambled zipfian (theta 0.99) over [0, --keys)
//! ```
//!
//! With `--keys 0` the table starts empty (or as it is) and writes insert
//! fresh keys above the largest one; reads then pick uniformly among the
//! keys written so far (the zipfian needs a fixed key space). Keys within
//! one batch are distinct and sorted, so concurrent upserts lock rows in
//! the same order and do not deadlock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tokio_postgres::types::{ToSql, Type};

use crate::command::{ConnArgs, LoadArgs, RunTimeArgs};
use crate::conn::{ServerKind, Session, Sql};
use crate::error::{Error, Result};
use crate::load::{parallel, Progress, TableSink};
use crate::random::ScrambledZipfian;
use crate::runner::{self, RunConfig, Terminal};
use crate::stats::Outcome;
use crate::tpcc::{existing_tables, first_session, prepare_tables};
use crate::values::{get, Int};

const NAMES: [&str; 2] = ["read", "write"];

/// How keys are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Distribution {
    Uniform,
    Zipfian,
}

/// `workload init kv`
#[derive(Args, Debug, Clone)]
pub struct InitArgs {
    /// Rows to load, keys 0 to N-1 (0: create the table empty).
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Bytes of each value.
    #[arg(long, default_value_t = 64)]
    pub value_bytes: usize,
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// `workload run kv`
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Percent of operations that are reads.
    #[arg(long, default_value_t = 95)]
    pub read_percent: u32,
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    pub distribution: Distribution,
    /// Keys per read or write statement.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Key space [0, N) (default: the number of rows in kv; 0: insert
    /// fresh keys as the run goes).
    #[arg(long)]
    pub keys: Option<u64>,
    /// Bytes of each value written.
    #[arg(long, default_value_t = 64)]
    pub value_bytes: usize,
    /// Workers (one connection each).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    #[command(flatten)]
    pub time: RunTimeArgs,
    #[command(flatten)]
    pub conn: ConnArgs,
}

const CREATE: &str = "CREATE TABLE kv (k BIGINT PRIMARY KEY, v BYTEA NOT NULL)";
const COUNT: Sql = Sql::new("SELECT count(*) FROM kv", &[]);
const MAX_KEY: Sql = Sql::new("SELECT max(k) FROM kv", &[]);

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + 2 * bytes.len());
    s.push_str("\\x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// `workload init kv`.
pub async fn init(args: &InitArgs) -> Result<()> {
    let hosts = Arc::new(args.conn.hosts()?);
    let (s, kind) = first_session(&hosts).await?;
    prepare_tables(&s, &["kv"], args.load.drop).await?;
    s.batch(CREATE).await?;
    let n = args.keys;
    if kind == ServerKind::Concord && !args.load.no_split && n >= 16 {
        let points: Vec<i64> = (1..16).map(|i| (n * i / 16) as i64).collect();
        for stmt in crate::tpcc::schema::split_statements("kv", &points) {
            s.batch(&stmt).await?;
        }
    }
    if n == 0 {
        println!("created an empty kv table");
        return Ok(());
    }
    let started = Instant::now();
    let (progress, shown) = Progress::start("kv load", n);
    let chunk = 10_000u64;
    let units: Vec<(u64, u64)> = (0..n)
        .step_by(chunk as usize)
        .map(|from| (from, (from + chunk).min(n)))
        .collect();
    let (method, batch, bytes, p) = (
        args.load.load_method,
        args.load.batch_rows,
        args.value_bytes,
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
                    let mut rng = StdRng::from_rng(&mut rand::rng());
                    let mut value = vec![0u8; bytes];
                    let mut sink = TableSink::new(&s, "kv", "(k, v)", method, batch, &p);
                    for k in from..to {
                        rng.fill_bytes(&mut value);
                        sink.row().int(k as i64).text(&hex(&value));
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
        "loaded kv with {n} keys of {} bytes in {:.1} s",
        args.value_bytes,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Where keys come from.
enum Keys {
    Uniform(u64),
    Zipfian(ScrambledZipfian),
    /// Insert mode: writes take fresh keys from the counter; reads pick
    /// uniformly below it.
    Growing(Arc<AtomicU64>),
}

struct KvTerminal {
    rng: StdRng,
    keys: Arc<Keys>,
    read_percent: u32,
    batch: usize,
    value_bytes: usize,
    read_sql: String,
    read_types: Vec<Type>,
    write_sql: String,
    write_types: Vec<Type>,
    /// The chosen operation: read or write, and its keys.
    write: bool,
    chosen: Vec<i64>,
    values: Vec<Vec<u8>>,
}

/// `SELECT k, v FROM kv WHERE k IN ($1, ..., $n)` and its types.
fn read_statement(n: usize) -> (String, Vec<Type>) {
    let params: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
    (
        format!("SELECT k, v FROM kv WHERE k IN ({})", params.join(", ")),
        vec![Type::INT8; n],
    )
}

/// The multi-row upsert of `n` rows and its types.
fn write_statement(n: usize) -> (String, Vec<Type>) {
    let rows: Vec<String> = (0..n)
        .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
        .collect();
    let mut types = Vec::with_capacity(2 * n);
    for _ in 0..n {
        types.push(Type::INT8);
        types.push(Type::BYTEA);
    }
    (
        format!(
            "INSERT INTO kv (k, v) VALUES {} ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            rows.join(", ")
        ),
        types,
    )
}

impl KvTerminal {
    fn new(keys: Arc<Keys>, args: &RunArgs, batch: usize) -> KvTerminal {
        let (read_sql, read_types) = read_statement(batch);
        let (write_sql, write_types) = write_statement(batch);
        KvTerminal {
            rng: StdRng::from_rng(&mut rand::rng()),
            keys,
            read_percent: args.read_percent.min(100),
            batch,
            value_bytes: args.value_bytes,
            read_sql,
            read_types,
            write_sql,
            write_types,
            write: false,
            chosen: Vec::new(),
            values: Vec::new(),
        }
    }

    /// `batch` distinct keys below `n`, sorted.
    fn distinct(&mut self, n: u64, draw: impl Fn(&mut StdRng) -> u64) -> Vec<i64> {
        let mut keys: Vec<i64> = Vec::with_capacity(self.batch);
        while keys.len() < self.batch {
            let k = draw(&mut self.rng).min(n.saturating_sub(1)) as i64;
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        keys.sort_unstable();
        keys
    }

    async fn execute_op(&mut self, s: &mut Session) -> Result<Outcome> {
        let keys = &self.chosen;
        if self.write {
            let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(2 * keys.len());
            for (k, v) in keys.iter().zip(&self.values) {
                params.push(k);
                params.push(v);
            }
            let sql = Sql {
                text: &self.write_sql,
                types: &self.write_types,
            };
            s.execute(sql, &params).await?;
        } else {
            let params: Vec<&(dyn ToSql + Sync)> =
                keys.iter().map(|k| k as &(dyn ToSql + Sync)).collect();
            let sql = Sql {
                text: &self.read_sql,
                types: &self.read_types,
            };
            let rows = s.query(sql, &params).await?;
            for row in &rows {
                let Int(k) = get(row, 0, sql.text)?;
                if !keys.contains(&k) {
                    return Err(Error::unexpected(
                        sql.text,
                        format!("returned key {k}, not asked for"),
                    ));
                }
            }
        }
        Ok(Outcome::Committed)
    }
}

impl Terminal for KvTerminal {
    fn next(&mut self) -> usize {
        let read = self.rng.random_range(0..100) < self.read_percent;
        let keys = self.keys.clone();
        let (write, chosen) = match &*keys {
            Keys::Uniform(n) => {
                let n = *n;
                (!read, self.distinct(n, |r| r.random_range(0..n)))
            }
            Keys::Zipfian(z) => (!read, self.distinct(u64::MAX, |r| z.next(r))),
            Keys::Growing(next) => {
                let written = next.load(Ordering::Relaxed);
                if read && written >= self.batch as u64 {
                    (
                        false,
                        self.distinct(written, |r| r.random_range(0..written)),
                    )
                } else {
                    let start = next.fetch_add(self.batch as u64, Ordering::Relaxed) as i64;
                    (true, (start..start + self.batch as i64).collect())
                }
            }
        };
        self.write = write;
        self.chosen = chosen;
        if write {
            let bytes = self.value_bytes;
            self.values = (0..self.batch)
                .map(|_| {
                    let mut v = vec![0u8; bytes];
                    self.rng.fill_bytes(&mut v);
                    v
                })
                .collect();
        }
        usize::from(write)
    }

    fn execute<'a>(&'a mut self, session: &'a mut Session) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(self.execute_op(session))
    }
}

/// `workload run kv`.
pub async fn run(args: &RunArgs) -> Result<()> {
    args.time.validate()?;
    if args.batch == 0 {
        return Err(Error::Usage("--batch must be at least 1".into()));
    }
    let hosts = Arc::new(args.conn.hosts()?);
    let (mut s, _) = first_session(&hosts).await?;
    if existing_tables(&s, &["kv"]).await?.is_empty() {
        return Err(Error::Usage(
            "no kv table: run `workload init kv` first".into(),
        ));
    }
    let n = match args.keys {
        Some(n) => n,
        None => {
            let row = s.query_one(COUNT, &[]).await?;
            let Int(c) = get(&row, 0, COUNT.text)?;
            c.max(0) as u64
        }
    };
    let keys = if n == 0 {
        let row = s.query_one(MAX_KEY, &[]).await?;
        let max: Option<Int> = get(&row, 0, MAX_KEY.text)?;
        let next = max.map_or(0, |Int(m)| (m + 1).max(0) as u64);
        Keys::Growing(Arc::new(AtomicU64::new(next)))
    } else {
        if (args.batch as u64) > n {
            return Err(Error::Usage(format!(
                "--batch {} is more than the {n} keys",
                args.batch
            )));
        }
        match args.distribution {
            Distribution::Uniform => Keys::Uniform(n),
            Distribution::Zipfian => Keys::Zipfian(ScrambledZipfian::new(n)),
        }
    };
    drop(s);
    let keys = Arc::new(keys);
    let workers = args.concurrency.max(1);
    let terminals: Vec<Box<dyn Terminal>> = (0..workers)
        .map(|_| Box::new(KvTerminal::new(keys.clone(), args, args.batch)) as Box<dyn Terminal>)
        .collect();
    println!(
        "kv: {} keys ({:?}), {}% reads, batch {}, {workers} workers over {}",
        if n == 0 {
            "growing".to_string()
        } else {
            n.to_string()
        },
        args.distribution,
        args.read_percent.min(100),
        args.batch,
        hosts.describe()
    );
    let cfg = RunConfig {
        workload: "kv",
        names: &NAMES,
        ramp: args.time.ramp,
        duration: args.time.duration,
        connections: workers,
        outputs: args.time.outputs(),
    };
    let result = runner::drive(hosts, terminals, &cfg).await?;
    runner::finish(
        &cfg,
        &result,
        serde_json::json!({
            "keys": n,
            "distribution": format!("{:?}", args.distribution).to_lowercase(),
            "read_percent": args.read_percent,
            "batch": args.batch,
        }),
    )?;
    match result.fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(line: &str) -> RunArgs {
        Cli::try_parse_from(std::iter::once("kv").chain(line.split_whitespace()))
            .unwrap()
            .run
    }

    #[test]
    fn statements_have_one_placeholder_per_key() {
        let (r, t) = read_statement(3);
        assert_eq!(r, "SELECT k, v FROM kv WHERE k IN ($1, $2, $3)");
        assert_eq!(t, vec![Type::INT8; 3]);
        let (w, t) = write_statement(2);
        assert_eq!(
            w,
            "INSERT INTO kv (k, v) VALUES ($1, $2), ($3, $4) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
        );
        assert_eq!(t, vec![Type::INT8, Type::BYTEA, Type::INT8, Type::BYTEA]);
        assert_eq!(hex(&[0, 255, 16]), "\\x00ff10");
    }

    #[test]
    fn batches_hold_distinct_sorted_keys_and_the_read_share_holds() {
        let a = args("--read-percent 80 --batch 4 --value-bytes 7");
        let mut t = KvTerminal::new(Arc::new(Keys::Uniform(10)), &a, 4);
        let mut reads = 0;
        for _ in 0..5000 {
            let kind = t.next();
            reads += usize::from(kind == 0);
            assert_eq!(t.chosen.len(), 4);
            assert!(t.chosen.windows(2).all(|p| p[0] < p[1]));
            assert!(t.chosen.iter().all(|k| (0..10).contains(k)));
            if kind == 1 {
                assert!(t.values.len() == 4 && t.values.iter().all(|v| v.len() == 7));
            }
        }
        assert!((3800..4200).contains(&reads), "{reads}");
    }

    #[test]
    fn zipfian_keys_stay_in_the_key_space() {
        let a = args("--distribution zipfian");
        let mut t = KvTerminal::new(Arc::new(Keys::Zipfian(ScrambledZipfian::new(50))), &a, 1);
        for _ in 0..2000 {
            t.next();
            assert!((0..50).contains(&t.chosen[0]));
        }
    }

    #[test]
    fn insert_mode_writes_fresh_keys_and_reads_only_written_ones() {
        let a = args("--read-percent 50 --batch 2");
        let next = Arc::new(AtomicU64::new(0));
        let mut t = KvTerminal::new(Arc::new(Keys::Growing(next.clone())), &a, 2);
        let mut written = std::collections::HashSet::new();
        for _ in 0..1000 {
            if t.next() == 1 {
                for k in &t.chosen {
                    assert!(written.insert(*k), "key {k} written twice");
                }
            } else {
                assert!(t
                    .chosen
                    .iter()
                    .all(|k| (*k as u64) < next.load(Ordering::Relaxed)));
            }
        }
    }
}
