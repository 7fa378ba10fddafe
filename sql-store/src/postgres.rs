//! The metadata store on PostgreSQL.

use shared::store::{
    BackendUsage, BucketRecord, MetadataStore, ObjectRecord, OperationCounts, StaleCopy, StoreError,
};
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::runner::Runner;
use crate::{bucket_json, migrations, parse_bucket, utf8, PoolSettings};

/// The metadata index in PostgreSQL tables (`s3balance_*`), shared by every gateway that
/// names the same database. Statements are prepared once per pooled connection (sqlx's
/// statement cache); counters are added in the statement (`x = x + $n`), so concurrent adds
/// from many instances are exact.
pub struct PostgresStore {
    pool: PgPool,
    runner: Runner,
}

impl PostgresStore {
    /// Connects (URL or keyword/value DSN), creates or migrates the schema, and keeps a pool.
    /// Blocks the calling thread until the database answered: call it at start-up.
    pub fn open(url: &str, settings: &PoolSettings) -> Result<Self, StoreError> {
        let runner = Runner::new("postgres")?;
        let options = crate::dsn::postgres(url).map_err(|e| runner.error(e))?;
        let settings = settings.clone();
        let pool = runner.block_on(async move {
            let error = |e: sqlx::Error| StoreError(format!("postgres: {e}"));
            let pool = PgPoolOptions::new()
                .max_connections(settings.max_connections)
                .max_lifetime(settings.max_lifetime)
                .acquire_timeout(settings.acquire_timeout)
                .connect_with(options)
                .await
                .map_err(error)?;
            let mut conn = pool.acquire().await.map_err(error)?;
            let found = migrations::postgres(&mut conn).await.map_err(error)?;
            crate::warn_if_newer("postgres", found);
            drop(conn);
            Ok(pool)
        })?;
        Ok(Self { pool, runner })
    }

    /// Buckets that have index entries (`migrate` walks them).
    pub async fn object_buckets(&self) -> Result<Vec<String>, StoreError> {
        let pool = self.pool.clone();
        let rows: Vec<Vec<u8>> = self
            .runner
            .run(async move {
                sqlx::query_scalar("SELECT DISTINCT bucket FROM s3balance_objects ORDER BY bucket")
                    .fetch_all(&pool)
                    .await
            })
            .await?;
        rows.into_iter().map(utf8).collect()
    }

    pub async fn count_objects(&self) -> Result<u64, StoreError> {
        let pool = self.pool.clone();
        let n: i64 = self
            .runner
            .run(async move {
                sqlx::query_scalar("SELECT COUNT(*) FROM s3balance_objects")
                    .fetch_one(&pool)
                    .await
            })
            .await?;
        Ok(n as u64)
    }

    /// Writes many entries of one bucket in one statement (replacing existing ones).
    pub async fn put_objects(
        &self,
        bucket: &str,
        rows: &[(String, ObjectRecord)],
    ) -> Result<(), StoreError> {
        let pool = self.pool.clone();
        let bucket = bucket.as_bytes().to_vec();
        let keys: Vec<Vec<u8>> = rows.iter().map(|(k, _)| k.as_bytes().to_vec()).collect();
        let backends: Vec<String> = rows.iter().map(|(_, r)| r.backend.clone()).collect();
        let sizes: Vec<i64> = rows.iter().map(|(_, r)| r.size as i64).collect();
        let etags: Vec<String> = rows.iter().map(|(_, r)| r.etag.clone()).collect();
        let times: Vec<i64> = rows.iter().map(|(_, r)| r.last_modified as i64).collect();
        self.runner
            .run(async move {
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
            })
            .await
    }

    /// Every (backend, month) operation count.
    pub async fn all_operations(
        &self,
    ) -> Result<Vec<(String, String, OperationCounts)>, StoreError> {
        let pool = self.pool.clone();
        let rows: Vec<(String, String, i64, i64)> = self
            .runner
            .run(async move {
                sqlx::query_as(
                    "SELECT backend, month, class_a, class_b FROM s3balance_operations
                     ORDER BY backend, month",
                )
                .fetch_all(&pool)
                .await
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(b, m, a, c)| {
                (
                    b,
                    m,
                    OperationCounts {
                        class_a: a as u64,
                        class_b: c as u64,
                    },
                )
            })
            .collect())
    }

    /// Replaces one (backend, month) operation count.
    pub async fn set_operations(
        &self,
        backend: &str,
        month: &str,
        n: &OperationCounts,
    ) -> Result<(), StoreError> {
        let (pool, backend, month) = (self.pool.clone(), backend.to_owned(), month.to_owned());
        let (a, b) = (n.class_a as i64, n.class_b as i64);
        self.runner
            .run(async move {
                sqlx::query(
                    "INSERT INTO s3balance_operations (backend, month, class_a, class_b)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (backend, month) DO UPDATE SET
                       class_a = EXCLUDED.class_a, class_b = EXCLUDED.class_b",
                )
                .bind(backend)
                .bind(month)
                .bind(a)
                .bind(b)
                .execute(&pool)
                .await
                .map(drop)
            })
            .await
    }

    /// Every document, by name.
    pub async fn all_documents(&self) -> Result<Vec<(String, String)>, StoreError> {
        let pool = self.pool.clone();
        self.runner
            .run(async move {
                sqlx::query_as("SELECT name, value FROM s3balance_documents ORDER BY name")
                    .fetch_all(&pool)
                    .await
            })
            .await
    }
}

#[cfg(test)]
impl PostgresStore {
    pub(crate) async fn raw_for_tests(&self, sql: &'static str, value: &'static str) {
        let pool = self.pool.clone();
        self.runner
            .run(async move { sqlx::query(sql).bind(value).execute(&pool).await })
            .await
            .unwrap();
    }
}

impl MetadataStore for PostgresStore {
    async fn get_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectRecord>, StoreError> {
        let (pool, bucket, key) = (self.pool.clone(), bytes(bucket), bytes(key));
        let row: Option<ObjectRow> = self
            .runner
            .run(async move {
                sqlx::query_as(
                    "SELECT backend, size, etag, last_modified FROM s3balance_objects
                     WHERE bucket = $1 AND key = $2",
                )
                .bind(bucket)
                .bind(key)
                .fetch_optional(&pool)
                .await
            })
            .await?;
        Ok(row.map(object))
    }

    async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        r: &ObjectRecord,
    ) -> Result<(), StoreError> {
        let (pool, bucket, key, r) = (self.pool.clone(), bytes(bucket), bytes(key), r.clone());
        self.runner
            .run(async move {
                sqlx::query(
                    "INSERT INTO s3balance_objects (bucket, key, backend, size, etag, last_modified)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (bucket, key) DO UPDATE SET
                       backend = EXCLUDED.backend, size = EXCLUDED.size, etag = EXCLUDED.etag,
                       last_modified = EXCLUDED.last_modified",
                )
                .bind(bucket)
                .bind(key)
                .bind(r.backend)
                .bind(r.size as i64)
                .bind(r.etag)
                .bind(r.last_modified as i64)
                .execute(&pool)
                .await
                .map(drop)
            })
            .await
    }

    async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let (pool, bucket, key) = (self.pool.clone(), bytes(bucket), bytes(key));
        self.runner
            .run(async move {
                sqlx::query("DELETE FROM s3balance_objects WHERE bucket = $1 AND key = $2")
                    .bind(bucket)
                    .bind(key)
                    .execute(&pool)
                    .await
                    .map(drop)
            })
            .await
    }

    async fn put_object_unless_newer(
        &self,
        bucket: &str,
        key: &str,
        r: &ObjectRecord,
        not_before: u64,
    ) -> Result<bool, StoreError> {
        let (pool, bucket, key, r) = (self.pool.clone(), bytes(bucket), bytes(key), r.clone());
        // One statement: the row lock taken by ON CONFLICT makes the check and the write one
        // step, whichever instance writes the same key at the same time.
        self.runner
            .run(async move {
                sqlx::query(
                    "INSERT INTO s3balance_objects (bucket, key, backend, size, etag, last_modified)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (bucket, key) DO UPDATE SET
                       backend = EXCLUDED.backend, size = EXCLUDED.size, etag = EXCLUDED.etag,
                       last_modified = EXCLUDED.last_modified
                     WHERE s3balance_objects.last_modified < $7",
                )
                .bind(bucket)
                .bind(key)
                .bind(r.backend)
                .bind(r.size as i64)
                .bind(r.etag)
                .bind(r.last_modified as i64)
                .bind(not_before as i64)
                .execute(&pool)
                .await
                .map(|done| done.rows_affected() == 1)
            })
            .await
    }

    async fn delete_object_unless_newer(
        &self,
        bucket: &str,
        key: &str,
        not_before: u64,
    ) -> Result<bool, StoreError> {
        let (pool, bucket, key) = (self.pool.clone(), bytes(bucket), bytes(key));
        // One statement: the DELETE removes an older entry; the SELECT (which sees the table
        // as it was before the statement) says whether a newer one is kept.
        self.runner
            .run(async move {
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
                .bind(not_before as i64)
                .fetch_one(&pool)
                .await
            })
            .await
    }

    async fn list_objects(
        &self,
        bucket: &str,
        start_after: &str,
        limit: usize,
    ) -> Result<Vec<(String, ObjectRecord)>, StoreError> {
        let (pool, bucket, after) = (self.pool.clone(), bytes(bucket), bytes(start_after));
        let limit = limit.min(i64::MAX as usize) as i64;
        // bytea compares bytewise: UTF-8 byte order, as S3 lists.
        let rows: Vec<(Vec<u8>, String, i64, String, i64)> = self
            .runner
            .run(async move {
                sqlx::query_as(
                    "SELECT key, backend, size, etag, last_modified FROM s3balance_objects
                     WHERE bucket = $1 AND key > $2 ORDER BY key LIMIT $3",
                )
                .bind(bucket)
                .bind(after)
                .bind(limit)
                .fetch_all(&pool)
                .await
            })
            .await?;
        rows.into_iter()
            .map(|(k, b, s, e, t)| Ok((utf8(k)?, object((b, s, e, t)))))
            .collect()
    }

    async fn create_bucket(&self, record: &BucketRecord) -> Result<bool, StoreError> {
        let (pool, name, json) = (self.pool.clone(), record.name.clone(), bucket_json(record)?);
        self.runner
            .run(async move {
                sqlx::query(
                    "INSERT INTO s3balance_buckets (name, record) VALUES ($1, $2)
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(name)
                .bind(json)
                .execute(&pool)
                .await
                .map(|done| done.rows_affected() == 1)
            })
            .await
    }

    async fn delete_bucket(&self, name: &str) -> Result<(), StoreError> {
        let (pool, name) = (self.pool.clone(), name.to_owned());
        self.runner
            .run(async move {
                sqlx::query("DELETE FROM s3balance_buckets WHERE name = $1")
                    .bind(name)
                    .execute(&pool)
                    .await
                    .map(drop)
            })
            .await
    }

    async fn list_buckets(&self) -> Result<Vec<BucketRecord>, StoreError> {
        let pool = self.pool.clone();
        let rows: Vec<String> = self
            .runner
            .run(async move {
                sqlx::query_scalar(
                    "SELECT record FROM s3balance_buckets ORDER BY name COLLATE \"C\"",
                )
                .fetch_all(&pool)
                .await
            })
            .await?;
        rows.iter().map(|r| parse_bucket(r)).collect()
    }

    async fn add_usage(&self, backend: &str, bytes: i64, objects: i64) -> Result<(), StoreError> {
        let (pool, backend) = (self.pool.clone(), backend.to_owned());
        self.runner
            .run(async move {
                sqlx::query(
                    "INSERT INTO s3balance_usage (backend, used_bytes, objects) VALUES ($1, $2, $3)
                     ON CONFLICT (backend) DO UPDATE SET
                       used_bytes = s3balance_usage.used_bytes + EXCLUDED.used_bytes,
                       objects = s3balance_usage.objects + EXCLUDED.objects",
                )
                .bind(backend)
                .bind(bytes)
                .bind(objects)
                .execute(&pool)
                .await
                .map(drop)
            })
            .await
    }

    async fn set_usage(&self, u: &BackendUsage) -> Result<(), StoreError> {
        let (pool, u) = (self.pool.clone(), u.clone());
        self.runner
            .run(async move {
                sqlx::query(
                    "INSERT INTO s3balance_usage (backend, used_bytes, objects) VALUES ($1, $2, $3)
                     ON CONFLICT (backend) DO UPDATE SET
                       used_bytes = EXCLUDED.used_bytes, objects = EXCLUDED.objects",
                )
                .bind(u.backend)
                .bind(u.used_bytes)
                .bind(u.objects)
                .execute(&pool)
                .await
                .map(drop)
            })
            .await
    }

    async fn list_usage(&self) -> Result<Vec<BackendUsage>, StoreError> {
        let pool = self.pool.clone();
        let rows: Vec<(String, i64, i64)> = self
            .runner
            .run(async move {
                sqlx::query_as(
                    "SELECT backend, used_bytes, objects FROM s3balance_usage
                     ORDER BY backend COLLATE \"C\"",
                )
                .fetch_all(&pool)
                .await
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(backend, used_bytes, objects)| BackendUsage {
                backend,
                used_bytes,
                objects,
            })
            .collect())
    }

    async fn add_operations(
        &self,
        backend: &str,
        month: &str,
        n: &OperationCounts,
    ) -> Result<(), StoreError> {
        let (pool, backend, month) = (self.pool.clone(), backend.to_owned(), month.to_owned());
        let (a, b) = (n.class_a as i64, n.class_b as i64);
        self.runner
            .run(async move {
                sqlx::query(
                    "INSERT INTO s3balance_operations (backend, month, class_a, class_b)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (backend, month) DO UPDATE SET
                       class_a = s3balance_operations.class_a + EXCLUDED.class_a,
                       class_b = s3balance_operations.class_b + EXCLUDED.class_b",
                )
                .bind(backend)
                .bind(month)
                .bind(a)
                .bind(b)
                .execute(&pool)
                .await
                .map(drop)
            })
            .await
    }

    async fn get_operations(
        &self,
        backend: &str,
        month: &str,
    ) -> Result<OperationCounts, StoreError> {
        let (pool, backend, month) = (self.pool.clone(), backend.to_owned(), month.to_owned());
        let row: Option<(i64, i64)> = self
            .runner
            .run(async move {
                sqlx::query_as(
                    "SELECT class_a, class_b FROM s3balance_operations
                     WHERE backend = $1 AND month = $2",
                )
                .bind(backend)
                .bind(month)
                .fetch_optional(&pool)
                .await
            })
            .await?;
        Ok(row
            .map(|(a, b)| OperationCounts {
                class_a: a as u64,
                class_b: b as u64,
            })
            .unwrap_or_default())
    }

    async fn put_stale_copy(&self, copy: &StaleCopy) -> Result<(), StoreError> {
        let (pool, c) = (self.pool.clone(), copy.clone());
        self.runner
            .run(async move {
                sqlx::query(
                    "INSERT INTO s3balance_stale_copies (bucket, key, backend, etag, noted)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (bucket, key, backend) DO UPDATE SET
                       etag = EXCLUDED.etag, noted = EXCLUDED.noted",
                )
                .bind(c.bucket.into_bytes())
                .bind(c.key.into_bytes())
                .bind(c.backend)
                .bind(c.etag)
                .bind(c.noted as i64)
                .execute(&pool)
                .await
                .map(drop)
            })
            .await
    }

    async fn list_stale_copies(&self, limit: usize) -> Result<Vec<StaleCopy>, StoreError> {
        let pool = self.pool.clone();
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows: Vec<StaleRow> = self
            .runner
            .run(async move {
                sqlx::query_as(
                    "SELECT bucket, key, backend, etag, noted FROM s3balance_stale_copies
                     ORDER BY noted LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&pool)
                .await
            })
            .await?;
        rows.into_iter().map(stale).collect()
    }

    async fn stale_copies_of(&self, bucket: &str, key: &str) -> Result<Vec<StaleCopy>, StoreError> {
        let (pool, bucket, key) = (self.pool.clone(), bytes(bucket), bytes(key));
        let rows: Vec<StaleRow> = self
            .runner
            .run(async move {
                sqlx::query_as(
                    "SELECT bucket, key, backend, etag, noted FROM s3balance_stale_copies
                     WHERE bucket = $1 AND key = $2",
                )
                .bind(bucket)
                .bind(key)
                .fetch_all(&pool)
                .await
            })
            .await?;
        rows.into_iter().map(stale).collect()
    }

    async fn delete_stale_copy(&self, copy: &StaleCopy) -> Result<(), StoreError> {
        let (pool, c) = (self.pool.clone(), copy.clone());
        self.runner
            .run(async move {
                sqlx::query(
                    "DELETE FROM s3balance_stale_copies
                     WHERE bucket = $1 AND key = $2 AND backend = $3",
                )
                .bind(c.bucket.into_bytes())
                .bind(c.key.into_bytes())
                .bind(c.backend)
                .execute(&pool)
                .await
                .map(drop)
            })
            .await
    }

    async fn get_document(&self, name: &str) -> Result<Option<String>, StoreError> {
        let (pool, name) = (self.pool.clone(), name.to_owned());
        self.runner
            .run(async move {
                sqlx::query_scalar("SELECT value FROM s3balance_documents WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&pool)
                    .await
            })
            .await
    }

    async fn put_document(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let (pool, name, value) = (self.pool.clone(), name.to_owned(), value.to_owned());
        self.runner
            .run(async move {
                sqlx::query(
                    "INSERT INTO s3balance_documents (name, value) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                )
                .bind(name)
                .bind(value)
                .execute(&pool)
                .await
                .map(drop)
            })
            .await
    }
}

fn bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

type ObjectRow = (String, i64, String, i64);
type StaleRow = (Vec<u8>, Vec<u8>, String, Option<String>, i64);

fn object((backend, size, etag, last_modified): ObjectRow) -> ObjectRecord {
    ObjectRecord {
        backend,
        size: size as u64,
        etag,
        last_modified: last_modified as u64,
    }
}

fn stale((bucket, key, backend, etag, noted): StaleRow) -> Result<StaleCopy, StoreError> {
    Ok(StaleCopy {
        bucket: utf8(bucket)?,
        key: utf8(key)?,
        backend,
        etag,
        noted: noted as u64,
    })
}
