//! Where the copies of an object live, and the rule that keeps one live copy per key.
//!
//! Backends are the truth and the index only says where to look, so the promise that nothing
//! is lost, stale or resurrected rests on one invariant: **a key has one live copy in its
//! pool**. An index entry pointing at the wrong backend is harmless (the read finds nothing
//! there and asks the others); a second, older copy is not (a read, listing or reindex could
//! return it, and a delete could leave it behind). So:
//!
//! - A write goes to the backend that already holds the key. On an index hit that is the
//!   indexed backend; on a miss every backend of the pool is asked (a [`Survey`]: HEAD in
//!   parallel, bounded by the probe timeout) before the write is placed. When the holder no
//!   longer takes writes (read-only, full, down) the write goes elsewhere and the older copy is
//!   removed before the client is answered.
//! - Older copies are removed with `If-Match` on the ETag that was seen, so a removal never
//!   deletes a newer write that landed meanwhile. A removal that fails, and a backend that could
//!   not be asked, are recorded as a [`StaleCopy`]; the maintenance task and `reindex` settle
//!   them later (newest Last-Modified wins, ties to rendezvous order), so nothing is silently
//!   dropped.
//! - Wherever several copies are seen (a read's survey, a listing, reindex) the newest wins.
//! - A backend taken out of the pool by a config change (without a drain) keeps its copies,
//!   and index entries and stale-copy records still name it: writes, deletes, settling and
//!   reindex reach it through them ([`outside_pool`]), so no copy there comes back when it
//!   rejoins.
//!
//! Writes and deletes of one key in one process take turns ([`super::locks`]).

use std::time::SystemTime;

use futures_util::future::join_all;
use http::Method;

use super::backend::{self, backend_uri, BackendRequest};
use super::{record, store_unavailable, Call, Engine, State};
use crate::config::{Config, VirtualBucketConfig};
use crate::error::{S3Error, S3ErrorCode};
use crate::http::HttpClient;
use crate::placement;
use crate::store::{MetadataStore, ObjectRecord, StaleCopy};

/// One key of a virtual bucket, with the bucket's config (pool, key layout).
#[derive(Clone, Copy)]
pub(crate) struct ObjectRef<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub config: &'a VirtualBucketConfig,
}

impl ObjectRef<'_> {
    /// The key on a backend (`{bucket}/{key}` or `{key}`).
    pub fn real_key(&self) -> String {
        self.config.key_layout.real_key(self.bucket, self.key)
    }
}

/// Which backends of the pool a survey asks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ask<'a> {
    All,
    AllBut(&'a str),
    Only(&'a str),
}

impl Ask<'_> {
    fn includes(self, backend: &str) -> bool {
        match self {
            Ask::All => true,
            Ask::AllBut(b) => b != backend,
            Ask::Only(b) => b == backend,
        }
    }
}

/// One copy of an object on a backend, as a HEAD answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Copy {
    pub backend: String,
    pub etag: String,
    pub size: u64,
    /// Last-Modified, unix seconds.
    pub modified: u64,
}

/// What asking the backends of a pool about one key found.
#[derive(Debug, Default)]
pub(crate) struct Survey {
    /// The copies found, in probe order (rendezvous order: where consistent-hash puts the key).
    pub copies: Vec<Copy>,
    /// Backends that could not answer (down, timed out, an unexpected status).
    pub unknown: Vec<String>,
}

impl Survey {
    /// The live copy: the newest Last-Modified; ties go to the first in probe order.
    pub fn newest(&self) -> Option<&Copy> {
        newest(&self.copies)
    }

    /// Every copy but the newest.
    pub fn older(&self) -> Vec<Copy> {
        let Some(live) = self.newest() else {
            return Vec::new();
        };
        self.copies
            .iter()
            .filter(|c| c.backend != live.backend)
            .cloned()
            .collect()
    }
}

/// The live copy among those a survey found. The index entry names it when a copy with the
/// entry's ETag is where it points and no stale-copy record names that backend (the rule reads
/// follow too, [`Engine::locate`]): the gateway wrote that entry when it acknowledged the key's
/// last write. A copy elsewhere may be *newer* by Last-Modified and still not live: a write
/// that timed out on a hung backend can land there when it resumes, after the client was
/// answered from another backend (and after later writes of the key). Without a trusted entry
/// (lost, lagging, or its backend itself recorded) the newest copy wins.
pub(crate) fn live_copy<'a>(
    survey: &'a Survey,
    indexed: Option<&ObjectRecord>,
    recorded: &[String],
) -> Option<&'a Copy> {
    let trusted = indexed
        .filter(|entry| !recorded.contains(&entry.backend))
        .and_then(|entry| {
            survey
                .copies
                .iter()
                .find(|c| c.backend == entry.backend && same_etag(&c.etag, &entry.etag))
        });
    trusted.or_else(|| survey.newest())
}

/// The backends among `named` (an index entry's, stale-copy records') that are outside
/// `bucket`'s pool. A backend taken out of a pool without a drain keeps what it holds, and
/// reads still find it through the index; a write or delete that passed it by would leave a
/// copy that comes back when it rejoins the pool. So writes, deletes and the maintenance task
/// reach these as well. One no longer configured at all cannot be asked: a survey counts it
/// as unknown, as it does a backend that is down, so a delete waits for it (503) and a write
/// records the copy there for the maintenance task to settle once it is configured again.
pub(crate) fn outside_pool<'n>(
    bucket: &VirtualBucketConfig,
    named: impl IntoIterator<Item = &'n str>,
) -> Vec<String> {
    let mut outside: Vec<String> = Vec::new();
    for name in named {
        if !bucket.has_backend(name) && !outside.iter().any(|o| o == name) {
            outside.push(name.to_owned());
        }
    }
    outside
}

/// Whether `backend` is configured but not in `bucket`'s pool (see [`outside_pool`]).
pub(crate) fn out_of_pool(config: &Config, bucket: &VirtualBucketConfig, backend: &str) -> bool {
    !bucket.has_backend(backend) && config.backend(backend).is_some()
}

/// ETags as S3 sends them are quoted; an empty one (an entry indexed ahead of a redirected
/// upload) matches nothing.
fn same_etag(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_matches('"'), b.trim_matches('"'));
    !a.is_empty() && a == b
}

/// The newest of `copies` (ties: the first).
pub(crate) fn newest(copies: &[Copy]) -> Option<&Copy> {
    let mut best: Option<&Copy> = None;
    for c in copies {
        if best.is_none_or(|b| c.modified > b.modified) {
            best = Some(c);
        }
    }
    best
}

/// Where a write of one key goes, and what it leaves to clean up.
#[derive(Debug)]
pub(crate) struct WritePlan {
    pub target: String,
    /// The target was chosen freely (no copy exists): a send that fails may move on to the
    /// next backend in placement order.
    pub movable: bool,
    /// The size of the copy on the target that the write replaces, if any (usage).
    pub overwritten: Option<u64>,
    /// Copies on other backends that the write makes older: removed once it succeeded.
    pub older: Vec<Copy>,
    /// Backends that could not be asked whether they hold a copy: recorded as stale-copy
    /// hints once the write succeeded, so that a copy there is settled when they are back.
    pub unknown: Vec<String>,
    /// The plan rests on an index entry no backend has confirmed yet: the write must carry
    /// this ETag in `If-Match`, and a 412 or 404 answer means the full plan is needed
    /// ([`Engine::plan_conditional_overwrite`]).
    pub if_match: Option<String>,
}

impl<S: MetadataStore, C: HttpClient> Engine<S, C> {
    /// Asks backends of `object`'s pool, and the backends outside it in `outside` (see
    /// [`outside_pool`]), whether they hold the key: HEAD in parallel, each bounded by the
    /// probe timeout. A backend that is down is not waited on.
    pub(crate) async fn survey(
        &self,
        state: &State,
        object: ObjectRef<'_>,
        ask: Ask<'_>,
        outside: &[String],
        now: SystemTime,
    ) -> Survey {
        let real_key = object.real_key();
        let states = self.pool_states(state, object.config);
        let order = placement::probe_order(&states, object.bucket, object.key);
        let asks = order
            .iter()
            .map(|s| s.name.as_str())
            .chain(outside.iter().map(String::as_str))
            .filter(|name| ask.includes(name))
            .map(|name| {
                let real_key = &real_key;
                async move {
                    let name = name.to_owned();
                    let Some(backend) = state.config.backend(&name) else {
                        return (name, Err(()));
                    };
                    let answer = async {
                        let mut request = BackendRequest::new(
                            Method::HEAD,
                            backend_uri(backend, Some(real_key), "").map_err(drop)?,
                        );
                        request.timeout = Some(state.config.balancer.probe_timeout);
                        let response = self
                            .send_at(backend, "HeadObject", request, now)
                            .await
                            .map_err(drop)?;
                        match response.status().as_u16() {
                            200 => Ok(Some(copy_of(&name, response.headers()))),
                            404 => Ok(None),
                            status => {
                                tracing::warn!(backend = %name, status, "HEAD got an unexpected answer");
                                Err(())
                            }
                        }
                    }
                    .await;
                    (name, answer)
                }
            });
        let mut survey = Survey::default();
        for (name, answer) in join_all(asks).await {
            match answer {
                Ok(Some(copy)) => survey.copies.push(copy),
                Ok(None) => {}
                Err(()) => survey.unknown.push(name),
            }
        }
        survey
    }

    /// Removes `copies` of `object` (older copies), each only if it is still the version that
    /// was seen (`If-Match`). What cannot be removed now is recorded as a [`StaleCopy`].
    /// Returns the copies removed, and how many were left (recorded).
    pub(crate) async fn remove_copies(
        &self,
        state: &State,
        object: ObjectRef<'_>,
        copies: &[Copy],
        now: SystemTime,
    ) -> (Vec<Copy>, usize) {
        let real_key = object.real_key();
        let removals = copies.iter().map(|copy| {
            let real_key = &real_key;
            async move {
                let Some(backend) = state.config.backend(&copy.backend) else {
                    return (copy, Removal::Failed);
                };
                // One retry: a removal left undone costs a stale-copy record and a later pass.
                for _ in 0..2 {
                    let Ok(uri) = backend_uri(backend, Some(real_key), "") else {
                        return (copy, Removal::Failed);
                    };
                    let mut request = BackendRequest::new(Method::DELETE, uri);
                    if !copy.etag.is_empty() {
                        backend::insert_header(&mut request.headers, "if-match", &copy.etag);
                    }
                    request.timeout = Some(state.config.balancer.probe_timeout);
                    match self.send_at(backend, "DeleteObject", request, now).await {
                        Ok(r) if r.status().is_success() => return (copy, Removal::Removed),
                        // Gone already: nothing left to remove.
                        Ok(r) if r.status().as_u16() == 404 => return (copy, Removal::Gone),
                        // Another write replaced it since it was seen: settle it later.
                        Ok(r) if r.status().as_u16() == 412 => return (copy, Removal::Changed),
                        Ok(r) => {
                            tracing::warn!(backend = %copy.backend, status = r.status().as_u16(), "removing an older copy failed");
                        }
                        Err(_) => {}
                    }
                }
                (copy, Removal::Failed)
            }
        });
        let (mut removed, mut left) = (Vec::new(), 0);
        for (copy, outcome) in join_all(removals).await {
            match outcome {
                Removal::Removed => removed.push(copy.clone()),
                Removal::Gone => {}
                Removal::Changed | Removal::Failed => {
                    let etag = (outcome == Removal::Failed && !copy.etag.is_empty())
                        .then(|| copy.etag.clone());
                    self.note_stale_copy(object, &copy.backend, etag, now).await;
                    left += 1;
                }
            }
        }
        (removed, left)
    }

    /// Records that `backend` may hold a copy of `object` that is not the live one.
    pub(crate) async fn note_stale_copy(
        &self,
        object: ObjectRef<'_>,
        backend: &str,
        etag: Option<String>,
        now: SystemTime,
    ) {
        let copy = StaleCopy {
            bucket: object.bucket.to_owned(),
            key: object.key.to_owned(),
            backend: backend.to_owned(),
            etag,
            noted: crate::time::unix_secs(now),
        };
        match self.store.put_stale_copy(&copy).await {
            Ok(()) => {
                tracing::info!(
                    bucket = object.bucket,
                    key = object.key,
                    backend,
                    "an older copy is left for the maintenance task to remove"
                );
                if !self.state().stale_copies_pending {
                    let stamp = crate::time::iso8601(now);
                    if let Err(e) = self
                        .store
                        .put_document(super::STALE_COPIES_DOCUMENT, &stamp)
                        .await
                    {
                        tracing::error!(error = %e, "could not flag the recorded older copy");
                    }
                    self.update_state(|s| s.stale_copies_pending = true);
                }
            }
            Err(e) => {
                // The index is not the truth, reindex still finds and removes it.
                tracing::error!(error = %e, bucket = object.bucket, key = object.key, backend, "could not record an older copy to remove; run reindex");
            }
        }
    }

    /// Makes sure `object` has one live copy: asks every backend of the pool (and those outside
    /// it that the index or a record names), keeps the newest, removes
    /// the others and points the index at the live one. Returns how many older copies are
    /// left (recorded again). Fails when a backend could not answer (nothing is decided
    /// then). No copy anywhere: the index entry, if any, is dropped.
    pub(crate) async fn settle(
        &self,
        state: &State,
        object: ObjectRef<'_>,
        now: SystemTime,
    ) -> Result<usize, S3Error> {
        let indexed = self
            .store
            .get_object(object.bucket, object.key)
            .await
            .map_err(store_unavailable)?;
        let recorded: Vec<String> = self
            .store
            .stale_copies_of(object.bucket, object.key)
            .await
            .map_err(store_unavailable)?
            .into_iter()
            .map(|c| c.backend)
            .collect();
        let named = indexed.iter().map(|e| e.backend.as_str());
        let outside = outside_pool(
            object.config,
            named.chain(recorded.iter().map(String::as_str)),
        );
        let survey = self.survey(state, object, Ask::All, &outside, now).await;
        if !survey.unknown.is_empty() {
            return Err(S3Error::unavailable(
                "A backend that may hold this object is unavailable. Please try again.",
            ));
        }
        let Some(live) = live_copy(&survey, indexed.as_ref(), &recorded).cloned() else {
            self.store
                .delete_object_unless_newer(object.bucket, object.key, crate::time::unix_secs(now))
                .await
                .map_err(store_unavailable)?;
            return Ok(0);
        };
        let older: Vec<Copy> = survey
            .copies
            .iter()
            .filter(|c| c.backend != live.backend)
            .cloned()
            .collect();
        let (removed, left) = self.remove_copies(state, object, &older, now).await;
        for c in &removed {
            self.count_usage(&c.backend, -(c.size as i64), -1);
        }
        // An entry written after the live copy was seen belongs to a newer write: keep it.
        self.store
            .put_object_unless_newer(
                object.bucket,
                object.key,
                &copy_record(&live),
                live.modified + 1,
            )
            .await
            .map_err(store_unavailable)?;
        Ok(left)
    }

    /// Whether `backend` is in the pool of `bucket` and takes new writes now (enabled,
    /// healthy, not read-only, within budget and not full).
    fn writable(&self, state: &State, bucket: &VirtualBucketConfig, backend: &str) -> bool {
        self.pool_state(state, bucket, backend)
            .is_some_and(|s| placement::takes_writes(&s))
    }

    /// Where a write of `key` (of the call's bucket) goes: the backend holding the key if it
    /// takes writes, else a new placement; `fixed` forces the target (CompleteMultipartUpload
    /// writes where its parts are).
    pub(crate) async fn plan_write(
        &self,
        call: &Call<'_>,
        key: &str,
        size: Option<u64>,
        fixed: Option<&str>,
    ) -> Result<WritePlan, S3Error> {
        let entry = self.indexed(call, key).await?;
        self.plan_write_from(call, key, size, fixed, entry).await
    }

    /// The index entry of `key` (of the call's bucket). One that names a backend no longer
    /// configured is kept: the copy there becomes an older one that the write records
    /// ([`outside_pool`]).
    pub(crate) async fn indexed(
        &self,
        call: &Call<'_>,
        key: &str,
    ) -> Result<Option<ObjectRecord>, S3Error> {
        self.store
            .get_object(call.bucket(), key)
            .await
            .map_err(store_unavailable)
    }

    /// [`Self::plan_write`] with the index entry already read (`None`: ask every backend).
    pub(crate) async fn plan_write_from(
        &self,
        call: &Call<'_>,
        key: &str,
        size: Option<u64>,
        fixed: Option<&str>,
        entry: Option<ObjectRecord>,
    ) -> Result<WritePlan, S3Error> {
        let object = ObjectRef {
            bucket: call.bucket(),
            key,
            config: call.bucket_config(),
        };
        let outside = outside_pool(object.config, entry.iter().map(|e| e.backend.as_str()));
        if let Some(entry) = &entry {
            // An index hit. The entry may be misdirected (a lagging or repaired index), so the
            // copy is confirmed where it points (one HEAD); by the invariant it is then the
            // only one.
            let stays = match fixed {
                Some(f) => f == entry.backend,
                None => self.writable(call.state, object.config, &entry.backend),
            };
            if stays {
                let here = self
                    .survey(
                        call.state,
                        object,
                        Ask::Only(&entry.backend),
                        &outside,
                        call.ctx.now,
                    )
                    .await;
                if let Some(copy) = here.copies.first() {
                    return Ok(WritePlan {
                        target: entry.backend.clone(),
                        movable: false,
                        overwritten: Some(copy.size),
                        older: Vec::new(),
                        unknown: Vec::new(),
                        if_match: None,
                    });
                }
            }
        }
        // No entry, a misdirected one, or the key must move: find every copy first, on the
        // indexed backend too when it has left the pool (its copy becomes an older one).
        let survey = self
            .survey(call.state, object, Ask::All, &outside, call.ctx.now)
            .await;
        let (target, movable) = match fixed {
            Some(f) => (f.to_owned(), false),
            None => {
                let mut holders: Vec<&Copy> = survey.copies.iter().collect();
                // Newest first (stable: probe order among equals).
                holders.sort_by_key(|c| std::cmp::Reverse(c.modified));
                match holders
                    .iter()
                    .find(|c| self.writable(call.state, object.config, &c.backend))
                {
                    Some(c) => (c.backend.clone(), false),
                    None => (self.place(call, key, size, &[])?, survey.copies.is_empty()),
                }
            }
        };
        let overwritten = survey
            .copies
            .iter()
            .find(|c| c.backend == target)
            .map(|c| c.size);
        let older = survey
            .copies
            .iter()
            .filter(|c| c.backend != target)
            .cloned()
            .collect();
        let unknown = survey
            .unknown
            .into_iter()
            .filter(|b| *b != target)
            .collect();
        Ok(WritePlan {
            target,
            movable,
            overwritten,
            older,
            unknown,
            if_match: None,
        })
    }

    /// The plan for an overwrite of an indexed key that the backend itself confirms: the
    /// write goes where the index entry points, with the entry's ETag in `If-Match`, instead
    /// of a HEAD before it. A backend that honours the header
    /// ([`crate::config::BackendConfig::conditional_writes`]) stores nothing and answers 412
    /// or 404 when the indexed copy is not there; the caller then plans in full
    /// ([`Self::plan_write_from`] with no entry) and sends the body again, so it must hold
    /// the body (at most `retry_buffer` bytes). Where the entry holds the very copy, the
    /// invariant says it is the only one, as after a HEAD.
    ///
    /// `None` when this does not apply: no ETag (a redirected upload indexed ahead of it), a
    /// backend without conditional writes or that takes no writes now, or a body too large
    /// to send twice.
    /// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html>
    pub(crate) fn plan_conditional_overwrite(
        &self,
        call: &Call<'_>,
        entry: &ObjectRecord,
        size: u64,
    ) -> Option<WritePlan> {
        let conditional = call
            .config
            .backend(&entry.backend)
            .is_some_and(|b| b.conditional_writes);
        if !conditional || entry.etag.is_empty() || size > call.config.balancer.retry_buffer {
            return None;
        }
        if !self.writable(call.state, call.bucket_config(), &entry.backend) {
            return None;
        }
        let etag = if entry.etag.starts_with('"') {
            entry.etag.clone()
        } else {
            format!("\"{}\"", entry.etag)
        };
        Some(WritePlan {
            target: entry.backend.clone(),
            movable: false,
            overwritten: Some(entry.size),
            older: Vec::new(),
            unknown: Vec::new(),
            if_match: Some(etag),
        })
    }

    /// Books a write that succeeded on `target` according to `plan`: the index entry, usage,
    /// removal of the older copies and the stale-copy hints for backends that could not be
    /// asked.
    pub(crate) async fn finish_write(
        &self,
        call: &Call<'_>,
        key: &str,
        plan: &WritePlan,
        target: &str,
        size: u64,
        etag: &str,
    ) {
        let object = ObjectRef {
            bucket: call.bucket(),
            key,
            config: call.bucket_config(),
        };
        if let Err(e) = self
            .store
            .put_object(
                object.bucket,
                key,
                &record(target, size, etag, call.ctx.now),
            )
            .await
        {
            tracing::error!(error = %e, bucket = object.bucket, key, "object written but not indexed; reads will look for it");
        }
        self.count_usage(target, size as i64, 1);
        if target == plan.target {
            if let Some(old) = plan.overwritten {
                self.count_usage(target, -(old as i64), -1);
            }
        }
        let older: Vec<Copy> = plan
            .older
            .iter()
            .filter(|c| c.backend != target)
            .cloned()
            .collect();
        let (removed, _) = self
            .remove_copies(call.state, object, &older, call.ctx.now)
            .await;
        for c in removed {
            self.count_usage(&c.backend, -(c.size as i64), -1);
        }
        for b in plan.unknown.iter().filter(|b| *b != target) {
            self.note_stale_copy(object, b, None, call.ctx.now).await;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    Removed,
    Gone,
    Changed,
    Failed,
}

/// The copy a HEAD answer describes.
fn copy_of(backend: &str, headers: &http::HeaderMap) -> Copy {
    Copy {
        backend: backend.to_owned(),
        etag: backend::header_str(headers, "etag")
            .unwrap_or_default()
            .to_owned(),
        size: backend::header_str(headers, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        modified: backend::header_str(headers, "last-modified")
            .and_then(crate::time::parse_http_date)
            .map(crate::time::unix_secs)
            .unwrap_or(0),
    }
}

/// The index entry of a copy.
pub(crate) fn copy_record(c: &Copy) -> ObjectRecord {
    ObjectRecord {
        backend: c.backend.clone(),
        size: c.size,
        etag: c.etag.clone(),
        last_modified: c.modified,
    }
}

/// Errors a write on a backend may be retried elsewhere after: the backend could not be
/// reached or failed (5xx), as opposed to refusing the request (4xx).
pub(crate) fn retryable(e: &S3Error) -> bool {
    matches!(
        e.code,
        S3ErrorCode::ServiceUnavailable | S3ErrorCode::SlowDown | S3ErrorCode::InternalError
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(backend: &str, modified: u64) -> Copy {
        Copy {
            backend: backend.into(),
            etag: format!("\"{backend}\""),
            size: 1,
            modified,
        }
    }

    #[test]
    fn newest_wins_and_ties_go_to_probe_order() {
        let s = Survey {
            copies: vec![c("b2", 5), c("b1", 9), c("b3", 9)],
            unknown: vec![],
        };
        assert_eq!(s.newest().unwrap().backend, "b1");
        let older: Vec<_> = s.older().into_iter().map(|c| c.backend).collect();
        assert_eq!(older, ["b2", "b3"]);
        assert!(Survey::default().newest().is_none());
        assert!(Survey::default().older().is_empty());
    }
}
