//! The native adapter of S3 Balance: what the self-hosted server and the Lambda functions
//! share to move bytes. [`NativeBody`] is the engine's body type there (streamed, buffered or
//! refused, with the collect limit and the Content-Length rule); [`BackendClient`] is the
//! engine's HTTP client (HTTP/1.1 on keep-alive connections kept by [`pool`], URIs sent as
//! given, every phase bounded by a timeout, failures reported as
//! `shared::http::TransportError` with the phase that failed); [`stall`] holds the inactivity
//! timeouts both use, and the server uses for its client connections.

#![forbid(unsafe_code)]

pub mod body;
pub mod client;
mod pool;
pub mod stall;

pub use body::{BodyError, ByteStream, NativeBody};
pub use client::{BackendClient, ClientSettings, PoolScope};
