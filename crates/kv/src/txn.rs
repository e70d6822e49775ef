//! Transactions: the coordinator side.
//!
//! A [`Txn`] lives on the gateway node (the node the SQL client is connected
//! to). It owns:
//! - a read timestamp from the gateway's HLC, and an uncertainty limit (read
//!   timestamp + max clock offset) fixed when it began;
//! - a write buffer: puts and deletes stay here, overlaying the
//!   transaction's own reads, until commit;
//! - the spans it has read, so that its reads can be *refreshed* (checked
//!   unchanged) up to a later timestamp instead of restarting.
//!
//! ```text
//!  begin ─► read_ts = hlc.now(), limit = read_ts + max_offset
//!  get/scan ─► buffer hit? answer from the buffer : read at read_ts
//!     uncertain value at t ─► refresh read spans (read_ts, t] ─► read_ts = t, read again
//!                                        └─ changed ─► 40001
//!  put/delete ─► buffer
//!  commit, writes in one range ─► CommitRequest{writes, read spans} to its
//!            leader, which picks commit ts ≥ read_ts, refreshes if it moved
//!            up, replicates the writes as one Raft command (1PC)
//!  commit, writes in several ranges, or more than ONE_PHASE_MAX_WRITES
//!  writes / ONE_PHASE_MAX_BYTES ─► two-phase commit (see `twopc`), each
//!            range's intents written in chunks
//! ```
//!
//! # Large transactions
//! A one-phase commit is one Raft command holding every write, so it is
//! used only for transactions below [`ONE_PHASE_MAX_WRITES`] writes and
//! [`ONE_PHASE_MAX_BYTES`]. Larger ones go through the transaction record
//! even when they touch one range: their intents are written by several
//! PrepareRequests per range, each at most [`CHUNK_MAX_WRITES`] writes and
//! [`CHUNK_MAX_BYTES`] (so each Raft command, gRPC message and RocksDB
//! write batch stays a few MiB), a few in flight at once. The write buffer
//! is capped at [`MAX_BUFFER_BYTES`]: past it, writes fail with
//! [`Error::OutOfMemory`]. The limits are the fields of [`TxnLimits`]
//! (tests make them small).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use concord_hlc::Timestamp;
use concord_proto::kv::{
    self, request::Request as Req, response::Response as Resp, BatchRequest, Span, TxnHeader,
};

use crate::sender::DistSender;
use crate::{Error, Result};

mod resolver;
mod twopc;
pub use resolver::Resolver;
pub use twopc::failpoints;

/// How many times a read moves its timestamp for uncertainty before giving up.
/// The read timestamp only moves up and never past the fixed uncertainty
/// limit, so this loop ends on its own; the bound is a safety net.
/// The reason a transaction fails when a value it took from a cache
/// ([`Txn::assume_read`]) was written after the cache read it.
pub const ASSUMED_READ_CHANGED: &str = "ASSUMED_READ_CHANGED";

const MAX_UNCERTAINTY_RESTARTS: usize = 10_000;
/// How many times a request is regrouped because ranges split under it.
const MAX_REGROUPS: usize = 100;
/// How many times a commit refreshes its reads before giving up with 40001.
const MAX_COMMIT_REFRESHES: usize = 16;
/// Rows fetched per scan request.
const SCAN_PAGE: u64 = 1024;

/// A transaction with more buffered writes than this commits in two phases
/// even if every write falls in one range: a one-phase commit is a single
/// Raft command (and gRPC message, and RocksDB write batch) holding every
/// write. Equal to [`CHUNK_MAX_WRITES`]: what fits in one chunk commits in
/// one phase.
pub const ONE_PHASE_MAX_WRITES: usize = CHUNK_MAX_WRITES;
/// Likewise for the bytes of the keys and values of the buffered writes.
pub const ONE_PHASE_MAX_BYTES: usize = 4 << 20;
/// At most this many writes go into one PrepareRequest: a range's intents
/// are written by as many requests (Raft commands) as it takes. Intents are
/// resolved in spans holding at most this many of the transaction's keys.
pub const CHUNK_MAX_WRITES: usize = 8192;
/// At most this many bytes go into one PrepareRequest, counting each
/// write's key and value and the transaction meta its intent carries; a
/// resolution span likewise holds at most about this many bytes of intents
/// (a single write larger than this is a chunk of its own). Raft entries of
/// a few MiB replicate fine: see `replication::ready_loop` (max 1 MiB per
/// append message, but always at least one entry; 64 MiB uncommitted).
pub const CHUNK_MAX_BYTES: usize = 4 << 20;
/// PrepareRequests of one transaction in flight at once, over all ranges.
pub const PREPARE_MAX_IN_FLIGHT: usize = 8;
/// PrepareRequests of one transaction in flight at once on one range. One:
/// a range's latch manager compares every latch of a request with every
/// latch of each earlier one that is still held, so two chunks of thousands
/// of keys side by side on one range cost each other seconds (measured: a
/// 50,000-write commit took 86 s with two 8192-write chunks in flight per
/// range, 0.5 s with one). Ranges are still prepared in parallel.
pub const PREPARE_MAX_IN_FLIGHT_PER_RANGE: usize = 1;
/// ResolveIntents requests of one transaction in flight at once.
pub const RESOLVE_MAX_IN_FLIGHT: usize = 4;
/// The most a transaction may buffer: keys and values plus
/// [`BUFFERED_WRITE_OVERHEAD`] per write. A write that would pass it fails
/// with [`Error::OutOfMemory`] (SQLSTATE 53200).
pub const MAX_BUFFER_BYTES: usize = 4 << 30;
/// What one buffered write costs beyond its key and value bytes (the map
/// entry, the two vectors), for [`MAX_BUFFER_BYTES`].
pub const BUFFERED_WRITE_OVERHEAD: usize = 64;

/// Size limits of transactions begun from a [`Db`]: when a commit skips the
/// one-phase path, how its intents are chunked, how many requests are in
/// flight, and how much may be buffered. The defaults are the constants of
/// this module; tests lower them to exercise chunking on little data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnLimits {
    /// See [`ONE_PHASE_MAX_WRITES`].
    pub one_phase_max_writes: usize,
    /// See [`ONE_PHASE_MAX_BYTES`].
    pub one_phase_max_bytes: usize,
    /// See [`CHUNK_MAX_WRITES`].
    pub chunk_max_writes: usize,
    /// See [`CHUNK_MAX_BYTES`].
    pub chunk_max_bytes: usize,
    /// See [`PREPARE_MAX_IN_FLIGHT`].
    pub prepare_in_flight: usize,
    /// See [`PREPARE_MAX_IN_FLIGHT_PER_RANGE`].
    pub prepare_in_flight_per_range: usize,
    /// See [`RESOLVE_MAX_IN_FLIGHT`].
    pub resolve_in_flight: usize,
    /// See [`MAX_BUFFER_BYTES`].
    pub max_buffer_bytes: usize,
    /// See [`WOUND_GRACE`].
    pub wound_grace: Duration,
    /// See [`ADOPT_CLEANUP_AFTER`].
    pub adopt_cleanup_after: Duration,
}

impl Default for TxnLimits {
    fn default() -> Self {
        TxnLimits {
            one_phase_max_writes: ONE_PHASE_MAX_WRITES,
            one_phase_max_bytes: ONE_PHASE_MAX_BYTES,
            chunk_max_writes: CHUNK_MAX_WRITES,
            chunk_max_bytes: CHUNK_MAX_BYTES,
            prepare_in_flight: PREPARE_MAX_IN_FLIGHT,
            prepare_in_flight_per_range: PREPARE_MAX_IN_FLIGHT_PER_RANGE,
            resolve_in_flight: RESOLVE_MAX_IN_FLIGHT,
            max_buffer_bytes: MAX_BUFFER_BYTES,
            wound_grace: WOUND_GRACE,
            adopt_cleanup_after: ADOPT_CLEANUP_AFTER,
        }
    }
}

/// How long a writer of the higher priority waits for a pending intent
/// before it aborts the holder: most holders are short transactions about
/// to commit, and aborting them at once turns every brief overlap on a hot
/// row into a retry. Waiting stays free of deadlocks: after this grace
/// every wait ends in an abort of the lower priority, as before.
pub const WOUND_GRACE: Duration = Duration::from_millis(50);

/// A finished transaction's record found with intents still out this long
/// after it finished is cleaned up by the node that found it (see
/// `Txn::adopt_cleanup` in `twopc`); before that, its coordinator's own
/// cleanup is presumed to be running.
pub const ADOPT_CLEANUP_AFTER: Duration = Duration::from_secs(10);

/// Priorities are drawn below this; each retry of a statement adds it once
/// more, so that a transaction that keeps losing conflicts ends up winning.
const PRIORITY_STEP: i32 = 1 << 20;

/// Open transactions of a node, keyed by (read timestamp, id).
type ActiveTxns = Arc<Mutex<BTreeSet<(Timestamp, Vec<u8>)>>>;

/// The KV database: a factory of transactions.
#[derive(Clone)]
pub struct Db {
    sender: Arc<DistSender>,
    /// Batches the cleanup of committed transactions per range.
    resolver: Arc<Resolver>,
    /// Failpoints enabled on this database's transactions (tests only).
    failpoints: Arc<Mutex<HashSet<String>>>,
    /// Open transactions on this node, by read timestamp: MVCC GC must not
    /// collect versions they may still read.
    active: ActiveTxns,
    /// Size limits of the transactions begun from now on.
    limits: TxnLimits,
}

impl Db {
    /// A database over a sender.
    pub fn new(sender: Arc<DistSender>) -> Self {
        Db {
            resolver: Resolver::new(sender.clone()),
            sender,
            failpoints: Arc::default(),
            active: Arc::default(),
            limits: TxnLimits::default(),
        }
    }

    /// The size limits of the transactions this handle begins.
    pub fn limits(&self) -> TxnLimits {
        self.limits
    }

    /// Sets the size limits of the transactions this handle (and clones
    /// made from it afterwards) begins.
    pub fn set_limits(&mut self, limits: TxnLimits) {
        self.limits = limits;
    }

    /// The read timestamp of the oldest transaction open on this node.
    pub fn oldest_active_read_ts(&self) -> Option<Timestamp> {
        self.active.lock().iter().next().map(|(ts, _)| *ts)
    }

    /// Enables a failpoint (see [`failpoints`]) for transactions begun from
    /// now on: the coordinator stops at that step as if it had crashed.
    pub fn enable_failpoint(&self, name: &str) {
        self.failpoints.lock().insert(name.to_string());
    }

    /// Disables a failpoint.
    pub fn disable_failpoint(&self, name: &str) {
        self.failpoints.lock().remove(name);
    }

    /// The sender.
    pub fn sender(&self) -> &Arc<DistSender> {
        &self.sender
    }

    /// The node's cleanup batcher.
    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }

    /// Begins a transaction reading at the clock's current time.
    pub fn begin(&self) -> Txn {
        self.begin_attempt(0)
    }

    /// Begins a read-only transaction that reads at `ts`, in the past (AS OF
    /// SYSTEM TIME). Its reads have no uncertainty window, and replicas that
    /// have closed `ts` serve them without the leader.
    pub fn begin_as_of(&self, ts: Timestamp) -> Result<Txn> {
        let now = self.sender.clock().now();
        if ts > now {
            return Err(Error::InvalidTimestamp(format!(
                "AS OF SYSTEM TIME {ts} is in the future (now is {now})"
            )));
        }
        Ok(self.start(ts, ts, rand::random_range(1..PRIORITY_STEP), true))
    }

    /// Begins the `attempt`-th try of a transaction that is being retried:
    /// its priority in conflicts rises with every attempt.
    pub fn begin_attempt(&self, attempt: u32) -> Txn {
        let clock = self.sender.clock();
        let read_ts = clock.now();
        let base = rand::random_range(1..PRIORITY_STEP);
        let priority = base.saturating_add(PRIORITY_STEP.saturating_mul(attempt.min(1000) as i32));
        self.start(
            read_ts,
            read_ts.add_duration(clock.max_offset()),
            priority,
            false,
        )
    }

    /// A new transaction, registered among the open ones.
    fn start(
        &self,
        read_ts: Timestamp,
        uncertainty_limit: Timestamp,
        priority: i32,
        historical: bool,
    ) -> Txn {
        let id = rand::random::<[u8; 16]>().to_vec();
        self.active.lock().insert((read_ts, id.clone()));
        Txn {
            sender: self.sender.clone(),
            resolver: self.resolver.clone(),
            active: self.active.clone(),
            registered: read_ts,
            id,
            read_ts,
            uncertainty_limit,
            writes: BTreeMap::new(),
            buffered_bytes: 0,
            limits: self.limits,
            read_spans: Vec::new(),
            assumed: Vec::new(),
            finished: None,
            priority,
            failpoints: self.failpoints.clone(),
            historical,
            locks: None,
            collected: None,
            lock_updates: false,
            locked_values: HashMap::new(),
            lock_replies: Mutex::new(Vec::new()),
        }
    }
}

/// A transaction. Dropping it without committing rolls it back.
pub struct Txn {
    sender: Arc<DistSender>,
    resolver: Arc<Resolver>,
    id: Vec<u8>,
    read_ts: Timestamp,
    uncertainty_limit: Timestamp,
    /// Buffered writes: `None` is a deletion.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// What `writes` costs, as [`MAX_BUFFER_BYTES`] counts it.
    buffered_bytes: usize,
    /// Size limits (from the [`Db`]).
    limits: TxnLimits,
    read_spans: Vec<Span>,
    finished: Option<&'static str>,
    /// Who wins a write-write conflict: the higher priority.
    priority: i32,
    failpoints: Arc<Mutex<HashSet<String>>>,
    /// The registry of open transactions, and the timestamp this one is
    /// registered under (its first read timestamp; refreshes only move up).
    active: ActiveTxns,
    registered: Timestamp,
    /// Read-only at a past timestamp (AS OF SYSTEM TIME).
    historical: bool,
    /// The record, heartbeat and locks of a transaction that locked keys
    /// (SELECT … FOR UPDATE) before committing.
    locks: Option<twopc::Locks>,
    /// Keys of user tables read since `collect_reads` started (FOR UPDATE
    /// locks what the statement read).
    collected: Option<Vec<Vec<u8>>>,
    /// Whether the SQL layer should lock rows before it updates them
    /// ([`Txn::lock_for_update`]): set for transaction blocks, where a
    /// conflict found at COMMIT costs the client a retry of everything.
    lock_updates: bool,
    /// Keys taken from the caller's cache, with the timestamp each cached
    /// value was read at ([`Txn::assume_read`]).
    assumed: Vec<(Vec<u8>, Timestamp)>,
    /// Values of keys this transaction locked, as the locks' ranges
    /// returned them ([`Txn::lock_for_update`]): while the lock holds they
    /// are what a read returns, so reads take them from here.
    locked_values: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Values returned by lock requests in flight (gathered from
    /// concurrent prepares, moved to `locked_values` once the lock's
    /// refresh succeeded).
    lock_replies: Mutex<Vec<kv::LockedValue>>,
}

impl Drop for Txn {
    fn drop(&mut self) {
        self.deregister();
        self.release_locks();
    }
}

impl Txn {
    /// The transaction id.
    pub fn id(&self) -> &[u8] {
        &self.id
    }

    /// The current read timestamp.
    pub fn read_ts(&self) -> Timestamp {
        self.read_ts
    }

    /// Asks the SQL layer to lock the rows an UPDATE or DELETE changes
    /// before reading them (see [`Txn::lock_for_update`]).
    pub fn set_lock_updates(&mut self, on: bool) {
        self.lock_updates = on;
    }

    /// Whether rows are locked before they are updated.
    pub fn locks_updates(&self) -> bool {
        self.lock_updates
    }

    /// Whether the transaction has buffered writes.
    pub fn has_writes(&self) -> bool {
        !self.writes.is_empty()
    }

    /// What the buffered writes cost, as [`MAX_BUFFER_BYTES`] counts it.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// Leaves the registry of open transactions (at commit, rollback or
    /// drop, whichever comes first).
    fn deregister(&self) {
        self.active
            .lock()
            .remove(&(self.registered, self.id.clone()));
    }

    fn check_open(&self) -> Result<()> {
        match self.finished {
            Some(state) => Err(Error::TxnFinished(state)),
            None => Ok(()),
        }
    }

    fn header(&self) -> TxnHeader {
        TxnHeader {
            historical: self.historical,
            id: self.id.clone(),
            read_ts: Some(self.read_ts.into()),
            uncertainty_limit: Some(self.uncertainty_limit.into()),
        }
    }

    fn batch(&self, requests: Vec<Req>) -> BatchRequest {
        BatchRequest {
            gateway_node_id: 0,
            range_id: 0,
            now: None,
            txn: Some(self.header()),
            requests: requests
                .into_iter()
                .map(|r| kv::Request { request: Some(r) })
                .collect(),
        }
    }

    /// Sends read requests for the range of `route_key`, moving the read
    /// timestamp (with a refresh) when a value is uncertain.
    async fn send_reads(
        &mut self,
        route_key: &[u8],
        requests: Vec<Req>,
    ) -> Result<Vec<kv::Response>> {
        for _ in 0..MAX_UNCERTAINTY_RESTARTS {
            let req = self.batch(requests.clone());
            match self.sender.send(route_key, req, false).await {
                Err(Error::Uncertainty { ts, .. }) => {
                    self.refresh_to(ts.max(self.read_ts.next())).await?;
                }
                // A reader that holds nothing waits for (never aborts) a
                // live writer. One that holds locks may be what that writer
                // waits for, so it pushes as a writer does: after the grace
                // the higher priority wins, and the wait cannot be a cycle.
                Err(Error::WriteIntent { key, intent }) => {
                    let keys_asked = if requests.iter().any(|r| matches!(r, Req::Scan(_))) {
                        usize::MAX
                    } else {
                        requests.len()
                    };
                    let may_abort = self.locks.is_some();
                    self.handle_intent(&key, &intent, may_abort, keys_asked)
                        .await?;
                }
                other => return other,
            }
        }
        Err(Error::TransactionRetry {
            key: Vec::new(),
            txn: concord_storage::fmt_txn_id(&self.id),
            reason: format!(
                "READ_WITHIN_UNCERTAINTY_INTERVAL: still uncertain after {MAX_UNCERTAINTY_RESTARTS} refreshes"
            ),
        })
    }

    /// Moves the read timestamp to `to` after checking that nothing this
    /// transaction read has changed in between.
    async fn refresh_to(&mut self, to: Timestamp) -> Result<()> {
        if to <= self.read_ts {
            return Ok(());
        }
        self.refresh_spans(&self.read_spans, self.read_ts, to)
            .await?;
        self.read_ts = to;
        Ok(())
    }

    /// Checks that nothing was written in `spans` in `(from, to]`, grouping
    /// the spans by range again whenever ranges change under the refresh.
    async fn refresh_spans(&self, spans: &[Span], from: Timestamp, to: Timestamp) -> Result<()> {
        for _ in 0..MAX_REGROUPS {
            match self.refresh_spans_once(spans, from, to).await {
                Err(Error::RangeChanged) => continue,
                other => return other,
            }
        }
        Err(Error::Unavailable(
            "ranges kept changing during a refresh".into(),
        ))
    }

    /// One attempt at [`Txn::refresh_spans`].
    async fn refresh_spans_once(
        &self,
        spans: &[Span],
        from: Timestamp,
        to: Timestamp,
    ) -> Result<()> {
        // Group the spans by range and refresh each group.
        let mut by_range: BTreeMap<u64, (Vec<u8>, Vec<Span>)> = BTreeMap::new();
        for sp in spans {
            let descs = if sp.end.is_empty() {
                vec![self.sender.range_for_key(&sp.start).await?]
            } else {
                self.sender.ranges_for_span(&sp.start, &sp.end).await?
            };
            for d in descs {
                let clipped = clip(sp, &d.start_key, &d.end_key);
                let entry = by_range
                    .entry(d.range_id)
                    .or_insert_with(|| (clipped.start.clone(), Vec::new()));
                entry.1.push(clipped);
            }
        }
        for (_, (route_key, spans)) in by_range {
            let req = self.batch(vec![Req::Refresh(kv::RefreshRequest {
                spans,
                from: Some(from.into()),
                to: Some(to.into()),
            })]);
            self.sender.send(&route_key, req, false).await?;
        }
        Ok(())
    }

    /// Counts `key` as read by this transaction although its value came
    /// from the caller's cache, filled by a read at `since` (the SQL layer's
    /// descriptor cache). Before the transaction commits, a refresh checks
    /// that nothing wrote the key after `since` (else a retryable error
    /// whose reason starts with [`ASSUMED_READ_CHANGED`]); from then on the
    /// key is in the read set like any other. `since` must not be above the
    /// transaction's read timestamp.
    pub fn assume_read(&mut self, key: &[u8], since: Timestamp) {
        self.assumed.push((key.to_vec(), since));
    }

    /// Whether this is a read-only transaction at a past timestamp (it
    /// never commits, so it cannot validate assumed reads).
    pub fn is_historical(&self) -> bool {
        self.historical
    }

    /// The sender this transaction goes through (one per node).
    pub fn sender(&self) -> &Arc<DistSender> {
        &self.sender
    }

    /// Whether this transaction has buffered writes in `[start, end)`.
    pub fn wrote_in(&self, start: &[u8], end: &[u8]) -> bool {
        self.buffered_in(start, end) > 0
    }

    /// Whether the transaction holds assumed reads not yet checked.
    pub fn has_assumed_reads(&self) -> bool {
        !self.assumed.is_empty()
    }

    /// Checks the assumed reads now rather than at commit (when an error
    /// the caller is about to report may be due to a stale cached value).
    pub async fn check_assumed_reads(&mut self) -> Result<()> {
        self.validate_assumed().await
    }

    /// Checks the keys of [`Txn::assume_read`]: one refresh from the oldest
    /// `since` to the read timestamp.
    async fn validate_assumed(&mut self) -> Result<()> {
        let Some(from) = self.assumed.iter().map(|(_, t)| *t).min() else {
            return Ok(());
        };
        let mut keys: Vec<Vec<u8>> = std::mem::take(&mut self.assumed)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        keys.dedup();
        let spans: Vec<Span> = keys
            .into_iter()
            .map(|start| Span { start, end: vec![] })
            .collect();
        if from < self.read_ts {
            match self.refresh_spans(&spans, from, self.read_ts).await {
                Err(e) if e.is_retryable() => {
                    return Err(Error::TransactionRetry {
                        key: Vec::new(),
                        txn: concord_storage::fmt_txn_id(&self.id),
                        reason: format!("{ASSUMED_READ_CHANGED}: {e}"),
                    })
                }
                other => other?,
            }
        }
        self.read_spans.extend(spans);
        Ok(())
    }

    /// Starts remembering the user-table keys this transaction reads, for
    /// [`Txn::lock_collected`].
    pub fn collect_reads(&mut self) {
        self.collected = Some(Vec::new());
    }

    /// Locks every user-table key read since [`Txn::collect_reads`] (the
    /// rows a `SELECT … FOR UPDATE` returned).
    pub async fn lock_collected(&mut self) -> Result<()> {
        let keys = self.collected.take().unwrap_or_default();
        self.lock_for_update(&keys).await
    }

    fn note_read(&mut self, key: &[u8]) {
        if let Some(c) = self.collected.as_mut() {
            if key >= concord_storage::keys::MIN_SPLIT_KEY {
                c.push(key.to_vec());
            }
        }
    }

    /// A key's value as its lock returned it, if this transaction locked
    /// it: counted as a read (for refreshes and FOR UPDATE).
    fn locked_value(&mut self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        let v = self.locked_values.get(key)?.clone();
        self.read_spans.push(Span {
            start: key.to_vec(),
            end: vec![],
        });
        if v.is_some() {
            self.note_read(key);
        }
        Some(v)
    }

    /// Reads one key.
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_open()?;
        if let Some(v) = self.writes.get(key) {
            return Ok(v.clone());
        }
        if let Some(v) = self.locked_value(key) {
            return Ok(v);
        }
        let mut resp = Err(Error::RangeChanged);
        for _ in 0..MAX_REGROUPS {
            resp = self
                .send_reads(key, vec![Req::Get(kv::GetRequest { key: key.to_vec() })])
                .await;
            if !matches!(resp, Err(Error::RangeChanged)) {
                break;
            }
        }
        let resp = resp?;
        self.read_spans.push(Span {
            start: key.to_vec(),
            end: vec![],
        });
        match resp.into_iter().next().and_then(|r| r.response) {
            Some(Resp::Get(g)) => {
                if g.found {
                    self.note_read(key);
                }
                Ok(g.found.then_some(g.value))
            }
            other => Err(Error::Internal(format!(
                "unexpected response to get: {other:?}"
            ))),
        }
    }

    /// Reads many keys, one batch per range.
    pub async fn get_many(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        self.check_open()?;
        let mut out: Vec<Option<Option<Vec<u8>>>> = Vec::with_capacity(keys.len());
        for k in keys {
            let known = match self.writes.get(k) {
                Some(v) => Some(v.clone()),
                None => self.locked_value(k),
            };
            out.push(known);
        }
        let mut regroups = 0;
        'regroup: loop {
            let mut by_range: BTreeMap<u64, (Vec<u8>, Vec<usize>)> = BTreeMap::new();
            for (i, k) in keys.iter().enumerate() {
                if out[i].is_none() {
                    let d = self.sender.range_for_key(k).await?;
                    by_range
                        .entry(d.range_id)
                        .or_insert_with(|| (k.clone(), Vec::new()))
                        .1
                        .push(i);
                }
            }
            for (_, (route_key, idxs)) in by_range {
                let reqs = idxs
                    .iter()
                    .map(|&i| {
                        Req::Get(kv::GetRequest {
                            key: keys[i].clone(),
                        })
                    })
                    .collect();
                let resps = match self.send_reads(&route_key, reqs).await {
                    Err(Error::RangeChanged) if regroups < MAX_REGROUPS => {
                        regroups += 1;
                        continue 'regroup;
                    }
                    other => other?,
                };
                if resps.len() != idxs.len() {
                    return Err(Error::Internal("wrong number of responses to gets".into()));
                }
                for (&i, r) in idxs.iter().zip(resps) {
                    self.read_spans.push(Span {
                        start: keys[i].clone(),
                        end: vec![],
                    });
                    match r.response {
                        Some(Resp::Get(g)) => {
                            if g.found {
                                self.note_read(&keys[i]);
                            }
                            out[i] = Some(g.found.then_some(g.value))
                        }
                        other => {
                            return Err(Error::Internal(format!(
                                "unexpected response to get: {other:?}"
                            )))
                        }
                    }
                }
            }
            break;
        }
        Ok(out.into_iter().map(|v| v.flatten()).collect())
    }

    /// Reads `[start, end)` (`end` empty: to the end of the keyspace), at
    /// most `limit` rows (0 = all), in key order, with this transaction's own
    /// writes applied.
    pub async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.check_open()?;
        let mut out = Vec::new();
        let mut cursor = start.to_vec();
        let mut regroups = 0;
        'ranges: loop {
            let desc = self.sender.range_for_key(&cursor).await?;
            let range_end = clip_end(end, &desc.end_key);
            loop {
                let page = if limit == 0 {
                    SCAN_PAGE
                } else {
                    SCAN_PAGE.min(
                        (limit - out.len()) as u64 + self.buffered_in(&cursor, &range_end) as u64,
                    )
                };
                let resp = match self
                    .send_reads(
                        &cursor,
                        vec![Req::Scan(kv::ScanRequest {
                            start: cursor.clone(),
                            end: range_end.clone(),
                            limit: page,
                            reverse: false,
                        })],
                    )
                    .await
                {
                    // The range split under us: look its bounds up again.
                    Err(Error::RangeChanged) if regroups < MAX_REGROUPS => {
                        regroups += 1;
                        continue 'ranges;
                    }
                    other => other?,
                };
                let scan = match resp.into_iter().next().and_then(|r| r.response) {
                    Some(Resp::Scan(s)) => s,
                    other => {
                        return Err(Error::Internal(format!(
                            "unexpected response to scan: {other:?}"
                        )))
                    }
                };
                let page_end = if scan.resume_key.is_empty() {
                    range_end.clone()
                } else {
                    scan.resume_key.clone()
                };
                if self.collected.is_some() {
                    for row in &scan.rows {
                        self.note_read(&row.key);
                    }
                }
                self.merge_buffer(&cursor, &page_end, scan.rows, &mut out);
                if limit > 0 && out.len() >= limit {
                    out.truncate(limit);
                    let last = out.last().map(|(k, _)| k.clone()).unwrap_or_default();
                    self.record_read_span(&cursor, &[last.as_slice(), &[0u8]].concat());
                    break 'ranges;
                }
                // Record each page as soon as it is read: if a later page
                // moves the read timestamp (uncertainty), the refresh must
                // cover what this scan has already returned.
                self.record_read_span(&cursor, &page_end);
                if scan.resume_key.is_empty() {
                    break;
                }
                cursor = scan.resume_key;
            }
            if range_end.is_empty() || range_end == end {
                break;
            }
            cursor = range_end;
        }
        Ok(out)
    }

    /// Remembers that `[start, end)` was read (`end` empty: to the end of
    /// the keyspace).
    fn record_read_span(&mut self, start: &[u8], end: &[u8]) {
        let end = if end.is_empty() {
            // Spans with an empty end are single keys; no key starts 0xff.
            vec![0xff]
        } else {
            end.to_vec()
        };
        if start < end.as_slice() {
            self.read_spans.push(Span {
                start: start.to_vec(),
                end,
            });
        }
    }

    fn buffered_in(&self, start: &[u8], end: &[u8]) -> usize {
        self.buffer_range(start, end).count()
    }

    fn buffer_range<'a>(
        &'a self,
        start: &[u8],
        end: &[u8],
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)> + 'a {
        let start = start.to_vec();
        let end = end.to_vec();
        self.writes
            .range(start..)
            .take_while(move |(k, _)| end.is_empty() || k.as_slice() < end.as_slice())
    }

    /// Merges committed rows of `[start, end)` with the buffered writes there.
    fn merge_buffer(
        &self,
        start: &[u8],
        end: &[u8],
        rows: Vec<kv::KeyValue>,
        out: &mut Vec<(Vec<u8>, Vec<u8>)>,
    ) {
        let mut buffered = self.buffer_range(start, end).peekable();
        for row in rows {
            while let Some((bk, bv)) = buffered.peek() {
                if bk.as_slice() < row.key.as_slice() {
                    if let Some(v) = bv {
                        out.push(((*bk).clone(), v.clone()));
                    }
                    buffered.next();
                } else {
                    break;
                }
            }
            match buffered.peek() {
                Some((bk, bv)) if bk.as_slice() == row.key.as_slice() => {
                    if let Some(v) = bv {
                        out.push(((*bk).clone(), v.clone()));
                    }
                    buffered.next();
                }
                _ => out.push((row.key, row.value)),
            }
        }
        for (bk, bv) in buffered {
            if let Some(v) = bv {
                out.push((bk.clone(), v.clone()));
            }
        }
    }

    fn check_writable(&self) -> Result<()> {
        if self.historical {
            return Err(Error::ReadOnly(
                "cannot write in a transaction reading AS OF SYSTEM TIME".into(),
            ));
        }
        Ok(())
    }

    /// Buffers a write.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.buffer(key, Some(value))
    }

    /// Buffers a deletion.
    pub fn delete(&mut self, key: Vec<u8>) -> Result<()> {
        self.buffer(key, None)
    }

    /// Buffers a put (`Some`) or a deletion, unless the buffer would pass
    /// its limit.
    fn buffer(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<()> {
        self.check_open()?;
        self.check_writable()?;
        let cost = |v: &Option<Vec<u8>>| {
            key.len() + v.as_ref().map_or(0, |v| v.len()) + BUFFERED_WRITE_OVERHEAD
        };
        let replaced = self.writes.get(&key).map_or(0, cost);
        let total = self.buffered_bytes - replaced + cost(&value);
        if total > self.limits.max_buffer_bytes {
            return Err(Error::OutOfMemory(format!(
                "transaction {} buffers {} writes in {} bytes, and this write would pass the \
                 limit of {} bytes; split the work into smaller transactions",
                concord_storage::fmt_txn_id(&self.id),
                self.writes.len(),
                self.buffered_bytes,
                self.limits.max_buffer_bytes
            )));
        }
        self.writes.insert(key, value);
        self.buffered_bytes = total;
        Ok(())
    }

    /// Commits: returns the commit timestamp. A transaction without writes
    /// commits at its read timestamp without contacting anyone.
    ///
    /// If the leader must move the commit timestamp above the read timestamp
    /// and the transaction read on other ranges, it answers `NeedsRefresh`:
    /// the reads are refreshed to the new timestamp here and the commit is
    /// sent again.
    pub async fn commit(&mut self) -> Result<Timestamp> {
        self.check_open()?;
        if let Err(e) = self.validate_assumed().await {
            self.rollback();
            return Err(e);
        }
        if self.writes.is_empty() && self.locks.is_none() {
            self.deregister();
            self.finished = Some("committed");
            return Ok(self.read_ts);
        }
        let first = self.writes.keys().next().cloned().unwrap_or_default();
        let last = self.writes.keys().next_back().cloned().unwrap_or_default();
        self.buffered_bytes = 0;
        let writes: Vec<kv::Write> = std::mem::take(&mut self.writes)
            .into_iter()
            .map(|(key, v)| kv::Write::put_or_delete(key, v))
            .collect();
        // A transaction that holds locks ends through its record, whatever
        // its writes (none, only locks: the record ends and they go). So
        // does a large one, whose intents are written in chunks.
        let bytes: usize = writes.iter().map(|w| w.key.len() + w.value.len()).sum();
        let large = writes.len() > self.limits.one_phase_max_writes
            || bytes > self.limits.one_phase_max_bytes;
        let result = if self.locks.is_some() || large {
            self.commit_two_phase(writes).await
        } else {
            self.commit_writes(&first, &last, writes).await
        };
        self.deregister();
        self.finished = Some(if result.is_ok() {
            "committed"
        } else {
            "aborted"
        });
        result
    }

    async fn commit_writes(
        &mut self,
        first: &[u8],
        last: &[u8],
        writes: Vec<kv::Write>,
    ) -> Result<Timestamp> {
        for _ in 0..MAX_COMMIT_REFRESHES {
            let desc = self.sender.range_for_key(first).await?;
            let in_range = |k: &[u8]| {
                k >= desc.start_key.as_slice()
                    && (desc.end_key.is_empty() || k < desc.end_key.as_slice())
            };
            if !in_range(last) {
                return self.commit_two_phase(writes).await;
            }
            let mut read_spans = Vec::new();
            let mut reads_elsewhere = false;
            for sp in &self.read_spans {
                let inside = if sp.end.is_empty() {
                    in_range(&sp.start)
                } else {
                    sp.start.as_slice() < desc.end_key.as_slice() || desc.end_key.is_empty()
                };
                let whole = if sp.end.is_empty() {
                    inside
                } else {
                    sp.start.as_slice() >= desc.start_key.as_slice()
                        && (desc.end_key.is_empty()
                            || (!sp.end.is_empty() && sp.end.as_slice() <= desc.end_key.as_slice()))
                };
                if !whole {
                    reads_elsewhere = true;
                }
                if inside && (sp.end.is_empty() || sp.end.as_slice() > desc.start_key.as_slice()) {
                    read_spans.push(clip(sp, &desc.start_key, &desc.end_key));
                }
            }
            let req = self.batch(vec![Req::Commit(kv::CommitRequest {
                writes: writes.clone(),
                read_spans,
                reads_elsewhere,
            })]);
            match self.sender.send(first, req, true).await {
                Ok(r) => {
                    return match r.into_iter().next().and_then(|r| r.response) {
                        Some(Resp::Commit(c)) => Ok(concord_proto::ts(c.commit_ts)),
                        other => Err(Error::Internal(format!(
                            "unexpected response to commit: {other:?}"
                        ))),
                    }
                }
                Err(Error::NeedsRefresh { ts }) => self.refresh_to(ts).await?,
                Err(Error::RangeChanged) => continue,
                Err(Error::WriteIntent { key, intent }) => {
                    self.handle_intent(&key, &intent, true, writes.len())
                        .await?
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::TransactionRetry {
            key: Vec::new(),
            txn: concord_storage::fmt_txn_id(&self.id),
            reason: "RETRY_SERIALIZABLE: the commit timestamp kept moving".into(),
        })
    }

    /// Abandons the transaction: its buffered writes are dropped.
    pub fn rollback(&mut self) {
        self.deregister();
        self.release_locks();
        self.writes.clear();
        self.buffered_bytes = 0;
        self.finished = Some("aborted");
    }
}

/// `sp` clipped to `[start, end)`.
fn clip(sp: &Span, start: &[u8], end: &[u8]) -> Span {
    if sp.end.is_empty() {
        return sp.clone();
    }
    let s = if sp.start.as_slice() < start {
        start.to_vec()
    } else {
        sp.start.clone()
    };
    Span {
        start: s,
        end: clip_end(&sp.end, end),
    }
}

/// The smaller of two span ends, where empty means unbounded.
fn clip_end(a: &[u8], b: &[u8]) -> Vec<u8> {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_vec(),
        (_, true) => a.to_vec(),
        _ => a.min(b).to_vec(),
    }
}
