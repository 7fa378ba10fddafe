//! The store's MySQL/MariaDB dialect: `?` placeholders, `ON DUPLICATE KEY UPDATE` taking the
//! new values again, names in binary columns (compared byte by byte, no trailing-space
//! padding, no collation), and conditional writes as a few statements that are each atomic.
//!
//! The driver reports *matched* rows for UPDATE (CLIENT_FOUND_ROWS): an update that changes
//! nothing still counts, which the conditional write relies on.

use shared::store::{ObjectRecord, StoreError};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlQueryResult};
use sqlx::pool::PoolOptions;
use sqlx::{Executor, MySql, MySqlPool, QueryBuilder};

use crate::dialect::{Dialect, Statements};
use crate::migrations::{self, Migrating};
use crate::store::Store;
use crate::utf8;

/// The metadata index in MySQL/MariaDB tables (InnoDB).
pub type MySqlStore = Store<MySql>;

impl Dialect for MySql {
    const LABEL: &'static str = "mysql";
    const UPDATE_TAKES_VALUES_AGAIN: bool = true;

    const SQL: Statements = Statements {
        object_buckets: "SELECT DISTINCT bucket FROM s3balance_objects ORDER BY bucket",
        count_objects: "SELECT COUNT(*) FROM s3balance_objects",
        all_operations: "SELECT backend, month, class_a, class_b FROM s3balance_operations
             ORDER BY backend, month",
        set_operations: "INSERT INTO s3balance_operations (backend, month, class_a, class_b)
             VALUES (?, ?, ?, ?)
             ON DUPLICATE KEY UPDATE class_a = ?, class_b = ?",
        all_documents: "SELECT name, value FROM s3balance_documents ORDER BY name",

        get_object: "SELECT backend, size, etag, last_modified FROM s3balance_objects
             WHERE bucket = ? AND `key` = ?",
        put_object:
            "INSERT INTO s3balance_objects (bucket, `key`, backend, size, etag, last_modified)
             VALUES (?, ?, ?, ?, ?, ?)
             ON DUPLICATE KEY UPDATE backend = ?, size = ?, etag = ?, last_modified = ?",
        delete_object: "DELETE FROM s3balance_objects WHERE bucket = ? AND `key` = ?",
        // VARBINARY compares bytewise.
        list_objects: "SELECT `key`, backend, size, etag, last_modified FROM s3balance_objects
             WHERE bucket = ? AND `key` > ? ORDER BY `key` LIMIT ?",

        // A plain INSERT: its duplicate error is the only answer that tells "existed" apart.
        create_bucket: "INSERT INTO s3balance_buckets (name, record) VALUES (?, ?)",
        update_bucket: "UPDATE s3balance_buckets SET record = ? WHERE name = ?",
        delete_bucket: "DELETE FROM s3balance_buckets WHERE name = ?",
        list_buckets: "SELECT record FROM s3balance_buckets ORDER BY name",

        add_usage: "INSERT INTO s3balance_usage (backend, used_bytes, objects) VALUES (?, ?, ?)
             ON DUPLICATE KEY UPDATE used_bytes = used_bytes + ?, objects = objects + ?",
        set_usage: "INSERT INTO s3balance_usage (backend, used_bytes, objects) VALUES (?, ?, ?)
             ON DUPLICATE KEY UPDATE used_bytes = ?, objects = ?",
        list_usage: "SELECT backend, used_bytes, objects FROM s3balance_usage ORDER BY backend",

        add_operations: "INSERT INTO s3balance_operations (backend, month, class_a, class_b)
             VALUES (?, ?, ?, ?)
             ON DUPLICATE KEY UPDATE class_a = class_a + ?, class_b = class_b + ?",
        get_operations: "SELECT class_a, class_b FROM s3balance_operations
             WHERE backend = ? AND month = ?",

        put_stale_copy: "INSERT INTO s3balance_stale_copies (bucket, `key`, backend, etag, noted)
             VALUES (?, ?, ?, ?, ?)
             ON DUPLICATE KEY UPDATE etag = ?, noted = ?",
        list_stale_copies: "SELECT bucket, `key`, backend, etag, noted FROM s3balance_stale_copies
             ORDER BY noted LIMIT ?",
        stale_copies_of: "SELECT bucket, `key`, backend, etag, noted FROM s3balance_stale_copies
             WHERE bucket = ? AND `key` = ?",
        delete_stale_copy: "DELETE FROM s3balance_stale_copies
             WHERE bucket = ? AND `key` = ? AND backend = ?",

        get_document: "SELECT value FROM s3balance_documents WHERE name = ?",
        put_document: "INSERT INTO s3balance_documents (name, value) VALUES (?, ?)
             ON DUPLICATE KEY UPDATE value = ?",
    };

    type Text = Vec<u8>;
    fn text(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }
    fn read_text(t: Vec<u8>) -> Result<String, StoreError> {
        utf8(t)
    }

    fn rows_affected(done: &MySqlQueryResult) -> u64 {
        done.rows_affected()
    }

    fn connect_options(url: &str) -> Result<MySqlConnectOptions, String> {
        crate::dsn::mysql(url)
    }

    /// Strict on every table: a value too long is an error, never cut short.
    fn pool_options() -> PoolOptions<MySql> {
        PoolOptions::new().after_connect(|conn: &mut MySqlConnection, _| {
            Box::pin(async move {
                conn.execute(
                    "SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES')",
                )
                .await
                .map(drop)
            })
        })
    }

    fn migrate(conn: &mut MySqlConnection) -> Migrating<'_> {
        migrations::mysql(conn)
    }

    /// One multi-row INSERT (MySQL has no arrays to unnest).
    async fn put_objects(
        pool: MySqlPool,
        bucket: Vec<u8>,
        rows: Vec<(String, ObjectRecord)>,
    ) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut q = QueryBuilder::new(
            "INSERT INTO s3balance_objects (bucket, `key`, backend, size, etag, last_modified) ",
        );
        q.push_values(rows, |mut row, (key, r)| {
            row.push_bind(bucket.clone())
                .push_bind(key.into_bytes())
                .push_bind(r.backend.into_bytes())
                .push_bind(r.size as i64)
                .push_bind(r.etag.into_bytes())
                .push_bind(r.last_modified as i64);
        });
        // VALUES() in ON DUPLICATE KEY UPDATE: understood by MariaDB and MySQL (where 8.0.20+
        // merely warns); the single-row statements bind values twice instead.
        q.push(
            " ON DUPLICATE KEY UPDATE backend = VALUES(backend), size = VALUES(size),
              etag = VALUES(etag), last_modified = VALUES(last_modified)",
        );
        q.build().persistent(false).execute(&pool).await.map(drop)
    }

    /// MySQL's upsert cannot tell "inserted" from "kept" (both count one row), so: update an
    /// older entry (matched: written); else insert (written); a duplicate means an entry
    /// appeared meanwhile: update it if it is older; if not, it is newer (or was deleted after
    /// it appeared, which is newer news too): kept. Each statement is atomic, and every
    /// outcome is one that a serial order of the writes gives.
    async fn put_object_unless_newer(
        pool: MySqlPool,
        bucket: Vec<u8>,
        key: Vec<u8>,
        r: ObjectRecord,
        not_before: i64,
    ) -> Result<bool, sqlx::Error> {
        let update = || {
            sqlx::query(
                "UPDATE s3balance_objects SET backend = ?, size = ?, etag = ?, last_modified = ?
                 WHERE bucket = ? AND `key` = ? AND last_modified < ?",
            )
            .bind(r.backend.as_bytes())
            .bind(r.size as i64)
            .bind(r.etag.as_bytes())
            .bind(r.last_modified as i64)
            .bind(bucket.as_slice())
            .bind(key.as_slice())
            .bind(not_before)
        };
        if update().execute(&pool).await?.rows_affected() == 1 {
            return Ok(true);
        }
        let inserted = sqlx::query(
            "INSERT INTO s3balance_objects (bucket, `key`, backend, size, etag, last_modified)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(bucket.as_slice())
        .bind(key.as_slice())
        .bind(r.backend.as_bytes())
        .bind(r.size as i64)
        .bind(r.etag.as_bytes())
        .bind(r.last_modified as i64)
        .execute(&pool)
        .await;
        match inserted {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Ok(update().execute(&pool).await?.rows_affected() == 1)
            }
            Err(e) => Err(e),
        }
    }

    /// Delete an older entry; if none went, say whether an entry (newer) is kept.
    async fn delete_object_unless_newer(
        pool: MySqlPool,
        bucket: Vec<u8>,
        key: Vec<u8>,
        not_before: i64,
    ) -> Result<bool, sqlx::Error> {
        let deleted = sqlx::query(
            "DELETE FROM s3balance_objects WHERE bucket = ? AND `key` = ? AND last_modified < ?",
        )
        .bind(bucket.as_slice())
        .bind(key.as_slice())
        .bind(not_before)
        .execute(&pool)
        .await?;
        if deleted.rows_affected() == 1 {
            return Ok(true);
        }
        // Nothing deleted: either no entry (nothing to keep) or a newer one (kept).
        let kept: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM s3balance_objects WHERE bucket = ? AND `key` = ?")
                .bind(bucket.as_slice())
                .bind(key.as_slice())
                .fetch_optional(&pool)
                .await?;
        Ok(kept.is_none())
    }
}
