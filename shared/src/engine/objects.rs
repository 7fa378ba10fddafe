//! GetObject, HeadObject, PutObject, CopyObject, DeleteObject, DeleteObjects, and finding
//! where an object lives (index, then probing the backends).

use bytes::Bytes;
use http::{Method, StatusCode};

use super::backend::{self, backend_error, backend_uri, BackendRequest};
use super::{empty, record, redirect, store_unavailable, xml, Call, Engine};
use crate::body::Body;
use crate::config::BackendConfig;
use crate::error::{S3Error, S3ErrorCode};
use crate::http::HttpClient;
use crate::placement;
use crate::store::{MetadataStore, ObjectRecord};
use crate::xml::DeleteOutcome;

/// Where an object lives.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    pub backend: String,
    /// The index entry, when the location came from the index (it may be stale).
    pub record: Option<ObjectRecord>,
}

/// Query parameters of GetObject that the backend must see.
const GET_QUERY: &[&str] = &[
    "partNumber",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
];

fn passthrough_query(call: &Call<'_>, names: &[&str]) -> String {
    let mut pairs: Vec<String> = call
        .s3
        .query
        .0
        .iter()
        .filter(|(k, _)| names.contains(&k.as_str()))
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
    /// Finds `key` of the call's bucket: the index, or else a probe of the backends.
    pub(crate) async fn locate(
        &self,
        call: &Call<'_>,
        bucket: &str,
        key: &str,
    ) -> Result<Located, S3Error> {
        match self.store.get_object(bucket, key).await {
            Ok(Some(rec)) if call.config.backend(&rec.backend).is_some() => {
                return Ok(Located {
                    backend: rec.backend.clone(),
                    record: Some(rec),
                })
            }
            Ok(_) => {}
            // The index is optional for reads: probe instead.
            Err(e) => tracing::warn!(error = %e, "index lookup failed; probing backends"),
        }
        self.probe(call, bucket, key, None).await
    }

    /// Asks the backends of `bucket`'s pool, in rendezvous order, whether they hold `key`
    /// (HEAD), skipping `skip`. Found: the index is repaired. None has it: NoSuchKey, unless a
    /// backend could not answer (then ServiceUnavailable: never a false 404).
    pub(crate) async fn probe(
        &self,
        call: &Call<'_>,
        bucket: &str,
        key: &str,
        skip: Option<&str>,
    ) -> Result<Located, S3Error> {
        // The call's own bucket is looked up already; a copy source may be another one.
        let other;
        let bucket_config = if bucket == call.bucket() {
            call.bucket_config()
        } else {
            other = call.config.bucket_or_default(bucket);
            &other
        };
        let real_key = format!("{}{key}", bucket_config.key_layout.prefix(bucket));
        let states = call.backend_states_of(bucket_config);
        let mut unavailable = false;
        for state in placement::probe_order(&states, bucket, key) {
            if Some(state.name.as_str()) == skip {
                continue;
            }
            let backend = call.backend(&state.name)?;
            let mut request =
                BackendRequest::new(Method::HEAD, backend_uri(backend, Some(&real_key), "")?);
            request.timeout = Some(call.config.balancer.probe_timeout);
            let response = match self.send(call, backend, "HeadObject", request).await {
                Ok(r) => r,
                Err(_) => {
                    unavailable = true;
                    continue;
                }
            };
            match response.status().as_u16() {
                200 => {
                    let h = response.headers();
                    let size = backend::header_str(h, "content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let etag = backend::header_str(h, "etag")
                        .unwrap_or_default()
                        .to_owned();
                    let modified = backend::header_str(h, "last-modified")
                        .and_then(crate::time::parse_http_date)
                        .unwrap_or(call.ctx.now);
                    let rec = record(&backend.name, size, &etag, modified);
                    if let Err(e) = self.store.put_object(bucket, key, &rec).await {
                        tracing::warn!(error = %e, "could not repair the index after a probe");
                    }
                    return Ok(Located {
                        backend: backend.name.clone(),
                        record: None,
                    });
                }
                404 => {}
                status => {
                    tracing::warn!(backend = %backend.name, status, "probe got an unexpected answer");
                    unavailable = true;
                }
            }
        }
        if unavailable {
            Err(S3Error::unavailable(
                "A backend that may hold this object is unavailable. Please try again.",
            ))
        } else {
            Err(S3Error::no_such_key(key))
        }
    }

    pub(crate) async fn get_object(
        &self,
        call: &mut Call<'_>,
    ) -> Result<http::Response<C::Body>, S3Error> {
        check_version(call)?;
        let (bucket, key) = (call.bucket().to_owned(), call.key().to_owned());
        let head = call.parts.method == Method::HEAD;
        let mut located = self.locate(call, &bucket, &key).await?;
        loop {
            let backend = call.backend(&located.backend)?.clone();
            call.log.backend = Some(backend.name.clone());
            let uri = backend_uri(
                &backend,
                Some(&call.real_key(&key)),
                &passthrough_query(call, GET_QUERY),
            )?;
            if !head && call.redirects(false) {
                let url = self.signers.presign(
                    &Method::GET,
                    &uri,
                    &backend,
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
                    &backend,
                    if head { "HeadObject" } else { "GetObject" },
                    request,
                )
                .await?;
            let status = response.status();
            if status == StatusCode::NOT_FOUND && located.record.is_some() {
                // The index was stale: the object moved, or was removed behind our back.
                match self.probe(call, &bucket, &key, Some(&backend.name)).await {
                    Ok(found) => {
                        located = found;
                        continue;
                    }
                    Err(e) => {
                        if e.code == S3ErrorCode::NoSuchKey {
                            let _ = self.store.delete_object(&bucket, &key).await;
                        }
                        return Err(e);
                    }
                }
            }
            if status.is_success() {
                let mut out = http::Response::new(C::Body::empty());
                *out.status_mut() = status;
                *out.headers_mut() = backend::response_headers(response.headers());
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

    /// Where a write of `key` goes: where the key already lives (so it never lives twice),
    /// unless that backend no longer takes writes; else a new placement.
    pub(crate) async fn write_target(
        &self,
        call: &Call<'_>,
        key: &str,
        size: Option<u64>,
    ) -> Result<(String, Option<ObjectRecord>), S3Error> {
        let existing = self
            .store
            .get_object(call.bucket(), key)
            .await
            .map_err(store_unavailable)?;
        if let Some(rec) = &existing {
            let states = call.backend_states();
            if placement::write_candidates(&states, None)
                .is_ok_and(|c| c.iter().any(|s| s.name == rec.backend))
            {
                return Ok((rec.backend.clone(), existing));
            }
        }
        Ok((self.place(call, key, size)?, existing))
    }

    /// Books a completed write: index entry, usage, and removal of an older copy elsewhere.
    pub(crate) async fn record_write(
        &self,
        call: &Call<'_>,
        key: &str,
        backend: &str,
        size: u64,
        etag: &str,
        previous: Option<ObjectRecord>,
    ) {
        let bucket = call.bucket();
        if let Err(e) = self
            .store
            .put_object(bucket, key, &record(backend, size, etag, call.ctx.now))
            .await
        {
            tracing::error!(error = %e, bucket, key, "object written but not indexed; reads will probe for it");
        }
        let mut usage = vec![(backend.to_owned(), size as i64, 1i64)];
        if let Some(old) = previous {
            usage.push((old.backend.clone(), -(old.size as i64), -1));
            if old.backend != backend {
                // Moved: remove the old copy so the key never lives twice.
                if let Ok(old_backend) = call.backend(&old.backend) {
                    let uri = backend_uri(old_backend, Some(&call.real_key(key)), "");
                    if let Ok(uri) = uri {
                        let _ = self
                            .send(
                                call,
                                old_backend,
                                "DeleteObject",
                                BackendRequest::new(Method::DELETE, uri),
                            )
                            .await;
                    }
                }
            }
        }
        for (b, bytes, objects) in usage {
            self.count_usage(&b, bytes, objects);
        }
    }

    pub(crate) async fn put_object(
        &self,
        call: &mut Call<'_>,
        body: C::Body,
    ) -> Result<http::Response<C::Body>, S3Error> {
        let key = call.key().to_owned();
        let length = Self::object_length(call, &body)?;
        let (target, previous) = self.write_target(call, &key, Some(length)).await?;
        let backend = call.backend(&target)?.clone();
        call.log.backend = Some(backend.name.clone());
        call.log.bytes = Some(length);
        let uri = backend_uri(&backend, Some(&call.real_key(&key)), "")?;
        if call.redirects(true) {
            let url = self.signers.presign(
                &Method::PUT,
                &uri,
                &backend,
                call.config.api.presign_expiry,
                call.ctx.now,
            )?;
            // Indexed ahead of the upload; a read finding nothing there probes and cleans up.
            self.record_write(call, &key, &backend.name, length, "", previous)
                .await;
            return redirect(call.config.api.redirect_status, &url);
        }
        let (body, verdict) = Self::object_body(call, body)?;
        let mut request = BackendRequest::new(Method::PUT, uri).with_stream(body, length);
        request
            .headers
            .extend(backend::write_headers(&call.parts.headers));
        backend::set_content_length(&mut request.headers, length);
        let response = self
            .send_body(call, &backend, "PutObject", request, &verdict)
            .await?;
        let etag = backend::header_str(response.headers(), "etag")
            .unwrap_or_default()
            .to_owned();
        self.record_write(call, &key, &backend.name, length, &etag, previous)
            .await;
        let mut out = empty(StatusCode::OK);
        *out.headers_mut() = backend::response_headers(response.headers());
        out.headers_mut().remove(http::header::CONTENT_LENGTH);
        Ok(out)
    }

    pub(crate) async fn delete_object(
        &self,
        call: &mut Call<'_>,
    ) -> Result<http::Response<C::Body>, S3Error> {
        check_version(call)?;
        let (bucket, key) = (call.bucket().to_owned(), call.key().to_owned());
        let existing = self
            .store
            .get_object(&bucket, &key)
            .await
            .map_err(store_unavailable)?;
        // Indexed: delete there. Not indexed: it may still be on any backend (lost index).
        let targets: Vec<BackendConfig> = match &existing {
            Some(rec) => vec![call.backend(&rec.backend)?.clone()],
            None => call.pool().into_iter().cloned().collect(),
        };
        let real_key = call.real_key(&key);
        for backend in &targets {
            let uri = backend_uri(backend, Some(&real_key), "")?;
            let response = self
                .send(
                    call,
                    backend,
                    "DeleteObject",
                    BackendRequest::new(Method::DELETE, uri),
                )
                .await?;
            if !response.status().is_success() && response.status() != StatusCode::NOT_FOUND {
                return Err(backend_error(&backend.name, response).await);
            }
        }
        if let Some(rec) = existing {
            self.store
                .delete_object(&bucket, &key)
                .await
                .map_err(store_unavailable)?;
            self.count_usage(&rec.backend, -(rec.size as i64), -1);
        }
        Ok(empty(StatusCode::NO_CONTENT))
    }

    pub(crate) async fn delete_objects(
        &self,
        call: &mut Call<'_>,
        body: C::Body,
    ) -> Result<http::Response<C::Body>, S3Error> {
        let body = Self::small_body(call, body, 2 * 1024 * 1024).await?;
        let request = crate::xml::parse_delete_objects(&body)?;
        let bucket = call.bucket().to_owned();
        // Group keys by the backend that holds them; unindexed keys go to every backend.
        let pool: Vec<BackendConfig> = call.pool().into_iter().cloned().collect();
        let mut by_backend: Vec<(BackendConfig, Vec<String>)> =
            pool.iter().map(|b| (b.clone(), Vec::new())).collect();
        let mut records = Vec::new();
        for key in &request.keys {
            let rec = self
                .store
                .get_object(&bucket, key)
                .await
                .map_err(store_unavailable)?;
            match &rec {
                Some(r) => match by_backend.iter_mut().find(|(b, _)| b.name == r.backend) {
                    Some((_, keys)) => keys.push(key.clone()),
                    None => {
                        let b = call.backend(&r.backend)?.clone();
                        by_backend.push((b, vec![key.clone()]));
                    }
                },
                None => by_backend
                    .iter_mut()
                    .for_each(|(_, keys)| keys.push(key.clone())),
            }
            records.push(rec);
        }
        let mut failed: std::collections::BTreeMap<String, (String, String)> = Default::default();
        for (backend, keys) in &by_backend {
            if keys.is_empty() {
                continue;
            }
            let real: Vec<String> = keys.iter().map(|k| call.real_key(k)).collect();
            let xml_body = delete_request_xml(&real);
            let md5 = base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                md5_digest(xml_body.as_bytes()),
            );
            let mut request =
                BackendRequest::new(Method::POST, backend_uri(backend, None, "delete=")?)
                    .with_bytes(Bytes::from(xml_body));
            backend::insert_header(&mut request.headers, "content-md5", &md5);
            backend::insert_header(&mut request.headers, "content-type", "application/xml");
            let outcome = match self.send(call, backend, "DeleteObjects", request).await {
                Ok(response) if response.status().is_success() => {
                    let body = response.into_body().collect(16 * 1024 * 1024).await?;
                    parse_delete_errors(&body)
                }
                Ok(response) => {
                    let e = backend_error(&backend.name, response).await;
                    real.iter()
                        .map(|k| (k.clone(), (e.code.as_str().to_owned(), e.message.clone())))
                        .collect()
                }
                Err(e) => real
                    .iter()
                    .map(|k| (k.clone(), (e.code.as_str().to_owned(), e.message.clone())))
                    .collect(),
            };
            let prefix_len = call.real_key("").len();
            for (real_key, err) in outcome {
                failed.insert(real_key[prefix_len.min(real_key.len())..].to_owned(), err);
            }
        }
        let mut outcomes = Vec::new();
        for (key, rec) in request.keys.iter().zip(records) {
            match failed.get(key) {
                Some((code, message)) => outcomes.push(DeleteOutcome::Failed {
                    key: key.clone(),
                    code: code.clone(),
                    message: message.clone(),
                }),
                None => {
                    if let Some(rec) = rec {
                        self.store
                            .delete_object(&bucket, key)
                            .await
                            .map_err(store_unavailable)?;
                        self.count_usage(&rec.backend, -(rec.size as i64), -1);
                    }
                    outcomes.push(DeleteOutcome::Deleted { key: key.clone() });
                }
            }
        }
        Ok(xml(crate::xml::delete_result(&outcomes, request.quiet)))
    }

    pub(crate) async fn copy_object(
        &self,
        call: &mut Call<'_>,
    ) -> Result<http::Response<C::Body>, S3Error> {
        let key = call.key().to_owned();
        let source = self.copy_source(call).await?;
        let size = source.size;
        let (target, previous) = self.write_target(call, &key, Some(size)).await?;
        let dest = call.backend(&target)?.clone();
        call.log.backend = Some(dest.name.clone());
        let dest_uri = backend_uri(&dest, Some(&call.real_key(&key)), "")?;
        let (etag, last_modified) = if source.backend.name == dest.name {
            // Server-side copy inside one backend.
            let mut request = BackendRequest::new(Method::PUT, dest_uri);
            request.headers = backend::write_headers(&call.parts.headers);
            backend::insert_header(
                &mut request.headers,
                "x-amz-copy-source",
                &backend::copy_source(&dest, &source.real_key),
            );
            let response = self.send(call, &dest, "CopyObject", request).await?;
            if !response.status().is_success() {
                return Err(backend_error(&dest.name, response).await);
            }
            let body = response.into_body().collect(1024 * 1024).await?;
            crate::xml::parse_copy_result(&body)?
        } else {
            let (response, len) = self.read_source(call, &source, None).await?;
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
            let response = self.send(call, &dest, "PutObject", request).await?;
            if !response.status().is_success() {
                return Err(backend_error(&dest.name, response).await);
            }
            (
                backend::header_str(response.headers(), "etag")
                    .unwrap_or_default()
                    .to_owned(),
                call.ctx.now,
            )
        };
        self.record_write(call, &key, &dest.name, size, &etag, previous)
            .await;
        Ok(xml(crate::xml::copy_object_result(&etag, last_modified)))
    }

    /// The object named by `x-amz-copy-source`, located (the key may be in another virtual
    /// bucket the caller may read).
    pub(crate) async fn copy_source(&self, call: &Call<'_>) -> Result<CopySource, S3Error> {
        let raw = call.header("x-amz-copy-source").ok_or_else(|| {
            S3Error::invalid_argument("Copy Source must mention the source bucket and key")
        })?;
        let (bucket, key) = parse_copy_source(raw)?;
        super::check_key(&key)?;
        if let crate::sigv4::Identity::AccessKey(ak) = &call.verified.identity {
            if let Some(allowed) = call.config.credential(ak).and_then(|c| c.buckets.as_ref()) {
                if !allowed.contains(&bucket) {
                    return Err(S3Error::access_denied());
                }
            }
        }
        if call.config.virtual_bucket(&bucket).is_none()
            && !call.state.created_buckets.iter().any(|b| b.name == bucket)
        {
            let created = self.store.list_buckets().await.map_err(store_unavailable)?;
            if !created.iter().any(|b| b.name == bucket) {
                return Err(S3Error::no_such_bucket(&bucket));
            }
        }
        let located = self.locate(call, &bucket, &key).await?;
        let backend = call.backend(&located.backend)?.clone();
        let layout = call.config.bucket_or_default(&bucket).key_layout;
        let real_key = format!("{}{key}", layout.prefix(&bucket));
        let size = match located.record {
            Some(r) => r.size,
            None => self
                .store
                .get_object(&bucket, &key)
                .await
                .ok()
                .flatten()
                .map(|r| r.size)
                .unwrap_or(0),
        };
        Ok(CopySource {
            backend,
            real_key,
            size,
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

impl Call<'_> {
    pub(crate) fn backend_states_of(
        &self,
        bucket: &crate::config::VirtualBucketConfig,
    ) -> Vec<placement::BackendState> {
        let names: Vec<String> = self
            .config
            .pool(bucket)
            .iter()
            .map(|b| b.name.clone())
            .collect();
        self.backend_states_all()
            .into_iter()
            .filter(|s| names.contains(&s.name))
            .collect()
    }
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

/// The DeleteObjects body sent to a backend, quiet (only failures come back).
fn delete_request_xml(real_keys: &[String]) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>");
    for k in real_keys {
        s.push_str("<Object><Key>");
        s.push_str(&crate::xml::escape(k));
        s.push_str("</Key></Object>");
    }
    s.push_str("</Delete>");
    s
}

/// The `<Error>` entries of a backend's DeleteResult: real key -> (code, message).
fn parse_delete_errors(xml: &[u8]) -> Vec<(String, (String, String))> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut out = Vec::new();
    let (mut in_error, mut field, mut key, mut code, mut message) = (
        false,
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    );
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if name == "Error" {
                    in_error = true;
                    (key, code, message) = (String::new(), String::new(), String::new());
                }
                field = name;
            }
            Ok(Event::Text(t)) if in_error => {
                let text = t.unescape().map(|c| c.into_owned()).unwrap_or_default();
                match field.as_str() {
                    "Key" => key.push_str(&text),
                    "Code" => code.push_str(&text),
                    "Message" => message.push_str(&text),
                    _ => {}
                }
            }
            Ok(Event::End(e)) => {
                if e.local_name().as_ref() == b"Error" {
                    in_error = false;
                    out.push((
                        std::mem::take(&mut key),
                        (std::mem::take(&mut code), std::mem::take(&mut message)),
                    ));
                }
                field.clear();
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
        buf.clear();
    }
    out
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

    #[test]
    fn delete_errors_are_read() {
        let body = br#"<DeleteResult><Deleted><Key>a</Key></Deleted><Error><Key>b/c</Key><Code>AccessDenied</Code><Message>no</Message></Error></DeleteResult>"#;
        assert_eq!(
            parse_delete_errors(body),
            vec![(
                "b/c".to_owned(),
                ("AccessDenied".to_owned(), "no".to_owned())
            )]
        );
    }
}
