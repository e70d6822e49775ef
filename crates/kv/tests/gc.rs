//! MVCC garbage collection on a real store: old versions go, what reads at
//! or above the threshold see stays, reads below it are refused, and the
//! threshold survives splits.

mod common;

use common::*;
use concord_storage::keys::{decode_mvcc_key, MIN_SPLIT_KEY};
use concord_storage::Cf;

fn versions(store: &concord_replication::Store, k: &str) -> usize {
    store
        .engine()
        .scan(Cf::Data, b"", None, 0)
        .unwrap()
        .iter()
        .filter(|(ek, _)| decode_mvcc_key(ek).unwrap().0 == key(k))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_shadowed_versions_and_refuses_reads_below_the_threshold() {
    let (db, store) = db().await;
    split_between(&db, &["a", "m"]).await;
    for v in 0..5 {
        let mut t = db.begin();
        t.put(key("a"), format!("a{v}").into_bytes()).unwrap();
        t.put(key("b"), format!("b{v}").into_bytes()).unwrap();
        t.commit().await.unwrap();
    }
    let mut t = db.begin();
    t.delete(key("b")).unwrap();
    t.commit().await.unwrap();
    // An old transaction that is still reading.
    let mut old = db.begin();
    let old_ts = old.read_ts();
    assert_eq!(db.oldest_active_read_ts(), Some(old_ts));
    assert_eq!(versions(&store, "a"), 5);

    let threshold = db.sender().clock().now();
    let deleted = db.gc_range(MIN_SPLIT_KEY, threshold).await.unwrap();
    assert_eq!(
        deleted,
        4 + 6,
        "a: 4 shadowed versions; b: all 5 and the tombstone"
    );
    assert_eq!(versions(&store, "a"), 1);
    assert_eq!(versions(&store, "b"), 0);
    assert_eq!(read(&db, "a").await, Some(b"a4".to_vec()));
    assert_eq!(read(&db, "b").await, None);

    // The old transaction reads below the threshold: refused, retryable.
    let err = old.get(&key("a")).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("GC_THRESHOLD"), "{err}");
    drop(old);
    assert_eq!(db.oldest_active_read_ts(), None);

    // A split's right side keeps the threshold.
    let (_, right) = db.admin_split(&key("c")).await.unwrap();
    assert_eq!(
        concord_storage::local::load_gc_threshold(store.engine().as_ref(), right.range_id).unwrap(),
        threshold
    );
    assert_eq!(read(&db, "a").await, Some(b"a4".to_vec()));
    assert_eq!(read(&db, "d").await, None);
}
