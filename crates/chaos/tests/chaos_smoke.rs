//! CI smoke of the fault harness on real containers: two one-minute runs on
//! a 3-node cluster, one with `kill -9` faults and one with network
//! partitions, each of which must reach a verdict and pass every checker.
//!
//! Ignored by default (it needs the Docker engine and root): `scripts/test.sh`
//! runs it after the main suite with
//! `cargo test --workspace --test chaos_smoke -- --ignored --nocapture`,
//! and it says plainly when Docker is not there.
//!
//! The image is built from the `concord` binary of this same build
//! (`target/debug/concord`, next to this test's harness binary), so the
//! smoke never compiles Concord a second time.

use std::path::PathBuf;
use std::process::Command;

const HARNESS: &str = env!("CARGO_BIN_EXE_concord-chaos");

fn docker_ready() -> Result<(), String> {
    for (p, a) in [("docker", "info"), ("docker-compose", "version")] {
        match Command::new(p).arg(a).output() {
            Ok(o) if o.status.success() => {}
            Ok(_) => return Err(format!("`{p} {a}` fails (no Docker engine running)")),
            Err(_) => return Err(format!("{p} is not installed")),
        }
    }
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("not root (partitions need nsenter + iptables, stores need tmpfs)".into());
    }
    Ok(())
}

#[test]
#[ignore = "needs Docker and root; run by scripts/test.sh"]
fn harness_passes_a_kill_run_and_a_partition_run_on_containers() {
    if let Err(why) = docker_ready() {
        println!("chaos smoke: SKIPPED, {why}. The container fault harness did not run.");
        return;
    }
    let bin_dir = PathBuf::from(HARNESS)
        .parent()
        .expect("the harness binary has a directory")
        .to_path_buf();
    let concord = bin_dir.join("concord");
    assert!(
        concord.exists(),
        "{} is missing: build the workspace first (scripts/test.sh does)",
        concord.display()
    );
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new(root.join("docker/build.sh"))
        .args([
            "--binary",
            &concord.to_string_lossy(),
            "--tag",
            "concord:smoke",
        ])
        .status()
        .expect("docker/build.sh runs");
    assert!(status.success(), "docker/build.sh failed");
    let out = bin_dir.join("chaos-smoke");
    for (seed, nemesis) in [(101u64, "kill,kill-leader"), (102, "partition")] {
        println!("chaos smoke: seed {seed}, nemesis {nemesis}");
        let status = Command::new(HARNESS)
            .args(["run", "--nodes", "3", "--time", "60s", "--nemesis", nemesis])
            .args(["--seed", &seed.to_string(), "--image", "concord:smoke"])
            .arg("--out")
            .arg(&out)
            .status()
            .expect("the harness runs");
        let verdict = out.join(format!("run-{seed}-3n/verdict.json"));
        let text = std::fs::read_to_string(&verdict).unwrap_or_default();
        assert!(
            status.success(),
            "run {seed} ({nemesis}) failed: {text}\n(node logs in {})",
            verdict
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
        assert!(text.contains("\"valid\": true"), "{text}");
    }
}
