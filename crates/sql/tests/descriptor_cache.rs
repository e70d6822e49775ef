//! The per-node descriptor cache never shows a stale schema: a session
//! whose cached descriptor another session just changed sees the change in
//! its very next statement (the stale plan's error or write is caught by
//! checking the cached reads, and the statement is retried afresh), and an
//! explicit transaction that planned with a descriptor changed under it
//! fails at COMMIT with 40001, as if it had read the descriptor itself.

mod common;

use common::{exec, single_node_db};
use concord_sql::{Session, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_are_seen_at_once_through_the_cache() {
    let db = single_node_db().await;
    let mut a = Session::new(db.clone());
    let mut b = Session::new(db.clone());
    exec(&mut a, "CREATE TABLE dc (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    exec(&mut a, "INSERT INTO dc VALUES (1, 10)").await.unwrap();
    // b reads (and caches) dc's descriptor.
    let rows = exec(&mut b, "SELECT v FROM dc WHERE id = 1").await.unwrap();
    assert_eq!(rows, vec![vec![Value::Int(10)]]);

    // A column a adds is there for b's next statement.
    exec(&mut a, "ALTER TABLE dc ADD COLUMN w INT DEFAULT 7")
        .await
        .unwrap();
    let rows = exec(&mut b, "SELECT w FROM dc WHERE id = 1").await.unwrap();
    assert_eq!(rows, vec![vec![Value::Int(7)]]);

    // A write b plans with a stale descriptor does not commit as such: the
    // new column's default applies.
    exec(&mut b, "SELECT v FROM dc").await.unwrap();
    exec(&mut a, "ALTER TABLE dc ADD COLUMN x INT DEFAULT 3")
        .await
        .unwrap();
    exec(&mut b, "INSERT INTO dc (id, v) VALUES (2, 20)")
        .await
        .unwrap();
    let rows = exec(&mut a, "SELECT x FROM dc WHERE id = 2").await.unwrap();
    assert_eq!(rows, vec![vec![Value::Int(3)]]);

    // In an explicit block the client retries: a transaction that began
    // after the change but planned with the cached descriptor fails at
    // COMMIT with 40001 (without the cache it would read the new one and
    // commit: this is also the proof that the cache is used).
    exec(&mut b, "SELECT v FROM dc").await.unwrap();
    exec(&mut a, "ALTER TABLE dc DROP COLUMN w").await.unwrap();
    exec(&mut b, "BEGIN").await.unwrap();
    exec(&mut b, "UPDATE dc SET v = 11 WHERE id = 1")
        .await
        .unwrap();
    let e = exec(&mut b, "COMMIT").await.unwrap_err();
    assert_eq!(e.sqlstate(), "40001", "{e}");
    let rows = exec(&mut b, "SELECT * FROM dc ORDER BY id").await.unwrap();
    assert_eq!(
        rows,
        vec![
            vec![Value::Int(1), Value::Int(10), Value::Int(3)],
            vec![Value::Int(2), Value::Int(20), Value::Int(3)],
        ]
    );
}
