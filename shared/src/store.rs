//! The metadata store: an index of where objects live, plus usage counters and small documents.
//!
//! Backends are the truth; this is an index. A missing entry is answered by probing the
//! backends (see the engine), so a lagging or lost store never loses an object.
//! Implementations: [`MemoryStore`] here, SQLite in `server/`, DynamoDB in `lambda/`, Workers
//! KV in `edge-worker/`. Each runs [`contract::run`] in its tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// A failure of the store itself (connection, throttling, corrupt row). Logged by the engine
/// and answered as `ServiceUnavailable`/`InternalError`, or ignored where the index is optional.
#[derive(Debug, thiserror::Error)]
#[error("metadata store: {0}")]
pub struct StoreError(pub String);

/// Where one object of a virtual bucket lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// Backend name (the `name` of a real bucket in the config).
    pub backend: String,
    pub size: u64,
    pub etag: String,
    /// Unix seconds.
    pub last_modified: u64,
}

/// A virtual bucket created at run time with CreateBucket (configured ones are not stored).
/// Stores keep it whole (JSON beside the name where they have columns), so fields can be
/// added; records written before a field existed read as its default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRecord {
    pub name: String,
    /// Unix seconds.
    pub created: u64,
    /// The access key that created it. `None` for buckets created before owners were kept:
    /// every credential may use those, as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Who may read it without credentials (PutBucketAcl, `x-amz-acl` on CreateBucket).
    #[serde(default)]
    pub acl: crate::acl::CannedAcl,
    /// PutBucketCors's rules; empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cors: Vec<crate::cors::CorsRule>,
}

/// A copy of an object on a backend that is not (or may not be) the live one and must be
/// removed: left behind when removing an older copy failed, or possibly present on a backend
/// that could not be asked when the object was written. Recorded so that the maintenance task
/// (and `reindex`) finish the removal; never silently forgotten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleCopy {
    pub bucket: String,
    pub key: String,
    pub backend: String,
    /// The ETag of the copy to remove, when known: only that version is removed.
    pub etag: Option<String>,
    /// Unix seconds when it was recorded: a copy on `backend` written after this is not it.
    pub noted: u64,
}

/// Bytes and objects one backend holds, as counted by the gateway and reconciled by scans.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendUsage {
    pub backend: String,
    pub used_bytes: i64,
    pub objects: i64,
}

/// Operations sent to one backend in one month, as R2 and B2 bill them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationCounts {
    /// Class A: writes and lists.
    pub class_a: u64,
    /// Class B: reads.
    pub class_b: u64,
}

/// What every metadata store provides. No method takes the clock: times are in the records.
pub trait MetadataStore {
    async fn get_object(&self, bucket: &str, key: &str)
        -> Result<Option<ObjectRecord>, StoreError>;
    async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        record: &ObjectRecord,
    ) -> Result<(), StoreError>;
    async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), StoreError>;
    /// Writes `record` unless the entry already there was written at or after `not_before`
    /// (its `last_modified`, unix seconds), atomically where the store can. Reindex writes
    /// this way, so it never undoes a write made while it ran. `Ok(false)`: the newer entry
    /// was kept.
    async fn put_object_unless_newer(
        &self,
        bucket: &str,
        key: &str,
        record: &ObjectRecord,
        not_before: u64,
    ) -> Result<bool, StoreError>;
    /// Deletes the entry unless it was written at or after `not_before`; `Ok(false)`: kept.
    async fn delete_object_unless_newer(
        &self,
        bucket: &str,
        key: &str,
        not_before: u64,
    ) -> Result<bool, StoreError>;
    /// Index entries of `bucket` with keys after `start_after`, in key order, at most `limit`.
    async fn list_objects(
        &self,
        bucket: &str,
        start_after: &str,
        limit: usize,
    ) -> Result<Vec<(String, ObjectRecord)>, StoreError>;

    /// Creates a bucket record; `Ok(false)` when it already existed (nothing changed).
    async fn create_bucket(&self, record: &BucketRecord) -> Result<bool, StoreError>;
    /// Replaces the record of a bucket that exists (its ACL, its CORS rules); does nothing
    /// for one that does not, so a change racing DeleteBucket never brings the bucket back.
    async fn update_bucket(&self, record: &BucketRecord) -> Result<(), StoreError>;
    async fn delete_bucket(&self, name: &str) -> Result<(), StoreError>;
    async fn list_buckets(&self) -> Result<Vec<BucketRecord>, StoreError>;

    /// Adds to a backend's usage atomically where the store can (SQLite, DynamoDB `ADD`).
    async fn add_usage(&self, backend: &str, bytes: i64, objects: i64) -> Result<(), StoreError>;
    /// Replaces a backend's usage (the reconciling scan).
    async fn set_usage(&self, usage: &BackendUsage) -> Result<(), StoreError>;
    async fn list_usage(&self) -> Result<Vec<BackendUsage>, StoreError>;

    /// Adds to a backend's operation counts of `month` (`YYYY-MM`).
    async fn add_operations(
        &self,
        backend: &str,
        month: &str,
        counts: &OperationCounts,
    ) -> Result<(), StoreError>;
    async fn get_operations(
        &self,
        backend: &str,
        month: &str,
    ) -> Result<OperationCounts, StoreError>;

    /// Records a copy to remove (replacing a record of the same bucket, key and backend).
    async fn put_stale_copy(&self, copy: &StaleCopy) -> Result<(), StoreError>;
    /// Up to `limit` recorded copies, oldest first where the store can order them.
    async fn list_stale_copies(&self, limit: usize) -> Result<Vec<StaleCopy>, StoreError>;
    /// The recorded copies of one key (a delete must reach them too).
    async fn stale_copies_of(&self, bucket: &str, key: &str) -> Result<Vec<StaleCopy>, StoreError>;
    /// Forgets the record of `copy` (same bucket, key and backend).
    async fn delete_stale_copy(&self, copy: &StaleCopy) -> Result<(), StoreError>;

    /// Small named documents: `config` (hot-switched config), `health` (the latest health
    /// snapshot), scan cursors.
    async fn get_document(&self, name: &str) -> Result<Option<String>, StoreError>;
    async fn put_document(&self, name: &str, value: &str) -> Result<(), StoreError>;
}

/// Implements [`MetadataStore`] for an enum whose every variant holds a store, by handing each
/// call to the variant's store: `delegate_metadata_store!(AnyStore { Sqlite, Memory })`.
///
/// A store chosen by the config at run time is such an enum (the server's `AnyStore`,
/// sql-store's `SqlStore`): the trait's async methods rule out `dyn MetadataStore`. The list of
/// methods is kept here, beside the trait, so that each enum takes one line.
#[macro_export]
macro_rules! delegate_metadata_store {
    (@call $self:ident $store:ident { $($variant:ident),+ } $s:ident $method:ident $args:tt) => {
        match $self {
            $($store::$variant($s) => $crate::store::MetadataStore::$method $args.await,)+
        }
    };
    (@impl $store:ident $variants:tt $($method:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        impl $crate::store::MetadataStore for $store {
            $(async fn $method(&self, $($arg: $ty),*) -> Result<$ret, $crate::store::StoreError> {
                $crate::delegate_metadata_store!(
                    @call self $store $variants store $method (store, $($arg),*)
                )
            })*
        }
    };
    ($store:ident { $($variant:ident),+ $(,)? }) => {
        $crate::delegate_metadata_store! { @impl $store { $($variant),+ }
            get_object(bucket: &str, key: &str) -> Option<$crate::store::ObjectRecord>;
            put_object(bucket: &str, key: &str, record: &$crate::store::ObjectRecord) -> ();
            delete_object(bucket: &str, key: &str) -> ();
            put_object_unless_newer(
                bucket: &str, key: &str, record: &$crate::store::ObjectRecord, not_before: u64
            ) -> bool;
            delete_object_unless_newer(bucket: &str, key: &str, not_before: u64) -> bool;
            list_objects(bucket: &str, start_after: &str, limit: usize)
                -> Vec<(String, $crate::store::ObjectRecord)>;
            create_bucket(record: &$crate::store::BucketRecord) -> bool;
            update_bucket(record: &$crate::store::BucketRecord) -> ();
            delete_bucket(name: &str) -> ();
            list_buckets() -> Vec<$crate::store::BucketRecord>;
            add_usage(backend: &str, bytes: i64, objects: i64) -> ();
            set_usage(usage: &$crate::store::BackendUsage) -> ();
            list_usage() -> Vec<$crate::store::BackendUsage>;
            add_operations(backend: &str, month: &str, counts: &$crate::store::OperationCounts)
                -> ();
            get_operations(backend: &str, month: &str) -> $crate::store::OperationCounts;
            put_stale_copy(copy: &$crate::store::StaleCopy) -> ();
            list_stale_copies(limit: usize) -> Vec<$crate::store::StaleCopy>;
            stale_copies_of(bucket: &str, key: &str) -> Vec<$crate::store::StaleCopy>;
            delete_stale_copy(copy: &$crate::store::StaleCopy) -> ();
            get_document(name: &str) -> Option<String>;
            put_document(name: &str, value: &str) -> ();
        }
    };
}

/// An in-memory store, for tests and for runs that need no persistence.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    objects: BTreeMap<(String, String), ObjectRecord>,
    buckets: BTreeMap<String, BucketRecord>,
    usage: BTreeMap<String, BackendUsage>,
    operations: BTreeMap<(String, String), OperationCounts>,
    documents: BTreeMap<String, String>,
    /// By (bucket, key, backend).
    stale: BTreeMap<(String, String, String), StaleCopy>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops every object entry: what a lost metadata file looks like (tests).
    #[cfg(any(test, feature = "testing"))]
    pub fn forget_objects(&self) {
        self.lock().objects.clear();
    }
}

impl MetadataStore for MemoryStore {
    async fn get_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectRecord>, StoreError> {
        Ok(self
            .lock()
            .objects
            .get(&(bucket.to_owned(), key.to_owned()))
            .cloned())
    }

    async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        record: &ObjectRecord,
    ) -> Result<(), StoreError> {
        self.lock()
            .objects
            .insert((bucket.to_owned(), key.to_owned()), record.clone());
        Ok(())
    }

    async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.lock()
            .objects
            .remove(&(bucket.to_owned(), key.to_owned()));
        Ok(())
    }

    async fn put_object_unless_newer(
        &self,
        bucket: &str,
        key: &str,
        record: &ObjectRecord,
        not_before: u64,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let id = (bucket.to_owned(), key.to_owned());
        if inner
            .objects
            .get(&id)
            .is_some_and(|r| r.last_modified >= not_before)
        {
            return Ok(false);
        }
        inner.objects.insert(id, record.clone());
        Ok(true)
    }

    async fn delete_object_unless_newer(
        &self,
        bucket: &str,
        key: &str,
        not_before: u64,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let id = (bucket.to_owned(), key.to_owned());
        match inner.objects.get(&id) {
            Some(r) if r.last_modified >= not_before => Ok(false),
            Some(_) => {
                inner.objects.remove(&id);
                Ok(true)
            }
            None => Ok(true),
        }
    }

    async fn list_objects(
        &self,
        bucket: &str,
        start_after: &str,
        limit: usize,
    ) -> Result<Vec<(String, ObjectRecord)>, StoreError> {
        use std::ops::Bound;
        let inner = self.lock();
        let from = (bucket.to_owned(), start_after.to_owned());
        Ok(inner
            .objects
            .range((Bound::Excluded(from), Bound::Unbounded))
            .take_while(|((b, _), _)| b == bucket)
            .take(limit)
            .map(|((_, k), r)| (k.clone(), r.clone()))
            .collect())
    }

    async fn create_bucket(&self, record: &BucketRecord) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if inner.buckets.contains_key(&record.name) {
            return Ok(false);
        }
        inner.buckets.insert(record.name.clone(), record.clone());
        Ok(true)
    }

    async fn update_bucket(&self, record: &BucketRecord) -> Result<(), StoreError> {
        if let Some(b) = self.lock().buckets.get_mut(&record.name) {
            *b = record.clone();
        }
        Ok(())
    }

    async fn delete_bucket(&self, name: &str) -> Result<(), StoreError> {
        self.lock().buckets.remove(name);
        Ok(())
    }

    async fn list_buckets(&self) -> Result<Vec<BucketRecord>, StoreError> {
        Ok(self.lock().buckets.values().cloned().collect())
    }

    async fn add_usage(&self, backend: &str, bytes: i64, objects: i64) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let u = inner
            .usage
            .entry(backend.to_owned())
            .or_insert_with(|| BackendUsage {
                backend: backend.to_owned(),
                ..Default::default()
            });
        u.used_bytes += bytes;
        u.objects += objects;
        Ok(())
    }

    async fn set_usage(&self, usage: &BackendUsage) -> Result<(), StoreError> {
        self.lock()
            .usage
            .insert(usage.backend.clone(), usage.clone());
        Ok(())
    }

    async fn list_usage(&self) -> Result<Vec<BackendUsage>, StoreError> {
        Ok(self.lock().usage.values().cloned().collect())
    }

    async fn add_operations(
        &self,
        backend: &str,
        month: &str,
        counts: &OperationCounts,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let c = inner
            .operations
            .entry((backend.to_owned(), month.to_owned()))
            .or_default();
        c.class_a += counts.class_a;
        c.class_b += counts.class_b;
        Ok(())
    }

    async fn get_operations(
        &self,
        backend: &str,
        month: &str,
    ) -> Result<OperationCounts, StoreError> {
        Ok(self
            .lock()
            .operations
            .get(&(backend.to_owned(), month.to_owned()))
            .cloned()
            .unwrap_or_default())
    }

    async fn put_stale_copy(&self, copy: &StaleCopy) -> Result<(), StoreError> {
        self.lock().stale.insert(
            (copy.bucket.clone(), copy.key.clone(), copy.backend.clone()),
            copy.clone(),
        );
        Ok(())
    }

    async fn list_stale_copies(&self, limit: usize) -> Result<Vec<StaleCopy>, StoreError> {
        let mut all: Vec<StaleCopy> = self.lock().stale.values().cloned().collect();
        all.sort_by_key(|c| c.noted);
        all.truncate(limit);
        Ok(all)
    }

    async fn stale_copies_of(&self, bucket: &str, key: &str) -> Result<Vec<StaleCopy>, StoreError> {
        Ok(self
            .lock()
            .stale
            .values()
            .filter(|c| c.bucket == bucket && c.key == key)
            .cloned()
            .collect())
    }

    async fn delete_stale_copy(&self, copy: &StaleCopy) -> Result<(), StoreError> {
        self.lock()
            .stale
            .remove(&(copy.bucket.clone(), copy.key.clone(), copy.backend.clone()));
        Ok(())
    }

    async fn get_document(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.lock().documents.get(name).cloned())
    }

    async fn put_document(&self, name: &str, value: &str) -> Result<(), StoreError> {
        self.lock()
            .documents
            .insert(name.to_owned(), value.to_owned());
        Ok(())
    }
}

/// The contract every [`MetadataStore`] must pass. Call [`contract::run`] with a fresh, empty
/// store from the store's own tests; it panics with the failed expectation.
#[cfg(any(test, feature = "testing"))]
#[allow(clippy::unwrap_used)] // a failed expectation panics: that is the test's report
pub mod contract {
    use super::*;

    fn rec(backend: &str, size: u64) -> ObjectRecord {
        ObjectRecord {
            backend: backend.to_owned(),
            size,
            etag: format!("\"etag-{size}\""),
            last_modified: 1_700_000_000 + size,
        }
    }

    /// Runs every check against `store`, which must start empty.
    pub async fn run<S: MetadataStore>(store: &S) {
        objects(store).await;
        conditional_writes(store).await;
        long_and_unicode_keys(store).await;
        listing(store).await;
        buckets(store).await;
        usage(store).await;
        operations(store).await;
        documents(store).await;
        stale_copies(store).await;
    }

    async fn conditional_writes<S: MetadataStore>(s: &S) {
        // rec(_, n) was written at 1_700_000_000 + n.
        let t = 1_700_000_000;
        assert!(
            s.put_object_unless_newer("c", "k", &rec("one", 5), t + 10)
                .await
                .unwrap(),
            "absent: written"
        );
        assert_eq!(s.get_object("c", "k").await.unwrap(), Some(rec("one", 5)));
        assert!(
            s.put_object_unless_newer("c", "k", &rec("two", 6), t + 10)
                .await
                .unwrap(),
            "older entry: replaced"
        );
        assert_eq!(s.get_object("c", "k").await.unwrap(), Some(rec("two", 6)));
        // An entry written at or after the reindex started stays.
        s.put_object("c", "k", &rec("three", 20)).await.unwrap();
        assert!(
            !s.put_object_unless_newer("c", "k", &rec("one", 7), t + 10)
                .await
                .unwrap(),
            "newer entry: kept"
        );
        assert!(
            !s.put_object_unless_newer("c", "k", &rec("one", 7), t + 20)
                .await
                .unwrap(),
            "entry written at the very second: kept"
        );
        assert_eq!(
            s.get_object("c", "k").await.unwrap(),
            Some(rec("three", 20))
        );
        assert!(
            !s.delete_object_unless_newer("c", "k", t + 10)
                .await
                .unwrap(),
            "newer entry: not deleted"
        );
        assert_eq!(
            s.get_object("c", "k").await.unwrap(),
            Some(rec("three", 20))
        );
        assert!(
            s.delete_object_unless_newer("c", "k", t + 21)
                .await
                .unwrap(),
            "older entry: deleted"
        );
        assert_eq!(s.get_object("c", "k").await.unwrap(), None);
        assert!(
            s.delete_object_unless_newer("c", "never", t).await.unwrap(),
            "absent: nothing to keep"
        );
    }

    async fn stale_copies<S: MetadataStore>(s: &S) {
        assert!(s.list_stale_copies(10).await.unwrap().is_empty());
        let copy = |key: &str, backend: &str, noted: u64| StaleCopy {
            bucket: "b".into(),
            key: key.into(),
            backend: backend.into(),
            etag: Some(format!("\"{key}-{backend}\"")),
            noted,
        };
        let long = "k/".repeat(500);
        let odd = "dir/é \"&+%?#\u{1F600}";
        s.put_stale_copy(&copy("a", "one", 3)).await.unwrap();
        s.put_stale_copy(&copy("a", "two", 1)).await.unwrap();
        s.put_stale_copy(&copy(&long, "one", 2)).await.unwrap();
        s.put_stale_copy(&copy(odd, "two", 4)).await.unwrap();
        // Same bucket, key and backend: replaced, not doubled.
        let mut again = copy("a", "one", 5);
        again.etag = None;
        s.put_stale_copy(&again).await.unwrap();
        let mut all = s.list_stale_copies(100).await.unwrap();
        all.sort_by_key(|c| c.noted);
        assert_eq!(
            all,
            vec![
                copy("a", "two", 1),
                copy(&long, "one", 2),
                copy(odd, "two", 4),
                again.clone()
            ],
            "recorded copies, keyed by bucket, key and backend"
        );
        assert_eq!(
            s.list_stale_copies(2).await.unwrap().len(),
            2,
            "limit honoured"
        );
        let mut of_a = s.stale_copies_of("b", "a").await.unwrap();
        of_a.sort_by_key(|c| c.noted);
        assert_eq!(of_a, vec![copy("a", "two", 1), again.clone()], "by key");
        assert_eq!(
            s.stale_copies_of("b", odd).await.unwrap(),
            vec![copy(odd, "two", 4)]
        );
        assert!(s.stale_copies_of("other", "a").await.unwrap().is_empty());
        assert!(
            s.stale_copies_of("b", "a/").await.unwrap().is_empty(),
            "not a prefix match"
        );
        for c in &all {
            s.delete_stale_copy(c).await.unwrap();
        }
        assert!(
            s.list_stale_copies(100).await.unwrap().is_empty(),
            "all forgotten"
        );
    }

    async fn objects<S: MetadataStore>(s: &S) {
        assert_eq!(
            s.get_object("b", "k").await.unwrap(),
            None,
            "empty store has no object"
        );
        s.put_object("b", "k", &rec("one", 1)).await.unwrap();
        assert_eq!(
            s.get_object("b", "k").await.unwrap(),
            Some(rec("one", 1)),
            "read after write"
        );
        assert_eq!(
            s.get_object("other", "k").await.unwrap(),
            None,
            "buckets are separate"
        );
        s.put_object("b", "k", &rec("two", 2)).await.unwrap();
        assert_eq!(
            s.get_object("b", "k").await.unwrap(),
            Some(rec("two", 2)),
            "overwrite replaces"
        );
        s.delete_object("b", "k").await.unwrap();
        assert_eq!(
            s.get_object("b", "k").await.unwrap(),
            None,
            "delete removes"
        );
        s.delete_object("b", "never-there").await.unwrap();
    }

    async fn long_and_unicode_keys<S: MetadataStore>(s: &S) {
        let long = "k/".repeat(500); // 1000 bytes: over Workers KV's 512-byte key limit
        let odd = "dir/é \"&+%?#\u{1F600}";
        for key in [long.as_str(), odd] {
            s.put_object("keys", key, &rec("one", 3)).await.unwrap();
            assert_eq!(
                s.get_object("keys", key).await.unwrap(),
                Some(rec("one", 3)),
                "key {key:?}"
            );
            s.delete_object("keys", key).await.unwrap();
            assert_eq!(s.get_object("keys", key).await.unwrap(), None);
        }
    }

    async fn listing<S: MetadataStore>(s: &S) {
        let keys: Vec<String> = (0..25).map(|i| format!("key-{i:03}")).collect();
        for (i, k) in keys.iter().enumerate() {
            s.put_object("list", k, &rec("one", i as u64))
                .await
                .unwrap();
        }
        s.put_object("list-other", "key-000", &rec("one", 0))
            .await
            .unwrap();
        let mut seen = Vec::new();
        let mut after = String::new();
        loop {
            let page = s.list_objects("list", &after, 10).await.unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 10, "limit honoured");
            after = page.last().unwrap().0.clone();
            seen.extend(page.into_iter().map(|(k, _)| k));
        }
        assert_eq!(seen, keys, "paged listing is exact and ordered");
    }

    async fn buckets<S: MetadataStore>(s: &S) {
        let mut b = BucketRecord {
            name: "photos".into(),
            created: 1_700_000_000,
            owner: Some("AKIAOWNER".into()),
            ..Default::default()
        };
        assert!(s.create_bucket(&b).await.unwrap(), "first create");
        let other = BucketRecord {
            owner: Some("AKIAOTHER".into()),
            ..b.clone()
        };
        assert!(
            !s.create_bucket(&other).await.unwrap(),
            "second create reports existing"
        );
        assert_eq!(
            s.list_buckets().await.unwrap(),
            vec![b.clone()],
            "the first owner stays"
        );
        // ACL and CORS rules are kept whole and replaced by update_bucket.
        b.acl = crate::acl::CannedAcl::PublicRead;
        b.cors = vec![crate::cors::CorsRule {
            id: Some("web".into()),
            allowed_origins: vec!["https://app.example.com".into()],
            allowed_methods: vec!["GET".into(), "PUT".into()],
            allowed_headers: vec!["*".into()],
            expose_headers: vec!["ETag".into()],
            max_age_seconds: Some(600),
        }];
        s.update_bucket(&b).await.unwrap();
        assert_eq!(s.list_buckets().await.unwrap(), vec![b.clone()]);
        s.delete_bucket("photos").await.unwrap();
        assert!(s.list_buckets().await.unwrap().is_empty());
        s.update_bucket(&b).await.unwrap();
        assert!(
            s.list_buckets().await.unwrap().is_empty(),
            "updating a deleted bucket does not bring it back"
        );
        // A record without an owner (written before owners were kept) reads as one.
        let legacy = BucketRecord {
            name: "legacy".into(),
            created: 1,
            ..Default::default()
        };
        assert!(s.create_bucket(&legacy).await.unwrap());
        assert_eq!(s.list_buckets().await.unwrap(), vec![legacy]);
        s.delete_bucket("legacy").await.unwrap();
    }

    async fn usage<S: MetadataStore>(s: &S) {
        s.add_usage("one", 100, 1).await.unwrap();
        s.add_usage("one", 50, 1).await.unwrap();
        s.add_usage("one", -30, -1).await.unwrap();
        s.add_usage("two", 7, 1).await.unwrap();
        let mut u = s.list_usage().await.unwrap();
        u.sort_by(|a, b| a.backend.cmp(&b.backend));
        assert_eq!(
            u,
            vec![
                BackendUsage {
                    backend: "one".into(),
                    used_bytes: 120,
                    objects: 1
                },
                BackendUsage {
                    backend: "two".into(),
                    used_bytes: 7,
                    objects: 1
                },
            ]
        );
        s.set_usage(&BackendUsage {
            backend: "one".into(),
            used_bytes: 5,
            objects: 2,
        })
        .await
        .unwrap();
        s.add_usage("one", 1, 0).await.unwrap();
        let one = s
            .list_usage()
            .await
            .unwrap()
            .into_iter()
            .find(|u| u.backend == "one")
            .unwrap();
        assert_eq!((one.used_bytes, one.objects), (6, 2), "set then add");
    }

    async fn operations<S: MetadataStore>(s: &S) {
        assert_eq!(
            s.get_operations("one", "2026-11").await.unwrap(),
            OperationCounts::default()
        );
        s.add_operations(
            "one",
            "2026-11",
            &OperationCounts {
                class_a: 2,
                class_b: 5,
            },
        )
        .await
        .unwrap();
        s.add_operations(
            "one",
            "2026-11",
            &OperationCounts {
                class_a: 1,
                class_b: 0,
            },
        )
        .await
        .unwrap();
        assert_eq!(
            s.get_operations("one", "2026-11").await.unwrap(),
            OperationCounts {
                class_a: 3,
                class_b: 5
            }
        );
        assert_eq!(
            s.get_operations("one", "2026-12").await.unwrap(),
            OperationCounts::default(),
            "months apart"
        );
    }

    async fn documents<S: MetadataStore>(s: &S) {
        assert_eq!(s.get_document("config").await.unwrap(), None);
        s.put_document("config", "a: 1").await.unwrap();
        s.put_document("config", "a: 2").await.unwrap();
        assert_eq!(
            s.get_document("config").await.unwrap().as_deref(),
            Some("a: 2")
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_store_passes_the_contract() {
        futures_executor::block_on(super::contract::run(&super::MemoryStore::new()));
    }
}
