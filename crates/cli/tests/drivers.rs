//! An ordinary driver (tokio-postgres) against a 3-node cluster through the
//! extended query protocol: prepared statements with inferred parameter
//! types, binary parameters and results, NULLs, transactions, errors with
//! their SQLSTATE and recovery at Sync, portals fetched in batches.

mod common;

use std::time::Duration;

use common::*;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_prepared_statements_binary_values_and_transactions() {
    let c = start_cluster(3, &[]);
    let a = connect(&c.nodes[0].sql_url()).await;
    let b = connect(&c.nodes[1].sql_url()).await;
    exec_retry(
        &a,
        "CREATE TABLE acct (id INT PRIMARY KEY, owner TEXT, balance BIGINT, rate FLOAT, small SMALLINT, active BOOL)",
        Duration::from_secs(30),
    )
    .await
    .unwrap();

    // Parameter types come from context: a column compared or assigned.
    let ins = a
        .prepare("INSERT INTO acct VALUES ($1, $2, $3, $4, $5, $6)")
        .await
        .unwrap();
    assert_eq!(
        ins.params(),
        &[
            Type::INT4,
            Type::TEXT,
            Type::INT8,
            Type::FLOAT8,
            Type::INT2,
            Type::BOOL
        ]
    );
    for i in 1..=5i32 {
        let owner = format!("o{i}");
        let n = a
            .execute(
                &ins,
                &[
                    &i,
                    &owner,
                    &(i64::from(i) * 1_000_000_000_000),
                    &(f64::from(i) / 3.0),
                    &(i as i16),
                    &(i % 2 == 0),
                ],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
    // A NULL parameter.
    a.execute(
        &ins,
        &[&6i32, &None::<String>, &0i64, &0.5f64, &0i16, &None::<bool>],
    )
    .await
    .unwrap();

    // Results come back in binary and decode to the column types, through
    // another node.
    let sel = b
        .prepare("SELECT id, owner, balance, rate, small, active FROM acct WHERE id = $1")
        .await
        .unwrap();
    assert_eq!(sel.params(), &[Type::INT4]);
    let cols: Vec<Type> = sel.columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(
        cols,
        vec![
            Type::INT4,
            Type::TEXT,
            Type::INT8,
            Type::FLOAT8,
            Type::INT2,
            Type::BOOL
        ]
    );
    let row = b.query_one(&sel, &[&3i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
    assert_eq!(row.get::<_, String>(1), "o3");
    assert_eq!(row.get::<_, i64>(2), 3_000_000_000_000);
    assert_eq!(row.get::<_, f64>(3), 1.0);
    assert_eq!(row.get::<_, i16>(4), 3);
    assert!(!row.get::<_, bool>(5));
    let row = b.query_one(&sel, &[&6i32]).await.unwrap();
    assert_eq!(row.get::<_, Option<String>>(1), None);
    assert_eq!(row.get::<_, Option<bool>>(5), None);
    assert!(b.query_opt(&sel, &[&99i32]).await.unwrap().is_none());

    // Arithmetic with a parameter, LIMIT as a parameter, text parameters
    // for a text column, and a statement executed many times.
    let upd = a
        .prepare("UPDATE acct SET balance = balance + $1 WHERE id = $2")
        .await
        .unwrap();
    assert_eq!(upd.params(), &[Type::INT8, Type::INT4]);
    for _ in 0..10 {
        a.execute(&upd, &[&-7i64, &1i32]).await.unwrap();
    }
    let row = a
        .query_one("SELECT balance FROM acct WHERE id = $1", &[&1i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1_000_000_000_000 - 70);
    let rows = a
        .query(
            "SELECT id FROM acct WHERE owner >= $1 ORDER BY id LIMIT $2",
            &[&"o2", &2i64],
        )
        .await
        .unwrap();
    let ids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![2, 3]);

    // SELECT … FOR UPDATE prepared (TPC-C's new-order does this): it
    // describes as its SELECT and locks the row it returns.
    let lock = a
        .prepare("SELECT balance FROM acct WHERE id = $1 FOR UPDATE")
        .await
        .unwrap();
    assert_eq!(lock.params(), &[Type::INT4]);
    assert_eq!(lock.columns()[0].type_(), &Type::INT8);
    let row = a.query_one(&lock, &[&1i32]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 1_000_000_000_000 - 70);

    // Transactions through the extended protocol.
    let mut conn = connect(&c.nodes[2].sql_url()).await;
    let tx = conn.transaction().await.unwrap();
    tx.execute("UPDATE acct SET balance = 0 WHERE id = $1", &[&2i32])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let tx = conn.transaction().await.unwrap();
    tx.execute("UPDATE acct SET balance = 1 WHERE id = $1", &[&4i32])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let row = a
        .query_one("SELECT balance FROM acct WHERE id = 2", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 2_000_000_000_000);
    let row = a
        .query_one("SELECT balance FROM acct WHERE id = 4", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);

    // Errors keep their SQLSTATE, at Parse and at Execute, and the
    // connection carries on after them.
    let e = a.prepare("SELECT * FROM nope").await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_TABLE));
    let e = a
        .execute(&ins, &[&1i32, &"dup", &0i64, &0.0f64, &0i16, &true])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION));
    let e = a.query_one("SELECT 1 / $1", &[&0i32]).await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::DIVISION_BY_ZERO), "{e:?}");
    let e = a.prepare("SELECT 1; SELECT 2").await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::SYNTAX_ERROR));
    assert_eq!(count(&a, "SELECT count(*) FROM acct").await.unwrap(), 6);

    // An aborted block is left through the extended protocol too, and an
    // error at Parse aborts the block it happens in.
    a.execute("BEGIN", &[]).await.unwrap();
    a.execute("UPDATE acct SET balance = 5 WHERE id = 5", &[])
        .await
        .unwrap();
    assert!(a.prepare("SELECT * FROM nope").await.is_err());
    let e = a.execute("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(
        e.code(),
        Some(&SqlState::IN_FAILED_SQL_TRANSACTION),
        "{e:?}"
    );
    a.execute("ROLLBACK", &[]).await.unwrap();
    let row = a
        .query_one("SELECT balance FROM acct WHERE id = 5", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 5_000_000_000_000);

    // A portal read in batches (Execute with a row limit).
    let tx = conn.transaction().await.unwrap();
    let portal = tx
        .bind("SELECT id FROM acct ORDER BY id", &[])
        .await
        .unwrap();
    let first = tx.query_portal(&portal, 4).await.unwrap();
    let rest = tx.query_portal(&portal, 4).await.unwrap();
    assert_eq!(first.len(), 4);
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[1].get::<_, i32>(0), 6);
    tx.commit().await.unwrap();

    // Startup parameters become settings (`options=-c …` too); a bad one
    // refuses the connection; statement_timeout cancels with 57014 and the
    // connection stays usable.
    let url = format!(
        "{}?application_name=drv&options=-c%20statement_timeout%3D150",
        c.nodes[0].sql_url()
    );
    let s = connect(&url).await;
    let row = s.query_one("SHOW application_name", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "drv");
    let e = s.query_one("SELECT pg_sleep(5)", &[]).await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{e:?}");
    assert_eq!(count(&s, "SELECT count(*) FROM acct").await.unwrap(), 6);
    let bad = format!(
        "{}?options=-c%20extra_float_digits%3D42",
        c.nodes[0].sql_url()
    );
    let e = tokio_postgres::connect(&bad, tokio_postgres::NoTls)
        .await
        .err()
        .expect("a bad startup setting refuses the connection");
    assert_eq!(e.code(), Some(&SqlState::INVALID_PARAMETER_VALUE), "{e:?}");
}

/// COPY through tokio-postgres's copy_in/copy_out (the extended protocol's
/// COPY), with lines split across CopyData messages, NULLs and escapes; a
/// COPY rolled back with its block; a bad row failing the whole COPY;
/// ADD PRIMARY KEY on the loaded table; timestamps as binary parameters
/// and results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_copy_and_timestamps() {
    use futures::SinkExt;
    use std::time::{SystemTime, UNIX_EPOCH};

    let c = start_cluster(3, &[]);
    let a = connect(&c.nodes[0].sql_url()).await;
    exec_retry(
        &a,
        "CREATE TABLE ev (id INT NOT NULL, at TIMESTAMPTZ, d DATE, note CHAR(4))",
        Duration::from_secs(30),
    )
    .await
    .unwrap();

    let sink = a.copy_in("COPY ev FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(
        b"1\t2024-03-01 10:00:00+00\t2024-03-01\tab\n2\t\\N\t\\N\t\\N\n3\t2024-03",
    ))
    .await
    .unwrap();
    sink.send(bytes::Bytes::from_static(
        b"-02 00:00:00Z\t2024-03-02\tx\\ty\n",
    ))
    .await
    .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 3);

    // A COPY inside a block goes with it.
    a.batch_execute("BEGIN").await.unwrap();
    let sink = a
        .copy_in("COPY ev (id) FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"10\n11\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    assert_eq!(count(&a, "SELECT count(*) FROM ev").await.unwrap(), 5);
    a.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(count(&a, "SELECT count(*) FROM ev").await.unwrap(), 3);

    // A row that does not convert fails the COPY: nothing is inserted.
    let sink = a.copy_in("COPY ev (id) FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"20\nx\n"))
        .await
        .unwrap();
    let e = sink.finish().await.unwrap_err();
    assert_eq!(
        e.code(),
        Some(&SqlState::INVALID_TEXT_REPRESENTATION),
        "{e:?}"
    );
    assert_eq!(count(&a, "SELECT count(*) FROM ev").await.unwrap(), 3);

    // The loaded table gets its primary key afterwards (as pgbench -i does).
    a.batch_execute("ALTER TABLE ev ADD PRIMARY KEY (id)")
        .await
        .unwrap();
    let e = a
        .batch_execute("INSERT INTO ev (id) VALUES (2)")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION), "{e:?}");

    // COPY TO STDOUT prints as PostgreSQL does: CHAR(4) padded, escapes.
    let out = a.copy_out("COPY ev TO STDOUT").await.unwrap();
    futures::pin_mut!(out);
    let mut text = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut out).await {
        text.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(
        String::from_utf8(text).unwrap(),
        "1\t2024-03-01 10:00:00+00\t2024-03-01\tab  \n\
         2\t\\N\t\\N\t\\N\n\
         3\t2024-03-02 00:00:00+00\t2024-03-02\tx\\ty \n"
    );

    // Timestamps travel in binary both ways.
    let at: SystemTime = a
        .query_one("SELECT at FROM ev WHERE id = $1", &[&1i32])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        at.duration_since(UNIX_EPOCH).unwrap().as_secs(),
        1_709_287_200
    );
    let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
    a.execute("INSERT INTO ev (id, at) VALUES ($1, $2)", &[&4i32, &t])
        .await
        .unwrap();
    let row = a
        .query_one("SELECT at, at::text FROM ev WHERE id = 4", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, SystemTime>(0), t);
    assert_eq!(row.get::<_, String>(1), "2023-11-14 22:13:20.123456+00");

    // A CancelRequest (on a connection of its own, with the session's pid
    // and secret) stops the running statement with 57014, and the session
    // carries on; inside a block, the block is then failed until ROLLBACK.
    for in_block in [false, true] {
        if in_block {
            a.batch_execute("BEGIN").await.unwrap();
        }
        let e = cancel_while_running(&a, "SELECT pg_sleep(60)").await;
        assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{e:?}");
        if in_block {
            let e = a.batch_execute("SELECT 1").await.unwrap_err();
            assert_eq!(
                e.code(),
                Some(&SqlState::IN_FAILED_SQL_TRANSACTION),
                "{e:?}"
            );
            a.batch_execute("ROLLBACK").await.unwrap();
        }
        assert_eq!(count(&a, "SELECT count(*) FROM ev").await.unwrap(), 4);
    }
}

/// Runs `sql`, sending cancel requests every 200 ms until it returns (the
/// first may arrive before the statement starts, and cancels nothing);
/// returns the statement's error. A statement that ends without one fails
/// the test.
async fn cancel_while_running(client: &tokio_postgres::Client, sql: &str) -> tokio_postgres::Error {
    use std::sync::atomic::{AtomicBool, Ordering};
    let token = client.cancel_token();
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let canceller = tokio::spawn({
        let done = done.clone();
        async move {
            while !done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if !done.load(Ordering::SeqCst) {
                    let _ = token.cancel_query(tokio_postgres::NoTls).await;
                }
            }
        }
    });
    let r = client.batch_execute(sql).await;
    done.store(true, Ordering::SeqCst);
    canceller.await.unwrap();
    r.expect_err("the statement was canceled")
}
