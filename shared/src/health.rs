//! Health state of backends: probe results to healthy/unhealthy with rise/fall thresholds, and
//! the snapshot the request path reads (never probing inline).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One probe's outcome (HeadBucket or ListObjectsV2 max-keys=1 on the prefix), or passive
/// evidence from the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub ok: bool,
    pub latency_ms: u64,
    /// Why it failed, for logs and `/health` (no secrets).
    pub error: Option<String>,
    /// Unix seconds.
    pub at: u64,
}

/// The health of one backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendHealth {
    pub healthy: bool,
    pub consecutive_ok: u32,
    pub consecutive_failures: u32,
    pub last_latency_ms: u64,
    pub last_error: Option<String>,
    /// Unix seconds of the last probe; 0 never probed.
    pub last_checked: u64,
}

impl Default for BackendHealth {
    /// A backend never probed counts as healthy, so a fresh start can place objects.
    fn default() -> Self {
        Self { healthy: true, consecutive_ok: 0, consecutive_failures: 0, last_latency_ms: 0, last_error: None, last_checked: 0 }
    }
}

impl BackendHealth {
    /// The state after `result`: unhealthy after `fall` failures in a row, healthy again after
    /// `rise` successes in a row.
    pub fn observe(&self, result: &ProbeResult, rise: u32, fall: u32) -> BackendHealth {
        let _ = (result, rise, fall);
        todo!("health helper")
    }
}

/// Health of all backends plus their usage, as stored (JSON document `health`) and served by
/// `/health` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSnapshot {
    pub backends: BTreeMap<String, BackendHealth>,
    /// Unix seconds of the snapshot.
    pub taken_at: u64,
}

impl HealthSnapshot {
    pub fn is_healthy(&self, backend: &str) -> bool {
        self.backends.get(backend).map(|h| h.healthy).unwrap_or(true)
    }
}
