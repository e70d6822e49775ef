//! The register checker: is a history of reads, writes and compare-and-sets
//! on independent registers linearizable?
//!
//! Each key is one register holding an integer (or nothing). Clients
//! read it, write it, or compare-and-set it (`UPDATE … SET v = new WHERE k
//! = key AND v = old`, which either changes one row or none). Every
//! operation has an invocation time and, if its outcome is known, a
//! completion time. The history is linearizable if every operation can be
//! given a single instant between its invocation and its completion at which
//! it took effect, such that the register's sequential behaviour explains
//! every result (Herlihy & Wing, 1990).
//!
//! Registers are independent, so each key is checked on its own (Herlihy &
//! Wing's locality: a history is linearizable iff each object's is), which
//! keeps the search small. The search is Wing & Gong's, with Lowe's
//! memoization of configurations already explored (Lowe, "Testing for
//! linearizability", 2017):
//!
//! ```text
//!   search(linearized set S, register state v):
//!     done if S holds every operation whose outcome is known
//!     m = earliest completion among operations not in S
//!     for each operation o not in S invoked before m:       (o may go next)
//!       if o's result is what o does to v (reads see v, a CAS that failed
//!          saw something else, …): search(S ∪ {o}, v after o)
//!     (S, v) pairs already explored are not explored again
//! ```
//!
//! Two refinements keep histories with many timeouts decidable: operations
//! whose outcome is known are tried before unknown ones, and unknown
//! operations that do the same thing (two timed-out `write 3`) go in the
//! order they were invoked, since either can stand for the other; the
//! search then counts how many of each took effect instead of trying every
//! subset of them; and a configuration that used more unknown operations
//! than one already explored (same known operations, same state) is not
//! explored again, since fewer used leaves more options.
//!
//! If the search still runs out of steps, a relaxed search, in which each
//! unknown operation may take effect any number of times, decides the
//! negative case: it admits more orders than the real one, so when it finds
//! none the history is not linearizable.
//!
//! Outcomes:
//! - `Ok`: the operation took effect, with the given result.
//! - `Fail`: it definitely did not take effect (SQLSTATE 40001 and the
//!   like). Such operations are dropped, except a compare-and-set that ran
//!   and found a different value: that is a successful *read* that the value
//!   was not `old`, and it is kept as [`Op::CasFailed`].
//! - `Info`: unknown (a timeout, a lost connection). A write or CAS may have
//!   taken effect at any instant after its invocation, or never; an unknown
//!   read constrains nothing and is dropped.
//!
//! The search is exponential in the worst case; `max_steps` bounds it, and a
//! key whose search runs out of steps is reported as *unknown*, never as
//! valid, so a caller must treat it as no verdict.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Identifies a register.
pub type Key = u64;
/// A register's value; `None` is a register never written.
pub type Value = Option<i64>;

/// What an operation did, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read the register and saw this value.
    Read(Value),
    /// Wrote this value.
    Write(i64),
    /// Compare-and-set from `old` to `new`, which changed the register.
    Cas { old: i64, new: i64 },
    /// Compare-and-set from `old` that found a different value (changed
    /// nothing): a read that the value was not `old`.
    CasFailed { old: i64 },
}

/// Whether the outcome of an operation is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Took effect, between `invoked` and `completed`.
    Ok,
    /// Unknown: took effect after `invoked`, at any time, or never.
    Info,
}

/// One operation on one register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Which client issued it (for reports only).
    pub process: u64,
    pub key: Key,
    pub op: Op,
    pub outcome: Outcome,
    /// When it was invoked and (for `Ok`) completed, in any monotonic unit.
    pub invoked: u64,
    pub completed: u64,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match &self.op {
            Op::Read(v) => format!("read → {}", show(*v)),
            Op::Write(v) => format!("write {v}"),
            Op::Cas { old, new } => format!("cas {old}→{new}"),
            Op::CasFailed { old } => format!("cas {old}→? (not {old})"),
        };
        match self.outcome {
            Outcome::Ok => write!(
                f,
                "process {} {op} [{}, {}]",
                self.process, self.invoked, self.completed
            ),
            Outcome::Info => write!(f, "process {} {op} [{}, ?]", self.process, self.invoked),
        }
    }
}

fn show(v: Value) -> String {
    v.map_or_else(|| "nil".to_string(), |v| v.to_string())
}

/// What was found for one register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyResult {
    Linearizable,
    /// No order explains the results. `operations` are the key's operations
    /// (sorted by invocation) and `stuck_after` how many of them the deepest
    /// partial order placed before the search gave up on every branch.
    NotLinearizable {
        operations: Vec<Operation>,
        stuck_after: usize,
    },
    /// The search ran out of steps: no verdict.
    Unknown {
        operations: usize,
    },
}

/// The checker's report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub keys: BTreeMap<Key, KeyResult>,
    pub operations: usize,
}

impl Report {
    /// True if every register is linearizable (an unknown key is not).
    pub fn is_valid(&self) -> bool {
        self.keys
            .values()
            .all(|r| matches!(r, KeyResult::Linearizable))
    }

    /// Keys whose history is not linearizable.
    pub fn anomalies(&self) -> usize {
        self.keys
            .values()
            .filter(|r| matches!(r, KeyResult::NotLinearizable { .. }))
            .count()
    }

    /// Keys that could not be decided.
    pub fn unknown(&self) -> usize {
        self.keys
            .values()
            .filter(|r| matches!(r, KeyResult::Unknown { .. }))
            .count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "register: {} operations on {} keys, {} not linearizable, {} undecided",
            self.operations,
            self.keys.len(),
            self.anomalies(),
            self.unknown()
        )?;
        for (key, r) in &self.keys {
            match r {
                KeyResult::Linearizable => {}
                KeyResult::Unknown { operations } => {
                    write!(f, "\n  key {key}: undecided ({operations} operations)")?
                }
                KeyResult::NotLinearizable {
                    operations,
                    stuck_after,
                } => {
                    write!(
                        f,
                        "\n  key {key}: not linearizable; no order explains the results \
                         beyond {stuck_after} of {} operations:",
                        operations.len()
                    )?;
                    let from = stuck_after.saturating_sub(3);
                    for o in operations.iter().skip(from).take(8) {
                        write!(f, "\n    {o}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Checks every register of `history`, each starting at `initial`, spending
/// at most `max_steps` search steps per key.
pub fn check(history: &[Operation], initial: Value, max_steps: u64) -> Report {
    let mut by_key: BTreeMap<Key, Vec<Operation>> = BTreeMap::new();
    for o in history {
        if o.outcome == Outcome::Info && matches!(o.op, Op::Read(_) | Op::CasFailed { .. }) {
            continue; // an unknown read promises nothing
        }
        by_key.entry(o.key).or_default().push(o.clone());
    }
    let mut report = Report {
        operations: history.len(),
        ..Report::default()
    };
    for (key, mut ops) in by_key {
        ops.sort_by_key(|o| (o.invoked, o.completed));
        let result = check_key(&ops, initial, max_steps);
        report.keys.insert(key, result);
    }
    report
}

/// Applies `op` to `state`: the state after it, or `None` if its result
/// contradicts `state`.
fn step(state: Value, op: &Op) -> Option<Value> {
    match op {
        Op::Read(v) => (*v == state).then_some(state),
        Op::Write(v) => Some(Some(*v)),
        Op::Cas { old, new } => (state == Some(*old)).then_some(Some(*new)),
        Op::CasFailed { old } => (state != Some(*old)).then_some(state),
    }
}

fn check_key(ops: &[Operation], initial: Value, max_steps: u64) -> KeyResult {
    let not_linearizable = |stuck_after| KeyResult::NotLinearizable {
        operations: ops.to_vec(),
        stuck_after,
    };
    match search(ops, initial, max_steps, false) {
        Search::Found => KeyResult::Linearizable,
        Search::Exhausted { deepest } => not_linearizable(deepest),
        // The fallback: the same search with every unknown operation allowed
        // to take effect any number of times (each still only after its
        // invocation). That admits every order the exact search admits and
        // more, and its configurations are only (known operations
        // linearized, state), so it is small. If even it finds no order, the
        // history is not linearizable; if it finds one, that proves nothing.
        Search::OutOfSteps => match search(ops, initial, max_steps, true) {
            Search::Exhausted { deepest } => not_linearizable(deepest),
            Search::Found | Search::OutOfSteps => KeyResult::Unknown {
                operations: ops.len(),
            },
        },
    }
}

/// What a search came to.
enum Search {
    /// An order explains every result.
    Found,
    /// No order does; the deepest partial order placed this many operations.
    Exhausted { deepest: usize },
    /// The step budget ran out first.
    OutOfSteps,
}

/// The Wing & Gong search over one key's operations. With `reuse_unknown`
/// an unknown operation stays available after it took effect (the relaxed
/// search of [`check_key`]); otherwise each takes effect at most once.
fn search(ops: &[Operation], initial: Value, max_steps: u64, reuse_unknown: bool) -> Search {
    let n = ops.len();
    let ret = |o: &Operation| match o.outcome {
        Outcome::Ok => o.completed,
        Outcome::Info => u64::MAX,
    };
    let required: usize = ops.iter().filter(|o| o.outcome == Outcome::Ok).count();
    // Unknown operations that do the same thing are interchangeable once
    // invoked: a linearization that uses a later one where an earlier twin
    // is still free can use the twin instead (it was invoked even earlier
    // and, like every unknown operation, never completes). So an unknown
    // operation may go only after its earlier twin has: the search then
    // tells apart *how many* of each kind took effect, not *which*, and
    // does not explore every subset of a few dozen timeouts. (When unknown
    // operations are reused they never enter the set, so only the earliest
    // of each kind is tried: it can stand for every later twin.)
    let mut twin_before = vec![None; n];
    let mut last_of_kind: Vec<(&Op, usize)> = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        if o.outcome != Outcome::Info {
            continue;
        }
        match last_of_kind.iter_mut().find(|(op, _)| **op == o.op) {
            Some((_, last)) => {
                twin_before[i] = Some(*last);
                *last = i;
            }
            None => last_of_kind.push((&o.op, i)),
        }
    }
    // Candidates are tried operations with known outcomes first, then
    // unknown ones: a linearizable history is usually explained without
    // most of its timeouts, and depth-first search finds that order first.
    let order: Vec<usize> = (0..n)
        .filter(|&i| ops[i].outcome == Outcome::Ok)
        .chain((0..n).filter(|&i| ops[i].outcome == Outcome::Info))
        .collect();
    // Depth-first search with an explicit stack of (linearized set, state,
    // operations linearized so far, next position in `order` to try).
    struct Frame {
        set: Vec<u64>,
        state: Value,
        done_required: usize,
        next: usize,
    }
    let words = n.div_ceil(64).max(1);
    let mut info_mask = vec![0u64; words];
    for (i, o) in ops.iter().enumerate() {
        if o.outcome == Outcome::Info {
            info_mask[i / 64] |= 1 << (i % 64);
        }
    }
    // Configurations explored, by (known operations linearized, state): the
    // sets of unknown operations used to get there. Using fewer unknown
    // operations leaves more of them for later, so a configuration that
    // used a superset of an explored one's (same known set, same state)
    // cannot succeed where that one failed, and is skipped.
    let mut seen: HashMap<(Vec<u64>, Value), Vec<Vec<u64>>> = HashMap::new();
    let mut explored = |set: &[u64], state: Value| -> bool {
        let known: Vec<u64> = set.iter().zip(&info_mask).map(|(s, m)| s & !m).collect();
        let unknown: Vec<u64> = set.iter().zip(&info_mask).map(|(s, m)| s & m).collect();
        let used = seen.entry((known, state)).or_default();
        let covered = used
            .iter()
            .any(|e| e.iter().zip(&unknown).all(|(e, u)| e & !u == 0));
        if !covered {
            used.push(unknown);
        }
        covered
    };
    let mut stack = vec![Frame {
        set: vec![0; words],
        state: initial,
        done_required: 0,
        next: 0,
    }];
    let mut steps = 0u64;
    let mut deepest = 0usize;
    let is_in = |set: &[u64], i: usize| set[i / 64] & (1 << (i % 64)) != 0;
    while let Some(top) = stack.last_mut() {
        if top.done_required == required {
            return Search::Found;
        }
        steps += 1;
        if steps > max_steps {
            return Search::OutOfSteps;
        }
        // Earliest completion among operations not yet linearized: nothing
        // invoked after it can go next.
        let min_ret = (0..n)
            .filter(|&i| !is_in(&top.set, i))
            .map(|i| ret(&ops[i]))
            .min()
            .unwrap_or(u64::MAX);
        let mut pushed = None;
        while top.next < n {
            let i = order[top.next];
            top.next += 1;
            if is_in(&top.set, i) || ops[i].invoked > min_ret {
                continue;
            }
            if twin_before[i].is_some_and(|t| !is_in(&top.set, t)) {
                continue;
            }
            let Some(state) = step(top.state, &ops[i].op) else {
                continue;
            };
            let known = ops[i].outcome == Outcome::Ok;
            let mut set = top.set.clone();
            if known || !reuse_unknown {
                set[i / 64] |= 1 << (i % 64);
            }
            if explored(&set, state) {
                continue;
            }
            let done_required = top.done_required + usize::from(known);
            pushed = Some(Frame {
                set,
                state,
                done_required,
                next: 0,
            });
            break;
        }
        match pushed {
            Some(f) => {
                stack.push(f);
                deepest = deepest.max(stack.len() - 1);
            }
            None => {
                stack.pop();
            }
        }
    }
    Search::Exhausted { deepest }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(process: u64, op: Op, invoked: u64, completed: u64) -> Operation {
        Operation {
            process,
            key: 1,
            op,
            outcome: Outcome::Ok,
            invoked,
            completed,
        }
    }

    fn info(process: u64, op: Op, invoked: u64) -> Operation {
        Operation {
            process,
            key: 1,
            op,
            outcome: Outcome::Info,
            invoked,
            completed: 0,
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![
            ok(0, Op::Write(1), 0, 1),
            ok(0, Op::Read(Some(1)), 2, 3),
            ok(1, Op::Cas { old: 1, new: 2 }, 4, 5),
            ok(0, Op::CasFailed { old: 1 }, 6, 7),
            ok(1, Op::Read(Some(2)), 8, 9),
        ];
        let r = check(&h, None, 10_000);
        assert!(r.is_valid(), "{r}");
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // The read overlaps the write: it may see the old or the new value.
        for seen in [None, Some(1)] {
            let h = vec![ok(0, Op::Write(1), 0, 10), ok(1, Op::Read(seen), 5, 6)];
            assert!(check(&h, None, 10_000).is_valid());
        }
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        // The write completed at 1; a read invoked at 2 still sees nothing.
        let h = vec![ok(0, Op::Write(1), 0, 1), ok(1, Op::Read(None), 2, 3)];
        let r = check(&h, None, 10_000);
        assert!(!r.is_valid());
        assert_eq!(r.anomalies(), 1, "{r}");
        assert!(r.to_string().contains("not linearizable"), "{r}");
    }

    #[test]
    fn a_lost_cas_is_caught() {
        // Two CAS from 0 both succeed: one of them must have seen the
        // other's value.
        let h = vec![
            ok(0, Op::Write(0), 0, 1),
            ok(1, Op::Cas { old: 0, new: 1 }, 2, 5),
            ok(2, Op::Cas { old: 0, new: 2 }, 3, 6),
        ];
        assert_eq!(check(&h, None, 10_000).anomalies(), 1);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught() {
        let h = vec![ok(0, Op::Write(1), 0, 1), ok(1, Op::Read(Some(7)), 2, 3)];
        assert_eq!(check(&h, None, 10_000).anomalies(), 1);
    }

    #[test]
    fn an_unknown_write_may_take_effect_late_or_never() {
        // The write's outcome is unknown: a later read may see it ...
        let late = vec![
            info(0, Op::Write(5), 0),
            ok(1, Op::Read(None), 10, 11),
            ok(1, Op::Read(Some(5)), 20, 21),
        ];
        assert!(check(&late, None, 10_000).is_valid());
        // ... or never see it.
        let never = vec![info(0, Op::Write(5), 0), ok(1, Op::Read(None), 10, 11)];
        assert!(check(&never, None, 10_000).is_valid());
        // But it cannot be seen before it was invoked.
        let early = vec![ok(1, Op::Read(Some(5)), 0, 1), info(0, Op::Write(5), 2)];
        assert_eq!(check(&early, None, 10_000).anomalies(), 1);
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut h = vec![ok(0, Op::Write(1), 0, 1)];
        let mut other = ok(1, Op::Read(None), 2, 3);
        other.key = 2; // key 2 was never written: nil is right there
        h.push(other);
        let r = check(&h, None, 10_000);
        assert!(r.is_valid(), "{r}");
        assert_eq!(r.keys.len(), 2);
    }

    #[test]
    fn a_search_out_of_steps_is_undecided_not_valid() {
        let h: Vec<Operation> = (0..12)
            .map(|i| ok(i, Op::Write(i as i64), 0, 100))
            .chain([ok(99, Op::Read(Some(-1)), 200, 201)])
            .collect();
        let r = check(&h, None, 50);
        assert!(!r.is_valid());
        assert_eq!(r.unknown(), 1, "{r}");
    }
}
