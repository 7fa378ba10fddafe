//! Talking to one backend: its URLs, which headers cross the gateway, signing and sending,
//! and turning its error answers into the client's S3 errors.

use std::time::SystemTime;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::body::Body;
use crate::config::BackendConfig;
use crate::error::{S3Error, S3ErrorCode};
use crate::sigv4::canonical::EMPTY_SHA256;
use crate::sigv4::sign::{PayloadHash, SignerCache};

/// Characters S3 leaves unencoded in a path, besides `/` between segments.
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');
/// The same for a query value (and `/` encoded too).
pub(crate) const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes an object key for a URL path, as S3 expects it (`/` kept).
pub(crate) fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, PATH).to_string()
}

pub(crate) fn encode_query_value(value: &str) -> String {
    utf8_percent_encode(value, QUERY).to_string()
}

/// The URL of the backend's real bucket (`real_key: None`) or of one object in it, with
/// `query` (already encoded, without `?`) appended.
pub(crate) fn backend_uri(
    backend: &BackendConfig,
    real_key: Option<&str>,
    query: &str,
) -> Result<Uri, S3Error> {
    let endpoint = backend.endpoint.trim_end_matches('/');
    let (scheme, rest) = endpoint.split_once("://").unwrap_or(("https", endpoint));
    // `base_path`: a path the endpoint itself has (a provider behind a path prefix).
    let (authority, base_path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut url = String::with_capacity(
        endpoint.len() + backend.bucket.len() + real_key.map_or(0, str::len) + query.len() + 16,
    );
    // Path style: `{scheme}://{authority}{/base_path}/{bucket}/{key}`; virtual-hosted
    // style: `{scheme}://{bucket}.{authority}{/base_path}/{key}`.
    url.push_str(scheme);
    url.push_str("://");
    if !backend.path_style {
        url.push_str(&backend.bucket);
        url.push('.');
    }
    url.push_str(authority);
    if !base_path.is_empty() {
        url.push('/');
        url.push_str(base_path);
    }
    if backend.path_style {
        url.push('/');
        url.push_str(&backend.bucket);
    }
    match real_key {
        Some(key) => {
            url.push('/');
            url.extend(utf8_percent_encode(key, PATH));
        }
        None if !backend.path_style => url.push('/'),
        None => {}
    }
    if !query.is_empty() {
        url.push('?');
        url.push_str(query);
    }
    url.parse().map_err(|e| {
        tracing::error!(backend = %backend.name, error = %e, "backend endpoint does not make a valid URL");
        S3Error::internal()
    })
}

/// The `x-amz-copy-source` value naming an object of the backend's real bucket.
pub(crate) fn copy_source(backend: &BackendConfig, real_key: &str) -> String {
    format!("/{}/{}", backend.bucket, encode_key(real_key))
}

/// Request headers a client may send that the backend must see, for object reads.
const READ_HEADERS: &[&str] = &[
    "range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    // Asks the backend for the object's stored checksum (x-amz-checksum-* in the answer).
    "x-amz-checksum-mode",
];

/// Request headers carried to the backend on writes (PutObject, CreateMultipartUpload, copy).
const WRITE_HEADERS: &[&str] = &[
    "content-type",
    "content-md5",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
    "if-match",
    "if-none-match",
    "x-amz-storage-class",
    "x-amz-website-redirect-location",
    "x-amz-metadata-directive",
    "x-amz-copy-source-if-match",
    "x-amz-copy-source-if-none-match",
    "x-amz-copy-source-if-modified-since",
    "x-amz-copy-source-if-unmodified-since",
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-crc64nvme",
    "x-amz-checksum-sha1",
    "x-amz-checksum-sha256",
    "x-amz-sdk-checksum-algorithm",
    "x-amz-checksum-algorithm",
];

/// Response headers of an object read or write that go back to the client.
const RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "content-range",
    "content-encoding",
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
    "etag",
    "last-modified",
    "accept-ranges",
    "x-amz-storage-class",
    "x-amz-mp-parts-count",
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-crc64nvme",
    "x-amz-checksum-sha1",
    "x-amz-checksum-sha256",
    "x-amz-checksum-type",
    "x-amz-website-redirect-location",
];

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap, names: &[&str], meta: bool) {
    for (name, value) in from {
        let n = name.as_str();
        if names.contains(&n) || (meta && n.starts_with("x-amz-meta-")) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Headers for a backend object read.
pub(crate) fn read_headers(client: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::new();
    copy_headers(client, &mut h, READ_HEADERS, false);
    h
}

/// Headers for a backend object write. `aws-chunked` is removed from Content-Encoding: the
/// gateway decodes the framing, the backend receives plain bytes.
pub(crate) fn write_headers(client: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::new();
    copy_headers(client, &mut h, WRITE_HEADERS, true);
    // An object's canned ACL goes to the backend that keeps it (checked by the engine before);
    // `private` and the bucket-owner ACLs are every backend's default and not sent, as some
    // providers refuse ACL headers.
    if let Some(v) = client
        .get("x-amz-acl")
        .filter(|v| v.as_bytes() == b"public-read")
    {
        h.insert("x-amz-acl", v.clone());
    }
    // `aws-chunked` is how the body was sent, not what it is: it is dropped. The rest passes
    // byte for byte (`deflate, gzip` stays `deflate, gzip`).
    if let Some(enc) = h.get("content-encoding").and_then(|v| v.to_str().ok()) {
        let is_chunked = |e: &str| e.trim().eq_ignore_ascii_case("aws-chunked");
        if enc.split(',').any(is_chunked) {
            let rest: Vec<&str> = enc
                .split(',')
                .filter(|e| !is_chunked(e) && !e.trim().is_empty())
                .collect();
            let rest = rest.join(",");
            match HeaderValue::from_str(rest.trim()) {
                Ok(v) if !rest.trim().is_empty() => {
                    h.insert("content-encoding", v);
                }
                _ => {
                    h.remove("content-encoding");
                }
            }
        }
    }
    h
}

/// The object's own headers in a backend's answer (type, encoding, caching, user metadata),
/// for writing the same object elsewhere (a move between backends). The storage class is
/// left out: class names differ between providers.
pub(crate) fn object_headers(backend: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::new();
    copy_headers(
        backend,
        &mut h,
        &[
            "content-type",
            "content-encoding",
            "content-disposition",
            "content-language",
            "cache-control",
            "expires",
        ],
        true,
    );
    h
}

/// The headers of a backend's answer that the client sees.
pub(crate) fn response_headers(backend: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::new();
    copy_headers(backend, &mut h, RESPONSE_HEADERS, true);
    h
}

pub(crate) fn set_content_length(h: &mut HeaderMap, len: u64) {
    h.insert(
        http::header::CONTENT_LENGTH,
        crate::http::content_length_value(len),
    );
}

pub(crate) fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn insert_header(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(HeaderName::from_static(name), v);
    }
}

/// A request to a backend, before signing.
pub(crate) struct BackendRequest<B> {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: B,
    pub payload: PayloadHash,
    /// Give up waiting for the answer's headers after this long (reads and small requests).
    pub timeout: Option<std::time::Duration>,
    /// A scheduled health probe: sent even while the backend's circuit is open, and not
    /// counted as request-path evidence (the probe results feed the health snapshot).
    pub health_probe: bool,
}

impl<B: Body> BackendRequest<B> {
    pub fn new(method: Method, uri: Uri) -> Self {
        Self {
            method,
            uri,
            headers: HeaderMap::new(),
            body: B::empty(),
            payload: PayloadHash::Sha256(EMPTY_SHA256.into()),
            timeout: None,
            health_probe: false,
        }
    }

    /// A small body the gateway built (XML): signed with its hash.
    pub fn with_bytes(mut self, bytes: bytes::Bytes) -> Self {
        use sha2::Digest;
        self.payload = PayloadHash::Sha256(hex::encode(sha2::Sha256::digest(&bytes)));
        set_content_length(&mut self.headers, bytes.len() as u64);
        self.body = B::from_bytes(bytes);
        self
    }

    /// A streamed body of `len` bytes, unsigned payload.
    pub fn with_stream(mut self, body: B, len: u64) -> Self {
        self.payload = PayloadHash::Unsigned;
        set_content_length(&mut self.headers, len);
        self.body = body;
        self
    }

    /// Signs the request for `backend` at `now` into an `http::Request`.
    pub fn sign(
        self,
        signers: &SignerCache,
        backend: &BackendConfig,
        now: SystemTime,
    ) -> Result<http::Request<B>, S3Error> {
        let mut builder = http::Request::builder().method(self.method).uri(self.uri);
        if let Some(h) = builder.headers_mut() {
            *h = self.headers;
        }
        let (mut parts, ()) = builder
            .body(())
            .map_err(|e| {
                tracing::error!(error = %e, "could not build a backend request");
                S3Error::internal()
            })?
            .into_parts();
        signers.sign_request(&mut parts, backend, &self.payload, now)?;
        if let Some(t) = self.timeout {
            parts.extensions.insert(crate::http::RequestTimeout(t));
        }
        Ok(http::Request::from_parts(parts, self.body))
    }
}

/// Turns a backend's error answer into the client's error. Codes the client can act on
/// (NoSuchKey, PreconditionFailed, InvalidRange, InvalidPart, EntityTooSmall ...) pass
/// through; a backend refusing the gateway's own credentials is the gateway's problem.
pub(crate) async fn backend_error<B: Body>(backend: &str, response: http::Response<B>) -> S3Error {
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect(64 * 1024)
        .await
        .unwrap_or_default();
    let parsed = crate::xml::parse_error(&body);
    let code = parsed.as_ref().and_then(|(c, _)| S3ErrorCode::parse(c));
    match code {
        Some(
            S3ErrorCode::AccessDenied
            | S3ErrorCode::InvalidAccessKeyId
            | S3ErrorCode::SignatureDoesNotMatch,
        )
        | Some(S3ErrorCode::NoSuchBucket) => {
            tracing::error!(backend, status, code = ?code, "backend refused the gateway's request: check its credentials and bucket");
            S3Error::internal()
        }
        Some(code) => S3Error::new(code, parsed.map(|(_, m)| m).unwrap_or_default()),
        None => match status {
            304 => S3Error::new(S3ErrorCode::NotModified, "Not Modified"),
            404 => S3Error::new(S3ErrorCode::NoSuchKey, "The specified key does not exist."),
            412 => S3Error::new(
                S3ErrorCode::PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold",
            ),
            416 => S3Error::new(
                S3ErrorCode::InvalidRange,
                "The requested range is not satisfiable",
            ),
            500..=599 => {
                tracing::warn!(backend, status, "backend error");
                S3Error::unavailable("The backend storage is unavailable. Please try again.")
            }
            _ => {
                tracing::warn!(backend, status, body = %String::from_utf8_lossy(&body), "unexpected backend answer");
                S3Error::internal()
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn content_encoding_passes_byte_for_byte_but_for_aws_chunked() {
        let sent = |value: &str| {
            let mut client = HeaderMap::new();
            client.insert("content-encoding", HeaderValue::from_str(value).unwrap());
            write_headers(&client)
                .get("content-encoding")
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(sent("deflate, gzip").as_deref(), Some("deflate, gzip"));
        assert_eq!(sent("gzip").as_deref(), Some("gzip"));
        assert_eq!(sent("aws-chunked"), None);
        assert_eq!(sent("aws-chunked,gzip").as_deref(), Some("gzip"));
        assert_eq!(
            sent("AWS-Chunked, deflate, gzip").as_deref(),
            Some("deflate, gzip")
        );
        assert_eq!(sent("gzip, aws-chunked").as_deref(), Some("gzip"));
    }

    fn backend(endpoint: &str, path_style: bool) -> BackendConfig {
        BackendConfig {
            name: "b".into(),
            bucket: "real".into(),
            endpoint: endpoint.into(),
            region: "us-east-1".into(),
            access_key: "ak".into(),
            secret_key: Secret::new("sk"),
            path_style,
            max_size: None,
            weight: 1,
            enabled: true,
            read_only: false,
            conditional_writes: false,
            limit_class_a: None,
            limit_class_b: None,
        }
    }

    #[test]
    fn backend_urls_in_both_styles() {
        let b = backend("http://127.0.0.1:9000/", true);
        assert_eq!(
            backend_uri(&b, Some("v/a b+é"), "").unwrap().to_string(),
            "http://127.0.0.1:9000/real/v/a%20b%2B%C3%A9"
        );
        assert_eq!(
            backend_uri(&b, None, "list-type=2").unwrap().to_string(),
            "http://127.0.0.1:9000/real?list-type=2"
        );
        let b = backend("https://s3.us-east-1.amazonaws.com", false);
        assert_eq!(
            backend_uri(&b, Some("k"), "uploads").unwrap().to_string(),
            "https://real.s3.us-east-1.amazonaws.com/k?uploads"
        );
        assert_eq!(
            backend_uri(&b, None, "").unwrap().to_string(),
            "https://real.s3.us-east-1.amazonaws.com/"
        );
        // An endpoint behind a path prefix, and one without a scheme.
        for (endpoint, path_style, key, url) in [
            (
                "https://gw.example/s3/",
                true,
                Some("k"),
                "https://gw.example/s3/real/k",
            ),
            (
                "https://gw.example/s3",
                true,
                None,
                "https://gw.example/s3/real",
            ),
            (
                "https://gw.example/s3",
                false,
                Some("a/b"),
                "https://real.gw.example/s3/a/b",
            ),
            (
                "https://gw.example/s3",
                false,
                None,
                "https://real.gw.example/s3/",
            ),
            ("minio:9000", true, Some("k"), "https://minio:9000/real/k"),
        ] {
            let b = backend(endpoint, path_style);
            assert_eq!(
                backend_uri(&b, key, "").unwrap().to_string(),
                url,
                "{endpoint}"
            );
        }
    }

    #[test]
    fn aws_chunked_never_reaches_the_backend() {
        let mut h = HeaderMap::new();
        h.insert("content-encoding", HeaderValue::from_static("aws-chunked"));
        h.insert("x-amz-meta-colour", HeaderValue::from_static("blue"));
        h.insert("authorization", HeaderValue::from_static("secret stuff"));
        let out = write_headers(&h);
        assert!(out.get("content-encoding").is_none());
        assert!(out.get("authorization").is_none());
        assert_eq!(out.get("x-amz-meta-colour").unwrap(), "blue");
        h.insert(
            "content-encoding",
            HeaderValue::from_static("aws-chunked,gzip"),
        );
        assert_eq!(write_headers(&h).get("content-encoding").unwrap(), "gzip");
    }
}
