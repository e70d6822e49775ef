//! Background queues that keep ranges healthy, run by every node for the
//! ranges it leads:
//!
//! - the **replicate queue** keeps each range at its replication factor on
//!   live nodes: it replaces replicas on dead (silent for `--dead-after`) and
//!   decommissioning nodes, moves replicas from the most to the least loaded
//!   nodes, and hands leadership to nodes that lead less than their share.
//!   Leadership also follows the workload: a range whose batches come
//!   nearly all from one other node, at a sustained rate, is handed to that
//!   node's replica (see [`concord_replication::origins`]), and the count
//!   balancing leaves a range alone while it is led where its batches
//!   come from. Range 1 (meta2 and the system tables, which every
//!   statement reads) gets at least 5 replicas while 5 or more nodes are
//!   live, so that losing any two nodes, or a partition that leaves two of
//!   them on the minority side, does not stop SQL on the majority side;
//! - the **split queue** splits ranges that grew past `--range-max-bytes` at
//!   their middle key;
//! - the **replica GC queue** removes local replicas that meta2 says no
//!   longer belong to this node (they were removed while it was down);
//! - **closed timestamps**: each round, the leader of every range promises
//!   that nothing at or below now − 3 s will be written there any more, so
//!   followers can serve `AS OF SYSTEM TIME` reads from their own state;
//! - the **MVCC GC queue** deletes versions shadowed for longer than
//!   `--gc-ttl` (default 25 h), never above the oldest read timestamp of a
//!   transaction open on any live node (nodes report theirs in heartbeats).
//!
//! A membership change is always one step at a time, through Raft
//! configuration changes (raft-rs `ConfChangeV2`):
//!
//! ```text
//! add:     AddLearnerNode(new id) ─ snapshot + log catch-up ─► AddNode (promote)
//! remove:  (transfer leadership away first if the leader is the one leaving)
//!          RemoveNode(id)
//! ```
//!
//! A learner receives the log but does not vote, so adding a replica never
//! weakens the quorum while the new replica catches up. After each change the
//! new descriptor is recorded in meta2.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use concord_proto::meta::{RangeDescriptor, ReplicaDescriptor};
use concord_replication::ReplicaHandle;
use concord_storage::{keys, Cf};
use raft::prelude::{ConfChangeSingle, ConfChangeType, ConfChangeV2};
use tokio::sync::watch;

use crate::NodeContext;

/// One change the replicate queue decided on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    AddLearner(u64),
    Promote(u64),
    Remove(u64),
    TransferLeader(u64),
}

/// What the replicate queue knows when it looks at one range.
pub struct RangeView<'a> {
    pub desc: &'a RangeDescriptor,
    pub me: u64,
    /// Raft progress: (replica id, matched index).
    pub matched: &'a [(u64, u64)],
    pub commit_index: u64,
    /// Every known node.
    pub nodes: &'a [u64],
    pub live: &'a (dyn Fn(u64) -> bool + Sync),
    pub decommissioning: &'a HashSet<u64>,
    /// (replicas, leaders) per node.
    pub load: &'a (dyn Fn(u64) -> (u64, u64) + Sync),
    pub target_replicas: usize,
    /// May this decision move a healthy replica or leader (rebalancing)?
    pub may_rebalance: bool,
    /// Nodes whose disk is nearly full: they should lead nothing.
    pub disk_full: &'a (dyn Fn(u64) -> bool + Sync),
    /// Batches this leader received per gateway node, and the time that
    /// covers (see [`concord_replication::origins`]).
    pub origins: &'a [(u64, u64)],
    pub origins_cover: Duration,
    /// How long this replica has led the range.
    pub led_for: Duration,
}

impl RangeView<'_> {
    fn healthy(&self, node: u64) -> bool {
        (self.live)(node) && !self.decommissioning.contains(&node)
    }

    /// A node that may take over leadership.
    fn may_lead(&self, node: u64) -> bool {
        self.healthy(node) && !(self.disk_full)(node)
    }

    fn caught_up(&self, replica_id: u64) -> bool {
        self.matched
            .iter()
            .any(|(id, m)| *id == replica_id && *m >= self.commit_index)
    }
}

/// The replication factor of a range: the configured one, except that
/// range 1 (meta2 and the system tables) has at least 5 replicas while 5 or
/// more nodes are live and not decommissioning. Below that it falls back to
/// the configured factor: an even count would cost a replica without
/// surviving one more failure.
pub fn target_replicas(range_id: u64, configured: usize, live_nodes: usize) -> usize {
    const SYSTEM_REPLICAS: usize = 5;
    if range_id == 1 && live_nodes >= SYSTEM_REPLICAS {
        configured.max(SYSTEM_REPLICAS)
    } else {
        configured
    }
}

/// Decides the next membership change of a range, if any.
pub fn plan(v: &RangeView) -> Option<Action> {
    let d = v.desc;
    // 1. A learner in flight: promote it once caught up, drop it if its node
    //    went bad.
    if let Some(l) = d.replicas.iter().find(|r| r.learner) {
        if !v.healthy(l.node_id) {
            return Some(Action::Remove(l.replica_id));
        }
        if v.caught_up(l.replica_id) {
            return Some(Action::Promote(l.replica_id));
        }
        return None;
    }
    let voters: Vec<&ReplicaDescriptor> = d.replicas.iter().collect();
    // 2a. This node's disk is nearly full: it refuses writes, so another
    //     replica should lead.
    if (v.disk_full)(v.me) {
        return voters
            .iter()
            .filter(|r| r.node_id != v.me && v.may_lead(r.node_id) && v.caught_up(r.replica_id))
            .min_by_key(|r| ((v.load)(r.node_id).1, r.node_id))
            .map(|r| Action::TransferLeader(r.replica_id));
    }
    let healthy_nodes: Vec<u64> = v.nodes.iter().copied().filter(|n| v.healthy(*n)).collect();
    // Dead nodes still count toward the target: a range keeps its dead
    // replica (which may come back) until a replacement exists. Only
    // decommissioning nodes shrink what is achievable.
    let eligible = v
        .nodes
        .iter()
        .filter(|n| !v.decommissioning.contains(n))
        .count();
    let target = v.target_replicas.min(eligible).max(1);
    let healthy_voters = voters.iter().filter(|r| v.healthy(r.node_id)).count();
    let candidate = || {
        healthy_nodes
            .iter()
            .copied()
            .filter(|n| !d.replicas.iter().any(|r| r.node_id == *n))
            .min_by_key(|n| ((v.load)(*n).0, *n))
    };
    // 2. Under-replicated on healthy nodes: add a replica.
    if healthy_voters < target {
        if let Some(c) = candidate() {
            return Some(Action::AddLearner(c));
        }
    }
    // 3. A replica to remove: on a dead or decommissioning node (once a
    //    replacement is in), or one too many.
    let bad = voters.iter().find(|r| !(v.live)(r.node_id)).or_else(|| {
        voters
            .iter()
            .find(|r| v.decommissioning.contains(&r.node_id))
    });
    let victim = match bad {
        Some(b) if healthy_voters >= target => Some(**b),
        _ if voters.len() > target => voters
            .iter()
            .filter(|r| v.healthy(r.node_id))
            .max_by_key(|r| ((v.load)(r.node_id).0, r.node_id != v.me, r.node_id))
            .map(|r| **r),
        _ => None,
    };
    if let Some(victim) = victim {
        if victim.node_id == v.me {
            // The leader cannot remove itself: hand leadership over first.
            return voters
                .iter()
                .filter(|r| r.node_id != v.me && v.may_lead(r.node_id) && v.caught_up(r.replica_id))
                .min_by_key(|r| ((v.load)(r.node_id).1, r.node_id))
                .map(|r| Action::TransferLeader(r.replica_id));
        }
        return Some(Action::Remove(victim.replica_id));
    }
    // 4. The leader itself is leaving (decommissioning): move leadership.
    if v.decommissioning.contains(&v.me) {
        return voters
            .iter()
            .filter(|r| r.node_id != v.me && v.may_lead(r.node_id) && v.caught_up(r.replica_id))
            .min_by_key(|r| ((v.load)(r.node_id).1, r.node_id))
            .map(|r| Action::TransferLeader(r.replica_id));
    }
    if !v.may_rebalance || healthy_nodes.is_empty() {
        return None;
    }
    // 5. Rebalance replicas: from the most loaded member node to the least
    //    loaded non-member, when one of them is clearly off the mean and
    //    the other is on its far side (a new node far below the mean takes
    //    replicas from nodes only a little above it). Moving one replica
    //    from `most` to `least` with most >= least + 2 never overshoots, so
    //    the spread only narrows.
    let n = healthy_nodes.len() as f64;
    let mean_replicas = healthy_nodes.iter().map(|x| (v.load)(*x).0).sum::<u64>() as f64 / n;
    if let Some(c) = candidate() {
        let most = voters
            .iter()
            .map(|r| (v.load)(r.node_id).0)
            .max()
            .unwrap_or(0);
        let least = (v.load)(c).0;
        let (most_f, least_f) = (most as f64, least as f64);
        let off = most_f > mean_replicas * 1.1 || least_f < mean_replicas * 0.9;
        if off && most_f > mean_replicas && least_f < mean_replicas && most >= least + 2 {
            return Some(Action::AddLearner(c));
        }
    }
    // A leadership that just arrived stays put for a window: each move
    // makes the new leader apply every entry of earlier terms before it
    // serves, which under a bulk load's cleanup took seconds, and a range
    // moved by the count balancing right after it followed its workload
    // here went back and forth (three moves in two seconds).
    if v.led_for < LEADERSHIP_SETTLE {
        return None;
    }
    // 6. Follow the workload: a range whose requests come nearly all from
    //    one node is led from there (its requests are then local calls, not
    //    a network round trip each), and is not moved away by the count
    //    balancing below while they do.
    if let Some(home) = workload_home(v).filter(|home| *home != v.me) {
        if let Some(r) = voters
            .iter()
            .find(|r| r.node_id == home && v.may_lead(r.node_id) && v.caught_up(r.replica_id))
        {
            return Some(Action::TransferLeader(r.replica_id));
        }
    }
    if led_where_its_workload_is(v) {
        return None;
    }
    // 7. Rebalance leaders: if this node leads clearly more than its share,
    //    or more than its share while a member leads clearly less.
    let mean_leaders = healthy_nodes.iter().map(|x| (v.load)(*x).1).sum::<u64>() as f64 / n;
    let mine = (v.load)(v.me).1 as f64;
    if mine <= mean_leaders {
        return None;
    }
    let target = voters
        .iter()
        .filter(|r| {
            r.node_id != v.me
                && v.may_lead(r.node_id)
                && v.caught_up(r.replica_id)
                && ((v.load)(r.node_id).1 as f64) < mean_leaders
        })
        .min_by_key(|r| ((v.load)(r.node_id).1, r.node_id))?;
    let theirs = (v.load)(target.node_id).1 as f64;
    let over = mine > mean_leaders * 1.15 && mine >= mean_leaders + 1.0;
    let under = theirs < mean_leaders * 0.85 && mine >= theirs + 2.0;
    (over || under).then_some(Action::TransferLeader(target.replica_id))
}

/// How long a replica must have led its range before rebalancing or the
/// workload moves that leadership on (drains, dead nodes and full disks do
/// not wait).
pub const LEADERSHIP_SETTLE: Duration = concord_replication::origins::ORIGIN_WINDOW;

/// Batches per second a range must get from one node, over at least a
/// whole counting window, before its leadership follows them there.
const FOLLOW_MIN_RATE: f64 = 20.0;
/// The share of a range's batches that node must send.
const FOLLOW_SHARE: f64 = 0.8;

/// Whether `node` sent this range at least [`FOLLOW_SHARE`] of its
/// recent batches, at [`FOLLOW_MIN_RATE`] or more over `secs`: the one test
/// behind both following a workload and keeping it.
fn sends_nearly_all(v: &RangeView, node: u64, secs: f64) -> bool {
    let total: u64 = v.origins.iter().map(|(_, n)| n).sum();
    let sent: u64 = v
        .origins
        .iter()
        .filter(|(from, _)| *from == node)
        .map(|(_, n)| n)
        .sum();
    sent as f64 / secs >= FOLLOW_MIN_RATE && sent as f64 >= FOLLOW_SHARE * total as f64
}

/// The node that sends this range nearly all its requests, at a sustained
/// rate: where its leader should be. `None` for a range without such a
/// workload (idle, or used from several nodes alike), or before a whole
/// counting window has been seen.
fn workload_home(v: &RangeView) -> Option<u64> {
    if v.origins_cover < concord_replication::origins::ORIGIN_WINDOW {
        return None;
    }
    let (node, _) = v
        .origins
        .iter()
        .copied()
        .max_by_key(|(node, n)| (*n, *node))?;
    sends_nearly_all(v, node, v.origins_cover.as_secs_f64()).then_some(node)
}

/// Whether this node sends the range nearly all its recent batches, at
/// [`FOLLOW_MIN_RATE`] or more (over at least a second). Unlike
/// [`workload_home`] this needs no whole window: a range whose leadership
/// just came here for its workload has seen only a few seconds of it, and
/// the count balancing must not send it straight back.
fn led_where_its_workload_is(v: &RangeView) -> bool {
    sends_nearly_all(v, v.me, v.origins_cover.as_secs_f64().max(1.0))
}

fn single(change_type: ConfChangeType, id: u64) -> ConfChangeV2 {
    let mut s = ConfChangeSingle::default();
    s.set_change_type(change_type);
    s.node_id = id;
    let mut cc = ConfChangeV2::default();
    cc.set_changes(vec![s].into());
    cc
}

/// Carries out a membership change and records the new descriptor in meta2.
async fn execute(ctx: &NodeContext, r: &ReplicaHandle, action: Action) -> Result<(), String> {
    let mut desc = r.desc.read().clone();
    desc.generation += 1;
    let cc = match &action {
        Action::TransferLeader(id) => {
            tracing::info!(range_id = r.range_id, to = id, "transferring leadership");
            return ctx
                .store
                .transfer_leader(r.range_id, *id)
                .map_err(|e| e.to_string());
        }
        Action::AddLearner(node) => {
            let id = desc.next_replica_id;
            desc.next_replica_id += 1;
            desc.replicas.push(ReplicaDescriptor {
                node_id: *node,
                replica_id: id,
                learner: true,
            });
            single(ConfChangeType::AddLearnerNode, id)
        }
        Action::Promote(id) => {
            for rep in desc.replicas.iter_mut().filter(|x| x.replica_id == *id) {
                rep.learner = false;
            }
            single(ConfChangeType::AddNode, *id)
        }
        Action::Remove(id) => {
            desc.replicas.retain(|x| x.replica_id != *id);
            single(ConfChangeType::RemoveNode, *id)
        }
    };
    tracing::info!(range_id = r.range_id, ?action, "changing replicas");
    ctx.store
        .change_replicas(r.range_id, cc, desc)
        .await
        .map_err(|e| e.to_string())?;
    // Record what applied (the range may have split meanwhile).
    let applied = r.desc.read().clone();
    ctx.db
        .update_meta(&[applied])
        .await
        .map_err(|e| e.to_string())
}

/// The user key at which a range holds half the bytes of its data column
/// family (a row boundary), found in one pass: a key every 1/64 of the
/// range's statistics (at most every 1 MiB) is remembered and the one
/// nearest the middle is chosen. The range's
/// statistics are not used for "half": they may count what the data column
/// family does not hold (intents), which made the search fail every round
/// on a freshly loaded range. The scan reads the whole range, so it runs
/// on a blocking thread (it took the async runtime's worker for seconds,
/// starving Raft ticks into elections).
async fn middle_key(ctx: &NodeContext, desc: &RangeDescriptor, bytes: u64) -> Option<Vec<u8>> {
    let engine = ctx.store.engine().clone();
    let desc = desc.clone();
    tokio::task::spawn_blocking(move || {
        let lower = keys::escape(&desc.start_key);
        let upper = (!desc.end_key.is_empty()).then(|| keys::escape(&desc.end_key));
        let mut it = engine.iter(Cf::Data, &lower, upper.as_deref());
        let step = (bytes / 64).clamp(1, 1 << 20);
        let mut seen = 0u64;
        let mut next_mark = step;
        let mut marks: Vec<(u64, Vec<u8>)> = Vec::new();
        while it.valid().ok()? {
            seen += (it.key().len() + it.value().len()) as u64;
            if seen >= next_mark {
                let (key, _) = keys::decode_mvcc_key(it.key()).ok()?;
                if key.as_slice() > desc.start_key.as_slice()
                    && key.as_slice() >= keys::MIN_SPLIT_KEY
                    && marks.last().is_none_or(|(_, k)| *k != key)
                {
                    marks.push((seen, key));
                }
                next_mark = seen + step;
            }
            it.next();
        }
        let half = seen / 2;
        marks
            .into_iter()
            .min_by_key(|(at, _)| at.abs_diff(half))
            .map(|(_, k)| k)
    })
    .await
    .ok()
    .flatten()
}

/// Runs the queues until shutdown.
pub async fn run(ctx: Arc<NodeContext>, mut shutdown: watch::Receiver<bool>) {
    let mut round = 0u64;
    let mut decommissioning: HashSet<u64> = HashSet::new();
    let mut last_gc = std::collections::HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ctx.config.queue_interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let me = ctx.store.node_id();
        if me == 0 {
            continue;
        }
        if round.is_multiple_of(3) {
            if let Ok(d) = ctx.db.decommissioning_nodes().await {
                decommissioning = d.into_iter().collect();
            }
        }
        round += 1;
        let nodes: Vec<u64> = ctx.store.nodes().all().iter().map(|n| n.node_id).collect();
        let live = |n: u64| ctx.liveness.is_live(n, me);
        let disk_full = |n: u64| {
            if n == me {
                ctx.store.disk_full()
            } else {
                ctx.liveness.disk_full(n)
            }
        };
        let load = |n: u64| {
            if n == me {
                ctx.store.replica_counts()
            } else {
                ctx.liveness.load(n)
            }
        };
        let live_nodes = nodes
            .iter()
            .filter(|n| live(**n) && !decommissioning.contains(n))
            .count();
        // Repairs for every range; at most one rebalancing move per round, so
        // that decisions made on slightly stale load figures cannot pile up.
        let mut may_rebalance = true;
        for r in ctx.store.replicas() {
            let st = r.status.lock().clone();
            if !st.leader_ready {
                continue;
            }
            let desc = r.desc.read().clone();
            // A peer the leader has not heard from within an election
            // timeout is not caught up, however far its log went: moving
            // leadership to a replica on a node that just died would leave
            // the range refusing proposals while each transfer times out.
            let matched: Vec<(u64, u64)> = st
                .progress
                .iter()
                .filter(|p| p.recent_active)
                .map(|p| (p.replica_id, p.matched))
                .collect();
            let (origins, origins_cover) = r.origins.lock().reading(std::time::Instant::now());
            let led_for = st.led_since.map_or(Duration::ZERO, |t| t.elapsed());
            let view = RangeView {
                desc: &desc,
                me,
                matched: &matched,
                commit_index: st.commit_index,
                nodes: &nodes,
                live: &live,
                decommissioning: &decommissioning,
                load: &load,
                target_replicas: target_replicas(r.range_id, ctx.config.replicas, live_nodes),
                may_rebalance,
                disk_full: &disk_full,
                origins: &origins,
                origins_cover,
                led_for,
            };
            if let Some(action) = plan(&view) {
                let rebalancing = (matches!(action, Action::TransferLeader(_))
                    && !ctx.store.disk_full())
                    || (matches!(action, Action::AddLearner(_))
                        && desc
                            .replicas
                            .iter()
                            .filter(|x| view.healthy(x.node_id))
                            .count()
                            >= view.target_replicas.min(nodes.len()));
                if rebalancing {
                    may_rebalance = false;
                }
                if let Err(e) = execute(&ctx, &r, action).await {
                    tracing::info!(range_id = r.range_id, "replica change did not happen: {e}");
                }
            }
            // Split queue.
            if st.bytes > ctx.config.range_max_bytes {
                if let Some(key) = middle_key(&ctx, &desc, st.bytes).await {
                    match ctx.db.admin_split(&key).await {
                        Ok(_) => tracing::info!(
                            range_id = r.range_id,
                            bytes = st.bytes,
                            "split a range that grew too large"
                        ),
                        Err(e) => {
                            tracing::info!(range_id = r.range_id, "size-based split failed: {e}")
                        }
                    }
                }
            }
        }
        if round.is_multiple_of(5) {
            gc_replicas(&ctx, me).await;
        }
        mvcc_gc(&ctx, me, &mut last_gc).await;
        close_timestamps(&ctx).await;
    }
}

/// How far behind now closed timestamps trail. Writes with older
/// timestamps are pushed above it (a transaction older than this refreshes
/// its reads or restarts); reads at or below it are served by any replica.
pub const CLOSED_TS_LAG: std::time::Duration = std::time::Duration::from_secs(3);

/// Closes a timestamp on every range this node leads (once per round), so
/// that `AS OF SYSTEM TIME` reads can be served by followers.
async fn close_timestamps(ctx: &NodeContext) {
    for r in ctx.store.replicas() {
        if !r.status.lock().leader_ready {
            continue;
        }
        if let Err(e) = ctx.store.close_timestamp(r.range_id, CLOSED_TS_LAG).await {
            tracing::debug!(range_id = r.range_id, "closing a timestamp: {e}");
        }
    }
}

/// The MVCC GC threshold: `ttl` (plus the max clock offset, so that a later
/// leader whose clock is behind never accepts a read below it) before now,
/// and never above the oldest open transaction's read timestamp.
pub fn gc_threshold(
    now: concord_hlc::Timestamp,
    ttl: std::time::Duration,
    max_offset: std::time::Duration,
    oldest_read: Option<concord_hlc::Timestamp>,
) -> concord_hlc::Timestamp {
    let by_age = concord_hlc::Timestamp::new(
        now.wall
            .saturating_sub((ttl + max_offset).as_nanos().min(u64::MAX as u128) as u64),
        0,
    );
    match oldest_read {
        Some(t) if t.wall > 0 => by_age.min(concord_hlc::Timestamp::new(t.wall - 1, 0)),
        Some(_) => concord_hlc::Timestamp::ZERO,
        None => by_age,
    }
}

/// The MVCC GC queue: every range this node leads is collected about twice
/// per TTL (at most every 10 minutes, at least every queue round).
async fn mvcc_gc(
    ctx: &NodeContext,
    me: u64,
    last_gc: &mut std::collections::HashMap<u64, std::time::Instant>,
) {
    let every = (ctx.config.gc_ttl / 2).clamp(
        ctx.config.queue_interval,
        std::time::Duration::from_secs(600),
    );
    let clock = ctx.store.clock();
    let oldest = ctx.liveness.oldest_read(me, ctx.db.oldest_active_read_ts());
    let threshold = gc_threshold(clock.now(), ctx.config.gc_ttl, clock.max_offset(), oldest);
    if threshold.is_zero() {
        return;
    }
    for r in ctx.store.replicas() {
        if !r.status.lock().leader_ready {
            continue;
        }
        if last_gc
            .get(&r.range_id)
            .is_some_and(|at| at.elapsed() < every)
        {
            continue;
        }
        last_gc.insert(r.range_id, std::time::Instant::now());
        let start = r.desc.read().start_key.clone();
        match ctx.db.gc_range(&start, threshold).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(range_id = r.range_id, versions = n, %threshold, "MVCC GC"),
            Err(e) => tracing::info!(range_id = r.range_id, "MVCC GC did not run: {e}"),
        }
    }
}

/// Removes local replicas that meta2 no longer lists on this node.
async fn gc_replicas(ctx: &NodeContext, me: u64) {
    for r in ctx.store.replicas() {
        let st = r.status.lock().clone();
        if st.role == "leader" || !st.initialized {
            continue;
        }
        let desc = r.desc.read().clone();
        let mut end = desc.start_key.clone();
        end.push(0);
        let Ok(metas) = ctx.db.meta_ranges(&desc.start_key, &end).await else {
            continue;
        };
        let Some(current) = metas.into_iter().find(|d| d.range_id == desc.range_id) else {
            continue;
        };
        let member = current
            .replicas
            .iter()
            .any(|x| x.node_id == me && x.replica_id == r.replica_id);
        if !member && current.generation > desc.generation {
            tracing::info!(
                range_id = r.range_id,
                "removing a replica that no longer belongs to this node"
            );
            if let Err(e) = ctx.store.destroy_replica(r.range_id).await {
                tracing::warn!(range_id = r.range_id, "replica GC failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gc_threshold_trails_by_ttl_and_offset_and_spares_open_transactions() {
        use concord_hlc::Timestamp;
        use std::time::Duration;
        let s = 1_000_000_000u64;
        let now = Timestamp::new(100 * s, 5);
        let ttl = Duration::from_secs(10);
        let off = Duration::from_millis(500);
        assert_eq!(
            gc_threshold(now, ttl, off, None),
            Timestamp::new(89 * s + s / 2, 0)
        );
        let old_txn = Timestamp::new(50 * s, 3);
        assert_eq!(
            gc_threshold(now, ttl, off, Some(old_txn)),
            Timestamp::new(50 * s - 1, 0),
            "below the oldest open transaction"
        );
        let young_txn = Timestamp::new(99 * s, 0);
        assert_eq!(
            gc_threshold(now, ttl, off, Some(young_txn)),
            Timestamp::new(89 * s + s / 2, 0)
        );
    }

    fn desc(nodes: &[(u64, bool)]) -> RangeDescriptor {
        RangeDescriptor {
            range_id: 5,
            replicas: nodes
                .iter()
                .enumerate()
                .map(|(i, (n, learner))| ReplicaDescriptor {
                    node_id: *n,
                    replica_id: i as u64 + 1,
                    learner: *learner,
                })
                .collect(),
            next_replica_id: nodes.len() as u64 + 1,
            ..Default::default()
        }
    }

    fn decide(
        d: &RangeDescriptor,
        dead: &[u64],
        decom: &[u64],
        loads: &[(u64, u64, u64)],
        rebalance: bool,
    ) -> Option<Action> {
        decide_with_origins(d, dead, loads, rebalance, &[], Duration::ZERO, decom)
    }

    /// `decide` for node 1, the leader for an hour, that received
    /// `origins` (batches per gateway node) over `cover`.
    fn decide_with_origins(
        d: &RangeDescriptor,
        dead: &[u64],
        loads: &[(u64, u64, u64)],
        rebalance: bool,
        origins: &[(u64, u64)],
        cover: Duration,
        decom: &[u64],
    ) -> Option<Action> {
        decide_case(&Case {
            d,
            dead,
            loads,
            rebalance,
            origins,
            cover,
            decom,
            led_for: Duration::from_secs(3600),
        })
    }

    /// One decision's inputs, for node 1, the leader.
    struct Case<'a> {
        d: &'a RangeDescriptor,
        dead: &'a [u64],
        loads: &'a [(u64, u64, u64)],
        rebalance: bool,
        origins: &'a [(u64, u64)],
        cover: Duration,
        decom: &'a [u64],
        /// How long node 1 has led the range.
        led_for: Duration,
    }

    fn decide_case(c: &Case) -> Option<Action> {
        let nodes: Vec<u64> = c.loads.iter().map(|l| l.0).collect();
        let live = |n: u64| !c.dead.contains(&n);
        let load = |n: u64| {
            c.loads
                .iter()
                .find(|l| l.0 == n)
                .map(|l| (l.1, l.2))
                .unwrap_or((0, 0))
        };
        let decommissioning: HashSet<u64> = c.decom.iter().copied().collect();
        let matched: Vec<(u64, u64)> = c.d.replicas.iter().map(|r| (r.replica_id, 100)).collect();
        plan(&RangeView {
            desc: c.d,
            me: 1,
            matched: &matched,
            commit_index: 100,
            nodes: &nodes,
            live: &live,
            decommissioning: &decommissioning,
            load: &load,
            target_replicas: 3,
            may_rebalance: c.rebalance,
            disk_full: &|_| false,
            origins: c.origins,
            origins_cover: c.cover,
            led_for: c.led_for,
        })
    }

    #[test]
    fn leadership_follows_a_sustained_workload_from_one_node() {
        let even = [(1, 10, 3), (2, 10, 3), (3, 10, 3)];
        let d = desc(&[(1, false), (2, false), (3, false)]);
        let secs = Duration::from_secs;
        let follow = |origins: &[(u64, u64)], cover: Duration| {
            decide_with_origins(&d, &[], &even, true, origins, cover, &[])
        };
        // 45 batches a second, 99% of them from node 2: its replica (id 2)
        // leads next.
        assert_eq!(
            follow(&[(1, 10), (2, 900)], secs(20)),
            Some(Action::TransferLeader(2))
        );
        // Too few (5 a second), not one node's (half each), or not seen for
        // a whole window yet: nothing moves.
        assert_eq!(follow(&[(2, 100)], secs(20)), None);
        assert_eq!(follow(&[(2, 500), (3, 500)], secs(20)), None);
        assert_eq!(follow(&[(2, 2000)], secs(5)), None);
        // Nor to a dead node.
        assert_eq!(
            decide_with_origins(&d, &[2], &even, true, &[(2, 900)], secs(20), &[]),
            None
        );
    }

    #[test]
    fn a_leadership_that_just_arrived_stays_for_a_window_unless_it_must_go() {
        let heavy = [(1, 10, 8), (2, 10, 1), (3, 10, 1)];
        let d = desc(&[(1, false), (2, false), (3, false)]);
        let secs = Duration::from_secs;
        let led = |origins: &[(u64, u64)], dead: &[u64], decom: &[u64], led_for| {
            decide_case(&Case {
                d: &d,
                dead,
                loads: &heavy,
                rebalance: true,
                origins,
                cover: secs(20),
                decom,
                led_for,
            })
        };
        // Led for 9 s: neither the count balancing nor a workload from
        // node 2 moves it; after a window, both would.
        assert_eq!(led(&[], &[], &[], secs(9)), None);
        assert_eq!(led(&[(2, 900)], &[], &[], secs(9)), None);
        assert_eq!(
            led(&[], &[], &[], secs(10)),
            Some(Action::TransferLeader(2))
        );
        assert_eq!(
            led(&[(3, 900)], &[], &[], secs(10)),
            Some(Action::TransferLeader(3))
        );
        // A node being drained hands its leadership on at once.
        assert!(matches!(
            led(&[], &[], &[1], Duration::ZERO),
            Some(Action::TransferLeader(_)) | Some(Action::AddLearner(_))
        ));
    }

    #[test]
    fn count_balancing_leaves_a_range_led_where_its_workload_is() {
        // Node 1 leads far more than its share: one of its ranges goes...
        let heavy = [(1, 10, 8), (2, 10, 1), (3, 10, 1)];
        let d = desc(&[(1, false), (2, false), (3, false)]);
        assert_eq!(
            decide(&d, &[], &[], &heavy, true),
            Some(Action::TransferLeader(2))
        );
        // ...but not one whose batches come from node 1 itself, even when
        // its leadership came here only 2 s ago...
        for cover in [Duration::from_secs(20), Duration::from_secs(2)] {
            assert_eq!(
                decide_with_origins(&d, &[], &heavy, true, &[(1, 900), (3, 20)], cover, &[]),
                None
            );
        }
        // ...while a few batches do not hold it: 5 in 2 s, or the 2 a
        // second of a client polling SHOW RANGES through node 1.
        for (n, cover) in [(5, 2), (40, 20)] {
            assert_eq!(
                decide_with_origins(
                    &d,
                    &[],
                    &heavy,
                    true,
                    &[(1, n)],
                    Duration::from_secs(cover),
                    &[]
                ),
                Some(Action::TransferLeader(2))
            );
        }
    }

    #[test]
    fn range_1_has_five_replicas_only_while_five_nodes_are_live() {
        assert_eq!(target_replicas(1, 3, 3), 3);
        assert_eq!(target_replicas(1, 3, 4), 3);
        assert_eq!(target_replicas(1, 3, 5), 5);
        assert_eq!(target_replicas(1, 3, 9), 5);
        assert_eq!(target_replicas(1, 7, 9), 7);
        assert_eq!(target_replicas(2, 3, 9), 3);
    }

    #[test]
    fn replaces_a_dead_replica_then_removes_it() {
        let five = [(1, 10, 3), (2, 10, 3), (3, 10, 3), (4, 5, 1), (5, 2, 0)];
        let d = desc(&[(1, false), (2, false), (3, false)]);
        assert_eq!(
            decide(&d, &[3], &[], &five, false),
            Some(Action::AddLearner(5)),
            "least loaded live node"
        );
        let d = desc(&[(1, false), (2, false), (3, false), (5, true)]);
        assert_eq!(
            decide(&d, &[3], &[], &five, false),
            Some(Action::Promote(4))
        );
        let d = desc(&[(1, false), (2, false), (3, false), (5, false)]);
        assert_eq!(
            decide(&d, &[3], &[], &five, false),
            Some(Action::Remove(3)),
            "the dead replica goes"
        );
    }

    #[test]
    fn keeps_a_dead_replica_when_there_is_no_replacement() {
        let three = [(1, 10, 3), (2, 10, 3), (3, 10, 3)];
        let d = desc(&[(1, false), (2, false), (3, false)]);
        assert_eq!(decide(&d, &[3], &[], &three, true), None);
    }

    #[test]
    fn drains_a_decommissioning_node_and_moves_leadership_off_it() {
        let four = [(1, 10, 3), (2, 10, 3), (3, 10, 3), (4, 0, 0)];
        let d = desc(&[(1, false), (2, false), (3, false)]);
        assert_eq!(
            decide(&d, &[], &[2], &four, false),
            Some(Action::AddLearner(4))
        );
        let d = desc(&[(1, false), (2, false), (3, false), (4, false)]);
        assert_eq!(decide(&d, &[], &[2], &four, false), Some(Action::Remove(2)));
        // The leader (node 1) is the one leaving and no replacement is
        // possible (node 2 is dead): leadership moves first.
        let d = desc(&[(1, false), (3, false), (4, false)]);
        assert_eq!(
            decide(&d, &[2], &[1], &four, false),
            Some(Action::TransferLeader(3))
        );
    }

    #[test]
    fn rebalances_onto_an_empty_node_only_when_allowed() {
        let four = [(1, 30, 10), (2, 30, 10), (3, 30, 10), (4, 0, 0)];
        let d = desc(&[(1, false), (2, false), (3, false)]);
        assert_eq!(decide(&d, &[], &[], &four, false), None);
        assert_eq!(
            decide(&d, &[], &[], &four, true),
            Some(Action::AddLearner(4))
        );
        // Four voters for a target of three: the most loaded (not the leader) goes.
        let d = desc(&[(1, false), (2, false), (3, false), (4, false)]);
        assert_eq!(
            decide(
                &d,
                &[],
                &[],
                &[(1, 30, 10), (2, 31, 10), (3, 30, 10), (4, 1, 0)],
                false
            ),
            Some(Action::Remove(2))
        );
    }

    #[test]
    fn a_node_far_below_the_mean_takes_load_from_nodes_a_little_above_it() {
        // 93 replicas and 31 leaders over 4 nodes (means 23.25 and 7.75):
        // no node is 10% above the replica mean or 15% above the leader
        // mean, but node 4 is clearly below both.
        let loads = [(1, 25, 9), (2, 25, 8), (3, 25, 8), (4, 18, 6)];
        let d = desc(&[(1, false), (2, false), (3, false)]);
        assert_eq!(
            decide(&d, &[], &[], &loads, true),
            Some(Action::AddLearner(4))
        );
        let d = desc(&[(1, false), (2, false), (4, false)]);
        assert_eq!(
            decide(&d, &[], &[], &loads, true),
            Some(Action::TransferLeader(3)),
            "to node 4's replica (id 3)"
        );
        // Close enough: nothing moves.
        let loads = [(1, 24, 8), (2, 24, 8), (3, 24, 8), (4, 21, 7)];
        let d = desc(&[(1, false), (2, false), (3, false)]);
        assert_eq!(decide(&d, &[], &[], &loads, true), None);
        let d = desc(&[(1, false), (2, false), (4, false)]);
        assert_eq!(decide(&d, &[], &[], &loads, true), None);
    }

    #[test]
    fn sheds_leadership_when_leading_more_than_its_share() {
        let loads = [(1, 10, 10), (2, 10, 1), (3, 10, 1)];
        let d = desc(&[(1, false), (2, false), (3, false)]);
        assert_eq!(
            decide(&d, &[], &[], &loads, true),
            Some(Action::TransferLeader(2))
        );
    }
}
