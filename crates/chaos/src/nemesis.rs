//! The nemesis: faults injected one at a time, at random times, chosen by a
//! seeded random generator, so that a run's seed replays the same choices.
//!
//! ```text
//!   ──quiet 4–8 s──▶ fault ──hold 5–12 s──▶ heal ──quiet──▶ fault … ──▶ heal all
//! ```
//!
//! | name            | fault                                                     |
//! |-----------------|-----------------------------------------------------------|
//! | kill            | `kill -9` one node, restart it after the hold              |
//! | kill-leader     | `kill -9` the leader of the probe range                    |
//! | kill-all        | `kill -9` every node, restart all (recovery from the log)  |
//! | pause           | SIGSTOP one node, SIGCONT after the hold                   |
//! | partition       | iptables: one node isolated, majority/minority halves, a   |
//! |                 | bridge (two sides sharing one node), one-way loss, or the  |
//! |                 | probe range's leader isolated                              |
//! | clock           | one node's clock strobing ±50–200 ms (inside --max-offset) |
//! |                 | or jumping ±1.5 s (beyond: the node must stop itself)      |
//! | split           | `ALTER TABLE … SPLIT AT` a random key of a workload table  |
//! | transfer-leader | the leader of a random workload range hands it over       |
//! | disk            | one node's store (or every node's) filled to the last byte |

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::docker::Cluster;
use crate::history::History;
use crate::{client, workloads};

/// The kinds of fault.
pub const ALL: &[&str] = &[
    "kill",
    "kill-leader",
    "kill-all",
    "pause",
    "partition",
    "clock",
    "split",
    "transfer-leader",
    "disk",
];

/// Parses `all` or a comma-separated list of kinds.
pub fn parse(spec: &str) -> Result<Vec<&'static str>> {
    if spec == "all" {
        return Ok(ALL.to_vec());
    }
    let mut out = Vec::new();
    for s in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match ALL.iter().find(|k| **k == s) {
            Some(k) => out.push(*k),
            None => bail!("unknown nemesis {s:?}; known: all, {}", ALL.join(", ")),
        }
    }
    if out.is_empty() {
        bail!("no nemesis given");
    }
    Ok(out)
}

/// One injected fault, for the availability figures.
#[derive(Clone, Debug)]
pub struct Fault {
    /// e.g. `partition-halves`.
    pub name: String,
    pub detail: String,
    /// Nodes (indexes) cut off, stopped or killed: not expected to serve.
    pub affected: Vec<usize>,
    /// Nanoseconds since the run started (history clock).
    pub start: u64,
    pub heal: u64,
}

/// Injects faults until `until`, then heals everything. Runs on a blocking
/// thread: every action is a docker or nsenter command.
pub fn run(
    cluster: &mut Cluster,
    kinds: &[&'static str],
    seed: u64,
    until: Instant,
    history: &History,
    rt: &tokio::runtime::Handle,
) -> Result<Vec<Fault>> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x006e_656d_6573_6973);
    let mut faults = Vec::new();
    loop {
        let quiet = Duration::from_millis(rng.random_range(4000..8000));
        std::thread::sleep(quiet);
        let hold = Duration::from_millis(rng.random_range(5000..12000));
        if Instant::now() + hold + Duration::from_secs(5) > until {
            break;
        }
        let kind = *kinds.choose(&mut rng).expect("at least one nemesis");
        let (name, detail, affected, start) = inject(cluster, kind, &mut rng, hold, history, rt)?;
        let heal = history.now();
        history.nemesis(&format!("heal {name}"), json!({"detail": detail}));
        eprintln!(
            "  nemesis: {name} ({detail}) for {:.1}s",
            (heal - start) as f64 / 1e9
        );
        faults.push(Fault {
            name,
            detail,
            affected,
            start,
            heal,
        });
    }
    cluster.heal_network()?;
    cluster.start_all_stopped()?;
    Ok(faults)
}

fn names(c: &Cluster, nodes: &[usize]) -> String {
    nodes
        .iter()
        .map(|i| c.container(*i))
        .collect::<Vec<_>>()
        .join(",")
}

/// Node index of the leader of `table`'s first range, and that range.
fn leader_of(c: &Cluster, table: &str, rt: &tokio::runtime::Handle) -> Option<(usize, u64)> {
    let (range, leader, _) = ranges_of(c, table, rt).into_iter().next()?;
    Some((leader, range))
}

/// All ranges of `table`: (range id, leader node index, replica node indexes).
fn ranges_of(
    c: &Cluster,
    table: &str,
    rt: &tokio::runtime::Handle,
) -> Vec<(u64, usize, Vec<usize>)> {
    let addrs = c.sql_addrs.read().expect("address lock poisoned").clone();
    let sql = format!("SHOW RANGES FROM TABLE {table}");
    let Ok(rows) = rt.block_on(workloads::exec_retry(&addrs, &sql, Duration::from_secs(5))) else {
        return Vec::new();
    };
    rows.iter()
        .filter_map(|r| {
            let range = r.first()?.as_deref()?.parse().ok()?;
            let leader = c.index_of(r.get(4)?.as_deref()?.parse().ok()?)?;
            // Replicas print as {1,2,4} (learners with a suffix).
            let replicas = r
                .get(3)?
                .as_deref()?
                .trim_matches(['{', '}'])
                .split(',')
                .filter_map(|x| x.trim().parse().ok())
                .filter_map(|id| c.index_of(id))
                .collect();
            Some((range, leader, replicas))
        })
        .collect()
}

fn inject(
    c: &mut Cluster,
    kind: &str,
    rng: &mut StdRng,
    hold: Duration,
    history: &History,
    rt: &tokio::runtime::Handle,
) -> Result<(String, String, Vec<usize>, u64)> {
    let n = c.nodes;
    let all: Vec<usize> = (0..n).collect();
    let one = rng.random_range(0..n);
    // Records the fault just before it takes effect; its time is the
    // fault's start for the availability figures.
    let note = |name: &str, detail: &str| {
        history.nemesis(name, json!({"detail": detail}));
        history.now()
    };
    match kind {
        "kill" | "kill-leader" => {
            let (target, what) = match (kind, leader_of(c, "probe", rt)) {
                ("kill-leader", Some((l, r))) => (l, format!("leader of range {r}")),
                _ => (one, "random node".to_string()),
            };
            let detail = format!("{} ({what})", c.container(target));
            let start = note(kind, &detail);
            c.kill(target)?;
            std::thread::sleep(hold);
            c.start(target)?;
            Ok((kind.to_string(), detail, vec![target], start))
        }
        "kill-all" => {
            let start = note(kind, "every node");
            for i in 0..n {
                c.kill(i)?;
            }
            std::thread::sleep(Duration::from_secs(2));
            for i in 0..n {
                c.start(i)?;
            }
            Ok((kind.to_string(), "every node".into(), all, start))
        }
        "pause" => {
            let detail = c.container(one);
            let start = note(kind, &detail);
            c.signal_stop(one, true)?;
            std::thread::sleep(hold);
            c.signal_stop(one, false)?;
            Ok((kind.to_string(), detail, vec![one], start))
        }
        "partition" => {
            c.refresh()?;
            let mut shuffled = all.clone();
            for i in (1..n).rev() {
                shuffled.swap(i, rng.random_range(0..=i));
            }
            let minority = shuffled[..(n - 1) / 2].to_vec();
            let majority = shuffled[(n - 1) / 2..].to_vec();
            let variant = ["isolate", "halves", "bridge", "one-way", "isolate-leader"]
                .choose(rng)
                .copied()
                .expect("non-empty");
            let (detail, affected) = match variant {
                "isolate" | "isolate-leader" => {
                    let (target, what) = match (variant, leader_of(c, "probe", rt)) {
                        ("isolate-leader", Some((l, r))) => (l, format!("leader of range {r}")),
                        _ => (one, "random node".to_string()),
                    };
                    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != target).collect();
                    c.partition(&[target], &rest)?;
                    (
                        format!("{} cut off ({what})", c.container(target)),
                        vec![target],
                    )
                }
                "halves" => {
                    c.partition(&minority, &majority)?;
                    (
                        format!("[{}] | [{}]", names(c, &minority), names(c, &majority)),
                        minority.clone(),
                    )
                }
                "bridge" => {
                    // Two sides that cannot talk, and one node that talks
                    // to both.
                    let bridge = shuffled[0];
                    let rest = &shuffled[1..];
                    let (a, b) = rest.split_at(rest.len() / 2);
                    c.partition(a, b)?;
                    (
                        format!(
                            "[{}] | [{}] bridged by {}",
                            names(c, a),
                            names(c, b),
                            c.container(bridge)
                        ),
                        a.to_vec(),
                    )
                }
                _ => {
                    // The minority hears nothing from the majority, which
                    // still hears the minority.
                    let deaf = if minority.is_empty() {
                        vec![one]
                    } else {
                        minority.clone()
                    };
                    let others: Vec<usize> =
                        all.iter().copied().filter(|i| !deaf.contains(i)).collect();
                    for &x in &deaf {
                        for &y in &others {
                            c.drop_from(x, y)?;
                        }
                    }
                    (
                        format!("[{}] hear nothing from the others", names(c, &deaf)),
                        deaf,
                    )
                }
            };
            let name = format!("partition-{variant}");
            let start = note(&name, &detail);
            std::thread::sleep(hold);
            c.heal_network()?;
            Ok((name, detail, affected, start))
        }
        "clock" => {
            if rng.random_bool(0.6) {
                let amp: i64 = rng.random_range(50..=200) * 1_000_000;
                let detail = format!("{} strobing ±{} ms", c.container(one), amp / 1_000_000);
                let start = note("clock-strobe", &detail);
                let end = Instant::now() + hold;
                let mut sign = 1;
                while Instant::now() < end {
                    let _ = c.set_clock_offset(one, sign * amp);
                    sign = -sign;
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = c.set_clock_offset(one, 0);
                Ok(("clock-strobe".into(), detail, vec![], start))
            } else {
                let jump: i64 = if rng.random_bool(0.5) { 1500 } else { -1500 };
                let detail = format!("{} jumps {jump} ms (beyond --max-offset)", c.container(one));
                let start = note("clock-jump", &detail);
                c.set_clock_offset(one, jump * 1_000_000)?;
                std::thread::sleep(hold);
                // The node should have stopped itself; the restart policy
                // brings it back with a true clock. If it still runs, undo.
                if c.running(one) {
                    let _ = c.set_clock_offset(one, 0);
                }
                c.start_all_stopped()?;
                Ok(("clock-jump".into(), detail, vec![one], start))
            }
        }
        "split" => {
            let (table, max) = [
                ("bank", workloads::ACCOUNTS),
                ("lists", workloads::LIST_KEYS),
                ("registers", workloads::REGISTERS),
            ]
            .choose(rng)
            .copied()
            .expect("non-empty");
            let key = rng.random_range(1..max);
            let sql = format!("ALTER TABLE {table} SPLIT AT VALUES ({key})");
            let addrs = c.sql_addrs.read().expect("address lock poisoned").clone();
            let ok = rt
                .block_on(workloads::exec_retry(&addrs, &sql, Duration::from_secs(10)))
                .is_ok();
            let detail = format!("{table} at {key}{}", if ok { "" } else { " (failed)" });
            let start = note(kind, &detail);
            std::thread::sleep(hold / 2);
            Ok((kind.to_string(), detail, vec![], start))
        }
        "transfer-leader" => {
            let table = ["bank", "lists", "registers", "probe"]
                .choose(rng)
                .copied()
                .expect("non-empty");
            let ranges = ranges_of(c, table, rt);
            let detail = match ranges.choose(rng) {
                Some((range, leader, replicas)) => {
                    let (range, leader) = (*range, *leader);
                    let others: Vec<usize> =
                        replicas.iter().copied().filter(|&i| i != leader).collect();
                    let Some(&to) = others.choose(rng) else {
                        let detail = format!("range {range} of {table}: no other replica");
                        let start = note(kind, &detail);
                        return Ok((kind.to_string(), detail, vec![], start));
                    };
                    match c.transfer_leader(range, leader, to) {
                        Ok(()) => {
                            format!("range {range} of {table}: n{} → n{}", leader + 1, to + 1)
                        }
                        Err(e) => format!("range {range} of {table}: refused ({e})"),
                    }
                }
                None => format!("{table}: no range leader known"),
            };
            let start = note(kind, &detail);
            std::thread::sleep(hold / 2);
            Ok((kind.to_string(), detail, vec![], start))
        }
        "disk" => {
            let targets = if rng.random_bool(0.35) {
                all.clone()
            } else {
                vec![one]
            };
            let detail = format!("store of {} full", names(c, &targets));
            let start = note(kind, &detail);
            for &t in &targets {
                c.fill_disk(t)?;
            }
            std::thread::sleep(hold);
            for &t in &targets {
                c.free_disk(t)?;
            }
            // A node whose store failed on the full disk stops once space is
            // back; the restart policy starts it again. Give that a moment.
            std::thread::sleep(Duration::from_secs(3));
            c.start_all_stopped()?;
            Ok((kind.to_string(), detail, targets, start))
        }
        other => bail!("unknown nemesis {other}"),
    }
}

/// The availability probe of one node: a small write every 250 ms.
pub async fn probe(
    addrs: std::sync::Arc<std::sync::RwLock<Vec<String>>>,
    node: usize,
    history: std::sync::Arc<History>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<(u64, u64, bool)> {
    let mut samples = Vec::new();
    let mut conn = None;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let tick = tokio::time::sleep(Duration::from_millis(250));
        if conn.is_none() {
            let addr = addrs.read().expect("address lock poisoned")[node].clone();
            conn = client::connect(&addr).await;
        }
        let invoked = history.now();
        let ok = match &conn {
            Some(c) => {
                let sql = format!("UPDATE probe SET v = v + 1 WHERE k = {node}");
                match client::exec_within(c, &sql, Duration::from_secs(2)).await {
                    client::Answer::Ok(..) => true,
                    client::Answer::Info(..) => {
                        conn = None;
                        false
                    }
                    _ => false,
                }
            }
            None => false,
        };
        samples.push((invoked, history.now(), ok));
        tick.await;
    }
    samples
}
