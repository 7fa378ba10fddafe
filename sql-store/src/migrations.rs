//! The schema, as numbered migrations applied at start.
//!
//! Every instance of a cluster runs this when it starts. One of them at a time holds a lock
//! (PostgreSQL: a session advisory lock; MySQL: `GET_LOCK`), reads the version recorded in
//! `s3balance_schema`, applies the newer migrations and records each; the others wait for the
//! lock and then find nothing to do. On PostgreSQL a migration and its version row commit
//! together; MySQL commits DDL statement by statement, so its statements are written to be
//! re-runnable (`IF NOT EXISTS`) should an instance die half-way.
//!
//! Tables carry an `s3balance_` prefix: the database may be the one the Go s3-balance used,
//! whose GORM tables are named `objects`, `bucket_stats` ... Rules for new migrations: append,
//! never edit an applied one; add columns with defaults, so that instances still running the
//! previous version keep working during a rolling upgrade.

use std::future::Future;
use std::pin::Pin;

use sqlx::{Connection, Executor, MySqlConnection, PgConnection, Row};

/// Boxed as `Send`; statements go through `Executor`'s methods (boxed `Send` futures), as
/// rustc cannot prove `Send` for the generic `Query::execute(&mut conn)` futures here.
pub(crate) type Migrating<'c> = Pin<Box<dyn Future<Output = Result<i64, sqlx::Error>> + Send + 'c>>;

pub(crate) struct Migration {
    pub version: i64,
    pub description: &'static str,
    pub postgres: &'static [&'static str],
    pub mysql: &'static [&'static str],
}

/// Object keys and bucket names are binary (`bytea`, `VARBINARY`): compared byte by byte,
/// which is UTF-8 byte order, the order S3 lists keys in, whatever the database's collation;
/// and stored exactly. A key is at most 1,024 bytes (S3's limit, checked by the engine);
/// MySQL's InnoDB indexes up to 3,072 bytes per key, so the primary keys (bucket 255 + key
/// 1,024 + backend 255) fit whole. The bucket record is JSON beside its name, so that fields
/// can be added to `BucketRecord` without a migration.
pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "objects, buckets, usage, operations, documents, stale copies",
    postgres: &[
        "CREATE TABLE IF NOT EXISTS s3balance_objects (
            bucket BYTEA NOT NULL, key BYTEA NOT NULL,
            backend TEXT NOT NULL, size BIGINT NOT NULL, etag TEXT NOT NULL,
            last_modified BIGINT NOT NULL,
            PRIMARY KEY (bucket, key))",
        "CREATE TABLE IF NOT EXISTS s3balance_buckets (name TEXT PRIMARY KEY, record TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS s3balance_usage (
            backend TEXT PRIMARY KEY, used_bytes BIGINT NOT NULL, objects BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS s3balance_operations (
            backend TEXT NOT NULL, month TEXT NOT NULL,
            class_a BIGINT NOT NULL, class_b BIGINT NOT NULL,
            PRIMARY KEY (backend, month))",
        "CREATE TABLE IF NOT EXISTS s3balance_documents (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS s3balance_stale_copies (
            bucket BYTEA NOT NULL, key BYTEA NOT NULL, backend TEXT NOT NULL,
            etag TEXT, noted BIGINT NOT NULL,
            PRIMARY KEY (bucket, key, backend))",
        "CREATE INDEX IF NOT EXISTS s3balance_stale_copies_noted ON s3balance_stale_copies (noted)",
    ],
    mysql: &[
        "CREATE TABLE IF NOT EXISTS s3balance_objects (
            bucket VARBINARY(255) NOT NULL, `key` VARBINARY(1024) NOT NULL,
            backend VARBINARY(255) NOT NULL, size BIGINT NOT NULL, etag VARBINARY(1024) NOT NULL,
            last_modified BIGINT NOT NULL,
            PRIMARY KEY (bucket, `key`)
        ) ENGINE=InnoDB ROW_FORMAT=DYNAMIC",
        "CREATE TABLE IF NOT EXISTS s3balance_buckets (
            name VARBINARY(255) PRIMARY KEY, record MEDIUMTEXT CHARACTER SET utf8mb4 NOT NULL
        ) ENGINE=InnoDB ROW_FORMAT=DYNAMIC",
        "CREATE TABLE IF NOT EXISTS s3balance_usage (
            backend VARBINARY(255) PRIMARY KEY, used_bytes BIGINT NOT NULL, objects BIGINT NOT NULL
        ) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS s3balance_operations (
            backend VARBINARY(255) NOT NULL, month VARBINARY(16) NOT NULL,
            class_a BIGINT NOT NULL, class_b BIGINT NOT NULL,
            PRIMARY KEY (backend, month)
        ) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS s3balance_documents (
            name VARBINARY(255) PRIMARY KEY, value LONGTEXT CHARACTER SET utf8mb4 NOT NULL
        ) ENGINE=InnoDB ROW_FORMAT=DYNAMIC",
        "CREATE TABLE IF NOT EXISTS s3balance_stale_copies (
            bucket VARBINARY(255) NOT NULL, `key` VARBINARY(1024) NOT NULL,
            backend VARBINARY(255) NOT NULL, etag VARBINARY(1024), noted BIGINT NOT NULL,
            PRIMARY KEY (bucket, `key`, backend), KEY s3balance_stale_copies_noted (noted)
        ) ENGINE=InnoDB ROW_FORMAT=DYNAMIC",
    ],
}];

/// The newest schema version this build knows.
pub(crate) fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Any number that is the same in every instance: the advisory lock's id ("s3balanc").
const PG_LOCK: i64 = 0x7333_6261_6c61_6e63;

/// Brings a PostgreSQL database to [`latest`]; returns the version found before.
pub(crate) fn postgres(conn: &mut PgConnection) -> Migrating<'_> {
    Box::pin(async move {
        // Session lock: released by the unlock below, or by the server if this process dies.
        conn.execute(sqlx::query("SELECT pg_advisory_lock($1)").bind(PG_LOCK))
            .await?;
        let result = postgres_locked(conn).await;
        let unlocked = conn
            .execute(sqlx::query("SELECT pg_advisory_unlock($1)").bind(PG_LOCK))
            .await;
        let found = result?;
        unlocked?;
        Ok(found)
    })
}

async fn postgres_locked(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    // Created under the lock: concurrent CREATE TABLE IF NOT EXISTS can fail on PostgreSQL.
    conn.execute(
        "CREATE TABLE IF NOT EXISTS s3balance_schema (
            version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .await?;
    let found: i64 = conn
        .fetch_one("SELECT COALESCE(MAX(version), 0) FROM s3balance_schema")
        .await?
        .try_get(0)?;
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        let mut tx = conn.begin().await?;
        for statement in m.postgres {
            tx.execute(*statement).await?;
        }
        tx.execute(
            sqlx::query(
                "INSERT INTO s3balance_schema (version, description, applied_at)
                 VALUES ($1, $2, EXTRACT(EPOCH FROM now())::BIGINT)",
            )
            .bind(m.version)
            .bind(m.description),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            version = m.version,
            description = m.description,
            "postgres: schema migrated"
        );
    }
    Ok(found)
}

/// Brings a MySQL/MariaDB database to [`latest`]; returns the version found before.
pub(crate) fn mysql(conn: &mut MySqlConnection) -> Migrating<'_> {
    Box::pin(async move {
        // GET_LOCK names are server-wide: the database's name keeps clusters on other databases
        // of the same server apart (names are at most 64 characters).
        let name: String = conn
            .fetch_one("SELECT LEFT(CONCAT('s3balance_schema:', DATABASE()), 64)")
            .await?
            .try_get(0)?;
        let locked: Option<i64> = conn
            .fetch_one(sqlx::query("SELECT GET_LOCK(?, 120)").bind(name.clone()))
            .await?
            .try_get(0)?;
        if locked != Some(1) {
            return Err(sqlx::Error::Protocol(
                "another instance held the schema lock for 120 s".into(),
            ));
        }
        let result = mysql_locked(conn).await;
        let unlocked = conn
            .execute(sqlx::query("SELECT RELEASE_LOCK(?)").bind(name))
            .await;
        let found = result?;
        unlocked?;
        Ok(found)
    })
}

async fn mysql_locked(conn: &mut MySqlConnection) -> Result<i64, sqlx::Error> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS s3balance_schema (
            version BIGINT PRIMARY KEY, description VARCHAR(255) NOT NULL,
            applied_at BIGINT NOT NULL) ENGINE=InnoDB",
    )
    .await?;
    let found: i64 = conn
        .fetch_one("SELECT CAST(COALESCE(MAX(version), 0) AS SIGNED) FROM s3balance_schema")
        .await?
        .try_get(0)?;
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        for statement in m.mysql {
            conn.execute(*statement).await?;
        }
        conn.execute(
            sqlx::query(
                "INSERT INTO s3balance_schema (version, description, applied_at)
                 VALUES (?, ?, UNIX_TIMESTAMP())",
            )
            .bind(m.version)
            .bind(m.description),
        )
        .await?;
        tracing::info!(
            version = m.version,
            description = m.description,
            "mysql: schema migrated"
        );
    }
    Ok(found)
}
