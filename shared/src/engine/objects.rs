//! GetObject, HeadObject, PutObject, CopyObject, DeleteObject, DeleteObjects, and finding
//! where an object lives (the index, else asking the backends).

use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{HeaderValue, Method, StatusCode};

use super::backend::{self, backend_error, backend_uri, BackendRequest};
use super::copies::{copy_record, outside_pool, retryable, Ask, ObjectRef};
use super::{empty, redirect, store_unavailable, xml, Call, Engine};
use crate::body::Body;
use crate::config::BackendConfig;
use crate::error::{S3Error, S3ErrorCode};
use crate::http::HttpClient;
use crate::sigv4::Identity;
use crate::store::MetadataStore;
use crate::xml::DeleteOutcome;

/// Where an object lives.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    pub backend: String,
    /// The location came from the index (it may be stale), not from asking the backends.
    pub from_index: bool,
    /// The object's size, as the index or the backend knows it.
    pub size: u64,
}

impl Located {
    fn indexed(entry: crate::store::ObjectRecord) -> Self {
        Self {
            backend: entry.backend,
            from_index: true,
            size: entry.size,
        }
    }
}

/// GetObject's response overrides and the header each sets. In proxy mode the gateway sets
/// them itself, so the answer does not depend on the backend's support; a redirect hands them
/// to the backend in the presigned URL. Signed requests only, as AWS.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html>
const RESPONSE_OVERRIDES: &[(&str, http::HeaderName)] = &[
    ("response-cache-control", http::header::CACHE_CONTROL),
    (
        "response-content-disposition",
        http::header::CONTENT_DISPOSITION,
    ),
    ("response-content-encoding", http::header::CONTENT_ENCODING),
    ("response-content-language", http::header::CONTENT_LANGUAGE),
    ("response-content-type", http::header::CONTENT_TYPE),
    ("response-expires", http::header::EXPIRES),
];

/// The response overrides of the request, as headers. Refused on anonymous requests, and
/// when a value cannot be a header value.
fn response_overrides(call: &Call<'_>) -> Result<Vec<(http::HeaderName, HeaderValue)>, S3Error> {
    let mut out = Vec::new();
    for (param, header) in RESPONSE_OVERRIDES {
        let Some(value) = call.s3.query.get(param) else {
            continue;
        };
        if matches!(call.verified.identity, Identity::Anonymous) {
            return Err(S3Error::new(
                S3ErrorCode::InvalidRequest,
                "Request specific response headers cannot be used for anonymous GET requests.",
            ));
        }
        let value = HeaderValue::from_str(value).map_err(|_| {
            S3Error::invalid_argument(format!("{param} is not a valid header value"))
        })?;
        out.push((header.clone(), value));
    }
    Ok(out)
}

/// The query of a GetObject for the backend: `partNumber`, and in a redirect the response
/// overrides too (the backend applies them there; in proxy mode the gateway does).
fn get_query(call: &Call<'_>, redirects: bool) -> String {
    let keep = |name: &str| {
        name == "partNumber" || (redirects && RESPONSE_OVERRIDES.iter().any(|(p, _)| *p == name))
    };
    let mut pairs: Vec<String> = call
        .s3
        .query
        .0
        .iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| format!("{k}={}", backend::encode_query_value(v)))
        .collect();
    pairs.sort();
    pairs.join("&")
}

/// A versionId other than `null` names a version this unversioned gateway never has.
fn check_version(call: &Call<'_>) -> Result<(), S3Error> {
    match call.s3.query.get("versionId") {
        None | Some("null") => Ok(()),
        Some(_) => Err(S3Error::invalid_argument("Invalid version id specified")),
    }
}

impl<S: MetadataStore, C: HttpClient> Engine<S, C> {
    /// Finds `key` of `bucket`: the index, or else every backend of the pool is asked.
    pub(crate) async fn locate(
        &self,
        call: &Call<'_>,
        bucket: &str,
        key: &str,
    ) -> Result<Located, S3Error> {
        match self.store.get_object(bucket, key).await {
            Ok(Some(rec)) => {
                // The live copy is on a backend taken out of the config: it cannot be read
                // now, but it is not gone (503, never a false 404).
                call.backend(&rec.backend)?;
                // While older copies are recorded, a lagging index entry may point at one:
                // then every backend is asked and the newest copy wins.
                if !call.state.stale_copies_pending {
                    return Ok(Located::indexed(rec));
                }
                let recorded = self.store.stale_copies_of(bucket, key).await;
                let older_there = recorded
                    .as_ref()
                    .map_or(true, |c| c.iter().any(|c| c.backend == rec.backend));
                if !older_there {
                    return Ok(Located::indexed(rec));
                }
                // Those backends are asked even when they have left the pool.
                let mut named = vec![rec.backend];
                named.extend(recorded.into_iter().flatten().map(|c| c.backend));
                return self.find(call, bucket, key, None, &named).await;
            }
            Ok(_) => {}
            // The index is optional for reads: ask the backends instead.
            Err(e) => tracing::warn!(error = %e, "index lookup failed; asking the backends"),
        }
        self.find(call, bucket, key, None, &[]).await
    }

    /// Asks every backend of `bucket`'s pool but `skip` for `key` (HEAD, in parallel), and
    /// those among `named` that have left the pool ([`super::copies::outside_pool`]); the
    /// newest copy is the live one and the index is pointed at it. Several copies (left by an
    /// earlier failure) are recorded for the maintenance task to settle. None found:
    /// NoSuchKey, unless a backend could not answer (then ServiceUnavailable: never a false
    /// 404).
    pub(crate) async fn find(
        &self,
        call: &Call<'_>,
        bucket: &str,
        key: &str,
        skip: Option<&str>,
        named: &[String],
    ) -> Result<Located, S3Error> {
        // The call's own bucket is looked up already; a copy source may be another one.
        let other;
        let config = if bucket == call.bucket() {
            call.bucket_config()
        } else {
            other = call.config.bucket_or_default(bucket);
            &other
        };
        let object = ObjectRef {
            bucket,
            key,
            config,
        };
        let ask = match skip {
            Some(b) => Ask::AllBut(b),
            None => Ask::All,
        };
        let outside = outside_pool(config, named.iter().map(String::as_str));
        let survey = self
            .survey(call.state, object, ask, &outside, call.ctx.now)
            .await;
        let Some(live) = survey.newest().cloned() else {
            return Err(if survey.unknown.is_empty() {
                S3Error::no_such_key(key)
            } else {
                S3Error::unavailable(
                    "A backend that may hold this object is unavailable. Please try again.",
                )
            });
        };
        // With a backend unanswered, a copy recorded as older may be all that is left to
        // see: serving it would return older bytes than the live copy holds.
        if !survey.unknown.is_empty() {
            let recorded_older = self
                .store
                .stale_copies_of(bucket, key)
                .await
                .map_or(true, |c| c.iter().any(|c| c.backend == live.backend));
            if recorded_older {
                return Err(S3Error::unavailable(
                    "The backend holding the latest copy of this object is unavailable. Please try again.",
                ));
            }
        }
        for older in survey.older() {
            self.note_stale_copy(object, &older.backend, Some(older.etag), call.ctx.now)
                .await;
        }
        // On a miss, conditional: a write that indexed the key meanwhile knows better. An
        // entry found stale (`skip`) is replaced whatever its date.
        let entry = copy_record(&live);
        let repaired = match skip {
            Some(_) => self.store.put_object(bucket, key, &entry).await,
            None => self
                .store
                .put_object_unless_newer(bucket, key, &entry, live.modified + 1)
                .await
                .map(drop),
        };
        if let Err(e) = repaired {
            tracing::warn!(error = %e, "could not repair the index after finding an object");
        }
        Ok(Located {
            backend: live.backend,
            from_index: false,
            size: live.size,
        })
    }

    pub(crate) async fn get_object(
        &self,
        call: &mut Call<'_>,
    ) -> Result<http::Response<C::Body>, S3Error> {
        check_version(call)?;
        let (bucket, key) = (call.bucket().to_owned(), call.key().to_owned());
        let head = call.parts.method == Method::HEAD;
        let overrides = response_overrides(call)?;
        let mut located = self.locate(call, &bucket, &key).await?;
        loop {
            let backend = call.backend(&located.backend)?;
            call.log.backend = Some(backend.name.clone());
            let redirects = !head && call.redirects(false);
            let uri = backend_uri(
                backend,
                Some(&call.real_key(&key)),
                &get_query(call, redirects),
            )?;
            if redirects {
                let url = self.signers.presign(
                    &Method::GET,
                    &uri,
                    backend,
                    call.config.api.presign_expiry,
                    call.ctx.now,
                )?;
                return redirect(call.config.api.redirect_status, &url);
            }
            let mut request = BackendRequest::new(call.parts.method.clone(), uri);
            request.headers = backend::read_headers(&call.parts.headers);
            request.timeout = Some(call.config.balancer.probe_timeout);
            let response = self
                .send(
                    call,
                    backend,
                    if head { "HeadObject" } else { "GetObject" },
                    request,
                )
                .await?;
            let status = response.status();
            if status == StatusCode::NOT_FOUND && located.from_index {
                // The index was stale: the object moved, or was removed behind our back.
                match self
                    .find(call, &bucket, &key, Some(&backend.name), &[])
                    .await
                {
                    Ok(found) => {
                        located = found;
                        continue;
                    }
                    Err(e) => {
                        if e.code == S3ErrorCode::NoSuchKey {
                            // Unless a write indexed it meanwhile.
                            let _ = self
                                .store
                                .delete_object_unless_newer(
                                    &bucket,
                                    &key,
                                    crate::time::unix_secs(call.ctx.now),
                                )
                                .await;
                        }
                        return Err(e);
                    }
                }
            }
            if status.is_success() {
                let mut out = http::Response::new(C::Body::empty());
                *out.status_mut() = status;
                *out.headers_mut() = backend::response_headers(response.headers());
                for (name, value) in &overrides {
                    out.headers_mut().insert(name.clone(), value.clone());
                }
                call.log.bytes = backend::header_str(response.headers(), "content-length")
                    .and_then(|v| v.parse().ok());
                if !head {
                    *out.body_mut() = response.into_body();
                }
                return Ok(out);
            }
            if status == StatusCode::NOT_MODIFIED {
                let mut out = empty(StatusCode::NOT_MODIFIED);
                *out.headers_mut() = backend::response_headers(response.headers());
                return Ok(out);
            }
            return Err(backend_error(&backend.name, response).await);
        }
    }

    /// The length of the object's bytes in a write: decoded length for aws-chunked bodies.
    pub(crate) fn object_length(call: &Call<'_>, body: &C::Body) -> Result<u64, S3Error> {
        let length =
            crate::sigv4::decoded_content_length(&call.verified.payload, &call.parts.headers)
                .or_else(|| body.exact_len());
        let length = length.ok_or_else(|| {
            S3Error::new(
                S3ErrorCode::MissingContentLength,
                "You must provide the Content-Length HTTP header.",
            )
        })?;
        if let Some(max) = call.config.api.max_body_bytes {
            if length > max {
                return Err(S3Error::new(
                    S3ErrorCode::EntityTooLarge,
                    format!(
                        "Your proposed upload of {length} bytes exceeds this deployment's limit of {max} bytes per request. \
                         Use a multipart upload (parts up to the limit) or a presigned URL issued by the gateway."
                    ),
                ));
            }
        }
        Ok(length)
    }

    /// The request body as the object's bytes: aws-chunked decoded, signatures and checksums
    /// checked as it streams. The verdict tells why the stream failed, if it did.
    pub(crate) fn object_body(
        call: &Call<'_>,
        body: C::Body,
    ) -> Result<(C::Body, BodyVerdict), S3Error> {
        let verdict = BodyVerdict::default();
        let mut filter = crate::sigv4::body_filter(&call.verified.payload, &call.parts.headers)?;
        if let Some(len) = body.length_to_verify() {
            filter = Some(Box::new(crate::body::LengthCheck::new(len, filter)));
        }
        let body = match filter {
            Some(filter) => body.filter(Box::new(Reporting {
                inner: filter,
                verdict: verdict.clone(),
            })),
            None => body,
        };
        Ok((body, verdict))
    }

    /// Sends a write carrying the client's body. When the body check failed mid-stream (the
    /// backend then saw a broken body and stored nothing) the client gets that check's error,
    /// not the transport failure it caused.
    pub(crate) async fn send_body(
        &self,
        call: &Call<'_>,
        backend: &BackendConfig,
        operation: &'static str,
        request: BackendRequest<C::Body>,
        verdict: &BodyVerdict,
    ) -> Result<http::Response<C::Body>, S3Error> {
        let result = self.send(call, backend, operation, request).await;
        if let Some(e) = verdict.take() {
            return Err(e);
        }
        let response = result?;
        if !response.status().is_success() {
            return Err(backend_error(&backend.name, response).await);
        }
        Ok(response)
    }

    /// Reads a small request body (XML) whole, through the body checks.
    pub(crate) async fn small_body(
        call: &Call<'_>,
        body: C::Body,
        limit: usize,
    ) -> Result<bytes::Bytes, S3Error> {
        let (body, verdict) = Self::object_body(call, body)?;
        let collected = body.collect(limit).await;
        if let Some(e) = verdict.take() {
            return Err(e);
        }
        collected
    }

    pub(crate) async fn put_object(
        &self,
        call: &mut Call<'_>,
        body: C::Body,
    ) -> Result<http::Response<C::Body>, S3Error> {
        let key = call.key().to_owned();
        let length = Self::object_length(call, &body)?;
        let _turn = self.key_locks.lock(call.bucket(), &key).await;
        // An overwrite the backend can confirm itself (`If-Match`) skips the HEAD. Not for a
        // client's own conditional write (its headers go to the backend as they are), nor for
        // a redirect (the client sends the body, once).
        let client_conditional = call.parts.headers.contains_key(http::header::IF_MATCH)
            || call.parts.headers.contains_key(http::header::IF_NONE_MATCH);
        let entry = self.indexed(call, &key).await?;
        let fast = match &entry {
            Some(e) if !client_conditional && !call.redirects(true) => {
                self.plan_conditional_overwrite(call, e, length)
            }
            _ => None,
        };
        let mut plan = match fast {
            Some(plan) => plan,
            None => {
                self.plan_write_from(call, &key, Some(length), None, entry)
                    .await?
            }
        };
        call.log.bytes = Some(length);
        // A redirect hands the upload to the client: the gateway never sees it finish, so it
        // cannot remove an older copy elsewhere afterwards. Writes that move a key are proxied.
        if call.redirects(true) && plan.older.is_empty() {
            let backend = call.backend(&plan.target)?;
            call.log.backend = Some(backend.name.clone());
            let uri = backend_uri(backend, Some(&call.real_key(&key)), "")?;
            let url = self.signers.presign(
                &Method::PUT,
                &uri,
                backend,
                call.config.api.presign_expiry,
                call.ctx.now,
            )?;
            // Indexed ahead of the upload; a read finding nothing there asks the others.
            self.finish_write(call, &key, &plan, &backend.name, length, "")
                .await;
            return redirect(call.config.api.redirect_status, &url);
        }
        let (body, verdict) = Self::object_body(call, body)?;
        let retries = call.config.balancer.retry_attempts as usize;
        // A new object small enough to keep can move to another backend if its first one
        // fails, and a conditional overwrite is sent again if the backend refuses it; anything
        // else streams once.
        let mut body = Some(body);
        let keep = (plan.movable && retries > 0) || plan.if_match.is_some();
        let kept = if keep && length <= call.config.balancer.retry_buffer {
            let bytes = match body.take() {
                Some(b) => b.collect(length as usize).await,
                None => Ok(Bytes::new()),
            };
            if let Some(e) = verdict.take() {
                return Err(e);
            }
            let bytes = bytes?;
            if (bytes.len() as u64) < length {
                return Err(S3Error::new(
                    S3ErrorCode::IncompleteBody,
                    "You did not provide the number of bytes specified by the Content-Length HTTP header.",
                ));
            }
            Some(bytes)
        } else {
            None
        };
        let mut target = plan.target.clone();
        let mut failed: Vec<String> = Vec::new();
        let response = loop {
            let backend = call.backend(&target)?;
            call.log.backend = Some(backend.name.clone());
            let payload = match &kept {
                Some(bytes) => C::Body::from_bytes(bytes.clone()),
                None => body.take().unwrap_or_else(C::Body::empty),
            };
            let uri = backend_uri(backend, Some(&call.real_key(&key)), "")?;
            let mut request = BackendRequest::new(Method::PUT, uri).with_stream(payload, length);
            request
                .headers
                .extend(backend::write_headers(&call.parts.headers));
            backend::set_content_length(&mut request.headers, length);
            if let Some(tag) = &plan.if_match {
                backend::insert_header(&mut request.headers, "if-match", tag);
            }
            match self
                .send_body(call, backend, "PutObject", request, &verdict)
                .await
            {
                Ok(response) => break response,
                // The indexed copy is not there (404) or not that version (412), a concurrent
                // write or delete of the key won (409), or the backend has no conditional
                // writes after all (501), and it stored nothing: find every copy, as for an
                // unindexed key, and send the body again without `If-Match`.
                // <https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html>
                Err(e)
                    if plan.if_match.is_some()
                        && kept.is_some()
                        && matches!(
                            e.code,
                            S3ErrorCode::PreconditionFailed
                                | S3ErrorCode::NoSuchKey
                                | S3ErrorCode::ConditionalRequestConflict
                                | S3ErrorCode::NotImplemented
                        ) =>
                {
                    if e.code == S3ErrorCode::NotImplemented {
                        tracing::warn!(backend = %backend.name, "the backend does not take If-Match on PutObject: set conditional_writes: false for it");
                    }
                    tracing::info!(backend = %backend.name, bucket = call.bucket(), key = %key, code = %e.code, "index entry not confirmed by the backend; asking the whole pool");
                    plan = self
                        .plan_write_from(call, &key, Some(length), None, None)
                        .await?;
                    target = plan.target.clone();
                }
                Err(e)
                    if plan.movable
                        && kept.is_some()
                        && retryable(&e)
                        && failed.len() < retries =>
                {
                    tracing::warn!(backend = %backend.name, error = %e, "write failed; moving the new object to the next backend");
                    failed.push(backend.name.clone());
                    target = match self.place(call, &key, Some(length), &failed) {
                        Ok(next) => next,
                        Err(_) => {
                            self.after_failed_writes(call, &key, &plan, &failed).await;
                            return Err(e);
                        }
                    };
                }
                Err(e) => {
                    // Including this backend: a timeout may come after the write landed.
                    if retryable(&e) {
                        failed.push(backend.name.clone());
                    }
                    self.after_failed_writes(call, &key, &plan, &failed).await;
                    return Err(e);
                }
            }
        };
        let etag = backend::header_str(response.headers(), "etag")
            .unwrap_or_default()
            .to_owned();
        self.finish_write(call, &key, &plan, &target, length, &etag)
            .await;
        self.after_failed_writes(call, &key, &plan, &failed).await;
        let mut out = empty(StatusCode::OK);
        *out.headers_mut() = backend::response_headers(response.headers());
        out.headers_mut().remove(http::header::CONTENT_LENGTH);
        Ok(out)
    }

    /// A write that failed on a backend may still have been stored there (a timeout after the
    /// body was sent): recorded, so the maintenance task settles it newest-wins. So are the
    /// backends that could not be asked before it: if the write landed, a copy they hold is
    /// older.
    pub(crate) async fn after_failed_writes(
        &self,
        call: &Call<'_>,
        key: &str,
        plan: &super::copies::WritePlan,
        failed: &[String],
    ) {
        if failed.is_empty() {
            return;
        }
        let object = ObjectRef {
            bucket: call.bucket(),
            key,
            config: call.bucket_config(),
        };
        for backend in failed.iter().chain(&plan.unknown) {
            self.note_stale_copy(object, backend, None, call.ctx.now)
                .await;
        }
    }

    pub(crate) async fn delete_object(
        &self,
        call: &mut Call<'_>,
    ) -> Result<http::Response<C::Body>, S3Error> {
        check_version(call)?;
        let (bucket, key) = (call.bucket().to_owned(), call.key().to_owned());
        let _turn = self.key_locks.lock(&bucket, &key).await;
        let pool = self.pool_states(call.state, call.bucket_config());
        let target = self.delete_target(call, &key, &pool).await?;
        call.log.backend = target.entry.as_ref().map(|e| e.backend.clone());
        self.delete_key(call, &key, &target).await?;
        self.forget_deleted(call, &key, &target).await?;
        Ok(empty(StatusCode::NO_CONTENT))
    }

    /// What a delete of `key` must reach: the index entry, the recorded older copies, and
    /// which backends of the pool are up. A delete must leave no copy behind, so while a
    /// backend is down it goes ahead only when the index provably says where the one copy is
    /// (the indexed backend answers a HEAD for it, and no older copy is recorded on the down
    /// one); otherwise it fails and changes nothing.
    async fn delete_target(
        &self,
        call: &Call<'_>,
        key: &str,
        pool: &[crate::placement::BackendState],
    ) -> Result<DeleteTarget, S3Error> {
        let bucket = call.bucket();
        let entry = self
            .store
            .get_object(bucket, key)
            .await
            .map_err(store_unavailable)?;
        let older = self
            .store
            .stale_copies_of(bucket, key)
            .await
            .map_err(store_unavailable)?;
        // A backend outside the pool that the index or a record names holds a copy too.
        let named = entry.iter().map(|e| e.backend.as_str());
        let outside = outside_pool(
            call.bucket_config(),
            named.chain(older.iter().map(|c| c.backend.as_str())),
        );
        let mut outside_views = Vec::new();
        // One no longer configured cannot be asked: it counts as down.
        let mut unconfigured = Vec::new();
        for name in &outside {
            match self.backend_view(call.state, name) {
                Some(view) => outside_views.push(view),
                None => unconfigured.push(name.clone()),
            }
        }
        let (up, down): (Vec<_>, Vec<_>) =
            pool.iter().chain(&outside_views).partition(|s| s.healthy);
        let up: Vec<String> = up.into_iter().map(|s| s.name.clone()).collect();
        let mut down: Vec<String> = down.into_iter().map(|s| s.name.clone()).collect();
        down.extend(unconfigured);
        let unavailable = || {
            S3Error::unavailable(
                "A backend that may hold this object is unavailable, so it cannot be deleted everywhere. Please try again.",
            )
        };
        if !down.is_empty() {
            let Some(e) = &entry else {
                return Err(unavailable());
            };
            if down.contains(&e.backend) || older.iter().any(|c| down.contains(&c.backend)) {
                return Err(unavailable());
            }
            // The entry may be stale (a lagging or lost index): only a copy seen where it
            // points proves the down backend holds none.
            let backend = call.backend(&e.backend)?;
            let mut head = BackendRequest::new(
                Method::HEAD,
                backend_uri(backend, Some(&call.real_key(key)), "")?,
            );
            head.timeout = Some(call.config.balancer.probe_timeout);
            let seen = self
                .send(call, backend, "HeadObject", head)
                .await
                .is_ok_and(|r| r.status().is_success());
            if !seen {
                return Err(unavailable());
            }
        }
        Ok(DeleteTarget {
            entry,
            older,
            up,
            outside,
        })
    }

    /// Deletes `key` on every backend of the pool that is up (and on those outside it that
    /// hold a copy, [`DeleteTarget::outside`]); every one must confirm. Recorded
    /// older copies go first: if one cannot be removed, the live copy stays, so a read never
    /// falls back to an older one.
    async fn delete_key(
        &self,
        call: &Call<'_>,
        key: &str,
        target: &DeleteTarget,
    ) -> Result<(), S3Error> {
        let phases: Vec<Vec<&String>> = if target.older.is_empty() {
            vec![target.up.iter().collect()]
        } else {
            // Copies recorded as older exist: find them all, remove every copy but the newest
            // first, then the newest. A failure midway leaves the newest readable.
            let object = ObjectRef {
                bucket: call.bucket(),
                key,
                config: call.bucket_config(),
            };
            let survey = self
                .survey(call.state, object, Ask::All, &target.outside, call.ctx.now)
                .await;
            if !survey.unknown.is_empty() {
                return Err(S3Error::unavailable(
                    "A backend that may hold this object is unavailable, so it cannot be deleted everywhere. Please try again.",
                ));
            }
            let newest = survey.newest().map(|c| c.backend.clone());
            let older: Vec<String> = survey.older().into_iter().map(|c| c.backend).collect();
            vec![
                target.up.iter().filter(|b| older.contains(b)).collect(),
                target
                    .up
                    .iter()
                    .filter(|b| !older.contains(b) && Some(*b) != newest.as_ref())
                    .collect(),
                target
                    .up
                    .iter()
                    .filter(|b| Some(*b) == newest.as_ref())
                    .collect(),
            ]
        };
        let real_key = call.real_key(key);
        for phase in phases {
            let deletes = phase.into_iter().map(|name| {
                let real_key = &real_key;
                async move {
                    let backend = call.backend(name)?;
                    let uri = backend_uri(backend, Some(real_key), "")?;
                    let request = BackendRequest::new(Method::DELETE, uri);
                    let response = self.send(call, backend, "DeleteObject", request).await?;
                    if response.status().is_success() || response.status() == StatusCode::NOT_FOUND
                    {
                        Ok(())
                    } else {
                        Err(backend_error(&backend.name, response).await)
                    }
                }
            });
            for result in join_all(deletes).await {
                result?;
            }
        }
        Ok(())
    }

    /// After a delete reached every copy: the index entry, the records, the usage.
    async fn forget_deleted(
        &self,
        call: &Call<'_>,
        key: &str,
        target: &DeleteTarget,
    ) -> Result<(), S3Error> {
        if let Some(rec) = &target.entry {
            self.store
                .delete_object(call.bucket(), key)
                .await
                .map_err(store_unavailable)?;
            self.count_usage(&rec.backend, -(rec.size as i64), -1);
        }
        for c in &target.older {
            self.store
                .delete_stale_copy(c)
                .await
                .map_err(store_unavailable)?;
        }
        Ok(())
    }

    pub(crate) async fn delete_objects(
        &self,
        call: &mut Call<'_>,
        body: C::Body,
    ) -> Result<http::Response<C::Body>, S3Error> {
        let body = Self::small_body(call, body, 2 * 1024 * 1024).await?;
        check_body_integrity(call, &body)?;
        let request = crate::xml::parse_delete_objects(&body)?;
        let bucket = call.bucket().to_owned();
        let prefix_len = call.real_key("").len();
        // Every key is checked as a single-key request would be; a bad one fails alone.
        let mut failed: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut valid: Vec<String> = Vec::new();
        for key in &request.keys {
            match super::check_key(key, prefix_len) {
                Ok(()) => valid.push(key.clone()),
                Err(e) => {
                    failed.insert(key.clone(), (e.code.as_str().to_owned(), e.message));
                }
            }
        }
        valid.sort();
        valid.dedup();
        // Locks in key order: two DeleteObjects never wait on each other in a cycle.
        let mut turns = Vec::with_capacity(valid.len());
        for key in &valid {
            turns.push(self.key_locks.lock(&bucket, key).await);
        }
        let fail = |e: &S3Error| (e.code.as_str().to_owned(), e.message.clone());
        // Keys with recorded older copies or a copy outside the pool go one by one (older
        // copies first); the rest are deleted on every backend that is up with one request
        // per backend.
        // One view of which backends are up for the whole request: a key is only reported
        // deleted if every backend that may hold it was asked.
        let pool = self.pool_states(call.state, call.bucket_config());
        let mut targets: BTreeMap<String, DeleteTarget> = BTreeMap::new();
        let mut batched: Vec<String> = Vec::new();
        for key in &valid {
            let target = match self.delete_target(call, key, &pool).await {
                Ok(t) => t,
                Err(e) => {
                    failed.insert(key.clone(), fail(&e));
                    continue;
                }
            };
            // The batches go to the pool's backends: a key also held outside it goes alone.
            if target.older.is_empty() && target.outside.is_empty() {
                batched.push(key.clone());
            } else if let Err(e) = self.delete_key(call, key, &target).await {
                failed.insert(key.clone(), fail(&e));
                continue;
            }
            targets.insert(key.clone(), target);
        }
        let up: Vec<String> = pool
            .into_iter()
            .filter(|s| s.healthy)
            .map(|s| s.name)
            .collect();
        let call_ref: &Call<'_> = call;
        let batched_ref = &batched;
        let batches = up
            .iter()
            .filter(|_| !batched.is_empty())
            .map(|name| async move {
                let outcome = match call_ref.backend(name) {
                    Ok(backend) => self.delete_batch(call_ref, backend, batched_ref).await,
                    Err(e) => batched_ref.iter().map(|k| (k.clone(), fail(&e))).collect(),
                };
                (name, outcome)
            });
        // Every backend asked must confirm: one that does not might hold the key.
        for (_, outcome) in join_all(batches).await {
            for (key, err) in outcome {
                failed.entry(key).or_insert(err);
            }
        }
        for (key, target) in &targets {
            if failed.contains_key(key) {
                continue;
            }
            if let Err(e) = self.forget_deleted(call, key, target).await {
                failed.insert(key.clone(), fail(&e));
            }
        }
        drop(turns);
        let outcomes: Vec<DeleteOutcome> = request
            .keys
            .iter()
            .map(|key| match failed.get(key) {
                Some((code, message)) => DeleteOutcome::Failed {
                    key: key.clone(),
                    code: code.clone(),
                    message: message.clone(),
                },
                None => DeleteOutcome::Deleted { key: key.clone() },
            })
            .collect();
        Ok(xml(crate::xml::delete_result(&outcomes, request.quiet)))
    }

    /// Deletes `keys` of the call's bucket on one backend with one DeleteObjects request.
    /// Returns the keys that were NOT deleted, with the error code and message for the
    /// client: every key sent must come back as `Deleted` (or `NoSuchKey`) in a well-formed
    /// answer, or it counts as failed.
    async fn delete_batch(
        &self,
        call: &Call<'_>,
        backend: &BackendConfig,
        keys: &[String],
    ) -> BTreeMap<String, (String, String)> {
        let fail_all = |e: &S3Error| -> BTreeMap<String, (String, String)> {
            keys.iter()
                .map(|k| (k.clone(), (e.code.as_str().to_owned(), e.message.clone())))
                .collect()
        };
        let real: Vec<String> = keys.iter().map(|k| call.real_key(k)).collect();
        let xml_body = crate::xml::delete_objects(&crate::xml::DeleteRequest {
            quiet: false,
            keys: real.clone(),
        });
        let md5 = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            md5_digest(xml_body.as_bytes()),
        );
        let uri = match backend_uri(backend, None, "delete=") {
            Ok(u) => u,
            Err(e) => return fail_all(&e),
        };
        let mut request = BackendRequest::new(Method::POST, uri).with_bytes(Bytes::from(xml_body));
        backend::insert_header(&mut request.headers, "content-md5", &md5);
        backend::insert_header(&mut request.headers, "content-type", "application/xml");
        let answer = match self.send(call, backend, "DeleteObjects", request).await {
            Ok(response) if response.status().is_success() => {
                match response.into_body().collect(16 * 1024 * 1024).await {
                    Ok(body) => crate::xml::parse_delete_result(&body),
                    Err(e) => Err(e),
                }
            }
            Ok(response) => Err(backend_error(&backend.name, response).await),
            Err(e) => Err(e),
        };
        let answer = match answer {
            Ok(a) => a,
            // Logged where it was read; no key counts as deleted.
            Err(e) => return fail_all(&e),
        };
        keys.iter()
            .zip(crate::xml::account_deletes(&real, &answer))
            // A key the backend never had is deleted as far as the client can tell.
            .filter_map(|(key, failure)| {
                failure
                    .filter(|(code, _)| code != "NoSuchKey")
                    .map(|f| (key.clone(), f))
            })
            .collect()
    }

    pub(crate) async fn copy_object(
        &self,
        call: &mut Call<'_>,
    ) -> Result<http::Response<C::Body>, S3Error> {
        let key = call.key().to_owned();
        let source = self.copy_source(call).await?;
        let size = source.size;
        let _turn = self.key_locks.lock(call.bucket(), &key).await;
        let plan = self.plan_write(call, &key, Some(size), None).await?;
        let dest = call.backend(&plan.target)?;
        call.log.backend = Some(dest.name.clone());
        let dest_uri = backend_uri(dest, Some(&call.real_key(&key)), "")?;
        let (etag, last_modified, size) = match self.copy_into(call, &source, dest, dest_uri).await
        {
            Ok(w) => w,
            Err(e) => {
                // A copy that timed out may have landed on the destination.
                if retryable(&e) {
                    self.after_failed_writes(call, &key, &plan, std::slice::from_ref(&dest.name))
                        .await;
                }
                return Err(e);
            }
        };
        self.finish_write(call, &key, &plan, &dest.name, size, &etag)
            .await;
        Ok(xml(crate::xml::copy_object_result(&etag, last_modified)))
    }

    /// Writes the copy source to `dest` (server-side within one backend, else streamed
    /// across): `(ETag, LastModified, size)` of the new object.
    async fn copy_into(
        &self,
        call: &Call<'_>,
        source: &CopySource,
        dest: &BackendConfig,
        dest_uri: http::Uri,
    ) -> Result<(String, std::time::SystemTime, u64), S3Error> {
        let size = source.size;
        let written = if source.backend.name == dest.name {
            // Server-side copy inside one backend.
            let mut request = BackendRequest::new(Method::PUT, dest_uri);
            request.headers = backend::write_headers(&call.parts.headers);
            backend::insert_header(
                &mut request.headers,
                "x-amz-copy-source",
                &backend::copy_source(dest, &source.real_key),
            );
            let response = self.send(call, dest, "CopyObject", request).await?;
            if !response.status().is_success() {
                return Err(backend_error(&dest.name, response).await);
            }
            let body = response.into_body().collect(1024 * 1024).await?;
            let (etag, modified) = crate::xml::parse_copy_result(&body)?;
            (etag, modified, size)
        } else {
            let (response, len) = self.read_source(call, source, None).await?;
            let replace = call
                .header("x-amz-metadata-directive")
                .is_some_and(|d| d.eq_ignore_ascii_case("REPLACE"));
            let mut headers = if replace {
                backend::write_headers(&call.parts.headers)
            } else {
                source_write_headers(response.headers())
            };
            headers.remove("x-amz-metadata-directive");
            for h in [
                "x-amz-copy-source-if-match",
                "x-amz-copy-source-if-none-match",
                "x-amz-copy-source-if-modified-since",
                "x-amz-copy-source-if-unmodified-since",
            ] {
                headers.remove(h);
            }
            let mut request =
                BackendRequest::new(Method::PUT, dest_uri).with_stream(response.into_body(), len);
            request.headers.extend(headers);
            backend::set_content_length(&mut request.headers, len);
            let response = self.send(call, dest, "PutObject", request).await?;
            if !response.status().is_success() {
                return Err(backend_error(&dest.name, response).await);
            }
            (
                backend::header_str(response.headers(), "etag")
                    .unwrap_or_default()
                    .to_owned(),
                call.ctx.now,
                len,
            )
        };
        Ok(written)
    }

    /// The object named by `x-amz-copy-source`, located (the key may be in another virtual
    /// bucket the caller may read).
    pub(crate) async fn copy_source(&self, call: &Call<'_>) -> Result<CopySource, S3Error> {
        let raw = call.header("x-amz-copy-source").ok_or_else(|| {
            S3Error::invalid_argument("Copy Source must mention the source bucket and key")
        })?;
        let (bucket, key) = parse_copy_source(raw)?;
        let layout = call.config.bucket_or_default(&bucket).key_layout;
        let real_key = layout.real_key(&bucket, &key);
        super::check_key(&key, real_key.len() - key.len())?;
        // The caller must be allowed to read the source: its scope, owner and ACL.
        match self.bucket_access(call.state, &bucket).await? {
            Some(access) => {
                super::access::may_read(call.config, &call.verified, &bucket, &access)?;
            }
            None => return Err(S3Error::no_such_bucket(&bucket)),
        }
        let mut located = self.locate(call, &bucket, &key).await?;
        if located.from_index {
            // The index only says where to look: confirm (and learn the exact size), so a
            // stale entry neither fails the copy nor copies from the wrong place.
            let backend = call.backend(&located.backend)?;
            let mut head =
                BackendRequest::new(Method::HEAD, backend_uri(backend, Some(&real_key), "")?);
            head.timeout = Some(call.config.balancer.probe_timeout);
            let response = self.send(call, backend, "HeadObject", head).await?;
            match response.status().as_u16() {
                200 => {
                    located.size = backend::header_str(response.headers(), "content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(located.size);
                }
                404 => {
                    located = self
                        .find(call, &bucket, &key, Some(&located.backend), &[])
                        .await?
                }
                _ => return Err(backend_error(&backend.name, response).await),
            }
        }
        let backend = call.backend(&located.backend)?.clone();
        Ok(CopySource {
            backend,
            real_key,
            size: located.size,
            key,
        })
    }

    /// GETs the copy source (the range, when given) with the copy-source conditions; returns
    /// the answer and its length.
    pub(crate) async fn read_source(
        &self,
        call: &Call<'_>,
        source: &CopySource,
        range: Option<&str>,
    ) -> Result<(http::Response<C::Body>, u64), S3Error> {
        let mut request = BackendRequest::new(
            Method::GET,
            backend_uri(&source.backend, Some(&source.real_key), "")?,
        );
        for (from, to) in [
            ("x-amz-copy-source-if-match", "if-match"),
            ("x-amz-copy-source-if-none-match", "if-none-match"),
            ("x-amz-copy-source-if-modified-since", "if-modified-since"),
            (
                "x-amz-copy-source-if-unmodified-since",
                "if-unmodified-since",
            ),
        ] {
            if let Some(v) = call.parts.headers.get(from) {
                request.headers.insert(to, v.clone());
            }
        }
        if let Some(range) = range {
            backend::insert_header(&mut request.headers, "range", range);
        }
        request.timeout = Some(call.config.balancer.probe_timeout);
        let response = self
            .send(call, &source.backend, "GetObject", request)
            .await?;
        if response.status() == StatusCode::NOT_MODIFIED {
            return Err(S3Error::new(
                S3ErrorCode::PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold",
            ));
        }
        if !response.status().is_success() {
            let e = backend_error(&source.backend.name, response).await;
            return Err(if e.code == S3ErrorCode::NoSuchKey {
                S3Error::no_such_key(&source.key)
            } else {
                e
            });
        }
        let len = backend::header_str(response.headers(), "content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                tracing::error!(backend = %source.backend.name, "backend GET without Content-Length");
                S3Error::internal()
            })?;
        Ok((response, len))
    }
}

/// Why a client's body failed its checks, if it did: shared by the filter in the stream and
/// the engine that reads it after the backend request.
#[derive(Clone, Default)]
pub(crate) struct BodyVerdict(std::sync::Arc<std::sync::Mutex<Option<S3Error>>>);

impl BodyVerdict {
    fn set(&self, e: &S3Error) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
    }

    pub(crate) fn take(&self) -> Option<S3Error> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// A body filter that records its error in a [`BodyVerdict`].
struct Reporting {
    inner: Box<dyn crate::body::ByteFilter + Send>,
    verdict: BodyVerdict,
}

impl crate::body::ByteFilter for Reporting {
    fn push(&mut self, input: bytes::Bytes) -> Result<Vec<bytes::Bytes>, S3Error> {
        self.inner.push(input).inspect_err(|e| self.verdict.set(e))
    }

    fn finish(&mut self) -> Result<Vec<bytes::Bytes>, S3Error> {
        self.inner.finish().inspect_err(|e| self.verdict.set(e))
    }
}

/// What a delete of one key must reach (see `Engine::delete_target`).
struct DeleteTarget {
    /// The index entry: where the live copy is.
    entry: Option<crate::store::ObjectRecord>,
    /// Recorded older copies of the key.
    older: Vec<crate::store::StaleCopy>,
    /// Backends of the pool that are up, and those outside it in `outside`.
    up: Vec<String>,
    /// Backends outside the pool that the index entry or a record names
    /// ([`super::copies::outside_pool`]).
    outside: Vec<String>,
}

/// A located copy source.
pub(crate) struct CopySource {
    pub backend: BackendConfig,
    pub real_key: String,
    pub size: u64,
    pub key: String,
}

/// `x-amz-copy-source`: `bucket/key` or `/bucket/key`, URL-encoded, maybe `?versionId=null`.
pub(crate) fn parse_copy_source(raw: &str) -> Result<(String, String), S3Error> {
    let invalid = || {
        S3Error::invalid_argument(
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
        )
    };
    let (path, version) = match raw.split_once('?') {
        Some((p, q)) => (p, q.strip_prefix("versionId=")),
        None => (raw, None),
    };
    if version.is_some_and(|v| v != "null") {
        return Err(S3Error::invalid_argument("Invalid version id specified"));
    }
    let path = path.strip_prefix('/').unwrap_or(path);
    let (bucket, key) = path.split_once('/').ok_or_else(invalid)?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| invalid())
    };
    let (bucket, key) = (decode(bucket)?, decode(key)?);
    if bucket.is_empty() || key.is_empty() {
        return Err(invalid());
    }
    Ok((bucket, key))
}

/// The content headers and metadata of a source object, to write them on its copy.
fn source_write_headers(source: &http::HeaderMap) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (name, value) in source {
        let n = name.as_str();
        if matches!(
            n,
            "content-type"
                | "cache-control"
                | "content-disposition"
                | "content-encoding"
                | "content-language"
                | "expires"
        ) || n.starts_with("x-amz-meta-")
        {
            h.append(name.clone(), value.clone());
        }
    }
    h
}

fn md5_digest(bytes: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(bytes).into()
}

/// DeleteObjects must carry `Content-MD5` or an `x-amz-checksum-*` header, and the body must
/// match it, as AWS requires.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObjects.html>
pub(crate) fn check_body_integrity(call: &Call<'_>, body: &[u8]) -> Result<(), S3Error> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut checked = false;
    if let Some(md5) = call.header("content-md5") {
        let given = b64
            .decode(md5.trim())
            .ok()
            .filter(|d| d.len() == 16)
            .ok_or_else(|| {
                S3Error::new(
                    S3ErrorCode::InvalidDigest,
                    "The Content-MD5 you specified was invalid.",
                )
            })?;
        if given != md5_digest(body) {
            return Err(S3Error::new(
                S3ErrorCode::BadDigest,
                "The Content-MD5 you specified did not match what we received.",
            ));
        }
        checked = true;
    }
    for (name, value) in &call.parts.headers {
        let Some(algorithm) = crate::sigv4::chunked::ChecksumAlgorithm::from_header(name.as_str())
        else {
            continue;
        };
        let mut hasher = algorithm.hasher();
        hasher.update(body);
        let expected = b64.encode(hasher.finalize());
        if value.to_str().map(str::trim).ok() != Some(expected.as_str()) {
            return Err(S3Error::new(
                S3ErrorCode::BadDigest,
                format!(
                    "The {} you specified did not match the calculated checksum.",
                    algorithm.header()
                ),
            ));
        }
        checked = true;
    }
    // A streamed body whose trailer carried the checksum was verified by the body filter.
    let trailer_checksum = call
        .header("x-amz-trailer")
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("x-amz-checksum-"));
    if !checked && !trailer_checksum {
        return Err(S3Error::new(
            S3ErrorCode::InvalidRequest,
            "Missing required header for this request: Content-MD5 (or an x-amz-checksum-* header)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_forms() {
        assert_eq!(
            parse_copy_source("/b/k%20x/y").unwrap(),
            ("b".into(), "k x/y".into())
        );
        assert_eq!(
            parse_copy_source("b/k?versionId=null").unwrap(),
            ("b".into(), "k".into())
        );
        assert!(parse_copy_source("b").is_err());
        assert!(parse_copy_source("/b/").is_err());
        assert!(parse_copy_source("b/k?versionId=abc").is_err());
    }
}
