//! [`ReqwestClient`]: the engine's [`HttpClient`] for backend requests.

use std::time::Duration;

use http::header::CONTENT_LENGTH;
use shared::body::Body as _;
use shared::http::{HttpClient, RequestTimeout, TransportError, TransportErrorKind};

use crate::body::ServerBody;

/// One pooled client for the process: keep-alive connections to every backend are reused.
#[derive(Clone)]
pub struct ReqwestClient {
    client: reqwest::Client,
}

impl ReqwestClient {
    pub fn new() -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            // The engine answers redirects itself (or passes them on); bodies pass unchanged
            // (Content-Encoding belongs to the object). No decompression features are enabled.
            .redirect(reqwest::redirect::Policy::none())
            .use_rustls_tls()
            .build()?;
        Ok(Self { client })
    }
}

fn transport_error(host: &str, e: &reqwest::Error) -> TransportError {
    let kind = if e.is_timeout() {
        TransportErrorKind::Timeout
    } else if e.is_connect() {
        TransportErrorKind::Connect
    } else {
        TransportErrorKind::Other
    };
    // The innermost source names the real cause (refused, reset, TLS ...). reqwest's own
    // message is left out: it carries the URL, and a presigned query would carry a signature.
    let mut cause: &dyn std::error::Error = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let message = format!("{host}: {cause}");
    TransportError::new(kind, message)
}

impl HttpClient for ReqwestClient {
    type Body = ServerBody;

    async fn send(
        &self,
        request: http::Request<ServerBody>,
    ) -> Result<http::Response<ServerBody>, TransportError> {
        let (parts, body) = request.into_parts();
        let host = parts
            .uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let url = reqwest::Url::parse(&parts.uri.to_string()).map_err(|e| {
            TransportError::new(TransportErrorKind::Other, format!("bad backend URL: {e}"))
        })?;
        let timeout = parts.extensions.get::<RequestTimeout>().map(|t| t.0);
        let mut req = reqwest::Request::new(parts.method.clone(), url);
        *req.headers_mut() = parts.headers;
        // A wrapped stream goes out chunked unless Content-Length is set: S3 requires it on PUT.
        if let (Some(len), false) = (body.exact_len(), req.headers().contains_key(CONTENT_LENGTH)) {
            if len > 0
                || !matches!(
                    parts.method,
                    http::Method::GET | http::Method::HEAD | http::Method::DELETE
                )
            {
                req.headers_mut().insert(CONTENT_LENGTH, len.into());
            }
        }
        if !matches!(body, ServerBody::Empty) || req.headers().contains_key(CONTENT_LENGTH) {
            *req.body_mut() = Some(body.into_reqwest());
        }
        let send = self.client.execute(req);
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
        Ok(ServerBody::from_reqwest(response))
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
    }

    /// A tiny hyper server: records requests; `/slow` answers after 2 s; `/redirect` is a 307.
    async fn server() -> (String, Arc<Mutex<Vec<Seen>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
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
        let resp = ReqwestClient::new()
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
        let client = ReqwestClient::new().unwrap();
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
        let resp = ReqwestClient::new()
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
        let client = ReqwestClient::new().unwrap();
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
                &format!("http://127.0.0.1:{port}/"),
                ServerBody::Empty,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Connect, "{err}");
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
        let resp = ReqwestClient::new().unwrap().send(req).await.unwrap();
        assert_eq!(read(resp).await, Bytes::from_static(b"abcd"));
    }
}
