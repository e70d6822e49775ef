//! Evaluation of the two-phase commit requests on a range's leader.
//!
//! ```text
//!  coordinator                 anchor range (record)        participant ranges
//!  ───────────                 ─────────────────────        ──────────────────
//!  Prepare(begin) of the ────► record PENDING and the
//!   anchor key                 anchor's intent (one command;
//!                              BeginTxn alone also exists)
//!  HeartbeatTxn (every 1 s) ─► heartbeat = now
//!  Prepare ───────────────────────────────────────────────► intents at ts ≥ write_ts
//!                                                            (pushed above reads in the
//!                                                             tscache and newer versions)
//!  Prepare(locks, in_memory) ─────────────────────────────► ReadIndex, then held in the
//!                                                            leader's lock table, not
//!                                                            replicated (locktable)
//!  (refresh reads to max ts)
//!  EndTxn(commit, ts) ───────► record COMMITTED  ◄── the commit point
//!  ResolveIntents (async) ────────────────────────────────► intents → versions at ts
//!  GcTxn ────────────────────► record deleted
//!
//!  another transaction meets an intent ─► PushTxn to the record's range:
//!      COMMITTED / ABORTED / no record ─► resolve the intent and go on
//!      PENDING, heartbeat older than the expiry ─► ABORTED (the coordinator died)
//!      PENDING, pusher of higher priority (abort push) ─► ABORTED
//!      otherwise ─► waits at the record (up to the push's wait_ms) until
//!                   EndTxn, an abort or GcTxn wakes it; still PENDING
//!                   then: the pusher asks again
//! ```
//!
//! Waiting at the record rather than polling it means a transaction queued
//! behind a lock hears of its holder's commit at once, and costs one
//! request per wait instead of one per poll.
//!
//! Each request is evaluated under latches (the record's key, the written
//! keys or spans) against applied state, and its effects go through Raft as
//! one [`RawWriteCommand`]; a new leader evaluates only after applying every
//! entry of earlier terms, so two evaluations of one record never race.

use concord_proto::kv::{self, response::Response as Resp};
use concord_proto::meta::{
    raft_command::Cmd, raw_write::Family, Intent, RaftCommand, RawWrite, RawWriteCommand, TxnMeta,
    TxnRecord, TxnStatus,
};
use concord_storage::mvcc::{self, MvccError};
use concord_storage::{keys, txn, Cf};
use prost::Message;

use crate::latch::LatchSpan;

/// The longest a PushTxn waits at a pending record before it answers.
const MAX_PUSH_WAIT_MS: u64 = 1000;
use crate::store::{ReplicaHandle, Store};
use crate::Error;

/// The latch that serialises evaluations touching one transaction record.
fn record_latch(meta: &TxnMeta) -> LatchSpan {
    LatchSpan::write_key(&[b"\x00\x00txn/".as_slice(), &meta.id].concat())
}

fn put_record(record: &TxnRecord) -> RawWrite {
    let meta = record.meta.clone().unwrap_or_default();
    RawWrite {
        family: Family::Txn as i32,
        key: txn::record_key(&meta.anchor_key, &meta.id),
        value: record.encode_to_vec(),
        delete: false,
    }
}

fn record_response(record: Option<TxnRecord>) -> Vec<kv::Response> {
    vec![kv::Response {
        response: Some(Resp::TxnRecord(kv::TxnRecordResponse {
            found: record.is_some(),
            record,
        })),
    }]
}

/// What beginning `meta` finds in its existing record: an error if it was
/// aborted, the record if it already committed (a repeated begin), or
/// `None`: a PENDING record is to be written.
fn committed_before_begin(
    meta: &TxnMeta,
    existing: Option<TxnRecord>,
) -> Result<Option<TxnRecord>, Error> {
    match existing {
        Some(r) if status_of(&r) == TxnStatus::Aborted => Err(aborted(
            meta,
            "its record was aborted by a conflicting transaction",
        )),
        Some(r) if status_of(&r) == TxnStatus::Committed => Ok(Some(r)),
        _ => Ok(None),
    }
}

/// A `WriteIntent` error if another transaction than `txn_id` holds an
/// unreplicated lock on `key`: the writer pushes it as it would an intent.
pub(crate) fn check_lock_table(
    replica: &ReplicaHandle,
    key: &[u8],
    txn_id: &[u8],
) -> Result<(), Error> {
    match replica.locks.lock().holder(key) {
        Some(holder) if holder.id != txn_id => Err(Error::Mvcc(MvccError::WriteIntent {
            key: key.to_vec(),
            intent: Box::new(holder.clone()),
        })),
        _ => Ok(()),
    }
}

/// The values a lock returned are reads: protect them like reads.
fn record_locked_reads(
    replica: &ReplicaHandle,
    locked: &[kv::LockedValue],
    ts: concord_hlc::Timestamp,
    meta: &TxnMeta,
) {
    if locked.is_empty() {
        return;
    }
    let read_at = ts.max(concord_proto::ts(meta.read_ts));
    let mut tscache = replica.tscache.lock();
    for l in locked {
        tscache.add_point(&l.key, read_at, Some(&meta.id));
    }
}

fn prepare_response(ts: concord_hlc::Timestamp, locked: Vec<kv::LockedValue>) -> Vec<kv::Response> {
    vec![kv::Response {
        response: Some(Resp::Prepare(kv::PrepareResponse {
            write_ts: Some(ts.into()),
            locked,
        })),
    }]
}

fn status_of(record: &TxnRecord) -> TxnStatus {
    TxnStatus::try_from(record.status).unwrap_or(TxnStatus::Pending)
}

fn aborted(meta: &TxnMeta, why: &str) -> Error {
    Error::TxnAborted {
        txn: concord_storage::fmt_txn_id(&meta.id),
        reason: why.to_string(),
    }
}

impl Store {
    /// Proposes engine writes evaluated under `latches` as one Raft command
    /// and waits for them to apply; `bytes_removed` is what they delete from
    /// the range's size (GC). The latches are held until the command has
    /// applied or can no longer apply (see [`Store::propose_keeping`]).
    pub(crate) async fn propose_raw<K: Send + 'static>(
        &self,
        range_id: u64,
        writes: Vec<RawWrite>,
        bytes_removed: u64,
        latches: K,
    ) -> Result<(), Error> {
        if writes.is_empty() {
            return Ok(());
        }
        let cmd = RaftCommand {
            id: rand::random::<[u8; 16]>().to_vec(),
            cmd: Some(Cmd::Raw(RawWriteCommand {
                writes,
                bytes_removed,
            })),
        };
        self.propose_keeping(range_id, cmd, latches).await
    }

    /// Latches the record of `meta` (whose anchor must be in this range),
    /// checks leadership and reads the record.
    async fn lock_record(
        &self,
        replica: &ReplicaHandle,
        meta: &TxnMeta,
    ) -> Result<(crate::latch::LatchGuard, Option<TxnRecord>), Error> {
        self.lock_record_and_keys(replica, meta, &[]).await
    }

    /// BeginTxn: creates the PENDING record (or refreshes it).
    pub(crate) async fn eval_begin_txn(
        &self,
        replica: &ReplicaHandle,
        req: kv::BeginTxnRequest,
    ) -> Result<Vec<kv::Response>, Error> {
        let meta = req.txn.unwrap_or_default();
        let (guard, existing) = self.lock_record(replica, &meta).await?;
        let record = match committed_before_begin(&meta, existing)? {
            Some(r) => r,
            None => {
                let r = self.pending_record(&meta);
                self.propose_raw(replica.range_id, vec![put_record(&r)], 0, guard)
                    .await?;
                r
            }
        };
        Ok(record_response(Some(record)))
    }

    /// A new PENDING record for `meta`, heartbeated now.
    fn pending_record(&self, meta: &TxnMeta) -> TxnRecord {
        TxnRecord {
            meta: Some(meta.clone()),
            status: TxnStatus::Pending as i32,
            last_heartbeat: Some(self.clock().now().into()),
            ..Default::default()
        }
    }

    /// HeartbeatTxn: the coordinator is alive.
    pub(crate) async fn eval_heartbeat_txn(
        &self,
        replica: &ReplicaHandle,
        req: kv::HeartbeatTxnRequest,
    ) -> Result<Vec<kv::Response>, Error> {
        let meta = req.txn.unwrap_or_default();
        let (guard, record) = self.lock_record(replica, &meta).await?;
        let Some(mut record) = record else {
            return Ok(record_response(None));
        };
        if status_of(&record) == TxnStatus::Pending {
            record.last_heartbeat = Some(self.clock().now().into());
            self.propose_raw(replica.range_id, vec![put_record(&record)], 0, guard)
                .await?;
        }
        Ok(record_response(Some(record)))
    }

    /// EndTxn: the commit point (or an abort). Idempotent.
    pub(crate) async fn eval_end_txn(
        &self,
        replica: &ReplicaHandle,
        req: kv::EndTxnRequest,
    ) -> Result<Vec<kv::Response>, Error> {
        let meta = req.txn.unwrap_or_default();
        if !req.writes.is_empty() && !req.commit {
            return Err(Error::BadRequest(
                "an EndTxn that aborts carries no writes".into(),
            ));
        }
        let (guard, record) = if req.writes.is_empty() {
            self.lock_record(replica, &meta).await?
        } else {
            self.lock_record_and_keys(replica, &meta, &req.writes)
                .await?
        };
        let mut record = match record {
            None if req.commit => {
                return Err(aborted(
                    &meta,
                    "its record is gone (aborted and cleaned up)",
                ))
            }
            None => return Ok(record_response(None)),
            Some(r) => r,
        };
        match (status_of(&record), req.commit) {
            (TxnStatus::Pending, commit) => {
                record.status = if commit {
                    TxnStatus::Committed
                } else {
                    TxnStatus::Aborted
                } as i32;
                if commit {
                    let ts = concord_proto::ts(req.commit_ts);
                    record.commit_ts = Some(ts.into());
                    if let Some(m) = record.meta.as_mut() {
                        m.write_ts = Some(ts.into());
                    }
                }
                record.intent_spans = req.intent_spans;
                let mut writes = vec![put_record(&record)];
                if commit && !req.writes.is_empty() {
                    let ts = concord_proto::ts(req.commit_ts);
                    writes.extend(self.local_commit_writes(replica, &meta, &req.writes, ts)?);
                }
                self.propose_raw(replica.range_id, writes, 0, guard).await?;
                replica.records_changed.notify_waiters();
                Ok(record_response(Some(record)))
            }
            (TxnStatus::Aborted, true) => Err(aborted(
                &meta,
                "a conflicting transaction aborted it before it could commit",
            )),
            // Already final: report it as it is.
            _ => Ok(record_response(Some(record))),
        }
    }

    /// PushTxn: what became of the transaction whose intent the pusher met;
    /// aborts it if its coordinator stopped heartbeating or, for an abort
    /// push, if the pusher has the higher priority.
    /// The lowest timestamp at or above `from` at which transaction
    /// `txn_id` may write `keys` (of this range, latched): above every other
    /// transaction's read of a key (the timestamp cache) and every committed
    /// version. Fails with `WriteIntent` if another transaction holds a key
    /// (an intent, or an unreplicated lock). Also says, per key, whether
    /// `txn_id` already has an intent there. One-phase commits, prepares and
    /// writes committed with a record all place their writes this way.
    pub(crate) fn place_writes(
        &self,
        replica: &ReplicaHandle,
        keys: &[&[u8]],
        txn_id: Option<&[u8]>,
        from: concord_hlc::Timestamp,
    ) -> Result<(concord_hlc::Timestamp, Vec<bool>), Error> {
        let engine = self.engine().as_ref();
        let mut ts = from;
        {
            let tscache = replica.tscache.lock();
            for key in keys {
                let read = tscache.max_read(key, txn_id);
                if read >= ts {
                    ts = read.next();
                }
            }
        }
        let mut own_intent = Vec::with_capacity(keys.len());
        for key in keys {
            let own = match mvcc::get_intent(engine, key)? {
                Some(intent) => {
                    let other = intent.txn.unwrap_or_default();
                    if Some(other.id.as_slice()) != txn_id {
                        return Err(Error::Mvcc(MvccError::WriteIntent {
                            key: key.to_vec(),
                            intent: Box::new(other),
                        }));
                    }
                    true
                }
                None => false,
            };
            own_intent.push(own);
            check_lock_table(replica, key, txn_id.unwrap_or_default())?;
            if let Some(existing) = mvcc::newest_version_ts(engine, key)? {
                if existing >= ts {
                    ts = existing.next();
                }
            }
        }
        Ok((ts, own_intent))
    }

    /// Latches the record of `meta` (whose anchor must be in this range)
    /// and `writes`' keys in one acquisition (one place in line: see
    /// crate::latch), checks leadership and reads the record.
    async fn lock_record_and_keys(
        &self,
        replica: &ReplicaHandle,
        meta: &TxnMeta,
        writes: &[kv::Write],
    ) -> Result<(crate::latch::LatchGuard, Option<TxnRecord>), Error> {
        super::eval::check_key(replica, &meta.anchor_key)?;
        let mut latches = vec![record_latch(meta)];
        for w in writes {
            super::eval::check_key(replica, &w.key)?;
            latches.push(LatchSpan::write_key(&w.key));
        }
        let guard = replica.latches.acquire(latches).await;
        super::eval::check_key(replica, &meta.anchor_key)?;
        for w in writes {
            super::eval::check_key(replica, &w.key)?;
        }
        replica.ensure_leader()?;
        let record = txn::get_record(self.engine().as_ref(), meta)?;
        Ok((guard, record))
    }

    /// The engine writes that commit `writes` (keys of this range, latched)
    /// at `ts` for the transaction `meta`: a version each, and the deletion
    /// of the transaction's own intent or lock there. Fails with
    /// `NeedsRefresh` if a key cannot take a version at `ts` (a newer
    /// version, or a read at or above `ts` by another transaction), and
    /// with `WriteIntent` if another transaction holds the key.
    fn local_commit_writes(
        &self,
        replica: &ReplicaHandle,
        meta: &TxnMeta,
        writes: &[kv::Write],
        ts: concord_hlc::Timestamp,
    ) -> Result<Vec<RawWrite>, Error> {
        if writes.iter().any(|w| w.lock_only) {
            return Err(Error::BadRequest(
                "EndTxn writes cannot be lock-only".into(),
            ));
        }
        let keys: Vec<&[u8]> = writes.iter().map(|w| w.key.as_slice()).collect();
        let (needed, own_intent) = self.place_writes(replica, &keys, Some(&meta.id), ts)?;
        let mut out = Vec::with_capacity(2 * writes.len());
        for (w, own_intent) in writes.iter().zip(own_intent) {
            let value = (!w.tombstone).then_some(w.value.as_slice());
            out.push(RawWrite {
                family: Family::Data as i32,
                key: keys::mvcc_key(&w.key, ts),
                value: mvcc::encode_value(value),
                delete: false,
            });
            if own_intent {
                out.push(RawWrite {
                    family: Family::Lock as i32,
                    key: w.key.clone(),
                    value: vec![],
                    delete: true,
                });
            }
        }
        if needed > ts {
            return Err(Error::NeedsRefresh { ts: needed });
        }
        let mut table = replica.locks.lock();
        for w in writes {
            table.release(&meta.id, &w.key, &[]);
        }
        Ok(out)
    }

    pub(crate) async fn eval_push_txn(
        &self,
        replica: &ReplicaHandle,
        req: kv::PushTxnRequest,
        expiry: std::time::Duration,
    ) -> Result<Vec<kv::Response>, Error> {
        let meta = req.pushee.unwrap_or_default();
        let wait = std::time::Duration::from_millis(u64::from(req.wait_ms).min(MAX_PUSH_WAIT_MS));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the record is read, so a change after the
            // read wakes this wait.
            let changed = replica.records_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (guard, record) = self.lock_record(replica, &meta).await?;
            let Some(mut record) = record else {
                // The record is created before any intent is written and
                // deleted only after every intent is resolved: the
                // transaction is over.
                return Ok(record_response(None));
            };
            if status_of(&record) != TxnStatus::Pending {
                return Ok(record_response(Some(record)));
            }
            let heartbeat = concord_proto::ts(record.last_heartbeat);
            let expired = heartbeat.add_duration(expiry) < self.clock().now();
            let pushee_priority = record.meta.as_ref().map_or(0, |m| m.priority);
            let wins = req.abort
                && (req.pusher_priority > pushee_priority
                    || (req.pusher_priority == pushee_priority
                        && req.pusher_id.as_slice() > meta.id.as_slice()));
            if expired || wins {
                record.status = TxnStatus::Aborted as i32;
                tracing::debug!(
                    txn = %concord_storage::fmt_txn_id(&meta.id),
                    expired,
                    "transaction aborted by a pusher"
                );
                self.propose_raw(replica.range_id, vec![put_record(&record)], 0, guard)
                    .await?;
                replica.records_changed.notify_waiters();
                return Ok(record_response(Some(record)));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(record_response(Some(record)));
            }
            drop(guard);
            // Woken by any record of the range: look again.
            let _ = tokio::time::timeout_at(deadline, changed).await;
        }
    }

    /// Prepare: the transaction's intents on this range.
    pub(crate) async fn eval_prepare(
        &self,
        replica: &ReplicaHandle,
        req: kv::PrepareRequest,
    ) -> Result<Vec<kv::Response>, Error> {
        let mut meta = req.txn.unwrap_or_default();
        // Locks of a transaction that has its record may stay in memory
        // (see crate::locktable). Like a read, they need the leader to
        // confirm it still leads and to have applied everything committed:
        // the values they return are reads.
        let in_memory = req.in_memory
            && !req.begin
            && req.writes.iter().all(|w| w.lock_only)
            && replica.locks.lock().has_room(req.writes.len());
        // With `begin`, the record is created in the same command: checked
        // as BeginTxn would, and latched with the keys in one acquisition.
        // Taken one after the other (the record's latch held while waiting
        // for the keys'), a request that came between them wanting both (a
        // whole-range latch of the first range, whose span covers every
        // record latch: closing a timestamp, a split, GC) waited for the
        // record while this one waited for it behind the keys: neither ever
        // ran, and nor did anything after them on that range.
        let mut record = None;
        let latches = if req.begin {
            let (guard, existing) = self
                .lock_record_and_keys(replica, &meta, &req.writes)
                .await?;
            if committed_before_begin(&meta, existing)?.is_some() {
                return Err(Error::BadRequest(
                    "begin: the transaction has already committed".into(),
                ));
            }
            record = Some(self.pending_record(&meta));
            guard
        } else {
            let mut spans = Vec::with_capacity(req.writes.len());
            for w in &req.writes {
                super::eval::check_key(replica, &w.key)?;
                spans.push(LatchSpan::write_key(&w.key));
            }
            if in_memory {
                self.read_index(replica.range_id).await?;
            }
            let latches = replica.latches.acquire(spans).await;
            for w in &req.writes {
                super::eval::check_key(replica, &w.key)?;
            }
            latches
        };
        replica.ensure_leader()?;
        let engine = self.engine().as_ref();
        let keys: Vec<&[u8]> = req.writes.iter().map(|w| w.key.as_slice()).collect();
        let (ts, own_intent) = self.place_writes(
            replica,
            &keys,
            Some(&meta.id),
            concord_proto::ts(meta.write_ts),
        )?;
        meta.write_ts = Some(ts.into());
        // What a read of each locked key returns from now on while the
        // lock holds: its newest version (every version is below `ts`, and
        // the latches keep new ones out until the lock is in place).
        let mut locked = Vec::new();
        for (w, own) in req.writes.iter().zip(&own_intent) {
            if w.lock_only && !own {
                let value = mvcc::get(engine, &w.key, mvcc::ReadOpts::at(ts))?;
                locked.push(kv::LockedValue {
                    key: w.key.clone(),
                    found: value.is_some(),
                    value: value.unwrap_or_default(),
                });
            }
        }
        if in_memory {
            // A key this transaction already holds through Raft stays so.
            let mut table = replica.locks.lock();
            let mut inserted = 0;
            for (w, own) in req.writes.iter().zip(&own_intent) {
                if !own {
                    table.insert(w.key.clone(), meta.clone());
                    inserted += 1;
                }
            }
            drop(table);
            self.inner
                .locks_in_memory
                .fetch_add(inserted, std::sync::atomic::Ordering::Relaxed);
            record_locked_reads(replica, &locked, ts, &meta);
            return Ok(prepare_response(ts, locked));
        }
        let mut writes: Vec<RawWrite> = record.as_ref().map(put_record).into_iter().collect();
        writes.extend(req.writes.into_iter().map(|w| {
            RawWrite {
                family: Family::Lock as i32,
                key: w.key,
                value: Intent {
                    txn: Some(meta.clone()),
                    value: w.value,
                    tombstone: w.tombstone,
                    lock_only: w.lock_only,
                }
                .encode_to_vec(),
                delete: false,
            }
        }));
        self.propose_raw(replica.range_id, writes, 0, latches)
            .await?;
        record_locked_reads(replica, &locked, ts, &meta);
        Ok(prepare_response(ts, locked))
    }

    /// ResolveIntents: a finished transaction's intents in some spans of
    /// this range become versions (committed) or vanish (aborted).
    /// Resolves the intents of finished transactions: one request per
    /// transaction, all under one set of latches and in one Raft command.
    pub(crate) async fn eval_resolve_intents_many(
        &self,
        replica: &ReplicaHandle,
        reqs: Vec<kv::ResolveIntentsRequest>,
    ) -> Result<Vec<kv::Response>, Error> {
        let mut latches = Vec::new();
        for req in &reqs {
            if TxnStatus::try_from(req.status).unwrap_or(TxnStatus::Pending) == TxnStatus::Pending {
                return Err(Error::BadRequest(
                    "cannot resolve the intents of a pending transaction".into(),
                ));
            }
            for sp in &req.spans {
                super::eval::check_key_or_span(replica, &sp.start, &sp.end)?;
                latches.push(super::eval::latch_for(&sp.start, &sp.end, true));
            }
        }
        let guard = replica.latches.acquire(latches).await;
        for req in &reqs {
            for sp in &req.spans {
                super::eval::check_key_or_span(replica, &sp.start, &sp.end)?;
            }
        }
        replica.ensure_leader()?;
        {
            let mut table = replica.locks.lock();
            if !table.is_empty() {
                for req in &reqs {
                    for sp in &req.spans {
                        table.release(&req.txn_id, &sp.start, &sp.end);
                    }
                }
            }
        }
        let engine = self.engine().as_ref();
        let mut writes = Vec::new();
        let mut responses = Vec::with_capacity(reqs.len());
        for req in &reqs {
            let status = TxnStatus::try_from(req.status).unwrap_or(TxnStatus::Pending);
            let commit_ts = concord_proto::ts(req.commit_ts);
            let mut resolved = 0u64;
            for sp in &req.spans {
                // A single key is a point lookup: a scan of even one key would
                // step over every deleted intent still in the memtable there
                // (a hot row's thousands), a get finds the newest at once.
                let found = if sp.end.is_empty() {
                    engine
                        .get(Cf::Lock, &sp.start)?
                        .map(|raw| (sp.start.clone(), raw))
                        .into_iter()
                        .collect()
                } else {
                    engine.scan(Cf::Lock, &sp.start, Some(&sp.end), 0)?
                };
                for (key, raw) in found {
                    let intent = Intent::decode(raw.as_slice()).map_err(|e| {
                        concord_storage::Error::Corruption(format!(
                            "intent on {}: {e}",
                            concord_storage::fmt_key(&key)
                        ))
                    })?;
                    if intent.txn.as_ref().map(|t| t.id.as_slice()) != Some(req.txn_id.as_slice()) {
                        continue;
                    }
                    if status == TxnStatus::Committed && !intent.lock_only {
                        let value = (!intent.tombstone).then_some(intent.value.as_slice());
                        writes.push(RawWrite {
                            family: Family::Data as i32,
                            key: keys::mvcc_key(&key, commit_ts),
                            value: mvcc::encode_value(value),
                            delete: false,
                        });
                    }
                    writes.push(RawWrite {
                        family: Family::Lock as i32,
                        key,
                        value: vec![],
                        delete: true,
                    });
                    resolved += 1;
                }
            }
            responses.push(kv::Response {
                response: Some(Resp::ResolveIntents(kv::ResolveIntentsResponse {
                    resolved,
                })),
            });
        }
        self.propose_raw(replica.range_id, writes, 0, guard).await?;
        Ok(responses)
    }

    /// Forgets the records of finished transactions (their intents are
    /// resolved), all in one Raft command.
    pub(crate) async fn eval_gc_txns(
        &self,
        replica: &ReplicaHandle,
        reqs: Vec<kv::GcTxnRequest>,
    ) -> Result<Vec<kv::Response>, Error> {
        let metas: Vec<TxnMeta> = reqs
            .into_iter()
            .map(|r| r.txn.unwrap_or_default())
            .collect();
        for meta in &metas {
            super::eval::check_key(replica, &meta.anchor_key)?;
        }
        let guard = replica
            .latches
            .acquire(metas.iter().map(record_latch).collect())
            .await;
        for meta in &metas {
            super::eval::check_key(replica, &meta.anchor_key)?;
        }
        replica.ensure_leader()?;
        let engine = self.engine().as_ref();
        let mut writes = Vec::new();
        for meta in &metas {
            if let Some(r) = txn::get_record(engine, meta)? {
                if status_of(&r) == TxnStatus::Pending {
                    return Err(Error::BadRequest(
                        "cannot forget the record of a pending transaction".into(),
                    ));
                }
                writes.push(RawWrite {
                    family: Family::Txn as i32,
                    key: txn::record_key(&meta.anchor_key, &meta.id),
                    value: vec![],
                    delete: true,
                });
            }
        }
        if !writes.is_empty() {
            self.propose_raw(replica.range_id, writes, 0, guard).await?;
            replica.records_changed.notify_waiters();
        }
        Ok(metas
            .iter()
            .map(|_| record_response(None).remove(0))
            .collect())
    }
}

/// Applies a raw write command to a batch; returns the bytes of versions
/// added (for the range's size; `bytes_removed` says what GC took away).
pub(crate) fn apply_raw(cmd: &RawWriteCommand, batch: &mut concord_storage::WriteBatch) -> u64 {
    let mut added = 0;
    for w in &cmd.writes {
        let cf = match Family::try_from(w.family) {
            Ok(Family::Lock) => Cf::Lock,
            Ok(Family::Txn) => Cf::Txn,
            Ok(Family::Meta) => Cf::Meta,
            _ => Cf::Data,
        };
        if w.delete {
            batch.delete(cf, w.key.clone());
        } else {
            if cf == Cf::Data {
                added += (w.key.len() + w.value.len()) as u64;
            }
            batch.put(cf, w.key.clone(), w.value.clone());
        }
    }
    added
}
