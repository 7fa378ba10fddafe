//! S3 Balance metadata stores on PostgreSQL ([`PostgresStore`]) and MySQL/MariaDB
//! ([`MySqlStore`]): one index shared by several gateway instances, as the Go s3-balance's
//! `database` section promised. Both pass `shared::store::contract`; the server picks one with
//! `metadata: {type: postgres|mysql, url}` or the Go `database: {type, dsn}` section.
//!
//! Both are the one store of `store.rs` over a `Dialect` (`dialect.rs`), implemented in
//! `postgres.rs` and `mysql.rs`.
#![forbid(unsafe_code)]

mod dialect;
mod dsn;
mod migrations;
mod mysql;
mod postgres;
mod runner;
mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use mysql::MySqlStore;
pub use postgres::PostgresStore;
use shared::config::{SqlDatabase, SqlKind};
use shared::store::{BucketRecord, ObjectRecord, OperationCounts, StoreError};

/// The methods `migrate` needs beyond `MetadataStore`, handed to the variant's store.
macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            SqlStore::Postgres($s) => $call.await,
            SqlStore::MySql($s) => $call.await,
        }
    };
}

/// How a store pools its connections.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// A connection older than this is closed and replaced (after a fail-over, say).
    pub max_lifetime: Duration,
    /// How long a query waits for a free connection (or a new one) before it fails: the
    /// request then gets 503 rather than hanging on a database that is down.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            max_lifetime: Duration::from_secs(30 * 60),
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

impl PoolSettings {
    /// The config's settings over the defaults.
    pub fn from_config(db: &SqlDatabase) -> Self {
        let d = Self::default();
        Self {
            max_connections: db.max_connections.unwrap_or(d.max_connections),
            max_lifetime: db
                .max_lifetime_secs
                .map_or(d.max_lifetime, Duration::from_secs),
            acquire_timeout: d.acquire_timeout,
        }
    }
}

/// A PostgreSQL or MySQL/MariaDB store, as the config names it.
pub enum SqlStore {
    Postgres(PostgresStore),
    MySql(MySqlStore),
}

impl SqlStore {
    /// Connects, creates or migrates the schema, and keeps a pool. Blocks the calling thread
    /// until the database answered (start-up); fails when it cannot be reached.
    pub fn open(db: &SqlDatabase) -> Result<Self, StoreError> {
        let settings = PoolSettings::from_config(db);
        match db.kind {
            SqlKind::Postgres => {
                PostgresStore::open(db.url.expose(), &settings).map(Self::Postgres)
            }
            SqlKind::MySql => MySqlStore::open(db.url.expose(), &settings).map(Self::MySql),
        }
    }

    pub fn kind(&self) -> SqlKind {
        match self {
            Self::Postgres(_) => SqlKind::Postgres,
            Self::MySql(_) => SqlKind::MySql,
        }
    }

    /// Buckets that have index entries, in byte order.
    pub async fn object_buckets(&self) -> Result<Vec<String>, StoreError> {
        delegate!(self, s => s.object_buckets())
    }
    /// Index entries in all buckets.
    pub async fn count_objects(&self) -> Result<u64, StoreError> {
        delegate!(self, s => s.count_objects())
    }
    /// Writes many entries of one bucket at once, replacing existing ones.
    pub async fn put_objects(
        &self,
        bucket: &str,
        rows: &[(String, ObjectRecord)],
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.put_objects(bucket, rows))
    }
    /// Every (backend, month) operation count.
    pub async fn all_operations(
        &self,
    ) -> Result<Vec<(String, String, OperationCounts)>, StoreError> {
        delegate!(self, s => s.all_operations())
    }
    /// Replaces one (backend, month) operation count.
    pub async fn set_operations(
        &self,
        backend: &str,
        month: &str,
        counts: &OperationCounts,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.set_operations(backend, month, counts))
    }
    /// Every document, by name.
    pub async fn all_documents(&self) -> Result<Vec<(String, String)>, StoreError> {
        delegate!(self, s => s.all_documents())
    }
}

shared::delegate_metadata_store!(SqlStore { Postgres, MySql });

/// Text stored as bytes (binary columns); anything else is a corrupt row.
fn utf8(bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|_| StoreError("corrupt row: text is not UTF-8".to_owned()))
}

/// The bucket record as stored: JSON, so that new fields need no migration.
fn bucket_json(record: &BucketRecord) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|e| StoreError(format!("bucket record: {e}")))
}

fn parse_bucket(json: &str) -> Result<BucketRecord, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError(format!("corrupt bucket record: {e}")))
}

/// A database migrated by a newer gateway still serves (migrations only add), but say so.
fn warn_if_newer(name: &str, found: i64) {
    if found > migrations::latest() {
        tracing::warn!(
            found,
            known = migrations::latest(),
            "{name}: the schema is newer than this build knows; upgrade this instance"
        );
    }
}
