//! The ready loop: the one thread that owns every replica's `raft::RawNode`.
//!
//! All Raft I/O happens here, in the order raft-rs documents for a `Ready`:
//!
//! ```text
//!  loop {
//!    wait for inbox messages (Raft messages, proposals, read requests,
//!        membership changes) or the next tick
//!    step / propose / read_index into the RawNodes; tick if due
//!    for each replica with a Ready:              ── phase 1 ──
//!        send messages (leader: before persisting, Raft thesis 10.2.1)
//!        note role changes and read states
//!        apply a snapshot, or committed entries ─┐
//!        append new entries                     ─┼─► ONE write batch for all replicas
//!        record the hard state                  ─┘
//!    write the batch, fsync once if anything must be durable (group commit)
//!    for each replica:                           ── phase 2 ──
//!        send persisted messages (follower: only after the fsync)
//!        advance → LightReady: send, apply newly committed entries (2nd batch)
//!    write the 2nd batch; create ranges that splits made, destroy replicas
//!        that membership changes removed
//!    truncate logs behind the applied index (3rd batch)
//!    answer proposers whose commands applied; serve reads whose index applied
//!  }
//! ```
//!
//! Applying is deterministic: commands were evaluated by the leader before
//! they were proposed (see [`crate::eval`]), so applying one only writes what
//! it says. The applied index is written in the same batch as the data it
//! applied, so replaying the log after a crash never applies an entry twice.
//!
//! # Leases
//! A leader whose ReadIndex round a quorum answered holds a read lease from
//! when it sent the round for [`crate::StoreConfig::read_lease`] (half an
//! election timeout): reads in it are served at the commit index with no
//! round. With check-quorum, a follower that heard from its leader refuses
//! votes for an election timeout, and ticks never outrun the clock, so no
//! other leader can exist before the lease ends. A restarted node forgot
//! whom it heard from: it refuses votes for an election timeout
//! ([`ReadyLoop::hold_votes_for`]). Role changes, leadership transfers
//! (their target campaigns past the refusal) and membership changes drop
//! the lease. It is measured on the monotonic clock, which runs through a
//! pause of the process.
//!
//! # Commit broadcast
//! A leader does not send an empty append to tell its followers that an
//! entry committed (raft-rs's `skip_bcast_commit`, as TiKV runs it): they
//! learn the commit index from the next append or heartbeat (every
//! `heartbeat_ticks`). A replicated command then costs each follower one
//! message and one wake-up of its loop instead of two. Nothing waits on a
//! follower's apply: proposers are answered by the leader, reads are served
//! by the leader, and a follower read waits for its closed timestamp,
//! which trails by seconds. Two cases broadcast anyway: raft-rs does while
//! a membership change is pending, and a leader that applied a split
//! broadcasts before it campaigns for the right side, so that the
//! followers create that range from the split rather than from its first
//! vote (which may cost a snapshot). Appends to one follower within one
//! `Ready` go out as one message (`batch_append`).
//!
//! # The range lifecycle, as seen from here
//! - *Creation.* A range starts at bootstrap or from a split with its log at
//!   index 5 (see `RaftLogStorage::initialize`) on every replica. A replica
//!   can also be created by the first Raft message addressed to it (a new
//!   member): it is *uninitialized* (no span, no data) until the leader's
//!   snapshot arrives. For its first 3 s it ignores appends, since it is
//!   most likely the right side of a split this node has yet to apply,
//!   which will initialize it without a snapshot.
//! - *Split.* A `SplitCommand` applies on every replica: the range shrinks to
//!   the left side, and the right side is initialized with the same members.
//!   No data moves: both sides share the node's engine.
//! - *Truncation.* Once applied, log entries are deleted behind the applied
//!   index (keeping what active followers still need, up to a bound).
//! - *Snapshots.* A follower that needs a truncated entry gets a snapshot of
//!   the range's span; applying it replaces the span's data and the log.
//! - *Membership.* Configuration changes carry the new descriptor; a replica
//!   removed from the range destroys itself and leaves a tombstone so that
//!   late messages cannot recreate it.
//!
//! A failed engine write is not something the loop can retry: Raft state in
//! memory is then ahead of disk. The store marks itself failed, answers every
//! waiter with the storage error and stops; the node must be restarted, and
//! recovers from what is durable.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use concord_proto::meta::{
    AppliedState, ChangeReplicas, RaftCommand, RangeDescriptor, RangeSnapshot,
};
use concord_storage::raft_log::{
    load_applied_state, load_range_bytes, save_applied_state, save_range_bytes,
};
use concord_storage::{local, RaftLogStorage, WriteBatch};
use parking_lot::{Mutex, RwLock};
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeV2, ConfState, EntryType, Message, MessageType};
use raft::{ProgressState, RawNode, SnapshotStatus, StateRole};

use crate::latch::LatchManager;
use crate::logging::raft_logger;
use crate::store::{LoopMsg, PeerProgress, ReplicaHandle, ReplicaStatus, Responder, StoreInner};
use crate::transport::RaftTransport;
use crate::tscache::TimestampCache;
use crate::Error;

/// How long a snapshot may stay unacknowledged before Raft is told it
/// failed (and sends another).
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(15);

/// A replica as the ready loop holds it.
struct Replica {
    handle: Arc<ReplicaHandle>,
    raw: RawNode<RaftLogStorage>,
    applied: AppliedState,
    /// Proposals (commands and membership changes) awaiting apply, by id.
    proposals: HashMap<Vec<u8>, Responder>,
    /// Read requests that arrived in this loop iteration.
    reads_new: Vec<Responder>,
    /// Read requests sent to Raft, by request context.
    /// Read requests sent to Raft, by request context, with when they
    /// were sent (a quorum's answer starts a lease from then).
    reads_in_flight: HashMap<Vec<u8>, (Instant, Vec<Responder>)>,
    /// Until when this leader may serve reads without asking a quorum.
    lease_until: Option<Instant>,
    /// Read requests whose read index is known, waiting for apply.
    reads_ready: Vec<(u64, Vec<Responder>)>,
    /// Index of the first entry of the current leader term (leaders only).
    term_start_index: u64,
    /// Snapshots sent and not yet acknowledged, by peer.
    snapshots_in_flight: HashMap<u64, Instant>,
    snapshots_applied: u64,
    /// Bytes the range holds (grows with every applied write).
    bytes: u64,
    /// Nodes of peers learned from their messages: how an uninitialized
    /// replica (which has no descriptor yet) answers its leader.
    peers: HashMap<u64, u64>,
    /// When this replica was started here.
    created: Instant,
}

/// What applying an entry asks the loop to do once the batch is written.
enum AfterWrite {
    /// A split of the range with the given id created this range: start
    /// its replica, and campaign at once if this node led the left side
    /// (rather than leave the new range without a leader for an election
    /// timeout). Its leader then tells the followers at once that the split
    /// committed (commits are not broadcast otherwise), so that they create
    /// the right side before its votes and appends reach them.
    CreateRange(RangeDescriptor, bool, u64),
    /// A membership change removed this node's replica of the range.
    Destroy(u64),
    /// A closed timestamp applied (visible to reads once the batch is written).
    Closed(u64, concord_hlc::Timestamp),
}

/// Bytes of committed entries one range hands the loop per Ready (raft-rs
/// `max_committed_size_per_ready`; at least one entry is always handed).
const MAX_APPLY_PER_READY: u64 = 8 << 20;

/// How long an uninitialized replica ignores appends (see
/// `ReadyLoop::awaits_its_split`).
const SPLIT_GRACE: Duration = Duration::from_secs(3);

/// A ready-loop iteration longer than this is logged with its breakdown.
const SLOW_ITERATION: Duration = Duration::from_millis(500);

pub(crate) struct ReadyLoop {
    store: Arc<StoreInner>,
    transport: Arc<dyn RaftTransport>,
    /// Boxed: an iteration moves each replica with a Ready out of the map
    /// and back (the loop's methods need `&mut self` beside it), and a
    /// `Replica` (its `RawNode` above all) is large enough that moving it by
    /// value showed in profiles (memmove, and a large allocation for the
    /// iteration's list).
    replicas: HashMap<u64, Box<Replica>>,
    rx: mpsc::Receiver<LoopMsg>,
    read_seq: u64,
    /// Until when this node refuses to vote (it restarted; see
    /// [`ReadyLoop::hold_votes_for`]).
    votes_held_until: Option<Instant>,
}

/// Results of applying, delivered once the batch that holds them is written.
type ApplyResults = Vec<(Responder, Result<(), Error>)>;

/// The Raft configuration a descriptor describes.
pub(crate) fn conf_state_of(desc: &RangeDescriptor) -> ConfState {
    ConfState {
        voters: desc
            .replicas
            .iter()
            .filter(|r| !r.learner)
            .map(|r| r.replica_id)
            .collect(),
        learners: desc
            .replicas
            .iter()
            .filter(|r| r.learner)
            .map(|r| r.replica_id)
            .collect(),
        ..Default::default()
    }
}

/// What one write adds to a range's byte count: the size of the version in
/// the engine (escaped key and timestamp, tag and value), as a snapshot or a
/// split measures it.
fn write_bytes(key: &[u8], value: &[u8]) -> u64 {
    (concord_storage::keys::escape(key).len() + 12 + 1 + value.len()) as u64
}

fn spans_overlap(a: &RangeDescriptor, b: &RangeDescriptor) -> bool {
    let a_before_b_end = b.end_key.is_empty() || a.start_key < b.end_key;
    let b_before_a_end = a.end_key.is_empty() || b.start_key < a.end_key;
    a_before_b_end && b_before_a_end
}

impl ReadyLoop {
    pub(crate) fn new(
        store: Arc<StoreInner>,
        transport: Arc<dyn RaftTransport>,
        rx: mpsc::Receiver<LoopMsg>,
    ) -> Self {
        ReadyLoop {
            store,
            transport,
            replicas: HashMap::new(),
            rx,
            read_seq: 0,
            votes_held_until: None,
        }
    }

    /// Refuses votes (other than a leader's transfer) for `d` from now.
    ///
    /// Read leases rest on followers refusing to vote for an election
    /// timeout after they last heard from their leader (raft-rs does so
    /// with check-quorum). A restarted node has forgotten whom it heard
    /// from and when, so it holds its votes for that long instead.
    pub(crate) fn hold_votes_for(&mut self, d: Duration) {
        self.votes_held_until = Some(Instant::now() + d);
    }

    /// Starts the replica of an initialized range on this node.
    pub(crate) fn add_replica(&mut self, desc: RangeDescriptor) -> Result<(), Error> {
        let node_id = self.store.node_id.load(Ordering::SeqCst);
        if self
            .replicas
            .get(&desc.range_id)
            .is_some_and(|r| r.handle.status.lock().initialized)
        {
            return Ok(());
        }
        let replica_id = desc
            .replicas
            .iter()
            .find(|r| r.node_id == node_id)
            .map(|r| r.replica_id)
            .ok_or_else(|| {
                Error::Internal(format!(
                    "range {} has no replica on node {node_id}",
                    desc.range_id
                ))
            })?;
        self.start_replica(desc.range_id, replica_id, Some(desc))
    }

    fn start_replica(
        &mut self,
        range_id: u64,
        replica_id: u64,
        desc: Option<RangeDescriptor>,
    ) -> Result<(), Error> {
        let node_id = self.store.node_id.load(Ordering::SeqCst);
        let engine = self.store.engine.clone();
        let mut storage = RaftLogStorage::open(engine.clone(), range_id)?;
        let applied = load_applied_state(engine.as_ref(), range_id)?;
        let bytes = load_range_bytes(engine.as_ref(), range_id)?;
        storage.set_durable_applied(applied);
        let initialized = desc.is_some();
        let desc = desc.unwrap_or(RangeDescriptor {
            range_id,
            ..Default::default()
        });
        if initialized {
            storage.set_descriptor(desc.clone());
        }
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
            // One iteration of the loop serves every range of the node: a
            // range applying a bulk load's cleanup (tens of MiB committed at
            // once) would otherwise hold everyone else's commits for
            // seconds. The rest applies in the next iterations.
            max_committed_size_per_ready: MAX_APPLY_PER_READY,
            // Followers learn a new commit index from the next append or
            // heartbeat instead of an empty append of its own (see the
            // module doc, "Commit broadcast").
            skip_bcast_commit: true,
            batch_append: true,
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
            locks: Mutex::default(),
            closed_ts: Mutex::new(concord_hlc::Timestamp::ZERO),
            records_changed: tokio::sync::Notify::new(),
            origins: Mutex::new(crate::origins::RequestOrigins::new(
                std::time::Instant::now(),
            )),
            status: Mutex::new(ReplicaStatus {
                role: "follower".into(),
                applied_index: applied.index,
                initialized,
                ..Default::default()
            }),
        });
        self.store.replicas.write().insert(range_id, handle.clone());
        if let Some(old) = self.replicas.insert(
            range_id,
            Box::new(Replica {
                handle,
                raw,
                applied,
                proposals: HashMap::new(),
                reads_new: Vec::new(),
                reads_in_flight: HashMap::new(),
                lease_until: None,
                reads_ready: Vec::new(),
                term_start_index: 0,
                snapshots_in_flight: HashMap::new(),
                snapshots_applied: 0,
                bytes,
                peers: HashMap::new(),
                created: Instant::now(),
            }),
        ) {
            Self::fail_replica(*old, || Error::RangeNotFound(range_id));
        }
        tracing::info!(range_id, replica_id, initialized, "replica started");
        Ok(())
    }

    /// Removes a replica from this node: its data, its Raft state and its
    /// descriptor go; a tombstone stays.
    fn destroy_replica(&mut self, range_id: u64) -> Result<(), concord_storage::Error> {
        let Some(r) = self.replicas.remove(&range_id) else {
            return Ok(());
        };
        self.store.replicas.write().remove(&range_id);
        let mut batch = WriteBatch::new();
        if r.handle.status.lock().initialized {
            concord_storage::snapshot::clear_range_data(&mut batch, &r.handle.desc.read());
        }
        RaftLogStorage::destroy(&mut batch, range_id);
        local::delete_range(&mut batch, range_id);
        local::save_tombstone(&mut batch, range_id, r.handle.replica_id + 1);
        self.store.engine.write(batch, true)?;
        tracing::info!(
            range_id,
            replica_id = r.handle.replica_id,
            "replica removed from this node"
        );
        Self::fail_replica(*r, || Error::RangeNotFound(range_id));
        Ok(())
    }

    pub(crate) fn run(mut self) {
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
            let inbox_started = Instant::now();
            let mut stop = false;
            let mut handled = 0;
            for _ in 0..4096 {
                match self.rx.try_recv() {
                    Ok(LoopMsg::Stop) => {
                        stop = true;
                        break;
                    }
                    Ok(msg) => {
                        handled += 1;
                        self.handle_msg(msg)
                    }
                    Err(_) => break,
                }
            }
            if stop {
                break;
            }
            let took = inbox_started.elapsed();
            if took > SLOW_ITERATION {
                tracing::warn!(
                    messages = handled,
                    took_ms = took.as_millis() as u64,
                    "slow ready loop inbox"
                );
            }
            self.start_reads();
            if Instant::now() >= next_tick {
                for r in self.replicas.values_mut() {
                    r.raw.tick();
                    Self::check_snapshots(r);
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

    fn fail_replica(mut r: Replica, err: impl Fn() -> Error) {
        // A proposed command may still commit through the other replicas:
        // its proposer cannot be told it failed.
        let range_id = r.handle.range_id;
        for (_, resp) in r.proposals.drain() {
            let _ = resp.send(Err(Error::AmbiguousResult(format!(
                "range {range_id}: the command was proposed, then this replica stopped ({})",
                err()
            ))));
        }
        for resp in r.reads_new.drain(..) {
            let _ = resp.send(Err(err()));
        }
        for (_, (_, v)) in r.reads_in_flight.drain() {
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

    fn fail_all(&mut self, err: impl Fn() -> Error) {
        for (_, r) in self.replicas.drain() {
            Self::fail_replica(*r, &err);
        }
        // Drain the inbox so nobody waits on a dead loop.
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                LoopMsg::Propose { resp, .. }
                | LoopMsg::ReadIndex { resp, .. }
                | LoopMsg::AddReplica { resp, .. }
                | LoopMsg::ChangeReplicas { resp, .. }
                | LoopMsg::DestroyReplica { resp, .. } => {
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

    /// Whether a Raft message may create or address a local replica.
    fn accept_message(
        &mut self,
        range_id: u64,
        msg: &Message,
    ) -> Result<bool, concord_storage::Error> {
        if msg.to == 0 {
            return Ok(false);
        }
        if let Some(r) = self.replicas.get(&range_id) {
            if msg.to == r.handle.replica_id {
                return Ok(true);
            }
            if msg.to < r.handle.replica_id {
                return Ok(false); // to an older incarnation: stale
            }
            // A newer replica id for this node: the local replica was removed
            // while this node was away and has been added back since.
            tracing::info!(
                range_id,
                old = r.handle.replica_id,
                new = msg.to,
                "replacing a stale replica"
            );
            self.destroy_replica(range_id)?;
        }
        if let Some(t) = local::load_tombstone(self.store.engine.as_ref(), range_id)? {
            if msg.to < t.next_replica_id {
                return Ok(false);
            }
        }
        if self.store.node_id.load(Ordering::SeqCst) == 0 {
            return Ok(false);
        }
        if let Err(e) = self.start_replica(range_id, msg.to, None) {
            tracing::warn!(
                range_id,
                "cannot create a replica for an incoming message: {e}"
            );
            return Ok(false);
        }
        Ok(true)
    }

    /// An uninitialized replica started less than [`SPLIT_GRACE`] ago
    /// ignores appends: it is most likely the right side of a split that
    /// this node has not applied yet, created by the new side's first vote
    /// request. Answered, an append gets a rejection (its log is empty),
    /// the leader falls back to a snapshot of the whole new range (2.1M
    /// keys, 145 MB, under pgbench's load), and applying that held the
    /// node's ready loop for 4.7 s, long enough to lose leaderships and
    /// make commits ambiguous. Ignored, the leader probes again after the
    /// next heartbeat, and by then the split has applied here and the
    /// append fits. A replica that really is new (a learner being added)
    /// gets its snapshot after the grace.
    fn awaits_its_split(&self, range_id: u64) -> bool {
        self.replicas.get(&range_id).is_some_and(|r| {
            r.created.elapsed() < SPLIT_GRACE && !r.handle.status.lock().initialized
        })
    }

    /// A snapshot may be applied only if its span overlaps no other local
    /// replica's (a stale replica there must be removed first).
    fn snapshot_fits(&self, range_id: u64, msg: &Message) -> bool {
        let Ok(snap) = RangeSnapshot::decode(msg.get_snapshot().get_data()) else {
            return false;
        };
        let Some(desc) = snap.descriptor else {
            return false;
        };
        for (id, r) in &self.replicas {
            if *id != range_id
                && r.handle.status.lock().initialized
                && spans_overlap(&r.handle.desc.read(), &desc)
            {
                tracing::info!(
                    range_id,
                    overlapping = id,
                    "snapshot refused: it overlaps another replica"
                );
                return false;
            }
        }
        true
    }

    fn handle_msg(&mut self, msg: LoopMsg) {
        match msg {
            LoopMsg::Raft {
                range_id,
                msg,
                from_node,
            } => {
                match self.accept_message(range_id, &msg) {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        tracing::error!(range_id, "storage failure while creating a replica: {e}");
                        return;
                    }
                }
                if msg.get_msg_type() == MessageType::MsgSnapshot
                    && !self.snapshot_fits(range_id, &msg)
                {
                    return;
                }
                if msg.get_msg_type() == MessageType::MsgAppend && self.awaits_its_split(range_id) {
                    return;
                }
                if self.refuses_vote(&msg) {
                    return;
                }
                let r = self.replicas.get_mut(&range_id).expect("accepted above");
                if from_node != 0 {
                    r.peers.insert(msg.from, from_node);
                }
                let mut msg = msg;
                if msg.get_msg_type() == MessageType::MsgHeartbeat {
                    // A leader never sends a commit index above what it saw
                    // this replica acknowledge; if it does, this replica lost
                    // state it had (or the leader confused incarnations).
                    // raft-rs treats that as fatal; clamp it instead and let
                    // the log (or a snapshot) bring the replica forward.
                    let last = r.raw.raft.raft_log.last_index();
                    if msg.commit > last {
                        tracing::warn!(
                            range_id,
                            commit = msg.commit,
                            last,
                            "heartbeat commit above the local log; clamped"
                        );
                        msg.commit = last;
                    }
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
            LoopMsg::ChangeReplicas {
                range_id,
                id,
                cc,
                desc,
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
                if r.raw.raft.has_pending_conf() {
                    // raft-rs would turn the change into an empty entry and
                    // report success, leaving the proposer to time out.
                    let _ = resp.send(Err(Error::BadRequest(
                        "membership change refused: another one has yet to apply".into(),
                    )));
                    return;
                }
                let ctx = ChangeReplicas {
                    id: id.clone(),
                    descriptor: Some(desc),
                };
                match r.raw.propose_conf_change(ctx.encode_to_vec(), cc) {
                    Ok(()) => {
                        r.proposals.insert(id, resp);
                    }
                    Err(e) => {
                        let _ = resp.send(Err(Error::BadRequest(format!(
                            "membership change refused: {e}"
                        ))));
                    }
                }
            }
            LoopMsg::TransferLeader {
                range_id,
                to_replica,
            } => {
                if let Some(r) = self.replicas.get_mut(&range_id) {
                    if r.raw.raft.state == StateRole::Leader {
                        // The target campaigns at once, past its voters'
                        // refusal to vote: no lease from here on.
                        r.lease_until = None;
                        r.raw.transfer_leader(to_replica);
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
            LoopMsg::DestroyReplica { range_id, resp } => {
                let _ = resp.send(self.destroy_replica(range_id).map_err(Error::Storage));
            }
            LoopMsg::Freeze(d) => std::thread::sleep(d),
            LoopMsg::Stop => {}
        }
    }

    /// Whether `msg` is a vote request this node must not answer yet (see
    /// [`ReadyLoop::hold_votes_for`]).
    fn refuses_vote(&mut self, msg: &Message) -> bool {
        let Some(until) = self.votes_held_until else {
            return false;
        };
        if Instant::now() >= until {
            self.votes_held_until = None;
            return false;
        }
        matches!(
            msg.get_msg_type(),
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        ) && msg.context[..] != raft::CAMPAIGN_TRANSFER[..]
    }

    /// Tells Raft about snapshots that were never acknowledged, so that it
    /// sends another instead of waiting forever.
    fn check_snapshots(r: &mut Replica) {
        if r.snapshots_in_flight.is_empty() {
            return;
        }
        let mut done = Vec::new();
        for (&peer, sent) in &r.snapshots_in_flight {
            let state = r.raw.raft.prs().get(peer).map(|p| p.state);
            if state != Some(ProgressState::Snapshot) {
                done.push((peer, None));
            } else if sent.elapsed() > SNAPSHOT_TIMEOUT {
                done.push((peer, Some(SnapshotStatus::Failure)));
            }
        }
        for (peer, report) in done {
            r.snapshots_in_flight.remove(&peer);
            if let Some(status) = report {
                tracing::info!(
                    range_id = r.handle.range_id,
                    peer,
                    "snapshot not acknowledged in time; retrying"
                );
                r.raw.report_snapshot(peer, status);
            }
        }
    }

    /// Issues one ReadIndex request per replica for all reads waiting to
    /// start (those that arrived in this iteration, and those held back
    /// until a new leader's first commit): they share one heartbeat round.
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
            if !r.raw.raft.commit_to_current_term() {
                // raft-rs drops a ReadIndex silently until the leader has
                // committed an entry of its term (the empty one it appends
                // on election): started now, these reads would wait out
                // the Raft timeout. They stay queued for a later iteration.
                continue;
            }
            let now = Instant::now();
            if r.lease_until.is_some_and(|until| now < until)
                && r.raw.raft.lead_transferee.is_none()
            {
                // Under a lease no other leader can exist: everything
                // committed is known here.
                let index = r.raw.raft.raft_log.committed;
                let waiters = std::mem::take(&mut r.reads_new);
                self.store
                    .lease_reads
                    .fetch_add(waiters.len() as u64, Ordering::Relaxed);
                if r.applied.index >= index {
                    for resp in waiters {
                        let _ = resp.send(Ok(()));
                    }
                } else {
                    r.reads_ready.push((index, waiters));
                }
                continue;
            }
            self.read_seq += 1;
            let ctx = self.read_seq.to_be_bytes().to_vec();
            r.raw.read_index(ctx.clone());
            r.reads_in_flight
                .insert(ctx, (now, std::mem::take(&mut r.reads_new)));
        }
    }

    fn send_messages(&self, r: &mut Replica, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        let desc = r.handle.desc.read().clone();
        for msg in msgs {
            if msg.get_msg_type() == MessageType::MsgSnapshot {
                r.snapshots_in_flight.insert(msg.to, Instant::now());
            }
            let node = desc
                .replicas
                .iter()
                .find(|rep| rep.replica_id == msg.to)
                .map(|rep| rep.node_id)
                .or_else(|| r.peers.get(&msg.to).copied());
            match node {
                Some(node) => self.transport.send(node, r.handle.range_id, msg),
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
        self.store.loop_busy.store(true, Ordering::Relaxed);
        let result = self.handle_readies_of(range_ids);
        self.store.loop_busy.store(false, Ordering::Relaxed);
        result
    }

    fn handle_readies_of(&mut self, range_ids: Vec<u64>) -> Result<(), concord_storage::Error> {
        let started = Instant::now();
        let mut batch = WriteBatch::new();
        let mut sync = false;
        let mut results: ApplyResults = Vec::new();
        let mut after: Vec<AfterWrite> = Vec::new();
        let mut readies = Vec::with_capacity(range_ids.len());
        let n_ranges = range_ids.len();

        // Phase 1: messages, role changes, snapshot or apply, append, hard state.
        for range_id in range_ids {
            let mut r = self.replicas.remove(&range_id).expect("listed above");
            let mut rd = r.raw.ready();
            let msgs = rd.take_messages();
            self.send_messages(&mut r, msgs);
            if let Some(ss) = rd.ss() {
                let (role, leader) = (ss.raft_state, ss.leader_id);
                self.on_role_change(&mut r, role, leader);
            }
            for rs in rd.take_read_states() {
                if let Some((sent, waiters)) = r.reads_in_flight.remove(&rs.request_ctx) {
                    // A quorum heard from this leader after `sent`: none of
                    // them votes for another until an election timeout
                    // after that.
                    if let Some(lease) = self.store.config.read_lease() {
                        let until = sent + lease;
                        r.lease_until = Some(r.lease_until.map_or(until, |u| u.max(until)));
                    }
                    r.reads_ready.push((rs.index, waiters));
                }
            }
            if !rd.snapshot().is_empty() {
                self.apply_snapshot(&mut r, rd.snapshot(), &mut batch)?;
            }
            let committed = rd.take_committed_entries();
            self.apply_entries(&mut r, committed, &mut batch, &mut results, &mut after)?;
            if !rd.entries().is_empty() {
                r.raw.mut_store().append(rd.entries(), &mut batch)?;
            }
            if let Some(hs) = rd.hs() {
                r.raw.mut_store().set_hard_state(hs, &mut batch)?;
            }
            sync |= rd.must_sync();
            readies.push((range_id, r, rd));
        }
        let phase1 = started.elapsed();
        let batch_bytes = batch.size();
        if !batch.is_empty() {
            self.store.engine.write(batch, sync)?;
        }
        let written = started.elapsed();

        // Phase 2: persisted messages, advance, newly committed entries.
        let mut batch = WriteBatch::new();
        let mut touched = Vec::with_capacity(readies.len());
        for (range_id, mut r, mut rd) in readies {
            let applied_before = r.applied;
            r.raw.mut_store().set_durable_applied(applied_before);
            let msgs = rd.take_persisted_messages();
            self.send_messages(&mut r, msgs);
            let mut light = r.raw.advance(rd);
            if let Some(commit) = light.commit_index() {
                let mut hs = r.raw.store().hard_state().clone();
                hs.commit = commit;
                r.raw.mut_store().set_hard_state(&hs, &mut batch)?;
            }
            let msgs = light.take_messages();
            self.send_messages(&mut r, msgs);
            let committed = light.take_committed_entries();
            self.apply_entries(&mut r, committed, &mut batch, &mut results, &mut after)?;
            r.raw.advance_apply();
            self.replicas.insert(range_id, r);
            touched.push(range_id);
        }
        if !batch.is_empty() {
            self.store.engine.write(batch, false)?;
        }
        for id in &touched {
            if let Some(r) = self.replicas.get_mut(id) {
                let applied = r.applied;
                r.raw.mut_store().set_durable_applied(applied);
            }
        }
        for a in after {
            match a {
                AfterWrite::CreateRange(desc, campaign, left_id) => {
                    let range_id = desc.range_id;
                    if campaign {
                        if let Some(left) = self.replicas.get_mut(&left_id) {
                            left.raw.raft.bcast_append();
                        }
                    }
                    if let Err(e) = self.add_replica(desc) {
                        tracing::error!(range_id, "cannot start the right side of a split: {e}");
                    } else if campaign {
                        if let Some(right) = self.replicas.get_mut(&range_id) {
                            if let Err(e) = right.raw.campaign() {
                                tracing::debug!(range_id, "campaign after a split: {e}");
                            }
                        }
                    }
                }
                AfterWrite::Destroy(range_id) => self.destroy_replica(range_id)?,
                AfterWrite::Closed(range_id, ts) => {
                    if let Some(h) = self.store.replicas.read().get(&range_id) {
                        let mut closed = h.closed_ts.lock();
                        *closed = (*closed).max(ts);
                    }
                }
            }
        }
        self.truncate_logs(&touched)?;
        // One iteration serves every range of the node: while it runs, no
        // range sends heartbeats, and past an election timeout leaders step
        // down (check quorum). Say where a slow one spent its time.
        let took = started.elapsed();
        // Over SLOW_ITERATION a warning; over SLOW_STEP a line for
        // `concord::slow` (see the crate's doc), with the same fields.
        macro_rules! slow_iteration {
            ($($level:tt)+) => {
                tracing::event!(
                    $($level)+,
                    ranges = n_ranges,
                    batch_bytes,
                    sync,
                    phase1_ms = phase1.as_millis() as u64,
                    write_ms = (written - phase1).as_millis() as u64,
                    rest_ms = (took - written).as_millis() as u64,
                    "slow ready loop iteration"
                )
            };
        }
        if took > SLOW_ITERATION {
            slow_iteration!(tracing::Level::WARN);
        } else if took > crate::SLOW_STEP {
            slow_iteration!(target: "concord::slow", tracing::Level::DEBUG);
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

    /// Deletes applied log entries behind a bound: a follower truncates to
    /// its applied index; a leader keeps what active followers still need,
    /// but never more than 8 × the threshold (laggards get a snapshot).
    fn truncate_logs(&mut self, range_ids: &[u64]) -> Result<(), concord_storage::Error> {
        let threshold = self.store.config.log_truncation_threshold.max(1);
        let mut batch = WriteBatch::new();
        for id in range_ids {
            let Some(r) = self.replicas.get_mut(id) else {
                continue;
            };
            let first = r.raw.store().first_index_value();
            let applied = r.applied.index;
            if applied < first || applied - first < threshold {
                continue;
            }
            let mut target = applied;
            if r.raw.raft.state == StateRole::Leader {
                let me = r.handle.replica_id;
                for (peer, p) in r.raw.raft.prs().iter() {
                    if *peer != me && p.recent_active && p.matched < target {
                        target = p.matched;
                    }
                }
                target = target.max(applied.saturating_sub(8 * threshold));
            }
            // Truncate in steps of half the threshold to batch the deletes.
            if target < first || target - first + 1 < threshold / 2 {
                continue;
            }
            r.raw.mut_store().truncate(target, &mut batch)?;
        }
        if !batch.is_empty() {
            self.store.engine.write(batch, false)?;
        }
        Ok(())
    }

    fn apply_snapshot(
        &self,
        r: &mut Replica,
        snap: &raft::prelude::Snapshot,
        batch: &mut WriteBatch,
    ) -> Result<(), concord_storage::Error> {
        let range_id = r.handle.range_id;
        let data = RangeSnapshot::decode(snap.get_data()).map_err(|e| {
            concord_storage::Error::Corruption(format!("range {range_id}: snapshot: {e}"))
        })?;
        let desc = data.descriptor.clone().unwrap_or_default();
        let meta = snap.get_metadata();
        concord_storage::snapshot::apply(batch, &data);
        r.raw.mut_store().apply_snapshot(meta, batch)?;
        r.raw.mut_store().set_descriptor(desc.clone());
        r.applied = AppliedState {
            index: meta.index,
            term: meta.term,
        };
        save_applied_state(batch, range_id, &r.applied);
        r.bytes = data
            .kvs
            .iter()
            .map(|kv| (kv.key.len() + kv.value.len()) as u64)
            .sum();
        save_range_bytes(batch, range_id, r.bytes);
        *r.handle.desc.write() = desc;
        r.handle.status.lock().initialized = true;
        r.snapshots_applied += 1;
        tracing::info!(
            range_id,
            index = meta.index,
            keys = data.kvs.len(),
            "applied a range snapshot"
        );
        Ok(())
    }

    fn on_role_change(&mut self, r: &mut Replica, role: StateRole, leader: u64) {
        let was_leader = r.handle.status.lock().role == "leader";
        let is_leader = role == StateRole::Leader;
        if was_leader != is_leader {
            // Unreplicated locks and leases live and die with a leadership
            // term.
            r.handle.locks.lock().clear();
            r.lease_until = None;
        }
        if was_leader && !is_leader {
            tracing::info!(range_id = r.handle.range_id, "lost leadership");
            // Before answering the proposals below: their proposers release
            // latches that readers wait for, and those readers must then
            // find this replica no longer ready to evaluate.
            r.handle.status.lock().leader_ready = false;
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
            for (_, (_, v)) in r.reads_in_flight.drain() {
                for resp in v {
                    let _ = resp.send(Err(err.clone()));
                }
            }
            for (_, v) in r.reads_ready.drain(..) {
                for resp in v {
                    let _ = resp.send(Err(err.clone()));
                }
            }
            r.snapshots_in_flight.clear();
            r.handle.status.lock().led_since = None;
        }
        if is_leader && !was_leader {
            // Where the range's requests come from is counted afresh: a
            // follower also gets (and bounces) requests, and the placement
            // rules read these counts as the leader's.
            let now = Instant::now();
            r.handle.status.lock().led_since = Some(now);
            *r.handle.origins.lock() = crate::origins::RequestOrigins::new(now);
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
        let is_leader = r.raw.raft.state == StateRole::Leader;
        let progress = if is_leader {
            let learners: Vec<u64> = r.raw.raft.prs().conf().learners().iter().copied().collect();
            r.raw
                .raft
                .prs()
                .iter()
                .map(|(id, p)| PeerProgress {
                    replica_id: *id,
                    matched: p.matched,
                    recent_active: p.recent_active,
                    learner: learners.contains(id),
                })
                .collect()
        } else {
            Vec::new()
        };
        let store = r.raw.store();
        let log_entries = (store.last_index_value() + 1).saturating_sub(store.first_index_value());
        let snapshots_sent = store.snapshots_sent().load(Ordering::Relaxed);
        let mut st = r.handle.status.lock();
        st.term = r.raw.raft.term;
        st.commit_index = r.raw.raft.raft_log.committed;
        st.applied_index = r.applied.index;
        st.leader_replica_id = r.raw.raft.leader_id;
        st.leader_ready = is_leader && st.initialized && r.applied.index >= r.term_start_index;
        st.log_entries = log_entries;
        st.snapshots_sent = snapshots_sent;
        st.snapshots_applied = r.snapshots_applied;
        st.bytes = r.bytes;
        st.progress = progress;
    }

    fn apply_entries(
        &self,
        r: &mut Replica,
        entries: Vec<raft::prelude::Entry>,
        batch: &mut WriteBatch,
        results: &mut ApplyResults,
        after: &mut Vec<AfterWrite>,
    ) -> Result<(), concord_storage::Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let range_id = r.handle.range_id;
        for entry in entries {
            if entry.index <= r.applied.index {
                continue; // already applied before a restart or in a snapshot
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal if !entry.data.is_empty() => {
                    match RaftCommand::decode(entry.data.as_ref()) {
                        Ok(cmd) => {
                            let outcome = self.apply_command(r, &cmd, batch, after);
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
                EntryType::EntryNormal => {}
                EntryType::EntryConfChange => {
                    // Concord proposes only V2 changes; a V1 entry (none are
                    // written) is applied for completeness.
                    let mut cc = ConfChange::default();
                    if cc.merge_from_bytes(&entry.data).is_ok() {
                        if let Ok(cs) = r.raw.apply_conf_change(&cc) {
                            r.raw.mut_store().set_conf_state(&cs, batch)?;
                        }
                    }
                }
                EntryType::EntryConfChangeV2 => {
                    // New voters never promised anything: renew the lease
                    // from a quorum of the new configuration.
                    r.lease_until = None;
                    let mut cc = ConfChangeV2::default();
                    if cc.merge_from_bytes(&entry.data).is_ok() {
                        let outcome =
                            self.apply_conf_change(r, &cc, &entry.context, batch, after)?;
                        if let Ok(ctx) = ChangeReplicas::decode(entry.context.as_ref()) {
                            if let Some(resp) = r.proposals.remove(&ctx.id) {
                                results.push((resp, outcome));
                            }
                        }
                    }
                }
            }
            r.applied = AppliedState {
                index: entry.index,
                term: entry.term,
            };
        }
        save_applied_state(batch, range_id, &r.applied);
        save_range_bytes(batch, range_id, r.bytes);
        Ok(())
    }

    fn apply_conf_change(
        &self,
        r: &mut Replica,
        cc: &ConfChangeV2,
        context: &[u8],
        batch: &mut WriteBatch,
        after: &mut Vec<AfterWrite>,
    ) -> Result<Result<(), Error>, concord_storage::Error> {
        let range_id = r.handle.range_id;
        let cs = match r.raw.apply_conf_change(cc) {
            Ok(cs) => cs,
            Err(e) => {
                tracing::error!(range_id, "membership change rejected by raft: {e}");
                return Ok(Err(Error::BadRequest(format!(
                    "membership change rejected: {e}"
                ))));
            }
        };
        r.raw.mut_store().set_conf_state(&cs, batch)?;
        if let Some(proposed) = ChangeReplicas::decode(context)
            .ok()
            .and_then(|c| c.descriptor)
        {
            // The membership comes from the proposal; the span from the
            // replica, which may have split since the change was proposed.
            let current = r.handle.desc.read().clone();
            let desc = RangeDescriptor {
                range_id: current.range_id,
                start_key: current.start_key.clone(),
                end_key: current.end_key.clone(),
                replicas: proposed.replicas,
                next_replica_id: proposed.next_replica_id.max(current.next_replica_id),
                generation: proposed.generation.max(current.generation + 1),
            };
            local::save_range(batch, &desc);
            r.raw.mut_store().set_descriptor(desc.clone());
            let me = r.handle.replica_id;
            let still_member = desc.replicas.iter().any(|x| x.replica_id == me);
            *r.handle.desc.write() = desc;
            if !still_member {
                after.push(AfterWrite::Destroy(range_id));
            }
        }
        tracing::info!(range_id, voters = ?cs.voters, learners = ?cs.learners, "membership changed");
        Ok(Ok(()))
    }

    /// Applies one evaluated command, deterministically on every replica.
    fn apply_command(
        &self,
        r: &mut Replica,
        cmd: &RaftCommand,
        batch: &mut WriteBatch,
        after: &mut Vec<AfterWrite>,
    ) -> Result<(), Error> {
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
                    r.bytes += write_bytes(&w.key, &w.value);
                }
                Ok(())
            }
            Some(Cmd::CloseTs(c)) => {
                let ts = concord_proto::ts(c.ts);
                after.push(AfterWrite::Closed(r.handle.range_id, ts));
                Ok(())
            }
            Some(Cmd::Raw(raw)) => {
                r.bytes += crate::txn_eval::apply_raw(raw, batch);
                r.bytes = r.bytes.saturating_sub(raw.bytes_removed);
                Ok(())
            }
            Some(Cmd::Split(split)) => {
                let (Some(left), Some(right)) = (split.left.clone(), split.right.clone()) else {
                    return Err(Error::BadRequest("split without descriptors".into()));
                };
                let range_id = r.handle.range_id;
                local::save_range(batch, &left);
                r.raw.mut_store().set_descriptor(left.clone());
                r.handle.locks.lock().truncate_from(&left.end_key);
                *r.handle.desc.write() = left;
                r.bytes = r.bytes.saturating_sub(split.right_bytes);
                // The right side: unless a snapshot already created it here
                // (this replica applied the split late), initialize it.
                // (Look in the store's map: replicas being processed in this
                // iteration are out of the loop's own map.)
                let existing = self.store.replicas.read().get(&right.range_id).cloned();
                if existing.is_none_or(|x| !x.status.lock().initialized) {
                    // An empty replica created by the new range's messages
                    // keeps its hard state (its vote): initialize writes none.
                    RaftLogStorage::initialize(batch, right.range_id, &conf_state_of(&right))
                        .map_err(Error::Storage)?;
                    local::save_range(batch, &right);
                    save_range_bytes(batch, right.range_id, split.right_bytes);
                    // The right side inherits the GC threshold (its old
                    // versions were collected with the left's).
                    let gc = local::load_gc_threshold(self.store.engine.as_ref(), range_id)
                        .map_err(Error::Storage)?;
                    if !gc.is_zero() {
                        local::save_gc_threshold(batch, right.range_id, gc);
                    }
                    let led_left = r.raw.raft.state == StateRole::Leader;
                    after.push(AfterWrite::CreateRange(right.clone(), led_left, range_id));
                }
                tracing::info!(range_id, right = right.range_id, "range split");
                Ok(())
            }
            None => Ok(()),
        }
    }
}
