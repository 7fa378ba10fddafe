//! The Worker's entry points: `fetch` and `scheduled`, and the per-isolate engine.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use worker::wasm_bindgen::JsCast;
use worker::{
    event, Context, Env, Request, Response, ResponseBody, ScheduleContext, ScheduledEvent,
};

use crate::fetch_client::{header_from_js, headers_to_js, FetchClient, WorkerBody};
use crate::kv_store::KvStore;
use crate::settings::{self, WorkerSettings};
use shared::config::Config;
use shared::engine::{error_response, Budget, ConfigUpdate, Engine, RequestContext};
use shared::error::{S3Error, S3ErrorCode};

/// The KV namespace binding in `wrangler.toml`.
pub const KV_BINDING: &str = "S3_BALANCE_KV";
/// The KV key an operator writes to switch the config without a redeploy.
pub const CONFIG_KEY: &str = "config";

pub type WorkerEngine = Engine<KvStore, FetchClient>;

/// One isolate's engine and the bookkeeping of its periodic re-reads.
pub struct Runtime {
    pub engine: WorkerEngine,
    pub settings: WorkerSettings,
    /// The config text in force, to notice a change.
    config_text: RefCell<String>,
    config_checked_ms: Cell<u64>,
    refreshed_ms: Cell<u64>,
    refreshing: Cell<bool>,
}

thread_local! {
    static RUNTIME: RefCell<Option<Rc<Runtime>>> = const { RefCell::new(None) };
}

pub fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

pub fn system_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Random bytes from Web Crypto (`crypto.getRandomValues`).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use worker::js_sys::{Function, Reflect, Uint8Array};
    let mut out = [0u8; N];
    let filled = (|| {
        let crypto = Reflect::get(&worker::js_sys::global(), &"crypto".into()).ok()?;
        let get: Function = Reflect::get(&crypto, &"getRandomValues".into())
            .ok()?
            .dyn_into()
            .ok()?;
        let array = Uint8Array::new_with_length(N as u32);
        get.call1(&crypto, &array).ok()?;
        array.copy_to(&mut out);
        Some(())
    })();
    if filled.is_none() {
        // Not expected in workerd; request ids and weighted placement stay usable.
        for b in out.iter_mut() {
            *b = (worker::js_sys::Math::random() * 256.0) as u8;
        }
    }
    out
}

/// A Worker secret or var, as text.
pub fn env_string(env: &Env, name: &str) -> Option<String> {
    let value = worker::js_sys::Reflect::get(env.as_ref(), &name.into()).ok()?;
    value.as_string()
}

fn parse_config(text: &str, env: &Env, settings: &WorkerSettings) -> Result<Config, String> {
    let (config, warnings) =
        settings::load_config(text, &|name| env_string(env, name)).map_err(|e| e.to_string())?;
    for w in warnings {
        tracing::warn!("config: {w}");
    }
    Ok(for_worker(config, settings))
}

/// What the Worker runtime changes in any loaded config (see [`WorkerSettings::apply`]).
fn for_worker(mut config: Config, settings: &WorkerSettings) -> Config {
    settings.apply(&mut config);
    if !settings.index && config.balancer.strategy != shared::config::Strategy::ConsistentHash {
        tracing::warn!(
            "S3_BALANCE_INDEX=off without the consistent-hash strategy: reads probe every backend and an overwrite may land on another backend"
        );
    }
    config
}

/// The config text: the KV key `config` when set, else `S3_BALANCE_CONFIG`.
async fn config_text(env: &Env, store: &KvStore) -> Result<String, String> {
    match store.get_raw(CONFIG_KEY).await {
        Ok(Some(text)) if !text.trim().is_empty() => return Ok(text),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not read the KV config key; using S3_BALANCE_CONFIG")
        }
    }
    env_string(env, "S3_BALANCE_CONFIG")
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| {
            "no configuration: set the secret or var S3_BALANCE_CONFIG, or the KV key `config`"
                .to_owned()
        })
}

/// The isolate's runtime, built on first use; re-reads the config when due.
pub async fn runtime(env: &Env) -> Result<Rc<Runtime>, String> {
    let kv = env
        .kv(KV_BINDING)
        .map_err(|e| format!("KV binding {KV_BINDING}: {e}"))?;
    if let Some(rt) = RUNTIME.with(|r| r.borrow().clone()) {
        rt.engine.store().set_binding(kv);
        if now_ms().saturating_sub(rt.config_checked_ms.get()) >= settings::CONFIG_RECHECK_MS {
            rt.reload_config(env).await;
        }
        return Ok(rt);
    }
    let settings = WorkerSettings::from_vars(&|name| env_string(env, name));
    let store = KvStore::new(kv).with_index(settings.index);
    let text = config_text(env, &store).await?;
    let config = parse_config(&text, env, &settings)?;
    let engine = Engine::new(Arc::new(config), store, FetchClient);
    let now = now_ms();
    if let Err(e) = engine.refresh(system_time(now)).await {
        tracing::warn!(error = %e, "first state refresh failed; serving with defaults");
    }
    let rt = Rc::new(Runtime {
        engine,
        settings,
        config_text: RefCell::new(text),
        config_checked_ms: Cell::new(now),
        refreshed_ms: Cell::new(now),
        refreshing: Cell::new(false),
    });
    RUNTIME.with(|r| *r.borrow_mut() = Some(rt.clone()));
    Ok(rt)
}

impl Runtime {
    /// Hot switch: a changed config text is parsed and applied; a broken one is logged and
    /// the config in force stays.
    pub async fn reload_config(&self, env: &Env) {
        self.config_checked_ms.set(now_ms());
        let text = match config_text(env, self.engine.store()).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("{e}; keeping the config in force");
                return;
            }
        };
        if *self.config_text.borrow() == text {
            return;
        }
        let update =
            self.engine
                .apply_config_text(None, &text, &|name| env_string(env, name), &|config| {
                    for_worker(config, &self.settings)
                });
        // A broken text is reported once, not at every recheck.
        *self.config_text.borrow_mut() = text;
        match update {
            ConfigUpdate::Unchanged => {}
            ConfigUpdate::Applied { warnings, .. } => {
                for w in warnings {
                    tracing::warn!("config: {w}");
                }
                tracing::info!("configuration switched");
            }
            ConfigUpdate::Rejected(e) => {
                tracing::error!("new configuration rejected, keeping the one in force: {e}")
            }
        }
    }

    /// Re-reads health, usage and operation counts (and flushes this isolate's counts).
    pub async fn refresh(&self) {
        if self.refreshing.replace(true) {
            return;
        }
        let now = now_ms();
        if let Err(e) = self.engine.refresh(system_time(now)).await {
            tracing::warn!(error = %e, "state refresh failed");
        }
        self.refreshed_ms.set(now);
        self.refreshing.set(false);
    }

    fn refresh_due(&self) -> bool {
        !self.refreshing.get()
            && now_ms().saturating_sub(self.refreshed_ms.get()) >= settings::STATE_REFRESH_MS
    }

    /// The cron run: every scheduled job once ([`Engine::run_scheduled`]), probes first, within
    /// the invocation's subrequest budget.
    pub async fn scheduled(&self) {
        let backends = self.engine.config().backends.len();
        let budget = Budget::within(self.settings.scan_budget, backends);
        // The engine logs what each job found.
        self.engine
            .run_scheduled(budget, &|| system_time(now_ms()))
            .await;
        self.refreshed_ms.set(now_ms());
    }
}

/// `request.cf.clientAcceptEncoding`: the Accept-Encoding the client sent.
/// <https://developers.cloudflare.com/workers/runtime-apis/request/#incomingrequestcfproperties>
fn client_accept_encoding(raw: &worker::web_sys::Request) -> Option<String> {
    use worker::js_sys::Reflect;
    let cf = Reflect::get(raw, &"cf".into()).ok()?;
    if cf.is_undefined() || cf.is_null() {
        return None;
    }
    Reflect::get(&cf, &"clientAcceptEncoding".into())
        .ok()?
        .as_string()
}

/// The worker's request in the engine's types. The path and query keep their raw encoding
/// (the client signed them).
fn to_http(req: &Request) -> Result<http::Request<WorkerBody>, S3Error> {
    let raw = req.inner();
    let url = raw.url();
    let after_scheme = url.split_once("://").map(|(_, r)| r).unwrap_or(&url);
    let path_and_query = match after_scheme.find('/') {
        Some(i) => &after_scheme[i..],
        None => "/",
    };
    let uri: http::Uri = path_and_query
        .parse()
        .map_err(|_| S3Error::new(S3ErrorCode::InvalidURI, "Couldn't parse the specified URI."))?;
    let method = http::Method::from_bytes(raw.method().as_bytes()).map_err(|_| {
        S3Error::new(
            S3ErrorCode::MethodNotAllowed,
            "The specified method is not allowed against this resource.",
        )
    })?;
    let mut builder = http::Request::builder().method(method).uri(uri);
    // The runtime rewrites Accept-Encoding before the Worker sees it and keeps the client's
    // value in `cf.clientAcceptEncoding`; a client that signed the header (rclone does) needs
    // the original back, or its signature cannot match.
    let client_accept_encoding = client_accept_encoding(raw);
    for (name, value) in req.headers().entries() {
        if client_accept_encoding.is_some() && name.eq_ignore_ascii_case("accept-encoding") {
            continue;
        }
        if let (Ok(n), Some(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            header_from_js(&value),
        ) {
            builder = builder.header(n, v);
        }
    }
    if let Some(v) = client_accept_encoding.and_then(|v| http::HeaderValue::from_str(&v).ok()) {
        builder = builder.header(http::header::ACCEPT_ENCODING, v);
    }
    let len = req
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse().ok());
    let body = WorkerBody::from_js(raw.body(), len);
    builder.body(body).map_err(|_| {
        S3Error::new(
            S3ErrorCode::InvalidRequest,
            "The request could not be read.",
        )
    })
}

/// The engine's response as the worker's. A backend's streamed body passes through as is.
fn from_http(response: http::Response<WorkerBody>) -> worker::Result<Response> {
    let (parts, body) = response.into_parts();
    let headers = headers_to_js(&parts.headers)?;
    let builder = Response::builder()
        .with_status(parts.status.as_u16())
        .with_headers(headers);
    // 1xx, 204, 304 and HEAD answers carry no body.
    let bodiless = parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED
        || parts.status.is_informational();
    if bodiless {
        return Ok(builder.empty());
    }
    Ok(match body {
        WorkerBody::Empty => builder.empty(),
        WorkerBody::Bytes(b) => builder.fixed(b.to_vec()),
        WorkerBody::Js { stream, .. } => builder.body(ResponseBody::Stream(stream)),
        rust @ WorkerBody::Rust { .. } => match rust.into_js(None)? {
            Some(js) => builder.body(ResponseBody::Stream(js.unchecked_into())),
            None => builder.empty(),
        },
    })
}

fn s3_error_response(error: &S3Error, request_id: &str, head: bool) -> worker::Result<Response> {
    let mut response: http::Response<WorkerBody> = error_response(error, request_id, head);
    if let Ok(v) = http::HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-amz-request-id", v);
    }
    from_http(response)
}

async fn serve(
    req: Request,
    env: &Env,
    ctx: &Context,
    rc: &RequestContext,
) -> Result<Response, S3Error> {
    let rt = runtime(env).await.map_err(|e| {
        tracing::error!("the gateway cannot start: {e}");
        S3Error::unavailable("The gateway is not configured correctly; see the Worker's logs.")
    })?;
    // Compiled into the test bundle only, and served there only with the var set.
    #[cfg(feature = "test-routes")]
    if rt.settings.test_routes && req.path().starts_with("/__test/") {
        return crate::test_routes::handle(&rt, req, env).await;
    }
    let request = to_http(&req)?;
    // Workers' clock stands still while the isolate computes: this is the time spent waiting
    // on KV and the backends, which is most of a request's duration.
    let started = now_ms();
    let response = rt.engine.handle(request, rc).await;
    rt.engine
        .record_response(&response, now_ms().saturating_sub(started) as f64 / 1000.0);
    if let Some(log) = response.extensions().get::<shared::engine::RequestLog>() {
        tracing::info!(
            request_id = %rc.request_id,
            status = response.status().as_u16(),
            operation = log.operation,
            bucket = ?log.bucket,
            backend = ?log.backend,
            bytes = ?log.bytes,
            "request"
        );
    }
    if rt.refresh_due() {
        let rt = rt.clone();
        ctx.wait_until(async move { rt.refresh().await });
    }
    from_http(response).map_err(|e| {
        tracing::error!(error = %e, "could not build the response");
        S3Error::internal()
    })
}

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
    crate::logging::init();
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let request_id = hex::encode_upper(random_bytes::<8>());
    let random = u64::from_le_bytes(random_bytes::<8>());
    let rc = RequestContext {
        now: system_time(now_ms()),
        request_id: request_id.clone(),
        random,
    };
    let head = req.inner().method() == "HEAD";
    match serve(req, &env, &ctx, &rc).await {
        Ok(r) => Ok(r),
        Err(e) => s3_error_response(&e, &request_id, head),
    }
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    match runtime(&env).await {
        Ok(rt) => rt.scheduled().await,
        Err(e) => tracing::error!("scheduled run skipped: the gateway cannot start: {e}"),
    }
}
