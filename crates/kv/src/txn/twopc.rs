//! Two-phase commit, and what a transaction does when it meets another
//! transaction's intent.
//!
//! ```text
//!  commit with writes on several ranges
//!  ─────────────────────────────────────
//!  BeginTxn(anchor = first key)     record PENDING              ── crash: nothing written
//!  heartbeat task, every second     record.heartbeat = now
//!  Prepare, one batch per range     intents at ts_i ≥ read_ts   ── crash: record expires,
//!                                                                  pushers abort it and
//!                                                                  remove the intents
//!  commit_ts = max(ts_i); if > read_ts: refresh reads or abort (40001)
//!  EndTxn(COMMITTED, commit_ts)     ◄── the commit point        ── crash after: readers find
//!                                                                  COMMITTED and resolve
//!  reply to the client
//!  (background) ResolveIntents per range, then GcTxn
//! ```
//!
//! Meeting an intent (a read at or above its timestamp, or a write):
//! PushTxn to the intent's record. A finished (or vanished) transaction's
//! intent is resolved and the request sent again; a pending one is waited
//! for, polling with backoff, unless its coordinator stopped heartbeating
//! (the record's range aborts it) or — for writers only — the pusher has the
//! higher priority (the pushee is aborted). Waits only go from lower to
//! higher priority writers, and readers hold no intents, so there is no
//! waiting cycle; a wait is bounded and ends in a retry error.
//!
//! Locks (`SELECT … FOR UPDATE`) use the same machinery early: the record
//! is created when the first lock is taken, locks are lock-only intents
//! (readers pass them; they leave no version), and the transaction then
//! commits or aborts through its record whatever its writes.

use std::time::Duration;

use concord_proto::meta::{KeySpan, TxnMeta, TxnRecord, TxnStatus};

/// A transaction's record once it exists before commit (it locked keys):
/// the record's meta, its heartbeat task, and where its locks are.
pub(super) struct Locks {
    pub(super) meta: TxnMeta,
    pub(super) heartbeat: tokio::task::JoinHandle<()>,
    pub(super) spans: Vec<KeySpan>,
}

use super::*;

/// How often a coordinator heartbeats its transaction record. The record
/// expires after the store's `txn_expiry` (5 s by default) without one.
pub(crate) const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a transaction waits for another's pending intent before it
/// gives up with a retry error.
const MAX_INTENT_WAIT: Duration = Duration::from_secs(20);

/// Failpoints of the commit protocol, for tests that crash a coordinator at
/// a chosen step.
pub mod failpoints {
    /// The coordinator stops (as if its process died) after its intents are
    /// written and before the commit point.
    pub const AFTER_PREPARE: &str = "2pc-after-prepare";
    /// The coordinator stops right after the commit point, before it
    /// acknowledges or resolves anything.
    pub const AFTER_COMMIT: &str = "2pc-after-commit";
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
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let mut backoff = Duration::from_millis(5);
        loop {
            let req = Req::PushTxn(kv::PushTxnRequest {
                pushee: Some(intent.clone()),
                abort: may_abort,
                pusher_priority: self.priority,
                pusher_id: self.id.clone(),
            });
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
                let span = KeySpan {
                    start: key.to_vec(),
                    end: vec![],
                };
                return resolve_spans(&self.sender, &intent.id, status, commit_ts, &[span]).await;
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
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// The transaction's record, created (PENDING, heartbeated from now on)
    /// if it has none yet, anchored at `anchor`.
    async fn ensure_record(&mut self, anchor: &[u8]) -> Result<TxnMeta> {
        if let Some(lock) = &self.locks {
            return Ok(lock.meta.clone());
        }
        let meta = self.meta(anchor);
        send_one(
            &self.sender,
            anchor,
            self.batch(vec![Req::BeginTxn(kv::BeginTxnRequest {
                txn: Some(meta.clone()),
            })]),
        )
        .await?;
        let heartbeat = tokio::spawn(heartbeat_loop(self.sender.clone(), meta.clone()));
        self.locks = Some(Locks {
            meta: meta.clone(),
            heartbeat,
            spans: Vec::new(),
        });
        Ok(meta)
    }

    /// Locks the keys (SELECT … FOR UPDATE): lock-only intents, through the
    /// transaction's record, that make other writers and lockers wait (or
    /// push) until this transaction ends. Readers are not blocked.
    pub async fn lock_keys(&mut self, keys: &[Vec<u8>]) -> Result<()> {
        self.check_open()?;
        let Some(first) = keys.first() else {
            return Ok(());
        };
        let meta = self.ensure_record(first).await?;
        let writes: Vec<kv::Write> = keys
            .iter()
            .map(|k| kv::Write {
                key: k.clone(),
                value: vec![],
                tombstone: false,
                lock_only: true,
            })
            .collect();
        let (result, spans) = self.prepare_all(&meta, writes).await;
        if let Some(l) = self.locks.as_mut() {
            l.spans.extend(spans);
        }
        result.map(|_| ())
    }

    /// Commits through the transaction record: writes that span several
    /// ranges, or any commit of a transaction that holds locks.
    pub(super) async fn commit_two_phase(&mut self, writes: Vec<kv::Write>) -> Result<Timestamp> {
        let anchor = writes
            .first()
            .map(|w| w.key.clone())
            .or_else(|| self.locks.as_ref().map(|l| l.meta.anchor_key.clone()))
            .ok_or_else(|| Error::Internal("two-phase commit without writes".into()))?;
        let meta = self.ensure_record(&anchor).await?;
        let result = self.prepare_and_commit(&meta, writes).await;
        let locks = self.locks.take();
        if let Some(l) = &locks {
            l.heartbeat.abort();
        }
        let lock_spans = locks.map(|l| l.spans).unwrap_or_default();
        match result {
            Ok(_) if self.failpoint(failpoints::AFTER_COMMIT) => Err(Error::Internal(
                "failpoint: coordinator stopped after the commit point".into(),
            )),
            Ok((commit_ts, mut spans)) => {
                // Commit wait, as for one-phase commits: a commit timestamp
                // ahead of this node's clock is acknowledged only once that
                // time has passed here.
                let clock = self.sender.clock();
                let ahead = commit_ts.wall.saturating_sub(clock.physical_now());
                if ahead > 0 {
                    tokio::time::sleep(Duration::from_nanos(ahead)).await;
                }
                let _ = clock.update(commit_ts);
                spans.extend(lock_spans);
                tokio::spawn(cleanup(
                    self.sender.clone(),
                    meta,
                    TxnStatus::Committed,
                    commit_ts,
                    spans,
                ));
                Ok(commit_ts)
            }
            Err((e, mut spans)) => {
                if !matches!(e, Error::Internal(ref m) if m.starts_with("failpoint")) {
                    spans.extend(lock_spans);
                    tokio::spawn(abort_and_clean_up(self.sender.clone(), meta, spans));
                }
                Err(e)
            }
        }
    }

    /// Ends a transaction that holds locks without committing it.
    pub(super) fn release_locks(&mut self) {
        if let Some(l) = self.locks.take() {
            l.heartbeat.abort();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(abort_and_clean_up(self.sender.clone(), l.meta, l.spans));
            }
        }
    }

    /// Writes intents for `writes` on every range they touch; returns the
    /// highest intent timestamp, and the spans where intents may now be.
    async fn prepare_all(
        &self,
        meta: &TxnMeta,
        writes: Vec<kv::Write>,
    ) -> (Result<Timestamp>, Vec<KeySpan>) {
        let mut spans: Vec<KeySpan> = Vec::new();
        let mut max_ts = Timestamp::ZERO;
        let mut pending = writes;
        let mut regroups = 0;
        while !pending.is_empty() {
            // Group by range with the current cache.
            let mut groups: BTreeMap<u64, (Vec<u8>, Vec<kv::Write>)> = BTreeMap::new();
            for w in pending.drain(..) {
                let d = match self.sender.range_for_key(&w.key).await {
                    Ok(d) => d,
                    Err(e) => return (Err(e), spans),
                };
                groups
                    .entry(d.range_id)
                    .or_insert_with(|| (w.key.clone(), Vec::new()))
                    .1
                    .push(w);
            }
            let sends = groups.into_values().map(|(route, ws)| async move {
                let r = self.prepare_group(meta, &route, ws.clone()).await;
                (r, ws)
            });
            for (r, ws) in futures::future::join_all(sends).await {
                // Intents may exist wherever a prepare was sent.
                if let (Some(first), Some(last)) = (ws.first(), ws.last()) {
                    spans.push(KeySpan {
                        start: first.key.clone(),
                        end: [last.key.as_slice(), &[0u8]].concat(),
                    });
                }
                match r {
                    Ok(ts) => max_ts = max_ts.max(ts),
                    Err(Error::RangeChanged) if regroups < MAX_REGROUPS => pending.extend(ws),
                    Err(e) => return (Err(e), spans),
                }
            }
            regroups += 1;
        }
        (Ok(max_ts), spans)
    }

    /// Prepares every range, moves the commit timestamp (refreshing reads),
    /// and switches the record to COMMITTED. On failure, returns the spans
    /// where intents may have been written.
    async fn prepare_and_commit(
        &mut self,
        meta: &TxnMeta,
        writes: Vec<kv::Write>,
    ) -> std::result::Result<(Timestamp, Vec<KeySpan>), (Error, Vec<KeySpan>)> {
        let (prepared, spans) = self.prepare_all(meta, writes).await;
        let commit_ts = match prepared {
            Ok(ts) => ts.max(self.read_ts),
            Err(e) => return Err((e, spans)),
        };
        if self.failpoint(failpoints::AFTER_PREPARE) {
            return Err((
                Error::Internal("failpoint: coordinator stopped after prepare".into()),
                spans,
            ));
        }
        if commit_ts > self.read_ts {
            if let Err(e) = self.refresh_to(commit_ts).await {
                return Err((e, spans));
            }
        }
        let end = Req::EndTxn(kv::EndTxnRequest {
            txn: Some(meta.clone()),
            commit: true,
            commit_ts: Some(commit_ts.into()),
            intent_spans: spans.clone(),
        });
        let batch = plain_batch(meta, end);
        let mut last_err = None;
        // EndTxn is idempotent: an ambiguous attempt is simply repeated.
        for _ in 0..5 {
            match send_one(&self.sender, &meta.anchor_key, batch.clone()).await {
                Ok(resp) => {
                    let record = match record_of(resp) {
                        Ok(r) => r,
                        Err(e) => return Err((e, spans)),
                    };
                    let status = record
                        .as_ref()
                        .map(|r| TxnStatus::try_from(r.status).unwrap_or(TxnStatus::Pending));
                    return match status {
                        Some(TxnStatus::Committed) => {
                            let ts = record
                                .and_then(|r| r.commit_ts)
                                .map(|t| concord_proto::ts(Some(t)))
                                .unwrap_or(commit_ts);
                            Ok((ts, spans))
                        }
                        _ => Err((
                            Error::TxnAborted(format!(
                                "transaction {} could not commit",
                                concord_storage::fmt_txn_id(&meta.id)
                            )),
                            spans,
                        )),
                    };
                }
                Err(e @ (Error::AmbiguousResult(_) | Error::Unavailable(_))) => last_err = Some(e),
                Err(e) => return Err((e, spans)),
            }
        }
        Err((
            last_err.unwrap_or_else(|| Error::AmbiguousResult("commit record".into())),
            spans,
        ))
    }

    /// Writes the intents of one range's writes; returns their timestamp.
    async fn prepare_group(
        &self,
        meta: &TxnMeta,
        route: &[u8],
        writes: Vec<kv::Write>,
    ) -> Result<Timestamp> {
        loop {
            let req = Req::Prepare(kv::PrepareRequest {
                txn: Some(meta.clone()),
                writes: writes.clone(),
            });
            match send_one(&self.sender, route, plain_batch(meta, req)).await {
                Ok(kv::Response {
                    response: Some(Resp::Prepare(p)),
                }) => return Ok(concord_proto::ts(p.write_ts)),
                Ok(other) => {
                    return Err(Error::Internal(format!(
                        "unexpected response to prepare: {other:?}"
                    )))
                }
                Err(Error::WriteIntent { key, intent }) => {
                    self.handle_intent(&key, &intent, true).await?
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A batch carrying a transaction's meta as its header.
fn plain_batch(meta: &TxnMeta, req: Req) -> BatchRequest {
    BatchRequest {
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

/// Resolves a finished transaction's intents in `spans` (any ranges).
async fn resolve_spans(
    sender: &DistSender,
    txn_id: &[u8],
    status: TxnStatus,
    commit_ts: Timestamp,
    spans: &[KeySpan],
) -> Result<()> {
    for sp in spans {
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
                let req = Req::ResolveIntents(kv::ResolveIntentsRequest {
                    txn_id: txn_id.to_vec(),
                    status: status as i32,
                    commit_ts: Some(commit_ts.into()),
                    spans: vec![KeySpan {
                        start: clipped.start.clone(),
                        end: clipped.end,
                    }],
                });
                let batch = BatchRequest {
                    range_id: 0,
                    now: None,
                    txn: None,
                    requests: vec![kv::Request { request: Some(req) }],
                };
                match sender.send(&clipped.start, batch, false).await {
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
    }
    Ok(())
}

/// Aborts a transaction's record (so nobody can commit it), then removes its
/// intents and the record.
async fn abort_and_clean_up(sender: Arc<DistSender>, meta: TxnMeta, spans: Vec<KeySpan>) {
    let end = Req::EndTxn(kv::EndTxnRequest {
        txn: Some(meta.clone()),
        commit: false,
        commit_ts: None,
        intent_spans: spans.clone(),
    });
    let batch = plain_batch(&meta, end);
    match send_one(&sender, &meta.anchor_key, batch).await {
        Ok(_) | Err(Error::TxnAborted(_)) => {
            cleanup(sender, meta, TxnStatus::Aborted, Timestamp::ZERO, spans).await
        }
        Err(e) => tracing::debug!(
            "aborting transaction {}: {e}; its intents wait for a pusher",
            concord_storage::fmt_txn_id(&meta.id)
        ),
    }
}

/// Keeps a transaction record alive while its coordinator works.
async fn heartbeat_loop(sender: Arc<DistSender>, meta: TxnMeta) {
    loop {
        tokio::time::sleep(HEARTBEAT_INTERVAL).await;
        let req = Req::HeartbeatTxn(kv::HeartbeatTxnRequest {
            txn: Some(meta.clone()),
        });
        match send_one(&sender, &meta.anchor_key, plain_batch(&meta, req)).await {
            Ok(resp) => match record_of(resp) {
                Ok(Some(r)) if r.status == TxnStatus::Pending as i32 => {}
                _ => return,
            },
            Err(e) => tracing::debug!(
                "heartbeat of {}: {e}",
                concord_storage::fmt_txn_id(&meta.id)
            ),
        }
    }
}

/// After the outcome is recorded: resolves the intents, then forgets the
/// record. Failures are left to the transactions that meet the intents.
async fn cleanup(
    sender: Arc<DistSender>,
    meta: TxnMeta,
    status: TxnStatus,
    commit_ts: Timestamp,
    spans: Vec<KeySpan>,
) {
    if let Err(e) = resolve_spans(&sender, &meta.id, status, commit_ts, &spans).await {
        tracing::debug!(
            "resolving the intents of {}: {e}; readers will resolve them",
            concord_storage::fmt_txn_id(&meta.id)
        );
        return;
    }
    let req = Req::GcTxn(kv::GcTxnRequest {
        txn: Some(meta.clone()),
    });
    if let Err(e) = send_one(&sender, &meta.anchor_key, plain_batch(&meta, req)).await {
        tracing::debug!(
            "forgetting record {}: {e}",
            concord_storage::fmt_txn_id(&meta.id)
        );
    }
}
