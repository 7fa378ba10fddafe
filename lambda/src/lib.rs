//! S3 Balance on AWS Lambda: the adapter between Lambda events and the shared engine.
//!
//! Two thin binaries use it: `s3-balance-http` (function URL or HTTP API payload v2, through
//! `lambda_http`) and `s3-balance-health` (EventBridge schedule: health probes and the usage
//! scan, snapshots stored in DynamoDB, where every HTTP instance reads them).
//!
//! Lambda buffers payloads: a request or response is at most 6 MB of JSON, and binary bodies
//! travel base64-encoded, so about 4.5 MB of raw body fits. Larger request bodies are refused
//! with `EntityTooLarge` before any backend is touched; larger proxied GET responses are
//! answered with a 307 to a presigned backend URL instead ([`App::handle_http`]).

#![forbid(unsafe_code)]

pub mod setup;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use lambda_http::RequestExt;
use shared::body::Body as _;
use shared::config::{Config, DataPathMode, MetadataBackend, Warnings};
use shared::engine::{error_response, Budget, ConfigUpdate, Engine, RequestContext};
use shared::http::HttpClient;
use shared::store::MetadataStore;
use shared::{S3Error, S3ErrorCode};

pub use dynamo_store::DynamoStore;

/// Raw request body bytes that fit Lambda's 6 MB (6,291,456-byte) payload once base64-encoded
/// (x 4/3 = 6,000,000), with about 290 KB left for headers and the JSON envelope.
pub const MAX_BODY_BYTES: u64 = 4_500_000;
/// The largest response body the HTTP function buffers; larger proxied GETs are redirected.
/// Binary responses are base64-encoded too, so the same arithmetic applies.
pub const MAX_RESPONSE_BYTES: u64 = 4_500_000;
/// How often a warm instance re-reads the `config` document and the health/usage snapshot.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// The table document that overrides `S3_BALANCE_CONFIG` (hot switch without a deploy).
pub const CONFIG_DOCUMENT: &str = "config";

/// Parses a config document by the one rule of [`Config::from_text`] (no file name: TOML
/// when it is TOML, else YAML), `${VAR}` references filled from `env` first.
pub fn parse_config(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Config, Warnings), String> {
    Config::from_text(None, text, env).map_err(|e| e.to_string())
}

/// What the Lambda runtime changes in any loaded config: the metadata is this table, and
/// request bodies are capped at what a Lambda payload carries (a lower configured cap stays).
pub fn for_lambda(mut config: Config, table: &str) -> Config {
    config.metadata = MetadataBackend::DynamoDb {
        table: table.to_owned(),
    };
    config.api.max_body_bytes = Some(
        config
            .api
            .max_body_bytes
            .map_or(MAX_BODY_BYTES, |m| m.min(MAX_BODY_BYTES)),
    );
    config
}

/// The same config with every read redirected: the fallback for objects too large to proxy.
fn redirecting_reads(config: &Config) -> Config {
    let mut c = config.clone();
    c.default_reads = DataPathMode::Redirect;
    for b in &mut c.virtual_buckets {
        b.reads = DataPathMode::Redirect;
    }
    c
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[derive(Default)]
struct Refresh {
    last: Option<Instant>,
    redirect_last: Option<Instant>,
    /// The `config` document text now applied; `None`: the environment's config.
    applied_document: Option<String>,
}

/// One warm Lambda instance: the engine, plus a second engine over the same store and client
/// that redirects every read (used when a proxied object would not fit in a response).
pub struct App<S, C> {
    engine: Engine<S, C>,
    redirect: Engine<S, C>,
    base: Arc<Config>,
    table: String,
    refresh: Mutex<Refresh>,
}

impl<S: MetadataStore + Clone, C: HttpClient + Clone> App<S, C> {
    /// `base` is the config from `S3_BALANCE_CONFIG`; a `config` document in the table
    /// overrides it from the first refresh on.
    pub fn new(base: Config, table: &str, store: S, client: C) -> Self {
        let base = Arc::new(for_lambda(base, table));
        Self {
            engine: Engine::new(base.clone(), store.clone(), client.clone()),
            redirect: Engine::new(Arc::new(redirecting_reads(&base)), store, client),
            base,
            table: table.to_owned(),
            refresh: Mutex::new(Refresh::default()),
        }
    }

    pub fn engine(&self) -> &Engine<S, C> {
        &self.engine
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Refresh> {
        self.refresh.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn apply(&self, config: Arc<Config>) {
        self.redirect
            .set_config(Arc::new(redirecting_reads(&config)));
        self.engine.set_config(config);
    }

    /// Re-reads the `config` document; applies it when it changed and parses, reverts to the
    /// environment's config when it was deleted. A broken document is logged and ignored.
    pub async fn reload_config(&self) {
        let document = match self.engine.store().get_document(CONFIG_DOCUMENT).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the config document; keeping the running config");
                return;
            }
        };
        let applied = self.lock().applied_document.clone();
        if document == applied {
            return;
        }
        match &document {
            None => {
                tracing::info!("config document removed: back to S3_BALANCE_CONFIG");
                self.apply(self.base.clone());
            }
            Some(text) => match self
                .engine
                .apply_config_text(None, text, &env_var, &|config| {
                    for_lambda(config, &self.table)
                }) {
                ConfigUpdate::Unchanged => {}
                ConfigUpdate::Applied { warnings, .. } => {
                    for w in warnings {
                        tracing::warn!(warning = %w, "config document");
                    }
                    tracing::info!("config document applied");
                    // The redirecting engine follows the engine.
                    self.apply(self.engine.config());
                }
                ConfigUpdate::Rejected(e) => {
                    tracing::error!(error = %e, "config document is invalid; keeping the running config");
                }
            },
        }
        self.lock().applied_document = document;
    }

    /// Config, health, usage and operation counts, at most every [`REFRESH_EVERY`]: a warm
    /// instance picks up a config switch or an unhealthy backend within seconds.
    pub async fn refresh_if_stale(&self) {
        if self
            .lock()
            .last
            .is_some_and(|t| t.elapsed() < REFRESH_EVERY)
        {
            return;
        }
        self.reload_config().await;
        if let Err(e) = self.engine.refresh(SystemTime::now()).await {
            tracing::warn!(error = %e, "state refresh failed; serving with the previous snapshot");
        }
        self.lock().last = Some(Instant::now());
    }

    async fn refresh_redirect_if_stale(&self) {
        if self
            .lock()
            .redirect_last
            .is_some_and(|t| t.elapsed() < REFRESH_EVERY)
        {
            return;
        }
        if let Err(e) = self.redirect.refresh(SystemTime::now()).await {
            tracing::warn!(error = %e, "state refresh failed");
        }
        self.lock().redirect_last = Some(Instant::now());
    }

    /// Serves one HTTP request of the function URL or HTTP API.
    pub async fn handle_http(
        &self,
        request: lambda_http::Request,
    ) -> lambda_http::Response<lambda_http::Body> {
        let started = Instant::now();
        self.refresh_if_stale().await;
        let request_id = request
            .lambda_context_ref()
            .map(|c| c.request_id.clone())
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| format!("{:016X}", rand::random::<u64>()));
        let ctx = RequestContext {
            now: SystemTime::now(),
            request_id,
            random: rand::random(),
        };
        let (request, body) = match to_engine_request(request) {
            Ok(r) => r,
            Err(e) => {
                return to_lambda_response(error_response::<C::Body>(&e, &ctx.request_id, false))
                    .await
            }
        };
        let is_head = request.method() == Method::HEAD;
        if body.len() as u64 > MAX_BODY_BYTES {
            let e = too_large(body.len() as u64);
            return to_lambda_response(error_response::<C::Body>(&e, &ctx.request_id, is_head))
                .await;
        }
        let retry = (request.method() == Method::GET).then(|| {
            let mut r = http::Request::new(());
            *r.method_mut() = request.method().clone();
            *r.uri_mut() = request.uri().clone();
            *r.headers_mut() = request.headers().clone();
            r
        });
        let request = request.map(|()| C::Body::from_bytes(body));
        // A bug in one request answers 500 InternalError as S3 would, not a failed invocation
        // (which the function URL turns into a bare 502).
        let mut response = self.engine.handle_guarded(request, &ctx).await;
        if let Some(retry) = retry {
            if response.status().is_success() && response_len(&response) > Some(MAX_RESPONSE_BYTES)
            {
                // Too large for a Lambda response: hand out the object by presigned URL.
                // Dropping the response closes the backend connection unread.
                tracing::info!(
                    len = response_len(&response),
                    "object too large to proxy through Lambda; redirecting"
                );
                drop(response);
                self.refresh_redirect_if_stale().await;
                response = self
                    .redirect
                    .handle(retry.map(|()| C::Body::empty()), &ctx)
                    .await;
            }
        }
        // Counted where `/metrics` is served from (the engine, not the redirect fallback).
        self.engine
            .record_response(&response, started.elapsed().as_secs_f64());
        to_lambda_response(response).await
    }

    /// The scheduled run: every scheduled job once ([`Engine::run_scheduled`]: probes, older
    /// copies, the usage scan within `scan_budget` backend requests, counts flushed). Returns a
    /// summary for the invocation's result.
    pub async fn run_scheduled(&self, scan_budget: usize) -> Result<serde_json::Value, String> {
        self.reload_config().await;
        // No subrequest cap here: the server's share of older copies, the usage scan as set.
        let budget = Budget {
            scan_requests: scan_budget,
            // Moves go through the function's memory: a few per run.
            move_batch: 10,
            ..Budget::SERVER
        };
        let run = self.engine.run_scheduled(budget, &SystemTime::now).await;
        let Some(snapshot) = run.health else {
            return Err(run.errors.join("; "));
        };
        let (healthy, unhealthy): (Vec<_>, Vec<_>) =
            snapshot.backends.iter().partition(|(_, h)| h.healthy);
        Ok(serde_json::json!({
            "healthy": healthy.into_iter().map(|(n, _)| n).collect::<Vec<_>>(),
            "unhealthy": unhealthy.into_iter().map(|(n, _)| n).collect::<Vec<_>>(),
            "taken_at": snapshot.taken_at,
        }))
    }
}

/// The error for a request body Lambda cannot carry, saying what works instead.
pub fn too_large(len: u64) -> S3Error {
    S3Error::new(
        S3ErrorCode::EntityTooLarge,
        format!(
            "Your request body of {len} bytes exceeds the {MAX_BODY_BYTES} bytes an AWS Lambda \
             payload can carry (6 MB, base64-encoded). Upload larger objects with a presigned URL \
             issued by this gateway for a bucket whose writes are `redirect` or `auto` (the \
             gateway answers 307 to a presigned backend URL, so the body goes to the backend), \
             or through the Cloudflare Worker or self-hosted server deployment, which stream \
             bodies."
        ),
    )
}

/// The length of a response body, from the body or its Content-Length.
fn response_len<B: shared::body::Body>(response: &http::Response<B>) -> Option<u64> {
    response.body().exact_len().or_else(|| {
        response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    })
}

/// The request the engine sees: the method, the RAW path and query the client signed
/// (`rawPath` and `rawQueryString` of the event, not lambda_http's stage-prefixed, re-encoded
/// URI), the headers with `Host`, and the body bytes.
pub fn to_engine_request(
    request: lambda_http::Request,
) -> Result<(http::Request<()>, Bytes), S3Error> {
    let raw_path = request.raw_http_path().to_owned();
    let (parts, body) = request.into_parts();
    let path = if raw_path.is_empty() {
        parts.uri.path().to_owned()
    } else {
        raw_path
    };
    // lambda_http appends `rawQueryString` to the URI verbatim.
    let path_and_query = match parts.uri.query() {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path,
    };
    let uri: http::Uri = path_and_query
        .parse()
        .map_err(|_| S3Error::invalid_argument("The request path is not a valid URI."))?;
    let mut out = http::Request::new(());
    *out.method_mut() = parts.method;
    *out.uri_mut() = uri;
    *out.headers_mut() = parts.headers;
    if !out.headers().contains_key(http::header::HOST) {
        if let Some(host) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            out.headers_mut().insert(http::header::HOST, host);
        }
    }
    let bytes = match body {
        lambda_http::Body::Empty => Bytes::new(),
        lambda_http::Body::Text(t) => Bytes::from(t),
        lambda_http::Body::Binary(b) => Bytes::from(b),
        _ => Bytes::new(),
    };
    // Lambda's event carries the body, not always its Content-Length header: S3 semantics
    // (and the signature check of UNSIGNED/hashed payloads) need the exact length.
    if !out.headers().contains_key(http::header::CONTENT_LENGTH) && !bytes.is_empty() {
        out.headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    }
    Ok((out, bytes))
}

fn is_text(content_type: Option<&HeaderValue>) -> bool {
    content_type.and_then(|v| v.to_str().ok()).is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t.starts_with("application/xml")
            || t.starts_with("application/json")
            || t.starts_with("text/")
    })
}

/// Buffers the engine's response into Lambda's. A body over [`MAX_RESPONSE_BYTES`] that was
/// not announced (no length) is answered 500 InternalError rather than failing the invocation.
pub async fn to_lambda_response<B: shared::body::Body>(
    response: http::Response<B>,
) -> lambda_http::Response<lambda_http::Body> {
    let (parts, body) = response.into_parts();
    let bytes = match body.collect(MAX_RESPONSE_BYTES as usize).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "backend response could not be buffered");
            let id = parts
                .headers
                .get("x-amz-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let err = S3Error::new(
                S3ErrorCode::InternalError,
                "The response could not be delivered through AWS Lambda.",
            );
            let mut r = lambda_http::Response::new(lambda_http::Body::Text(
                shared::xml::error_body(&err, &id),
            ));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml"),
            );
            if let Ok(v) = HeaderValue::from_str(&id) {
                r.headers_mut().insert("x-amz-request-id", v);
            }
            return r;
        }
    };
    let body = if bytes.is_empty() {
        lambda_http::Body::Empty
    } else if is_text(parts.headers.get(http::header::CONTENT_TYPE)) {
        match String::from_utf8(bytes.to_vec()) {
            Ok(t) => lambda_http::Body::Text(t),
            Err(e) => lambda_http::Body::Binary(e.into_bytes()),
        }
    } else {
        lambda_http::Body::Binary(bytes.to_vec())
    };
    lambda_http::Response::from_parts(parts, body)
}
