//! Evaluation of KV batches on a range's leader.
//!
//! Concord evaluates requests on the proposer (the leader), as CockroachDB
//! does, and replicates the *effects*: a commit's evaluation decides the
//! commit timestamp and checks for conflicts against local state, and only the
//! resulting MVCC writes go through Raft. Applying them is then a blind,
//! deterministic write on every replica.
//!
//! ```text
//!  read batch (gets, scans)          commit (1PC)
//!  ────────────────────────          ────────────────────────────────────────
//!  ReadIndex: still leader,          latches: write keys (w), read spans (r)
//!    applied ≥ commit index          leader ready?
//!  latches (read)                    ts = max(read_ts,
//!  MVCC get / scan at read_ts,                 tscache(key).next(),
//!    uncertainty check                         newest version(key).next())
//!  record reads in tscache           ts > read_ts? refresh read spans over
//!  release latches                     (read_ts, ts]: a write there = retry
//!                                    propose {writes @ ts}; wait for apply
//!                                    release latches; reply commit ts
//! ```
//!
//! Latches make evaluation and apply atomic with respect to overlapping
//! requests: a read never runs between a conflicting write's evaluation and
//! its application. The timestamp cache makes transactions serializable: a
//! write is never placed below a read of the same key by another transaction.
//!
//! Admin requests are evaluated here too: `AdminSplit` (with the whole range
//! latched) and `RangeInfo`.
//!
//! Transactions whose writes span ranges commit in two phases; their
//! requests (records, intents, resolution, pushes) are evaluated in
//! [`crate::txn_eval`].

use concord_hlc::Timestamp;
use concord_proto::kv::{
    self, request::Request as Req, response::Response as Resp, BatchRequest, BatchResponse,
    KvError, Span,
};
use concord_proto::meta::{MvccWrite, RaftCommand, WriteBatchCommand};
use concord_storage::fmt_key;
use concord_storage::mvcc::{self, MvccError, ReadOpts};

use crate::latch::LatchSpan;
use crate::store::{ReplicaHandle, Store};
use crate::Error;

impl Store {
    /// Evaluates a KV batch addressed to a range on this node.
    pub async fn batch(&self, req: BatchRequest) -> BatchResponse {
        let started = std::time::Instant::now();
        let range_id = req.range_id;
        let first = req
            .requests
            .first()
            .and_then(|r| r.request.as_ref())
            .map(request_name)
            .unwrap_or("empty");
        let n = req.requests.len();
        let result = self
            .eval_batch(req)
            .await
            .map_err(|e| self.enrich_mismatch(e));
        let took = started.elapsed();
        if took > crate::SLOW_STEP {
            tracing::debug!(
                target: "concord::slow",
                range_id,
                first,
                requests = n,
                took_ms = took.as_millis() as u64,
                error = result.as_ref().err().map(|e| e.to_string()),
                "slow batch"
            );
        }
        let now = Some(self.clock().now().into());
        match result {
            Ok(responses) => BatchResponse {
                now,
                responses,
                error: None,
            },
            Err(e) => BatchResponse {
                now,
                responses: vec![],
                error: Some(e.to_proto()),
            },
        }
    }

    async fn eval_batch(&self, req: BatchRequest) -> Result<Vec<kv::Response>, Error> {
        if let Some(now) = req.now {
            self.clock().update(now.into())?;
        }
        let replica = self.replica(req.range_id)?;
        replica
            .origins
            .lock()
            .record(req.gateway_node_id, std::time::Instant::now());
        let requests: Vec<Req> = req
            .requests
            .into_iter()
            .map(|r| {
                r.request
                    .ok_or_else(|| Error::BadRequest("empty request".into()))
            })
            .collect::<Result<_, _>>()?;
        let txn = req.txn.unwrap_or_default();
        let read_ts: Timestamp = concord_proto::ts(txn.read_ts);
        let read_ts = if read_ts.is_zero() {
            self.clock().now()
        } else {
            read_ts
        };
        let uncertainty_limit = concord_proto::ts(txn.uncertainty_limit).max(read_ts);
        let txn_id = (!txn.id.is_empty()).then_some(txn.id.as_slice());
        let ctx = Ctx {
            read_ts,
            uncertainty_limit,
            txn_id,
            historical: txn.historical,
        };
        let exclusive = requests
            .iter()
            .filter(|r| !matches!(r, Req::Get(_) | Req::Scan(_) | Req::Refresh(_)))
            .count();
        if exclusive > 0 {
            // Cleanup of many transactions at once (the gateway's resolver
            // batches them per range): one latch set, one Raft command.
            if requests.len() > 1 && requests.iter().all(|r| matches!(r, Req::ResolveIntents(_))) {
                let reqs = requests
                    .into_iter()
                    .filter_map(|r| match r {
                        Req::ResolveIntents(x) => Some(x),
                        _ => None,
                    })
                    .collect();
                return self.eval_resolve_intents_many(&replica, reqs).await;
            }
            if requests.len() > 1 && requests.iter().all(|r| matches!(r, Req::GcTxn(_))) {
                let reqs = requests
                    .into_iter()
                    .filter_map(|r| match r {
                        Req::GcTxn(x) => Some(x),
                        _ => None,
                    })
                    .collect();
                return self.eval_gc_txns(&replica, reqs).await;
            }
            if exclusive != 1 || requests.len() != 1 {
                return Err(Error::BadRequest(
                    "commits and admin requests must be alone in their batch".into(),
                ));
            }
            return match requests.into_iter().next() {
                Some(Req::Commit(c)) => self.eval_commit(&replica, &ctx, c).await,
                Some(Req::AdminSplit(s)) => self.eval_split(&replica, s).await,
                Some(Req::RangeInfo(_)) => self.eval_range_info(&replica),
                Some(Req::BeginTxn(r)) => self.eval_begin_txn(&replica, r).await,
                Some(Req::HeartbeatTxn(r)) => self.eval_heartbeat_txn(&replica, r).await,
                Some(Req::Prepare(r)) => self.eval_prepare(&replica, r).await,
                Some(Req::EndTxn(r)) => self.eval_end_txn(&replica, r).await,
                Some(Req::PushTxn(r)) => {
                    let expiry = self.config().txn_expiry;
                    self.eval_push_txn(&replica, r, expiry).await
                }
                Some(Req::ResolveIntents(r)) => {
                    self.eval_resolve_intents_many(&replica, vec![r]).await
                }
                Some(Req::GcTxn(r)) => self.eval_gc_txns(&replica, vec![r]).await,
                Some(Req::Gc(r)) => self.eval_gc(&replica, r).await,
                _ => unreachable!("checked: exactly one exclusive request"),
            };
        }
        self.eval_reads(&replica, &ctx, requests).await
    }

    async fn eval_reads(
        &self,
        replica: &ReplicaHandle,
        ctx: &Ctx<'_>,
        requests: Vec<Req>,
    ) -> Result<Vec<kv::Response>, Error> {
        let spans = read_latches(replica, &requests)?;
        // A historical read at or below the closed timestamp is served by
        // any replica, from its applied state (a follower read): no write
        // at or below that timestamp can still apply here.
        let follower_read = ctx.historical
            && ctx.read_ts <= *replica.closed_ts.lock()
            && requests
                .iter()
                .all(|r| matches!(r, Req::Get(_) | Req::Scan(_)));
        if follower_read {
            if !replica.status.lock().leader_ready {
                self.inner
                    .follower_reads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        } else {
            self.read_index(replica.range_id).await?;
        }
        let _latches = replica.latches.acquire(spans).await;
        // The range may have split while this request waited.
        read_latches(replica, &requests)?;
        // And this replica may have lost leadership while it waited: the
        // write whose latches it waited for is then answered (it can no
        // longer apply under this leadership) and releases them, but it may
        // still commit under the next leader at a timestamp below this
        // read's. Evaluated here, the read would miss it, and record itself
        // in a timestamp cache that no later write consults (the chaos
        // smoke's partition run saw a compare-and-set read a stale value
        // this way). A follower read needs no leadership: it reads at or
        // below the closed timestamp, which no write can go under.
        if !follower_read {
            replica.ensure_leader()?;
        }
        let engine = self.engine().as_ref();
        self.check_gc_threshold(replica, &requests, ctx.read_ts)?;
        let opts = ReadOpts {
            read_ts: ctx.read_ts,
            uncertainty_limit: ctx.uncertainty_limit,
            txn_id: ctx.txn_id,
        };
        let mut out = Vec::with_capacity(requests.len());
        for r in requests {
            let resp = match r {
                Req::Get(g) => {
                    let value = mvcc::get(engine, &g.key, opts).map_err(Error::from)?;
                    replica
                        .tscache
                        .lock()
                        .add_point(&g.key, ctx.read_ts, ctx.txn_id);
                    Resp::Get(kv::GetResponse {
                        found: value.is_some(),
                        value: value.unwrap_or_default(),
                    })
                }
                Req::Scan(s) => {
                    if s.reverse {
                        return Err(Error::BadRequest(
                            "reverse scans are not supported yet".into(),
                        ));
                    }
                    let end = (!s.end.is_empty()).then_some(s.end.as_slice());
                    let res = mvcc::scan(engine, &s.start, end, s.limit as usize, opts)
                        .map_err(Error::from)?;
                    // Record only what was actually read: up to the resume key.
                    let read_end = res.resume_key.clone().unwrap_or(s.end.clone());
                    replica
                        .tscache
                        .lock()
                        .add_span(&s.start, &read_end, ctx.read_ts, ctx.txn_id);
                    Resp::Scan(kv::ScanResponse {
                        rows: res
                            .rows
                            .into_iter()
                            .map(|(key, value)| kv::KeyValue { key, value })
                            .collect(),
                        resume_key: res.resume_key.unwrap_or_default(),
                    })
                }
                Req::Refresh(rf) => {
                    let from = concord_proto::ts(rf.from);
                    let to = concord_proto::ts(rf.to);
                    refresh_spans(engine, &rf.spans, from, to, ctx.txn_id)?;
                    record_reads(replica, &rf.spans, to, ctx.txn_id);
                    Resp::Refresh(kv::RefreshResponse {})
                }
                _ => unreachable!("exclusive requests are evaluated alone"),
            };
            out.push(kv::Response {
                response: Some(resp),
            });
        }
        Ok(out)
    }

    async fn eval_commit(
        &self,
        replica: &ReplicaHandle,
        ctx: &Ctx<'_>,
        commit: kv::CommitRequest,
    ) -> Result<Vec<kv::Response>, Error> {
        let mut spans = Vec::with_capacity(commit.writes.len() + commit.read_spans.len());
        for w in &commit.writes {
            check_key(replica, &w.key)?;
            spans.push(LatchSpan::write_key(&w.key));
        }
        for sp in &commit.read_spans {
            check_key_or_span(replica, &sp.start, &sp.end)?;
            spans.push(latch_for(&sp.start, &sp.end, false));
        }
        let latches = replica.latches.acquire(spans).await;
        for w in &commit.writes {
            check_key(replica, &w.key)?;
        }
        replica.ensure_leader()?;
        let engine = self.engine().as_ref();
        // The commit timestamp: at or above the read timestamp, above every
        // other transaction's read of a written key, above every committed
        // version of a written key.
        let keys: Vec<&[u8]> = commit.writes.iter().map(|w| w.key.as_slice()).collect();
        let (ts, _) = self.place_writes(replica, &keys, ctx.txn_id, ctx.read_ts)?;
        if ts > ctx.read_ts && commit.reads_elsewhere {
            // Reads on other ranges must be refreshed by the coordinator.
            return Err(Error::NeedsRefresh { ts });
        }
        if ts > ctx.read_ts {
            refresh_spans(engine, &commit.read_spans, ctx.read_ts, ts, ctx.txn_id)?;
            // The refreshed reads now hold at the commit timestamp: no other
            // transaction may write below it in those spans.
            record_reads(replica, &commit.read_spans, ts, ctx.txn_id);
        }
        let writes = commit
            .writes
            .into_iter()
            .map(|w| MvccWrite {
                key: w.key,
                ts: Some(ts.into()),
                value: w.value,
                tombstone: w.tombstone,
            })
            .collect();
        let cmd = RaftCommand {
            id: new_command_id(),
            cmd: Some(concord_proto::meta::raft_command::Cmd::WriteBatch(
                WriteBatchCommand { writes },
            )),
        };
        self.propose_keeping(replica.range_id, cmd, latches).await?;
        // Commit wait: a commit pushed into the future (above this node's
        // physical clock, e.g. by a new leader's timestamp cache low water
        // mark) is acknowledged only once that time has passed, so that a
        // read started anywhere after the acknowledgement sees it. Only then
        // does the clock observe the commit timestamp: observing it earlier
        // would run this node's clock ahead of its peers by up to the max
        // offset, and they would refuse its messages.
        let ahead = ts.wall.saturating_sub(self.clock().physical_now());
        if ahead > 0 {
            tokio::time::sleep(std::time::Duration::from_nanos(ahead)).await;
        }
        let _ = self.clock().update(ts);
        Ok(vec![kv::Response {
            response: Some(Resp::Commit(kv::CommitResponse {
                commit_ts: Some(ts.into()),
            })),
        }])
    }

    /// Closes a timestamp `lag` behind now on a range this node leads: no
    /// write at or below it will be accepted from now on (the timestamp
    /// cache's low water mark rises to it), and a Raft command tells every
    /// replica, which may then serve reads there. Evaluated with the whole
    /// range latched, so that no write evaluated below it is still in flight.
    pub async fn close_timestamp(
        &self,
        range_id: u64,
        lag: std::time::Duration,
    ) -> Result<Option<Timestamp>, Error> {
        let replica = self.replica(range_id)?;
        let span = {
            let d = replica.desc.read();
            LatchSpan::write_span(&d.start_key, &d.end_key)
        };
        let latches = replica.latches.acquire(vec![span]).await;
        replica.ensure_leader()?;
        let now = self.clock().now();
        let ts = Timestamp::new(now.wall.saturating_sub(lag.as_nanos() as u64), 0);
        if ts <= *replica.closed_ts.lock() {
            return Ok(None);
        }
        replica.tscache.lock().set_low_water(ts);
        let cmd = RaftCommand {
            id: new_command_id(),
            cmd: Some(concord_proto::meta::raft_command::Cmd::CloseTs(
                concord_proto::meta::CloseTimestampCommand {
                    ts: Some(ts.into()),
                },
            )),
        };
        self.propose_keeping(range_id, cmd, latches).await?;
        Ok(Some(ts))
    }

    /// Refuses reads (and refreshes) from below the range's GC threshold:
    /// the versions they would need may be gone.
    fn check_gc_threshold(
        &self,
        replica: &ReplicaHandle,
        requests: &[Req],
        read_ts: Timestamp,
    ) -> Result<(), Error> {
        let threshold =
            concord_storage::local::load_gc_threshold(self.engine().as_ref(), replica.range_id)?;
        if threshold.is_zero() {
            return Ok(());
        }
        for r in requests {
            let (ts, key) = match r {
                Req::Get(g) => (read_ts, g.key.as_slice()),
                Req::Scan(sc) => (read_ts, sc.start.as_slice()),
                Req::Refresh(rf) => (
                    concord_proto::ts(rf.from),
                    rf.spans.first().map_or(&[][..], |s| s.start.as_slice()),
                ),
                _ => continue,
            };
            if ts <= threshold {
                return Err(Error::TransactionRetry {
                    key: key.to_vec(),
                    reason: format!(
                        "BATCH_TIMESTAMP_BEFORE_GC_THRESHOLD: a read at {ts} is at or below the range's MVCC GC threshold {threshold}"
                    ),
                });
            }
        }
        Ok(())
    }

    /// MVCC garbage collection of one batch of the range.
    async fn eval_gc(
        &self,
        replica: &ReplicaHandle,
        req: kv::GcRequest,
    ) -> Result<Vec<kv::Response>, Error> {
        let (start, end) = {
            let d = replica.desc.read();
            let start = if req.start.is_empty() || req.start.as_slice() < d.start_key.as_slice() {
                d.start_key.clone()
            } else {
                req.start.clone()
            };
            (start, d.end_key.clone())
        };
        check_key(replica, &start)?;
        let latches = replica
            .latches
            .acquire(vec![LatchSpan::write_span(&start, &end)])
            .await;
        check_key(replica, &start)?;
        replica.ensure_leader()?;
        let engine = self.engine().as_ref();
        let old = concord_storage::local::load_gc_threshold(engine, replica.range_id)?;
        let threshold = concord_proto::ts(req.threshold).max(old);
        let limit = if req.limit == 0 {
            10_000
        } else {
            req.limit as usize
        };
        let end_opt = (!end.is_empty()).then_some(end.as_slice());
        let (doomed, bytes, resume) =
            mvcc::gc_candidates(engine, &start, end_opt, threshold, limit)?;
        use concord_proto::meta::raw_write::Family;
        let mut writes: Vec<concord_proto::meta::RawWrite> = doomed
            .into_iter()
            .map(|key| concord_proto::meta::RawWrite {
                family: Family::Data as i32,
                key,
                value: vec![],
                delete: true,
            })
            .collect();
        let deleted = writes.len() as u64;
        if threshold > old {
            let ts: concord_proto::meta::Timestamp = threshold.into();
            writes.push(concord_proto::meta::RawWrite {
                family: Family::Meta as i32,
                key: concord_storage::keys::meta_gc_threshold(replica.range_id),
                value: prost::Message::encode_to_vec(&ts),
                delete: false,
            });
        }
        self.propose_raw(replica.range_id, writes, bytes, latches)
            .await?;
        Ok(vec![kv::Response {
            response: Some(Resp::Gc(kv::GcResponse {
                deleted,
                resume_key: resume.unwrap_or_default(),
            })),
        }])
    }

    /// Splits the range at a key: evaluated with the whole range latched, so
    /// that nothing runs against it while its bounds change. The right
    /// side's size is counted before the latch is taken (a scan of tens of
    /// MiB would otherwise stall every request on the range): writes that
    /// land in between make it approximate, which the size-based split
    /// queue tolerates.
    async fn eval_split(
        &self,
        replica: &ReplicaHandle,
        req: kv::AdminSplitRequest,
    ) -> Result<Vec<kv::Response>, Error> {
        let key = req.split_key;
        if key.as_slice() < concord_storage::keys::MIN_SPLIT_KEY {
            return Err(Error::BadRequest(format!(
                "cannot split at {}: ranges below the first user table do not split",
                fmt_key(&key)
            )));
        }
        check_key(replica, &key)?;
        let counted = {
            let d = replica.desc.read();
            concord_proto::meta::RangeDescriptor {
                start_key: key.clone(),
                end_key: d.end_key.clone(),
                ..Default::default()
            }
        };
        let engine = self.engine().clone();
        let right_bytes = tokio::task::spawn_blocking(move || {
            concord_storage::snapshot::span_bytes(engine.as_ref(), &counted)
        })
        .await
        .map_err(|e| Error::Internal(format!("counting the right side's bytes: {e}")))??;
        let span = {
            let d = replica.desc.read();
            LatchSpan::write_span(&d.start_key, &d.end_key)
        };
        let latches = replica.latches.acquire(vec![span]).await;
        check_key(replica, &key)?;
        replica.ensure_leader()?;
        let desc = replica.desc.read().clone();
        if key == desc.start_key {
            // Already a boundary: nothing to do. If the right side carries
            // the range id this request asked for, the boundary is this
            // very split, applied on an earlier attempt whose sender gave up
            // waiting (the attempt deadline), and this is its retry: answer
            // as the split did, with the left side (a replica of this store
            // too), so that the caller records both sides in meta2.
            let left = if desc.range_id == req.new_range_id {
                self.replica_ending_at(&key).map(|r| r.desc.read().clone())
            } else {
                None
            };
            return Ok(vec![kv::Response {
                response: Some(Resp::AdminSplit(kv::AdminSplitResponse {
                    left,
                    right: Some(desc),
                })),
            }]);
        }

        let mut left = desc.clone();
        left.end_key = key.clone();
        left.generation += 1;
        let right = concord_proto::meta::RangeDescriptor {
            range_id: req.new_range_id,
            start_key: key.clone(),
            end_key: desc.end_key.clone(),
            replicas: desc.replicas.clone(),
            next_replica_id: desc.next_replica_id,
            generation: left.generation,
        };
        let cmd = RaftCommand {
            id: new_command_id(),
            cmd: Some(concord_proto::meta::raft_command::Cmd::Split(
                concord_proto::meta::SplitCommand {
                    left: Some(left.clone()),
                    right: Some(right.clone()),
                    right_bytes,
                },
            )),
        };
        self.propose_keeping(replica.range_id, cmd, latches).await?;
        Ok(vec![kv::Response {
            response: Some(Resp::AdminSplit(kv::AdminSplitResponse {
                left: Some(left),
                right: Some(right),
            })),
        }])
    }

    /// The leader's view of its range.
    fn eval_range_info(&self, replica: &ReplicaHandle) -> Result<Vec<kv::Response>, Error> {
        replica.ensure_leader()?;
        let st = replica.status.lock().clone();
        Ok(vec![kv::Response {
            response: Some(Resp::RangeInfo(kv::RangeInfoResponse {
                descriptor: Some(replica.desc.read().clone()),
                leader_node_id: self.node_id(),
                size_bytes: st.bytes,
                raft_log_entries: st.log_entries,
            })),
        }])
    }
}

/// Checks that every key of a read batch is in the range, and the latches
/// it needs.
fn read_latches(replica: &ReplicaHandle, requests: &[Req]) -> Result<Vec<LatchSpan>, Error> {
    let mut spans = Vec::with_capacity(requests.len());
    for r in requests {
        match r {
            Req::Get(g) => {
                check_key(replica, &g.key)?;
                spans.push(LatchSpan::read_key(&g.key));
            }
            Req::Scan(s) => {
                check_span(replica, &s.start, &s.end)?;
                spans.push(LatchSpan::read_span(&s.start, &s.end));
            }
            Req::Refresh(rf) => {
                for sp in &rf.spans {
                    check_key_or_span(replica, &sp.start, &sp.end)?;
                    spans.push(latch_for(&sp.start, &sp.end, false));
                }
            }
            _ => unreachable!("exclusive requests are evaluated alone"),
        }
    }
    Ok(spans)
}

struct Ctx<'a> {
    read_ts: Timestamp,
    uncertainty_limit: Timestamp,
    txn_id: Option<&'a [u8]>,
    /// A read-only read at a past timestamp (AS OF SYSTEM TIME).
    historical: bool,
}

/// The latch of the key `start` (`end` empty) or of the span `[start, end)`.
pub(crate) fn latch_for(start: &[u8], end: &[u8], write: bool) -> LatchSpan {
    match (end.is_empty(), write) {
        (true, false) => LatchSpan::read_key(start),
        (true, true) => LatchSpan::write_key(start),
        (false, false) => LatchSpan::read_span(start, end),
        (false, true) => LatchSpan::write_span(start, end),
    }
}

/// Records in the timestamp cache that `txn_id` read `spans` at `ts`.
fn record_reads(replica: &ReplicaHandle, spans: &[Span], ts: Timestamp, txn_id: Option<&[u8]>) {
    let mut tscache = replica.tscache.lock();
    for sp in spans {
        if sp.end.is_empty() {
            tscache.add_point(&sp.start, ts, txn_id);
        } else {
            tscache.add_span(&sp.start, &sp.end, ts, txn_id);
        }
    }
}

/// Fails with a retry error if anything was written in `spans` in `(from, to]`.
fn refresh_spans(
    engine: &dyn concord_storage::Engine,
    spans: &[Span],
    from: Timestamp,
    to: Timestamp,
    txn_id: Option<&[u8]>,
) -> Result<(), Error> {
    for sp in spans {
        let end = (!sp.end.is_empty()).then_some(sp.end.as_slice());
        if let Some((key, ts)) = mvcc::find_write_in_span(engine, &sp.start, end, from, to, txn_id)?
        {
            return Err(Error::TransactionRetry {
                key,
                reason: format!(
                    "RETRY_SERIALIZABLE: a read at {from} was invalidated by a write at {ts}; the commit had to move to {to}"
                ),
            });
        }
    }
    Ok(())
}

fn new_command_id() -> Vec<u8> {
    rand::random::<[u8; 16]>().to_vec()
}

fn in_range(desc: &concord_proto::meta::RangeDescriptor, key: &[u8]) -> bool {
    key >= desc.start_key.as_slice() && (desc.end_key.is_empty() || key < desc.end_key.as_slice())
}

fn mismatch(replica: &ReplicaHandle, key: &[u8]) -> Error {
    Error::RangeKeyMismatch {
        range_id: replica.range_id,
        key: key.to_vec(),
        desc: Box::new(replica.desc.read().clone()),
    }
}

impl Store {
    /// Adds to a key mismatch the local range that does hold the key, so
    /// that the client's cache learns it without a meta lookup.
    pub(crate) fn enrich_mismatch(&self, e: Error) -> Error {
        match e {
            Error::RangeKeyMismatch { range_id, key, .. } => match self.replica_for_key(&key) {
                Some(r) => Error::RangeKeyMismatch {
                    range_id,
                    desc: Box::new(r.desc.read().clone()),
                    key,
                },
                None => Error::RangeKeyMismatch {
                    range_id,
                    desc: Box::default(),
                    key,
                },
            },
            other => other,
        }
    }
}

pub(crate) fn check_key(replica: &ReplicaHandle, key: &[u8]) -> Result<(), Error> {
    if in_range(&replica.desc.read(), key) {
        Ok(())
    } else {
        Err(mismatch(replica, key))
    }
}

pub(crate) fn check_span(replica: &ReplicaHandle, start: &[u8], end: &[u8]) -> Result<(), Error> {
    let desc = replica.desc.read();
    let start_ok = in_range(&desc, start);
    let end_ok = if end.is_empty() {
        desc.end_key.is_empty()
    } else {
        desc.end_key.is_empty() || end <= desc.end_key.as_slice()
    };
    if start_ok && end_ok {
        Ok(())
    } else {
        drop(desc);
        Err(mismatch(replica, start))
    }
}

/// Checks that the key `start` (`end` empty) or the span `[start, end)` is
/// in the range.
pub(crate) fn check_key_or_span(
    replica: &ReplicaHandle,
    start: &[u8],
    end: &[u8],
) -> Result<(), Error> {
    if end.is_empty() {
        check_key(replica, start)
    } else {
        check_span(replica, start, end)
    }
}

impl Error {
    /// The error as it travels in a `BatchResponse`.
    pub fn to_proto(&self) -> KvError {
        use kv::kv_error::Kind;
        let mut e = KvError {
            kind: Kind::Internal as i32,
            message: self.to_string(),
            ..Default::default()
        };
        match self {
            Error::NotLeader { leader_node, .. } => {
                e.kind = Kind::NotLeader as i32;
                e.leader_node_id = leader_node.unwrap_or(0);
            }
            Error::RangeNotFound(_) => e.kind = Kind::RangeNotFound as i32,
            Error::RangeKeyMismatch { key, desc, .. } => {
                e.kind = Kind::RangeKeyMismatch as i32;
                e.key = key.clone();
                e.descriptor = Some((**desc).clone());
            }
            Error::Mvcc(MvccError::ReadWithinUncertainty { key, value_ts, .. }) => {
                e.kind = Kind::ReadWithinUncertainty as i32;
                e.key = key.clone();
                e.ts = Some((*value_ts).into());
            }
            Error::Mvcc(MvccError::WriteIntent { key, intent }) => {
                e.kind = Kind::WriteIntent as i32;
                e.key = key.clone();
                e.txn_id = intent.id.clone();
                e.intent_txn = Some((**intent).clone());
            }
            Error::TxnAborted { .. } => e.kind = Kind::TxnAborted as i32,
            Error::Mvcc(MvccError::WriteTooOld { key, .. })
            | Error::TransactionRetry { key, .. } => {
                e.kind = Kind::TransactionRetry as i32;
                e.key = key.clone();
            }
            Error::AmbiguousResult(_) => e.kind = Kind::AmbiguousResult as i32,
            Error::RangeBusy(_) => e.kind = Kind::RangeBusy as i32,
            Error::NeedsRefresh { ts } => {
                e.kind = Kind::NeedsRefresh as i32;
                e.ts = Some((*ts).into());
            }
            Error::Unavailable(_) | Error::Stopped => e.kind = Kind::Unavailable as i32,
            Error::ClockOffset(_) => e.kind = Kind::ClockOffset as i32,
            Error::Storage(_) | Error::Mvcc(MvccError::Storage(_)) => e.kind = Kind::Storage as i32,
            Error::BadRequest(_) | Error::AlreadyBootstrapped(_) | Error::Internal(_) => {}
        }
        e
    }
}

/// Formats a key for error messages.
pub fn key_for_humans(key: &[u8]) -> String {
    fmt_key(key)
}

/// The kind of a request, for logs.
fn request_name(r: &Req) -> &'static str {
    match r {
        Req::Get(_) => "Get",
        Req::Scan(_) => "Scan",
        Req::Refresh(_) => "Refresh",
        Req::Commit(_) => "Commit",
        Req::AdminSplit(_) => "AdminSplit",
        Req::RangeInfo(_) => "RangeInfo",
        Req::BeginTxn(_) => "BeginTxn",
        Req::HeartbeatTxn(_) => "HeartbeatTxn",
        Req::Prepare(_) => "Prepare",
        Req::EndTxn(_) => "EndTxn",
        Req::PushTxn(_) => "PushTxn",
        Req::ResolveIntents(_) => "ResolveIntents",
        Req::GcTxn(_) => "GcTxn",
        Req::Gc(_) => "Gc",
    }
}
