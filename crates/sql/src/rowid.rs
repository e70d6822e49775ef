//! Row ids for tables without a primary key.
//!
//! A table created without a PRIMARY KEY gets a hidden column `rowid INT8
//! NOT NULL DEFAULT unique_rowid()` that is its primary key (as in
//! CockroachDB). `unique_rowid()` needs no KV round trip:
//!
//! ```text
//!   63        10 9        0
//!  ┌────────────┬──────────┐
//!  │ µs (HLC-ish)│ node id  │     µs = max(last + 1, wall clock µs)
//!  └────────────┴──────────┘
//! ```
//!
//! The high part strictly increases within a process (`last` is shared by
//! every node a process hosts), and the low ten bits tell processes apart,
//! so ids are unique across the cluster as long as node ids differ modulo
//! 1024. They are positive until about the year 2255 and roughly ordered
//! by insertion time on each node. A duplicate could only come from a
//! node restarting with its clock set back past ids it already issued; an
//! INSERT checks its keys, so that would be a unique violation, never an
//! overwrite.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static NODE_ID: AtomicU64 = AtomicU64::new(0);
static LAST: AtomicU64 = AtomicU64::new(0);

/// Sets the node id mixed into row ids (once, at server start).
pub fn set_node_id(id: u64) {
    NODE_ID.store(id & 0x3FF, Ordering::Relaxed);
}

/// A new row id.
pub fn unique_rowid() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let mut last = LAST.load(Ordering::Relaxed);
    let micros = loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(cur) => last = cur,
        }
    };
    (((micros << 10) | NODE_ID.load(Ordering::Relaxed)) & (i64::MAX as u64)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_ids_strictly_increase_and_carry_the_node_id() {
        set_node_id(3);
        let ids: Vec<i64> = (0..10_000).map(|_| unique_rowid()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "not increasing");
        assert!(ids.iter().all(|i| *i > 0 && i & 0x3FF == 3));
    }
}
