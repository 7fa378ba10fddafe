//! [`LambdaBody`]: the engine's body type on Lambda.
//!
//! Lambda hands the function a request body already buffered, so client bodies are `Full`
//! and a filter (aws-chunked decoding, payload hash) runs over them at once. Backend responses
//! stream from reqwest until the adapter buffers them into Lambda's response payload.

use std::pin::Pin;

use bytes::Bytes;
use futures_core::Stream;
use futures_util::StreamExt;
use shared::body::{filter_stream, ByteFilter};
use shared::{S3Error, S3ErrorCode};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>;

pub enum LambdaBody {
    Empty,
    Full(Bytes),
    /// A buffered body that a filter refused (bad chunk signature, checksum): it must not be
    /// sent anywhere; the HTTP client answers the error without touching the backend.
    Failed(S3Error),
    Stream {
        stream: ByteStream,
        /// Known length (Content-Length of the message it came from).
        len: Option<u64>,
    },
}

impl std::fmt::Debug for LambdaBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LambdaBody::Empty => f.write_str("Empty"),
            LambdaBody::Full(b) => write!(f, "Full({} bytes)", b.len()),
            LambdaBody::Failed(e) => write!(f, "Failed({:?})", e.code),
            LambdaBody::Stream { len, .. } => write!(f, "Stream(len {len:?})"),
        }
    }
}

impl LambdaBody {
    /// A backend's response, streamed as it arrives. The length is hyper's view of the body
    /// (0 for a HEAD response, whatever its Content-Length header says).
    pub fn from_reqwest(response: reqwest::Response) -> http::Response<LambdaBody> {
        let response: http::Response<reqwest::Body> = response.into();
        let (parts, body) = response.into_parts();
        let len = http_body::Body::size_hint(&body).exact();
        let body = if len == Some(0) {
            LambdaBody::Empty
        } else {
            let stream =
                http_body_util::BodyDataStream::new(body).map(|r| r.map_err(BoxError::from));
            LambdaBody::Stream {
                stream: Box::pin(stream),
                len,
            }
        };
        http::Response::from_parts(parts, body)
    }

    fn into_stream(self) -> ByteStream {
        match self {
            LambdaBody::Empty => Box::pin(futures_util::stream::empty()),
            LambdaBody::Full(b) => Box::pin(futures_util::stream::once(async move { Ok(b) })),
            LambdaBody::Failed(e) => {
                Box::pin(futures_util::stream::once(
                    async move { Err(BoxError::from(e)) },
                ))
            }
            LambdaBody::Stream { stream, .. } => stream,
        }
    }
}

/// Runs `filter` over a whole buffered body.
fn filter_now(bytes: Bytes, filter: &mut dyn ByteFilter) -> Result<Bytes, S3Error> {
    let mut out = filter.push(bytes)?;
    out.extend(filter.finish()?);
    Ok(match out.len() {
        0 => Bytes::new(),
        1 => out.pop().unwrap_or_default(),
        _ => out.concat().into(),
    })
}

impl shared::body::Body for LambdaBody {
    fn empty() -> Self {
        LambdaBody::Empty
    }

    fn from_bytes(bytes: Bytes) -> Self {
        if bytes.is_empty() {
            LambdaBody::Empty
        } else {
            LambdaBody::Full(bytes)
        }
    }

    fn exact_len(&self) -> Option<u64> {
        match self {
            LambdaBody::Empty => Some(0),
            LambdaBody::Full(b) => Some(b.len() as u64),
            LambdaBody::Failed(_) => None,
            LambdaBody::Stream { len, .. } => *len,
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
            LambdaBody::Empty => return Ok(Bytes::new()),
            LambdaBody::Failed(e) => return Err(e),
            LambdaBody::Full(b) if b.len() > limit => return Err(too_large()),
            LambdaBody::Full(b) => return Ok(b),
            LambdaBody::Stream { stream, len } => (stream, len),
        };
        if len.is_some_and(|l| l > limit as u64) {
            return Err(too_large());
        }
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut total = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| match e.downcast::<S3Error>() {
                Ok(e) => *e,
                Err(e) => {
                    tracing::debug!(error = %e, "body ended early");
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
        Ok(match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.pop().unwrap_or_default(),
            _ => chunks.concat().into(),
        })
    }

    fn filter(self, mut filter: Box<dyn ByteFilter + Send>) -> Self {
        match self {
            // Buffered: decode and check now, so a bad body never reaches a backend.
            LambdaBody::Empty => match filter_now(Bytes::new(), filter.as_mut()) {
                Ok(b) => Self::from_bytes(b),
                Err(e) => LambdaBody::Failed(e),
            },
            LambdaBody::Full(b) => match filter_now(b, filter.as_mut()) {
                Ok(b) => Self::from_bytes(b),
                Err(e) => LambdaBody::Failed(e),
            },
            LambdaBody::Failed(e) => LambdaBody::Failed(e),
            stream @ LambdaBody::Stream { .. } => LambdaBody::Stream {
                stream: Box::pin(filter_stream(stream.into_stream(), filter, BoxError::from)),
                len: None,
            },
        }
    }
}

impl LambdaBody {
    /// The body for reqwest. `None` for a refused body.
    pub fn into_reqwest(self) -> Result<reqwest::Body, S3Error> {
        match self {
            LambdaBody::Empty => Ok(reqwest::Body::from(Bytes::new())),
            LambdaBody::Full(b) => Ok(reqwest::Body::from(b)),
            LambdaBody::Failed(e) => Err(e),
            LambdaBody::Stream { stream, .. } => Ok(reqwest::Body::wrap_stream(stream)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::body::{Body, Sha256Check};

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_refused_buffered_body_fails_at_once_and_is_never_sent() {
        let digest: [u8; 32] = sha2_of(b"hello");
        let ok = LambdaBody::Full(Bytes::from_static(b"hello"))
            .filter(Box::new(Sha256Check::new(digest)));
        assert_eq!(
            ok.exact_len(),
            Some(5),
            "a buffered body keeps an exact length"
        );
        assert_eq!(
            block_on(ok.collect(10)).unwrap(),
            Bytes::from_static(b"hello")
        );

        let bad = LambdaBody::Full(Bytes::from_static(b"hellO"))
            .filter(Box::new(Sha256Check::new(digest)));
        assert!(matches!(bad, LambdaBody::Failed(_)));
        let err = bad.into_reqwest().unwrap_err();
        assert_eq!(err.code, S3ErrorCode::XAmzContentSHA256Mismatch);
    }

    #[test]
    fn collect_honours_the_limit() {
        let body = LambdaBody::Full(Bytes::from(vec![0u8; 11]));
        assert_eq!(
            block_on(body.collect(10)).unwrap_err().code,
            S3ErrorCode::EntityTooLarge
        );
        let parts: Vec<Result<Bytes, BoxError>> = vec![
            Ok(Bytes::from_static(b"abc")),
            Ok(Bytes::from_static(b"def")),
        ];
        let body = LambdaBody::Stream {
            stream: Box::pin(futures_util::stream::iter(parts)),
            len: None,
        };
        assert_eq!(
            block_on(body.collect(5)).unwrap_err().code,
            S3ErrorCode::EntityTooLarge
        );
    }

    fn sha2_of(data: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(data).into()
    }
}
