//! The runtime-free core of S3 Balance.
//!
//! Nothing in this crate does IO, reads the clock or draws randomness: time, random bytes,
//! configuration and health snapshots are arguments. The three runtimes (Cloudflare Worker,
//! AWS Lambda, self-hosted server) supply IO through the [`store::MetadataStore`] and
//! [`http::HttpClient`] traits and call [`engine::Engine::handle`].
#![forbid(unsafe_code)]
// Bytes from clients and backends reach most of this crate: a panic there is a dropped
// request (a dead isolate on the Worker). Unwraps and byte-offset slicing of strings are
// flagged outside tests; where one is provably safe it says why in an `expect` or an `allow`.
#![warn(clippy::unwrap_used, clippy::string_slice)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::string_slice))]
// The traits are used with concrete types by each adapter; Send-ness leaks through there.
#![allow(async_fn_in_trait)]

pub mod acl;
pub mod admin;
pub mod body;
pub mod config;
pub mod cors;
pub mod engine;
pub mod error;
// The fuzz targets' properties (`fuzz/`), replayed over the kept inputs by `cargo test`.
#[cfg(any(test, feature = "fuzzing"))]
#[allow(clippy::unwrap_used, clippy::string_slice)]
pub mod fuzzing;
pub mod health;
pub mod http;
pub mod listing;
pub mod metrics;
pub mod multipart;
pub mod placement;
pub mod route;
pub mod sigv4;
pub mod store;
#[cfg(any(test, feature = "testing"))]
#[allow(clippy::unwrap_used, clippy::string_slice)]
pub mod testing;
pub mod time;
pub mod xml;

pub use error::{S3Error, S3ErrorCode};
