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
    let threads = threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let backend: Uri = backend.parse().expect("backend URL");
    let authority = backend.authority().expect("backend host:port").clone();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
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
