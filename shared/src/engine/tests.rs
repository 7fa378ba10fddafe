//! Engine tests against the in-memory S3 backend (`crate::testing`).
