//! Placement: which backend a new object goes to.
//!
//! Candidates exclude backends that are disabled, unhealthy, read-only, out of room for the
//! declared size, or past their monthly class A/B budget; a strategy picks among the rest.
//! `consistent-hash` is weighted rendezvous hashing on xxh3 of `bucket/key`: deterministic,
//! so a read finds an object with no index, and adding a backend moves only its share.

use xxhash_rust::xxh3::xxh3_64;

use crate::config::Strategy;
use crate::error::{S3Error, S3ErrorCode};

/// What placement knows of one backend at decision time (from config, health snapshot and
/// usage counters).
#[derive(Debug, Clone, PartialEq)]
pub struct BackendState {
    pub name: String,
    pub weight: u32,
    pub enabled: bool,
    pub read_only: bool,
    pub healthy: bool,
    /// `None`: unlimited.
    pub max_size: Option<u64>,
    pub used_bytes: u64,
    pub class_a_used: u64,
    pub class_b_used: u64,
    pub class_a_limit: Option<u64>,
    pub class_b_limit: Option<u64>,
}

/// Inputs a strategy may use besides the candidates. Supplied by the adapter, so the choice is
/// a pure function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entropy {
    /// A counter incremented per decision (round-robin).
    pub counter: u64,
    /// A random number (weighted).
    pub random: u64,
}

/// Why `b` cannot take a new object of `size` bytes, if it cannot.
fn exclusion(b: &BackendState, size: Option<u64>) -> Option<String> {
    if !b.enabled {
        return Some("disabled".to_owned());
    }
    if !b.healthy {
        return Some("unhealthy".to_owned());
    }
    if b.read_only {
        return Some("read-only".to_owned());
    }
    if let Some(limit) = b.class_a_limit {
        if b.class_a_used >= limit {
            return Some(format!(
                "monthly class A operation budget spent ({} of {limit})",
                b.class_a_used
            ));
        }
    }
    if let Some(max) = b.max_size {
        let free = max.saturating_sub(b.used_bytes);
        match size {
            Some(size) if free < size => {
                return Some(format!(
                    "not enough space ({free} bytes free, {size} needed)"
                ));
            }
            // Unknown size (chunked upload): only a full backend is excluded.
            None if free == 0 => {
                return Some(format!("full ({} of {max} bytes used)", b.used_bytes))
            }
            _ => {}
        }
    }
    None
}

/// Whether `b` may take a new object of undeclared size: what [`write_candidates`] asks of
/// each backend, for one.
pub fn takes_writes(b: &BackendState) -> bool {
    exclusion(b, None).is_none()
}

/// The backends that may take a new object of `size` bytes (when declared), in config order.
/// None left: `InsufficientStorage` (507) naming why each backend was excluded.
pub fn write_candidates(
    backends: &[BackendState],
    size: Option<u64>,
) -> Result<Vec<&BackendState>, S3Error> {
    let mut reasons = Vec::new();
    let mut candidates = Vec::new();
    for b in backends {
        match exclusion(b, size) {
            None => candidates.push(b),
            Some(why) => reasons.push(format!("{}: {why}", b.name)),
        }
    }
    if !candidates.is_empty() {
        return Ok(candidates);
    }
    let message = if reasons.is_empty() {
        "No backend can store this object: no backend is configured".to_owned()
    } else {
        format!("No backend can store this object: {}", reasons.join("; "))
    };
    Err(S3Error::new(S3ErrorCode::InsufficientStorage, message))
}

/// Free bytes of a backend; unlimited counts as `u64::MAX`.
fn free_bytes(b: &BackendState) -> u64 {
    b.max_size
        .map(|m| m.saturating_sub(b.used_bytes))
        .unwrap_or(u64::MAX)
}

/// Weights as strategies use them: all zero means all equal (a strategy must still choose).
fn effective_weights(backends: &[&BackendState]) -> Vec<u64> {
    if backends.iter().all(|b| b.weight == 0) {
        vec![1; backends.len()]
    } else {
        backends.iter().map(|b| u64::from(b.weight)).collect()
    }
}

/// The rendezvous hash of one (bucket, key, backend). Stable across versions and runtimes:
/// xxh3_64 (seed 0) of the UTF-8 bytes of `bucket`, `/`, `key`, one 0x00 byte, then the backend
/// name. Changing this moves objects: a read without index would probe the wrong backend first.
pub fn rendezvous_hash(bucket: &str, key: &str, backend: &str) -> u64 {
    let mut input = Vec::with_capacity(bucket.len() + key.len() + backend.len() + 2);
    input.extend_from_slice(bucket.as_bytes());
    input.push(b'/');
    input.extend_from_slice(key.as_bytes());
    input.push(0);
    input.extend_from_slice(backend.as_bytes());
    xxh3_64(&input)
}

/// Maps a hash to (0, 1), never 0 or 1: the top 53 bits, centred in their interval.
fn hash_unit(h: u64) -> f64 {
    ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// Weighted rendezvous score (`-weight / ln(u)`): a backend with twice the weight wins twice as
/// many keys, and adding or removing a backend only moves the keys it wins or held.
fn rendezvous_score(bucket: &str, key: &str, backend: &str, weight: u64) -> f64 {
    -(weight as f64) / hash_unit(rendezvous_hash(bucket, key, backend)).ln()
}

/// Picks one of `candidates` (not empty) for `bucket/key` with `strategy`.
pub fn choose<'a>(
    strategy: Strategy,
    candidates: &[&'a BackendState],
    bucket: &str,
    key: &str,
    entropy: Entropy,
) -> &'a BackendState {
    assert!(
        !candidates.is_empty(),
        "choose needs at least one candidate"
    );
    match strategy {
        Strategy::RoundRobin => candidates[(entropy.counter % candidates.len() as u64) as usize],
        Strategy::LeastSpace => {
            // Strictly more free space replaces: ties go to the first in config order.
            let mut best = candidates[0];
            for c in &candidates[1..] {
                if free_bytes(c) > free_bytes(best) {
                    best = c;
                }
            }
            best
        }
        Strategy::Weighted => {
            let weights = effective_weights(candidates);
            let total: u64 = weights.iter().sum();
            // Multiply-shift maps the random number onto [0, total) with no modulo bias worth
            // the name and uses its high bits.
            let mut point = ((u128::from(entropy.random) * u128::from(total)) >> 64) as u64;
            for (c, w) in candidates.iter().zip(&weights) {
                if point < *w {
                    return c;
                }
                point -= w;
            }
            candidates[candidates.len() - 1]
        }
        Strategy::ConsistentHash => {
            let weights = effective_weights(candidates);
            let mut best = (candidates[0], f64::NEG_INFINITY);
            for (c, w) in candidates.iter().zip(weights) {
                let score = rendezvous_score(bucket, key, &c.name, w);
                if score > best.1 {
                    best = (c, score);
                }
            }
            best.0
        }
    }
}

/// All backends in the order a read should probe them for `bucket/key` when the index has no
/// entry: rendezvous order first (where consistent-hash would have put it), healthy before
/// unhealthy. Disabled backends are included (they may still hold objects).
pub fn probe_order<'a>(
    backends: &'a [BackendState],
    bucket: &str,
    key: &str,
) -> Vec<&'a BackendState> {
    let all: Vec<&BackendState> = backends.iter().collect();
    let weights = effective_weights(&all);
    let mut scored: Vec<(bool, f64, usize, &BackendState)> = all
        .iter()
        .zip(weights)
        .enumerate()
        .map(|(i, (b, w))| (!b.healthy, rendezvous_score(bucket, key, &b.name, w), i, *b))
        .collect();
    // Healthy first; then highest score; then config order (stable for equal scores).
    scored.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)));
    scored.into_iter().map(|s| s.3).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::S3ErrorCode;

    fn backend(name: &str) -> BackendState {
        BackendState {
            name: name.to_owned(),
            weight: 1,
            enabled: true,
            read_only: false,
            healthy: true,
            max_size: None,
            used_bytes: 0,
            class_a_used: 0,
            class_b_used: 0,
            class_a_limit: None,
            class_b_limit: None,
        }
    }

    fn named(names: &[&str]) -> Vec<BackendState> {
        names.iter().map(|n| backend(n)).collect()
    }

    fn refs(v: &[BackendState]) -> Vec<&BackendState> {
        v.iter().collect()
    }

    const E0: Entropy = Entropy {
        counter: 0,
        random: 0,
    };

    /// splitmix64: a fixed pseudo-random sequence for the statistical tests.
    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn names_of(v: &[&BackendState]) -> Vec<String> {
        v.iter().map(|b| b.name.clone()).collect()
    }

    #[test]
    fn filters_exclude_each_reason() {
        let mut v = named(&["ok", "off", "sick", "ro", "budget", "small", "full"]);
        v[1].enabled = false;
        v[2].healthy = false;
        v[3].read_only = true;
        v[4].class_a_limit = Some(100);
        v[4].class_a_used = 100;
        v[5].max_size = Some(1000);
        v[5].used_bytes = 900;
        v[6].max_size = Some(1000);
        v[6].used_bytes = 1000;
        assert_eq!(
            names_of(&write_candidates(&v, Some(100)).unwrap()),
            ["ok", "small"],
            "exactly 100 free fits 100"
        );
        assert_eq!(names_of(&write_candidates(&v, Some(101)).unwrap()), ["ok"]);
        // Unknown size: only the full one is excluded for space.
        assert_eq!(
            names_of(&write_candidates(&v, None).unwrap()),
            ["ok", "small"]
        );
        // A class B budget does not stop writes; one class A op below the limit still goes.
        v[0].class_b_limit = Some(1);
        v[0].class_b_used = 5;
        v[4].class_a_used = 99;
        assert_eq!(
            names_of(&write_candidates(&v, Some(1)).unwrap()),
            ["ok", "budget", "small"]
        );
    }

    #[test]
    fn no_candidate_is_507_listing_each_reason() {
        let mut v = named(&["off", "sick", "ro", "budget", "small"]);
        v[0].enabled = false;
        v[1].healthy = false;
        v[2].read_only = true;
        v[3].class_a_limit = Some(10);
        v[3].class_a_used = 12;
        v[4].max_size = Some(1000);
        v[4].used_bytes = 900;
        let e = write_candidates(&v, Some(500)).unwrap_err();
        assert_eq!(e.code, S3ErrorCode::InsufficientStorage);
        assert_eq!(e.status(), 507);
        assert_eq!(
            e.message,
            "No backend can store this object: off: disabled; sick: unhealthy; ro: read-only; \
             budget: monthly class A operation budget spent (12 of 10); \
             small: not enough space (100 bytes free, 500 needed)"
        );
        v[4].used_bytes = 1000;
        assert!(write_candidates(&v, None)
            .unwrap_err()
            .message
            .ends_with("small: full (1000 of 1000 bytes used)"));
        assert!(write_candidates(&[], None)
            .unwrap_err()
            .message
            .contains("no backend is configured"));
    }

    #[test]
    fn round_robin_cycles_in_config_order() {
        let v = named(&["a", "b", "c"]);
        let picks: Vec<&str> = (0..7)
            .map(|counter| {
                choose(
                    Strategy::RoundRobin,
                    &refs(&v),
                    "bk",
                    "k",
                    Entropy { counter, random: 0 },
                )
                .name
                .as_str()
            })
            .collect();
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c", "a"]);
    }

    #[test]
    fn least_space_takes_most_free_ties_first() {
        let mut v = named(&["a", "b", "c"]);
        for (b, (max, used)) in v.iter_mut().zip([(1000, 100), (5000, 4000), (2000, 500)]) {
            b.max_size = Some(max);
            b.used_bytes = used;
        }
        assert_eq!(
            choose(Strategy::LeastSpace, &refs(&v), "bk", "k", E0).name,
            "c"
        ); // 900, 1000, 1500
        v[0].used_bytes = 500; // a: 500, b: 1000, c: 1500 -> c
        v[1].used_bytes = 3500; // b: 1500 ties c -> b (earlier)
        assert_eq!(
            choose(Strategy::LeastSpace, &refs(&v), "bk", "k", E0).name,
            "b"
        );
        v[2].max_size = None; // unlimited beats any number
        assert_eq!(
            choose(Strategy::LeastSpace, &refs(&v), "bk", "k", E0).name,
            "c"
        );
    }

    #[test]
    fn weighted_fixed_draws() {
        let mut v = named(&["one", "two", "five"]);
        for (b, w) in v.iter_mut().zip([1, 2, 5]) {
            b.weight = w;
        }
        let pick = |random: u64| {
            choose(
                Strategy::Weighted,
                &refs(&v),
                "bk",
                "k",
                Entropy { counter: 0, random },
            )
            .name
            .clone()
        };
        // The random number maps to [0, 8): 0 -> one, [1, 3) -> two, [3, 8) -> five.
        assert_eq!(pick(0), "one");
        assert_eq!(pick((1 << 61) - 1), "one");
        assert_eq!(pick(1 << 61), "two");
        assert_eq!(pick(3 << 61), "five");
        assert_eq!(pick(u64::MAX), "five");
        // A weight of 0 is never chosen.
        let mut z = named(&["zero", "w"]);
        z[0].weight = 0;
        for r in [0, 1 << 63, u64::MAX] {
            assert_eq!(
                choose(
                    Strategy::Weighted,
                    &refs(&z),
                    "",
                    "",
                    Entropy {
                        counter: 0,
                        random: r
                    }
                )
                .name,
                "w"
            );
        }
    }

    #[test]
    fn weighted_spread_follows_weights() {
        let mut v = named(&["one", "two", "five"]);
        for (b, w) in v.iter_mut().zip([1, 2, 5]) {
            b.weight = w;
        }
        let c = refs(&v);
        let mut counts = [0u32; 3];
        let mut state = 42;
        let draws = 100_000;
        for _ in 0..draws {
            let b = choose(
                Strategy::Weighted,
                &c,
                "bk",
                "k",
                Entropy {
                    counter: 0,
                    random: splitmix(&mut state),
                },
            );
            counts[v.iter().position(|x| x.name == b.name).unwrap()] += 1;
        }
        for (count, want) in counts.iter().zip([1.0 / 8.0, 2.0 / 8.0, 5.0 / 8.0]) {
            let got = f64::from(*count) / f64::from(draws);
            assert!((got - want).abs() < 0.01, "{counts:?}");
        }
    }

    #[test]
    fn rendezvous_hash_is_stable() {
        // Test vector of XXH3-64 itself (seed 0, empty input).
        assert_eq!(xxh3_64(b""), 0x2D06_8005_38D3_94C2);
        // Golden values: these must never change (objects would seem to move).
        assert_eq!(
            rendezvous_hash("photos", "cat.jpg", "r2"),
            2_699_340_377_431_435_343
        );
        assert_eq!(
            rendezvous_hash("photos", "cat.jpg", "r2"),
            xxh3_64(b"photos/cat.jpg\0r2")
        );
        assert_ne!(
            rendezvous_hash("photos", "cat.jpg", "r2"),
            rendezvous_hash("photos", "cat.jpg", "b2")
        );
    }

    #[test]
    fn consistent_hash_exact_choices() {
        let v = named(&["r2", "b2", "minio", "aws"]);
        let pick = |key: &str| {
            choose(Strategy::ConsistentHash, &refs(&v), "photos", key, E0)
                .name
                .clone()
        };
        let golden = GOLDEN
            .iter()
            .map(|(k, _)| (k.to_string(), pick(k)))
            .collect::<Vec<_>>();
        let want = GOLDEN
            .iter()
            .map(|(k, b)| (k.to_string(), b.to_string()))
            .collect::<Vec<_>>();
        assert_eq!(golden, want);
        // Deterministic regardless of entropy and of candidate order.
        let mut rev = refs(&v);
        rev.reverse();
        for (key, b) in GOLDEN {
            assert_eq!(
                choose(
                    Strategy::ConsistentHash,
                    &rev,
                    "photos",
                    key,
                    Entropy {
                        counter: 9,
                        random: 7
                    }
                )
                .name,
                *b
            );
        }
    }

    const GOLDEN: [(&str, &str); 6] = [
        ("cat.jpg", "minio"),
        ("dog.jpg", "b2"),
        ("a/b/c.txt", "b2"),
        ("", "r2"),
        ("2024/01/report.pdf", "minio"),
        ("\u{e9}t\u{e9}.png", "aws"),
    ];

    fn owner(v: &[BackendState], key: &str) -> String {
        choose(Strategy::ConsistentHash, &refs(v), "bk", key, E0)
            .name
            .clone()
    }

    #[test]
    fn consistent_hash_adding_a_backend_moves_only_its_share() {
        let four = named(&["a", "b", "c", "d"]);
        let five = named(&["a", "b", "c", "d", "e"]);
        let keys: Vec<String> = (0..20_000).map(|i| format!("obj/{i}")).collect();
        let mut moved = 0;
        for k in &keys {
            let (before, after) = (owner(&four, k), owner(&five, k));
            if before != after {
                assert_eq!(
                    after, "e",
                    "{k} moved from {before} to {after}, not to the new backend"
                );
                moved += 1;
            }
        }
        let share = f64::from(moved) / keys.len() as f64;
        assert!((share - 0.2).abs() < 0.015, "moved {share}");
    }

    #[test]
    fn consistent_hash_removing_a_backend_moves_only_its_keys() {
        let four = named(&["a", "b", "c", "d"]);
        let three = named(&["a", "b", "d"]);
        let mut held_by_c = 0;
        for i in 0..20_000 {
            let k = format!("obj/{i}");
            let (before, after) = (owner(&four, &k), owner(&three, &k));
            if before == "c" {
                held_by_c += 1;
                assert_ne!(after, "c");
            } else {
                assert_eq!(before, after, "{k} moved though its backend stayed");
            }
        }
        assert!((4000..6000).contains(&held_by_c), "{held_by_c}");
    }

    #[test]
    fn consistent_hash_respects_weights() {
        let mut v = named(&["light", "heavy", "zero"]);
        v[1].weight = 3;
        v[2].weight = 0;
        let mut heavy = 0;
        for i in 0..20_000 {
            match owner(&v, &format!("k{i}")).as_str() {
                "heavy" => heavy += 1,
                "light" => {}
                other => panic!("weight 0 backend {other} chosen"),
            }
        }
        let share = f64::from(heavy) / 20_000.0;
        assert!((share - 0.75).abs() < 0.015, "{share}");
        // All weights 0: still a spread, not always the first.
        let mut z = named(&["x", "y"]);
        z[0].weight = 0;
        z[1].weight = 0;
        let xs = (0..1000)
            .filter(|i| owner(&z, &format!("k{i}")) == "x")
            .count();
        assert!((400..600).contains(&xs), "{xs}");
    }

    #[test]
    fn probe_order_starts_where_consistent_hash_writes() {
        let mut v = named(&["a", "b", "c", "d"]);
        v[3].enabled = false;
        for i in 0..200 {
            let k = format!("key{i}");
            let order = probe_order(&v, "bk", &k);
            assert_eq!(order.len(), 4, "disabled backends are probed too");
            let healthy_enabled: Vec<BackendState> =
                v.iter().filter(|b| b.enabled).cloned().collect();
            let written = owner(&healthy_enabled, &k);
            // The first enabled backend in probe order is where consistent-hash put it.
            assert_eq!(order.iter().find(|b| b.enabled).unwrap().name, written);
        }
        v[0].healthy = false;
        v[2].healthy = false;
        for i in 0..50 {
            let order = probe_order(&v, "bk", &format!("key{i}"));
            let health: Vec<bool> = order.iter().map(|b| b.healthy).collect();
            assert_eq!(
                health,
                [true, true, false, false],
                "healthy before unhealthy"
            );
        }
    }
}
