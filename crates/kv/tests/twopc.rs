//! Two-phase commit across ranges on a real store (one node, in-memory
//! engine, real Raft group per range): atomicity, recovery from a
//! coordinator that stops at each step (failpoints), and money conservation
//! under concurrent conflicting transfers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use concord_kv::{failpoints, Error};
use concord_replication::testing::wait_until;
use concord_replication::Store;
use concord_storage::Cf;

fn intents(store: &Store) -> usize {
    store.engine().scan(Cf::Lock, b"", None, 0).unwrap().len()
}

fn records(store: &Store) -> usize {
    store.engine().scan(Cf::Txn, b"", None, 0).unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_across_ranges_is_all_or_nothing_and_cleans_up() {
    let (db, store) = db().await;
    split_between(&db, &["a", "m", "t"]).await;
    let mut t = db.begin();
    for k in ["a", "m", "t"] {
        t.put(key(k), format!("v-{k}").into_bytes()).unwrap();
    }
    t.commit().await.unwrap();
    for k in ["a", "m", "t"] {
        assert_eq!(read(&db, k).await, Some(format!("v-{k}").into_bytes()));
    }
    // Intents are resolved and the record forgotten in the background.
    assert!(
        wait_until(Duration::from_secs(5), || intents(&store) == 0
            && records(&store) == 0)
        .await,
        "left {} intents and {} records",
        intents(&store),
        records(&store)
    );

    // A rolled-back transaction leaves nothing.
    let mut t = db.begin();
    t.put(key("a"), b"x".to_vec()).unwrap();
    t.put(key("t"), b"x".to_vec()).unwrap();
    t.rollback();
    assert_eq!(read(&db, "a").await, Some(b"v-a".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_stops_after_prepare_is_aborted_once_its_record_expires() {
    let (db, store) = db().await;
    split_between(&db, &["a", "m"]).await;
    let mut t = db.begin();
    t.put(key("a"), b"old".to_vec()).unwrap();
    t.put(key("m"), b"old".to_vec()).unwrap();
    t.commit().await.unwrap();

    db.enable_failpoint(failpoints::AFTER_PREPARE);
    let mut t = db.begin();
    t.put(key("a"), b"new".to_vec()).unwrap();
    t.put(key("m"), b"new".to_vec()).unwrap();
    let err = t.commit().await.unwrap_err();
    assert!(err.to_string().contains("failpoint"), "{err}");
    db.disable_failpoint(failpoints::AFTER_PREPARE);
    assert!(
        intents(&store) >= 2,
        "the stopped coordinator left its intents"
    );

    // A reader meets an intent, waits for the record to expire, aborts it
    // and sees the old value; the wait is bounded by the expiry.
    let started = Instant::now();
    assert_eq!(read(&db, "a").await, Some(b"old".to_vec()));
    let waited = started.elapsed();
    assert!(
        waited < EXPIRY + Duration::from_secs(5),
        "waited {waited:?} for an expiry of {EXPIRY:?}"
    );
    // A writer on the other range goes through too.
    let mut w = db.begin();
    w.put(key("m"), b"after".to_vec()).unwrap();
    w.commit().await.unwrap();
    assert_eq!(read(&db, "m").await, Some(b"after".to_vec()));
    assert_eq!(read(&db, "a").await, Some(b"old".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_stops_after_the_commit_point_has_committed() {
    let (db, store) = db().await;
    split_between(&db, &["a", "m"]).await;
    db.enable_failpoint(failpoints::AFTER_COMMIT);
    let mut t = db.begin();
    t.put(key("a"), b"committed".to_vec()).unwrap();
    t.put(key("m"), b"committed".to_vec()).unwrap();
    let err = t.commit().await.unwrap_err();
    assert!(err.to_string().contains("failpoint"), "{err}");
    db.disable_failpoint(failpoints::AFTER_COMMIT);
    assert!(intents(&store) >= 2, "nobody resolved the intents yet");

    // Readers find the COMMITTED record and resolve the intents themselves,
    // without waiting for any expiry.
    let started = Instant::now();
    assert_eq!(read(&db, "a").await, Some(b"committed".to_vec()));
    assert_eq!(read(&db, "m").await, Some(b"committed".to_vec()));
    assert!(started.elapsed() < EXPIRY, "no wait for a committed record");
    assert_eq!(intents(&store), 0);
}

/// Transfers between accounts in different ranges, from concurrent
/// transactions that conflict all the time; totals are checked by
/// concurrent readers and at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_across_ranges_conserve_money() {
    const ACCOUNTS: usize = 8;
    const INITIAL: i64 = 100;
    let (db, _store) = db().await;
    let names: Vec<String> = (0..ACCOUNTS).map(|i| format!("acct{i}")).collect();
    let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    split_between(&db, &refs).await;
    let mut t = db.begin();
    for n in &names {
        t.put(key(n), INITIAL.to_string().into_bytes()).unwrap();
    }
    t.commit().await.unwrap();

    let balance = |v: Option<Vec<u8>>| -> i64 {
        String::from_utf8(v.expect("every account exists"))
            .unwrap()
            .parse()
            .unwrap()
    };
    let mut tasks = Vec::new();
    for w in 0..6u64 {
        let db = db.clone();
        let names = names.clone();
        tasks.push(tokio::spawn(async move {
            let mut committed = 0;
            let mut seed = w * 7919 + 1;
            for _ in 0..40 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let from = (seed >> 33) as usize % ACCOUNTS;
                let to = (from + 1 + (seed >> 40) as usize % (ACCOUNTS - 1)) % ACCOUNTS;
                let amount = 1 + (seed >> 50) as i64 % 20;
                for attempt in 0..50 {
                    let mut t = db.begin_attempt(attempt);
                    let r: Result<bool, Error> = async {
                        let vals = t.get_many(&[key(&names[from]), key(&names[to])]).await?;
                        let (a, b) = (balance(vals[0].clone()), balance(vals[1].clone()));
                        if a < amount {
                            return Ok(false);
                        }
                        t.put(key(&names[from]), (a - amount).to_string().into_bytes())?;
                        t.put(key(&names[to]), (b + amount).to_string().into_bytes())?;
                        t.commit().await?;
                        Ok(true)
                    }
                    .await;
                    match r {
                        Ok(done) => {
                            committed += done as usize;
                            break;
                        }
                        Err(e) if e.is_retryable() => continue,
                        Err(e) => panic!("transfer failed: {e}"),
                    }
                }
            }
            committed
        }));
    }
    let reader = {
        let db = db.clone();
        let names = names.clone();
        tokio::spawn(async move {
            let mut samples = 0;
            for i in 0..30 {
                let mut t = db.begin();
                let keys: Vec<Vec<u8>> = names.iter().map(|n| key(n)).collect();
                // Half the snapshots scan across every range (a scan that
                // moves its timestamp midway must refresh what it read).
                let read = if i % 2 == 0 {
                    t.get_many(&keys).await
                } else {
                    t.scan(&key("acct"), &key("acct\u{ff}"), 0)
                        .await
                        .map(|rows| rows.into_iter().map(|(_, v)| Some(v)).collect())
                };
                match read {
                    Ok(vals) => {
                        let bal: Vec<i64> = vals.into_iter().map(balance).collect();
                        assert!(bal.iter().all(|b| *b >= 0), "negative balance: {bal:?}");
                        assert_eq!(
                            bal.iter().sum::<i64>(),
                            INITIAL * ACCOUNTS as i64,
                            "a snapshot saw money appear or vanish: {bal:?}"
                        );
                        samples += 1;
                    }
                    Err(e) if e.is_retryable() => {}
                    Err(e) => panic!("snapshot read failed: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            samples
        })
    };
    let mut committed = 0;
    for t in tasks {
        committed += t.await.unwrap();
    }
    let samples = reader.await.unwrap();
    assert!(committed > 50, "only {committed} transfers committed");
    assert!(samples > 0);
    let mut t = db.begin();
    let keys: Vec<Vec<u8>> = names.iter().map(|n| key(n)).collect();
    let total: i64 = t
        .get_many(&keys)
        .await
        .unwrap()
        .into_iter()
        .map(balance)
        .sum();
    assert_eq!(total, INITIAL * ACCOUNTS as i64);
}

/// SELECT … FOR UPDATE at the KV level: the locked key blocks a writer of
/// lower priority until the holder ends, and never blocks readers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_blocks_writers_until_its_transaction_ends_but_not_readers() {
    let (db, store) = db().await;
    split_between(&db, &["a", "m"]).await;
    let mut t = db.begin();
    t.put(key("a"), b"1".to_vec()).unwrap();
    t.commit().await.unwrap();

    let mut holder = db.begin_attempt(10);
    holder.collect_reads();
    assert_eq!(holder.get(&key("a")).await.unwrap(), Some(b"1".to_vec()));
    holder.lock_collected().await.unwrap();
    assert_eq!(intents(&store), 1, "one lock");
    assert_eq!(read(&db, "a").await, Some(b"1".to_vec()), "readers pass");

    let writer = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut w = db.begin_attempt(0);
            w.put(key("a"), b"2".to_vec()).unwrap();
            w.commit().await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!writer.is_finished(), "the writer waits for the lock");
    holder.put(key("a"), b"holder".to_vec()).unwrap();
    holder.commit().await.unwrap();
    writer.await.unwrap().unwrap();
    assert_eq!(
        read(&db, "a").await,
        Some(b"2".to_vec()),
        "the writer went second"
    );
    assert!(
        wait_until(Duration::from_secs(5), || intents(&store) == 0
            && records(&store) == 0)
        .await,
        "locks and records are cleaned up"
    );

    // A lock released by rollback frees the key at once.
    let mut holder = db.begin_attempt(10);
    holder.lock_keys(&[key("a")]).await.unwrap();
    holder.rollback();
    let mut w = db.begin();
    w.put(key("a"), b"3".to_vec()).unwrap();
    w.commit().await.unwrap();
    assert_eq!(read(&db, "a").await, Some(b"3".to_vec()));
}
