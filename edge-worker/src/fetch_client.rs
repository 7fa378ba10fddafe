//! [`HttpClient`] on the Workers `fetch` API, and the Worker's body type.
//!
//! Bodies stay JavaScript streams wherever the engine only passes them through: a backend's
//! GET response goes to the client as the same `ReadableStream`, and an unfiltered request
//! body goes to the backend piped through a `FixedLengthStream` (so it carries a
//! Content-Length, which S3 requires), never entering wasm memory. Bodies the engine filters
//! (aws-chunked decoding, payload hash check) stream through wasm chunk by chunk.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderName, HeaderValue};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::web_sys::ReadableStream;
use worker::{
    AbortController, ByteStream, Delay, Fetch, Headers, RequestInit, RequestRedirect, ResponseBody,
};

use shared::body::{filter_stream, Body, ByteFilter};
use shared::error::{S3Error, S3ErrorCode};
use shared::http::{HttpClient, RequestTimeout, TransportError, TransportErrorKind};

type RustStream = Pin<Box<dyn Stream<Item = Result<Bytes, S3Error>>>>;

/// A body on the Worker.
pub enum WorkerBody {
    Empty,
    Bytes(Bytes),
    /// A JavaScript stream, untouched (request body or backend response body).
    Js {
        stream: ReadableStream,
        len: Option<u64>,
    },
    /// Bytes flowing through wasm (after a filter).
    Rust {
        stream: RustStream,
        len: Option<u64>,
    },
}

impl WorkerBody {
    pub fn from_js(stream: Option<ReadableStream>, len: Option<u64>) -> Self {
        match stream {
            Some(stream) => WorkerBody::Js { stream, len },
            None => WorkerBody::Empty,
        }
    }

    fn into_rust_stream(self) -> RustStream {
        match self {
            WorkerBody::Empty => Box::pin(futures_util::stream::empty()),
            WorkerBody::Bytes(b) => Box::pin(futures_util::stream::iter([Ok(b)])),
            WorkerBody::Js { stream, .. } => {
                Box::pin(ByteStream::from(stream).map_ok(Bytes::from).map_err(|e| {
                    S3Error::new(
                        S3ErrorCode::IncompleteBody,
                        format!("reading the body failed: {e}"),
                    )
                }))
            }
            WorkerBody::Rust { stream, .. } => stream,
        }
    }

    /// The body as a JavaScript value for `fetch` or a `Response`: `None` when empty. With
    /// `fixed_len`, a stream is given that exact length (a `FixedLengthStream`): the runtime
    /// then sends Content-Length instead of chunked encoding, and fails the request when the
    /// stream's length differs.
    pub fn into_js(self, fixed_len: Option<u64>) -> Result<Option<JsValue>, worker::Error> {
        match self {
            WorkerBody::Empty => Ok(None),
            WorkerBody::Bytes(b) if b.is_empty() => Ok(None),
            WorkerBody::Bytes(b) => Ok(Some(worker::js_sys::Uint8Array::from(b.as_ref()).into())),
            WorkerBody::Js { stream, len } => match fixed_len.or(len) {
                Some(n) => {
                    let fixed = fixed_length_stream(n)?;
                    let transform: &worker::web_sys::TransformStream = fixed.unchecked_ref();
                    // Runs in the background for as long as the request lives.
                    let _ = stream.pipe_to(&transform.writable());
                    Ok(Some(transform.readable().into()))
                }
                None => Ok(Some(stream.into())),
            },
            WorkerBody::Rust { stream, len } => {
                let chunks = stream.map(|r| {
                    r.map(|b| b.to_vec())
                        .map_err(|e| worker::Error::RustError(e.to_string()))
                });
                match fixed_len.or(len) {
                    Some(n) => {
                        let fixed: worker::worker_sys::FixedLengthStream =
                            worker::FixedLengthStream::wrap(chunks, n).into();
                        let transform: &worker::web_sys::TransformStream = fixed.unchecked_ref();
                        Ok(Some(transform.readable().into()))
                    }
                    None => {
                        // A ReadableStream fed from Rust, borrowed from a streaming Response.
                        let response = worker::Response::from_stream(chunks)?;
                        match response.body() {
                            ResponseBody::Stream(s) => Ok(Some(s.clone().into())),
                            _ => Ok(None),
                        }
                    }
                }
            }
        }
    }
}

fn fixed_length_stream(n: u64) -> Result<worker::worker_sys::FixedLengthStream, worker::Error> {
    let made = if n < u32::MAX as u64 {
        worker::worker_sys::FixedLengthStream::new(n as u32)
    } else {
        worker::worker_sys::FixedLengthStream::new_big_int(worker::js_sys::BigInt::from(n))
    };
    made.map_err(worker::Error::from)
}

impl Body for WorkerBody {
    fn empty() -> Self {
        WorkerBody::Empty
    }

    fn from_bytes(bytes: Bytes) -> Self {
        WorkerBody::Bytes(bytes)
    }

    fn exact_len(&self) -> Option<u64> {
        match self {
            WorkerBody::Empty => Some(0),
            WorkerBody::Bytes(b) => Some(b.len() as u64),
            WorkerBody::Js { len, .. } | WorkerBody::Rust { len, .. } => *len,
        }
    }

    async fn collect(self, limit: usize) -> Result<Bytes, S3Error> {
        if let WorkerBody::Bytes(b) = &self {
            if b.len() > limit {
                return Err(too_large(limit));
            }
            return Ok(b.clone());
        }
        if self.exact_len().is_some_and(|n| n > limit as u64) {
            return Err(too_large(limit));
        }
        let mut stream = self.into_rust_stream();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if out.len() + chunk.len() > limit {
                return Err(too_large(limit));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    }

    fn filter(self, filter: Box<dyn ByteFilter + Send>) -> Self {
        let inner = self.into_rust_stream();
        WorkerBody::Rust {
            stream: Box::pin(filter_stream(inner, filter, |e| e)),
            len: None,
        }
    }
}

fn too_large(limit: usize) -> S3Error {
    S3Error::new(
        S3ErrorCode::EntityTooLarge,
        format!("Your proposed upload exceeds the maximum allowed size of {limit} bytes."),
    )
}

/// Header values are byte strings; JavaScript's Headers hold them as Latin-1 strings.
pub fn header_to_js(value: &HeaderValue) -> String {
    value.as_bytes().iter().map(|&b| b as char).collect()
}

pub fn header_from_js(value: &str) -> Option<HeaderValue> {
    let bytes: Option<Vec<u8>> = value.chars().map(|c| u8::try_from(c as u32).ok()).collect();
    match bytes {
        Some(b) => HeaderValue::from_bytes(&b).ok(),
        // Not a byte string: keep its UTF-8.
        None => HeaderValue::from_str(value).ok(),
    }
}

pub fn headers_to_js(map: &HeaderMap) -> Result<Headers, worker::Error> {
    let headers = Headers::new();
    for (name, value) in map {
        headers.append(name.as_str(), &header_to_js(value))?;
    }
    Ok(headers)
}

pub fn headers_from_js(headers: &Headers) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers.entries() {
        if let (Ok(n), Some(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            header_from_js(&value),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// Sends backend requests with `fetch`, redirects not followed (a 3xx from a backend is its
/// answer). A [`RequestTimeout`] extension aborts the request when no response head arrived in
/// time.
#[derive(Debug, Default, Clone, Copy)]
pub struct FetchClient;

impl HttpClient for FetchClient {
    type Body = WorkerBody;

    async fn send(
        &self,
        request: http::Request<WorkerBody>,
    ) -> Result<http::Response<WorkerBody>, TransportError> {
        let other =
            |e: worker::Error| TransportError::new(TransportErrorKind::Other, e.to_string());
        let (parts, body) = request.into_parts();
        let timeout = parts.extensions.get::<RequestTimeout>().map(|t| t.0);
        let length = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let method = worker::Method::from(parts.method.as_str().to_owned());
        let mut init = RequestInit::new();
        init.with_method(method)
            .with_redirect(RequestRedirect::Manual)
            .with_headers(headers_to_js(&parts.headers).map_err(other)?);
        let js_body = body.into_js(length).map_err(other)?;
        init.with_body(js_body);
        let request =
            worker::Request::new_with_init(&parts.uri.to_string(), &init).map_err(other)?;
        let controller = AbortController::default();
        let signal = controller.signal();
        let fetch = Fetch::Request(request);
        let sent = fetch.send_with_signal(&signal);
        let response = match timeout {
            Some(t) => {
                let delay = Delay::from(t);
                futures_util::pin_mut!(sent);
                futures_util::pin_mut!(delay);
                match futures_util::future::select(sent, delay).await {
                    futures_util::future::Either::Left((r, _)) => r,
                    futures_util::future::Either::Right(_) => {
                        controller.abort();
                        return Err(TransportError::new(
                            TransportErrorKind::Timeout,
                            format!("no response within {t:?}"),
                        ));
                    }
                }
            }
            None => sent.await,
        };
        let response = response.map_err(|e| {
            let message = e.to_string();
            let kind = if message.contains("connect") || message.contains("Network connection lost")
            {
                TransportErrorKind::Connect
            } else {
                TransportErrorKind::Other
            };
            TransportError::new(kind, message)
        })?;
        let headers = headers_from_js(response.headers());
        let len = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = match response.body() {
            ResponseBody::Empty => WorkerBody::Empty,
            ResponseBody::Body(b) => WorkerBody::Bytes(Bytes::from(b.clone())),
            ResponseBody::Stream(s) => WorkerBody::Js {
                stream: s.clone(),
                len,
            },
        };
        let mut out = http::Response::new(body);
        *out.status_mut() = http::StatusCode::from_u16(response.status_code())
            .map_err(|e| TransportError::new(TransportErrorKind::Other, e.to_string()))?;
        *out.headers_mut() = headers;
        Ok(out)
    }
}
