//! Scheduled work: health probes, the usage scan, and rebuilding the index (reindex).

use std::collections::HashSet;
use std::time::SystemTime;

use futures_util::future::join_all;
use http::Method;
use serde::{Deserialize, Serialize};

use super::backend::{backend_error, backend_uri, encode_query_value, BackendRequest};
use super::copies::ObjectRef;
use super::{Engine, Unanswered, HEALTH_DOCUMENT};
use crate::body::Body;
use crate::config::BackendConfig;
use crate::error::S3Error;
use crate::health::{HealthSnapshot, ProbeResult};
use crate::http::HttpClient;
use crate::listing::BackendPage;
use crate::store::{BackendUsage, MetadataStore, StoreError};

/// Where the usage scan stopped, stored between runs (document `usage-scan`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ScanCursor {
    /// Index into the configured backends.
    backend: usize,
    start_after: Option<String>,
    bytes: i64,
    objects: i64,
}

pub(crate) const SCAN_DOCUMENT: &str = "usage-scan";

/// How many times `budget` records [`Engine::remove_stale_copies`] looks through at most.
pub(crate) const STALE_COPIES_LOOKAHEAD: usize = 10;

impl<S: MetadataStore, C: HttpClient> Engine<S, C> {
    /// One page (up to 1000 keys) of a backend's real bucket under `prefix`, after `start_after`.
    pub(crate) async fn backend_page(
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

    /// One health probe of `backend`: a signed ListObjectsV2 max-keys=1 on its real bucket
    /// with the probe timeout, sent even while its circuit is open. A failure says why, in
    /// words for the operator (`/health`, `s3-balance check`): `HTTP 403 InvalidAccessKeyId:
    /// ...`, `Connect: connection refused`.
    pub async fn probe(
        &self,
        backend: &BackendConfig,
        clock: &(dyn Fn() -> SystemTime + Sync),
    ) -> ProbeResult {
        let start = clock();
        let outcome = async {
            let uri =
                backend_uri(backend, None, "list-type=2&max-keys=1").map_err(|e| e.to_string())?;
            let mut request = BackendRequest::new(Method::GET, uri);
            request.timeout = Some(self.config().balancer.probe_timeout);
            request.health_probe = true;
            match self
                .send_unmapped(backend, "HealthCheck", request, start)
                .await
            {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => {
                    let status = response.status().as_u16();
                    Err(format!(
                        "HTTP {status} {}",
                        backend_error(&backend.name, response).await
                    ))
                }
                Err(Unanswered::Refused(e)) => Err(e.to_string()),
                Err(Unanswered::Transport(e)) => Err(e.to_string()),
            }
        }
        .await;
        let end = clock();
        ProbeResult {
            ok: outcome.is_ok(),
            latency_ms: end.duration_since(start).unwrap_or_default().as_millis() as u64,
            error: outcome.err(),
            at: crate::time::unix_secs(end),
        }
    }

    /// Probes every backend once (ListObjectsV2 max-keys=1 with the probe timeout), folds the
    /// results into the stored snapshot with rise/fall, stores and returns it. `clock` gives
    /// the time (for latency and the snapshot's date).
    pub async fn check_health(
        &self,
        clock: &(dyn Fn() -> SystemTime + Sync),
    ) -> Result<HealthSnapshot, StoreError> {
        let config = self.config();
        let balancer = &config.balancer;
        let probes = config
            .backends
            .iter()
            .map(|backend| async move { (backend.name.clone(), self.probe(backend, clock).await) });
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
            if result.ok && self.circuit(&name, crate::health::Circuit::succeeded) {
                tracing::info!(backend = %name, "health probe got an answer: circuit closed");
            }
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
        self.observe_probes(&snapshot, clock());
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
                    if cursor.backend >= config.backends.len() {
                        // A full round is done, failures included: the next run starts over
                        // (never loop on a backend that stays down).
                        cursor = ScanCursor::default();
                        break;
                    }
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

    /// Settles up to `budget` recorded stale copies (older copies a write could not remove,
    /// backends that could not be asked): for each key, every backend of its pool is asked,
    /// the newest copy stays and the others are removed. A record whose key cannot be decided
    /// now (a backend is down) stays for the next run. Returns how many records were settled.
    ///
    /// Records on a backend no longer configured are passed over without a request and
    /// without counting against `budget`, looking up to [`STALE_COPIES_LOOKAHEAD`] times
    /// further: the store lists records oldest first, so otherwise they would take the whole
    /// budget of every run for as long as the backend stays out of the config. Records whose
    /// settling needs a backend that is down (its circuit open: one of the bucket's pool, or
    /// the record's own) are tried once per run and per such backend, so that its circuit gets
    /// its trial request (how it is seen back between health probes), and passed over after
    /// that in the same way: each of them would fail at once without asking anything.
    pub async fn remove_stale_copies(
        &self,
        budget: usize,
        now: SystemTime,
    ) -> Result<usize, StoreError> {
        let state = self.state();
        let config = state.config.clone();
        let mut settled = 0;
        let mut attempts = 0;
        let mut seen: HashSet<(String, String, String)> = HashSet::new();
        // Backends found down that a record in this run already needed.
        let mut tried_while_down: HashSet<String> = HashSet::new();
        let mut window = budget;
        'runs: loop {
            let records = self.store.list_stale_copies(window).await?;
            let more = records.len() == window;
            let mut passed_over = false;
            for copy in records {
                if !seen.insert((copy.bucket.clone(), copy.key.clone(), copy.backend.clone())) {
                    continue;
                }
                // A backend out of the pool is still settled (`settle` asks it): its copy would
                // come back if it rejoined. One no longer configured cannot be asked, and its
                // copy would come back if it were configured again: the record stays (reindex
                // forgets it).
                if config.backend(&copy.backend).is_none() {
                    tracing::debug!(bucket = %copy.bucket, key = %copy.key, backend = %copy.backend, "a recorded older copy is on a backend no longer configured; kept");
                    passed_over = true;
                    continue;
                }
                let bucket_config = config.bucket_or_default(&copy.bucket);
                // The backends settling this record asks: its pool, and the record's own.
                let needed: Vec<&str> = config
                    .pool(&bucket_config)
                    .into_iter()
                    .map(|b| b.name.as_str())
                    .chain([copy.backend.as_str()])
                    .collect();
                let is_down = |name: &str| self.circuit(name, |c| c.is_open());
                if needed
                    .iter()
                    .any(|name| tried_while_down.contains(*name) && is_down(name))
                {
                    tracing::debug!(bucket = %copy.bucket, key = %copy.key, backend = %copy.backend, "a recorded older copy waits on a backend that is down; passed over");
                    passed_over = true;
                    continue;
                }
                if attempts == budget {
                    break 'runs;
                }
                attempts += 1;
                let object = ObjectRef {
                    bucket: &copy.bucket,
                    key: &copy.key,
                    config: &bucket_config,
                };
                let _turn = self.key_locks.lock(&copy.bucket, &copy.key).await;
                match self.settle(&state, object, now).await {
                    // Anything left was recorded again under the same name: keep that record.
                    Ok(0) => {
                        self.store.delete_stale_copy(&copy).await?;
                        settled += 1;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(bucket = %copy.bucket, key = %copy.key, error = %e, "older copy not settled yet");
                    }
                }
                // Down now (its circuit may have opened on this very attempt): tried.
                tried_while_down.extend(
                    needed
                        .iter()
                        .filter(|name| is_down(name))
                        .map(|name| name.to_string()),
                );
            }
            let furthest = budget.saturating_mul(STALE_COPIES_LOOKAHEAD);
            if !more || !passed_over || attempts == budget || window >= furthest {
                break;
            }
            window = furthest;
        }
        if self.store.list_stale_copies(1).await?.is_empty() {
            self.store
                .put_document(super::STALE_COPIES_DOCUMENT, "")
                .await?;
            self.update_state(|s| s.stale_copies_pending = false);
        }
        Ok(settled)
    }
}
