//! Placement: which backend a new object goes to.
//!
//! Candidates exclude backends that are disabled, unhealthy, read-only, out of room for the
//! declared size, or past their monthly class A/B budget; a strategy picks among the rest.
//! `consistent-hash` is weighted rendezvous hashing on xxh3 of `bucket/key`: deterministic,
//! so a read finds an object with no index, and adding a backend moves only its share.

use crate::config::Strategy;
use crate::error::S3Error;

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

/// The backends that may take a new object of `size` bytes (when declared), in config order.
/// None left: `InsufficientStorage` (507) naming why each backend was excluded.
pub fn write_candidates(backends: &[BackendState], size: Option<u64>) -> Result<Vec<&BackendState>, S3Error> {
    let _ = (backends, size);
    todo!("placement helper")
}

/// Picks one of `candidates` (not empty) for `bucket/key` with `strategy`.
pub fn choose<'a>(
    strategy: Strategy,
    candidates: &[&'a BackendState],
    bucket: &str,
    key: &str,
    entropy: Entropy,
) -> &'a BackendState {
    let _ = (strategy, candidates, bucket, key, entropy);
    todo!("placement helper")
}

/// All backends in the order a read should probe them for `bucket/key` when the index has no
/// entry: rendezvous order first (where consistent-hash would have put it), healthy before
/// unhealthy. Disabled backends are included (they may still hold objects).
pub fn probe_order<'a>(backends: &'a [BackendState], bucket: &str, key: &str) -> Vec<&'a BackendState> {
    let _ = (backends, bucket, key);
    todo!("placement helper")
}
