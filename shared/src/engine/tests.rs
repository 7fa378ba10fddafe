//! Engine tests: every operation against the in-memory S3 backend (`crate::testing`), with
//! the in-memory store. Requests are anonymous with `auth_required` off unless a test is
//! about auth; SigV4 itself is tested in `crate::sigv4`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_executor::block_on;
use http::{Method, StatusCode};

use super::{Engine, RequestContext};
use crate::body::Body;
use crate::config::*;
use crate::store::{MemoryStore, MetadataStore};
use crate::testing::{MemBody, MemoryS3};

pub(super) const ENDPOINTS: [&str; 3] = [
    "http://127.0.0.1:9001",
    "http://127.0.0.1:9002",
    "http://127.0.0.1:9003",
];

pub(super) fn backend(i: usize) -> BackendConfig {
    BackendConfig {
        name: format!("b{}", i + 1),
        bucket: format!("real{}", i + 1),
        endpoint: ENDPOINTS[i].to_owned(),
        region: "us-east-1".into(),
        access_key: format!("key{}", i + 1),
        secret_key: Secret::new(format!("secret{}", i + 1)),
        path_style: true,
        max_size: None,
        weight: 1,
        enabled: true,
        read_only: false,
        conditional_writes: false,
        limit_class_a: None,
        limit_class_b: None,
    }
}

pub(super) fn config(strategy: Strategy) -> Config {
    Config {
        server: ServerConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            shutdown_timeout: Duration::from_secs(5),
            ..ServerConfig::default()
        },
        backend_client: Default::default(),
        backends: (0..3).map(backend).collect(),
        virtual_buckets: vec![
            VirtualBucketConfig {
                name: "photos".into(),
                backends: vec![],
                anonymous_read: false,
                cors: Vec::new(),
                reads: DataPathMode::Proxy,
                writes: DataPathMode::Proxy,
                key_layout: KeyLayout::BucketPrefixed,
            },
            VirtualBucketConfig {
                name: "plain".into(),
                backends: vec!["b1".into(), "b2".into()],
                anonymous_read: false,
                cors: Vec::new(),
                reads: DataPathMode::Redirect,
                writes: DataPathMode::Proxy,
                key_layout: KeyLayout::Plain,
            },
        ],
        balancer: BalancerConfig {
            strategy,
            health_check_period: Duration::from_secs(30),
            update_stats_period: Duration::from_secs(300),
            retry_attempts: 1,
            retry_delay: Duration::from_secs(1),
            rise: 1,
            fall: 1,
            probe_timeout: Duration::from_secs(2),
            circuit_failures: 3,
            circuit_retry: Duration::from_secs(10),
            retry_buffer: 1024 * 1024,
        },
        metrics: MetricsConfig {
            enabled: true,
            path: "/metrics".into(),
            token: None,
        },
        api: ApiConfig {
            auth_required: false,
            credentials: vec![CredentialConfig {
                access_key: "gwkey".into(),
                secret_key: Secret::new("gwsecret"),
                buckets: None,
                read_only: false,
                admin: true,
            }],
            virtual_host: true,
            base_domains: vec!["s3.example.com".into()],
            allow_create_bucket: true,
            redirect_status: 307,
            presign_expiry: Duration::from_secs(300),
            max_body_bytes: None,
            upload_id_secret: Secret::new("upload-secret"),
        },
        admin: crate::config::AdminConfig::default(),
        metadata: MetadataBackend::Memory,
        default_reads: DataPathMode::Proxy,
        default_writes: DataPathMode::Proxy,
        default_key_layout: KeyLayout::BucketPrefixed,
    }
}

pub(super) struct Harness {
    pub engine: Engine<MemoryStore, MemoryS3>,
    pub now: SystemTime,
}

pub(super) struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Harness {
    pub fn new(strategy: Strategy) -> Self {
        Self::with_config(config(strategy))
    }

    pub fn with_config(config: Config) -> Self {
        let s3 = MemoryS3::new();
        for (i, endpoint) in ENDPOINTS.iter().enumerate() {
            s3.add_endpoint(endpoint, &format!("key{}", i + 1));
            s3.create_bucket(endpoint, &format!("real{}", i + 1));
        }
        s3.set_min_part_size(1);
        let engine = Engine::new(Arc::new(config), MemoryStore::new(), s3);
        Self {
            engine,
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000),
        }
    }

    pub fn s3(&self) -> &MemoryS3 {
        self.engine.client()
    }

    pub fn send(
        &self,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Answer {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(target)
            .header("host", "gateway.test:8080");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let mut request = builder
            .body(MemBody::from_bytes(Bytes::copy_from_slice(body)))
            .unwrap();
        if !body.is_empty() || request.method() == Method::PUT {
            request
                .headers_mut()
                .insert("content-length", body.len().into());
        }
        let ctx = RequestContext {
            now: self.now,
            request_id: "REQ123".into(),
            random: 42,
        };
        let response = block_on(self.engine.handle(request, &ctx));
        let (parts, body) = response.into_parts();
        let body = block_on(body.collect(usize::MAX)).unwrap_or_default();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub fn put(&self, target: &str, body: &[u8]) -> Answer {
        self.send(Method::PUT, target, &[], body)
    }

    pub fn get(&self, target: &str) -> Answer {
        self.send(Method::GET, target, &[], b"")
    }

    /// Which backend endpoints hold `real_key`.
    pub fn holders(&self, real_key: &str) -> Vec<usize> {
        (0..3)
            .filter(|&i| {
                self.s3()
                    .object_keys(ENDPOINTS[i], &format!("real{}", i + 1))
                    .iter()
                    .any(|k| k == real_key)
            })
            .collect()
    }
}

fn assert_send<T: Send>(_: &T) {}

/// The Content-MD5 header value of `body`.
pub(super) fn content_md5(body: &[u8]) -> String {
    use base64::Engine as _;
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body))
}

impl Harness {
    /// DeleteObjects of `keys` in `bucket`, with Content-MD5.
    pub fn delete_keys(&self, bucket: &str, keys: &[&str]) -> Answer {
        let objects: String = keys
            .iter()
            .map(|k| format!("<Object><Key>{}</Key></Object>", crate::xml::escape(k)))
            .collect();
        let xml = format!("<Delete>{objects}</Delete>");
        self.send(
            Method::POST,
            &format!("/{bucket}?delete"),
            &[("content-md5", &content_md5(xml.as_bytes()))],
            xml.as_bytes(),
        )
    }
}

#[test]
fn handle_future_is_send_for_send_store_and_client() {
    let h = Harness::new(Strategy::RoundRobin);
    let request = http::Request::builder()
        .uri("/")
        .body(MemBody::empty())
        .unwrap();
    let ctx = RequestContext {
        now: h.now,
        request_id: "x".into(),
        random: 0,
    };
    let fut = h.engine.handle(request, &ctx);
    assert_send(&fut);
}

#[test]
fn put_get_head_delete_round_trip_with_headers() {
    let h = Harness::new(Strategy::RoundRobin);
    let put = h.send(
        Method::PUT,
        "/photos/dir/a%20b%2Bc%C3%A9.txt",
        &[
            ("content-type", "text/plain"),
            ("x-amz-meta-colour", "blue"),
            ("cache-control", "max-age=60"),
        ],
        b"hello world",
    );
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());
    assert!(put.header("etag").is_some());
    assert_eq!(put.header("x-amz-request-id"), Some("REQ123"));
    let get = h.get("/photos/dir/a%20b%2Bc%C3%A9.txt");
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(&get.body[..], b"hello world");
    assert_eq!(get.header("content-type"), Some("text/plain"));
    assert_eq!(get.header("x-amz-meta-colour"), Some("blue"));
    assert_eq!(get.header("cache-control"), Some("max-age=60"));
    assert_eq!(
        h.holders("photos/dir/a b+cé.txt").len(),
        1,
        "stored once, under {{bucket}}/{{key}}"
    );
    let head = h.send(Method::HEAD, "/photos/dir/a%20b%2Bc%C3%A9.txt", &[], b"");
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), Some("11"));
    assert!(head.body.is_empty());
    let range = h.send(
        Method::GET,
        "/photos/dir/a%20b%2Bc%C3%A9.txt",
        &[("range", "bytes=-5")],
        b"",
    );
    assert_eq!(range.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&range.body[..], b"world");
    let etag = get.header("etag").unwrap().to_owned();
    let cond = h.send(
        Method::GET,
        "/photos/dir/a%20b%2Bc%C3%A9.txt",
        &[("if-none-match", &etag)],
        b"",
    );
    assert_eq!(cond.status, StatusCode::NOT_MODIFIED);
    let cond = h.send(
        Method::GET,
        "/photos/dir/a%20b%2Bc%C3%A9.txt",
        &[("if-match", "\"nope\"")],
        b"",
    );
    assert_eq!(cond.status, StatusCode::PRECONDITION_FAILED);
    assert!(cond.text().contains("<Code>PreconditionFailed</Code>"));
    let del = h.send(Method::DELETE, "/photos/dir/a%20b%2Bc%C3%A9.txt", &[], b"");
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    let gone = h.get("/photos/dir/a%20b%2Bc%C3%A9.txt");
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(gone.text().contains("<Code>NoSuchKey</Code>"));
    assert!(gone.text().contains("<RequestId>REQ123</RequestId>"));
    assert!(h.holders("photos/dir/a b+cé.txt").is_empty());
}

#[test]
fn virtual_host_style_reaches_the_same_object() {
    let h = Harness::new(Strategy::RoundRobin);
    assert_eq!(h.put("/photos/k", b"v").status, StatusCode::OK);
    let mut builder = http::Request::builder()
        .method(Method::GET)
        .uri("/k")
        .header("host", "photos.s3.example.com");
    builder = builder.header("x", "y");
    let request = builder.body(MemBody::empty()).unwrap();
    let ctx = RequestContext {
        now: h.now,
        request_id: "r".into(),
        random: 0,
    };
    let response = block_on(h.engine.handle(request, &ctx));
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        &block_on(response.into_body().collect(100)).unwrap()[..],
        b"v"
    );
}

#[test]
fn round_robin_spreads_over_every_backend_and_overwrites_stay_put() {
    let h = Harness::new(Strategy::RoundRobin);
    for i in 0..9 {
        assert_eq!(h.put(&format!("/photos/k{i}"), b"x").status, StatusCode::OK);
    }
    for (i, endpoint) in ENDPOINTS.iter().enumerate() {
        assert_eq!(
            h.s3()
                .object_keys(endpoint, &format!("real{}", i + 1))
                .len(),
            3,
            "backend {i}"
        );
    }
    // Overwriting keeps the key on its backend: it never lives twice.
    for _ in 0..3 {
        assert_eq!(h.put("/photos/k0", b"again").status, StatusCode::OK);
    }
    assert_eq!(h.holders("photos/k0").len(), 1);
    assert_eq!(&h.get("/photos/k0").body[..], b"again");
}

/// Placement looks at one backend at a time for an overwrite: a backend that left the
/// bucket's pool must still count as outside it (with and without conditional writes).
#[test]
fn an_overwrite_goes_to_the_pool_once_its_backend_has_left_it() {
    for conditional in [false, true] {
        let mut c = config(Strategy::RoundRobin);
        for b in &mut c.backends {
            b.conditional_writes = conditional;
        }
        c.virtual_buckets[0].backends = vec!["b1".into()];
        let h = Harness::with_config(c.clone());
        assert_eq!(h.put("/photos/k", b"v1").status, StatusCode::OK);
        assert_eq!(h.holders("photos/k"), vec![0]);
        c.virtual_buckets[0].backends = vec!["b3".into()];
        h.engine.set_config(Arc::new(c));
        assert_eq!(h.put("/photos/k", b"v2").status, StatusCode::OK);
        assert_eq!(h.holders("photos/k"), vec![2], "conditional: {conditional}");
        assert_eq!(&h.get("/photos/k").body[..], b"v2");
    }
}

/// Taking a backend out of a pool or out of the config without a drain, or changing a bucket's
/// key layout, is allowed (the operator may mean it) but said: objects leave listings, or
/// become unreachable.
#[test]
fn a_config_that_strands_objects_says_so() {
    let before = config(Strategy::RoundRobin);
    assert!(before.change_warnings(&before).is_empty());
    let mut after = before.clone();
    after.virtual_buckets[1].backends = vec!["b1".into(), "b2".into(), "b3".into()];
    assert!(before.change_warnings(&after).is_empty(), "a backend added");
    after.virtual_buckets[1].backends = vec!["b1".into()];
    let warnings = before.change_warnings(&after);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("\"b2\" left the pool of bucket \"plain\""));
    assert!(warnings[0].contains("s3-balance drain b2"));
    after.backends.pop();
    let warnings = before.change_warnings(&after);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[1].contains("\"b3\" is no longer configured"));
    let mut relaid = before.clone();
    relaid.virtual_buckets[0].key_layout = KeyLayout::Plain;
    let warnings = before.change_warnings(&relaid);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("bucket \"photos\" changed its key layout"));
}

#[test]
fn least_space_places_by_the_usage_read_at_refresh() {
    let mut c = config(Strategy::LeastSpace);
    for b in &mut c.backends {
        b.max_size = Some(1_000_000);
    }
    let h = Harness::with_config(c);
    for (backend, used) in [("b3", 900_000), ("b1", 500_000), ("b2", 100_000)] {
        block_on(h.engine.store().add_usage(backend, used, 1)).unwrap();
    }
    block_on(h.engine.refresh(h.now)).unwrap();
    assert_eq!(h.put("/photos/k", b"x").status, StatusCode::OK);
    assert_eq!(h.holders("photos/k"), vec![1], "b2 has the most room");
}

#[test]
fn objects_stay_readable_and_listable_when_the_index_is_lost() {
    let h = Harness::new(Strategy::RoundRobin);
    for i in 0..12 {
        h.put(&format!("/photos/k{i:02}"), format!("v{i}").as_bytes());
    }
    h.engine.store().forget_objects();
    for i in 0..12 {
        let get = h.get(&format!("/photos/k{i:02}"));
        assert_eq!(get.status, StatusCode::OK);
        assert_eq!(get.text(), format!("v{i}"));
    }
    let list = h.get("/photos?list-type=2");
    for i in 0..12 {
        assert!(list.text().contains(&format!("<Key>k{i:02}</Key>")));
    }
    // The probe repaired the index.
    assert!(block_on(h.engine.store().get_object("photos", "k03"))
        .unwrap()
        .is_some());
}

#[test]
fn a_stale_index_entry_is_corrected_by_probing() {
    let h = Harness::new(Strategy::RoundRobin);
    h.put("/photos/moved", b"data");
    let rec = block_on(h.engine.store().get_object("photos", "moved"))
        .unwrap()
        .unwrap();
    let wrong = if rec.backend == "b1" { "b2" } else { "b1" };
    let mut stale = rec.clone();
    stale.backend = wrong.into();
    block_on(h.engine.store().put_object("photos", "moved", &stale)).unwrap();
    let get = h.get("/photos/moved");
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.text(), "data");
    assert_eq!(
        block_on(h.engine.store().get_object("photos", "moved"))
            .unwrap()
            .unwrap()
            .backend,
        rec.backend
    );
}

#[test]
fn a_down_backend_answers_503_for_its_objects_and_writes_go_elsewhere() {
    let h = Harness::new(Strategy::RoundRobin);
    for i in 0..3 {
        h.put(&format!("/photos/k{i}"), b"x");
    }
    let on_b1 = (0..3)
        .find(|i| h.holders(&format!("photos/k{i}")) == vec![0])
        .unwrap();
    h.s3().set_down(ENDPOINTS[0], true);
    let get = h.get(&format!("/photos/k{on_b1}"));
    assert_eq!(
        get.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        get.text()
    );
    let now = h.now;
    let snapshot = block_on(h.engine.check_health(&move || now)).unwrap();
    assert!(!snapshot.backends["b1"].healthy);
    for i in 10..16 {
        assert_eq!(h.put(&format!("/photos/k{i}"), b"y").status, StatusCode::OK);
        assert!(
            !h.holders(&format!("photos/k{i}")).contains(&0),
            "nothing placed on the down backend"
        );
    }
    let metrics = h.get("/metrics").text();
    assert!(
        metrics.contains("s3_balance_bucket_healthy{bucket=\"b1\"} 0"),
        "{metrics}"
    );
    // A missing key while a backend is down is not a false 404.
    let missing = h.get("/photos/never-written");
    assert_eq!(missing.status, StatusCode::SERVICE_UNAVAILABLE);
    h.s3().set_down(ENDPOINTS[0], false);
    block_on(h.engine.check_health(&move || now)).unwrap();
    assert_eq!(h.get(&format!("/photos/k{on_b1}")).status, StatusCode::OK);
}

#[test]
fn listings_merge_backends_exactly_with_paging_and_delimiters() {
    let h = Harness::new(Strategy::RoundRobin);
    let mut keys: Vec<String> = Vec::new();
    for d in ["a", "b", "c/d", "e"] {
        for i in 0..15 {
            keys.push(format!("{d}/{i:02}"));
        }
    }
    keys.push("top".into());
    for k in &keys {
        assert_eq!(h.put(&format!("/photos/{k}"), b"x").status, StatusCode::OK);
    }
    keys.sort();
    // v2 paging of 7 keys equals the sorted listing.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..100 {
        let mut url = "/photos?list-type=2&max-keys=7".to_owned();
        if let Some(t) = &token {
            url.push_str(&format!(
                "&continuation-token={}",
                percent_encoding::utf8_percent_encode(t, percent_encoding::NON_ALPHANUMERIC)
            ));
        }
        let page = h.get(&url).text();
        seen.extend(tags(&page, "Key"));
        token = tags(&page, "NextContinuationToken").into_iter().next();
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen, keys);
    let delim = h.get("/photos?list-type=2&delimiter=%2F").text();
    assert_eq!(
        tags(&delim, "Prefix")
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>(),
        vec!["a/", "b/", "c/", "e/"]
    );
    assert_eq!(tags(&delim, "Key"), vec!["top"]);
    let v1 = h.get("/photos?prefix=c%2F&max-keys=1000").text();
    assert_eq!(tags(&v1, "Key").len(), 15);
    let versions = h.get("/photos?versions&prefix=a%2F").text();
    assert_eq!(
        tags(&versions, "VersionId")
            .iter()
            .filter(|v| *v == "null")
            .count(),
        15
    );
}

/// The texts of every `<name>` element.
pub(super) fn tags(xml: &str, name: &str) -> Vec<String> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(
            after[..j]
                .replace("&amp;", "&")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\""),
        );
        rest = &after[j + close.len()..];
    }
    out
}

#[test]
fn multipart_upload_list_complete_and_abort() {
    let h = Harness::new(Strategy::RoundRobin);
    let created = h.send(
        Method::POST,
        "/photos/big?uploads",
        &[("content-type", "video/mp4")],
        b"",
    );
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    let upload_id = tags(&created.text(), "UploadId").remove(0);
    let mut etags = Vec::new();
    for (n, part) in [b"part-one-".as_slice(), b"part-two-", b"three"]
        .iter()
        .enumerate()
    {
        let r = h.put(
            &format!("/photos/big?partNumber={}&uploadId={upload_id}", n + 1),
            part,
        );
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        etags.push(r.header("etag").unwrap().to_owned());
    }
    let parts = h.get(&format!("/photos/big?uploadId={upload_id}")).text();
    assert_eq!(tags(&parts, "PartNumber"), vec!["1", "2", "3"]);
    assert_eq!(tags(&parts, "UploadId"), vec![upload_id.clone()]);
    let uploads = h.get("/photos?uploads").text();
    assert_eq!(tags(&uploads, "UploadId"), vec![upload_id.clone()]);
    assert_eq!(tags(&uploads, "Key"), vec!["big"]);
    let body: String = etags
        .iter()
        .enumerate()
        .map(|(i, e)| {
            format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{e}</ETag></Part>",
                i + 1
            )
        })
        .collect();
    let done = h.send(
        Method::POST,
        &format!("/photos/big?uploadId={upload_id}"),
        &[],
        format!("<CompleteMultipartUpload>{body}</CompleteMultipartUpload>").as_bytes(),
    );
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    assert!(tags(&done.text(), "ETag")[0].ends_with("-3\""));
    let get = h.get("/photos/big");
    assert_eq!(get.text(), "part-one-part-two-three");
    assert_eq!(get.header("content-type"), Some("video/mp4"));
    assert_eq!(
        block_on(h.engine.store().get_object("photos", "big"))
            .unwrap()
            .unwrap()
            .size,
        23
    );
    // Abort, and forged ids route nowhere.
    let created = h.send(Method::POST, "/photos/other?uploads", &[], b"");
    let id = tags(&created.text(), "UploadId").remove(0);
    assert_eq!(
        h.send(
            Method::DELETE,
            &format!("/photos/other?uploadId={id}"),
            &[],
            b""
        )
        .status,
        StatusCode::NO_CONTENT
    );
    let forged = h.put("/photos/other?partNumber=1&uploadId=AAAAforged", b"x");
    assert_eq!(forged.status, StatusCode::NOT_FOUND);
    assert!(forged.text().contains("NoSuchUpload"));
}

#[test]
fn copy_within_and_across_backends() {
    let h = Harness::new(Strategy::RoundRobin);
    h.send(
        Method::PUT,
        "/photos/src",
        &[("content-type", "image/png"), ("x-amz-meta-a", "1")],
        b"source bytes",
    );
    // Round-robin puts the next two writes on the two other backends: one copy crosses.
    for dest in ["c1", "c2", "c3"] {
        let r = h.send(
            Method::PUT,
            &format!("/photos/{dest}"),
            &[("x-amz-copy-source", "/photos/src")],
            b"",
        );
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert!(r.text().contains("<ETag>"));
        let get = h.get(&format!("/photos/{dest}"));
        assert_eq!(get.text(), "source bytes");
        assert_eq!(get.header("content-type"), Some("image/png"));
        assert_eq!(get.header("x-amz-meta-a"), Some("1"));
    }
    let holders: std::collections::BTreeSet<usize> = ["c1", "c2", "c3"]
        .iter()
        .flat_map(|d| h.holders(&format!("photos/{d}")))
        .collect();
    assert_eq!(
        holders.len(),
        3,
        "copies landed on every backend: some copied across"
    );
    let missing = h.send(
        Method::PUT,
        "/photos/c4",
        &[("x-amz-copy-source", "/photos/nope")],
        b"",
    );
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[test]
fn delete_objects_across_backends() {
    let h = Harness::new(Strategy::RoundRobin);
    for i in 0..30 {
        h.put(&format!("/photos/d{i}"), b"x");
    }
    let body: String = (0..30)
        .map(|i| format!("<Object><Key>d{i}</Key></Object>"))
        .collect();
    let xml = format!("<Delete>{body}<Object><Key>never</Key></Object></Delete>");
    let r = h.send(
        Method::POST,
        "/photos?delete",
        &[("content-md5", &content_md5(xml.as_bytes()))],
        xml.as_bytes(),
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(tags(&r.text(), "Key").len(), 31);
    assert_eq!(tags(&r.text(), "Deleted").len(), 31, "{}", r.text());
    for (i, endpoint) in ENDPOINTS.iter().enumerate() {
        assert!(h
            .s3()
            .object_keys(endpoint, &format!("real{}", i + 1))
            .is_empty());
    }
}

/// A backend's DeleteResult is checked against the keys sent to it: an answer naming a key
/// outside the bucket's layout prefix (here one whose byte offset falls inside a character)
/// or an unreadable answer leaves the keys failed and indexed, never a panic nor a false
/// "Deleted".
#[test]
fn delete_objects_checks_every_backend_answer() {
    let odd = "<DeleteResult><Error><Key>photo\u{20ac}s</Key><Code>AccessDenied</Code><Message>no</Message></Error></DeleteResult>";
    let truncated = "<DeleteResult><Deleted><Key>photos/k1</Key></Deleted>";
    for answer in [odd, truncated] {
        let h = Harness::new(Strategy::RoundRobin);
        h.put("/photos/k1", b"keep");
        for endpoint in ENDPOINTS {
            h.s3().set_delete_answer(endpoint, Some(answer));
        }
        let r = h.delete_keys("photos", &["k1", "never"]);
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let text = r.text();
        assert!(tags(&text, "Deleted").is_empty(), "{answer}: {text}");
        assert_eq!(
            tags(&text, "Code"),
            vec!["InternalError", "InternalError"],
            "{text}"
        );
        assert_eq!(tags(&text, "Key"), vec!["k1", "never"]);
        // Still there, and still found through the index.
        assert_eq!(h.get("/photos/k1").text(), "keep");
        assert!(block_on(h.engine.store().get_object("photos", "k1"))
            .unwrap()
            .is_some());
    }
}

#[test]
fn unimplemented_subresources_never_touch_the_object() {
    let h = Harness::new(Strategy::RoundRobin);
    h.put("/photos/k", b"keep me");
    let r = h.put("/photos/k?tagging", b"<Tagging><TagSet/></Tagging>");
    assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED);
    assert!(r.text().contains("<Code>NotImplemented</Code>"));
    assert_eq!(h.get("/photos/k").text(), "keep me");
    let versioning = h.get("/photos?versioning");
    assert_eq!(versioning.status, StatusCode::OK);
    assert!(versioning.text().contains("VersioningConfiguration"));
}

#[test]
fn redirect_mode_answers_307_with_a_presigned_backend_url() {
    let h = Harness::new(Strategy::RoundRobin);
    h.put("/plain/file.txt", b"direct");
    assert_eq!(
        h.holders("file.txt").len(),
        1,
        "the {{key}} layout stores the key as is"
    );
    let r = h.get("/plain/file.txt");
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT);
    let location = r.header("location").unwrap();
    assert!(location.starts_with("http://127.0.0.1:900"), "{location}");
    assert!(
        location.contains("/file.txt?") && location.contains("X-Amz-Signature="),
        "{location}"
    );
}

#[test]
fn buckets_are_created_listed_and_only_deleted_when_empty() {
    let h = Harness::new(Strategy::RoundRobin);
    assert_eq!(h.put("/new-bucket", b"").status, StatusCode::OK);
    // Again: 200 in us-east-1 (AWS's legacy answer), 409 BucketAlreadyOwnedByYou elsewhere.
    assert_eq!(h.put("/new-bucket", b"").status, StatusCode::OK);
    let eu = b"<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>";
    let again = h.put("/new-bucket", eu);
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.text().contains("BucketAlreadyOwnedByYou"));
    assert_eq!(h.put("/Bad_Name", b"").status, StatusCode::BAD_REQUEST);
    let list = h.get("/").text();
    assert_eq!(tags(&list, "Name"), vec!["new-bucket", "photos", "plain"]);
    h.put("/new-bucket/k", b"x");
    let r = h.send(Method::DELETE, "/new-bucket", &[], b"");
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.text().contains("BucketNotEmpty"));
    h.send(Method::DELETE, "/new-bucket/k", &[], b"");
    assert_eq!(
        h.send(Method::DELETE, "/new-bucket", &[], b"").status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.get("/new-bucket?list-type=2").status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.send(Method::HEAD, "/nope", &[], b"").status,
        StatusCode::NOT_FOUND
    );
}

#[test]
fn reindex_rebuilds_index_and_usage() {
    // A `{key}` layout bucket would adopt every key of its backends: leave it out here.
    let mut c = config(Strategy::RoundRobin);
    c.virtual_buckets.retain(|b| b.name == "photos");
    let h = Harness::with_config(c);
    for i in 0..7 {
        h.put(&format!("/photos/r{i}"), b"12345");
    }
    h.engine.store().forget_objects();
    let report = block_on(h.engine.reindex(h.now)).unwrap();
    assert_eq!(report.objects, 7);
    assert_eq!(report.bytes, 35);
    let usage = block_on(h.engine.store().list_usage()).unwrap();
    assert_eq!(usage.iter().map(|u| u.used_bytes).sum::<i64>(), 35);
    assert!(block_on(h.engine.store().get_object("photos", "r6"))
        .unwrap()
        .is_some());
}

#[test]
fn health_and_metrics_endpoints() {
    let h = Harness::new(Strategy::ConsistentHash);
    h.put("/photos/k", b"x");
    let health = h.get("/health");
    assert_eq!(health.status, StatusCode::OK);
    assert!(health.text().contains("\"status\":\"ok\""));
    let metrics = h.get("/metrics").text();
    assert!(
        metrics.contains("s3_balance_s3_operations_total")
            || metrics.contains("s3_balance_balancer_decisions_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strategy=\"consistent-hash\""),
        "{metrics}"
    );
}

/// `/health` on `host`, answered by an engine with virtual-host buckets on or off.
fn health_on_host(virtual_host: bool, host: &str) -> StatusCode {
    let mut c = config(Strategy::RoundRobin);
    c.api.virtual_host = virtual_host;
    let h = Harness::with_config(c);
    let request = http::Request::builder()
        .uri("/health")
        .header("host", host)
        .body(MemBody::empty())
        .unwrap();
    let ctx = RequestContext {
        now: h.now,
        request_id: "r".into(),
        random: 0,
    };
    block_on(h.engine.handle(request, &ctx)).status()
}

#[test]
fn health_is_the_gateways_own_host_and_a_buckets_virtual_host_is_the_bucket() {
    // IPv6 literals and ports are the gateway's host, not a bucket.
    assert_eq!(health_on_host(true, "[::1]:8080"), StatusCode::OK);
    assert_eq!(health_on_host(true, "s3.example.com"), StatusCode::OK);
    // `photos.s3.example.com/health` is the object `health` of bucket `photos`.
    assert_eq!(
        health_on_host(true, "photos.s3.example.com:8080"),
        StatusCode::NOT_FOUND
    );
    // With virtual-host buckets off, every host is the gateway's.
    assert_eq!(
        health_on_host(false, "photos.s3.example.com"),
        StatusCode::OK
    );
}

#[test]
fn body_limit_is_enforced_before_any_backend_is_touched() {
    let mut c = config(Strategy::RoundRobin);
    c.api.max_body_bytes = Some(4);
    let h = Harness::with_config(c);
    h.s3().clear_requests();
    let r = h.put("/photos/big", b"12345");
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("EntityTooLarge"));
    assert!(h.s3().requests().is_empty());
}

/// Signs a request to the gateway as a client would, with `access_key`/`secret`.
pub(super) fn signed(
    h: &Harness,
    method: Method,
    target: &str,
    access_key: &str,
    secret: &str,
    body: &[u8],
) -> Answer {
    signed_with(h, method, target, access_key, secret, &[], body)
}

/// [`signed`] with extra headers (signed too).
pub(super) fn signed_with(
    h: &Harness,
    method: Method,
    target: &str,
    access_key: &str,
    secret: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let client = BackendConfig {
        access_key: access_key.into(),
        secret_key: Secret::new(secret),
        endpoint: "http://gateway.test:8080".into(),
        ..backend(0)
    };
    let uri: http::Uri = format!("http://gateway.test:8080{target}").parse().unwrap();
    let (mut parts, ()) = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(())
        .unwrap()
        .into_parts();
    parts.headers.insert("content-length", body.len().into());
    for (name, value) in headers {
        parts.headers.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(body))
    };
    crate::sigv4::oracle::sign_request(
        &mut parts,
        &client,
        &crate::sigv4::sign::PayloadHash::Sha256(digest),
        h.now,
    )
    .unwrap();
    // The gateway sees the path as sent, not the absolute form.
    parts.uri = target.parse().unwrap();
    let request =
        http::Request::from_parts(parts, MemBody::from_bytes(Bytes::copy_from_slice(body)));
    let ctx = RequestContext {
        now: h.now,
        request_id: "REQ".into(),
        random: 1,
    };
    let response = block_on(h.engine.handle(request, &ctx));
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: block_on(body.collect(usize::MAX)).unwrap_or_default(),
    }
}

pub(super) fn auth_harness() -> Harness {
    let mut c = config(Strategy::RoundRobin);
    c.api.auth_required = true;
    c.api.credentials.push(CredentialConfig {
        access_key: "reader".into(),
        secret_key: Secret::new("readersecret"),
        buckets: Some(vec!["photos".into()]),
        read_only: true,
        admin: false,
    });
    Harness::with_config(c)
}

#[test]
fn signed_requests_pass_and_bad_ones_fail_with_aws_codes_writing_nothing() {
    let h = auth_harness();
    let ok = signed(
        &h,
        Method::PUT,
        "/photos/a%20b",
        "gwkey",
        "gwsecret",
        b"data",
    );
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    assert_eq!(
        signed(
            &h,
            Method::GET,
            "/photos/a%20b",
            "reader",
            "readersecret",
            b""
        )
        .text(),
        "data"
    );
    let cases = [
        ("gwkey", "wrong", "/photos/x", "SignatureDoesNotMatch"),
        ("nobody", "gwsecret", "/photos/x", "InvalidAccessKeyId"),
        ("reader", "readersecret", "/photos/x", "AccessDenied"),
        ("reader", "readersecret", "/plain/x", "AccessDenied"),
    ];
    for (ak, sk, target, code) in cases {
        let r = signed(&h, Method::PUT, target, ak, sk, b"evil");
        assert!(
            r.text().contains(&format!("<Code>{code}</Code>")),
            "{ak}: {}",
            r.text()
        );
        assert!(r.status.is_client_error());
    }
    let unsigned = h.put("/photos/x", b"evil");
    assert_eq!(unsigned.status, StatusCode::FORBIDDEN);
    assert!(h.holders("photos/x").is_empty(), "nothing written");
    // A scoped key lists only its buckets.
    let list = signed(&h, Method::GET, "/", "reader", "readersecret", b"");
    assert_eq!(tags(&list.text(), "Name"), vec!["photos"]);
}

#[test]
fn with_auth_off_any_signature_is_accepted() {
    let h = Harness::new(Strategy::RoundRobin);
    let r = signed(&h, Method::PUT, "/photos/k", "whoever", "whatever", b"data");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(h.get("/photos/k").text(), "data");
}

#[test]
fn a_body_not_matching_its_declared_sha256_stores_nothing() {
    let h = auth_harness();
    let uri = "/photos/tampered";
    let client = BackendConfig {
        access_key: "gwkey".into(),
        secret_key: Secret::new("gwsecret"),
        ..backend(0)
    };
    let (mut parts, ()) = http::Request::builder()
        .method(Method::PUT)
        .uri(format!("http://gateway.test:8080{uri}"))
        .body(())
        .unwrap()
        .into_parts();
    parts.headers.insert("content-length", 4.into());
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b"good"))
    };
    crate::sigv4::oracle::sign_request(
        &mut parts,
        &client,
        &crate::sigv4::sign::PayloadHash::Sha256(digest),
        h.now,
    )
    .unwrap();
    parts.uri = uri.parse().unwrap();
    let request =
        http::Request::from_parts(parts, MemBody::from_bytes(Bytes::from_static(b"evil")));
    let ctx = RequestContext {
        now: h.now,
        request_id: "R".into(),
        random: 0,
    };
    let response = block_on(h.engine.handle(request, &ctx));
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let text = String::from_utf8_lossy(&block_on(response.into_body().collect(10_000)).unwrap())
        .into_owned();
    assert!(
        text.contains("<Code>XAmzContentSHA256Mismatch</Code>"),
        "{text}"
    );
    assert!(h.holders("photos/tampered").is_empty());
    assert!(block_on(h.engine.store().get_object("photos", "tampered"))
        .unwrap()
        .is_none());
}

#[test]
fn usage_is_added_to_the_store_once_per_refresh_not_per_write() {
    let h = Harness::new(Strategy::RoundRobin);
    for i in 0..6 {
        h.put(&format!("/photos/u{i}"), b"1234");
    }
    h.send(Method::DELETE, "/photos/u0", &[], b"");
    assert!(
        block_on(h.engine.store().list_usage()).unwrap().is_empty(),
        "no store write per request"
    );
    block_on(h.engine.refresh(h.now)).unwrap();
    let usage = block_on(h.engine.store().list_usage()).unwrap();
    assert_eq!(usage.iter().map(|u| u.used_bytes).sum::<i64>(), 20);
    assert_eq!(usage.iter().map(|u| u.objects).sum::<i64>(), 5);
    // The refreshed state is what placement reads.
    assert_eq!(
        h.engine
            .state()
            .usage
            .iter()
            .map(|u| u.used_bytes)
            .sum::<i64>(),
        20
    );
}

#[test]
fn sigv2_presigned_urls_are_refused_not_taken_as_anonymous() {
    let mut c = config(Strategy::RoundRobin);
    c.virtual_buckets[0].anonymous_read = true;
    c.api.auth_required = true;
    let h = Harness::with_config(c);
    let r = h.get("/photos/k?AWSAccessKeyId=gwkey&Signature=abc&Expires=1");
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.text().contains("<Code>InvalidRequest</Code>"),
        "{}",
        r.text()
    );
}

#[test]
fn keys_with_dot_segments_are_refused_not_written_elsewhere() {
    let h = Harness::new(Strategy::RoundRobin);
    h.put("/photos/b", b"keep");
    for target in [
        "/photos/a/../b",
        "/photos/./b",
        "/photos/x/%2E%2E/b",
        "/photos/x/..",
    ] {
        let r = h.put(target, b"evil");
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{target}");
        assert!(r.text().contains("InvalidArgument"), "{target}");
    }
    assert_eq!(h.get("/photos/b").text(), "keep");
    // Dots inside a segment are ordinary.
    assert_eq!(h.put("/photos/a..b/.c/d.", b"fine").status, StatusCode::OK);
}

#[test]
fn a_config_text_is_applied_when_it_changes_something_and_rejected_whole_when_broken() {
    use super::ConfigUpdate;
    let text = |strategy: &str, db: &str| {
        format!(
            "balancer:\n  strategy: {strategy}\nmetadata:\n  type: sqlite\n  path: {db}\nbuckets:\n  - name: one\n    endpoint: http://127.0.0.1:9000\n    access_key_id: k\n    secret_access_key: ${{SECRET}}\n  - name: photos\n    virtual: true\n"
        )
    };
    let var = |name: &str| (name == "SECRET").then(|| "s3cr3t".to_owned());
    let keep = |c: Config| c;
    let (first, _) = Config::from_text(None, &text("round-robin", "a.db"), &var).unwrap();
    let h = Harness::with_config(first);
    let apply = |t: &str| h.engine.apply_config_text(None, t, &var, &keep);

    // The same config in other words (TOML here) changes nothing.
    let toml = "[balancer]\nstrategy = \"round-robin\"\n[metadata]\ntype = \"sqlite\"\npath = \"a.db\"\n[[buckets]]\nname = \"one\"\nendpoint = \"http://127.0.0.1:9000\"\naccess_key_id = \"k\"\nsecret_access_key = \"${SECRET}\"\n[[buckets]]\nname = \"photos\"\nvirtual = true\n";
    assert!(matches!(apply(toml), ConfigUpdate::Unchanged));

    let switched = apply(&text("least-space", "a.db"));
    assert!(
        matches!(
            switched,
            ConfigUpdate::Applied {
                restart_needed: false,
                ..
            }
        ),
        "{switched:?}"
    );
    assert_eq!(h.engine.config().balancer.strategy, Strategy::LeastSpace);

    // Broken (YAML syntax, or a `${NAME}` nobody sets): rejected, the config in force stays.
    assert!(matches!(apply("buckets: [\n"), ConfigUpdate::Rejected(_)));
    let unset = text("weighted", "a.db").replace("${SECRET}", "${UNSET}");
    assert!(matches!(apply(&unset), ConfigUpdate::Rejected(e) if e.to_string().contains("UNSET")));
    assert_eq!(h.engine.config().balancer.strategy, Strategy::LeastSpace);

    // A new metadata store applies only at a restart: said so.
    let moved = apply(&text("least-space", "b.db"));
    assert!(
        matches!(
            moved,
            ConfigUpdate::Applied {
                restart_needed: true,
                ..
            }
        ),
        "{moved:?}"
    );

    // The runtime's own rules are applied before the comparison.
    let capped = h.engine.apply_config_text(
        None,
        &text("least-space", "b.db"),
        &var,
        &|mut c: Config| {
            c.api.max_body_bytes = Some(1024);
            c
        },
    );
    assert!(matches!(capped, ConfigUpdate::Applied { .. }));
    assert_eq!(h.engine.config().api.max_body_bytes, Some(1024));
}

#[test]
fn answered_s3_requests_are_counted_and_the_gateways_own_endpoints_are_not() {
    let h = Harness::new(Strategy::RoundRobin);
    let ctx = RequestContext {
        now: h.now,
        request_id: "r".into(),
        random: 0,
    };
    let request = |method: Method, target: &str| {
        http::Request::builder()
            .method(method)
            .uri(target)
            .header("host", "gateway.test:8080")
            .header("content-length", "0")
            .body(MemBody::empty())
            .unwrap()
    };
    for (method, target) in [
        (Method::PUT, "/photos/k"),
        (Method::GET, "/photos/k"),
        (Method::GET, "/photos/missing"),
        (Method::GET, "/health"),
    ] {
        let response = block_on(h.engine.handle(request(method, target), &ctx));
        h.engine.record_response(&response, 0.004);
    }
    let metrics = h.get("/metrics").text();
    for line in [
        r#"s3_balance_s3_operations_total{operation="PutObject",status="success"} 1"#,
        r#"s3_balance_s3_operations_total{operation="GetObject",status="success"} 1"#,
        r#"s3_balance_s3_operations_total{operation="GetObject",status="error"} 1"#,
        r#"s3_balance_s3_operation_duration_seconds_bucket{operation="GetObject",le="0.005"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    // `/health` was answered and booked like the others, but is not an S3 operation.
    assert!(!metrics.contains("operation=\"Admin\""), "{metrics}");
    assert_eq!(
        metrics.matches("s3_balance_s3_operations_total{").count(),
        3
    );
}

#[test]
fn a_panic_on_the_request_path_answers_500_internal_error_with_no_body_on_head() {
    let h = Harness::new(Strategy::RoundRobin);
    assert_eq!(h.put("/photos/k", b"v").status, StatusCode::OK);
    for endpoint in ENDPOINTS {
        for method in [Method::GET, Method::HEAD] {
            h.s3()
                .add_fault(endpoint, crate::testing::Fault::Panic(method));
        }
    }
    let ctx = RequestContext {
        now: h.now,
        request_id: "PANIC1".into(),
        random: 0,
    };
    for method in [Method::GET, Method::HEAD] {
        let request = http::Request::builder()
            .method(method.clone())
            .uri("/photos/k")
            .header("host", "gateway.test:8080")
            .body(MemBody::empty())
            .unwrap();
        let response = block_on(h.engine.handle_guarded(request, &ctx));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["x-amz-request-id"], "PANIC1");
        let body = block_on(response.into_body().collect(4096)).unwrap();
        if method == Method::HEAD {
            assert!(body.is_empty());
        } else {
            let (code, _) = crate::xml::parse_error(&body).unwrap();
            assert_eq!(code, "InternalError");
        }
    }
    // The engine goes on serving.
    for endpoint in ENDPOINTS {
        h.s3().clear_faults(endpoint);
    }
    assert_eq!(h.get("/photos/k").body.as_ref(), b"v");
}

#[test]
fn configured_buckets_are_listed_with_the_date_the_gateway_first_listed_them() {
    let mut h = Harness::new(Strategy::RoundRobin);
    let first = tags(&h.get("/").text(), "CreationDate");
    assert!(!first.is_empty());
    assert!(
        first.iter().all(|d| d == &crate::time::iso8601(h.now)),
        "{first:?}"
    );
    h.now += Duration::from_secs(86_400);
    assert_eq!(
        tags(&h.get("/").text(), "CreationDate"),
        first,
        "kept, not renewed"
    );
}

#[test]
fn list_buckets_pages_with_max_buckets_and_continuation_token_and_filters_by_prefix() {
    let h = Harness::new(Strategy::RoundRobin);
    let names = |a: &Answer| tags(&a.text(), "Name");
    let all = names(&h.get("/"));
    assert!(all.len() >= 2, "{all:?}");

    // One bucket a page, each page pointing at the next, until the last says nothing.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..all.len() + 1 {
        let target = match &token {
            Some(t) => format!("/?max-buckets=1&continuation-token={t}"),
            None => "/?max-buckets=1".to_owned(),
        };
        let page = h.get(&target);
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        seen.extend(names(&page));
        token = tags(&page.text(), "ContinuationToken").into_iter().next();
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen, all);

    let first = &all[0];
    let prefix = &first[..1];
    let filtered = h.get(&format!("/?prefix={prefix}"));
    assert!(names(&filtered).iter().all(|n| n.starts_with(prefix)));
    assert!(names(&filtered).contains(first));
    assert!(filtered
        .text()
        .contains(&format!("<Prefix>{prefix}</Prefix>")));

    assert!(names(&h.get("/?bucket-region=eu-west-1")).is_empty());
    assert_eq!(names(&h.get("/?bucket-region=us-east-1")), all);

    for bad in ["0", "10001", "x"] {
        let r = h.get(&format!("/?max-buckets={bad}"));
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(r.text().contains("<Code>InvalidArgument</Code>"));
    }
}

#[test]
fn response_overrides_are_applied_by_the_gateway_on_signed_gets_and_refused_anonymously() {
    let mut c = config(Strategy::RoundRobin);
    c.virtual_buckets[0].anonymous_read = true;
    c.api.auth_required = true;
    c.api.credentials.push(CredentialConfig {
        access_key: "gwkey2".into(),
        secret_key: Secret::new("gwsecret2"),
        buckets: None,
        read_only: false,
        admin: false,
    });
    let h = Harness::with_config(c);
    let put = signed(&h, Method::PUT, "/photos/doc", "gwkey2", "gwsecret2", b"{}");
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());
    h.s3().clear_requests();
    let target = "/photos/doc?response-content-type=application%2Fjson\
                  &response-content-disposition=attachment%3B%20filename%3D%22d.json%22\
                  &response-cache-control=no-store&response-expires=Thu%2C%2001%20Dec%202094%2016%3A00%3A00%20GMT";
    for method in [Method::GET, Method::HEAD] {
        let r = signed(&h, method.clone(), target, "gwkey2", "gwsecret2", b"");
        assert_eq!(r.status, StatusCode::OK, "{method} {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.header("content-disposition"),
            Some("attachment; filename=\"d.json\"")
        );
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.header("expires"), Some("Thu, 01 Dec 2094 16:00:00 GMT"));
    }
    // Set here, not by the backend: its support does not matter.
    assert!(h
        .s3()
        .requests()
        .iter()
        .all(|(_, uri)| !uri.contains("response-")));
    // Anonymous readers may not ask for them (AWS's rule), even where they may read.
    assert_eq!(h.get("/photos/doc").status, StatusCode::OK);
    let r = h.get("/photos/doc?response-content-type=text%2Fhtml");
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.text().contains("<Code>InvalidRequest</Code>"),
        "{}",
        r.text()
    );
}
