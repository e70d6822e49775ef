//! The list-append checker: Elle's method for finding isolation anomalies.
//!
//! The list-append workload keeps a set of keys, each holding a list of
//! integers. A transaction is a handful of operations, each either *append
//! value v to key k* or *read the whole list at key k*; the generator makes
//! every appended value unique per key. Because a list remembers every append
//! in order, one read of a key reveals the whole history of versions that led
//! up to it, and that is what lets a checker recover, from client
//! observations only, a dependency graph between transactions that is
//! exact where a register workload could only guess. The method is Elle's
//! (Kingsbury & Alvaro, "Elle: Inferring Isolation Anomalies from
//! Experimental Observations", VLDB 2020); the anomaly names are Adya's.
//!
//! # How a history is checked
//!
//! 1. **Index appends.** Every `(key, value)` is mapped to the transaction
//!    that appended it, and whether it was that transaction's last append to
//!    the key. A pair appended twice is reported (`DuplicateAppend`); the
//!    generator promised it cannot happen.
//! 2. **Decide who committed.** Committed transactions are in; aborted ones
//!    are out. A transaction with an unknown outcome (a timeout during
//!    COMMIT, say) is in exactly when one of its appends was observed by a
//!    transaction that is in (a fixed point: its own reads then count as
//!    observations too); otherwise it is ignored. Only the reads of
//!    transactions that are in are used as evidence.
//! 3. **Check each read.** Per element: a value no transaction appended
//!    (`UnknownValue`), a value appended by an aborted transaction (G1a,
//!    aborted read), a value that occurs twice in the list
//!    (`DuplicateElements`). Per read: a list ending in a value that is not
//!    its writer's last append to that key shows state from the middle of
//!    another transaction (G1b, intermediate read). Within one transaction,
//!    a read must agree with the transaction's own earlier reads and appends
//!    of that key (`Internal`).
//! 4. **Infer the version order** of each key: the longest read of the key.
//!    Every other read of the key must be a prefix of it; a read that is not
//!    is reported (`IncompatibleOrder`) and gives no anti-dependency edges.
//!    The longest read is trusted even then, so once a key's order is
//!    incompatible, cycles through that key may be artefacts of a wrong
//!    order: fix the first anomaly first.
//! 5. **Build the dependency graph** over the committed transactions:
//!
//!    ```text
//!      version order of key k:   [ ... a  b ... ]      a appended by T1, b by T2
//!
//!      ww   T1 ──► T2    T1 appended a, T2 appended b right after it
//!      wr   T1 ──► T3    T3 read k as [ ..., a ]           (saw T1's append)
//!      rw   T3 ──► T2    T3 read k as [ ..., a ] or [ ]    (missed b, the next one)
//!    ```
//!
//!    Values of aborted transactions and unknown values are skipped when
//!    looking for "the previous" or "the next" element. Edges from a
//!    transaction to itself are dropped. An edge between the same two
//!    transactions may carry several kinds; each kind keeps the first key
//!    that caused it, to explain it.
//! 6. **Find cycles.** A serializable history has an acyclic graph. Tarjan's
//!    algorithm splits the graph into strongly connected components; in each
//!    non-trivial one the checker looks for an actual cycle, strongest kind
//!    first, by breadth-first search restricted to some edge kinds:
//!
//!    ```text
//!      G0        ww only                      (write cycle, dirty write)
//!      G1c       ww + wr, at least one wr     (circular information flow)
//!      G-single  ww + wr + exactly one rw     (read skew, lost update)
//!      G2        two or more rw               (write skew)
//!    ```
//!
//!    G0 and G1c are found by running Tarjan again on the component with
//!    only the allowed kinds and closing a cycle through a ww (resp. a wr-only)
//!    edge in each sub-component. For the anti-dependency classes, a cycle
//!    through the rw-only edge `u ─rw─► v` exists because `u` and `v` share a
//!    component; it is a G-single if `v` reaches `u` over ww and wr edges
//!    alone, found by one search per distinct `v`. Otherwise the cycle closed
//!    over all kinds is reported as G2. Each class is reported at most once
//!    per (sub-)component, with the transactions, keys and values of every
//!    step, so one witness is shown per tangle rather than every cycle.
//!
//! Everything is linear in the size of the history (the read lists included)
//! and the number of edges, except the G-single search, which may need one
//! search per distinct rw target in a component. It runs under a budget of
//! [`G_SINGLE_SEARCH_BUDGET`] edge visits per component; when the budget runs
//! out, the component is reported by its G2 witness, which may then contain
//! one rw edge only (and is then labelled G-single), and
//! [`Report::search_exhausted`] is set.
//!
//! # Not done yet
//! - Real-time edges (T1 ended before T2 started), which would turn the
//!   check into one of strict serializability; [`Txn`] has room for the
//!   times, but they are not used.
//! - Lost acknowledged appends: an append of a committed transaction that no
//!   read ever observed is not reported. That needs a final read of every key
//!   after the cluster has healed, which the generator does not do yet.
//! - Elle's extra version-order inference (from real time and from the order
//!   of a transaction's own writes across keys), and cycle classes finer
//!   than Adya's (G-nonadjacent and process-order variants).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// Identifies a transaction in the history; should be unique (duplicates are
/// reported, and make explanations ambiguous).
pub type TxnId = u64;
/// A list-append key.
pub type Key = u64;
/// An element of a list; unique per key across the whole history.
pub type Value = u64;

/// Budget of edge visits for the G-single search in one strongly connected
/// component; see the module documentation.
pub const G_SINGLE_SEARCH_BUDGET: usize = 20_000_000;

/// How a transaction ended, as far as its client knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// COMMIT succeeded.
    Committed,
    /// The transaction definitely did not commit (e.g. SQLSTATE 40001).
    Aborted,
    /// The outcome is indeterminate (timeout, connection lost during
    /// COMMIT). Treated as committed if one of its appends was observed.
    Unknown,
}

/// One operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Append `value` to the list at `key`.
    Append { key: Key, value: Value },
    /// Read the whole list at `key`; `None` if the result was not observed.
    Read { key: Key, value: Option<Vec<Value>> },
}

impl Op {
    /// An append of `value` to `key`.
    pub fn append(key: Key, value: Value) -> Op {
        Op::Append { key, value }
    }

    /// A read of `key` that returned `list`.
    pub fn read(key: Key, list: impl Into<Vec<Value>>) -> Op {
        Op::Read {
            key,
            value: Some(list.into()),
        }
    }

    /// A read of `key` whose result was not observed.
    pub fn read_unobserved(key: Key) -> Op {
        Op::Read { key, value: None }
    }
}

/// One transaction of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Txn {
    pub id: TxnId,
    pub status: Status,
    pub ops: Vec<Op>,
    /// When the client began the transaction, in nanoseconds on any clock
    /// shared by all clients. Not used yet.
    pub start_ns: Option<u64>,
    /// When the client learned the outcome. Not used yet.
    pub end_ns: Option<u64>,
}

impl Txn {
    /// A transaction without real-time information.
    pub fn new(id: TxnId, status: Status, ops: Vec<Op>) -> Txn {
        Txn {
            id,
            status,
            ops,
            start_ns: None,
            end_ns: None,
        }
    }

    /// A committed transaction.
    pub fn committed(id: TxnId, ops: Vec<Op>) -> Txn {
        Txn::new(id, Status::Committed, ops)
    }

    /// An aborted transaction.
    pub fn aborted(id: TxnId, ops: Vec<Op>) -> Txn {
        Txn::new(id, Status::Aborted, ops)
    }

    /// A transaction whose outcome is unknown.
    pub fn unknown(id: TxnId, ops: Vec<Op>) -> Txn {
        Txn::new(id, Status::Unknown, ops)
    }

    /// Sets the real-time bounds of the transaction.
    pub fn with_times(mut self, start_ns: u64, end_ns: u64) -> Txn {
        self.start_ns = Some(start_ns);
        self.end_ns = Some(end_ns);
        self
    }
}

/// The kind of a dependency edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EdgeKind {
    /// Write-write: the target appended the next version after the source's.
    Ww,
    /// Write-read: the target read the source's append.
    Wr,
    /// Read-write (anti-dependency): the target appended the version the
    /// source's read missed.
    Rw,
}

impl EdgeKind {
    fn bit(self) -> u8 {
        match self {
            EdgeKind::Ww => WW,
            EdgeKind::Wr => WR,
            EdgeKind::Rw => RW,
        }
    }

    fn slot(self) -> usize {
        match self {
            EdgeKind::Ww => 0,
            EdgeKind::Wr => 1,
            EdgeKind::Rw => 2,
        }
    }
}

impl fmt::Display for EdgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EdgeKind::Ww => "ww",
            EdgeKind::Wr => "wr",
            EdgeKind::Rw => "rw",
        })
    }
}

const WW: u8 = 1;
const WR: u8 = 2;
const RW: u8 = 4;
const ALL: u8 = WW | WR | RW;

/// Why one transaction depends on another: the evidence behind an edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dependency {
    /// The source appended `prev` to `key`, and the target appended `next`,
    /// the next element of the version order.
    Ww { key: Key, prev: Value, next: Value },
    /// The target read `key` as a list ending in `value` (ignoring values of
    /// aborted transactions), which the source appended.
    Wr { key: Key, value: Value },
    /// The source read `key` as a list ending in `read_last` (`None`: an
    /// empty list), and the target appended `next`, the element after it.
    Rw {
        key: Key,
        read_last: Option<Value>,
        next: Value,
    },
}

impl Dependency {
    /// The kind of edge this evidence supports.
    pub fn kind(&self) -> EdgeKind {
        match self {
            Dependency::Ww { .. } => EdgeKind::Ww,
            Dependency::Wr { .. } => EdgeKind::Wr,
            Dependency::Rw { .. } => EdgeKind::Rw,
        }
    }

    /// The key the evidence is about.
    pub fn key(&self) -> Key {
        match self {
            Dependency::Ww { key, .. }
            | Dependency::Wr { key, .. }
            | Dependency::Rw { key, .. } => *key,
        }
    }
}

/// One edge of a cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CycleStep {
    pub from: TxnId,
    pub to: TxnId,
    pub dependency: Dependency,
}

impl fmt::Display for CycleStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (from, to) = (self.from, self.to);
        match &self.dependency {
            Dependency::Ww { key, prev, next } => write!(
                f,
                "T{from} appended {prev} to key {key} and T{to} appended the next element {next} (ww)"
            ),
            Dependency::Wr { key, value } => write!(
                f,
                "T{to} read key {key} ending in {value}, which T{from} appended (wr)"
            ),
            Dependency::Rw {
                key,
                read_last: Some(last),
                next,
            } => write!(
                f,
                "T{from} read key {key} ending in {last} and missed {next}, which T{to} appended next (rw)"
            ),
            Dependency::Rw {
                key,
                read_last: None,
                next,
            } => write!(
                f,
                "T{from} read key {key} as empty and missed {next}, which T{to} appended first (rw)"
            ),
        }
    }
}

/// A cycle in the dependency graph; the last step leads back to the first
/// step's source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cycle {
    pub steps: Vec<CycleStep>,
}

impl Cycle {
    /// The transactions on the cycle, in order.
    pub fn txns(&self) -> Vec<TxnId> {
        self.steps.iter().map(|s| s.from).collect()
    }

    /// How many steps of the cycle are of `kind`.
    pub fn count(&self, kind: EdgeKind) -> usize {
        self.steps
            .iter()
            .filter(|s| s.dependency.kind() == kind)
            .count()
    }
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.steps {
            write!(f, "T{} -{}-> ", step.from, step.dependency.kind())?;
        }
        if let Some(first) = self.steps.first() {
            write!(f, "T{}", first.from)?;
        }
        for step in &self.steps {
            write!(f, "; {step}")?;
        }
        Ok(())
    }
}

/// One thing wrong with a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// A cycle of ww edges only: write cycle (dirty write).
    G0 { cycle: Cycle },
    /// Aborted read: committed `reader` observed `value`, appended to `key`
    /// by aborted `writer`. Reported once per value.
    G1a {
        key: Key,
        value: Value,
        writer: TxnId,
        reader: TxnId,
    },
    /// Intermediate read: `reader` read `key` as a list ending in `value`,
    /// but `writer` went on to append `final_value` to `key`.
    G1b {
        key: Key,
        value: Value,
        writer: TxnId,
        reader: TxnId,
        final_value: Value,
    },
    /// A cycle of ww and wr edges with at least one wr: circular information
    /// flow.
    G1c { cycle: Cycle },
    /// A cycle with exactly one rw edge (read skew, lost update).
    GSingle { cycle: Cycle },
    /// A cycle with two or more rw edges (write skew).
    G2 { cycle: Cycle },
    /// `read` by `reader` is not a prefix of `longest`, the longest read of
    /// `key` (by `longest_reader`); they first differ at `index`.
    /// `incompatible_reads` reads of the key disagree with the longest; this
    /// is the first of them.
    IncompatibleOrder {
        key: Key,
        longest_reader: TxnId,
        longest: Vec<Value>,
        reader: TxnId,
        read: Vec<Value>,
        index: usize,
        incompatible_reads: usize,
    },
    /// `reader` read `key` as a list containing `value` more than once.
    /// Reported once per value.
    DuplicateElements {
        key: Key,
        value: Value,
        reader: TxnId,
    },
    /// `reader` read `value` in `key`, but no transaction appended it.
    /// Reported once per value.
    UnknownValue {
        key: Key,
        value: Value,
        reader: TxnId,
    },
    /// Two appends of the same value to the same key; the history breaks the
    /// generator's promise, and the second append is ignored.
    DuplicateAppend {
        key: Key,
        value: Value,
        first: TxnId,
        second: TxnId,
    },
    /// A read that disagrees with the same transaction's earlier reads and
    /// appends of `key`. If `exact`, the read should have been exactly
    /// `expected`; otherwise it should have ended with `expected`, the
    /// transaction's own appends so far.
    Internal {
        txn: TxnId,
        key: Key,
        read: Vec<Value>,
        expected: Vec<Value>,
        exact: bool,
    },
    /// Two transactions of the history share an id.
    DuplicateTxnId { id: TxnId },
}

impl Anomaly {
    /// The short name of the anomaly: "G0", "G1a", "G-single", ...
    pub fn name(&self) -> &'static str {
        match self {
            Anomaly::G0 { .. } => "G0",
            Anomaly::G1a { .. } => "G1a",
            Anomaly::G1b { .. } => "G1b",
            Anomaly::G1c { .. } => "G1c",
            Anomaly::GSingle { .. } => "G-single",
            Anomaly::G2 { .. } => "G2",
            Anomaly::IncompatibleOrder { .. } => "incompatible-order",
            Anomaly::DuplicateElements { .. } => "duplicate-elements",
            Anomaly::UnknownValue { .. } => "unknown-value",
            Anomaly::DuplicateAppend { .. } => "duplicate-append",
            Anomaly::Internal { .. } => "internal",
            Anomaly::DuplicateTxnId { .. } => "duplicate-txn-id",
        }
    }

    /// The cycle, for the cycle anomalies.
    pub fn cycle(&self) -> Option<&Cycle> {
        match self {
            Anomaly::G0 { cycle }
            | Anomaly::G1c { cycle }
            | Anomaly::GSingle { cycle }
            | Anomaly::G2 { cycle } => Some(cycle),
            _ => None,
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::G0 { cycle } => write!(f, "G0 (write cycle): {cycle}"),
            Anomaly::G1c { cycle } => write!(f, "G1c (circular information flow): {cycle}"),
            Anomaly::GSingle { cycle } => {
                write!(f, "G-single (one anti-dependency: read skew, lost update): {cycle}")
            }
            Anomaly::G2 { cycle } => write!(
                f,
                "G2 (anti-dependency cycle, {} rw edges): {cycle}",
                cycle.count(EdgeKind::Rw)
            ),
            Anomaly::G1a {
                key,
                value,
                writer,
                reader,
            } => write!(
                f,
                "G1a (aborted read): T{reader} read {value} in key {key}, appended by aborted T{writer}"
            ),
            Anomaly::G1b {
                key,
                value,
                writer,
                reader,
                final_value,
            } => write!(
                f,
                "G1b (intermediate read): T{reader} read key {key} ending in {value}, \
                 but T{writer} appended {final_value} to key {key} after {value}"
            ),
            Anomaly::IncompatibleOrder {
                key,
                longest_reader,
                longest,
                reader,
                read,
                index,
                incompatible_reads,
            } => {
                write!(
                    f,
                    "incompatible order of key {key}: T{reader} read {} but T{longest_reader} read {}; \
                     they differ at index {index}",
                    fmt_list(read),
                    fmt_list(longest)
                )?;
                if *incompatible_reads > 1 {
                    write!(
                        f,
                        " ({incompatible_reads} reads of key {key} are not prefixes of the longest)"
                    )?;
                }
                Ok(())
            }
            Anomaly::DuplicateElements { key, value, reader } => write!(
                f,
                "duplicate elements: T{reader} read key {key} with {value} more than once"
            ),
            Anomaly::UnknownValue { key, value, reader } => write!(
                f,
                "unknown value: T{reader} read {value} in key {key}, which no transaction appended"
            ),
            Anomaly::DuplicateAppend {
                key,
                value,
                first,
                second,
            } => write!(
                f,
                "duplicate append: T{first} and T{second} both appended {value} to key {key}"
            ),
            Anomaly::Internal {
                txn,
                key,
                read,
                expected,
                exact,
            } => {
                if *exact {
                    write!(
                        f,
                        "internal: T{txn} read key {key} as {} but its own earlier reads and appends imply {}",
                        fmt_list(read),
                        fmt_list(expected)
                    )
                } else {
                    write!(
                        f,
                        "internal: T{txn} read key {key} as {}, which does not end with its own appends {}",
                        fmt_list(read),
                        fmt_list(expected)
                    )
                }
            }
            Anomaly::DuplicateTxnId { id } => {
                write!(f, "duplicate transaction id: T{id} appears more than once")
            }
        }
    }
}

/// Formats a list, eliding the middle of long ones.
fn fmt_list(list: &[Value]) -> String {
    const EDGE: usize = 4;
    let join = |s: &[Value]| {
        s.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if list.len() <= 2 * EDGE + 1 {
        format!("[{}]", join(list))
    } else {
        format!(
            "[{}, …{} more…, {}]",
            join(&list[..EDGE]),
            list.len() - 2 * EDGE,
            join(&list[list.len() - EDGE..])
        )
    }
}

/// What the list-append checker found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Every anomaly found, in a deterministic order for a given history.
    pub anomalies: Vec<Anomaly>,
    /// Transactions in the history.
    pub txns_checked: usize,
    /// Transactions in the dependency graph: committed ones and unknown ones
    /// whose appends were observed.
    pub committed_txns: usize,
    /// Unknown-outcome transactions treated as committed.
    pub promoted_unknown: usize,
    /// Distinct keys appended or read.
    pub keys: usize,
    /// Distinct (source, target) pairs in the dependency graph.
    pub edges: usize,
    /// The G-single search ran out of budget in some component; see
    /// [`G_SINGLE_SEARCH_BUDGET`].
    pub search_exhausted: bool,
}

impl Report {
    /// True if no anomaly was found.
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// How many anomalies of each name were found.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for anomaly in &self.anomalies {
            *counts.entry(anomaly.name()).or_insert(0) += 1;
        }
        counts
    }

    /// True if an anomaly with this name (see [`Anomaly::name`]) was found.
    pub fn has(&self, name: &str) -> bool {
        self.anomalies.iter().any(|a| a.name() == name)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "list-append: {} txns ({} in graph, {} unknown promoted), {} keys, {} edges: ",
            self.txns_checked, self.committed_txns, self.promoted_unknown, self.keys, self.edges
        )?;
        if self.is_valid() {
            return f.write_str("valid");
        }
        let counts: Vec<String> = self
            .counts()
            .iter()
            .map(|(name, n)| format!("{n} {name}"))
            .collect();
        write!(f, "INVALID ({})", counts.join(", "))?;
        if self.search_exhausted {
            f.write_str(" [G-single search budget exhausted]")?;
        }
        for anomaly in &self.anomalies {
            write!(f, "\n  {anomaly}")?;
        }
        Ok(())
    }
}

/// Checks a list-append history. See the module documentation for the
/// method. The history may be in any order; `Txn::id`s should be unique.
pub fn check(history: &[Txn]) -> Report {
    Checker::new(history).run()
}

/// Who appended a `(key, value)`.
#[derive(Clone, Copy)]
struct Writer {
    /// Index of the transaction in the history.
    txn: usize,
    /// Whether this was the transaction's last append to the key.
    is_final: bool,
}

/// An edge of the dependency graph, with the first evidence of each kind.
struct Edge {
    to: usize,
    mask: u8,
    reasons: [Option<Dependency>; 3],
}

struct Checker<'a> {
    history: &'a [Txn],
    anomalies: Vec<Anomaly>,
    writers: HashMap<(Key, Value), Writer>,
    /// Whether each transaction is in the dependency graph.
    in_graph: Vec<bool>,
    promoted_unknown: usize,
    /// Every observed read of a transaction in the graph, by key, in history
    /// order: (transaction index, list).
    reads: BTreeMap<Key, Vec<(usize, &'a [Value])>>,
    keys: HashSet<Key>,
    adj: Vec<Vec<Edge>>,
    edge_index: HashMap<(usize, usize), usize>,
    search_exhausted: bool,
}

impl<'a> Checker<'a> {
    fn new(history: &'a [Txn]) -> Self {
        Checker {
            history,
            anomalies: Vec::new(),
            writers: HashMap::new(),
            in_graph: vec![false; history.len()],
            promoted_unknown: 0,
            reads: BTreeMap::new(),
            keys: HashSet::new(),
            adj: (0..history.len()).map(|_| Vec::new()).collect(),
            edge_index: HashMap::new(),
            search_exhausted: false,
        }
    }

    fn run(mut self) -> Report {
        self.check_ids();
        self.index_appends();
        self.decide_committed();
        self.collect_reads();
        self.check_internal();
        self.check_reads_and_build_graph();
        self.find_cycles();
        Report {
            anomalies: self.anomalies,
            txns_checked: self.history.len(),
            committed_txns: self.in_graph.iter().filter(|&&b| b).count(),
            promoted_unknown: self.promoted_unknown,
            keys: self.keys.len(),
            edges: self.edge_index.len(),
            search_exhausted: self.search_exhausted,
        }
    }

    fn id(&self, txn: usize) -> TxnId {
        self.history[txn].id
    }

    fn check_ids(&mut self) {
        let mut seen = HashSet::new();
        let mut reported = HashSet::new();
        let history = self.history;
        for txn in history {
            if !seen.insert(txn.id) && reported.insert(txn.id) {
                self.anomalies.push(Anomaly::DuplicateTxnId { id: txn.id });
            }
        }
    }

    /// Step 1: map every (key, value) to its writer.
    fn index_appends(&mut self) {
        let history = self.history;
        let mut last_append: HashMap<Key, Value> = HashMap::new();
        for (t, txn) in history.iter().enumerate() {
            last_append.clear();
            for op in &txn.ops {
                match op {
                    Op::Append { key, value } => {
                        self.keys.insert(*key);
                        last_append.insert(*key, *value);
                        match self.writers.get(&(*key, *value)) {
                            Some(first) => self.anomalies.push(Anomaly::DuplicateAppend {
                                key: *key,
                                value: *value,
                                first: history[first.txn].id,
                                second: txn.id,
                            }),
                            None => {
                                self.writers.insert(
                                    (*key, *value),
                                    Writer {
                                        txn: t,
                                        is_final: false,
                                    },
                                );
                            }
                        }
                    }
                    Op::Read { key, .. } => {
                        self.keys.insert(*key);
                    }
                }
            }
            for (&key, &value) in &last_append {
                if let Some(w) = self.writers.get_mut(&(key, value)) {
                    if w.txn == t {
                        w.is_final = true;
                    }
                }
            }
        }
    }

    /// Step 2: committed transactions, plus unknown ones whose appends were
    /// observed by transactions already in (to a fixed point).
    fn decide_committed(&mut self) {
        let history = self.history;
        let mut work: Vec<usize> = Vec::new();
        for (t, txn) in history.iter().enumerate() {
            if txn.status == Status::Committed {
                self.in_graph[t] = true;
                work.push(t);
            }
        }
        while let Some(t) = work.pop() {
            for op in &history[t].ops {
                let Op::Read {
                    key,
                    value: Some(list),
                } = op
                else {
                    continue;
                };
                for value in list {
                    if let Some(w) = self.writers.get(&(*key, *value)) {
                        if history[w.txn].status == Status::Unknown && !self.in_graph[w.txn] {
                            self.in_graph[w.txn] = true;
                            self.promoted_unknown += 1;
                            work.push(w.txn);
                        }
                    }
                }
            }
        }
    }

    /// Gathers the observed reads of transactions in the graph, by key.
    fn collect_reads(&mut self) {
        let history = self.history;
        for (t, txn) in history.iter().enumerate() {
            if !self.in_graph[t] {
                continue;
            }
            for op in &txn.ops {
                if let Op::Read {
                    key,
                    value: Some(list),
                } = op
                {
                    self.reads
                        .entry(*key)
                        .or_default()
                        .push((t, list.as_slice()));
                }
            }
        }
    }

    /// Step 3, within transactions: a read must agree with the
    /// transaction's own earlier reads and appends of the key.
    fn check_internal(&mut self) {
        // Per key: the last list read (if any) and own appends since.
        let history = self.history;
        let mut state: HashMap<Key, (Option<&[Value]>, Vec<Value>)> = HashMap::new();
        for (t, txn) in history.iter().enumerate() {
            if !self.in_graph[t] {
                continue;
            }
            state.clear();
            for op in &txn.ops {
                match op {
                    Op::Append { key, value } => state.entry(*key).or_default().1.push(*value),
                    Op::Read { key, value: None } => {
                        // Unobserved: we no longer know the list exactly.
                        state.remove(key);
                    }
                    Op::Read {
                        key,
                        value: Some(list),
                    } => {
                        let (known, own) = state.entry(*key).or_default();
                        let anomaly = match known {
                            Some(base) => {
                                let ok = list.len() == base.len() + own.len()
                                    && list.starts_with(base)
                                    && list.ends_with(own);
                                (!ok).then(|| {
                                    let mut expected = base.to_vec();
                                    expected.extend_from_slice(own);
                                    (expected, true)
                                })
                            }
                            None => (!list.ends_with(own)).then(|| (own.clone(), false)),
                        };
                        if let Some((expected, exact)) = anomaly {
                            self.anomalies.push(Anomaly::Internal {
                                txn: txn.id,
                                key: *key,
                                read: list.clone(),
                                expected,
                                exact,
                            });
                        }
                        *known = Some(list.as_slice());
                        own.clear();
                    }
                }
            }
        }
    }

    /// Steps 3 to 5: per-read checks, version orders, and the edges.
    fn check_reads_and_build_graph(&mut self) {
        let reads = std::mem::take(&mut self.reads);
        let mut reported: HashSet<(Key, Value)> = HashSet::new();
        let mut duplicates_reported: HashSet<(Key, Value)> = HashSet::new();
        let mut in_list: HashSet<Value> = HashSet::new();

        for (&key, key_reads) in &reads {
            // Per-element checks.
            for &(reader, list) in key_reads {
                in_list.clear();
                for &value in list {
                    if !in_list.insert(value) && duplicates_reported.insert((key, value)) {
                        self.anomalies.push(Anomaly::DuplicateElements {
                            key,
                            value,
                            reader: self.id(reader),
                        });
                    }
                    match self.writers.get(&(key, value)) {
                        None => {
                            if reported.insert((key, value)) {
                                self.anomalies.push(Anomaly::UnknownValue {
                                    key,
                                    value,
                                    reader: self.id(reader),
                                });
                            }
                        }
                        Some(w) if self.history[w.txn].status == Status::Aborted => {
                            if reported.insert((key, value)) {
                                self.anomalies.push(Anomaly::G1a {
                                    key,
                                    value,
                                    writer: self.id(w.txn),
                                    reader: self.id(reader),
                                });
                            }
                        }
                        Some(_) => {}
                    }
                }
                // G1b: the list ends in someone else's non-final append.
                if let Some(&last) = list.last() {
                    if let Some(&w) = self.writers.get(&(key, last)) {
                        if w.txn != reader && self.in_graph[w.txn] && !w.is_final {
                            let final_value = self.final_append(w.txn, key).unwrap_or(last);
                            self.anomalies.push(Anomaly::G1b {
                                key,
                                value: last,
                                writer: self.id(w.txn),
                                reader: self.id(reader),
                                final_value,
                            });
                        }
                    }
                }
            }

            // Step 4: the version order is the longest read.
            let Some(&(longest_reader, order)) =
                key_reads
                    .iter()
                    .reduce(|best, r| if r.1.len() > best.1.len() { r } else { best })
            else {
                continue;
            };
            let compatible: Vec<bool> = key_reads
                .iter()
                .map(|(_, list)| order.starts_with(list))
                .collect();
            let bad = compatible.iter().filter(|ok| !**ok).count();
            if let Some(&(reader, read)) = key_reads
                .iter()
                .zip(&compatible)
                .find_map(|(r, ok)| (!ok).then_some(r))
            {
                // A read no longer than the longest that is not its prefix
                // differs from it somewhere within its length.
                let index = read
                    .iter()
                    .zip(order)
                    .position(|(a, b)| a != b)
                    .unwrap_or(read.len());
                self.anomalies.push(Anomaly::IncompatibleOrder {
                    key,
                    longest_reader: self.id(longest_reader),
                    longest: order.to_vec(),
                    reader: self.id(reader),
                    read: read.to_vec(),
                    index,
                    incompatible_reads: bad,
                });
            }

            // Step 5. Only values appended by transactions in the graph
            // take part; `graph_writer[i]` is the writer of order[i] if so.
            let graph_writer: Vec<Option<usize>> = order
                .iter()
                .map(|v| {
                    self.writers
                        .get(&(key, *v))
                        .map(|w| w.txn)
                        .filter(|&t| self.in_graph[t])
                })
                .collect();
            // next_in_graph[i]: the first position >= i with a graph writer.
            let mut next_in_graph = vec![None; order.len() + 1];
            for i in (0..order.len()).rev() {
                next_in_graph[i] = if graph_writer[i].is_some() {
                    Some(i)
                } else {
                    next_in_graph[i + 1]
                };
            }

            // ww: consecutive versions (skipping values outside the graph).
            let mut prev: Option<(usize, Value)> = None;
            for (i, &value) in order.iter().enumerate() {
                let Some(writer) = graph_writer[i] else {
                    continue;
                };
                if let Some((prev_writer, prev_value)) = prev {
                    self.add_edge(
                        prev_writer,
                        writer,
                        Dependency::Ww {
                            key,
                            prev: prev_value,
                            next: value,
                        },
                    );
                }
                prev = Some((writer, value));
            }

            for (i, &(reader, list)) in key_reads.iter().enumerate() {
                // wr: the last element appended by a transaction in the graph.
                let last_seen = list.iter().rev().find_map(|v| {
                    self.writers
                        .get(&(key, *v))
                        .filter(|w| self.in_graph[w.txn])
                        .map(|w| (w.txn, *v))
                });
                if let Some((writer, value)) = last_seen {
                    self.add_edge(writer, reader, Dependency::Wr { key, value });
                }
                // rw: the next version after the read, if the read is a
                // prefix of the order.
                if !compatible[i] {
                    continue;
                }
                if let Some(j) = next_in_graph[list.len()] {
                    if let Some(writer) = graph_writer[j] {
                        self.add_edge(
                            reader,
                            writer,
                            Dependency::Rw {
                                key,
                                read_last: last_seen.map(|(_, v)| v),
                                next: order[j],
                            },
                        );
                    }
                }
            }
        }
    }

    /// The last value `txn` appended to `key`.
    fn final_append(&self, txn: usize, key: Key) -> Option<Value> {
        self.history[txn].ops.iter().rev().find_map(|op| match op {
            Op::Append { key: k, value } if *k == key => Some(*value),
            _ => None,
        })
    }

    fn add_edge(&mut self, from: usize, to: usize, dependency: Dependency) {
        if from == to {
            return;
        }
        let kind = dependency.kind();
        let index = *self.edge_index.entry((from, to)).or_insert_with(|| {
            self.adj[from].push(Edge {
                to,
                mask: 0,
                reasons: [None, None, None],
            });
            self.adj[from].len() - 1
        });
        let edge = &mut self.adj[from][index];
        edge.mask |= kind.bit();
        edge.reasons[kind.slot()].get_or_insert(dependency);
    }

    /// Step 6: strongly connected components, and a witness cycle of each
    /// class in each of them.
    fn find_cycles(&mut self) {
        let n = self.history.len();
        let nodes: Vec<usize> = (0..n).filter(|&t| self.in_graph[t]).collect();
        let mut local = vec![usize::MAX; n];
        let components = strongly_connected(&self.adj, &nodes, ALL, &mut local);
        let mut scc_of = vec![usize::MAX; n];
        for (c, component) in components.iter().enumerate() {
            for &t in component {
                scc_of[t] = c;
            }
        }
        let mut search = Search::new(n);
        let mut cycles = Vec::new();
        for (c, component) in components.iter().enumerate() {
            // G0: a cycle through a ww edge in each ww-only sub-component.
            for sub in strongly_connected(&self.adj, component, WW, &mut local) {
                if let Some(cycle) = self.close_cycle(&mut search, &scc_of, c, &sub, WW, WW) {
                    cycles.push(Anomaly::G0 { cycle });
                }
            }
            // G1c: a cycle through a wr edge (without ww) in each ww+wr
            // sub-component.
            for sub in strongly_connected(&self.adj, component, WW | WR, &mut local) {
                if let Some(cycle) = self.close_cycle(&mut search, &scc_of, c, &sub, WR, WW | WR) {
                    cycles.push(Anomaly::G1c { cycle });
                }
            }
            // G-single, else G2.
            if let Some(anomaly) = self.anti_dependency_cycle(&mut search, &scc_of, c, component) {
                cycles.push(anomaly);
            }
        }
        self.anomalies.extend(cycles);
    }

    /// Finds, in `sub`, an edge whose strongest kind is `start` (ww for
    /// `WW`; wr and not ww for `WR`) and closes a cycle through it using
    /// edges of the kinds in `allowed`.
    fn close_cycle(
        &self,
        search: &mut Search,
        scc_of: &[usize],
        scc: usize,
        sub: &[usize],
        start: u8,
        allowed: u8,
    ) -> Option<Cycle> {
        // Edges that also carry a stronger kind belong to a stronger class.
        let stronger = if start == WR { WW } else { 0 };
        let mut member = HashSet::with_capacity(sub.len());
        member.extend(sub.iter().copied());
        for &u in sub {
            for (e, edge) in self.adj[u].iter().enumerate() {
                if edge.mask & start == 0 || edge.mask & stronger != 0 || !member.contains(&edge.to)
                {
                    continue;
                }
                let mut budget = usize::MAX;
                search.bfs(
                    &self.adj,
                    scc_of,
                    scc,
                    edge.to,
                    Some(u),
                    allowed,
                    &mut budget,
                );
                let path = search.path(u);
                search.reset();
                if let Some(path) = path {
                    let start_kind = if start == WW {
                        EdgeKind::Ww
                    } else {
                        EdgeKind::Wr
                    };
                    return Some(self.cycle((u, e), start_kind, &path, allowed));
                }
            }
        }
        None
    }

    /// A cycle through an rw-only edge of the component: G-single if one
    /// exists with exactly one rw edge (within the search budget), else G2.
    fn anti_dependency_cycle(
        &mut self,
        search: &mut Search,
        scc_of: &[usize],
        scc: usize,
        component: &[usize],
    ) -> Option<Anomaly> {
        // (target, source, edge index) of rw-only edges inside the component.
        let mut rw_edges: Vec<(usize, usize, usize)> = Vec::new();
        for &u in component {
            for (e, edge) in self.adj[u].iter().enumerate() {
                if edge.mask == RW && scc_of[edge.to] == scc {
                    rw_edges.push((edge.to, u, e));
                }
            }
        }
        let &(first_v, first_u, first_e) = rw_edges.first()?;
        rw_edges.sort_by_key(|&(v, u, _)| (v, u));

        // G-single: one search over ww+wr from each distinct target v.
        let mut budget = G_SINGLE_SEARCH_BUDGET;
        let mut i = 0;
        while i < rw_edges.len() {
            let v = rw_edges[i].0;
            let group_end = rw_edges[i..]
                .iter()
                .position(|&(w, _, _)| w != v)
                .map_or(rw_edges.len(), |p| i + p);
            if budget == 0 {
                break;
            }
            search.bfs(&self.adj, scc_of, scc, v, None, WW | WR, &mut budget);
            for &(_, u, e) in &rw_edges[i..group_end] {
                if let Some(path) = search.path(u) {
                    search.reset();
                    let cycle = self.cycle((u, e), EdgeKind::Rw, &path, WW | WR);
                    return Some(Anomaly::GSingle { cycle });
                }
            }
            search.reset();
            i = group_end;
        }
        if budget == 0 {
            self.search_exhausted = true;
        }

        // G2: close the cycle through the first rw edge over all kinds.
        let mut unlimited = usize::MAX;
        search.bfs(
            &self.adj,
            scc_of,
            scc,
            first_v,
            Some(first_u),
            ALL,
            &mut unlimited,
        );
        let path = search.path(first_u);
        search.reset();
        let cycle = self.cycle((first_u, first_e), EdgeKind::Rw, &path?, ALL);
        Some(if cycle.count(EdgeKind::Rw) >= 2 {
            Anomaly::G2 { cycle }
        } else {
            Anomaly::GSingle { cycle }
        })
    }

    /// Builds a cycle from a first edge (labelled `first_kind`) and a path
    /// back from its target to its source, labelling each path edge with its
    /// strongest kind in `allowed`.
    fn cycle(
        &self,
        (u, e): (usize, usize),
        first_kind: EdgeKind,
        path: &[(usize, usize)],
        allowed: u8,
    ) -> Cycle {
        let mut steps = Vec::with_capacity(path.len() + 1);
        steps.push(self.step(u, e, first_kind));
        for &(from, edge) in path {
            let mask = self.adj[from][edge].mask & allowed;
            let kind = if mask & WW != 0 {
                EdgeKind::Ww
            } else if mask & WR != 0 {
                EdgeKind::Wr
            } else {
                EdgeKind::Rw
            };
            steps.push(self.step(from, edge, kind));
        }
        Cycle { steps }
    }

    fn step(&self, from: usize, edge: usize, kind: EdgeKind) -> CycleStep {
        let edge = &self.adj[from][edge];
        let dependency = edge.reasons[kind.slot()]
            .clone()
            .or_else(|| edge.reasons.iter().flatten().next().cloned())
            .expect("every edge has at least one reason");
        CycleStep {
            from: self.id(from),
            to: self.id(edge.to),
            dependency,
        }
    }
}

/// Breadth-first search within one strongly connected component, with
/// scratch space reused between searches.
struct Search {
    /// For each reached node: the (node, edge index) it was reached by;
    /// `(usize::MAX, 0)` for the start.
    parent: Vec<Option<(usize, usize)>>,
    touched: Vec<usize>,
    queue: std::collections::VecDeque<usize>,
    start: usize,
}

impl Search {
    fn new(n: usize) -> Self {
        Search {
            parent: vec![None; n],
            touched: Vec::new(),
            queue: std::collections::VecDeque::new(),
            start: usize::MAX,
        }
    }

    /// Searches from `start` over edges of the kinds in `allowed` whose
    /// both ends are in component `scc`, until `target` is reached (if any)
    /// or `budget` edge visits are spent.
    #[allow(clippy::too_many_arguments)]
    fn bfs(
        &mut self,
        adj: &[Vec<Edge>],
        scc_of: &[usize],
        scc: usize,
        start: usize,
        target: Option<usize>,
        allowed: u8,
        budget: &mut usize,
    ) {
        self.start = start;
        self.parent[start] = Some((usize::MAX, 0));
        self.touched.push(start);
        self.queue.push_back(start);
        while let Some(u) = self.queue.pop_front() {
            for (e, edge) in adj[u].iter().enumerate() {
                if *budget == 0 {
                    self.queue.clear();
                    return;
                }
                *budget -= 1;
                let w = edge.to;
                if edge.mask & allowed == 0 || scc_of[w] != scc || self.parent[w].is_some() {
                    continue;
                }
                self.parent[w] = Some((u, e));
                self.touched.push(w);
                if Some(w) == target {
                    self.queue.clear();
                    return;
                }
                self.queue.push_back(w);
            }
        }
    }

    /// The path from the last search's start to `goal`, as (node, edge
    /// index) steps, if `goal` was reached and differs from the start.
    fn path(&self, goal: usize) -> Option<Vec<(usize, usize)>> {
        if goal == self.start {
            return None;
        }
        let mut path = Vec::new();
        let mut node = goal;
        while node != self.start {
            let (prev, edge) = self.parent[node]?;
            path.push((prev, edge));
            node = prev;
        }
        path.reverse();
        Some(path)
    }

    fn reset(&mut self) {
        for &t in &self.touched {
            self.parent[t] = None;
        }
        self.touched.clear();
        self.queue.clear();
        self.start = usize::MAX;
    }
}

/// Tarjan's algorithm (iterative, so deep histories cannot overflow the
/// stack) over the subgraph induced by `nodes` with edges of the kinds in
/// `allowed`. Returns the components with two or more nodes, each sorted.
/// `local` is scratch space of the graph's size, all `usize::MAX` on entry
/// and on return.
fn strongly_connected(
    adj: &[Vec<Edge>],
    nodes: &[usize],
    allowed: u8,
    local: &mut [usize],
) -> Vec<Vec<usize>> {
    const UNVISITED: usize = usize::MAX;
    for (i, &v) in nodes.iter().enumerate() {
        local[v] = i;
    }
    let n = nodes.len();
    let mut index = vec![UNVISITED; n];
    let mut lowlink = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    // (local node, next edge position)
    let mut calls: Vec<(usize, usize)> = Vec::new();
    let mut next_index = 0;
    let mut components = Vec::new();

    for root in 0..n {
        if index[root] != UNVISITED {
            continue;
        }
        index[root] = next_index;
        lowlink[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        calls.push((root, 0));
        while let Some(&mut (v, ref mut pos)) = calls.last_mut() {
            let edges = &adj[nodes[v]];
            if *pos < edges.len() {
                let edge = &edges[*pos];
                *pos += 1;
                if edge.mask & allowed == 0 {
                    continue;
                }
                let w = local[edge.to];
                if w == UNVISITED {
                    continue; // not in the subgraph
                }
                if index[w] == UNVISITED {
                    index[w] = next_index;
                    lowlink[w] = next_index;
                    next_index += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    lowlink[v] = lowlink[v].min(index[w]);
                }
            } else {
                calls.pop();
                if let Some(&(parent, _)) = calls.last() {
                    lowlink[parent] = lowlink[parent].min(lowlink[v]);
                }
                if lowlink[v] == index[v] {
                    let mut component = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        component.push(nodes[w]);
                        if w == v {
                            break;
                        }
                    }
                    if component.len() >= 2 {
                        component.sort_unstable();
                        components.push(component);
                    }
                }
            }
        }
    }
    for &v in nodes {
        local[v] = UNVISITED;
    }
    components.sort_by_key(|c| c[0]);
    components
}

/// An append that a client was told committed but that a read taken after
/// the cluster healed does not contain: a lost write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostAppend {
    pub txn: TxnId,
    pub key: Key,
    pub value: Value,
}

impl fmt::Display for LostAppend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "transaction {} committed the append of {} to key {}, which the final read does not contain",
            self.txn, self.value, self.key
        )
    }
}

/// Durability: every append of a committed transaction in `history` must be
/// in `final_lists`, the lists read (in one transaction, after every fault
/// healed) at the end of the run. Keys absent from `final_lists` are not
/// checked.
pub fn check_durable(history: &[Txn], final_lists: &BTreeMap<Key, Vec<Value>>) -> Vec<LostAppend> {
    let mut lost = Vec::new();
    let present: BTreeMap<Key, HashSet<Value>> = final_lists
        .iter()
        .map(|(k, l)| (*k, l.iter().copied().collect()))
        .collect();
    for t in history.iter().filter(|t| t.status == Status::Committed) {
        for op in &t.ops {
            if let Op::Append { key, value } = op {
                if present.get(key).is_some_and(|s| !s.contains(value)) {
                    lost.push(LostAppend {
                        txn: t.id,
                        key: *key,
                        value: *value,
                    });
                }
            }
        }
    }
    lost
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_committed_append_missing_from_the_final_read_is_lost() {
        let history = vec![
            Txn::committed(1, vec![Op::append(1, 10)]),
            Txn::committed(2, vec![Op::append(1, 20)]),
            Txn::unknown(3, vec![Op::append(1, 30)]),
            Txn::aborted(4, vec![Op::append(1, 40)]),
        ];
        let fin = BTreeMap::from([(1, vec![10])]);
        assert_eq!(
            check_durable(&history, &fin),
            vec![LostAppend {
                txn: 2,
                key: 1,
                value: 20
            }]
        );
        let fin = BTreeMap::from([(1, vec![10, 30, 20])]);
        assert!(check_durable(&history, &fin).is_empty());
    }

    use super::*;

    fn append(key: Key, value: Value) -> Op {
        Op::append(key, value)
    }

    fn read(key: Key, list: &[Value]) -> Op {
        Op::read(key, list)
    }

    fn assert_only(report: &Report, name: &str) {
        assert!(
            !report.anomalies.is_empty() && report.anomalies.iter().all(|a| a.name() == name),
            "expected only {name}, got: {report}"
        );
    }

    fn only_cycle<'r>(report: &'r Report, name: &str) -> &'r Cycle {
        assert_only(report, name);
        assert_eq!(report.anomalies.len(), 1, "{report}");
        report.anomalies[0].cycle().unwrap()
    }

    fn sorted(mut v: Vec<TxnId>) -> Vec<TxnId> {
        v.sort_unstable();
        v
    }

    #[test]
    fn empty_history_is_valid() {
        let report = check(&[]);
        assert!(report.is_valid());
        assert_eq!(report.txns_checked, 0);
    }

    #[test]
    fn serial_history_is_valid() {
        let history = vec![
            Txn::committed(1, vec![read(1, &[]), append(1, 1), append(2, 1)]),
            Txn::committed(2, vec![read(1, &[1]), append(1, 2), read(1, &[1, 2])]),
            Txn::committed(3, vec![read(2, &[1]), append(2, 2), append(1, 3)]),
            Txn::aborted(4, vec![append(1, 99), read(1, &[1, 2, 3, 99])]),
            Txn::committed(5, vec![read(1, &[1, 2, 3]), read(2, &[1, 2])]),
        ];
        let report = check(&history);
        assert!(report.is_valid(), "{report}");
        assert_eq!(report.txns_checked, 5);
        assert_eq!(report.committed_txns, 4);
        assert_eq!(report.keys, 2);
        assert!(report.edges > 0);
        assert!(report.to_string().ends_with("valid"));
    }

    #[test]
    fn g0_write_cycle() {
        // T1 and T2 append to keys 1 and 2 in opposite orders.
        let history = vec![
            Txn::committed(1, vec![append(1, 1), append(2, 1)]),
            Txn::committed(2, vec![append(1, 2), append(2, 2)]),
            Txn::committed(3, vec![read(1, &[1, 2]), read(2, &[2, 1])]),
        ];
        let report = check(&history);
        // T3's reads end in T2's and T1's final appends: the wr edges do not
        // close a cycle, so only G0.
        let cycle = only_cycle(&report, "G0");
        assert_eq!(sorted(cycle.txns()), vec![1, 2]);
        assert_eq!(cycle.count(EdgeKind::Ww), 2);
        let text = report.anomalies[0].to_string();
        assert!(text.contains("T1 appended 1 to key 1 and T2 appended the next element 2"));
        assert!(text.contains("T2 appended 2 to key 2 and T1 appended the next element 1"));
    }

    #[test]
    fn g1a_aborted_read() {
        let history = vec![
            Txn::aborted(1, vec![append(1, 1)]),
            Txn::committed(2, vec![read(1, &[1])]),
            Txn::committed(3, vec![read(1, &[1])]),
        ];
        let report = check(&history);
        assert_eq!(
            report.anomalies,
            vec![Anomaly::G1a {
                key: 1,
                value: 1,
                writer: 1,
                reader: 2
            }]
        );
        assert!(report.anomalies[0]
            .to_string()
            .contains("T2 read 1 in key 1, appended by aborted T1"));
    }

    #[test]
    fn aborted_txn_reads_are_not_evidence() {
        // An aborted transaction may have seen anything; only its appends
        // matter, and nobody saw them.
        let history = vec![
            Txn::committed(1, vec![append(1, 1)]),
            Txn::aborted(2, vec![read(1, &[7, 7]), append(1, 2)]),
            Txn::committed(3, vec![read(1, &[1])]),
        ];
        assert!(check(&history).is_valid());
    }

    #[test]
    fn g1b_intermediate_read() {
        let history = vec![
            Txn::committed(1, vec![append(1, 1), append(1, 2)]),
            Txn::committed(2, vec![read(1, &[1])]),
        ];
        let report = check(&history);
        assert_eq!(
            report.anomalies,
            vec![Anomaly::G1b {
                key: 1,
                value: 1,
                writer: 1,
                reader: 2,
                final_value: 2
            }]
        );
        assert!(report.anomalies[0]
            .to_string()
            .contains("T2 read key 1 ending in 1, but T1 appended 2 to key 1 after 1"));
    }

    #[test]
    fn reading_own_intermediate_append_is_fine() {
        let history = vec![Txn::committed(
            1,
            vec![append(1, 1), read(1, &[1]), append(1, 2), read(1, &[1, 2])],
        )];
        assert!(check(&history).is_valid());
    }

    #[test]
    fn g1c_circular_information_flow() {
        // Each transaction read the other's append.
        let history = vec![
            Txn::committed(1, vec![append(1, 1), read(2, &[2])]),
            Txn::committed(2, vec![append(2, 2), read(1, &[1])]),
        ];
        let report = check(&history);
        let cycle = only_cycle(&report, "G1c");
        assert_eq!(sorted(cycle.txns()), vec![1, 2]);
        assert_eq!(cycle.count(EdgeKind::Wr), 2);
        let text = report.anomalies[0].to_string();
        assert!(text.contains("T1 read key 2 ending in 2, which T2 appended (wr)"));
        assert!(text.contains("T2 read key 1 ending in 1, which T1 appended (wr)"));
    }

    #[test]
    fn g_single_read_skew() {
        // T2 saw T1's append to key 2 but not its append to key 1.
        let history = vec![
            Txn::committed(1, vec![append(1, 10), append(2, 20)]),
            Txn::committed(2, vec![read(1, &[]), read(2, &[20])]),
            Txn::committed(3, vec![read(1, &[10])]),
        ];
        let report = check(&history);
        let cycle = only_cycle(&report, "G-single");
        assert_eq!(sorted(cycle.txns()), vec![1, 2]);
        assert_eq!(cycle.count(EdgeKind::Rw), 1);
        assert_eq!(cycle.count(EdgeKind::Wr), 1);
        let text = report.anomalies[0].to_string();
        assert!(text.contains("T2 read key 1 as empty and missed 10, which T1 appended first (rw)"));
    }

    #[test]
    fn g_single_lost_update() {
        // Both read [1] and appended; T3's read orders 2 before 3. T3 (the
        // later appender) read [1] and missed 2: rw T3 -> T2, ww T2 -> T3.
        let history = vec![
            Txn::committed(1, vec![append(1, 1)]),
            Txn::committed(2, vec![read(1, &[1]), append(1, 2)]),
            Txn::committed(3, vec![read(1, &[1]), append(1, 3)]),
            Txn::committed(4, vec![read(1, &[1, 2, 3])]),
        ];
        let report = check(&history);
        let cycle = only_cycle(&report, "G-single");
        assert_eq!(sorted(cycle.txns()), vec![2, 3]);
        assert_eq!(cycle.count(EdgeKind::Ww), 1);
        assert_eq!(cycle.count(EdgeKind::Rw), 1);
    }

    #[test]
    fn g2_write_skew() {
        // Each read the key the other appended to, as empty.
        let history = vec![
            Txn::committed(1, vec![read(1, &[]), append(2, 20)]),
            Txn::committed(2, vec![read(2, &[]), append(1, 10)]),
            Txn::committed(3, vec![read(1, &[10]), read(2, &[20])]),
        ];
        let report = check(&history);
        let cycle = only_cycle(&report, "G2");
        assert_eq!(sorted(cycle.txns()), vec![1, 2]);
        assert_eq!(cycle.count(EdgeKind::Rw), 2);
        let text = report.anomalies[0].to_string();
        assert!(text.contains("G2 (anti-dependency cycle, 2 rw edges)"));
        assert!(text.contains("T1 read key 1 as empty and missed 10, which T2 appended first"));
        assert!(text.contains("T2 read key 2 as empty and missed 20, which T1 appended first"));
    }

    #[test]
    fn incompatible_order() {
        let history = vec![
            Txn::committed(1, vec![append(1, 1)]),
            Txn::committed(2, vec![append(1, 2)]),
            Txn::committed(3, vec![read(1, &[1, 2])]),
            Txn::committed(4, vec![read(1, &[2, 1])]),
        ];
        let report = check(&history);
        assert_only(&report, "incompatible-order");
        assert_eq!(
            report.anomalies[0],
            Anomaly::IncompatibleOrder {
                key: 1,
                longest_reader: 3,
                longest: vec![1, 2],
                reader: 4,
                read: vec![2, 1],
                index: 0,
                incompatible_reads: 1,
            }
        );
    }

    #[test]
    fn unknown_txn_never_observed_is_ignored() {
        let history = vec![
            Txn::unknown(1, vec![append(1, 5), read(2, &[42])]),
            Txn::committed(2, vec![read(1, &[])]),
        ];
        let report = check(&history);
        assert!(report.is_valid(), "{report}");
        assert_eq!(report.committed_txns, 1);
        assert_eq!(report.promoted_unknown, 0);
    }

    #[test]
    fn unknown_txn_observed_counts_as_committed() {
        // T2 saw T1's append, so T1 committed; T1's own read then counts,
        // and closes a G1c cycle.
        let history = vec![
            Txn::unknown(1, vec![append(1, 5), read(2, &[7])]),
            Txn::committed(2, vec![append(2, 7), read(1, &[5])]),
        ];
        let report = check(&history);
        assert_eq!(report.promoted_unknown, 1);
        assert_eq!(report.committed_txns, 2);
        let cycle = only_cycle(&report, "G1c");
        assert_eq!(sorted(cycle.txns()), vec![1, 2]);
    }

    #[test]
    fn unknown_value_and_duplicates_are_reported() {
        let history = vec![
            Txn::committed(1, vec![append(1, 1)]),
            Txn::committed(2, vec![read(1, &[1, 1])]),
            Txn::committed(3, vec![read(2, &[99])]),
        ];
        let report = check(&history);
        assert!(report.anomalies.contains(&Anomaly::DuplicateElements {
            key: 1,
            value: 1,
            reader: 2
        }));
        assert!(report.anomalies.contains(&Anomaly::UnknownValue {
            key: 2,
            value: 99,
            reader: 3
        }));
    }

    #[test]
    fn duplicate_appends_and_ids_are_reported() {
        let history = vec![
            Txn::committed(1, vec![append(1, 1)]),
            Txn::committed(1, vec![append(1, 1)]),
        ];
        let report = check(&history);
        assert_eq!(report.counts().get("duplicate-append"), Some(&1));
        assert_eq!(report.counts().get("duplicate-txn-id"), Some(&1));
    }

    #[test]
    fn internal_inconsistency_is_reported() {
        let history = vec![
            Txn::committed(1, vec![append(1, 1)]),
            // Did not see its own append.
            Txn::committed(2, vec![append(1, 2), read(1, &[1])]),
            // Two reads of the same key that disagree.
            Txn::committed(3, vec![read(1, &[1]), read(1, &[])]),
        ];
        let report = check(&history);
        let internal: Vec<_> = report
            .anomalies
            .iter()
            .filter(|a| a.name() == "internal")
            .collect();
        assert_eq!(internal.len(), 2, "{report}");
        assert!(report
            .to_string()
            .contains("T2 read key 1 as [1], which does not end with its own appends [2]"));
    }

    #[test]
    fn unobserved_reads_are_ignored() {
        let history = vec![
            Txn::committed(1, vec![append(1, 1), Op::read_unobserved(1)]),
            Txn::committed(2, vec![Op::read_unobserved(1), read(1, &[1])]),
        ];
        assert!(check(&history).is_valid());
    }

    #[test]
    fn long_lists_are_elided_in_explanations() {
        let list: Vec<Value> = (1..=100).collect();
        assert_eq!(fmt_list(&list), "[1, 2, 3, 4, …92 more…, 97, 98, 99, 100]");
        assert_eq!(fmt_list(&[1, 2]), "[1, 2]");
    }

    /// splitmix64: a small deterministic PRNG for the tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Runs `n` random transactions over `keys` keys one at a time against
    /// an in-memory database: a serial, hence serializable, history. Some
    /// transactions abort (their effects are discarded) and some have an
    /// unknown outcome (and either applied or not).
    fn serial_history(seed: u64, n: usize, keys: u64) -> Vec<Txn> {
        let mut rng = Rng(seed);
        let mut db: HashMap<Key, Vec<Value>> = HashMap::new();
        let mut next_value = 1;
        let mut history = Vec::with_capacity(n);
        for id in 0..n as u64 {
            let mut scratch = db.clone();
            let mut ops = Vec::new();
            for _ in 0..1 + rng.below(5) {
                let key = rng.below(keys);
                if rng.below(2) == 0 {
                    scratch.entry(key).or_default().push(next_value);
                    ops.push(append(key, next_value));
                    next_value += 1;
                } else {
                    let list = scratch.get(&key).cloned().unwrap_or_default();
                    ops.push(Op::read(key, list));
                }
            }
            let (status, applied) = match rng.below(20) {
                0 => (Status::Aborted, false),
                1 => (Status::Unknown, true),
                2 => (Status::Unknown, false),
                _ => (Status::Committed, true),
            };
            if applied {
                db = scratch;
            }
            history.push(Txn::new(id, status, ops).with_times(id * 10, id * 10 + 5));
        }
        // A final read of every key, so that late appends are observed.
        let ops = (0..keys)
            .map(|k| Op::read(k, db.get(&k).cloned().unwrap_or_default()))
            .collect();
        history.push(Txn::committed(n as u64, ops));
        history
    }

    #[test]
    fn random_serial_history_is_valid() {
        let history = serial_history(42, 2000, 10);
        let report = check(&history);
        assert!(report.is_valid(), "{report}");
        assert!(report.committed_txns > 1700, "{report}");
        assert!(report.promoted_unknown > 0, "{report}");
        assert!(report.edges > 2000, "{report}");
        // The checker is deterministic.
        assert_eq!(check(&history), report);
    }

    #[test]
    fn random_serial_histories_with_other_seeds_are_valid() {
        for seed in 1..20 {
            let history = serial_history(seed, 300, 3);
            let report = check(&history);
            assert!(report.is_valid(), "seed {seed}: {report}");
        }
    }

    /// Finds a committed read in the first half of the history with at
    /// least `min_len` elements; returns (txn index, op index, key).
    fn committed_read(history: &[Txn], min_len: usize) -> (usize, usize, Key) {
        for (t, txn) in history.iter().enumerate().take(history.len() / 2).skip(100) {
            if txn.status != Status::Committed {
                continue;
            }
            for (o, op) in txn.ops.iter().enumerate() {
                if let Op::Read {
                    key,
                    value: Some(list),
                } = op
                {
                    if list.len() >= min_len {
                        return (t, o, *key);
                    }
                }
            }
        }
        panic!("no suitable read");
    }

    #[test]
    fn random_history_with_reordered_read_is_invalid() {
        let mut history = serial_history(42, 2000, 10);
        let (t, o, key) = committed_read(&history, 3);
        let Op::Read {
            value: Some(list), ..
        } = &mut history[t].ops[o]
        else {
            unreachable!()
        };
        let len = list.len();
        list.swap(len - 2, len - 3);
        let report = check(&history);
        assert!(!report.is_valid());
        assert!(
            report.anomalies.iter().any(|a| matches!(
                a,
                Anomaly::IncompatibleOrder { key: k, reader, .. }
                    if *k == key && *reader == history[t].id
            )),
            "{report}"
        );
    }

    #[test]
    fn random_history_with_stale_read_is_invalid() {
        // Drop the last element x of a read that is the transaction's
        // first operation on its key and is followed by its own append y
        // to that key. In the version order x is directly before y, so the
        // writer of x precedes the reader (ww), while the reader now missed
        // x (rw): a lost update, G-single.
        let mut history = serial_history(42, 2000, 10);
        let mut tampered = None;
        'search: for (t, txn) in history.iter().enumerate().skip(100) {
            if txn.status != Status::Committed {
                continue;
            }
            for (o, op) in txn.ops.iter().enumerate() {
                let Op::Read {
                    key,
                    value: Some(list),
                } = op
                else {
                    continue;
                };
                let on_key = |op: &Op| match op {
                    Op::Append { key: k, .. } | Op::Read { key: k, .. } => k == key,
                };
                let first_on_key = !txn.ops[..o].iter().any(on_key);
                let appends_next = matches!(
                    txn.ops[o + 1..].iter().find(|op| on_key(op)),
                    Some(Op::Append { .. })
                );
                if !list.is_empty() && first_on_key && appends_next {
                    tampered = Some((t, o));
                    break 'search;
                }
            }
        }
        let (t, o) = tampered.expect("a suitable read");
        if let Op::Read {
            value: Some(list), ..
        } = &mut history[t].ops[o]
        {
            list.pop();
        }
        let report = check(&history);
        let reader = history[t].id;
        assert!(
            report.anomalies.iter().any(|a| matches!(
                a,
                Anomaly::GSingle { cycle } if cycle.txns().contains(&reader)
            )),
            "expected a G-single through T{reader}: {report}"
        );
    }

    #[test]
    fn random_history_with_aborted_value_injected_is_invalid() {
        let mut history = serial_history(42, 2000, 10);
        let (t, o, key) = committed_read(&history, 1);
        let reader = history[t].id;
        history.push(Txn::aborted(1_000_000, vec![append(key, 1_000_000)]));
        if let Op::Read {
            value: Some(list), ..
        } = &mut history[t].ops[o]
        {
            list.push(1_000_000);
        }
        let report = check(&history);
        assert!(
            report.anomalies.contains(&Anomaly::G1a {
                key,
                value: 1_000_000,
                writer: 1_000_000,
                reader
            }),
            "{report}"
        );
    }

    #[test]
    fn long_cycle_does_not_overflow_the_stack() {
        // 100k appends to key 1 in order: a ww chain a recursive Tarjan
        // would descend 100k frames deep. The first transaction also read
        // the last one's append to key 2, closing a G1c cycle through all.
        let n = 100_000u64;
        let mut history: Vec<Txn> = (0..n)
            .map(|id| Txn::committed(id, vec![append(1, id)]))
            .collect();
        history.push(Txn::committed(
            n,
            vec![Op::read(1, (0..n).collect::<Vec<_>>())],
        ));
        history[0].ops.push(read(2, &[7]));
        history[(n - 1) as usize].ops.push(append(2, 7));
        let report = check(&history);
        let cycle = only_cycle(&report, "G1c");
        assert_eq!(cycle.steps.len(), n as usize);
        assert_eq!(cycle.count(EdgeKind::Wr), 1);
    }
}
