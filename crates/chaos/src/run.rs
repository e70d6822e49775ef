//! One run: a fresh container cluster, the three workloads and the probes
//! for a fixed time while the nemesis injects faults, then every fault
//! healed, final reads, every checker, and a verdict.
//!
//! A run passes only if it reached a verdict and every checker found
//! nothing: a workload error (an answer no fault explains), a final read
//! that never succeeds, a register history too hard to decide, or too few
//! operations to mean anything all fail the run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use concord_workload::{bank, listappend, register};
use serde_json::json;

use crate::docker::{self, Cluster};
use crate::history::History;
use crate::nemesis::{self, Fault};
use crate::workloads::{self, Shared, Worker};

/// What to run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub nodes: usize,
    pub duration: Duration,
    pub seed: u64,
    pub nemeses: Vec<&'static str>,
    pub image: String,
    pub out: PathBuf,
    pub keep: bool,
}

/// Availability after one fault.
#[derive(Clone, Debug)]
pub struct Availability {
    pub fault: Fault,
    /// Seconds from the fault until a write succeeded through a node the
    /// fault did not touch (`None`: never, during the fault).
    pub writes_back: Option<f64>,
    /// Seconds from the heal until every node had served a write.
    pub all_back: Option<f64>,
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub config: RunConfig,
    pub dir: PathBuf,
    pub valid: bool,
    pub problems: Vec<String>,
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
    pub availability: Vec<Availability>,
}

/// Runs one seed and writes `history.jsonl`, `verdict.json` and the node
/// logs under `out/run-<seed>-<nodes>n/`.
pub async fn run(cfg: RunConfig) -> Result<Verdict> {
    docker::available().map_err(|e| anyhow!("cannot run: {e}"))?;
    let dir = cfg.out.join(format!("run-{}-{}n", cfg.seed, cfg.nodes));
    if dir.exists() {
        // Left over from an interrupted run: its stores may still be mounted.
        for i in 1..=cfg.nodes.max(9) {
            let _ = docker::sh(
                "umount",
                &[&dir.join(format!("n{i}-store")).to_string_lossy()],
            );
        }
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let project = format!("chaos{}", cfg.seed % 1_000_000);
    eprintln!(
        "run seed {} on {} nodes for {:?}, nemeses {}: {}",
        cfg.seed,
        cfg.nodes,
        cfg.duration,
        cfg.nemeses.join(","),
        dir.display()
    );
    let (d, n, image, p) = (dir.clone(), cfg.nodes, cfg.image.clone(), project.clone());
    let cluster = tokio::task::spawn_blocking(move || Cluster::create(&d, n, &image, &p)).await??;
    let result = drive(&cfg, &dir, cluster).await;
    match result {
        Ok(v) => Ok(v),
        Err(e) => {
            // No verdict: a failed run, recorded as such.
            let v = json!({"seed": cfg.seed, "nodes": cfg.nodes, "valid": false,
                           "problems": [format!("no verdict: {e:#}")]});
            let _ = std::fs::write(dir.join("verdict.json"), serde_json::to_string_pretty(&v)?);
            Err(e)
        }
    }
}

async fn drive(cfg: &RunConfig, dir: &Path, mut cluster: Cluster) -> Result<Verdict> {
    let history = Arc::new(History::create(&dir.join("history.jsonl"))?);
    let addrs = cluster.sql_addrs.clone();
    let first = addrs.read().expect("address lock poisoned").clone();
    for sql in workloads::setup_statements() {
        workloads::exec_retry(&first, &sql, Duration::from_secs(60))
            .await
            .with_context(|| format!("setting up: {sql}"))?;
    }

    let shared = Arc::new(Shared::new(addrs.clone(), history.clone()));
    let mut workers = Vec::new();
    for w in 0..4u64 {
        let node = w as usize % cfg.nodes;
        let seed = cfg.seed.wrapping_mul(31).wrapping_add(w);
        workers.push(tokio::spawn(workloads::bank_worker(Worker::new(
            shared.clone(),
            "bank",
            node,
            seed,
        ))));
        workers.push(tokio::spawn(workloads::list_append_worker(Worker::new(
            shared.clone(),
            "list-append",
            (node + 1) % cfg.nodes,
            seed ^ 0xa11,
        ))));
        workers.push(tokio::spawn(workloads::register_worker(Worker::new(
            shared.clone(),
            "register",
            (node + 2) % cfg.nodes,
            seed ^ 0x5e9,
        ))));
    }
    let probes_stop = Arc::new(AtomicBool::new(false));
    let probes: Vec<_> = (0..cfg.nodes)
        .map(|i| {
            tokio::spawn(nemesis::probe(
                addrs.clone(),
                i,
                history.clone(),
                probes_stop.clone(),
            ))
        })
        .collect();

    let until = Instant::now() + cfg.duration;
    let (kinds, seed, h, rt) = (
        cfg.nemeses.clone(),
        cfg.seed,
        history.clone(),
        tokio::runtime::Handle::current(),
    );
    let nemesis = tokio::task::spawn_blocking(move || {
        let faults = nemesis::run(&mut cluster, &kinds, seed, until, &h, &rt);
        (cluster, faults)
    });
    tokio::time::sleep_until(until.into()).await;
    shared.stop.store(true, Ordering::Relaxed);
    let (cluster, faults) = nemesis.await?;
    let faults = faults.context("the nemesis failed")?;
    for w in workers {
        // Every request has a deadline, so workers end soon after `stop`.
        if tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .is_err()
        {
            shared
                .unexpected
                .lock()
                .expect("lock poisoned")
                .push("a worker did not stop within 60 s".into());
        }
    }

    // Everything healed: every node must serve again before the final reads.
    let healed_at = history.now();
    let serving = wait_all_serving(&addrs, Duration::from_secs(120)).await;
    probes_stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for p in probes {
        samples.push(p.await?);
    }
    let final_addrs = addrs.read().expect("address lock poisoned").clone();
    let verdict = judge(
        cfg,
        dir,
        &shared,
        &faults,
        &samples,
        healed_at,
        serving,
        &final_addrs,
    )
    .await;
    history.flush();
    cluster.save_logs();
    if cfg.keep {
        eprintln!("  kept the cluster (project {})", cluster.project);
    } else {
        tokio::task::spawn_blocking(move || cluster.destroy()).await?;
    }
    verdict
}

async fn wait_all_serving(addrs: &Arc<std::sync::RwLock<Vec<String>>>, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    'outer: while Instant::now() < deadline {
        let now = addrs.read().expect("address lock poisoned").clone();
        for a in &now {
            let ok = match crate::client::connect(a).await {
                Some(c) => matches!(
                    crate::client::exec_within(
                        &c,
                        "SELECT count(*) FROM probe",
                        Duration::from_secs(5)
                    )
                    .await,
                    crate::client::Answer::Ok(..)
                ),
                None => false,
            };
            if !ok {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue 'outer;
            }
        }
        return true;
    }
    false
}

/// Seconds between `from` and the first successful probe invoked at or
/// after `from` on any of `nodes` (`all`: on every one of them).
fn back_after(
    samples: &[Vec<(u64, u64, bool)>],
    nodes: &[usize],
    from: u64,
    all: bool,
) -> Option<f64> {
    let firsts: Vec<Option<u64>> = nodes
        .iter()
        .map(|&i| {
            samples
                .get(i)?
                .iter()
                .filter(|(inv, _, ok)| *ok && *inv >= from)
                .map(|(_, done, _)| *done)
                .min()
        })
        .collect();
    let t = if all {
        firsts
            .iter()
            .copied()
            .collect::<Option<Vec<u64>>>()?
            .into_iter()
            .max()?
    } else {
        firsts.iter().flatten().copied().min()?
    };
    Some(t.saturating_sub(from) as f64 / 1e9)
}

#[allow(clippy::too_many_arguments)]
async fn judge(
    cfg: &RunConfig,
    dir: &Path,
    shared: &Shared,
    faults: &[Fault],
    samples: &[Vec<(u64, u64, bool)>],
    healed_at: u64,
    serving: bool,
    addrs: &[String],
) -> Result<Verdict> {
    let mut problems: Vec<String> = shared.unexpected.lock().expect("lock poisoned").clone();
    if !serving {
        problems.push("not every node served again within 120 s of healing".into());
    }
    let counts = shared.history.counts();
    for w in ["bank", "list-append", "register"] {
        let c = counts.get(w).copied().unwrap_or_default();
        if c.ok < 10 {
            problems.push(format!("{w}: only {} operations succeeded", c.ok));
        }
    }

    // bank
    let snapshots = shared.snapshots.lock().expect("lock poisoned").clone();
    let total = workloads::ACCOUNTS as i64 * workloads::INITIAL;
    let snap_report = bank::check(total, &snapshots);
    if !snap_report.is_valid() {
        problems.push(snap_report.to_string());
    }
    let mut ledger_json = json!(null);
    match workloads::bank_final(addrs).await {
        Ok((balances, log)) => {
            let initial: BTreeMap<u64, i64> = (0..workloads::ACCOUNTS)
                .map(|a| (a, workloads::INITIAL))
                .collect();
            let acked = shared
                .transfers_acked
                .lock()
                .expect("lock poisoned")
                .clone();
            let unknown = shared
                .transfers_unknown
                .lock()
                .expect("lock poisoned")
                .clone();
            let found = bank::check_ledger(&initial, &acked, &unknown, &log, &balances);
            for a in &found {
                problems.push(format!("bank: {a}"));
            }
            ledger_json = json!({"acknowledged": acked.len(), "unknown": unknown.len(),
                                 "logged": log.len(), "anomalies": found.len()});
        }
        Err(e) => problems.push(format!("bank: no final state: {e:#}")),
    }

    // list-append
    let mut lists = shared.lists.lock().expect("lock poisoned").clone();
    let mut lost = Vec::new();
    match workloads::exec_retry(addrs, "SELECT k, v FROM lists", Duration::from_secs(90)).await {
        Ok(rows) => {
            let fin: BTreeMap<u64, Vec<u64>> = rows
                .iter()
                .filter_map(|r| {
                    let k = r[0].as_deref()?.parse().ok()?;
                    Some((k, workloads::parse_list(&vec![vec![r[1].clone()]])))
                })
                .collect();
            lost = listappend::check_durable(&lists, &fin);
            for l in lost.iter().take(10) {
                problems.push(format!("list-append: {l}"));
            }
            // The final read joins the history as one more transaction.
            lists.push(listappend::Txn::committed(
                u64::MAX,
                fin.iter()
                    .map(|(k, l)| listappend::Op::read(*k, l.clone()))
                    .collect(),
            ));
        }
        Err(e) => problems.push(format!("list-append: no final read: {e:#}")),
    }
    let la_report = listappend::check(&lists);
    if !la_report.is_valid() {
        problems.push(la_report.to_string());
    }

    // register
    let regs = shared.registers.lock().expect("lock poisoned").clone();
    let reg_report = register::check(&regs, Some(0), 10_000_000);
    if !reg_report.is_valid() {
        problems.push(reg_report.to_string());
    }

    let availability: Vec<Availability> = faults
        .iter()
        .enumerate()
        .map(|(k, f)| {
            let survivors: Vec<usize> =
                (0..cfg.nodes).filter(|i| !f.affected.contains(i)).collect();
            let everyone: Vec<usize> = (0..cfg.nodes).collect();
            let next = faults.get(k + 1).map_or(u64::MAX, |n| n.start);
            let writes_back = if survivors.is_empty() {
                None
            } else {
                back_after(samples, &survivors, f.start, false)
            };
            let all_back = back_after(samples, &everyone, f.heal, true)
                .filter(|s| f.heal + (*s * 1e9) as u64 <= next.max(healed_at));
            Availability {
                fault: f.clone(),
                writes_back,
                all_back,
            }
        })
        .collect();

    let (mut ok, mut fail, mut info) = (0, 0, 0);
    for c in counts.values() {
        ok += c.ok;
        fail += c.fail;
        info += c.info;
    }
    let valid = problems.is_empty();
    let v = json!({
        "seed": cfg.seed,
        "nodes": cfg.nodes,
        "duration_s": cfg.duration.as_secs(),
        "nemeses": cfg.nemeses,
        "valid": valid,
        "problems": problems,
        "operations": {"ok": ok, "fail": fail, "info": info,
                       "by_workload": counts.iter().map(|(k, c)| (k.clone(), json!({"ok": c.ok, "fail": c.fail, "info": c.info}))).collect::<serde_json::Map<_, _>>()},
        "disk_full_answers": shared.disk_full.load(Ordering::Relaxed),
        "bank": {"snapshots": snap_report.snapshots_checked, "snapshot_anomalies": snap_report.anomalies.len(), "ledger": ledger_json},
        "list_append": {"transactions": lists.len(), "anomalies": la_report.counts(), "lost_appends": lost.len()},
        "register": {"operations": reg_report.operations, "keys": reg_report.keys.len(),
                     "not_linearizable": reg_report.anomalies(), "undecided": reg_report.unknown()},
        "faults": availability.iter().map(|a| json!({
            "fault": a.fault.name, "detail": a.fault.detail,
            "start_s": a.fault.start as f64 / 1e9, "heal_s": a.fault.heal as f64 / 1e9,
            "writes_back_s": a.writes_back, "all_back_s": a.all_back,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(dir.join("verdict.json"), serde_json::to_string_pretty(&v)?)?;
    Ok(Verdict {
        config: cfg.clone(),
        dir: dir.to_path_buf(),
        valid,
        problems: v["problems"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        ok,
        fail,
        info,
        availability,
    })
}
