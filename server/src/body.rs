//! [`ServerBody`]: the server's streaming body, for requests from clients, requests to
//! backends and responses both ways. Chunks pass through as `Bytes` (reference-counted), so a
//! large object streams with constant memory and no copying.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use futures_util::StreamExt;
use http_body::{Frame, SizeHint};
use shared::body::{filter_stream, ByteFilter};
use shared::{S3Error, S3ErrorCode};

/// Why a body stream ended early: a filter's verdict (signature, checksum) or the transport.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{0}")]
    S3(S3Error),
    #[error("body stream: {0}")]
    Transport(Box<dyn std::error::Error + Send + Sync>),
}

pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BodyError>> + Send>>;

pub enum ServerBody {
    Empty,
    Full(Bytes),
    Stream {
        stream: ByteStream,
        /// Known length (Content-Length of the message it came from).
        len: Option<u64>,
    },
}

impl std::fmt::Debug for ServerBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerBody::Empty => f.write_str("Empty"),
            ServerBody::Full(b) => write!(f, "Full({} bytes)", b.len()),
            ServerBody::Stream { len, .. } => write!(f, "Stream(len {len:?})"),
        }
    }
}

impl ServerBody {
    pub fn from_stream<S, E>(stream: S, len: Option<u64>) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if len == Some(0) {
            // Dropping the stream is fine: a zero-length body has nothing left to read.
            return ServerBody::Empty;
        }
        let stream = stream.map(|r| r.map_err(|e| BodyError::Transport(e.into())));
        ServerBody::Stream {
            stream: Box::pin(stream),
            len,
        }
    }

    /// A body as hyper received it, a client's request or a backend's response. The length is
    /// hyper's view of the body: Content-Length, or 0 for a HEAD response whatever its header
    /// says. Chunks stream through as they arrive.
    pub fn from_incoming(body: hyper::body::Incoming) -> Self {
        let len = http_body::Body::size_hint(&body).exact();
        Self::from_stream(http_body_util::BodyDataStream::new(body), len)
    }

    /// Turns the body into a stream of chunks, whatever its variant.
    pub fn into_stream(self) -> ByteStream {
        match self {
            ServerBody::Empty => Box::pin(futures_util::stream::empty()),
            ServerBody::Full(b) => Box::pin(futures_util::stream::once(async move { Ok(b) })),
            ServerBody::Stream { stream, .. } => stream,
        }
    }
}

impl shared::body::Body for ServerBody {
    fn empty() -> Self {
        ServerBody::Empty
    }

    fn from_bytes(bytes: Bytes) -> Self {
        if bytes.is_empty() {
            ServerBody::Empty
        } else {
            ServerBody::Full(bytes)
        }
    }

    fn exact_len(&self) -> Option<u64> {
        match self {
            ServerBody::Empty => Some(0),
            ServerBody::Full(b) => Some(b.len() as u64),
            ServerBody::Stream { len, .. } => *len,
        }
    }

    async fn collect(self, limit: usize) -> Result<Bytes, S3Error> {
        let too_large = || {
            S3Error::new(
                S3ErrorCode::EntityTooLarge,
                format!("The body exceeds the limit of {limit} bytes."),
            )
        };
        let (mut stream, len) = match self {
            ServerBody::Empty => return Ok(Bytes::new()),
            ServerBody::Full(b) if b.len() > limit => return Err(too_large()),
            ServerBody::Full(b) => return Ok(b),
            ServerBody::Stream { stream, len } => (stream, len),
        };
        if len.is_some_and(|l| l > limit as u64) {
            return Err(too_large());
        }
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut total = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| match e {
                BodyError::S3(e) => e,
                BodyError::Transport(e) => {
                    tracing::debug!(error = %e, "request body ended early");
                    S3Error::new(
                        S3ErrorCode::IncompleteBody,
                        "The request body terminated unexpectedly.",
                    )
                }
            })?;
            total += chunk.len();
            if total > limit {
                return Err(too_large());
            }
            chunks.push(chunk);
        }
        // One chunk (the usual case for small XML bodies) is returned as is, without a copy.
        Ok(match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.pop().unwrap_or_default(),
            _ => chunks.concat().into(),
        })
    }

    fn filter(self, filter: Box<dyn ByteFilter + Send>) -> Self {
        // The filter may change the length (aws-chunked decoding): the result's is unknown.
        let stream = filter_stream(self.into_stream(), filter, BodyError::S3);
        ServerBody::Stream {
            stream: Box::pin(stream),
            len: None,
        }
    }
}

impl http_body::Body for ServerBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match this {
            ServerBody::Empty => Poll::Ready(None),
            ServerBody::Full(b) => {
                let b = std::mem::take(b);
                *this = ServerBody::Empty;
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            ServerBody::Stream { stream, .. } => stream
                .as_mut()
                .poll_next(cx)
                .map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ServerBody::Empty)
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
    async fn read(body: ServerBody, limit: usize) -> Result<Bytes, S3Error> {
        shared::body::Body::collect(body, limit).await
    }

    /// hyper's view: the frames `http_body::Body` yields.
    async fn frames(body: ServerBody) -> Bytes {
        http_body_util::BodyExt::collect(body)
            .await
            .unwrap()
            .to_bytes()
    }

    fn chunks(parts: &[&'static [u8]], len: Option<u64>) -> ServerBody {
        let parts: Vec<Result<Bytes, std::io::Error>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        ServerBody::from_stream(futures_util::stream::iter(parts), len)
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
            let err = read(ServerBody::from_bytes(Bytes::from_static(b"12345")), 4)
                .await
                .unwrap_err();
            assert_eq!(err.code, S3ErrorCode::EntityTooLarge);
            assert_eq!(read(ServerBody::empty(), 0).await.unwrap(), Bytes::new());
        });
    }

    #[test]
    fn collect_reports_a_broken_stream_as_incomplete_body() {
        rt().block_on(async {
            let parts = vec![
                Ok(Bytes::from_static(b"ab")),
                Err(std::io::Error::other("reset")),
            ];
            let body = ServerBody::from_stream(futures_util::stream::iter(parts), Some(10));
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

            let full = ServerBody::from_bytes(Bytes::from_static(b"hello world"))
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
            let empty = ServerBody::empty().filter(Box::new(Sha256Check::new(digest)));
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

            let full = ServerBody::from_bytes(Bytes::from_static(b"xyz"));
            assert_eq!(http_body::Body::size_hint(&full).exact(), Some(3));
            assert_eq!(frames(full).await, Bytes::from_static(b"xyz"));

            let empty = ServerBody::empty();
            assert!(http_body::Body::is_end_stream(&empty));
            assert_eq!(http_body::Body::size_hint(&empty).exact(), Some(0));
        });
    }

    #[test]
    fn zero_length_streams_are_empty() {
        assert!(matches!(chunks(&[], Some(0)), ServerBody::Empty));
        assert_eq!(chunks(&[b"a"], None).exact_len(), None);
    }
}
