//! The gateway's cleanup batcher: ResolveIntents and GcTxn requests of many
//! committed transactions, grouped per range into one request (one Raft
//! command on that range).
//!
//! ```text
//!  cleanup of txn A ─┐                        ┌─► ResolveIntents(A), (B), (C)
//!  cleanup of txn B ─┼─► queue of range 7 ────┤   one batch, one command
//!  cleanup of txn C ─┘   (one flush in flight)└─► next flush: what came meanwhile
//! ```
//!
//! At most one flush per range is in flight; whatever arrives meanwhile waits
//! for the next one. So an idle range gets its request at once (no timer,
//! no added latency), and a busy one gets fewer, larger commands: under
//! pgbench every transaction resolves an intent on the same four ranges.
//! Cleanup is off the client's path (it runs after the commit is
//! acknowledged), so batching costs no one a wait.
//!
//! A batch that fails (the range split under it, a leader changed, one
//! record still pending) fails each of its requests; their callers retry
//! them one by one through the unbatched path, which regroups by range, and
//! what fails there is left to readers and pushers, as before.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use concord_proto::kv::{self, request::Request as Req, BatchRequest};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::sender::DistSender;
use crate::{Error, Result};

/// At most this many requests go into one batch.
const MAX_BATCH: usize = 64;

/// A cleanup request waiting for its range's next flush.
struct Pending {
    route: Vec<u8>,
    request: Req,
    done: oneshot::Sender<Result<()>>,
}

#[derive(Default)]
struct Queue {
    resolves: Vec<Pending>,
    gcs: Vec<Pending>,
    flushing: bool,
}

/// Batches cleanup requests per range (see the module doc). One per node.
pub struct Resolver {
    sender: Arc<DistSender>,
    queues: Mutex<HashMap<u64, Queue>>,
    /// Batches sent, and the requests they held.
    batches: AtomicU64,
    requests: AtomicU64,
    /// Transactions whose whole cleanup runs on this node (see
    /// [`Resolver::claim_cleanup`]).
    cleaning: Mutex<HashSet<Vec<u8>>>,
}

/// A transaction's cleanup claimed on this node; dropping it releases the
/// claim.
pub(crate) struct CleanupClaim {
    resolver: Arc<Resolver>,
    txn_id: Vec<u8>,
}

impl Drop for CleanupClaim {
    fn drop(&mut self) {
        self.resolver.cleaning.lock().remove(&self.txn_id);
    }
}

impl Resolver {
    /// A resolver sending through `sender`.
    pub fn new(sender: Arc<DistSender>) -> Arc<Self> {
        Arc::new(Resolver {
            sender,
            queues: Mutex::new(HashMap::new()),
            batches: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            cleaning: Mutex::new(HashSet::new()),
        })
    }

    /// Claims the cleanup (resolving every intent, then deleting the
    /// record) of a finished transaction for this node: `None` if it is
    /// already running here, by its coordinator or adopted from a record
    /// found finished with its intents still out (see
    /// `Txn::handle_intent`). The claim lasts until the returned guard
    /// drops.
    pub(crate) fn claim_cleanup(self: &Arc<Self>, txn_id: &[u8]) -> Option<CleanupClaim> {
        self.cleaning
            .lock()
            .insert(txn_id.to_vec())
            .then(|| CleanupClaim {
                resolver: self.clone(),
                txn_id: txn_id.to_vec(),
            })
    }

    /// The sender requests go through.
    pub fn sender(&self) -> &Arc<DistSender> {
        &self.sender
    }

    /// How many batches were sent, and how many requests they held.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
        )
    }

    /// Sends `request` (a ResolveIntents for spans of one range, or a GcTxn)
    /// to the range of `route` in the range's next batch, and waits for it.
    pub(crate) async fn submit(self: &Arc<Self>, route: Vec<u8>, request: Req) -> Result<()> {
        let range = self.sender.range_for_key(&route).await?.range_id;
        let (done, answer) = oneshot::channel();
        let item = Pending {
            route,
            request,
            done,
        };
        let start = {
            let mut queues = self.queues.lock();
            let q = queues.entry(range).or_default();
            match item.request {
                Req::GcTxn(_) => q.gcs.push(item),
                _ => q.resolves.push(item),
            }
            !std::mem::replace(&mut q.flushing, true)
        };
        if start {
            tokio::spawn(self.clone().flush(range));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(Error::Internal("the resolver dropped a request".into())))
    }

    /// Sends the range's queued requests, batch after batch, until none is
    /// left.
    async fn flush(self: Arc<Self>, range: u64) {
        loop {
            let batch = {
                let mut queues = self.queues.lock();
                let Some(q) = queues.get_mut(&range) else {
                    return;
                };
                let from = if !q.resolves.is_empty() {
                    &mut q.resolves
                } else if !q.gcs.is_empty() {
                    &mut q.gcs
                } else {
                    queues.remove(&range);
                    return;
                };
                let n = from.len().min(MAX_BATCH);
                from.drain(..n).collect::<Vec<_>>()
            };
            self.send_batch(batch).await;
        }
    }

    async fn send_batch(&self, items: Vec<Pending>) {
        let Some(route) = items.first().map(|p| p.route.clone()) else {
            return;
        };
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.requests
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        let batch = BatchRequest {
            gateway_node_id: 0,
            range_id: 0,
            now: None,
            txn: None,
            requests: items
                .iter()
                .map(|p| kv::Request {
                    request: Some(p.request.clone()),
                })
                .collect(),
        };
        // A failed batch fails each of its requests: their callers retry
        // them through the unbatched path, which regroups by range.
        let result = self.sender.send(&route, batch, false).await.map(|_| ());
        for p in items {
            let _ = p.done.send(result.clone());
        }
    }
}
