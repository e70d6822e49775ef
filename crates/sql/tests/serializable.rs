//! Serializability across concurrent sessions: anomalies that snapshot
//! isolation allows must end in a 40001 retry error here.

mod common;

use common::{exec, single_node_db};
use concord_sql::{Session, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_skew_is_refused_with_a_retry_error() {
    write_skew(false).await;
}

/// The same with the two rows in different ranges: each transaction reads
/// both ranges and writes one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_skew_across_ranges_is_refused_with_a_retry_error() {
    write_skew(true).await;
}

/// Both transactions also write a row of their own in a third range, so
/// that each commits in two phases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_skew_between_two_phase_commits_is_refused() {
    let db = single_node_db().await;
    let mut setup = Session::new(db.clone());
    for sql in [
        "CREATE TABLE oncall (doctor INT PRIMARY KEY, on_duty BOOL)",
        "INSERT INTO oncall VALUES (1, true), (2, true)",
        "CREATE TABLE audit (id INT PRIMARY KEY, note TEXT)",
        "ALTER TABLE oncall SPLIT AT VALUES (2)",
    ] {
        exec(&mut setup, sql).await.unwrap();
    }
    for interleaving in 0..3 {
        exec(&mut setup, "UPDATE oncall SET on_duty = true")
            .await
            .unwrap();
        let mut a = Session::new(db.clone());
        let mut b = Session::new(db.clone());
        exec(&mut a, "BEGIN").await.unwrap();
        exec(&mut b, "BEGIN").await.unwrap();
        exec(&mut a, "SELECT count(*) FROM oncall WHERE on_duty")
            .await
            .unwrap();
        if interleaving == 1 {
            exec(&mut a, "UPDATE oncall SET on_duty = false WHERE doctor = 1")
                .await
                .unwrap();
        }
        exec(&mut b, "SELECT count(*) FROM oncall WHERE on_duty")
            .await
            .unwrap();
        if interleaving != 1 {
            exec(&mut a, "UPDATE oncall SET on_duty = false WHERE doctor = 1")
                .await
                .unwrap();
        }
        exec(&mut b, "UPDATE oncall SET on_duty = false WHERE doctor = 2")
            .await
            .unwrap();
        exec(
            &mut a,
            &format!("INSERT INTO audit VALUES ({}, 'a')", interleaving * 2),
        )
        .await
        .unwrap();
        exec(
            &mut b,
            &format!("INSERT INTO audit VALUES ({}, 'b')", interleaving * 2 + 1),
        )
        .await
        .unwrap();
        let (ra, rb) = if interleaving == 2 {
            let rb = exec(&mut b, "COMMIT").await;
            (exec(&mut a, "COMMIT").await, rb)
        } else {
            (exec(&mut a, "COMMIT").await, exec(&mut b, "COMMIT").await)
        };
        let failures: Vec<&concord_sql::Error> =
            [&ra, &rb].iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(
            failures.len(),
            1,
            "interleaving {interleaving}: {ra:?} {rb:?}"
        );
        assert_eq!(failures[0].sqlstate(), "40001", "{}", failures[0]);
        let on_duty = exec(&mut setup, "SELECT count(*) FROM oncall WHERE on_duty")
            .await
            .unwrap();
        assert_eq!(
            on_duty,
            vec![vec![Value::Int(1)]],
            "interleaving {interleaving}"
        );
    }
    let audit = exec(&mut setup, "SELECT count(*) FROM audit")
        .await
        .unwrap();
    assert_eq!(
        audit,
        vec![vec![Value::Int(3)]],
        "only the winners' audit rows"
    );
}

async fn write_skew(split: bool) {
    let db = single_node_db().await;
    let mut setup = Session::new(db.clone());
    exec(
        &mut setup,
        "CREATE TABLE oncall (doctor INT PRIMARY KEY, on_duty BOOL)",
    )
    .await
    .unwrap();
    exec(&mut setup, "INSERT INTO oncall VALUES (1, true), (2, true)")
        .await
        .unwrap();
    if split {
        exec(&mut setup, "ALTER TABLE oncall SPLIT AT VALUES (2)")
            .await
            .unwrap();
    }

    // Each transaction checks that the other doctor is on duty, then leaves.
    let mut a = Session::new(db.clone());
    let mut b = Session::new(db.clone());
    exec(&mut a, "BEGIN").await.unwrap();
    exec(&mut b, "BEGIN").await.unwrap();
    let seen_a = exec(&mut a, "SELECT on_duty FROM oncall WHERE doctor = 2")
        .await
        .unwrap();
    let seen_b = exec(&mut b, "SELECT on_duty FROM oncall WHERE doctor = 1")
        .await
        .unwrap();
    assert_eq!(seen_a, vec![vec![Value::Bool(true)]]);
    assert_eq!(seen_b, vec![vec![Value::Bool(true)]]);
    exec(&mut a, "UPDATE oncall SET on_duty = false WHERE doctor = 1")
        .await
        .unwrap();
    exec(&mut b, "UPDATE oncall SET on_duty = false WHERE doctor = 2")
        .await
        .unwrap();
    let ra = exec(&mut a, "COMMIT").await;
    let rb = exec(&mut b, "COMMIT").await;
    let failures: Vec<&concord_sql::Error> =
        [&ra, &rb].iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(
        failures.len(),
        1,
        "exactly one of the two must fail: {ra:?} {rb:?}"
    );
    assert_eq!(failures[0].sqlstate(), "40001", "{}", failures[0]);
    let msg = failures[0].to_string();
    assert!(
        msg.contains("of table oncall") && msg.contains("/Table/") && msg.contains("transaction"),
        "the error names the table, the key and the other transaction: {msg}"
    );
    let on_duty = exec(&mut setup, "SELECT count(*) FROM oncall WHERE on_duty")
        .await
        .unwrap();
    assert_eq!(on_duty, vec![vec![Value::Int(1)]], "someone stays on call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_update_is_prevented_and_implicit_statements_retry() {
    let db = single_node_db().await;
    let mut setup = Session::new(db.clone());
    exec(
        &mut setup,
        "CREATE TABLE counter (id INT PRIMARY KEY, n INT)",
    )
    .await
    .unwrap();
    exec(&mut setup, "INSERT INTO counter VALUES (1, 0)")
        .await
        .unwrap();
    // Many implicit increments from concurrent sessions: every one counts.
    let mut tasks = vec![];
    for _ in 0..8 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = Session::new(db);
            for _ in 0..10 {
                exec(&mut s, "UPDATE counter SET n = n + 1 WHERE id = 1")
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = exec(&mut setup, "SELECT n FROM counter WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(n, vec![vec![Value::Int(80)]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_read_modify_write_conflict_is_a_retry_error() {
    let db = single_node_db().await;
    let mut setup = Session::new(db.clone());
    exec(
        &mut setup,
        "CREATE TABLE acct (id INT PRIMARY KEY, balance INT)",
    )
    .await
    .unwrap();
    exec(&mut setup, "INSERT INTO acct VALUES (1, 100)")
        .await
        .unwrap();
    let mut a = Session::new(db.clone());
    exec(&mut a, "BEGIN").await.unwrap();
    exec(&mut a, "SELECT balance FROM acct WHERE id = 1")
        .await
        .unwrap();
    // Another writer commits in between.
    exec(&mut setup, "UPDATE acct SET balance = 50 WHERE id = 1")
        .await
        .unwrap();
    // The conflict surfaces at the UPDATE (the newer value is within the
    // reader's uncertainty window and its earlier read cannot be refreshed)
    // or at COMMIT (the write is pushed above the newer version).
    let update = exec(
        &mut a,
        "UPDATE acct SET balance = balance + 10 WHERE id = 1",
    )
    .await;
    let commit = exec(&mut a, "COMMIT").await;
    let err = update
        .err()
        .or(commit.err())
        .expect("the transaction must not commit");
    assert_eq!(err.sqlstate(), "40001", "{err}");
    assert!(err.to_string().contains("restart transaction"), "{err}");
    let b = exec(&mut setup, "SELECT balance FROM acct WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(
        b,
        vec![vec![Value::Int(50)]],
        "the conflicting update did not apply"
    );
}
