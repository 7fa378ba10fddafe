//! [`BackendClient`]: the engine's [`HttpClient`] for backend requests, on hyper-util's pooled
//! client. The engine's `http::Uri` goes out as given, never re-parsed as a URL: the path and
//! query reach the backend byte for byte, as they were signed.

use std::cell::RefCell;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::header::CONTENT_LENGTH;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use shared::body::Body as _;
use shared::http::{HttpClient, RequestTimeout, TransportError, TransportErrorKind};

use crate::body::ServerBody;

type Pool = Client<HttpsConnector<HttpConnector>, ServerBody>;

/// What every thread's pool is built from. The connector holds the TLS config (parsed roots)
/// once for the process; cloning it is a few reference counts.
struct Settings {
    connector: HttpsConnector<HttpConnector>,
    pool_idle_timeout: Duration,
}

impl Settings {
    fn pool(&self) -> Pool {
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .build(self.connector.clone())
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
    static POOLS: RefCell<Vec<(Weak<Settings>, Pool)>> = const { RefCell::new(Vec::new()) };
}

/// Sends backend requests over keep-alive connections, pooled per OS thread (see [`POOLS`]).
/// Cheap to clone, `Send + Sync`: clones share settings and each thread's pool.
#[derive(Clone)]
pub struct BackendClient {
    settings: Arc<Settings>,
}

impl BackendClient {
    pub fn new() -> Result<Self, rustls::Error> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        // The URI's scheme picks plain TCP or TLS; the TLS wrapper checks it, not this one.
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            // ring, as reqwest used: the process-wide default provider would be ambiguous
            // (the AWS SDK in the tree enables aws-lc-rs too).
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        // No redirect following and no decompression: hyper's client does neither. The engine
        // answers redirects itself, and Content-Encoding belongs to the object.
        Ok(Self {
            settings: Arc::new(Settings {
                connector,
                pool_idle_timeout: Duration::from_secs(60),
            }),
        })
    }

    /// Starts the request on this thread's pool, creating the pool on first use.
    fn request(&self, request: http::Request<ServerBody>) -> ResponseFuture {
        POOLS.with_borrow_mut(|pools| {
            let ours = Arc::as_ptr(&self.settings);
            // A live `Weak` keeps its allocation, so a matching pointer is this very client.
            if let Some((_, pool)) = pools.iter().find(|(s, _)| s.as_ptr() == ours) {
                return pool.request(request);
            }
            pools.retain(|(s, _)| s.strong_count() > 0);
            let pool = self.settings.pool();
            let response = pool.request(request);
            pools.push((Arc::downgrade(&self.settings), pool));
            response
        })
    }
}

fn transport_error(host: &str, e: &hyper_util::client::legacy::Error) -> TransportError {
    // The innermost source names the real cause (refused, reset, TLS ...). hyper's messages
    // never carry the URL, which could hold a presigned signature; ours names only the host.
    let mut cause: &(dyn std::error::Error + 'static) = e;
    let mut timed_out = false;
    loop {
        timed_out |= cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        match cause.source() {
            Some(source) => cause = source,
            None => break,
        }
    }
    let kind = if timed_out {
        TransportErrorKind::Timeout
    } else if e.is_connect() {
        TransportErrorKind::Connect
    } else {
        TransportErrorKind::Other
    };
    TransportError::new(kind, format!("{host}: {cause}"))
}

impl HttpClient for BackendClient {
    type Body = ServerBody;

    async fn send(
        &self,
        mut request: http::Request<ServerBody>,
    ) -> Result<http::Response<ServerBody>, TransportError> {
        let host = request
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let timeout = request.extensions().get::<RequestTimeout>().map(|t| t.0);
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
                request.headers_mut().insert(CONTENT_LENGTH, len.into());
            }
        }
        let send = self.request(request);
        // The timeout covers connect and response headers only: a large body then streams as
        // long as it needs.
        let response = match timeout {
            Some(t) => tokio::time::timeout(t, send).await.map_err(|_| {
                TransportError::new(
                    TransportErrorKind::Timeout,
                    format!("{host}: no response within {} ms", t.as_millis()),
                )
            })?,
            None => send.await,
        }
        .map_err(|e| transport_error(&host, &e))?;
        Ok(response.map(ServerBody::from_incoming))
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

    fn request(method: &str, uri: &str, body: ServerBody) -> http::Request<ServerBody> {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(body)
            .unwrap()
    }

    async fn read(resp: http::Response<ServerBody>) -> Bytes {
        http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes()
    }

    #[tokio::test]
    async fn streamed_put_sends_content_length_not_chunked() {
        let (base, seen) = server().await;
        let parts: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"abc")),
            Ok(Bytes::from_static(b"def")),
        ];
        let body = ServerBody::from_stream(futures_util::stream::iter(parts), Some(6));
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
            .send(request("PUT", &format!("{base}/b"), ServerBody::Empty))
            .await
            .unwrap();
        client
            .send(request("GET", &format!("{base}/b"), ServerBody::Empty))
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
                ServerBody::Empty,
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
        let mut req = request("GET", &format!("{base}/slow"), ServerBody::Empty);
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
                ServerBody::Empty,
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
        let mut req = request("GET", &format!("http://{addr}/"), ServerBody::Empty);
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
                    ServerBody::Empty,
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
                            let resp = client
                                .send(request("GET", &uri, ServerBody::Empty))
                                .await
                                .unwrap();
                            assert_eq!(read(resp).await, Bytes::from_static(b"hello"));
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
}
