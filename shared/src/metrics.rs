//! Prometheus metrics, with the Go s3-balance's metric names so its dashboard and alerts keep
//! working. A small exact text encoder over counters kept in memory by the adapter.
//!
//! <https://prometheus.io/docs/instrumenting/exposition_formats/>

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::health::HealthSnapshot;
use crate::store::BackendUsage;

/// Request counters and latency histograms of one process (or isolate).
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<MetricsInner>,
}

#[derive(Debug, Default)]
struct MetricsInner {
    /// (operation, status) -> count
    operations: BTreeMap<(String, String), u64>,
    /// operation -> histogram
    durations: BTreeMap<String, Histogram>,
    /// (backend, strategy) -> count
    decisions: BTreeMap<(String, String), u64>,
    /// (backend, operation, result) -> count
    backend_operations: BTreeMap<(String, String, String), u64>,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// counts per bucket of [`BUCKETS`], then +Inf
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// Latency buckets in seconds.
pub const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// One client request: `s3_balance_s3_operations_total{operation,status}` and
    /// `s3_balance_s3_operation_duration_seconds{operation}`.
    pub fn record_request(&self, operation: &str, status: u16, seconds: f64) {
        let _ = (operation, status, seconds);
        todo!("metrics helper")
    }

    /// One placement: `s3_balance_balancer_decisions_total{bucket,strategy}`.
    pub fn record_decision(&self, backend: &str, strategy: &str) {
        let _ = (backend, strategy);
        todo!("metrics helper")
    }

    /// One backend request: `s3_balance_backend_operations_total{bucket,operation,result}`.
    pub fn record_backend(&self, backend: &str, operation: &str, ok: bool) {
        let _ = (backend, operation, ok);
        todo!("metrics helper")
    }

    /// The whole exposition: the counters above plus, per backend,
    /// `s3_balance_bucket_healthy`, `s3_balance_bucket_usage_bytes`,
    /// `s3_balance_bucket_capacity_bytes` from `health`, `usage` and `capacities`
    /// (backend -> max size).
    pub fn render(&self, health: &HealthSnapshot, usage: &[BackendUsage], capacities: &[(String, Option<u64>)]) -> String {
        let _ = (health, usage, capacities);
        todo!("metrics helper")
    }
}
