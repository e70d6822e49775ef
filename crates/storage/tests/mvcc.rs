//! Data-driven MVCC tests: each script in `tests/mvcc/` is a sequence of MVCC
//! operations with the expected output after each block (golden files;
//! regenerate with `UPDATE_GOLDENFILES=1 cargo test -p concord-storage`).
//!
//! Every operation runs on both engines, RocksDB and in-memory, and the test
//! fails if they disagree: the in-memory engine is only useful for tests if it
//! behaves exactly like the real one.
//!
//! Commands (timestamps are `wall` or `wall.logical`; txn ids are names):
//! ```text
//! put k=K v=V ts=T                   committed version
//! del k=K ts=T                       committed tombstone
//! intent k=K [v=V] txn=N ts=T        provisional write of txn N at T (no v: deletion)
//! resolve k=K txn=N commit=T | abort
//! get k=K ts=T [unc=T] [txn=N]       read (unc: uncertainty limit)
//! scan [from=K] [to=K] ts=T [unc=T] [txn=N] [limit=L]
//! check_write k=K ts=T [txn=N]
//! refresh [from=K] [to=K] after=T upto=T [txn=N]
//! dump                               raw contents of the data and lock CFs
//! ```

use std::error::Error;
use std::fmt::Write as _;
use std::sync::Arc;

use concord_hlc::Timestamp;
use concord_proto::meta::TxnMeta;
use concord_storage::mvcc::{self, ReadOpts, Resolution};
use concord_storage::{keys, Cf, Engine, MemoryEngine, RocksEngine, WriteBatch};
use prost::Message;

struct Runner {
    engines: Vec<(&'static str, Arc<dyn Engine>)>,
    _dir: tempfile::TempDir,
}

impl Runner {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let rocks = RocksEngine::open(dir.path()).expect("open rocksdb");
        Runner {
            engines: vec![
                ("memory", Arc::new(MemoryEngine::new())),
                ("rocksdb", Arc::new(rocks)),
            ],
            _dir: dir,
        }
    }
}

fn ts(s: &str) -> Result<Timestamp, Box<dyn Error>> {
    Ok(match s.split_once('.') {
        Some((w, l)) => Timestamp::new(w.parse()?, l.parse()?),
        None => Timestamp::new(s.parse()?, 0),
    })
}

fn fmt_ts(t: Timestamp) -> String {
    if t.logical == 0 {
        t.wall.to_string()
    } else {
        format!("{}.{}", t.wall, t.logical)
    }
}

fn txn(name: &str, at: Timestamp) -> TxnMeta {
    TxnMeta {
        id: name.as_bytes().to_vec(),
        write_ts: Some(at.into()),
        read_ts: Some(at.into()),
        ..Default::default()
    }
}

fn show(v: &Option<Vec<u8>>) -> String {
    match v {
        Some(v) => String::from_utf8_lossy(v).into_owned(),
        None => "<none>".to_string(),
    }
}

fn show_err(e: &mvcc::MvccError) -> String {
    match e {
        mvcc::MvccError::WriteIntent { key, intent } => format!(
            "WriteIntent key={} txn={} ts={}",
            concord_storage::fmt_key(key),
            String::from_utf8_lossy(&intent.id),
            fmt_ts(concord_proto::ts(intent.write_ts))
        ),
        mvcc::MvccError::ReadWithinUncertainty { key, value_ts, .. } => format!(
            "ReadWithinUncertainty key={} value_ts={}",
            concord_storage::fmt_key(key),
            fmt_ts(*value_ts)
        ),
        mvcc::MvccError::WriteTooOld {
            key, existing_ts, ..
        } => format!(
            "WriteTooOld key={} existing={}",
            concord_storage::fmt_key(key),
            fmt_ts(*existing_ts)
        ),
        mvcc::MvccError::Storage(e) => format!("Storage {e}"),
    }
}

/// `ts=`, `unc=` and `txn=` of a read command.
type ReadArgs = (Timestamp, Timestamp, Option<Vec<u8>>);

fn run_one(engine: &dyn Engine, cmd: &goldenscript::Command) -> Result<String, Box<dyn Error>> {
    let mut args = cmd.consume_args();
    let mut out = String::new();
    let opts_from =
        |args: &mut goldenscript::ArgumentConsumer| -> Result<ReadArgs, Box<dyn Error>> {
            let at = ts(args.take_key("ts").ok_or("ts= required")?)?;
            let unc = match args.take_key("unc") {
                Some(u) => ts(u)?,
                None => at,
            };
            let txn = args.take_key("txn").map(|t| t.as_bytes().to_vec());
            Ok((at, unc, txn))
        };
    match cmd.name.as_str() {
        "put" | "del" => {
            let k = args.take_key("k").ok_or("k= required")?;
            let v = args.take_key("v");
            let at = ts(args.take_key("ts").ok_or("ts= required")?)?;
            args.reject_next()?;
            let mut b = WriteBatch::new();
            let value = if cmd.name == "put" {
                Some(v.ok_or("v= required")?.as_bytes())
            } else {
                None
            };
            mvcc::put_version(&mut b, k.as_bytes(), at, value);
            engine.write(b, true)?;
        }
        "intent" => {
            let k = args.take_key("k").ok_or("k= required")?;
            let v = args.take_key("v");
            let name = args.take_key("txn").ok_or("txn= required")?;
            let at = ts(args.take_key("ts").ok_or("ts= required")?)?;
            args.reject_next()?;
            let mut b = WriteBatch::new();
            match mvcc::put_intent(
                engine,
                &mut b,
                k.as_bytes(),
                v.map(|v| v.as_bytes()),
                &txn(name, at),
            ) {
                Ok(()) => engine.write(b, true)?,
                Err(e) => writeln!(out, "error: {}", show_err(&e))?,
            }
        }
        "resolve" => {
            let k = args.take_key("k").ok_or("k= required")?;
            let name = args.take_key("txn").ok_or("txn= required")?;
            let resolution = match args.take_key("commit") {
                Some(c) => Resolution::Commit(ts(c)?),
                None => {
                    args.next_pos()
                        .filter(|p| *p == "abort")
                        .ok_or("commit=T or abort required")?;
                    Resolution::Abort
                }
            };
            args.reject_next()?;
            let mut b = WriteBatch::new();
            let found =
                mvcc::resolve_intent(engine, &mut b, k.as_bytes(), name.as_bytes(), resolution)?;
            engine.write(b, true)?;
            writeln!(out, "resolved: {found}")?;
        }
        "get" => {
            let k = args.take_key("k").ok_or("k= required")?;
            let (at, unc, txn) = opts_from(&mut args)?;
            args.reject_next()?;
            let opts = ReadOpts {
                read_ts: at,
                uncertainty_limit: unc,
                txn_id: txn.as_deref(),
            };
            match mvcc::get(engine, k.as_bytes(), opts) {
                Ok(v) => writeln!(out, "{k} → {}", show(&v))?,
                Err(e) => writeln!(out, "error: {}", show_err(&e))?,
            }
        }
        "scan" => {
            let from = args.take_key("from").unwrap_or("");
            let to = args.take_key("to");
            let limit: usize = args
                .take_key("limit")
                .map(str::parse)
                .transpose()?
                .unwrap_or(0);
            let (at, unc, txn) = opts_from(&mut args)?;
            args.reject_next()?;
            let opts = ReadOpts {
                read_ts: at,
                uncertainty_limit: unc,
                txn_id: txn.as_deref(),
            };
            match mvcc::scan(engine, from.as_bytes(), to.map(str::as_bytes), limit, opts) {
                Ok(r) => {
                    for (k, v) in &r.rows {
                        writeln!(
                            out,
                            "{} → {}",
                            concord_storage::fmt_key(k),
                            String::from_utf8_lossy(v)
                        )?;
                    }
                    if let Some(resume) = r.resume_key {
                        writeln!(out, "resume at {}", concord_storage::fmt_key(&resume))?;
                    }
                    if r.rows.is_empty() {
                        writeln!(out, "<no rows>")?;
                    }
                }
                Err(e) => writeln!(out, "error: {}", show_err(&e))?,
            }
        }
        "check_write" => {
            let k = args.take_key("k").ok_or("k= required")?;
            let at = ts(args.take_key("ts").ok_or("ts= required")?)?;
            let txn = args.take_key("txn").map(|t| t.as_bytes().to_vec());
            args.reject_next()?;
            match mvcc::check_write(engine, k.as_bytes(), at, txn.as_deref()) {
                Ok(()) => writeln!(out, "ok")?,
                Err(e) => writeln!(out, "error: {}", show_err(&e))?,
            }
        }
        "refresh" => {
            let from = args.take_key("from").unwrap_or("");
            let to = args.take_key("to");
            let after = ts(args.take_key("after").ok_or("after= required")?)?;
            let upto = ts(args.take_key("upto").ok_or("upto= required")?)?;
            let txn = args.take_key("txn").map(|t| t.as_bytes().to_vec());
            args.reject_next()?;
            match mvcc::find_write_in_span(
                engine,
                from.as_bytes(),
                to.map(str::as_bytes),
                after,
                upto,
                txn.as_deref(),
            )? {
                None => writeln!(out, "unchanged")?,
                Some((k, t)) => writeln!(
                    out,
                    "changed: {} at {}",
                    concord_storage::fmt_key(&k),
                    fmt_ts(t)
                )?,
            }
        }
        "dump" => {
            args.reject_next()?;
            for (k, v) in engine.scan(Cf::Data, b"", None, 0)? {
                let (key, t) = keys::decode_mvcc_key(&k)?;
                let value = mvcc::decode_value(&v)?;
                writeln!(
                    out,
                    "data: {}@{} → {}",
                    concord_storage::fmt_key(&key),
                    fmt_ts(t),
                    show(&value)
                )?;
            }
            for (k, v) in engine.scan(Cf::Lock, b"", None, 0)? {
                let intent = concord_proto::meta::Intent::decode(v.as_slice())?;
                let t = intent.txn.unwrap_or_default();
                let value = if intent.tombstone {
                    "<delete>".to_string()
                } else {
                    String::from_utf8_lossy(&intent.value).into_owned()
                };
                writeln!(
                    out,
                    "lock: {} txn={} ts={} → {}",
                    concord_storage::fmt_key(&k),
                    String::from_utf8_lossy(&t.id),
                    fmt_ts(concord_proto::ts(t.write_ts)),
                    value
                )?;
            }
        }
        name => return Err(format!("unknown command {name}").into()),
    }
    Ok(out)
}

impl goldenscript::Runner for Runner {
    type Command = goldenscript::Command;

    fn run(
        &mut self,
        cmd: &goldenscript::Command,
        _ctx: &goldenscript::Context,
    ) -> Result<String, Box<dyn Error>> {
        let mut outputs = Vec::new();
        for (name, engine) in &self.engines {
            outputs.push((name, run_one(engine.as_ref(), cmd)?));
        }
        let (first_name, first) = &outputs[0];
        for (name, out) in &outputs[1..] {
            if out != first {
                return Err(
                    format!("engines disagree:\n{first_name}:\n{first}\n{name}:\n{out}").into(),
                );
            }
        }
        Ok(first.clone())
    }
}

macro_rules! golden {
    ($($name:ident),*) => {$(
        #[test]
        fn $name() -> std::io::Result<()> {
            goldenscript::run(&mut Runner::new(), concat!("tests/mvcc/", stringify!($name)))
        }
    )*};
}

golden!(reads, uncertainty, intents, writes, scans);
