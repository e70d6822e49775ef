//! Workloads that exercise a Concord cluster, and the checkers that judge
//! what the cluster answered.
//!
//! A workload drives a cluster the way a user would: as a PostgreSQL client,
//! over the wire protocol, with no back door into nodes or storage. Each
//! worker records what it asked and what it was told into a *history*, and a
//! checker decides afterwards, from the history alone, whether those answers
//! could have come from a correct (serializable) database. Because checkers
//! see only client observations, the same checker judges an in-process test
//! cluster, the real binary on loopback, and a container cluster under kill,
//! pause, partition and clock-skew faults (see DESIGN.md, "How it is tested").
//!
//! ```text
//!   generator ──SQL──► cluster ──rows / errors──► history ──► checker ──► Report
//!   (workers)          (any nodes)                (Vec<Txn>)   (pure fn)   (anomalies)
//! ```
//!
//! Three checkers, each for a workload:
//!
//! - [`bank`]: transfers between accounts; every snapshot read in one
//!   transaction must see the money conserved and no negative balance.
//! - [`listappend`]: transactions append unique values to lists and read
//!   whole lists; the checker infers the order of versions from the reads,
//!   builds the dependency graph between transactions and reports the
//!   isolation anomalies of Adya's taxonomy (G0, G1a, G1b, G1c, G-single,
//!   G2), in the manner of Elle (Kingsbury & Alvaro, "Elle: Inferring
//!   Isolation Anomalies from Experimental Observations", VLDB 2020).
//! - [`register`]: single-row reads, writes and compare-and-sets; the
//!   checker searches for a linearization of each row's history.
//!
//! Checkers are pure functions from a history to a report: no I/O, no clocks,
//! no randomness, and deterministic output for a given history, so a failing
//! history can be saved and re-checked, and a report diffed.
//!
//! # Not done yet
//! The generators live with their drivers for now: the multi-process tests
//! (`crates/cli/tests`) and the container fault harness (`crates/chaos`).
//! Still to come:
//! - The `concord workload` command that runs a generator for a duration,
//!   reports throughput and latency, runs the checker, and exits non-zero
//!   when a worker fails or the checker finds an anomaly.
//! - Real-time (strict serializability) edges in the list-append checker;
//!   the history already has room for start and end times.

pub mod bank;
pub mod listappend;
pub mod register;
