//! [`ReqwestClient`]: backend requests from Lambda (reqwest with rustls, pooled across the
//! invocations one warm instance serves).

use std::time::Duration;

use http::header::CONTENT_LENGTH;
use shared::body::Body as _;
use shared::http::{HttpClient, RequestTimeout, TransportError, TransportErrorKind};

use crate::body::LambdaBody;

#[derive(Clone)]
pub struct ReqwestClient {
    client: reqwest::Client,
}

impl ReqwestClient {
    pub fn new() -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            // Lambda freezes idle instances; a pooled connection may be dead when it thaws.
            .pool_idle_timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .use_rustls_tls()
            .build()?;
        Ok(Self { client })
    }
}

fn transport_error(host: &str, e: &reqwest::Error) -> TransportError {
    let kind = if e.is_timeout() {
        TransportErrorKind::Timeout
    } else if e.is_connect() {
        TransportErrorKind::Connect
    } else {
        TransportErrorKind::Other
    };
    // The innermost cause; reqwest's own message carries the URL (and a presigned signature).
    let mut cause: &dyn std::error::Error = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    TransportError::new(kind, format!("{host}: {cause}"))
}

impl HttpClient for ReqwestClient {
    type Body = LambdaBody;

    async fn send(
        &self,
        request: http::Request<LambdaBody>,
    ) -> Result<http::Response<LambdaBody>, TransportError> {
        let (parts, body) = request.into_parts();
        let host = parts
            .uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let url = reqwest::Url::parse(&parts.uri.to_string()).map_err(|e| {
            TransportError::new(TransportErrorKind::Other, format!("bad backend URL: {e}"))
        })?;
        let timeout = parts.extensions.get::<RequestTimeout>().map(|t| t.0);
        let mut req = reqwest::Request::new(parts.method.clone(), url);
        *req.headers_mut() = parts.headers;
        // S3 requires Content-Length on PUT: never let reqwest fall back to chunked.
        if let (Some(len), false) = (body.exact_len(), req.headers().contains_key(CONTENT_LENGTH)) {
            if len > 0
                || !matches!(
                    parts.method,
                    http::Method::GET | http::Method::HEAD | http::Method::DELETE
                )
            {
                req.headers_mut().insert(CONTENT_LENGTH, len.into());
            }
        }
        let has_body = !matches!(body, LambdaBody::Empty);
        if has_body || req.headers().contains_key(CONTENT_LENGTH) {
            // A refused body (bad chunk signature or checksum) goes nowhere.
            let body = body.into_reqwest().map_err(|e| {
                TransportError::new(
                    TransportErrorKind::Other,
                    format!("request body refused before sending to {host}: {}", e.code),
                )
            })?;
            *req.body_mut() = Some(body);
        }
        let send = self.client.execute(req);
        // Connect and response headers only: the body then streams as long as it needs.
        let response = match timeout {
            Some(t) => tokio::time::timeout(t, send).await.map_err(|_| {
                TransportError::new(
                    TransportErrorKind::Timeout,
                    format!("{host}: no response within {} ms", t.as_millis()),
                )
            })?,
            None => send.await,
        }
        .map_err(|e| transport_error(&host, &e))?;
        Ok(LambdaBody::from_reqwest(response))
    }
}
