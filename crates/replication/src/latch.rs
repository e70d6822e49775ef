//! Latches: short-lived locks over key spans that serialize overlapping
//! requests on one replica while they are evaluated and, for writes, until
//! their Raft command has applied.
//!
//! A request declares its spans up front (read or write). It is queued at
//! once, in arrival order, and then waits only for *earlier* requests whose
//! spans overlap with at least one side writing. Waiting only on earlier
//! arrivals makes latching fair (a stream of readers cannot starve a writer)
//! and deadlock-free (the waits-for graph follows arrival order) as long as
//! a request takes all its latches in one `acquire`: one that holds a guard
//! while it acquires more has two places in line, and a request queued
//! between them that overlaps both waits for the first while the second
//! waits for it, for ever (a prepare that latched its transaction record
//! and then its keys once did so against a whole-range latch).
//!
//! ```text
//!   arrival:  #1 write [a]   #2 read [a,c)   #3 read [x]
//!   #2 waits for #1 (overlap on a, #1 writes); #3 runs at once.
//! ```
//!
//! Latches are not transaction locks: they are held for the duration of one
//! request on one replica. Transaction-level isolation comes from MVCC and the
//! timestamp cache.

use std::sync::Arc;

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

    /// `[lo, hi)`, `hi` `None` for the end of the keyspace.
    fn bounds(&self) -> (&[u8], Option<std::borrow::Cow<'_, [u8]>>) {
        match &self.end {
            None => {
                let mut hi = self.start.clone();
                hi.push(0);
                (&self.start, Some(std::borrow::Cow::Owned(hi)))
            }
            Some(e) if e.is_empty() => (&self.start, None),
            Some(e) => (&self.start, Some(std::borrow::Cow::Borrowed(e.as_slice()))),
        }
    }

    #[cfg(test)]
    fn conflicts(&self, other: &LatchSpan) -> bool {
        let (a_lo, a_hi) = self.bounds();
        let (b_lo, b_hi) = other.bounds();
        (self.write || other.write)
            && b_hi.as_deref().is_none_or(|h| a_lo < h)
            && a_hi.as_deref().is_none_or(|h| b_lo < h)
    }
}

/// One side of a conflict check: spans sorted by start, with the furthest
/// end among each prefix, so that "does any of them overlap `[lo, hi)`" is
/// one binary search (the spans with a start below `hi` are a prefix; one
/// of them overlaps iff the furthest end of that prefix is above `lo`).
#[derive(Default)]
struct Sorted {
    starts: Vec<Vec<u8>>,
    /// `None`: unbounded.
    furthest: Vec<Option<Vec<u8>>>,
}

impl Sorted {
    fn new<'a>(spans: impl Iterator<Item = &'a LatchSpan>) -> Self {
        let mut v: Vec<(Vec<u8>, Option<Vec<u8>>)> = spans
            .map(|s| {
                let (lo, hi) = s.bounds();
                (lo.to_vec(), hi.map(|h| h.into_owned()))
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Sorted::default();
        let mut far: Option<Option<Vec<u8>>> = None;
        for (lo, hi) in v {
            far = Some(match far {
                None => hi,
                Some(None) => None,
                Some(Some(f)) => hi.map(|h| h.max(f)),
            });
            out.starts.push(lo);
            out.furthest.push(far.clone().expect("set above"));
        }
        out
    }

    fn overlaps(&self, lo: &[u8], hi: Option<&[u8]>) -> bool {
        let k = match hi {
            Some(h) => self.starts.partition_point(|s| s.as_slice() < h),
            None => self.starts.len(),
        };
        k > 0 && self.furthest[k - 1].as_deref().is_none_or(|f| lo < f)
    }
}

/// A request's latches, indexed for conflict checks.
struct Held {
    seq: u64,
    spans: Vec<LatchSpan>,
    all: Sorted,
    writes: Sorted,
}

impl Held {
    fn new(seq: u64, spans: Vec<LatchSpan>) -> Self {
        let all = Sorted::new(spans.iter());
        let writes = Sorted::new(spans.iter().filter(|s| s.write));
        Held {
            seq,
            spans,
            all,
            writes,
        }
    }

    /// Whether a span of one overlaps a span of the other with at least one
    /// of the two writing: each span of the smaller side is looked up in
    /// the other's index (all its spans for a write, its writes for a
    /// read), O(n log m) rather than every pair.
    fn conflicts(&self, other: &Held) -> bool {
        let (small, big) = if self.spans.len() <= other.spans.len() {
            (self, other)
        } else {
            (other, self)
        };
        small.spans.iter().any(|s| {
            let (lo, hi) = s.bounds();
            let index = if s.write { &big.all } else { &big.writes };
            index.overlaps(lo, hi.as_deref())
        })
    }
}

/// The latch manager of one replica.
#[derive(Default)]
pub struct LatchManager {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    line: Mutex<Line>,
    released: Notify,
}

/// The requests holding or waiting for latches, and the next place in
/// line. One lock guards both: a request takes its number and joins `held`
/// in one step, so no request can look for earlier ones while an
/// earlier-numbered one has yet to join (both would run: two writers of
/// one key once did, and the SQL serializability test lost an increment).
#[derive(Default)]
struct Line {
    held: Vec<Held>,
    next_seq: u64,
}

/// Latches held until dropped. A guard owns its manager's state, so it can
/// outlive the request that took it: a write's latches are handed to its
/// proposal and released only once the Raft command has applied or can no
/// longer apply (see `Store::propose_keeping`), even if the request gave
/// up waiting or its future was dropped.
pub struct LatchGuard {
    inner: Arc<Inner>,
    seq: u64,
}

impl Drop for LatchGuard {
    fn drop(&mut self) {
        self.inner.line.lock().held.retain(|h| h.seq != self.seq);
        self.inner.released.notify_waiters();
    }
}

impl LatchManager {
    /// A manager with no latches held.
    pub fn new() -> Self {
        Self::default()
    }

    /// Acquires latches on `spans`, waiting for earlier conflicting requests.
    pub async fn acquire(&self, spans: Vec<LatchSpan>) -> LatchGuard {
        let inner = &self.inner;
        // Indexed before the lock is taken; numbered under it (see `Line`).
        let mut held = Held::new(0, spans);
        let seq = {
            let mut line = inner.line.lock();
            let seq = line.next_seq;
            line.next_seq += 1;
            held.seq = seq;
            line.held.push(held);
            seq
        };
        let guard = LatchGuard {
            inner: inner.clone(),
            seq,
        };
        let started = std::time::Instant::now();
        loop {
            let notified = inner.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.must_wait(seq) {
                let waited = started.elapsed();
                if waited > crate::SLOW_STEP {
                    tracing::debug!(
                        target: "concord::slow",
                        waited_ms = waited.as_millis() as u64,
                        "slow latch wait"
                    );
                }
                return guard;
            }
            notified.await;
        }
    }

    fn must_wait(&self, seq: u64) -> bool {
        let line = self.inner.line.lock();
        let held = &line.held;
        let Some(mine) = held.iter().find(|h| h.seq == seq) else {
            return false;
        };
        held.iter()
            .filter(|h| h.seq < seq)
            .any(|earlier| earlier.conflicts(mine))
    }

    /// Number of requests holding or waiting for latches.
    pub fn len(&self) -> usize {
        self.inner.line.lock().held.len()
    }

    /// Whether no request holds or waits for latches.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
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

    /// The indexed check between two requests agrees with checking every
    /// pair of their spans, on random mixes of keys and spans (bounded and
    /// unbounded, overlapping within a request), reads and writes.
    #[test]
    fn indexed_conflicts_agree_with_every_pair() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let key = |i: u64| vec![b'a' + i as u8];
        for _ in 0..3000 {
            let make = |next: &mut dyn FnMut(u64) -> u64| -> Vec<LatchSpan> {
                (0..1 + next(5))
                    .map(|_| {
                        let a = next(8);
                        let write = next(2) == 0;
                        match next(3) {
                            0 => LatchSpan {
                                start: key(a),
                                end: None,
                                write,
                            },
                            1 => LatchSpan {
                                start: key(a),
                                end: Some(key(a + 1 + next(4))),
                                write,
                            },
                            _ => LatchSpan {
                                start: key(a),
                                end: Some(vec![]),
                                write,
                            },
                        }
                    })
                    .collect()
            };
            let a = make(&mut next);
            let b = make(&mut next);
            let pairwise = a.iter().any(|x| b.iter().any(|y| x.conflicts(y)));
            let (ha, hb) = (Held::new(0, a.clone()), Held::new(1, b.clone()));
            assert_eq!(ha.conflicts(&hb), pairwise, "{a:?} vs {b:?}");
            assert_eq!(hb.conflicts(&ha), pairwise, "{b:?} vs {a:?}");
        }
    }

    /// Writers of one key exclude each other, however their arrivals
    /// interleave: many tasks on several worker threads take a write latch
    /// on the same key (some with many spans, whose indexing takes time
    /// between taking a place in line and joining the held set) and check
    /// that no other holds it. A request that took its sequence number
    /// before an earlier-numbered one had joined the held set used to miss
    /// it, and both ran (a lost update in the SQL serializability test).
    #[test]
    fn writers_of_one_key_never_overlap() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .build()
            .unwrap();
        let m = Arc::new(LatchManager::new());
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let overlaps = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        rt.block_on(async {
            let mut tasks = vec![];
            for t in 0..16usize {
                let (m, inside, overlaps) = (m.clone(), inside.clone(), overlaps.clone());
                tasks.push(tokio::spawn(async move {
                    for i in 0..400usize {
                        let mut spans = vec![LatchSpan::write_key(b"k")];
                        // Every other request also latches many other
                        // keys, so that building its index takes a while.
                        if (t + i) % 2 == 0 {
                            spans
                                .extend((0..200u32).map(|j| LatchSpan::read_key(&j.to_be_bytes())));
                        }
                        let _g = m.acquire(spans).await;
                        if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                            overlaps.fetch_add(1, Ordering::SeqCst);
                        }
                        tokio::task::yield_now().await;
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        assert_eq!(
            overlaps.load(Ordering::SeqCst),
            0,
            "two writers of one key held their latches at once"
        );
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
