//! The admin API's data: the operator's overrides of the config (strategy, a backend's weight,
//! enabled, read-only) and the JSON views it answers. Pure; the engine serves it
//! (`engine/admin.rs`).
//!
//! Overrides are kept in the metadata store (document [`OVERRIDES_DOCUMENT`]), not written into
//! the config file: every runtime keeps its store where all its instances see it (SQLite or a
//! SQL database, Workers KV, DynamoDB), each instance applies the document at its next state
//! refresh, and a config reload keeps them. Clearing them returns to the config as written.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Strategy};
use crate::error::{S3Error, S3ErrorCode};
use crate::health::{HealthSnapshot, ProbeRecord};
use crate::store::{BackendUsage, OperationCounts};

/// The store document holding the overrides (JSON).
pub const OVERRIDES_DOCUMENT: &str = "admin-overrides";

/// What the operator changed through the admin API, laid over the config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backends: BTreeMap<String, BackendOverride>,
}

/// A backend's settings changed by the operator; `None` keeps the config's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// The body of `PUT {prefix}/api/strategy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategyChange {
    pub strategy: Strategy,
}

impl Overrides {
    /// Reads a stored document; one that does not parse is logged and ignored (the config
    /// as written applies), so a bad write never stops the gateway.
    pub fn from_document(text: Option<&str>) -> Overrides {
        match text {
            None => Overrides::default(),
            Some(t) => serde_json::from_str(t).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "admin overrides document unreadable; ignored");
                Overrides::default()
            }),
        }
    }

    pub fn to_document(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `config` with the overrides applied. Overrides of backends the config no longer has
    /// are skipped.
    pub fn apply(&self, config: &Config) -> Config {
        let mut out = config.clone();
        if let Some(strategy) = self.strategy {
            out.balancer.strategy = strategy;
        }
        for backend in &mut out.backends {
            if let Some(o) = self.backends.get(&backend.name) {
                backend.weight = o.weight.unwrap_or(backend.weight);
                backend.enabled = o.enabled.unwrap_or(backend.enabled);
                backend.read_only = o.read_only.unwrap_or(backend.read_only);
            }
        }
        out
    }

    /// The overrides after `change`, refused (nothing stored) when the result could not
    /// place objects as asked: an unknown backend (404 NoSuchBucket), or the weighted strategy
    /// with every enabled backend at weight 0 (400 InvalidArgument).
    pub fn changed(
        &self,
        config: &Config,
        change: impl FnOnce(&mut Overrides),
    ) -> Result<Overrides, S3Error> {
        let mut next = self.clone();
        change(&mut next);
        // Only a backend named by this change: an override of one the config has since lost
        // stays (ignored by `apply`) and must not block every later change.
        let unknown = next
            .backends
            .keys()
            .find(|n| config.backend(n).is_none() && !self.backends.contains_key(*n));
        if let Some(unknown) = unknown {
            return Err(S3Error::new(
                S3ErrorCode::NoSuchBucket,
                format!("no backend named {unknown:?}"),
            ));
        }
        let applied = next.apply(config);
        if crate::config::weighted_without_weight(applied.balancer.strategy, &applied.backends) {
            return Err(S3Error::new(
                S3ErrorCode::InvalidArgument,
                "the weighted strategy needs at least one enabled backend with weight > 0",
            ));
        }
        next.backends
            .retain(|_, o| *o != BackendOverride::default());
        Ok(next)
    }
}

/// One backend as `GET {prefix}/api/buckets` shows it. Field names are the Go s3-balance's
/// (`internal/api/admin_handler.go`) where they mean the same; the rest are new.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendView {
    pub name: String,
    pub endpoint: String,
    pub region: String,
    /// new: the real bucket.
    pub bucket: String,
    /// Capacity in bytes; 0 when unlimited (Go's `max_size_bytes`).
    pub max_size_bytes: u64,
    pub used_size: i64,
    /// new: objects counted.
    pub objects: i64,
    /// -1 when unlimited, as in Go.
    pub available_size: i64,
    pub usage_percent: f64,
    pub weight: u32,
    pub enabled: bool,
    /// new
    pub read_only: bool,
    /// Enabled and healthy: placement may choose it.
    pub available: bool,
    /// new
    pub healthy: bool,
    /// RFC 3339; empty when never probed.
    pub last_checked: String,
    /// new
    pub last_error: Option<String>,
    /// new
    pub last_latency_ms: u64,
    pub operation_count_a: u64,
    pub operation_count_b: u64,
    /// 0 when unlimited, as in Go.
    pub operation_limits: OperationLimits,
    /// new: objects placed on it by this instance since it started.
    pub placements: u64,
    /// new: the latest probes, oldest first.
    pub health_history: Vec<ProbeRecord>,
    /// new: which settings are overridden through the admin API.
    pub overridden: BackendOverride,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationLimits {
    pub type_a: u64,
    pub type_b: u64,
}

/// What the views are built from: the engine's state at one moment.
pub struct Snapshot<'a> {
    pub config: &'a Config,
    pub health: &'a HealthSnapshot,
    pub usage: &'a [BackendUsage],
    pub operations: &'a BTreeMap<String, OperationCounts>,
    pub placements: &'a BTreeMap<String, u64>,
    pub overrides: &'a Overrides,
}

impl Snapshot<'_> {
    pub fn backends(&self) -> Vec<BackendView> {
        self.config.backends.iter().map(|b| self.view(b)).collect()
    }

    pub fn backend(&self, name: &str) -> Option<BackendView> {
        self.config.backend(name).map(|b| self.view(b))
    }

    fn view(&self, b: &crate::config::BackendConfig) -> BackendView {
        let name = b.name.as_str();
        let health = self.health.backends.get(name).cloned().unwrap_or_default();
        let usage = self.usage.iter().find(|u| u.backend == name);
        let used = usage.map_or(0, |u| u.used_bytes);
        let ops = self.operations.get(name).cloned().unwrap_or_default();
        let (available_size, usage_percent) = match b.max_size {
            Some(max) if max > 0 => (
                (max as i64).saturating_sub(used).max(0),
                used.max(0) as f64 * 100.0 / max as f64,
            ),
            _ => (-1, 0.0),
        };
        BackendView {
            name: b.name.clone(),
            endpoint: b.endpoint.clone(),
            region: b.region.clone(),
            bucket: b.bucket.clone(),
            max_size_bytes: b.max_size.unwrap_or(0),
            used_size: used,
            objects: usage.map_or(0, |u| u.objects),
            available_size,
            usage_percent,
            weight: b.weight,
            enabled: b.enabled,
            read_only: b.read_only,
            available: b.enabled && health.healthy,
            healthy: health.healthy,
            last_checked: match health.last_checked {
                0 => String::new(),
                secs => crate::time::iso8601(crate::time::from_unix_secs(secs)),
            },
            last_error: health.last_error.clone(),
            last_latency_ms: health.last_latency_ms,
            operation_count_a: ops.class_a,
            operation_count_b: ops.class_b,
            operation_limits: OperationLimits {
                type_a: b.limit_class_a.unwrap_or(0),
                type_b: b.limit_class_b.unwrap_or(0),
            },
            placements: self.placements.get(name).copied().unwrap_or(0),
            health_history: health.history.clone(),
            overridden: self
                .overrides
                .backends
                .get(name)
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// The overall health, in Go's words: `unhealthy` when no backend is available,
    /// `degraded` when some enabled backend is down (Go counts fewer than half available;
    /// one down backend is already worth an operator's look), else `healthy`. A backend the
    /// operator switched off is not a fault.
    pub fn status(&self) -> &'static str {
        let enabled_down = self
            .config
            .backends
            .iter()
            .any(|b| b.enabled && !self.health.is_healthy(&b.name));
        if self.available_count() == 0 {
            "unhealthy"
        } else if enabled_down {
            "degraded"
        } else {
            "healthy"
        }
    }

    pub fn available_count(&self) -> usize {
        self.config
            .backends
            .iter()
            .filter(|b| b.enabled && self.health.is_healthy(&b.name))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config() -> Config {
        Config::from_yaml(
            "balancer:\n  strategy: round-robin\nbuckets:\n  - name: a\n    endpoint: http://127.0.0.1:9\n    access_key_id: k\n    secret_access_key: s\n    max_size: 1000B\n  - name: b\n    endpoint: http://127.0.0.1:9\n    access_key_id: k\n    secret_access_key: s\n    weight: 3\n  - name: photos\n    virtual: true\n",
        )
        .unwrap()
        .0
    }

    #[test]
    fn overrides_lay_over_the_config_and_survive_a_round_trip_through_the_store() {
        let config = config();
        let o = Overrides::default()
            .changed(&config, |o| {
                o.strategy = Some(Strategy::Weighted);
                o.backends.entry("a".into()).or_default().read_only = Some(true);
            })
            .unwrap();
        let applied = o.apply(&config);
        assert_eq!(applied.balancer.strategy, Strategy::Weighted);
        assert!(applied.backend("a").unwrap().read_only);
        assert!(!applied.backend("b").unwrap().read_only);
        assert_eq!(Overrides::from_document(Some(&o.to_document())), o);
        assert_eq!(
            Overrides::from_document(Some("{not json")),
            Overrides::default()
        );
        assert_eq!(Overrides::default().apply(&config), config);
    }

    #[test]
    fn changes_that_could_not_place_objects_are_refused() {
        let config = config();
        let unknown = Overrides::default().changed(&config, |o| {
            o.backends.entry("nope".into()).or_default().enabled = Some(false);
        });
        assert_eq!(unknown.unwrap_err().code, S3ErrorCode::NoSuchBucket);
        let no_weight = Overrides::default().changed(&config, |o| {
            o.strategy = Some(Strategy::Weighted);
            for name in ["a", "b"] {
                o.backends.entry(name.into()).or_default().weight = Some(0);
            }
        });
        assert_eq!(no_weight.unwrap_err().code, S3ErrorCode::InvalidArgument);
        // An override of a backend the config has since lost blocks no other change.
        let stale = Overrides {
            strategy: None,
            backends: BTreeMap::from([(
                "gone".to_owned(),
                BackendOverride {
                    read_only: Some(true),
                    ..Default::default()
                },
            )]),
        };
        let next = stale
            .changed(&config, |o| o.strategy = Some(Strategy::LeastSpace))
            .unwrap();
        assert_eq!(next.strategy, Some(Strategy::LeastSpace));
        // Setting a value back to nothing drops the entry.
        let cleared = Overrides::default()
            .changed(&config, |o| {
                o.backends.insert("a".into(), BackendOverride::default());
            })
            .unwrap();
        assert!(cleared.backends.is_empty());
    }

    #[test]
    fn views_use_the_go_field_names_and_unlimited_markers() {
        let config = config();
        let usage = [BackendUsage {
            backend: "a".into(),
            used_bytes: 900,
            objects: 3,
        }];
        let snapshot = Snapshot {
            config: &config,
            health: &HealthSnapshot::default(),
            usage: &usage,
            operations: &BTreeMap::new(),
            placements: &BTreeMap::from([("a".to_owned(), 3)]),
            overrides: &Overrides::default(),
        };
        let views = snapshot.backends();
        let json = serde_json::to_value(&views[0]).unwrap();
        assert_eq!(json["max_size_bytes"], 1000);
        assert_eq!(json["used_size"], 900);
        assert_eq!(json["available_size"], 100);
        assert_eq!(json["usage_percent"], 90.0);
        assert_eq!(json["available"], true);
        assert_eq!(json["placements"], 3);
        assert_eq!(json["operation_limits"]["type_a"], 0);
        assert_eq!(views[1].available_size, -1, "unlimited");
        assert_eq!(snapshot.status(), "healthy");
    }
}
