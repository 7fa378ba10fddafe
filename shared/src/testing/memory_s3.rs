//! [`MemoryS3`]: an in-memory S3 service behind [`HttpClient`], for testing the request engine
//! with no network.
//!
//! It answers the way AWS S3 does (status codes, XML bodies in the S3 namespace, headers), for
//! the operations the gateway sends to backends. It checks that each request is signed for
//! the right access key but does not verify signatures. Everything runs synchronously under a
//! std `Mutex`, so it works from any async executor or none.
//!
//! Like S3, it refuses requests a real backend would refuse, so engine bugs show up here:
//! - header-signed requests need `authorization` with `Credential=<access key>/...` and an
//!   `x-amz-content-sha256` header; presigned ones `X-Amz-Credential` and `X-Amz-Signature`;
//! - PUT object and UploadPart need a `Content-Length` header equal to the body length (411
//!   MissingContentLength without it: a streamed body without one goes out chunked);
//! - DeleteObjects needs `Content-MD5` (or an `x-amz-checksum-*` header);
//! - query strings are decoded as S3 does, `+` as a space: encode keys with `%2B`/`%20`;
//! - a request body in the error state ([`MemBody::failed`]) breaks the request as a failing
//!   stream breaks a connection: `send` fails with `TransportErrorKind::Other` and nothing is
//!   stored.
//!
//! Its clock is logical: it starts at 2024-01-01T00:00:00Z, every write stamps the current
//! time and then advances the clock by one second (so writes have distinct `Last-Modified`),
//! and [`MemoryS3::set_time`] moves it.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use md5::{Digest, Md5};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::body::MemBody;
use crate::body::Body;
use crate::error::{S3Error, S3ErrorCode};
use crate::http::{HttpClient, TransportError, TransportErrorKind};
use crate::xml::{Element, Writer};
/// What S3 stores as Content-Type when a PUT names none.
const DEFAULT_CONTENT_TYPE: &str = "binary/octet-stream";
/// S3's minimum size of every multipart part but the last.
const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// The most keys, parts or uploads one listing page holds.
const MAX_PAGE: usize = 1000;
const MAX_PART_NUMBER: u32 = 10_000;
/// Subresources this server does not implement: answered 501 rather than mistaken for a plain
/// listing or object read.
const UNSUPPORTED_SUBRESOURCES: [&str; 20] = [
    "accelerate",
    "acl",
    "analytics",
    "attributes",
    "cors",
    "encryption",
    "legal-hold",
    "lifecycle",
    "logging",
    "notification",
    "object-lock",
    "policy",
    "replication",
    "requestPayment",
    "restore",
    "retention",
    "tagging",
    "torrent",
    "versioning",
    "versions",
];
/// The headers S3 stores with an object and answers on GET/HEAD.
const CONTENT_HEADERS: [HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::CACHE_CONTROL,
    header::CONTENT_DISPOSITION,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::EXPIRES,
];
/// What `encoding-type=url` leaves unescaped in listed keys (space becomes `+`, as S3 does).
const KEY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');
/// 2024-01-01T00:00:00Z, where the logical clock starts.
const START_TIME: u64 = 1_704_067_200;

/// An in-memory S3 service with many endpoints ("servers"), each with its own access key and
/// buckets. Cloning gives another handle to the same state, so a test can keep one for
/// assertions while the engine owns another.
///
/// Helper methods taking an `endpoint` panic when it was not added: that is a broken test.
#[derive(Clone)]
pub struct MemoryS3 {
    state: Arc<Mutex<State>>,
}

/// An object as stored, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub data: Bytes,
    /// Quoted, as S3 answers it: `"<hex md5>"`, or `"<hex>-<parts>"` after multipart.
    pub etag: String,
    pub last_modified: SystemTime,
    /// The content headers (Content-Type always) and `x-amz-meta-*` headers.
    pub headers: HeaderMap,
}

struct State {
    /// By authority, `host:port`.
    endpoints: BTreeMap<String, Endpoint>,
    world: World,
    requests: Vec<(Method, String)>,
}

/// What the endpoints share: the clock, knobs and a sequence for ids.
struct World {
    now: SystemTime,
    min_part_size: u64,
    seq: u64,
}

impl World {
    /// The time of a write; advances the clock so the next write is later.
    fn tick(&mut self) -> SystemTime {
        let t = self.now;
        self.now += Duration::from_secs(1);
        t
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
}

struct Endpoint {
    url: String,
    access_key: String,
    down: bool,
    failure: Option<S3ErrorCode>,
    faults: Vec<Fault>,
    /// A canned DeleteObjects answer (200, this body; nothing deleted): a misbehaving backend.
    delete_answer: Option<String>,
    buckets: BTreeMap<String, Bucket>,
}

/// A fault injected into one endpoint (see [`MemoryS3::add_fault`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Requests with this method answer this error and change nothing.
    Fail(Method, S3ErrorCode),
    /// Requests carrying `If-Match` answer this error and change nothing: a backend without
    /// conditional writes (AWS before November 2024 answered `NotImplemented`).
    FailIfMatch(S3ErrorCode),
    /// Requests with this method are carried out, but the answer never arrives: `send` fails
    /// with `TransportErrorKind::Timeout` (a write may have happened).
    TimeoutAfter(Method),
    /// Successful answers to requests with this method arrive with their body cut in half.
    Garble(Method),
    /// Requests with this method panic in the caller's task: a stand-in for a bug on the
    /// request path, to test that a runtime answers 500 instead of dying.
    Panic(Method),
}

#[derive(Default)]
struct Bucket {
    objects: BTreeMap<String, StoredObject>,
    /// By upload id; ids sort in initiation order, as S3 lists uploads of one key.
    uploads: BTreeMap<String, Upload>,
}

struct Upload {
    key: String,
    initiated: SystemTime,
    headers: HeaderMap,
    parts: BTreeMap<u32, Part>,
}

struct Part {
    data: Bytes,
    etag: String,
    last_modified: SystemTime,
}

/// A request as an operation sees it: bucket and key decoded, body read.
struct Req {
    method: Method,
    bucket: String,
    key: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
}

impl Req {
    fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn has_q(&self, name: &str) -> bool {
        self.q(name).is_some()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Reply = Result<Response<MemBody>, S3Error>;
type Buckets = BTreeMap<String, Bucket>;

impl Default for MemoryS3 {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryS3 {
    pub fn new() -> Self {
        let world = World {
            now: UNIX_EPOCH + Duration::from_secs(START_TIME),
            min_part_size: MIN_PART_SIZE,
            seq: 0,
        };
        Self {
            state: Arc::new(Mutex::new(State {
                endpoints: BTreeMap::new(),
                world,
                requests: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the state from the others' assertions.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a server at `url` (`http://127.0.0.1:9001`) accepting requests signed for
    /// `access_key`.
    pub fn add_endpoint(&self, url: &str, access_key: &str) {
        let endpoint = Endpoint {
            url: url.trim_end_matches('/').to_string(),
            access_key: access_key.to_string(),
            down: false,
            failure: None,
            faults: Vec::new(),
            delete_answer: None,
            buckets: BTreeMap::new(),
        };
        self.lock()
            .endpoints
            .insert(endpoint_authority(url), endpoint);
    }

    pub fn create_bucket(&self, endpoint: &str, bucket: &str) {
        self.with_endpoint(endpoint, |ep, _| {
            ep.buckets.entry(bucket.to_string()).or_default();
        })
    }

    /// A down endpoint refuses connections: `send` fails with `TransportErrorKind::Connect`.
    pub fn set_down(&self, endpoint: &str, down: bool) {
        self.with_endpoint(endpoint, |ep, _| ep.down = down)
    }

    /// While set, the endpoint answers every request with this error (`SlowDown`,
    /// `InternalError`, ...).
    pub fn set_failure(&self, endpoint: &str, failure: Option<S3ErrorCode>) {
        self.with_endpoint(endpoint, |ep, _| ep.failure = failure)
    }

    /// Adds a fault to the endpoint, until [`MemoryS3::clear_faults`].
    pub fn add_fault(&self, endpoint: &str, fault: Fault) {
        self.with_endpoint(endpoint, |ep, _| ep.faults.push(fault))
    }

    pub fn clear_faults(&self, endpoint: &str) {
        self.with_endpoint(endpoint, |ep, _| ep.faults.clear())
    }

    /// While set, DeleteObjects on the endpoint deletes nothing and answers 200 with this body
    /// (a backend whose answer is malformed, or does not match the request).
    pub fn set_delete_answer(&self, endpoint: &str, body: Option<&str>) {
        let body = body.map(str::to_owned);
        self.with_endpoint(endpoint, |ep, _| ep.delete_answer = body)
    }

    /// Sets the logical clock; the next write is stamped with `now`.
    pub fn set_time(&self, now: SystemTime) {
        self.lock().world.now = now;
    }

    /// The logical clock: the time the next write gets.
    pub fn now(&self) -> SystemTime {
        self.lock().world.now
    }

    /// Lowers (or raises) the minimum size of multipart parts but the last, 5 MiB by default.
    pub fn set_min_part_size(&self, bytes: u64) {
        self.lock().world.min_part_size = bytes;
    }

    /// Every request `send` received, in order (also those to down or unknown endpoints):
    /// method and the URI as sent.
    pub fn requests(&self) -> Vec<(Method, String)> {
        self.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// The keys in a bucket, in order. Panics when the bucket does not exist.
    pub fn object_keys(&self, endpoint: &str, bucket: &str) -> Vec<String> {
        self.with_endpoint(endpoint, |ep, _| {
            bucket_of(ep, bucket).objects.keys().cloned().collect()
        })
    }

    pub fn object(&self, endpoint: &str, bucket: &str, key: &str) -> Option<StoredObject> {
        self.with_endpoint(endpoint, |ep, _| {
            bucket_of(ep, bucket).objects.get(key).cloned()
        })
    }

    /// Plants an object as if PUT with no headers (Content-Type `binary/octet-stream`).
    pub fn put_direct(&self, endpoint: &str, bucket: &str, key: &str, data: impl Into<Bytes>) {
        let data = data.into();
        self.with_endpoint(endpoint, |ep, world| {
            let object = StoredObject {
                etag: etag_of(&data),
                data,
                last_modified: world.tick(),
                headers: stored_headers(&HeaderMap::new()),
            };
            bucket_of(ep, bucket)
                .objects
                .insert(key.to_string(), object);
        })
    }

    /// The multipart uploads in progress in a bucket: (key, upload id), in listing order.
    pub fn uploads(&self, endpoint: &str, bucket: &str) -> Vec<(String, String)> {
        self.with_endpoint(endpoint, |ep, _| {
            let mut all: Vec<_> = bucket_of(ep, bucket)
                .uploads
                .iter()
                .map(|(id, u)| (u.key.clone(), id.clone()))
                .collect();
            all.sort();
            all
        })
    }

    fn with_endpoint<T>(
        &self,
        endpoint: &str,
        f: impl FnOnce(&mut Endpoint, &mut World) -> T,
    ) -> T {
        let mut state = self.lock();
        let State {
            endpoints, world, ..
        } = &mut *state;
        let ep = endpoints
            .get_mut(&endpoint_authority(endpoint))
            .unwrap_or_else(|| panic!("MemoryS3: no endpoint {endpoint} (add_endpoint first)"));
        f(ep, world)
    }
}

fn bucket_of<'a>(ep: &'a mut Endpoint, bucket: &str) -> &'a mut Bucket {
    ep.buckets
        .get_mut(bucket)
        .unwrap_or_else(|| panic!("MemoryS3: no bucket {bucket} (create_bucket first)"))
}

impl HttpClient for MemoryS3 {
    type Body = MemBody;

    async fn send(&self, request: Request<MemBody>) -> Result<Response<MemBody>, TransportError> {
        let (parts, body) = request.into_parts();
        let panics = self.lock().endpoints.values().any(|ep| {
            ep.faults
                .iter()
                .any(|f| matches!(f, Fault::Panic(m) if *m == parts.method))
        });
        // Outside the lock, so that the double stays usable after the panic.
        assert!(!panics, "MemoryS3: injected panic on {}", parts.method);
        let mut state = self.lock();
        state
            .requests
            .push((parts.method.clone(), parts.uri.to_string()));
        let State {
            endpoints, world, ..
        } = &mut *state;

        // The URI is absolute; a bare path falls back to the Host header.
        let authority = match parts.uri.host() {
            Some(host) => Some(host_port(&host.to_ascii_lowercase(), &parts.uri)),
            None => parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| {
                    let h = h.to_ascii_lowercase();
                    let has_port = h
                        .rsplit_once(':')
                        .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
                    if has_port {
                        h
                    } else {
                        format!("{h}:80")
                    }
                }),
        };
        let located = authority.as_deref().and_then(|a| locate(endpoints, a));
        let Some((ep_key, host_bucket)) = located else {
            return Err(TransportError::new(
                TransportErrorKind::Connect,
                format!("connection refused: nothing listens at {}", parts.uri),
            ));
        };
        let ep = endpoints.get_mut(&ep_key).expect("located endpoint");
        if ep.down {
            return Err(TransportError::new(
                TransportErrorKind::Connect,
                format!("connection refused: {} is down", ep.url),
            ));
        }
        // A failing body stream breaks the request on the wire: the server stores nothing.
        let body = body.into_result().map_err(|e| {
            TransportError::new(
                TransportErrorKind::RequestBody,
                format!("request body stream failed: {e}"),
            )
        })?;

        let (bucket, key) = split_path(parts.uri.path(), host_bucket);
        let req = Req {
            method: parts.method,
            bucket,
            key,
            query: parse_query(parts.uri.query()),
            headers: parts.headers,
            body,
        };
        for fault in &ep.faults {
            let failed = match fault {
                Fault::Fail(method, code) if *method == req.method => Some(*code),
                Fault::FailIfMatch(code) if req.headers.contains_key(header::IF_MATCH) => {
                    Some(*code)
                }
                _ => None,
            };
            if let Some(code) = failed {
                return Ok(ep.finish(world, &req, Err(S3Error::new(code, "Injected failure"))));
            }
        }
        let mut response = ep.handle(world, &req);
        for fault in &ep.faults {
            match fault {
                Fault::TimeoutAfter(method) if *method == req.method => {
                    return Err(TransportError::new(
                        TransportErrorKind::Timeout,
                        format!("timed out waiting for {}", ep.url),
                    ));
                }
                Fault::Garble(method)
                    if *method == req.method && response.status().is_success() =>
                {
                    let bytes = response.body().bytes().cloned().unwrap_or_default();
                    let half = bytes.slice(..bytes.len() / 2);
                    response
                        .headers_mut()
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(half.len()));
                    *response.body_mut() = MemBody::from_bytes(half);
                }
                _ => {}
            }
        }
        Ok(response)
    }
}

/// `host:port` of an endpoint URL, the port defaulted by scheme.
fn endpoint_authority(url: &str) -> String {
    let uri: Uri = url
        .parse()
        .unwrap_or_else(|e| panic!("MemoryS3: bad endpoint URL {url}: {e}"));
    host_port(&uri.host().unwrap_or_default().to_ascii_lowercase(), &uri)
}

fn host_port(host: &str, uri: &Uri) -> String {
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    format!("{host}:{port}")
}

/// The endpoint a request authority names, and the bucket when it is virtual-host style
/// (`bucket.host:port`).
fn locate(
    endpoints: &BTreeMap<String, Endpoint>,
    authority: &str,
) -> Option<(String, Option<String>)> {
    if endpoints.contains_key(authority) {
        return Some((authority.to_string(), None));
    }
    endpoints.keys().find_map(|ep| {
        let bucket = authority.strip_suffix(ep.as_str())?.strip_suffix('.')?;
        (!bucket.is_empty()).then(|| (ep.clone(), Some(bucket.to_string())))
    })
}

/// Bucket and key from the path: `/bucket/key` path-style, `/key` when the host named the
/// bucket. A `+` in a path is a literal plus.
fn split_path(path: &str, host_bucket: Option<String>) -> (String, String) {
    let path = path.strip_prefix('/').unwrap_or(path);
    match host_bucket {
        Some(bucket) => (bucket, decode(path)),
        None => {
            let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
            (decode(bucket), decode(key))
        }
    }
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Query parameters, decoded as S3 does: `+` is a space.
fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            (
                decode(&name.replace('+', " ")),
                decode(&value.replace('+', " ")),
            )
        })
        .collect()
}

impl Endpoint {
    fn handle(&mut self, world: &mut World, req: &Req) -> Response<MemBody> {
        let reply = self.route(world, req);
        self.finish(world, req, reply)
    }

    /// The response to `req` as S3 sends it: error body, request id, date, length.
    fn finish(&self, world: &mut World, req: &Req, reply: Reply) -> Response<MemBody> {
        let mut response = reply.unwrap_or_else(|e| error_response(&e));
        let status = response.status();
        if req.method == Method::HEAD && !status.is_success() {
            // HEAD answers carry no body, errors included.
            *response.body_mut() = MemBody::from_bytes(Bytes::new());
            response.headers_mut().remove(header::CONTENT_TYPE);
        }
        let headers = response.headers_mut();
        let request_id = format!("{:016X}", world.next_seq());
        headers.insert("x-amz-request-id", header_value(&request_id));
        headers.insert(
            header::DATE,
            header_value(&httpdate::fmt_http_date(world.now)),
        );
        headers.insert(header::SERVER, HeaderValue::from_static("AmazonS3"));
        let no_length = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        if !no_length && !headers.contains_key(header::CONTENT_LENGTH) {
            let len = response.body().exact_len().unwrap_or(0);
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        response
    }

    /// Authorizes, then dispatches on method and subresource like S3.
    fn route(&mut self, world: &mut World, req: &Req) -> Reply {
        if let Some(code) = self.failure {
            return Err(S3Error::new(code, "Injected failure"));
        }
        authorize(&self.access_key, req)?;
        if req.bucket.is_empty() {
            return Err(S3Error::not_implemented("ListBuckets"));
        }
        let buckets = &mut self.buckets;
        if !buckets.contains_key(&req.bucket) {
            return Err(S3Error::no_such_bucket(&req.bucket));
        }
        if let Some((name, _)) = req
            .query
            .iter()
            .find(|(n, _)| UNSUPPORTED_SUBRESOURCES.contains(&n.as_str()))
        {
            return Err(S3Error::not_implemented(&format!("?{name}")));
        }
        let copy_source = req.header("x-amz-copy-source").map(str::to_string);
        let url = &self.url;
        let on_object = !req.key.is_empty();
        match (req.method.as_str(), on_object) {
            ("HEAD", false) => Ok(empty_response(StatusCode::OK)),
            ("GET", false) if req.has_q("location") => Ok(get_bucket_location()),
            ("GET", false) if req.has_q("uploads") => {
                list_multipart_uploads(&buckets[&req.bucket], req)
            }
            ("GET", false) if req.q("list-type") == Some("2") => {
                list_objects_v2(&buckets[&req.bucket], req)
            }
            ("GET", false) => list_objects_v1(&buckets[&req.bucket], req),
            ("POST", false) if req.has_q("delete") => match &self.delete_answer {
                Some(body) => Ok(xml_response(body.clone())),
                None => delete_objects(buckets, req),
            },
            ("GET", true) if req.has_q("uploadId") => list_parts(buckets, req),
            ("GET" | "HEAD", true) => get_object(buckets, req),
            ("PUT", true) if req.has_q("uploadId") => match copy_source {
                Some(source) => upload_part_copy(buckets, world, req, &source),
                None => upload_part(buckets, world, req),
            },
            ("PUT", true) => match copy_source {
                Some(source) => copy_object(buckets, world, req, &source),
                None => put_object(buckets, world, req),
            },
            ("DELETE", true) if req.has_q("uploadId") => abort_multipart_upload(buckets, req),
            ("DELETE", true) => delete_object(buckets, req),
            ("POST", true) if req.has_q("uploads") => create_multipart_upload(buckets, world, req),
            ("POST", true) if req.has_q("uploadId") => {
                complete_multipart_upload(buckets, world, req, url)
            }
            (method, _) => {
                let target = if on_object { "an object" } else { "a bucket" };
                Err(S3Error::not_implemented(&format!("{method} on {target}")))
            }
        }
    }
}

/// Checks that the request is signed (header or presigned query) for this endpoint's key.
/// The signature itself is not verified.
fn authorize(access_key: &str, req: &Req) -> Result<(), S3Error> {
    let credential = if let Some(auth) = req.header("authorization") {
        let credential = auth
            .split("Credential=")
            .nth(1)
            .and_then(|c| c.split('/').next());
        let Some(credential) = credential else {
            return Err(S3Error::new(
                S3ErrorCode::AuthorizationHeaderMalformed,
                "The authorization header is malformed",
            ));
        };
        if req.header("x-amz-content-sha256").is_none() {
            return Err(S3Error::new(
                S3ErrorCode::InvalidRequest,
                "Missing required header for this request: x-amz-content-sha256",
            ));
        }
        credential
    } else if req.has_q("X-Amz-Signature") {
        let credential = req.q("X-Amz-Credential").and_then(|c| c.split('/').next());
        credential.ok_or_else(|| {
            S3Error::new(
                S3ErrorCode::AuthorizationQueryParametersError,
                "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.",
            )
        })?
    } else {
        return Err(S3Error::access_denied());
    };
    if credential != access_key {
        return Err(S3Error::new(
            S3ErrorCode::InvalidAccessKeyId,
            "The AWS Access Key Id you provided does not exist in our records.",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Objects

/// GetObject and HeadObject.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html>
fn get_object(buckets: &Buckets, req: &Req) -> Reply {
    let object = buckets[&req.bucket]
        .objects
        .get(&req.key)
        .ok_or_else(|| S3Error::no_such_key(&req.key))?;
    if let Some(not_modified) = check_read_conditions(req, object)? {
        return Ok(not_modified);
    }
    let size = object.data.len() as u64;
    let range = match req.header("range") {
        Some(range) => match parse_range(range, size) {
            Ok(range) => range,
            Err(e) => {
                let mut response = error_response(&e);
                response.headers_mut().insert(
                    header::CONTENT_RANGE,
                    header_value(&format!("bytes */{size}")),
                );
                return Ok(response);
            }
        },
        None => None,
    };

    let mut builder = Response::builder()
        .header(header::ETAG, header_value(&object.etag))
        .header(
            header::LAST_MODIFIED,
            header_value(&httpdate::fmt_http_date(object.last_modified)),
        )
        .header(header::ACCEPT_RANGES, "bytes");
    let headers = builder.headers_mut().expect("valid builder");
    headers.extend(object.headers.clone());
    for name in CONTENT_HEADERS {
        if let Some(value) = req.q(&format!("response-{name}")) {
            headers.insert(name, header_value(value));
        }
    }
    let (status, data) = match range {
        Some((first, last)) => {
            let headers = builder.headers_mut().expect("valid builder");
            headers.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes {first}-{last}/{size}")),
            );
            (
                StatusCode::PARTIAL_CONTENT,
                object.data.slice(first as usize..=last as usize),
            )
        }
        None => (StatusCode::OK, object.data.clone()),
    };
    let builder = builder
        .status(status)
        .header(header::CONTENT_LENGTH, data.len());
    let body = if req.method == Method::HEAD {
        Bytes::new()
    } else {
        data
    };
    Ok(builder.body(MemBody::from(body)).expect("valid response"))
}

/// If-Match / If-Unmodified-Since fail with 412; If-None-Match / If-Modified-Since answer
/// 304. As in RFC 7232 (and S3), If-Match overrides If-Unmodified-Since and If-None-Match
/// overrides If-Modified-Since.
fn check_read_conditions(
    req: &Req,
    object: &StoredObject,
) -> Result<Option<Response<MemBody>>, S3Error> {
    if let Some(tags) = req.header("if-match") {
        if !etag_matches(tags, &object.etag) {
            return Err(precondition_failed());
        }
    } else if let Some(since) = req.header("if-unmodified-since").and_then(parse_http_date) {
        if secs(object.last_modified) > secs(since) {
            return Err(precondition_failed());
        }
    }
    let not_modified = match req.header("if-none-match") {
        Some(tags) => etag_matches(tags, &object.etag),
        None => req
            .header("if-modified-since")
            .and_then(parse_http_date)
            .is_some_and(|since| secs(object.last_modified) <= secs(since)),
    };
    if not_modified {
        let response = Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header(header::ETAG, header_value(&object.etag))
            .header(
                header::LAST_MODIFIED,
                header_value(&httpdate::fmt_http_date(object.last_modified)),
            )
            .body(MemBody::from(Bytes::new()))
            .expect("valid response");
        return Ok(Some(response));
    }
    Ok(None)
}

/// The first and last byte of a `Range` header. Forms S3 ignores (other units, several
/// ranges, garbage) give `None`: the whole object. Unsatisfiable ranges fail with 416.
fn parse_range(range: &str, size: u64) -> Result<Option<(u64, u64)>, S3Error> {
    let unsatisfiable = || {
        S3Error::new(
            S3ErrorCode::InvalidRange,
            "The requested range is not satisfiable",
        )
    };
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // `-n`: the last n bytes.
        let Ok(n) = last.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 || size == 0 {
            return Err(unsatisfiable());
        }
        return Ok(Some((size - n.min(size), size - 1)));
    }
    let Ok(first) = first.parse::<u64>() else {
        return Ok(None);
    };
    let last = if last.is_empty() {
        u64::MAX
    } else {
        match last.parse::<u64>() {
            Ok(last) if last >= first => last,
            _ => return Ok(None),
        }
    };
    if first >= size {
        return Err(unsatisfiable());
    }
    Ok(Some((first, last.min(size - 1))))
}

/// PutObject.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObject.html>
fn put_object(buckets: &mut Buckets, world: &mut World, req: &Req) -> Reply {
    check_content_length(req)?;
    check_content_md5(req)?;
    let bucket = buckets
        .get_mut(&req.bucket)
        .expect("routed to an existing bucket");
    let existing = bucket.objects.get(&req.key);
    // Conditional writes: <https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html>
    if req.header("if-none-match").is_some_and(|v| v.trim() == "*") && existing.is_some() {
        return Err(precondition_failed());
    }
    if let Some(tags) = req.header("if-match") {
        let existing = existing.ok_or_else(|| S3Error::no_such_key(&req.key))?;
        if !etag_matches(tags, &existing.etag) {
            return Err(precondition_failed());
        }
    }
    let object = StoredObject {
        data: req.body.clone(),
        etag: etag_of(&req.body),
        last_modified: world.tick(),
        headers: stored_headers(&req.headers),
    };
    let etag = object.etag.clone();
    bucket.objects.insert(req.key.clone(), object);
    Ok(Response::builder()
        .header(header::ETAG, header_value(&etag))
        .body(no_body())
        .expect("valid response"))
}

/// CopyObject, within one endpoint.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html>
fn copy_object(buckets: &mut Buckets, world: &mut World, req: &Req, source: &str) -> Reply {
    let (source_bucket, source_key) = parse_copy_source(source)?;
    let source = source_object(buckets, &source_bucket, &source_key)?;
    check_copy_conditions(req, &source)?;
    let replace = match req.header("x-amz-metadata-directive") {
        None | Some("COPY") => false,
        Some("REPLACE") => true,
        Some(_) => return Err(S3Error::invalid_argument("Unknown metadata directive.")),
    };
    if source_bucket == req.bucket && source_key == req.key && !replace {
        return Err(S3Error::new(
            S3ErrorCode::InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        ));
    }
    let object = StoredObject {
        etag: etag_of(&source.data),
        data: source.data,
        last_modified: world.tick(),
        headers: if replace {
            stored_headers(&req.headers)
        } else {
            source.headers
        },
    };
    let xml = Xml::new("CopyObjectResult")
        .el("LastModified", &iso8601(object.last_modified))
        .el("ETag", &object.etag)
        .finish();
    buckets
        .get_mut(&req.bucket)
        .expect("routed to an existing bucket")
        .objects
        .insert(req.key.clone(), object);
    Ok(xml_response(xml))
}

/// `x-amz-copy-source`: `/bucket/key` or `bucket/key`, URL-encoded, maybe `?versionId=`.
fn parse_copy_source(source: &str) -> Result<(String, String), S3Error> {
    let path = source.split('?').next().unwrap_or_default();
    let path = decode(path.strip_prefix('/').unwrap_or(path));
    match path.split_once('/') {
        Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => {
            Ok((bucket.to_string(), key.to_string()))
        }
        _ => Err(S3Error::invalid_argument(
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
        )),
    }
}

fn source_object(buckets: &Buckets, bucket: &str, key: &str) -> Result<StoredObject, S3Error> {
    let bucket = buckets
        .get(bucket)
        .ok_or_else(|| S3Error::no_such_bucket(bucket))?;
    bucket
        .objects
        .get(key)
        .cloned()
        .ok_or_else(|| S3Error::no_such_key(key))
}

/// The `x-amz-copy-source-if-*` headers: each failure is a 412.
fn check_copy_conditions(req: &Req, source: &StoredObject) -> Result<(), S3Error> {
    let modified = secs(source.last_modified);
    if let Some(tags) = req.header("x-amz-copy-source-if-match") {
        if !etag_matches(tags, &source.etag) {
            return Err(precondition_failed());
        }
    } else if let Some(since) = req
        .header("x-amz-copy-source-if-unmodified-since")
        .and_then(parse_http_date)
    {
        if modified > secs(since) {
            return Err(precondition_failed());
        }
    }
    if let Some(tags) = req.header("x-amz-copy-source-if-none-match") {
        if etag_matches(tags, &source.etag) {
            return Err(precondition_failed());
        }
    } else if let Some(since) = req
        .header("x-amz-copy-source-if-modified-since")
        .and_then(parse_http_date)
    {
        if modified <= secs(since) {
            return Err(precondition_failed());
        }
    }
    Ok(())
}

/// DeleteObject: 204 whether or not the key existed.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObject.html>
/// With `If-Match`, only the version with that ETag is deleted: 404 when there is none, 412
/// when another version is there (conditional deletes).
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObject.html>
fn delete_object(buckets: &mut Buckets, req: &Req) -> Reply {
    let objects = &mut buckets
        .get_mut(&req.bucket)
        .expect("routed to an existing bucket")
        .objects;
    if let Some(tags) = req.header("if-match") {
        let existing = objects
            .get(&req.key)
            .ok_or_else(|| S3Error::no_such_key(&req.key))?;
        if !etag_matches(tags, &existing.etag) {
            return Err(precondition_failed());
        }
    }
    objects.remove(&req.key);
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// DeleteObjects (`POST /bucket?delete`).
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObjects.html>
fn delete_objects(buckets: &mut Buckets, req: &Req) -> Reply {
    let has_checksum = req
        .headers
        .keys()
        .any(|n| n.as_str().starts_with("x-amz-checksum-"));
    if req.header("content-md5").is_none() && !has_checksum {
        return Err(S3Error::new(
            S3ErrorCode::InvalidRequest,
            "Missing required header for this request: Content-MD5",
        ));
    }
    check_content_md5(req)?;
    let doc = parse_xml(&req.body)?;
    if doc.name != "Delete" {
        return Err(malformed_xml());
    }
    let quiet = doc.child("Quiet").is_some_and(|q| q.text.trim() == "true");
    let keys: Vec<String> = doc
        .all("Object")
        .map(|o| o.child("Key").map(|k| k.text.clone()))
        .collect::<Option<_>>()
        .ok_or_else(malformed_xml)?;
    if keys.is_empty() || keys.len() > MAX_PAGE {
        return Err(malformed_xml());
    }
    let bucket = buckets
        .get_mut(&req.bucket)
        .expect("routed to an existing bucket");
    let mut xml = Xml::new("DeleteResult");
    for key in keys {
        bucket.objects.remove(&key);
        if !quiet {
            xml = xml.open("Deleted").el("Key", &key).close("Deleted");
        }
    }
    Ok(xml_response(xml.finish()))
}

// ---------------------------------------------------------------------------------------------
// Buckets and listings

/// GetBucketLocation: every bucket is in us-east-1, which S3 answers as an empty constraint.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketLocation.html>
fn get_bucket_location() -> Response<MemBody> {
    xml_response(Xml::new("LocationConstraint").finish())
}

/// One entry of a listing page: an item, or a common prefix that rolls up several.
enum Entry<T> {
    Item(String, T),
    Prefix(String),
}

impl<T> Entry<T> {
    fn name(&self) -> &str {
        match self {
            Entry::Item(name, _) | Entry::Prefix(name) => name,
        }
    }
}

/// Pages `items` (sorted by key, already past the marker) as S3 does: keys under `prefix`,
/// rolled up at the first `delimiter` after it into common prefixes, which count against
/// `max` like keys. A common prefix equal to `marker` was the previous page's last entry and
/// is skipped. Returns the page and whether more entries follow.
fn page<T>(
    items: impl Iterator<Item = (String, T)>,
    prefix: &str,
    delimiter: &str,
    marker: &str,
    max: usize,
) -> (Vec<Entry<T>>, bool) {
    let mut entries: Vec<Entry<T>> = Vec::new();
    for (key, item) in items {
        let Some(rest) = key.strip_prefix(prefix) else {
            continue;
        };
        let entry = match rest.find(delimiter).filter(|_| !delimiter.is_empty()) {
            Some(at) => {
                let common = key[..prefix.len() + at + delimiter.len()].to_string();
                if common == marker || entries.last().is_some_and(|e| e.name() == common) {
                    continue;
                }
                Entry::Prefix(common)
            }
            None => Entry::Item(key, item),
        };
        if entries.len() == max {
            return (entries, true);
        }
        entries.push(entry);
    }
    (entries, false)
}

/// `max-keys`, `max-parts`, `max-uploads`: at most 1000.
fn page_size(req: &Req, name: &str) -> Result<usize, S3Error> {
    match req.q(name) {
        None => Ok(MAX_PAGE),
        Some(v) => v.parse::<usize>().map(|n| n.min(MAX_PAGE)).map_err(|_| {
            S3Error::invalid_argument(format!(
                "Provided {name} not an integer or within integer range"
            ))
        }),
    }
}

/// Whether names in the answer are URL-encoded (`encoding-type=url`).
fn url_encoding(req: &Req) -> Result<bool, S3Error> {
    match req.q("encoding-type") {
        None => Ok(false),
        Some(e) if e.eq_ignore_ascii_case("url") => Ok(true),
        Some(_) => Err(S3Error::invalid_argument(
            "Invalid Encoding Method specified in Request",
        )),
    }
}

/// Objects after `after` in key order, as owned page items.
fn objects_after<'a>(
    bucket: &'a Bucket,
    after: &'a str,
) -> impl Iterator<Item = (String, &'a StoredObject)> + 'a {
    bucket
        .objects
        .range::<str, _>((Bound::Excluded(after), Bound::Unbounded))
        .map(|(k, o)| (k.clone(), o))
}

/// `<Contents>` and `<CommonPrefixes>` of a listing.
fn list_entries(
    mut xml: Xml,
    entries: &[Entry<&StoredObject>],
    encode: &dyn Fn(&str) -> String,
) -> Xml {
    for entry in entries {
        if let Entry::Item(key, object) = entry {
            xml = xml
                .open("Contents")
                .el("Key", &encode(key))
                .el("LastModified", &iso8601(object.last_modified))
                .el("ETag", &object.etag)
                .el("Size", &object.data.len().to_string())
                .el("StorageClass", "STANDARD")
                .close("Contents");
        }
    }
    for entry in entries {
        if let Entry::Prefix(prefix) = entry {
            xml = xml
                .open("CommonPrefixes")
                .el("Prefix", &encode(prefix))
                .close("CommonPrefixes");
        }
    }
    xml
}

fn encoder(url: bool) -> impl Fn(&str) -> String {
    move |s: &str| if url { url_encode(s) } else { s.to_string() }
}

/// ListObjectsV2. The continuation token is the last entry of the page, base64-encoded.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html>
fn list_objects_v2(bucket: &Bucket, req: &Req) -> Reply {
    let prefix = req.q("prefix").unwrap_or("");
    let delimiter = req.q("delimiter").unwrap_or("");
    let max = page_size(req, "max-keys")?;
    let encode = encoder(url_encoding(req)?);
    let token = req.q("continuation-token");
    let after = match token {
        Some(token) => base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                S3Error::invalid_argument("The continuation token provided is incorrect")
            })?,
        None => req.q("start-after").unwrap_or("").to_string(),
    };
    let (entries, truncated) = page(
        objects_after(bucket, &after),
        prefix,
        delimiter,
        &after,
        max,
    );

    let mut xml = Xml::new("ListBucketResult")
        .el("Name", &req.bucket)
        .el("Prefix", &encode(prefix));
    if !delimiter.is_empty() {
        xml = xml.el("Delimiter", &encode(delimiter));
    }
    xml = xml.el("MaxKeys", &max.to_string());
    if req.q("encoding-type").is_some() {
        xml = xml.el("EncodingType", "url");
    }
    xml = xml
        .el("KeyCount", &entries.len().to_string())
        .el("IsTruncated", &truncated.to_string());
    if let Some(token) = token {
        xml = xml.el("ContinuationToken", token);
    }
    if truncated {
        let last = entries.last().map(Entry::name).unwrap_or_default();
        xml = xml.el(
            "NextContinuationToken",
            &base64::engine::general_purpose::STANDARD.encode(last),
        );
    }
    if let Some(start_after) = req.q("start-after") {
        xml = xml.el("StartAfter", &encode(start_after));
    }
    Ok(xml_response(list_entries(xml, &entries, &encode).finish()))
}

/// ListObjects (v1). `NextMarker` is only sent with a delimiter, as S3 does.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjects.html>
fn list_objects_v1(bucket: &Bucket, req: &Req) -> Reply {
    let prefix = req.q("prefix").unwrap_or("");
    let delimiter = req.q("delimiter").unwrap_or("");
    let marker = req.q("marker").unwrap_or("");
    let max = page_size(req, "max-keys")?;
    let encode = encoder(url_encoding(req)?);
    let (entries, truncated) = page(
        objects_after(bucket, marker),
        prefix,
        delimiter,
        marker,
        max,
    );

    let mut xml = Xml::new("ListBucketResult")
        .el("Name", &req.bucket)
        .el("Prefix", &encode(prefix))
        .el("Marker", &encode(marker));
    if truncated && !delimiter.is_empty() {
        xml = xml.el(
            "NextMarker",
            &encode(entries.last().map(Entry::name).unwrap_or_default()),
        );
    }
    if !delimiter.is_empty() {
        xml = xml.el("Delimiter", &encode(delimiter));
    }
    xml = xml.el("MaxKeys", &max.to_string());
    if req.q("encoding-type").is_some() {
        xml = xml.el("EncodingType", "url");
    }
    xml = xml.el("IsTruncated", &truncated.to_string());
    Ok(xml_response(list_entries(xml, &entries, &encode).finish()))
}

// ---------------------------------------------------------------------------------------------
// Multipart uploads

/// CreateMultipartUpload (`POST ?uploads`). Content headers and metadata come from here.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_CreateMultipartUpload.html>
fn create_multipart_upload(buckets: &mut Buckets, world: &mut World, req: &Req) -> Reply {
    let seq = world.next_seq();
    // Opaque, but sorting in creation order, with characters that need care in URLs.
    let hash = hex::encode(Md5::digest(format!("{}/{}/{seq}", req.bucket, req.key)));
    let upload_id = format!("{seq:010}.{}~{}", &hash[..12], &hash[12..24]);
    let upload = Upload {
        key: req.key.clone(),
        initiated: world.tick(),
        headers: stored_headers(&req.headers),
        parts: BTreeMap::new(),
    };
    buckets
        .get_mut(&req.bucket)
        .expect("routed to an existing bucket")
        .uploads
        .insert(upload_id.clone(), upload);
    let xml = Xml::new("InitiateMultipartUploadResult")
        .el("Bucket", &req.bucket)
        .el("Key", &req.key)
        .el("UploadId", &upload_id)
        .finish();
    Ok(xml_response(xml))
}

/// The upload `uploadId` names, which must be for this key.
fn upload_mut<'a>(
    buckets: &'a mut Buckets,
    req: &Req,
) -> Result<(&'a mut Upload, String), S3Error> {
    let id = req.q("uploadId").unwrap_or_default().to_string();
    let upload = buckets
        .get_mut(&req.bucket)
        .and_then(|b| b.uploads.get_mut(&id))
        .filter(|u| u.key == req.key);
    upload.map(|u| (u, id)).ok_or_else(|| {
        S3Error::new(
            S3ErrorCode::NoSuchUpload,
            "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
        )
        .with_resource(req.key.clone())
    })
}

fn part_number(req: &Req) -> Result<u32, S3Error> {
    req.q("partNumber")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
        .ok_or_else(|| {
            S3Error::invalid_argument(
                "Part number must be an integer between 1 and 10000, inclusive",
            )
        })
}

/// UploadPart (`PUT ?partNumber&uploadId`).
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_UploadPart.html>
fn upload_part(buckets: &mut Buckets, world: &mut World, req: &Req) -> Reply {
    let number = part_number(req)?;
    let (upload, _) = upload_mut(buckets, req)?;
    check_content_length(req)?;
    check_content_md5(req)?;
    let part = Part {
        etag: etag_of(&req.body),
        data: req.body.clone(),
        last_modified: world.tick(),
    };
    let etag = part.etag.clone();
    upload.parts.insert(number, part);
    Ok(Response::builder()
        .header(header::ETAG, header_value(&etag))
        .body(no_body())
        .expect("valid response"))
}

/// UploadPartCopy (`PUT ?partNumber&uploadId` with `x-amz-copy-source`).
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_UploadPartCopy.html>
fn upload_part_copy(buckets: &mut Buckets, world: &mut World, req: &Req, source: &str) -> Reply {
    let number = part_number(req)?;
    upload_mut(buckets, req)?;
    let (source_bucket, source_key) = parse_copy_source(source)?;
    let source = source_object(buckets, &source_bucket, &source_key)?;
    check_copy_conditions(req, &source)?;
    let data = match req.header("x-amz-copy-source-range") {
        None => source.data.clone(),
        Some(range) => {
            let size = source.data.len();
            let bounds = range
                .strip_prefix("bytes=")
                .and_then(|r| r.split_once('-'))
                .and_then(|(a, b)| {
                    let (a, b) = (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?);
                    (a <= b && b < size).then_some((a, b))
                });
            let (first, last) = bounds.ok_or_else(|| {
                S3Error::invalid_argument(format!(
                    "Range specified is not valid for source object of size: {size}"
                ))
            })?;
            source.data.slice(first..=last)
        }
    };
    let part = Part {
        etag: etag_of(&data),
        data,
        last_modified: world.tick(),
    };
    let xml = Xml::new("CopyPartResult")
        .el("LastModified", &iso8601(part.last_modified))
        .el("ETag", &part.etag)
        .finish();
    upload_mut(buckets, req)?.0.parts.insert(number, part);
    Ok(xml_response(xml))
}

/// CompleteMultipartUpload (`POST ?uploadId`): the listed parts, ascending, with matching
/// ETags, all but the last at least the minimum part size, become the object.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_CompleteMultipartUpload.html>
fn complete_multipart_upload(
    buckets: &mut Buckets,
    world: &mut World,
    req: &Req,
    endpoint_url: &str,
) -> Reply {
    let min_part_size = world.min_part_size;
    let (upload, id) = upload_mut(buckets, req)?;
    let doc = parse_xml(&req.body)?;
    if doc.name != "CompleteMultipartUpload" {
        return Err(malformed_xml());
    }
    let listed: Vec<(u32, String)> = doc
        .all("Part")
        .map(|p| {
            Some((
                p.child("PartNumber")?.text.trim().parse().ok()?,
                p.child("ETag")?.text.clone(),
            ))
        })
        .collect::<Option<_>>()
        .ok_or_else(malformed_xml)?;
    if listed.is_empty() {
        return Err(malformed_xml());
    }
    if listed.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(S3Error::new(
            S3ErrorCode::InvalidPartOrder,
            "The list of parts was not in ascending order. Parts must be ordered by part number.",
        ));
    }
    let mut parts = Vec::with_capacity(listed.len());
    for (number, etag) in &listed {
        match upload.parts.get(number) {
            Some(part) if unquote(etag) == unquote(&part.etag) => parts.push(part),
            _ => {
                return Err(S3Error::new(
                    S3ErrorCode::InvalidPart,
                    "One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified entity tag may not have matched the part's entity tag.",
                ))
            }
        }
    }
    if parts[..parts.len() - 1]
        .iter()
        .any(|p| (p.data.len() as u64) < min_part_size)
    {
        return Err(S3Error::new(
            S3ErrorCode::EntityTooSmall,
            "Your proposed upload is smaller than the minimum allowed object size.",
        ));
    }

    let mut data = Vec::with_capacity(parts.iter().map(|p| p.data.len()).sum());
    let mut digests = Vec::with_capacity(16 * parts.len());
    for part in &parts {
        data.extend_from_slice(&part.data);
        digests.extend_from_slice(&Md5::digest(&part.data));
    }
    let etag = format!("\"{}-{}\"", hex::encode(Md5::digest(&digests)), parts.len());
    let headers = upload.headers.clone();
    let bucket = buckets
        .get_mut(&req.bucket)
        .expect("routed to an existing bucket");
    bucket.uploads.remove(&id);
    let object = StoredObject {
        data: Bytes::from(data),
        etag: etag.clone(),
        last_modified: world.tick(),
        headers,
    };
    bucket.objects.insert(req.key.clone(), object);

    let location = format!(
        "{endpoint_url}/{}/{}",
        req.bucket,
        utf8_percent_encode(&req.key, KEY_ENCODE)
    );
    let xml = Xml::new("CompleteMultipartUploadResult")
        .el("Location", &location)
        .el("Bucket", &req.bucket)
        .el("Key", &req.key)
        .el("ETag", &etag)
        .finish();
    Ok(xml_response(xml))
}

/// AbortMultipartUpload (`DELETE ?uploadId`): 204, or 404 NoSuchUpload.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_AbortMultipartUpload.html>
fn abort_multipart_upload(buckets: &mut Buckets, req: &Req) -> Reply {
    let (_, id) = upload_mut(buckets, req)?;
    buckets
        .get_mut(&req.bucket)
        .expect("routed to an existing bucket")
        .uploads
        .remove(&id);
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// ListParts (`GET ?uploadId`), paged by `part-number-marker` and `max-parts`.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListParts.html>
fn list_parts(buckets: &mut Buckets, req: &Req) -> Reply {
    let marker = match req.q("part-number-marker") {
        None => 0,
        Some(m) => m
            .parse::<u32>()
            .map_err(|_| S3Error::invalid_argument("Provided part-number-marker not an integer"))?,
    };
    let max = page_size(req, "max-parts")?;
    let (upload, id) = upload_mut(buckets, req)?;
    let mut parts: Vec<_> = upload
        .parts
        .range((Bound::Excluded(marker), Bound::Unbounded))
        .take(max + 1)
        .collect();
    let truncated = parts.len() > max;
    parts.truncate(max);

    let mut xml = Xml::new("ListPartsResult")
        .el("Bucket", &req.bucket)
        .el("Key", &req.key)
        .el("UploadId", &id)
        .el("StorageClass", "STANDARD")
        .el("PartNumberMarker", &marker.to_string());
    if let Some((last, _)) = parts.last() {
        xml = xml.el("NextPartNumberMarker", &last.to_string());
    }
    xml = xml
        .el("MaxParts", &max.to_string())
        .el("IsTruncated", &truncated.to_string());
    for (number, part) in parts {
        xml = xml
            .open("Part")
            .el("PartNumber", &number.to_string())
            .el("LastModified", &iso8601(part.last_modified))
            .el("ETag", &part.etag)
            .el("Size", &part.data.len().to_string())
            .close("Part");
    }
    Ok(xml_response(xml.finish()))
}

/// ListMultipartUploads (`GET /bucket?uploads`): by key, then initiation; paged by
/// `key-marker` / `upload-id-marker`, with prefix and delimiter as for objects.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListMultipartUploads.html>
fn list_multipart_uploads(bucket: &Bucket, req: &Req) -> Reply {
    let prefix = req.q("prefix").unwrap_or("");
    let delimiter = req.q("delimiter").unwrap_or("");
    let key_marker = req.q("key-marker").unwrap_or("");
    // Without a key marker, S3 ignores the upload id marker.
    let id_marker = req.q("upload-id-marker").filter(|_| !key_marker.is_empty());
    let max = page_size(req, "max-uploads")?;
    let encode = encoder(url_encoding(req)?);

    let mut uploads: Vec<(&String, &String, &Upload)> = bucket
        .uploads
        .iter()
        .map(|(id, u)| (&u.key, id, u))
        .collect();
    uploads.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let after_marker = uploads.into_iter().filter(|(key, id, _)| {
        key.as_str() > key_marker
            || (key.as_str() == key_marker && id_marker.is_some_and(|m| id.as_str() > m))
    });
    let items = after_marker.map(|(key, id, upload)| (key.clone(), (id, upload)));
    let (entries, truncated) = page(items, prefix, delimiter, key_marker, max);

    let mut xml = Xml::new("ListMultipartUploadsResult")
        .el("Bucket", &req.bucket)
        .el("KeyMarker", &encode(key_marker))
        .el("UploadIdMarker", id_marker.unwrap_or(""));
    if truncated {
        match entries.last() {
            Some(Entry::Item(key, (id, _))) => {
                xml = xml
                    .el("NextKeyMarker", &encode(key))
                    .el("NextUploadIdMarker", id)
            }
            Some(Entry::Prefix(prefix)) => xml = xml.el("NextKeyMarker", &encode(prefix)),
            None => {}
        }
    }
    if !delimiter.is_empty() {
        xml = xml.el("Delimiter", &encode(delimiter));
    }
    xml = xml
        .el("Prefix", &encode(prefix))
        .el("MaxUploads", &max.to_string());
    if req.q("encoding-type").is_some() {
        xml = xml.el("EncodingType", "url");
    }
    xml = xml.el("IsTruncated", &truncated.to_string());
    for entry in &entries {
        if let Entry::Item(key, (id, upload)) = entry {
            xml = xml
                .open("Upload")
                .el("Key", &encode(key))
                .el("UploadId", id)
                .el("StorageClass", "STANDARD")
                .el("Initiated", &iso8601(upload.initiated))
                .close("Upload");
        }
    }
    for entry in &entries {
        if let Entry::Prefix(prefix) = entry {
            xml = xml
                .open("CommonPrefixes")
                .el("Prefix", &encode(prefix))
                .close("CommonPrefixes");
        }
    }
    Ok(xml_response(xml.finish()))
}

// ---------------------------------------------------------------------------------------------
// Shared checks and helpers

/// PUT needs Content-Length (a streamed body without it goes out chunked, which S3 refuses
/// with 411), and the body must have that length.
fn check_content_length(req: &Req) -> Result<(), S3Error> {
    let Some(length) = req.header("content-length") else {
        return Err(S3Error::new(
            S3ErrorCode::MissingContentLength,
            "You must provide the Content-Length HTTP header.",
        ));
    };
    let length: u64 = length
        .trim()
        .parse()
        .map_err(|_| S3Error::invalid_argument("Invalid Content-Length"))?;
    if length != req.body.len() as u64 {
        return Err(S3Error::new(
            S3ErrorCode::IncompleteBody,
            "You did not provide the number of bytes specified by the Content-Length HTTP header",
        ));
    }
    Ok(())
}

/// `Content-MD5`, when sent, must be the base64 MD5 of the body.
fn check_content_md5(req: &Req) -> Result<(), S3Error> {
    let Some(declared) = req.header("content-md5") else {
        return Ok(());
    };
    let declared = base64::engine::general_purpose::STANDARD
        .decode(declared.trim())
        .ok()
        .filter(|d| d.len() == 16)
        .ok_or_else(|| {
            S3Error::new(
                S3ErrorCode::InvalidDigest,
                "The Content-MD5 you specified was invalid.",
            )
        })?;
    if declared[..] != Md5::digest(&req.body)[..] {
        return Err(S3Error::new(
            S3ErrorCode::BadDigest,
            "The Content-MD5 you specified did not match what we received.",
        ));
    }
    Ok(())
}

/// The headers S3 keeps with an object: content headers (Content-Type defaulted) and
/// `x-amz-meta-*`.
fn stored_headers(request: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for (name, value) in request {
        if CONTENT_HEADERS.contains(name) || name.as_str().starts_with("x-amz-meta-") {
            kept.append(name.clone(), value.clone());
        }
    }
    if !kept.contains_key(header::CONTENT_TYPE) {
        kept.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(DEFAULT_CONTENT_TYPE),
        );
    }
    kept
}

fn etag_of(data: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(data)))
}

fn unquote(etag: &str) -> &str {
    let etag = etag.trim();
    let etag = etag.strip_prefix("W/").unwrap_or(etag);
    etag.trim_matches('"')
}

/// Whether an `If-Match`/`If-None-Match` list (`"a", "b"` or `*`) names this ETag.
fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || unquote(tag) == unquote(etag))
}

fn parse_http_date(value: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(value.trim()).ok()
}

/// HTTP dates have whole seconds; comparisons are made at that precision.
fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn iso8601(t: SystemTime) -> String {
    let t = ::time::OffsetDateTime::from_unix_timestamp(secs(t) as i64)
        .unwrap_or(::time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn url_encode(s: &str) -> String {
    utf8_percent_encode(s, KEY_ENCODE)
        .to_string()
        .replace("%20", "+")
}

fn precondition_failed() -> S3Error {
    S3Error::new(
        S3ErrorCode::PreconditionFailed,
        "At least one of the pre-conditions you specified did not hold",
    )
}

fn malformed_xml() -> S3Error {
    S3Error::new(
        S3ErrorCode::MalformedXML,
        "The XML you provided was not well-formed or did not validate against our published schema",
    )
}

fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn no_body() -> MemBody {
    MemBody::from(Bytes::new())
}

fn empty_response(status: StatusCode) -> Response<MemBody> {
    Response::builder()
        .status(status)
        .body(no_body())
        .expect("valid response")
}

fn xml_response(xml: String) -> Response<MemBody> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/xml")
        .body(MemBody::from(Bytes::from(xml)))
        .expect("valid response")
}

/// An error as S3 renders it.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html>
fn error_response(error: &S3Error) -> Response<MemBody> {
    let mut xml = Writer::new("Error", false);
    xml.el("Code", error.code.as_str())
        .el("Message", &error.message);
    if let Some(resource) = &error.resource {
        xml.el("Resource", resource);
    }
    xml.el("RequestId", "MEMORYS3");
    Response::builder()
        .status(error.status())
        .header(header::CONTENT_TYPE, "application/xml")
        .body(MemBody::from(Bytes::from(xml.finish("Error"))))
        .expect("valid response")
}

// ---------------------------------------------------------------------------------------------
// XML: the gateway's one writer and reader (`crate::xml`), behind the small by-value builder
// the handlers above use.

/// Builds an answer document in the S3 namespace.
struct Xml {
    writer: Writer,
    root: &'static str,
}

impl Xml {
    fn new(root: &'static str) -> Self {
        Xml {
            writer: Writer::new(root, true),
            root,
        }
    }

    fn el(mut self, name: &str, text: &str) -> Self {
        self.writer.el(name, text);
        self
    }

    fn open(mut self, name: &str) -> Self {
        self.writer.open(name);
        self
    }

    fn close(mut self, name: &str) -> Self {
        self.writer.close(name);
        self
    }

    /// Closes the root element.
    fn finish(self) -> String {
        self.writer.finish(self.root)
    }
}

/// A request document; `MalformedXML` when it is not well-formed.
fn parse_xml(bytes: &[u8]) -> Result<Element, S3Error> {
    crate::xml::parse(bytes).map_err(|_| malformed_xml())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::escape;
    use futures_executor::block_on;

    const EP: &str = "http://127.0.0.1:9001";
    const AK: &str = "AKIDMEMORY";

    fn server() -> MemoryS3 {
        let s3 = MemoryS3::new();
        s3.add_endpoint(EP, AK);
        s3.create_bucket(EP, "bkt");
        s3
    }

    /// A request signed (in form) for `AK`; `target` is a path and query on `EP`.
    fn signed(method: &str, target: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(format!("{EP}{target}"))
            .header(
                "authorization",
                format!("AWS4-HMAC-SHA256 Credential={AK}/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00"),
            )
            .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
    }

    fn send(s3: &MemoryS3, request: Request<MemBody>) -> Response<MemBody> {
        block_on(s3.send(request)).expect("no transport error")
    }

    fn call(s3: &MemoryS3, method: &str, target: &str) -> Response<MemBody> {
        send(s3, signed(method, target).body(MemBody::empty()).unwrap())
    }

    fn call_with(
        s3: &MemoryS3,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Response<MemBody> {
        let mut builder = signed(method, target);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        send(s3, builder.body(MemBody::empty()).unwrap())
    }

    fn put(
        s3: &MemoryS3,
        target: &str,
        data: &'static str,
        headers: &[(&str, &str)],
    ) -> Response<MemBody> {
        let mut builder = signed("PUT", target).header("content-length", data.len());
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        send(s3, builder.body(MemBody::from(data)).unwrap())
    }

    fn post(s3: &MemoryS3, target: &str, xml: &str, headers: &[(&str, &str)]) -> Response<MemBody> {
        let mut builder = signed("POST", target);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        send(
            s3,
            builder
                .body(MemBody::from(xml.as_bytes().to_vec()))
                .unwrap(),
        )
    }

    fn hdr<'a>(response: &'a Response<MemBody>, name: &str) -> &'a str {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    fn body(response: &Response<MemBody>) -> String {
        response.body().text()
    }

    /// The texts of every `<tag>` in a document, in order.
    fn tags(xml: &str, tag: &str) -> Vec<String> {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        xml.split(&open)
            .skip(1)
            .map(|s| s.split(&close).next().unwrap().to_string())
            .collect()
    }

    fn tag(xml: &str, tag: &str) -> String {
        tags(xml, tag).into_iter().next().unwrap_or_default()
    }

    fn md5_b64(data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(Md5::digest(data))
    }

    // --- transport, routing, auth -------------------------------------------------------

    #[test]
    fn path_style_and_virtual_host_reach_the_same_bucket() {
        let s3 = server();
        assert_eq!(put(&s3, "/bkt/dir/a%20b.txt", "hello", &[]).status(), 200);
        let vhost = Request::builder()
            .uri("http://bkt.127.0.0.1:9001/dir/a%20b.txt")
            .header(
                "authorization",
                format!("AWS4-HMAC-SHA256 Credential={AK}/x"),
            )
            .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
            .body(MemBody::empty())
            .unwrap();
        let response = send(&s3, vhost);
        assert_eq!(response.status(), 200);
        assert_eq!(body(&response), "hello");
        assert_eq!(s3.object_keys(EP, "bkt"), vec!["dir/a b.txt"]);
        assert_eq!(
            s3.requests(),
            vec![
                (Method::PUT, format!("{EP}/bkt/dir/a%20b.txt")),
                (
                    Method::GET,
                    "http://bkt.127.0.0.1:9001/dir/a%20b.txt".to_string()
                )
            ]
        );
        s3.clear_requests();
        assert!(s3.requests().is_empty());

        let relative = Request::get("/dir/a%20b.txt")
            .header("host", "bkt.127.0.0.1:9001")
            .header(
                "authorization",
                format!("AWS4-HMAC-SHA256 Credential={AK}/x"),
            )
            .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
            .body(MemBody::empty())
            .unwrap();
        assert_eq!(body(&send(&s3, relative)), "hello");
    }

    #[test]
    fn unknown_host_and_down_endpoint_refuse_connections() {
        let s3 = server();
        let request = Request::get("http://127.0.0.1:9999/bkt/k")
            .body(MemBody::empty())
            .unwrap();
        assert_eq!(
            block_on(s3.send(request)).unwrap_err().kind,
            TransportErrorKind::Connect
        );

        s3.set_down(EP, true);
        let request = signed("GET", "/bkt/k").body(MemBody::empty()).unwrap();
        assert_eq!(
            block_on(s3.send(request)).unwrap_err().kind,
            TransportErrorKind::Connect
        );
        s3.set_down(EP, false);
        assert_eq!(call(&s3, "GET", "/bkt/k").status(), 404);
        // Every attempt is logged, refused or not.
        assert_eq!(s3.requests().len(), 3);
    }

    #[test]
    fn requests_must_be_signed_for_the_endpoint_key() {
        let s3 = server();
        s3.put_direct(EP, "bkt", "k", "data");
        let anonymous = Request::get(format!("{EP}/bkt/k"))
            .body(MemBody::empty())
            .unwrap();
        let response = send(&s3, anonymous);
        assert_eq!(response.status(), 403);
        assert_eq!(tag(&body(&response), "Code"), "AccessDenied");

        let wrong_key = Request::get(format!("{EP}/bkt/k"))
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=OTHERKEY/20240101/us-east-1/s3/aws4_request",
            )
            .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
            .body(MemBody::empty())
            .unwrap();
        let response = send(&s3, wrong_key);
        assert_eq!(response.status(), 403);
        assert_eq!(tag(&body(&response), "Code"), "InvalidAccessKeyId");

        let no_payload_hash = Request::get(format!("{EP}/bkt/k"))
            .header(
                "authorization",
                format!("AWS4-HMAC-SHA256 Credential={AK}/20240101/us-east-1/s3/aws4_request"),
            )
            .body(MemBody::empty())
            .unwrap();
        assert_eq!(send(&s3, no_payload_hash).status(), 400);

        let presigned = format!(
            "{EP}/bkt/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={AK}%2F20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=ab"
        );
        let response = send(&s3, Request::get(presigned).body(MemBody::empty()).unwrap());
        assert_eq!(response.status(), 200);
        assert_eq!(body(&response), "data");
    }

    #[test]
    fn injected_failures_and_failed_request_bodies() {
        let s3 = server();
        s3.set_failure(EP, Some(S3ErrorCode::SlowDown));
        let response = call(&s3, "GET", "/bkt/k");
        assert_eq!(response.status(), 503);
        assert_eq!(tag(&body(&response), "Code"), "SlowDown");
        s3.set_failure(EP, None);

        let broken = signed("PUT", "/bkt/k")
            .header("content-length", "4")
            .body(MemBody::failed(S3Error::new(
                S3ErrorCode::XAmzContentSHA256Mismatch,
                "bad hash",
            )))
            .unwrap();
        let err = block_on(s3.send(broken)).unwrap_err();
        // The client's side broke, not the backend: the circuit must not count it.
        assert_eq!(err.kind, TransportErrorKind::RequestBody);
        assert!(
            err.message.contains("XAmzContentSHA256Mismatch"),
            "{}",
            err.message
        );
        assert!(s3.object_keys(EP, "bkt").is_empty());
    }

    // --- objects ---------------------------------------------------------------------------

    #[test]
    fn put_then_get_and_head_round_trip_headers_and_metadata() {
        let s3 = server();
        s3.set_time(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let response = put(
            &s3,
            "/bkt/photo.jpg",
            "0123456789",
            &[
                ("content-type", "image/jpeg"),
                ("cache-control", "max-age=60"),
                ("content-disposition", "attachment"),
                ("x-amz-meta-owner", "alice"),
                ("x-amz-storage-class", "STANDARD"),
            ],
        );
        assert_eq!(response.status(), 200);
        let etag = format!("\"{}\"", hex::encode(Md5::digest(b"0123456789")));
        assert_eq!(hdr(&response, "etag"), etag);

        for method in ["GET", "HEAD"] {
            let response = call(&s3, method, "/bkt/photo.jpg");
            assert_eq!(response.status(), 200);
            assert_eq!(hdr(&response, "etag"), etag);
            assert_eq!(hdr(&response, "content-type"), "image/jpeg");
            assert_eq!(hdr(&response, "cache-control"), "max-age=60");
            assert_eq!(hdr(&response, "content-disposition"), "attachment");
            assert_eq!(hdr(&response, "x-amz-meta-owner"), "alice");
            assert_eq!(hdr(&response, "content-length"), "10");
            assert_eq!(hdr(&response, "accept-ranges"), "bytes");
            assert_eq!(
                hdr(&response, "last-modified"),
                "Tue, 14 Nov 2023 22:13:20 GMT"
            );
            assert!(response.headers().get("x-amz-storage-class").is_none());
            assert_eq!(
                body(&response),
                if method == "GET" { "0123456789" } else { "" }
            );
        }
        // Each write ticks the logical clock.
        assert_eq!(s3.now(), UNIX_EPOCH + Duration::from_secs(1_700_000_001));
        put(&s3, "/bkt/plain", "x", &[]);
        let stored = s3.object(EP, "bkt", "plain").unwrap();
        assert_eq!(
            stored.last_modified,
            UNIX_EPOCH + Duration::from_secs(1_700_000_001)
        );
        assert_eq!(
            stored.headers.get("content-type").unwrap(),
            DEFAULT_CONTENT_TYPE
        );
    }

    #[test]
    fn missing_objects_and_buckets_answer_404() {
        let s3 = server();
        let response = call(&s3, "GET", "/bkt/nope");
        assert_eq!(response.status(), 404);
        assert_eq!(tag(&body(&response), "Code"), "NoSuchKey");
        assert_eq!(tag(&body(&response), "Resource"), "nope");
        assert_eq!(hdr(&response, "content-type"), "application/xml");

        let response = call(&s3, "HEAD", "/bkt/nope");
        assert_eq!(response.status(), 404);
        assert_eq!(body(&response), "");

        let response = call(&s3, "GET", "/other/k");
        assert_eq!(tag(&body(&response), "Code"), "NoSuchBucket");
        assert_eq!(call(&s3, "HEAD", "/bkt").status(), 200);
        assert_eq!(call(&s3, "HEAD", "/other").status(), 404);
        assert_eq!(body(&call(&s3, "HEAD", "/other")), "");
    }

    #[test]
    fn put_requires_content_length_and_checks_content_md5() {
        let s3 = server();
        let no_length = signed("PUT", "/bkt/k").body(MemBody::from("abc")).unwrap();
        let response = send(&s3, no_length);
        assert_eq!(response.status(), 411);
        assert_eq!(tag(&body(&response), "Code"), "MissingContentLength");

        let short = signed("PUT", "/bkt/k")
            .header("content-length", "5")
            .body(MemBody::from("abc"))
            .unwrap();
        assert_eq!(tag(&body(&send(&s3, short)), "Code"), "IncompleteBody");

        let response = put(&s3, "/bkt/k", "abc", &[("content-md5", &md5_b64(b"abd"))]);
        assert_eq!(response.status(), 400);
        assert_eq!(tag(&body(&response), "Code"), "BadDigest");
        assert_eq!(
            tag(
                &body(&put(&s3, "/bkt/k", "abc", &[("content-md5", "nope")])),
                "Code"
            ),
            "InvalidDigest"
        );
        assert!(s3.object_keys(EP, "bkt").is_empty());

        assert_eq!(
            put(&s3, "/bkt/k", "abc", &[("content-md5", &md5_b64(b"abc"))]).status(),
            200
        );
    }

    #[test]
    fn conditional_puts() {
        let s3 = server();
        assert_eq!(
            put(&s3, "/bkt/k", "one", &[("if-none-match", "*")]).status(),
            200
        );
        let response = put(&s3, "/bkt/k", "two", &[("if-none-match", "*")]);
        assert_eq!(response.status(), 412);
        assert_eq!(tag(&body(&response), "Code"), "PreconditionFailed");

        let etag = s3.object(EP, "bkt", "k").unwrap().etag;
        assert_eq!(
            put(&s3, "/bkt/k", "three", &[("if-match", "\"0000\"")]).status(),
            412
        );
        assert_eq!(
            put(&s3, "/bkt/k", "three", &[("if-match", &etag)]).status(),
            200
        );
        assert_eq!(
            put(&s3, "/bkt/new", "x", &[("if-match", &etag)]).status(),
            404
        );
        assert_eq!(s3.object(EP, "bkt", "k").unwrap().data, "three");
    }

    #[test]
    fn ranges() {
        let s3 = server();
        s3.put_direct(EP, "bkt", "k", "0123456789");
        let get = |range: &str| call_with(&s3, "GET", "/bkt/k", &[("range", range)]);

        let cases = [
            ("bytes=2-4", "234", "bytes 2-4/10"),
            ("bytes=7-", "789", "bytes 7-9/10"),
            ("bytes=-3", "789", "bytes 7-9/10"),
            ("bytes=5-100", "56789", "bytes 5-9/10"),
            ("bytes=-100", "0123456789", "bytes 0-9/10"),
            ("bytes=9-9", "9", "bytes 9-9/10"),
        ];
        for (range, expected, content_range) in cases {
            let response = get(range);
            assert_eq!(response.status(), 206, "{range}");
            assert_eq!(body(&response), expected, "{range}");
            assert_eq!(hdr(&response, "content-range"), content_range, "{range}");
            assert_eq!(
                hdr(&response, "content-length"),
                expected.len().to_string(),
                "{range}"
            );
        }
        for range in ["bytes=10-", "bytes=10-20", "bytes=-0"] {
            let response = get(range);
            assert_eq!(response.status(), 416, "{range}");
            assert_eq!(tag(&body(&response), "Code"), "InvalidRange");
            assert_eq!(hdr(&response, "content-range"), "bytes */10");
        }
        // Forms S3 ignores: the whole object.
        for range in ["bytes=4-2", "items=0-1", "bytes=0-1,3-4", "bytes=x-"] {
            let response = get(range);
            assert_eq!(response.status(), 200, "{range}");
            assert_eq!(body(&response), "0123456789");
        }
        let head = call_with(&s3, "HEAD", "/bkt/k", &[("range", "bytes=0-3")]);
        assert_eq!(head.status(), 206);
        assert_eq!(hdr(&head, "content-length"), "4");
        assert_eq!(body(&head), "");

        s3.put_direct(EP, "bkt", "empty", "");
        let response = call_with(&s3, "GET", "/bkt/empty", &[("range", "bytes=0-")]);
        assert_eq!(response.status(), 416);
    }

    #[test]
    fn read_conditionals() {
        let s3 = server();
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        s3.set_time(t);
        s3.put_direct(EP, "bkt", "k", "data");
        let etag = s3.object(EP, "bkt", "k").unwrap().etag;
        let at = |offset: i64| {
            httpdate::fmt_http_date(
                UNIX_EPOCH + Duration::from_secs((1_700_000_000 + offset) as u64),
            )
        };
        let status =
            |headers: &[(&str, &str)]| call_with(&s3, "GET", "/bkt/k", headers).status().as_u16();

        assert_eq!(status(&[("if-match", &etag)]), 200);
        assert_eq!(status(&[("if-match", "\"other\", *")]), 200);
        assert_eq!(status(&[("if-match", "\"other\"")]), 412);
        assert_eq!(status(&[("if-none-match", "\"other\"")]), 200);
        assert_eq!(status(&[("if-modified-since", &at(-1))]), 200);
        assert_eq!(status(&[("if-modified-since", &at(0))]), 304);
        assert_eq!(status(&[("if-unmodified-since", &at(0))]), 200);
        assert_eq!(status(&[("if-unmodified-since", &at(-1))]), 412);
        // If-Match overrides If-Unmodified-Since; If-None-Match overrides If-Modified-Since.
        assert_eq!(
            status(&[("if-match", &etag), ("if-unmodified-since", &at(-1))]),
            200
        );
        assert_eq!(
            status(&[
                ("if-none-match", "\"other\""),
                ("if-modified-since", &at(5))
            ]),
            200
        );

        let not_modified = call_with(&s3, "GET", "/bkt/k", &[("if-none-match", &etag)]);
        assert_eq!(not_modified.status(), 304);
        assert_eq!(hdr(&not_modified, "etag"), etag);
        assert_eq!(body(&not_modified), "");
        let failed = call_with(&s3, "GET", "/bkt/k", &[("if-match", "\"x\"")]);
        assert_eq!(tag(&body(&failed), "Code"), "PreconditionFailed");
        assert_eq!(
            body(&call_with(&s3, "HEAD", "/bkt/k", &[("if-match", "\"x\"")])),
            ""
        );
    }

    #[test]
    fn response_header_overrides() {
        let s3 = server();
        put(&s3, "/bkt/k", "data", &[("content-type", "text/plain")]);
        let response = call(
            &s3,
            "GET",
            "/bkt/k?response-content-type=application%2Fjson&response-content-disposition=attachment%3B%20filename%3D%22a.json%22&response-cache-control=no-cache",
        );
        assert_eq!(hdr(&response, "content-type"), "application/json");
        assert_eq!(
            hdr(&response, "content-disposition"),
            "attachment; filename=\"a.json\""
        );
        assert_eq!(hdr(&response, "cache-control"), "no-cache");
        assert_eq!(
            s3.object(EP, "bkt", "k")
                .unwrap()
                .headers
                .get("content-type")
                .unwrap(),
            "text/plain"
        );
    }

    #[test]
    fn copy_object_keeps_or_replaces_metadata() {
        let s3 = server();
        s3.create_bucket(EP, "dst");
        put(
            &s3,
            "/bkt/src%20key",
            "payload",
            &[("content-type", "text/plain"), ("x-amz-meta-a", "1")],
        );
        let source_etag = s3.object(EP, "bkt", "src key").unwrap().etag;

        let response = call_with(
            &s3,
            "PUT",
            "/dst/copy",
            &[("x-amz-copy-source", "/bkt/src%20key")],
        );
        assert_eq!(response.status(), 200);
        let xml = body(&response);
        assert!(
            xml.contains("<CopyObjectResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"),
            "{xml}"
        );
        assert_eq!(tag(&xml, "ETag"), source_etag.replace('"', "&quot;"));
        let copy = s3.object(EP, "dst", "copy").unwrap();
        assert_eq!(copy.data, "payload");
        assert_eq!(copy.headers.get("x-amz-meta-a").unwrap(), "1");
        assert_eq!(tag(&xml, "LastModified"), iso8601(copy.last_modified));

        let replace = [
            ("x-amz-copy-source", "bkt/src%20key"),
            ("x-amz-metadata-directive", "REPLACE"),
            ("content-type", "image/png"),
            ("x-amz-meta-b", "2"),
        ];
        assert_eq!(call_with(&s3, "PUT", "/dst/copy2", &replace).status(), 200);
        let copy = s3.object(EP, "dst", "copy2").unwrap();
        assert_eq!(copy.headers.get("content-type").unwrap(), "image/png");
        assert!(copy.headers.get("x-amz-meta-a").is_none());
        assert_eq!(copy.headers.get("x-amz-meta-b").unwrap(), "2");
    }

    #[test]
    fn copy_object_failures() {
        let s3 = server();
        s3.put_direct(EP, "bkt", "src", "payload");
        let copy = |headers: &[(&str, &str)]| call_with(&s3, "PUT", "/bkt/dst", headers);
        let code = |response: Response<MemBody>| {
            (response.status().as_u16(), tag(&body(&response), "Code"))
        };

        let response = copy(&[
            ("x-amz-copy-source", "/bkt/src"),
            ("x-amz-copy-source-if-match", "\"nope\""),
        ]);
        assert_eq!(code(response), (412, "PreconditionFailed".to_string()));
        let response = copy(&[("x-amz-copy-source", "/bkt/missing")]);
        assert_eq!(code(response), (404, "NoSuchKey".to_string()));
        let response = copy(&[("x-amz-copy-source", "/elsewhere/src")]);
        assert_eq!(code(response), (404, "NoSuchBucket".to_string()));
        let response = call_with(&s3, "PUT", "/bkt/src", &[("x-amz-copy-source", "/bkt/src")]);
        assert_eq!(code(response), (400, "InvalidRequest".to_string()));
        assert_eq!(s3.object_keys(EP, "bkt"), vec!["src"]);
    }

    #[test]
    fn delete_object_is_204_whether_or_not_it_existed() {
        let s3 = server();
        s3.put_direct(EP, "bkt", "k", "data");
        assert_eq!(call(&s3, "DELETE", "/bkt/k").status(), 204);
        assert!(s3.object_keys(EP, "bkt").is_empty());
        assert_eq!(call(&s3, "DELETE", "/bkt/k").status(), 204);
        assert_eq!(call(&s3, "DELETE", "/nobucket/k").status(), 404);
    }

    #[test]
    fn conditional_delete_removes_only_the_named_version() {
        let s3 = server();
        s3.put_direct(EP, "bkt", "k", "data");
        let etag = s3.object(EP, "bkt", "k").unwrap().etag;
        let delete_if =
            |tag: &str| call_with(&s3, "DELETE", "/bkt/k", &[("if-match", tag)]).status();
        assert_eq!(delete_if("\"other\""), 412);
        assert_eq!(s3.object_keys(EP, "bkt"), ["k"]);
        assert_eq!(delete_if(&etag), 204);
        assert!(s3.object_keys(EP, "bkt").is_empty());
        assert_eq!(delete_if(&etag), 404);
    }

    #[test]
    fn delete_objects_reports_deleted_keys_unless_quiet() {
        let s3 = server();
        for key in ["a", "b & c", "d"] {
            s3.put_direct(EP, "bkt", key, "x");
        }
        let xml = "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Object><Key>a</Key></Object><Object><Key>b &amp; c</Key></Object><Object><Key>zz</Key></Object></Delete>";
        let md5 = md5_b64(xml.as_bytes());
        let response = post(&s3, "/bkt?delete", xml, &[("content-md5", &md5)]);
        assert_eq!(response.status(), 200);
        let answer = body(&response);
        assert!(answer.contains("<DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"));
        assert_eq!(tags(&answer, "Key"), vec!["a", "b &amp; c", "zz"]);
        assert_eq!(s3.object_keys(EP, "bkt"), vec!["d"]);

        let quiet = "<Delete><Quiet>true</Quiet><Object><Key>d</Key></Object></Delete>";
        let response = post(
            &s3,
            "/bkt?delete",
            quiet,
            &[("content-md5", &md5_b64(quiet.as_bytes()))],
        );
        assert_eq!(response.status(), 200);
        assert!(tags(&body(&response), "Deleted").is_empty());
        assert!(s3.object_keys(EP, "bkt").is_empty());

        assert_eq!(post(&s3, "/bkt?delete", quiet, &[]).status(), 400);
        let response = post(
            &s3,
            "/bkt?delete",
            "<Delete><Object>",
            &[("x-amz-checksum-crc32", "AAAAAA==")],
        );
        assert_eq!(tag(&body(&response), "Code"), "MalformedXML");
    }

    // --- listings ----------------------------------------------------------------------------

    fn plant(s3: &MemoryS3, keys: &[&str]) {
        for key in keys {
            s3.put_direct(EP, "bkt", key, "x");
        }
    }

    #[test]
    fn list_v2_with_prefix_and_delimiter() {
        let s3 = server();
        plant(
            &s3,
            &[
                "a.txt",
                "photos/2023/x.jpg",
                "photos/2024/y.jpg",
                "photos/top.jpg",
                "videos/v.mp4",
                "z",
            ],
        );
        let xml = body(&call(&s3, "GET", "/bkt?list-type=2&delimiter=%2F"));
        assert_eq!(tags(&xml, "Key"), vec!["a.txt", "z"]);
        assert_eq!(tags(&xml, "Prefix"), vec!["", "photos/", "videos/"]);
        assert_eq!(tag(&xml, "KeyCount"), "4");
        assert_eq!(tag(&xml, "IsTruncated"), "false");
        assert!(
            xml.contains("<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">")
        );

        let xml = body(&call(
            &s3,
            "GET",
            "/bkt?list-type=2&prefix=photos%2F&delimiter=%2F",
        ));
        assert_eq!(tags(&xml, "Key"), vec!["photos/top.jpg"]);
        assert_eq!(
            tags(&xml, "Prefix"),
            vec!["photos/", "photos/2023/", "photos/2024/"]
        );

        let xml = body(&call(&s3, "GET", "/bkt?list-type=2&prefix=photos"));
        assert_eq!(
            tags(&xml, "Key"),
            vec!["photos/2023/x.jpg", "photos/2024/y.jpg", "photos/top.jpg"]
        );
        assert_eq!(tag(&xml, "Size"), "1");
        assert_eq!(tag(&xml, "StorageClass"), "STANDARD");
        assert_eq!(tag(&xml, "LastModified"), "2024-01-01T00:00:01.000Z");

        let xml = body(&call(
            &s3,
            "GET",
            "/bkt?list-type=2&start-after=photos%2Ftop.jpg",
        ));
        assert_eq!(tags(&xml, "Key"), vec!["videos/v.mp4", "z"]);
        assert_eq!(tag(&xml, "StartAfter"), "photos/top.jpg");
    }

    #[test]
    fn list_v2_pages_through_keys_and_prefixes() {
        let s3 = server();
        plant(&s3, &["a", "b/1", "b/2", "b/3", "c", "d/1", "e"]);
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut target = "/bkt?list-type=2&delimiter=/&max-keys=2".to_string();
            if let Some(token) = &token {
                target.push_str(&format!(
                    "&continuation-token={}",
                    utf8_percent_encode(token, NON_ALPHANUMERIC)
                ));
            }
            let xml = body(&call(&s3, "GET", &target));
            pages += 1;
            let keys = tags(&xml, "Key");
            let prefixes: Vec<String> = tags(&xml, "CommonPrefixes")
                .iter()
                .map(|p| tag(p, "Prefix"))
                .collect();
            assert_eq!(
                tag(&xml, "KeyCount"),
                (keys.len() + prefixes.len()).to_string()
            );
            seen.extend(keys);
            seen.extend(prefixes);
            if tag(&xml, "IsTruncated") == "false" {
                assert!(tags(&xml, "NextContinuationToken").is_empty());
                break;
            }
            token = Some(tag(&xml, "NextContinuationToken"));
        }
        seen.sort();
        assert_eq!(seen, vec!["a", "b/", "c", "d/", "e"]);
        assert_eq!(pages, 3);

        let response = call(&s3, "GET", "/bkt?list-type=2&continuation-token=%%%");
        assert_eq!(response.status(), 400);
    }

    #[test]
    fn list_v2_caps_max_keys_at_1000_and_url_encodes() {
        let s3 = server();
        for i in 0..1001 {
            s3.put_direct(EP, "bkt", &format!("k{i:04}"), "");
        }
        let xml = body(&call(&s3, "GET", "/bkt?list-type=2&max-keys=5000"));
        assert_eq!(tag(&xml, "MaxKeys"), "1000");
        assert_eq!(tag(&xml, "KeyCount"), "1000");
        assert_eq!(tag(&xml, "IsTruncated"), "true");
        let xml = body(&call(&s3, "GET", "/bkt?list-type=2&max-keys=0"));
        assert_eq!(tag(&xml, "KeyCount"), "0");
        assert_eq!(
            call(&s3, "GET", "/bkt?list-type=2&max-keys=-1").status(),
            400
        );

        let s3 = server();
        plant(&s3, &["dir one/a&b.txt", "é"]);
        let xml = body(&call(&s3, "GET", "/bkt?list-type=2&encoding-type=url"));
        assert_eq!(tags(&xml, "Key"), vec!["dir+one/a%26b.txt", "%C3%A9"]);
        assert_eq!(tag(&xml, "EncodingType"), "url");
        let xml = body(&call(&s3, "GET", "/bkt?list-type=2"));
        assert_eq!(tags(&xml, "Key"), vec!["dir one/a&amp;b.txt", "é"]);
        // A raw `+` in a query is a space, as S3 decodes it.
        let xml = body(&call(&s3, "GET", "/bkt?list-type=2&prefix=dir+one"));
        assert_eq!(tags(&xml, "Key").len(), 1);
    }

    #[test]
    fn list_v1_with_marker() {
        let s3 = server();
        plant(&s3, &["a", "b/1", "b/2", "c"]);
        let xml = body(&call(&s3, "GET", "/bkt?max-keys=2"));
        assert_eq!(tags(&xml, "Key"), vec!["a", "b/1"]);
        assert_eq!(tag(&xml, "IsTruncated"), "true");
        // Without a delimiter S3 sends no NextMarker: the client uses the last key.
        assert!(tags(&xml, "NextMarker").is_empty());
        let xml = body(&call(&s3, "GET", "/bkt?marker=b%2F1"));
        assert_eq!(tags(&xml, "Key"), vec!["b/2", "c"]);
        assert_eq!(tag(&xml, "Marker"), "b/1");

        let xml = body(&call(&s3, "GET", "/bkt?delimiter=%2F&max-keys=2"));
        assert_eq!(tags(&xml, "Key"), vec!["a"]);
        assert_eq!(tag(&xml, "NextMarker"), "b/");
        let xml = body(&call(&s3, "GET", "/bkt?delimiter=%2F&marker=b%2F"));
        assert_eq!(tags(&xml, "Key"), vec!["c"]);
        assert!(tags(&xml, "CommonPrefixes").is_empty());
        assert_eq!(tag(&xml, "IsTruncated"), "false");
    }

    // --- multipart ----------------------------------------------------------------------------

    fn initiate(s3: &MemoryS3, key: &str, headers: &[(&str, &str)]) -> String {
        let response = call_with(s3, "POST", &format!("/bkt/{key}?uploads"), headers);
        assert_eq!(response.status(), 200);
        let xml = body(&response);
        assert!(xml.contains(
            "<InitiateMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        ));
        assert_eq!(tag(&xml, "Key"), key);
        tag(&xml, "UploadId")
    }

    fn enc(s: &str) -> String {
        utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
    }

    fn upload_part_(s3: &MemoryS3, key: &str, id: &str, number: u32, data: &'static str) -> String {
        let response = put(
            s3,
            &format!("/bkt/{key}?partNumber={number}&uploadId={}", enc(id)),
            data,
            &[],
        );
        assert_eq!(response.status(), 200, "{}", body(&response));
        hdr(&response, "etag").to_string()
    }

    fn complete(s3: &MemoryS3, key: &str, id: &str, parts: &[(u32, &str)]) -> Response<MemBody> {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (number, etag) in parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{number}</PartNumber><ETag>{}</ETag></Part>",
                escape(etag)
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        post(s3, &format!("/bkt/{key}?uploadId={}", enc(id)), &xml, &[])
    }

    #[test]
    fn multipart_upload_round_trip() {
        let s3 = server();
        s3.set_min_part_size(4);
        let id = initiate(
            &s3,
            "big",
            &[("content-type", "video/mp4"), ("x-amz-meta-k", "v")],
        );
        let e1 = upload_part_(&s3, "big", &id, 1, "aaaa");
        let e2 = upload_part_(&s3, "big", &id, 2, "bbbbb");
        let e3 = upload_part_(&s3, "big", &id, 3, "c");
        assert_eq!(e1, etag_of(b"aaaa"));

        let response = complete(&s3, "big", &id, &[(1, &e1), (2, &e2), (3, &e3)]);
        assert_eq!(response.status(), 200, "{}", body(&response));
        let xml = body(&response);
        let mut digests = Vec::new();
        for part in ["aaaa", "bbbbb", "c"] {
            digests.extend_from_slice(&Md5::digest(part));
        }
        let etag = format!("\"{}-3\"", hex::encode(Md5::digest(&digests)));
        assert_eq!(tag(&xml, "ETag"), escape(&etag));
        assert_eq!(tag(&xml, "Location"), format!("{EP}/bkt/big"));

        let get = call(&s3, "GET", "/bkt/big");
        assert_eq!(body(&get), "aaaabbbbbc");
        assert_eq!(hdr(&get, "etag"), etag);
        assert_eq!(hdr(&get, "content-type"), "video/mp4");
        assert_eq!(hdr(&get, "x-amz-meta-k"), "v");
        assert!(s3.uploads(EP, "bkt").is_empty());
        // The upload is gone once completed.
        assert_eq!(
            tag(&body(&complete(&s3, "big", &id, &[(1, &e1)])), "Code"),
            "NoSuchUpload"
        );
    }

    #[test]
    fn complete_checks_parts_order_and_sizes() {
        let s3 = server();
        let id = initiate(&s3, "k", &[]);
        let e1 = upload_part_(&s3, "k", &id, 1, "first");
        let e2 = upload_part_(&s3, "k", &id, 2, "second");
        let code = |response: Response<MemBody>| {
            (response.status().as_u16(), tag(&body(&response), "Code"))
        };

        assert_eq!(
            code(complete(&s3, "k", &id, &[(1, "\"0000\""), (2, &e2)])),
            (400, "InvalidPart".into())
        );
        assert_eq!(
            code(complete(&s3, "k", &id, &[(1, &e1), (3, &e2)])),
            (400, "InvalidPart".into())
        );
        assert_eq!(
            code(complete(&s3, "k", &id, &[(2, &e2), (1, &e1)])),
            (400, "InvalidPartOrder".into())
        );
        assert_eq!(
            code(complete(&s3, "k", &id, &[(1, &e1), (1, &e1)])),
            (400, "InvalidPartOrder".into())
        );
        // Default minimum part size is 5 MiB.
        assert_eq!(
            code(complete(&s3, "k", &id, &[(1, &e1), (2, &e2)])),
            (400, "EntityTooSmall".into())
        );
        assert_eq!(
            code(complete(&s3, "k", &id, &[])),
            (400, "MalformedXML".into())
        );
        assert!(s3.object_keys(EP, "bkt").is_empty());

        // A single small part is fine (it is the last), and ETags may come unquoted.
        let response = complete(&s3, "k", &id, &[(2, e2.trim_matches('"'))]);
        assert_eq!(response.status(), 200);
        assert_eq!(s3.object(EP, "bkt", "k").unwrap().data, "second");
    }

    #[test]
    fn upload_part_errors() {
        let s3 = server();
        let id = initiate(&s3, "k", &[]);
        let code = |response: Response<MemBody>| {
            (response.status().as_u16(), tag(&body(&response), "Code"))
        };
        let target = |n: &str, id: &str| format!("/bkt/k?partNumber={n}&uploadId={}", enc(id));
        assert_eq!(
            code(put(&s3, &target("0", &id), "x", &[])),
            (400, "InvalidArgument".into())
        );
        assert_eq!(
            code(put(&s3, &target("10001", &id), "x", &[])),
            (400, "InvalidArgument".into())
        );
        assert_eq!(
            code(put(&s3, &target("1", "bogus"), "x", &[])),
            (404, "NoSuchUpload".into())
        );
        // An upload id is valid only with its own key.
        let response = put(
            &s3,
            &format!("/bkt/other?partNumber=1&uploadId={}", enc(&id)),
            "x",
            &[],
        );
        assert_eq!(code(response), (404, "NoSuchUpload".into()));
        let no_length = signed("PUT", &target("1", &id))
            .body(MemBody::from("x"))
            .unwrap();
        assert_eq!(send(&s3, no_length).status(), 411);
    }

    #[test]
    fn upload_part_copy_with_range() {
        let s3 = server();
        s3.set_min_part_size(1);
        s3.put_direct(EP, "bkt", "src", "0123456789");
        let id = initiate(&s3, "dst", &[]);
        let target = format!("/bkt/dst?partNumber=1&uploadId={}", enc(&id));
        let response = call_with(
            &s3,
            "PUT",
            &target,
            &[
                ("x-amz-copy-source", "/bkt/src"),
                ("x-amz-copy-source-range", "bytes=2-5"),
            ],
        );
        assert_eq!(response.status(), 200, "{}", body(&response));
        let xml = body(&response);
        assert!(xml.contains("<CopyPartResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"));
        let e1 = tag(&xml, "ETag").replace("&quot;", "\"");
        assert_eq!(e1, etag_of(b"2345"));

        let bad = call_with(
            &s3,
            "PUT",
            &target,
            &[
                ("x-amz-copy-source", "/bkt/src"),
                ("x-amz-copy-source-range", "bytes=5-10"),
            ],
        );
        assert_eq!(bad.status(), 400);
        assert!(body(&bad).contains("size: 10"));

        let target2 = format!("/bkt/dst?partNumber=2&uploadId={}", enc(&id));
        let whole = call_with(&s3, "PUT", &target2, &[("x-amz-copy-source", "/bkt/src")]);
        let e2 = tag(&body(&whole), "ETag").replace("&quot;", "\"");
        assert_eq!(
            complete(&s3, "dst", &id, &[(1, &e1), (2, &e2)]).status(),
            200
        );
        assert_eq!(s3.object(EP, "bkt", "dst").unwrap().data, "23450123456789");
    }

    #[test]
    fn abort_and_list_parts() {
        let s3 = server();
        s3.set_time(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let id = initiate(&s3, "k", &[]);
        for n in 1..=5 {
            upload_part_(&s3, "k", &id, n, "part");
        }
        let list = |query: &str| {
            body(&call(
                &s3,
                "GET",
                &format!("/bkt/k?uploadId={}{query}", enc(&id)),
            ))
        };
        let xml = list("");
        assert!(xml.contains("<ListPartsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"));
        assert_eq!(tags(&xml, "PartNumber"), vec!["1", "2", "3", "4", "5"]);
        assert_eq!(tag(&xml, "Size"), "4");
        assert_eq!(tag(&xml, "UploadId"), escape(&id));
        assert_eq!(tag(&xml, "LastModified"), "2023-11-14T22:13:21.000Z");

        let xml = list("&max-parts=2&part-number-marker=1");
        assert_eq!(tags(&xml, "PartNumber"), vec!["2", "3"]);
        assert_eq!(tag(&xml, "NextPartNumberMarker"), "3");
        assert_eq!(tag(&xml, "IsTruncated"), "true");
        let xml = list("&part-number-marker=3");
        assert_eq!(tags(&xml, "PartNumber"), vec!["4", "5"]);
        assert_eq!(tag(&xml, "IsTruncated"), "false");

        let abort = format!("/bkt/k?uploadId={}", enc(&id));
        assert_eq!(call(&s3, "DELETE", &abort).status(), 204);
        assert_eq!(call(&s3, "DELETE", &abort).status(), 404);
        assert_eq!(tag(&list(""), "Code"), "NoSuchUpload");
    }

    #[test]
    fn list_multipart_uploads_with_prefix_and_markers() {
        let s3 = server();
        let a1 = initiate(&s3, "a", &[]);
        let b1 = initiate(&s3, "dir/b", &[]);
        let a2 = initiate(&s3, "a", &[]);
        let c1 = initiate(&s3, "dir/c", &[]);
        let xml = body(&call(&s3, "GET", "/bkt?uploads"));
        assert!(xml.contains(
            "<ListMultipartUploadsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        ));
        assert_eq!(tags(&xml, "Key"), vec!["a", "a", "dir/b", "dir/c"]);
        assert_eq!(
            tags(&xml, "UploadId"),
            vec![a1.clone(), a2.clone(), b1.clone(), c1.clone()]
        );
        assert_eq!(tag(&xml, "Initiated"), "2024-01-01T00:00:00.000Z");

        let xml = body(&call(&s3, "GET", "/bkt?uploads&prefix=dir%2F"));
        assert_eq!(tags(&xml, "Key"), vec!["dir/b", "dir/c"]);
        let xml = body(&call(&s3, "GET", "/bkt?uploads&delimiter=%2F"));
        assert_eq!(tags(&xml, "Key"), vec!["a", "a"]);
        assert_eq!(tags(&xml, "Prefix"), vec!["", "dir/"]);

        let xml = body(&call(&s3, "GET", "/bkt?uploads&max-uploads=1"));
        assert_eq!(tag(&xml, "IsTruncated"), "true");
        assert_eq!(tag(&xml, "NextKeyMarker"), "a");
        assert_eq!(tag(&xml, "NextUploadIdMarker"), a1);
        let xml = body(&call(
            &s3,
            "GET",
            &format!("/bkt?uploads&key-marker=a&upload-id-marker={}", enc(&a1)),
        ));
        assert_eq!(tags(&xml, "UploadId"), vec![a2, b1, c1.clone()]);
        let xml = body(&call(&s3, "GET", "/bkt?uploads&key-marker=dir%2Fb"));
        assert_eq!(tags(&xml, "UploadId"), vec![c1]);
        assert_eq!(s3.uploads(EP, "bkt").len(), 4);
    }

    #[test]
    fn bucket_location_and_unsupported_subresources() {
        let s3 = server();
        s3.put_direct(EP, "bkt", "k", "x");
        let xml = body(&call(&s3, "GET", "/bkt?location"));
        assert!(xml.ends_with("<LocationConstraint xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"></LocationConstraint>"), "{xml}");
        for target in ["/bkt?versions", "/bkt?acl", "/bkt/k?tagging", "/bkt/k?acl="] {
            let response = call(&s3, "GET", target);
            assert_eq!(response.status(), 501, "{target}");
            assert_eq!(tag(&body(&response), "Code"), "NotImplemented");
        }
    }

    #[test]
    fn send_futures_are_send_for_multithreaded_runtimes() {
        fn assert_send<T: Send>(_: &T) {}
        let s3 = server();
        let future = s3.send(signed("GET", "/bkt/k").body(MemBody::empty()).unwrap());
        assert_send(&future);
        assert_send(&s3);
        assert_eq!(block_on(future).unwrap().status(), 404);
    }

    // --- building blocks ---------------------------------------------------------------------

    #[test]
    fn escape_covers_the_xml_specials() {
        assert_eq!(escape(r#"a&b<c>d"e'f"#), "a&amp;b&lt;c&gt;d&quot;e&apos;f");
    }

    #[test]
    fn parse_xml_unescapes_and_keeps_spaces() {
        let doc =
            parse_xml(b"<a xmlns='x'><b> sp &amp; &#65; </b><c/><b><![CDATA[<raw>]]></b></a>")
                .unwrap();
        assert_eq!(doc.name, "a");
        let texts: Vec<_> = doc.all("b").map(|b| b.text.as_str()).collect();
        assert_eq!(texts, vec![" sp & A ", "<raw>"]);
        assert!(doc.child("c").is_some());
        assert_eq!(
            parse_xml(b"<a><b></a>").err().map(|e| e.code),
            Some(S3ErrorCode::MalformedXML)
        );
        assert_eq!(
            parse_xml(b"<a>").err().map(|e| e.code),
            Some(S3ErrorCode::MalformedXML)
        );
    }
}
