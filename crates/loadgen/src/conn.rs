//! Connections: which servers to talk to, what to do when one goes away,
//! and a session that prepares each statement once.
//!
//! ```text
//!   --url postgres://user@h:p/db   user, password, database (and the host
//!                                  when --hosts is not given)
//!   --hosts h1:p1,h2:p2,...        the servers to spread connections over
//!   --balance round-robin|random   how a new connection picks its server
//!
//!   Hosts ── connect() ──► Session (one tokio-postgres Client, its host,
//!     │                            and its cache of prepared statements)
//!     └── mark_dead(host): skipped for a backoff of 1 s, 2 s, 4 s ... 10 s,
//!         then tried again; a successful connection heals it.
//!   Pool: at most N sessions in use at once; idle ones are reused.
//! ```
//!
//! When every host has been failing for [`ALL_DOWN_LIMIT`], `connect`
//! gives up with [`Error::AllHostsDown`], which stops the run.
//!
//! Only plain TCP (or a Unix socket named in the URL): no TLS.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::config::Host;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use crate::error::{chain, Error, ErrorClass, Result};

/// How long every host may fail before a run gives up.
pub const ALL_DOWN_LIMIT: Duration = Duration::from_secs(30);
/// First and longest wait before a dead host is tried again.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Longest wait for a connection to be established and authenticated.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a new connection picks its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Balance {
    RoundRobin,
    Random,
}

/// A statement with the types of its parameters. Types are given rather
/// than inferred by the server so that a server whose inference differs
/// from PostgreSQL's still binds the values the workload sends.
#[derive(Clone, Copy, Debug)]
pub struct Sql<'a> {
    pub text: &'a str,
    pub types: &'a [Type],
}

impl Sql<'static> {
    pub const fn new(text: &'static str, types: &'static [Type]) -> Sql<'static> {
        Sql { text, types }
    }
}

/// Parameters of a statement.
pub type Params<'a> = [&'a (dyn ToSql + Sync)];

/// Which kind of server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    Concord,
    Postgres,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Addr {
    Tcp(String, u16),
    Unix(PathBuf, u16),
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Tcp(h, p) => write!(f, "{h}:{p}"),
            Addr::Unix(d, p) => write!(f, "{}:{p}", d.display()),
        }
    }
}

#[derive(Default)]
struct Health {
    /// Consecutive failures: the backoff doubles with each.
    failures: u32,
    /// Not to be tried before this.
    dead_until: Option<Instant>,
    /// Failing without a success since this instant.
    failing_since: Option<Instant>,
    last_error: String,
}

struct HostState {
    addr: Addr,
    health: Mutex<Health>,
}

/// The servers of a run and what is known about their health.
pub struct Hosts {
    base: Config,
    hosts: Vec<HostState>,
    balance: Balance,
    next: AtomicUsize,
}

/// Parses `h:p,h:p` (a host without a port gets `default_port`).
fn parse_host_list(list: &str, default_port: u16) -> Result<Vec<Addr>> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (host, port) = match item.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !h.ends_with(':') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| Error::Usage(format!("bad port in --hosts entry `{item}`")))?;
                (h.trim_start_matches('[').trim_end_matches(']'), port)
            }
            _ => (item, default_port),
        };
        out.push(Addr::Tcp(host.to_string(), port));
    }
    if out.is_empty() {
        return Err(Error::Usage("--hosts lists no host".into()));
    }
    Ok(out)
}

impl Hosts {
    /// The servers named by `url` or, when given, by `hosts`.
    pub fn new(url: &str, hosts: Option<&str>, balance: Balance) -> Result<Hosts> {
        let base: Config = url
            .parse()
            .map_err(|e| Error::Usage(format!("bad --url `{url}`: {e}")))?;
        let default_port = base.get_ports().first().copied().unwrap_or(5432);
        let addrs = match hosts {
            Some(list) => parse_host_list(list, default_port)?,
            None => {
                let ports = base.get_ports();
                let port_of = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                let mut v: Vec<Addr> = base
                    .get_hosts()
                    .iter()
                    .enumerate()
                    .map(|(i, h)| match h {
                        Host::Tcp(name) => Addr::Tcp(name.clone(), port_of(i)),
                        Host::Unix(path) => Addr::Unix(path.clone(), port_of(i)),
                    })
                    .collect();
                if v.is_empty() {
                    v.push(Addr::Tcp("localhost".into(), default_port));
                }
                v
            }
        };
        Ok(Hosts {
            base,
            hosts: addrs
                .into_iter()
                .map(|addr| HostState {
                    addr,
                    health: Mutex::new(Health::default()),
                })
                .collect(),
            balance,
            next: AtomicUsize::new(0),
        })
    }

    /// `h:p, h:p, ...` for messages.
    pub fn describe(&self) -> String {
        self.hosts
            .iter()
            .map(|h| h.addr.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The name of host `i`.
    pub fn name(&self, i: usize) -> String {
        self.hosts
            .get(i)
            .map(|h| h.addr.to_string())
            .unwrap_or_default()
    }

    fn config_for(&self, addr: &Addr) -> Config {
        let base = &self.base;
        let mut c = Config::new();
        c.user(base.get_user().unwrap_or("root"));
        if let Some(p) = base.get_password() {
            c.password(p);
        }
        if let Some(d) = base.get_dbname() {
            c.dbname(d);
        }
        if let Some(o) = base.get_options() {
            c.options(o);
        }
        c.application_name(base.get_application_name().unwrap_or("concord workload"));
        c.connect_timeout(
            base.get_connect_timeout()
                .copied()
                .unwrap_or(CONNECT_TIMEOUT),
        );
        c.keepalives(true);
        match addr {
            Addr::Tcp(h, p) => c.host(h).port(*p),
            Addr::Unix(d, p) => c.host_path(d).port(*p),
        };
        c
    }

    fn health(&self, i: usize) -> std::sync::MutexGuard<'_, Health> {
        self.hosts[i]
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Marks host `i` dead after a failed connect or a dropped connection.
    /// Several workers losing their connections to one host at once count
    /// as one failure.
    pub fn mark_dead(&self, i: usize, why: &str) {
        if i >= self.hosts.len() {
            return;
        }
        let now = Instant::now();
        let mut h = self.health(i);
        let already_dead = h.dead_until.is_some_and(|t| t > now);
        if !already_dead {
            h.failures = h.failures.saturating_add(1);
            let backoff = BACKOFF_MIN
                .saturating_mul(1 << (h.failures - 1).min(8))
                .min(BACKOFF_MAX);
            h.dead_until = Some(now + backoff);
        }
        h.failing_since.get_or_insert(now);
        h.last_error = why.to_string();
    }

    fn mark_alive(&self, i: usize) {
        *self.health(i) = Health::default();
    }

    /// Hosts that may be tried now, and the earliest time a dead one may.
    fn candidates(&self, now: Instant) -> (Vec<usize>, Option<Instant>) {
        let mut alive = Vec::new();
        let mut earliest: Option<Instant> = None;
        for i in 0..self.hosts.len() {
            match self.health(i).dead_until {
                Some(t) if t > now => earliest = Some(earliest.map_or(t, |e| e.min(t))),
                _ => alive.push(i),
            }
        }
        (alive, earliest)
    }

    /// How long every host has been failing (None if one has not).
    fn all_down_for(&self, now: Instant) -> Option<Duration> {
        let mut latest_start: Option<Instant> = None;
        for i in 0..self.hosts.len() {
            let since = self.health(i).failing_since?;
            latest_start = Some(latest_start.map_or(since, |l| l.max(since)));
        }
        latest_start.map(|s| now.saturating_duration_since(s))
    }

    fn pick(&self, alive: &[usize]) -> usize {
        match self.balance {
            Balance::RoundRobin => {
                // Walk the full list in order, taking the first live host at
                // or after the cursor, so dead hosts do not skew the rotation.
                let n = self.hosts.len();
                let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
                (0..n)
                    .map(|k| (start + k) % n)
                    .find(|i| alive.contains(i))
                    .unwrap_or(alive[0])
            }
            Balance::Random => alive[rand::rng().random_range(0..alive.len())],
        }
    }

    /// Connects to one host, skipping dead ones; waits for a backoff to
    /// expire when all are dead; gives up when all have been failing for
    /// [`ALL_DOWN_LIMIT`].
    pub async fn connect(&self) -> Result<Session> {
        loop {
            let now = Instant::now();
            if let Some(down) = self.all_down_for(now) {
                if down >= ALL_DOWN_LIMIT {
                    let last = (0..self.hosts.len())
                        .map(|i| format!("{}: {}", self.name(i), self.health(i).last_error))
                        .collect::<Vec<_>>()
                        .join("; ");
                    return Err(Error::AllHostsDown {
                        seconds: down.as_secs(),
                        hosts: self.describe(),
                        last,
                    });
                }
            }
            let (alive, earliest) = self.candidates(now);
            if alive.is_empty() {
                let until = earliest.unwrap_or(now + BACKOFF_MIN);
                tokio::time::sleep_until(until.into()).await;
                continue;
            }
            let i = self.pick(&alive);
            match self.connect_to(i).await {
                Ok(s) => {
                    self.mark_alive(i);
                    return Ok(s);
                }
                // Refused for a reason that waiting will not fix (no such
                // database, bad password): stop now, saying why.
                Err(e) if e.class() == ErrorClass::Fatal => return Err(e),
                Err(e) => self.mark_dead(i, &e.to_string()),
            }
        }
    }

    /// One attempt at host `i`.
    pub async fn connect_to(&self, i: usize) -> Result<Session> {
        let addr = &self.hosts[i].addr;
        let config = self.config_for(addr);
        let attempt = tokio::time::timeout(2 * CONNECT_TIMEOUT, config.connect(NoTls)).await;
        let (client, connection) = match attempt {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                let message = chain(&e);
                // A server that refuses us for a reason other than being
                // down (bad password, no such database) will not get
                // better: that is fatal, not a dead host.
                if let Some(code) = e.code() {
                    let code = code.code();
                    if !(code.starts_with("08") || code.starts_with("57P")) {
                        return Err(Error::sql(&format!("connect to {addr}"), &e));
                    }
                }
                return Err(Error::Connect {
                    host: addr.to_string(),
                    message,
                });
            }
            Err(_) => {
                return Err(Error::Connect {
                    host: addr.to_string(),
                    message: "timed out".into(),
                })
            }
        };
        tokio::spawn(async move {
            // The error, if any, shows up in the client's next call.
            let _ = connection.await;
        });
        Ok(Session {
            client,
            host: i,
            statements: HashMap::new(),
        })
    }
}

/// One connection and its prepared statements.
pub struct Session {
    client: Client,
    /// The index of the host in [`Hosts`].
    pub host: usize,
    statements: HashMap<String, Statement>,
}

impl Session {
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The prepared statement for `sql`, prepared on first use.
    pub async fn prepare(&mut self, sql: Sql<'_>) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql.text) {
            return Ok(s.clone());
        }
        let s = self
            .client
            .prepare_typed(sql.text, sql.types)
            .await
            .map_err(|e| Error::sql(sql.text, &e))?;
        self.statements.insert(sql.text.to_string(), s.clone());
        Ok(s)
    }

    pub async fn query(&mut self, sql: Sql<'_>, params: &Params<'_>) -> Result<Vec<Row>> {
        let s = self.prepare(sql).await?;
        self.client
            .query(&s, params)
            .await
            .map_err(|e| Error::sql(sql.text, &e))
    }

    /// Exactly one row, or an [`Error::Unexpected`] naming the statement.
    pub async fn query_one(&mut self, sql: Sql<'_>, params: &Params<'_>) -> Result<Row> {
        let mut rows = self.query(sql, params).await?;
        match rows.len() {
            1 => Ok(rows.remove(0)),
            n => Err(Error::unexpected(
                sql.text,
                format!("expected one row, got {n} (parameters {params:?})"),
            )),
        }
    }

    /// At most one row.
    pub async fn query_opt(&mut self, sql: Sql<'_>, params: &Params<'_>) -> Result<Option<Row>> {
        let mut rows = self.query(sql, params).await?;
        match rows.len() {
            0 => Ok(None),
            1 => Ok(Some(rows.remove(0))),
            n => Err(Error::unexpected(
                sql.text,
                format!("expected at most one row, got {n} (parameters {params:?})"),
            )),
        }
    }

    /// Runs a statement and returns the number of rows it touched.
    pub async fn execute(&mut self, sql: Sql<'_>, params: &Params<'_>) -> Result<u64> {
        let s = self.prepare(sql).await?;
        self.client
            .execute(&s, params)
            .await
            .map_err(|e| Error::sql(sql.text, &e))
    }

    /// Runs statements with the simple query protocol (BEGIN, COMMIT, DDL).
    pub async fn batch(&self, sql: &str) -> Result<()> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(|e| Error::sql(sql, &e))
    }

    /// Concord or PostgreSQL, from `SELECT version()`.
    pub async fn server_kind(&self) -> Result<(ServerKind, String)> {
        const SQL: &str = "SELECT version()";
        let row = self
            .client
            .query_one(SQL, &[])
            .await
            .map_err(|e| Error::sql(SQL, &e))?;
        let version: String = row
            .try_get(0)
            .map_err(|e| Error::unexpected(SQL, e.to_string()))?;
        let kind = if version.contains("Concord") {
            ServerKind::Concord
        } else {
            ServerKind::Postgres
        };
        Ok((kind, version))
    }
}

/// At most `size` sessions in use at once, spread over the hosts; idle
/// sessions are kept for the next user, so each keeps its prepared
/// statements.
pub struct Pool {
    hosts: Arc<Hosts>,
    idle: Mutex<Vec<Session>>,
    permits: Arc<Semaphore>,
}

/// A right to use one session, and the session once there is one.
pub struct Lease {
    _permit: OwnedSemaphorePermit,
    pub session: Option<Session>,
}

impl Pool {
    pub fn new(hosts: Arc<Hosts>, size: usize) -> Pool {
        Pool {
            hosts,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size.max(1))),
        }
    }

    pub fn hosts(&self) -> &Arc<Hosts> {
        &self.hosts
    }

    /// Waits for a free slot. The session is taken from the idle ones or
    /// connected by [`Pool::session`].
    pub async fn lease(&self) -> Lease {
        let permit = match self.permits.clone().acquire_owned().await {
            Ok(p) => p,
            // The semaphore is never closed.
            Err(_) => unreachable!("pool semaphore closed"),
        };
        Lease {
            _permit: permit,
            session: None,
        }
    }

    /// The lease's session, reusing an idle one or connecting a new one.
    /// An idle session whose connection died meanwhile marks its host dead
    /// and is dropped.
    pub async fn session<'a>(&self, lease: &'a mut Lease) -> Result<&'a mut Session> {
        if lease.session.is_none() {
            loop {
                let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
                match idle {
                    Some(s) if s.is_closed() => {
                        self.hosts.mark_dead(s.host, "connection closed");
                    }
                    Some(s) => {
                        lease.session = Some(s);
                        break;
                    }
                    None => {
                        lease.session = Some(self.hosts.connect().await?);
                        break;
                    }
                }
            }
        }
        match lease.session.as_mut() {
            Some(s) => Ok(s),
            None => unreachable!("session set above"),
        }
    }

    /// Returns the lease's session to the idle list.
    pub fn give_back(&self, mut lease: Lease) {
        if let Some(s) = lease.session.take() {
            if !s.is_closed() {
                self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(s);
            }
        }
    }

    /// Drops the lease's session (closing its connection); its host stays
    /// in the rotation.
    pub fn close(&self, mut lease: Lease) {
        lease.session = None;
    }

    /// Drops the lease's session after its connection failed, and marks
    /// its host dead.
    pub fn discard(&self, mut lease: Lease, why: &str) {
        if let Some(s) = lease.session.take() {
            self.hosts.mark_dead(s.host, why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_lists_take_default_ports_and_reject_bad_ones() {
        let v = parse_host_list("a:1, b ,c:3", 26257).unwrap();
        assert_eq!(
            v,
            vec![
                Addr::Tcp("a".into(), 1),
                Addr::Tcp("b".into(), 26257),
                Addr::Tcp("c".into(), 3)
            ]
        );
        assert!(parse_host_list("a:x", 1).is_err());
        assert!(parse_host_list(" , ", 1).is_err());
        assert_eq!(
            parse_host_list("[::1]:5", 1).unwrap(),
            vec![Addr::Tcp("::1".into(), 5)]
        );
    }

    #[test]
    fn hosts_come_from_the_url_unless_listed() {
        let h = Hosts::new("postgres://u@db1:7/x", None, Balance::RoundRobin).unwrap();
        assert_eq!(h.describe(), "db1:7");
        let h = Hosts::new("postgres://u@db1:7/x", Some("a:1,b"), Balance::RoundRobin).unwrap();
        assert_eq!(h.describe(), "a:1, b:7");
        assert!(Hosts::new("not a url at all::", None, Balance::Random).is_err());
    }

    #[test]
    fn dead_hosts_leave_the_rotation_with_a_growing_backoff() {
        let h = Hosts::new(
            "postgres://u@x/db",
            Some("a:1,b:2,c:3"),
            Balance::RoundRobin,
        )
        .unwrap();
        let now = Instant::now();
        let (alive, _) = h.candidates(now);
        assert_eq!(alive, vec![0, 1, 2]);
        // Round robin visits every host in turn.
        let picks: Vec<usize> = (0..6).map(|_| h.pick(&alive)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);

        h.mark_dead(1, "refused");
        // A second report while it is dead does not double the backoff.
        h.mark_dead(1, "refused");
        assert_eq!(h.health(1).failures, 1);
        let (alive, earliest) = h.candidates(Instant::now());
        assert_eq!(alive, vec![0, 2]);
        let wait = earliest.unwrap().saturating_duration_since(now);
        assert!(wait <= BACKOFF_MIN + Duration::from_millis(100), "{wait:?}");
        for _ in 0..6 {
            assert_ne!(h.pick(&alive), 1);
        }
        // Not every host is failing, so the run is not "all down".
        assert_eq!(h.all_down_for(Instant::now()), None);

        // Backoff doubles per failure, up to the cap.
        {
            let mut health = h.health(1);
            health.dead_until = None;
        }
        h.mark_dead(1, "refused");
        let d = h
            .health(1)
            .dead_until
            .unwrap()
            .saturating_duration_since(Instant::now());
        assert!(d > BACKOFF_MIN && d <= 2 * BACKOFF_MIN, "{d:?}");
        for _ in 0..10 {
            h.health(1).dead_until = None;
            h.mark_dead(1, "refused");
        }
        let d = h
            .health(1)
            .dead_until
            .unwrap()
            .saturating_duration_since(Instant::now());
        assert!(d <= BACKOFF_MAX && d > BACKOFF_MAX / 2, "{d:?}");

        // A success heals the host.
        h.mark_alive(1);
        assert_eq!(h.candidates(Instant::now()).0, vec![0, 1, 2]);
    }

    #[test]
    fn all_down_counts_from_the_last_host_to_fail() {
        let h = Hosts::new("postgres://u@x/db", Some("a:1,b:2"), Balance::Random).unwrap();
        h.mark_dead(0, "refused");
        assert_eq!(h.all_down_for(Instant::now()), None);
        h.mark_dead(1, "refused");
        let later = Instant::now() + Duration::from_secs(31);
        assert!(h.all_down_for(later).unwrap() >= ALL_DOWN_LIMIT);
        h.mark_alive(0);
        assert_eq!(h.all_down_for(later), None);
        // Random balance only ever picks live hosts.
        let (alive, _) = h.candidates(Instant::now());
        assert_eq!(alive, vec![0]);
        assert!((0..20).all(|_| h.pick(&alive) == 0));
    }

    #[tokio::test]
    async fn connect_gives_up_when_every_host_refuses_for_too_long() {
        // Port 1 on loopback refuses at once. Pretend the failures started
        // long ago so the test does not wait 30 s.
        let h = Hosts::new("postgres://u@127.0.0.1:1/db", None, Balance::RoundRobin).unwrap();
        h.mark_dead(0, "refused");
        h.health(0).failing_since = Instant::now().checked_sub(ALL_DOWN_LIMIT * 2);
        match h.connect().await {
            Err(Error::AllHostsDown { hosts, .. }) => assert_eq!(hosts, "127.0.0.1:1"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("connected to port 1"),
        }
    }
}
