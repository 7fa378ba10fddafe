//! [`BackendClient`]: the engine's [`HttpClient`] for backend requests, HTTP/1.1 over
//! keep-alive connections ([`crate::pool`]). The engine's `http::Uri` goes out as given, never
//! re-parsed as a URL: the path and query reach the backend byte for byte, as they were signed.
//!
//! Every phase of a request has a bound, so a hung backend fails requests within seconds
//! instead of holding them ([`ClientSettings`]): connect (TCP and TLS), the request's bytes
//! being taken (a backend that stops reading), the response headers after the request is sent
//! (time to first byte), and each pause in the response body. Failures come back as a
//! [`TransportError`] whose kind names the phase.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::Uri;
use http_body::{Frame, SizeHint};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use shared::body::Body as _;
use shared::config::BackendClientConfig;
use shared::http::{HttpClient, RequestTimeout, TransportError, TransportErrorKind};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::body::{BodyError, BoxError, NativeBody};
use crate::pool::{Pool, SendError};
use crate::stall::StallIo;

/// How the client waits on backends, and how it pools connections.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// TCP connect and TLS handshake.
    pub connect_timeout: Duration,
    /// From the request sent (its body included) to the response headers.
    pub first_byte_timeout: Duration,
    /// The longest pause in a body: the backend taking no more request bytes, or sending no
    /// more response bytes while they are being read.
    pub stall_timeout: Duration,
    /// How long an unused pooled connection is kept.
    pub pool_idle_timeout: Duration,
    pub pools: PoolScope,
}

/// Where pooled connections live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolScope {
    /// One pool per OS thread: for one current-thread runtime per core (the server), where a
    /// shared pool would hand a thread connections driven by another thread's runtime.
    PerThread,
    /// One pool for the process: for a multi-thread runtime (the Lambda functions).
    Shared,
}

impl ClientSettings {
    /// The config's `backend_client` timeouts.
    pub fn new(config: &BackendClientConfig, pools: PoolScope) -> Self {
        Self {
            connect_timeout: config.connect_timeout,
            first_byte_timeout: config.first_byte_timeout,
            stall_timeout: config.stall_timeout,
            pool_idle_timeout: Duration::from_secs(60),
            pools,
        }
    }

    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }
}

impl Default for ClientSettings {
    /// The config's defaults, one pool per thread.
    fn default() -> Self {
        Self::new(&BackendClientConfig::default(), PoolScope::PerThread)
    }
}

/// What every pool is built from. The connector holds the TLS config (parsed roots) once for
/// the process; cloning it is a few reference counts.
struct Shared {
    connector: Connector,
    settings: ClientSettings,
    /// The one pool of [`PoolScope::Shared`].
    pool: Option<Arc<Pool>>,
}

impl Shared {
    fn pool(&self) -> Arc<Pool> {
        Pool::new(self.connector.clone(), self.settings.pool_idle_timeout)
    }
}

thread_local! {
    /// This thread's connection pools, one per live [`BackendClient`] (normally exactly one).
    ///
    /// Why per thread: hyper drives each connection in a task spawned on the runtime that
    /// opened it. With one current-thread runtime per core, a pool shared across threads would
    /// hand thread B a connection whose task runs on thread A, so every read and write would
    /// wake the other thread. A pool per thread keeps each connection on the thread that uses
    /// it. The `Weak` ties a pool to its client: a dropped client's pool is pruned here.
    static POOLS: RefCell<Vec<(Weak<Shared>, Arc<Pool>)>> = const { RefCell::new(Vec::new()) };
}

/// Sends backend requests over keep-alive connections (pooled as [`PoolScope`] says).
/// Cheap to clone, `Send + Sync`: clones share settings and pools.
#[derive(Clone)]
pub struct BackendClient {
    shared: Arc<Shared>,
}

impl BackendClient {
    /// A client with the default settings ([`ClientSettings::default`]).
    pub fn new() -> Result<Self, rustls::Error> {
        Self::with_settings(ClientSettings::default())
    }

    pub fn with_settings(settings: ClientSettings) -> Result<Self, rustls::Error> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        // The URI's scheme picks plain TCP or TLS; the TLS wrapper checks it, not this one.
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            // ring: the process-wide default provider would be ambiguous (the AWS SDK in the
            // tree enables aws-lc-rs too).
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            // HTTP/1.1 only (ALPN offers nothing else), as S3's own endpoints and nginx's
            // `proxy_pass` speak it: the pool keeps HTTP/1.1 connections.
            .enable_http1()
            .wrap_connector(http);
        let connector = Connector {
            https,
            connect_timeout: settings.connect_timeout,
            write_stall: settings.stall_timeout,
        };
        // No redirect following and no decompression: hyper's client does neither. The engine
        // answers redirects itself, and Content-Encoding belongs to the object.
        let mut shared = Shared {
            connector,
            settings,
            pool: None,
        };
        if shared.settings.pools == PoolScope::Shared {
            shared.pool = Some(shared.pool());
        }
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.shared.settings
    }

    /// The pool to send on: the shared one, or this thread's, created on first use.
    fn pool(&self) -> Arc<Pool> {
        if let Some(pool) = &self.shared.pool {
            return pool.clone();
        }
        POOLS.with_borrow_mut(|pools| {
            let ours = Arc::as_ptr(&self.shared);
            // A live `Weak` keeps its allocation, so a matching pointer is this very client.
            if let Some((_, pool)) = pools.iter().find(|(s, _)| s.as_ptr() == ours) {
                return pool.clone();
            }
            pools.retain(|(s, _)| s.strong_count() > 0);
            let pool = self.shared.pool();
            pools.push((Arc::downgrade(&self.shared), pool.clone()));
            pool
        })
    }

    /// Waits for the response headers: within the request's [`RequestTimeout`] from the start
    /// (connect included), and within the first-byte timeout from the moment the request's
    /// body was sent whole. While the body is being sent, the connection's write-stall check
    /// bounds it instead, so a large upload takes as long as it needs.
    async fn response_head(
        &self,
        response: impl Future<Output = Result<http::Response<hyper::body::Incoming>, SendError>>,
        mut body_sent: Option<oneshot::Receiver<()>>,
        limit: Option<Duration>,
        host: &str,
    ) -> Result<http::Response<hyper::body::Incoming>, TransportError> {
        let started = Instant::now();
        let first_byte = self.shared.settings.first_byte_timeout;
        let mut sent_at = body_sent.is_none().then_some(started);
        let limit_at = limit.map(|t| started + t);
        let mut response = std::pin::pin!(response);
        loop {
            let first_byte_at = sent_at.map(|t| t + first_byte);
            let deadline = limit_at.into_iter().chain(first_byte_at).min();
            let waiting_for_body = body_sent.is_some();
            tokio::select! {
                biased;
                r = &mut response => return r.map_err(|e| transport_error(host, &e)),
                // Sent, or dropped by a connection that gave up on it: either way it is over.
                () = async {
                    if let Some(rx) = body_sent.as_mut() {
                        let _ = rx.await;
                    }
                }, if waiting_for_body => {
                    body_sent = None;
                    sent_at = Some(Instant::now());
                }
                () = sleep_until(deadline) => {
                    let message = if first_byte_at == deadline {
                        format!("{host}: no response headers within {} ms of sending the request", first_byte.as_millis())
                    } else {
                        format!("{host}: no response within {} ms", limit.unwrap_or_default().as_millis())
                    };
                    return Err(TransportError::new(TransportErrorKind::Timeout, message));
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A connect that took longer than the connect timeout (TCP and TLS together).
#[derive(Debug, thiserror::Error)]
#[error("connect timed out after {} ms", .0.as_millis())]
struct ConnectTimedOut(Duration);

fn transport_error(host: &str, e: &SendError) -> TransportError {
    // The innermost source names the real cause (refused, reset, TLS ...). hyper's messages
    // never carry the URL, which could hold a presigned signature; ours names only the host.
    let (mut cause, connect): (&(dyn std::error::Error + 'static), bool) = match e {
        SendError::Connect(e) => (e.as_ref(), true),
        SendError::Request(e) => (e, false),
    };
    let mut kind = None;
    loop {
        if kind.is_none() {
            kind = if cause.is::<BodyError>() {
                Some(TransportErrorKind::RequestBody)
            } else if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                if io
                    .get_ref()
                    .is_some_and(|inner| inner.is::<crate::stall::Stalled>())
                {
                    Some(TransportErrorKind::Stall)
                } else if io.kind() == std::io::ErrorKind::TimedOut {
                    Some(TransportErrorKind::Timeout)
                } else {
                    None
                }
            } else {
                None
            };
        }
        match cause.source() {
            Some(source) => cause = source,
            None => break,
        }
    }
    let kind = if connect {
        TransportErrorKind::Connect
    } else {
        kind.unwrap_or(TransportErrorKind::Other)
    };
    TransportError::new(kind, format!("{host}: {cause}"))
}

impl HttpClient for BackendClient {
    type Body = NativeBody;

    async fn send(
        &self,
        mut request: http::Request<NativeBody>,
    ) -> Result<http::Response<NativeBody>, TransportError> {
        let host = request
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        if let NativeBody::Failed(e) = request.body() {
            // A refused body (bad chunk signature or checksum) goes nowhere.
            return Err(TransportError::new(
                TransportErrorKind::RequestBody,
                format!("request body refused before sending to {host}: {}", e.code),
            ));
        }
        let limit = request.extensions().get::<RequestTimeout>().map(|t| t.0);
        // S3 requires Content-Length on PUT, also for an empty body (hyper sends none for a
        // body that is already at its end); GET, HEAD and DELETE go without one.
        let len = request.body().exact_len();
        if let (Some(len), false) = (len, request.headers().contains_key(CONTENT_LENGTH)) {
            if len > 0
                || !matches!(
                    *request.method(),
                    http::Method::GET | http::Method::HEAD | http::Method::DELETE
                )
            {
                request
                    .headers_mut()
                    .insert(CONTENT_LENGTH, shared::http::content_length_value(len));
            }
        }
        let (parts, body) = request.into_parts();
        let (body, body_sent) = SendBody::new(body);
        let pool = self.pool();
        let response = pool.send(http::Request::from_parts(parts, body));
        let response = self
            .response_head(response, body_sent, limit, &host)
            .await?;
        let stall = self.shared.settings.stall_timeout;
        Ok(response.map(|body| NativeBody::backend_response(body, Some(stall), &host)))
    }
}

/// The request body as hyper sends it, telling [`BackendClient::response_head`] when it has
/// been handed over whole (the first-byte clock starts then).
pub(crate) struct SendBody {
    inner: NativeBody,
    remaining: Option<u64>,
    sent: Option<oneshot::Sender<()>>,
}

impl SendBody {
    /// The body, and the signal of its end (`None`: there is nothing to send).
    fn new(inner: NativeBody) -> (Self, Option<oneshot::Receiver<()>>) {
        let (tx, rx) = match inner {
            NativeBody::Empty => (None, None),
            _ => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
        };
        let remaining = inner.exact_len();
        (
            Self {
                inner,
                remaining,
                sent: tx,
            },
            rx,
        )
    }

    fn signal(&mut self) {
        if let Some(tx) = self.sent.take() {
            let _ = tx.send(());
        }
    }
}

impl http_body::Body for SendBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(left), Some(data)) = (&mut this.remaining, frame.data_ref()) {
                    *left = left.saturating_sub(data.len() as u64);
                }
                // hyper stops polling a body of known length once it has all of it.
                if this.remaining == Some(0) || http_body::Body::is_end_stream(&this.inner) {
                    this.signal();
                }
            }
            Poll::Ready(_) => this.signal(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}

/// The HTTPS-or-HTTP connector with a deadline over TCP connect and TLS handshake together,
/// handing out connections whose writes are watched for stalls.
#[derive(Clone)]
pub(crate) struct Connector {
    https: HttpsConnector<HttpConnector>,
    connect_timeout: Duration,
    write_stall: Duration,
}

type Connecting = Pin<
    Box<
        dyn Future<Output = Result<StallIo<MaybeHttpsStream<TokioIo<TcpStream>>>, BoxError>> + Send,
    >,
>;

impl tower_service::Service<Uri> for Connector {
    type Response = StallIo<MaybeHttpsStream<TokioIo<TcpStream>>>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.https.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.https.call(uri);
        let (timeout, stall) = (self.connect_timeout, self.write_stall);
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(Ok(io)) => Ok(StallIo::new(io, Some(stall))),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    ConnectTimedOut(timeout),
                )) as BoxError),
            }
        })
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use std::sync::{Arc, Mutex};

    /// What the test server saw of one request.
    #[derive(Debug, Clone, Default)]
    struct Seen {
        method: String,
        uri: String,
        content_length: Option<String>,
        chunked: bool,
        body: Vec<u8>,
        /// The client's port: which connection carried the request.
        peer_port: u16,
    }

    /// A tiny hyper server: records requests; `/slow` answers after 2 s; `/redirect` is a 307.
    async fn server() -> (String, Arc<Mutex<Vec<Seen>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let (socket, peer) = listener.accept().await.unwrap();
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes().to_vec();
                            let h = |n: &str| {
                                parts.headers.get(n).map(|v| v.to_str().unwrap().to_owned())
                            };
                            log.lock().unwrap().push(Seen {
                                method: parts.method.to_string(),
                                uri: parts.uri.to_string(),
                                content_length: h("content-length"),
                                chunked: h("transfer-encoding").is_some(),
                                body,
                                peer_port: peer.port(),
                            });
                            let mut resp = http::Response::new(http_body_util::Full::new(
                                Bytes::from_static(b"hello"),
                            ));
                            if parts.uri.path() == "/slow" {
                                tokio::time::sleep(Duration::from_secs(2)).await;
                            }
                            if parts.uri.path() == "/redirect" {
                                *resp.status_mut() = http::StatusCode::TEMPORARY_REDIRECT;
                                resp.headers_mut().insert(
                                    "location",
                                    "http://127.0.0.1:1/elsewhere".parse().unwrap(),
                                );
                            }
                            resp.headers_mut()
                                .insert("content-encoding", "gzip".parse().unwrap());
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(socket);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        (base, seen)
    }

    fn request(method: &str, uri: &str, body: NativeBody) -> http::Request<NativeBody> {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(body)
            .unwrap()
    }

    async fn read(resp: http::Response<NativeBody>) -> Bytes {
        http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes()
    }

    /// The body of a GET of `uri` that must succeed.
    async fn get(client: &BackendClient, uri: &str) -> Bytes {
        let resp = client
            .send(request("GET", uri, NativeBody::Empty))
            .await
            .unwrap();
        read(resp).await
    }

    #[tokio::test]
    async fn streamed_put_sends_content_length_not_chunked() {
        let (base, seen) = server().await;
        let parts: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"abc")),
            Ok(Bytes::from_static(b"def")),
        ];
        let body = NativeBody::from_stream(futures_util::stream::iter(parts), Some(6));
        let resp = BackendClient::new()
            .unwrap()
            .send(request(
                "PUT",
                &format!("{base}/b/k%20x?partNumber=1"),
                body,
            ))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        // No automatic decompression: the bytes arrive as the backend sent them.
        assert_eq!(resp.headers()["content-encoding"], "gzip");
        assert_eq!(read(resp).await, Bytes::from_static(b"hello"));
        let s = seen.lock().unwrap()[0].clone();
        assert_eq!(
            (s.method.as_str(), s.uri.as_str()),
            ("PUT", "/b/k%20x?partNumber=1")
        );
        assert_eq!(s.content_length.as_deref(), Some("6"));
        assert!(!s.chunked);
        assert_eq!(s.body, b"abcdef");
    }

    #[tokio::test]
    async fn empty_put_sends_zero_length_and_get_sends_none() {
        let (base, seen) = server().await;
        let client = BackendClient::new().unwrap();
        client
            .send(request("PUT", &format!("{base}/b"), NativeBody::Empty))
            .await
            .unwrap();
        client
            .send(request("GET", &format!("{base}/b"), NativeBody::Empty))
            .await
            .unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].content_length.as_deref(), Some("0"));
        assert_eq!(seen[1].content_length, None);
    }

    #[tokio::test]
    async fn response_reports_its_length_and_redirects_are_not_followed() {
        let (base, seen) = server().await;
        let resp = BackendClient::new()
            .unwrap()
            .send(request(
                "GET",
                &format!("{base}/redirect"),
                NativeBody::Empty,
            ))
            .await
            .unwrap();
        assert_eq!(resp.status(), 307);
        assert_eq!(shared::body::Body::exact_len(resp.body()), Some(5));
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn timeout_and_refused_connections_are_classified() {
        let (base, _) = server().await;
        let client = BackendClient::new().unwrap();
        let mut req = request("GET", &format!("{base}/slow"), NativeBody::Empty);
        req.extensions_mut()
            .insert(RequestTimeout(Duration::from_millis(200)));
        let started = std::time::Instant::now();
        let err = client.send(req).await.unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Timeout);
        assert!(started.elapsed() < Duration::from_secs(1));

        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = client
            .send(request(
                "GET",
                &format!("http://127.0.0.1:{port}/b/k?X-Amz-Signature=secret"),
                NativeBody::Empty,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Connect, "{err}");
        // The host and the innermost cause, never the URL (a presigned query signs it).
        assert!(
            err.message.starts_with(&format!("127.0.0.1:{port}: ")),
            "{err}"
        );
        assert!(err.message.to_lowercase().contains("refused"), "{err}");
        assert!(
            !err.message.contains("secret") && !err.message.contains("/b/k"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn timeout_does_not_cut_a_slow_body() {
        // Headers come at once; the body streams longer than the timeout.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(400)).await;
            s.write_all(b"cd").await.unwrap();
        });
        let mut req = request("GET", &format!("http://{addr}/"), NativeBody::Empty);
        req.extensions_mut()
            .insert(RequestTimeout(Duration::from_millis(200)));
        let resp = BackendClient::new().unwrap().send(req).await.unwrap();
        assert_eq!(read(resp).await, Bytes::from_static(b"abcd"));
    }

    #[tokio::test]
    async fn the_path_and_query_reach_the_backend_byte_for_byte() {
        let (base, seen) = server().await;
        let client = BackendClient::new().unwrap();
        // Escapes a URL parser would decode or re-encode, and dot segments it would resolve.
        let targets = [
            "/b/a%2Fb+c%20d/%2B?prefix=a%20b+c&x=%2F",
            "/b/a%2E%2E/x",
            "/b/./k/../x?list-type=2",
            "/b/~'!*()$,;=:@k",
        ];
        for target in targets {
            let resp = client
                .send(request(
                    "GET",
                    &format!("{base}{target}"),
                    NativeBody::Empty,
                ))
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        }
        let seen: Vec<String> = seen.lock().unwrap().iter().map(|s| s.uri.clone()).collect();
        assert_eq!(seen, targets);
    }

    #[test]
    fn threads_with_their_own_runtimes_share_a_client_and_keep_their_own_pools() {
        // The backend runs on a runtime of its own; two OS threads, each with a current-thread
        // runtime (as thread-per-core runs), send through clones of one client at once.
        let backend = tokio::runtime::Runtime::new().unwrap();
        let (base, seen) = backend.block_on(server());
        let client = BackendClient::new().unwrap();
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let (client, base, barrier) = (client.clone(), base.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    barrier.wait();
                    rt.block_on(async {
                        for i in 0..3 {
                            let uri = format!("{base}/t{t}/{i}");
                            assert_eq!(get(&client, &uri).await, Bytes::from_static(b"hello"));
                            // Lets the connection go back to this thread's pool.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    });
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Each thread reused one keep-alive connection of its own.
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 6);
        let ports = |t: &str| {
            let mut p: Vec<u16> = seen
                .iter()
                .filter(|s| s.uri.starts_with(t))
                .map(|s| s.peer_port)
                .collect();
            p.dedup();
            p
        };
        let (p0, p1) = (ports("/t0/"), ports("/t1/"));
        assert_eq!((p0.len(), p1.len()), (1, 1), "{p0:?} {p1:?}");
        assert_ne!(p0, p1);
    }

    #[tokio::test]
    async fn concurrent_requests_open_connections_that_later_requests_reuse() {
        let (base, seen) = server().await;
        let client = BackendClient::new().unwrap();
        let uri: Uri = format!("{base}/c").parse().unwrap();
        let burst = (0..8).map(|i| {
            let client = client.clone();
            let uri = format!("{base}/burst/{i}");
            async move { get(&client, &uri).await }
        });
        for body in futures_util::future::join_all(burst).await {
            assert_eq!(body, Bytes::from_static(b"hello"));
        }
        let (_, opened) = client.pool().listed_and_open(&uri);
        assert!((1..=8).contains(&opened), "{opened}");
        // One at a time, the next request finds the connection of the one before.
        for i in 0..20 {
            let uri = format!("{base}/after/{i}");
            assert_eq!(get(&client, &uri).await, Bytes::from_static(b"hello"));
        }
        let seen = seen.lock().unwrap();
        let mut ports: Vec<u16> = seen.iter().map(|s| s.peer_port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), opened, "no connection opened after the burst");
        assert_eq!(client.pool().listed_and_open(&uri).1, opened);
    }

    #[tokio::test]
    async fn connections_closed_after_each_answer_do_not_pile_up() {
        // Every answer says `Connection: close`: each request opens a connection of its own.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let svc = service_fn(|_req: http::Request<hyper::body::Incoming>| async {
                        let mut r = http::Response::new(http_body_util::Full::new(
                            Bytes::from_static(b"ok"),
                        ));
                        r.headers_mut()
                            .insert("connection", http::HeaderValue::from_static("close"));
                        Ok::<_, std::convert::Infallible>(r)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), svc)
                        .await;
                });
            }
        });
        let client = BackendClient::new().unwrap();
        for i in 0..50 {
            let uri = format!("{base}/k{i}");
            assert_eq!(get(&client, &uri).await, Bytes::from_static(b"ok"));
            tokio::task::yield_now().await;
        }
        let uri: Uri = base.parse().unwrap();
        let (listed, _) = client.pool().listed_and_open(&uri);
        assert!(listed <= 3, "{listed} connections listed");
    }

    /// Answers one request per connection, then closes it without saying so.
    async fn one_request_per_connection() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                });
            }
        });
        (base, accepted)
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_is_not_reused() {
        let (base, accepted) = one_request_per_connection().await;
        let client = BackendClient::new().unwrap();
        for i in 0..5 {
            let uri = format!("{base}/k{i}");
            assert_eq!(get(&client, &uri).await, Bytes::from_static(b"ok"));
            // The close reaches the client's connection task.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 5);
        let uri: Uri = base.parse().unwrap();
        assert_eq!(client.pool().listed_and_open(&uri).1, 0);
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let (base, _) = server().await;
        let client = BackendClient::with_settings(
            ClientSettings::default().pool_idle_timeout(Duration::from_millis(200)),
        )
        .unwrap();
        assert_eq!(
            get(&client, &format!("{base}/k")).await,
            Bytes::from_static(b"hello")
        );
        let uri: Uri = base.parse().unwrap();
        assert_eq!(client.pool().listed_and_open(&uri).1, 1);
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(
            client.pool().listed_and_open(&uri),
            (0, 0),
            "closed by the pool, unused"
        );
    }

    #[tokio::test]
    async fn a_request_without_host_gets_one_from_its_uri() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
        });
        let resp = BackendClient::new()
            .unwrap()
            .send(request(
                "GET",
                &format!("http://{addr}/b/k?x=1"),
                NativeBody::Empty,
            ))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let head = rx.await.unwrap().to_lowercase();
        assert!(head.starts_with("get /b/k?x=1 http/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("\r\nhost: {addr}\r\n")), "{head}");
    }

    fn quick(first_byte_ms: u64, stall_ms: u64) -> BackendClient {
        BackendClient::with_settings(ClientSettings {
            connect_timeout: Duration::from_millis(300),
            first_byte_timeout: Duration::from_millis(first_byte_ms),
            stall_timeout: Duration::from_millis(stall_ms),
            ..ClientSettings::default()
        })
        .unwrap()
    }

    /// A backend that reads what it is sent (if `read`) and otherwise does nothing at all.
    async fn silent_backend(read: bool) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                if read {
                    tokio::spawn(async move {
                        use tokio::io::AsyncReadExt;
                        let mut buf = vec![0u8; 1 << 16];
                        while s.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                        // Keeps the socket open, answers nothing.
                        std::future::pending::<()>().await;
                    });
                } else {
                    held.push(s);
                }
            }
        });
        addr
    }

    fn zeros(total: usize) -> NativeBody {
        let chunk = Bytes::from(vec![0u8; 1 << 16]);
        let n = total / chunk.len();
        let parts =
            futures_util::stream::iter((0..n).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
        NativeBody::from_stream(parts, Some((n << 16) as u64))
    }

    #[tokio::test]
    async fn no_answer_after_the_request_is_a_first_byte_timeout() {
        let addr = silent_backend(true).await;
        let started = std::time::Instant::now();
        let err = quick(300, 5_000)
            .send(request(
                "PUT",
                &format!("http://{addr}/b/k"),
                NativeBody::from_bytes(Bytes::from_static(b"data")),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Timeout, "{err}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
        let err = quick(300, 5_000)
            .send(request(
                "GET",
                &format!("http://{addr}/b/k"),
                NativeBody::Empty,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Timeout, "{err}");
    }

    #[tokio::test]
    async fn a_slow_upload_is_not_cut_by_the_first_byte_timeout() {
        // Five chunks 150 ms apart (750 ms) under a 300 ms first-byte timeout: the clock
        // starts when the body is sent.
        let (base, seen) = server().await;
        let parts = futures_util::stream::unfold(0, |i| async move {
            if i == 5 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"ab")), i + 1))
        });
        let body = NativeBody::from_stream(parts, Some(10));
        let resp = quick(300, 5_000)
            .send(request("PUT", &format!("{base}/b/slow-upload"), body))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(seen.lock().unwrap()[0].body, b"ababababab");
    }

    #[tokio::test]
    async fn a_backend_that_stops_reading_is_a_stall() {
        let addr = silent_backend(false).await;
        let started = std::time::Instant::now();
        // More than the socket buffers of both ends hold, so writes must wait.
        let err = quick(5_000, 300)
            .send(request(
                "PUT",
                &format!("http://{addr}/b/k"),
                zeros(256 << 20),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Stall, "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_response_body_that_stops_is_a_stall() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab")
                .await
                .unwrap();
            std::future::pending::<()>().await;
        });
        let resp = quick(5_000, 300)
            .send(request(
                "GET",
                &format!("http://{addr}/b/k"),
                NativeBody::Empty,
            ))
            .await
            .unwrap();
        let mut stream = resp.into_body().into_stream();
        use futures_util::StreamExt;
        assert_eq!(
            stream.next().await.unwrap().unwrap(),
            Bytes::from_static(b"ab")
        );
        let started = std::time::Instant::now();
        match stream.next().await.unwrap() {
            Err(BodyError::Backend(e)) => assert_eq!(e.kind, TransportErrorKind::Stall, "{e}"),
            other => panic!("{other:?}"),
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_tls_handshake_that_never_completes_is_a_connect_timeout() {
        let addr = silent_backend(true).await;
        let started = std::time::Instant::now();
        let err = quick(5_000, 5_000)
            .send(request(
                "GET",
                &format!("https://{addr}/b/k"),
                NativeBody::Empty,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Connect, "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_refused_body_is_never_sent_and_a_failing_one_is_the_bodys_fault() {
        let (base, seen) = server().await;
        let digest = [0u8; 32];
        let refused = NativeBody::from_bytes(Bytes::from_static(b"hello"))
            .filter(Box::new(shared::body::Sha256Check::new(digest)));
        assert!(matches!(refused, NativeBody::Failed(_)));
        let err = BackendClient::new()
            .unwrap()
            .send(request("PUT", &format!("{base}/b/k"), refused))
            .await
            .unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::RequestBody, "{err}");
        assert!(seen.lock().unwrap().is_empty(), "the backend saw nothing");

        let parts: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"abc")),
            Err(std::io::Error::other("client went away")),
        ];
        let broken = NativeBody::from_stream(futures_util::stream::iter(parts), Some(6));
        let err = BackendClient::new()
            .unwrap()
            .send(request("PUT", &format!("{base}/b/k"), broken))
            .await
            .unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::RequestBody, "{err}");
    }
}
