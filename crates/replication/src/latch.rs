//! Latches: short-lived locks over key spans that serialize overlapping
//! requests on one replica while they are evaluated and, for writes, until
//! their Raft command has applied.
//!
//! A request declares its spans up front (read or write). It is queued at
//! once, in arrival order, and then waits only for *earlier* requests whose
//! spans overlap with at least one side writing. Waiting only on earlier
//! arrivals makes latching fair (a stream of readers cannot starve a writer)
//! and deadlock-free (the waits-for graph follows arrival order).
//!
//! ```text
//!   arrival:  #1 write [a]   #2 read [a,c)   #3 read [x]
//!   #2 waits for #1 (overlap on a, #1 writes); #3 runs at once.
//! ```
//!
//! Latches are not transaction locks: they are held for the duration of one
//! request on one replica. Transaction-level isolation comes from MVCC and the
//! timestamp cache.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// A span to latch: `[start, end)`, or the single key `start` if `end` is `None`.
#[derive(Clone, Debug)]
pub struct LatchSpan {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
    pub write: bool,
}

impl LatchSpan {
    /// A read latch on one key.
    pub fn read_key(key: &[u8]) -> Self {
        LatchSpan {
            start: key.to_vec(),
            end: None,
            write: false,
        }
    }
    /// A write latch on one key.
    pub fn write_key(key: &[u8]) -> Self {
        LatchSpan {
            start: key.to_vec(),
            end: None,
            write: true,
        }
    }
    /// A read latch on `[start, end)` (`end` empty: to the end of the keyspace).
    pub fn read_span(start: &[u8], end: &[u8]) -> Self {
        LatchSpan {
            start: start.to_vec(),
            end: Some(end.to_vec()),
            write: false,
        }
    }

    /// A write latch on `[start, end)` (`end` empty: to the end of the keyspace).
    pub fn write_span(start: &[u8], end: &[u8]) -> Self {
        LatchSpan {
            start: start.to_vec(),
            end: Some(end.to_vec()),
            write: true,
        }
    }

    fn overlaps(&self, other: &LatchSpan) -> bool {
        // Each span as [lo, hi) with hi = None meaning unbounded.
        fn bounds(s: &LatchSpan) -> (&[u8], Option<Vec<u8>>) {
            match &s.end {
                None => {
                    let mut hi = s.start.clone();
                    hi.push(0);
                    (&s.start, Some(hi))
                }
                Some(e) if e.is_empty() => (&s.start, None),
                Some(e) => (&s.start, Some(e.clone())),
            }
        }
        let (a_lo, a_hi) = bounds(self);
        let (b_lo, b_hi) = bounds(other);
        let a_before_b_end = b_hi.as_deref().is_none_or(|h| a_lo < h);
        let b_before_a_end = a_hi.as_deref().is_none_or(|h| b_lo < h);
        a_before_b_end && b_before_a_end
    }

    fn conflicts(&self, other: &LatchSpan) -> bool {
        (self.write || other.write) && self.overlaps(other)
    }
}

struct Held {
    seq: u64,
    spans: Vec<LatchSpan>,
}

/// The latch manager of one replica.
#[derive(Default)]
pub struct LatchManager {
    held: Mutex<Vec<Held>>,
    next_seq: AtomicU64,
    released: Notify,
}

/// Latches held until dropped.
pub struct LatchGuard<'a> {
    manager: &'a LatchManager,
    seq: u64,
}

impl Drop for LatchGuard<'_> {
    fn drop(&mut self) {
        self.manager.held.lock().retain(|h| h.seq != self.seq);
        self.manager.released.notify_waiters();
    }
}

impl LatchManager {
    /// A manager with no latches held.
    pub fn new() -> Self {
        Self::default()
    }

    /// Acquires latches on `spans`, waiting for earlier conflicting requests.
    pub async fn acquire(&self, spans: Vec<LatchSpan>) -> LatchGuard<'_> {
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        self.held.lock().push(Held { seq, spans });
        let guard = LatchGuard { manager: self, seq };
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.must_wait(seq) {
                return guard;
            }
            notified.await;
        }
    }

    fn must_wait(&self, seq: u64) -> bool {
        let held = self.held.lock();
        let Some(mine) = held.iter().find(|h| h.seq == seq) else {
            return false;
        };
        held.iter().filter(|h| h.seq < seq).any(|earlier| {
            earlier
                .spans
                .iter()
                .any(|a| mine.spans.iter().any(|b| a.conflicts(b)))
        })
    }

    /// Number of requests holding or waiting for latches.
    pub fn len(&self) -> usize {
        self.held.lock().len()
    }

    /// Whether no request holds or waits for latches.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn overlap_rules() {
        let w = LatchSpan::write_key(b"b");
        assert!(w.conflicts(&LatchSpan::read_span(b"a", b"c")));
        assert!(!w.conflicts(&LatchSpan::read_span(b"c", b"d")));
        assert!(
            !w.conflicts(&LatchSpan::read_span(b"a", b"b")),
            "end is exclusive"
        );
        assert!(
            w.conflicts(&LatchSpan::read_span(b"a", b"")),
            "empty end is unbounded"
        );
        assert!(
            !LatchSpan::read_key(b"b").conflicts(&LatchSpan::read_key(b"b")),
            "readers share"
        );
        assert!(!w.conflicts(&LatchSpan::write_key(b"b\x00")));
    }

    #[tokio::test]
    async fn later_request_waits_for_earlier_conflicting_writer() {
        let m = Arc::new(LatchManager::new());
        let g1 = m.acquire(vec![LatchSpan::write_key(b"a")]).await;
        let m2 = m.clone();
        let waiter = tokio::spawn(async move {
            let _g = m2.acquire(vec![LatchSpan::read_span(b"a", b"z")]).await;
        });
        // An unrelated request is not held up.
        let _g3 = m.acquire(vec![LatchSpan::write_key(b"zz")]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "reader must wait for the writer on a"
        );
        drop(g1);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("reader proceeds once the writer releases")
            .unwrap();
    }
}
