//! What PostgreSQL and MySQL/MariaDB do differently, behind one trait: the statements' text
//! (placeholders, upsert syntax, quoting), how names are stored, how a pool connects and
//! migrates, and the three writes whose algorithm differs. [`crate::store::Store`] does the
//! rest once, for both.

use std::future::Future;

use shared::store::{ObjectRecord, StoreError};
use sqlx::pool::PoolOptions;
use sqlx::{Connection, Database, Decode, Encode, Pool, Type};

use crate::migrations::Migrating;

/// A Rust type bound to and read from a column on `DB` (a bound that implies the three sqlx
/// traits, so that the store's `where` clauses stay short).
pub trait Column<DB: Database>:
    for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB> + Send + Sync + Unpin + 'static
{
}

impl<DB: Database, T> Column<DB> for T where
    T: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB> + Send + Sync + Unpin + 'static
{
}

/// The connect options a database's DSN parses into.
pub(crate) type ConnectOptions<DB> = <<DB as Database>::Connection as Connection>::Options;

/// A database the store runs on: implemented for `sqlx::Postgres` (`postgres.rs`) and
/// `sqlx::MySql` (`mysql.rs`). Public only because [`PostgresStore`](crate::PostgresStore)
/// and [`MySqlStore`](crate::MySqlStore) are; the module is private, so no other crate can
/// name or implement it.
pub trait Dialect: Database {
    /// `postgres` or `mysql`: the prefix of errors and log lines.
    const LABEL: &'static str;

    /// The statements that differ only in their text.
    const SQL: Statements;

    /// MySQL's upsert can name the values being inserted only with `VALUES()`, deprecated
    /// since MySQL 8.0.20, so its `ON DUPLICATE KEY UPDATE` takes them as parameters again;
    /// PostgreSQL's names them `EXCLUDED`. See [`Dialect::bind_update`].
    const UPDATE_TAKES_VALUES_AGAIN: bool;

    /// Names (backend, ETag, month, bucket and document names) as bound and read: `TEXT` on
    /// PostgreSQL, binary (`VARBINARY`) on MySQL, where text columns would compare by
    /// collation and pad trailing spaces.
    type Text: Column<Self>;
    fn text(s: &str) -> Self::Text;
    fn read_text(t: Self::Text) -> Result<String, StoreError>;

    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// Parses a URL or a Go s3-balance DSN (`dsn.rs`).
    fn connect_options(url: &str) -> Result<ConnectOptions<Self>, String>;
    /// The pool before the store's settings are applied (MySQL sets a session mode here).
    fn pool_options() -> PoolOptions<Self>;
    /// Brings the schema to the latest version under the database's lock (`migrations.rs`);
    /// returns the version found before.
    fn migrate(conn: &mut Self::Connection) -> Migrating<'_>;

    /// Writes many entries of one bucket in one statement, replacing existing ones.
    fn put_objects(
        pool: Pool<Self>,
        bucket: Vec<u8>,
        rows: Vec<(String, ObjectRecord)>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'static;
    /// [`shared::store::MetadataStore::put_object_unless_newer`], atomic against other
    /// instances writing the same key.
    fn put_object_unless_newer(
        pool: Pool<Self>,
        bucket: Vec<u8>,
        key: Vec<u8>,
        record: ObjectRecord,
        not_before: i64,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send + 'static;
    /// [`shared::store::MetadataStore::delete_object_unless_newer`].
    fn delete_object_unless_newer(
        pool: Pool<Self>,
        bucket: Vec<u8>,
        key: Vec<u8>,
        not_before: i64,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send + 'static;

    /// Binds the values an upsert's update part sets, when the dialect takes them again
    /// ([`Dialect::UPDATE_TAKES_VALUES_AGAIN`]).
    fn bind_update<Q>(query: Q, bind: impl FnOnce(Q) -> Q) -> Q {
        if Self::UPDATE_TAKES_VALUES_AGAIN {
            bind(query)
        } else {
            query
        }
    }
}

/// The text of each statement the store runs alike on both databases, with the parameters
/// in the order the store binds them (an upsert's update values come again at the end where
/// [`Dialect::UPDATE_TAKES_VALUES_AGAIN`]).
pub struct Statements {
    /// `migrate`'s reads and writes.
    pub object_buckets: &'static str,
    pub count_objects: &'static str,
    pub all_operations: &'static str,
    /// (backend, month, class A, class B).
    pub set_operations: &'static str,
    pub all_documents: &'static str,

    /// (bucket, key).
    pub get_object: &'static str,
    /// (bucket, key, backend, size, ETag, last modified).
    pub put_object: &'static str,
    /// (bucket, key).
    pub delete_object: &'static str,
    /// (bucket, start after, limit).
    pub list_objects: &'static str,

    /// (name, JSON record); on a duplicate name it fails or changes nothing.
    pub create_bucket: &'static str,
    /// (JSON record, name); changes only an existing row.
    pub update_bucket: &'static str,
    /// (name).
    pub delete_bucket: &'static str,
    /// Records in byte order of the name.
    pub list_buckets: &'static str,

    /// (backend, bytes, objects).
    pub add_usage: &'static str,
    /// (backend, bytes, objects).
    pub set_usage: &'static str,
    pub list_usage: &'static str,

    /// (backend, month, class A, class B).
    pub add_operations: &'static str,
    /// (backend, month).
    pub get_operations: &'static str,

    /// (bucket, key, backend, ETag, noted).
    pub put_stale_copy: &'static str,
    /// (limit).
    pub list_stale_copies: &'static str,
    /// (bucket, key).
    pub stale_copies_of: &'static str,
    /// (bucket, key, backend).
    pub delete_stale_copy: &'static str,

    /// (name).
    pub get_document: &'static str,
    /// (name, value).
    pub put_document: &'static str,
}
