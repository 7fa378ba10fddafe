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
    /// The latest probes, oldest first, at most [`HISTORY`] (the admin console's history).
    #[serde(default)]
    pub history: Vec<ProbeRecord>,
}

/// Probes kept per backend in [`BackendHealth::history`].
pub const HISTORY: usize = 20;

/// One probe as the health history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRecord {
    /// Unix seconds.
    pub at: u64,
    pub ok: bool,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
            history: Vec::new(),
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
        if next.history.len() >= HISTORY {
            next.history.drain(..=next.history.len() - HISTORY);
        }
        next.history.push(ProbeRecord {
            at: result.at,
            ok: result.ok,
            latency_ms: result.latency_ms,
            error: result.error.clone(),
        });
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

/// Passive health of one backend, from what the request path sees: a circuit breaker.
///
/// `failures` transport failures or timeouts in a row open it: the backend is down for this
/// process at once, without waiting for the scheduled probes' `fall`. While open, requests that
/// need the backend answer at once instead of waiting on it, except one trial request every
/// `retry`; any answer from the backend (even an error status: it is reachable) closes it, as
/// does a successful health probe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Circuit {
    consecutive_failures: u32,
    open: bool,
    /// When the last trial request was let through (or the circuit opened).
    last_trial: Option<std::time::SystemTime>,
    /// `last_checked` of the newest failed scheduled probe already applied (see
    /// [`Circuit::observe_probe`]).
    probe_applied: u64,
}

impl Circuit {
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Whether a request may be sent at `now`. While open, one request per `retry` is let
    /// through as a trial (and the trial clock restarts).
    pub fn admit(&mut self, now: std::time::SystemTime, retry: std::time::Duration) -> bool {
        if !self.open {
            return true;
        }
        let due = self
            .last_trial
            .is_none_or(|t| now.duration_since(t).unwrap_or_default() >= retry);
        if due {
            self.last_trial = Some(now);
        }
        due
    }

    /// The backend answered. Returns whether this closed an open circuit.
    pub fn succeeded(&mut self) -> bool {
        let was_open = self.open;
        self.open = false;
        self.consecutive_failures = 0;
        self.last_trial = None;
        was_open
    }

    /// Applies the scheduled probes' view: a probe that failed since the last one applied
    /// opens the circuit (the backend is not waited on until it answers again). Returns
    /// whether this opened it.
    pub fn observe_probe(&mut self, health: &BackendHealth, now: std::time::SystemTime) -> bool {
        if health.consecutive_failures == 0 || health.last_checked <= self.probe_applied {
            return false;
        }
        self.probe_applied = health.last_checked;
        if self.open {
            return false;
        }
        self.open = true;
        self.last_trial = Some(now);
        true
    }

    /// A transport failure or timeout at `now`. Returns whether this opened the circuit.
    pub fn failed(&mut self, now: std::time::SystemTime, threshold: u32) -> bool {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if !self.open && self.consecutive_failures >= threshold.max(1) {
            self.open = true;
            self.last_trial = Some(now);
            return true;
        }
        false
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
    fn history_keeps_the_latest_probes_oldest_first() {
        let mut h = BackendHealth::default();
        for at in 1..=(HISTORY as u64 + 5) {
            h = h.observe(&probe(at % 2 == 0, at), 1, 1);
        }
        assert_eq!(h.history.len(), HISTORY);
        assert_eq!(h.history.first().unwrap().at, 6);
        assert_eq!(h.history.last().unwrap().at, HISTORY as u64 + 5);
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
                history: vec![ProbeRecord {
                    at: 7,
                    ok: false,
                    latency_ms: 70,
                    error: Some("timeout at 7".into()),
                }],
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

    #[test]
    fn circuit_opens_after_failures_in_a_row_and_admits_one_trial_per_retry() {
        use std::time::{Duration, UNIX_EPOCH};
        let t = |s: u64| UNIX_EPOCH + Duration::from_secs(1_000 + s);
        let retry = Duration::from_secs(10);
        let mut c = Circuit::default();
        assert!(c.admit(t(0), retry));
        assert!(!c.failed(t(0), 3));
        assert!(!c.failed(t(0), 3));
        c.succeeded();
        assert!(!c.failed(t(1), 3), "a success resets the count");
        assert!(!c.failed(t(1), 3));
        assert!(c.failed(t(1), 3), "third failure in a row opens");
        assert!(c.is_open());
        assert!(!c.admit(t(2), retry), "open: refused at once");
        assert!(!c.admit(t(10), retry));
        assert!(c.admit(t(11), retry), "a trial after `retry`");
        assert!(!c.admit(t(11), retry), "one trial at a time");
        assert!(!c.failed(t(12), 3), "a failed trial keeps it open");
        assert!(!c.admit(t(20), retry));
        assert!(c.admit(t(21), retry));
        assert!(c.succeeded(), "an answer closes it");
        assert!(c.admit(t(21), retry) && !c.is_open());
    }

    #[test]
    fn a_failed_scheduled_probe_opens_the_circuit_once() {
        use std::time::{Duration, UNIX_EPOCH};
        let now = UNIX_EPOCH + Duration::from_secs(2_000);
        let failed_at = |at: u64| BackendHealth {
            healthy: false,
            consecutive_failures: 2,
            last_checked: at,
            ..Default::default()
        };
        let mut c = Circuit::default();
        assert!(
            !c.observe_probe(&BackendHealth::default(), now),
            "healthy: nothing"
        );
        assert!(c.observe_probe(&failed_at(100), now));
        assert!(c.is_open());
        c.succeeded(); // a trial request got an answer
        assert!(
            !c.observe_probe(&failed_at(100), now),
            "the same probe is applied once"
        );
        let recovering = BackendHealth {
            healthy: false,
            consecutive_ok: 1,
            last_checked: 130,
            ..Default::default()
        };
        assert!(
            !c.observe_probe(&recovering, now),
            "a good probe does not open it"
        );
        assert!(
            c.observe_probe(&failed_at(160), now),
            "a newer failure does"
        );
    }
}
