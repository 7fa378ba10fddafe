//! The admin API and console under `admin.prefix` (default `/_admin`), served by every runtime:
//!
//! | call | answer |
//! |---|---|
//! | `GET {prefix}/` | the web console (one self-contained page) |
//! | `GET {prefix}/api/buckets` | every backend: Go's fields plus health history, placements |
//! | `GET {prefix}/api/buckets/{name}` | one backend |
//! | `PATCH {prefix}/api/buckets/{name}` | `{"weight": 3, "enabled": true, "read_only": false}` (each optional; `null` returns to the config's value) |
//! | `GET {prefix}/api/health` | Go's health answer (`healthy`/`degraded`/`unhealthy`) |
//! | `GET {prefix}/api/virtual-buckets` | virtual buckets with their pools |
//! | `PUT {prefix}/api/strategy` | `{"strategy": "weighted"}` |
//! | `DELETE {prefix}/api/overrides` | drops every change made here: the config as written applies |
//! | `POST {prefix}/api/health-check` | runs the probes now; answers the new health |
//! | `POST {prefix}/api/usage-scan` | runs a step of the usage scan now (30 listing pages) |
//! | `POST {prefix}/api/drain/{name}`, `POST {prefix}/api/rebalance` | starts (or resumes) a move and runs one small step; the scheduled job of every runtime goes on with it |
//! | `GET {prefix}/api/moves`, `POST .../moves/step`, `DELETE .../moves` | the move in progress: its progress, one more step, stop |
//!
//! Every call needs a credential marked `admin` (SigV4, as for S3 calls) or
//! `Authorization: Bearer <admin.token>`; never anonymous, whatever `auth_required` says.
//! Changes go to the store document the other instances read at their next state refresh.
//! Answers are JSON; errors are `{"code": ..., "message": ...}` with the S3 error's status.

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use serde::Serialize;

use super::{Engine, RequestContext, State};
use crate::admin::{BackendOverride, Overrides, Snapshot, StrategyChange, OVERRIDES_DOCUMENT};
use crate::body::Body;
use crate::error::{S3Error, S3ErrorCode};
use crate::http::HttpClient;
use crate::sigv4::{Identity, Payload};
use crate::store::MetadataStore;

/// The console page, compiled in: no build step, no asset to deploy.
const CONSOLE_HTML: &str = include_str!("../admin/console.html");
/// Listing pages one on-demand usage scan fetches: within a Worker invocation's subrequest cap
/// (50 on the Free plan); the next call, or the scheduled scan, goes on from there.
const ON_DEMAND_SCAN_REQUESTS: usize = 30;
/// Objects one on-demand move step looks at: about five backend requests each, within a
/// Worker invocation's subrequest cap; the scheduled job goes on from there.
const ON_DEMAND_MOVE_BATCH: usize = 5;
/// Admin request bodies are small JSON documents.
const BODY_LIMIT: usize = 64 * 1024;

impl<S: MetadataStore, C: HttpClient> Engine<S, C> {
    /// Whether the request is for the admin API or console (path style on the gateway's own
    /// host, under the prefix).
    pub(super) fn is_admin_request(&self, state: &State, parts: &http::request::Parts) -> bool {
        let admin = &state.config.admin;
        let path = parts.uri.path();
        admin.enabled
            && path
                .strip_prefix(admin.prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            && !self.on_virtual_host(state, parts)
    }

    /// Serves an admin request; errors become JSON answers.
    pub(super) async fn admin_api(
        &self,
        state: &State,
        parts: http::request::Parts,
        body: C::Body,
        ctx: &RequestContext,
    ) -> http::Response<C::Body> {
        let rest = parts
            .uri
            .path()
            .strip_prefix(state.config.admin.prefix.as_str())
            .unwrap_or_default()
            .to_owned();
        if rest.is_empty() || rest == "/" {
            // The page holds no data and no secret: it asks for the token, then calls the API.
            return if parts.method == Method::GET || parts.method == Method::HEAD {
                let mut r = http::Response::new(C::Body::from_bytes(Bytes::from_static(
                    CONSOLE_HTML.as_bytes(),
                )));
                let h = r.headers_mut();
                h.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                h.insert(
                    "content-security-policy",
                    HeaderValue::from_static(
                        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
                    ),
                );
                r
            } else {
                json_error(&S3Error::new(
                    S3ErrorCode::MethodNotAllowed,
                    "The specified method is not allowed against this resource.",
                ))
            };
        }
        let result = async {
            let body = body.collect(BODY_LIMIT).await?;
            self.authorize_admin(state, &parts, &body, ctx)?;
            self.admin_call(state, &parts.method, &rest, &body, ctx)
                .await
        }
        .await;
        match result {
            Ok(value) => json(StatusCode::OK, &value),
            Err(e) => json_error(&e),
        }
    }

    /// The bearer token, or a SigV4 signature of a credential marked `admin` whose payload
    /// hash (when declared) matches the body.
    fn authorize_admin(
        &self,
        state: &State,
        parts: &http::request::Parts,
        body: &[u8],
        ctx: &RequestContext,
    ) -> Result<(), S3Error> {
        let config = &state.config;
        if let Some(given) = super::bearer(&parts.headers) {
            let ok = config
                .admin
                .token
                .as_ref()
                .is_some_and(|token| super::token_matches(given, token));
            return if ok {
                Ok(())
            } else {
                Err(S3Error::access_denied())
            };
        }
        let verified = self.verify_signature(config, parts, ctx.now)?;
        let Identity::AccessKey(key) = &verified.identity else {
            return Err(S3Error::access_denied());
        };
        if !config.credential(key).is_some_and(|c| c.admin) {
            return Err(S3Error::access_denied());
        }
        match verified.payload {
            Payload::Unsigned => Ok(()),
            Payload::Sha256(digest) => {
                let actual: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(body).into();
                if actual == digest {
                    Ok(())
                } else {
                    Err(S3Error::new(
                        S3ErrorCode::XAmzContentSHA256Mismatch,
                        "The provided 'x-amz-content-sha256' header does not match what was computed.",
                    ))
                }
            }
            Payload::StreamingSigned(_) | Payload::StreamingUnsignedTrailer => Err(S3Error::new(
                S3ErrorCode::InvalidRequest,
                "The admin API takes plain JSON bodies, not aws-chunked.",
            )),
        }
    }

    async fn admin_call(
        &self,
        state: &State,
        method: &Method,
        rest: &str,
        body: &[u8],
        ctx: &RequestContext,
    ) -> Result<serde_json::Value, S3Error> {
        let path: Vec<&str> = rest.trim_matches('/').split('/').collect();
        let placements = self.metrics.placements_by_backend();
        let snapshot = |state: &State| -> serde_json::Value {
            let s = snapshot_of(state, &placements);
            serde_json::json!({
                "total": state.config.backends.len(),
                "strategy": state.config.balancer.strategy.as_str(),
                "buckets": s.backends(),
            })
        };
        match (method, path.as_slice()) {
            (&Method::GET, ["api", "buckets"]) => Ok(snapshot(state)),
            (&Method::GET, ["api", "buckets", name]) => {
                let view = snapshot_of(state, &placements)
                    .backend(name)
                    .ok_or_else(|| no_such_backend(name))?;
                Ok(serde_json::to_value(view).unwrap_or_default())
            }
            (&Method::PATCH, ["api", "buckets", name]) => {
                let change: BackendChange = parse(body)?;
                // Checked here too: a stale override may still name a backend the config lost.
                if state.config.backend(name).is_none() {
                    return Err(no_such_backend(name));
                }
                let state = self
                    .change_overrides(state, |o| {
                        let entry = o.backends.entry((*name).to_owned()).or_default();
                        change.apply(entry);
                    })
                    .await?;
                let view = snapshot_of(&state, &placements)
                    .backend(name)
                    .ok_or_else(|| no_such_backend(name))?;
                Ok(serde_json::to_value(view).unwrap_or_default())
            }
            (&Method::GET, ["api", "health"]) => {
                let s = snapshot_of(state, &placements);
                Ok(serde_json::json!({
                    "status": s.status(),
                    "timestamp": crate::time::iso8601(ctx.now),
                    "load_balancer_strategy": state.config.balancer.strategy.as_str(),
                    "total_buckets": state.config.backends.len(),
                    "available_buckets": s.available_count(),
                    "health_taken_at": state.health.taken_at,
                }))
            }
            (&Method::GET, ["api", "virtual-buckets"]) => {
                let configured = state
                    .config
                    .virtual_buckets
                    .iter()
                    .map(|v| (v.clone(), false));
                let created = state
                    .created_buckets
                    .iter()
                    .map(|c| (state.config.bucket_or_default(&c.name), true));
                let buckets: Vec<serde_json::Value> = configured
                    .chain(created)
                    .map(|(v, created_at_run_time)| {
                        serde_json::json!({
                            "name": v.name,
                            "backends": state.config.pool(&v).iter().map(|b| &b.name).collect::<Vec<_>>(),
                            "reads": v.reads,
                            "writes": v.writes,
                            "anonymous_read": v.anonymous_read,
                            "created_at_run_time": created_at_run_time,
                        })
                    })
                    .collect();
                Ok(serde_json::json!({ "virtual_buckets": buckets }))
            }
            (&Method::PUT, ["api", "strategy"]) => {
                let change: StrategyChange = parse(body)?;
                let state = self
                    .change_overrides(state, |o| o.strategy = Some(change.strategy))
                    .await?;
                Ok(serde_json::json!({ "strategy": state.config.balancer.strategy.as_str() }))
            }
            (&Method::DELETE, ["api", "overrides"]) => {
                let state = self
                    .change_overrides(state, |o| *o = Overrides::default())
                    .await?;
                Ok(snapshot(&state))
            }
            (&Method::GET, ["api", "overrides"]) => {
                Ok(serde_json::to_value(&state.overrides).unwrap_or_default())
            }
            (&Method::POST, ["api", "health-check"]) => {
                let now = ctx.now;
                self.check_health(&move || now)
                    .await
                    .map_err(super::store_unavailable)?;
                Ok(snapshot(&self.state()))
            }
            (&Method::POST, ["api", "usage-scan"]) => {
                self.scan_usage(ON_DEMAND_SCAN_REQUESTS, ctx.now)
                    .await
                    .map_err(super::store_unavailable)?;
                self.refresh(ctx.now)
                    .await
                    .map_err(super::store_unavailable)?;
                Ok(snapshot(&self.state()))
            }
            (&Method::GET, ["api", "moves"]) => {
                Ok(serde_json::to_value(self.move_run().await?).unwrap_or_default())
            }
            (&Method::POST, ["api", "drain", name]) => {
                let goal = super::MoveGoal::Drain((*name).to_owned());
                self.start_admin_move(goal, body, ctx.now).await
            }
            (&Method::POST, ["api", "rebalance"]) => {
                self.start_admin_move(super::MoveGoal::Rebalance, body, ctx.now)
                    .await
            }
            (&Method::POST, ["api", "moves", "step"]) => {
                self.admin_move_step(ctx.now).await?;
                Ok(serde_json::to_value(self.move_run().await?).unwrap_or_default())
            }
            (&Method::DELETE, ["api", "moves"]) => {
                self.cancel_move_run().await?;
                Ok(serde_json::to_value(self.move_run().await?).unwrap_or_default())
            }
            (
                _,
                ["api", "buckets" | "health" | "virtual-buckets" | "strategy" | "overrides"
                | "health-check" | "usage-scan" | "moves" | "drain" | "rebalance", ..],
            ) => Err(S3Error::new(
                S3ErrorCode::MethodNotAllowed,
                "The specified method is not allowed against this resource.",
            )),
            _ => Err(S3Error::new(
                S3ErrorCode::NoSuchKey,
                format!("no admin call at {rest}"),
            )),
        }
    }

    /// Starts (or resumes) a drain or rebalance for the scheduled job, runs its first step and
    /// answers the run.
    async fn start_admin_move(
        &self,
        goal: super::MoveGoal,
        body: &[u8],
        now: std::time::SystemTime,
    ) -> Result<serde_json::Value, S3Error> {
        let limits = move_limits(body)?;
        self.start_move_run(goal, super::MoveDriver::Scheduled, limits, false, now)
            .await?;
        self.admin_move_step(now).await?;
        Ok(serde_json::to_value(self.move_run().await?).unwrap_or_default())
    }

    /// One small step of the scheduled run, under this instance's lease.
    async fn admin_move_step(&self, now: std::time::SystemTime) -> Result<(), S3Error> {
        let owner = self.instance_id(now);
        self.continue_move_run(
            ON_DEMAND_MOVE_BATCH,
            super::MoveDriver::Scheduled,
            &owner,
            now,
        )
        .await
        .map(drop)
    }

    /// Marks `backend` read-only for every instance (an admin override): a drain's first step.
    pub async fn mark_read_only(&self, backend: &str) -> Result<(), S3Error> {
        let state = self.state();
        if state.config.backend(backend).is_some_and(|b| b.read_only) {
            return Ok(());
        }
        self.change_overrides(&state, |o| {
            o.backends.entry(backend.to_owned()).or_default().read_only = Some(true);
        })
        .await
        .map(drop)
    }

    /// Stores the overrides after `change` and puts them in force here at once; the other
    /// instances follow at their next state refresh. Starts from the stored document, so two
    /// operators changing different settings do not undo each other (the store has no
    /// compare-and-set on documents; the last of two changes to one setting wins).
    async fn change_overrides(
        &self,
        state: &State,
        change: impl FnOnce(&mut Overrides),
    ) -> Result<std::sync::Arc<State>, S3Error> {
        let stored = self
            .store
            .get_document(OVERRIDES_DOCUMENT)
            .await
            .map_err(super::store_unavailable)?;
        let current = Overrides::from_document(stored.as_deref());
        let next = current.changed(&state.base_config, change)?;
        self.store
            .put_document(OVERRIDES_DOCUMENT, &next.to_document())
            .await
            .map_err(super::store_unavailable)?;
        tracing::info!(overrides = ?next, "admin: overrides changed");
        self.set_overrides(next);
        Ok(self.state())
    }
}

/// The body of `PATCH {prefix}/api/buckets/{name}`: a field absent keeps its override, `null`
/// drops it (the config's value applies again).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendChange {
    #[serde(default, with = "serde_with_null")]
    weight: Option<Option<u32>>,
    #[serde(default, with = "serde_with_null")]
    enabled: Option<Option<bool>>,
    #[serde(default, with = "serde_with_null")]
    read_only: Option<Option<bool>>,
}

impl BackendChange {
    fn apply(&self, o: &mut BackendOverride) {
        if let Some(v) = self.weight {
            o.weight = v;
        }
        if let Some(v) = self.enabled {
            o.enabled = v;
        }
        if let Some(v) = self.read_only {
            o.read_only = v;
        }
    }
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
mod serde_with_null {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        T: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// The optional body of a drain or rebalance: `{"batch": 100, "max_object": 268435456,
/// "settle_secs": 60}`, each defaulting to [`super::MoveLimits::default`].
fn move_limits(body: &[u8]) -> Result<super::MoveLimits, S3Error> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Given {
        batch: Option<usize>,
        max_object: Option<u64>,
        settle_secs: Option<u64>,
    }
    let defaults = super::MoveLimits::default();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(defaults);
    }
    let given: Given = parse(body)?;
    Ok(super::MoveLimits {
        batch: given.batch.unwrap_or(defaults.batch).max(1),
        max_object: given.max_object.unwrap_or(defaults.max_object),
        settle_secs: given.settle_secs.unwrap_or(defaults.settle_secs),
    })
}

fn snapshot_of<'a>(
    state: &'a State,
    placements: &'a std::collections::BTreeMap<String, u64>,
) -> Snapshot<'a> {
    Snapshot {
        config: &state.config,
        health: &state.health,
        usage: &state.usage,
        operations: &state.operations,
        placements,
        overrides: &state.overrides,
    }
}

fn no_such_backend(name: &str) -> S3Error {
    S3Error::new(
        S3ErrorCode::NoSuchBucket,
        format!("no backend named {name:?}"),
    )
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, S3Error> {
    serde_json::from_slice(body).map_err(|e| {
        S3Error::new(
            S3ErrorCode::InvalidArgument,
            format!("The JSON you provided was not well-formed or did not validate: {e}"),
        )
    })
}

fn json<B: Body>(status: StatusCode, value: &impl Serialize) -> http::Response<B> {
    let text = serde_json::to_vec(value).unwrap_or_default();
    let mut r = http::Response::new(B::from_bytes(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r
}

fn json_error<B: Body>(error: &S3Error) -> http::Response<B> {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(
        status,
        &serde_json::json!({ "code": error.code.as_str(), "message": error.message }),
    )
}

#[cfg(test)]
mod tests {
    use futures_executor::block_on;
    use http::Method;

    use crate::admin::OVERRIDES_DOCUMENT;
    use crate::config::{CredentialConfig, Secret, Strategy};
    use crate::engine::tests::{config, signed, Answer, Harness, ENDPOINTS};

    const TOKEN: &str = "admin-token";

    fn harness() -> Harness {
        let mut c = config(Strategy::RoundRobin);
        c.api.auth_required = true;
        c.admin.token = Some(Secret::new(TOKEN));
        c.api.credentials.push(CredentialConfig {
            access_key: "reader".into(),
            secret_key: Secret::new("readersecret"),
            buckets: None,
            read_only: false,
            admin: false,
        });
        Harness::with_config(c)
    }

    fn admin(h: &Harness, method: Method, path: &str, body: &str) -> Answer {
        let bearer = format!("Bearer {TOKEN}");
        h.send(
            method,
            &format!("/_admin/api{path}"),
            &[("authorization", &bearer)],
            body.as_bytes(),
        )
    }

    fn json(a: &Answer) -> serde_json::Value {
        serde_json::from_slice(&a.body).unwrap_or_else(|e| panic!("{e}: {}", a.text()))
    }

    #[test]
    fn only_the_token_or_an_admin_credential_gets_in() {
        let h = harness();
        let anonymous = h.send(Method::GET, "/_admin/api/buckets", &[], b"");
        assert_eq!(anonymous.status, 403);
        assert_eq!(json(&anonymous)["code"], "AccessDenied");
        let wrong = h.send(
            Method::GET,
            "/_admin/api/buckets",
            &[("authorization", "Bearer nope")],
            b"",
        );
        assert_eq!(wrong.status, 403);
        let not_admin = signed(
            &h,
            Method::GET,
            "/_admin/api/buckets",
            "reader",
            "readersecret",
            b"",
        );
        assert_eq!(not_admin.status, 403, "{}", not_admin.text());
        let by_key = signed(
            &h,
            Method::GET,
            "/_admin/api/buckets",
            "gwkey",
            "gwsecret",
            b"",
        );
        assert_eq!(by_key.status, 200, "{}", by_key.text());
        let by_token = admin(&h, Method::GET, "/buckets", "");
        assert_eq!(json(&by_token)["total"], 3);
        assert_eq!(json(&by_token)["buckets"][0]["name"], "b1");
        // The console page itself holds nothing secret.
        let page = h.send(Method::GET, "/_admin/", &[], b"");
        assert_eq!(page.status, 200);
        assert!(page.text().contains("S3 Balance console"));
        // A bucket named like the prefix cannot exist ('_' starts no bucket name); S3 paths
        // next to it are untouched.
        let s3 = h.send(Method::GET, "/_adminx/k", &[], b"");
        assert_ne!(s3.status, 200);
    }

    #[test]
    fn a_read_only_backend_takes_no_new_objects_and_the_change_reaches_other_instances() {
        let h = harness();
        let patched = admin(&h, Method::PATCH, "/buckets/b1", r#"{"read_only": true}"#);
        assert_eq!(patched.status, 200, "{}", patched.text());
        assert_eq!(json(&patched)["read_only"], true);
        assert_eq!(json(&patched)["overridden"]["read_only"], true);
        for i in 0..6 {
            let put = signed(
                &h,
                Method::PUT,
                &format!("/photos/k{i}"),
                "gwkey",
                "gwsecret",
                b"x",
            );
            assert_eq!(put.status, 200, "{}", put.text());
        }
        assert!(h.s3().object_keys(ENDPOINTS[0], "real1").is_empty());
        let placed = json(&admin(&h, Method::GET, "/buckets", ""));
        assert_eq!(placed["buckets"][1]["placements"], 3);

        // Another instance: the stored document reaches it with its state refresh, and the
        // override survives a reload of the config as written.
        use crate::store::MetadataStore;
        let other = crate::engine::Engine::new(
            h.engine.state().base_config.clone(),
            crate::store::MemoryStore::new(),
            crate::testing::MemoryS3::new(),
        );
        let document = block_on(h.engine.store().get_document(OVERRIDES_DOCUMENT)).unwrap();
        block_on(
            other
                .store()
                .put_document(OVERRIDES_DOCUMENT, &document.unwrap()),
        )
        .unwrap();
        assert!(!other.config().backend("b1").unwrap().read_only);
        block_on(other.refresh(h.now)).unwrap();
        assert!(other.config().backend("b1").unwrap().read_only);
        other.set_config(h.engine.state().base_config.clone());
        assert!(other.config().backend("b1").unwrap().read_only);

        // `null` returns to the config's value; clearing drops every change.
        let back = admin(&h, Method::PATCH, "/buckets/b1", r#"{"read_only": null}"#);
        assert_eq!(json(&back)["read_only"], false);
        admin(
            &h,
            Method::PUT,
            "/strategy",
            r#"{"strategy": "least-space"}"#,
        );
        assert_eq!(h.engine.config().balancer.strategy, Strategy::LeastSpace);
        let cleared = admin(&h, Method::DELETE, "/overrides", "");
        assert_eq!(json(&cleared)["strategy"], "round-robin");
    }

    #[test]
    fn bad_changes_are_refused_with_s3_codes_and_change_nothing() {
        let h = harness();
        let cases = [
            (
                Method::PATCH,
                "/buckets/nope",
                r#"{"weight": 1}"#,
                404,
                "NoSuchBucket",
            ),
            (
                Method::PATCH,
                "/buckets/b1",
                r#"{"weight": -1}"#,
                400,
                "InvalidArgument",
            ),
            (
                Method::PATCH,
                "/buckets/b1",
                r#"{"colour": "red"}"#,
                400,
                "InvalidArgument",
            ),
            (
                Method::PATCH,
                "/buckets/b1",
                "not json",
                400,
                "InvalidArgument",
            ),
            (
                Method::PUT,
                "/strategy",
                r#"{"strategy": "fastest"}"#,
                400,
                "InvalidArgument",
            ),
            (Method::POST, "/buckets", "", 405, "MethodNotAllowed"),
            (Method::GET, "/nothing-here", "", 404, "NoSuchKey"),
        ];
        for (method, path, body, status, code) in cases {
            let a = admin(&h, method.clone(), path, body);
            assert_eq!(
                (a.status.as_u16(), json(&a)["code"].as_str()),
                (status, Some(code)),
                "{method} {path} {body}"
            );
        }
        // Weighted with every enabled backend at weight 0 could place nothing.
        for b in ["b1", "b2"] {
            admin(
                &h,
                Method::PATCH,
                &format!("/buckets/{b}"),
                r#"{"weight": 0}"#,
            );
        }
        let last = admin(&h, Method::PATCH, "/buckets/b3", r#"{"weight": 0}"#);
        assert_eq!(last.status, 200);
        let weighted = admin(&h, Method::PUT, "/strategy", r#"{"strategy": "weighted"}"#);
        assert_eq!(weighted.status, 400, "{}", weighted.text());
        assert_eq!(h.engine.config().balancer.strategy, Strategy::RoundRobin);
    }

    #[test]
    fn probes_run_on_demand_and_the_health_answer_follows_go() {
        let h = harness();
        let probed = admin(&h, Method::POST, "/health-check", "");
        assert_eq!(probed.status, 200, "{}", probed.text());
        let b1 = &json(&probed)["buckets"][0];
        assert_eq!(b1["health_history"].as_array().unwrap().len(), 1);
        assert!(!b1["last_checked"].as_str().unwrap().is_empty());
        let health = json(&admin(&h, Method::GET, "/health", ""));
        assert_eq!(health["status"], "healthy");
        assert_eq!(health["available_buckets"], 3);
        // A backend that stops answering: degraded, and its history says why.
        h.s3().set_down(ENDPOINTS[1], true);
        let probed = json(&admin(&h, Method::POST, "/health-check", ""));
        let b2 = &probed["buckets"][1];
        assert_eq!(b2["available"], false);
        assert!(
            b2["last_error"].as_str().unwrap().contains("Connect")
                || b2["last_error"].as_str().unwrap().contains("HTTP"),
            "{b2}"
        );
        assert_eq!(
            json(&admin(&h, Method::GET, "/health", ""))["status"],
            "degraded"
        );
        // Switched off by the operator: not a fault. None available: unhealthy.
        admin(&h, Method::PATCH, "/buckets/b2", r#"{"enabled": false}"#);
        assert_eq!(
            json(&admin(&h, Method::GET, "/health", ""))["status"],
            "healthy"
        );
        admin(&h, Method::PATCH, "/buckets/b1", r#"{"enabled": false}"#);
        admin(&h, Method::PATCH, "/buckets/b3", r#"{"enabled": false}"#);
        assert_eq!(
            json(&admin(&h, Method::GET, "/health", ""))["status"],
            "unhealthy"
        );
        let vb = json(&admin(&h, Method::GET, "/virtual-buckets", ""));
        assert_eq!(
            vb["virtual_buckets"][1]["backends"],
            serde_json::json!(["b1", "b2"])
        );
    }
}
