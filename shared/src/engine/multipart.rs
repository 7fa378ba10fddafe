//! Multipart uploads. The UploadId handed to the client carries the backend and the backend's
//! own id (see [`crate::multipart`]), so every later call routes with no metadata read.

use http::{Method, StatusCode};

use super::backend::{self, backend_error, backend_uri, encode_query_value, BackendRequest};
use super::{empty, xml, Call, Engine};
use crate::body::Body;
use crate::config::BackendConfig;
use crate::error::S3Error;
use crate::http::HttpClient;
use crate::multipart::{decode_upload_id, encode_upload_id, UploadScope, UploadTarget};
use crate::store::MetadataStore;

impl<S: MetadataStore, C: HttpClient> Engine<S, C> {
    fn upload_target(
        call: &Call<'_>,
        upload_id: &str,
    ) -> Result<(UploadTarget, BackendConfig), S3Error> {
        // The id is bound to the bucket and key it was created for: used under any other it
        // is NoSuchUpload, whatever the backend would do with it.
        let target = decode_upload_id(
            upload_id,
            UploadScope {
                bucket: call.bucket(),
                key: call.key(),
            },
            call.config.api.upload_id_secret.expose().as_bytes(),
        )?;
        // The backend must still be in this bucket's pool.
        let backend = call
            .pool()
            .into_iter()
            .find(|b| b.name == target.backend)
            .cloned()
            .ok_or_else(|| {
                S3Error::new(
                    crate::S3ErrorCode::NoSuchUpload,
                    "The specified upload does not exist.",
                )
            })?;
        Ok((target, backend))
    }

    fn upload_uri(
        call: &Call<'_>,
        backend: &BackendConfig,
        query: &str,
    ) -> Result<http::Uri, S3Error> {
        backend_uri(backend, Some(&call.real_key(call.key())), query)
    }

    pub(crate) async fn create_multipart_upload(
        &self,
        call: &mut Call<'_>,
    ) -> Result<http::Response<C::Body>, S3Error> {
        let key = call.key().to_owned();
        // Where the parts go is where the key already lives (or a new placement); older copies
        // elsewhere are removed when the upload completes.
        let plan = self.plan_write(call, &key, None, None).await?;
        let backend = call.backend(&plan.target)?;
        call.log.backend = Some(backend.name.clone());
        let mut request =
            BackendRequest::new(Method::POST, Self::upload_uri(call, backend, "uploads=")?);
        request.headers = backend::write_headers(&call.parts.headers);
        let response = self
            .send(call, backend, "CreateMultipartUpload", request)
            .await?;
        if !response.status().is_success() {
            return Err(backend_error(&backend.name, response).await);
        }
        let body = response.into_body().collect(1024 * 1024).await?;
        let backend_upload_id = crate::xml::parse_initiate_multipart_result(&body)?;
        let upload_id = encode_upload_id(
            &UploadTarget {
                backend: backend.name.clone(),
                backend_upload_id,
            },
            UploadScope {
                bucket: call.bucket(),
                key: &key,
            },
            call.config.api.upload_id_secret.expose().as_bytes(),
        );
        Ok(xml(crate::xml::initiate_multipart_result(
            call.bucket(),
            &key,
            &upload_id,
        )))
    }

    pub(crate) async fn upload_part(
        &self,
        call: &mut Call<'_>,
        upload_id: &str,
        part_number: u32,
        body: C::Body,
    ) -> Result<http::Response<C::Body>, S3Error> {
        let (target, backend) = Self::upload_target(call, upload_id)?;
        call.log.backend = Some(backend.name.clone());
        let length = Self::object_length(call, &body)?;
        call.log.bytes = Some(length);
        let query = format!(
            "partNumber={part_number}&uploadId={}",
            encode_query_value(&target.backend_upload_id)
        );
        let (body, verdict) = Self::object_body(call, body)?;
        let mut request =
            BackendRequest::new(Method::PUT, Self::upload_uri(call, &backend, &query)?)
                .with_stream(body, length);
        request
            .headers
            .extend(backend::write_headers(&call.parts.headers));
        backend::set_content_length(&mut request.headers, length);
        let response = self
            .send_body(call, &backend, "UploadPart", request, &verdict)
            .await?;
        let mut out = empty(StatusCode::OK);
        *out.headers_mut() = backend::response_headers(response.headers());
        out.headers_mut().remove(http::header::CONTENT_LENGTH);
        Ok(out)
    }

    pub(crate) async fn upload_part_copy(
        &self,
        call: &mut Call<'_>,
        upload_id: &str,
        part_number: u32,
    ) -> Result<http::Response<C::Body>, S3Error> {
        let (target, backend) = Self::upload_target(call, upload_id)?;
        call.log.backend = Some(backend.name.clone());
        let source = self.copy_source(call).await?;
        let query = format!(
            "partNumber={part_number}&uploadId={}",
            encode_query_value(&target.backend_upload_id)
        );
        let uri = Self::upload_uri(call, &backend, &query)?;
        let range = call.header("x-amz-copy-source-range").map(str::to_owned);
        let (etag, last_modified) = if source.backend.name == backend.name {
            let mut request = BackendRequest::new(Method::PUT, uri);
            request.headers = backend::write_headers(&call.parts.headers);
            backend::insert_header(
                &mut request.headers,
                "x-amz-copy-source",
                &backend::copy_source(&backend, &source.real_key),
            );
            if let Some(range) = &range {
                backend::insert_header(&mut request.headers, "x-amz-copy-source-range", range);
            }
            let response = self.send(call, &backend, "UploadPartCopy", request).await?;
            if !response.status().is_success() {
                return Err(backend_error(&backend.name, response).await);
            }
            let body = response.into_body().collect(1024 * 1024).await?;
            crate::xml::parse_copy_result(&body)?
        } else {
            // Across backends: stream the source (range) into an UploadPart.
            let (response, len) = self.read_source(call, &source, range.as_deref()).await?;
            let request =
                BackendRequest::new(Method::PUT, uri).with_stream(response.into_body(), len);
            let response = self.send(call, &backend, "UploadPart", request).await?;
            if !response.status().is_success() {
                return Err(backend_error(&backend.name, response).await);
            }
            (
                backend::header_str(response.headers(), "etag")
                    .unwrap_or_default()
                    .to_owned(),
                call.ctx.now,
            )
        };
        Ok(xml(crate::xml::copy_part_result(&etag, last_modified)))
    }

    pub(crate) async fn complete_multipart_upload(
        &self,
        call: &mut Call<'_>,
        upload_id: &str,
        body: C::Body,
    ) -> Result<http::Response<C::Body>, S3Error> {
        let (target, backend) = Self::upload_target(call, upload_id)?;
        call.log.backend = Some(backend.name.clone());
        let body = Self::small_body(call, body, 4 * 1024 * 1024).await?;
        let parts = crate::xml::parse_complete_multipart(&body)?;
        let key = call.key().to_owned();
        let _turn = self.key_locks.lock(call.bucket(), &key).await;
        // The object appears where the parts are; any other copy of the key becomes older.
        let plan = self
            .plan_write(call, &key, None, Some(&backend.name))
            .await?;
        let query = format!("uploadId={}", encode_query_value(&target.backend_upload_id));
        let mut request =
            BackendRequest::new(Method::POST, Self::upload_uri(call, &backend, &query)?)
                .with_bytes(bytes::Bytes::from(crate::xml::complete_multipart(&parts)));
        backend::insert_header(&mut request.headers, "content-type", "application/xml");
        let completed = async {
            let response = self
                .send(call, &backend, "CompleteMultipartUpload", request)
                .await?;
            if !response.status().is_success() {
                return Err(backend_error(&backend.name, response).await);
            }
            let body = response.into_body().collect(1024 * 1024).await?;
            crate::xml::parse_complete_multipart_result(&body)
        }
        .await;
        let etag = match completed {
            Ok(etag) => etag,
            Err(e) => {
                // An answer lost on the way may hide a completed object.
                if super::copies::retryable(&e) {
                    self.after_failed_writes(
                        call,
                        &key,
                        &plan,
                        std::slice::from_ref(&backend.name),
                    )
                    .await;
                }
                return Err(e);
            }
        };
        // The object's size is only known now: ask the backend (unknown counts as 0; the
        // usage scan reconciles).
        let mut head = BackendRequest::new(Method::HEAD, Self::upload_uri(call, &backend, "")?);
        head.timeout = Some(call.config.balancer.probe_timeout);
        let size = match self.send(call, &backend, "HeadObject", head).await {
            Ok(r) if r.status().is_success() => backend::header_str(r.headers(), "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            _ => 0,
        };
        self.finish_write(call, &key, &plan, &backend.name, size, &etag)
            .await;
        let location = format!("/{}/{}", call.bucket(), backend::encode_key(&key));
        Ok(xml(crate::xml::complete_multipart_result(
            &location,
            call.bucket(),
            &key,
            &etag,
        )))
    }

    pub(crate) async fn abort_multipart_upload(
        &self,
        call: &mut Call<'_>,
        upload_id: &str,
    ) -> Result<http::Response<C::Body>, S3Error> {
        let (target, backend) = Self::upload_target(call, upload_id)?;
        call.log.backend = Some(backend.name.clone());
        let query = format!("uploadId={}", encode_query_value(&target.backend_upload_id));
        let request =
            BackendRequest::new(Method::DELETE, Self::upload_uri(call, &backend, &query)?);
        let response = self
            .send(call, &backend, "AbortMultipartUpload", request)
            .await?;
        if !response.status().is_success() {
            return Err(backend_error(&backend.name, response).await);
        }
        Ok(empty(StatusCode::NO_CONTENT))
    }

    pub(crate) async fn list_parts(
        &self,
        call: &mut Call<'_>,
        upload_id: &str,
    ) -> Result<http::Response<C::Body>, S3Error> {
        let (target, backend) = Self::upload_target(call, upload_id)?;
        call.log.backend = Some(backend.name.clone());
        let mut query = format!("uploadId={}", encode_query_value(&target.backend_upload_id));
        for name in ["max-parts", "part-number-marker"] {
            if let Some(v) = call.s3.query.get(name) {
                query.push_str(&format!("&{name}={}", encode_query_value(v)));
            }
        }
        let mut request =
            BackendRequest::new(Method::GET, Self::upload_uri(call, &backend, &query)?);
        request.timeout = Some(call.config.balancer.probe_timeout);
        let response = self.send(call, &backend, "ListParts", request).await?;
        if !response.status().is_success() {
            return Err(backend_error(&backend.name, response).await);
        }
        let body = response.into_body().collect(16 * 1024 * 1024).await?;
        let page = crate::xml::parse_list_parts(&body)?;
        Ok(xml(crate::xml::list_parts_result(
            call.bucket(),
            call.key(),
            upload_id,
            &page,
        )))
    }
}
