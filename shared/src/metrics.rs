//! Prometheus metrics, with the Go s3-balance's metric names so its dashboard and alerts keep
//! working. A small exact text encoder over counters kept in memory by the adapter.
//!
//! <https://prometheus.io/docs/instrumenting/exposition_formats/>

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::config::BackendConfig;
use crate::health::HealthSnapshot;
use crate::store::{BackendUsage, OperationCounts};

/// Request counters and latency histograms of one process (or isolate).
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<MetricsInner>,
}

/// Keyed by label values, nested rather than by tuples so that a request finds its counters
/// by `&str` and allocates a key only the first time a label value is seen. Maps iterate in
/// label order, which is the exposition's order.
#[derive(Debug, Default)]
struct MetricsInner {
    /// operation -> count per status label ([`PER_STATUS`] order)
    operations: BTreeMap<String, [u64; 2]>,
    /// operation -> histogram
    durations: BTreeMap<String, Histogram>,
    /// backend -> strategy -> count
    decisions: BTreeMap<String, BTreeMap<String, u64>>,
    /// backend -> operation -> count per result label ([`PER_STATUS`] order)
    backend_operations: BTreeMap<String, BTreeMap<String, [u64; 2]>>,
    /// operation -> bytes per direction ([`DIRECTIONS`] order)
    transferred: BTreeMap<String, [u64; 2]>,
}

/// The `status` and `result` label values, in label order.
const PER_STATUS: [&str; 2] = ["error", "success"];
/// The `direction` label values, in label order.
const DIRECTIONS: [&str; 2] = ["in", "out"];

/// The value under `key`, inserted (with its key allocated) only the first time.
fn slot<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("inserted above")
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
/// `status="error"`): `success` below 400, `error` from 400 on. Its index in [`PER_STATUS`].
fn status_slot(status: u16) -> usize {
    usize::from(status < 400)
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
            slot(&mut m.operations, operation)[status_slot(status)] += 1;
            slot(&mut m.durations, operation).observe(seconds.max(0.0));
        });
    }

    /// One placement: `s3_balance_balancer_decisions_total{bucket,strategy}`.
    pub fn record_decision(&self, backend: &str, strategy: &str) {
        self.with(|m| *slot(slot(&mut m.decisions, backend), strategy) += 1);
    }

    /// Placements per backend since start, all strategies together (the admin API's).
    pub fn placements_by_backend(&self) -> BTreeMap<String, u64> {
        self.with(|m| {
            let mut out = BTreeMap::new();
            for (backend, by_strategy) in &m.decisions {
                out.insert(backend.clone(), by_strategy.values().sum());
            }
            out
        })
    }

    /// One backend request: `s3_balance_backend_operations_total{bucket,operation,result}`,
    /// `result` being `success` or `error`.
    pub fn record_backend(&self, backend: &str, operation: &str, ok: bool) {
        self.with(|m| {
            slot(slot(&mut m.backend_operations, backend), operation)[usize::from(ok)] += 1
        });
    }

    /// Bytes of one client request: `s3_balance_s3_bytes_total{operation,direction}`,
    /// `direction` being `in` (object bytes the gateway accepted from the client) or `out`
    /// (response body bytes it sent). Not in the Go s3-balance; the dashboard's traffic panel
    /// reads it.
    pub fn record_transfer(&self, operation: &str, received: u64, sent: u64) {
        self.with(|m| {
            if received > 0 || sent > 0 {
                let bytes = slot(&mut m.transferred, operation);
                bytes[0] += received;
                bytes[1] += sent;
            }
        });
    }

    /// The whole exposition: the counters above plus, per configured backend (`backends`, in
    /// that order), `s3_balance_bucket_healthy`, `s3_balance_bucket_usage_bytes`,
    /// `s3_balance_bucket_capacity_bytes` and this month's operations against their budgets,
    /// `s3_balance_bucket_monthly_operations{class}` and
    /// `s3_balance_bucket_monthly_operation_limit{class}` (`class` A: writes and lists, B:
    /// reads, as R2 and B2 bill them), from `health`, `usage` and `operations` (backend ->
    /// this month's counts).
    ///
    /// An unlimited backend has no capacity series, and a backend without a budget no limit
    /// series: the Go s3-balance exported 0 for an unlimited capacity, which made its
    /// `usage / capacity` alerts fire on every unlimited bucket.
    pub fn render(
        &self,
        health: &HealthSnapshot,
        usage: &[BackendUsage],
        operations: &BTreeMap<String, OperationCounts>,
        backends: &[BackendConfig],
    ) -> String {
        let mut out = String::new();
        self.with(|m| {
            header(
                &mut out,
                "s3_balance_s3_operations_total",
                "counter",
                "Total number of S3 operations",
            );
            for (operation, counts) in &m.operations {
                for (status, n) in PER_STATUS.iter().zip(counts).filter(|(_, n)| **n > 0) {
                    let l = labels(&[("operation", operation), ("status", status)]);
                    let _ = writeln!(out, "s3_balance_s3_operations_total{l} {n}");
                }
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
            for (backend, by_strategy) in &m.decisions {
                for (strategy, n) in by_strategy {
                    let l = labels(&[("bucket", backend), ("strategy", strategy)]);
                    let _ = writeln!(out, "s3_balance_balancer_decisions_total{l} {n}");
                }
            }
            header(
                &mut out,
                "s3_balance_backend_operations_total",
                "counter",
                "Total number of requests sent to backends",
            );
            for (backend, by_operation) in &m.backend_operations {
                for (operation, counts) in by_operation {
                    for (result, n) in PER_STATUS.iter().zip(counts).filter(|(_, n)| **n > 0) {
                        let l = labels(&[
                            ("bucket", backend),
                            ("operation", operation),
                            ("result", result),
                        ]);
                        let _ = writeln!(out, "s3_balance_backend_operations_total{l} {n}");
                    }
                }
            }
            header(
                &mut out,
                "s3_balance_s3_bytes_total",
                "counter",
                "Bytes of S3 requests (in: object bytes received, out: response bytes sent)",
            );
            for (operation, bytes) in &m.transferred {
                for (direction, n) in DIRECTIONS.iter().zip(bytes).filter(|(_, n)| **n > 0) {
                    let l = labels(&[("operation", operation), ("direction", direction)]);
                    let _ = writeln!(out, "s3_balance_s3_bytes_total{l} {n}");
                }
            }
        });

        header(
            &mut out,
            "s3_balance_bucket_healthy",
            "gauge",
            "Health status of S3 bucket (1 = healthy, 0 = unhealthy)",
        );
        for b in backends {
            let up = u8::from(health.is_healthy(&b.name));
            let _ = writeln!(
                out,
                "s3_balance_bucket_healthy{} {up}",
                labels(&[("bucket", &b.name)])
            );
        }
        header(
            &mut out,
            "s3_balance_bucket_usage_bytes",
            "gauge",
            "Current usage of S3 bucket in bytes",
        );
        for b in backends {
            let used = usage
                .iter()
                .find(|u| u.backend == b.name)
                .map(|u| u.used_bytes.max(0))
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "s3_balance_bucket_usage_bytes{} {used}",
                labels(&[("bucket", &b.name)])
            );
        }
        header(
            &mut out,
            "s3_balance_bucket_capacity_bytes",
            "gauge",
            "Maximum capacity of S3 bucket in bytes",
        );
        for b in backends {
            if let Some(capacity) = b.max_size {
                let _ = writeln!(
                    out,
                    "s3_balance_bucket_capacity_bytes{} {capacity}",
                    labels(&[("bucket", &b.name)])
                );
            }
        }
        header(
            &mut out,
            "s3_balance_bucket_monthly_operations",
            "gauge",
            "Operations sent to the bucket this calendar month (UTC), by billing class",
        );
        for b in backends {
            let counts = operations.get(&b.name).cloned().unwrap_or_default();
            for (class, n) in [("A", counts.class_a), ("B", counts.class_b)] {
                let l = labels(&[("bucket", &b.name), ("class", class)]);
                let _ = writeln!(out, "s3_balance_bucket_monthly_operations{l} {n}");
            }
        }
        header(
            &mut out,
            "s3_balance_bucket_monthly_operation_limit",
            "gauge",
            "Monthly operation budget of the bucket, by billing class",
        );
        for b in backends {
            for (class, limit) in [("A", b.limit_class_a), ("B", b.limit_class_b)] {
                if let Some(limit) = limit {
                    let l = labels(&[("bucket", &b.name), ("class", class)]);
                    let _ = writeln!(out, "s3_balance_bucket_monthly_operation_limit{l} {limit}");
                }
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
        BTreeMap<String, OperationCounts>,
        Vec<BackendConfig>,
    );

    fn backend(
        name: &str,
        max_size: Option<u64>,
        limits: (Option<u64>, Option<u64>),
    ) -> BackendConfig {
        BackendConfig {
            name: name.into(),
            bucket: name.into(),
            endpoint: "http://127.0.0.1:9000".into(),
            region: "us-east-1".into(),
            access_key: "k".into(),
            secret_key: crate::config::Secret::new("s".to_owned()),
            path_style: true,
            max_size,
            weight: 1,
            enabled: true,
            read_only: false,
            conditional_writes: false,
            limit_class_a: limits.0,
            limit_class_b: limits.1,
        }
    }

    fn sample() -> Sample {
        let m = Metrics::new();
        m.record_request("GET", 200, 0.003);
        m.record_request("GET", 404, 0.2);
        m.record_request("GET", 200, 20.0);
        m.record_decision("r2", "least-space");
        m.record_decision("r2", "least-space");
        m.record_backend("r2", "PutObject", true);
        m.record_backend("b\"2\\x\ny", "GetObject", false);
        m.record_transfer("PutObject", 1000, 0);
        m.record_transfer("PutObject", 24, 0);
        m.record_transfer("GetObject", 0, 4096);
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
        let operations = BTreeMap::from([(
            "r2".to_owned(),
            OperationCounts {
                class_a: 7,
                class_b: 9,
            },
        )]);
        let backends = vec![
            backend("r2", Some(10_737_418_240), (Some(1_000_000), None)),
            backend("b2", None, (None, None)),
        ];
        (m, health, usage, operations, backends)
    }

    #[test]
    fn exact_text() {
        let (m, health, usage, operations, backends) = sample();
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
# HELP s3_balance_s3_bytes_total Bytes of S3 requests (in: object bytes received, out: response bytes sent)
# TYPE s3_balance_s3_bytes_total counter
s3_balance_s3_bytes_total{operation="GetObject",direction="out"} 4096
s3_balance_s3_bytes_total{operation="PutObject",direction="in"} 1024
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
# HELP s3_balance_bucket_monthly_operations Operations sent to the bucket this calendar month (UTC), by billing class
# TYPE s3_balance_bucket_monthly_operations gauge
s3_balance_bucket_monthly_operations{bucket="r2",class="A"} 7
s3_balance_bucket_monthly_operations{bucket="r2",class="B"} 9
s3_balance_bucket_monthly_operations{bucket="b2",class="A"} 0
s3_balance_bucket_monthly_operations{bucket="b2",class="B"} 0
# HELP s3_balance_bucket_monthly_operation_limit Monthly operation budget of the bucket, by billing class
# TYPE s3_balance_bucket_monthly_operation_limit gauge
s3_balance_bucket_monthly_operation_limit{bucket="r2",class="A"} 1000000
"#;
        assert_eq!(m.render(&health, &usage, &operations, &backends), want);
    }

    #[test]
    fn empty_metrics_still_name_every_family() {
        let text = Metrics::new().render(&HealthSnapshot::default(), &[], &BTreeMap::new(), &[]);
        for name in [
            "s3_balance_s3_operations_total",
            "s3_balance_s3_operation_duration_seconds",
            "s3_balance_balancer_decisions_total",
            "s3_balance_backend_operations_total",
            "s3_balance_bucket_healthy",
            "s3_balance_bucket_usage_bytes",
            "s3_balance_bucket_capacity_bytes",
            "s3_balance_s3_bytes_total",
            "s3_balance_bucket_monthly_operations",
            "s3_balance_bucket_monthly_operation_limit",
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
    /// (`apt-get install prometheus` provides it; required under `CI=true`).
    #[test]
    #[cfg(not(target_arch = "wasm32"))]
    fn promtool_accepts_the_output() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let (m, health, usage, operations, backends) = sample();
        let text = m.render(&health, &usage, &operations, &backends);
        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            // CI installs promtool (scripts/install-test-deps): missing there is a failure.
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "promtool not found (apt-get install prometheus); CI=true: failing, not skipping"
            );
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
