//! Both stores against real servers: the shared contract, byte order, exact counters under
//! concurrency from two "instances", racing conditional writes, concurrent start-up
//! migrations, and the Go DSN forms.

use std::sync::Arc;

use shared::config::{Secret, SqlDatabase, SqlKind};
use shared::store::{BucketRecord, MetadataStore, ObjectRecord, OperationCounts};

use crate::testing::TestServer;
use crate::SqlStore;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn open(kind: SqlKind, url: &str) -> SqlStore {
    SqlStore::open(&SqlDatabase {
        kind,
        url: Secret::new(url),
        max_connections: Some(8),
        max_lifetime_secs: None,
    })
    .unwrap_or_else(|e| panic!("opening {url}: {e}"))
}

fn rec(backend: &str, last_modified: u64) -> ObjectRecord {
    ObjectRecord {
        backend: backend.to_owned(),
        size: 5_000_000_000,
        etag: "\"e\"".to_owned(),
        last_modified,
    }
}

fn all_checks(kind: SqlKind) {
    let Some(server) = TestServer::start(kind) else {
        return;
    };

    // The whole contract on a fresh database.
    let store = open(kind, &server.create_database("contract"));
    block_on(shared::store::contract::run(&store));
    drop(store);

    let url = server.create_database("checks");
    // Several instances starting at once on an empty database: one migrates, the others
    // wait for its lock and find the schema done.
    let stores: Vec<SqlStore> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4).map(|_| scope.spawn(|| open(kind, &url))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let stores: Vec<Arc<SqlStore>> = stores.into_iter().map(Arc::new).collect();
    let (a, b) = (stores[0].clone(), stores[1].clone());

    // Listing order is UTF-8 byte order, whatever the database's collation.
    let longest = "k".repeat(1024);
    let mut keys: Vec<String> = [
        "a",
        "B",
        "a b",
        "a/",
        "a/b",
        "Z",
        "z",
        "é",
        "e\u{301}",
        "\u{7f}",
        "日本",
        "\u{1F600}",
        "~",
        " ",
    ]
    .iter()
    .map(|k| k.to_string())
    .chain([longest.clone()])
    .collect();
    block_on(async {
        for k in &keys {
            a.put_object("order", k, &rec("one", 1)).await.unwrap();
        }
        keys.sort(); // String's order is byte order
        let mut seen = Vec::new();
        let mut after = String::new();
        loop {
            let page = b.list_objects("order", &after, 4).await.unwrap();
            let Some((last, _)) = page.last() else { break };
            after = last.clone();
            seen.extend(page.into_iter().map(|(k, _)| k));
        }
        assert_eq!(
            seen, keys,
            "byte order, paged, read through another instance"
        );
        assert_eq!(
            b.get_object("order", &longest).await.unwrap(),
            Some(rec("one", 1)),
            "a 1,024-byte key"
        );
        assert_eq!(
            b.get_object("order", "A").await.unwrap(),
            None,
            "case-sensitive"
        );
        assert_eq!(
            b.get_object("order", "a ").await.unwrap(),
            None,
            "no space padding"
        );
    });

    // Counters are exact with 32 writers spread over two instances.
    block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..32 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.spawn(async move {
                for _ in 0..25 {
                    s.add_usage("shared", 3, 1).await.unwrap();
                    s.add_operations(
                        "shared",
                        "2026-11",
                        &OperationCounts {
                            class_a: 1,
                            class_b: 2,
                        },
                    )
                    .await
                    .unwrap();
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let usage = a.list_usage().await.unwrap();
        let shared = usage.iter().find(|u| u.backend == "shared").unwrap();
        assert_eq!((shared.used_bytes, shared.objects), (32 * 25 * 3, 32 * 25));
        assert_eq!(
            b.get_operations("shared", "2026-11").await.unwrap(),
            OperationCounts {
                class_a: 800,
                class_b: 1600
            }
        );
    });

    // Conditional writes racing from two instances: every one of them applies (all are older
    // than `not_before`, none fails on a duplicate or a deadlock); a newer entry stops them all.
    block_on(async {
        let t = 1_700_000_000;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..16u64 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.spawn(async move {
                s.put_object_unless_newer("race", "k", &rec(&format!("b{i}"), t + i), t + 100)
                    .await
            });
        }
        while let Some(done) = tasks.join_next().await {
            assert!(done.unwrap().unwrap(), "an older entry is always replaced");
        }
        a.put_object("race", "k", &rec("newest", t + 200))
            .await
            .unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..8u64 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.spawn(async move {
                s.put_object_unless_newer("race", "k", &rec("late", t + i), t + 100)
                    .await
            });
        }
        while let Some(done) = tasks.join_next().await {
            assert!(!done.unwrap().unwrap(), "the newer entry is kept");
        }
        assert_eq!(
            b.get_object("race", "k").await.unwrap(),
            Some(rec("newest", t + 200))
        );
    });

    // Bucket records are JSON: a field added by a later version does not break this one.
    block_on(async {
        let r = BucketRecord {
            name: "photos".into(),
            created: 7,
            ..Default::default()
        };
        assert!(a.create_bucket(&r).await.unwrap());
        assert!(
            !b.create_bucket(&r).await.unwrap(),
            "seen by the other instance"
        );
        let later = "{\"name\":\"later\",\"created\":9,\"owner\":\"x\",\"cors\":[]}";
        let sql = match kind {
            SqlKind::Postgres => {
                "INSERT INTO s3balance_buckets (name, record) VALUES ('later', $1)"
            }
            SqlKind::MySql => "INSERT INTO s3balance_buckets (name, record) VALUES ('later', ?)",
        };
        raw(&a, sql, later).await;
        let names: Vec<String> = b
            .list_buckets()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["later", "photos"]);
    });
    drop(stores);

    // The Go s3-balance's DSN forms connect too.
    let go_dsn = match kind {
        SqlKind::Postgres => format!(
            "host=127.0.0.1 user=s3balance dbname=checks port={} sslmode=disable TimeZone=Asia/Shanghai",
            server.port()
        ),
        SqlKind::MySql => format!(
            "root@tcp(127.0.0.1:{})/checks?charset=utf8mb4&parseTime=True&loc=Local",
            server.port()
        ),
    };
    let go = open(kind, &go_dsn);
    assert_eq!(
        block_on(go.get_object("order", "a")).unwrap(),
        Some(rec("one", 1))
    );
    drop(go);

    // A database that cannot be reached fails the start, without echoing the password.
    let closed = match kind {
        SqlKind::Postgres => "postgres://u:hunter2@127.0.0.1:1/x",
        SqlKind::MySql => "mysql://u:hunter2@127.0.0.1:1/x",
    };
    let err = SqlStore::open(&SqlDatabase {
        kind,
        url: Secret::new(closed),
        max_connections: None,
        max_lifetime_secs: None,
    })
    .err()
    .expect("no server on port 1");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

/// One statement with one text parameter, straight on the pool.
async fn raw(store: &SqlStore, sql: &'static str, value: &'static str) {
    match store {
        SqlStore::Postgres(s) => s.raw_for_tests(sql, value).await,
        SqlStore::MySql(s) => s.raw_for_tests(sql, value).await,
    }
}

#[test]
fn postgres_store_against_a_real_postgresql() {
    all_checks(SqlKind::Postgres);
}

#[test]
fn mysql_store_against_a_real_mariadb() {
    all_checks(SqlKind::MySql);
}
