//! The DistSender's answer to a batch whose keys a split put in two ranges.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::{db, key};
use concord_kv::{DistSender, Error};
use concord_proto::kv::{request::Request as Req, BatchRequest, GetRequest, Request};

fn gets(keys: &[Vec<u8>]) -> BatchRequest {
    BatchRequest {
        requests: keys
            .iter()
            .map(|k| Request {
                request: Some(Req::Get(GetRequest { key: k.clone() })),
            })
            .collect(),
        ..Default::default()
    }
}

/// A sender whose cache predates a split sends a batch of two keys that now
/// live in two ranges. It must hand `RangeChanged` back at once, so that
/// the caller regroups the keys; routing the batch again by its first key
/// finds the (shrunk) left range and the same refusal until the deadline.
/// That loop failed a TPC-C load's COPY with "could not route the request:
/// key ... is outside range 29" when the split queue cut a range under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_split_across_ranges_comes_back_to_be_regrouped() {
    let (db, store) = db().await;
    let (a, z) = (key("a"), key("z"));
    let stale = Arc::new(DistSender::new(store.clone()));
    // The stale sender caches the range holding both keys.
    stale
        .send(&a, gets(&[a.clone(), z.clone()]), false)
        .await
        .expect("one range holds both keys before the split");
    db.admin_split(&key("m")).await.expect("split at m");

    let started = Instant::now();
    let err = stale
        .send(&a, gets(&[a.clone(), z.clone()]), false)
        .await
        .expect_err("the batch spans two ranges now");
    assert!(
        matches!(err, Error::RangeChanged),
        "expected RangeChanged, got {err}"
    );
    assert!(
        started.elapsed() < stale.deadline,
        "answered only after the retry deadline ({:?})",
        started.elapsed()
    );
    // Regrouped by the fresh cache, each key goes to its own range.
    for k in [&a, &z] {
        stale
            .send(k, gets(std::slice::from_ref(k)), false)
            .await
            .expect("a single key routes to its range");
    }
}
