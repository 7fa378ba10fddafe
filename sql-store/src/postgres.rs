//! The store's PostgreSQL dialect: `$n` placeholders, `INSERT ... ON CONFLICT DO UPDATE` with
//! `EXCLUDED`, names as `TEXT` (ordered with `COLLATE "C"`, byte order), and one atomic
//! statement for each conditional write.

use shared::store::{ObjectRecord, StoreError};
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgQueryResult};
use sqlx::{PgPool, Postgres};

use crate::dialect::{Dialect, Statements};
use crate::migrations::{self, Migrating};
use crate::store::Store;

/// The metadata index in PostgreSQL tables.
pub type PostgresStore = Store<Postgres>;

/// `put_object`'s statement, which the conditional write extends (a literal, for `concat!`).
macro_rules! upsert_object {
    () => {
        "INSERT INTO s3balance_objects (bucket, key, backend, size, etag, last_modified)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (bucket, key) DO UPDATE SET
           backend = EXCLUDED.backend, size = EXCLUDED.size, etag = EXCLUDED.etag,
           last_modified = EXCLUDED.last_modified"
    };
}

impl Dialect for Postgres {
    const LABEL: &'static str = "postgres";
    const UPDATE_TAKES_VALUES_AGAIN: bool = false;

    const SQL: Statements = Statements {
        object_buckets: "SELECT DISTINCT bucket FROM s3balance_objects ORDER BY bucket",
        count_objects: "SELECT COUNT(*) FROM s3balance_objects",
        all_operations: "SELECT backend, month, class_a, class_b FROM s3balance_operations
             ORDER BY backend, month",
        set_operations: "INSERT INTO s3balance_operations (backend, month, class_a, class_b)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (backend, month) DO UPDATE SET
               class_a = EXCLUDED.class_a, class_b = EXCLUDED.class_b",
        all_documents: "SELECT name, value FROM s3balance_documents ORDER BY name",

        get_object: "SELECT backend, size, etag, last_modified FROM s3balance_objects
             WHERE bucket = $1 AND key = $2",
        put_object: upsert_object!(),
        delete_object: "DELETE FROM s3balance_objects WHERE bucket = $1 AND key = $2",
        // bytea compares bytewise.
        list_objects: "SELECT key, backend, size, etag, last_modified FROM s3balance_objects
             WHERE bucket = $1 AND key > $2 ORDER BY key LIMIT $3",

        create_bucket: "INSERT INTO s3balance_buckets (name, record) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING",
        update_bucket: "UPDATE s3balance_buckets SET record = $1 WHERE name = $2",
        delete_bucket: "DELETE FROM s3balance_buckets WHERE name = $1",
        list_buckets: "SELECT record FROM s3balance_buckets ORDER BY name COLLATE \"C\"",

        add_usage: "INSERT INTO s3balance_usage (backend, used_bytes, objects) VALUES ($1, $2, $3)
             ON CONFLICT (backend) DO UPDATE SET
               used_bytes = s3balance_usage.used_bytes + EXCLUDED.used_bytes,
               objects = s3balance_usage.objects + EXCLUDED.objects",
        set_usage: "INSERT INTO s3balance_usage (backend, used_bytes, objects) VALUES ($1, $2, $3)
             ON CONFLICT (backend) DO UPDATE SET
               used_bytes = EXCLUDED.used_bytes, objects = EXCLUDED.objects",
        list_usage: "SELECT backend, used_bytes, objects FROM s3balance_usage
             ORDER BY backend COLLATE \"C\"",

        add_operations: "INSERT INTO s3balance_operations (backend, month, class_a, class_b)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (backend, month) DO UPDATE SET
               class_a = s3balance_operations.class_a + EXCLUDED.class_a,
               class_b = s3balance_operations.class_b + EXCLUDED.class_b",
        get_operations: "SELECT class_a, class_b FROM s3balance_operations
             WHERE backend = $1 AND month = $2",

        put_stale_copy: "INSERT INTO s3balance_stale_copies (bucket, key, backend, etag, noted)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (bucket, key, backend) DO UPDATE SET
               etag = EXCLUDED.etag, noted = EXCLUDED.noted",
        list_stale_copies: "SELECT bucket, key, backend, etag, noted FROM s3balance_stale_copies
             ORDER BY noted LIMIT $1",
        stale_copies_of: "SELECT bucket, key, backend, etag, noted FROM s3balance_stale_copies
             WHERE bucket = $1 AND key = $2",
        delete_stale_copy: "DELETE FROM s3balance_stale_copies
             WHERE bucket = $1 AND key = $2 AND backend = $3",

        get_document: "SELECT value FROM s3balance_documents WHERE name = $1",
        put_document: "INSERT INTO s3balance_documents (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
    };

    type Text = String;
    fn text(s: &str) -> String {
        s.to_owned()
    }
    fn read_text(t: String) -> Result<String, StoreError> {
        Ok(t)
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    fn connect_options(url: &str) -> Result<PgConnectOptions, String> {
        crate::dsn::postgres(url)
    }

    fn pool_options() -> PoolOptions<Postgres> {
        PoolOptions::new()
    }

    fn migrate(conn: &mut PgConnection) -> Migrating<'_> {
        migrations::postgres(conn)
    }

    /// One statement over column arrays (`UNNEST`), however many rows.
    async fn put_objects(
        pool: PgPool,
        bucket: Vec<u8>,
        rows: Vec<(String, ObjectRecord)>,
    ) -> Result<(), sqlx::Error> {
        let mut keys = Vec::with_capacity(rows.len());
        let mut backends = Vec::with_capacity(rows.len());
        let mut sizes = Vec::with_capacity(rows.len());
        let mut etags = Vec::with_capacity(rows.len());
        let mut times = Vec::with_capacity(rows.len());
        for (key, r) in rows {
            keys.push(key.into_bytes());
            backends.push(r.backend);
            sizes.push(r.size as i64);
            etags.push(r.etag);
            times.push(r.last_modified as i64);
        }
        sqlx::query(
            "INSERT INTO s3balance_objects (bucket, key, backend, size, etag, last_modified)
             SELECT $1, * FROM UNNEST($2::BYTEA[], $3::TEXT[], $4::BIGINT[], $5::TEXT[], $6::BIGINT[])
             ON CONFLICT (bucket, key) DO UPDATE SET
               backend = EXCLUDED.backend, size = EXCLUDED.size, etag = EXCLUDED.etag,
               last_modified = EXCLUDED.last_modified",
        )
        .bind(bucket)
        .bind(keys)
        .bind(backends)
        .bind(sizes)
        .bind(etags)
        .bind(times)
        .execute(&pool)
        .await
        .map(drop)
    }

    /// One statement: the row lock taken by ON CONFLICT makes the check and the write one
    /// step, whichever instance writes the same key at the same time.
    async fn put_object_unless_newer(
        pool: PgPool,
        bucket: Vec<u8>,
        key: Vec<u8>,
        r: ObjectRecord,
        not_before: i64,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query(concat!(
            upsert_object!(),
            " WHERE s3balance_objects.last_modified < $7"
        ))
        .bind(bucket)
        .bind(key)
        .bind(r.backend)
        .bind(r.size as i64)
        .bind(r.etag)
        .bind(r.last_modified as i64)
        .bind(not_before)
        .execute(&pool)
        .await
        .map(|done| done.rows_affected() == 1)
    }

    /// One statement: the DELETE removes an older entry; the SELECT (which sees the table as
    /// it was before the statement) says whether a newer one is kept.
    async fn delete_object_unless_newer(
        pool: PgPool,
        bucket: Vec<u8>,
        key: Vec<u8>,
        not_before: i64,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "WITH gone AS (
               DELETE FROM s3balance_objects
               WHERE bucket = $1 AND key = $2 AND last_modified < $3 RETURNING 1)
             SELECT NOT EXISTS (
               SELECT 1 FROM s3balance_objects
               WHERE bucket = $1 AND key = $2 AND last_modified >= $3)",
        )
        .bind(bucket)
        .bind(key)
        .bind(not_before)
        .fetch_one(&pool)
        .await
    }
}
