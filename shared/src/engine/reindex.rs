//! Reindex: rebuilding the index from the backends' own listings, safely while the gateway
//! serves.
//!
//! It walks every virtual bucket in key order, one page (up to 1,000 keys per backend) per
//! [`Engine::reindex_step`], merging the pool's listings as a listing does, so memory stays
//! bounded and a killed run resumes from the stored cursor (document `reindex`). For each key:
//!
//! - the newest copy (Last-Modified; ties to rendezvous order) is the live one, and its entry
//!   is written with [`MetadataStore::put_object_unless_newer`] against the time the reindex
//!   started, so an entry a client's write made meanwhile is never replaced;
//! - older copies on other backends are removed (`If-Match` on the listed ETag, so a copy a
//!   client rewrote meanwhile stays), or only reported with `dry_run`;
//! - index entries of keys that no backend lists are dropped, unless written after the start
//!   or pointing at a configured backend outside the pool (taken out without a drain);
//! - at the end, records of older copies on backends no longer configured are forgotten, like
//!   entries pointing there: what such a backend holds is no longer the gateway's (configured
//!   again, it would come back as it is).
//!
//! A backend that cannot be listed stops the step with [`ReindexError::Backend`] and leaves
//! the cursor where it was: deciding without one backend's listing could drop entries of keys
//! that only it holds.

use std::collections::BTreeMap;
use std::time::SystemTime;

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use super::copies::{copy_record, newest, out_of_pool, Copy, ObjectRef};
use super::Engine;
use crate::error::S3Error;
use crate::http::HttpClient;
use crate::placement;
use crate::store::{MetadataStore, StoreError};

/// The document holding the cursor of a reindex in progress.
const REINDEX_DOCUMENT: &str = "reindex";
/// How many duplicates a dry run lists by name (all are counted).
const MAX_REPORTED_DUPLICATES: usize = 1000;

/// What a reindex did (or, on a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReindexReport {
    /// Keys found, however many copies each has.
    pub objects: u64,
    /// Bytes of their live copies.
    pub bytes: u64,
    /// Keys found on more than one backend.
    pub duplicates: u64,
    /// Older copies removed (on a dry run: that would be removed).
    pub older_copies_removed: u64,
    /// Older copies that could not be removed now (recorded for the maintenance task).
    pub older_copies_left: u64,
    /// Records of older copies on backends no longer configured, forgotten (on a dry run:
    /// that would be): reindex goes by what configured backends hold.
    #[serde(default)]
    pub older_copies_forgotten: u64,
    /// Index entries written.
    pub entries_written: u64,
    /// Entries kept because a client's write made them while the reindex ran.
    pub entries_kept_newer: u64,
    /// Index entries dropped because no backend holds their key.
    pub entries_dropped: u64,
    /// Keys listed, per backend.
    pub listed: BTreeMap<String, u64>,
    /// Backends that could not be listed (their buckets were skipped).
    pub backends_failed: Vec<String>,
    /// On a dry run, the first duplicates: `(bucket, key, backend of the live copy, backends
    /// of the older copies)`.
    pub duplicate_keys: Vec<(String, String, String, Vec<String>)>,
}

/// Where a reindex is: stored after every step so a killed run resumes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReindexCursor {
    /// Unix seconds when the reindex started: entries written at or after are newer than
    /// anything it read, and are never replaced.
    pub started: u64,
    /// Report only: write no entry, remove no copy, store no cursor.
    pub dry_run: bool,
    /// The virtual buckets to walk, fixed at the start.
    pub buckets: Vec<String>,
    /// Index into `buckets` of the bucket being walked.
    pub bucket: usize,
    /// The last key done in that bucket ("" from its start).
    pub after: String,
    pub report: ReindexReport,
    /// Every bucket is done (and usage recounted).
    pub done: bool,
}

/// Why a reindex step could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReindexError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The step is not done; the cursor did not move. Retry later, or skip the bucket.
    #[error("backend {backend} could not be listed: {error}")]
    Backend { backend: String, error: S3Error },
}

impl<S: MetadataStore, C: HttpClient> Engine<S, C> {
    /// Starts a reindex at `now`, or (with `resume`) continues the one a killed run left.
    pub async fn reindex_start(
        &self,
        now: SystemTime,
        dry_run: bool,
        resume: bool,
    ) -> Result<ReindexCursor, StoreError> {
        if resume && !dry_run {
            if let Some(text) = self.store.get_document(REINDEX_DOCUMENT).await? {
                match serde_json::from_str::<ReindexCursor>(&text) {
                    Ok(c) if !c.done && !c.dry_run => return Ok(c),
                    Ok(_) => {}
                    Err(e) if text.is_empty() => drop(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "stored reindex cursor unreadable; starting over")
                    }
                }
            }
        }
        let buckets = self.all_bucket_names().await?;
        Ok(ReindexCursor {
            started: crate::time::unix_secs(now),
            dry_run,
            buckets,
            ..Default::default()
        })
    }

    /// Runs one step: one page of the current bucket from every backend of its pool. Returns
    /// `Ok(false)` once everything is done (the usage of every backend is then recounted and
    /// the stored cursor cleared).
    pub async fn reindex_step(
        &self,
        cursor: &mut ReindexCursor,
        now: SystemTime,
    ) -> Result<bool, ReindexError> {
        if cursor.done {
            return Ok(false);
        }
        let state = self.state();
        let config = state.config.clone();
        let Some(bucket) = cursor.buckets.get(cursor.bucket).cloned() else {
            // Records are few (failures only): all are read once, at the end.
            for copy in self.store.list_stale_copies(usize::MAX).await? {
                if config.backend(&copy.backend).is_none() {
                    if !cursor.dry_run {
                        self.store.delete_stale_copy(&copy).await?;
                    }
                    cursor.report.older_copies_forgotten += 1;
                }
            }
            if !cursor.dry_run {
                self.store
                    .put_document(super::maintenance::SCAN_DOCUMENT, "{}")
                    .await?;
                self.scan_usage(usize::MAX, now).await?;
                self.store.put_document(REINDEX_DOCUMENT, "").await?;
            }
            cursor.done = true;
            return Ok(false);
        };
        let bucket_config = config.bucket_or_default(&bucket);
        let prefix = bucket_config.key_layout.prefix(&bucket);
        let pool: Vec<_> = config.pool(&bucket_config).into_iter().cloned().collect();
        let start_after = (!cursor.after.is_empty()).then(|| format!("{prefix}{}", cursor.after));
        let pages = join_all(pool.iter().map(|backend| {
            self.backend_page(
                backend,
                &prefix,
                start_after.as_deref(),
                now,
                config.balancer.probe_timeout,
            )
        }))
        .await;
        let mut listed = Vec::with_capacity(pages.len());
        for (backend, page) in pool.iter().zip(pages) {
            match page {
                Ok(p) => listed.push((backend.name.clone(), p)),
                Err(error) => {
                    return Err(ReindexError::Backend {
                        backend: backend.name.clone(),
                        error,
                    })
                }
            }
        }
        // Keys up to the smallest last key of a truncated page are complete on every backend.
        let boundary: Option<String> = listed
            .iter()
            .filter(|(_, p)| p.truncated)
            .filter_map(|(_, p)| p.entries.last().map(|e| e.key.clone()))
            .min();
        let mut copies: BTreeMap<String, Vec<Copy>> = BTreeMap::new();
        for (backend, page) in &listed {
            for e in &page.entries {
                if boundary.as_ref().is_some_and(|b| e.key > *b) {
                    continue;
                }
                *cursor.report.listed.entry(backend.clone()).or_default() += 1;
                copies.entry(e.key.clone()).or_default().push(Copy {
                    backend: backend.clone(),
                    etag: e.etag.clone(),
                    size: e.size,
                    modified: crate::time::unix_secs(e.last_modified),
                });
            }
        }
        // Index entries in the same range whose key no backend listed: nothing to point at.
        // (Before the keys are indexed: their own entries are not what is looked at here.)
        let mut outside: std::collections::BTreeSet<String> = Default::default();
        let mut after = cursor.after.clone();
        'sweep: loop {
            let entries = self.store.list_objects(&bucket, &after, 1000).await?;
            let Some((last, _)) = entries.last() else {
                break;
            };
            let last = last.clone();
            for (key, entry) in entries {
                if boundary.as_ref().is_some_and(|b| key > *b) {
                    break 'sweep;
                }
                // On a backend taken out of the pool (not listed here): the entry is how reads,
                // deletes and a drain still reach the copy (`copies::outside_pool`). If the pool
                // lists the key too, the listed copies may be older: it is settled below.
                if out_of_pool(&config, &bucket_config, &entry.backend) {
                    if copies.contains_key(&key) {
                        outside.insert(key);
                    }
                    continue;
                }
                if copies.contains_key(&key) {
                    continue;
                }
                let dropped = if cursor.dry_run {
                    true
                } else {
                    let _turn = self.key_locks.lock(&bucket, &key).await;
                    self.store
                        .delete_object_unless_newer(&bucket, &key, cursor.started)
                        .await?
                };
                if dropped {
                    cursor.report.entries_dropped += 1;
                }
            }
            after = last;
        }
        let states = self.pool_states(&state, &bucket_config);
        for (key, found) in &copies {
            if outside.contains(key) && !cursor.dry_run {
                self.reindex_with_copy_outside(&state, cursor, &bucket, &bucket_config, key, now)
                    .await?;
                continue;
            }
            // Probe order breaks Last-Modified ties, as everywhere else.
            let order = placement::probe_order(&states, &bucket, key);
            let mut found = found.clone();
            found.sort_by_key(|c| order.iter().position(|s| s.name == c.backend));
            self.reindex_key(&state, cursor, &bucket, &bucket_config, key, &found, now)
                .await?;
        }
        match boundary {
            Some(b) => cursor.after = b,
            None => {
                cursor.bucket += 1;
                cursor.after.clear();
            }
        }
        if !cursor.dry_run {
            let text = serde_json::to_string(&*cursor).map_err(|e| StoreError(e.to_string()))?;
            self.store.put_document(REINDEX_DOCUMENT, &text).await?;
        }
        Ok(true)
    }

    /// Settles `key`, whose index entry points at a backend outside the pool while the pool
    /// lists copies too: the listings do not show the copy outside, which may be the live one
    /// (the pool's an older one whose removal failed), so every copy is asked instead
    /// ([`Engine::settle`], the index entry's rule).
    async fn reindex_with_copy_outside(
        &self,
        state: &super::State,
        cursor: &mut ReindexCursor,
        bucket: &str,
        bucket_config: &crate::config::VirtualBucketConfig,
        key: &str,
        now: SystemTime,
    ) -> Result<(), ReindexError> {
        let object = ObjectRef {
            bucket,
            key,
            config: bucket_config,
        };
        let _turn = self.key_locks.lock(bucket, key).await;
        let left =
            self.settle(state, object, now)
                .await
                .map_err(|error| ReindexError::Backend {
                    backend: format!("a backend holding {bucket}/{key}"),
                    error,
                })?;
        cursor.report.objects += 1;
        cursor.report.older_copies_left += left as u64;
        Ok(())
    }

    /// One key found by a reindex with its copies (in probe order).
    #[allow(clippy::too_many_arguments)]
    async fn reindex_key(
        &self,
        state: &super::State,
        cursor: &mut ReindexCursor,
        bucket: &str,
        bucket_config: &crate::config::VirtualBucketConfig,
        key: &str,
        found: &[Copy],
        now: SystemTime,
    ) -> Result<(), ReindexError> {
        let Some(live) = newest(found).cloned() else {
            return Ok(());
        };
        let older: Vec<Copy> = found
            .iter()
            .filter(|c| c.backend != live.backend)
            .cloned()
            .collect();
        let report = &mut cursor.report;
        report.objects += 1;
        report.bytes += live.size;
        if !older.is_empty() {
            report.duplicates += 1;
        }
        if cursor.dry_run {
            report.older_copies_removed += older.len() as u64;
            if !older.is_empty() && report.duplicate_keys.len() < MAX_REPORTED_DUPLICATES {
                report.duplicate_keys.push((
                    bucket.to_owned(),
                    key.to_owned(),
                    live.backend.clone(),
                    older.iter().map(|c| c.backend.clone()).collect(),
                ));
            }
            return Ok(());
        }
        let _turn = self.key_locks.lock(bucket, key).await;
        if self
            .store
            .put_object_unless_newer(bucket, key, &copy_record(&live), cursor.started)
            .await?
        {
            report.entries_written += 1;
        } else {
            report.entries_kept_newer += 1;
        }
        if !older.is_empty() {
            let object = ObjectRef {
                bucket,
                key,
                config: bucket_config,
            };
            let (removed, left) = self.remove_copies(state, object, &older, now).await;
            report.older_copies_removed += removed.len() as u64;
            report.older_copies_left += left as u64;
        }
        Ok(())
    }

    /// Rebuilds the index of every virtual bucket and the usage of every backend from the
    /// backends' own listings, in one go (see [`Engine::reindex_step`]). A backend that cannot
    /// be listed is reported and its buckets skipped.
    pub async fn reindex(&self, now: SystemTime) -> Result<ReindexReport, StoreError> {
        let mut cursor = self.reindex_start(now, false, false).await?;
        loop {
            match self.reindex_step(&mut cursor, now).await {
                Ok(true) => {}
                Ok(false) => return Ok(cursor.report),
                Err(ReindexError::Store(e)) => return Err(e),
                Err(ReindexError::Backend { backend, error }) => {
                    tracing::error!(backend = %backend, error = %error, "reindex could not list a backend; skipping the bucket");
                    if !cursor.report.backends_failed.contains(&backend) {
                        cursor.report.backends_failed.push(backend);
                    }
                    cursor.bucket += 1;
                    cursor.after.clear();
                }
            }
        }
    }
}
