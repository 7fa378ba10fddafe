//! `s3-balance migrate --from sqlite:data/s3-balance.db --to postgres://...` (and back, and
//! MySQL/MariaDB): copies the whole metadata from one store to another, for users who outgrow
//! one machine: the object index, buckets created at run time, usage, monthly operation
//! counts, documents (config, health, scan cursors) and stale-copy records.
//!
//! Run it with the gateways stopped (a write made while it copies may be missed; `reindex`
//! after the switch repairs that too). The target must hold no index entries unless
//! `--overwrite` is given (then entries of the same key are replaced). A progress bar shows on
//! a terminal; one summary line is printed at the end.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shared::config::{MetadataBackend, Secret, SqlDatabase, SqlKind};
use shared::store::{MetadataStore, ObjectRecord, OperationCounts, StoreError};

use crate::store::AnyStore;

/// Index entries read and written per batch.
const BATCH: usize = 1000;

/// A store named on the command line: `sqlite:PATH`, `postgres://...`, `mysql://...`.
pub fn parse_store(spec: &str) -> Result<MetadataBackend, String> {
    let sql = |kind| {
        Ok(MetadataBackend::Sql(SqlDatabase {
            kind,
            url: Secret::new(spec),
            max_connections: Some(4),
            max_lifetime_secs: None,
        }))
    };
    if let Some(path) = spec
        .strip_prefix("sqlite://")
        .or_else(|| spec.strip_prefix("sqlite:"))
    {
        if path.is_empty() {
            return Err("sqlite: needs a path (sqlite:data/s3-balance.db)".to_owned());
        }
        return Ok(MetadataBackend::Sqlite {
            path: path.to_owned(),
        });
    }
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        return sql(SqlKind::Postgres);
    }
    if spec.starts_with("mysql://") || spec.starts_with("mariadb://") {
        return sql(SqlKind::MySql);
    }
    Err(
        "a store is sqlite:PATH, postgres://user:pass@host/db or mysql://user:pass@host/db"
            .to_owned(),
    )
}

/// What was copied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Copied {
    pub objects: u64,
    pub object_buckets: usize,
    pub buckets: usize,
    pub usage: usize,
    pub operations: usize,
    pub documents: usize,
    pub stale_copies: usize,
}

pub async fn run(from: &str, to: &str, overwrite: bool) -> ExitCode {
    match migrate(from, to, overwrite).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(from: &str, to: &str, overwrite: bool) -> Result<(), String> {
    let (source, target) = (parse_store(from)?, parse_store(to)?);
    if source == target {
        return Err("--from and --to name the same store".to_owned());
    }
    if let MetadataBackend::Sqlite { path } = &source {
        // Opening would create an empty file: a typo must not "migrate" nothing.
        if !Path::new(path).is_file() {
            return Err(format!("--from: no SQLite file at {path}"));
        }
    }
    let open =
        |m: &MetadataBackend, side: &str| AnyStore::open(m).map_err(|e| format!("{side}: {e}"));
    let (src, dst) = (open(&source, "--from")?, open(&target, "--to")?);
    let already = count_objects(&dst)
        .await
        .map_err(|e| format!("--to: {e}"))?;
    if already > 0 && !overwrite {
        return Err(format!(
            "the target already holds {already} index entries: --overwrite merges into it \
             (entries of the same key are replaced)"
        ));
    }
    let total = count_objects(&src)
        .await
        .map_err(|e| format!("--from: {e}"))?;
    let bar = progress_bar(total, std::io::stderr().is_terminal());
    let started = Instant::now();
    let copied = copy(&src, &dst, &|n, bucket| {
        if let Some(bar) = &bar {
            bar.set_position(n);
            bar.set_message(bucket.to_owned());
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    println!(
        "migrated {} index entries in {} buckets, {} bucket records, {} usage rows, {} operation counts, {} documents, {} stale-copy records in {:.1} s",
        copied.objects,
        copied.object_buckets,
        copied.buckets,
        copied.usage,
        copied.operations,
        copied.documents,
        copied.stale_copies,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn progress_bar(total: u64, terminal: bool) -> Option<ProgressBar> {
    if !terminal {
        return None;
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} entries, ETA {eta} · bucket {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

/// Copies everything from `src` to `dst`; `progress(entries so far, bucket)` after each batch.
pub async fn copy(
    src: &AnyStore,
    dst: &AnyStore,
    progress: &dyn Fn(u64, &str),
) -> Result<Copied, StoreError> {
    let mut copied = Copied::default();
    for bucket in object_buckets(src).await? {
        copied.object_buckets += 1;
        let mut after = String::new();
        loop {
            let page = src.list_objects(&bucket, &after, BATCH).await?;
            let Some((last, _)) = page.last() else { break };
            after = last.clone();
            put_objects(dst, &bucket, &page).await?;
            copied.objects += page.len() as u64;
            progress(copied.objects, &bucket);
            if page.len() < BATCH {
                break;
            }
        }
    }
    for b in src.list_buckets().await? {
        dst.create_bucket(&b).await?;
        copied.buckets += 1;
    }
    for u in src.list_usage().await? {
        dst.set_usage(&u).await?;
        copied.usage += 1;
    }
    for (backend, month, counts) in all_operations(src).await? {
        set_operations(dst, &backend, &month, &counts).await?;
        copied.operations += 1;
    }
    for (name, value) in all_documents(src).await? {
        dst.put_document(&name, &value).await?;
        copied.documents += 1;
    }
    for c in src.list_stale_copies(usize::MAX).await? {
        dst.put_stale_copy(&c).await?;
        copied.stale_copies += 1;
    }
    Ok(copied)
}

fn unsupported() -> StoreError {
    StoreError("migrate copies between SQLite, PostgreSQL and MySQL/MariaDB only".to_owned())
}

async fn object_buckets(s: &AnyStore) -> Result<Vec<String>, StoreError> {
    match s {
        AnyStore::Sqlite(s) => s.object_buckets(),
        AnyStore::Sql(s) => s.object_buckets().await,
        _ => Err(unsupported()),
    }
}

async fn count_objects(s: &AnyStore) -> Result<u64, StoreError> {
    match s {
        AnyStore::Sqlite(s) => s.count_objects(),
        AnyStore::Sql(s) => s.count_objects().await,
        _ => Err(unsupported()),
    }
}

async fn put_objects(
    s: &AnyStore,
    bucket: &str,
    rows: &[(String, ObjectRecord)],
) -> Result<(), StoreError> {
    match s {
        AnyStore::Sqlite(s) => s.put_objects(bucket, rows),
        AnyStore::Sql(s) => s.put_objects(bucket, rows).await,
        _ => Err(unsupported()),
    }
}

async fn all_operations(
    s: &AnyStore,
) -> Result<Vec<(String, String, OperationCounts)>, StoreError> {
    match s {
        AnyStore::Sqlite(s) => s.all_operations(),
        AnyStore::Sql(s) => s.all_operations().await,
        _ => Err(unsupported()),
    }
}

async fn set_operations(
    s: &AnyStore,
    backend: &str,
    month: &str,
    counts: &OperationCounts,
) -> Result<(), StoreError> {
    match s {
        AnyStore::Sqlite(s) => s.set_operations(backend, month, counts),
        AnyStore::Sql(s) => s.set_operations(backend, month, counts).await,
        _ => Err(unsupported()),
    }
}

async fn all_documents(s: &AnyStore) -> Result<Vec<(String, String)>, StoreError> {
    match s {
        AnyStore::Sqlite(s) => s.all_documents(),
        AnyStore::Sql(s) => s.all_documents().await,
        _ => Err(unsupported()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::store::{BackendUsage, BucketRecord, StaleCopy};
    use sql_store::testing::TestServer;

    fn rec(i: u64) -> ObjectRecord {
        ObjectRecord {
            backend: format!("b{}", i % 3),
            size: 5_000_000_000 + i,
            etag: format!("\"{i:032x}\""),
            last_modified: 1_700_000_000 + i,
        }
    }

    /// Everything a store holds, in a comparable form.
    async fn contents(s: &AnyStore) -> Vec<String> {
        let mut out = Vec::new();
        for bucket in object_buckets(s).await.unwrap() {
            let mut after = String::new();
            loop {
                let page = s.list_objects(&bucket, &after, 700).await.unwrap();
                let Some((last, _)) = page.last() else { break };
                after = last.clone();
                out.extend(
                    page.iter()
                        .map(|(k, r)| format!("object {bucket} {k} {r:?}")),
                );
            }
        }
        out.extend(
            s.list_buckets()
                .await
                .unwrap()
                .iter()
                .map(|b| format!("{b:?}")),
        );
        out.extend(
            s.list_usage()
                .await
                .unwrap()
                .iter()
                .map(|u| format!("{u:?}")),
        );
        out.extend(
            all_operations(s)
                .await
                .unwrap()
                .iter()
                .map(|o| format!("{o:?}")),
        );
        out.extend(
            all_documents(s)
                .await
                .unwrap()
                .iter()
                .map(|d| format!("{d:?}")),
        );
        let mut stale: Vec<String> = s
            .list_stale_copies(usize::MAX)
            .await
            .unwrap()
            .iter()
            .map(|c| format!("{c:?}"))
            .collect();
        stale.sort();
        out.extend(stale);
        out
    }

    async fn fill(s: &AnyStore) {
        let AnyStore::Sqlite(sqlite) = s else {
            unreachable!()
        };
        // 2,500 entries: crosses the batch size; odd and long keys among them.
        let rows: Vec<(String, ObjectRecord)> =
            (0..2500).map(|i| (format!("k/{i:05}"), rec(i))).collect();
        sqlite.put_objects("photos", &rows).unwrap();
        for (i, key) in ["dir/é \"&+%?#\u{1F600}", &"x".repeat(1000), "Z", " "]
            .iter()
            .enumerate()
        {
            s.put_object("other", key, &rec(i as u64)).await.unwrap();
        }
        s.create_bucket(&BucketRecord {
            name: "made".into(),
            created: 5,
            owner: Some("AKIAOWNER".into()),
            acl: shared::acl::CannedAcl::PublicRead,
            ..Default::default()
        })
        .await
        .unwrap();
        s.set_usage(&BackendUsage {
            backend: "b0".into(),
            used_bytes: 1 << 40,
            objects: 834,
        })
        .await
        .unwrap();
        sqlite
            .set_operations(
                "b1",
                "2026-11",
                &OperationCounts {
                    class_a: 10,
                    class_b: 1 << 33,
                },
            )
            .unwrap();
        s.put_document("config", "balancer:\n  strategy: least-space # 注释\n")
            .await
            .unwrap();
        s.put_document("health", "{}").await.unwrap();
        s.put_stale_copy(&StaleCopy {
            bucket: "photos".into(),
            key: "k/00001".into(),
            backend: "b2".into(),
            etag: None,
            noted: 9,
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_to_postgres_to_mysql_and_back_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first.db");
        let back = dir.path().join("back.db");
        let sqlite = |p: &Path| {
            AnyStore::open(&parse_store(&format!("sqlite:{}", p.display())).unwrap()).unwrap()
        };
        let src = sqlite(&first);
        fill(&src).await;
        let want = contents(&src).await;
        assert_eq!(want.len(), 2504 + 1 + 1 + 1 + 2 + 1);

        let (Some(pg), Some(my)) = (
            TestServer::start(SqlKind::Postgres),
            TestServer::start(SqlKind::MySql),
        ) else {
            return;
        };
        let pg_url = pg.create_database("migrated");
        let my_url = my.create_database("migrated");
        let open = |url: &str| AnyStore::open(&parse_store(url).unwrap()).unwrap();
        let postgres = open(&pg_url);
        let seen = std::sync::Mutex::new(Vec::new());
        let copied = copy(&src, &postgres, &|n, b| {
            seen.lock().unwrap().push((n, b.to_owned()))
        })
        .await
        .unwrap();
        assert_eq!(copied.objects, 2504);
        assert_eq!(
            seen.into_inner().unwrap(),
            [
                (4, "other".to_owned()),
                (1004, "photos".to_owned()),
                (2004, "photos".to_owned()),
                (2504, "photos".to_owned())
            ],
            "progress after each batch"
        );
        assert_eq!(contents(&postgres).await, want, "sqlite -> postgres");

        let mysql = open(&my_url);
        copy(&postgres, &mysql, &|_, _| {}).await.unwrap();
        assert_eq!(contents(&mysql).await, want, "postgres -> mysql");

        let again = sqlite(&back);
        copy(&mysql, &again, &|_, _| {}).await.unwrap();
        assert_eq!(contents(&again).await, want, "mysql -> sqlite");

        // The command refuses a target that holds entries, unless told to merge.
        let err = migrate(&format!("sqlite:{}", first.display()), &pg_url, false)
            .await
            .unwrap_err();
        assert!(err.contains("already holds 2504"), "{err}");
        migrate(&format!("sqlite:{}", first.display()), &pg_url, true)
            .await
            .unwrap();
        let err = migrate("sqlite:/nonexistent/x.db", &pg_url, false)
            .await
            .unwrap_err();
        assert!(err.contains("no SQLite file"), "{err}");
    }

    #[test]
    fn store_specs() {
        assert_eq!(
            parse_store("sqlite:data/x.db").unwrap(),
            MetadataBackend::Sqlite {
                path: "data/x.db".into()
            }
        );
        assert!(matches!(
            parse_store("postgresql://u@h/d").unwrap(),
            MetadataBackend::Sql(SqlDatabase {
                kind: SqlKind::Postgres,
                ..
            })
        ));
        assert!(matches!(
            parse_store("mariadb://u@h/d").unwrap(),
            MetadataBackend::Sql(SqlDatabase {
                kind: SqlKind::MySql,
                ..
            })
        ));
        assert!(parse_store("redis://h").is_err());
        assert!(parse_store("sqlite:").is_err());
    }
}
