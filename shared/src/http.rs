//! The HTTP client trait the engine sends backend requests through.

use crate::body::Body;

/// A transport failure talking to a backend: connection refused, timeout, stall, reset. The
/// engine logs it with its source and answers `ServiceUnavailable`; it never reaches the client.
/// The kind says which phase failed, so that passive health can count the backend's failures
/// (every kind but [`TransportErrorKind::RequestBody`]).
#[derive(Debug, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct TransportError {
    pub kind: TransportErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportErrorKind {
    /// No connection: refused, unreachable, DNS, TLS handshake, or not established within the
    /// connect timeout.
    Connect,
    /// Connected and the request sent, but no response headers within the first-byte timeout
    /// (or the request's [`RequestTimeout`]).
    Timeout,
    /// A body stopped moving for the stall timeout: the backend took no more bytes of the
    /// request, or sent no more bytes of its response.
    Stall,
    /// The request body failed on the gateway's side (the client's upload broke off, stalled
    /// or failed a check) while it was being sent: not the backend's fault.
    RequestBody,
    /// Anything else: reset, closed mid-response, protocol error.
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

/// A `Content-Length` value. `HeaderValue::from(u64)` formats into a growable buffer it then
/// freezes (two allocations' worth of work, ~500 instructions); this is one copy of the digits.
pub fn content_length_value(len: u64) -> ::http::HeaderValue {
    ::http::HeaderValue::from_str(itoa::Buffer::new().format(len))
        .unwrap_or_else(|_| ::http::HeaderValue::from(len))
}

#[cfg(test)]
mod tests {
    #[test]
    fn content_length_is_the_decimal_length() {
        for n in [0, 7, 4096, 1 << 40, u64::MAX] {
            assert_eq!(super::content_length_value(n), ::http::HeaderValue::from(n));
        }
    }
}
