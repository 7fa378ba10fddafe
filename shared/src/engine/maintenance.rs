//! Scheduled work: health probes, the usage scan, and rebuilding the index (reindex).

use std::collections::BTreeMap;
use std::time::SystemTime;

use futures_util::future::join_all;
use http::Method;
use serde::{Deserialize, Serialize};

use super::backend::{backend_error, backend_uri, encode_query_value, BackendRequest};
use super::{Engine, ReindexReport, HEALTH_DOCUMENT};
use crate::body::Body;
use crate::config::BackendConfig;
use crate::error::S3Error;
use crate::health::{HealthSnapshot, ProbeResult};
use crate::http::HttpClient;
use crate::listing::BackendPage;
use crate::store::{BackendUsage, MetadataStore, ObjectRecord, StoreError};

/// Where the usage scan stopped, stored between runs (document `usage-scan`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ScanCursor {
    /// Index into the configured backends.
    backend: usize,
    start_after: Option<String>,
    bytes: i64,
    objects: i64,
}

const SCAN_DOCUMENT: &str = "usage-scan";

impl<S: MetadataStore, C: HttpClient> Engine<S, C> {
    /// One page (up to 1000 keys) of a backend's real bucket under `prefix`, after `start_after`.
    async fn backend_page(
        &self,
        backend: &BackendConfig,
        prefix: &str,
        start_after: Option<&str>,
        now: SystemTime,
        timeout: std::time::Duration,
    ) -> Result<BackendPage, S3Error> {
        let mut query = format!(
            "encoding-type=url&list-type=2&max-keys=1000&prefix={}",
            encode_query_value(prefix)
        );
        if let Some(after) = start_after {
            query.push_str(&format!("&start-after={}", encode_query_value(after)));
        }
        let mut request = BackendRequest::new(Method::GET, backend_uri(backend, None, &query)?);
        request.timeout = Some(timeout);
        let response = self.send_at(backend, "ListObjectsV2", request, now).await?;
        if !response.status().is_success() {
            return Err(backend_error(&backend.name, response).await);
        }
        let body = response.into_body().collect(32 * 1024 * 1024).await?;
        crate::listing::parse_backend_page(&body, prefix, 0)
    }

    /// Probes every backend once (ListObjectsV2 max-keys=1 with the probe timeout), folds the
    /// results into the stored snapshot with rise/fall, stores and returns it. `clock` gives
    /// the time (for latency and the snapshot's date).
    pub async fn check_health(
        &self,
        clock: &dyn Fn() -> SystemTime,
    ) -> Result<HealthSnapshot, StoreError> {
        let config = self.config();
        let balancer = &config.balancer;
        let probes = config.backends.iter().map(|backend| async move {
            let start = clock();
            let outcome = async {
                let mut request = BackendRequest::new(
                    Method::GET,
                    backend_uri(backend, None, "list-type=2&max-keys=1")?,
                );
                request.timeout = Some(balancer.probe_timeout);
                let response = self.send_at(backend, "HealthCheck", request, start).await?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    Err(backend_error(&backend.name, response).await)
                }
            }
            .await;
            let end = clock();
            let latency_ms = end.duration_since(start).unwrap_or_default().as_millis() as u64;
            let result = ProbeResult {
                ok: outcome.is_ok(),
                latency_ms,
                error: outcome.err().map(|e| e.to_string()),
                at: crate::time::unix_secs(end),
            };
            (backend.name.clone(), result)
        });
        let results = join_all(probes).await;
        let mut snapshot = match self.store.get_document(HEALTH_DOCUMENT).await? {
            Some(text) => serde_json::from_str(&text).unwrap_or_default(),
            None => self.state().health.clone(),
        };
        let previous: HealthSnapshot = snapshot.clone();
        snapshot
            .backends
            .retain(|name, _| config.backend(name).is_some());
        for (name, result) in results {
            let before = previous.backends.get(&name).cloned().unwrap_or_default();
            let after = before.observe(&result, balancer.rise, balancer.fall);
            if before.healthy != after.healthy {
                if after.healthy {
                    tracing::info!(backend = %name, "backend is healthy again");
                } else {
                    tracing::warn!(backend = %name, error = ?result.error, "backend is unhealthy");
                }
            }
            snapshot.backends.insert(name, after);
        }
        snapshot.taken_at = crate::time::unix_secs(clock());
        let text = serde_json::to_string(&snapshot).map_err(|e| StoreError(e.to_string()))?;
        self.store.put_document(HEALTH_DOCUMENT, &text).await?;
        let stored = snapshot.clone();
        self.update_state(|s| s.health = stored);
        Ok(snapshot)
    }

    /// Recounts the bytes and objects each backend holds (paged listing of its real bucket),
    /// with at most `max_requests` backend requests this run; resumes from a stored cursor.
    pub async fn scan_usage(&self, max_requests: usize, now: SystemTime) -> Result<(), StoreError> {
        let config = self.config();
        if config.backends.is_empty() {
            return Ok(());
        }
        let mut cursor: ScanCursor = match self.store.get_document(SCAN_DOCUMENT).await? {
            Some(text) => serde_json::from_str(&text).unwrap_or_default(),
            None => ScanCursor::default(),
        };
        for _ in 0..max_requests {
            if cursor.backend >= config.backends.len() {
                // The config lost backends since the cursor was stored.
                cursor = ScanCursor::default();
            }
            let backend = &config.backends[cursor.backend];
            let page = match self
                .backend_page(
                    backend,
                    "",
                    cursor.start_after.as_deref(),
                    now,
                    config.balancer.probe_timeout,
                )
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(backend = %backend.name, error = %e, "usage scan skipped an unreachable backend");
                    cursor = ScanCursor {
                        backend: cursor.backend + 1,
                        ..Default::default()
                    };
                    continue;
                }
            };
            cursor.bytes += page.entries.iter().map(|e| e.size as i64).sum::<i64>();
            cursor.objects += page.entries.len() as i64;
            match (page.truncated, page.entries.last()) {
                (true, Some(last)) => cursor.start_after = Some(last.key.clone()),
                _ => {
                    let usage = BackendUsage {
                        backend: backend.name.clone(),
                        used_bytes: cursor.bytes,
                        objects: cursor.objects,
                    };
                    self.store.set_usage(&usage).await?;
                    cursor = ScanCursor {
                        backend: cursor.backend + 1,
                        ..Default::default()
                    };
                    if cursor.backend >= config.backends.len() {
                        // A full round is done; the next run starts over.
                        cursor = ScanCursor::default();
                        break;
                    }
                }
            }
        }
        let text = serde_json::to_string(&cursor).map_err(|e| StoreError(e.to_string()))?;
        self.store.put_document(SCAN_DOCUMENT, &text).await
    }

    /// Rebuilds the object index of every virtual bucket and the usage of every backend from
    /// the backends' own listings. Where a key is on two backends, the newest copy is indexed.
    pub async fn reindex(&self, now: SystemTime) -> Result<ReindexReport, StoreError> {
        let config = self.config();
        let mut report = ReindexReport::default();
        let mut buckets: Vec<String> = config
            .virtual_buckets
            .iter()
            .map(|b| b.name.clone())
            .collect();
        for b in self.store.list_buckets().await? {
            if !buckets.contains(&b.name) {
                buckets.push(b.name);
            }
        }
        for bucket in &buckets {
            let bucket_config = config.bucket_or_default(bucket);
            let prefix = bucket_config.key_layout.prefix(bucket);
            let mut found: BTreeMap<String, ObjectRecord> = BTreeMap::new();
            for backend in config.pool(&bucket_config) {
                let mut after: Option<String> = None;
                loop {
                    let page = match self
                        .backend_page(
                            backend,
                            &prefix,
                            after.as_deref(),
                            now,
                            config.balancer.probe_timeout,
                        )
                        .await
                    {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::error!(backend = %backend.name, error = %e, "reindex could not list a backend");
                            if !report.backends_failed.contains(&backend.name) {
                                report.backends_failed.push(backend.name.clone());
                            }
                            break;
                        }
                    };
                    for e in &page.entries {
                        let rec = ObjectRecord {
                            backend: backend.name.clone(),
                            size: e.size,
                            etag: e.etag.clone(),
                            last_modified: crate::time::unix_secs(e.last_modified),
                        };
                        let newer = found
                            .get(&e.key)
                            .is_none_or(|old| old.last_modified < rec.last_modified);
                        if newer {
                            found.insert(e.key.clone(), rec);
                        }
                    }
                    match (page.truncated, page.entries.last()) {
                        (true, Some(last)) => after = Some(format!("{prefix}{}", last.key)),
                        _ => break,
                    }
                }
            }
            for (key, rec) in &found {
                self.store.put_object(bucket, key, rec).await?;
                report.objects += 1;
                report.bytes += rec.size;
            }
        }
        // Usage of every backend, whole real buckets.
        self.store.put_document(SCAN_DOCUMENT, "{}").await?;
        self.scan_usage(usize::MAX, now).await?;
        Ok(report)
    }
}
