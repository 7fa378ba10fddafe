//! `s3-balance dev`: a complete local setup in one process. Three s3s-fs backends (each a
//! directory, its own keys), one virtual bucket `dev` over them, the gateway on 127.0.0.1.
//!
//! Strategy: round-robin. A developer uploads a handful of files and should see them spread
//! over all three backends at once; consistent hashing could put three files on one backend.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::{TokioExecutor, TokioIo};
use shared::config::*;
use shared::engine::Engine;
use shared::http::HttpClient;
use shared::sigv4::sign::{presign, sign_request, PayloadHash};
use tokio::net::TcpListener;

use crate::store::AnyStore;
use native::{BackendClient, NativeBody};

/// The gateway's dev credential (documented in the README and printed at start).
pub const DEV_ACCESS_KEY: &str = "devkey";
pub const DEV_SECRET_KEY: &str = "devsecret";
/// The admin console's token in dev mode (the gateway listens on 127.0.0.1 only).
const DEV_ADMIN_TOKEN: &str = "s3-balance-dev-console";
pub const DEV_BUCKET: &str = "dev";
const BACKENDS: usize = 3;

/// One s3s-fs backend on an ephemeral port; returns its endpoint. It serves until the process
/// ends.
pub async fn start_fs_backend(
    root: &Path,
    bucket: &str,
    access_key: &str,
    secret_key: &str,
) -> std::io::Result<String> {
    // s3s-fs buckets are directories.
    std::fs::create_dir_all(root.join(bucket))?;
    let fs = s3s_fs::FileSystem::new(root).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(access_key, secret_key));
    let service = builder.build();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        while let Ok((socket, _)) = listener.accept().await {
            let _ = socket.set_nodelay(true);
            let conn = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(conn);
        }
    });
    Ok(endpoint)
}

fn backend(n: usize, endpoint: String) -> BackendConfig {
    BackendConfig {
        name: format!("backend-{n}"),
        bucket: format!("bucket-{n}"),
        endpoint,
        region: "us-east-1".into(),
        access_key: format!("backend-{n}-key"),
        secret_key: Secret::new(format!("backend-{n}-secret")),
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

/// The dev config: every value spelled out, so it doubles as an example of the model.
pub fn dev_config(backends: Vec<BackendConfig>, db: &Path, port: u16) -> Config {
    Config {
        server: ServerConfig {
            host: "127.0.0.1".into(),
            port,
            shutdown_timeout: Duration::from_secs(10),
            ..ServerConfig::default()
        },
        backend_client: Default::default(),
        virtual_buckets: vec![VirtualBucketConfig {
            name: DEV_BUCKET.into(),
            backends: backends.iter().map(|b| b.name.clone()).collect(),
            anonymous_read: false,
            cors: Vec::new(),
            // Presigned URLs (curl, browsers) are redirected to the backend; SDK traffic is proxied.
            reads: DataPathMode::Auto,
            writes: DataPathMode::Auto,
            key_layout: KeyLayout::BucketPrefixed,
        }],
        backends,
        balancer: BalancerConfig {
            strategy: Strategy::RoundRobin,
            health_check_period: Duration::from_secs(30),
            update_stats_period: Duration::from_secs(60),
            retry_attempts: 3,
            retry_delay: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            probe_timeout: Duration::from_secs(5),
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
            auth_required: true,
            credentials: vec![CredentialConfig {
                access_key: DEV_ACCESS_KEY.into(),
                secret_key: Secret::new(DEV_SECRET_KEY),
                buckets: None,
                read_only: false,
                admin: true,
            }],
            virtual_host: false,
            base_domains: Vec::new(),
            allow_create_bucket: true,
            redirect_status: 307,
            presign_expiry: Duration::from_secs(15 * 60),
            max_body_bytes: None,
            upload_id_secret: Secret::new("dev-mode-upload-id-secret"),
        },
        admin: shared::config::AdminConfig {
            token: Some(Secret::new(DEV_ADMIN_TOKEN)),
            ..Default::default()
        },
        metadata: MetadataBackend::Sqlite {
            path: db.to_string_lossy().into_owned(),
        },
        default_reads: DataPathMode::Auto,
        default_writes: DataPathMode::Auto,
        default_key_layout: KeyLayout::BucketPrefixed,
    }
}

/// The gateway itself as a "backend", so the backend signer can sign for the gateway's key.
pub fn gateway_as_backend(endpoint: &str) -> BackendConfig {
    BackendConfig {
        name: "gateway".into(),
        bucket: DEV_BUCKET.into(),
        endpoint: endpoint.into(),
        access_key: DEV_ACCESS_KEY.into(),
        secret_key: Secret::new(DEV_SECRET_KEY),
        ..backend(0, String::new())
    }
}

/// PUTs `body` at `uri` through the gateway, signed with the dev key.
async fn put_sample(
    client: &BackendClient,
    gateway: &BackendConfig,
    uri: &str,
    body: &'static [u8],
) -> Result<(), String> {
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body));
    let request = http::Request::put(uri)
        .header("content-type", "text/plain")
        .body(NativeBody::Full(body.into()))
        .map_err(|e| e.to_string())?;
    let (mut parts, body) = request.into_parts();
    sign_request(
        &mut parts,
        gateway,
        &PayloadHash::Sha256(hash),
        SystemTime::now(),
    )
    .map_err(|e| e.to_string())?;
    let response = client
        .send(http::Request::from_parts(parts, body))
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", response.status()))
    }
}

pub async fn run(data: PathBuf, port: u16) -> ExitCode {
    match start(data, port).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dev: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn start(data: PathBuf, port: u16) -> Result<(), String> {
    // The port first: when it is taken, nothing else starts and the message says what to do.
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => format!(
                "port {port} on 127.0.0.1 is already in use; choose another with --port (e.g. --port {})",
                port.saturating_add(1)
            ),
            _ => format!("listening on 127.0.0.1:{port}: {e}"),
        })?;
    std::fs::create_dir_all(&data).map_err(|e| format!("creating {}: {e}", data.display()))?;
    // Printed and logged in full, so the user finds the files whatever directory they ran in.
    let data = std::fs::canonicalize(&data).unwrap_or(data);
    let mut backends = Vec::new();
    for n in 1..=BACKENDS {
        let mut b = backend(n, String::new());
        let root = data.join(format!("backend-{n}"));
        b.endpoint = start_fs_backend(&root, &b.bucket, &b.access_key, b.secret_key.expose())
            .await
            .map_err(|e| format!("starting backend {n} in {}: {e}", root.display()))?;
        tracing::info!(backend = %b.name, endpoint = %b.endpoint, dir = %root.display(), "dev backend started");
        backends.push(b);
    }
    let endpoint = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let config = dev_config(backends, &data.join("s3-balance.db"), port);
    let store = AnyStore::open(&config.metadata)?;
    let client = BackendClient::new().map_err(|e| e.to_string())?;
    let engine = Arc::new(Engine::new(Arc::new(config), store, client.clone()));
    let health = crate::tasks::start(engine.clone(), None);
    let server = tokio::spawn(crate::http_server::serve(engine, listener));

    let gateway = gateway_as_backend(&endpoint);
    let sample = format!("{endpoint}/{DEV_BUCKET}/hello.txt");
    if let Err(e) = put_sample(
        &client,
        &gateway,
        &sample,
        b"Hello from s3-balance dev mode!\n",
    )
    .await
    {
        tracing::warn!(error = %e, "could not store the sample object hello.txt");
    }
    let presigned = sample
        .parse::<http::Uri>()
        .map_err(|e| e.to_string())
        .and_then(|uri| {
            presign(
                &http::Method::GET,
                &uri,
                &gateway,
                Duration::from_secs(24 * 3600),
                SystemTime::now(),
            )
            .map_err(|e| e.to_string())
        })
        .unwrap_or_else(|e| format!("<presigning failed: {e}>"));
    let env = format!("export AWS_ACCESS_KEY_ID={DEV_ACCESS_KEY} AWS_SECRET_ACCESS_KEY={DEV_SECRET_KEY} AWS_REGION=us-east-1");
    println!(
        "\ns3-balance dev mode\n  endpoint:   {endpoint}\n  bucket:     {DEV_BUCKET} (over 3 local backends, data in {data})\n  \
         access key: {DEV_ACCESS_KEY}\n  secret key: {DEV_SECRET_KEY}\n  console:    {endpoint}/_admin/ (token: {DEV_ADMIN_TOKEN})\n\nTry:\n  \
         {env}\n  \
         aws --endpoint-url {endpoint} s3 cp README.md s3://{DEV_BUCKET}/\n  \
         aws --endpoint-url {endpoint} s3 ls s3://{DEV_BUCKET}/\n  \
         curl -L \"{presigned}\"\n",
        data = data.display()
    );
    tokio::select! {
        served = server => served.map_err(|e| e.to_string())?.map_err(|e| e.to_string()),
        () = health => unreachable!("the health loop never ends"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dev backend answers a request signed with its key, and refuses a wrong key.
    /// Signed here with aws-sigv4 directly, not with the shared signer (written elsewhere).
    #[tokio::test]
    async fn dev_backend_answers_signed_requests() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = start_fs_backend(dir.path(), "bucket-1", "k1", "s1")
            .await
            .unwrap();
        assert!(dir.path().join("bucket-1").is_dir());
        let client = BackendClient::new().unwrap();

        let send = |secret: &'static str,
                    method: &'static str,
                    path: &'static str,
                    body: &'static [u8]| {
            let client = client.clone();
            let endpoint = endpoint.clone();
            async move {
                let uri = format!("{endpoint}{path}");
                let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body));
                let mut req = http::Request::builder()
                    .method(method)
                    .uri(&uri)
                    .header("x-amz-content-sha256", &hash)
                    .header("content-length", body.len())
                    .body(NativeBody::Full(body.into()))
                    .unwrap();
                sign_with_aws_sigv4(&mut req, "k1", secret, &hash);
                let resp = client.send(req).await.unwrap();
                let status = resp.status().as_u16();
                let body = shared::body::Body::collect(resp.into_body(), 1 << 20)
                    .await
                    .unwrap();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        assert_eq!(
            send("s1", "PUT", "/bucket-1/hello.txt", b"hi there")
                .await
                .0,
            200
        );
        let (status, body) = send("s1", "GET", "/bucket-1?list-type=2&max-keys=1", b"").await;
        assert_eq!(status, 200);
        assert!(body.contains("<Key>hello.txt</Key>"), "{body}");
        assert_eq!(
            send("s1", "GET", "/bucket-1/hello.txt", b"").await,
            (200, "hi there".to_owned())
        );
        assert_eq!(
            send("wrong", "GET", "/bucket-1/hello.txt", b"").await.0,
            403
        );
    }

    fn sign_with_aws_sigv4(req: &mut http::Request<NativeBody>, ak: &str, sk: &str, hash: &str) {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        let identity = aws_credential_types::Credentials::new(ak, sk, None, None, "test").into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("s3")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()));
        let signable = SignableRequest::new(
            req.method().as_str(),
            req.uri().to_string(),
            headers,
            SignableBody::Precomputed(hash.into()),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        instructions.apply_to_request_http1x(req);
    }

    /// The whole dev setup in-process: a PUT through the gateway lands on a backend's disk,
    /// GET and HEAD read it back, a presigned GET is redirected to the backend.
    #[tokio::test]
    async fn gateway_over_dev_backends_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut backends = Vec::new();
        for n in 1..=BACKENDS {
            let mut b = backend(n, String::new());
            b.endpoint = start_fs_backend(
                &dir.path().join(format!("backend-{n}")),
                &b.bucket,
                &b.access_key,
                b.secret_key.expose(),
            )
            .await
            .unwrap();
            backends.push(b);
        }
        let config = dev_config(backends, &dir.path().join("s3-balance.db"), 0);
        let engine = Arc::new(Engine::new(
            Arc::new(config.clone()),
            AnyStore::open(&config.metadata).unwrap(),
            BackendClient::new().unwrap(),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(crate::http_server::serve_until(
            engine,
            listener,
            std::future::pending(),
        ));

        let client = BackendClient::new().unwrap();
        let gateway = gateway_as_backend(&endpoint);
        let uri = format!("{endpoint}/{DEV_BUCKET}/dir/hello.txt");
        put_sample(&client, &gateway, &uri, b"hello, world")
            .await
            .unwrap();
        let on_disk: Vec<_> = (1..=BACKENDS)
            .map(|n| {
                dir.path()
                    .join(format!("backend-{n}/bucket-{n}/{DEV_BUCKET}/dir/hello.txt"))
            })
            .filter(|p| p.is_file())
            .collect();
        assert_eq!(
            on_disk.len(),
            1,
            "exactly one backend holds the object, under the bucket prefix"
        );
        assert_eq!(std::fs::read(&on_disk[0]).unwrap(), b"hello, world");

        for method in [http::Method::GET, http::Method::HEAD] {
            let (mut parts, body) = http::Request::builder()
                .method(method.clone())
                .uri(&uri)
                .body(NativeBody::Empty)
                .unwrap()
                .into_parts();
            sign_request(
                &mut parts,
                &gateway,
                &PayloadHash::Unsigned,
                SystemTime::now(),
            )
            .unwrap();
            let resp = client
                .send(http::Request::from_parts(parts, body))
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{method}");
            assert_eq!(resp.headers()["content-length"], "12", "{method}");
            assert!(resp.headers().contains_key("x-amz-request-id"));
            let body = shared::body::Body::collect(resp.into_body(), 1024)
                .await
                .unwrap();
            let expected: &[u8] = if method == http::Method::GET {
                b"hello, world"
            } else {
                b""
            };
            assert_eq!(body.as_ref(), expected, "{method}");
        }

        let presigned = presign(
            &http::Method::GET,
            &uri.parse().unwrap(),
            &gateway,
            Duration::from_secs(600),
            SystemTime::now(),
        )
        .unwrap();
        let resp = client
            .send(
                http::Request::get(presigned)
                    .body(NativeBody::Empty)
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            307,
            "a presigned GET is redirected (reads: auto)"
        );
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        let resp = client
            .send(
                http::Request::get(location)
                    .body(NativeBody::Empty)
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            200,
            "the backend accepts the gateway's presigned URL"
        );
        assert_eq!(
            shared::body::Body::collect(resp.into_body(), 1024)
                .await
                .unwrap()
                .as_ref(),
            b"hello, world"
        );
    }
}
