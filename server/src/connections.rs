//! The server's client connections under hostile or broken clients: a deadline for each
//! phase of a connection (request headers, keep-alive idle, response write; request bodies
//! have theirs in [`native::NativeBody::client_request`]), and a cap on open connections.
//!
//! At the cap, a new connection closes the longest-idle one (a connection between requests,
//! or one still sending its headers), as nginx reuses keep-alive connections when it runs out:
//! a flood of idle sockets cannot lock out real clients. Only when every connection is busy
//! with a request is the newcomer answered `503 SlowDown` and closed.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use hyper_util::rt::TokioIo;
use native::stall::StallIo;
use shared::config::ServerConfig;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// File descriptors kept for everything but client connections (listener, SQLite, logs ...).
const RESERVED_FDS: u64 = 64;
/// Refusals (503 SlowDown) answered at once; more are closed without an answer.
const MAX_REFUSING: usize = 64;

/// Raises the open-files soft limit to the hard limit (as far as the kernel allows) and
/// returns the soft limit in force.
pub fn raise_open_files_limit() -> u64 {
    // Linux refuses more than fs.nr_open (1,048,576 by default), even under an unlimited
    // hard limit.
    const WANTED: u64 = 1 << 20;
    match rlimit::increase_nofile_limit(WANTED) {
        Ok(limit) => limit,
        Err(e) => {
            let soft = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
            tracing::warn!(error = %e, soft, "could not raise the open-files limit");
            soft
        }
    }
}

/// The connections one process has open, across its event-loop threads.
pub struct ConnectionTable {
    open: Mutex<Open>,
    /// The most connections the open-files limit allows: each may hold a backend connection
    /// too, so half of what is left after [`RESERVED_FDS`].
    fd_cap: usize,
    refusing: AtomicUsize,
}

#[derive(Default)]
struct Open {
    conns: BTreeMap<u64, Arc<ConnState>>,
    next_id: u64,
    /// Connections told to close that have not closed yet: they no longer count.
    closing: usize,
}

impl ConnectionTable {
    /// A table for `open_files` (the soft limit of this process).
    pub fn new(open_files: u64) -> Arc<Self> {
        let fd_cap = (open_files.saturating_sub(RESERVED_FDS) / 2).max(1);
        Arc::new(Self {
            open: Mutex::new(Open::default()),
            fd_cap: usize::try_from(fd_cap).unwrap_or(usize::MAX),
            refusing: AtomicUsize::new(0),
        })
    }

    /// The cap in force for a configured `max_connections`.
    pub fn cap(&self, max_connections: usize) -> usize {
        max_connections.min(self.fd_cap)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new connection; at the cap, closes the longest-idle one to make room.
    /// `None`: every connection is busy, the newcomer is to be refused.
    pub fn admit(self: &Arc<Self>, max_connections: usize) -> Option<Conn> {
        let cap = self.cap(max_connections);
        let mut open = self.lock();
        if open.conns.len() - open.closing >= cap && evict(&mut open, 1) == 0 {
            return None;
        }
        let id = open.next_id;
        open.next_id += 1;
        let state = Arc::new(ConnState::default());
        open.conns.insert(id, state.clone());
        Some(Conn {
            id,
            state,
            table: self.clone(),
        })
    }

    /// Closes up to `n` idle connections (out of file descriptors); returns how many.
    pub fn evict_idle(&self, n: usize) -> usize {
        evict(&mut self.lock(), n)
    }

    /// Open connections, not counting those already told to close.
    pub fn open_count(&self) -> usize {
        let open = self.lock();
        open.conns.len() - open.closing
    }

    /// A slot for answering a refusal, while fewer than [`MAX_REFUSING`] are in progress.
    pub fn refusal(self: &Arc<Self>) -> Option<Refusal> {
        if self.refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
            self.refusing.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Refusal(self.clone()))
    }
}

/// Tells the `n` longest-idle connections to close.
fn evict(open: &mut Open, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let mut idle: Vec<(u64, &Arc<ConnState>)> = open
        .conns
        .values()
        .filter(|c| {
            c.in_flight.load(Ordering::Acquire) == 0
                && !c.writing.load(Ordering::Acquire)
                && !c.close.load(Ordering::Acquire)
        })
        .map(|c| (c.idle_since.load(Ordering::Relaxed), c))
        .collect();
    if idle.len() > n {
        idle.select_nth_unstable_by_key(n - 1, |(since, _)| *since);
        idle.truncate(n);
    }
    let evicted = idle.len();
    for (_, c) in idle {
        c.close.store(true, Ordering::Release);
        c.waker.wake();
    }
    open.closing += evicted;
    evicted
}

/// A refusal in progress (see [`ConnectionTable::refusal`]).
pub struct Refusal(Arc<ConnectionTable>);

impl Drop for Refusal {
    fn drop(&mut self) {
        self.0.refusing.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a connection's IO and its requests share.
#[derive(Default)]
pub struct ConnState {
    /// Requests between their headers and the end of their response.
    in_flight: AtomicU32,
    /// Bumped when a request starts or ends: the IO restarts its phase clock.
    generation: AtomicU64,
    /// When the connection last became idle (milliseconds on a process clock): eviction
    /// closes the longest-idle first.
    idle_since: AtomicU64,
    /// A write is waiting for the client (the tail of a response may still be unsent).
    writing: AtomicBool,
    /// Set to close the connection (evicted); its IO fails at once.
    close: AtomicBool,
    /// Wakes the connection's task when `close` is set.
    waker: AtomicWaker,
}

fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// One registered connection; dropping it (with the IO) unregisters it.
pub struct Conn {
    id: u64,
    state: Arc<ConnState>,
    table: Arc<ConnectionTable>,
}

impl Conn {
    /// Marks a request as started (its headers are in); the guard marks it finished when
    /// dropped with its response body.
    pub fn request(state: &Arc<ConnState>) -> RequestGuard {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        state.generation.fetch_add(1, Ordering::AcqRel);
        RequestGuard(state.clone())
    }

    pub fn state(&self) -> &Arc<ConnState> {
        &self.state
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut open = self.table.lock();
        open.conns.remove(&self.id);
        if self.state.close.load(Ordering::Acquire) {
            open.closing -= 1;
        }
    }
}

/// A request in progress on a connection (see [`Conn::request`]).
pub struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.idle_since.store(now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.generation.fetch_add(1, Ordering::AcqRel);
        // The connection's read may be parked with no deadline (it was busy): it must arm the
        // idle deadline now, not at its next wake-up.
        self.0.waker.wake();
    }
}

/// The deadlines of one connection, from the config at its accept.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub header: Duration,
    pub idle: Duration,
    pub write: Duration,
}

impl Deadlines {
    pub fn new(server: &ServerConfig) -> Self {
        Self {
            header: server.read_header_timeout,
            idle: server.idle_timeout,
            write: server.write_timeout,
        }
    }
}

/// A client connection's socket as hyper sees it: reads fail when a phase's deadline passes
/// (headers not whole within `header` of the accept or of a request's first byte; no next
/// request within `idle` on a kept-alive connection) or when the connection is evicted;
/// writes fail when the client takes no response bytes for `write`. While a request is in
/// flight reads have no deadline here: its body has its own inactivity timeout, and a client
/// waiting for a slow answer is not idle.
pub struct ClientIo {
    inner: StallIo<TokioIo<TcpStream>>,
    conn: Conn,
    deadlines: Deadlines,
    /// The request generation the phase clock belongs to.
    generation: u64,
    phase_started: Instant,
    first_byte: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    timer_at: Instant,
}

impl ClientIo {
    pub fn new(socket: TcpStream, conn: Conn, deadlines: Deadlines) -> Self {
        let now = Instant::now();
        conn.state.idle_since.store(now_ms(), Ordering::Relaxed);
        let timer_at = now + deadlines.header;
        Self {
            inner: StallIo::new(TokioIo::new(socket), Some(deadlines.write)),
            conn,
            deadlines,
            generation: 0,
            phase_started: now,
            first_byte: None,
            timer: Box::pin(tokio::time::sleep_until(timer_at)),
            timer_at,
        }
    }

    fn closed() -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "closed to make room for a new connection",
        )
    }
}

impl hyper::rt::Read for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let state = &this.conn.state;
        if state.close.load(Ordering::Acquire) {
            return Poll::Ready(Err(Self::closed()));
        }
        let generation = state.generation.load(Ordering::Acquire);
        if generation != this.generation {
            this.generation = generation;
            this.phase_started = Instant::now();
            this.first_byte = None;
        }
        let busy = state.in_flight.load(Ordering::Acquire) > 0;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                // Bytes (or the end): a request's head has begun.
                if !busy && this.first_byte.is_none() {
                    this.first_byte = Some(Instant::now());
                }
                return Poll::Ready(r);
            }
            Poll::Pending => {}
        }
        state.waker.register(cx.waker());
        if state.close.load(Ordering::Acquire) {
            return Poll::Ready(Err(Self::closed()));
        }
        if busy {
            return Poll::Pending;
        }
        let (deadline, what) = match this.first_byte {
            Some(t) => (t + this.deadlines.header, "request headers"),
            // A new connection gets the header timeout from its accept, as Go's server does.
            None if this.generation == 0 => (
                this.phase_started + this.deadlines.header,
                "a first request",
            ),
            None => (this.phase_started + this.deadlines.idle, "a next request"),
        };
        if this.timer_at != deadline {
            this.timer.as_mut().reset(deadline);
            this.timer_at = deadline;
        }
        match this.timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no {what} in time"),
            ))),
        }
    }
}

impl ClientIo {
    /// Notes whether a write waits for the client: such a connection is not evicted.
    fn writing<R>(&self, polled: Poll<R>) -> Poll<R> {
        self.conn
            .state
            .writing
            .store(polled.is_pending(), Ordering::Release);
        polled
    }
}

impl hyper::rt::Write for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.writing(polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.writing(polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.writing(polled)
    }
}

/// A response body that marks its request finished when hyper drops it (sent, or the client
/// went away).
pub struct Tracked<B> {
    body: B,
    _request: RequestGuard,
}

impl<B> Tracked<B> {
    pub fn new(body: B, request: RequestGuard) -> Self {
        Self {
            body,
            _request: request,
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Backs off after failed accepts. Out of file descriptors (EMFILE, ENFILE) or kernel memory,
/// `accept` fails at once for as long as the condition lasts: retrying at once would spin.
/// Each failure doubles the pause (1 ms to 1 s) and closes a few idle connections; the log
/// says so at most every 10 s.
#[derive(Default)]
pub struct AcceptBackoff {
    pause: Duration,
    failures: u64,
    last_log: Option<Instant>,
}

impl AcceptBackoff {
    pub fn succeeded(&mut self) {
        self.pause = Duration::ZERO;
    }

    /// Handles a failed accept: frees descriptors if that is the cause, logs, then waits.
    pub async fn failed(&mut self, error: &io::Error, table: &ConnectionTable) {
        self.failures += 1;
        // EMFILE, ENFILE, ENOBUFS, ENOMEM: resources, which only time or closing frees.
        let exhausted = matches!(error.raw_os_error(), Some(24 | 23 | 105 | 12));
        let evicted = if exhausted { table.evict_idle(16) } else { 0 };
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(
                error = %error,
                failures = self.failures,
                evicted_idle = evicted,
                open = table.open_count(),
                "accept failed; backing off"
            );
            self.last_log = Some(Instant::now());
            self.failures = 0;
        }
        if exhausted {
            self.pause = (self.pause * 2).clamp(Duration::from_millis(1), Duration::from_secs(1));
            tokio::time::sleep(self.pause).await;
        } else {
            // ECONNABORTED and the like: the next connection is unaffected.
            tokio::task::yield_now().await;
        }
    }
}

/// Answers a connection over the cap `503 SlowDown` and closes it. hyper reads the request
/// head first (within 1 s), so the client reads the answer instead of a reset.
pub async fn refuse(socket: TcpStream, refusal: Refusal) {
    let service = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| {
        let head = req.method() == http::Method::HEAD;
        std::future::ready(Ok::<_, std::convert::Infallible>(slow_down(head)))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(false)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(1));
    let conn = builder.serve_connection(TokioIo::new(socket), service);
    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
    drop(refusal);
}

fn slow_down(head: bool) -> http::Response<native::NativeBody> {
    let id = crate::http_server::request_id();
    let error = shared::S3Error::new(
        shared::S3ErrorCode::SlowDown,
        "Please reduce your request rate.",
    );
    let mut r = shared::engine::error_response(&error, &id, head);
    if let Ok(v) = http::HeaderValue::from_str(&id) {
        r.headers_mut().insert("x-amz-request-id", v);
    }
    r.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    r
}

/// Runs `conn` to its end; a connection's error is the client's doing, logged at debug.
pub async fn run<F, E>(conn: F)
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_keeps_half_the_descriptors_left_for_connections() {
        let table = ConnectionTable::new(1024);
        assert_eq!(table.cap(10_000), 480);
        assert_eq!(table.cap(100), 100);
        assert_eq!(ConnectionTable::new(10).cap(10_000), 1);
    }

    #[tokio::test]
    async fn at_the_cap_the_longest_idle_connection_makes_room_and_busy_ones_never_do() {
        let table = ConnectionTable::new(1 << 20);
        let a = table.admit(2).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = table.admit(2).unwrap();
        // `a` became idle first: it is the one closed.
        let c = table.admit(2).unwrap();
        assert!(a.state.close.load(Ordering::Acquire));
        assert!(!b.state.close.load(Ordering::Acquire));
        assert_eq!(table.open_count(), 2);
        drop(a);
        assert_eq!(table.open_count(), 2);

        // Both open connections busy: a newcomer is refused.
        let _rb = Conn::request(b.state());
        let _rc = Conn::request(c.state());
        assert!(table.admit(2).is_none());
        drop(_rc);
        let d = table.admit(2).unwrap();
        assert!(c.state.close.load(Ordering::Acquire));
        drop((b, c, d));
        assert_eq!(table.open_count(), 0);
    }

    #[tokio::test]
    async fn out_of_descriptors_accept_backs_off_and_frees_idle_connections() {
        let table = ConnectionTable::new(1 << 20);
        let idle: Vec<Conn> = (0..20).map(|_| table.admit(100).unwrap()).collect();
        let emfile = io::Error::from_raw_os_error(24);
        let mut backoff = AcceptBackoff::default();
        let started = std::time::Instant::now();
        for _ in 0..6 {
            backoff.failed(&emfile, &table).await;
        }
        // 1 + 2 + 4 + 8 + 16 + 32 ms of pauses, not a spin.
        assert!(
            started.elapsed() >= Duration::from_millis(63),
            "{:?}",
            started.elapsed()
        );
        // Each failure closes up to 16 idle connections: all 20 are told to close.
        assert_eq!(table.open_count(), 0);
        assert!(idle.iter().all(|c| c.state.close.load(Ordering::Acquire)));
        backoff.succeeded();
        assert_eq!(backoff.pause, Duration::ZERO);

        // Another error (a connection aborted before accept) does not wait.
        let started = std::time::Instant::now();
        backoff
            .failed(&io::Error::from(io::ErrorKind::ConnectionAborted), &table)
            .await;
        assert!(started.elapsed() < Duration::from_millis(50));
    }

    #[test]
    fn refusals_in_progress_are_bounded() {
        let table = ConnectionTable::new(1024);
        let slots: Vec<Refusal> = (0..MAX_REFUSING)
            .map(|_| table.refusal().unwrap())
            .collect();
        assert!(table.refusal().is_none());
        drop(slots);
        assert!(table.refusal().is_some());
    }
}
