//! Two-phase commit, and what a transaction does when it meets another
//! transaction's intent.
//!
//! ```text
//!  commit with writes on several ranges
//!  ─────────────────────────────────────
//!  Prepare(begin) of the first key  record PENDING and the first ── crash: the record
//!   (the anchor), alone             intent, one Raft command        expires, as below
//!  heartbeat task, every second     record.heartbeat = now
//!  Prepare, chunks of each other    intents at ts_i ≥ read_ts   ── crash: record expires,
//!   range                                                          pushers abort it and
//!                                                                  remove the intents
//!  commit_ts = max(ts_i); if > read_ts: refresh reads or abort (40001)
//!  EndTxn(COMMITTED, commit_ts)     ◄── the commit point        ── crash after: readers find
//!   + the anchor range's writes                                     COMMITTED and resolve
//!     as versions, same command
//!  reply to the client
//!  (background) ResolveIntents per range, then GcTxn, batched per range
//!              with other transactions' by the node's resolver
//! ```
//!
//! A coordinator that stops between its commit point and the end of its
//! cleanup (its node restarted, a request failed) leaves intents and a
//! finished record behind. Whoever meets one of those intents resolves
//! it, and, once the record is older than
//! [`TxnLimits::adopt_cleanup_after`], also takes over the whole cleanup in
//! the background (`Txn::adopt_cleanup`): otherwise every remaining intent
//! (a whole table after `ADD PRIMARY KEY`) would cost the next transaction
//! that meets it a push, a resolve and a retry, and the record would never
//! go.
//!
//! Meeting an intent (a read at or above its timestamp, or a write):
//! PushTxn to the intent's record. A finished (or vanished) transaction's
//! intent is resolved and the request sent again; a pending one is waited
//! for at its record (the push waits there until the record changes, so a
//! waiter goes on as soon as the holder commits), unless its coordinator
//! stopped heartbeating
//! (the record's range aborts it) or — for writers, and readers that hold
//! locks — the pusher has the higher priority and has waited a short grace
//! (the pushee is aborted). Past the grace, waits only go from lower to
//! higher priority among transactions that hold something, and a reader
//! that holds nothing cannot be waited for, so there is no lasting waiting
//! cycle; a wait is bounded and ends in a retry error. (A reader holding
//! locks that only waited could close one: a transaction that locked row
//! A reads row B while the writer of B waits for A; both would sit out the
//! whole wait.)
//!
//! Locks (`SELECT … FOR UPDATE`, and UPDATE/DELETE inside a transaction
//! block: [`Txn::lock_for_update`]) use the same machinery early: the record
//! is created when the first lock is taken, locks are lock-only intents
//! (readers pass them; they leave no version), and the transaction then
//! commits or aborts through its record whatever its writes. The first
//! lock is replicated with the record; later ones are *unreplicated*: the
//! key's leader holds them in memory (`concord_replication::locktable`),
//! which costs a ReadIndex round instead of a replicated, fsynced command.
//! Writers meet them as they meet intents (WriteIntent, then a push). A
//! lock lost with its leader only weakens the wait, not serializability:
//! the locked value was read at the lock's timestamp and the commit
//! refreshes it.
//!
//! # Chunks
//! A range's intents are written by as many PrepareRequests as it takes to
//! keep each under [`TxnLimits::chunk_max_writes`] writes and
//! [`TxnLimits::chunk_max_bytes`], a bounded number in flight. Nothing in
//! the protocol needs one request per range: chunks are evaluated like
//! prepares on different ranges (each under its own latches, checked
//! against other intents, newer versions and the timestamp cache, at its
//! own timestamp ts_i), and the commit timestamp is the maximum over all of
//! them. Until the commit point the record is PENDING, so a reader or
//! pusher meeting any intent, of a chunk written or not, sees a pending
//! transaction, exactly as for a half-prepared transaction on several
//! ranges.
//!
//! The spans where intents may be (the record's `intent_spans`, what
//! cleanup resolves) are computed from every key the transaction sent, cut
//! the same way: each span holds at most a chunk's worth of the
//! transaction's intents, so each ResolveIntents command is bounded too. A
//! scan or a request for many keys that meets the intent of a finished
//! transaction resolves the whole span holding it (one request instead of
//! one per key); a request for a few keys resolves just the key, so that a
//! point write does not wait behind thousands of intents it does not need.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use concord_proto::meta::{KeySpan, TxnMeta, TxnRecord, TxnStatus};
use futures::stream::{FuturesUnordered, StreamExt, TryStreamExt};
use prost::Message as _;

/// A transaction's record once it exists (it locked keys, or it is
/// committing in two phases): the record's meta, its heartbeat task, the
/// keys it locked, and whether the record was found finished.
pub(super) struct Locks {
    pub(super) meta: TxnMeta,
    pub(super) heartbeat: tokio::task::JoinHandle<()>,
    /// Every key a lock was sent for (intents may be there).
    pub(super) keys: BTreeSet<Vec<u8>>,
    /// Once a commit has started: where its intents may be (covering
    /// `keys` too), for a rollback if the commit is abandoned midway (its
    /// future dropped).
    pub(super) commit_spans: Vec<KeySpan>,
    /// Set by the heartbeat once the record is no longer PENDING (a pusher
    /// aborted it): the transaction stops writing intents.
    pub(super) stopped: Arc<AtomicBool>,
}

use super::*;

/// How often a coordinator heartbeats its transaction record. The record
/// expires after the store's `txn_expiry` (5 s by default) without one.
pub(crate) const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a transaction waits for another's pending intent before it
/// gives up with a retry error.
const MAX_INTENT_WAIT: Duration = Duration::from_secs(20);
/// A wait for an intent longer than this is logged (once per wait), with
/// both transactions: a lasting one is a conflict hot spot or a cycle.
const SLOW_INTENT_WAIT: Duration = Duration::from_secs(2);
/// How long a push asks the record's range to wait for a pending
/// transaction to finish (it answers as soon as the record changes).
const PUSH_WAIT: Duration = Duration::from_millis(500);
/// A request for at most this many keys that meets the intent of a
/// finished transaction resolves that key alone; a larger one (or a scan)
/// resolves the span of intents around it.
const POINT_RESOLVE_MAX_KEYS: usize = 16;
/// The longest pause between two pushes that came back at once.
const MAX_PUSH_BACKOFF: Duration = Duration::from_millis(20);

/// Failpoints of the commit protocol, for tests that crash a coordinator at
/// a chosen step.
pub mod failpoints {
    /// The coordinator stops (as if its process died) after its intents are
    /// written and before the commit point.
    pub const AFTER_PREPARE: &str = "2pc-after-prepare";
    /// The coordinator stops right after the commit point, before it
    /// acknowledges or resolves anything.
    pub const AFTER_COMMIT: &str = "2pc-after-commit";
    /// The answer to a successful EndTxn is lost: the coordinator sees an
    /// ambiguous error and cleans up as if it had failed.
    pub const LOST_COMMIT_ANSWER: &str = "2pc-lost-commit-answer";
}

impl Txn {
    pub(super) fn meta(&self, anchor: &[u8]) -> TxnMeta {
        TxnMeta {
            id: self.id.clone(),
            write_ts: Some(self.read_ts.into()),
            read_ts: Some(self.read_ts.into()),
            epoch: 0,
            priority: self.priority,
            anchor_key: anchor.to_vec(),
        }
    }

    fn failpoint(&self, name: &str) -> bool {
        self.failpoints.lock().contains(name)
    }

    /// Deals with `intent`, met on `key`: resolves it if its transaction is
    /// over, aborts it if allowed, or waits for it.
    pub(super) async fn handle_intent(
        &self,
        key: &[u8],
        intent: &TxnMeta,
        may_abort: bool,
        keys_asked: usize,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let mut backoff = Duration::from_millis(2);
        let mut warned = false;
        loop {
            let waited = started.elapsed();
            let grace = self.limits.wound_grace;
            let abort = may_abort && waited >= grace;
            // Wait at the record for the holder to finish: a writer that may
            // abort it only until the grace is over, anyone else longer.
            let wait = if may_abort && !abort {
                grace - waited
            } else {
                PUSH_WAIT
            };
            let req = Req::PushTxn(kv::PushTxnRequest {
                pushee: Some(intent.clone()),
                abort,
                pusher_priority: self.priority,
                pusher_id: self.id.clone(),
                wait_ms: wait.as_millis().clamp(1, u128::from(u32::MAX)) as u32,
            });
            let asked = std::time::Instant::now();
            let resp = send_one(&self.sender, &intent.anchor_key, self.batch(vec![req])).await?;
            let record = record_of(resp)?;
            let finished = match &record {
                None => Some((TxnStatus::Aborted, Timestamp::ZERO)),
                Some(r) => match TxnStatus::try_from(r.status).unwrap_or(TxnStatus::Pending) {
                    TxnStatus::Pending => None,
                    status => Some((status, concord_proto::ts(r.commit_ts))),
                },
            };
            if let Some((status, commit_ts)) = finished {
                if let Some(r) = &record {
                    self.adopt_cleanup(r, status, commit_ts);
                }
                // A request for many keys (a scan, a big batch) resolves the
                // whole span of the record holding the key (at most a chunk
                // of intents), or it would meet them one at a time; a
                // request for a few keys resolves the key alone, leaving the
                // span to the holder's cleanup, so that it does not stall
                // (under the span's latch) behind thousands of intents it
                // does not need (a benchmark right after a bulk load).
                let span = record
                    .as_ref()
                    .filter(|_| keys_asked > POINT_RESOLVE_MAX_KEYS)
                    .and_then(|r| r.intent_spans.iter().find(|s| span_holds(s, key)))
                    .cloned()
                    .unwrap_or_else(|| KeySpan {
                        start: key.to_vec(),
                        end: vec![],
                    });
                return resolve_spans(
                    &self.sender,
                    None,
                    &intent.id,
                    status,
                    commit_ts,
                    &[span],
                    1,
                )
                .await;
            }
            if !warned && started.elapsed() > SLOW_INTENT_WAIT {
                warned = true;
                tracing::warn!(
                    key = %concord_storage::fmt_key(key),
                    holder = %concord_storage::fmt_txn_id(&intent.id),
                    holder_priority = intent.priority,
                    waiter = %concord_storage::fmt_txn_id(&self.id),
                    waiter_priority = self.priority,
                    may_abort,
                    holds_record = self.locks.is_some(),
                    "slow wait for another transaction's intent"
                );
            }
            if started.elapsed() > MAX_INTENT_WAIT {
                return Err(Error::TransactionRetry {
                    key: key.to_vec(),
                    txn: concord_storage::fmt_txn_id(&intent.id),
                    reason: format!(
                        "WRITE_INTENT: gave up after waiting {:?} for the conflicting transaction",
                        MAX_INTENT_WAIT
                    ),
                });
            }
            // The record's range waited for us; a quick PENDING answer
            // (a server that does not wait) is polled with backoff.
            if asked.elapsed() < wait / 2 {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_PUSH_BACKOFF);
            }
        }
    }

    /// Cleans up, in the background, after a finished transaction whose
    /// intents are still out long after it finished: its coordinator's
    /// cleanup stopped (the node restarted or died, or a request of it
    /// failed). Without this, each of its intents (a whole table after a
    /// bulk load or `ADD PRIMARY KEY`) would cost the first transaction
    /// that meets it a push, a resolve and a retry, and its record would
    /// stay for ever. A record younger than
    /// [`TxnLimits::adopt_cleanup_after`] is
    /// left to its coordinator, and a cleanup already running on this node
    /// is not started twice; one running on another node may be (resolving
    /// is idempotent, so that costs commands, not correctness).
    fn adopt_cleanup(&self, record: &TxnRecord, status: TxnStatus, commit_ts: Timestamp) {
        let Some(meta) = record.meta.as_ref() else {
            return;
        };
        if record.intent_spans.is_empty() {
            return;
        }
        // The last heartbeat: the coordinator's cleanup starts right after
        // its commit, at most a heartbeat interval later (a commit
        // timestamp may be ahead of the clock).
        let finished_at = match record.last_heartbeat {
            Some(hb) => concord_proto::ts(Some(hb)),
            None => commit_ts,
        };
        let age = self
            .sender
            .clock()
            .physical_now()
            .saturating_sub(finished_at.wall);
        if u128::from(age) < self.limits.adopt_cleanup_after.as_nanos() {
            return;
        }
        let Some(claim) = self.resolver.claim_cleanup(&meta.id) else {
            return;
        };
        tracing::info!(
            txn = %concord_storage::fmt_txn_id(&meta.id),
            spans = record.intent_spans.len(),
            age_s = age / 1_000_000_000,
            "cleaning up after a finished transaction whose intents are still out"
        );
        tokio::spawn(cleanup(
            Some(claim),
            self.sender.clone(),
            Some(self.resolver.clone()),
            meta.clone(),
            status,
            commit_ts,
            record.intent_spans.clone(),
            self.limits.resolve_in_flight,
        ));
    }

    /// The transaction's record, created (PENDING, heartbeated from now on)
    /// if it has none yet, anchored at the first of `writes` and written in
    /// the same command as that write's intent, which is then taken out of
    /// `writes`: a transaction's first lock or prepare costs one replicated
    /// command, not two. Returns the record's meta and the timestamp of the
    /// intent it wrote (zero if none).
    async fn ensure_record(&mut self, writes: &mut Vec<kv::Write>) -> Result<(TxnMeta, Timestamp)> {
        if let Some(lock) = &self.locks {
            return Ok((lock.meta.clone(), Timestamp::ZERO));
        }
        if writes.is_empty() {
            return Err(Error::Internal(
                "a transaction record without a first write".into(),
            ));
        }
        let first = writes.remove(0);
        let meta = self.meta(&first.key);
        let mut regroups = 0;
        let ts = loop {
            match self
                .prepare_chunk(&meta, std::slice::from_ref(&first), Prepare::Begin)
                .await
            {
                Ok(ts) => break ts,
                // One key cannot be split across ranges: send it again.
                Err(Error::RangeChanged) if regroups < MAX_REGROUPS => regroups += 1,
                Err(e) => {
                    // The record and the intent may have been written: abort
                    // them rather than leave them to expire.
                    tokio::spawn(abort_and_clean_up(
                        self.sender.clone(),
                        meta,
                        vec![KeySpan {
                            start: first.key.clone(),
                            end: vec![],
                        }],
                        self.limits.resolve_in_flight,
                    ));
                    return Err(e);
                }
            }
        };
        let stopped = Arc::new(AtomicBool::new(false));
        let heartbeat = tokio::spawn(heartbeat_loop(
            self.sender.clone(),
            meta.clone(),
            stopped.clone(),
        ));
        self.locks = Some(Locks {
            meta: meta.clone(),
            heartbeat,
            keys: BTreeSet::from([first.key.clone()]),
            commit_spans: Vec::new(),
            stopped,
        });
        Ok((meta, ts))
    }

    /// Locks the keys (SELECT … FOR UPDATE): lock-only intents, through the
    /// transaction's record, that make other writers and lockers wait (or
    /// push) until this transaction ends. Readers are not blocked.
    ///
    /// Returns the highest timestamp a lock was taken at: above the read
    /// timestamp when a key has a newer committed version than this
    /// transaction has read (see [`Txn::lock_for_update`]).
    pub async fn lock_keys(&mut self, keys: &[Vec<u8>]) -> Result<Timestamp> {
        self.check_open()?;
        let mut writes: Vec<kv::Write> = keys
            .iter()
            .map(|k| kv::Write {
                key: k.clone(),
                value: vec![],
                tombstone: false,
                lock_only: true,
            })
            .collect();
        if writes.is_empty() {
            return Ok(Timestamp::ZERO);
        }
        let (mut meta, first_ts) = self.ensure_record(&mut writes).await?;
        // Intents may be on every key from now on, whatever happens next.
        if let Some(l) = self.locks.as_mut() {
            l.keys.extend(keys.iter().cloned());
        }
        // The ranges record the values they return as read at this
        // transaction's current read timestamp (at least).
        meta.read_ts = Some(self.read_ts.into());
        let ts = self.prepare_all(&meta, writes, Prepare::Locks).await?;
        Ok(ts.max(first_ts))
    }

    /// Locks the keys a statement is about to read and then change (an
    /// UPDATE or DELETE inside a transaction block), and moves the read
    /// timestamp up to the locks' timestamp, so that what the statement
    /// reads next is the newest committed value and nobody else can commit
    /// a newer one until this transaction ends.
    ///
    /// This turns a write-write conflict into a wait at the statement
    /// instead of a serialization failure at COMMIT: a transaction that
    /// read a row, waited for another to commit it, and then wrote it would
    /// have to fail its refresh. Keys this transaction already locked are
    /// not sent again. The refresh fails (a retry error) only if something
    /// read earlier changed in the meantime.
    pub async fn lock_for_update(&mut self, keys: &[Vec<u8>]) -> Result<()> {
        let mut fresh: Vec<Vec<u8>> = keys
            .iter()
            .filter(|k| !self.locks.as_ref().is_some_and(|l| l.keys.contains(*k)))
            .cloned()
            .collect();
        fresh.sort();
        fresh.dedup();
        self.lock_replies.lock().clear();
        let locked = self.lock_keys(&fresh).await;
        let refreshed = match locked {
            Ok(ts) => self.refresh_to(ts).await,
            Err(e) => Err(e),
        };
        let replies = std::mem::take(&mut *self.lock_replies.lock());
        refreshed?;
        // Valid reads now: every version of a locked key is below the lock,
        // the lock keeps new ones out, and the read timestamp is at or
        // above the lock's.
        for r in replies {
            self.locked_values.insert(r.key, r.found.then_some(r.value));
        }
        Ok(())
    }

    /// Commits through the transaction record: writes that span several
    /// ranges, or any commit of a transaction that holds locks.
    pub(super) async fn commit_two_phase(
        &mut self,
        mut writes: Vec<kv::Write>,
    ) -> Result<Timestamp> {
        // Where intents may be: every key sent, now or for a lock.
        let spans = self.intent_spans(&writes);
        let (meta, floor) = self.ensure_record(&mut writes).await?;
        if let Some(l) = self.locks.as_mut() {
            l.commit_spans = spans.clone();
        }
        let result = self.prepare_and_commit(&meta, writes, floor, &spans).await;
        let (result, cleanup_spans) = match result {
            Ok((ts, left)) => (Ok(ts), left),
            Err(e) => (Err(e), Vec::new()),
        };
        if let Some(l) = self.locks.take() {
            l.heartbeat.abort();
        }
        let in_flight = self.limits.resolve_in_flight;
        match result {
            Ok(_) if self.failpoint(failpoints::AFTER_COMMIT) => Err(Error::Internal(
                "failpoint: coordinator stopped after the commit point".into(),
            )),
            Ok(commit_ts) => {
                // Commit wait, as for one-phase commits: a commit timestamp
                // ahead of this node's clock is acknowledged only once that
                // time has passed here.
                let clock = self.sender.clock();
                let ahead = commit_ts.wall.saturating_sub(clock.physical_now());
                if ahead > 0 {
                    tokio::time::sleep(Duration::from_nanos(ahead)).await;
                }
                let _ = clock.update(commit_ts);
                let claim = self.resolver.claim_cleanup(&meta.id);
                tokio::spawn(cleanup(
                    claim,
                    self.sender.clone(),
                    Some(self.resolver.clone()),
                    meta,
                    TxnStatus::Committed,
                    commit_ts,
                    cleanup_spans,
                    in_flight,
                ));
                Ok(commit_ts)
            }
            Err(e) => {
                if !matches!(e, Error::Internal(ref m) if m.starts_with("failpoint")) {
                    tokio::spawn(abort_and_clean_up(
                        self.sender.clone(),
                        meta,
                        spans,
                        in_flight,
                    ));
                }
                Err(e)
            }
        }
    }

    /// Ends a transaction that holds locks without committing it.
    pub(super) fn release_locks(&mut self) {
        if let Some(l) = self.locks.take() {
            l.heartbeat.abort();
            let spans = if l.commit_spans.is_empty() {
                chunk_spans(
                    l.keys
                        .iter()
                        .map(|k| (k.as_slice(), resolve_cost(k.len(), 0))),
                    &self.limits,
                )
            } else {
                l.commit_spans
            };
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(abort_and_clean_up(
                    self.sender.clone(),
                    l.meta,
                    spans,
                    self.limits.resolve_in_flight,
                ));
            }
        }
    }

    /// The spans where this transaction's intents may be once `writes`
    /// (sorted by key, as the buffer keeps them) and its locks are
    /// prepared, each holding at most a chunk of them.
    fn intent_spans(&self, writes: &[kv::Write]) -> Vec<KeySpan> {
        debug_assert!(writes.windows(2).all(|w| w[0].key < w[1].key));
        let cost = |w: &kv::Write| resolve_cost(w.key.len(), w.value.len());
        match self.locks.as_ref().filter(|l| !l.keys.is_empty()) {
            None => chunk_spans(
                writes.iter().map(|w| (w.key.as_slice(), cost(w))),
                &self.limits,
            ),
            Some(l) => {
                let mut all: BTreeMap<&[u8], usize> = l
                    .keys
                    .iter()
                    .map(|k| (k.as_slice(), resolve_cost(k.len(), 0)))
                    .collect();
                for w in writes {
                    all.insert(w.key.as_slice(), cost(w));
                }
                chunk_spans(all.into_iter(), &self.limits)
            }
        }
    }

    /// Writes intents for `writes` on every range they touch, in chunks;
    /// returns the highest intent timestamp.
    ///
    /// The writes are grouped by range and each group cut into chunks
    /// (consecutive keys, at most `chunk_max_writes` writes and
    /// `chunk_max_bytes`). At most `prepare_in_flight` chunks are in flight,
    /// `prepare_in_flight_per_range` on one range, taken from the ranges in
    /// turn. Chunks whose range split under them are grouped again. After a
    /// failure no new chunk is sent, the ones in flight are waited for, and
    /// the first error is returned (intents may then be on any key of
    /// `writes`).
    async fn prepare_all(
        &self,
        meta: &TxnMeta,
        writes: Vec<kv::Write>,
        kind: Prepare,
    ) -> Result<Timestamp> {
        let limits = self.limits;
        let stopped = self.locks.as_ref().map(|l| l.stopped.clone());
        let meta_len = meta.encoded_len();
        let cost = |w: &kv::Write| w.key.len() + w.value.len() + meta_len + INTENT_OVERHEAD;
        let mut max_ts = Timestamp::ZERO;
        let mut pending = writes;
        let mut regroups = 0;
        while !pending.is_empty() {
            // Sorted, a range's writes are consecutive. (They are sorted
            // from the buffer; after a regroup they may not be.)
            pending.sort_by(|a, b| a.key.cmp(&b.key));
            let mut queues: Vec<(u64, VecDeque<Vec<kv::Write>>)> = Vec::new();
            let mut range_end: Option<Vec<u8>> = None;
            let mut cutter = Cutter::new(&limits);
            for w in pending.drain(..) {
                let same_range = range_end
                    .as_ref()
                    .is_some_and(|end| end.is_empty() || w.key < *end);
                if !same_range {
                    let d = self.sender.range_for_key(&w.key).await?;
                    range_end = Some(d.end_key.clone());
                    queues.push((d.range_id, VecDeque::new()));
                    cutter = Cutter::new(&limits);
                }
                let chunks = &mut queues.last_mut().expect("pushed above").1;
                if cutter.starts_new(cost(&w)) || chunks.is_empty() {
                    chunks.push_back(Vec::new());
                }
                chunks.back_mut().expect("pushed above").push(w);
            }
            let mut in_flight = FuturesUnordered::new();
            let mut per_range: HashMap<u64, usize> = HashMap::new();
            let mut failed: Option<Error> = None;
            let mut turn = 0;
            loop {
                while failed.is_none() && in_flight.len() < limits.prepare_in_flight.max(1) {
                    if stopped.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                        failed = Some(Error::TxnAborted(format!(
                            "transaction {} was aborted by a conflicting transaction while \
                             writing its intents",
                            concord_storage::fmt_txn_id(&meta.id)
                        )));
                        break;
                    }
                    let n = queues.len();
                    let next = (0..n).map(|j| (turn + j) % n).find(|&i| {
                        !queues[i].1.is_empty()
                            && per_range.get(&queues[i].0).copied().unwrap_or(0)
                                < limits.prepare_in_flight_per_range.max(1)
                    });
                    let Some(i) = next else { break };
                    turn = (i + 1) % n;
                    let range_id = queues[i].0;
                    let chunk = queues[i].1.pop_front().expect("checked non-empty");
                    *per_range.entry(range_id).or_default() += 1;
                    in_flight.push(async move {
                        let r = self.prepare_chunk(meta, &chunk, kind).await;
                        (range_id, r, chunk)
                    });
                }
                let Some((range_id, r, chunk)) = in_flight.next().await else {
                    break;
                };
                if let Some(c) = per_range.get_mut(&range_id) {
                    *c -= 1;
                }
                match r {
                    Ok(ts) => max_ts = max_ts.max(ts),
                    Err(Error::RangeChanged) if regroups < MAX_REGROUPS => pending.extend(chunk),
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
            regroups += 1;
        }
        Ok(max_ts)
    }

    /// The writes that can commit with the record, in the EndTxn command
    /// itself: those on the record's range, when the transaction's intents
    /// are recorded key by key (so the committed keys can be left out of the
    /// spans to clean up) and the transaction is not large (it would fit in
    /// a one-phase commit). Returns (local, rest).
    async fn split_local(
        &self,
        meta: &TxnMeta,
        writes: Vec<kv::Write>,
        spans: &[KeySpan],
    ) -> Result<(Vec<kv::Write>, Vec<kv::Write>)> {
        if spans.iter().any(|sp| !sp.end.is_empty()) {
            return Ok((Vec::new(), writes));
        }
        // A large transaction (too big for one command) prepares in chunks.
        let total: usize = writes.iter().map(|w| w.key.len() + w.value.len()).sum();
        if writes.len() >= self.limits.one_phase_max_writes
            || total > self.limits.one_phase_max_bytes
        {
            return Ok((Vec::new(), writes));
        }
        let desc = self.sender.range_for_key(&meta.anchor_key).await?;
        let (local, rest): (Vec<kv::Write>, Vec<kv::Write>) = writes.into_iter().partition(|w| {
            w.key.as_slice() >= desc.start_key.as_slice()
                && (desc.end_key.is_empty() || w.key.as_slice() < desc.end_key.as_slice())
        });
        Ok((local, rest))
    }

    /// Prepares every range but the record's, moves the commit timestamp
    /// (refreshing reads), and switches the record to COMMITTED, with the
    /// record range's writes committed in the same command and `spans` (less
    /// those writes' keys) as the places where its intents are. Returns the
    /// commit timestamp and the spans left to clean up.
    async fn prepare_and_commit(
        &mut self,
        meta: &TxnMeta,
        writes: Vec<kv::Write>,
        floor: Timestamp,
        spans: &[KeySpan],
    ) -> Result<(Timestamp, Vec<KeySpan>)> {
        let (mut local, rest) = self.split_local(meta, writes, spans).await?;
        let mut commit_ts = self
            .prepare_all(meta, rest, Prepare::Intents)
            .await?
            .max(floor)
            .max(self.read_ts);
        if self.failpoint(failpoints::AFTER_PREPARE) {
            return Err(Error::Internal(
                "failpoint: coordinator stopped after prepare".into(),
            ));
        }
        if commit_ts > self.read_ts {
            self.refresh_to(commit_ts).await?;
        }
        let mut last_err = None;
        let mut refreshes = 0;
        let mut attempts = 0;
        // EndTxn is idempotent: an ambiguous attempt is simply repeated.
        while attempts < 5 {
            let committed_here: BTreeSet<&[u8]> = local.iter().map(|w| w.key.as_slice()).collect();
            let record_spans: Vec<KeySpan> = spans
                .iter()
                .filter(|sp| !committed_here.contains(sp.start.as_slice()))
                .cloned()
                .collect();
            let end = Req::EndTxn(kv::EndTxnRequest {
                txn: Some(meta.clone()),
                commit: true,
                commit_ts: Some(commit_ts.into()),
                intent_spans: record_spans.clone(),
                writes: local.clone(),
            });
            match send_one(&self.sender, &meta.anchor_key, plain_batch(meta, end)).await {
                Ok(resp) => {
                    let record = record_of(resp)?;
                    let status = record
                        .as_ref()
                        .map(|r| TxnStatus::try_from(r.status).unwrap_or(TxnStatus::Pending));
                    if self.failpoint(failpoints::LOST_COMMIT_ANSWER) {
                        return Err(Error::AmbiguousResult(
                            "failpoint: the commit's answer was lost".into(),
                        ));
                    }
                    return match status {
                        Some(TxnStatus::Committed) => {
                            let ts = record
                                .and_then(|r| r.commit_ts)
                                .map(|t| concord_proto::ts(Some(t)))
                                .unwrap_or(commit_ts);
                            Ok((ts, record_spans))
                        }
                        _ => Err(Error::TxnAborted(format!(
                            "transaction {} could not commit",
                            concord_storage::fmt_txn_id(&meta.id)
                        ))),
                    };
                }
                // A write on the record's range needs a later timestamp.
                Err(Error::NeedsRefresh { ts }) if refreshes < MAX_COMMIT_REFRESHES => {
                    refreshes += 1;
                    self.refresh_to(ts).await?;
                    commit_ts = commit_ts.max(ts);
                }
                Err(Error::WriteIntent { key, intent }) => {
                    self.handle_intent(&key, &intent, true, local.len()).await?;
                    attempts += 1;
                }
                // The record's range split under the writes: prepare them
                // as intents like the others.
                Err(Error::RangeChanged) if !local.is_empty() => {
                    let moved = std::mem::take(&mut local);
                    let ts = self.prepare_all(meta, moved, Prepare::Intents).await?;
                    if ts > commit_ts {
                        self.refresh_to(ts).await?;
                        commit_ts = ts;
                    }
                }
                Err(e @ (Error::AmbiguousResult(_) | Error::Unavailable(_))) => {
                    last_err = Some(e);
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::AmbiguousResult("commit record".into())))
    }

    /// Writes the intents of one chunk (consecutive writes of one range);
    /// returns their timestamp. `RangeChanged` if the range split: the
    /// caller groups the writes again. [`Prepare::Begin`] creates the
    /// transaction's record in the same command (see
    /// [`Txn::ensure_record`]); [`Prepare::Locks`] lets the leader hold
    /// lock-only writes in memory.
    async fn prepare_chunk(
        &self,
        meta: &TxnMeta,
        writes: &[kv::Write],
        kind: Prepare,
    ) -> Result<Timestamp> {
        let Some(route) = writes.first().map(|w| w.key.as_slice()) else {
            return Ok(Timestamp::ZERO);
        };
        loop {
            let req = Req::Prepare(kv::PrepareRequest {
                txn: Some(meta.clone()),
                writes: writes.to_vec(),
                begin: kind == Prepare::Begin,
                in_memory: kind == Prepare::Locks,
            });
            match self.sender.send(route, plain_batch(meta, req), false).await {
                Ok(resps) => {
                    return match resps.into_iter().next().and_then(|r| r.response) {
                        Some(Resp::Prepare(p)) => {
                            if !p.locked.is_empty() {
                                self.lock_replies.lock().extend(p.locked);
                            }
                            Ok(concord_proto::ts(p.write_ts))
                        }
                        other => Err(Error::Internal(format!(
                            "unexpected response to prepare: {other:?}"
                        ))),
                    }
                }
                Err(Error::WriteIntent { key, intent }) => {
                    self.handle_intent(&key, &intent, true, writes.len())
                        .await?
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// What a PrepareRequest is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prepare {
    /// The first lock or intent: it also writes the record.
    Begin,
    /// Intents at commit.
    Intents,
    /// Locks once the record exists: the leader may hold them in memory
    /// (an unreplicated lock, see `concord_replication::locktable`).
    Locks,
}

/// What an intent costs in a PrepareRequest beyond its key, value and
/// transaction meta (field tags and lengths, flags).
const INTENT_OVERHEAD: usize = 16;

/// What resolving an intent costs in a ResolveIntents command: a version
/// (key, timestamp, value) and the deletion of the intent (key).
fn resolve_cost(key_len: usize, value_len: usize) -> usize {
    2 * key_len + value_len + 32
}

/// Cuts a sequence of items into consecutive chunks of at most
/// `chunk_max_writes` items and `chunk_max_bytes` bytes; an item larger
/// than `chunk_max_bytes` is a chunk of its own.
struct Cutter {
    max_items: usize,
    max_bytes: usize,
    items: usize,
    bytes: usize,
}

impl Cutter {
    fn new(limits: &TxnLimits) -> Self {
        Cutter {
            max_items: limits.chunk_max_writes.max(1),
            max_bytes: limits.chunk_max_bytes,
            items: 0,
            bytes: 0,
        }
    }

    /// Counts an item of `size` bytes; true if it must start a new chunk
    /// (the current one is full without it).
    fn starts_new(&mut self, size: usize) -> bool {
        let cut = self.items > 0
            && (self.items >= self.max_items || self.bytes.saturating_add(size) > self.max_bytes);
        if cut {
            self.items = 0;
            self.bytes = 0;
        }
        self.items += 1;
        self.bytes = self.bytes.saturating_add(size);
        cut
    }
}

/// Spans covering `keys` (sorted, distinct, with their resolution cost),
/// each holding a chunk of them: `[first, last ++ 0x00)`.
fn chunk_spans<'a>(
    keys: impl Iterator<Item = (&'a [u8], usize)>,
    limits: &TxnLimits,
) -> Vec<KeySpan> {
    let mut out = Vec::new();
    let mut cutter = Cutter::new(limits);
    let mut chunk: Vec<&[u8]> = Vec::new();
    // A chunk of a few keys is kept as its keys: a span from its first to
    // its last key could cover a whole table of other rows (two tables'
    // keys in one range), which resolving would scan under a latch.
    let close = |chunk: &mut Vec<&[u8]>, out: &mut Vec<KeySpan>| {
        match chunk.as_slice() {
            [] => {}
            keys if keys.len() <= POINT_SPANS_PER_CHUNK => {
                out.extend(keys.iter().map(|k| KeySpan {
                    start: k.to_vec(),
                    end: vec![],
                }))
            }
            [first, .., last] => out.push(KeySpan {
                start: first.to_vec(),
                end: [*last, &[0u8]].concat(),
            }),
            [_] => unreachable!("one key is within the point limit"),
        }
        chunk.clear();
    };
    for (key, cost) in keys {
        if cutter.starts_new(cost) {
            close(&mut chunk, &mut out);
        }
        chunk.push(key);
    }
    close(&mut chunk, &mut out);
    out
}

/// Chunks of at most this many keys list their keys as single-key spans
/// (see [`chunk_spans`]); ResolveIntents takes up to this many at once.
const POINT_SPANS_PER_CHUNK: usize = 32;

/// Whether `span` (`end` empty: the single key `start`) holds `key`.
fn span_holds(span: &KeySpan, key: &[u8]) -> bool {
    if span.end.is_empty() {
        span.start.as_slice() == key
    } else {
        span.start.as_slice() <= key && key < span.end.as_slice()
    }
}

/// A batch carrying a transaction's meta as its header.
fn plain_batch(meta: &TxnMeta, req: Req) -> BatchRequest {
    BatchRequest {
        gateway_node_id: 0,
        range_id: 0,
        now: None,
        txn: Some(TxnHeader {
            historical: false,
            id: meta.id.clone(),
            read_ts: meta.read_ts,
            uncertainty_limit: meta.read_ts,
        }),
        requests: vec![kv::Request { request: Some(req) }],
    }
}

/// Sends an idempotent single-request batch, regrouping on range changes.
async fn send_one(sender: &DistSender, route: &[u8], batch: BatchRequest) -> Result<kv::Response> {
    let mut last = Error::RangeChanged;
    for _ in 0..MAX_REGROUPS {
        match sender.send(route, batch.clone(), false).await {
            Ok(r) => {
                return r
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::Internal("empty response".into()))
            }
            Err(Error::RangeChanged) => last = Error::RangeChanged,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

fn record_of(resp: kv::Response) -> Result<Option<TxnRecord>> {
    match resp.response {
        Some(Resp::TxnRecord(r)) => Ok(r.found.then_some(r.record).flatten()),
        other => Err(Error::Internal(format!(
            "unexpected response to a transaction record request: {other:?}"
        ))),
    }
}

/// Resolves a finished transaction's intents in `spans` (any ranges), at
/// most `in_flight` spans at a time.
async fn resolve_spans(
    sender: &DistSender,
    resolver: Option<&Arc<super::Resolver>>,
    txn_id: &[u8],
    status: TxnStatus,
    commit_ts: Timestamp,
    spans: &[KeySpan],
    in_flight: usize,
) -> Result<()> {
    // Consecutive single keys of one range go in one request (at most a
    // chunk's worth); wide spans go alone.
    let mut groups: Vec<Vec<KeySpan>> = Vec::new();
    let mut group_range = None;
    for sp in spans {
        if !sp.end.is_empty() {
            groups.push(vec![sp.clone()]);
            group_range = None;
            continue;
        }
        let range = sender.range_for_key(&sp.start).await?.range_id;
        match groups.last_mut() {
            Some(g) if group_range == Some(range) && g.len() < POINT_SPANS_PER_CHUNK => {
                g.push(sp.clone())
            }
            _ => {
                groups.push(vec![sp.clone()]);
                group_range = Some(range);
            }
        }
    }
    futures::stream::iter(groups.iter().map(Ok))
        .try_for_each_concurrent(in_flight.max(1), |g| async move {
            // Point intents may join other transactions' in the resolver's
            // batch for their range; if that fails, the path below
            // regroups.
            if let Some(r) = resolver.filter(|_| g[0].end.is_empty()) {
                let req = resolve_request(txn_id, status, commit_ts, g);
                if r.submit(g[0].start.clone(), req).await.is_ok() {
                    return Ok(());
                }
            }
            if g.len() == 1 {
                return resolve_span(sender, txn_id, status, commit_ts, &g[0]).await;
            }
            match resolve_keys(sender, txn_id, status, commit_ts, g).await {
                // The range split since it was looked up: key by key.
                Err(Error::RangeChanged) => {
                    for sp in g {
                        resolve_span(sender, txn_id, status, commit_ts, sp).await?;
                    }
                    Ok(())
                }
                other => other,
            }
        })
        .await
}

/// One ResolveIntents request for spans of one range (routed by the
/// first); `RangeChanged` if they no longer fit in one.
async fn resolve_keys(
    sender: &DistSender,
    txn_id: &[u8],
    status: TxnStatus,
    commit_ts: Timestamp,
    spans: &[KeySpan],
) -> Result<()> {
    let Some(first) = spans.first() else {
        return Ok(());
    };
    let req = resolve_request(txn_id, status, commit_ts, spans);
    let batch = BatchRequest {
        gateway_node_id: 0,
        range_id: 0,
        now: None,
        txn: None,
        requests: vec![kv::Request { request: Some(req) }],
    };
    sender.send(&first.start, batch, false).await.map(|_| ())
}

fn resolve_request(
    txn_id: &[u8],
    status: TxnStatus,
    commit_ts: Timestamp,
    spans: &[KeySpan],
) -> Req {
    Req::ResolveIntents(kv::ResolveIntentsRequest {
        txn_id: txn_id.to_vec(),
        status: status as i32,
        commit_ts: Some(commit_ts.into()),
        spans: spans.to_vec(),
    })
}

/// Resolves a finished transaction's intents in one span: one request per
/// range it overlaps.
async fn resolve_span(
    sender: &DistSender,
    txn_id: &[u8],
    status: TxnStatus,
    commit_ts: Timestamp,
    sp: &KeySpan,
) -> Result<()> {
    let mut regroups = 0;
    'again: loop {
        let descs = if sp.end.is_empty() {
            vec![sender.range_for_key(&sp.start).await?]
        } else {
            sender.ranges_for_span(&sp.start, &sp.end).await?
        };
        for d in descs {
            let clipped = clip(
                &Span {
                    start: sp.start.clone(),
                    end: sp.end.clone(),
                },
                &d.start_key,
                &d.end_key,
            );
            let span = KeySpan {
                start: clipped.start,
                end: clipped.end,
            };
            match resolve_keys(sender, txn_id, status, commit_ts, &[span]).await {
                Ok(_) => {}
                Err(Error::RangeChanged) if regroups < MAX_REGROUPS => {
                    regroups += 1;
                    continue 'again;
                }
                Err(e) => return Err(e),
            }
        }
        break;
    }
    Ok(())
}

/// Aborts a transaction's record (so nobody can commit it), then removes its
/// intents and the record.
async fn abort_and_clean_up(
    sender: Arc<DistSender>,
    meta: TxnMeta,
    spans: Vec<KeySpan>,
    in_flight: usize,
) {
    let end = Req::EndTxn(kv::EndTxnRequest {
        txn: Some(meta.clone()),
        commit: false,
        commit_ts: None,
        intent_spans: spans.clone(),
        writes: Vec::new(),
    });
    let batch = plain_batch(&meta, end);
    // The commit may have happened after all (an EndTxn whose answer was
    // lost, then an error): the record says so, and its intents must then
    // become versions, not vanish.
    let (status, commit_ts, spans) = match send_one(&sender, &meta.anchor_key, batch).await {
        Ok(resp) => match record_of(resp) {
            Ok(Some(r)) if r.status == TxnStatus::Committed as i32 => {
                tracing::warn!(
                    "transaction {} had committed although its coordinator saw an error",
                    concord_storage::fmt_txn_id(&meta.id)
                );
                let spans = if r.intent_spans.is_empty() {
                    spans
                } else {
                    r.intent_spans
                };
                (TxnStatus::Committed, concord_proto::ts(r.commit_ts), spans)
            }
            _ => (TxnStatus::Aborted, Timestamp::ZERO, spans),
        },
        Err(Error::TxnAborted(_)) => (TxnStatus::Aborted, Timestamp::ZERO, spans),
        Err(e) => {
            tracing::debug!(
                "aborting transaction {}: {e}; its intents wait for a pusher",
                concord_storage::fmt_txn_id(&meta.id)
            );
            return;
        }
    };
    cleanup(
        None, sender, None, meta, status, commit_ts, spans, in_flight,
    )
    .await
}

/// Keeps a transaction record alive while its coordinator works; sets
/// `stopped` if it finds the record finished (aborted by a pusher) or gone.
async fn heartbeat_loop(sender: Arc<DistSender>, meta: TxnMeta, stopped: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(HEARTBEAT_INTERVAL).await;
        let req = Req::HeartbeatTxn(kv::HeartbeatTxnRequest {
            txn: Some(meta.clone()),
        });
        match send_one(&sender, &meta.anchor_key, plain_batch(&meta, req)).await {
            Ok(resp) => match record_of(resp) {
                Ok(Some(r)) if r.status == TxnStatus::Pending as i32 => {}
                Ok(_) => {
                    stopped.store(true, Ordering::Relaxed);
                    return;
                }
                Err(_) => return,
            },
            Err(e) => tracing::debug!(
                "heartbeat of {}: {e}",
                concord_storage::fmt_txn_id(&meta.id)
            ),
        }
    }
}

fn gc_request(meta: &TxnMeta) -> Req {
    Req::GcTxn(kv::GcTxnRequest {
        txn: Some(meta.clone()),
    })
}

/// Deletes a finished transaction's record (its intents are resolved).
async fn forget_record(sender: &DistSender, meta: &TxnMeta) {
    let batch = plain_batch(meta, gc_request(meta));
    if let Err(e) = send_one(sender, &meta.anchor_key, batch).await {
        tracing::debug!(
            "forgetting record {}: {e}",
            concord_storage::fmt_txn_id(&meta.id)
        );
    }
}

/// After the outcome is recorded: resolves the intents, then forgets the
/// record. With the node's resolver (a committed transaction's cleanup),
/// point intents and the record join other transactions' in one command
/// per range. Failures are left to the transactions that meet the intents.
#[allow(clippy::too_many_arguments)]
async fn cleanup(
    _claim: Option<super::resolver::CleanupClaim>,
    sender: Arc<DistSender>,
    resolver: Option<Arc<super::Resolver>>,
    meta: TxnMeta,
    status: TxnStatus,
    commit_ts: Timestamp,
    spans: Vec<KeySpan>,
    in_flight: usize,
) {
    let resolver = resolver.as_ref();
    if let Err(e) = resolve_spans(
        &sender, resolver, &meta.id, status, commit_ts, &spans, in_flight,
    )
    .await
    {
        tracing::debug!(
            "resolving the intents of {}: {e}; readers will resolve them",
            concord_storage::fmt_txn_id(&meta.id)
        );
        return;
    }
    if let Some(r) = resolver {
        if r.submit(meta.anchor_key.clone(), gc_request(&meta))
            .await
            .is_ok()
        {
            return;
        }
    }
    forget_record(&sender, &meta).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(items: usize, bytes: usize) -> TxnLimits {
        TxnLimits {
            chunk_max_writes: items,
            chunk_max_bytes: bytes,
            ..TxnLimits::default()
        }
    }

    #[test]
    fn chunks_are_cut_by_count_and_by_bytes() {
        let mut c = Cutter::new(&limits(3, 100));
        let starts: Vec<bool> = [10, 10, 10, 10, 90, 20, 200, 1]
            .iter()
            .map(|&s| c.starts_new(s))
            .collect();
        // [10 10 10] full by count; [10 90] exactly 100 bytes; [20]; the
        // oversized 200 alone; [1].
        assert_eq!(starts, [false, false, false, true, false, true, true, true]);
    }

    #[test]
    fn spans_hold_a_chunk_each_and_never_overlap() {
        // Chunks of 40, 40 and 20 keys: the big ones become one span each,
        // the small one its 20 keys (a span from its first to its last key
        // could cover other rows between them).
        let keys: Vec<Vec<u8>> = (0..100u8).map(|i| vec![b'k', i]).collect();
        let spans = chunk_spans(keys.iter().map(|k| (k.as_slice(), 1)), &limits(40, 1000));
        assert_eq!(spans.len(), 2 + 20);
        assert!(spans[..2].iter().all(|s| !s.end.is_empty()));
        assert!(spans[2..].iter().all(|s| s.end.is_empty()));
        for (i, k) in keys.iter().enumerate() {
            let holding: Vec<usize> = (0..spans.len())
                .filter(|&s| span_holds(&spans[s], k))
                .collect();
            let want = if i < 80 { i / 40 } else { 2 + (i - 80) };
            assert_eq!(holding, vec![want], "key {i}");
        }
        assert!(!span_holds(&spans[0], b"j"));
        assert!(!span_holds(&spans[1], &[b'k', 80]));
        assert!(chunk_spans(std::iter::empty(), &limits(40, 1000)).is_empty());
        // Few keys: one point span per key, even in one chunk.
        let few = chunk_spans(
            keys[..3].iter().map(|k| (k.as_slice(), 1)),
            &limits(40, 1000),
        );
        assert_eq!(
            few.iter().map(|s| s.start.clone()).collect::<Vec<_>>(),
            keys[..3].to_vec()
        );
        assert!(few.iter().all(|s| s.end.is_empty()));
        // A point span holds its key only.
        let point = KeySpan {
            start: b"a".to_vec(),
            end: vec![],
        };
        assert!(span_holds(&point, b"a") && !span_holds(&point, b"a\0"));
    }
}
