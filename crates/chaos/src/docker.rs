//! A Concord cluster of containers, driven from the host the way an
//! operator with root on the host would: `docker-compose` to create and
//! remove it, `docker kill` for crashes and SIGSTOP, `iptables` inside each
//! container's network namespace (entered with `nsenter`) for partitions,
//! the node's HTTP debug endpoint for clock offsets, and a size-limited
//! tmpfs under each node's store for a disk that fills up.
//!
//! ```text
//!   host (this program) ── SQL, HTTP ──► 10.x.y.2:5432 … (container IPs)
//!        │ docker kill / start           │
//!        │ nsenter -t PID -n iptables    ├─ n1 ─┐
//!        │ fallocate in run/nK-store/    ├─ n2 ─┼─ private bridge network
//!        ▼                               └─ n3 ─┘  (peers by hostname nK)
//! ```
//!
//! Clients reach every node from the host even during a partition: rules
//! only drop traffic between containers, never from the host's address.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// Runs a command, failing with its output if it fails.
pub fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether the Docker engine and docker-compose can be used here.
pub fn available() -> Result<(), String> {
    for (p, a) in [("docker", "info"), ("docker-compose", "version")] {
        match Command::new(p)
            .arg(a)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(s) if s.success() => {}
            Ok(_) => return Err(format!("`{p} {a}` failed (is the Docker engine running?)")),
            Err(e) => return Err(format!("{p} is not installed: {e}")),
        }
    }
    Ok(())
}

fn is_root() -> bool {
    sh("id", &["-u"]).map(|s| s == "0").unwrap_or(false)
}

/// One container cluster.
pub struct Cluster {
    pub project: String,
    pub dir: PathBuf,
    pub nodes: usize,
    /// `ip:5432` of each node (index 0 = n1), refreshed after restarts.
    pub sql_addrs: Arc<RwLock<Vec<String>>>,
    ips: Vec<String>,
    /// Concord node id of each container (index 0 = n1).
    pub node_ids: Vec<u64>,
    /// Whether each store is on its own size-limited tmpfs (needs root).
    pub tmpfs: bool,
    compose: PathBuf,
}

/// Size of each node's store file system.
const STORE_BYTES: u64 = 1 << 30;

impl Cluster {
    /// Creates and initializes a cluster of `nodes` containers of `image`.
    pub fn create(dir: &Path, nodes: usize, image: &str, project: &str) -> Result<Cluster> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let tmpfs = is_root();
        for i in 1..=nodes {
            let store = dir.join(format!("n{i}-store"));
            std::fs::create_dir_all(&store)?;
            if tmpfs {
                sh(
                    "mount",
                    &[
                        "-t",
                        "tmpfs",
                        "-o",
                        &format!("size={STORE_BYTES}"),
                        "tmpfs",
                        &store.to_string_lossy(),
                    ],
                )?;
            }
        }
        let compose = dir.join("compose.yml");
        std::fs::write(&compose, compose_file(&dir, nodes, image, project))?;
        let mut c = Cluster {
            project: project.to_string(),
            dir,
            nodes,
            sql_addrs: Arc::new(RwLock::new(Vec::new())),
            ips: Vec::new(),
            node_ids: Vec::new(),
            tmpfs,
            compose,
        };
        // A cluster of the same name left by an interrupted run goes first.
        let _ = c.compose(&["down", "-v", "--timeout", "1"]);
        c.compose(&["up", "-d"])?;
        let code = sh("docker", &["wait", &format!("{project}-init")])?;
        if code != "0" {
            let logs = sh("docker", &["logs", &format!("{project}-init")]).unwrap_or_default();
            bail!("concord init exited with {code}: {logs}");
        }
        c.refresh()?;
        for i in 0..nodes {
            let id = c
                .metric(i, "concord_node_id")
                .ok_or_else(|| anyhow!("n{} does not report its node id", i + 1))?;
            c.node_ids.push(id as u64);
        }
        Ok(c)
    }

    fn compose(&self, args: &[&str]) -> Result<String> {
        let file = self.compose.to_string_lossy().to_string();
        let mut all = vec!["-p", &self.project, "-f", &file];
        all.extend_from_slice(args);
        sh("docker-compose", &all)
    }

    /// The container of node index `i` (0 = n1).
    pub fn container(&self, i: usize) -> String {
        format!("{}-n{}", self.project, i + 1)
    }

    /// Reads the nodes' current addresses (they may change on restart).
    pub fn refresh(&mut self) -> Result<()> {
        let mut ips = Vec::new();
        for i in 0..self.nodes {
            let ip = sh(
                "docker",
                &[
                    "inspect",
                    "-f",
                    "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                    &self.container(i),
                ],
            )?;
            ips.push(ip);
        }
        *self.sql_addrs.write().expect("address lock poisoned") =
            ips.iter().map(|ip| format!("{ip}:5432")).collect();
        self.ips = ips;
        Ok(())
    }

    /// The node index of a Concord node id.
    pub fn index_of(&self, node_id: u64) -> Option<usize> {
        self.node_ids.iter().position(|&n| n == node_id)
    }

    /// A gauge from a node's /metrics (first sample of that name).
    pub fn metric(&self, i: usize, name: &str) -> Option<f64> {
        let body = http(&format!("{}:8080", self.ips.get(i)?), "GET", "/metrics", "")?;
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
    }

    /// `kill -9` of the node's process.
    pub fn kill(&self, i: usize) -> Result<()> {
        sh("docker", &["kill", "-s", "KILL", &self.container(i)]).map(|_| ())
    }

    /// Starts a stopped (killed) node again.
    pub fn start(&mut self, i: usize) -> Result<()> {
        sh("docker", &["start", &self.container(i)])?;
        self.refresh()
    }

    /// Starts every node that is not running.
    pub fn start_all_stopped(&mut self) -> Result<()> {
        for i in 0..self.nodes {
            if !self.running(i) {
                sh("docker", &["start", &self.container(i)])?;
            }
        }
        self.refresh()
    }

    pub fn running(&self, i: usize) -> bool {
        sh(
            "docker",
            &["inspect", "-f", "{{.State.Running}}", &self.container(i)],
        )
        .map(|s| s == "true")
        .unwrap_or(false)
    }

    /// SIGSTOP (`pause = true`) or SIGCONT to the node's process.
    pub fn signal_stop(&self, i: usize, pause: bool) -> Result<()> {
        let sig = if pause { "STOP" } else { "CONT" };
        sh("docker", &["kill", "-s", sig, &self.container(i)]).map(|_| ())
    }

    fn pid(&self, i: usize) -> Result<String> {
        sh(
            "docker",
            &["inspect", "-f", "{{.State.Pid}}", &self.container(i)],
        )
    }

    /// Drops every packet that node `to` receives from node `from`.
    pub fn drop_from(&self, to: usize, from: usize) -> Result<()> {
        let pid = self.pid(to)?;
        sh(
            "nsenter",
            &[
                "-t",
                &pid,
                "-n",
                "iptables",
                "-A",
                "INPUT",
                "-s",
                &self.ips[from],
                "-j",
                "DROP",
            ],
        )
        .map(|_| ())
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&self, a: &[usize], b: &[usize]) -> Result<()> {
        for &x in a {
            for &y in b {
                self.drop_from(x, y)?;
                self.drop_from(y, x)?;
            }
        }
        Ok(())
    }

    /// Removes every rule of every running node.
    pub fn heal_network(&self) -> Result<()> {
        for i in 0..self.nodes {
            if !self.running(i) {
                continue;
            }
            let pid = self.pid(i)?;
            sh("nsenter", &["-t", &pid, "-n", "iptables", "-F", "INPUT"])?;
        }
        Ok(())
    }

    /// Skews node `i`'s clock by `nanos` through its debug endpoint.
    pub fn set_clock_offset(&self, i: usize, nanos: i64) -> Result<()> {
        let addr = format!("{}:8080", self.ips[i]);
        match http(&addr, "PUT", "/debug/clock-offset", &nanos.to_string()) {
            Some(b) if b.contains(" 200 ") || b.starts_with("HTTP/1.1 200") => Ok(()),
            Some(b) => bail!("clock offset on n{} refused: {b}", i + 1),
            None => bail!("n{} did not answer the clock endpoint", i + 1),
        }
    }

    fn ballast(&self, i: usize) -> PathBuf {
        self.dir.join(format!("n{}-store", i + 1)).join("ballast")
    }

    /// Fills node `i`'s store file system to the last byte.
    pub fn fill_disk(&self, i: usize) -> Result<()> {
        if !self.tmpfs {
            bail!("stores are not on tmpfs (needs root): cannot fill a disk");
        }
        use std::io::Write;
        let mut f = std::fs::File::create(self.ballast(i))?;
        let chunk = vec![0u8; 1 << 20];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => return Err(e.into()),
            }
        }
        // Whatever is left in partial pages.
        while f.write(&[0u8; 512]).map(|n| n > 0).unwrap_or(false) {}
        Ok(())
    }

    /// Frees what [`fill_disk`](Self::fill_disk) took.
    pub fn free_disk(&self, i: usize) -> Result<()> {
        match std::fs::remove_file(self.ballast(i)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Asks the leader of `range_id` (node index `leader`) to hand it to
    /// node index `to`, with the `concord` binary inside the container.
    pub fn transfer_leader(&self, range_id: u64, leader: usize, to: usize) -> Result<()> {
        sh(
            "docker",
            &[
                "exec",
                &self.container(leader),
                "/concord",
                "range",
                "transfer-leader",
                &range_id.to_string(),
                &self.node_ids[to].to_string(),
                "--host",
                "127.0.0.1:26257",
            ],
        )
        .map(|_| ())
    }

    /// Saves every container's log under the run directory.
    pub fn save_logs(&self) {
        for i in 0..self.nodes {
            if let Ok(out) = Command::new("docker")
                .args(["logs", &self.container(i)])
                .output()
            {
                let mut log = out.stdout;
                log.extend_from_slice(&out.stderr);
                let _ = std::fs::write(self.dir.join(format!("n{}.log", i + 1)), log);
            }
        }
    }

    /// Removes the containers, the network and the stores.
    pub fn destroy(self) {
        let _ = self.heal_network();
        for i in 0..self.nodes {
            let _ = self.signal_stop(i, false);
        }
        let _ = self.compose(&["down", "-v", "--timeout", "2"]);
        if self.tmpfs {
            for i in 1..=self.nodes {
                let store = self.dir.join(format!("n{i}-store"));
                let _ = sh("umount", &[&store.to_string_lossy()]);
            }
        }
    }
}

/// A one-shot HTTP/1.1 request; the whole response (status line included).
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> Option<String> {
    use std::io::{Read, Write};
    let sock: std::net::SocketAddr = addr.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The compose file of a chaos cluster: like docker/compose-N.yml, but with
/// no published ports (the host reaches containers by address), fixed
/// container names, the clock debug endpoint on, and stores on host
/// directories (tmpfs mounts) so that a disk can be filled from the host.
fn compose_file(dir: &Path, nodes: usize, image: &str, project: &str) -> String {
    let names: Vec<String> = (1..=nodes).map(|i| format!("n{i}")).collect();
    let join = names
        .iter()
        .map(|n| format!("{n}:26257"))
        .collect::<Vec<_>>()
        .join(",");
    let mut out = format!(
        "# Generated by concord-chaos for project {project}.\nversion: \"3.8\"\nservices:\n"
    );
    for n in &names {
        out += &format!(
            "  {n}:\n    image: {image}\n    container_name: {project}-{n}\n    hostname: {n}\n    \
             restart: unless-stopped\n    command: [\"start\"]\n    environment:\n      \
             CONCORD_JOIN: \"{join}\"\n      CONCORD_ADVERTISE_ADDR: \"{n}:26257\"\n      \
             CONCORD_DEBUG_CLOCK_ENDPOINT: \"true\"\n      CONCORD_DEAD_AFTER: \"30s\"\n    \
             volumes:\n      - {}:/data\n",
            dir.join(format!("{n}-store")).display()
        );
    }
    out += &format!(
        "  init:\n    image: {image}\n    container_name: {project}-init\n    \
         command: [\"init\", \"--host\", \"n1:26257\", \"--allow-initialized\"]\n    \
         depends_on: [{}]\n    restart: \"no\"\nnetworks:\n  default:\n    name: {project}\n",
        names.join(", ")
    );
    out
}
