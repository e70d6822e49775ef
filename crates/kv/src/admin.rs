//! Cluster administration through the KV API: id sequences, splits, the
//! meta2 index of range descriptors, and range listings.
//!
//! meta2 (in range 1) maps each range's end key to its descriptor; the
//! [`crate::DistSender`] reads it to find ranges. It is updated after the
//! change it describes has committed on the range itself, in its own
//! transaction, so it can briefly lag: a lookup may return a descriptor that
//! is one split or membership change old. That is safe because replicas check
//! every key they are sent and answer `RangeKeyMismatch` with the current
//! descriptor, which the sender caches and retries with. A stale writer never
//! overwrites a newer entry: entries carry the descriptor generation.

use concord_proto::kv::{self, request::Request as Req, response::Response as Resp, BatchRequest};
use concord_proto::meta::RangeDescriptor;
use concord_storage::keys;
use prost::Message as _;

use crate::{Db, Error, Result};

/// A range as `SHOW RANGES` reports it.
#[derive(Clone, Debug)]
pub struct RangeInfo {
    pub descriptor: RangeDescriptor,
    /// 0 if the leader could not be reached.
    pub leader_node_id: u64,
    pub size_bytes: u64,
    pub raft_log_entries: u64,
}

const MAX_RETRIES: usize = 50;

fn single(req: Req) -> BatchRequest {
    BatchRequest {
        gateway_node_id: 0,
        range_id: 0,
        now: None,
        txn: None,
        requests: vec![kv::Request { request: Some(req) }],
    }
}

/// Reads the counter at `key` (`first` if absent) and writes it back plus
/// one, inside `txn`: the next value of a sequence.
pub async fn increment(txn: &mut crate::Txn, key: &[u8], first: u64) -> Result<u64> {
    let next = match txn.get(key).await? {
        Some(raw) => u64::from_be_bytes(raw.as_slice().try_into().map_err(|_| {
            Error::Internal(format!(
                "corrupt sequence at {}",
                concord_storage::fmt_key(key)
            ))
        })?),
        None => first,
    };
    txn.put(key.to_vec(), (next + 1).to_be_bytes().to_vec())?;
    Ok(next)
}

impl Db {
    /// The next value of a cluster-wide sequence (range ids, node ids),
    /// starting at `first`.
    pub async fn next_sequence(&self, name: &str, first: u64) -> Result<u64> {
        let key = keys::system_key(&format!("seq/{name}"));
        let mut last_err = None;
        for _ in 0..MAX_RETRIES {
            let mut txn = self.begin();
            let next = increment(&mut txn, &key, first).await?;
            match txn.commit().await {
                Ok(_) => return Ok(next),
                Err(e) if e.is_retryable() => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::Internal("sequence retries exhausted".into())))
    }

    /// Marks a node as decommissioning (or not): replicate queues move every
    /// replica off a decommissioning node.
    pub async fn set_decommissioning(&self, node_id: u64, on: bool) -> Result<()> {
        let key = keys::system_key(&format!("decommission/{node_id:020}"));
        let mut last_err = None;
        for _ in 0..MAX_RETRIES {
            let mut txn = self.begin();
            if on {
                txn.put(key.clone(), vec![1])?;
            } else {
                txn.delete(key.clone())?;
            }
            match txn.commit().await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_retryable() => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::Internal("decommission retries exhausted".into())))
    }

    /// The nodes marked as decommissioning.
    pub async fn decommissioning_nodes(&self) -> Result<Vec<u64>> {
        let start = keys::system_key("decommission/");
        let end = keys::system_key("decommission0");
        let mut txn = self.begin();
        let rows = txn.scan(&start, &end, 0).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(k, _)| std::str::from_utf8(&k[start.len()..]).ok()?.parse().ok())
            .collect())
    }

    /// Records descriptors in meta2, never replacing a newer generation.
    pub async fn update_meta(&self, descs: &[RangeDescriptor]) -> Result<()> {
        let mut last_err = None;
        for _ in 0..MAX_RETRIES {
            let mut txn = self.begin();
            for d in descs {
                let key = keys::meta2_key(&d.end_key);
                if let Some(raw) = txn.get(&key).await? {
                    if let Ok(existing) = RangeDescriptor::decode(raw.as_slice()) {
                        if existing.generation > d.generation {
                            continue;
                        }
                    }
                }
                txn.put(key, d.encode_to_vec())?;
            }
            match txn.commit().await {
                Ok(_) => {
                    for d in descs {
                        self.sender().cache_descriptor(d.clone());
                    }
                    return Ok(());
                }
                Err(e) if e.is_retryable() => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::Internal("meta update retries exhausted".into())))
    }

    /// MVCC garbage collection of the range that holds `key`: raises its GC
    /// threshold to `threshold` and deletes, batch by batch, the versions no
    /// read at or above it can see. Returns how many were deleted.
    pub async fn gc_range(&self, key: &[u8], threshold: concord_hlc::Timestamp) -> Result<u64> {
        let mut start = key.to_vec();
        let mut deleted = 0;
        loop {
            let req = single(Req::Gc(kv::GcRequest {
                threshold: Some(threshold.into()),
                start: start.clone(),
                limit: 10_000,
            }));
            let resp = self.sender().send(&start, req, false).await?;
            let Some(Resp::Gc(g)) = resp.into_iter().next().and_then(|r| r.response) else {
                return Err(Error::Internal(
                    "unexpected response to a GC request".into(),
                ));
            };
            deleted += g.deleted;
            if g.resume_key.is_empty() {
                return Ok(deleted);
            }
            start = g.resume_key;
        }
    }

    /// Splits the range holding `key` at `key`. Returns the descriptors of
    /// the two sides (the left is `None` if `key` already was a boundary
    /// before this call; a retry that finds this call's own split applied
    /// gets both sides, see `eval_split`).
    pub async fn admin_split(
        &self,
        key: &[u8],
    ) -> Result<(Option<RangeDescriptor>, RangeDescriptor)> {
        let new_range_id = self.next_sequence("range-id", 2).await?;
        let req = single(Req::AdminSplit(kv::AdminSplitRequest {
            split_key: key.to_vec(),
            new_range_id,
        }));
        let mut attempts = 0;
        let resp = loop {
            match self.sender().send(key, req.clone(), false).await {
                Err(Error::RangeBusy(_) | Error::RangeChanged) if attempts < 50 => {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                other => break other?,
            }
        };
        let Some(Resp::AdminSplit(s)) = resp.into_iter().next().and_then(|r| r.response) else {
            return Err(Error::Internal("unexpected response to a split".into()));
        };
        let right = s
            .right
            .ok_or_else(|| Error::Internal("split without a right side".into()))?;
        if let Some(left) = &s.left {
            self.update_meta(&[left.clone(), right.clone()]).await?;
        }
        Ok((s.left, right))
    }

    /// The descriptors in meta2 of the ranges overlapping `[start, end)`
    /// (`end` empty: to the end of the keyspace), in key order.
    pub async fn meta_ranges(&self, start: &[u8], end: &[u8]) -> Result<Vec<RangeDescriptor>> {
        let mut txn = self.begin();
        let rows = txn
            .scan(&keys::meta2_lookup_start(start), keys::META2_END, 0)
            .await?;
        let mut out = Vec::new();
        for (_, raw) in rows {
            let d = RangeDescriptor::decode(raw.as_slice())
                .map_err(|e| Error::Internal(format!("corrupt meta2 entry: {e}")))?;
            if !end.is_empty() && d.start_key.as_slice() >= end {
                break;
            }
            out.push(d);
        }
        Ok(out)
    }

    /// The ranges overlapping `[start, end)` with what their leaders report.
    pub async fn ranges(&self, start: &[u8], end: &[u8]) -> Result<Vec<RangeInfo>> {
        let mut out = Vec::new();
        for d in self.meta_ranges(start, end).await? {
            let req = single(Req::RangeInfo(kv::RangeInfoRequest {}));
            let info = match self.sender().send_to_range(&d, req).await {
                Ok(resp) => match resp.into_iter().next().and_then(|r| r.response) {
                    Some(Resp::RangeInfo(i)) => Some(i),
                    _ => None,
                },
                Err(_) => None,
            };
            out.push(match info {
                Some(i) => RangeInfo {
                    descriptor: i.descriptor.unwrap_or(d),
                    leader_node_id: i.leader_node_id,
                    size_bytes: i.size_bytes,
                    raft_log_entries: i.raft_log_entries,
                },
                None => RangeInfo {
                    descriptor: d,
                    leader_node_id: 0,
                    size_bytes: 0,
                    raft_log_entries: 0,
                },
            });
        }
        Ok(out)
    }
}
