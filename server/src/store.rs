//! Metadata stores of the server: [`SqliteStore`] (one file, the default), the in-memory store,
//! and [`AnyStore`], the one type the engine is built with (also over DynamoDB, and over
//! PostgreSQL or MySQL/MariaDB from `sql-store/`).

use std::path::Path;
use std::sync::Mutex;

use dynamo_store::DynamoStore;
use rusqlite::{params, Connection, OptionalExtension};
use shared::config::MetadataBackend;
use shared::store::{
    BackendUsage, BucketRecord, MemoryStore, MetadataStore, ObjectRecord, OperationCounts,
    StaleCopy, StoreError,
};
use sql_store::SqlStore;

mod group_commit;
use group_commit::{IndexWrite, WriteQueue};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL, key TEXT NOT NULL,
    backend TEXT NOT NULL, size INTEGER NOT NULL, etag TEXT NOT NULL, last_modified INTEGER NOT NULL,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS buckets (name TEXT PRIMARY KEY, created INTEGER NOT NULL, record TEXT);
CREATE TABLE IF NOT EXISTS usage (
    backend TEXT PRIMARY KEY, used_bytes INTEGER NOT NULL, objects INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS operations (
    backend TEXT NOT NULL, month TEXT NOT NULL, class_a INTEGER NOT NULL, class_b INTEGER NOT NULL,
    PRIMARY KEY (backend, month)
);
CREATE TABLE IF NOT EXISTS documents (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stale_copies (
    bucket TEXT NOT NULL, key TEXT NOT NULL, backend TEXT NOT NULL,
    etag TEXT, noted INTEGER NOT NULL,
    PRIMARY KEY (bucket, key, backend)
) WITHOUT ROWID;
";

/// Files written before bucket records had owners, ACLs and CORS rules have `buckets` without
/// the `record` column (the whole record as JSON); it is added in place. Rows without it read
/// as records with only a name and a date.
fn add_bucket_record_column(conn: &Connection) -> Result<(), StoreError> {
    let has_it = conn
        .prepare("SELECT 1 FROM pragma_table_info('buckets') WHERE name = 'record'")
        .and_then(|mut s| s.exists([]))
        .map_err(err)?;
    if has_it {
        return Ok(());
    }
    match conn.execute_batch("ALTER TABLE buckets ADD COLUMN record TEXT") {
        Ok(()) => Ok(()),
        // Another connection or process added it first.
        Err(e) if e.to_string().contains("duplicate column") => Ok(()),
        Err(e) => Err(err(e)),
    }
}

fn bucket_json(record: &BucketRecord) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(err)
}

/// Writes one index entry, replacing the one there.
fn insert_object(
    c: &Connection,
    bucket: &str,
    key: &str,
    r: &ObjectRecord,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO objects (bucket, key, backend, size, etag, last_modified)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        bucket,
        key,
        r.backend,
        r.size as i64,
        r.etag,
        r.last_modified as i64
    ])
    .map(drop)
}

/// The metadata index in one SQLite file.
///
/// A few connections, each behind a `std::sync::Mutex`, used directly inside the async
/// methods: every call is a single indexed statement on a local WAL file (microseconds), so
/// blocking the thread that briefly is cheaper than a `spawn_blocking` hop. Reads take any
/// free connection (there is one per serving thread): with one shared connection the
/// event-loop threads queued on its mutex, a futex sleep and wake-up per contended request in
/// the profile, while WAL readers need not wait for each other. Writes all go through the
/// first connection (see [`SqliteStore::write`]); the index writes of requests share
/// transactions ([`group_commit`]). A guard is never held across an `.await`, so the futures
/// stay `Send`.
pub struct SqliteStore {
    conns: Vec<Mutex<Connection>>,
    writes: WriteQueue,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("sqlite: {e}"))
}

impl SqliteStore {
    /// Opens (or creates, with its parent directories) the database file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError(format!("creating {}: {e}", dir.display())))?;
        }
        // An in-memory database exists once per connection: it gets exactly one.
        let in_memory = path.to_str().is_some_and(|p| p.contains(":memory:"));
        let count = if in_memory {
            1
        } else {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get) + 1
        };
        let mut conns = Vec::with_capacity(count);
        for _ in 0..count {
            conns.push(Mutex::new(Self::connect(path)?));
        }
        Ok(Self {
            conns,
            writes: WriteQueue::default(),
        })
    }

    fn connect(path: &Path) -> Result<Connection, StoreError> {
        let conn = Connection::open(path)
            .map_err(|e| StoreError(format!("opening {}: {e}", path.display())))?;
        // WAL: readers never block the writer; NORMAL is durable across process crashes in
        // WAL mode (a power loss may drop the last commits: the index is repairable).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        // Other connections of this process, and `check`/`reindex` running next to a serving
        // process on the same file, may hold the write lock for a moment.
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        add_bucket_record_column(&conn)?;
        Ok(conn)
    }

    /// Runs a read on the first free connection (waiting for one if all are busy).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self
            .conns
            .iter()
            .rev()
            .find_map(|c| match c.try_lock() {
                Ok(guard) => Some(guard),
                // A panic while holding the lock leaves a consistent connection (statements
                // are atomic).
                Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            })
            .unwrap_or_else(|| self.lock(self.conns.len() - 1));
        f(&conn).map_err(err)
    }

    /// Runs a write on the first connection, always: writers wait for each other on its mutex
    /// (a quick futex hand-over) rather than in SQLite's busy handler, which sleeps a
    /// millisecond or more between retries.
    fn write<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        f(&self.lock(0)).map_err(err)
    }

    fn lock(&self, i: usize) -> std::sync::MutexGuard<'_, Connection> {
        self.conns[i].lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What `migrate` needs beyond [`MetadataStore`]: everything listed, and writes in batches.
impl SqliteStore {
    /// Buckets that have index entries, in byte order.
    pub fn object_buckets(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT DISTINCT bucket FROM objects ORDER BY bucket")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
    }

    pub fn count_objects(&self) -> Result<u64, StoreError> {
        self.read(|c| {
            c.query_row("SELECT COUNT(*) FROM objects", [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
        })
    }

    /// Writes many entries of one bucket in one transaction, replacing existing ones.
    pub fn put_objects(
        &self,
        bucket: &str,
        rows: &[(String, ObjectRecord)],
    ) -> Result<(), StoreError> {
        let mut conn = self.lock(0);
        let tx = conn.transaction().map_err(err)?;
        for (key, r) in rows {
            insert_object(&tx, bucket, key, r).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Every (backend, month) operation count.
    pub fn all_operations(&self) -> Result<Vec<(String, String, OperationCounts)>, StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT backend, month, class_a, class_b FROM operations ORDER BY backend, month",
            )?
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    OperationCounts {
                        class_a: r.get::<_, i64>(2)? as u64,
                        class_b: r.get::<_, i64>(3)? as u64,
                    },
                ))
            })?
            .collect()
        })
    }

    /// Replaces one (backend, month) operation count.
    pub fn set_operations(
        &self,
        backend: &str,
        month: &str,
        n: &OperationCounts,
    ) -> Result<(), StoreError> {
        self.write(|c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO operations (backend, month, class_a, class_b)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![backend, month, n.class_a as i64, n.class_b as i64])
            .map(drop)
        })
    }

    /// Every document, by name.
    pub fn all_documents(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT name, value FROM documents ORDER BY name")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }
}

fn object_row(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<ObjectRecord> {
    Ok(ObjectRecord {
        backend: row.get(first)?,
        size: row.get::<_, i64>(first + 1)? as u64,
        etag: row.get(first + 2)?,
        last_modified: row.get::<_, i64>(first + 3)? as u64,
    })
}

fn stale_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StaleCopy> {
    Ok(StaleCopy {
        bucket: row.get(0)?,
        key: row.get(1)?,
        backend: row.get(2)?,
        etag: row.get(3)?,
        noted: row.get::<_, i64>(4)? as u64,
    })
}

impl MetadataStore for SqliteStore {
    async fn get_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT backend, size, etag, last_modified FROM objects WHERE bucket = ?1 AND key = ?2")?
                .query_row(params![bucket, key], |r| object_row(r, 0))
                .optional()
        })
    }

    async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        r: &ObjectRecord,
    ) -> Result<(), StoreError> {
        let write = IndexWrite::Put {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            record: r.clone(),
        };
        self.writes.write(&self.conns[0], write).await
    }

    async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let write = IndexWrite::Delete {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        };
        self.writes.write(&self.conns[0], write).await
    }

    async fn put_object_unless_newer(
        &self,
        bucket: &str,
        key: &str,
        r: &ObjectRecord,
        not_before: u64,
    ) -> Result<bool, StoreError> {
        // One statement: the check and the write are atomic, also against other processes.
        self.write(|c| {
            c.prepare_cached(
                "INSERT INTO objects (bucket, key, backend, size, etag, last_modified)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (bucket, key) DO UPDATE SET
                   backend = excluded.backend, size = excluded.size, etag = excluded.etag,
                   last_modified = excluded.last_modified
                 WHERE objects.last_modified < ?7",
            )?
            .execute(params![
                bucket,
                key,
                r.backend,
                r.size as i64,
                r.etag,
                r.last_modified as i64,
                not_before as i64
            ])
            .map(|n| n == 1)
        })
    }

    async fn delete_object_unless_newer(
        &self,
        bucket: &str,
        key: &str,
        not_before: u64,
    ) -> Result<bool, StoreError> {
        self.write(|c| {
            let deleted = c
                .prepare_cached(
                    "DELETE FROM objects WHERE bucket = ?1 AND key = ?2 AND last_modified < ?3",
                )?
                .execute(params![bucket, key, not_before as i64])?;
            if deleted == 1 {
                return Ok(true);
            }
            // Nothing deleted: either no entry (nothing to keep) or a newer one (kept).
            let kept = c
                .prepare_cached("SELECT 1 FROM objects WHERE bucket = ?1 AND key = ?2")?
                .exists(params![bucket, key])?;
            Ok(!kept)
        })
    }

    async fn list_objects(
        &self,
        bucket: &str,
        start_after: &str,
        limit: usize,
    ) -> Result<Vec<(String, ObjectRecord)>, StoreError> {
        // TEXT compares bytewise (BINARY collation): UTF-8 byte order, as S3 lists.
        self.read(|c| {
            c.prepare_cached(
                "SELECT key, backend, size, etag, last_modified FROM objects
                 WHERE bucket = ?1 AND key > ?2 ORDER BY key LIMIT ?3",
            )?
            .query_map(params![bucket, start_after, limit as i64], |r| {
                Ok((r.get(0)?, object_row(r, 1)?))
            })?
            .collect()
        })
    }

    async fn create_bucket(&self, record: &BucketRecord) -> Result<bool, StoreError> {
        let json = bucket_json(record)?;
        self.write(|c| {
            c.prepare_cached(
                "INSERT OR IGNORE INTO buckets (name, created, record) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![record.name, record.created as i64, json])
            .map(|n| n == 1)
        })
    }

    async fn update_bucket(&self, record: &BucketRecord) -> Result<(), StoreError> {
        let json = bucket_json(record)?;
        self.write(|c| {
            c.prepare_cached("UPDATE buckets SET record = ?2 WHERE name = ?1")?
                .execute(params![record.name, json])
                .map(drop)
        })
    }

    async fn delete_bucket(&self, name: &str) -> Result<(), StoreError> {
        self.write(|c| {
            c.prepare_cached("DELETE FROM buckets WHERE name = ?1")?
                .execute([name])
                .map(drop)
        })
    }

    async fn list_buckets(&self) -> Result<Vec<BucketRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT name, created, record FROM buckets ORDER BY name")?
                .query_map([], |r| {
                    let name: String = r.get(0)?;
                    let created = r.get::<_, i64>(1)? as u64;
                    match r.get::<_, Option<String>>(2)? {
                        Some(json) => serde_json::from_str(&json).map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(
                                2,
                                rusqlite::types::Type::Text,
                                Box::new(e),
                            )
                        }),
                        None => Ok(BucketRecord {
                            name,
                            created,
                            ..Default::default()
                        }),
                    }
                })?
                .collect()
        })
    }

    async fn add_usage(&self, backend: &str, bytes: i64, objects: i64) -> Result<(), StoreError> {
        // One statement: atomic even with several processes on the file.
        self.write(|c| {
            c.prepare_cached(
                "INSERT INTO usage (backend, used_bytes, objects) VALUES (?1, ?2, ?3)
                 ON CONFLICT (backend) DO UPDATE SET
                   used_bytes = used_bytes + excluded.used_bytes, objects = objects + excluded.objects",
            )?
            .execute(params![backend, bytes, objects])
            .map(drop)
        })
    }

    async fn set_usage(&self, u: &BackendUsage) -> Result<(), StoreError> {
        self.write(|c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO usage (backend, used_bytes, objects) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![u.backend, u.used_bytes, u.objects])
            .map(drop)
        })
    }

    async fn list_usage(&self) -> Result<Vec<BackendUsage>, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT backend, used_bytes, objects FROM usage ORDER BY backend")?
                .query_map([], |r| {
                    Ok(BackendUsage {
                        backend: r.get(0)?,
                        used_bytes: r.get(1)?,
                        objects: r.get(2)?,
                    })
                })?
                .collect()
        })
    }

    async fn add_operations(
        &self,
        backend: &str,
        month: &str,
        n: &OperationCounts,
    ) -> Result<(), StoreError> {
        self.write(|c| {
            c.prepare_cached(
                "INSERT INTO operations (backend, month, class_a, class_b) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (backend, month) DO UPDATE SET
                   class_a = class_a + excluded.class_a, class_b = class_b + excluded.class_b",
            )?
            .execute(params![backend, month, n.class_a as i64, n.class_b as i64])
            .map(drop)
        })
    }

    async fn get_operations(
        &self,
        backend: &str,
        month: &str,
    ) -> Result<OperationCounts, StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT class_a, class_b FROM operations WHERE backend = ?1 AND month = ?2",
            )?
            .query_row(params![backend, month], |r| {
                Ok(OperationCounts {
                    class_a: r.get::<_, i64>(0)? as u64,
                    class_b: r.get::<_, i64>(1)? as u64,
                })
            })
            .optional()
            .map(Option::unwrap_or_default)
        })
    }

    async fn put_stale_copy(&self, copy: &StaleCopy) -> Result<(), StoreError> {
        self.write(|c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO stale_copies (bucket, key, backend, etag, noted)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                copy.bucket,
                copy.key,
                copy.backend,
                copy.etag,
                copy.noted as i64
            ])
            .map(drop)
        })
    }

    async fn list_stale_copies(&self, limit: usize) -> Result<Vec<StaleCopy>, StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT bucket, key, backend, etag, noted FROM stale_copies ORDER BY noted LIMIT ?1",
            )?
            .query_map([limit.min(i64::MAX as usize) as i64], stale_row)?
            .collect()
        })
    }

    async fn stale_copies_of(&self, bucket: &str, key: &str) -> Result<Vec<StaleCopy>, StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT bucket, key, backend, etag, noted FROM stale_copies
                 WHERE bucket = ?1 AND key = ?2",
            )?
            .query_map(params![bucket, key], stale_row)?
            .collect()
        })
    }

    async fn delete_stale_copy(&self, copy: &StaleCopy) -> Result<(), StoreError> {
        self.write(|c| {
            c.prepare_cached(
                "DELETE FROM stale_copies WHERE bucket = ?1 AND key = ?2 AND backend = ?3",
            )?
            .execute(params![copy.bucket, copy.key, copy.backend])
            .map(drop)
        })
    }

    async fn get_document(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT value FROM documents WHERE name = ?1")?
                .query_row([name], |r| r.get(0))
                .optional()
        })
    }

    async fn put_document(&self, name: &str, value: &str) -> Result<(), StoreError> {
        self.write(|c| {
            c.prepare_cached("INSERT OR REPLACE INTO documents (name, value) VALUES (?1, ?2)")?
                .execute([name, value])
                .map(drop)
        })
    }
}

/// The store the server's engine is built with: the engine is generic over one store type.
pub enum AnyStore {
    Sqlite(SqliteStore),
    Memory(MemoryStore),
    Dynamo(DynamoStore),
    /// PostgreSQL or MySQL/MariaDB, shared by several instances.
    Sql(SqlStore),
}

impl AnyStore {
    /// The store the config names. DynamoDB uses the standard AWS environment (region,
    /// credentials, `AWS_ENDPOINT_URL_DYNAMODB`), connected on first use. PostgreSQL and
    /// MySQL are connected and their schema migrated here (blocking): a database that cannot
    /// be reached fails the start.
    pub fn open(metadata: &MetadataBackend) -> Result<Self, String> {
        match metadata {
            MetadataBackend::Sqlite { path } => SqliteStore::open(Path::new(path))
                .map(AnyStore::Sqlite)
                .map_err(|e| e.to_string()),
            MetadataBackend::Memory => Ok(AnyStore::Memory(MemoryStore::new())),
            MetadataBackend::DynamoDb { table } => {
                Ok(AnyStore::Dynamo(DynamoStore::from_env(table)))
            }
            MetadataBackend::Sql(db) => SqlStore::open(db)
                .map(AnyStore::Sql)
                .map_err(|e| e.to_string()),
        }
    }
}

shared::delegate_metadata_store!(AnyStore {
    Sqlite,
    Memory,
    Dynamo,
    Sql
});

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn sqlite_store_passes_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("nested/dir/meta.db")).unwrap();
        block_on(shared::store::contract::run(&store));
    }

    #[test]
    fn a_file_from_before_bucket_owners_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(
                "CREATE TABLE buckets (name TEXT PRIMARY KEY, created INTEGER NOT NULL);
                 INSERT INTO buckets VALUES ('made-before', 42);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let mut before = BucketRecord {
            name: "made-before".into(),
            created: 42,
            ..Default::default()
        };
        assert_eq!(
            block_on(store.list_buckets()).unwrap(),
            vec![before.clone()]
        );
        before.acl = shared::acl::CannedAcl::PublicRead;
        block_on(store.update_bucket(&before)).unwrap();
        drop(store);
        // Opened again (the column exists now): the change is kept.
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(block_on(store.list_buckets()).unwrap(), vec![before]);
    }

    #[test]
    fn any_store_delegates_and_passes_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db").to_string_lossy().into_owned();
        block_on(shared::store::contract::run(
            &AnyStore::open(&MetadataBackend::Sqlite { path }).unwrap(),
        ));
        block_on(shared::store::contract::run(
            &AnyStore::open(&MetadataBackend::Memory).unwrap(),
        ));
    }

    #[test]
    fn data_survives_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let rec = ObjectRecord {
            backend: "one".into(),
            size: 5_000_000_000,
            etag: "\"e\"".into(),
            last_modified: 1_700_000_000,
        };
        block_on(async {
            let s = SqliteStore::open(&path).unwrap();
            s.put_object("b", "k", &rec).await.unwrap();
            s.add_usage("one", 10, 1).await.unwrap();
        });
        block_on(async {
            let s = SqliteStore::open(&path).unwrap();
            assert_eq!(s.get_object("b", "k").await.unwrap(), Some(rec));
            assert_eq!(
                s.list_usage().await.unwrap(),
                vec![BackendUsage {
                    backend: "one".into(),
                    used_bytes: 10,
                    objects: 1
                }]
            );
        });
    }

    #[test]
    fn concurrent_adds_are_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        // Two connections on one file, as `serve` and `reindex` would be.
        let stores = [
            SqliteStore::open(&path).unwrap(),
            SqliteStore::open(&path).unwrap(),
        ];
        std::thread::scope(|scope| {
            for s in &stores {
                scope.spawn(|| {
                    block_on(async {
                        for _ in 0..200 {
                            s.add_usage("one", 3, 1).await.unwrap()
                        }
                    })
                });
            }
        });
        let u = block_on(stores[0].list_usage()).unwrap();
        assert_eq!((u[0].used_bytes, u[0].objects), (1200, 400));
    }

    #[test]
    fn dynamodb_metadata_opens_the_dynamo_store_on_its_table() {
        // The store itself passes the contract in lambda/dynamo/tests (against moto_server).
        let store = AnyStore::open(&MetadataBackend::DynamoDb { table: "t".into() }).unwrap();
        assert!(matches!(&store, AnyStore::Dynamo(s) if s.table() == "t"));
    }
}
