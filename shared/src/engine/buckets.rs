//! ListBuckets, CreateBucket, DeleteBucket: virtual buckets, from the config or created at
//! run time over the whole backend pool.

use http::{Method, StatusCode};

use super::backend::{backend_error, backend_uri, encode_query_value, BackendRequest};
use super::{empty, store_unavailable, xml, Call, Engine};
use crate::body::Body;
use crate::error::{S3Error, S3ErrorCode};
use crate::http::HttpClient;
use crate::sigv4::Identity;
use crate::store::{BucketRecord, MetadataStore, StoreError};

/// S3's bucket naming rules: 3-63 characters of lowercase letters, digits, `.` and `-`,
/// starting and ending with a letter or digit.
/// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html>
pub(crate) fn valid_bucket_name(name: &str) -> bool {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let edge = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (3..=63).contains(&name.len())
        && ok_chars
        && edge(name.bytes().next())
        && edge(name.bytes().last())
        && !name.contains("..")
}

/// The store document with the date each configured virtual bucket was first listed (JSON
/// map of name to unix seconds): a bucket from the config has no creation date of its own, and
/// ListBuckets should not show 1970.
const CONFIGURED_BUCKETS_DOCUMENT: &str = "configured-buckets";

impl<S: MetadataStore, C: HttpClient> Engine<S, C> {
    /// Every virtual bucket, configured or created at run time, sorted by name: what reindex,
    /// drain and rebalance walk.
    pub(crate) async fn all_bucket_names(&self) -> Result<Vec<String>, StoreError> {
        let mut names: Vec<String> = self
            .config()
            .virtual_buckets
            .iter()
            .map(|b| b.name.clone())
            .collect();
        names.extend(self.store.list_buckets().await?.into_iter().map(|b| b.name));
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The creation dates of configured buckets: when this gateway first listed them, recorded
    /// now for those seen for the first time (a failed write only delays that).
    async fn configured_bucket_dates(
        &self,
        call: &Call<'_>,
    ) -> Result<std::collections::BTreeMap<String, u64>, S3Error> {
        let stored = self
            .store
            .get_document(CONFIGURED_BUCKETS_DOCUMENT)
            .await
            .map_err(store_unavailable)?;
        let mut dates: std::collections::BTreeMap<String, u64> = stored
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let now = crate::time::unix_secs(call.ctx.now);
        let mut new = false;
        for b in &call.config.virtual_buckets {
            dates.entry(b.name.clone()).or_insert_with(|| {
                new = true;
                now
            });
        }
        if new {
            let text = serde_json::to_string(&dates).unwrap_or_default();
            if let Err(e) = self
                .store
                .put_document(CONFIGURED_BUCKETS_DOCUMENT, &text)
                .await
            {
                tracing::warn!(error = %e, "could not record the configured buckets' dates");
            }
        }
        Ok(dates)
    }

    pub(crate) async fn list_buckets(
        &self,
        call: &mut Call<'_>,
    ) -> Result<http::Response<C::Body>, S3Error> {
        let scope = match &call.verified.identity {
            Identity::AccessKey(ak) => call.config.credential(ak).and_then(|c| c.buckets.clone()),
            Identity::Anonymous => None,
        };
        let first_seen = self.configured_bucket_dates(call).await?;
        let mut buckets: Vec<(String, std::time::SystemTime)> = call
            .config
            .virtual_buckets
            .iter()
            .map(|b| {
                let secs = first_seen.get(&b.name).copied().unwrap_or_default();
                (b.name.clone(), crate::time::from_unix_secs(secs))
            })
            .collect();
        for b in self.store.list_buckets().await.map_err(store_unavailable)? {
            // Only the caller's own buckets (and those without an owner); admins see all.
            if !super::access::lists(call.config, &call.verified.identity, &b) {
                continue;
            }
            if !buckets.iter().any(|(n, _)| *n == b.name) {
                buckets.push((b.name, crate::time::from_unix_secs(b.created)));
            }
        }
        buckets.retain(|(name, _)| scope.as_ref().is_none_or(|s| s.contains(name)));
        buckets.sort();
        // Paging and filters, as AWS documents them: `prefix`, `continuation-token` (the last
        // name of the page before: names are unique and sorted), `max-buckets` (1 to 10,000),
        // `bucket-region` (every virtual bucket answers GetBucketLocation as us-east-1).
        // <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListBuckets.html>
        let query = &call.s3.query;
        let max = match query.get("max-buckets") {
            None => None,
            Some(v) => Some(
                v.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| {
                        S3Error::invalid_argument(
                            "Argument max-buckets must be an integer between 1 and 10000.",
                        )
                    })?,
            ),
        };
        let prefix = query.get("prefix");
        let after = query.get("continuation-token").filter(|t| !t.is_empty());
        let region = query.get("bucket-region").filter(|r| !r.is_empty());
        buckets.retain(|(name, _)| {
            prefix.is_none_or(|p| name.starts_with(p)) && after.is_none_or(|a| name.as_str() > a)
        });
        if region.is_some_and(|r| r != "us-east-1") {
            buckets.clear();
        }
        let next = match max {
            Some(max) if buckets.len() > max => {
                buckets.truncate(max);
                buckets.last().map(|(name, _)| name.clone())
            }
            _ => None,
        };
        Ok(xml(crate::xml::list_buckets(
            &buckets,
            next.as_deref(),
            prefix,
        )))
    }

    /// CreateBucket. The bucket belongs to the access key that creates it. Creating it again
    /// is `200` for its owner in us-east-1 (no `LocationConstraint`), as AWS's legacy answer,
    /// and `409 BucketAlreadyOwnedByYou` elsewhere; another owner's name is
    /// `409 BucketAlreadyExists`. `x-amz-acl` sets its canned ACL.
    /// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_CreateBucket.html>
    pub(crate) async fn create_bucket(
        &self,
        call: &mut Call<'_>,
        body: C::Body,
    ) -> Result<http::Response<C::Body>, S3Error> {
        let name = call.bucket().to_owned();
        if !valid_bucket_name(&name) {
            return Err(S3Error::new(
                S3ErrorCode::InvalidBucketName,
                "The specified bucket is not valid.",
            )
            .with_resource(name));
        }
        let acl = crate::acl::CannedAcl::from_headers(&call.parts.headers)?.unwrap_or_default();
        let body = Self::small_body(call, body, 64 * 1024).await?;
        let region = location_constraint(&body)?;
        let caller = match &call.verified.identity {
            Identity::AccessKey(key) => Some(key.clone()),
            Identity::Anonymous => None,
        };
        let created_answer = || {
            let mut r = empty(StatusCode::OK);
            if let Ok(v) = http::HeaderValue::from_str(&format!("/{name}")) {
                r.headers_mut().insert(http::header::LOCATION, v);
            }
            r
        };
        // An existing bucket: configured ones and those without an owner are everyone's.
        let exists = |owner: Option<&String>| {
            if owner.is_none() || owner == caller.as_ref() {
                if region.is_empty() || region == "us-east-1" {
                    Ok(created_answer())
                } else {
                    Err(S3Error::new(S3ErrorCode::BucketAlreadyOwnedByYou, "Your previous request to create the named bucket succeeded and you already own it.").with_resource(name.clone()))
                }
            } else {
                Err(S3Error::new(S3ErrorCode::BucketAlreadyExists, "The requested bucket name is not available. The bucket namespace is shared by all users of the system. Please select a different name and try again.").with_resource(name.clone()))
            }
        };
        if let Some(existing) = &call.access {
            return exists(existing.owner.as_ref());
        }
        if !call.config.api.allow_create_bucket {
            return Err(S3Error::new(S3ErrorCode::AccessDenied, "Creating buckets is turned off in this gateway's configuration (s3api.allow_create_bucket)."));
        }
        let record = BucketRecord {
            name: name.clone(),
            created: crate::time::unix_secs(call.ctx.now),
            owner: caller.clone(),
            acl,
            cors: Vec::new(),
        };
        let created = self
            .store
            .create_bucket(&record)
            .await
            .map_err(store_unavailable)?;
        if created {
            return Ok(created_answer());
        }
        // Created meanwhile, perhaps by another instance: by whom decides the answer.
        let buckets = self.store.list_buckets().await.map_err(store_unavailable)?;
        match buckets.into_iter().find(|b| b.name == name) {
            Some(winner) => exists(winner.owner.as_ref()),
            // ... and deleted again since: the client may simply try again.
            None => Err(S3Error::new(
                S3ErrorCode::OperationAborted,
                "A conflicting conditional operation is currently in progress against this resource. Please try again.",
            )),
        }
    }

    pub(crate) async fn delete_bucket(
        &self,
        call: &mut Call<'_>,
    ) -> Result<http::Response<C::Body>, S3Error> {
        let name = call.bucket().to_owned();
        // Empty means: no backend holds a key under the bucket's prefix, and no upload is open.
        let prefix = call.real_key("");
        let query = format!(
            "list-type=2&max-keys=1&prefix={}",
            encode_query_value(&prefix)
        );
        for backend in call.pool().into_iter().cloned().collect::<Vec<_>>() {
            let mut request =
                BackendRequest::new(Method::GET, backend_uri(&backend, None, &query)?);
            request.timeout = Some(call.config.balancer.probe_timeout);
            let response = self.send(call, &backend, "ListObjectsV2", request).await?;
            if !response.status().is_success() {
                return Err(backend_error(&backend.name, response).await);
            }
            let body = response.into_body().collect(1024 * 1024).await?;
            let page = crate::listing::parse_backend_page(&body, &prefix, 0)?;
            if !page.entries.is_empty() || !page.common_prefixes.is_empty() {
                return Err(S3Error::new(
                    S3ErrorCode::BucketNotEmpty,
                    "The bucket you tried to delete is not empty",
                )
                .with_resource(name));
            }
        }
        if call.config.virtual_bucket(&name).is_some() {
            return Err(S3Error::new(
                S3ErrorCode::AccessDenied,
                "This bucket is defined in the gateway's configuration; remove it there.",
            ));
        }
        self.store
            .delete_bucket(&name)
            .await
            .map_err(store_unavailable)?;
        Ok(empty(StatusCode::NO_CONTENT))
    }
}

/// The region a CreateBucket body asks for (`""` without a body or constraint).
fn location_constraint(body: &[u8]) -> Result<String, S3Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(String::new());
    }
    let root = crate::xml::parse(body)
        .ok()
        .filter(|r| r.name == "CreateBucketConfiguration")
        .ok_or_else(|| {
            S3Error::new(
                S3ErrorCode::MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema",
            )
        })?;
    Ok(root
        .text_of("LocationConstraint")
        .unwrap_or_default()
        .to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn location_constraints() {
        assert_eq!(super::location_constraint(b"").unwrap(), "");
        let eu = b"<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>";
        assert_eq!(super::location_constraint(eu).unwrap(), "eu-west-1");
        assert!(super::location_constraint(b"<Other/>").is_err());
    }

    #[test]
    fn bucket_names() {
        for ok in ["abc", "my-bucket.v2", "a1b"] {
            assert!(super::valid_bucket_name(ok), "{ok}");
        }
        for bad in ["ab", "Abc", "-abc", "abc-", "a..b", "a_b", &"a".repeat(64)] {
            assert!(!super::valid_bucket_name(bad), "{bad}");
        }
    }
}
