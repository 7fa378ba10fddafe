//! [`NativeBody`]: the engine's body type in the native runtimes (server and Lambda), for
//! requests from clients, requests to backends and responses both ways. Chunks pass through as
//! `Bytes` (reference-counted), so a large object streams with constant memory and no copying.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use futures_util::StreamExt;
use http_body::{Frame, SizeHint};
use shared::body::{filter_stream, ByteFilter};
use shared::http::{TransportError, TransportErrorKind};
use shared::{S3Error, S3ErrorCode};

use crate::stall::StallStream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a body stream ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// A filter's verdict (signature, checksum, length).
    #[error("{0}")]
    S3(S3Error),
    /// The client sent nothing for the server's `read_timeout`.
    #[error("the client sent no body bytes for {0:?}")]
    ClientStalled(Duration),
    /// A backend's response broke off or stalled.
    #[error("{0}")]
    Backend(TransportError),
    /// Any other transport failure (the client's connection reset ...).
    #[error("body stream: {0}")]
    Transport(BoxError),
}

pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BodyError>> + Send>>;

pub enum NativeBody {
    Empty,
    Full(Bytes),
    /// A buffered body that a filter refused (bad chunk signature, checksum): it is never sent
    /// anywhere; the HTTP client answers the error without touching the backend.
    Failed(S3Error),
    Stream {
        stream: ByteStream,
        /// Known length (Content-Length of the message it came from).
        len: Option<u64>,
        /// The stream ends without an error where a client closed before `len` bytes: the
        /// engine checks the length ([`shared::body::Body::length_to_verify`]).
        ends_early: bool,
    },
}

impl std::fmt::Debug for NativeBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NativeBody::Empty => f.write_str("Empty"),
            NativeBody::Full(b) => write!(f, "Full({} bytes)", b.len()),
            NativeBody::Failed(e) => write!(f, "Failed({:?})", e.code),
            NativeBody::Stream { len, .. } => write!(f, "Stream(len {len:?})"),
        }
    }
}

impl NativeBody {
    pub fn from_stream<S, E>(stream: S, len: Option<u64>) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        if len == Some(0) {
            // Dropping the stream is fine: a zero-length body has nothing left to read.
            return NativeBody::Empty;
        }
        let stream = stream.map(|r| r.map_err(|e| BodyError::Transport(e.into())));
        NativeBody::Stream {
            stream: Box::pin(stream),
            len,
            ends_early: false,
        }
    }

    /// A client's request body as hyper received it, chunks streamed as they arrive. The
    /// length is Content-Length. `read_timeout`: the longest pause between chunks.
    ///
    /// A client that closes before Content-Length bytes ends the stream there, without an
    /// error: the engine's length check then answers `400 IncompleteBody`, as AWS does (an
    /// error here would reach the engine only as a failed backend request).
    pub fn client_request(body: hyper::body::Incoming, read_timeout: Option<Duration>) -> Self {
        let len = http_body::Body::size_hint(&body).exact();
        if len == Some(0) {
            return NativeBody::Empty;
        }
        // Only a body with a Content-Length ends early: the engine can tell it from a whole
        // one by its length. A chunked body cut short stays an error.
        let announced = len.is_some();
        let stream = http_body_util::BodyDataStream::new(body)
            .take_while(move |r| {
                std::future::ready(!(announced && r.as_ref().is_err_and(ends_short)))
            })
            .map(|r| r.map_err(|e| BodyError::Transport(e.into())));
        let stream: ByteStream = match read_timeout {
            Some(t) => Box::pin(StallStream::new(stream, t, BodyError::ClientStalled)),
            None => Box::pin(stream),
        };
        NativeBody::Stream {
            stream,
            len,
            ends_early: len.is_some(),
        }
    }

    /// A backend's response body, chunks streamed as they arrive. The length is hyper's view
    /// of the body (0 for a HEAD response, whatever its Content-Length header says).
    /// `stall_timeout`: the longest pause between chunks while the body is being read.
    pub fn backend_response(
        body: hyper::body::Incoming,
        stall_timeout: Option<Duration>,
        host: &str,
    ) -> Self {
        let len = http_body::Body::size_hint(&body).exact();
        if len == Some(0) {
            return NativeBody::Empty;
        }
        let broken = {
            let host = host.to_owned();
            move |e: hyper::Error| {
                BodyError::Backend(TransportError::new(
                    TransportErrorKind::Other,
                    format!("{host}: response body: {e}"),
                ))
            }
        };
        let stream = http_body_util::BodyDataStream::new(body).map(move |r| r.map_err(&broken));
        let stream: ByteStream = match stall_timeout {
            Some(t) => {
                let host = host.to_owned();
                Box::pin(StallStream::new(stream, t, move |t: Duration| {
                    BodyError::Backend(TransportError::new(
                        TransportErrorKind::Stall,
                        format!("{host}: no response bytes for {} ms", t.as_millis()),
                    ))
                }))
            }
            None => Box::pin(stream),
        };
        NativeBody::Stream {
            stream,
            len,
            ends_early: false,
        }
    }

    /// Turns the body into a stream of chunks, whatever its variant.
    pub fn into_stream(self) -> ByteStream {
        match self {
            NativeBody::Empty => Box::pin(futures_util::stream::empty()),
            NativeBody::Full(b) => Box::pin(futures_util::stream::once(async move { Ok(b) })),
            NativeBody::Failed(e) => {
                Box::pin(futures_util::stream::once(
                    async move { Err(BodyError::S3(e)) },
                ))
            }
            NativeBody::Stream { stream, .. } => stream,
        }
    }
}

/// hyper's error for a message body that ended before its Content-Length: the peer closed.
fn ends_short(e: &hyper::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
}

/// The client-facing error of a body that could not be read whole.
fn read_error(e: BodyError) -> S3Error {
    match e {
        BodyError::S3(e) => e,
        BodyError::ClientStalled(t) => {
            tracing::debug!(timeout_ms = t.as_millis() as u64, "request body stalled");
            S3Error::new(
                S3ErrorCode::RequestTimeout,
                "Your socket connection to the server was not read from or written to within the timeout period.",
            )
        }
        BodyError::Backend(e) => {
            tracing::warn!(error = %e, "backend response body failed");
            S3Error::unavailable("The backend storage is unavailable. Please try again.")
        }
        BodyError::Transport(e) => {
            tracing::debug!(error = %e, "body ended early");
            S3Error::new(
                S3ErrorCode::IncompleteBody,
                "The request body terminated unexpectedly.",
            )
        }
    }
}

/// Runs `filter` over a whole buffered body.
fn filter_now(bytes: Bytes, filter: &mut dyn ByteFilter) -> Result<Bytes, S3Error> {
    let mut out = filter.push(bytes)?;
    out.extend(filter.finish()?);
    Ok(join(out))
}

/// One chunk (the usual case for small XML bodies) is returned as is, without a copy.
fn join(mut chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => chunks.concat().into(),
    }
}

impl shared::body::Body for NativeBody {
    fn empty() -> Self {
        NativeBody::Empty
    }

    fn from_bytes(bytes: Bytes) -> Self {
        if bytes.is_empty() {
            NativeBody::Empty
        } else {
            NativeBody::Full(bytes)
        }
    }

    fn exact_len(&self) -> Option<u64> {
        match self {
            NativeBody::Empty => Some(0),
            NativeBody::Full(b) => Some(b.len() as u64),
            NativeBody::Failed(_) => None,
            NativeBody::Stream { len, .. } => *len,
        }
    }

    fn length_to_verify(&self) -> Option<u64> {
        match self {
            NativeBody::Stream {
                len,
                ends_early: true,
                ..
            } => *len,
            _ => None,
        }
    }

    async fn collect(self, limit: usize) -> Result<Bytes, S3Error> {
        let too_large = || {
            S3Error::new(
                S3ErrorCode::EntityTooLarge,
                format!("The body exceeds the limit of {limit} bytes."),
            )
        };
        let (mut stream, len, ends_early) = match self {
            NativeBody::Empty => return Ok(Bytes::new()),
            NativeBody::Failed(e) => return Err(e),
            NativeBody::Full(b) if b.len() > limit => return Err(too_large()),
            NativeBody::Full(b) => return Ok(b),
            NativeBody::Stream {
                stream,
                len,
                ends_early,
            } => (stream, len, ends_early),
        };
        if len.is_some_and(|l| l > limit as u64) {
            return Err(too_large());
        }
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut total = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(read_error)?;
            total += chunk.len();
            if total > limit {
                return Err(too_large());
            }
            chunks.push(chunk);
        }
        // The engine checks lengths with its own filter; a body read without it still must
        // not pass for whole.
        if ends_early && len.is_some_and(|l| l != total as u64) {
            return Err(S3Error::new(
                S3ErrorCode::IncompleteBody,
                "You did not provide the number of bytes specified by the Content-Length HTTP header.",
            ));
        }
        Ok(join(chunks))
    }

    fn filter(self, mut filter: Box<dyn ByteFilter + Send>) -> Self {
        match self {
            // Buffered: decode and check now, so a refused body never reaches a backend.
            NativeBody::Empty => match filter_now(Bytes::new(), filter.as_mut()) {
                Ok(b) => Self::from_bytes(b),
                Err(e) => NativeBody::Failed(e),
            },
            NativeBody::Full(b) => match filter_now(b, filter.as_mut()) {
                Ok(b) => Self::from_bytes(b),
                Err(e) => NativeBody::Failed(e),
            },
            NativeBody::Failed(e) => NativeBody::Failed(e),
            // The filter may change the length (aws-chunked decoding): the result's is unknown.
            stream @ NativeBody::Stream { .. } => NativeBody::Stream {
                stream: Box::pin(filter_stream(stream.into_stream(), filter, BodyError::S3)),
                len: None,
                ends_early: false,
            },
        }
    }
}

impl http_body::Body for NativeBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match this {
            NativeBody::Empty => Poll::Ready(None),
            NativeBody::Full(b) => {
                let b = std::mem::take(b);
                *this = NativeBody::Empty;
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            NativeBody::Failed(e) => {
                let e = e.clone();
                *this = NativeBody::Empty;
                Poll::Ready(Some(Err(BodyError::S3(e))))
            }
            NativeBody::Stream { stream, .. } => stream
                .as_mut()
                .poll_next(cx)
                .map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, NativeBody::Empty)
    }

    fn size_hint(&self) -> SizeHint {
        match shared::body::Body::exact_len(self) {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use shared::body::{Body as _, Sha256Check};

    /// The engine's view: `shared::body::Body::collect` with a limit.
    async fn read(body: NativeBody, limit: usize) -> Result<Bytes, S3Error> {
        shared::body::Body::collect(body, limit).await
    }

    /// hyper's view: the frames `http_body::Body` yields.
    async fn frames(body: NativeBody) -> Bytes {
        http_body_util::BodyExt::collect(body)
            .await
            .unwrap()
            .to_bytes()
    }

    fn chunks(parts: &[&'static [u8]], len: Option<u64>) -> NativeBody {
        let parts: Vec<Result<Bytes, std::io::Error>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        NativeBody::from_stream(futures_util::stream::iter(parts), len)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn collect_joins_chunks_and_enforces_the_limit() {
        rt().block_on(async {
            assert_eq!(
                read(chunks(&[b"ab", b"cd"], None), 4).await.unwrap(),
                Bytes::from_static(b"abcd")
            );
            let err = read(chunks(&[b"ab", b"cd"], None), 3).await.unwrap_err();
            assert_eq!(err.code, S3ErrorCode::EntityTooLarge);
            // A declared length past the limit fails before reading anything.
            let err = read(chunks(&[b"ab"], Some(1000)), 10).await.unwrap_err();
            assert_eq!(err.code, S3ErrorCode::EntityTooLarge);
            let err = read(NativeBody::from_bytes(Bytes::from_static(b"12345")), 4)
                .await
                .unwrap_err();
            assert_eq!(err.code, S3ErrorCode::EntityTooLarge);
            assert_eq!(read(NativeBody::empty(), 0).await.unwrap(), Bytes::new());
        });
    }

    #[test]
    fn collect_reports_a_broken_stream_as_incomplete_body() {
        rt().block_on(async {
            let parts = vec![
                Ok(Bytes::from_static(b"ab")),
                Err(std::io::Error::other("reset")),
            ];
            let body = NativeBody::from_stream(futures_util::stream::iter(parts), Some(10));
            assert_eq!(
                read(body, 100).await.unwrap_err().code,
                S3ErrorCode::IncompleteBody
            );
        });
    }

    #[test]
    fn filter_applies_to_every_variant_and_its_error_ends_the_body() {
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(b"hello world").into();
        rt().block_on(async {
            let ok =
                chunks(&[b"hello ", b"world"], Some(11)).filter(Box::new(Sha256Check::new(digest)));
            assert_eq!(ok.exact_len(), None, "a filter may change the length");
            assert_eq!(
                read(ok, 100).await.unwrap(),
                Bytes::from_static(b"hello world")
            );

            let full = NativeBody::from_bytes(Bytes::from_static(b"hello world"))
                .filter(Box::new(Sha256Check::new(digest)));
            assert_eq!(
                read(full, 100).await.unwrap(),
                Bytes::from_static(b"hello world")
            );

            let bad =
                chunks(&[b"hello ", b"w0rld"], None).filter(Box::new(Sha256Check::new(digest)));
            assert_eq!(
                read(bad, 100).await.unwrap_err().code,
                S3ErrorCode::XAmzContentSHA256Mismatch
            );

            // An empty body still runs the filter's final check.
            let empty = NativeBody::empty().filter(Box::new(Sha256Check::new(digest)));
            assert_eq!(
                read(empty, 100).await.unwrap_err().code,
                S3ErrorCode::XAmzContentSHA256Mismatch
            );
        });
    }

    #[test]
    fn http_body_reports_exact_size_and_streams_frames() {
        rt().block_on(async {
            let body = chunks(&[b"abc", b"de"], Some(5));
            assert_eq!(http_body::Body::size_hint(&body).exact(), Some(5));
            assert_eq!(frames(body).await, Bytes::from_static(b"abcde"));

            let full = NativeBody::from_bytes(Bytes::from_static(b"xyz"));
            assert_eq!(http_body::Body::size_hint(&full).exact(), Some(3));
            assert_eq!(frames(full).await, Bytes::from_static(b"xyz"));

            let empty = NativeBody::empty();
            assert!(http_body::Body::is_end_stream(&empty));
            assert_eq!(http_body::Body::size_hint(&empty).exact(), Some(0));
        });
    }

    #[test]
    fn zero_length_streams_are_empty() {
        assert!(matches!(chunks(&[], Some(0)), NativeBody::Empty));
        assert_eq!(chunks(&[b"a"], None).exact_len(), None);
    }

    /// Serves one request whose body goes through `client_request` and `check`, and returns
    /// what `check` made of it. `send` is what the client writes before it half-closes (or
    /// not, if `close` is false).
    async fn client_body(
        send: &'static [u8],
        close: bool,
        read_timeout: Duration,
    ) -> (Option<u64>, Result<Bytes, S3Error>) {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = std::sync::Arc::new(std::sync::Mutex::new(Some(tx)));
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let body = NativeBody::client_request(req.into_body(), Some(read_timeout));
                        let len = body.length_to_verify();
                        // The engine's object_body: the length check as a filter.
                        let body = match len {
                            Some(n) => {
                                body.filter(Box::new(shared::body::LengthCheck::new(n, None)))
                            }
                            None => body,
                        };
                        let result = read(body, 1000).await;
                        if let Some(tx) = tx.lock().unwrap().take() {
                            let _ = tx.send((len, result));
                        }
                        Ok::<_, std::convert::Infallible>(http::Response::new(NativeBody::Empty))
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(socket), svc)
                .await;
        });
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(send).await.unwrap();
        if close {
            s.shutdown().await.unwrap();
        }
        let out = tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .unwrap()
            .unwrap();
        drop(s);
        out
    }

    #[tokio::test]
    async fn a_client_body_shorter_than_its_length_is_incomplete_body() {
        let (len, result) = client_body(
            b"PUT /b/k HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabcd",
            true,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(len, Some(10));
        assert_eq!(result.unwrap_err().code, S3ErrorCode::IncompleteBody);

        let (_, result) = client_body(
            b"PUT /b/k HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nabcd",
            true,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(result.unwrap(), Bytes::from_static(b"abcd"));

        // Chunked, cut short: no length to check, so the cut stays an error.
        let (len, result) = client_body(
            b"PUT /b/k HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n",
            true,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(len, None);
        assert_eq!(result.unwrap_err().code, S3ErrorCode::IncompleteBody);
    }

    #[tokio::test]
    async fn a_client_body_that_stops_is_request_timeout() {
        let started = std::time::Instant::now();
        let (_, result) = client_body(
            b"PUT /b/k HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabcd",
            false,
            Duration::from_millis(300),
        )
        .await;
        assert_eq!(result.unwrap_err().code, S3ErrorCode::RequestTimeout);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[test]
    fn a_refused_buffered_body_fails_at_once_and_keeps_its_length_when_accepted() {
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(b"hello").into();
        let ok = NativeBody::Full(Bytes::from_static(b"hello"))
            .filter(Box::new(Sha256Check::new(digest)));
        assert_eq!(
            ok.exact_len(),
            Some(5),
            "a buffered body keeps an exact length"
        );
        let bad = NativeBody::Full(Bytes::from_static(b"hellO"))
            .filter(Box::new(Sha256Check::new(digest)));
        match bad {
            NativeBody::Failed(e) => assert_eq!(e.code, S3ErrorCode::XAmzContentSHA256Mismatch),
            other => panic!("{other:?}"),
        }
    }
}
