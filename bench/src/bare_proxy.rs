//! The floor under the gateway: a reverse proxy on the gateway's own HTTP stack (hyper's
//! HTTP/1 server, the gateway's backend client and body type from `s3-balance-native`, one
//! current-thread tokio runtime per thread, all accepting from one socket, connections and
//! backend pools staying on their thread) that does nothing else: no SigV4, no index, no log,
//! no metrics. It forwards each request to one backend and streams the answer back.
//!
//! Its CPU per operation, beside nginx's and the gateway's in the same run, splits the
//! gateway's distance from nginx into what the HTTP stack costs and what the gateway's own
//! work costs (docs/performance.md, "Fifth step").

use std::convert::Infallible;

use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use native::{BackendClient, NativeBody};
use shared::body::Body as _;
use shared::http::HttpClient;

/// Serves on `port` with `threads` event-loop threads (default: as many as the cores this
/// process may run on, as the gateway), forwarding to `backend` (`http://host:port`), until
/// the process is killed.
pub fn serve(port: u16, backend: &str, threads: Option<usize>) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
    serve_on(listener, backend, threads);
}

/// [`serve`] on a bound listener.
fn serve_on(listener: std::net::TcpListener, backend: &str, threads: Option<usize>) {
    let threads = threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let backend: Uri = backend.parse().expect("backend URL");
    let authority = backend.authority().expect("backend host:port").clone();
    listener.set_nonblocking(true).expect("nonblocking");
    // Clones share the client; each thread keeps its own connections, as in the gateway.
    let client = BackendClient::new().expect("client");
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let listener = listener.try_clone().expect("listener");
            let (authority, client) = (authority.clone(), client.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(accept(listener, authority, client));
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}

async fn accept(
    listener: std::net::TcpListener,
    authority: http::uri::Authority,
    client: BackendClient,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let _ = socket.set_nodelay(true);
        let (authority, client) = (authority.clone(), client.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| forward(req, authority.clone(), client.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

async fn forward(
    req: Request<Incoming>,
    authority: http::uri::Authority,
    client: BackendClient,
) -> Result<Response<NativeBody>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let mut uri = parts.uri.into_parts();
    uri.scheme = Some(http::uri::Scheme::HTTP);
    uri.authority = Some(authority);
    parts.uri = Uri::from_parts(uri).expect("uri");
    // The client sets the backend's.
    parts.headers.remove(http::header::HOST);
    let body = NativeBody::client_request(body, None);
    Ok(match client.send(Request::from_parts(parts, body)).await {
        Ok(resp) => resp,
        Err(e) => {
            let mut r = Response::new(NativeBody::from_bytes(bytes::Bytes::from(e.message)));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::Method;

    use crate::backend::{self, Store};
    use crate::client::{Driver, Payload};

    /// The floor `scripts/bench` reports is a proxy that works: what is PUT through it
    /// reaches the backend, and GETs through it read it back (CI runs no benchmark, so this
    /// is what keeps the bare proxy from breaking unnoticed).
    #[tokio::test]
    async fn puts_and_gets_reach_the_backend_through_the_bare_proxy() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(backend::serve(listener, Arc::new(Store::default())));
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/b0", proxy.local_addr().unwrap());
        std::thread::spawn(move || super::serve_on(proxy, &backend_url, Some(2)));

        let driver = Driver::new(None);
        let body = Payload::Bytes(vec![7u8; 4096].into());
        for i in 0..20 {
            let url = format!("{base}/k{}", i % 4);
            let put = driver.send(Method::PUT, &url, &body).await.unwrap();
            assert_eq!(put.status, 200, "PUT {url}");
            let get = driver
                .send(Method::GET, &url, &Payload::None)
                .await
                .unwrap();
            assert_eq!((get.status, get.bytes), (200, 4096), "GET {url}");
        }
        let missing = driver
            .send(Method::GET, &format!("{base}/none"), &Payload::None)
            .await
            .unwrap();
        assert_eq!(missing.status, 404);
    }
}
