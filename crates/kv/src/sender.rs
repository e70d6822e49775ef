//! Routing KV batches to the leaders of ranges.
//!
//! The `DistSender` keeps a cache of range descriptors (which node holds
//! which range) and of leaders. A batch goes to the cached leader first, then
//! to the other replicas. Answers steer it:
//!
//! | answer                      | what the sender does                          |
//! |-----------------------------|-----------------------------------------------|
//! | `NotLeader` with a hint     | remember the hint, try that node next          |
//! | `NotLeader` without a hint, `RangeNotFound`, node unreachable | try the next replica |
//! | `RangeKeyMismatch`          | cache the descriptor it carries and return `RangeChanged` (the caller regroups the keys by range); without one, look the range up and route again, once |
//! | every replica failed        | back off (50 ms doubling to 1 s) and go round again, until the deadline |
//! | anything else               | hand it to the caller                          |
//!
//! A stale route therefore costs a retry, never a wrong answer: the replica
//! checks that every key it is sent falls inside its range.
//!
//! A commit is not retried after it may have reached a leader (a timeout, a
//! connection that broke after the request was sent): the caller gets
//! `AmbiguousResult` instead of risking a second application. A commit is
//! safe to resend when the connection could not be made at all.
//!
//! A node that is frozen or cut off still accepts TCP connections (its
//! kernel answers), so only a deadline reveals it. Connections ping their
//! peer every second (HTTP/2 keepalive) and break when a ping goes
//! unanswered for 2 s, failing the calls on them long before the 40 s
//! attempt deadline (which bounds a call to this node's own store too). The
//! deadline is only a backstop, above the 32 s a leader waits for a command
//! while its range keeps making progress (`Store::propose_keeping`): a node
//! that answers pings but is slow (busy applying a bulk load's cleanup) is
//! waited for, since giving up on a commit makes its result ambiguous; and
//! a node that timed out or broke a connection is
//! *suspect* for 5 s: requests try the other replicas first, so that once a
//! new leader is elected they find it instead of waiting on the old one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concord_hlc::Clock;
use concord_proto::kv::internal_client::InternalClient;
use concord_proto::kv::kv_error::Kind;
use concord_proto::kv::{BatchRequest, KvError, Response};
use concord_proto::meta::RangeDescriptor;
use concord_replication::{NodeRegistry, Store};
use parking_lot::{Mutex, RwLock};
use prost::Message as _;
use tonic::transport::Channel;

use crate::{Error, Result};

/// Routes batches to ranges.
pub struct DistSender {
    local: Store,
    nodes: Arc<NodeRegistry>,
    clock: Clock,
    /// Range descriptors by start key.
    ranges: RwLock<BTreeMap<Vec<u8>, RangeDescriptor>>,
    leaders: RwLock<HashMap<u64, u64>>,
    clients: Mutex<HashMap<u64, InternalClient<Channel>>>,
    /// Nodes that recently timed out or broke a connection, until when.
    suspects: Mutex<HashMap<u64, Instant>>,
    /// Total time a request may spend being retried.
    pub deadline: Duration,
    /// Time one attempt against one node may take.
    pub attempt_timeout: Duration,
}

/// What went wrong with one attempt.
enum Attempt {
    /// Try another replica (or the hinted leader).
    Next { hint: Option<u64>, why: String },
    /// The route is stale; the replica may have said which range holds the key.
    Reroute {
        why: String,
        desc: Option<RangeDescriptor>,
    },
    /// Final: return to the caller.
    Fail(Error),
}

impl DistSender {
    /// A sender for the node that owns `local`.
    pub fn new(local: Store) -> Self {
        let nodes = local.nodes().clone();
        let clock = local.clock().clone();
        DistSender {
            local,
            nodes,
            clock,
            ranges: RwLock::new(BTreeMap::new()),
            leaders: RwLock::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            suspects: Mutex::new(HashMap::new()),
            deadline: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(40),
        }
    }

    /// The node's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Caches a descriptor, dropping cached ranges it overlaps (they are
    /// older or newer versions of the same keys; the newer generation wins).
    pub fn cache_descriptor(&self, desc: RangeDescriptor) {
        if desc.range_id == 0 {
            return;
        }
        let mut ranges = self.ranges.write();
        let overlapping: Vec<Vec<u8>> = ranges
            .values()
            .filter(|d| {
                (desc.end_key.is_empty() || d.start_key < desc.end_key)
                    && (d.end_key.is_empty() || desc.start_key < d.end_key)
            })
            .map(|d| d.start_key.clone())
            .collect();
        for k in &overlapping {
            if let Some(old) = ranges.get(k) {
                if old.range_id == desc.range_id && old.generation > desc.generation {
                    return; // we already know a newer version
                }
            }
        }
        for k in overlapping {
            ranges.remove(&k);
        }
        ranges.insert(desc.start_key.clone(), desc);
    }

    /// Forgets a cached range.
    pub fn evict(&self, range_id: u64) {
        self.ranges.write().retain(|_, d| d.range_id != range_id);
        self.leaders.write().remove(&range_id);
    }

    fn cached(&self, key: &[u8]) -> Option<RangeDescriptor> {
        let ranges = self.ranges.read();
        let (_, d) = ranges.range(..=key.to_vec()).next_back()?;
        (d.end_key.is_empty() || key < d.end_key.as_slice()).then(|| d.clone())
    }

    /// Range 1 as far as routing needs it: its cached or local descriptor,
    /// or a stand-in listing every known node (a request to any of them
    /// finds the leader through NotLeader hints).
    fn first_range(&self) -> RangeDescriptor {
        if let Some(d) = self.ranges.read().values().find(|d| d.range_id == 1) {
            return d.clone();
        }
        if let Ok(r) = self.local.replica(1) {
            if r.status.lock().initialized {
                return r.desc.read().clone();
            }
        }
        RangeDescriptor {
            range_id: 1,
            replicas: self
                .nodes
                .all()
                .into_iter()
                .map(|n| concord_proto::meta::ReplicaDescriptor {
                    node_id: n.node_id,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// The descriptor of the range that holds `key`: from the cache, else
    /// from meta2 (which range 1 holds).
    pub async fn range_for_key(&self, key: &[u8]) -> Result<RangeDescriptor> {
        if let Some(d) = self.cached(key) {
            return Ok(d);
        }
        if !self.local.is_bootstrapped() {
            return Err(Error::NotInitialized);
        }
        if key < concord_storage::keys::MIN_SPLIT_KEY {
            return Ok(self.first_range());
        }
        let desc = self.lookup_meta(key).await?;
        self.cache_descriptor(desc.clone());
        Ok(desc)
    }

    /// Reads the descriptor of the range holding `key` from meta2.
    async fn lookup_meta(&self, key: &[u8]) -> Result<RangeDescriptor> {
        use concord_proto::kv::{request::Request as Req, response::Response as Resp};
        let start = concord_storage::keys::meta2_lookup_start(key);
        let req = BatchRequest {
            gateway_node_id: 0,
            range_id: 0,
            now: None,
            txn: None,
            requests: vec![concord_proto::kv::Request {
                request: Some(Req::Scan(concord_proto::kv::ScanRequest {
                    start: start.clone(),
                    end: concord_storage::keys::META2_END.to_vec(),
                    limit: 1,
                    reverse: false,
                })),
            }],
        };
        let resp = Box::pin(self.send(&start, req, false)).await?;
        let row = match resp.into_iter().next().and_then(|r| r.response) {
            Some(Resp::Scan(s)) => s.rows.into_iter().next(),
            _ => None,
        };
        let row = row.ok_or_else(|| {
            Error::Internal(format!(
                "meta2 has no range for key {}",
                concord_storage::fmt_key(key)
            ))
        })?;
        RangeDescriptor::decode(row.value.as_slice())
            .map_err(|e| Error::Internal(format!("corrupt meta2 entry: {e}")))
    }

    /// The ranges overlapping `[start, end)` (`end` empty: to the end), in order.
    pub async fn ranges_for_span(&self, start: &[u8], end: &[u8]) -> Result<Vec<RangeDescriptor>> {
        let mut out = Vec::new();
        let mut key = start.to_vec();
        loop {
            let d = self.range_for_key(&key).await?;
            let range_end = d.end_key.clone();
            out.push(d);
            if range_end.is_empty() || (!end.is_empty() && range_end.as_slice() >= end) {
                return Ok(out);
            }
            key = range_end;
        }
    }

    /// Sends a batch to a range identified by its descriptor (admin paths
    /// that address a range rather than a key).
    pub async fn send_to_range(
        &self,
        desc: &RangeDescriptor,
        req: BatchRequest,
    ) -> Result<Vec<Response>> {
        self.cache_descriptor(desc.clone());
        let key = if desc.start_key.is_empty() {
            vec![]
        } else {
            desc.start_key.clone()
        };
        self.send(&key, req, false).await
    }

    /// Sends a batch for the range that holds `route_key`, retrying as
    /// described in the module doc. `is_commit` marks batches that must not
    /// be resent once they may have been received.
    pub async fn send(
        &self,
        route_key: &[u8],
        req: BatchRequest,
        is_commit: bool,
    ) -> Result<Vec<Response>> {
        let started = Instant::now();
        let n = req.requests.len();
        let mut attempts = 0u32;
        let result = self
            .send_inner(route_key, req, is_commit, started, &mut attempts)
            .await;
        let took = started.elapsed();
        if took > concord_replication::SLOW_STEP {
            tracing::debug!(
                target: "concord::slow",
                key = %concord_storage::fmt_key(route_key),
                requests = n,
                attempts,
                took_ms = took.as_millis() as u64,
                error = result.as_ref().err().map(|e| e.to_string()),
                "slow kv send"
            );
        }
        result
    }

    async fn send_inner(
        &self,
        route_key: &[u8],
        mut req: BatchRequest,
        is_commit: bool,
        started: Instant,
        attempts: &mut u32,
    ) -> Result<Vec<Response>> {
        let mut backoff = Duration::from_millis(50);
        let mut last_error = String::from("no attempt made");
        let mut rerouted = 0u32;
        loop {
            let desc = self.range_for_key(route_key).await?;
            req.range_id = desc.range_id;
            req.gateway_node_id = self.local.node_id();
            let mut candidates: Vec<u64> = Vec::new();
            if let Some(l) = self.leaders.read().get(&desc.range_id) {
                candidates.push(*l);
            }
            for r in &desc.replicas {
                if !candidates.contains(&r.node_id) {
                    candidates.push(r.node_id);
                }
            }
            // A historical read may be served by the local replica (a
            // follower read) if it has closed the timestamp; if not, it
            // answers NotLeader and the leader is next.
            let me = self.local.node_id();
            let historical = req.txn.as_ref().is_some_and(|t| t.historical);
            if historical && desc.replicas.iter().any(|r| r.node_id == me) {
                candidates.retain(|n| *n != me);
                candidates.insert(0, me);
            }
            // Suspect nodes go last (stable: the cached leader stays first
            // among the others).
            {
                let now = Instant::now();
                let mut suspects = self.suspects.lock();
                suspects.retain(|_, until| *until > now);
                candidates.sort_by_key(|n| suspects.contains_key(n));
            }
            if desc.range_id == 1 {
                // Range 1 is how every other range is found: if its cached
                // replicas are all gone, any node may know where it went.
                for n in self.nodes.all() {
                    if !candidates.contains(&n.node_id) {
                        candidates.push(n.node_id);
                    }
                }
            }
            let mut i = 0;
            let mut tried = Vec::new();
            let mut reroute = false;
            while i < candidates.len() {
                let node = candidates[i];
                i += 1;
                if tried.contains(&node) {
                    continue;
                }
                tried.push(node);
                req.now = Some(self.clock.now().into());
                *attempts += 1;
                match self.attempt(node, req.clone(), is_commit).await {
                    Ok(responses) => {
                        if !(historical && node == me) {
                            self.leaders.write().insert(desc.range_id, node);
                        }
                        return Ok(responses);
                    }
                    Err(Attempt::Next { hint, why }) => {
                        last_error = format!("node {node}: {why}");
                        if let Some(h) = hint {
                            if !tried.contains(&h) {
                                self.leaders.write().insert(desc.range_id, h);
                                candidates.insert(i, h);
                            }
                        }
                    }
                    Err(Attempt::Reroute { why, desc: hint }) => {
                        last_error = why;
                        self.evict(desc.range_id);
                        rerouted += 1;
                        if let Some(h) = hint {
                            // The replica sent the descriptor of its range
                            // that holds the key it refused. If that range
                            // holds the route key, the route key's range
                            // moved or shrank and the batch's other keys may
                            // now lie elsewhere; if not, the refused key is
                            // another key of the batch, beyond the route
                            // key's range, and routing the batch again would
                            // find the same range and the same refusal until
                            // the deadline. Either way only the caller can
                            // regroup the keys by range.
                            self.cache_descriptor(h);
                            return Err(Error::RangeChanged);
                        }
                        if rerouted > 1 {
                            // Refused again after a fresh lookup: the keys
                            // do not fit the route key's range.
                            return Err(Error::RangeChanged);
                        }
                        reroute = true;
                        break;
                    }
                    Err(Attempt::Fail(e)) => return Err(e),
                }
            }
            if reroute {
                // A stale route: retry at once with what we learned.
                if started.elapsed() > self.deadline {
                    return Err(Error::Unavailable(format!(
                        "could not route the request: {last_error}"
                    )));
                }
                continue;
            }
            self.leaders.write().remove(&desc.range_id);
            if started.elapsed() + backoff > self.deadline {
                return Err(Error::Unavailable(format!(
                    "range {} did not answer within {:?}; last error: {last_error}",
                    desc.range_id, self.deadline
                )));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    async fn attempt(
        &self,
        node: u64,
        req: BatchRequest,
        is_commit: bool,
    ) -> std::result::Result<Vec<Response>, Attempt> {
        let resp = if node == self.local.node_id() {
            // The same bound as a remote attempt: a request stuck in this
            // node's store (behind a latch that is never released, say)
            // would otherwise hang its statement, and its client, forever.
            match tokio::time::timeout(self.attempt_timeout, self.local.batch(req)).await {
                Ok(resp) => resp,
                Err(_) => {
                    let why = format!("this node did not answer within {:?}", self.attempt_timeout);
                    tracing::warn!(node, "{why}");
                    if is_commit {
                        return Err(Attempt::Fail(Error::AmbiguousResult(format!(
                            "{why} while committing"
                        ))));
                    }
                    return Err(Attempt::Next { hint: None, why });
                }
            }
        } else {
            let mut client = self
                .client(node)
                .await
                .map_err(|why| Attempt::Next { hint: None, why })?;
            let call = tokio::time::timeout(self.attempt_timeout, client.batch(req)).await;
            match call {
                Ok(Ok(resp)) => resp.into_inner(),
                Ok(Err(status)) => {
                    self.clients.lock().remove(&node);
                    self.suspect(node);
                    let msg = status.message().to_string();
                    let never_sent =
                        status.code() == tonic::Code::Unavailable && msg.contains("connect");
                    if is_commit && !never_sent {
                        return Err(Attempt::Fail(Error::AmbiguousResult(format!(
                            "the connection to node {node} failed while committing: {status}"
                        ))));
                    }
                    return Err(Attempt::Next {
                        hint: None,
                        why: status.to_string(),
                    });
                }
                Err(_) => {
                    self.clients.lock().remove(&node);
                    self.suspect(node);
                    if is_commit {
                        return Err(Attempt::Fail(Error::AmbiguousResult(format!(
                            "node {node} did not answer a commit within {:?}",
                            self.attempt_timeout
                        ))));
                    }
                    return Err(Attempt::Next {
                        hint: None,
                        why: format!("no answer within {:?}", self.attempt_timeout),
                    });
                }
            }
        };
        if let Some(now) = resp.now {
            if let Err(e) = self.clock.update(now.into()) {
                // The answer comes from a clock more than the maximum offset
                // ahead of ours: ours is behind (or theirs ahead). A read at
                // a timestamp from our clock may then have missed writes
                // that finished before it began, beyond the uncertainty
                // window, so nothing in the answer can be trusted; a commit
                // may have happened all the same.
                return Err(Attempt::Fail(if is_commit {
                    Error::AmbiguousResult(format!("answer from node {node} refused: {e}"))
                } else {
                    Error::ClockOffset(format!("answer from node {node} refused: {e}"))
                }));
            }
        }
        match resp.error {
            None => Ok(resp.responses),
            Some(e) => Err(classify(e)),
        }
    }

    fn suspect(&self, node: u64) {
        self.suspects
            .lock()
            .insert(node, Instant::now() + Duration::from_secs(5));
    }

    async fn client(&self, node: u64) -> std::result::Result<InternalClient<Channel>, String> {
        if let Some(c) = self.clients.lock().get(&node) {
            return Ok(c.clone());
        }
        let addr = self
            .nodes
            .get(node)
            .map(|n| n.address)
            .ok_or_else(|| format!("no address known for node {node}"))?;
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(1))
            .http2_adaptive_window(true)
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(6))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let client = InternalClient::new(channel).max_decoding_message_size(256 << 20);
        self.clients.lock().insert(node, client.clone());
        Ok(client)
    }
}

/// Turns a replica's error into what the sender or the caller does next.
fn classify(e: KvError) -> Attempt {
    let kind = Kind::try_from(e.kind).unwrap_or(Kind::Internal);
    let key = concord_storage::fmt_key(&e.key);
    let txn = concord_storage::fmt_txn_id(&e.txn_id);
    match kind {
        Kind::NotLeader => Attempt::Next {
            hint: (e.leader_node_id != 0).then_some(e.leader_node_id),
            why: e.message,
        },
        Kind::RangeNotFound | Kind::Unavailable => Attempt::Next {
            hint: None,
            why: e.message,
        },
        Kind::RangeKeyMismatch => Attempt::Reroute {
            why: e.message,
            desc: e.descriptor.filter(|d| d.range_id != 0),
        },
        Kind::RangeBusy => Attempt::Fail(Error::RangeBusy(e.message)),
        Kind::NeedsRefresh => Attempt::Fail(Error::NeedsRefresh {
            ts: concord_proto::ts(e.ts),
        }),
        Kind::TransactionRetry => Attempt::Fail(Error::TransactionRetry {
            key: e.key.clone(),
            txn,
            reason: e.message,
        }),
        Kind::WriteIntent => match e.intent_txn {
            Some(intent) if !intent.anchor_key.is_empty() => Attempt::Fail(Error::WriteIntent {
                key: e.key,
                intent: Box::new(intent),
            }),
            _ => Attempt::Fail(Error::TransactionRetry {
                key: e.key.clone(),
                txn,
                reason: format!("WRITE_INTENT: {}", e.message),
            }),
        },
        Kind::TxnAborted => Attempt::Fail(Error::TxnAborted(e.message)),
        Kind::ReadWithinUncertainty => Attempt::Fail(Error::Uncertainty {
            key,
            ts: concord_proto::ts(e.ts),
        }),
        Kind::AmbiguousResult => Attempt::Fail(Error::AmbiguousResult(e.message)),
        Kind::ClockOffset => Attempt::Fail(Error::ClockOffset(e.message)),
        Kind::Storage => {
            if e.message.contains("disk full") {
                Attempt::Fail(Error::DiskFull(e.message))
            } else {
                Attempt::Fail(Error::Storage(e.message))
            }
        }
        Kind::Internal => Attempt::Fail(Error::Internal(e.message)),
    }
}
