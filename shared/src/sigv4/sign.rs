//! Signing and presigning requests to backends ([`SignerCache`]), checked in the tests
//! against AWS's own implementation, the `aws-sigv4` crate ([`super::oracle`]).
//!
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-authenticating-requests.html>

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use super::canonical;
use crate::config::BackendConfig;
use crate::error::S3Error;

/// What the gateway declares as the payload hash of a backend request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadHash {
    /// `UNSIGNED-PAYLOAD`: streamed bodies.
    Unsigned,
    /// The hex SHA-256 of a body the gateway holds (XML it built) or that the client declared.
    Sha256(String),
}

/// The longest a presigned URL may live (S3's limit).
pub(crate) const MAX_PRESIGN: Duration = Duration::from_secs(604_800);

pub(crate) fn signing_failed(what: &str, e: impl std::fmt::Display) -> S3Error {
    tracing::error!(error = %e, "{what}");
    S3Error::internal()
}

/// What is signed of the target, as it will be sent: the path in its canonical encoding (same
/// object key) and a `Host` header, added from the URI when missing.
pub(crate) fn canonical_target(parts: &mut http::request::Parts) -> Result<(), S3Error> {
    parts.uri = canonical_path_uri(&parts.uri)?;
    if !parts.headers.contains_key(http::header::HOST) {
        parts
            .headers
            .insert(http::header::HOST, host_header_value(&parts.uri)?);
    }
    Ok(())
}

/// [`host_header`] as a header value; for most URIs the authority as it is, with no string
/// built in between. (The native client sets it on unsigned requests too.)
pub fn host_header_value(uri: &http::Uri) -> Result<http::HeaderValue, S3Error> {
    let value = match uri.authority() {
        Some(a) if !a.as_str().contains('@') && !names_default_port(uri) => {
            http::HeaderValue::from_str(a.as_str())
        }
        _ => http::HeaderValue::from_str(&host_header(uri)?),
    };
    value.map_err(|e| signing_failed("host header", e))
}

/// `http://...:80` or `https://...:443`: a port the Host header leaves out.
fn names_default_port(uri: &http::Uri) -> bool {
    matches!(
        (uri.scheme_str(), uri.port_u16()),
        (Some("http"), Some(80)) | (Some("https"), Some(443))
    )
}

/// The `Host` header for `uri`: its authority, without the scheme's default port.
pub(crate) fn host_header(uri: &http::Uri) -> Result<String, S3Error> {
    let host = uri
        .host()
        .ok_or_else(|| signing_failed("backend uri", "no host"))?;
    let mut out = String::with_capacity(host.len() + 6);
    out.push_str(host);
    match (uri.scheme_str(), uri.port_u16()) {
        (Some("http"), Some(80)) | (Some("https"), Some(443)) | (_, None) => {}
        (_, Some(port)) => {
            out.push(':');
            let _ = write!(out, "{port}");
        }
    }
    Ok(out)
}

/// S3's `UNSIGNED-PAYLOAD`, the payload hash of streamed bodies and presigned URLs.
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Headers `aws-sigv4` never signs (its default `excluded_headers`): they change on the way.
const EXCLUDED_HEADERS: &[&str] = &[
    "authorization",
    "user-agent",
    "x-amzn-trace-id",
    "transfer-encoding",
];

/// The signing keys of the backends, cached per (backend, day): `kSigning` depends only on the
/// secret, the date and the region, so deriving it (4 HMACs) and building `aws-sigv4`'s signer
/// state for every request is wasted work. Signs with [`canonical`] and produces exactly what
/// `aws-sigv4` would (the property tests compare it with [`super::oracle`]).
///
/// <https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html>
#[derive(Default, Debug)]
pub struct SignerCache {
    keys: canonical::SigningKeys,
}

impl SignerCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// HMAC keyed with `kSigning` of `backend` for `date` (`YYYYMMDD`), derived once a day
    /// per backend.
    fn signing_mac(&self, backend: &BackendConfig, date: &str) -> hmac::Hmac<sha2::Sha256> {
        self.keys.s3_mac(
            &backend.name,
            backend.secret_key.expose(),
            date,
            &backend.region,
        )
    }

    /// Signs `parts` (absolute URI, headers to send) for `backend` at `now`: adds
    /// `x-amz-date`, `x-amz-content-sha256`, `Authorization` (and `host` if missing). The URI's
    /// path is rewritten to its canonical encoding (same object key, the form that is signed).
    pub fn sign_request(
        &self,
        parts: &mut http::request::Parts,
        backend: &BackendConfig,
        payload: &PayloadHash,
        now: SystemTime,
    ) -> Result<(), S3Error> {
        canonical_target(parts)?;
        // The date moves into its header without a copy (a `String` of exactly its length
        // becomes the value's `Bytes` as it is) and is read back from there.
        let date_value =
            http::HeaderValue::from_maybe_shared(bytes::Bytes::from(crate::time::amz_date(now)))
                .map_err(|e| signing_failed("x-amz-date", e))?;
        let hash_value = match payload {
            PayloadHash::Unsigned => http::HeaderValue::from_static(UNSIGNED_PAYLOAD),
            PayloadHash::Sha256(hash) => http::HeaderValue::from_str(hash)
                .map_err(|e| signing_failed("x-amz-content-sha256", e))?,
        };
        parts.headers.insert(X_AMZ_DATE, date_value);
        parts.headers.insert(X_AMZ_CONTENT_SHA256, hash_value);
        parts.headers.remove(http::header::AUTHORIZATION);
        let amz_date = parts
            .headers
            .get(X_AMZ_DATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let payload_hash = match payload {
            PayloadHash::Unsigned => UNSIGNED_PAYLOAD,
            PayloadHash::Sha256(hash) => hash.as_str(),
        };

        // By `HeaderName`: looking a value up by `&str` parses the name again.
        let mut signed: Vec<&http::HeaderName> = parts
            .headers
            .keys()
            .filter(|n| !EXCLUDED_HEADERS.contains(&n.as_str()))
            .collect();
        signed.sort_unstable_by_key(|n| n.as_str());

        let query = canonical::canonical_query(parts.uri.query().unwrap_or(""), None);
        let mut creq = Vec::with_capacity(1024);
        creq.extend_from_slice(parts.method.as_str().as_bytes());
        creq.push(b'\n');
        creq.extend_from_slice(parts.uri.path().as_bytes());
        creq.push(b'\n');
        creq.extend_from_slice(query.as_bytes());
        creq.push(b'\n');
        for name in &signed {
            creq.extend_from_slice(name.as_str().as_bytes());
            creq.push(b':');
            for (i, v) in parts.headers.get_all(*name).iter().enumerate() {
                if i > 0 {
                    creq.push(b',');
                }
                // As bytes: a user-metadata value may be UTF-8 (not `to_str` text), which
                // the SDKs send and sign as its bytes, and the backend checks the same way.
                push_spaces_trimmed(v.as_bytes(), &mut creq);
            }
            creq.push(b'\n');
        }
        creq.push(b'\n');
        // The signed header names, written once: here, and copied into `Authorization`.
        let names_at = creq.len();
        for (i, name) in signed.iter().enumerate() {
            if i > 0 {
                creq.push(b';');
            }
            creq.extend_from_slice(name.as_str().as_bytes());
        }
        let names = names_at..creq.len();
        creq.push(b'\n');
        creq.extend_from_slice(payload_hash.as_bytes());
        // Header names are ASCII.
        let signed_headers = std::str::from_utf8(&creq[names]).unwrap_or_default();

        // `YYYYMMDD` of `YYYYMMDDTHHMMSSZ`.
        let date = amz_date.get(..8).unwrap_or_default();
        let scope = scope(date, &backend.region);
        let sts = canonical::string_to_sign(amz_date, &scope, &creq);
        let parts_before_signature = [
            canonical::ALGORITHM,
            " Credential=",
            &backend.access_key,
            "/",
            &scope,
            ", SignedHeaders=",
            signed_headers,
            ", Signature=",
        ];
        // Exactly its length, so that it becomes the header's `Bytes` without a copy.
        let mut authorization = String::with_capacity(
            parts_before_signature
                .iter()
                .map(|p| p.len())
                .sum::<usize>()
                + 64,
        );
        for part in parts_before_signature {
            authorization.push_str(part);
        }
        canonical::push_signature_with(self.signing_mac(backend, date), &sts, &mut authorization);
        let value = http::HeaderValue::from_maybe_shared(bytes::Bytes::from(authorization))
            .map_err(|e| signing_failed("authorization header", e))?;
        parts.headers.insert(http::header::AUTHORIZATION, value);
        Ok(())
    }

    /// A presigned URL for `method` on `uri` (absolute, the backend's), valid for `expires`
    /// (clamped to S3's 1 second ..= 7 days).
    pub fn presign(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        backend: &BackendConfig,
        expires: Duration,
        now: SystemTime,
    ) -> Result<String, S3Error> {
        let uri = canonical_path_uri(uri)?;
        let host = host_header(&uri)?;
        let expires = expires.clamp(Duration::from_secs(1), MAX_PRESIGN).as_secs();
        let amz_date = crate::time::amz_date(now);
        // `YYYYMMDD` of `YYYYMMDDTHHMMSSZ`.
        let date = amz_date.get(..8).unwrap_or_default();
        let scope = scope(date, &backend.region);
        // The auth parameters, encoded once and already in canonical order (Algorithm,
        // Credential, Date, Expires, SignedHeaders): both the canonical query of a URI without
        // its own parameters, and what is appended to the URL.
        let mut auth = String::with_capacity(160 + backend.access_key.len() + scope.len());
        auth.push_str("X-Amz-Algorithm=");
        auth.push_str(canonical::ALGORITHM);
        auth.push_str("&X-Amz-Credential=");
        canonical::uri_encode(backend.access_key.as_bytes(), false, &mut auth);
        auth.push_str("%2F");
        canonical::uri_encode(scope.as_bytes(), false, &mut auth);
        // `YYYYMMDDTHHMMSSZ` and a number: nothing to encode.
        auth.push_str("&X-Amz-Date=");
        auth.push_str(&amz_date);
        auth.push_str("&X-Amz-Expires=");
        let _ = write!(auth, "{expires}");
        auth.push_str("&X-Amz-SignedHeaders=host");
        // The canonical query: the URI's own parameters and the auth ones, encoded, sorted.
        let own = canonical::query_pairs(uri.query().unwrap_or(""));
        let query = if own.is_empty() {
            std::borrow::Cow::Borrowed(auth.as_str())
        } else {
            let own: Vec<(String, String)> =
                own.iter().map(|(k, v)| (encoded(k), encoded(v))).collect();
            let mut pairs: Vec<(&str, &str)> = own
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .chain(auth.split('&').filter_map(|p| p.split_once('=')))
                .collect();
            std::borrow::Cow::Owned(canonical::join_sorted(&mut pairs))
        };
        let mut creq = String::with_capacity(512);
        creq.push_str(method.as_str());
        creq.push('\n');
        creq.push_str(uri.path());
        creq.push('\n');
        creq.push_str(&query);
        creq.push_str("\nhost:");
        creq.push_str(&host);
        creq.push_str("\n\nhost\n");
        creq.push_str(UNSIGNED_PAYLOAD);
        let sts = canonical::string_to_sign(&amz_date, &scope, creq.as_bytes());
        let signature = canonical::signature_with(self.signing_mac(backend, date), &sts);

        // The URI as given (its own parameters unchanged), then the auth parameters.
        // (What `Uri`'s `Display` writes, without the formatting machinery.)
        let scheme = uri.scheme_str().unwrap_or("https");
        let authority = uri.authority().map_or("", |a| a.as_str());
        let mut url = String::with_capacity(
            scheme.len() + authority.len() + uri.path().len() + auth.len() + 100,
        );
        url.push_str(scheme);
        url.push_str("://");
        url.push_str(authority);
        url.push_str(uri.path());
        if let Some(q) = uri.query() {
            url.push('?');
            url.push_str(q);
        }
        url.push_str(canonical::query_separator(&url));
        url.push_str(&auth);
        url.push_str("&X-Amz-Signature=");
        url.push_str(&signature);
        Ok(url)
    }
}

/// The credential scope, `YYYYMMDD/region/s3/aws4_request`.
fn scope(date: &str, region: &str) -> String {
    let mut scope = String::with_capacity(date.len() + region.len() + 20);
    for part in [date, "/", region, "/s3/aws4_request"] {
        scope.push_str(part);
    }
    scope
}

const X_AMZ_DATE: http::HeaderName = http::HeaderName::from_static("x-amz-date");
const X_AMZ_CONTENT_SHA256: http::HeaderName =
    http::HeaderName::from_static("x-amz-content-sha256");

fn encoded(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 8);
    canonical::uri_encode(bytes, false, &mut s);
    s
}

/// `aws-sigv4`'s header value normalization: leading and trailing spaces removed, runs of
/// spaces collapsed to one; other whitespace (tabs) kept.
fn push_spaces_trimmed(value: &[u8], out: &mut Vec<u8>) {
    if !value.contains(&b' ') {
        // Dates, hashes, hosts: nothing to trim or collapse (`contains` on bytes is memchr).
        out.extend_from_slice(value);
        return;
    }
    let start = value.iter().position(|&b| b != b' ').unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| b != b' ')
        .map_or(start, |i| i + 1);
    let mut prev_space = false;
    for &b in value.get(start..end).unwrap_or_default() {
        if b == b' ' {
            if prev_space {
                continue;
            }
            prev_space = true;
        } else {
            prev_space = false;
        }
        out.push(b);
    }
}

/// `uri` with its path in canonical form (each segment decoded and encoded again with S3's
/// rules), so that what is sent is exactly what `aws-sigv4` signs in `Single` mode and what
/// the backend recomputes, whatever encoding the caller chose (`+`, `%2f`, `$` ...).
pub(crate) fn canonical_path_uri(uri: &http::Uri) -> Result<http::Uri, S3Error> {
    if canonical::is_canonical_path(uri.path()) {
        return Ok(uri.clone());
    }
    let path = canonical::canonical_uri(uri.path());
    if path == uri.path() {
        return Ok(uri.clone());
    }
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut builder = http::Uri::builder();
    if let Some(scheme) = uri.scheme() {
        builder = builder.scheme(scheme.clone());
    }
    if let Some(authority) = uri.authority() {
        builder = builder.authority(authority.clone());
    }
    builder
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| signing_failed("backend uri", e))
}

/// [`SignerCache::sign_request`] for a one-off request (`check`, the dev mode's client): the
/// signing key is derived for this request alone.
pub fn sign_request(
    parts: &mut http::request::Parts,
    backend: &BackendConfig,
    payload: &PayloadHash,
    now: SystemTime,
) -> Result<(), S3Error> {
    SignerCache::new().sign_request(parts, backend, payload, now)
}

/// [`SignerCache::presign`] for a one-off URL.
pub fn presign(
    method: &http::Method,
    uri: &http::Uri,
    backend: &BackendConfig,
    expires: Duration,
    now: SystemTime,
) -> Result<String, S3Error> {
    SignerCache::new().presign(method, uri, backend, expires, now)
}
