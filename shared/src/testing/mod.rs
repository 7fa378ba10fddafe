//! Test doubles for the runtime traits: an in-memory S3 server ([`MemoryS3`]) behind the
//! [`crate::http::HttpClient`] trait, and a whole-in-memory body ([`MemBody`]).
//!
//! Compiled for this crate's tests and, with the `testing` feature, for other crates' tests.

mod body;
mod memory_s3;

pub use body::MemBody;
pub use memory_s3::{Fault, MemoryS3, StoredObject};
