//! The request engine: every operation against backends, through the adapter's
//! [`MetadataStore`] and [`HttpClient`].
//!
//! Adapters build one [`Engine`] at start, feed it config changes with [`Engine::set_config`],
//! refresh its cached health and usage with [`Engine::refresh`], and call [`Engine::handle`]
//! for each request with a [`RequestContext`] carrying the time and randomness.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};

use crate::body::Body;
use crate::config::{
    BackendConfig, Config, ConfigError, DataPathMode, VirtualBucketConfig, Warnings,
};
use crate::error::{S3Error, S3ErrorCode};
use crate::health::{Circuit, HealthSnapshot};
use crate::http::HttpClient;
use crate::metrics::Metrics;
use crate::placement::{self, BackendState, Entropy};
use crate::route::{DefaultAnswer, Operation, RouteInput, S3Request};
use crate::sigv4::{Identity, Verified};
use crate::store::{
    BackendUsage, BucketRecord, MetadataStore, ObjectRecord, OperationCounts, StoreError,
};

mod access;
#[cfg(test)]
mod access_tests;
mod admin;
mod backend;
mod buckets;
mod copies;
#[cfg(test)]
mod integrity_tests;
mod listing;
mod locks;
mod maintenance;
mod moves;
mod multipart;
mod objects;
mod reindex;
mod schedule;
#[cfg(test)]
mod tests;

use backend::BackendRequest;

/// What the adapter supplies per request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub now: SystemTime,
    /// Unique id: the `x-amz-request-id` header and the error body's RequestId.
    pub request_id: String,
    /// A random number (weighted placement).
    pub random: u64,
}

/// A response extension for the adapter's access log: one line per request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestLog {
    pub operation: &'static str,
    pub bucket: Option<String>,
    pub backend: Option<String>,
    /// Object bytes sent or received, when known.
    pub bytes: Option<u64>,
}

/// Config plus the cached health and usage the request path reads.
#[derive(Debug, Clone)]
pub struct State {
    /// The config in force: `base_config` with the admin API's `overrides` laid over it.
    pub config: Arc<Config>,
    /// The config as loaded (file, KV, DynamoDB document).
    pub base_config: Arc<Config>,
    /// The operator's changes through the admin API (store document
    /// [`crate::admin::OVERRIDES_DOCUMENT`]).
    pub overrides: crate::admin::Overrides,
    pub health: HealthSnapshot,
    /// Sorted by backend name.
    pub usage: Vec<BackendUsage>,
    /// Operations per backend this month (stored counts plus this process's unflushed ones).
    pub operations: BTreeMap<String, OperationCounts>,
    /// Virtual buckets created at run time.
    pub created_buckets: Vec<BucketRecord>,
    /// Some older copy is recorded and not settled yet (document [`STALE_COPIES_DOCUMENT`]):
    /// reads then check an index hit against the records, since a lagging index may still
    /// point at such a copy.
    pub stale_copies_pending: bool,
}

pub use moves::{
    MoveCursor, MoveDriver, MoveGoal, MoveLimits, MoveReport, MoveRun, MoveStep, PlannedMove,
    SETTLE_SECS,
};
pub use reindex::{ReindexCursor, ReindexError, ReindexReport};
pub use schedule::{Budget, Job, ScheduledRun, REFRESH_PERIOD, STALE_COPY_PERIOD};

/// What [`Engine::apply_config_text`] did with a config text.
#[derive(Debug)]
pub enum ConfigUpdate {
    /// It says what the config in force says (perhaps in other words): nothing changed.
    Unchanged,
    /// In force from the next request. `restart_needed`: the `server` or `metadata` section
    /// changed, which only a restart applies (listeners, the store are built at start).
    Applied {
        warnings: Warnings,
        restart_needed: bool,
    },
    /// It does not load; the config in force stays.
    Rejected(ConfigError),
}

pub struct Engine<S, C> {
    store: S,
    client: C,
    state: RwLock<Arc<State>>,
    metrics: Metrics,
    counter: std::sync::atomic::AtomicU64,
    /// Operation counts not yet added to the store, by backend and month. Flushed by
    /// [`Engine::refresh`] so that serving a request does not rewrite a shared counter.
    /// (Nested, so that a request finds its backend's counts by `&str`, allocating nothing.)
    pending_operations: Mutex<BTreeMap<String, BTreeMap<String, OperationCounts>>>,
    /// Usage changes (bytes, objects) per backend not yet added to the store, flushed by
    /// [`Engine::refresh`] for the same reason: one atomic add per backend every few seconds
    /// instead of one per write (Workers KV allows one write a second to a key).
    pending_usage: Mutex<BTreeMap<String, (i64, i64)>>,
    /// Backend signing keys, derived once a day per backend instead of per request.
    signers: crate::sigv4::sign::SignerCache,
    /// Signing keys of the clients' access keys, for verifying their signatures.
    client_keys: crate::sigv4::canonical::SigningKeys,
    /// Writes and deletes of one key take turns (see [`locks`]).
    key_locks: locks::KeyLocks,
    /// Passive health per backend, from the request path (see [`Circuit`]).
    circuits: Mutex<BTreeMap<String, Circuit>>,
    /// When each scheduled job last ended ([`schedule`]).
    schedule: Mutex<schedule::Schedule>,
    /// This instance's name in leases ([`Engine::instance_id`]).
    instance: Mutex<String>,
}

/// Object and bucket reads (GET, HEAD, lists) are billed class B; everything else class A.
fn is_class_b(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// One request being served: everything the operations need.
pub(crate) struct Call<'a> {
    pub ctx: &'a RequestContext,
    pub state: &'a State,
    pub config: &'a Config,
    pub parts: http::request::Parts,
    pub s3: S3Request,
    pub verified: Verified,
    pub log: RequestLog,
    /// The config of `s3.bucket`, looked up once: several steps of a request read it.
    pub bucket_config: std::borrow::Cow<'a, VirtualBucketConfig>,
    /// Owner, ACL and CORS rules of `s3.bucket` (`None`: no bucket, or not created yet).
    pub access: Option<access::BucketAccess>,
}

impl<'a> Call<'a> {
    pub fn bucket(&self) -> &str {
        self.s3.bucket.as_deref().unwrap_or_default()
    }

    pub fn key(&self) -> &str {
        self.s3.key.as_deref().unwrap_or_default()
    }

    pub fn bucket_config(&self) -> &VirtualBucketConfig {
        &self.bucket_config
    }

    /// The real key of `key` of this call's bucket on a backend.
    pub fn real_key(&self, key: &str) -> String {
        self.bucket_config().key_layout.real_key(self.bucket(), key)
    }

    pub fn pool(&self) -> Vec<&BackendConfig> {
        self.config.pool(self.bucket_config())
    }

    /// A backend of the config by name. Borrowed from the config, not from the call, so the
    /// call stays free to update while it is used (no per-request clone of the backend).
    pub fn backend(&self, name: &str) -> Result<&'a BackendConfig, S3Error> {
        self.config.backend(name).ok_or_else(|| {
            tracing::error!(
                backend = name,
                "an index entry or upload id names a backend the config no longer has"
            );
            S3Error::unavailable("The backend holding this object is not configured.")
        })
    }

    /// Whether reads (or writes) of this call go by redirect.
    pub fn redirects(&self, write: bool) -> bool {
        let bucket = self.bucket_config();
        match if write { bucket.writes } else { bucket.reads } {
            DataPathMode::Proxy => false,
            DataPathMode::Redirect => true,
            // Only clients that follow redirects: presigned URLs and anonymous readers.
            DataPathMode::Auto => {
                self.verified.presigned || self.verified.identity == Identity::Anonymous
            }
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        backend::header_str(&self.parts.headers, name)
    }
}

/// An empty response with `status`.
pub(crate) fn empty<B: Body>(status: StatusCode) -> http::Response<B> {
    let mut r = http::Response::new(B::empty());
    *r.status_mut() = status;
    r
}

/// An XML response.
pub(crate) fn xml<B: Body>(body: String) -> http::Response<B> {
    let mut r = http::Response::new(B::from_bytes(Bytes::from(body)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    r
}

/// A 307 (or 302) to `location`.
pub(crate) fn redirect<B: Body>(status: u16, location: &str) -> Result<http::Response<B>, S3Error> {
    let mut r = empty(StatusCode::from_u16(status).unwrap_or(StatusCode::TEMPORARY_REDIRECT));
    r.headers_mut().insert(
        http::header::LOCATION,
        HeaderValue::from_str(location).map_err(|_| S3Error::internal())?,
    );
    Ok(r)
}

impl<S: MetadataStore, C: HttpClient> Engine<S, C> {
    pub fn new(config: Arc<Config>, store: S, client: C) -> Self {
        Self {
            store,
            client,
            state: RwLock::new(Arc::new(State {
                base_config: config.clone(),
                config,
                overrides: Default::default(),
                health: HealthSnapshot::default(),
                usage: Vec::new(),
                operations: BTreeMap::new(),
                created_buckets: Vec::new(),
                stale_copies_pending: false,
            })),
            metrics: Metrics::new(),
            counter: Default::default(),
            pending_operations: Mutex::new(BTreeMap::new()),
            pending_usage: Mutex::new(BTreeMap::new()),
            signers: Default::default(),
            client_keys: Default::default(),
            key_locks: Default::default(),
            circuits: Mutex::new(BTreeMap::new()),
            schedule: Default::default(),
            instance: Mutex::new(String::new()),
        }
    }

    /// Names this instance in leases (a drain or rebalance step): the adapter sets a random
    /// one where it has randomness.
    pub fn set_instance_id(&self, id: String) {
        *self.instance.lock().unwrap_or_else(|e| e.into_inner()) = id;
    }

    /// This instance's name: the one set, else one made from the time of first use and the
    /// engine's address (different for every process in practice).
    pub fn instance_id(&self, now: SystemTime) -> String {
        let mut id = self.instance.lock().unwrap_or_else(|e| e.into_inner());
        if id.is_empty() {
            let nanos = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let seed = format!("{nanos}/{:p}", self as *const Self);
            *id = format!("gw-{:016x}", placement::rendezvous_hash(&seed, "", ""));
        }
        id.clone()
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn client(&self) -> &C {
        &self.client
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The current state (config, health, usage).
    pub fn state(&self) -> Arc<State> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn config(&self) -> Arc<Config> {
        self.state().config.clone()
    }

    fn update_state(&self, change: impl FnOnce(&mut State)) {
        let mut guard = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut next = State::clone(&guard);
        change(&mut next);
        *guard = Arc::new(next);
    }

    /// Hot switch: requests after this call use `config` (with the admin overrides laid over).
    pub fn set_config(&self, config: Arc<Config>) {
        self.update_state(|s| {
            s.config = effective_config(&config, &s.overrides);
            s.base_config = config;
        });
    }

    /// Puts `overrides` in force over the loaded config.
    fn set_overrides(&self, overrides: crate::admin::Overrides) {
        self.update_state(|s| {
            s.config = effective_config(&s.base_config, &overrides);
            s.overrides = overrides;
        });
    }

    /// Books one answered request in the request metrics (`s3_balance_s3_operations_total`,
    /// `s3_balance_request_duration_seconds`) from the [`RequestLog`] the engine attached to
    /// the response. `seconds`: from the request's arrival to its answer, as the runtime's clock
    /// measured it. Answers of `/health` and `/metrics` are not S3 requests and are not counted.
    pub fn record_response<B>(&self, response: &http::Response<B>, seconds: f64) {
        if let Some(log) = response.extensions().get::<RequestLog>() {
            if !log.operation.is_empty() && log.operation != "Admin" {
                self.metrics
                    .record_request(log.operation, response.status().as_u16(), seconds);
            }
        }
    }

    /// Hot reload, the same on every runtime: `text` (a file, a KV key, a DynamoDB item) is
    /// read by [`Config::from_text`], passed through `adapt` (the runtime's own rules, such as
    /// the Lambda's body cap) and put in force for the next request, unless it says what the
    /// config in force says. A text that does not load changes nothing.
    pub fn apply_config_text(
        &self,
        name: Option<&str>,
        text: &str,
        var: &dyn Fn(&str) -> Option<String>,
        adapt: &dyn Fn(Config) -> Config,
    ) -> ConfigUpdate {
        let (config, mut warnings) = match Config::from_text(name, text, var) {
            Ok(loaded) => loaded,
            Err(e) => return ConfigUpdate::Rejected(e),
        };
        let config = adapt(config);
        let current = self.state().base_config.clone();
        if *current == config {
            return ConfigUpdate::Unchanged;
        }
        let restart_needed = current.server != config.server || current.metadata != config.metadata;
        warnings.extend(current.change_warnings(&config));
        self.set_config(Arc::new(config));
        ConfigUpdate::Applied {
            warnings,
            restart_needed,
        }
    }

    /// Flushes this process's operation counts to the store, then re-reads the health
    /// snapshot (document `health`), usage, this month's operation counts and the buckets
    /// created at run time. `now` names the month.
    pub async fn refresh(&self, now: SystemTime) -> Result<(), StoreError> {
        let pending = std::mem::take(
            &mut *self
                .pending_operations
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for (backend, months) in &pending {
            for (month, counts) in months {
                self.store.add_operations(backend, month, counts).await?;
            }
        }
        let usage =
            std::mem::take(&mut *self.pending_usage.lock().unwrap_or_else(|e| e.into_inner()));
        for (backend, (bytes, objects)) in &usage {
            self.store.add_usage(backend, *bytes, *objects).await?;
        }
        let health = match self.store.get_document(HEALTH_DOCUMENT).await? {
            Some(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "stored health snapshot is unreadable; assuming healthy");
                HealthSnapshot::default()
            }),
            None => HealthSnapshot::default(),
        };
        let mut usage = self.store.list_usage().await?;
        // Sorted, so that placement finds a backend's usage by binary search.
        usage.sort_unstable_by(|a, b| a.backend.cmp(&b.backend));
        let month = crate::time::year_month(now);
        let mut operations = BTreeMap::new();
        for b in &self.config().backends {
            operations.insert(
                b.name.clone(),
                self.store.get_operations(&b.name, &month).await?,
            );
        }
        let created_buckets = self.store.list_buckets().await?;
        let stale_copies_pending = self
            .store
            .get_document(STALE_COPIES_DOCUMENT)
            .await?
            .is_some_and(|d| !d.is_empty());
        let overrides = crate::admin::Overrides::from_document(
            self.store
                .get_document(crate::admin::OVERRIDES_DOCUMENT)
                .await?
                .as_deref(),
        );
        if overrides != self.state().overrides {
            tracing::info!(?overrides, "admin overrides changed");
            self.set_overrides(overrides);
        }
        self.observe_probes(&health, now);
        self.update_state(|s| {
            s.health = health;
            s.usage = usage;
            s.operations = operations;
            s.created_buckets = created_buckets;
            s.stale_copies_pending = stale_copies_pending;
        });
        Ok(())
    }

    /// [`Engine::handle`], with a panic on the request path (a bug) logged and answered
    /// `500 InternalError` instead of taking the caller's task, and the other requests it
    /// serves, down. Where panics abort (the Worker's wasm32) this is `handle`.
    pub async fn handle_guarded(
        &self,
        request: http::Request<C::Body>,
        ctx: &RequestContext,
    ) -> http::Response<C::Body> {
        use futures_util::FutureExt;
        let head = request.method() == Method::HEAD;
        match std::panic::AssertUnwindSafe(self.handle(request, ctx))
            .catch_unwind()
            .await
        {
            Ok(response) => response,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| panic.downcast_ref::<String>().map(String::as_str));
                tracing::error!(request_id = %ctx.request_id, panic = what.unwrap_or("?"), "request handler panicked");
                let mut response = error_response(&S3Error::internal(), &ctx.request_id, head);
                set_request_id(&mut response, &ctx.request_id);
                response
            }
        }
    }

    /// Serves one request. Never fails: errors become S3 error responses.
    /// `/health` and `/metrics` (path style, no virtual host) are served here too.
    pub async fn handle(
        &self,
        request: http::Request<C::Body>,
        ctx: &RequestContext,
    ) -> http::Response<C::Body> {
        let state = self.state();
        let (parts, body) = request.into_parts();
        let is_head = parts.method == Method::HEAD;
        let mut log = RequestLog::default();
        let mut cors = None;
        let result = match self.admin(&state, &parts) {
            Some(r) => {
                log.operation = "Admin";
                r
            }
            None if self.is_admin_request(&state, &parts) => {
                log.operation = "Admin";
                // Boxed: the admin API's future is the largest here, and every S3 request's
                // future would otherwise be as large (it is moved on each request).
                Ok(Box::pin(self.admin_api(&state, parts, body, ctx)).await)
            }
            None => {
                self.serve(&state, parts, body, ctx, &mut log, &mut cors)
                    .await
            }
        };
        let mut response = result.unwrap_or_else(|e| error_response(&e, &ctx.request_id, is_head));
        if let Some(headers) = cors {
            access::set_cors_headers(&mut response, &headers);
        }
        set_request_id(&mut response, &ctx.request_id);
        response.extensions_mut().insert(log);
        response
    }

    /// Whether the request names a bucket by its Host (`bucket.<base domain>`): `/health`,
    /// `/metrics` and the admin API belong to the gateway's own host, not to a bucket's (the
    /// same Host rule as the router's, IPv6 literals included).
    fn on_virtual_host(&self, state: &State, parts: &http::request::Parts) -> bool {
        let api = &state.config.api;
        api.virtual_host
            && parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| crate::route::virtual_host_bucket(h, &api.base_domains))
                .is_some()
    }

    /// `/health` and `/metrics`.
    fn admin(
        &self,
        state: &State,
        parts: &http::request::Parts,
    ) -> Option<Result<http::Response<C::Body>, S3Error>> {
        let config = &state.config;
        let path = parts.uri.path();
        if self.on_virtual_host(state, parts) || parts.method != Method::GET {
            return None;
        }
        if path == "/health" {
            let body = serde_json::json!({
                "status": "ok",
                "backends": state.health.backends,
                "taken_at": state.health.taken_at,
            });
            let mut r = http::Response::new(C::Body::from_bytes(Bytes::from(body.to_string())));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return Some(Ok(r));
        }
        if config.metrics.enabled && path == config.metrics.path {
            if let Some(token) = &config.metrics.token {
                if !bearer(&parts.headers).is_some_and(|given| token_matches(given, token)) {
                    return Some(Err(S3Error::access_denied()));
                }
            }
            let text = self.metrics.render(
                &state.health,
                &state.usage,
                &state.operations,
                &config.backends,
            );
            let mut r = http::Response::new(C::Body::from_bytes(Bytes::from(text)));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            return Some(Ok(r));
        }
        None
    }

    async fn serve(
        &self,
        state: &State,
        parts: http::request::Parts,
        body: C::Body,
        ctx: &RequestContext,
        log: &mut RequestLog,
        cors: &mut Option<Vec<(&'static str, String)>>,
    ) -> Result<http::Response<C::Body>, S3Error> {
        let config = &*state.config;
        let base_domains: &[String] = if config.api.virtual_host {
            &config.api.base_domains
        } else {
            &[]
        };
        let s3 = crate::route::route(&RouteInput {
            method: &parts.method,
            raw_path: parts.uri.path(),
            raw_query: parts.uri.query().unwrap_or(""),
            host: parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok()),
            headers: &parts.headers,
            base_domains,
        })?;
        log.operation = s3.operation.name();
        log.bucket = s3.bucket.clone();
        if s3.operation == Operation::Preflight {
            // Preflights carry no credentials: the bucket's CORS rules alone decide.
            let bucket = s3.bucket.as_deref().unwrap_or_default();
            return match self.bucket_access(state, bucket).await? {
                Some(a) => access::preflight(&parts.headers, &a),
                None => Err(S3Error::no_such_bucket(bucket)),
            };
        }
        let bucket_access = match &s3.bucket {
            Some(bucket) => self.bucket_access(state, bucket).await?,
            None => None,
        };
        // Every answer to a request from an origin the bucket's rules allow carries the CORS
        // headers, errors (a bad signature too) and redirects included, so the page can read
        // what happened.
        if let (Some(a), Some(origin)) = (
            &bucket_access,
            parts.headers.get("origin").and_then(|o| o.to_str().ok()),
        ) {
            *cors = a.cors_headers(origin, parts.method.as_str());
        }
        let verified = self.authenticate(config, &parts, ctx.now)?;
        let creating = matches!(s3.operation, Operation::CreateBucket);
        if let Err(denied) = access::authorize(config, &verified, &s3, bucket_access.as_ref()) {
            // AWS tells an anonymous caller that a bucket does not exist before it refuses
            // (404 NoSuchBucket); a bucket that exists stays 403.
            if let (Identity::Anonymous, Some(bucket)) = (&verified.identity, &s3.bucket) {
                if denied.code == S3ErrorCode::AccessDenied && !creating && bucket_access.is_none()
                {
                    return Err(S3Error::no_such_bucket(bucket));
                }
            }
            return Err(denied);
        }
        if let (Some(bucket), None, false) = (&s3.bucket, &bucket_access, creating) {
            return Err(S3Error::no_such_bucket(bucket));
        }
        let bucket_config = {
            let name = s3.bucket.as_deref().unwrap_or_default();
            match config.virtual_bucket(name) {
                Some(b) => std::borrow::Cow::Borrowed(b),
                None => std::borrow::Cow::Owned(config.bucket_or_default(name)),
            }
        };
        if let (Some(bucket), Some(key)) = (&s3.bucket, &s3.key) {
            check_key(key, bucket_config.key_layout.prefix_len(bucket))?;
        }
        let mut call = Call {
            ctx,
            state,
            config,
            parts,
            s3,
            verified,
            log: RequestLog::default(),
            bucket_config,
            access: bucket_access,
        };
        let result = self.dispatch(&mut call, body).await;
        log.backend = call.log.backend.take();
        log.bytes = call.log.bytes;
        result
    }

    /// The request's signature checked against the configured credentials, whatever
    /// `auth_required` says (the admin API never accepts less).
    fn verify_signature(
        &self,
        config: &Config,
        parts: &http::request::Parts,
        now: SystemTime,
    ) -> Result<Verified, S3Error> {
        let signed = crate::sigv4::SignedParts {
            method: parts.method.as_str(),
            raw_path: parts.uri.path(),
            raw_query: parts.uri.query().unwrap_or(""),
            headers: &parts.headers,
        };
        let lookup = |ak: &str| config.credential(ak).map(|c| &c.secret_key);
        crate::sigv4::verify::verify_with_keys(&signed, &lookup, now, &self.client_keys)
    }

    fn authenticate(
        &self,
        config: &Config,
        parts: &http::request::Parts,
        now: SystemTime,
    ) -> Result<Verified, S3Error> {
        match self.verify_signature(config, parts, now) {
            Ok(verified) => Ok(verified),
            // Auth off (the Go project's `auth_required: false`): any signature is accepted
            // unchecked, but the body framing it announces must still be decoded.
            Err(e) if !config.api.auth_required => {
                tracing::debug!(error = %e, "signature not checked: auth_required is false");
                Ok(unchecked(parts))
            }
            Err(e) => Err(e),
        }
    }

    async fn dispatch(
        &self,
        call: &mut Call<'_>,
        body: C::Body,
    ) -> Result<http::Response<C::Body>, S3Error> {
        use crate::listing::ListKind;
        if matches!(
            call.s3.operation,
            Operation::PutObject | Operation::CopyObject | Operation::CreateMultipartUpload
        ) {
            // A canned ACL the gateway cannot keep is refused, never dropped.
            crate::acl::CannedAcl::from_headers(&call.parts.headers)?;
        }
        if matches!(
            call.s3.operation,
            Operation::PutObject | Operation::UploadPart { .. }
        ) {
            check_content_md5_form(&call.parts.headers)?;
        }
        match call.s3.operation.clone() {
            Operation::ListBuckets => self.list_buckets(call).await,
            Operation::CreateBucket => self.create_bucket(call, body).await,
            Operation::DeleteBucket => self.delete_bucket(call).await,
            Operation::HeadBucket => Ok(empty(StatusCode::OK)),
            Operation::GetBucketLocation => Ok(xml(crate::xml::bucket_location(""))),
            Operation::ListObjects => self.list_objects(call, ListKind::V1).await,
            Operation::ListObjectsV2 => self.list_objects(call, ListKind::V2).await,
            Operation::ListObjectVersions => self.list_objects(call, ListKind::Versions).await,
            Operation::ListMultipartUploads => self.list_multipart_uploads(call).await,
            Operation::DeleteObjects => self.delete_objects(call, body).await,
            Operation::GetObject | Operation::HeadObject => self.get_object(call).await,
            Operation::PutObject => self.put_object(call, body).await,
            Operation::CopyObject => self.copy_object(call).await,
            Operation::DeleteObject => self.delete_object(call).await,
            Operation::CreateMultipartUpload => self.create_multipart_upload(call).await,
            Operation::UploadPart {
                upload_id,
                part_number,
            } => self.upload_part(call, &upload_id, part_number, body).await,
            Operation::UploadPartCopy {
                upload_id,
                part_number,
            } => self.upload_part_copy(call, &upload_id, part_number).await,
            Operation::CompleteMultipartUpload { upload_id } => {
                self.complete_multipart_upload(call, &upload_id, body).await
            }
            Operation::AbortMultipartUpload { upload_id } => {
                self.abort_multipart_upload(call, &upload_id).await
            }
            Operation::ListParts { upload_id } => self.list_parts(call, &upload_id).await,
            Operation::GetBucketAcl | Operation::Default(DefaultAnswer::GetObjectAcl) => {
                Ok(Self::get_acl(call))
            }
            Operation::PutBucketAcl => self.put_bucket_acl(call, body).await,
            Operation::PutObjectAcl => self.put_object_acl(call, body).await,
            Operation::GetBucketCors => Self::get_bucket_cors(call),
            Operation::PutBucketCors => self.put_bucket_cors(call, body).await,
            Operation::DeleteBucketCors => self.delete_bucket_cors(call).await,
            // Answered before authentication, in `serve`.
            Operation::Preflight => Err(S3Error::internal()),
            Operation::Default(answer) => Ok(xml(crate::xml::default_answer(answer))),
            Operation::NotImplemented(name) => Err(S3Error::not_implemented(name)),
        }
    }

    /// Placement's view of the pool of `bucket`, in config order.
    ///
    /// Built from the pool's backends alone, each looked up once: a write's placement runs
    /// this, and with every backend's view built first and then filtered, a PUT to a pool of
    /// 50 backends cost three times one to a single backend (`BACKENDS=50
    /// scripts/callgrind-requests`, docs/performance.md).
    pub(crate) fn pool_states(
        &self,
        state: &State,
        bucket: &VirtualBucketConfig,
    ) -> Vec<BackendState> {
        let circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        state
            .config
            .backends
            .iter()
            .filter(|b| bucket.has_backend(&b.name))
            .map(|b| backend_state(state, &circuits, b))
            .collect()
    }

    /// Placement's view of `backend` as a member of the pool of `bucket` (`None`: not in the
    /// pool, or not configured).
    pub(crate) fn pool_state(
        &self,
        state: &State,
        bucket: &VirtualBucketConfig,
        backend: &str,
    ) -> Option<BackendState> {
        if !bucket.has_backend(backend) {
            return None;
        }
        self.backend_view(state, backend)
    }

    /// Placement's view of `backend` whatever pool it is in (`None`: not configured).
    pub(crate) fn backend_view(&self, state: &State, backend: &str) -> Option<BackendState> {
        let b = state.config.backend(backend)?;
        let circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        Some(backend_state(state, &circuits, b))
    }

    /// Opens the circuit of every backend whose latest scheduled probe failed (once per
    /// probe), so requests stop waiting on it at once.
    fn observe_probes(&self, snapshot: &HealthSnapshot, now: SystemTime) {
        let mut circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        for (name, health) in &snapshot.backends {
            if circuits
                .entry(name.clone())
                .or_default()
                .observe_probe(health, now)
            {
                tracing::warn!(backend = %name, "backend marked down by the health probe: requests that need it answer 503 at once");
            }
        }
    }

    /// Signs and sends one request to `backend`, counting it. Transport failures are logged
    /// with their source and become `ServiceUnavailable`; a backend whose circuit is open is
    /// not waited on (the request fails at once, but for one trial every `circuit_retry`).
    pub(crate) async fn send(
        &self,
        call: &Call<'_>,
        backend: &BackendConfig,
        operation: &'static str,
        request: BackendRequest<C::Body>,
    ) -> Result<http::Response<C::Body>, S3Error> {
        self.send_at(backend, operation, request, call.ctx.now)
            .await
    }

    pub(crate) async fn send_at(
        &self,
        backend: &BackendConfig,
        operation: &'static str,
        request: BackendRequest<C::Body>,
        now: SystemTime,
    ) -> Result<http::Response<C::Body>, S3Error> {
        self.send_unmapped(backend, operation, request, now)
            .await
            .map_err(|failure| match failure {
                Unanswered::Refused(e) => e,
                Unanswered::Transport(_) => {
                    S3Error::unavailable("The backend storage is unavailable. Please try again.")
                }
            })
    }

    /// [`Self::send_at`] with the transport error kept, for the health probe: the operator
    /// sees "Connect: connection refused", a client only ever `ServiceUnavailable`.
    async fn send_unmapped(
        &self,
        backend: &BackendConfig,
        operation: &'static str,
        request: BackendRequest<C::Body>,
        now: SystemTime,
    ) -> Result<http::Response<C::Body>, Unanswered> {
        let class_b = is_class_b(&request.method);
        let health_probe = request.health_probe;
        let balancer = &self.config().balancer;
        let (threshold, retry) = (balancer.circuit_failures, balancer.circuit_retry);
        if !health_probe && !self.circuit(&backend.name, |c| c.admit(now, retry)) {
            self.metrics.record_backend(&backend.name, operation, false);
            tracing::debug!(backend = %backend.name, operation, "backend is down: not waited on");
            return Err(Unanswered::Refused(S3Error::unavailable(
                "The backend storage is unavailable. Please try again.",
            )));
        }
        let request = request
            .sign(&self.signers, backend, now)
            .map_err(Unanswered::Refused)?;
        self.count_operation(&backend.name, now, class_b);
        match self.client.send(request).await {
            Ok(response) => {
                let ok = response.status().is_success()
                    || response.status().as_u16() == 304
                    || response.status().as_u16() == 404;
                self.metrics.record_backend(&backend.name, operation, ok);
                // Any answer, even an error status, shows the backend is reachable.
                if self.circuit(&backend.name, Circuit::succeeded) {
                    tracing::info!(backend = %backend.name, "backend answers again: circuit closed");
                }
                Ok(response)
            }
            Err(e) if e.kind == crate::http::TransportErrorKind::RequestBody => {
                // The client's upload broke off or stopped: not the backend's fault, so it
                // does not count against the backend's health.
                tracing::info!(backend = %backend.name, operation, error = %e, "client body failed while sent to the backend");
                Err(Unanswered::Refused(S3Error::new(
                    S3ErrorCode::RequestTimeout,
                    "Your socket connection to the server was not read from or written to within the timeout period. Idle connections will be closed.",
                )))
            }
            Err(e) => {
                self.metrics.record_backend(&backend.name, operation, false);
                tracing::warn!(backend = %backend.name, operation, error = %e, "backend request failed");
                if !health_probe && self.circuit(&backend.name, |c| c.failed(now, threshold)) {
                    tracing::warn!(backend = %backend.name, failures = threshold, "backend marked down after failures in a row: requests that need it answer 503 at once");
                }
                Err(Unanswered::Transport(e))
            }
        }
    }

    /// Runs `f` on the circuit of `backend`.
    fn circuit<T>(&self, backend: &str, f: impl FnOnce(&mut Circuit) -> T) -> T {
        let mut circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        match circuits.get_mut(backend) {
            Some(c) => f(c),
            None => f(circuits.entry(backend.to_owned()).or_default()),
        }
    }

    /// Books a change of a backend's usage, added to the store at the next refresh.
    pub(crate) fn count_usage(&self, backend: &str, bytes: i64, objects: i64) {
        let mut pending = self.pending_usage.lock().unwrap_or_else(|e| e.into_inner());
        let u = pending.entry(backend.to_owned()).or_default();
        u.0 += bytes;
        u.1 += objects;
    }

    fn count_operation(&self, backend: &str, now: SystemTime, class_b: bool) {
        let mut pending = self
            .pending_operations
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !pending.contains_key(backend) {
            pending.insert(backend.to_owned(), BTreeMap::new());
        }
        let Some(months) = pending.get_mut(backend) else {
            return;
        };
        let c = months.entry(crate::time::year_month(now)).or_default();
        if class_b {
            c.class_b += 1;
        } else {
            c.class_a += 1;
        }
    }

    /// Picks the backend for a new object of `size` bytes (when known), never one of
    /// `exclude` (backends a write already failed on), and counts the decision.
    pub(crate) fn place(
        &self,
        call: &Call<'_>,
        key: &str,
        size: Option<u64>,
        exclude: &[String],
    ) -> Result<String, S3Error> {
        let mut states = self.pool_states(call.state, call.bucket_config());
        states.retain(|s| !exclude.contains(&s.name));
        let candidates = placement::write_candidates(&states, size)?;
        let entropy = Entropy {
            counter: self
                .counter
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            random: call.ctx.random,
        };
        let strategy = call.config.balancer.strategy;
        let chosen = placement::choose(strategy, &candidates, call.bucket(), key, entropy);
        self.metrics
            .record_decision(&chosen.name, strategy_name(strategy));
        Ok(chosen.name.clone())
    }
}

/// Placement's view of backend `b`: its config, the health snapshot, this process's circuit,
/// usage and operation budgets.
fn backend_state(
    state: &State,
    circuits: &BTreeMap<String, Circuit>,
    b: &BackendConfig,
) -> BackendState {
    let usage = state
        .usage
        .binary_search_by(|u| u.backend.as_str().cmp(&b.name))
        .ok()
        .map(|i| &state.usage[i]);
    let ops = state.operations.get(&b.name).cloned().unwrap_or_default();
    let circuit_open = circuits.get(&b.name).is_some_and(Circuit::is_open);
    BackendState {
        name: b.name.clone(),
        weight: b.weight,
        enabled: b.enabled,
        read_only: b.read_only,
        healthy: state.health.is_healthy(&b.name) && !circuit_open,
        max_size: b.max_size,
        used_bytes: usage.map(|u| u.used_bytes.max(0) as u64).unwrap_or(0),
        class_a_used: ops.class_a,
        class_b_used: ops.class_b,
        class_a_limit: b.limit_class_a,
        class_b_limit: b.limit_class_b,
    }
}

/// The document holding the latest [`HealthSnapshot`].
pub const HEALTH_DOCUMENT: &str = "health";

/// Non-empty while some older copy is recorded and not settled (one point read per refresh
/// tells every instance, where listing the records would cost a KV list each time).
pub const STALE_COPIES_DOCUMENT: &str = "stale-copies";

pub(crate) fn strategy_name(s: crate::config::Strategy) -> &'static str {
    use crate::config::Strategy::*;
    match s {
        RoundRobin => "round-robin",
        LeastSpace => "least-space",
        Weighted => "weighted",
        ConsistentHash => "consistent-hash",
    }
}

/// Logs a store failure with its source; the client sees ServiceUnavailable.
pub(crate) fn store_unavailable(e: StoreError) -> S3Error {
    tracing::error!(error = %e, "metadata store failed");
    S3Error::unavailable("The metadata store is unavailable. Please try again.")
}

/// The longest key a backend takes, in UTF-8 bytes, as S3 documents it.
/// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html>
pub(crate) const MAX_KEY_BYTES: usize = 1024;

/// Refuses keys with a `.` or `..` path segment: HTTP clients (reqwest's URL parser, the
/// Workers `fetch`) normalize such paths, so the backend would get another key. Refusing them
/// is the only way to never read or write the wrong object. Refuses keys that are too long
/// once the layout prefix (`prefix_len` bytes, `{bucket}/` by default) is added: the backend
/// would refuse them, or worse, some would cut them.
pub(crate) fn check_key(key: &str, prefix_len: usize) -> Result<(), S3Error> {
    if key.is_empty() {
        return Err(S3Error::new(
            S3ErrorCode::InvalidArgument,
            "The key must be specified",
        ));
    }
    if key
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(S3Error::invalid_argument(
            "Object keys with a '.' or '..' path segment are not supported by this gateway",
        )
        .with_resource(key));
    }
    if key.len() + prefix_len > MAX_KEY_BYTES {
        return Err(S3Error::new(
            S3ErrorCode::KeyTooLongError,
            format!(
                "Your key is too long: this gateway stores keys under a {prefix_len}-byte prefix, so keys may have at most {} bytes",
                MAX_KEY_BYTES - prefix_len.min(MAX_KEY_BYTES)
            ),
        )
        .with_resource(key));
    }
    Ok(())
}

/// What a request whose signature is not checked promises about its body.
fn unchecked(parts: &http::request::Parts) -> Verified {
    use crate::sigv4::Payload;
    let declared = parts
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let payload = if declared.starts_with("STREAMING-") {
        // Chunk signatures cannot be checked without the key: decode the framing only.
        Payload::StreamingUnsignedTrailer
    } else {
        match <[u8; 32]>::try_from(hex::decode(declared).unwrap_or_default()) {
            Ok(digest) => Payload::Sha256(digest),
            Err(_) => Payload::Unsigned,
        }
    };
    let presigned = parts
        .uri
        .query()
        .is_some_and(|q| q.contains("X-Amz-Signature="));
    Verified {
        identity: Identity::Anonymous,
        presigned,
        payload,
    }
}

/// A `Content-MD5` must be the base64 of 16 bytes (`400 InvalidDigest`), whether or not the
/// backend checks it; the backend compares it with the bytes it receives.
fn check_content_md5_form(headers: &http::HeaderMap) -> Result<(), S3Error> {
    use base64::Engine as _;
    let Some(value) = headers.get("content-md5") else {
        return Ok(());
    };
    let well_formed = value
        .to_str()
        .ok()
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        })
        .is_some_and(|d| d.len() == 16);
    if well_formed {
        Ok(())
    } else {
        Err(S3Error::new(
            S3ErrorCode::InvalidDigest,
            "The Content-MD5 you specified was invalid.",
        ))
    }
}

/// `x-amz-request-id`, on every answer of the engine.
fn set_request_id<B>(response: &mut http::Response<B>, request_id: &str) {
    // A constant name: a `&str` name that is not a standard header is allocated per insert.
    const X_AMZ_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-amz-request-id");
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(X_AMZ_REQUEST_ID, v);
    }
}

/// The S3 error response: XML body (none for HEAD), status, `x-amz-request-id`.
pub fn error_response<B: Body>(error: &S3Error, request_id: &str, head: bool) -> http::Response<B> {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if head || status == StatusCode::NOT_MODIFIED {
        return empty(status);
    }
    let mut r: http::Response<B> = xml(crate::xml::error_body(error, request_id));
    *r.status_mut() = status;
    r
}

/// The token of `Authorization: Bearer <token>`, if the request has one.
pub(crate) fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// `given` is `token`, compared in constant time.
pub(crate) fn token_matches(given: &str, token: &crate::config::Secret) -> bool {
    subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.expose().as_bytes()).into()
}

/// `base` with `overrides` laid over it (the same `Arc` when there are none).
fn effective_config(base: &Arc<Config>, overrides: &crate::admin::Overrides) -> Arc<Config> {
    if *overrides == crate::admin::Overrides::default() {
        base.clone()
    } else {
        Arc::new(overrides.apply(base))
    }
}

/// Records of the index are written with the time the gateway saw the write.
pub(crate) fn record(backend: &str, size: u64, etag: &str, now: SystemTime) -> ObjectRecord {
    ObjectRecord {
        backend: backend.to_owned(),
        size,
        etag: etag.to_owned(),
        last_modified: crate::time::unix_secs(now),
    }
}

/// Why a backend request got no answer.
enum Unanswered {
    /// Not sent, or failed on the gateway's side: the error the client gets.
    Refused(S3Error),
    /// Sent, and the backend could not be reached or did not answer in time.
    Transport(crate::http::TransportError),
}
