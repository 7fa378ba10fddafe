//! The HTTP client trait the engine sends backend requests through.

use crate::body::Body;

/// A transport failure talking to a backend: connection refused, timeout, reset. The engine
/// logs it with its source and answers `ServiceUnavailable`; it never reaches the client.
#[derive(Debug, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct TransportError {
    pub kind: TransportErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportErrorKind {
    Connect,
    Timeout,
    Other,
}

impl TransportError {
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Sends one request to a backend. The request is complete: absolute URI, signed headers.
/// Implementations reuse pooled connections and set a connect timeout.
pub trait HttpClient {
    type Body: Body;
    async fn send(
        &self,
        request: ::http::Request<Self::Body>,
    ) -> Result<::http::Response<Self::Body>, TransportError>;
}

/// A request extension: the adapter's client gives up on the request after this long
/// (connect and first byte), answering `TransportErrorKind::Timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTimeout(pub std::time::Duration);
