//! psql's describe commands (`\l`, `\dt`, `\d t`, `\di`, `\dn`, `\du`)
//! print what PostgreSQL 15 prints for the same schema. They run psql's own
//! catalog queries against `pg_catalog` on a 3-node cluster.
//!
//! `psql/schema.sql` is the schema (pgbench's tables, created as `pgbench
//! -i` creates them, and a table with a default, NOT NULL, UNIQUE, CHECK and
//! a secondary index); `psql/expected.out` is the output of
//! `psql/commands.txt` from PostgreSQL 15.18 for that schema, with one
//! change: `\l` lists only `defaultdb` (PostgreSQL also lists `postgres`,
//! `template0` and `template1`, which Concord does not have).
//!
//! To regenerate the expected output against a PostgreSQL 15 at $PGHOST:
//! ```text
//! createdb golden && psql -X -q -d golden -f psql/schema.sql
//! while read -r c; do echo "-- $c"; psql -X -d golden -c "$c"; done < psql/commands.txt
//! ```
//!
//! psql comes with `scripts/setup.sh` (`postgresql-client`); without it the
//! test says it is skipped and passes.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn psql(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("psql")
        .arg("-X")
        .arg(url)
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_describe_commands_print_what_postgresql_prints() {
    if Command::new("psql").arg("--version").output().is_err() {
        println!("skipped: psql is not installed (scripts/setup.sh installs postgresql-client)");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/psql");
    let schema = std::fs::read_to_string(dir.join("schema.sql")).unwrap();
    let commands = std::fs::read_to_string(dir.join("commands.txt")).unwrap();
    let expected = std::fs::read_to_string(dir.join("expected.out")).unwrap();

    let c = start_cluster(3, &[]);
    let client = connect(&c.nodes[0].sql_url()).await;
    for stmt in schema
        .split(';')
        .map(|s| {
            s.lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .filter(|s| !s.trim().is_empty())
    {
        exec_retry(&client, &stmt, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{stmt}: {e}"));
    }

    // Each command on another node: they all see the same catalog.
    let mut actual = String::new();
    for (i, cmd) in commands.lines().filter(|l| !l.is_empty()).enumerate() {
        let url = c.nodes[i % c.nodes.len()].sql_url();
        let (ok, out, err) = psql(&url, &["-c", cmd]);
        assert!(ok && err.is_empty(), "psql -c '{cmd}' failed: {err}\n{out}");
        actual.push_str(&format!("-- {cmd}\n{out}"));
    }
    if actual != expected {
        for (a, e) in actual.lines().zip(expected.lines()) {
            if a != e {
                println!("first difference:\n  expected: {e}\n  actual:   {a}");
                break;
            }
        }
        panic!("psql's output differs from PostgreSQL's:\n{actual}");
    }
}
