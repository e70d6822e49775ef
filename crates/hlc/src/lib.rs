//! Hybrid logical clocks.
//!
//! Every Concord node owns one [`Clock`]. It hands out [`Timestamp`]s that are
//! close to wall time (nanoseconds since the Unix epoch) and strictly
//! increasing on the node; the `logical` counter breaks ties between events
//! that fall in the same nanosecond or that happen after a message from a node
//! whose clock runs ahead. Every RPC carries the sender's clock reading and the
//! receiver [`Clock::update`]s from it, so causality across nodes is visible in
//! timestamps: if event A happened before event B (through any chain of
//! messages), `ts(A) < ts(B)`.
//!
//! The clock is built on the `hybrid-clocks` crate (the algorithm of Kulkarni et
//! al., "Logical Physical Clocks and Consistent Snapshots in Globally
//! Distributed Databases"); this crate wraps it so that the rest of Concord sees
//! one plain, ordered, `Copy` timestamp type and one error type.
//!
//! ```text
//!   physical clock ──► hybrid_clocks::Clock ──► Clock::now()      ─► Timestamp{wall, logical}
//!   remote reading ──► Clock::update(ts)  (refuses ts > now + max_offset)
//! ```
//!
//! # Guarantees
//! - `now()` is strictly monotonic on one node, including across `update`s.
//! - After `update(t)` succeeds, every later `now()` is greater than `t`.
//!
//! # HAZARD: the maximum clock offset
//! Transactions assume that no two nodes' physical clocks differ by more than
//! `max_offset` (default 500 ms). Reads treat versions in
//! `(read_ts, read_ts + max_offset]` as uncertain and restart above them; that
//! is only enough if the assumption holds. If a node's clock runs further
//! ahead than `max_offset`, a transaction that commits on it can receive a
//! timestamp in the future of a later reader's uncertainty window, and that
//! reader will not see it: a stale read, a serializability violation. This is
//! why `update` refuses readings more than `max_offset` ahead (the RPC fails
//! rather than dragging our clock forward) and why nodes measure each other's
//! offsets (see `offset` below) and stop serving when they drift too far.
//!
//! # Not done yet
//! - The offset monitor that stops a node whose offset to a majority of peers
//!   exceeds 80% of `max_offset` (the transactions issue); `measure_offset`
//!   already computes the NTP-style estimate it needs.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hybrid_clocks::{ClockSource, WallNST};
use parking_lot::Mutex;

/// Errors of the clock.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A remote timestamp is further ahead of our clock than the max offset.
    #[error("remote clock reading {remote} is {ahead:?} ahead of local clock {local}, more than the maximum offset {max_offset:?}")]
    OffsetTooGreat {
        remote: Timestamp,
        local: Timestamp,
        ahead: Duration,
        max_offset: Duration,
    },
    /// The system clock is before the Unix epoch or otherwise unreadable.
    #[error("system clock unreadable: {0}")]
    SystemClock(String),
}

/// A hybrid logical timestamp: wall time in nanoseconds since the Unix epoch
/// plus a logical counter. Ordered by `(wall, logical)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Nanoseconds since the Unix epoch.
    pub wall: u64,
    /// Logical counter, reset whenever `wall` advances.
    pub logical: u32,
}

impl Timestamp {
    /// The zero timestamp, below every real one.
    pub const ZERO: Timestamp = Timestamp {
        wall: 0,
        logical: 0,
    };
    /// The greatest timestamp.
    pub const MAX: Timestamp = Timestamp {
        wall: u64::MAX,
        logical: u32::MAX,
    };

    /// A timestamp from its parts.
    pub const fn new(wall: u64, logical: u32) -> Self {
        Timestamp { wall, logical }
    }

    /// Whether this is the zero timestamp.
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    /// The smallest timestamp greater than this one.
    pub fn next(self) -> Self {
        match self.logical.checked_add(1) {
            Some(logical) => Timestamp {
                wall: self.wall,
                logical,
            },
            None => Timestamp {
                wall: self.wall.saturating_add(1),
                logical: 0,
            },
        }
    }

    /// The greatest timestamp smaller than this one (ZERO stays ZERO).
    pub fn prev(self) -> Self {
        if self.logical > 0 {
            Timestamp {
                wall: self.wall,
                logical: self.logical - 1,
            }
        } else if self.wall > 0 {
            Timestamp {
                wall: self.wall - 1,
                logical: u32::MAX,
            }
        } else {
            self
        }
    }

    /// This timestamp moved forward by a duration of wall time.
    pub fn add_duration(self, d: Duration) -> Self {
        Timestamp {
            wall: self.wall.saturating_add(d.as_nanos() as u64),
            logical: self.logical,
        }
    }

    /// The 12-byte big-endian encoding: orders like the timestamp.
    pub fn to_bytes(self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&self.wall.to_be_bytes());
        b[8..].copy_from_slice(&self.logical.to_be_bytes());
        b
    }

    /// Decodes [`Timestamp::to_bytes`]; `None` if the slice is not 12 bytes.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != 12 {
            return None;
        }
        let wall = u64::from_be_bytes(b[..8].try_into().ok()?);
        let logical = u32::from_be_bytes(b[8..].try_into().ok()?);
        Some(Timestamp { wall, logical })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:09},{}",
            self.wall / 1_000_000_000,
            self.wall % 1_000_000_000,
            self.logical
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The physical time source: the system clock plus an offset that tests (and
/// the fault harness) may set to simulate a skewed machine clock.
#[derive(Clone, Default)]
pub struct PhysicalSource {
    offset_nanos: Arc<AtomicI64>,
}

impl PhysicalSource {
    fn read(&self) -> Result<u64, Error> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|e| Error::SystemClock(e.to_string()))?
            .as_nanos() as i128;
        let skewed = now + self.offset_nanos.load(Ordering::Relaxed) as i128;
        u64::try_from(skewed).map_err(|_| Error::SystemClock("clock offset below epoch".into()))
    }
}

impl ClockSource for PhysicalSource {
    type Time = WallNST;
    type Delta = Duration;
    fn now(&mut self) -> hybrid_clocks::Result<WallNST> {
        // `read` only fails before the epoch; report that as hybrid-clocks'
        // own out-of-range error.
        self.read()
            .map(WallNST::of_u64)
            .map_err(|_| hybrid_clocks::Error::SupportedTime(0))
    }
}

/// A node's hybrid logical clock. Cheap to clone; clones share the clock.
#[derive(Clone)]
pub struct Clock {
    inner: Arc<Mutex<hybrid_clocks::Clock<PhysicalSource>>>,
    source: PhysicalSource,
    max_offset: Duration,
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clock")
            .field("max_offset", &self.max_offset)
            .finish()
    }
}

impl Clock {
    /// A clock on the system time with the given maximum offset.
    pub fn new(max_offset: Duration) -> Result<Self, Error> {
        let source = PhysicalSource::default();
        let inner = hybrid_clocks::Clock::new(source.clone())
            .map_err(|e| Error::SystemClock(e.to_string()))?;
        Ok(Clock {
            inner: Arc::new(Mutex::new(inner)),
            source,
            max_offset,
        })
    }

    /// The configured maximum clock offset between nodes.
    pub fn max_offset(&self) -> Duration {
        self.max_offset
    }

    /// A new timestamp, greater than every one this clock returned or observed.
    pub fn now(&self) -> Timestamp {
        let ts = self
            .inner
            .lock()
            .now()
            .expect("invariant: the physical clock source reads after the epoch");
        Timestamp {
            wall: ts.time.as_u64(),
            logical: ts.count,
        }
    }

    /// The physical (wall) time now, without advancing the logical clock.
    pub fn physical_now(&self) -> u64 {
        self.source.read().unwrap_or(0)
    }

    /// Observes a timestamp from a remote node, so that later `now()`s are
    /// above it. Refuses (and does not observe) a reading more than
    /// `max_offset` ahead of our physical clock.
    pub fn update(&self, remote: Timestamp) -> Result<(), Error> {
        if remote.is_zero() {
            return Ok(());
        }
        let physical = self.source.read()?;
        if remote.wall > physical {
            let ahead = Duration::from_nanos(remote.wall - physical);
            if ahead > self.max_offset {
                return Err(Error::OffsetTooGreat {
                    remote,
                    local: Timestamp::new(physical, 0),
                    ahead,
                    max_offset: self.max_offset,
                });
            }
        }
        self.inner.lock().observe(&hybrid_clocks::Timestamp {
            epoch: 0,
            time: WallNST::of_u64(remote.wall),
            count: remote.logical,
        });
        Ok(())
    }

    /// Test and fault-injection hook: skews this clock's physical source by
    /// `offset` (positive = ahead). The HLC never goes backwards, even when
    /// the offset is reduced.
    pub fn set_test_offset(&self, offset_nanos: i64) {
        self.source
            .offset_nanos
            .store(offset_nanos, Ordering::Relaxed);
    }
}

/// NTP-style estimate of a remote clock's offset from ours, from one request:
/// we sent at `send` (our physical time), the remote replied with its reading
/// `remote`, and we received the reply at `recv`. Positive = remote ahead.
pub fn measure_offset(send: u64, remote: u64, recv: u64) -> i64 {
    let rtt = recv.saturating_sub(send);
    remote as i64 - (send + rtt / 2) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_strictly_monotonic() {
        let c = Clock::new(Duration::from_millis(500)).unwrap();
        let mut last = c.now();
        for _ in 0..10_000 {
            let t = c.now();
            assert!(t > last, "{t} must be after {last}");
            last = t;
        }
    }

    #[test]
    fn update_moves_clock_past_remote_reading() {
        let c = Clock::new(Duration::from_millis(500)).unwrap();
        let ahead = c.now().add_duration(Duration::from_millis(200));
        c.update(ahead).unwrap();
        assert!(c.now() > ahead);
    }

    #[test]
    fn update_refuses_reading_beyond_max_offset() {
        let c = Clock::new(Duration::from_millis(500)).unwrap();
        let far = c.now().add_duration(Duration::from_secs(5));
        let err = c.update(far).unwrap_err();
        assert!(matches!(err, Error::OffsetTooGreat { .. }), "{err}");
        assert!(c.now() < far, "a refused reading must not be observed");
    }

    #[test]
    fn test_offset_skews_physical_time_but_never_goes_back() {
        let c = Clock::new(Duration::from_millis(500)).unwrap();
        let before = c.now();
        c.set_test_offset(3_000_000_000);
        let skewed = c.now();
        assert!(skewed.wall >= before.wall + 2_900_000_000);
        c.set_test_offset(0);
        assert!(c.now() > skewed);
    }

    #[test]
    fn timestamp_bytes_order_like_timestamps() {
        let a = Timestamp::new(5, 7);
        let b = Timestamp::new(5, 8);
        let c = Timestamp::new(6, 0);
        assert!(a.to_bytes() < b.to_bytes() && b.to_bytes() < c.to_bytes());
        assert_eq!(Timestamp::from_bytes(&c.to_bytes()), Some(c));
        assert_eq!(a.next(), b);
        assert_eq!(Timestamp::new(5, u32::MAX).next(), c);
        assert_eq!(c.prev(), Timestamp::new(5, u32::MAX));
    }

    #[test]
    fn offset_estimate_halves_round_trip() {
        // sent at 100, remote read 160, received at 120: rtt 20, midpoint 110.
        assert_eq!(measure_offset(100, 160, 120), 50);
        assert_eq!(measure_offset(100, 90, 120), -20);
    }
}
