//! Who may do what to a bucket: its owner, its canned ACL and its CORS rules; and the bucket
//! operations that change them (Get/PutBucketAcl, Get/Put/DeleteBucketCors, the preflight).
//!
//! - A bucket created at run time belongs to the access key that created it. Other keys get
//!   `AccessDenied`, unless the bucket is `public-read` and the operation reads; a credential
//!   marked `admin` in the config may do anything. Buckets from the config have no owner: the
//!   credentials' `buckets` scopes decide, as before; their ACL (`anonymous_read`) and CORS
//!   rules (`cors`) are the config's and change there.
//! - `public-read` lets anyone, credentials or none, read objects and list the bucket: the
//!   bucket-level grant (as a bucket policy for `s3:GetObject` would be on AWS).
//! - Changes are kept in the bucket's record in the metadata store: this instance applies them
//!   at once, the others at their next refresh (every [`super::REFRESH_PERIOD`]).

use http::{HeaderValue, StatusCode};

use super::{empty, store_unavailable, xml, Call, Engine, State};
use crate::acl::CannedAcl;
use crate::body::Body;
use crate::config::{Config, VirtualBucketConfig};
use crate::cors::CorsRule;
use crate::error::{S3Error, S3ErrorCode};
use crate::http::HttpClient;
use crate::route::{DefaultAnswer, Operation, S3Request};
use crate::sigv4::{Identity, Verified};
use crate::store::{BucketRecord, MetadataStore};

/// A virtual bucket's access settings, from the config or from its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BucketAccess {
    /// The access key that created it (buckets created at run time only).
    pub owner: Option<String>,
    pub acl: CannedAcl,
    pub cors: Vec<CorsRule>,
    /// The stored record, for buckets created at run time.
    pub record: Option<BucketRecord>,
}

impl BucketAccess {
    pub fn configured(b: &VirtualBucketConfig) -> Self {
        BucketAccess {
            owner: None,
            acl: if b.anonymous_read {
                CannedAcl::PublicRead
            } else {
                CannedAcl::Private
            },
            cors: b.cors.clone(),
            record: None,
        }
    }

    pub fn created(r: &BucketRecord) -> Self {
        BucketAccess {
            owner: r.owner.clone(),
            acl: r.acl,
            cors: r.cors.clone(),
            record: Some(r.clone()),
        }
    }

    /// The owner as ACLs name it: the access key, or the gateway for buckets without one.
    pub fn owner_id(&self) -> &str {
        self.owner.as_deref().unwrap_or(crate::xml::OWNER_ID)
    }

    /// The CORS headers for an answer to a request from `origin` with `method`, if a rule
    /// allows it.
    pub fn cors_headers(&self, origin: &str, method: &str) -> Option<Vec<(&'static str, String)>> {
        let rule = crate::cors::find_rule(&self.cors, origin, method, &[])?;
        Some(crate::cors::response_headers(rule, origin, None))
    }
}

/// What a `public-read` bucket lets anyone do: read objects and list the bucket.
fn public_read_allows(op: &Operation) -> bool {
    matches!(
        op,
        Operation::GetObject
            | Operation::HeadObject
            | Operation::HeadBucket
            | Operation::GetBucketLocation
            | Operation::ListObjects
            | Operation::ListObjectsV2
            | Operation::ListObjectVersions
            | Operation::Default(DefaultAnswer::GetBucketVersioning)
    )
}

/// Whether `verified` may perform `s3` on a bucket with `access` (`None`: no such bucket,
/// answered later): the credential's scope and read-only flag, the bucket's owner and ACL.
pub(crate) fn authorize(
    config: &Config,
    verified: &Verified,
    s3: &S3Request,
    access: Option<&BucketAccess>,
) -> Result<(), S3Error> {
    let write = s3.operation.is_write();
    let public =
        access.is_some_and(|a| a.acl == CannedAcl::PublicRead) && public_read_allows(&s3.operation);
    match &verified.identity {
        Identity::Anonymous => {
            if !config.api.auth_required || public {
                Ok(())
            } else {
                Err(S3Error::access_denied())
            }
        }
        Identity::AccessKey(key) => {
            let Some(credential) = config.credential(key) else {
                return Err(S3Error::new(
                    S3ErrorCode::InvalidAccessKeyId,
                    "The AWS Access Key Id you provided does not exist in our records.",
                ));
            };
            if write && credential.read_only {
                return Err(S3Error::access_denied());
            }
            if let (Some(allowed), Some(bucket)) = (&credential.buckets, &s3.bucket) {
                // A scoped key may not create buckets outside its scope nor list buckets
                // beyond it (filtered in ListBuckets).
                if !allowed.iter().any(|b| b == bucket) {
                    return Err(S3Error::access_denied());
                }
            }
            let owned_by_other = access
                .and_then(|a| a.owner.as_ref())
                .is_some_and(|owner| owner != key);
            // CreateBucket of another's bucket is answered BucketAlreadyExists by the handler.
            if owned_by_other
                && !credential.admin
                && !public
                && !matches!(s3.operation, Operation::CreateBucket)
            {
                return Err(S3Error::access_denied());
            }
            Ok(())
        }
    }
}

/// Whether the caller may read objects of a bucket other than the request's (a copy source).
pub(crate) fn may_read(
    config: &Config,
    verified: &Verified,
    bucket: &str,
    access: &BucketAccess,
) -> Result<(), S3Error> {
    let read = S3Request {
        operation: Operation::GetObject,
        bucket: Some(bucket.to_owned()),
        key: None,
        query: Default::default(),
        virtual_host: false,
    };
    authorize(config, verified, &read, Some(access))
}

/// Whether `identity` sees the bucket `record` in ListBuckets: its owner, an admin, and
/// everyone for buckets without an owner.
pub(crate) fn lists(config: &Config, identity: &Identity, record: &BucketRecord) -> bool {
    match (&record.owner, identity) {
        (None, _) => true,
        (Some(_), Identity::Anonymous) => !config.api.auth_required,
        (Some(owner), Identity::AccessKey(key)) => {
            owner == key || config.credential(key).is_some_and(|c| c.admin)
        }
    }
}

fn configured_elsewhere() -> S3Error {
    S3Error::new(
        S3ErrorCode::AccessDenied,
        "This bucket is defined in the gateway's configuration; change its ACL and CORS rules there.",
    )
}

impl<S: MetadataStore, C: HttpClient> Engine<S, C> {
    /// The access settings of the virtual bucket `name`, `None` when there is none: the
    /// config, then this instance's copy of the stored records, then the store (a bucket
    /// created since the last refresh, perhaps by another instance).
    pub(crate) async fn bucket_access(
        &self,
        state: &State,
        name: &str,
    ) -> Result<Option<BucketAccess>, S3Error> {
        if let Some(b) = state.config.virtual_bucket(name) {
            return Ok(Some(BucketAccess::configured(b)));
        }
        if let Some(r) = state.created_buckets.iter().find(|b| b.name == name) {
            return Ok(Some(BucketAccess::created(r)));
        }
        let created = self.store.list_buckets().await.map_err(store_unavailable)?;
        Ok(created
            .iter()
            .find(|b| b.name == name)
            .map(BucketAccess::created))
    }

    /// Writes a changed record and applies it here at once (other instances at their next
    /// refresh).
    async fn update_bucket_record(&self, record: BucketRecord) -> Result<(), S3Error> {
        self.store
            .update_bucket(&record)
            .await
            .map_err(store_unavailable)?;
        self.update_state(|s| {
            if let Some(r) = s.created_buckets.iter_mut().find(|b| b.name == record.name) {
                *r = record;
            } else {
                s.created_buckets.push(record);
            }
        });
        Ok(())
    }

    /// The record of the request's bucket, which must be one created at run time.
    fn stored_record(call: &Call<'_>) -> Result<BucketRecord, S3Error> {
        call.access
            .as_ref()
            .and_then(|a| a.record.clone())
            .ok_or_else(configured_elsewhere)
    }

    /// GetBucketAcl. <https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketAcl.html>
    /// GetObjectAcl answers the same grants: reads through the gateway follow the bucket's.
    pub(crate) fn get_acl<B: Body>(call: &Call<'_>) -> http::Response<B> {
        let (owner, acl) = call
            .access
            .as_ref()
            .map_or((crate::xml::OWNER_ID, CannedAcl::Private), |a| {
                (a.owner_id(), a.acl)
            });
        xml(crate::acl::access_control_policy(owner, acl))
    }

    /// The canned ACL a PutBucketAcl or PutObjectAcl asks for: by `x-amz-acl`, or the same
    /// grants as an `AccessControlPolicy` body (one or the other).
    async fn requested_acl(call: &Call<'_>, body: C::Body) -> Result<CannedAcl, S3Error> {
        let from_header = CannedAcl::from_headers(&call.parts.headers)?;
        let body = Self::small_body(call, body, 64 * 1024).await?;
        match (from_header, body.is_empty()) {
            (Some(acl), true) => Ok(acl),
            (None, false) => crate::acl::parse_access_control_policy(&body),
            (Some(_), false) => Err(S3Error::new(
                S3ErrorCode::UnexpectedContent,
                "This request does not support content",
            )),
            (None, true) => Err(S3Error::new(
                S3ErrorCode::MissingSecurityHeader,
                "Your request was missing a required header: x-amz-acl (or an AccessControlPolicy body)",
            )),
        }
    }

    /// PutBucketAcl. <https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutBucketAcl.html>
    pub(crate) async fn put_bucket_acl(
        &self,
        call: &mut Call<'_>,
        body: C::Body,
    ) -> Result<http::Response<C::Body>, S3Error> {
        let acl = Self::requested_acl(call, body).await?;
        let mut record = Self::stored_record(call)?;
        record.acl = acl;
        self.update_bucket_record(record).await?;
        Ok(empty(StatusCode::OK))
    }

    /// PutObjectAcl: the canned ACL is carried to the backend that holds the object (which
    /// answers for its support of ACLs); reads through the gateway follow the bucket's ACL.
    /// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObjectAcl.html>
    pub(crate) async fn put_object_acl(
        &self,
        call: &mut Call<'_>,
        body: C::Body,
    ) -> Result<http::Response<C::Body>, S3Error> {
        use super::backend::{backend_error, backend_uri, BackendRequest};
        let acl = Self::requested_acl(call, body).await?;
        let (bucket, key) = (call.bucket().to_owned(), call.key().to_owned());
        let real_key = call.real_key(&key);
        let mut located = self.locate(call, &bucket, &key).await?;
        // An index entry may be stale: a 404 there asks the backends once.
        for attempt in 0..2 {
            let backend = call.backend(&located.backend)?;
            let mut request = BackendRequest::new(
                http::Method::PUT,
                backend_uri(backend, Some(&real_key), "acl")?,
            );
            request
                .headers
                .insert("x-amz-acl", HeaderValue::from_static(acl.as_str()));
            let response = self.send(call, backend, "PutObjectAcl", request).await?;
            if response.status().is_success() {
                return Ok(empty(StatusCode::OK));
            }
            if response.status() == StatusCode::NOT_FOUND && located.from_index && attempt == 0 {
                located = self
                    .find(call, &bucket, &key, Some(&backend.name), &[])
                    .await?;
                continue;
            }
            return Err(backend_error(&backend.name, response).await);
        }
        Err(S3Error::no_such_key(&key))
    }

    /// GetBucketCors. <https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketCors.html>
    pub(crate) fn get_bucket_cors<B: Body>(call: &Call<'_>) -> Result<http::Response<B>, S3Error> {
        match call.access.as_ref().filter(|a| !a.cors.is_empty()) {
            Some(a) => Ok(xml(crate::cors::configuration_xml(&a.cors))),
            None => Err(S3Error::new(
                S3ErrorCode::NoSuchCORSConfiguration,
                "The CORS configuration does not exist",
            )
            .with_resource(call.bucket())),
        }
    }

    /// PutBucketCors: the body must carry `Content-MD5` (or a checksum), as AWS requires.
    /// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutBucketCors.html>
    pub(crate) async fn put_bucket_cors(
        &self,
        call: &mut Call<'_>,
        body: C::Body,
    ) -> Result<http::Response<C::Body>, S3Error> {
        let body = Self::small_body(call, body, 64 * 1024).await?;
        super::objects::check_body_integrity(call, &body)?;
        let rules = crate::cors::parse_configuration(&body)?;
        let mut record = Self::stored_record(call)?;
        record.cors = rules;
        self.update_bucket_record(record).await?;
        Ok(empty(StatusCode::OK))
    }

    /// DeleteBucketCors. <https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteBucketCors.html>
    pub(crate) async fn delete_bucket_cors(
        &self,
        call: &mut Call<'_>,
    ) -> Result<http::Response<C::Body>, S3Error> {
        let mut record = Self::stored_record(call)?;
        record.cors.clear();
        self.update_bucket_record(record).await?;
        Ok(empty(StatusCode::NO_CONTENT))
    }
}

/// The answer to a preflight `OPTIONS` on a bucket with `access`: `200` with the CORS
/// headers of the first rule that allows it, else AWS's `403`.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/RESTOPTIONSobject.html>
pub(crate) fn preflight<B: Body>(
    headers: &http::HeaderMap,
    access: &BucketAccess,
) -> Result<http::Response<B>, S3Error> {
    let allowed = crate::cors::Preflight::from_headers(headers)?.answer(&access.cors)?;
    let mut r = empty(StatusCode::OK);
    set_cors_headers(&mut r, &allowed);
    Ok(r)
}

/// Puts CORS headers (and `Vary`) on an answer.
pub(crate) fn set_cors_headers<B>(
    response: &mut http::Response<B>,
    headers: &[(&'static str, String)],
) {
    let h = response.headers_mut();
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(*name, v);
        }
    }
    h.insert(
        http::header::VARY,
        HeaderValue::from_static(crate::cors::VARY),
    );
}
