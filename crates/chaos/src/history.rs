//! The history of a run: one JSON object per line, in the order things
//! happened, in the shape Jepsen uses:
//!
//! ```text
//! {"time":1234567,"process":3,"type":"invoke","f":"transfer","value":{…},"node":2}
//! {"time":1301234,"process":3,"type":"ok","f":"transfer","value":{…},"node":2}
//! {"time":…,"process":"nemesis","type":"info","f":"kill","value":{"nodes":["n2"]}}
//! ```
//!
//! `time` is nanoseconds since the run started (one monotonic clock for all
//! clients). Every invocation is followed by exactly one completion of the
//! same process: `ok` (it happened), `fail` (it definitely did not) or
//! `info` (unknown: a timeout or a lost connection). A process whose request
//! ended in `info` never issues another request: the worker continues under
//! a new process number, as Jepsen's do, so that a still-running request
//! cannot be mistaken for a later one.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};

/// Counts of completions.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
}

/// Writes the history as it happens.
pub struct History {
    start: Instant,
    out: Mutex<std::io::BufWriter<std::fs::File>>,
    counts: Mutex<std::collections::BTreeMap<String, Counts>>,
}

impl History {
    pub fn create(path: &Path) -> anyhow::Result<History> {
        Ok(History {
            start: Instant::now(),
            out: Mutex::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
            counts: Mutex::new(Default::default()),
        })
    }

    /// Nanoseconds since the run started.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn write(&self, line: Value) {
        let mut out = self.out.lock().expect("history lock poisoned");
        let _ = writeln!(out, "{line}");
    }

    /// Records an invocation; returns its time.
    pub fn invoke(&self, process: u64, f: &str, value: Value, node: usize) -> u64 {
        let time = self.now();
        self.write(
            json!({"time": time, "process": process, "type": "invoke", "f": f,
                          "value": value, "node": format!("n{}", node + 1)}),
        );
        time
    }

    /// Records a completion (`ok`, `fail` or `info`) of `workload`; returns
    /// its time.
    pub fn complete(
        &self,
        workload: &str,
        process: u64,
        kind: &str,
        f: &str,
        value: Value,
        error: Option<&str>,
    ) -> u64 {
        let time = self.now();
        let mut line =
            json!({"time": time, "process": process, "type": kind, "f": f, "value": value});
        if let Some(e) = error {
            line["error"] = json!(e);
        }
        self.write(line);
        let mut counts = self.counts.lock().expect("counts lock poisoned");
        let c = counts.entry(workload.to_string()).or_default();
        match kind {
            "ok" => c.ok += 1,
            "fail" => c.fail += 1,
            _ => c.info += 1,
        }
        time
    }

    /// Records what the nemesis did.
    pub fn nemesis(&self, f: &str, value: Value) {
        let time = self.now();
        self.write(
            json!({"time": time, "process": "nemesis", "type": "info", "f": f, "value": value}),
        );
    }

    /// Completions per workload.
    pub fn counts(&self) -> std::collections::BTreeMap<String, Counts> {
        self.counts.lock().expect("counts lock poisoned").clone()
    }

    pub fn flush(&self) {
        let _ = self.out.lock().expect("history lock poisoned").flush();
    }
}
