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
        Self {
            healthy: true,
            consecutive_ok: 0,
            consecutive_failures: 0,
            last_latency_ms: 0,
            last_error: None,
            last_checked: 0,
        }
    }
}

impl BackendHealth {
    /// The state after `result`: unhealthy after `fall` failures in a row, healthy again after
    /// `rise` successes in a row.
    pub fn observe(&self, result: &ProbeResult, rise: u32, fall: u32) -> BackendHealth {
        // A result older than the one already recorded (a slow probe, or evidence from another
        // isolate arriving late) must not undo a newer one.
        if result.at < self.last_checked {
            return self.clone();
        }
        let (rise, fall) = (rise.max(1), fall.max(1));
        let mut next = self.clone();
        next.last_latency_ms = result.latency_ms;
        next.last_checked = result.at;
        if result.ok {
            next.consecutive_ok = self.consecutive_ok.saturating_add(1);
            next.consecutive_failures = 0;
            next.last_error = None;
            next.healthy = self.healthy || next.consecutive_ok >= rise;
        } else {
            next.consecutive_failures = self.consecutive_failures.saturating_add(1);
            next.consecutive_ok = 0;
            next.last_error = Some(
                result
                    .error
                    .clone()
                    .unwrap_or_else(|| "probe failed".to_owned()),
            );
            next.healthy = self.healthy && next.consecutive_failures < fall;
        }
        next
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
        self.backends
            .get(backend)
            .map(|h| h.healthy)
            .unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(ok: bool, at: u64) -> ProbeResult {
        ProbeResult {
            ok,
            latency_ms: at * 10,
            error: (!ok).then(|| format!("timeout at {at}")),
            at,
        }
    }

    /// Feeds `pattern` ('+' ok, '-' failure) and returns the health after each step.
    fn run(start: BackendHealth, pattern: &str, rise: u32, fall: u32) -> Vec<bool> {
        let mut h = start;
        let mut at = 100;
        pattern
            .chars()
            .map(|c| {
                at += 1;
                h = h.observe(&probe(c == '+', at), rise, fall);
                h.healthy
            })
            .collect()
    }

    #[test]
    fn healthy_backend_falls_after_fall_failures_in_a_row() {
        let h = BackendHealth::default();
        assert_eq!(run(h.clone(), "---", 2, 3), [true, true, false]);
        // A success in between resets the count.
        assert_eq!(
            run(h.clone(), "--+--", 2, 3),
            [true, true, true, true, true]
        );
        assert_eq!(
            run(h.clone(), "--+---", 2, 3),
            [true, true, true, true, true, false]
        );
        assert_eq!(run(h, "-", 2, 1), [false]);
    }

    #[test]
    fn unhealthy_backend_rises_after_rise_successes_in_a_row() {
        let down = BackendHealth {
            healthy: false,
            ..BackendHealth::default()
        };
        assert_eq!(run(down.clone(), "++", 2, 3), [false, true]);
        assert_eq!(run(down.clone(), "+-++", 2, 3), [false, false, false, true]);
        assert_eq!(run(down.clone(), "+", 1, 3), [true]);
        // Thresholds of 0 act as 1.
        assert_eq!(run(down, "+", 0, 0), [true]);
        // Full cycle: up, down after 3, up again after 2.
        assert_eq!(
            run(BackendHealth::default(), "---++", 2, 3),
            [true, true, false, false, true]
        );
    }

    #[test]
    fn records_latency_error_and_time() {
        let h = BackendHealth::default().observe(&probe(false, 7), 2, 3);
        assert_eq!(
            h,
            BackendHealth {
                healthy: true,
                consecutive_ok: 0,
                consecutive_failures: 1,
                last_latency_ms: 70,
                last_error: Some("timeout at 7".into()),
                last_checked: 7,
            }
        );
        let h = h.observe(
            &ProbeResult {
                ok: false,
                latency_ms: 5,
                error: None,
                at: 8,
            },
            2,
            3,
        );
        assert_eq!(h.last_error.as_deref(), Some("probe failed"));
        let h = h.observe(&probe(true, 9), 2, 3);
        assert_eq!(
            (
                h.last_error.clone(),
                h.last_latency_ms,
                h.last_checked,
                h.consecutive_ok
            ),
            (None, 90, 9, 1)
        );
    }

    #[test]
    fn stale_results_are_ignored() {
        let h = BackendHealth::default().observe(&probe(true, 50), 2, 1);
        assert_eq!(h.observe(&probe(false, 49), 2, 1), h);
        assert!(
            !h.observe(&probe(false, 50), 2, 1).healthy,
            "same second still counts"
        );
    }

    #[test]
    fn snapshot_defaults_to_healthy_and_round_trips_as_json() {
        let mut snap = HealthSnapshot {
            taken_at: 5,
            ..Default::default()
        };
        snap.backends.insert(
            "down".into(),
            BackendHealth {
                healthy: false,
                ..Default::default()
            },
        );
        assert!(snap.is_healthy("never-probed"));
        assert!(!snap.is_healthy("down"));
        let json = serde_json::to_string(&snap).unwrap();
        assert_eq!(serde_json::from_str::<HealthSnapshot>(&json).unwrap(), snap);
    }
}
