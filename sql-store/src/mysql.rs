//! The metadata store on MySQL or MariaDB.

use shared::store::{
    BackendUsage, BucketRecord, MetadataStore, ObjectRecord, OperationCounts, StaleCopy, StoreError,
};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::{Executor, QueryBuilder};

use crate::runner::Runner;
use crate::{bucket_json, migrations, parse_bucket, utf8, PoolSettings};

/// The metadata index in MySQL/MariaDB tables (`s3balance_*`, InnoDB), shared by every gateway
/// that names the same database. Text is stored in binary columns (compared byte by byte,
/// no trailing-space padding, no collation); statements are prepared once per pooled
/// connection; counters are added in the statement (`x = x + ?`).
///
/// The driver reports *matched* rows for UPDATE (CLIENT_FOUND_ROWS): an update that changes
/// nothing still counts, which the conditional write relies on.
pub struct MySqlStore {
    pool: MySqlPool,
    runner: Runner,
}

impl MySqlStore {
    /// Connects (URL or Go-MySQL-Driver DSN), creates or migrates the schema, and keeps a
    /// pool. Blocks the calling thread until the database answered: call it at start-up.
    pub fn open(url: &str, settings: &PoolSettings) -> Result<Self, StoreError> {
        let runner = Runner::new("mysql")?;
        let options = crate::dsn::mysql(url).map_err(|e| runner.error(e))?;
        let settings = settings.clone();
        let pool = runner.block_on(async move {
            let error = |e: sqlx::Error| StoreError(format!("mysql: {e}"));
            let pool = MySqlPoolOptions::new()
                .max_connections(settings.max_connections)
                .max_lifetime(settings.max_lifetime)
                .acquire_timeout(settings.acquire_timeout)
                // Strict on every table: a value too long is an error, never cut short.
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute(
                            "SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES')",
                        )
                        .await
                        .map(drop)
                    })
                })
                .connect_with(options)
                .await
                .map_err(error)?;
            let mut conn = pool.acquire().await.map_err(error)?;
            let found = migrations::mysql(&mut conn).await.map_err(error)?;
            crate::warn_if_newer("mysql", found);
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
        if rows.is_empty() {
            return Ok(());
        }
        let pool = self.pool.clone();
        let bucket = bucket.as_bytes().to_vec();
        let rows = rows.to_vec();
        self.runner
            .run(async move {
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
                // VALUES() in ON DUPLICATE KEY UPDATE: understood by MariaDB and MySQL (where
                // 8.0.20+ merely warns); the single-row statements bind values twice instead.
                q.push(
                    " ON DUPLICATE KEY UPDATE backend = VALUES(backend), size = VALUES(size),
                      etag = VALUES(etag), last_modified = VALUES(last_modified)",
                );
                q.build().persistent(false).execute(&pool).await.map(drop)
            })
            .await
    }

    /// Every (backend, month) operation count.
    pub async fn all_operations(
        &self,
    ) -> Result<Vec<(String, String, OperationCounts)>, StoreError> {
        let pool = self.pool.clone();
        let rows: Vec<(Vec<u8>, Vec<u8>, i64, i64)> = self
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
        rows.into_iter()
            .map(|(b, m, a, c)| {
                Ok((
                    utf8(b)?,
                    utf8(m)?,
                    OperationCounts {
                        class_a: a as u64,
                        class_b: c as u64,
                    },
                ))
            })
            .collect()
    }

    /// Replaces one (backend, month) operation count.
    pub async fn set_operations(
        &self,
        backend: &str,
        month: &str,
        n: &OperationCounts,
    ) -> Result<(), StoreError> {
        let (pool, backend, month) = (self.pool.clone(), bytes(backend), bytes(month));
        let (a, b) = (n.class_a as i64, n.class_b as i64);
        self.runner
            .run(async move {
                sqlx::query(
                    "INSERT INTO s3balance_operations (backend, month, class_a, class_b)
                     VALUES (?, ?, ?, ?)
                     ON DUPLICATE KEY UPDATE class_a = ?, class_b = ?",
                )
                .bind(backend)
                .bind(month)
                .bind(a)
                .bind(b)
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
        let rows: Vec<(Vec<u8>, String)> = self
            .runner
            .run(async move {
                sqlx::query_as("SELECT name, value FROM s3balance_documents ORDER BY name")
                    .fetch_all(&pool)
                    .await
            })
            .await?;
        rows.into_iter().map(|(n, v)| Ok((utf8(n)?, v))).collect()
    }
}

#[cfg(test)]
impl MySqlStore {
    pub(crate) async fn raw_for_tests(&self, sql: &'static str, value: &'static str) {
        let pool = self.pool.clone();
        self.runner
            .run(async move { sqlx::query(sql).bind(value).execute(&pool).await })
            .await
            .unwrap();
    }
}

impl MetadataStore for MySqlStore {
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
                     WHERE bucket = ? AND `key` = ?",
                )
                .bind(bucket)
                .bind(key)
                .fetch_optional(&pool)
                .await
            })
            .await?;
        row.map(object).transpose()
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
                    "INSERT INTO s3balance_objects (bucket, `key`, backend, size, etag, last_modified)
                     VALUES (?, ?, ?, ?, ?, ?)
                     ON DUPLICATE KEY UPDATE backend = ?, size = ?, etag = ?, last_modified = ?",
                )
                .bind(bucket)
                .bind(key)
                .bind(r.backend.as_bytes())
                .bind(r.size as i64)
                .bind(r.etag.as_bytes())
                .bind(r.last_modified as i64)
                .bind(r.backend.as_bytes())
                .bind(r.size as i64)
                .bind(r.etag.as_bytes())
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
                sqlx::query("DELETE FROM s3balance_objects WHERE bucket = ? AND `key` = ?")
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
        // MySQL's upsert cannot tell "inserted" from "kept" (both count one row), so: update
        // an older entry (matched: written); else insert (written); a duplicate means an
        // entry appeared meanwhile: update it if it is older; if not, it is newer (or was
        // deleted after it appeared, which is newer news too): kept. Each statement is
        // atomic, and every outcome is one that a serial order of the writes gives.
        self.runner
            .run(async move {
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
                    .bind(not_before as i64)
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
        self.runner
            .run(async move {
                let deleted = sqlx::query(
                    "DELETE FROM s3balance_objects
                     WHERE bucket = ? AND `key` = ? AND last_modified < ?",
                )
                .bind(bucket.as_slice())
                .bind(key.as_slice())
                .bind(not_before as i64)
                .execute(&pool)
                .await?;
                if deleted.rows_affected() == 1 {
                    return Ok(true);
                }
                // Nothing deleted: either no entry (nothing to keep) or a newer one (kept).
                let kept: Option<i64> = sqlx::query_scalar(
                    "SELECT 1 FROM s3balance_objects WHERE bucket = ? AND `key` = ?",
                )
                .bind(bucket.as_slice())
                .bind(key.as_slice())
                .fetch_optional(&pool)
                .await?;
                Ok(kept.is_none())
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
        // VARBINARY compares bytewise: UTF-8 byte order, as S3 lists.
        let rows: Vec<KeyedObjectRow> = self
            .runner
            .run(async move {
                sqlx::query_as(
                    "SELECT `key`, backend, size, etag, last_modified FROM s3balance_objects
                     WHERE bucket = ? AND `key` > ? ORDER BY `key` LIMIT ?",
                )
                .bind(bucket)
                .bind(after)
                .bind(limit)
                .fetch_all(&pool)
                .await
            })
            .await?;
        rows.into_iter()
            .map(|(k, b, s, e, t)| Ok((utf8(k)?, object((b, s, e, t))?)))
            .collect()
    }

    async fn create_bucket(&self, record: &BucketRecord) -> Result<bool, StoreError> {
        let (pool, name, json) = (self.pool.clone(), bytes(&record.name), bucket_json(record)?);
        // A plain INSERT: its duplicate error is the only answer that tells "existed" apart
        // (an upsert counts one row either way, INSERT IGNORE would hide other errors).
        self.runner
            .run(async move {
                let inserted =
                    sqlx::query("INSERT INTO s3balance_buckets (name, record) VALUES (?, ?)")
                        .bind(name)
                        .bind(json)
                        .execute(&pool)
                        .await;
                match inserted {
                    Ok(_) => Ok(true),
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
                    Err(e) => Err(e),
                }
            })
            .await
    }

    async fn delete_bucket(&self, name: &str) -> Result<(), StoreError> {
        let (pool, name) = (self.pool.clone(), bytes(name));
        self.runner
            .run(async move {
                sqlx::query("DELETE FROM s3balance_buckets WHERE name = ?")
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
                sqlx::query_scalar("SELECT record FROM s3balance_buckets ORDER BY name")
                    .fetch_all(&pool)
                    .await
            })
            .await?;
        rows.iter().map(|r| parse_bucket(r)).collect()
    }

    async fn add_usage(&self, backend: &str, bytes_: i64, objects: i64) -> Result<(), StoreError> {
        let (pool, backend) = (self.pool.clone(), bytes(backend));
        self.runner
            .run(async move {
                sqlx::query(
                    "INSERT INTO s3balance_usage (backend, used_bytes, objects) VALUES (?, ?, ?)
                     ON DUPLICATE KEY UPDATE used_bytes = used_bytes + ?, objects = objects + ?",
                )
                .bind(backend)
                .bind(bytes_)
                .bind(objects)
                .bind(bytes_)
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
                    "INSERT INTO s3balance_usage (backend, used_bytes, objects) VALUES (?, ?, ?)
                     ON DUPLICATE KEY UPDATE used_bytes = ?, objects = ?",
                )
                .bind(u.backend.as_bytes())
                .bind(u.used_bytes)
                .bind(u.objects)
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
        let rows: Vec<(Vec<u8>, i64, i64)> = self
            .runner
            .run(async move {
                sqlx::query_as(
                    "SELECT backend, used_bytes, objects FROM s3balance_usage ORDER BY backend",
                )
                .fetch_all(&pool)
                .await
            })
            .await?;
        rows.into_iter()
            .map(|(backend, used_bytes, objects)| {
                Ok(BackendUsage {
                    backend: utf8(backend)?,
                    used_bytes,
                    objects,
                })
            })
            .collect()
    }

    async fn add_operations(
        &self,
        backend: &str,
        month: &str,
        n: &OperationCounts,
    ) -> Result<(), StoreError> {
        let (pool, backend, month) = (self.pool.clone(), bytes(backend), bytes(month));
        let (a, b) = (n.class_a as i64, n.class_b as i64);
        self.runner
            .run(async move {
                sqlx::query(
                    "INSERT INTO s3balance_operations (backend, month, class_a, class_b)
                     VALUES (?, ?, ?, ?)
                     ON DUPLICATE KEY UPDATE class_a = class_a + ?, class_b = class_b + ?",
                )
                .bind(backend)
                .bind(month)
                .bind(a)
                .bind(b)
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
        let (pool, backend, month) = (self.pool.clone(), bytes(backend), bytes(month));
        let row: Option<(i64, i64)> = self
            .runner
            .run(async move {
                sqlx::query_as(
                    "SELECT class_a, class_b FROM s3balance_operations
                     WHERE backend = ? AND month = ?",
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
                let etag = c.etag.as_deref().map(str::as_bytes);
                sqlx::query(
                    "INSERT INTO s3balance_stale_copies (bucket, `key`, backend, etag, noted)
                     VALUES (?, ?, ?, ?, ?)
                     ON DUPLICATE KEY UPDATE etag = ?, noted = ?",
                )
                .bind(c.bucket.as_bytes())
                .bind(c.key.as_bytes())
                .bind(c.backend.as_bytes())
                .bind(etag)
                .bind(c.noted as i64)
                .bind(etag)
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
                    "SELECT bucket, `key`, backend, etag, noted FROM s3balance_stale_copies
                     ORDER BY noted LIMIT ?",
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
                    "SELECT bucket, `key`, backend, etag, noted FROM s3balance_stale_copies
                     WHERE bucket = ? AND `key` = ?",
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
                     WHERE bucket = ? AND `key` = ? AND backend = ?",
                )
                .bind(c.bucket.as_bytes())
                .bind(c.key.as_bytes())
                .bind(c.backend.as_bytes())
                .execute(&pool)
                .await
                .map(drop)
            })
            .await
    }

    async fn get_document(&self, name: &str) -> Result<Option<String>, StoreError> {
        let (pool, name) = (self.pool.clone(), bytes(name));
        self.runner
            .run(async move {
                sqlx::query_scalar("SELECT value FROM s3balance_documents WHERE name = ?")
                    .bind(name)
                    .fetch_optional(&pool)
                    .await
            })
            .await
    }

    async fn put_document(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let (pool, name, value) = (self.pool.clone(), bytes(name), value.to_owned());
        self.runner
            .run(async move {
                sqlx::query(
                    "INSERT INTO s3balance_documents (name, value) VALUES (?, ?)
                     ON DUPLICATE KEY UPDATE value = ?",
                )
                .bind(name)
                .bind(value.as_str())
                .bind(value.as_str())
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

type ObjectRow = (Vec<u8>, i64, Vec<u8>, i64);
type KeyedObjectRow = (Vec<u8>, Vec<u8>, i64, Vec<u8>, i64);
type StaleRow = (Vec<u8>, Vec<u8>, Vec<u8>, Option<Vec<u8>>, i64);

fn object((backend, size, etag, last_modified): ObjectRow) -> Result<ObjectRecord, StoreError> {
    Ok(ObjectRecord {
        backend: utf8(backend)?,
        size: size as u64,
        etag: utf8(etag)?,
        last_modified: last_modified as u64,
    })
}

fn stale((bucket, key, backend, etag, noted): StaleRow) -> Result<StaleCopy, StoreError> {
    Ok(StaleCopy {
        bucket: utf8(bucket)?,
        key: utf8(key)?,
        backend: utf8(backend)?,
        etag: etag.map(utf8).transpose()?,
        noted: noted as u64,
    })
}
