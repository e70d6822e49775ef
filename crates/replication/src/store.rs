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
use concord_proto::meta::{NodeDescriptor, RaftCommand, RangeDescriptor, StoreIdent};
use concord_storage::{local, Engine, RaftLogStorage, WriteBatch};
use parking_lot::{Mutex, RwLock};
use prost::Message as _;
use raft::prelude::{ConfChangeV2, Message};
use tokio::sync::oneshot;

use crate::latch::LatchManager;
use crate::ready_loop::ReadyLoop;
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
    /// Applied Raft log entries a range keeps before truncating its log.
    /// Followers that fall further behind catch up from a snapshot.
    pub log_truncation_threshold: u64,
    /// A pending transaction record not heartbeated for this long may be
    /// aborted by any transaction that meets one of its intents.
    pub txn_expiry: Duration,
    /// Serve reads on a leader from a lease instead of a ReadIndex round
    /// while it holds one (see the ready loop's "Leases"). Off, every read
    /// pays a heartbeat round to a quorum.
    pub read_leases: bool,
}

impl StoreConfig {
    /// The least time a follower that heard from its leader refuses to
    /// vote for anyone else: the minimum election timeout.
    pub fn election_timeout(&self) -> Duration {
        self.tick_interval * self.election_ticks as u32
    }

    /// How long a leader may serve reads without asking a quorum, counted
    /// from when it sent a heartbeat that a quorum acknowledged: half the
    /// election timeout, the other half a margin for clock rate
    /// differences and scheduling.
    pub fn read_lease(&self) -> Option<Duration> {
        self.read_leases.then(|| self.election_timeout() / 2)
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            tick_interval: Duration::from_millis(100),
            // 2-4 s, and a leader steps down after 2 s without a quorum.
            // At 1-2 s, a bulk load on a shared disk made fsyncs of all
            // nodes take ~1 s at once (see the ready loop's slow-iteration
            // warning), and every leader stepped down mid-statement.
            election_ticks: 20,
            heartbeat_ticks: 2,
            raft_timeout: Duration::from_secs(4),
            tscache_entries: 100_000,
            log_truncation_threshold: 1000,
            txn_expiry: Duration::from_secs(5),
            read_leases: true,
        }
    }
}

/// A replica's Raft role as seen from outside the loop.
#[derive(Clone, Debug, Default)]
pub struct ReplicaStatus {
    pub role: String,
    /// Since when this replica leads (None while it does not).
    pub led_since: Option<Instant>,
    pub leader_replica_id: u64,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    /// Leader, and every entry of earlier terms applied: may evaluate requests.
    pub leader_ready: bool,
    /// Holds the range's data (false for a replica created by a message and
    /// waiting for its first snapshot).
    pub initialized: bool,
    /// Entries in the Raft log (between the truncation point and the end).
    pub log_entries: u64,
    /// Snapshots this replica generated for followers.
    pub snapshots_sent: u64,
    /// Snapshots this replica applied.
    pub snapshots_applied: u64,
    /// Bytes the range holds, as counted when writes apply.
    pub bytes: u64,
    /// The leader's view of each peer.
    pub progress: Vec<PeerProgress>,
}

/// A leader's view of one peer.
#[derive(Clone, Debug, Default)]
pub struct PeerProgress {
    pub replica_id: u64,
    pub matched: u64,
    pub recent_active: bool,
    pub learner: bool,
}

/// The part of a replica shared between the ready loop and request evaluation.
pub struct ReplicaHandle {
    pub range_id: u64,
    pub replica_id: u64,
    pub desc: RwLock<RangeDescriptor>,
    pub latches: LatchManager,
    pub tscache: Mutex<TimestampCache>,
    /// Unreplicated locks held while this replica leads (see
    /// [`crate::locktable`]).
    pub locks: Mutex<crate::locktable::LockTable>,
    pub status: Mutex<ReplicaStatus>,
    /// The highest closed timestamp this replica has applied: no write at
    /// or below it can still apply here, so reads there need no leader.
    pub closed_ts: Mutex<concord_hlc::Timestamp>,
    /// Woken whenever a transaction record on this range is finished or
    /// forgotten, for pushers waiting at a pending record.
    pub records_changed: tokio::sync::Notify,
    /// Which nodes sent this replica its recent batches (see
    /// [`crate::origins`]).
    pub origins: Mutex<crate::origins::RequestOrigins>,
}

impl ReplicaHandle {
    /// Fails with `NotLeader` unless this replica leads its range and has
    /// applied every entry of earlier terms (so it may evaluate requests).
    pub fn ensure_leader(&self) -> Result<(), Error> {
        if self.status.lock().leader_ready {
            Ok(())
        } else {
            Err(Error::NotLeader {
                range_id: self.range_id,
                leader_node: self.leader_node(),
            })
        }
    }

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

pub(crate) type Responder = oneshot::Sender<Result<(), Error>>;

/// Messages to the ready loop.
pub(crate) enum LoopMsg {
    Raft {
        range_id: u64,
        msg: Message,
        /// The node that sent it.
        from_node: u64,
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
    ChangeReplicas {
        range_id: u64,
        id: Vec<u8>,
        cc: ConfChangeV2,
        desc: RangeDescriptor,
        resp: Responder,
    },
    TransferLeader {
        range_id: u64,
        to_replica: u64,
    },
    DestroyReplica {
        range_id: u64,
        resp: Responder,
    },
    /// Freeze the loop thread (fault injection: a stop-the-world pause).
    Freeze(Duration),
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
    pub(crate) tx: mpsc::Sender<LoopMsg>,
    pub(crate) stopped: AtomicBool,
    /// The ready loop's thread, until [`Store::wait_stopped`] joins it.
    ready_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Reads served by a follower below its closed timestamp.
    pub(crate) follower_reads: AtomicU64,
    /// Locks taken in a leader's memory rather than through Raft.
    pub(crate) locks_in_memory: AtomicU64,
    /// Reads a leader here served from its lease, without a quorum round.
    pub(crate) lease_reads: AtomicU64,
    /// The disk is nearly full: new commands are refused (see
    /// [`Store::set_disk_full`]).
    pub(crate) disk_full: AtomicBool,
    /// The ready loop is inside an iteration (applying, writing): its
    /// ranges publish no progress until it ends, however long it takes.
    pub(crate) loop_busy: AtomicBool,
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
            ready_thread: Mutex::new(None),
            follower_reads: AtomicU64::new(0),
            locks_in_memory: AtomicU64::new(0),
            lease_reads: AtomicU64::new(0),
            disk_full: AtomicBool::new(false),
            loop_busy: AtomicBool::new(false),
        });
        let mut ready_loop = ReadyLoop::new(inner.clone(), transport, rx);
        if ident.is_some() {
            let ranges = local::load_ranges(engine.as_ref())?;
            if !ranges.is_empty() {
                // A restarted node forgot which leaders it heard from: it
                // must not help elect a new one while an old one's read
                // lease may still run.
                ready_loop.hold_votes_for(inner.config.election_timeout());
            }
            for desc in ranges {
                ready_loop.add_replica(desc)?;
            }
        }
        let failure_slot = inner.clone();
        let thread = std::thread::Builder::new()
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
        *inner.ready_thread.lock() = Some(thread);
        Ok(Store { inner })
    }

    /// This node's id (0 before bootstrap).
    pub fn node_id(&self) -> u64 {
        self.inner.node_id.load(Ordering::SeqCst)
    }

    /// How many reads a follower replica here served below its closed
    /// timestamp, without the leader.
    pub fn follower_reads(&self) -> u64 {
        self.inner.follower_reads.load(Ordering::Relaxed)
    }

    /// How many locks leaders here took in memory (see
    /// [`crate::locktable`]) instead of replicating them.
    pub fn locks_in_memory(&self) -> u64 {
        self.inner.locks_in_memory.load(Ordering::Relaxed)
    }

    /// How many reads leaders here served from their lease.
    pub fn lease_reads(&self) -> u64 {
        self.inner.lease_reads.load(Ordering::Relaxed)
    }

    /// The store's configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// The storage engine.
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
            // A member without a replica of the first range: like a join.
            return self.join(ident, nodes);
        }
        let mut batch = WriteBatch::new();
        local::save_ident(&mut batch, &ident);
        for n in &nodes {
            local::save_node(&mut batch, n);
        }
        local::save_range(&mut batch, &first_range);
        let conf = crate::ready_loop::conf_state_of(&first_range);
        RaftLogStorage::initialize(&mut batch, first_range.range_id, &conf)?;
        // The first range's meta2 entry, written identically on every
        // initial node as part of the state at the range's initial index.
        concord_storage::mvcc::put_version(
            &mut batch,
            &concord_storage::keys::meta2_key(&first_range.end_key),
            concord_hlc::Timestamp::new(1, 0),
            Some(&first_range.encode_to_vec()),
        );
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

    /// Makes this empty store a member of a running cluster under `ident`:
    /// persists the identity and the known nodes. Its replicas arrive later,
    /// by snapshot, as the cluster adds them.
    pub fn join(&self, ident: StoreIdent, nodes: Vec<NodeDescriptor>) -> Result<(), Error> {
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
        let mut batch = WriteBatch::new();
        local::save_ident(&mut batch, &ident);
        for n in &nodes {
            local::save_node(&mut batch, n);
        }
        self.inner.engine.write(batch, true)?;
        for n in nodes {
            self.inner.nodes.upsert(n);
        }
        self.inner.node_id.store(ident.node_id, Ordering::SeqCst);
        Ok(())
    }

    /// Learns (and remembers across restarts) how to reach a node.
    pub fn upsert_node(&self, node: NodeDescriptor) -> Result<(), Error> {
        if node.node_id == 0 || self.inner.nodes.get(node.node_id).as_ref() == Some(&node) {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        local::save_node(&mut batch, &node);
        self.inner.engine.write(batch, false)?;
        self.inner.nodes.upsert(node);
        Ok(())
    }

    /// Removes a local replica that no longer belongs to its range (replica
    /// garbage collection).
    pub async fn destroy_replica(&self, range_id: u64) -> Result<(), Error> {
        let (resp, rx) = oneshot::channel();
        self.send(LoopMsg::DestroyReplica { range_id, resp })?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Replicas on this node, and how many of them lead their range.
    pub fn replica_counts(&self) -> (u64, u64) {
        let replicas = self.replicas();
        let leaders = replicas
            .iter()
            .filter(|r| r.status.lock().role == "leader")
            .count();
        (replicas.len() as u64, leaders as u64)
    }

    pub(crate) fn send(&self, msg: LoopMsg) -> Result<(), Error> {
        if let Some(e) = self.inner.failure.lock().clone() {
            return Err(Error::Storage(e));
        }
        self.inner.tx.send(msg).map_err(|_| Error::Stopped)
    }

    /// Delivers a Raft message from another node.
    pub fn deliver_raft_message(&self, range_id: u64, msg: Message, from_node: u64) {
        let _ = self.send(LoopMsg::Raft {
            range_id,
            msg,
            from_node,
        });
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

    /// Marks the store's disk as nearly full (or not). While it is, every
    /// new command is refused with a disk-full error (SQLSTATE 53100 at the
    /// SQL boundary) instead of running the disk out and failing the store:
    /// Raft entries of other leaders are still appended, reads still served.
    pub fn set_disk_full(&self, full: bool) {
        self.inner.disk_full.store(full, Ordering::Relaxed);
    }

    /// Whether new commands are refused for lack of disk space.
    pub fn disk_full(&self) -> bool {
        self.inner.disk_full.load(Ordering::Relaxed)
    }

    /// Proposes an evaluated command and waits until it has applied here.
    pub async fn propose(&self, range_id: u64, cmd: RaftCommand) -> Result<(), Error> {
        self.propose_keeping(range_id, cmd, ()).await
    }

    /// Proposes a command evaluated under `latches` and waits until it has
    /// applied here; the latches are released once the ready loop has
    /// answered the proposal, not before.
    ///
    /// The answer comes when the command applies, or when it can no longer
    /// apply under this leadership (the proposal was refused, or the
    /// replica lost leadership: a later leader evaluates only after
    /// applying every entry of earlier terms). Until then the command may
    /// still apply, so its latches must stay held: released early, a reader
    /// could read a key at `T` without seeing the intent or version the
    /// command writes there at or below `T`, and find it afterwards (a
    /// snapshot that sees half a transfer). So if this caller stops
    /// waiting, after the Raft timeout (an ambiguous result) or because
    /// its future was dropped (a cancelled RPC, a client gone), the latches
    /// move to a task that holds them until the answer comes.
    pub async fn propose_keeping<K: Send + 'static>(
        &self,
        range_id: u64,
        cmd: RaftCommand,
        latches: K,
    ) -> Result<(), Error> {
        if self.disk_full() {
            return Err(Error::Storage(concord_storage::Error::NoSpace(format!(
                "node {}'s store is nearly out of disk space; writes are refused until space is freed",
                self.node_id()
            ))));
        }
        let (resp, rx) = oneshot::channel();
        let id = cmd.id.clone();
        self.send(LoopMsg::Propose {
            range_id,
            id,
            data: cmd.encode_to_vec(),
            resp,
        })?;
        let mut flight = InFlight {
            answer: Some(rx),
            latches: Some(latches),
        };
        let answer = flight.answer.as_mut().expect("set above");
        let started = Instant::now();
        let answered = self.wait_while_progressing(range_id, answer).await;
        log_slow_wait(range_id, started, "slow proposal");
        match answered {
            Some(answered) => {
                // Answered: the latches go with `flight`, here.
                flight.answer = None;
                match answered {
                    Ok(result) => result,
                    Err(_) => Err(Error::Stopped),
                }
            }
            None => Err(Error::AmbiguousResult(format!(
                "range {range_id}: the command was proposed but did not apply within {:?}",
                started.elapsed()
            ))),
        }
    }

    /// Waits for the answer to a proposal or a ReadIndex (see
    /// [`wait_while_progressing`]), watching the range's commit and applied
    /// indexes.
    async fn wait_while_progressing<T>(
        &self,
        range_id: u64,
        answer: &mut oneshot::Receiver<T>,
    ) -> Option<Result<T, oneshot::error::RecvError>> {
        let position = || {
            self.replica(range_id).ok().map(|h| {
                let st = h.status.lock();
                (st.commit_index, st.applied_index)
            })
        };
        let busy = || self.inner.loop_busy.load(Ordering::Relaxed);
        wait_while_progressing(self.inner.config.raft_timeout, answer, position, busy).await
    }

    /// Waits until this replica is known to be the leader and has applied
    /// every entry committed before now (Raft ReadIndex): a read that follows
    /// sees every write acknowledged before it started.
    pub async fn read_index(&self, range_id: u64) -> Result<(), Error> {
        let (resp, mut rx) = oneshot::channel();
        self.send(LoopMsg::ReadIndex { range_id, resp })?;
        let started = Instant::now();
        let answered = self.wait_while_progressing(range_id, &mut rx).await;
        log_slow_wait(range_id, started, "slow read index");
        match answered {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::Stopped),
            None => Err(Error::Unavailable(format!(
                "range {range_id}: no read quorum within {:?}",
                started.elapsed()
            ))),
        }
    }

    /// Changes a range's replicas through Raft (this node must lead it):
    /// `cc` is the Raft change and `desc` the descriptor that takes effect
    /// with it. Waits until the change has applied here.
    pub async fn change_replicas(
        &self,
        range_id: u64,
        cc: ConfChangeV2,
        desc: RangeDescriptor,
    ) -> Result<(), Error> {
        let (resp, rx) = oneshot::channel();
        self.send(LoopMsg::ChangeReplicas {
            range_id,
            id: rand::random::<[u8; 16]>().to_vec(),
            cc,
            desc,
            resp,
        })?;
        match tokio::time::timeout(self.inner.config.raft_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::AmbiguousResult(format!(
                "range {range_id}: the membership change did not apply within {:?}",
                self.inner.config.raft_timeout
            ))),
        }
    }

    /// Asks the leader of a local range to hand leadership to a replica.
    pub fn transfer_leader(&self, range_id: u64, to_replica: u64) -> Result<(), Error> {
        self.send(LoopMsg::TransferLeader {
            range_id,
            to_replica,
        })
    }

    /// The initialized local replica whose span holds `key`, if any.
    pub fn replica_for_key(&self, key: &[u8]) -> Option<Arc<ReplicaHandle>> {
        self.inner
            .replicas
            .read()
            .values()
            .find(|r| {
                let d = r.desc.read();
                r.status.lock().initialized
                    && key >= d.start_key.as_slice()
                    && (d.end_key.is_empty() || key < d.end_key.as_slice())
            })
            .cloned()
    }

    /// The initialized local replica whose span ends at `key`, if any.
    pub fn replica_ending_at(&self, key: &[u8]) -> Option<Arc<ReplicaHandle>> {
        self.inner
            .replicas
            .read()
            .values()
            .find(|r| r.status.lock().initialized && r.desc.read().end_key.as_slice() == key)
            .cloned()
    }

    /// Freezes the ready loop for `d`, as a long GC pause or SIGSTOP of
    /// the process would: no ticks, no messages, no reads. For fault
    /// injection in tests.
    pub fn freeze_ready_loop(&self, d: Duration) {
        let _ = self.inner.tx.send(LoopMsg::Freeze(d));
    }

    /// Stops the ready loop.
    pub fn stop(&self) {
        if !self.inner.stopped.swap(true, Ordering::SeqCst) {
            let _ = self.inner.tx.send(LoopMsg::Stop);
        }
    }

    /// Blocks until the ready loop's thread has ended (after [`Store::stop`]),
    /// or for `at_most` (a loop stuck in a write to a failing disk must not
    /// keep the node from exiting): the thread drops the replicas and their
    /// handles on the engine as it ends, and a process that exited
    /// meanwhile crashed in libc (seen at shutdown under load). Returns
    /// whether it ended. Not for an async context: it blocks.
    pub fn wait_stopped(&self, at_most: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + at_most;
        let mut slot = self.inner.ready_thread.lock();
        let Some(t) = slot.as_ref() else {
            return true;
        };
        while !t.is_finished() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if let Some(t) = slot.take() {
            let _ = t.join();
        }
        true
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A proposal's latches and the ready loop's answer to it, while its
/// proposer waits. Dropped before the answer came, it leaves a task that
/// holds the latches until it comes (see [`Store::propose_keeping`]).
struct InFlight<K: Send + 'static> {
    answer: Option<oneshot::Receiver<Result<(), Error>>>,
    latches: Option<K>,
}

impl<K: Send + 'static> Drop for InFlight<K> {
    fn drop(&mut self) {
        let (Some(answer), Some(latches)) = (self.answer.take(), self.latches.take()) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    // Applied, refused, or the loop is gone: either way the
                    // command can no longer apply behind the latches' back.
                    let _ = answer.await;
                    drop(latches);
                });
            }
            // No runtime: the process is shutting down, and nothing can
            // evaluate against this store any more.
            Err(_) => drop(latches),
        }
    }
}

/// Logs a wait on the ready loop longer than [`crate::SLOW_STEP`].
fn log_slow_wait(range_id: u64, started: Instant, what: &'static str) {
    let took = started.elapsed();
    if took > crate::SLOW_STEP {
        tracing::debug!(
            target: "concord::slow",
            range_id,
            took_ms = took.as_millis() as u64,
            "{what}"
        );
    }
}

/// How many Raft timeouts a proposer waits at most while its range keeps
/// making progress (see [`wait_while_progressing`]).
const PROPOSAL_PATIENCE: u32 = 8;

/// Waits for `answer`: for one `round` (the Raft timeout), and then for
/// another as long as `position` (a range's commit and applied index) moved
/// in the last one or the ready loop is `busy` in an iteration (which
/// publishes nothing until it ends), up to [`PROPOSAL_PATIENCE`] rounds in
/// all. A leader that lost its quorum or its leadership answers its
/// proposals itself; the timeout is the backstop for a range that stopped
/// moving. A busy range is not one: after a bulk load a node's ready loop
/// may spend seconds per iteration applying the load's cleanup, and a
/// commit queued behind that must not come back as an ambiguous result
/// (SQLSTATE 40003, which pgbench and most drivers do not retry). `None`
/// if it gave up.
async fn wait_while_progressing<T, P: PartialEq>(
    round: Duration,
    mut answer: &mut oneshot::Receiver<T>,
    position: impl Fn() -> Option<P>,
    busy: impl Fn() -> bool,
) -> Option<Result<T, oneshot::error::RecvError>> {
    let mut last = position();
    for _ in 0..PROPOSAL_PATIENCE {
        if let Ok(answered) = tokio::time::timeout(round, &mut answer).await {
            return Some(answered);
        }
        let now = position();
        if now.is_none() || (now == last && !busy()) {
            return None;
        }
        last = now;
    }
    None
}

#[cfg(test)]
mod wait_tests {
    use super::*;

    /// Answers through `tx` once `delay` has passed.
    fn answer_after(tx: oneshot::Sender<()>, delay: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(());
        })
    }

    /// An answer that comes after three Raft timeouts is waited for while
    /// the range keeps applying, and given up on (the ambiguous result)
    /// once the range stops moving for a whole timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_proposer_waits_while_its_range_moves_and_not_after() {
        let round = Duration::from_millis(300);
        let applied = Arc::new(AtomicU64::new(0));
        let moving = Arc::new(AtomicBool::new(true));
        let position = || Some(applied.load(Ordering::Relaxed));
        let (tx, mut rx) = oneshot::channel::<()>();
        let bump = {
            let (applied, moving) = (applied.clone(), moving.clone());
            tokio::spawn(async move {
                while moving.load(Ordering::Relaxed) {
                    applied.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        let answer = answer_after(tx, round * 3);
        let got = wait_while_progressing(round, &mut rx, position, || false).await;
        assert!(
            matches!(got, Some(Ok(()))),
            "waited while the range moved: {got:?}"
        );
        answer.await.expect("answer task");

        // The range stops: one more round, then the proposer gives up.
        moving.store(false, Ordering::Relaxed);
        bump.await.expect("bump task");
        let (_tx, mut rx) = oneshot::channel::<()>();
        let got = wait_while_progressing(round, &mut rx, position, || false).await;
        assert!(
            got.is_none(),
            "a range that stopped moving is not waited for: {got:?}"
        );

        // Unless the ready loop is in the middle of a long iteration.
        let (tx, mut rx) = oneshot::channel::<()>();
        let answer = answer_after(tx, round * 3);
        let got = wait_while_progressing(round, &mut rx, position, || true).await;
        assert!(
            matches!(got, Some(Ok(()))),
            "waited for a busy loop: {got:?}"
        );
        answer.await.expect("answer task");

        // A range that is gone is not waited for either.
        let (_tx, mut rx) = oneshot::channel::<()>();
        let got = wait_while_progressing(round, &mut rx, || None::<u64>, || false).await;
        assert!(got.is_none(), "{got:?}");
    }
}
