//! Prometheus metrics, with the Go s3-balance's metric names so its dashboard and alerts keep
//! working. A small exact text encoder over counters kept in memory by the adapter.
//!
//! <https://prometheus.io/docs/instrumenting/exposition_formats/>

use std::collections::BTreeMap;
use std::fmt::Write as _;
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
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The `status` label as the Go s3-balance writes it (its alert rules select
/// `status="error"`): `success` below 400, `error` from 400 on.
fn status_label(status: u16) -> &'static str {
    if status < 400 {
        "success"
    } else {
        "error"
    }
}

/// Escapes a label value: backslash, double quote and newline, as the text format requires.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A sample value: integers without a fraction, floats in Rust's shortest round-trip form
/// (both are valid Go `ParseFloat` input, which Prometheus uses).
fn float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.is_nan() {
        "NaN".to_owned()
    } else {
        format!("{v}")
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

impl Histogram {
    fn observe(&mut self, value: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len() + 1];
        }
        let slot = BUCKETS
            .iter()
            .position(|le| value <= *le)
            .unwrap_or(BUCKETS.len());
        self.counts[slot] += 1;
        self.sum += value;
        self.count += 1;
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut MetricsInner) -> R) -> R {
        // A panic elsewhere while holding the lock must not take metrics down with it.
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut inner)
    }

    /// One client request: `s3_balance_s3_operations_total{operation,status}` and
    /// `s3_balance_s3_operation_duration_seconds{operation}`. `status` is the HTTP status; the
    /// label is `success` or `error` as in the Go s3-balance.
    pub fn record_request(&self, operation: &str, status: u16, seconds: f64) {
        self.with(|m| {
            *m.operations
                .entry((operation.to_owned(), status_label(status).to_owned()))
                .or_default() += 1;
            m.durations
                .entry(operation.to_owned())
                .or_default()
                .observe(seconds.max(0.0));
        });
    }

    /// One placement: `s3_balance_balancer_decisions_total{bucket,strategy}`.
    pub fn record_decision(&self, backend: &str, strategy: &str) {
        self.with(|m| {
            *m.decisions
                .entry((backend.to_owned(), strategy.to_owned()))
                .or_default() += 1
        });
    }

    /// One backend request: `s3_balance_backend_operations_total{bucket,operation,result}`,
    /// `result` being `success` or `error`.
    pub fn record_backend(&self, backend: &str, operation: &str, ok: bool) {
        let result = if ok { "success" } else { "error" };
        self.with(|m| {
            *m.backend_operations
                .entry((backend.to_owned(), operation.to_owned(), result.to_owned()))
                .or_default() += 1
        });
    }

    /// The whole exposition: the counters above plus, per backend,
    /// `s3_balance_bucket_healthy`, `s3_balance_bucket_usage_bytes`,
    /// `s3_balance_bucket_capacity_bytes` from `health`, `usage` and `capacities`
    /// (backend -> max size).
    ///
    /// Gauges cover the backends of `capacities` (the configured ones), in that order. An
    /// unlimited backend has no capacity series: the Go s3-balance exported 0 there, which
    /// made its `usage / capacity` alerts fire on every unlimited bucket.
    pub fn render(
        &self,
        health: &HealthSnapshot,
        usage: &[BackendUsage],
        capacities: &[(String, Option<u64>)],
    ) -> String {
        let mut out = String::new();
        self.with(|m| {
            header(
                &mut out,
                "s3_balance_s3_operations_total",
                "counter",
                "Total number of S3 operations",
            );
            for ((operation, status), n) in &m.operations {
                let l = labels(&[("operation", operation), ("status", status)]);
                let _ = writeln!(out, "s3_balance_s3_operations_total{l} {n}");
            }
            let name = "s3_balance_s3_operation_duration_seconds";
            header(
                &mut out,
                name,
                "histogram",
                "Duration of S3 operations in seconds",
            );
            for (operation, h) in &m.durations {
                let mut cumulative = 0;
                for (i, le) in BUCKETS.iter().enumerate() {
                    cumulative += h.counts.get(i).copied().unwrap_or(0);
                    let l = labels(&[("operation", operation), ("le", &float(*le))]);
                    let _ = writeln!(out, "{name}_bucket{l} {cumulative}");
                }
                let l = labels(&[("operation", operation), ("le", "+Inf")]);
                let _ = writeln!(out, "{name}_bucket{l} {}", h.count);
                let l = labels(&[("operation", operation)]);
                let _ = writeln!(out, "{name}_sum{l} {}", float(h.sum));
                let _ = writeln!(out, "{name}_count{l} {}", h.count);
            }
            header(
                &mut out,
                "s3_balance_balancer_decisions_total",
                "counter",
                "Total number of load balancing decisions",
            );
            for ((backend, strategy), n) in &m.decisions {
                let l = labels(&[("bucket", backend), ("strategy", strategy)]);
                let _ = writeln!(out, "s3_balance_balancer_decisions_total{l} {n}");
            }
            header(
                &mut out,
                "s3_balance_backend_operations_total",
                "counter",
                "Total number of requests sent to backends",
            );
            for ((backend, operation, result), n) in &m.backend_operations {
                let l = labels(&[
                    ("bucket", backend),
                    ("operation", operation),
                    ("result", result),
                ]);
                let _ = writeln!(out, "s3_balance_backend_operations_total{l} {n}");
            }
        });

        header(
            &mut out,
            "s3_balance_bucket_healthy",
            "gauge",
            "Health status of S3 bucket (1 = healthy, 0 = unhealthy)",
        );
        for (backend, _) in capacities {
            let up = u8::from(health.is_healthy(backend));
            let _ = writeln!(
                out,
                "s3_balance_bucket_healthy{} {up}",
                labels(&[("bucket", backend)])
            );
        }
        header(
            &mut out,
            "s3_balance_bucket_usage_bytes",
            "gauge",
            "Current usage of S3 bucket in bytes",
        );
        for (backend, _) in capacities {
            let used = usage
                .iter()
                .find(|u| u.backend == *backend)
                .map(|u| u.used_bytes.max(0))
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "s3_balance_bucket_usage_bytes{} {used}",
                labels(&[("bucket", backend)])
            );
        }
        header(
            &mut out,
            "s3_balance_bucket_capacity_bytes",
            "gauge",
            "Maximum capacity of S3 bucket in bytes",
        );
        for (backend, capacity) in capacities {
            if let Some(capacity) = capacity {
                let _ = writeln!(
                    out,
                    "s3_balance_bucket_capacity_bytes{} {capacity}",
                    labels(&[("bucket", backend)])
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::BackendHealth;

    type Sample = (
        Metrics,
        HealthSnapshot,
        Vec<BackendUsage>,
        Vec<(String, Option<u64>)>,
    );

    fn sample() -> Sample {
        let m = Metrics::new();
        m.record_request("GET", 200, 0.003);
        m.record_request("GET", 404, 0.2);
        m.record_request("GET", 200, 20.0);
        m.record_decision("r2", "least-space");
        m.record_decision("r2", "least-space");
        m.record_backend("r2", "PutObject", true);
        m.record_backend("b\"2\\x\ny", "GetObject", false);
        let mut health = HealthSnapshot::default();
        health.backends.insert(
            "b2".into(),
            BackendHealth {
                healthy: false,
                ..Default::default()
            },
        );
        let usage = vec![BackendUsage {
            backend: "r2".into(),
            used_bytes: 1024,
            objects: 3,
        }];
        let capacities = vec![
            ("r2".to_owned(), Some(10_737_418_240)),
            ("b2".to_owned(), None),
        ];
        (m, health, usage, capacities)
    }

    #[test]
    fn exact_text() {
        let (m, health, usage, capacities) = sample();
        let want = r#"# HELP s3_balance_s3_operations_total Total number of S3 operations
# TYPE s3_balance_s3_operations_total counter
s3_balance_s3_operations_total{operation="GET",status="error"} 1
s3_balance_s3_operations_total{operation="GET",status="success"} 2
# HELP s3_balance_s3_operation_duration_seconds Duration of S3 operations in seconds
# TYPE s3_balance_s3_operation_duration_seconds histogram
s3_balance_s3_operation_duration_seconds_bucket{operation="GET",le="0.001"} 0
s3_balance_s3_operation_duration_seconds_bucket{operation="GET",le="0.0025"} 0
s3_balance_s3_operation_duration_seconds_bucket{operation="GET",le="0.005"} 1
s3_balance_s3_operation_duration_seconds_bucket{operation="GET",le="0.01"} 1
s3_balance_s3_operation_duration_seconds_bucket{operation="GET",le="0.025"} 1
s3_balance_s3_operation_duration_seconds_bucket{operation="GET",le="0.05"} 1
s3_balance_s3_operation_duration_seconds_bucket{operation="GET",le="0.1"} 1
s3_balance_s3_operation_duration_seconds_bucket{operation="GET",le="0.25"} 2
s3_balance_s3_operation_duration_seconds_bucket{operation="GET",le="0.5"} 2
s3_balance_s3_operation_duration_seconds_bucket{operation="GET",le="1"} 2
s3_balance_s3_operation_duration_seconds_bucket{operation="GET",le="2.5"} 2
s3_balance_s3_operation_duration_seconds_bucket{operation="GET",le="10"} 2
s3_balance_s3_operation_duration_seconds_bucket{operation="GET",le="+Inf"} 3
s3_balance_s3_operation_duration_seconds_sum{operation="GET"} 20.203
s3_balance_s3_operation_duration_seconds_count{operation="GET"} 3
# HELP s3_balance_balancer_decisions_total Total number of load balancing decisions
# TYPE s3_balance_balancer_decisions_total counter
s3_balance_balancer_decisions_total{bucket="r2",strategy="least-space"} 2
# HELP s3_balance_backend_operations_total Total number of requests sent to backends
# TYPE s3_balance_backend_operations_total counter
s3_balance_backend_operations_total{bucket="b\"2\\x\ny",operation="GetObject",result="error"} 1
s3_balance_backend_operations_total{bucket="r2",operation="PutObject",result="success"} 1
# HELP s3_balance_bucket_healthy Health status of S3 bucket (1 = healthy, 0 = unhealthy)
# TYPE s3_balance_bucket_healthy gauge
s3_balance_bucket_healthy{bucket="r2"} 1
s3_balance_bucket_healthy{bucket="b2"} 0
# HELP s3_balance_bucket_usage_bytes Current usage of S3 bucket in bytes
# TYPE s3_balance_bucket_usage_bytes gauge
s3_balance_bucket_usage_bytes{bucket="r2"} 1024
s3_balance_bucket_usage_bytes{bucket="b2"} 0
# HELP s3_balance_bucket_capacity_bytes Maximum capacity of S3 bucket in bytes
# TYPE s3_balance_bucket_capacity_bytes gauge
s3_balance_bucket_capacity_bytes{bucket="r2"} 10737418240
"#;
        assert_eq!(m.render(&health, &usage, &capacities), want);
    }

    #[test]
    fn empty_metrics_still_name_every_family() {
        let text = Metrics::new().render(&HealthSnapshot::default(), &[], &[]);
        for name in [
            "s3_balance_s3_operations_total",
            "s3_balance_s3_operation_duration_seconds",
            "s3_balance_balancer_decisions_total",
            "s3_balance_backend_operations_total",
            "s3_balance_bucket_healthy",
            "s3_balance_bucket_usage_bytes",
            "s3_balance_bucket_capacity_bytes",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
        assert!(
            !text.lines().any(|l| !l.starts_with('#')),
            "no samples without data"
        );
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(labels(&[("a", "x\\y\"z\nw")]), r#"{a="x\\y\"z\nw"}"#);
    }

    /// Runs `promtool check metrics` on the output when promtool is installed
    /// (`apt-get install prometheus` provides it).
    #[test]
    #[cfg(not(target_arch = "wasm32"))]
    fn promtool_accepts_the_output() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let (m, health, usage, capacities) = sample();
        let text = m.render(&health, &usage, &capacities);
        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            println!("note: promtool not found; skipping the promtool check (apt-get install prometheus)");
            return;
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // promtool exits 3 for lint warnings only, 1 for errors; we want neither.
        assert!(out.status.success(), "promtool: {report}\n{text}");
    }
}
