//! UPDATE and DELETE inside a transaction block lock the rows they change
//! before reading them, so that two blocks updating the same row queue up
//! instead of one failing at COMMIT with 40001 (pgbench's hot branch row):
//! the second waits at its UPDATE, then reads the first's committed value.
//! Outside a block a statement takes no locks (it is retried by the server
//! on a conflict, and stays a one-phase commit).

mod common;

use std::time::Duration;

use common::{exec, single_node_db};
use concord_kv::TxnLimits;
use concord_sql::{Session, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_blocks_updating_one_row_queue_up_and_both_commit() {
    let mut db = single_node_db().await;
    // A waiter of the higher priority would abort the holder after the
    // grace; a long one keeps this test independent of the machine's
    // speed (the kv tests cover the grace itself).
    db.set_limits(TxnLimits {
        wound_grace: Duration::from_secs(30),
        ..TxnLimits::default()
    });
    let mut a = Session::new(db.clone());
    let mut b = Session::new(db.clone());
    exec(&mut a, "CREATE TABLE counter (id INT PRIMARY KEY, n INT)")
        .await
        .unwrap();
    exec(&mut a, "INSERT INTO counter VALUES (1, 0), (2, 0)")
        .await
        .unwrap();

    // Both blocks take their snapshots before either writes.
    exec(&mut a, "BEGIN").await.unwrap();
    exec(&mut b, "BEGIN").await.unwrap();
    exec(&mut a, "SELECT n FROM counter WHERE id = 2")
        .await
        .unwrap();
    exec(&mut b, "SELECT n FROM counter WHERE id = 2")
        .await
        .unwrap();

    exec(&mut a, "UPDATE counter SET n = n + 1 WHERE id = 1")
        .await
        .unwrap();
    let second = tokio::spawn(async move {
        exec(&mut b, "UPDATE counter SET n = n + 10 WHERE id = 1").await?;
        let seen = exec(&mut b, "SELECT n FROM counter WHERE id = 1").await?;
        exec(&mut b, "COMMIT").await?;
        Ok::<_, concord_sql::Error>(seen)
    });
    let seen = waits_for_commit(&mut a, second).await;
    assert_eq!(seen, vec![vec![Value::Int(11)]], "b updated a's value");
    let rows = exec(&mut a, "SELECT n FROM counter ORDER BY id")
        .await
        .unwrap();
    assert_eq!(rows, vec![vec![Value::Int(11)], vec![Value::Int(0)]]);
}

/// A DELETE found by a scan (not by primary key) locks the rows it read
/// right after reading them: a concurrent block's UPDATE of such a row
/// waits, and finds it gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_by_scan_locks_what_it_deletes() {
    let mut db = single_node_db().await;
    db.set_limits(TxnLimits {
        wound_grace: Duration::from_secs(30),
        ..TxnLimits::default()
    });
    let mut a = Session::new(db.clone());
    let mut b = Session::new(db.clone());
    exec(&mut a, "CREATE TABLE items (id INT PRIMARY KEY, kind TEXT)")
        .await
        .unwrap();
    exec(
        &mut a,
        "INSERT INTO items VALUES (1, 'x'), (2, 'y'), (3, 'x')",
    )
    .await
    .unwrap();
    exec(&mut a, "BEGIN").await.unwrap();
    exec(&mut b, "BEGIN").await.unwrap();
    exec(&mut b, "SELECT count(*) FROM items WHERE id = 2")
        .await
        .unwrap();
    exec(&mut a, "DELETE FROM items WHERE kind = 'x'")
        .await
        .unwrap();
    let second = tokio::spawn(async move {
        exec(&mut b, "UPDATE items SET kind = 'z' WHERE id = 3").await?;
        let seen = exec(&mut b, "SELECT count(*) FROM items WHERE id = 3").await?;
        exec(&mut b, "COMMIT").await?;
        Ok::<_, concord_sql::Error>(seen)
    });
    let seen = waits_for_commit(&mut a, second).await;
    assert_eq!(seen, vec![vec![Value::Int(0)]], "the row was gone for b");
    let rows = exec(&mut a, "SELECT id, kind FROM items ORDER BY id")
        .await
        .unwrap();
    assert_eq!(rows, vec![vec![Value::Int(2), Value::Text("y".into())]]);
}

/// Checks that `second` (session b's block) is waiting for a's lock, then
/// commits a; b must then commit without a retry. Returns what b saw.
async fn waits_for_commit(
    a: &mut Session,
    second: tokio::task::JoinHandle<Result<Vec<Vec<Value>>, concord_sql::Error>>,
) -> Vec<Vec<Value>> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "b's UPDATE waits for a's lock");
    exec(a, "COMMIT").await.unwrap();
    second.await.unwrap().expect("b commits without a retry")
}
