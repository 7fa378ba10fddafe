//! S3 Balance on Cloudflare Workers.
//!
//! - `fetch`: every S3 request goes to the shared [`Engine`](shared::engine::Engine), built
//!   once per isolate from the config (var or secret `S3_BALANCE_CONFIG`, YAML or TOML,
//!   overridden by the KV key `config`, re-read at most every 5 s: a hot switch is
//!   `wrangler kv key put --binding S3_BALANCE_KV config "$(cat config.yaml)"`). `${NAME}` in
//!   the config is replaced by the Worker secret or var `NAME`.
//! - `scheduled` (cron): health probes, then the usage scan within the subrequest budget.
//! - Metadata: Workers KV ([`kv_store`]); backend requests: `fetch` ([`fetch_client`]).
//!
//! The runtime parts exist only on wasm32; natively this crate is its pure modules and their
//! tests, so `cargo test --workspace` and clippy run on the host unchanged.

pub mod keys;
pub mod settings;

#[cfg(target_arch = "wasm32")]
pub mod fetch_client;
#[cfg(target_arch = "wasm32")]
pub mod kv_store;
#[cfg(target_arch = "wasm32")]
mod logging;
#[cfg(target_arch = "wasm32")]
mod runtime;
#[cfg(all(target_arch = "wasm32", feature = "test-routes"))]
mod test_routes;
