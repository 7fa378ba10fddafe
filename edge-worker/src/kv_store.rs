//! [`MetadataStore`] on Workers KV (binding `S3_BALANCE_KV`). Key layout: [`crate::keys`].
//!
//! What KV gives and what follows:
//! - Eventually consistent: a write can take 60 s or more to be seen at other locations. The
//!   engine treats the index as a hint (a miss or a stale entry makes it probe the backends),
//!   so read-after-write stays correct.
//! - No atomic add, and at most one write per second to one key. `add_usage` and
//!   `add_operations` are read-modify-write of one key: exact for one writer, approximate
//!   under concurrency (lost updates, or a refused write that is logged and dropped). Usage is
//!   reconciled by the scheduled scan (`set_usage`), which is the source of truth on KV;
//!   operation budgets on KV are therefore soft limits. Operation counts are only written by
//!   [`Engine::refresh`](shared::engine::Engine::refresh), at most every few seconds per isolate.
//! - No "list after": `list_objects` pages through the bucket's prefix with KV cursors and
//!   skips up to `start_after` (linear; the request path does not use it: listings merge the
//!   backends' own listings).
//! - `create_bucket` and `update_bucket` are read-then-write, not transactions: two concurrent
//!   creates of the same name may both answer "created" (the later write's owner stays), and a
//!   PutBucketAcl or PutBucketCors racing DeleteBucket may write the record back.
//! - No compare-and-set: reindex's conditional writes (`put_object_unless_newer`,
//!   `delete_object_unless_newer`) read then write. A client's write landing between the two
//!   can be replaced by what the reindex listed; that entry then points at the right backend
//!   (the one-live-copy rule keeps an overwrite where the key was) or at nothing (a read then
//!   asks the backends), so no read returns older bytes.
//! - Stale-copy records of one key share one KV key (`stale_copies_of` is one point read per
//!   delete, not a KV list, which the Free plan allows only 1,000 times a day); adding and
//!   removing a record is read-modify-write of that key.
//!
//! Index off ([`KvStore::with_index`] `false`, env var `S3_BALANCE_INDEX=off`): serving requests
//! writes KV not at all. Object entries are neither read nor written (every read probes the
//! backends in rendezvous order, which with the `consistent-hash` strategy finds the object on
//! the first probe), and usage and operation counts are not written by the request path (the
//! scheduled scan still sets usage; monthly operation budgets are not enforced in this mode).

use std::cell::RefCell;

use serde::de::DeserializeOwned;
use serde::Serialize;
use worker::kv::KvStore as Kv;

use crate::keys::{self, ObjectEntry};
use shared::store::{
    BackendUsage, BucketRecord, MetadataStore, ObjectRecord, OperationCounts, StaleCopy, StoreError,
};

pub struct KvStore {
    kv: RefCell<Kv>,
    /// Prepended to every KV key: empty in production, a fresh one per test run.
    prefix: String,
    index: bool,
}

fn kv_error(e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("workers kv: {e}"))
}

impl KvStore {
    pub fn new(kv: Kv) -> Self {
        Self {
            kv: RefCell::new(kv),
            prefix: String::new(),
            index: true,
        }
    }

    /// Every key under `prefix` (a namespace inside the KV namespace).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// `false`: the object index and the request path's counters are off (see the module doc).
    pub fn with_index(mut self, index: bool) -> Self {
        self.index = index;
        self
    }

    pub fn index_enabled(&self) -> bool {
        self.index
    }

    /// Replaces the binding with the current invocation's (the cached store outlives requests).
    pub fn set_binding(&self, kv: Kv) {
        *self.kv.borrow_mut() = kv;
    }

    fn kv(&self) -> Kv {
        self.kv.borrow().clone()
    }

    fn key(&self, name: &str) -> String {
        keys::kv_key(&self.prefix, name)
    }

    /// Reads a raw KV key (no prefix): the operator's `config` key.
    pub async fn get_raw(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.kv().get(key).text().await.map_err(kv_error)
    }

    async fn get_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StoreError> {
        match self
            .kv()
            .get(&self.key(name))
            .text()
            .await
            .map_err(kv_error)?
        {
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| StoreError(format!("corrupt KV value {name:?}: {e}"))),
            None => Ok(None),
        }
    }

    /// Writes `value` as JSON, with the same JSON as KV metadata when it fits (listings then
    /// read no values).
    async fn put_json<T: Serialize, M: Serialize>(
        &self,
        name: &str,
        value: &T,
        metadata: Option<&M>,
    ) -> Result<(), StoreError> {
        let text = serde_json::to_string(value).map_err(kv_error)?;
        let mut put = self.kv().put(&self.key(name), text).map_err(kv_error)?;
        if let Some(m) = metadata {
            let encoded = serde_json::to_string(m).map_err(kv_error)?;
            if encoded.len() <= 1024 {
                put = put.metadata(m).map_err(kv_error)?;
            }
        }
        put.execute().await.map_err(kv_error)
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.kv().delete(&self.key(name)).await.map_err(kv_error)
    }

    /// Every key under `name_prefix` with its metadata, in KV (byte) order.
    async fn list_all(&self, name_prefix: &str) -> Result<Vec<worker::kv::Key>, StoreError> {
        let prefix = format!("{}{name_prefix}", self.prefix);
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut list = self.kv().list().prefix(prefix.clone());
            if let Some(c) = cursor.take() {
                list = list.cursor(c);
            }
            let page = list.execute().await.map_err(kv_error)?;
            out.extend(page.keys);
            match page.cursor {
                Some(c) if !page.list_complete && !c.is_empty() => cursor = Some(c),
                _ => return Ok(out),
            }
        }
    }

    /// Values of listed keys: from metadata when present, else read.
    async fn listed_values<T: DeserializeOwned>(
        &self,
        keys: Vec<worker::kv::Key>,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let from_meta = k.metadata.and_then(|m| serde_json::from_value::<T>(m).ok());
            let value = match from_meta {
                Some(v) => Some(v),
                None => match self.kv().get(&k.name).text().await.map_err(kv_error)? {
                    Some(text) => serde_json::from_str(&text).ok(),
                    None => None,
                },
            };
            if let Some(v) = value {
                out.push(v);
            }
        }
        Ok(out)
    }
}

impl MetadataStore for KvStore {
    async fn get_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectRecord>, StoreError> {
        if !self.index {
            return Ok(None);
        }
        let entry: Option<ObjectEntry> = self.get_json(&keys::object_name(bucket, key)).await?;
        // A hashed key names its real key: a different key with the same hash is not this one.
        Ok(entry
            .filter(|e| e.key.as_deref().is_none_or(|k| k == key))
            .map(|e| e.record))
    }

    async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        record: &ObjectRecord,
    ) -> Result<(), StoreError> {
        if !self.index {
            return Ok(());
        }
        let name = keys::object_name(bucket, key);
        let hashed = keys::is_hashed(&self.key(&name));
        let value = ObjectEntry {
            key: hashed.then(|| key.to_owned()),
            record: record.clone(),
        };
        let metadata = ObjectEntry {
            key: None,
            record: record.clone(),
        };
        self.put_json(&name, &value, Some(&metadata)).await
    }

    async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        if !self.index {
            return Ok(());
        }
        self.delete(&keys::object_name(bucket, key)).await
    }

    async fn put_object_unless_newer(
        &self,
        bucket: &str,
        key: &str,
        record: &ObjectRecord,
        not_before: u64,
    ) -> Result<bool, StoreError> {
        if self
            .get_object(bucket, key)
            .await?
            .is_some_and(|e| e.last_modified >= not_before)
        {
            return Ok(false);
        }
        self.put_object(bucket, key, record).await?;
        Ok(true)
    }

    async fn delete_object_unless_newer(
        &self,
        bucket: &str,
        key: &str,
        not_before: u64,
    ) -> Result<bool, StoreError> {
        match self.get_object(bucket, key).await? {
            Some(e) if e.last_modified >= not_before => Ok(false),
            Some(_) => self.delete_object(bucket, key).await.map(|()| true),
            None => Ok(true),
        }
    }

    async fn list_objects(
        &self,
        bucket: &str,
        start_after: &str,
        limit: usize,
    ) -> Result<Vec<(String, ObjectRecord)>, StoreError> {
        if !self.index {
            return Ok(Vec::new());
        }
        let name_prefix = keys::object_prefix(bucket);
        let full_prefix = format!("{}{name_prefix}", self.prefix);
        let mut entries = Vec::new();
        for k in self.list_all(&name_prefix).await? {
            let plain_key = k
                .name
                .strip_prefix(&full_prefix)
                .unwrap_or(&k.name)
                .to_owned();
            if keys::is_hashed(&k.name) {
                // The real key is in the value.
                if let Some(text) = self.kv().get(&k.name).text().await.map_err(kv_error)? {
                    if let Ok(e) = serde_json::from_str::<ObjectEntry>(&text) {
                        entries.push((e.key.unwrap_or(plain_key), e.record));
                    }
                }
                continue;
            }
            let record = match k
                .metadata
                .and_then(|m| serde_json::from_value::<ObjectEntry>(m).ok())
            {
                Some(e) => e.record,
                None => match self.kv().get(&k.name).text().await.map_err(kv_error)? {
                    Some(text) => match serde_json::from_str::<ObjectEntry>(&text) {
                        Ok(e) => e.record,
                        Err(_) => continue,
                    },
                    None => continue,
                },
            };
            entries.push((plain_key, record));
        }
        // KV orders hashed keys by their head only: sort by the real key.
        entries.retain(|(k, _)| k.as_str() > start_after);
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.truncate(limit);
        Ok(entries)
    }

    async fn create_bucket(&self, record: &BucketRecord) -> Result<bool, StoreError> {
        let name = keys::bucket_name(&record.name);
        if self.get_json::<BucketRecord>(&name).await?.is_some() {
            return Ok(false);
        }
        self.put_json(&name, record, Some(record)).await?;
        Ok(true)
    }

    async fn update_bucket(&self, record: &BucketRecord) -> Result<(), StoreError> {
        // Read then write, as create_bucket: a DeleteBucket landing in between can be undone
        // (KV has no conditional write).
        let name = keys::bucket_name(&record.name);
        if self.get_json::<BucketRecord>(&name).await?.is_none() {
            return Ok(());
        }
        self.put_json(&name, record, Some(record)).await
    }

    async fn delete_bucket(&self, name: &str) -> Result<(), StoreError> {
        self.delete(&keys::bucket_name(name)).await
    }

    async fn list_buckets(&self) -> Result<Vec<BucketRecord>, StoreError> {
        let keys = self.list_all("b/").await?;
        self.listed_values(keys).await
    }

    async fn add_usage(&self, backend: &str, bytes: i64, objects: i64) -> Result<(), StoreError> {
        if !self.index {
            return Ok(());
        }
        let name = keys::usage_name(backend);
        let mut usage: BackendUsage = self.get_json(&name).await?.unwrap_or_else(|| BackendUsage {
            backend: backend.to_owned(),
            ..Default::default()
        });
        usage.used_bytes += bytes;
        usage.objects += objects;
        self.put_json(&name, &usage, Some(&usage)).await
    }

    async fn set_usage(&self, usage: &BackendUsage) -> Result<(), StoreError> {
        self.put_json(&keys::usage_name(&usage.backend), usage, Some(usage))
            .await
    }

    async fn list_usage(&self) -> Result<Vec<BackendUsage>, StoreError> {
        let keys = self.list_all("u/").await?;
        self.listed_values(keys).await
    }

    async fn add_operations(
        &self,
        backend: &str,
        month: &str,
        counts: &OperationCounts,
    ) -> Result<(), StoreError> {
        if !self.index {
            return Ok(());
        }
        let name = keys::operations_name(backend, month);
        let mut total: OperationCounts = self.get_json(&name).await?.unwrap_or_default();
        total.class_a += counts.class_a;
        total.class_b += counts.class_b;
        self.put_json(&name, &total, None::<&()>).await
    }

    async fn get_operations(
        &self,
        backend: &str,
        month: &str,
    ) -> Result<OperationCounts, StoreError> {
        Ok(self
            .get_json(&keys::operations_name(backend, month))
            .await?
            .unwrap_or_default())
    }

    async fn put_stale_copy(&self, copy: &StaleCopy) -> Result<(), StoreError> {
        let name = keys::stale_name(&copy.bucket, &copy.key);
        let mut copies: Vec<StaleCopy> = self.get_json(&name).await?.unwrap_or_default();
        copies.retain(|c| c.backend != copy.backend);
        copies.push(copy.clone());
        self.put_json(&name, &copies, None::<&()>).await
    }

    async fn list_stale_copies(&self, limit: usize) -> Result<Vec<StaleCopy>, StoreError> {
        let keys = self.list_all(keys::STALE_PREFIX).await?;
        let mut all: Vec<StaleCopy> = self
            .listed_values::<Vec<StaleCopy>>(keys)
            .await?
            .into_iter()
            .flatten()
            .collect();
        all.sort_by_key(|c| c.noted);
        all.truncate(limit);
        Ok(all)
    }

    async fn stale_copies_of(&self, bucket: &str, key: &str) -> Result<Vec<StaleCopy>, StoreError> {
        let copies: Vec<StaleCopy> = self
            .get_json(&keys::stale_name(bucket, key))
            .await?
            .unwrap_or_default();
        // The name is a hash: keep only this key's records.
        Ok(copies
            .into_iter()
            .filter(|c| c.bucket == bucket && c.key == key)
            .collect())
    }

    async fn delete_stale_copy(&self, copy: &StaleCopy) -> Result<(), StoreError> {
        let name = keys::stale_name(&copy.bucket, &copy.key);
        let mut copies: Vec<StaleCopy> = self.get_json(&name).await?.unwrap_or_default();
        let before = copies.len();
        copies.retain(|c| {
            !(c.bucket == copy.bucket && c.key == copy.key && c.backend == copy.backend)
        });
        match (copies.len(), before) {
            (0, _) => self.delete(&name).await,
            (n, b) if n == b => Ok(()),
            _ => self.put_json(&name, &copies, None::<&()>).await,
        }
    }

    async fn get_document(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.kv()
            .get(&self.key(&keys::document_name(name)))
            .text()
            .await
            .map_err(kv_error)
    }

    async fn put_document(&self, name: &str, value: &str) -> Result<(), StoreError> {
        self.kv()
            .put(&self.key(&keys::document_name(name)), value)
            .map_err(kv_error)?
            .execute()
            .await
            .map_err(kv_error)
    }
}

impl KvStore {
    /// Deletes every key under this store's prefix (test runs clean up after themselves).
    pub async fn clear(&self) -> Result<usize, StoreError> {
        let keys = self.list_all("").await?;
        let n = keys.len();
        for k in keys {
            self.kv().delete(&k.name).await.map_err(kv_error)?;
        }
        Ok(n)
    }
}
