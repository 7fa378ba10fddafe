//! The metadata store on either database, written once: each method binds its values to the
//! dialect's statement and maps the rows; what differs lives in [`Dialect`].

use shared::store::{
    BackendUsage, BucketRecord, MetadataStore, ObjectRecord, OperationCounts, StaleCopy, StoreError,
};
use sqlx::query::{Query, QueryAs};
use sqlx::{ColumnIndex, Executor, FromRow, IntoArguments, Pool};

use crate::dialect::{Column, Dialect};
use crate::runner::Runner;
use crate::{bucket_json, parse_bucket, utf8, PoolSettings};

/// The metadata index in `s3balance_*` tables, shared by every gateway that names the same
/// database. Statements are prepared once per pooled connection (sqlx's statement cache);
/// counters are added in the statement (`x = x + ...`), so concurrent adds from many
/// instances are exact. Object keys and bucket names are bytes: listing is UTF-8 byte order
/// on any collation.
pub struct Store<D: Dialect> {
    pool: Pool<D>,
    runner: Runner,
}

/// A statement with its values bound, ready to run on the store's runtime.
type Bound<D> = Query<'static, D, <D as sqlx::Database>::Arguments<'static>>;
type BoundAs<D, O> = QueryAs<'static, D, O, <D as sqlx::Database>::Arguments<'static>>;

impl<D: Dialect> Store<D> {
    /// Connects (URL or the Go s3-balance's DSN), creates or migrates the schema, and keeps a
    /// pool. Blocks the calling thread until the database answered: call it at start-up.
    pub fn open(url: &str, settings: &PoolSettings) -> Result<Self, StoreError> {
        let runner = Runner::new(D::LABEL)?;
        let options = D::connect_options(url).map_err(|e| runner.error(e))?;
        let settings = settings.clone();
        let pool = runner.block_on(async move {
            let error = |e: sqlx::Error| StoreError(format!("{}: {e}", D::LABEL));
            let pool = D::pool_options()
                .max_connections(settings.max_connections)
                .max_lifetime(settings.max_lifetime)
                .acquire_timeout(settings.acquire_timeout)
                .connect_with(options)
                .await
                .map_err(error)?;
            let mut conn = pool.acquire().await.map_err(error)?;
            let found = D::migrate(&mut conn).await.map_err(error)?;
            crate::warn_if_newer(D::LABEL, found);
            drop(conn);
            Ok(pool)
        })?;
        Ok(Self { pool, runner })
    }
}

// What sqlx needs to run the statements on any `D`. Both impl blocks below state it: Rust
// does not carry bounds like these from the `Dialect` trait to its users.
impl<D: Dialect> Store<D>
where
    for<'c> &'c Pool<D>: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
    usize: ColumnIndex<D::Row>,
    i64: Column<D>,
    Vec<u8>: Column<D>,
    String: Column<D>,
    Option<D::Text>: Column<D>,
{
    /// Buckets that have index entries, in byte order (`migrate` walks them).
    pub async fn object_buckets(&self) -> Result<Vec<String>, StoreError> {
        let q = sqlx::query_as(D::SQL.object_buckets);
        let rows: Vec<(Vec<u8>,)> = self.fetch_all(q).await?;
        rows.into_iter().map(|(bucket,)| utf8(bucket)).collect()
    }

    /// Index entries in all buckets.
    pub async fn count_objects(&self) -> Result<u64, StoreError> {
        let q = sqlx::query_as(D::SQL.count_objects);
        let (n,): (i64,) = self.fetch_one(q).await?;
        Ok(n as u64)
    }

    /// Writes many entries of one bucket at once, replacing existing ones.
    pub async fn put_objects(
        &self,
        bucket: &str,
        rows: &[(String, ObjectRecord)],
    ) -> Result<(), StoreError> {
        let write = D::put_objects(self.pool.clone(), bytes(bucket), rows.to_vec());
        self.runner.run(write).await
    }

    /// Every (backend, month) operation count.
    pub async fn all_operations(
        &self,
    ) -> Result<Vec<(String, String, OperationCounts)>, StoreError> {
        let q = sqlx::query_as(D::SQL.all_operations);
        let rows: Vec<(D::Text, D::Text, i64, i64)> = self.fetch_all(q).await?;
        rows.into_iter()
            .map(|(backend, month, a, b)| {
                Ok((D::read_text(backend)?, D::read_text(month)?, counts((a, b))))
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
        self.add_or_set_operations(D::SQL.set_operations, backend, month, n)
            .await
    }

    /// Every document, by name.
    pub async fn all_documents(&self) -> Result<Vec<(String, String)>, StoreError> {
        let q = sqlx::query_as(D::SQL.all_documents);
        let rows: Vec<(D::Text, String)> = self.fetch_all(q).await?;
        rows.into_iter()
            .map(|(name, value)| Ok((D::read_text(name)?, value)))
            .collect()
    }

    /// The same statement shape adds to or replaces a count.
    async fn add_or_set_operations(
        &self,
        sql: &'static str,
        backend: &str,
        month: &str,
        n: &OperationCounts,
    ) -> Result<(), StoreError> {
        let (a, b) = (n.class_a as i64, n.class_b as i64);
        let q = sqlx::query(sql)
            .bind(D::text(backend))
            .bind(D::text(month))
            .bind(a)
            .bind(b);
        self.execute(D::bind_update(q, |q| q.bind(a).bind(b)))
            .await
            .map(drop)
    }

    /// The same statement shape adds to or replaces a backend's usage.
    async fn add_or_set_usage(
        &self,
        sql: &'static str,
        backend: &str,
        bytes: i64,
        objects: i64,
    ) -> Result<(), StoreError> {
        let q = sqlx::query(sql)
            .bind(D::text(backend))
            .bind(bytes)
            .bind(objects);
        self.execute(D::bind_update(q, |q| q.bind(bytes).bind(objects)))
            .await
            .map(drop)
    }

    /// One statement with one text parameter, straight on the pool.
    #[cfg(test)]
    pub(crate) async fn raw_for_tests(&self, sql: &'static str, value: &'static str) {
        self.execute(sqlx::query(sql).bind(value.to_owned()))
            .await
            .unwrap();
    }

    /// Runs a statement on the store's runtime; the rows it changed.
    async fn execute(&self, q: Bound<D>) -> Result<u64, StoreError> {
        let pool = self.pool.clone();
        self.runner
            .run(async move { q.execute(&pool).await.map(|done| D::rows_affected(&done)) })
            .await
    }

    async fn fetch_all<O: Fetched<D>>(&self, q: BoundAs<D, O>) -> Result<Vec<O>, StoreError> {
        let pool = self.pool.clone();
        self.runner
            .run(async move { q.fetch_all(&pool).await })
            .await
    }

    async fn fetch_optional<O: Fetched<D>>(
        &self,
        q: BoundAs<D, O>,
    ) -> Result<Option<O>, StoreError> {
        let pool = self.pool.clone();
        self.runner
            .run(async move { q.fetch_optional(&pool).await })
            .await
    }

    async fn fetch_one<O: Fetched<D>>(&self, q: BoundAs<D, O>) -> Result<O, StoreError> {
        let pool = self.pool.clone();
        self.runner
            .run(async move { q.fetch_one(&pool).await })
            .await
    }
}

impl<D: Dialect> MetadataStore for Store<D>
where
    for<'c> &'c Pool<D>: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
    usize: ColumnIndex<D::Row>,
    i64: Column<D>,
    Vec<u8>: Column<D>,
    String: Column<D>,
    Option<D::Text>: Column<D>,
{
    async fn get_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectRecord>, StoreError> {
        let q = sqlx::query_as(D::SQL.get_object)
            .bind(bytes(bucket))
            .bind(bytes(key));
        self.fetch_optional(q).await?.map(object::<D>).transpose()
    }

    async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        r: &ObjectRecord,
    ) -> Result<(), StoreError> {
        let (size, time) = (r.size as i64, r.last_modified as i64);
        let q = sqlx::query(D::SQL.put_object)
            .bind(bytes(bucket))
            .bind(bytes(key))
            .bind(D::text(&r.backend))
            .bind(size)
            .bind(D::text(&r.etag))
            .bind(time);
        let q = D::bind_update(q, |q| {
            q.bind(D::text(&r.backend))
                .bind(size)
                .bind(D::text(&r.etag))
                .bind(time)
        });
        self.execute(q).await.map(drop)
    }

    async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let q = sqlx::query(D::SQL.delete_object)
            .bind(bytes(bucket))
            .bind(bytes(key));
        self.execute(q).await.map(drop)
    }

    async fn put_object_unless_newer(
        &self,
        bucket: &str,
        key: &str,
        r: &ObjectRecord,
        not_before: u64,
    ) -> Result<bool, StoreError> {
        let write = D::put_object_unless_newer(
            self.pool.clone(),
            bytes(bucket),
            bytes(key),
            r.clone(),
            not_before as i64,
        );
        self.runner.run(write).await
    }

    async fn delete_object_unless_newer(
        &self,
        bucket: &str,
        key: &str,
        not_before: u64,
    ) -> Result<bool, StoreError> {
        let delete = D::delete_object_unless_newer(
            self.pool.clone(),
            bytes(bucket),
            bytes(key),
            not_before as i64,
        );
        self.runner.run(delete).await
    }

    async fn list_objects(
        &self,
        bucket: &str,
        start_after: &str,
        limit: usize,
    ) -> Result<Vec<(String, ObjectRecord)>, StoreError> {
        // Binary keys compare bytewise: UTF-8 byte order, as S3 lists.
        let q = sqlx::query_as(D::SQL.list_objects)
            .bind(bytes(bucket))
            .bind(bytes(start_after))
            .bind(limit.min(i64::MAX as usize) as i64);
        let rows: Vec<KeyedObjectRow<D>> = self.fetch_all(q).await?;
        rows.into_iter()
            .map(|(k, b, s, e, t)| Ok((utf8(k)?, object::<D>((b, s, e, t))?)))
            .collect()
    }

    async fn create_bucket(&self, record: &BucketRecord) -> Result<bool, StoreError> {
        let q = sqlx::query(D::SQL.create_bucket)
            .bind(D::text(&record.name))
            .bind(bucket_json(record)?);
        // A duplicate name either changes no row (PostgreSQL) or fails as one (MySQL, whose
        // upsert counts one row either way and whose INSERT IGNORE would hide other errors).
        let pool = self.pool.clone();
        self.runner
            .run(async move {
                match q.execute(&pool).await {
                    Ok(done) => Ok(D::rows_affected(&done) == 1),
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
                    Err(e) => Err(e),
                }
            })
            .await
    }

    async fn update_bucket(&self, record: &BucketRecord) -> Result<(), StoreError> {
        let q = sqlx::query(D::SQL.update_bucket)
            .bind(bucket_json(record)?)
            .bind(D::text(&record.name));
        self.execute(q).await.map(drop)
    }

    async fn delete_bucket(&self, name: &str) -> Result<(), StoreError> {
        let q = sqlx::query(D::SQL.delete_bucket).bind(D::text(name));
        self.execute(q).await.map(drop)
    }

    async fn list_buckets(&self) -> Result<Vec<BucketRecord>, StoreError> {
        let q = sqlx::query_as(D::SQL.list_buckets);
        let rows: Vec<(String,)> = self.fetch_all(q).await?;
        rows.iter().map(|(record,)| parse_bucket(record)).collect()
    }

    async fn add_usage(&self, backend: &str, bytes: i64, objects: i64) -> Result<(), StoreError> {
        self.add_or_set_usage(D::SQL.add_usage, backend, bytes, objects)
            .await
    }

    async fn set_usage(&self, u: &BackendUsage) -> Result<(), StoreError> {
        self.add_or_set_usage(D::SQL.set_usage, &u.backend, u.used_bytes, u.objects)
            .await
    }

    async fn list_usage(&self) -> Result<Vec<BackendUsage>, StoreError> {
        let q = sqlx::query_as(D::SQL.list_usage);
        let rows: Vec<(D::Text, i64, i64)> = self.fetch_all(q).await?;
        rows.into_iter()
            .map(|(backend, used_bytes, objects)| {
                Ok(BackendUsage {
                    backend: D::read_text(backend)?,
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
        self.add_or_set_operations(D::SQL.add_operations, backend, month, n)
            .await
    }

    async fn get_operations(
        &self,
        backend: &str,
        month: &str,
    ) -> Result<OperationCounts, StoreError> {
        let q = sqlx::query_as(D::SQL.get_operations)
            .bind(D::text(backend))
            .bind(D::text(month));
        Ok(self
            .fetch_optional(q)
            .await?
            .map(counts)
            .unwrap_or_default())
    }

    async fn put_stale_copy(&self, c: &StaleCopy) -> Result<(), StoreError> {
        let noted = c.noted as i64;
        let q = sqlx::query(D::SQL.put_stale_copy)
            .bind(bytes(&c.bucket))
            .bind(bytes(&c.key))
            .bind(D::text(&c.backend))
            .bind(c.etag.as_deref().map(D::text))
            .bind(noted);
        let q = D::bind_update(q, |q| q.bind(c.etag.as_deref().map(D::text)).bind(noted));
        self.execute(q).await.map(drop)
    }

    async fn list_stale_copies(&self, limit: usize) -> Result<Vec<StaleCopy>, StoreError> {
        let q = sqlx::query_as(D::SQL.list_stale_copies).bind(limit.min(i64::MAX as usize) as i64);
        let rows = self.fetch_all(q).await?;
        rows.into_iter().map(stale::<D>).collect()
    }

    async fn stale_copies_of(&self, bucket: &str, key: &str) -> Result<Vec<StaleCopy>, StoreError> {
        let q = sqlx::query_as(D::SQL.stale_copies_of)
            .bind(bytes(bucket))
            .bind(bytes(key));
        let rows = self.fetch_all(q).await?;
        rows.into_iter().map(stale::<D>).collect()
    }

    async fn delete_stale_copy(&self, c: &StaleCopy) -> Result<(), StoreError> {
        let q = sqlx::query(D::SQL.delete_stale_copy)
            .bind(bytes(&c.bucket))
            .bind(bytes(&c.key))
            .bind(D::text(&c.backend));
        self.execute(q).await.map(drop)
    }

    async fn get_document(&self, name: &str) -> Result<Option<String>, StoreError> {
        let q = sqlx::query_as(D::SQL.get_document).bind(D::text(name));
        Ok(self.fetch_optional(q).await?.map(|(value,)| value))
    }

    async fn put_document(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let q = sqlx::query(D::SQL.put_document)
            .bind(D::text(name))
            .bind(value.to_owned());
        let q = D::bind_update(q, |q| q.bind(value.to_owned()));
        self.execute(q).await.map(drop)
    }
}

/// A row type a statement's answer is read into (a bound that implies sqlx's).
trait Fetched<D: Dialect>: for<'r> FromRow<'r, D::Row> + Send + Unpin + 'static {}
impl<D: Dialect, O> Fetched<D> for O where O: for<'r> FromRow<'r, D::Row> + Send + Unpin + 'static {}

fn bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// (backend, size, ETag, last modified).
type ObjectRow<D> = (<D as Dialect>::Text, i64, <D as Dialect>::Text, i64);
/// (key, backend, size, ETag, last modified).
type KeyedObjectRow<D> = (
    Vec<u8>,
    <D as Dialect>::Text,
    i64,
    <D as Dialect>::Text,
    i64,
);
/// (bucket, key, backend, ETag, noted).
type StaleRow<D> = (
    Vec<u8>,
    Vec<u8>,
    <D as Dialect>::Text,
    Option<<D as Dialect>::Text>,
    i64,
);

fn object<D: Dialect>(
    (backend, size, etag, last_modified): ObjectRow<D>,
) -> Result<ObjectRecord, StoreError> {
    Ok(ObjectRecord {
        backend: D::read_text(backend)?,
        size: size as u64,
        etag: D::read_text(etag)?,
        last_modified: last_modified as u64,
    })
}

fn stale<D: Dialect>(
    (bucket, key, backend, etag, noted): StaleRow<D>,
) -> Result<StaleCopy, StoreError> {
    Ok(StaleCopy {
        bucket: utf8(bucket)?,
        key: utf8(key)?,
        backend: D::read_text(backend)?,
        etag: etag.map(D::read_text).transpose()?,
        noted: noted as u64,
    })
}

fn counts((class_a, class_b): (i64, i64)) -> OperationCounts {
    OperationCounts {
        class_a: class_a as u64,
        class_b: class_b as u64,
    }
}
