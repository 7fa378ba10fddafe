//! Moving objects between backends: `drain` (empty a backend before it leaves) and
//! `rebalance` (after adding a backend, or when fill ratios drifted). Driven in bounded steps
//! ([`Engine::move_step`]) by the `s3-balance drain|rebalance` commands and by the admin API,
//! resumable from a cursor the caller keeps.
//!
//! One object moves without ever being unreadable and without breaking the one-live-copy rule
//! (`copies.rs`), against writes and deletes made meanwhile by any gateway instance:
//!
//! 1. Its index entry `E` (backend `S`, ETag `e`, written at `L`) is read. An entry written in
//!    the last [`SETTLE_SECS`] is left for a later pass: every write made after the move began
//!    is then at least a second newer than `E`, which step 5 relies on.
//! 2. `GET S` with `If-Match: e` (the version indexed, nothing newer), then `PUT T` with its
//!    headers, user metadata and `Content-MD5`: the target checks every byte. The copy on `T` is
//!    verified (its ETag is the MD5, or a HEAD shows the size).
//! 3. `HEAD S` with `If-Match: e`: a delete or overwrite since step 2 stops the move, and the
//!    copy on `T` is removed (a delete reaching every backend after this point removes it too).
//! 4. `S`'s copy is recorded as a stale copy (so a kill between here and step 6 leaves work
//!    for the maintenance task, not a second live copy).
//! 5. The index is switched to `T` unless its entry was written after `L`
//!    (`put_object_unless_newer`): a gateway write made meanwhile wins and the move stops.
//!    Until this point reads found `S`; from now on they find `T`, which is verified.
//! 6. `DELETE S` with `If-Match: e`, then the record of step 4 is dropped. A 412 means a write
//!    that read the index before the switch put a newer version on `S` (its index update comes
//!    next): `T`'s copy is then the older one and is recorded for the maintenance task.
//!
//! Objects are moved whole through memory, up to the caller's size limit; larger ones are
//! reported and left in place. A moved object keeps its bytes and metadata; its ETag is the
//! target's (a multipart ETag becomes a plain MD5).

use std::collections::BTreeMap;
use std::time::SystemTime;

use bytes::Bytes;
use http::Method;
use serde::{Deserialize, Serialize};

use super::backend::{self, backend_uri, BackendRequest};
use super::copies::ObjectRef;
use super::{Engine, State};
use crate::body::Body;
use crate::config::{Strategy, VirtualBucketConfig};
use crate::error::S3Error;
use crate::http::HttpClient;
use crate::placement::{self, BackendState, Entropy};
use crate::store::{MetadataStore, ObjectRecord, StaleCopy};

/// Entries younger than this (seconds) wait for a later pass (see step 1); more than the
/// clock skew between gateway instances.
pub const SETTLE_SECS: u64 = 60;

/// How much one step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveLimits {
    /// Index entries looked at per step.
    pub batch: usize,
    /// Larger objects are left in place (they move through memory).
    pub max_object: u64,
    /// Minimum age of an index entry, seconds ([`SETTLE_SECS`]).
    pub settle_secs: u64,
}

impl Default for MoveLimits {
    fn default() -> Self {
        Self {
            batch: 100,
            max_object: 256 * 1024 * 1024,
            settle_secs: SETTLE_SECS,
        }
    }
}

/// What to move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveGoal {
    /// Every object of this backend, to where placement would put it now without it.
    Drain(String),
    /// Consistent-hash: each object to the backend the hash chooses now (after adding a
    /// backend, about 1/N of them). Other strategies: from backends above their share of
    /// the bytes (capacity, else weight) to those below, until within 5 %.
    Rebalance,
}

/// Where a run stopped: the bucket (by name, so that buckets created or deleted between
/// steps shift nothing) and the last key looked at; `None` before the first bucket. Kept by
/// the caller between steps (a file, a store document).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveCursor {
    pub bucket: Option<String>,
    pub after: Option<String>,
}

/// One planned move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedMove {
    pub bucket: String,
    pub key: String,
    pub from: String,
    pub to: String,
    pub size: u64,
}

/// What one step did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct MoveReport {
    /// Index entries looked at.
    pub examined: u64,
    pub moved: u64,
    pub moved_bytes: u64,
    /// Written too recently, changed or deleted meanwhile, or no target could take them now:
    /// a later pass tries again.
    pub deferred: u64,
    /// Larger than the size limit: left in place.
    pub too_large: u64,
    /// Failed with an error (logged): left in place, tried again by a later pass.
    pub failed: u64,
    /// The moves planned (in a dry run: what a real run would do).
    pub planned: Vec<PlannedMove>,
    /// No more entries: the pass is complete.
    pub done: bool,
}

/// How one object's move ended.
#[derive(Debug, PartialEq, Eq)]
enum Moved {
    Yes,
    /// Changed, deleted or too young: a later pass looks again.
    Later(&'static str),
}

impl<S: MetadataStore, C: HttpClient> Engine<S, C> {
    /// One bounded step of a drain or rebalance: up to `batch` index entries from `cursor`,
    /// each moved (unless `dry_run`) when the goal says so and it is at most `max_object`
    /// bytes. Returns what it did and where the next step starts.
    pub async fn move_step(
        &self,
        goal: &MoveGoal,
        cursor: &MoveCursor,
        limits: MoveLimits,
        dry_run: bool,
        now: SystemTime,
    ) -> Result<(MoveReport, MoveCursor), S3Error> {
        let MoveLimits {
            batch, max_object, ..
        } = limits;
        let state = self.state();
        let buckets = self
            .all_bucket_names()
            .await
            .map_err(super::store_unavailable)?;
        let mut report = MoveReport::default();
        let mut cursor = cursor.clone();
        let mut shares = Shares::new(self, &state).await?;
        // Only fill-ratio rebalancing books planned moves against the shares.
        let by_share = *goal == MoveGoal::Rebalance
            && state.config.balancer.strategy != Strategy::ConsistentHash;
        while report.examined < batch as u64 {
            // The cursor's bucket, or the first one after it (names are sorted).
            let next = match &cursor.bucket {
                None => buckets.first(),
                Some(current) => buckets.iter().find(|b| *b >= current),
            };
            let Some(bucket) = next else {
                report.done = true;
                break;
            };
            if cursor.bucket.as_ref() != Some(bucket) {
                cursor = MoveCursor {
                    bucket: Some(bucket.clone()),
                    after: None,
                };
            }
            let config = state.config.bucket_or_default(bucket);
            let want = batch - report.examined as usize;
            let entries = self
                .store
                .list_objects(bucket, cursor.after.as_deref().unwrap_or(""), want)
                .await
                .map_err(super::store_unavailable)?;
            if entries.is_empty() {
                match buckets.iter().find(|b| *b > bucket) {
                    Some(next) => {
                        cursor = MoveCursor {
                            bucket: Some(next.clone()),
                            after: None,
                        }
                    }
                    None => {
                        report.done = true;
                        break;
                    }
                }
                continue;
            }
            for (key, entry) in entries {
                report.examined += 1;
                cursor.after = Some(key.clone());
                let Some(to) =
                    self.move_target(&state, &config, goal, bucket, &key, &entry, &mut shares)
                else {
                    continue;
                };
                if entry.size > max_object {
                    report.too_large += 1;
                    tracing::warn!(
                        bucket,
                        key,
                        size = entry.size,
                        max_object,
                        "too large to move in one piece: left in place"
                    );
                    continue;
                }
                report.planned.push(PlannedMove {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    from: entry.backend.clone(),
                    to: to.clone(),
                    size: entry.size,
                });
                if dry_run {
                    continue;
                }
                let object = ObjectRef {
                    bucket,
                    key: &key,
                    config: &config,
                };
                match self
                    .move_object(&state, object, &entry, &to, limits, now)
                    .await
                {
                    Ok(Moved::Yes) => {
                        report.moved += 1;
                        report.moved_bytes += entry.size;
                    }
                    Ok(Moved::Later(why)) => {
                        tracing::info!(bucket, key, why, "move deferred to a later pass");
                        if by_share {
                            shares.undo(&entry.backend, &to, entry.size);
                        }
                        report.deferred += 1;
                    }
                    Err(e) => {
                        tracing::warn!(bucket, key, error = %e, "move failed; left in place");
                        if by_share {
                            shares.undo(&entry.backend, &to, entry.size);
                        }
                        report.failed += 1;
                    }
                }
            }
        }
        Ok((report, cursor))
    }

    /// Where the object of `entry` should go for `goal`, if elsewhere.
    #[allow(clippy::too_many_arguments)]
    fn move_target(
        &self,
        state: &State,
        config: &VirtualBucketConfig,
        goal: &MoveGoal,
        bucket: &str,
        key: &str,
        entry: &ObjectRecord,
        shares: &mut Shares,
    ) -> Option<String> {
        let mut states = self.pool_states(state, config);
        let strategy = state.config.balancer.strategy;
        match goal {
            MoveGoal::Drain(backend) => {
                if entry.backend != *backend {
                    return None;
                }
                states.retain(|s| s.name != *backend);
                let candidates = placement::write_candidates(&states, Some(entry.size)).ok()?;
                let entropy = Entropy {
                    counter: self
                        .counter
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    random: placement::rendezvous_hash(bucket, key, "drain"),
                };
                let to = placement::choose(strategy, &candidates, bucket, key, entropy);
                Some(to.name.clone())
            }
            MoveGoal::Rebalance if strategy == Strategy::ConsistentHash => {
                // The current backend counts as a candidate even when it is full or
                // read-only: an object that hashes to it stays.
                let candidates: Vec<&BackendState> = states
                    .iter()
                    .filter(|s| {
                        s.name == entry.backend
                            || placement::write_candidates(
                                std::slice::from_ref(*s),
                                Some(entry.size),
                            )
                            .is_ok()
                    })
                    .collect();
                if candidates.is_empty() {
                    return None;
                }
                let entropy = Entropy {
                    counter: 0,
                    random: 0,
                };
                let to = placement::choose(strategy, &candidates, bucket, key, entropy);
                (to.name != entry.backend).then(|| to.name.clone())
            }
            MoveGoal::Rebalance => shares.target(&states, &entry.backend, entry.size),
        }
    }

    /// Moves one object to `to` (see the module's steps). `Ok(Moved::Later)` when it changed
    /// meanwhile or is too young; nothing is lost either way.
    async fn move_object(
        &self,
        state: &State,
        object: ObjectRef<'_>,
        entry: &ObjectRecord,
        to: &str,
        limits: MoveLimits,
        now: SystemTime,
    ) -> Result<Moved, S3Error> {
        let max_object = limits.max_object;
        let config = &state.config;
        if crate::time::unix_secs(now) < entry.last_modified + limits.settle_secs.max(1) {
            return Ok(Moved::Later("written too recently"));
        }
        let (Some(source), Some(target)) = (config.backend(&entry.backend), config.backend(to))
        else {
            return Ok(Moved::Later("backend no longer configured"));
        };
        let real_key = object.real_key();
        let etag = entry.etag.as_str();

        // 2. Read the indexed version, write it to the target with its MD5.
        let mut get = BackendRequest::new(Method::GET, backend_uri(source, Some(&real_key), "")?);
        backend::insert_header(&mut get.headers, "if-match", etag);
        let response = self.send_at(source, "GetObject", get, now).await?;
        match response.status().as_u16() {
            200 => {}
            404 | 412 => return Ok(Moved::Later("changed or deleted before it was read")),
            _ => return Err(super::backend::backend_error(&source.name, response).await),
        }
        let mut headers = backend::object_headers(response.headers());
        let bytes: Bytes = response
            .into_body()
            .collect(usize::try_from(max_object).unwrap_or(usize::MAX))
            .await?;
        if bytes.len() as u64 != entry.size {
            return Ok(Moved::Later("the copy read differs in size from the index"));
        }
        let md5 = {
            use md5::Digest;
            md5::Md5::digest(&bytes)
        };
        let md5_b64 = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(md5)
        };
        backend::insert_header(&mut headers, "content-md5", &md5_b64);
        let mut put = BackendRequest::new(Method::PUT, backend_uri(target, Some(&real_key), "")?)
            .with_bytes(bytes);
        for (name, value) in &headers {
            put.headers.append(name.clone(), value.clone());
        }
        let response = self.send_at(target, "PutObject", put, now).await?;
        if !response.status().is_success() {
            return Err(super::backend::backend_error(&target.name, response).await);
        }
        let new_etag = backend::header_str(response.headers(), "etag")
            .unwrap_or_default()
            .to_owned();
        if new_etag.trim_matches('"') != hex::encode(md5) {
            // Providers that do not answer the MD5 as ETag: the size must match.
            let head = BackendRequest::new(Method::HEAD, backend_uri(target, Some(&real_key), "")?);
            let response = self.send_at(target, "HeadObject", head, now).await?;
            let size = backend::header_str(response.headers(), "content-length")
                .and_then(|v| v.parse::<u64>().ok());
            if !response.status().is_success() || size != Some(entry.size) {
                self.remove_move_copy(object, target, &new_etag, now).await;
                return Err(S3Error::internal());
            }
        }

        // 3. The source still holds the indexed version (no delete or overwrite meanwhile).
        let mut head = BackendRequest::new(Method::HEAD, backend_uri(source, Some(&real_key), "")?);
        backend::insert_header(&mut head.headers, "if-match", etag);
        let still = self.send_at(source, "HeadObject", head, now).await?;
        if still.status().as_u16() != 200 {
            self.remove_move_copy(object, target, &new_etag, now).await;
            return Ok(Moved::Later("changed or deleted while it was copied"));
        }

        // 4. Recorded before the switch: a kill from here on leaves work, not two live copies.
        let source_copy = StaleCopy {
            bucket: object.bucket.to_owned(),
            key: object.key.to_owned(),
            backend: source.name.clone(),
            etag: Some(etag.to_owned()),
            noted: crate::time::unix_secs(now),
        };
        self.store
            .put_stale_copy(&source_copy)
            .await
            .map_err(super::store_unavailable)?;

        // 5. The switch, unless a write since `L` changed the entry (read again just before:
        // a delete meanwhile must not be undone by writing a new entry).
        let current = self
            .store
            .get_object(object.bucket, object.key)
            .await
            .map_err(super::store_unavailable)?;
        if current.as_ref() != Some(entry) {
            self.remove_move_copy(object, target, &new_etag, now).await;
            let _ = self.store.delete_stale_copy(&source_copy).await;
            return Ok(Moved::Later("changed or deleted while it was copied"));
        }
        let record = ObjectRecord {
            backend: target.name.clone(),
            size: entry.size,
            etag: new_etag.clone(),
            last_modified: entry.last_modified,
        };
        let switched = self
            .store
            .put_object_unless_newer(object.bucket, object.key, &record, entry.last_modified + 1)
            .await
            .map_err(super::store_unavailable)?;
        if !switched {
            self.remove_move_copy(object, target, &new_etag, now).await;
            let _ = self.store.delete_stale_copy(&source_copy).await;
            return Ok(Moved::Later("overwritten while it was copied"));
        }

        // 6. The source's copy, only as the version moved.
        let mut delete =
            BackendRequest::new(Method::DELETE, backend_uri(source, Some(&real_key), "")?);
        backend::insert_header(&mut delete.headers, "if-match", etag);
        match self.send_at(source, "DeleteObject", delete, now).await {
            Ok(r) if r.status().is_success() || r.status().as_u16() == 404 => {
                let _ = self.store.delete_stale_copy(&source_copy).await;
            }
            Ok(r) if r.status().as_u16() == 412 => {
                // A write that read the index before the switch put a newer version on the
                // source; its index update follows. The moved copy is the older one.
                let _ = self.store.delete_stale_copy(&source_copy).await;
                self.note_stale_copy(object, &target.name, Some(new_etag), now)
                    .await;
                return Ok(Moved::Later("overwritten during the switch"));
            }
            // Left recorded (step 4): the maintenance task removes it.
            _ => {}
        }
        self.count_usage(&target.name, entry.size as i64, 1);
        self.count_usage(&source.name, -(entry.size as i64), -1);
        Ok(Moved::Yes)
    }

    /// Removes the copy a move wrote to `target` (only that version); recorded for the
    /// maintenance task when that fails.
    async fn remove_move_copy(
        &self,
        object: ObjectRef<'_>,
        target: &crate::config::BackendConfig,
        etag: &str,
        now: SystemTime,
    ) {
        // Never a copy the index points at: another mover (or a client rewriting the same
        // bytes) may have made that very copy live.
        match self.store.get_object(object.bucket, object.key).await {
            Ok(Some(e)) if e.backend == target.name && e.etag == etag => return,
            Ok(_) => {}
            Err(_) => {
                let etag = (!etag.is_empty()).then(|| etag.to_owned());
                self.note_stale_copy(object, &target.name, etag, now).await;
                return;
            }
        }
        let removed = async {
            let mut delete = BackendRequest::new(
                Method::DELETE,
                backend_uri(target, Some(&object.real_key()), "").ok()?,
            );
            if !etag.is_empty() {
                backend::insert_header(&mut delete.headers, "if-match", etag);
            }
            let r = self
                .send_at(target, "DeleteObject", delete, now)
                .await
                .ok()?;
            (r.status().is_success() || r.status().as_u16() == 404).then_some(())
        }
        .await;
        if removed.is_none() {
            let etag = (!etag.is_empty()).then(|| etag.to_owned());
            self.note_stale_copy(object, &target.name, etag, now).await;
        }
    }
}

/// The store document holding the drain or rebalance in progress ([`MoveRun`]).
pub const MOVE_RUN_DOCUMENT: &str = "move-run";
/// Passes over the index before a run ends with objects still deferred or failed.
const MAX_PASSES: u32 = 10;
/// How long a step's lease lasts (renewed by every step of its holder).
const LEASE_SECS: u64 = 30;

/// Who steps a run: the `drain`/`rebalance` command that started it, or the scheduled job of
/// the gateways (runs started through the admin API). Each steps only its own runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveDriver {
    Cli,
    Scheduled,
}

/// A drain or rebalance in progress, kept in the store so that a killed command resumes it,
/// the admin API shows it and the gateways' scheduled job continues it. One mover at a time:
/// a step takes a lease (two movers of one object could each take the other's verified copy
/// for an orphan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRun {
    pub goal: MoveGoal,
    pub driver: MoveDriver,
    pub cursor: MoveCursor,
    pub limits: MoveLimits,
    /// Unix seconds.
    pub started: u64,
    /// Passes over the index so far (objects deferred in one are tried in the next).
    pub pass: u32,
    pub examined: u64,
    pub moved: u64,
    pub moved_bytes: u64,
    pub too_large: u64,
    /// Deferred or failed in the current pass.
    pub left_this_pass: u64,
    /// Deferred or failed in the last complete pass: what the run could not move.
    pub left: u64,
    pub done: bool,
    /// Who steps it now, and until when (unix seconds).
    pub lease_owner: String,
    pub lease_until: u64,
}

/// What [`Engine::continue_move_run`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveStep {
    /// No run in progress for this driver.
    Idle,
    /// Another mover holds the lease until `lease_until`: try again later.
    Busy(MoveRun),
    /// One step done.
    Stepped(MoveRun),
}

impl<S: MetadataStore, C: HttpClient> Engine<S, C> {
    /// The drain or rebalance in progress or last finished, if any.
    pub async fn move_run(&self) -> Result<Option<MoveRun>, S3Error> {
        let text = self
            .store
            .get_document(MOVE_RUN_DOCUMENT)
            .await
            .map_err(super::store_unavailable)?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    async fn save_move_run(&self, run: &MoveRun) -> Result<(), S3Error> {
        let text = serde_json::to_string(run).unwrap_or_default();
        self.store
            .put_document(MOVE_RUN_DOCUMENT, &text)
            .await
            .map_err(super::store_unavailable)
    }

    /// Starts `goal`, or resumes it when the stored run has the same goal and is not done
    /// (unless `restart`). Another goal in progress is refused unless `restart`. A drain
    /// first marks its backend read-only for every instance (admin overrides), so nothing new
    /// lands there.
    pub async fn start_move_run(
        &self,
        goal: MoveGoal,
        driver: MoveDriver,
        limits: MoveLimits,
        restart: bool,
        now: SystemTime,
    ) -> Result<MoveRun, S3Error> {
        if let MoveGoal::Drain(backend) = &goal {
            if self.config().backend(backend).is_none() {
                return Err(S3Error::new(
                    crate::error::S3ErrorCode::NoSuchBucket,
                    format!("no backend named {backend:?}"),
                ));
            }
        }
        if let Some(run) = self.move_run().await? {
            if !run.done && !restart {
                if run.goal == goal && run.driver == driver {
                    return Ok(run);
                }
                return Err(S3Error::new(
                    crate::error::S3ErrorCode::InvalidRequest,
                    format!(
                        "another move is in progress ({:?}, {} moved): let it finish, stop it (DELETE /_admin/api/moves) or start over with --restart",
                        run.goal, run.moved
                    ),
                ));
            }
        }
        if let MoveGoal::Drain(backend) = &goal {
            self.mark_read_only(backend).await?;
        }
        let run = MoveRun {
            goal,
            driver,
            cursor: MoveCursor::default(),
            limits,
            started: crate::time::unix_secs(now),
            pass: 1,
            examined: 0,
            moved: 0,
            moved_bytes: 0,
            too_large: 0,
            left_this_pass: 0,
            left: 0,
            done: false,
            lease_owner: String::new(),
            lease_until: 0,
        };
        self.save_move_run(&run).await?;
        Ok(run)
    }

    /// One step of the stored run of `driver`, of at most `batch` entries (also capped by the
    /// run's own limits), under the lease of `owner`.
    pub async fn continue_move_run(
        &self,
        batch: usize,
        driver: MoveDriver,
        owner: &str,
        now: SystemTime,
    ) -> Result<MoveStep, S3Error> {
        let Some(mut run) = self.move_run().await? else {
            return Ok(MoveStep::Idle);
        };
        if run.done || run.driver != driver {
            return Ok(MoveStep::Idle);
        }
        let secs = crate::time::unix_secs(now);
        if run.lease_owner != owner && run.lease_until > secs {
            return Ok(MoveStep::Busy(run));
        }
        // Take the lease, then read it back: of two takers, the later write wins and the
        // other backs off.
        run.lease_owner = owner.to_owned();
        run.lease_until = secs + LEASE_SECS;
        self.save_move_run(&run).await?;
        match self.move_run().await? {
            Some(r) if r.lease_owner == owner => {}
            Some(r) => return Ok(MoveStep::Busy(r)),
            None => return Ok(MoveStep::Idle),
        }
        let limits = MoveLimits {
            batch: batch.min(run.limits.batch).max(1),
            ..run.limits
        };
        let (report, cursor) = self
            .move_step(&run.goal, &run.cursor, limits, false, now)
            .await?;
        // The run may have been stopped or replaced meanwhile: keep that.
        if let Some(stored) = self.move_run().await? {
            if stored.done || stored.goal != run.goal || stored.started != run.started {
                return Ok(MoveStep::Idle);
            }
        }
        run.examined += report.examined;
        run.moved += report.moved;
        run.moved_bytes += report.moved_bytes;
        if run.pass == 1 {
            run.too_large += report.too_large;
        }
        run.left_this_pass += report.deferred + report.failed;
        run.cursor = cursor;
        if report.done {
            run.left = run.left_this_pass;
            if run.left > 0 && run.pass < MAX_PASSES {
                run.pass += 1;
                run.left_this_pass = 0;
                run.cursor = MoveCursor::default();
            } else {
                run.done = true;
            }
        }
        run.lease_until = crate::time::unix_secs(now) + LEASE_SECS;
        if run.done {
            run.lease_owner.clear();
            run.lease_until = 0;
        }
        self.save_move_run(&run).await?;
        if report.moved > 0 {
            tracing::info!(goal = ?run.goal, moved = run.moved, pass = run.pass, done = run.done, "objects moved");
        }
        Ok(MoveStep::Stepped(run))
    }

    /// Stops the run in progress (objects already moved stay moved).
    pub async fn cancel_move_run(&self) -> Result<(), S3Error> {
        if let Some(mut run) = self.move_run().await? {
            run.done = true;
            self.save_move_run(&run).await?;
        }
        Ok(())
    }
}

/// Bytes per backend against its share, for rebalancing by fill ratio: the share is the
/// backend's capacity (when every backend of the pool has one) or its weight.
struct Shares {
    used: BTreeMap<String, i64>,
}

/// A backend within this fraction of its share is left alone.
const TOLERANCE: f64 = 0.05;

impl Shares {
    async fn new<S: MetadataStore, C: HttpClient>(
        engine: &Engine<S, C>,
        state: &State,
    ) -> Result<Self, S3Error> {
        let usage = engine
            .store
            .list_usage()
            .await
            .map_err(super::store_unavailable)?;
        let mut used: BTreeMap<String, i64> = state
            .config
            .backends
            .iter()
            .map(|b| (b.name.clone(), 0))
            .collect();
        for u in usage {
            if let Some(v) = used.get_mut(&u.backend) {
                *v = u.used_bytes.max(0);
            }
        }
        // This process's changes not flushed to the store yet (earlier steps' moves).
        let pending = engine
            .pending_usage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (backend, (bytes, _)) in pending {
            if let Some(v) = used.get_mut(&backend) {
                *v = (*v + bytes).max(0);
            }
        }
        Ok(Self { used })
    }

    /// The backend furthest below its share that can take `size` bytes, when `from` is
    /// above its share; the planned move is booked.
    fn target(&mut self, states: &[BackendState], from: &str, size: u64) -> Option<String> {
        let capacity_shares = states.iter().all(|s| s.max_size.is_some());
        let share_of = |s: &BackendState| -> f64 {
            if capacity_shares {
                s.max_size.unwrap_or(0) as f64
            } else {
                f64::from(s.weight.max(1))
            }
        };
        let total_share: f64 = states.iter().map(share_of).sum();
        let total_used: f64 = states
            .iter()
            .map(|s| self.used.get(&s.name).copied().unwrap_or(0) as f64)
            .sum();
        if total_share <= 0.0 || total_used <= 0.0 {
            return None;
        }
        let target_of = |s: &BackendState| total_used * share_of(s) / total_share;
        let source = states.iter().find(|s| s.name == from)?;
        let source_used = self.used.get(from).copied().unwrap_or(0) as f64;
        if source_used <= target_of(source) * (1.0 + TOLERANCE) {
            return None;
        }
        let candidates = placement::write_candidates(states, Some(size)).ok()?;
        let best = candidates
            .into_iter()
            .filter(|s| s.name != from)
            .map(|s| {
                let used = self.used.get(&s.name).copied().unwrap_or(0) as f64;
                (target_of(s) - used - size as f64, s)
            })
            .filter(|(room, _)| *room >= 0.0)
            .max_by(|a, b| a.0.total_cmp(&b.0))?
            .1;
        let to = best.name.clone();
        *self.used.entry(from.to_owned()).or_default() -= size as i64;
        *self.used.entry(to.clone()).or_default() += size as i64;
        Some(to)
    }

    /// Takes back a booked move that did not happen.
    fn undo(&mut self, from: &str, to: &str, size: u64) {
        *self.used.entry(from.to_owned()).or_default() += size as i64;
        *self.used.entry(to.to_owned()).or_default() -= size as i64;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_executor::block_on;
    use http::Method;

    use super::*;
    use crate::config::Strategy;
    use crate::engine::tests::{config, Harness, ENDPOINTS};

    const LIMITS: MoveLimits = MoveLimits {
        batch: 7,
        max_object: 1 << 20,
        settle_secs: SETTLE_SECS,
    };

    fn on(h: &Harness, i: usize, prefix: &str) -> Vec<String> {
        h.s3()
            .object_keys(ENDPOINTS[i], &format!("real{}", i + 1))
            .into_iter()
            .filter(|k| k.starts_with(prefix))
            .collect()
    }

    /// Runs steps of `batch` entries until the pass is complete.
    fn run(h: &Harness, goal: &MoveGoal, now: SystemTime, dry_run: bool) -> MoveReport {
        let mut total = MoveReport::default();
        let mut cursor = MoveCursor::default();
        for _ in 0..1000 {
            let (report, next) =
                block_on(h.engine.move_step(goal, &cursor, LIMITS, dry_run, now)).unwrap();
            total.examined += report.examined;
            total.moved += report.moved;
            total.moved_bytes += report.moved_bytes;
            total.deferred += report.deferred;
            total.failed += report.failed;
            total.planned.extend(report.planned);
            cursor = next;
            if report.done {
                total.done = true;
                break;
            }
        }
        total
    }

    #[test]
    fn a_drain_moves_every_object_off_the_backend_and_each_reads_the_same() {
        let h = Harness::new(Strategy::RoundRobin);
        let bodies: Vec<Vec<u8>> = (0..30)
            .map(|i| format!("object {i} ").repeat(i + 1).into_bytes())
            .collect();
        for (i, body) in bodies.iter().enumerate() {
            assert_eq!(h.put(&format!("/photos/d/{i}"), body).status, 200);
        }
        let before = on(&h, 0, "photos/d/").len();
        assert!(before >= 5, "round-robin put some on b1");
        let goal = MoveGoal::Drain("b1".into());

        // Too young: nothing moves yet; a dry run plans without moving.
        let young = run(&h, &goal, h.now, false);
        assert_eq!((young.moved, young.deferred as usize), (0, before));
        let later = h.now + Duration::from_secs(SETTLE_SECS + 1);
        let plan = run(&h, &goal, later, true);
        assert_eq!(plan.planned.len(), before);
        assert!(plan.planned.iter().all(|m| m.from == "b1" && m.to != "b1"));
        assert_eq!(
            on(&h, 0, "photos/d/").len(),
            before,
            "a dry run moves nothing"
        );

        let done = run(&h, &goal, later, false);
        assert!(done.done);
        assert_eq!(done.moved as usize, before);
        assert!(on(&h, 0, "photos/d/").is_empty(), "b1 drained");
        assert_eq!(
            on(&h, 1, "photos/d/").len() + on(&h, 2, "photos/d/").len(),
            bodies.len(),
            "one copy each"
        );
        for (i, body) in bodies.iter().enumerate() {
            let got = h.get(&format!("/photos/d/{i}"));
            assert_eq!(
                (got.status.as_u16(), &got.body[..]),
                (200, &body[..]),
                "d/{i}"
            );
        }
        // No stale-copy record is left behind, and a second pass has nothing to do.
        assert!(block_on(h.engine.store().list_stale_copies(10))
            .unwrap()
            .is_empty());
        assert_eq!(run(&h, &goal, later, false).moved, 0);
    }

    /// Taken out of a bucket's pool without a drain first, a backend's objects are read through
    /// the index but missing from listings; a drain afterwards still moves them into the pool.
    #[test]
    fn a_drain_after_the_backend_left_the_pool_brings_its_objects_back_into_listings() {
        let mut c = config(Strategy::RoundRobin);
        c.virtual_buckets[0].backends = vec!["b1".into()];
        let h = Harness::with_config(c.clone());
        for i in 0..5 {
            assert_eq!(h.put(&format!("/photos/d/{i}"), b"kept").status, 200);
        }
        c.virtual_buckets[0].backends = vec!["b2".into(), "b3".into()];
        h.engine.set_config(std::sync::Arc::new(c));
        let listed = |h: &Harness| {
            crate::engine::tests::tags(&h.get("/photos?list-type=2").text(), "Key").len()
        };
        assert_eq!(listed(&h), 0, "out of the pool, out of listings");
        let later = h.now + Duration::from_secs(SETTLE_SECS + 1);
        let done = run(&h, &MoveGoal::Drain("b1".into()), later, false);
        assert_eq!((done.moved, done.done), (5, true));
        assert!(on(&h, 0, "photos/d/").is_empty(), "b1 drained");
        assert_eq!(listed(&h), 5);
        for i in 0..5 {
            assert_eq!(&h.get(&format!("/photos/d/{i}")).body[..], b"kept");
        }
    }

    #[test]
    fn an_object_changed_on_its_backend_since_it_was_indexed_is_not_moved() {
        let h = Harness::new(Strategy::RoundRobin);
        for i in 0..3 {
            h.put(&format!("/photos/c/{i}"), b"first");
        }
        let on_b1 = on(&h, 0, "photos/c/");
        assert!(!on_b1.is_empty());
        // Overwritten behind the index's back (another writer): the indexed version is gone.
        for real in &on_b1 {
            h.s3()
                .put_direct(ENDPOINTS[0], "real1", real, &b"second"[..]);
        }
        let later = h.now + Duration::from_secs(SETTLE_SECS + 1);
        let report = run(&h, &MoveGoal::Drain("b1".into()), later, false);
        assert_eq!((report.moved, report.deferred as usize), (0, on_b1.len()));
        assert_eq!(on(&h, 0, "photos/c/"), on_b1, "left where it is");
    }

    #[test]
    fn consistent_hash_rebalance_after_adding_a_backend_moves_only_what_the_new_one_wins() {
        let mut c = config(Strategy::ConsistentHash);
        c.backends[2].enabled = false;
        let h = Harness::with_config(c.clone());
        let n = 300;
        for i in 0..n {
            assert_eq!(
                h.put(&format!("/photos/h/{i}"), format!("v{i}").as_bytes())
                    .status,
                200
            );
        }
        assert!(on(&h, 2, "photos/h/").is_empty());
        c.backends[2].enabled = true;
        h.engine.set_config(std::sync::Arc::new(c));
        let later = h.now + Duration::from_secs(SETTLE_SECS + 1);
        let report = run(&h, &MoveGoal::Rebalance, later, false);
        assert!(
            report.planned.iter().all(|m| m.to == "b3"),
            "only onto the new backend"
        );
        let fraction = report.moved as f64 / n as f64;
        assert!(
            (fraction - 1.0 / 3.0).abs() < 0.1 / 3.0 + 0.05,
            "moved {fraction}"
        );
        assert_eq!(on(&h, 2, "photos/h/").len() as u64, report.moved);
        for i in 0..n {
            assert_eq!(
                h.get(&format!("/photos/h/{i}")).body,
                format!("v{i}").as_bytes()
            );
        }
        assert_eq!(
            run(&h, &MoveGoal::Rebalance, later, false).moved,
            0,
            "settled"
        );
    }

    #[test]
    fn fill_ratio_rebalance_moves_bytes_from_the_fullest_backend_until_within_tolerance() {
        let mut c = config(Strategy::RoundRobin);
        c.backends[1].enabled = false;
        c.backends[2].enabled = false;
        let h = Harness::with_config(c.clone());
        for i in 0..40 {
            h.put(&format!("/photos/f/{i}"), &[b'x'; 1000]);
        }
        block_on(h.engine.refresh(h.now)).unwrap();
        block_on(h.engine.scan_usage(100, h.now)).unwrap();
        c.backends[1].enabled = true;
        c.backends[2].enabled = true;
        h.engine.set_config(std::sync::Arc::new(c));
        let later = h.now + Duration::from_secs(SETTLE_SECS + 1);
        let report = run(&h, &MoveGoal::Rebalance, later, false);
        let counts: Vec<usize> = (0..3).map(|i| on(&h, i, "photos/f/").len()).collect();
        assert_eq!(counts.iter().sum::<usize>(), 40);
        assert!(
            counts.iter().all(|&c| (12..=15).contains(&c)),
            "{counts:?} after {report:?}"
        );
    }

    #[test]
    fn a_stored_drain_marks_its_backend_read_only_and_finishes_in_scheduled_steps() {
        let h = Harness::new(Strategy::RoundRobin);
        for i in 0..20 {
            h.put(&format!("/photos/s/{i}"), format!("s{i}").as_bytes());
        }
        let later = h.now + Duration::from_secs(SETTLE_SECS + 1);
        let run = block_on(h.engine.start_move_run(
            MoveGoal::Drain("b2".into()),
            MoveDriver::Scheduled,
            MoveLimits::default(),
            false,
            later,
        ))
        .unwrap();
        assert!(
            h.engine.config().backend("b2").unwrap().read_only,
            "marked read-only first"
        );
        assert_eq!(run.pass, 1);
        let budget = crate::engine::Budget::within(45, 3);
        for _ in 0..50 {
            let run = block_on(h.engine.run_scheduled(budget, &|| later));
            assert!(run.errors.is_empty(), "{:?}", run.errors);
            if block_on(h.engine.move_run()).unwrap().unwrap().done {
                break;
            }
        }
        let run = block_on(h.engine.move_run()).unwrap().unwrap();
        assert!(run.done && run.left == 0, "{run:?}");
        assert!(on(&h, 1, "photos/s/").is_empty());
        for i in 0..20 {
            assert_eq!(
                h.get(&format!("/photos/s/{i}")).body,
                format!("s{i}").as_bytes()
            );
        }
        // Resuming a finished run starts a new one; a restart of a running one starts over.
        let again = block_on(h.engine.start_move_run(
            MoveGoal::Drain("b2".into()),
            MoveDriver::Scheduled,
            MoveLimits::default(),
            false,
            later,
        ))
        .unwrap();
        assert!(!again.done && again.moved == 0);
        // Another goal while one runs is refused; a command's run is not stepped by the
        // scheduled job, and a held lease makes another mover wait.
        let other = block_on(h.engine.start_move_run(
            MoveGoal::Rebalance,
            MoveDriver::Cli,
            MoveLimits::default(),
            false,
            later,
        ));
        assert_eq!(
            other.unwrap_err().code,
            crate::error::S3ErrorCode::InvalidRequest
        );
        let step = block_on(
            h.engine
                .continue_move_run(5, MoveDriver::Scheduled, "one", later),
        );
        assert!(matches!(step.unwrap(), MoveStep::Stepped(_)));
        let busy = block_on(
            h.engine
                .continue_move_run(5, MoveDriver::Scheduled, "two", later),
        );
        assert!(matches!(busy.unwrap(), MoveStep::Busy(_)));
        let cli = block_on(h.engine.continue_move_run(5, MoveDriver::Cli, "cli", later));
        assert_eq!(cli.unwrap(), MoveStep::Idle);
    }

    #[test]
    fn a_bucket_deleted_between_steps_makes_the_drain_skip_no_other_bucket() {
        let h = Harness::new(Strategy::RoundRobin);
        assert_eq!(h.send(Method::PUT, "/alpha", &[], b"").status, 200);
        for i in 0..3 {
            h.put(&format!("/alpha/k{i}"), b"a");
            h.put(&format!("/photos/k{i}"), b"p");
        }
        let later = h.now + Duration::from_secs(SETTLE_SECS + 1);
        let goal = MoveGoal::Drain("b1".into());
        let limits = MoveLimits { batch: 3, ..LIMITS };
        // The first step walks alpha; then alpha goes away.
        let (first, cursor) =
            block_on(
                h.engine
                    .move_step(&goal, &MoveCursor::default(), limits, false, later),
            )
            .unwrap();
        assert_eq!(cursor.bucket.as_deref(), Some("alpha"), "{first:?}");
        for i in 0..3 {
            h.send(Method::DELETE, &format!("/alpha/k{i}"), &[], b"");
        }
        assert_eq!(h.send(Method::DELETE, "/alpha", &[], b"").status, 204);
        let mut cursor = cursor;
        for _ in 0..10 {
            let (report, next) =
                block_on(h.engine.move_step(&goal, &cursor, limits, false, later)).unwrap();
            cursor = next;
            if report.done {
                break;
            }
        }
        assert!(on(&h, 0, "photos/k").is_empty(), "photos was not skipped");
    }
}
