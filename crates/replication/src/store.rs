//! The store: every replica on one node, and the ready loop that drives them.
//!
//! One OS thread (the *ready loop*) owns every replica's `raft::RawNode`. All
//! Raft I/O happens there, in the order raft-rs documents for a `Ready`:
//!
//! ```text
//!  loop {
//!    wait for inbox messages (Raft messages, proposals, read requests)
//!        or the next tick (100 ms)
//!    step / propose / read_index into the RawNodes; tick if due
//!    for each replica with a Ready:              ── phase 1 ──
//!        send messages (leader: before persisting, Raft thesis 10.2.1)
//!        note role changes and read states
//!        apply committed entries        ─┐
//!        append new entries             ─┼─► ONE write batch for all replicas
//!        record the hard state          ─┘
//!    write the batch, fsync once if anything must be durable (group commit)
//!    for each replica:                           ── phase 2 ──
//!        send persisted messages (follower: only after the fsync)
//!        advance → LightReady: send, apply newly committed entries (2nd batch)
//!        advance_apply
//!    answer proposers whose commands applied; serve reads whose index applied
//!  }
//! ```
//!
//! Applying is deterministic and blind: commands were evaluated by the leader
//! before they were proposed (see [`crate::eval`]), so applying one only writes
//! what it says. The applied index is written in the same batch as the data it
//! applied, so replaying the log after a crash never applies an entry twice.
//!
//! Everything outside the loop talks to it through a channel ([`LoopMsg`])
//! and reads a replica's role, leader and applied index from its shared
//! [`ReplicaHandle`].
//!
//! A failed engine write is not something the loop can retry: Raft state in
//! memory is then ahead of disk. The store marks itself failed, answers every
//! waiter with the storage error and stops; the node must be restarted, and
//! recovers from what is durable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use concord_hlc::Clock;
use concord_proto::meta::{AppliedState, NodeDescriptor, RaftCommand, RangeDescriptor, StoreIdent};
use concord_storage::raft_log::{load_applied_state, save_applied_state};
use concord_storage::{local, Engine, RaftLogStorage, WriteBatch};
use parking_lot::{Mutex, RwLock};
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeV2, ConfState, EntryType, Message};
use raft::{RawNode, StateRole};
use tokio::sync::oneshot;

use crate::latch::LatchManager;
use crate::logging::raft_logger;
use crate::transport::{NodeRegistry, RaftTransport};
use crate::tscache::TimestampCache;
use crate::Error;

/// Tunables of a store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Length of one Raft tick.
    pub tick_interval: Duration,
    /// Ticks without a leader's heartbeat before a follower campaigns
    /// (randomized between this and twice this).
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// How long a proposer or reader waits for Raft before giving up.
    pub raft_timeout: Duration,
    /// Entries of the timestamp cache per range before it folds.
    pub tscache_entries: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            tick_interval: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            raft_timeout: Duration::from_secs(4),
            tscache_entries: 100_000,
        }
    }
}

/// A replica's Raft role as seen from outside the loop.
#[derive(Clone, Debug, Default)]
pub struct ReplicaStatus {
    pub role: String,
    pub leader_replica_id: u64,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    /// Leader, and every entry of earlier terms applied: may evaluate requests.
    pub leader_ready: bool,
}

/// The part of a replica shared between the ready loop and request evaluation.
pub struct ReplicaHandle {
    pub range_id: u64,
    pub replica_id: u64,
    pub desc: RwLock<RangeDescriptor>,
    pub latches: LatchManager,
    pub tscache: Mutex<TimestampCache>,
    pub status: Mutex<ReplicaStatus>,
}

impl ReplicaHandle {
    /// The node id of the current leader, if known.
    pub fn leader_node(&self) -> Option<u64> {
        let leader = self.status.lock().leader_replica_id;
        if leader == 0 {
            return None;
        }
        self.desc
            .read()
            .replicas
            .iter()
            .find(|r| r.replica_id == leader)
            .map(|r| r.node_id)
    }
}

type Responder = oneshot::Sender<Result<(), Error>>;

/// Messages to the ready loop.
pub(crate) enum LoopMsg {
    Raft {
        range_id: u64,
        msg: Message,
    },
    Propose {
        range_id: u64,
        id: Vec<u8>,
        data: Vec<u8>,
        resp: Responder,
    },
    ReadIndex {
        range_id: u64,
        resp: Responder,
    },
    AddReplica {
        desc: RangeDescriptor,
        resp: Responder,
    },
    Stop,
}

pub(crate) struct StoreInner {
    pub node_id: AtomicU64,
    pub engine: Arc<dyn Engine>,
    pub clock: Clock,
    pub nodes: Arc<NodeRegistry>,
    pub config: StoreConfig,
    pub replicas: RwLock<HashMap<u64, Arc<ReplicaHandle>>>,
    pub failure: Mutex<Option<concord_storage::Error>>,
    tx: mpsc::Sender<LoopMsg>,
    stopped: AtomicBool,
}

/// A node's store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<StoreInner>,
}

impl Store {
    /// Opens the store on `engine`: loads the identity and every local replica
    /// and starts the ready loop. A store that belongs to no cluster yet has
    /// no replicas until [`Store::bootstrap`].
    pub fn start(
        engine: Arc<dyn Engine>,
        clock: Clock,
        nodes: Arc<NodeRegistry>,
        transport: Arc<dyn RaftTransport>,
        config: StoreConfig,
    ) -> Result<Store, Error> {
        let ident = local::load_ident(engine.as_ref())?;
        for node in local::load_nodes(engine.as_ref())? {
            nodes.upsert(node);
        }
        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(StoreInner {
            node_id: AtomicU64::new(ident.as_ref().map(|i| i.node_id).unwrap_or(0)),
            engine: engine.clone(),
            clock,
            nodes,
            config,
            replicas: RwLock::new(HashMap::new()),
            failure: Mutex::new(None),
            tx,
            stopped: AtomicBool::new(false),
        });
        let mut ready_loop = ReadyLoop {
            store: inner.clone(),
            transport,
            replicas: HashMap::new(),
            rx,
            read_seq: 0,
        };
        if ident.is_some() {
            for desc in local::load_ranges(engine.as_ref())? {
                ready_loop.add_replica(desc)?;
            }
        }
        let failure_slot = inner.clone();
        std::thread::Builder::new()
            .name("ready-loop".into())
            .spawn(move || {
                // raft-rs panics on broken invariants (e.g. a log it cannot
                // read). The node must then stop serving, not limp on.
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ready_loop.run()));
                if let Err(panic) = outcome {
                    let msg = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into());
                    tracing::error!("the ready loop stopped on a Raft invariant failure: {msg}; restart the node");
                    *failure_slot.failure.lock() =
                        Some(concord_storage::Error::Io(format!("ready loop failed: {msg}")));
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start the ready loop: {e}")))?;
        Ok(Store { inner })
    }

    /// This node's id (0 before bootstrap).
    pub fn node_id(&self) -> u64 {
        self.inner.node_id.load(Ordering::SeqCst)
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.inner.engine
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The node registry.
    pub fn nodes(&self) -> &Arc<NodeRegistry> {
        &self.inner.nodes
    }

    /// The storage failure that stopped the store, if any.
    pub fn failure(&self) -> Option<concord_storage::Error> {
        self.inner.failure.lock().clone()
    }

    /// Whether the store belongs to a cluster.
    pub fn is_bootstrapped(&self) -> bool {
        self.node_id() != 0
    }

    /// The store identity, if bootstrapped.
    pub fn ident(&self) -> Result<Option<StoreIdent>, Error> {
        Ok(local::load_ident(self.inner.engine.as_ref())?)
    }

    /// Makes this store a member of a new cluster: persists the identity,
    /// the initial nodes and the first range, then starts its replica.
    /// Bootstrapping again with the same cluster id and node id is a no-op.
    pub async fn bootstrap(
        &self,
        ident: StoreIdent,
        nodes: Vec<NodeDescriptor>,
        first_range: RangeDescriptor,
    ) -> Result<(), Error> {
        if let Some(existing) = self.ident()? {
            if existing == ident {
                return Ok(());
            }
            return Err(Error::AlreadyBootstrapped(format!(
                "this store already belongs to cluster {} as node {}",
                hex(&existing.cluster_id),
                existing.node_id
            )));
        }
        if !first_range
            .replicas
            .iter()
            .any(|r| r.node_id == ident.node_id)
        {
            return Err(Error::Internal(
                "the first range has no replica on this node".into(),
            ));
        }
        let mut batch = WriteBatch::new();
        local::save_ident(&mut batch, &ident);
        for n in &nodes {
            local::save_node(&mut batch, n);
        }
        local::save_range(&mut batch, &first_range);
        let conf = ConfState {
            voters: first_range.replicas.iter().map(|r| r.replica_id).collect(),
            ..Default::default()
        };
        RaftLogStorage::initialize(&mut batch, first_range.range_id, &conf)?;
        self.inner.engine.write(batch, true)?;
        for n in nodes {
            self.inner.nodes.upsert(n);
        }
        self.inner.node_id.store(ident.node_id, Ordering::SeqCst);
        let (resp, rx) = oneshot::channel();
        self.send(LoopMsg::AddReplica {
            desc: first_range,
            resp,
        })?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    pub(crate) fn send(&self, msg: LoopMsg) -> Result<(), Error> {
        if let Some(e) = self.inner.failure.lock().clone() {
            return Err(Error::Storage(e));
        }
        self.inner.tx.send(msg).map_err(|_| Error::Stopped)
    }

    /// Delivers a Raft message from another node.
    pub fn deliver_raft_message(&self, range_id: u64, msg: Message) {
        let _ = self.send(LoopMsg::Raft { range_id, msg });
    }

    /// The shared handle of a local replica.
    pub fn replica(&self, range_id: u64) -> Result<Arc<ReplicaHandle>, Error> {
        self.inner
            .replicas
            .read()
            .get(&range_id)
            .cloned()
            .ok_or(Error::RangeNotFound(range_id))
    }

    /// Every local replica.
    pub fn replicas(&self) -> Vec<Arc<ReplicaHandle>> {
        let mut v: Vec<_> = self.inner.replicas.read().values().cloned().collect();
        v.sort_by_key(|r| r.range_id);
        v
    }

    /// Proposes an evaluated command and waits until it has applied here.
    pub async fn propose(&self, range_id: u64, cmd: RaftCommand) -> Result<(), Error> {
        let (resp, rx) = oneshot::channel();
        let id = cmd.id.clone();
        self.send(LoopMsg::Propose {
            range_id,
            id,
            data: cmd.encode_to_vec(),
            resp,
        })?;
        match tokio::time::timeout(self.inner.config.raft_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::AmbiguousResult(format!(
                "range {range_id}: the command was proposed but did not apply within {:?}",
                self.inner.config.raft_timeout
            ))),
        }
    }

    /// Waits until this replica is known to be the leader and has applied
    /// every entry committed before now (Raft ReadIndex): a read that follows
    /// sees every write acknowledged before it started.
    pub async fn read_index(&self, range_id: u64) -> Result<(), Error> {
        let (resp, rx) = oneshot::channel();
        self.send(LoopMsg::ReadIndex { range_id, resp })?;
        match tokio::time::timeout(self.inner.config.raft_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::Unavailable(format!(
                "range {range_id}: no read quorum within {:?}",
                self.inner.config.raft_timeout
            ))),
        }
    }

    /// Stops the ready loop.
    pub fn stop(&self) {
        if !self.inner.stopped.swap(true, Ordering::SeqCst) {
            let _ = self.inner.tx.send(LoopMsg::Stop);
        }
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A replica as the ready loop holds it.
struct Replica {
    handle: Arc<ReplicaHandle>,
    raw: RawNode<RaftLogStorage>,
    applied: AppliedState,
    /// Proposals awaiting apply, by command id.
    proposals: HashMap<Vec<u8>, Responder>,
    /// Read requests that arrived in this loop iteration.
    reads_new: Vec<Responder>,
    /// Read requests sent to Raft, by request context.
    reads_in_flight: HashMap<Vec<u8>, Vec<Responder>>,
    /// Read requests whose read index is known, waiting for apply.
    reads_ready: Vec<(u64, Vec<Responder>)>,
    /// Index of the first entry of the current leader term (leaders only).
    term_start_index: u64,
}

struct ReadyLoop {
    store: Arc<StoreInner>,
    transport: Arc<dyn RaftTransport>,
    replicas: HashMap<u64, Replica>,
    rx: mpsc::Receiver<LoopMsg>,
    read_seq: u64,
}

/// Results of applying, delivered once the batch that holds them is written.
type ApplyResults = Vec<(Responder, Result<(), Error>)>;

impl ReadyLoop {
    fn add_replica(&mut self, desc: RangeDescriptor) -> Result<(), Error> {
        let node_id = self.store.node_id.load(Ordering::SeqCst);
        let range_id = desc.range_id;
        if self.replicas.contains_key(&range_id) {
            return Ok(());
        }
        let replica_id = desc
            .replicas
            .iter()
            .find(|r| r.node_id == node_id)
            .map(|r| r.replica_id)
            .ok_or_else(|| {
                Error::Internal(format!("range {range_id} has no replica on node {node_id}"))
            })?;
        let engine = self.store.engine.clone();
        let storage = RaftLogStorage::open(engine.clone(), range_id)?;
        let applied = load_applied_state(engine.as_ref(), range_id)?;
        let cfg = raft::Config {
            id: replica_id,
            election_tick: self.store.config.election_ticks,
            heartbeat_tick: self.store.config.heartbeat_ticks,
            applied: applied.index,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            max_uncommitted_size: 64 << 20,
            ..Default::default()
        };
        cfg.validate()
            .map_err(|e| Error::Internal(format!("raft config: {e}")))?;
        let raw = RawNode::new(&cfg, storage, &raft_logger(node_id, range_id))
            .map_err(|e| Error::Internal(format!("range {range_id}: cannot start raft: {e}")))?;
        let handle = Arc::new(ReplicaHandle {
            range_id,
            replica_id,
            desc: RwLock::new(desc),
            latches: LatchManager::new(),
            tscache: Mutex::new(TimestampCache::new(
                concord_hlc::Timestamp::ZERO,
                self.store.config.tscache_entries,
            )),
            status: Mutex::new(ReplicaStatus {
                role: "follower".into(),
                applied_index: applied.index,
                ..Default::default()
            }),
        });
        self.store.replicas.write().insert(range_id, handle.clone());
        self.replicas.insert(
            range_id,
            Replica {
                handle,
                raw,
                applied,
                proposals: HashMap::new(),
                reads_new: Vec::new(),
                reads_in_flight: HashMap::new(),
                reads_ready: Vec::new(),
                term_start_index: 0,
            },
        );
        tracing::info!(range_id, replica_id, "replica started");
        Ok(())
    }

    fn run(mut self) {
        let tick = self.store.config.tick_interval;
        let mut next_tick = Instant::now() + tick;
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(timeout) {
                Ok(LoopMsg::Stop) => break,
                Ok(msg) => self.handle_msg(msg),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            let mut stop = false;
            for _ in 0..4096 {
                match self.rx.try_recv() {
                    Ok(LoopMsg::Stop) => {
                        stop = true;
                        break;
                    }
                    Ok(msg) => self.handle_msg(msg),
                    Err(_) => break,
                }
            }
            if stop {
                break;
            }
            self.start_reads();
            if Instant::now() >= next_tick {
                for r in self.replicas.values_mut() {
                    r.raw.tick();
                }
                next_tick = Instant::now() + tick;
            }
            if let Err(e) = self.handle_readies() {
                tracing::error!("storage failure in the ready loop, store stops: {e}");
                self.fail(e);
                return;
            }
        }
        self.fail_all(|| Error::Stopped);
        tracing::info!("ready loop stopped");
    }

    fn fail(&mut self, e: concord_storage::Error) {
        *self.store.failure.lock() = Some(e.clone());
        self.fail_all(|| Error::Storage(e.clone()));
    }

    fn fail_all(&mut self, err: impl Fn() -> Error) {
        for r in self.replicas.values_mut() {
            for (_, resp) in r.proposals.drain() {
                let _ = resp.send(Err(err()));
            }
            for resp in r.reads_new.drain(..) {
                let _ = resp.send(Err(err()));
            }
            for (_, v) in r.reads_in_flight.drain() {
                for resp in v {
                    let _ = resp.send(Err(err()));
                }
            }
            for (_, v) in r.reads_ready.drain(..) {
                for resp in v {
                    let _ = resp.send(Err(err()));
                }
            }
        }
        // Drain the inbox so nobody waits on a dead loop.
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                LoopMsg::Propose { resp, .. }
                | LoopMsg::ReadIndex { resp, .. }
                | LoopMsg::AddReplica { resp, .. } => {
                    let _ = resp.send(Err(err()));
                }
                _ => {}
            }
        }
    }

    fn not_leader(r: &Replica) -> Error {
        Error::NotLeader {
            range_id: r.handle.range_id,
            leader_node: r.handle.leader_node(),
        }
    }

    fn handle_msg(&mut self, msg: LoopMsg) {
        match msg {
            LoopMsg::Raft { range_id, msg } => {
                let Some(r) = self.replicas.get_mut(&range_id) else {
                    tracing::debug!(range_id, "raft message for an unknown range dropped");
                    return;
                };
                if msg.to != r.handle.replica_id {
                    tracing::debug!(
                        range_id,
                        to = msg.to,
                        "raft message for another replica id dropped"
                    );
                    return;
                }
                if let Err(e) = r.raw.step(msg) {
                    tracing::debug!(range_id, "raft step: {e}");
                }
            }
            LoopMsg::Propose {
                range_id,
                id,
                data,
                resp,
            } => {
                let Some(r) = self.replicas.get_mut(&range_id) else {
                    let _ = resp.send(Err(Error::RangeNotFound(range_id)));
                    return;
                };
                if r.raw.raft.state != StateRole::Leader {
                    let _ = resp.send(Err(Self::not_leader(r)));
                    return;
                }
                match r.raw.propose(vec![], data) {
                    Ok(()) => {
                        r.proposals.insert(id, resp);
                    }
                    Err(e) => {
                        tracing::debug!(range_id, "proposal dropped: {e}");
                        let _ = resp.send(Err(Self::not_leader(r)));
                    }
                }
            }
            LoopMsg::ReadIndex { range_id, resp } => match self.replicas.get_mut(&range_id) {
                Some(r) => r.reads_new.push(resp),
                None => {
                    let _ = resp.send(Err(Error::RangeNotFound(range_id)));
                }
            },
            LoopMsg::AddReplica { desc, resp } => {
                let _ = resp.send(self.add_replica(desc));
            }
            LoopMsg::Stop => {}
        }
    }

    /// Issues one ReadIndex request per replica for all reads that arrived
    /// in this iteration: they share one heartbeat round.
    fn start_reads(&mut self) {
        for r in self.replicas.values_mut() {
            if r.reads_new.is_empty() {
                continue;
            }
            if r.raw.raft.state != StateRole::Leader {
                let err = Self::not_leader(r);
                for resp in r.reads_new.drain(..) {
                    let _ = resp.send(Err(err.clone()));
                }
                continue;
            }
            self.read_seq += 1;
            let ctx = self.read_seq.to_be_bytes().to_vec();
            r.raw.read_index(ctx.clone());
            r.reads_in_flight
                .insert(ctx, std::mem::take(&mut r.reads_new));
        }
    }

    fn send_messages(&self, r: &Replica, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        let desc = r.handle.desc.read();
        for msg in msgs {
            match desc.replicas.iter().find(|rep| rep.replica_id == msg.to) {
                Some(rep) => self.transport.send(rep.node_id, r.handle.range_id, msg),
                None => tracing::debug!(
                    range_id = r.handle.range_id,
                    to = msg.to,
                    "message to a replica not in the descriptor dropped"
                ),
            }
        }
    }

    fn handle_readies(&mut self) -> Result<(), concord_storage::Error> {
        let range_ids: Vec<u64> = self
            .replicas
            .iter()
            .filter(|(_, r)| r.raw.has_ready())
            .map(|(id, _)| *id)
            .collect();
        if range_ids.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        let mut sync = false;
        let mut results: ApplyResults = Vec::new();
        let mut readies = Vec::with_capacity(range_ids.len());

        // Phase 1: messages, role changes, apply, append, hard state.
        for range_id in range_ids {
            let mut r = self.replicas.remove(&range_id).expect("listed above");
            let mut rd = r.raw.ready();
            self.send_messages(&r, rd.take_messages());
            if let Some(ss) = rd.ss() {
                let (role, leader) = (ss.raft_state, ss.leader_id);
                self.on_role_change(&mut r, role, leader);
            }
            for rs in rd.take_read_states() {
                if let Some(waiters) = r.reads_in_flight.remove(&rs.request_ctx) {
                    r.reads_ready.push((rs.index, waiters));
                }
            }
            let committed = rd.take_committed_entries();
            self.apply_entries(&mut r, committed, &mut batch, &mut results)?;
            if !rd.entries().is_empty() {
                r.raw.mut_store().append(rd.entries(), &mut batch)?;
            }
            if let Some(hs) = rd.hs() {
                r.raw.mut_store().set_hard_state(hs, &mut batch)?;
            }
            sync |= rd.must_sync();
            readies.push((range_id, r, rd));
        }
        if !batch.is_empty() {
            self.store.engine.write(batch, sync)?;
        }

        // Phase 2: persisted messages, advance, newly committed entries.
        let mut batch = WriteBatch::new();
        for (range_id, mut r, mut rd) in readies {
            self.send_messages(&r, rd.take_persisted_messages());
            let mut light = r.raw.advance(rd);
            if let Some(commit) = light.commit_index() {
                let mut hs = r.raw.store().hard_state().clone();
                hs.commit = commit;
                r.raw.mut_store().set_hard_state(&hs, &mut batch)?;
            }
            self.send_messages(&r, light.take_messages());
            let committed = light.take_committed_entries();
            self.apply_entries(&mut r, committed, &mut batch, &mut results)?;
            r.raw.advance_apply();
            self.replicas.insert(range_id, r);
        }
        if !batch.is_empty() {
            self.store.engine.write(batch, false)?;
        }

        for (resp, result) in results {
            let _ = resp.send(result);
        }
        for r in self.replicas.values_mut() {
            Self::publish_status(r);
            let applied = r.applied.index;
            let mut i = 0;
            while i < r.reads_ready.len() {
                if r.reads_ready[i].0 <= applied {
                    for resp in r.reads_ready.swap_remove(i).1 {
                        let _ = resp.send(Ok(()));
                    }
                } else {
                    i += 1;
                }
            }
        }
        Ok(())
    }

    fn on_role_change(&mut self, r: &mut Replica, role: StateRole, leader: u64) {
        let was_leader = r.handle.status.lock().role == "leader";
        let is_leader = role == StateRole::Leader;
        if was_leader && !is_leader {
            tracing::info!(range_id = r.handle.range_id, "lost leadership");
            let range_id = r.handle.range_id;
            for (_, resp) in r.proposals.drain() {
                let _ = resp.send(Err(Error::AmbiguousResult(format!(
                    "range {range_id}: leadership changed while the command was in flight"
                ))));
            }
            let err = Error::NotLeader {
                range_id,
                leader_node: None,
            };
            for (_, v) in r.reads_in_flight.drain() {
                for resp in v {
                    let _ = resp.send(Err(err.clone()));
                }
            }
            for (_, v) in r.reads_ready.drain(..) {
                for resp in v {
                    let _ = resp.send(Err(err.clone()));
                }
            }
        }
        if is_leader && !was_leader {
            // raft-rs appended an empty entry for the new term; until it has
            // applied, entries of earlier terms may be unapplied.
            r.term_start_index = r.raw.raft.raft_log.last_index();
            // Reads the previous leader served are below its clock, which is
            // at most max_offset ahead of ours.
            let low_water = self
                .store
                .clock
                .now()
                .add_duration(self.store.clock.max_offset());
            r.handle.tscache.lock().set_low_water(low_water);
            tracing::info!(
                range_id = r.handle.range_id,
                term = r.raw.raft.term,
                "became leader"
            );
        }
        let mut st = r.handle.status.lock();
        st.role = match role {
            StateRole::Leader => "leader",
            StateRole::Candidate => "candidate",
            StateRole::PreCandidate => "pre-candidate",
            StateRole::Follower => "follower",
        }
        .to_string();
        st.leader_replica_id = leader;
    }

    fn publish_status(r: &mut Replica) {
        let mut st = r.handle.status.lock();
        st.term = r.raw.raft.term;
        st.commit_index = r.raw.raft.raft_log.committed;
        st.applied_index = r.applied.index;
        st.leader_replica_id = r.raw.raft.leader_id;
        st.leader_ready =
            r.raw.raft.state == StateRole::Leader && r.applied.index >= r.term_start_index;
    }

    fn apply_entries(
        &self,
        r: &mut Replica,
        entries: Vec<raft::prelude::Entry>,
        batch: &mut WriteBatch,
        results: &mut ApplyResults,
    ) -> Result<(), concord_storage::Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let range_id = r.handle.range_id;
        for entry in entries {
            if entry.index <= r.applied.index {
                continue; // already applied before a restart
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    if !entry.data.is_empty() {
                        match RaftCommand::decode(entry.data.as_ref()) {
                            Ok(cmd) => {
                                let outcome = apply_command(&cmd, batch);
                                if let Some(resp) = r.proposals.remove(&cmd.id) {
                                    results.push((resp, outcome));
                                }
                            }
                            Err(e) => {
                                // Every replica fails the same way: skipping is deterministic.
                                tracing::error!(
                                    range_id,
                                    index = entry.index,
                                    "undecodable command skipped: {e}"
                                );
                            }
                        }
                    }
                }
                EntryType::EntryConfChange => {
                    let mut cc = ConfChange::default();
                    if cc.merge_from_bytes(&entry.data).is_ok() {
                        self.apply_conf_change(r, &cc, batch)?;
                    }
                }
                EntryType::EntryConfChangeV2 => {
                    let mut cc = ConfChangeV2::default();
                    if cc.merge_from_bytes(&entry.data).is_ok() {
                        self.apply_conf_change(r, &cc, batch)?;
                    }
                }
            }
            r.applied = AppliedState {
                index: entry.index,
                term: entry.term,
            };
        }
        save_applied_state(batch, range_id, &r.applied);
        Ok(())
    }

    fn apply_conf_change(
        &self,
        r: &mut Replica,
        cc: &impl raft_proto::ConfChangeI,
        batch: &mut WriteBatch,
    ) -> Result<(), concord_storage::Error> {
        match r.raw.apply_conf_change(cc) {
            Ok(cs) => r.raw.mut_store().set_conf_state(&cs, batch),
            Err(e) => {
                tracing::error!(range_id = r.handle.range_id, "conf change rejected: {e}");
                Ok(())
            }
        }
    }
}

/// Applies one evaluated command: blind writes, deterministic.
fn apply_command(cmd: &RaftCommand, batch: &mut WriteBatch) -> Result<(), Error> {
    use concord_proto::meta::raft_command::Cmd;
    match &cmd.cmd {
        Some(Cmd::WriteBatch(wb)) => {
            for w in &wb.writes {
                let ts = concord_proto::ts(w.ts);
                let value = if w.tombstone {
                    None
                } else {
                    Some(w.value.as_slice())
                };
                concord_storage::mvcc::put_version(batch, &w.key, ts, value);
            }
            Ok(())
        }
        None => Ok(()),
    }
}
