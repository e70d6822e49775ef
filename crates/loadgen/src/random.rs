//! Random inputs: the TPC-C generators of clause 2.1 and 4.3 (NURand,
//! random strings, last names, the transaction deck, keying and think
//! times) and YCSB's scrambled zipfian for `kv`.
//!
//! Everything takes the caller's RNG, so a worker owns its own generator
//! and nothing here is shared or locked.

use std::time::Duration;

use rand::Rng;

/// The constants C of NURand (clause 2.1.6): one for customer last names,
/// one for customer ids, one for item ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NuRandC {
    pub c_last: i32,
    pub c_id: i32,
    pub ol_i_id: i32,
}

impl NuRandC {
    /// Constants for loading: each drawn uniformly from [0, A].
    pub fn random(rng: &mut impl Rng) -> NuRandC {
        NuRandC {
            c_last: rng.random_range(0..=255),
            c_id: rng.random_range(0..=1023),
            ol_i_id: rng.random_range(0..=8191),
        }
    }

    /// The constants for a run, given those of the load: C_ID and OL_I_ID
    /// are kept, and C_LAST is drawn again so that its distance to the load
    /// value is in [65, 119] and not 96 or 112 (clause 2.1.6.1).
    pub fn for_run(load: NuRandC, rng: &mut impl Rng) -> NuRandC {
        loop {
            let c_last = rng.random_range(0..=255);
            if valid_c_last_delta(load.c_last, c_last) {
                return NuRandC { c_last, ..load };
            }
        }
    }
}

/// Whether a run's C_LAST may be used with the load's (clause 2.1.6.1).
pub fn valid_c_last_delta(load: i32, run: i32) -> bool {
    let delta = (load - run).abs();
    (65..=119).contains(&delta) && delta != 96 && delta != 112
}

/// NURand(A, x, y) = (((random(0, A) | random(x, y)) + C) % (y - x + 1)) + x.
pub fn nurand(rng: &mut impl Rng, a: i32, x: i32, y: i32, c: i32) -> i32 {
    (((rng.random_range(0..=a) | rng.random_range(x..=y)) + c) % (y - x + 1)) + x
}

/// The ten syllables of clause 4.3.2.3.
pub const SYLLABLES: [&str; 10] = [
    "BAR", "OUGHT", "ABLE", "PRI", "PRES", "ESE", "ANTI", "CALLY", "ATION", "EING",
];

/// The customer last name of number `num` in [0, 999]: the syllables of its
/// three digits.
pub fn last_name(num: i32) -> String {
    let n = num.clamp(0, 999) as usize;
    let mut s = String::with_capacity(15);
    s.push_str(SYLLABLES[n / 100]);
    s.push_str(SYLLABLES[(n / 10) % 10]);
    s.push_str(SYLLABLES[n % 10]);
    s
}

const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A random alphanumeric string whose length is uniform in [min, max]
/// (the spec's a-string).
pub fn astring(rng: &mut impl Rng, min: usize, max: usize) -> String {
    let len = rng.random_range(min..=max);
    (0..len)
        .map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char)
        .collect()
}

/// A random numeric string whose length is uniform in [min, max] (n-string).
pub fn nstring(rng: &mut impl Rng, min: usize, max: usize) -> String {
    let len = rng.random_range(min..=max);
    (0..len)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

/// A zip code: four random digits then "11111" (clause 4.3.2.7).
pub fn zip(rng: &mut impl Rng) -> String {
    let mut s = nstring(rng, 4, 4);
    s.push_str("11111");
    s
}

/// I_DATA / S_DATA: a string of 26 to 50 characters, of which 10% contain
/// "ORIGINAL" at a random position (clause 4.3.3.1).
pub fn data_with_original(rng: &mut impl Rng) -> String {
    let mut s = astring(rng, 26, 50);
    if rng.random_range(0..10) == 0 {
        let at = rng.random_range(0..=s.len() - 8);
        s.replace_range(at..at + 8, "ORIGINAL");
    }
    s
}

/// The five TPC-C transactions, in the order used for indexes everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnKind {
    NewOrder = 0,
    Payment = 1,
    OrderStatus = 2,
    Delivery = 3,
    StockLevel = 4,
}

impl TxnKind {
    pub const ALL: [TxnKind; 5] = [
        TxnKind::NewOrder,
        TxnKind::Payment,
        TxnKind::OrderStatus,
        TxnKind::Delivery,
        TxnKind::StockLevel,
    ];
    pub const NAMES: [&'static str; 5] = [
        "new_order",
        "payment",
        "order_status",
        "delivery",
        "stock_level",
    ];

    /// Cards of each kind in a deck of 100: 45 / 43 / 4 / 4 / 4.
    pub const CARDS: [usize; 5] = [45, 43, 4, 4, 4];

    /// Keying time (clause 5.2.5.2).
    pub fn keying_time(self) -> Duration {
        Duration::from_secs(match self {
            TxnKind::NewOrder => 18,
            TxnKind::Payment => 3,
            TxnKind::OrderStatus | TxnKind::Delivery | TxnKind::StockLevel => 2,
        })
    }

    /// Mean think time (clause 5.2.5.4).
    pub fn mean_think_time(self) -> Duration {
        Duration::from_secs(match self {
            TxnKind::NewOrder | TxnKind::Payment => 12,
            TxnKind::OrderStatus => 10,
            TxnKind::Delivery | TxnKind::StockLevel => 5,
        })
    }
}

/// The deck of clause 5.2.4.2: 100 cards in the mix's proportions, shuffled,
/// dealt one by one and reshuffled when empty. Over any whole deck the mix
/// is exact, not just on average.
pub struct Deck {
    cards: Vec<TxnKind>,
    next: usize,
}

impl Deck {
    pub fn new() -> Deck {
        let mut cards = Vec::with_capacity(100);
        for (kind, &n) in TxnKind::ALL.iter().zip(TxnKind::CARDS.iter()) {
            cards.extend(std::iter::repeat_n(*kind, n));
        }
        let next = cards.len();
        Deck { cards, next }
    }

    /// The next transaction kind.
    pub fn deal(&mut self, rng: &mut impl Rng) -> TxnKind {
        if self.next == self.cards.len() {
            use rand::seq::SliceRandom;
            self.cards.shuffle(rng);
            self.next = 0;
        }
        let card = self.cards[self.next];
        self.next += 1;
        card
    }
}

impl Default for Deck {
    fn default() -> Self {
        Deck::new()
    }
}

/// A think time: negative exponential with the given mean, truncated at
/// ten times the mean (clause 5.2.5.4).
pub fn think_time(rng: &mut impl Rng, mean: Duration) -> Duration {
    // r in (0, 1], so ln(r) is finite and <= 0.
    let r: f64 = 1.0 - rng.random::<f64>();
    let t = -r.ln() * mean.as_secs_f64();
    Duration::from_secs_f64(t.min(10.0 * mean.as_secs_f64()))
}

/// YCSB's scrambled zipfian generator: a zipfian (theta 0.99) over a huge
/// item space whose values are scattered over [0, n) by an FNV hash, so the
/// popular keys are not all next to each other. This is
/// `ScrambledZipfianGenerator` with YCSB's constants.
pub struct ScrambledZipfian {
    n: u64,
    zipf: Zipfian,
}

const YCSB_ITEM_COUNT: u64 = 10_000_000_000;
const YCSB_ZETAN: f64 = 26.469_028_201_783_02;
/// The zipfian constant YCSB uses (and the only one with a precomputed zeta).
pub const ZIPFIAN_THETA: f64 = 0.99;

impl ScrambledZipfian {
    /// Keys in [0, n). `n` must be at least 1.
    pub fn new(n: u64) -> ScrambledZipfian {
        ScrambledZipfian {
            n: n.max(1),
            zipf: Zipfian::with_zeta(YCSB_ITEM_COUNT, ZIPFIAN_THETA, YCSB_ZETAN),
        }
    }

    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        fnv_hash64(self.zipf.next(rng)) % self.n
    }
}

/// YCSB's `ZipfianGenerator` over [0, items) (Gray et al., "Quickly
/// generating billion-record synthetic databases", SIGMOD 1994).
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipfian {
    /// A generator over [0, items), computing zeta(items, theta) (O(items)).
    pub fn new(items: u64, theta: f64) -> Zipfian {
        let zetan = zeta(items, theta);
        Zipfian::with_zeta(items, theta, zetan)
    }

    fn with_zeta(items: u64, theta: f64, zetan: f64) -> Zipfian {
        let zeta2 = zeta(2, theta);
        let eta = (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipfian {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta,
        }
    }

    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let v = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        v.min(self.items - 1)
    }
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

/// YCSB's `Utils.fnvhash64`: FNV-1a over the 8 bytes, then Java's
/// `Math.abs` of the signed result.
pub fn fnv_hash64(mut val: u64) -> u64 {
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    for _ in 0..8 {
        let octet = val & 0xff;
        val >>= 8;
        hash ^= octet;
        hash = hash.wrapping_mul(1_099_511_628_211);
    }
    (hash as i64).wrapping_abs() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(42)
    }

    #[test]
    fn nurand_stays_within_its_bounds_for_every_spec_use() {
        let mut rng = rng();
        for &(a, x, y) in &[(255, 0, 999), (1023, 1, 3000), (8191, 1, 100_000)] {
            for c in [0, 1, a / 2, a] {
                for _ in 0..20_000 {
                    let v = nurand(&mut rng, a, x, y, c);
                    assert!((x..=y).contains(&v), "NURand({a},{x},{y}) gave {v}");
                }
            }
        }
    }

    #[test]
    fn nurand_is_skewed_unlike_a_uniform_draw() {
        // The OR of two uniforms favours values with many bits set: the
        // most frequent customer id is drawn far more often than 1/3000.
        let mut rng = rng();
        let mut counts = vec![0u32; 3001];
        let n = 300_000;
        for _ in 0..n {
            counts[nurand(&mut rng, 1023, 1, 3000, 0) as usize] += 1;
        }
        let max = *counts.iter().max().unwrap_or(&0);
        assert!(max > 3 * n / 3000, "max count {max} looks uniform");
    }

    #[test]
    fn run_c_last_keeps_the_required_distance_from_the_load_value() {
        let mut rng = rng();
        for load in 0..=255 {
            let c = NuRandC {
                c_last: load,
                c_id: 7,
                ol_i_id: 9,
            };
            let run = NuRandC::for_run(c, &mut rng);
            let delta = (run.c_last - load).abs();
            assert!((65..=119).contains(&delta) && delta != 96 && delta != 112);
            assert_eq!((run.c_id, run.ol_i_id), (7, 9));
        }
        assert!(!valid_c_last_delta(0, 96));
        assert!(!valid_c_last_delta(200, 88));
        assert!(valid_c_last_delta(0, 65));
        assert!(!valid_c_last_delta(0, 64));
    }

    #[test]
    fn last_names_are_built_from_the_spec_syllables() {
        assert_eq!(
            SYLLABLES,
            ["BAR", "OUGHT", "ABLE", "PRI", "PRES", "ESE", "ANTI", "CALLY", "ATION", "EING"]
        );
        // The two examples of clause 4.3.2.3.
        assert_eq!(last_name(371), "PRICALLYOUGHT");
        assert_eq!(last_name(40), "BARPRESBAR");
        assert_eq!(last_name(0), "BARBARBAR");
        assert_eq!(last_name(999), "EINGEINGEING");
        // Every name fits C_LAST VARCHAR(16).
        assert!((0..1000).all(|n| last_name(n).len() <= 16));
    }

    #[test]
    fn random_strings_respect_their_lengths_and_alphabets() {
        let mut rng = rng();
        let mut with_original = 0;
        for _ in 0..10_000 {
            let s = astring(&mut rng, 8, 16);
            assert!((8..=16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()));
            let n = nstring(&mut rng, 4, 4);
            assert!(n.len() == 4 && n.bytes().all(|b| b.is_ascii_digit()));
            let z = zip(&mut rng);
            assert!(z.len() == 9 && z.ends_with("11111"));
            let d = data_with_original(&mut rng);
            assert!((26..=50).contains(&d.len()));
            with_original += usize::from(d.contains("ORIGINAL"));
        }
        assert!((800..1200).contains(&with_original), "{with_original}");
    }

    #[test]
    fn every_deck_deals_the_exact_mix() {
        let mut rng = rng();
        let mut deck = Deck::new();
        for _ in 0..20 {
            let mut counts = [0usize; 5];
            for _ in 0..100 {
                counts[deck.deal(&mut rng) as usize] += 1;
            }
            assert_eq!(counts, [45, 43, 4, 4, 4]);
        }
    }

    #[test]
    fn think_times_are_exponential_and_truncated_at_ten_means() {
        let mut rng = rng();
        for kind in TxnKind::ALL {
            let mean = kind.mean_think_time();
            let n = 50_000;
            let mut sum = 0.0;
            for _ in 0..n {
                let t = think_time(&mut rng, mean);
                assert!(t <= mean * 10, "{kind:?}: {t:?}");
                sum += t.as_secs_f64();
            }
            let avg = sum / n as f64;
            let m = mean.as_secs_f64();
            assert!((avg - m).abs() < 0.03 * m, "{kind:?}: mean {avg} vs {m}");
        }
        let keying: Vec<u64> = TxnKind::ALL
            .iter()
            .map(|k| k.keying_time().as_secs())
            .collect();
        assert_eq!(keying, [18, 3, 2, 2, 2]);
    }

    #[test]
    fn scrambled_zipfian_stays_in_range_and_is_skewed() {
        let mut rng = rng();
        let n = 10_000u64;
        let z = ScrambledZipfian::new(n);
        let mut counts = vec![0u32; n as usize];
        let draws = 200_000;
        for _ in 0..draws {
            let k = z.next(&mut rng);
            assert!(k < n);
            counts[k as usize] += 1;
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        // Uniform would give each key ~20 draws (0.01%). YCSB's zipfian
        // over 10^10 items gives item 0 a share of 1/zeta = 3.8% and its
        // first 100 items ~19%; the long tail, hashed, spreads evenly. So
        // the hottest key gets a few percent and the hottest 1% of keys
        // about a fifth of all draws.
        assert!(counts[0] > 5_000, "hottest key {}", counts[0]);
        let top: u32 = counts[..(n as usize / 100)].iter().sum();
        assert!(top > draws / 6 && top < draws / 3, "top 1% got {top}");
        // ... and the popular keys are scattered, not 0, 1, 2, ...
        let one = ScrambledZipfian::new(1);
        assert_eq!(one.next(&mut rng), 0);
    }

    #[test]
    fn plain_zipfian_favours_small_values() {
        let mut rng = rng();
        let z = Zipfian::new(1000, ZIPFIAN_THETA);
        let mut zeros = 0;
        for _ in 0..10_000 {
            let v = z.next(&mut rng);
            assert!(v < 1000);
            zeros += u32::from(v == 0);
        }
        // P(0) = 1 / zeta(1000, 0.99) ~ 0.13
        assert!((1000..1700).contains(&zeros), "{zeros}");
    }

    #[test]
    fn fnv_hash_matches_ycsb() {
        // FNV-1a 64 over the 8 little-end bytes, then abs() of the signed
        // value, as YCSB's Utils.fnvhash64 does (values from an independent
        // Python transcription of that Java code).
        assert_eq!(fnv_hash64(0), 6_284_781_860_667_377_211);
        assert_eq!(fnv_hash64(1), 8_517_097_267_634_966_620);
        assert_eq!(fnv_hash64(12345), 1_792_800_413_050_876_852);
    }
}
