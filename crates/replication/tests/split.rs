//! A split's retry. The sender gives up on an attempt after its deadline
//! while the split may still apply; its retry then finds the key already a
//! boundary. If that boundary is the split it asked for (the right side
//! has the range id it allocated), the answer names both sides, as the
//! split's own answer would have, so that the caller records them in meta2.

use std::time::Duration;

use concord_proto::kv::{self, request::Request as Req, response::Response as Resp};
use concord_proto::meta::RangeDescriptor;
use concord_replication::testing::{fast_config, single_node_store, wait_until};
use concord_replication::Store;
use concord_storage::keys::MIN_SPLIT_KEY;

/// Sends a split of `range_id` at `key` that would create `new_range_id`;
/// returns the answer's left and right sides.
async fn split(
    store: &Store,
    range_id: u64,
    key: &[u8],
    new_range_id: u64,
) -> (Option<RangeDescriptor>, Option<RangeDescriptor>) {
    let resp = store
        .batch(kv::BatchRequest {
            gateway_node_id: 0,
            range_id,
            now: None,
            txn: None,
            requests: vec![kv::Request {
                request: Some(Req::AdminSplit(kv::AdminSplitRequest {
                    split_key: key.to_vec(),
                    new_range_id,
                })),
            }],
        })
        .await;
    assert_eq!(resp.error, None);
    match resp.responses.into_iter().next().and_then(|r| r.response) {
        Some(Resp::AdminSplit(s)) => (s.left, s.right),
        other => panic!("unexpected answer to a split: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_split_names_both_sides_and_an_old_boundary_only_the_right() {
    let store = single_node_store(fast_config()).await;
    let key = [MIN_SPLIT_KEY, b"m"].concat();
    let (left, right) = split(&store, 1, &key, 2).await;
    let (left, right) = (
        left.expect("split: a left side"),
        right.expect("a right side"),
    );
    assert_eq!(
        (left.range_id, left.end_key.as_slice()),
        (1, key.as_slice())
    );
    assert_eq!(
        (right.range_id, right.start_key.as_slice()),
        (2, key.as_slice())
    );
    // The retry goes where the key now lives: the right side, once it leads.
    let leads = wait_until(Duration::from_secs(10), || {
        store.replica(2).is_ok_and(|r| r.status.lock().leader_ready)
    })
    .await;
    assert!(leads, "the right side elected itself");
    let (again_left, again_right) = split(&store, 2, &key, 2).await;
    assert_eq!(again_left, Some(left), "the retry names the left side");
    assert_eq!(again_right, Some(right.clone()));
    // Another split at that boundary (a new range id) did nothing.
    let (other_left, other_right) = split(&store, 2, &key, 7).await;
    assert_eq!(other_left, None);
    assert_eq!(other_right, Some(right));
}
