//! Two-phase commit across ranges on a real store (one node, in-memory
//! engine, real Raft group per range): atomicity, recovery from a
//! coordinator that stops at each step (failpoints), and money conservation
//! under concurrent conflicting transfers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use concord_kv::{failpoints, Error, TxnLimits};
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

/// A committed transaction whose coordinator stopped before its cleanup
/// (here: the failpoint; in life, a node restarted under it) is cleaned
/// up whole by the first transaction that meets one of its intents once
/// the record is old enough, not left for every other key to pay a push
/// and a resolve: one point read, and every intent and the record go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_committed_record_with_intents_out_is_cleaned_up_by_whoever_meets_it() {
    let (mut db, store) = db().await;
    db.set_limits(TxnLimits {
        adopt_cleanup_after: Duration::from_secs(1),
        ..TxnLimits::default()
    });
    split_between(&db, &["a", "m"]).await;
    db.enable_failpoint(failpoints::AFTER_COMMIT);
    let mut t = db.begin();
    t.put(key("a"), b"anchor".to_vec()).unwrap();
    // More keys than a chunk lists one by one: the record holds a span.
    let rows: Vec<String> = (0..100).map(|i| format!("m{i:03}")).collect();
    for k in &rows {
        t.put(key(k), b"row".to_vec()).unwrap();
    }
    let err = t.commit().await.unwrap_err();
    assert!(err.to_string().contains("failpoint"), "{err}");
    db.disable_failpoint(failpoints::AFTER_COMMIT);
    assert_eq!(intents(&store), 101, "the coordinator resolved nothing");

    // A young record is its coordinator's to clean: a reader resolves the
    // key it met and leaves the rest.
    assert_eq!(read(&db, "m000").await, Some(b"row".to_vec()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(intents(&store), 100);
    assert_eq!(records(&store), 1);

    // Past the age, meeting one intent cleans up the whole transaction.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(read(&db, "m050").await, Some(b"row".to_vec()));
    assert!(
        wait_until(Duration::from_secs(10), || intents(&store) == 0
            && records(&store) == 0)
        .await,
        "left {} intents and {} records",
        intents(&store),
        records(&store)
    );
    for k in rows.iter().chain([&"a".to_string()]) {
        let want = if k == "a" { "anchor" } else { "row" };
        assert_eq!(read(&db, k).await, Some(want.as_bytes().to_vec()), "{k}");
    }
}

/// A coordinator that saw an error although its EndTxn committed (the
/// answer was lost) aborts "its" transaction: the record says COMMITTED,
/// so the intents become versions instead of vanishing. (Resolving them as
/// aborted would lose half of a committed transaction whenever a reader
/// had already resolved the other half.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_was_lost_is_cleaned_up_as_committed() {
    let (db, store) = db().await;
    split_between(&db, &["a", "m"]).await;
    db.enable_failpoint(failpoints::LOST_COMMIT_ANSWER);
    let mut t = db.begin();
    t.put(key("a"), b"both".to_vec()).unwrap();
    t.put(key("m"), b"both".to_vec()).unwrap();
    let err = t.commit().await.unwrap_err();
    assert!(err.to_string().contains("failpoint"), "{err}");
    db.disable_failpoint(failpoints::LOST_COMMIT_ANSWER);
    // The cleanup runs in the background; once it is done, nothing is
    // left to resolve and both writes are there.
    assert!(
        wait_until(Duration::from_secs(5), || intents(&store) == 0
            && records(&store) == 0)
        .await,
        "left {} intents and {} records",
        intents(&store),
        records(&store)
    );
    assert_eq!(read(&db, "a").await, Some(b"both".to_vec()));
    assert_eq!(read(&db, "m").await, Some(b"both".to_vec()));
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
    assert_eq!(records(&store), 1, "the record came with the first lock");
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

/// UPDATE in a transaction block at the KV level: a transaction that read
/// its snapshot before another committed a key, and then locks that key to
/// update it, waits for the holder and then reads the holder's value (its
/// read timestamp moves up past the holder's commit) instead of failing at
/// COMMIT. Two increments of one counter both land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_for_update_waits_then_reads_the_newest_value_and_commits() {
    let (db, store) = db().await;
    split_between(&db, &["a", "m"]).await;
    let mut t = db.begin();
    t.put(key("a"), b"0".to_vec()).unwrap();
    t.commit().await.unwrap();

    // Both begin (take their snapshots) before either writes. The first
    // has the higher priority, so the second only ever waits for it.
    let mut first = db.begin_attempt(10);
    let mut second = db.begin_attempt(0);
    // The second reads something unrelated, so a refresh has work to do.
    assert_eq!(second.get(&key("m")).await.unwrap(), None);

    first.lock_for_update(&[key("a")]).await.unwrap();
    assert_eq!(first.get(&key("a")).await.unwrap(), Some(b"0".to_vec()));
    first.put(key("a"), b"1".to_vec()).unwrap();

    let waiter = tokio::spawn(async move {
        second.lock_for_update(&[key("a")]).await?;
        let seen = second.get(&key("a")).await?;
        let n: i64 = String::from_utf8(seen.clone().unwrap_or_default())
            .unwrap()
            .parse()
            .unwrap();
        second.put(key("a"), (n + 1).to_string().into_bytes())?;
        second.commit().await?;
        Ok::<_, Error>(seen)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the second waits for the first's lock"
    );
    first.commit().await.unwrap();
    let seen = waiter.await.unwrap().expect("the second commits");
    assert_eq!(seen, Some(b"1".to_vec()), "it read the first's value");
    assert_eq!(read(&db, "a").await, Some(b"2".to_vec()), "both increments");
    assert!(
        wait_until(Duration::from_secs(5), || intents(&store) == 0
            && records(&store) == 0)
        .await,
        "locks and records are cleaned up"
    );
}

/// A lock returns the key's value, so the locker reads it without a read
/// request: that value is protected like any read. A transaction that
/// began earlier and writes the key once the lock is gone commits above
/// the locker's read, not at its own older timestamp (which would slip a
/// write under a value the locker already used).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_returned_by_a_lock_is_protected_like_a_read() {
    let (db, _store) = db().await;
    split_between(&db, &["a", "m"]).await;
    let mut t = db.begin();
    t.put(key("a"), b"0".to_vec()).unwrap();
    t.commit().await.unwrap();

    let mut older = db.begin();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut locker = db.begin();
    locker.lock_for_update(&[key("a")]).await.unwrap();
    assert_eq!(locker.get(&key("a")).await.unwrap(), Some(b"0".to_vec()));
    let read_at = locker.read_ts();
    assert!(read_at > older.read_ts());
    // The locker writes elsewhere and commits; its lock on "a" goes.
    locker.put(key("m"), b"x".to_vec()).unwrap();
    locker.commit().await.unwrap();

    older.put(key("a"), b"1".to_vec()).unwrap();
    let older_ts = older.commit().await.unwrap();
    assert!(
        older_ts > read_at,
        "the older writer committed at {older_ts}, not above the locked read at {read_at}"
    );
}

/// A writer of higher priority does not abort a lock holder the moment it
/// meets its lock: it waits out the grace first, and a holder that commits
/// within it keeps its work. (Here the grace is long, so that the test does
/// not depend on how fast this machine commits; past it, the holder is
/// aborted, as the money test's conflicting transfers show.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_priority_writer_waits_out_the_grace_before_aborting_a_holder() {
    let (mut db, _store) = db().await;
    db.set_limits(TxnLimits {
        wound_grace: Duration::from_secs(30),
        ..TxnLimits::default()
    });
    let mut holder = db.begin_attempt(0);
    holder.lock_for_update(&[key("a")]).await.unwrap();
    holder.put(key("a"), b"holder".to_vec()).unwrap();
    let writer = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut w = db.begin_attempt(10);
            w.lock_for_update(&[key("a")]).await?;
            let seen = w.get(&key("a")).await?;
            w.put(key("a"), b"writer".to_vec())?;
            w.commit().await?;
            Ok::<_, Error>(seen)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!writer.is_finished(), "the writer waits for the lock");
    holder.commit().await.expect("the holder was not aborted");
    let seen = writer.await.unwrap().unwrap();
    assert_eq!(seen, Some(b"holder".to_vec()), "the writer went second");
    assert_eq!(read(&db, "a").await, Some(b"writer".to_vec()));
}

/// A push may wait at a pending record instead of being answered at once:
/// it is still waiting while the holder runs, and its answer says
/// COMMITTED once the holder commits (the range wakes waiting pushes when a
/// record finishes, so a transaction queued behind a lock goes on without
/// polling).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_waits_at_a_pending_record_and_hears_the_commit() {
    use concord_proto::kv::{self, request::Request as Req, response::Response as Resp};
    use concord_proto::meta::{Intent, TxnStatus};
    use prost::Message as _;

    let (db, store) = db().await;
    let mut holder = db.begin_attempt(0);
    holder.lock_keys(&[key("a")]).await.unwrap();
    holder.put(key("a"), b"holder".to_vec()).unwrap();
    let raw = store
        .engine()
        .get(Cf::Lock, &key("a"))
        .unwrap()
        .expect("the lock is an intent");
    let pushee = Intent::decode(raw.as_slice()).unwrap().txn.unwrap();
    let range = concord_kv::DistSender::new(store.clone())
        .range_for_key(&pushee.anchor_key)
        .await
        .unwrap();
    let push = {
        let store = store.clone();
        tokio::spawn(async move {
            let req = Req::PushTxn(kv::PushTxnRequest {
                pushee: Some(pushee),
                abort: false,
                pusher_priority: 0,
                pusher_id: b"pusher".to_vec(),
                wait_ms: 60_000,
            });
            store
                .batch(kv::BatchRequest {
                    gateway_node_id: 0,
                    range_id: range.range_id,
                    now: None,
                    txn: None,
                    requests: vec![kv::Request { request: Some(req) }],
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!push.is_finished(), "the push waits at the pending record");
    holder.commit().await.unwrap();
    let resp = push.await.unwrap();
    assert!(resp.error.is_none(), "{:?}", resp.error);
    let Some(Resp::TxnRecord(r)) = resp.responses[0].response.clone() else {
        panic!("not a record answer: {resp:?}");
    };
    let record = r
        .record
        .expect("the record is kept until its intents are resolved");
    assert_eq!(record.status, TxnStatus::Committed as i32);
}

fn locks_held(store: &Store) -> usize {
    store.replicas().iter().map(|r| r.locks.lock().len()).sum()
}

/// A transaction's first lock is replicated with its record; its later
/// locks are held in the leader's memory (no intent is written for them),
/// and they block writers just the same until the transaction ends, when
/// they are released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_after_the_first_are_held_in_memory_and_block_writers_the_same() {
    let (db, store) = db().await;
    split_between(&db, &["a", "m"]).await;
    let mut holder = db.begin_attempt(10);
    holder.lock_for_update(&[key("a")]).await.unwrap();
    holder.lock_for_update(&[key("m")]).await.unwrap();
    assert_eq!(intents(&store), 1, "only the first lock is an intent");
    assert_eq!(locks_held(&store), 1, "the second is in memory");
    assert_eq!(store.locks_in_memory(), 1);
    assert_eq!(read(&db, "m").await, None, "readers pass");

    let writer = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut w = db.begin_attempt(0);
            w.put(key("m"), b"writer".to_vec()).unwrap();
            w.commit().await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!writer.is_finished(), "the writer waits for the lock");
    holder.put(key("m"), b"holder".to_vec()).unwrap();
    holder.commit().await.unwrap();
    writer.await.unwrap().unwrap();
    assert_eq!(read(&db, "m").await, Some(b"writer".to_vec()), "second");
    assert!(
        wait_until(Duration::from_secs(5), || intents(&store) == 0
            && records(&store) == 0
            && locks_held(&store) == 0)
        .await,
        "intents, records and in-memory locks are cleaned up"
    );

    // A rollback releases the in-memory lock too.
    let mut holder = db.begin_attempt(10);
    holder.lock_for_update(&[key("a")]).await.unwrap();
    holder.lock_for_update(&[key("m")]).await.unwrap();
    assert_eq!(locks_held(&store), 1);
    holder.rollback();
    assert!(
        wait_until(Duration::from_secs(5), || locks_held(&store) == 0).await,
        "the rollback released the lock"
    );
    let mut w = db.begin();
    w.put(key("m"), b"after".to_vec()).unwrap();
    w.commit().await.unwrap();
}

/// Losing the in-memory table (as a new leader does) costs the holder a
/// retry, never a stale read: the value its lock returned was read at the
/// lock's timestamp and the commit refreshes it, so a write that slipped in
/// while the lock was gone fails the holder with 40001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_in_memory_lock_costs_a_retry_not_a_lost_update() {
    let (db, store) = db().await;
    split_between(&db, &["a", "m"]).await;
    let mut t = db.begin();
    t.put(key("m"), b"0".to_vec()).unwrap();
    t.commit().await.unwrap();

    let mut holder = db.begin_attempt(10);
    holder.lock_for_update(&[key("a")]).await.unwrap();
    holder.lock_for_update(&[key("m")]).await.unwrap();
    assert_eq!(holder.get(&key("m")).await.unwrap(), Some(b"0".to_vec()));
    for r in store.replicas() {
        r.locks.lock().clear();
    }
    let mut w = db.begin();
    w.put(key("m"), b"1".to_vec()).unwrap();
    w.commit().await.expect("nothing blocks the writer now");

    holder.put(key("m"), b"0+1".to_vec()).unwrap();
    let err = holder
        .commit()
        .await
        .expect_err("the holder's read is stale");
    assert!(err.is_retryable(), "a retryable error, got {err}");
    assert_eq!(read(&db, "m").await, Some(b"1".to_vec()));
}

/// The cleanup of committed transactions goes through the node's resolver,
/// which puts the ResolveIntents (and GcTxn) requests that meet on one range
/// into one batch: many transactions committing at once on the same two
/// ranges leave no intent or record behind, in fewer batches than requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_are_cleaned_up_in_batches_per_range() {
    let (db, store) = db().await;
    split_between(&db, &["a", "m"]).await;
    const TXNS: usize = 40;
    let commits = (0..TXNS).map(|i| {
        let db = db.clone();
        tokio::spawn(async move {
            let mut t = db.begin();
            t.put(key(&format!("a{i:03}")), b"x".to_vec()).unwrap();
            t.put(key(&format!("m{i:03}")), b"y".to_vec()).unwrap();
            t.commit().await
        })
    });
    for c in futures::future::join_all(commits).await {
        c.unwrap().expect("disjoint keys: every commit succeeds");
    }
    assert!(
        wait_until(Duration::from_secs(10), || intents(&store) == 0
            && records(&store) == 0)
        .await,
        "every intent resolved and every record forgotten"
    );
    let (batches, requests) = db.resolver().stats();
    assert!(
        requests >= 3 * TXNS as u64,
        "two resolves and a record GC per transaction went through the resolver: {requests}"
    );
    assert!(
        batches < requests,
        "requests shared batches: {batches} batches for {requests} requests"
    );
    assert_eq!(read(&db, "m039").await, Some(b"y".to_vec()));
}

/// Writes on the record's range commit in the EndTxn command itself: they
/// get no intent, so nothing is left to resolve there. A coordinator that
/// stops right after the commit point leaves intents only on the record's
/// first key (written with the record) and on the other ranges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_the_records_range_commit_with_the_record() {
    let (db, store) = db().await;
    split_between(&db, &["a", "m"]).await;
    db.enable_failpoint(failpoints::AFTER_COMMIT);
    let mut t = db.begin();
    t.put(key("a1"), b"1".to_vec()).unwrap();
    t.put(key("a2"), b"2".to_vec()).unwrap();
    t.put(key("a3"), b"3".to_vec()).unwrap();
    t.put(key("m1"), b"m".to_vec()).unwrap();
    let err = t.commit().await.unwrap_err();
    assert!(err.to_string().contains("failpoint"), "{err}");
    db.disable_failpoint(failpoints::AFTER_COMMIT);
    assert_eq!(
        intents(&store),
        2,
        "a1 (the record's first key) and m1 have intents; a2 and a3 committed with the record"
    );
    for (k, v) in [("a1", "1"), ("a2", "2"), ("a3", "3"), ("m1", "m")] {
        assert_eq!(read(&db, k).await, Some(v.as_bytes().to_vec()), "{k}");
    }
}

/// A write that commits with the record is still placed above every read
/// of its key: if another transaction read the key at a later timestamp
/// than the commit would have had, the record's range answers
/// NeedsRefresh and the commit moves above that read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_committed_with_the_record_goes_above_a_later_read() {
    let (db, _store) = db().await;
    split_between(&db, &["a", "m"]).await;
    let mut t = db.begin();
    t.put(key("a1"), b"1".to_vec()).unwrap();
    t.put(key("a2"), b"2".to_vec()).unwrap();
    t.put(key("m1"), b"m".to_vec()).unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut reader = db.begin();
    assert_eq!(reader.get(&key("a2")).await.unwrap(), None);
    let read_at = reader.read_ts();
    assert!(read_at > t.read_ts());
    let commit_ts = t.commit().await.unwrap();
    assert!(
        commit_ts > read_at,
        "committed at {commit_ts}, not above the read of a2 at {read_at}"
    );
    assert_eq!(read(&db, "a2").await, Some(b"2".to_vec()));
}
