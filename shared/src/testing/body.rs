//! [`MemBody`]: a whole-in-memory body for tests.

use bytes::Bytes;

use crate::body::{Body, ByteFilter};
use crate::error::{S3Error, S3ErrorCode};

/// How many bytes [`MemBody::filter`] feeds a filter at a time: small and odd, so incremental
/// filters see pieces that cut through their framing.
const FILTER_PIECE: usize = 7;

/// A body held whole in memory. The error state stands for a body stream that failed part way
/// (a filter rejected it, or the peer went away): reading it yields the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemBody {
    inner: Result<Bytes, S3Error>,
}

impl MemBody {
    /// A body whose stream fails with `error`.
    pub fn failed(error: S3Error) -> Self {
        Self { inner: Err(error) }
    }

    /// The bytes, or `None` for a failed body.
    pub fn bytes(&self) -> Option<&Bytes> {
        self.inner.as_ref().ok()
    }

    /// The error of a failed body.
    pub fn error(&self) -> Option<&S3Error> {
        self.inner.as_ref().err()
    }

    /// The bytes or the error, without a size limit.
    pub fn into_result(self) -> Result<Bytes, S3Error> {
        self.inner
    }

    /// The bytes as UTF-8 text (lossy), for assertions on XML answers; a failed body gives
    /// its error's `Display`.
    pub fn text(&self) -> String {
        match &self.inner {
            Ok(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Err(e) => e.to_string(),
        }
    }
}

impl From<Bytes> for MemBody {
    fn from(bytes: Bytes) -> Self {
        Self::from_bytes(bytes)
    }
}

impl From<&'static str> for MemBody {
    fn from(text: &'static str) -> Self {
        Self::from_bytes(Bytes::from_static(text.as_bytes()))
    }
}

impl From<Vec<u8>> for MemBody {
    fn from(bytes: Vec<u8>) -> Self {
        Self::from_bytes(Bytes::from(bytes))
    }
}

impl Body for MemBody {
    fn empty() -> Self {
        Self {
            inner: Ok(Bytes::new()),
        }
    }

    fn from_bytes(bytes: Bytes) -> Self {
        Self { inner: Ok(bytes) }
    }

    fn exact_len(&self) -> Option<u64> {
        self.inner.as_ref().ok().map(|b| b.len() as u64)
    }

    async fn collect(self, limit: usize) -> Result<Bytes, S3Error> {
        let bytes = self.inner?;
        if bytes.len() > limit {
            return Err(S3Error::new(
                S3ErrorCode::EntityTooLarge,
                "Your proposed upload exceeds the maximum allowed size",
            ));
        }
        Ok(bytes)
    }

    /// Runs the filter eagerly over the whole body, fed in pieces of 7 bytes.
    fn filter(self, mut filter: Box<dyn ByteFilter + Send>) -> Self {
        let input = match self.inner {
            Ok(bytes) => bytes,
            Err(e) => return Self::failed(e),
        };
        let mut output = Vec::with_capacity(input.len());
        let mut start = 0;
        while start < input.len() {
            let end = (start + FILTER_PIECE).min(input.len());
            match filter.push(input.slice(start..end)) {
                Ok(out) => out.iter().for_each(|b| output.extend_from_slice(b)),
                Err(e) => return Self::failed(e),
            }
            start = end;
        }
        match filter.finish() {
            Ok(out) => out.iter().for_each(|b| output.extend_from_slice(b)),
            Err(e) => return Self::failed(e),
        }
        Self::from_bytes(Bytes::from(output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_executor::block_on;

    /// Uppercases and records the size of every piece it is fed; fails on a `!`.
    struct Recorder {
        pieces: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
        finished_with: Option<&'static [u8]>,
    }

    impl ByteFilter for Recorder {
        fn push(&mut self, input: Bytes) -> Result<Vec<Bytes>, S3Error> {
            self.pieces.lock().unwrap().push(input.len());
            if input.contains(&b'!') {
                return Err(S3Error::new(S3ErrorCode::IncompleteBody, "bang"));
            }
            Ok(vec![Bytes::from(input.to_ascii_uppercase())])
        }
        fn finish(&mut self) -> Result<Vec<Bytes>, S3Error> {
            match self.finished_with {
                Some(tail) => Ok(vec![Bytes::from_static(tail)]),
                None => Err(S3Error::new(S3ErrorCode::BadDigest, "at the end")),
            }
        }
    }

    fn recorder(
        finish: Option<&'static [u8]>,
    ) -> (Box<Recorder>, std::sync::Arc<std::sync::Mutex<Vec<usize>>>) {
        let pieces = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        (
            Box::new(Recorder {
                pieces: pieces.clone(),
                finished_with: finish,
            }),
            pieces,
        )
    }

    #[test]
    fn filter_feeds_small_pieces_then_appends_finish_output() {
        let (f, pieces) = recorder(Some(b"<end>"));
        let body = MemBody::from("hello world, filtered").filter(f);
        assert_eq!(body.exact_len(), Some(26));
        assert_eq!(
            block_on(body.collect(100)).unwrap(),
            Bytes::from_static(b"HELLO WORLD, FILTERED<end>")
        );
        assert_eq!(*pieces.lock().unwrap(), vec![7, 7, 7]);
    }

    #[test]
    fn filter_error_in_push_or_finish_fails_the_body() {
        let (f, pieces) = recorder(Some(b""));
        let body = MemBody::from("abcdefgh!jklmnopq").filter(f);
        assert_eq!(body.exact_len(), None);
        assert_eq!(
            block_on(body.collect(100)).unwrap_err().code,
            S3ErrorCode::IncompleteBody
        );
        // It stopped at the failing piece.
        assert_eq!(pieces.lock().unwrap().len(), 2);

        let (f, _) = recorder(None);
        let err = block_on(MemBody::from("fine").filter(f).collect(100)).unwrap_err();
        assert_eq!(err.code, S3ErrorCode::BadDigest);
    }

    #[test]
    fn failed_body_stays_failed_through_filters() {
        let (f, pieces) = recorder(Some(b"x"));
        let body = MemBody::failed(S3Error::new(S3ErrorCode::IncompleteBody, "reset")).filter(f);
        assert_eq!(body.error().unwrap().code, S3ErrorCode::IncompleteBody);
        assert!(pieces.lock().unwrap().is_empty());
    }

    #[test]
    fn collect_enforces_the_limit() {
        let body = MemBody::from("0123456789");
        assert_eq!(block_on(body.clone().collect(10)).unwrap().len(), 10);
        assert_eq!(
            block_on(body.collect(9)).unwrap_err().code,
            S3ErrorCode::EntityTooLarge
        );
        assert_eq!(block_on(MemBody::empty().collect(0)).unwrap().len(), 0);
    }
}
