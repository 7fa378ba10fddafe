//! Routes for the end-to-end tests: compiled only with the feature `test-routes` (the test
//! bundle, `scripts/build-worker --test-routes`) and served only when the var
//! `S3_BALANCE_TEST_ROUTES=1` is set too. Under `/__test/`:
//!
//! - `GET kv-contract`: runs the shared store contract on [`KvStore`] inside workerd, under a
//!   fresh key prefix (removed afterwards). 200 `ok`; a failed expectation panics (500).
//! - `GET decide?n=N`: N GET decisions (probe order + placement + presigned redirect URL) for
//!   timing from outside: wasm's clock does not advance during computation.
//! - `POST refresh`: re-reads the config and the state now.
//! - `DELETE index?bucket=B&key=K`: drops an index entry (a KV replica that has not seen the
//!   write yet). `PUT index?bucket=B&key=K&backend=X`: points it at another backend (stale).

use std::collections::HashMap;
use std::rc::Rc;

use shared::error::S3Error;
use shared::placement::{self, BackendState, Entropy};
use shared::store::{MetadataStore, ObjectRecord};
use worker::{Env, Request, Response};

use crate::kv_store::KvStore;
use crate::runtime::{self, Runtime, KV_BINDING};

fn internal(e: impl std::fmt::Display) -> S3Error {
    tracing::error!("test route: {e}");
    S3Error::internal()
}

pub async fn handle(rt: &Rc<Runtime>, req: Request, env: &Env) -> Result<Response, S3Error> {
    let url = req.url().map_err(internal)?;
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    let q = |name: &str| query.get(name).cloned().unwrap_or_default();
    let method = req.inner().method();
    match (method.as_str(), req.path().as_str()) {
        ("GET", "/__test/kv-contract") => {
            let kv = env.kv(KV_BINDING).map_err(internal)?;
            let prefix = format!("t/{}/", hex::encode(runtime::random_bytes::<8>()));
            let store = KvStore::new(kv).with_prefix(prefix);
            shared::store::contract::run(&store).await;
            let removed = store.clear().await.map_err(internal)?;
            Ok(text_response(200, format!("ok ({removed} keys cleaned)")))
        }
        ("GET", "/__test/decide") => {
            let n: usize = q("n").parse().unwrap_or(1000);
            let state = rt.engine.state();
            let config = state.config.clone();
            let states: Vec<BackendState> = config
                .backends
                .iter()
                .map(|b| BackendState {
                    name: b.name.clone(),
                    weight: b.weight,
                    enabled: b.enabled,
                    read_only: b.read_only,
                    healthy: state.health.is_healthy(&b.name),
                    max_size: b.max_size,
                    used_bytes: 0,
                    class_a_used: 0,
                    class_b_used: 0,
                    class_a_limit: b.limit_class_a,
                    class_b_limit: b.limit_class_b,
                })
                .collect();
            let now = runtime::system_time(runtime::now_ms());
            let mut urls = 0usize;
            // The production path's signer (signing keys cached per backend and day).
            let signer = shared::sigv4::sign::SignerCache::new();
            for i in 0..n {
                let key = format!("photos/2026/{i:08}.jpg");
                let order = placement::probe_order(&states, "bench", &key);
                let candidates = placement::write_candidates(&states, Some(1024))?;
                let chosen = placement::choose(
                    config.balancer.strategy,
                    &candidates,
                    "bench",
                    &key,
                    Entropy {
                        counter: i as u64,
                        random: i as u64,
                    },
                );
                let first = order
                    .first()
                    .map(|s| s.name.as_str())
                    .unwrap_or(chosen.name.as_str());
                let backend = config.backend(first).ok_or_else(S3Error::internal)?;
                let uri: http::Uri = format!(
                    "{}/{}/bench/{key}",
                    backend.endpoint.trim_end_matches('/'),
                    backend.bucket
                )
                .parse()
                .map_err(internal)?;
                let url = signer.presign(
                    &http::Method::GET,
                    &uri,
                    backend,
                    config.api.presign_expiry,
                    now,
                )?;
                urls += url.len().min(1);
            }
            Ok(text_response(200, format!("{{\"n\":{n},\"urls\":{urls}}}")))
        }
        ("POST", "/__test/refresh") => {
            rt.reload_config(env).await;
            rt.refresh().await;
            Ok(text_response(200, "ok"))
        }
        ("DELETE", "/__test/index") => {
            rt.engine
                .store()
                .delete_object(&q("bucket"), &q("key"))
                .await
                .map_err(internal)?;
            Ok(text_response(200, "ok"))
        }
        ("PUT", "/__test/index") => {
            let record = ObjectRecord {
                backend: q("backend"),
                size: 0,
                etag: String::new(),
                last_modified: 0,
            };
            rt.engine
                .store()
                .put_object(&q("bucket"), &q("key"), &record)
                .await
                .map_err(internal)?;
            Ok(text_response(200, "ok"))
        }
        ("GET", "/__test/index") => {
            let rec = rt
                .engine
                .store()
                .get_object(&q("bucket"), &q("key"))
                .await
                .map_err(internal)?;
            Ok(text_response(
                200,
                serde_json::to_string(&rec).map_err(internal)?,
            ))
        }
        _ => Ok(text_response(404, "no such test route")),
    }
}

/// A plain-text answer.
fn text_response(status: u16, text: impl Into<String>) -> Response {
    Response::builder()
        .with_status(status)
        .fixed(text.into().into_bytes())
}
