//! ListObjects (v1, v2), ListObjectVersions and ListMultipartUploads: every backend of the
//! pool is asked for a page, and the pages are merged by [`crate::listing`].

use futures_util::future::join_all;
use http::Method;

use super::backend::{backend_error, backend_uri, BackendRequest};
use super::{xml, Call, Engine};
use crate::body::Body;
use crate::config::BackendConfig;
use crate::error::S3Error;
use crate::http::HttpClient;
use crate::listing::{self, ListKind};
use crate::multipart::{encode_upload_id, UploadScope, UploadTarget};
use crate::store::MetadataStore;

/// Backend listing answers can be large (1000 keys with long names).
const PAGE_LIMIT: usize = 32 * 1024 * 1024;

impl<S: MetadataStore, C: HttpClient> Engine<S, C> {
    /// GETs `query` on the real bucket of every backend of the pool, concurrently. Any backend
    /// that cannot answer fails the listing (ServiceUnavailable): a listing silently missing
    /// a backend's objects would be wrong.
    async fn fan_out(
        &self,
        call: &Call<'_>,
        operation: &'static str,
        query: &str,
    ) -> Result<Vec<(BackendConfig, bytes::Bytes)>, S3Error> {
        let pool: Vec<BackendConfig> = call.pool().into_iter().cloned().collect();
        let requests = pool.iter().map(|backend| async move {
            let mut request = BackendRequest::new(Method::GET, backend_uri(backend, None, query)?);
            request.timeout = Some(call.config.balancer.probe_timeout);
            let response = self.send(call, backend, operation, request).await?;
            if !response.status().is_success() {
                return Err(backend_error(&backend.name, response).await);
            }
            Ok::<_, S3Error>((
                backend.clone(),
                response.into_body().collect(PAGE_LIMIT).await?,
            ))
        });
        join_all(requests).await.into_iter().collect()
    }

    pub(crate) async fn list_objects(
        &self,
        call: &mut Call<'_>,
        kind: ListKind,
    ) -> Result<http::Response<C::Body>, S3Error> {
        let params = listing::parse_params(kind, &call.s3.query)?;
        let layout_prefix = call.real_key("");
        let query = listing::backend_query(&params, &layout_prefix);
        let pages = self
            .fan_out(call, "ListObjectsV2", &query)
            .await?
            .into_iter()
            .enumerate()
            .map(|(i, (backend, body))| {
                listing::parse_backend_page(&body, &layout_prefix, i).inspect_err(|e| {
                    tracing::error!(backend = %backend.name, error = %e, "backend listing unreadable");
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let result = listing::merge(&params, pages);
        Ok(xml(listing::render(&params, call.bucket(), &result)))
    }

    pub(crate) async fn list_multipart_uploads(
        &self,
        call: &mut Call<'_>,
    ) -> Result<http::Response<C::Body>, S3Error> {
        let params = listing::parse_upload_params(&call.s3.query)?;
        let layout_prefix = call.real_key("");
        let query = listing::backend_upload_query(&params, &layout_prefix);
        let secret = call
            .config
            .api
            .upload_id_secret
            .expose()
            .as_bytes()
            .to_vec();
        let mut pages = Vec::new();
        for (backend, body) in self.fan_out(call, "ListMultipartUploads", &query).await? {
            let mut page = listing::parse_backend_uploads(&body, &layout_prefix)?;
            for upload in &mut page.uploads {
                upload.upload_id = encode_upload_id(
                    &UploadTarget {
                        backend: backend.name.clone(),
                        backend_upload_id: std::mem::take(&mut upload.upload_id),
                    },
                    UploadScope {
                        bucket: call.bucket(),
                        key: &upload.key,
                    },
                    &secret,
                );
            }
            pages.push(page);
        }
        let result = listing::merge_uploads(&params, pages);
        Ok(xml(listing::render_uploads(
            &params,
            call.bucket(),
            &result,
        )))
    }
}
