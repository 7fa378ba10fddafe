//! The Lambda adapter driven by JSON events (fixtures from the AWS docs, see each file's
//! `_source`), over the in-memory S3 and metadata store of `shared::testing`.

use std::sync::Arc;
use std::time::SystemTime;

use s3_balance_lambda::{parse_config, to_engine_request, App, MAX_BODY_BYTES};
use shared::store::{
    BackendUsage, BucketRecord, MemoryStore, MetadataStore, ObjectRecord, OperationCounts,
    StaleCopy, StoreError,
};
use shared::testing::MemoryS3;

const ONE: &str = "http://127.0.0.1:19001";
const TWO: &str = "http://127.0.0.1:19002";

/// A MemoryStore the app and the test share (the app clones its store for its two engines).
#[derive(Clone, Default)]
struct SharedStore(Arc<MemoryStore>);

macro_rules! delegate {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        impl MetadataStore for SharedStore {
            $(async fn $name(&self, $($arg: $ty),*) -> Result<$ret, StoreError> {
                self.0.$name($($arg),*).await
            })*
        }
    };
}

delegate! {
    get_object(bucket: &str, key: &str) -> Option<ObjectRecord>;
    put_object(bucket: &str, key: &str, record: &ObjectRecord) -> ();
    delete_object(bucket: &str, key: &str) -> ();
    put_object_unless_newer(bucket: &str, key: &str, record: &ObjectRecord, not_before: u64) -> bool;
    delete_object_unless_newer(bucket: &str, key: &str, not_before: u64) -> bool;
    list_objects(bucket: &str, start_after: &str, limit: usize) -> Vec<(String, ObjectRecord)>;
    create_bucket(record: &BucketRecord) -> bool;
    update_bucket(record: &BucketRecord) -> ();
    delete_bucket(name: &str) -> ();
    list_buckets() -> Vec<BucketRecord>;
    add_usage(backend: &str, bytes: i64, objects: i64) -> ();
    set_usage(usage: &BackendUsage) -> ();
    list_usage() -> Vec<BackendUsage>;
    add_operations(backend: &str, month: &str, counts: &OperationCounts) -> ();
    get_operations(backend: &str, month: &str) -> OperationCounts;
    get_document(name: &str) -> Option<String>;
    put_document(name: &str, value: &str) -> ();
    put_stale_copy(copy: &StaleCopy) -> ();
    list_stale_copies(limit: usize) -> Vec<StaleCopy>;
    stale_copies_of(bucket: &str, key: &str) -> Vec<StaleCopy>;
    delete_stale_copy(copy: &StaleCopy) -> ();
}

const CONFIG: &str = "
buckets:
  - name: one
    endpoint: http://127.0.0.1:19001
    access_key_id: ak-one
    secret_access_key: ${TEST_LAMBDA_BACKEND_SECRET}
    path_style: true
  - name: two
    endpoint: http://127.0.0.1:19002
    access_key_id: ak-two
    secret_access_key: sk-two
    path_style: true
  - name: photos
    virtual: true
  - name: public
    virtual: true
    anonymous_read: true
    cors:
      - allowed_origins: [\"https://app.example.com\"]
        allowed_methods: [GET, PUT]
balancer:
  strategy: round-robin
  rise: 1
  fall: 1
s3api:
  auth_required: true
  access_key: AKIDGATEWAY
  secret_key: gateway-secret
";

fn env(name: &str) -> Option<String> {
    (name == "TEST_LAMBDA_BACKEND_SECRET").then(|| "sk-one".to_owned())
}

fn setup() -> (App<SharedStore, MemoryS3>, SharedStore, MemoryS3) {
    let s3 = MemoryS3::new();
    s3.add_endpoint(ONE, "ak-one");
    s3.add_endpoint(TWO, "ak-two");
    s3.create_bucket(ONE, "one");
    s3.create_bucket(TWO, "two");
    let store = SharedStore::default();
    let (config, _) = parse_config(CONFIG, &env).unwrap();
    let app = App::new(config, "table", store.clone(), s3.clone());
    (app, store, s3)
}

fn fixture(name: &str) -> serde_json::Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The function URL fixture's anonymous GET without its `response-*` query (which AWS refuses
/// on anonymous requests).
fn plain_anonymous_get() -> serde_json::Value {
    let mut get = fixture("function-url-get.json");
    get["rawQueryString"] = "".into();
    get.as_object_mut().unwrap().remove("queryStringParameters");
    get
}

fn event(value: &serde_json::Value) -> lambda_http::Request {
    lambda_http::request::from_str(&value.to_string()).unwrap()
}

fn body_bytes(r: &lambda_http::Response<lambda_http::Body>) -> Vec<u8> {
    r.body().to_vec()
}

/// Signs `event` (its method, rawPath, rawQueryString, headers and body) as an S3 client
/// would for the URL the client used, and adds the SigV4 headers to it.
fn sign_event(event: &mut serde_json::Value, body: &[u8]) {
    use aws_sigv4::http_request::{
        sign, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
        UriPathNormalizationMode,
    };
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(body));
    event["headers"]["x-amz-content-sha256"] = hash.clone().into();
    let host = event["headers"]["host"].as_str().unwrap().to_owned();
    let mut url = format!("https://{host}{}", event["rawPath"].as_str().unwrap());
    let query = event["rawQueryString"].as_str().unwrap_or_default();
    if !query.is_empty() {
        url = format!("{url}?{query}");
    }
    let headers: Vec<(String, String)> = event["headers"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.starts_with("x-forwarded") && *k != "x-amzn-trace-id")
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let identity =
        aws_credential_types::Credentials::new("AKIDGATEWAY", "gateway-secret", None, None, "t")
            .into();
    let mut settings = SigningSettings::default();
    // S3's rules: the path is encoded once and never normalized.
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        event["requestContext"]["http"]["method"].as_str().unwrap(),
        url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Precomputed(hash),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    for (name, value) in instructions.headers() {
        event["headers"][name] = value.into();
    }
}

#[test]
fn http_api_event_keeps_the_raw_path_not_the_stage_prefixed_one() {
    let request = event(&fixture("http-api-v2-stage-put.json"));
    // lambda_http itself puts the stage in front of the path: not what the client signed.
    assert!(
        request.uri().path().starts_with("/prod/"),
        "{}",
        request.uri()
    );
    let (engine_request, body) = to_engine_request(request).unwrap();
    assert_eq!(
        engine_request.uri().to_string(),
        "/photos/summer%20trip/a%2Bb%3Dc.txt"
    );
    assert_eq!(engine_request.headers()["host"], "s3.example.com");
    assert_eq!(&body[..], b"hello world", "base64 body decoded");
}

#[test]
fn function_url_event_keeps_the_raw_query() {
    let (r, _) = to_engine_request(event(&fixture("function-url-get.json"))).unwrap();
    assert_eq!(
        r.uri().to_string(),
        "/public/dir/a%2Bb%20c.txt?response-content-type=text%2Fplain"
    );
    assert!(r.headers()["host"]
        .to_str()
        .unwrap()
        .ends_with(".lambda-url.us-east-1.on.aws"));
}

#[tokio::test]
async fn signed_put_through_a_staged_http_api_then_anonymous_get_through_a_function_url() {
    let (app, store, s3) = setup();
    let mut put = fixture("http-api-v2-stage-put.json");
    sign_event(&mut put, b"hello world");
    let response = app.handle_http(event(&put)).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        String::from_utf8_lossy(&body_bytes(&response))
    );
    let rec = store
        .get_object("photos", "summer trip/a+b=c.txt")
        .await
        .unwrap()
        .expect("indexed under the decoded key");
    let endpoint = if rec.backend == "one" { ONE } else { TWO };
    let stored = s3
        .object(endpoint, &rec.backend, "photos/summer trip/a+b=c.txt")
        .expect("stored under {bucket}/{key}");
    assert_eq!(&stored.data[..], b"hello world");

    // A tampered body does not verify and never reaches the backend: 400
    // XAmzContentSHA256Mismatch, as AWS answers.
    let mut bad = put.clone();
    bad["body"] = "aGVsbG8gV09STEQ=".into(); // "hello WORLD"
    let response = app.handle_http(event(&bad)).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        &s3.object(endpoint, &rec.backend, "photos/summer trip/a+b=c.txt")
            .unwrap()
            .data[..],
        b"hello world",
        "the stored object is untouched"
    );

    // Anonymous GET of a public bucket, by function URL: with a response-* query it is
    // refused as AWS refuses it (those overrides need a signed request); without, served.
    s3.put_direct(ONE, "one", "public/dir/a+b c.txt", "public bytes");
    let response = app
        .handle_http(event(&fixture("function-url-get.json")))
        .await;
    assert_eq!(response.status(), 400);
    let body = String::from_utf8(body_bytes(&response)).unwrap();
    assert!(body.contains("<Code>InvalidRequest</Code>"), "{body}");
    let response = app.handle_http(event(&plain_anonymous_get())).await;
    assert_eq!(response.status(), 200);
    assert_eq!(body_bytes(&response), b"public bytes");
    assert!(response.headers().contains_key("x-amz-request-id"));

    // Each answer is counted in the request metrics of this instance.
    let metrics = app
        .engine()
        .metrics()
        .render(&Default::default(), &[], &Default::default(), &[]);
    for line in [
        r#"s3_balance_s3_operations_total{operation="PutObject",status="success"} 1"#,
        r#"s3_balance_s3_operations_total{operation="PutObject",status="error"} 1"#,
        r#"s3_balance_s3_operations_total{operation="GetObject",status="success"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_body_over_lambdas_limit_is_refused_before_any_backend_is_touched() {
    let (app, _, s3) = setup();
    let mut put = fixture("http-api-v2-stage-put.json");
    let big = vec![b'x'; MAX_BODY_BYTES as usize + 1];
    put["headers"]["content-length"] = big.len().to_string().into();
    put["body"] = base64_encode(&big).into();
    sign_event(&mut put, &big);
    s3.clear_requests();
    let response = app.handle_http(event(&put)).await;
    assert_eq!(response.status(), 400);
    let text = String::from_utf8(body_bytes(&response)).unwrap();
    assert!(text.contains("<Code>EntityTooLarge</Code>"), "{text}");
    assert!(
        text.contains("presigned URL"),
        "says what works instead: {text}"
    );
    assert!(
        s3.requests().is_empty(),
        "no backend request: {:?}",
        s3.requests()
    );
}

#[tokio::test]
async fn a_proxied_get_too_large_for_a_lambda_response_is_redirected() {
    let (app, _, s3) = setup();
    s3.put_direct(
        ONE,
        "one",
        "public/big.bin",
        vec![7u8; MAX_BODY_BYTES as usize + 10],
    );
    s3.put_direct(ONE, "one", "public/small.bin", vec![7u8; 10]);
    let mut get = fixture("function-url-get.json");
    get["rawPath"] = "/public/big.bin".into();
    get["rawQueryString"] = "".into();
    let response = app.handle_http(event(&get)).await;
    assert_eq!(response.status(), 307);
    let location = response.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("http://127.0.0.1:19001/one/public/big.bin?")
            && location.contains("X-Amz-Signature="),
        "{location}"
    );
    // A small one is proxied as the config says.
    get["rawPath"] = "/public/small.bin".into();
    let response = app.handle_http(event(&get)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(body_bytes(&response).len(), 10);
}

#[tokio::test]
async fn scheduled_event_marks_a_down_backend_unhealthy_and_writes_stop_placing_on_it() {
    let (app, store, s3) = setup();
    let _ignored_payload = fixture("eventbridge-scheduled.json");
    s3.set_down(TWO, true);
    let summary = app.run_scheduled(10).await.unwrap();
    assert_eq!(
        summary["unhealthy"],
        serde_json::json!(["two"]),
        "{summary}"
    );
    let health = store.get_document("health").await.unwrap().unwrap();
    assert!(health.contains("\"two\""), "{health}");

    // A fresh instance (another warm Lambda) reads the snapshot and places only on "one".
    let (config, _) = parse_config(CONFIG, &env).unwrap();
    let http = App::new(config, "table", store.clone(), s3.clone());
    for i in 0..4 {
        let mut put = fixture("http-api-v2-stage-put.json");
        put["rawPath"] = format!("/photos/k{i}").into();
        sign_event(&mut put, b"hello world");
        let response = http.handle_http(event(&put)).await;
        assert_eq!(response.status(), 200);
        let rec = store
            .get_object("photos", &format!("k{i}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            rec.backend, "one",
            "round-robin skips the unhealthy backend"
        );
    }
}

#[tokio::test]
async fn config_document_in_the_table_switches_config_without_a_deploy() {
    let (app, store, s3) = setup();
    s3.put_direct(ONE, "one", "photos/x", "x");
    let mut get = fixture("function-url-get.json");
    get["rawPath"] = "/photos/x".into();
    get["rawQueryString"] = "".into();
    assert_eq!(
        app.handle_http(event(&get)).await.status(),
        403,
        "photos is private"
    );

    // The document is read with the function's environment: this test's secret is inline.
    let public = CONFIG
        .replace("${TEST_LAMBDA_BACKEND_SECRET}", "sk-one")
        .replace(
            "  - name: photos\n    virtual: true\n",
            "  - name: photos\n    virtual: true\n    anonymous_read: true\n",
        );
    store.put_document("config", &public).await.unwrap();
    app.reload_config().await;
    assert_eq!(app.handle_http(event(&get)).await.status(), 200, "switched");

    store
        .put_document("config", "buckets: [ not valid")
        .await
        .unwrap();
    app.reload_config().await;
    assert_eq!(
        app.handle_http(event(&get)).await.status(),
        200,
        "a broken document is ignored"
    );

    // The Lambda cap stays whatever the document says.
    assert_eq!(
        app.engine().config().api.max_body_bytes,
        Some(MAX_BODY_BYTES)
    );
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn a_panic_on_the_request_path_answers_500_internal_error_and_the_next_request_is_served() {
    let (app, _store, s3) = setup();
    for endpoint in [ONE, TWO] {
        for method in [http::Method::GET, http::Method::HEAD] {
            s3.add_fault(endpoint, shared::testing::Fault::Panic(method));
        }
    }
    let response = app.handle_http(event(&plain_anonymous_get())).await;
    assert_eq!(response.status(), 500);
    let body = String::from_utf8(body_bytes(&response)).unwrap();
    assert!(body.contains("<Code>InternalError</Code>"), "{body}");
    assert!(response.headers().contains_key("x-amz-request-id"));

    s3.clear_faults(ONE);
    s3.clear_faults(TWO);
    s3.put_direct(ONE, "one", "public/dir/a+b c.txt", "public bytes");
    let response = app.handle_http(event(&plain_anonymous_get())).await;
    assert_eq!(response.status(), 200);
    assert_eq!(body_bytes(&response), b"public bytes");
}

/// A browser's preflight as a function URL delivers it (no CORS configured on the URL, so
/// Lambda hands the `OPTIONS` to the function): answered from the bucket's rules. (`cargo
/// lambda watch` answers preflights itself, so the end-to-end tests cannot reach this.)
#[tokio::test]
async fn a_function_url_preflight_is_answered_from_the_bucket_cors_rules() {
    let (app, _, s3) = setup();
    let preflight = |origin: &str| {
        let mut e = plain_anonymous_get();
        e["requestContext"]["http"]["method"] = "OPTIONS".into();
        e["headers"]["origin"] = origin.into();
        e["headers"]["access-control-request-method"] = "PUT".into();
        e
    };
    let ok = app
        .handle_http(event(&preflight("https://app.example.com")))
        .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(ok.headers()["access-control-allow-methods"], "GET, PUT");
    let refused = app
        .handle_http(event(&preflight("https://evil.example.com")))
        .await;
    assert_eq!(refused.status(), 403);
    assert!(!refused
        .headers()
        .contains_key("access-control-allow-origin"));
    assert!(s3.requests().is_empty(), "no backend asked");
}
