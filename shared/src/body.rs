//! Request and response bodies, abstracted over the runtimes.
//!
//! Each adapter has its own streaming body type (hyper's, a Worker `ReadableStream`, Lambda's
//! buffered body). The engine only needs to build small bodies, read small bodies (XML), pass
//! bodies through, and put a [`ByteFilter`] (aws-chunked decoding, payload hash check) in the
//! stream. [`filter_stream`] does the last for any `Stream` of bytes, so adapters stay thin.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;

use crate::error::S3Error;

/// A body type of one runtime.
pub trait Body: Sized {
    fn empty() -> Self;
    fn from_bytes(bytes: Bytes) -> Self;
    /// The exact length when known before reading (Content-Length or a buffered body).
    fn exact_len(&self) -> Option<u64>;
    /// Reads the whole body; fails with `EntityTooLarge` past `limit` bytes.
    async fn collect(self, limit: usize) -> Result<Bytes, S3Error>;
    /// The same body with `filter` applied to its bytes as they stream.
    fn filter(self, filter: Box<dyn ByteFilter + Send>) -> Self;
    /// The announced length the engine must check with [`LengthCheck`], for a body that can
    /// end before it without an error of its own: the server's adapter ends a client's body
    /// where the client closed early, so the engine can answer `IncompleteBody` as AWS does.
    /// `None` (the default) where the runtime fails a short body itself or buffers it whole.
    fn length_to_verify(&self) -> Option<u64> {
        None
    }
}

/// A pure, incremental transformation of a byte stream with constant memory: fed the input in
/// pieces, it returns the output available so far. An error ends the stream (the backend then
/// sees an incomplete body and stores nothing).
pub trait ByteFilter {
    /// Feeds the next piece of input; returns output that may be released now.
    fn push(&mut self, input: Bytes) -> Result<Vec<Bytes>, S3Error>;
    /// The input has ended; returns the held-back rest of the output, or the error that the
    /// stream as a whole fails with (truncated framing, checksum or signature mismatch).
    fn finish(&mut self) -> Result<Vec<Bytes>, S3Error>;
}

/// Applies a [`ByteFilter`] to a stream of byte chunks. `map_err` turns a filter error into the
/// stream's error type. The result is `Send` when the input stream is.
pub fn filter_stream<S, E, F>(
    inner: S,
    filter: Box<dyn ByteFilter + Send>,
    map_err: F,
) -> FilterStream<S, F>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    F: Fn(S3Error) -> E + Unpin,
{
    FilterStream {
        inner,
        filter,
        map_err,
        pending: std::collections::VecDeque::new(),
        done: false,
    }
}

/// See [`filter_stream`].
pub struct FilterStream<S, F> {
    inner: S,
    filter: Box<dyn ByteFilter + Send>,
    map_err: F,
    pending: std::collections::VecDeque<Bytes>,
    done: bool,
}

impl<S, E, F> Stream for FilterStream<S, F>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    F: Fn(S3Error) -> E + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(chunk) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(chunk)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(input))) => match this.filter.push(input) {
                    Ok(out) => this
                        .pending
                        .extend(out.into_iter().filter(|b| !b.is_empty())),
                    Err(e) => {
                        this.done = true;
                        return Poll::Ready(Some(Err((this.map_err)(e))));
                    }
                },
                Poll::Ready(None) => {
                    this.done = true;
                    match this.filter.finish() {
                        Ok(out) => this
                            .pending
                            .extend(out.into_iter().filter(|b| !b.is_empty())),
                        Err(e) => return Poll::Ready(Some(Err((this.map_err)(e)))),
                    }
                }
            }
        }
    }
}

/// Checks that a body hashes to the SHA-256 the client declared in `x-amz-content-sha256`.
/// The last piece is held back until the hash is known, so a mismatching body never reaches
/// the backend whole.
pub struct Sha256Check {
    hasher: sha2::Sha256,
    expected: [u8; 32],
    held: Option<Bytes>,
}

impl Sha256Check {
    pub fn new(expected: [u8; 32]) -> Self {
        Self {
            hasher: <sha2::Sha256 as sha2::Digest>::new(),
            expected,
            held: None,
        }
    }
}

impl ByteFilter for Sha256Check {
    fn push(&mut self, input: Bytes) -> Result<Vec<Bytes>, S3Error> {
        sha2::Digest::update(&mut self.hasher, &input);
        Ok(self.held.replace(input).into_iter().collect())
    }

    fn finish(&mut self) -> Result<Vec<Bytes>, S3Error> {
        let digest = sha2::Digest::finalize_reset(&mut self.hasher);
        if subtle::ConstantTimeEq::ct_eq(digest.as_slice(), &self.expected[..]).into() {
            Ok(self.held.take().into_iter().collect())
        } else {
            Err(S3Error::new(
                crate::S3ErrorCode::XAmzContentSHA256Mismatch,
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ))
        }
    }
}

/// Checks that a body carries exactly its announced length (Content-Length), then runs
/// `then` (the signature or checksum filter, if any) over the bytes. One filter for both, so a
/// checked body streams through one layer.
pub struct LengthCheck {
    announced: u64,
    seen: u64,
    then: Option<Box<dyn ByteFilter + Send>>,
}

impl LengthCheck {
    pub fn new(announced: u64, then: Option<Box<dyn ByteFilter + Send>>) -> Self {
        Self {
            announced,
            seen: 0,
            then,
        }
    }
}

impl ByteFilter for LengthCheck {
    fn push(&mut self, input: Bytes) -> Result<Vec<Bytes>, S3Error> {
        self.seen += input.len() as u64;
        if self.seen > self.announced {
            // HTTP framing makes this impossible on a real connection; a broken adapter must
            // still not pass more bytes than were signed for.
            return Err(S3Error::new(
                crate::S3ErrorCode::IncompleteBody,
                "The request body is longer than the Content-Length HTTP header.",
            ));
        }
        match &mut self.then {
            Some(then) => then.push(input),
            None => Ok(vec![input]),
        }
    }

    /// <https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html>: IncompleteBody,
    /// "You did not provide the number of bytes specified by the Content-Length HTTP header."
    fn finish(&mut self) -> Result<Vec<Bytes>, S3Error> {
        if self.seen < self.announced {
            return Err(S3Error::new(
                crate::S3ErrorCode::IncompleteBody,
                format!(
                    "You did not provide the number of bytes specified by the Content-Length HTTP header ({} of {} bytes arrived).",
                    self.seen, self.announced
                ),
            ));
        }
        match &mut self.then {
            Some(then) => then.finish(),
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn run(
        filter: Box<dyn ByteFilter + Send>,
        parts: &[&'static [u8]],
    ) -> Result<Vec<u8>, S3Error> {
        let input = futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok::<_, S3Error>(Bytes::from_static(p))),
        );
        let s = filter_stream(input, filter, |e| e);
        futures_executor::block_on(async move {
            let mut out = Vec::new();
            let mut s = s;
            while let Some(chunk) = s.next().await {
                out.extend_from_slice(&chunk?);
            }
            Ok(out)
        })
    }

    #[test]
    fn sha256_check_passes_matching_body_and_fails_other() {
        let digest: [u8; 32] = sha2::Digest::finalize(
            <sha2::Sha256 as sha2::Digest>::new_with_prefix(b"hello world"),
        )
        .into();
        assert_eq!(
            run(Box::new(Sha256Check::new(digest)), &[b"hello ", b"world"]).unwrap(),
            b"hello world"
        );
        let err = run(Box::new(Sha256Check::new(digest)), &[b"hello ", b"w0rld"]).unwrap_err();
        assert_eq!(err.code, crate::S3ErrorCode::XAmzContentSHA256Mismatch);
    }

    #[test]
    fn length_check_refuses_a_short_body_and_passes_an_exact_one() {
        assert_eq!(
            run(Box::new(LengthCheck::new(11, None)), &[b"hello ", b"world"]).unwrap(),
            b"hello world"
        );
        let err = run(Box::new(LengthCheck::new(12, None)), &[b"hello ", b"world"]).unwrap_err();
        assert_eq!(err.code, crate::S3ErrorCode::IncompleteBody);
        assert!(err.message.contains("11 of 12"), "{}", err.message);
        let err = run(Box::new(LengthCheck::new(5, None)), &[b"hello ", b"world"]).unwrap_err();
        assert_eq!(err.code, crate::S3ErrorCode::IncompleteBody);
    }

    #[test]
    fn length_check_runs_the_next_filter_after_its_own_check() {
        let digest: [u8; 32] = sha2::Digest::finalize(
            <sha2::Sha256 as sha2::Digest>::new_with_prefix(b"hello world"),
        )
        .into();
        let both = |len| {
            Box::new(LengthCheck::new(
                len,
                Some(Box::new(Sha256Check::new(digest))),
            ))
        };
        assert_eq!(
            run(both(11), &[b"hello ", b"world"]).unwrap(),
            b"hello world"
        );
        // Short: the length is what the client hears about, not the hash that follows from it.
        let err = run(both(20), &[b"hello ", b"world"]).unwrap_err();
        assert_eq!(err.code, crate::S3ErrorCode::IncompleteBody);
        let err = run(both(11), &[b"hello ", b"w0rld"]).unwrap_err();
        assert_eq!(err.code, crate::S3ErrorCode::XAmzContentSHA256Mismatch);
    }
}
