//! The S3 endpoint: hyper accepting connections, each request handed to the engine.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures_util::FutureExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use native::NativeBody;
use shared::body::Body as _;
use shared::engine::{RequestContext, RequestLog};
use tokio::net::TcpListener;

use crate::connections::{self, AcceptBackoff, ClientIo, Conn, ConnectionTable, Deadlines};
use crate::setup::ServerEngine;

/// Serves until SIGTERM or Ctrl-C, then lets in-flight requests finish for up to the config's
/// `server.shutdown_timeout`.
pub async fn serve(engine: Arc<ServerEngine>, listener: TcpListener) -> std::io::Result<()> {
    serve_until(engine, listener, shutdown_signal()).await
}

/// Serves on `threads` OS threads, each running its own current-thread runtime that accepts
/// from the same listening socket, until SIGTERM or Ctrl-C; then each drains its connections
/// as [`serve_until`] does.
///
/// Why not one multi-thread runtime: a proxied request wakes three tasks (client connection,
/// handler, backend connection). Spread over a work-stealing pool, each wake-up is a futex
/// call and a context switch on another core; profiled at 4 KiB GETs, that cost the gateway
/// 85 us of CPU per request against 50 us with everything on one thread (docs/performance.md).
/// A connection stays on the thread that accepted it, and backend connections are pooled per
/// thread ([`crate::client`]), so a request never leaves its thread.
pub async fn serve_threads(
    engine: Arc<ServerEngine>,
    listener: std::net::TcpListener,
    threads: usize,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let table = connection_table(&engine);
    tracing::info!(address = %listener.local_addr()?, threads, "listening");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut finished = Vec::new();
    for i in 0..threads.max(1) {
        let listener = listener.try_clone()?;
        let engine = engine.clone();
        let table = table.clone();
        let mut stop_rx = stop_rx.clone();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
        std::thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || {
                let served = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|runtime| {
                        runtime.spawn(keep_timer_wake_near());
                        let served = runtime.block_on(async move {
                            let listener = TcpListener::from_std(listener)?;
                            let stop = async move {
                                let _ = stop_rx.wait_for(|stop| *stop).await;
                            };
                            serve_connections(engine, listener, table, stop).await
                        });
                        // Idle keep-alive connections must not hold the exit.
                        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
                        served
                    });
                let _ = done_tx.send(served);
            })?;
        finished.push(done_rx);
    }
    drop(listener);
    // Stop on a signal, or as soon as one thread gives up (its error is returned).
    let mut result = Ok(());
    let mut ended_early = None;
    tokio::select! {
        () = shutdown_signal() => {},
        (served, i, _) = futures_util::future::select_all(finished.iter_mut()) => {
            result = served.unwrap_or(Ok(()));
            ended_early = Some(i);
        }
    }
    let _ = stop_tx.send(true);
    for (i, done) in finished.into_iter().enumerate() {
        if Some(i) == ended_early {
            continue;
        }
        if let Ok(Err(e)) = done.await {
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}

/// Keeps a timer at most [`TIMER_WAKE_EVERY`] away on this thread's runtime, forever.
///
/// Why: tokio writes to the runtime's eventfd whenever a new timer is due before the wake-up
/// the driver planned when it last parked, even when the timer is registered from the
/// runtime's own thread, which is awake by definition. Each backend request arms a
/// first-byte timer (seconds away): without a nearer timer planned, that was a `write(2)` and
/// a spurious `epoll_wait` return for nearly every other proxied GET (docs/performance.md).
/// With this one, every request timer is due after the planned wake-up, for the price of
/// one wake-up per [`TIMER_WAKE_EVERY`].
async fn keep_timer_wake_near() {
    let mut tick = tokio::time::interval(TIMER_WAKE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// Shorter than the request timeouts as configured in practice (seconds); a shorter timeout
/// works the same, only without the saving.
const TIMER_WAKE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// [`serve`] until `stop` completes.
pub async fn serve_until(
    engine: Arc<ServerEngine>,
    listener: TcpListener,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tracing::info!(address = %listener.local_addr()?, "listening");
    let table = connection_table(&engine);
    serve_connections(engine, listener, table, stop).await
}

/// The process's connection table, after raising the open-files limit it is sized by.
fn connection_table(engine: &ServerEngine) -> Arc<ConnectionTable> {
    let open_files = connections::raise_open_files_limit();
    let table = ConnectionTable::new(open_files);
    let server = &engine.config().server;
    tracing::info!(
        open_files,
        max_connections = table.cap(server.max_connections),
        read_header_timeout_ms = server.read_header_timeout.as_millis() as u64,
        read_timeout_ms = server.read_timeout.as_millis() as u64,
        write_timeout_ms = server.write_timeout.as_millis() as u64,
        idle_timeout_ms = server.idle_timeout.as_millis() as u64,
        "client connections"
    );
    table
}

/// The accept loop: one task per connection on the current runtime; when `stop` completes,
/// accepting ends and in-flight requests get `server.shutdown_timeout` to finish. Each
/// connection is admitted by `table` (the connection cap) and watched by [`ClientIo`] (the
/// phase deadlines of `server.*_timeout`, read from the config at its accept).
async fn serve_connections(
    engine: Arc<ServerEngine>,
    listener: TcpListener,
    table: Arc<ConnectionTable>,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    let mut backoff = AcceptBackoff::default();
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    backoff.succeeded();
                    socket
                }
                Err(e) => {
                    backoff.failed(&e, &table).await;
                    continue;
                }
            },
            () = stop.as_mut() => break,
        };
        let config = engine.config();
        let Some(conn) = table.admit(config.server.max_connections) else {
            if let Some(refusal) = table.refusal() {
                tokio::spawn(connections::refuse(socket, refusal));
            }
            continue;
        };
        let _ = socket.set_nodelay(true);
        let state = conn.state().clone();
        let read_timeout = config.server.read_timeout;
        let io = ClientIo::new(socket, conn, Deadlines::new(&config.server));
        let engine = engine.clone();
        let service = service_fn(move |req| {
            let request = Conn::request(&state);
            handle(engine.clone(), req, read_timeout)
                .map(|r| r.map(|response| response.map(|b| connections::Tracked::new(b, request))))
        });
        let conn = graceful.watch(builder.serve_connection(io, service).into_owned());
        tokio::spawn(connections::run(conn));
    }
    drop(listener);
    let timeout = engine.config().server.shutdown_timeout;
    tracing::info!(
        in_flight = graceful.count(),
        timeout_s = timeout.as_secs_f64(),
        "shutting down"
    );
    if tokio::time::timeout(timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout reached; closing the remaining connections");
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// `x-amz-request-id`: 16 uppercase hex characters, as AWS writes them.
pub fn request_id() -> String {
    let mut id = [0u8; 16];
    // Cannot fail: the buffer is exactly twice the input.
    let _ = hex::encode_to_slice(rand::random::<u64>().to_be_bytes(), &mut id);
    id.make_ascii_uppercase();
    shared::time::ascii_string(&id)
}

async fn handle(
    engine: Arc<ServerEngine>,
    req: http::Request<hyper::body::Incoming>,
    read_timeout: std::time::Duration,
) -> Result<http::Response<NativeBody>, Infallible> {
    let started = Instant::now();
    // The URI is kept as sent (raw path and query): the signature covers it byte for byte.
    let req = req.map(|body| NativeBody::client_request(body, Some(read_timeout)));
    let method = req.method().clone();
    // hyper sends "100 Continue" only when the body is read; an empty body never is, and
    // botocore then misreads the next response on that connection. Close it instead.
    let close_after = req
        .headers()
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
        && req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v == "0");
    let ctx = RequestContext {
        now: SystemTime::now(),
        request_id: request_id(),
        random: rand::random(),
    };
    // A bug in one request must not take the connection (and its other requests) down.
    let response = engine.handle_guarded(req, &ctx).await;
    let mut response = response;
    if close_after {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    engine.record_response(&response, started.elapsed().as_secs_f64());
    // Taken, not cloned: nothing reads it from the response after this.
    let log = response
        .extensions_mut()
        .remove::<RequestLog>()
        .unwrap_or_default();
    let entry = AccessLog {
        request_id: ctx.request_id,
        method,
        status: response.status().as_u16(),
        log,
        started,
        streamed: None,
        expected: None,
        complete: false,
        whole: None,
        engine,
    };
    Ok(response.map(|body| entry.attach(body)))
}

/// The access log line of one request, written when the response body is done (or dropped:
/// the client went away), so duration and bytes cover a streamed body too.
struct AccessLog {
    request_id: String,
    method: http::Method,
    status: u16,
    log: RequestLog,
    started: Instant,
    /// Bytes of a streamed body sent so far; `None` for a body sent in one piece.
    streamed: Option<u64>,
    /// Length of the streamed body: hyper stops polling once it is sent.
    expected: Option<u64>,
    complete: bool,
    /// Length of a body sent in one piece.
    whole: Option<u64>,
    /// For `s3_balance_s3_bytes_total`, counted when the body is done.
    engine: Arc<ServerEngine>,
}

impl AccessLog {
    fn attach(mut self, body: NativeBody) -> NativeBody {
        match body {
            NativeBody::Stream {
                stream,
                len,
                ends_early,
            } => {
                self.streamed = Some(0);
                self.expected = len;
                NativeBody::Stream {
                    stream: Box::pin(LoggedStream {
                        inner: stream,
                        entry: self,
                    }),
                    len,
                    ends_early,
                }
            }
            body => {
                self.whole = body.exact_len();
                self.log.bytes = self.log.bytes.or(body.exact_len());
                self.complete = true;
                body // logged now, as `self` drops
            }
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        if !self.log.operation.is_empty() && self.log.operation != "Admin" {
            // In: the object bytes of an upload the gateway accepted (a redirected or failed
            // PUT carried none through it). Out: what was actually sent.
            let received = if self.method == http::Method::PUT && self.status < 300 {
                self.log.bytes.unwrap_or(0)
            } else {
                0
            };
            let sent = self.streamed.or(self.whole).unwrap_or(0);
            self.engine
                .metrics()
                .record_transfer(self.log.operation, received, sent);
        }
        crate::log::access::log(&crate::log::access::Request {
            request_id: &self.request_id,
            method: self.method.as_str(),
            operation: self.log.operation,
            bucket: self.log.bucket.as_deref().unwrap_or("-"),
            backend: self.log.backend.as_deref().unwrap_or("-"),
            status: self.status,
            bytes: self.streamed.or(self.log.bytes).unwrap_or(0),
            duration_ms: self.started.elapsed().as_millis() as u64,
            complete: self.complete || (self.expected.is_some() && self.streamed == self.expected),
        });
    }
}

struct LoggedStream {
    inner: native::ByteStream,
    entry: AccessLog,
}

impl futures_core::Stream for LoggedStream {
    type Item = Result<bytes::Bytes, native::BodyError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(chunk))) => {
                *self.entry.streamed.get_or_insert(0) += chunk.len() as u64
            }
            std::task::Poll::Ready(None) => self.entry.complete = true,
            _ => {}
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AnyStore;
    use native::BackendClient;
    use shared::http::HttpClient;

    #[tokio::test]
    async fn every_response_carries_a_request_id_and_shutdown_stops_accepting() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::dev::dev_config(Vec::new(), &dir.path().join("db"), 0);
        config.metadata = shared::config::MetadataBackend::Memory;
        let engine = Arc::new(shared::engine::Engine::new(
            Arc::new(config),
            AnyStore::open(&shared::config::MetadataBackend::Memory).unwrap(),
            BackendClient::new().unwrap(),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_until(engine, listener, async move {
            let _ = stop_rx.await;
        }));

        let client = BackendClient::new().unwrap();
        let get = |path: &str| {
            http::Request::get(format!("http://{addr}{path}"))
                .body(NativeBody::Empty)
                .unwrap()
        };
        for path in [
            "/health",
            "/dev/some%20key?x-id=GetObject",
            "/no-such-bucket",
        ] {
            let resp = client.send(get(path)).await.unwrap();
            let id = resp
                .headers()
                .get("x-amz-request-id")
                .map(|v| v.to_str().unwrap().to_owned());
            let id =
                id.unwrap_or_else(|| panic!("{path}: no x-amz-request-id ({})", resp.status()));
            assert_eq!(id.len(), 16, "{id}");
            assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        }

        stop_tx.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "no longer accepting"
        );
    }

    #[test]
    fn request_ids_are_16_hex_and_differ() {
        let (a, b) = (request_id(), request_id());
        assert_eq!(a.len(), 16);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c)),
            "{a}"
        );
        assert_ne!(a, b);
    }
}
