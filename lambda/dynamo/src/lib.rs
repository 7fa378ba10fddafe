//! [`DynamoStore`]: the S3 Balance metadata index in ONE DynamoDB table.
//!
//! The table has a string partition key `pk` and a string sort key `sk`, laid out for the
//! access patterns of [`MetadataStore`]:
//!
//! | record | `pk` | `sk` | other attributes |
//! |---|---|---|---|
//! | object index entry | `o#<bucket>` | object key | `backend`, `size`, `etag`, `modified` |
//! | bucket created at run time | `b` | bucket name | `created` |
//! | backend usage | `u` | backend name | `used_bytes`, `objects` (atomic `ADD`) |
//! | monthly operations | `ops#<YYYY-MM>` | backend name | `class_a`, `class_b` (atomic `ADD`) |
//! | document (`config`, `health`, scan cursor) | `d` | document name | `doc` |
//! | stale copy to remove | `s` | `<hex of the key's hash>:<hex of the backend's hash>` | `bucket`, `key`, `backend`, `etag`, `noted` |
//!
//! Listing a bucket is a `Query` on `o#<bucket>` with `sk > start_after`: DynamoDB orders
//! string sort keys by their UTF-8 bytes, which is S3's listing order. Point reads of objects
//! and documents are strongly consistent, so read-after-write holds within one region; so are
//! the queries (they are few and small: buckets, usage, stale copies). Reindex's conditional
//! writes are conditional `PutItem`/`DeleteItem` (`modified < :not_before`), atomic on the
//! server. Stale copies are keyed by hashes because an S3 key alone may fill the 1,024 bytes
//! a sort key holds; the prefix groups the copies of one key for `stale_copies_of`.

#![forbid(unsafe_code)]

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_dynamodb::Client;
use shared::store::{
    BackendUsage, BucketRecord, MetadataStore, ObjectRecord, OperationCounts, StaleCopy, StoreError,
};
use tokio::sync::OnceCell;

type Item = HashMap<String, AttributeValue>;

const BUCKETS: &str = "b";
const USAGE: &str = "u";
const DOCUMENTS: &str = "d";
const STALE: &str = "s";

/// 16 bytes of SHA-256 in hex: a fixed-length name for something whose own name may be long.
fn short_hash(parts: &[&str]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.len().to_be_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// The sort key of a stale copy: all copies of one key share the prefix.
fn stale_prefix(bucket: &str, key: &str) -> String {
    format!("{}:", short_hash(&[bucket, key]))
}

fn stale_sk(copy: &StaleCopy) -> String {
    format!(
        "{}{}",
        stale_prefix(&copy.bucket, &copy.key),
        short_hash(&[&copy.backend])
    )
}

fn stale_copy(item: &Item) -> Result<StaleCopy, StoreError> {
    Ok(StaleCopy {
        bucket: get_s(item, "bucket")?.to_owned(),
        key: get_s(item, "key")?.to_owned(),
        backend: get_s(item, "backend")?.to_owned(),
        etag: match item.get("etag") {
            Some(AttributeValue::S(v)) => Some(v.clone()),
            _ => None,
        },
        noted: get_n(item, "noted")?,
    })
}

/// A bucket's item: its name and date as attributes of their own (what records written before
/// owners were kept have), and the whole record as JSON in `record`.
fn bucket_item(record: &BucketRecord) -> Result<Item, StoreError> {
    let json = serde_json::to_string(record)
        .map_err(|e| StoreError(format!("dynamodb: bucket record: {e}")))?;
    let mut item = key(BUCKETS.to_owned(), &record.name);
    item.insert("created".into(), n(record.created));
    item.insert("record".into(), s(json));
    Ok(item)
}

fn objects_pk(bucket: &str) -> String {
    format!("o#{bucket}")
}

fn operations_pk(month: &str) -> String {
    format!("ops#{month}")
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn err(op: &str, e: impl std::error::Error) -> StoreError {
    StoreError(format!("dynamodb {op}: {}", DisplayErrorContext(e)))
}

fn key(pk: String, sk: &str) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(StoreError(format!(
            "dynamodb: item attribute {name:?} is missing or not a string"
        ))),
    }
}

/// A number attribute; absent counts as 0 (an `ADD` creates only the attributes it names).
fn get_n<T: std::str::FromStr>(item: &Item, name: &str) -> Result<T, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v
            .parse()
            .map_err(|_| StoreError(format!("dynamodb: attribute {name:?} = {v:?} out of range"))),
        None => "0"
            .parse()
            .map_err(|_| StoreError("dynamodb: zero does not parse".into())),
        Some(_) => Err(StoreError(format!(
            "dynamodb: item attribute {name:?} is not a number"
        ))),
    }
}

fn object_record(item: &Item) -> Result<ObjectRecord, StoreError> {
    Ok(ObjectRecord {
        backend: get_s(item, "backend")?.to_owned(),
        size: get_n(item, "size")?,
        etag: get_s(item, "etag")?.to_owned(),
        last_modified: get_n(item, "modified")?,
    })
}

/// The metadata store on one DynamoDB table (see the module docs for the layout).
///
/// Cheap to clone: the SDK client is reference-counted.
#[derive(Clone)]
pub struct DynamoStore {
    client: std::sync::Arc<OnceCell<Client>>,
    table: String,
}

/// Boxes a future. The SDK's request futures are about 12 KB each, and every future that
/// awaits a store call grew by that much: the engine's futures over the server's `AnyStore`
/// (which may be this store) were 13-19 KB for a GET over SQLite, copied on each request
/// (docs/performance.md). A DynamoDB call is a network round trip: the allocation is nothing
/// beside it.
trait Boxed: std::future::Future + Sized {
    fn boxed(self) -> std::pin::Pin<Box<Self>> {
        Box::pin(self)
    }
}

impl<F: std::future::Future> Boxed for F {}

impl DynamoStore {
    /// Writes a bucket's item if `condition` holds; `false` when it does not.
    async fn put_bucket_if(
        &self,
        record: &BucketRecord,
        condition: &str,
    ) -> Result<bool, StoreError> {
        let result = self
            .client()
            .await
            .put_item()
            .table_name(&self.table)
            .set_item(Some(bucket_item(record)?))
            .condition_expression(condition)
            .send()
            .boxed()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(err("PutItem bucket", e)),
        }
    }
    /// A store over `table` with a ready SDK client.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client: std::sync::Arc::new(OnceCell::new_with(Some(client))),
            table: table.into(),
        }
    }

    /// A store whose SDK client is built on first use from the standard AWS environment
    /// (credentials chain, `AWS_REGION`, `AWS_ENDPOINT_URL_DYNAMODB` ...). For callers that
    /// open stores synchronously (the server's `AnyStore::open`).
    pub fn from_env(table: impl Into<String>) -> Self {
        Self {
            client: std::sync::Arc::new(OnceCell::new()),
            table: table.into(),
        }
    }

    /// The SDK client the standard AWS environment describes.
    pub async fn client_from_env() -> Client {
        Client::new(&aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await)
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| Self::client_from_env().boxed())
            .await
    }

    /// Creates the table (pk/sk strings, on-demand billing) if it does not exist yet. The SAM
    /// template creates it in AWS; this is for local DynamoDB and tests.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| err("CreateTable", e))
        };
        let schema = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(|e| err("CreateTable", e))
        };
        let result = self
            .client()
            .await
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(attr("pk")?)
            .attribute_definitions(attr("sk")?)
            .key_schema(schema("pk", KeyType::Hash)?)
            .key_schema(schema("sk", KeyType::Range)?)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .boxed()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ResourceInUseException") => Ok(()),
            Err(e) => Err(err("CreateTable", e)),
        }
    }

    async fn get(&self, op: &str, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client()
            .await
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .boxed()
            .await
            .map_err(|e| err(op, e))?;
        Ok(out.item)
    }

    async fn delete(&self, op: &str, pk: String, sk: &str) -> Result<(), StoreError> {
        self.client()
            .await
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .send()
            .boxed()
            .await
            .map_err(|e| err(op, e))?;
        Ok(())
    }

    async fn put(&self, op: &str, item: Item) -> Result<(), StoreError> {
        self.client()
            .await
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .boxed()
            .await
            .map_err(|e| err(op, e))?;
        Ok(())
    }

    /// Items of partition `pk` with `sk > after` (all when `after` is empty), in sort-key
    /// order, at most `limit`. Follows `LastEvaluatedKey` across DynamoDB's 1 MB pages.
    async fn query(
        &self,
        op: &str,
        pk: String,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client()
                .await
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .expression_attribute_values(":pk", s(pk.clone()))
                .set_exclusive_start_key(start.take());
            // Sort keys cannot be empty strings, so "after nothing" is no condition at all.
            q = if after.is_empty() {
                q.key_condition_expression("pk = :pk")
            } else {
                q.key_condition_expression("pk = :pk AND sk > :after")
                    .expression_attribute_values(":after", s(after))
            };
            let want = limit - items.len();
            q = q.limit(i32::try_from(want).unwrap_or(i32::MAX));
            let out = q.send().boxed().await.map_err(|e| err(op, e))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) if items.len() < limit && !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        items.truncate(limit);
        Ok(items)
    }

    /// `ADD` to number attributes of one item, creating it when missing: atomic on the server.
    async fn add(
        &self,
        op: &str,
        pk: String,
        sk: &str,
        adds: &[(&str, i64)],
    ) -> Result<(), StoreError> {
        let mut update = self
            .client()
            .await
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)));
        let mut clauses = Vec::new();
        for (i, (name, value)) in adds.iter().enumerate() {
            clauses.push(format!("#a{i} :v{i}"));
            update = update
                .expression_attribute_names(format!("#a{i}"), *name)
                .expression_attribute_values(format!(":v{i}"), n(value));
        }
        update
            .update_expression(format!("ADD {}", clauses.join(", ")))
            .send()
            .boxed()
            .await
            .map_err(|e| err(op, e))?;
        Ok(())
    }
}

impl MetadataStore for DynamoStore {
    async fn get_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectRecord>, StoreError> {
        self.get("GetItem object", objects_pk(bucket), key)
            .await?
            .map(|item| object_record(&item))
            .transpose()
    }

    async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        record: &ObjectRecord,
    ) -> Result<(), StoreError> {
        let mut item = self::key(objects_pk(bucket), key);
        item.insert("backend".into(), s(&record.backend));
        item.insert("size".into(), n(record.size));
        item.insert("etag".into(), s(&record.etag));
        item.insert("modified".into(), n(record.last_modified));
        self.put("PutItem object", item).await
    }

    async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.delete("DeleteItem object", objects_pk(bucket), key)
            .await
    }

    async fn put_object_unless_newer(
        &self,
        bucket: &str,
        key: &str,
        record: &ObjectRecord,
        not_before: u64,
    ) -> Result<bool, StoreError> {
        let mut item = self::key(objects_pk(bucket), key);
        item.insert("backend".into(), s(&record.backend));
        item.insert("size".into(), n(record.size));
        item.insert("etag".into(), s(&record.etag));
        item.insert("modified".into(), n(record.last_modified));
        let result = self
            .client()
            .await
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR modified < :not_before")
            .expression_attribute_values(":not_before", n(not_before))
            .send()
            .boxed()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(err("PutItem object (conditional)", e)),
        }
    }

    async fn delete_object_unless_newer(
        &self,
        bucket: &str,
        key: &str,
        not_before: u64,
    ) -> Result<bool, StoreError> {
        let result = self
            .client()
            .await
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(self::key(objects_pk(bucket), key)))
            .condition_expression("attribute_not_exists(pk) OR modified < :not_before")
            .expression_attribute_values(":not_before", n(not_before))
            .send()
            .boxed()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(err("DeleteItem object (conditional)", e)),
        }
    }

    async fn list_objects(
        &self,
        bucket: &str,
        start_after: &str,
        limit: usize,
    ) -> Result<Vec<(String, ObjectRecord)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.query("Query objects", objects_pk(bucket), start_after, limit)
            .await?
            .iter()
            .map(|item| Ok((get_s(item, "sk")?.to_owned(), object_record(item)?)))
            .collect()
    }

    async fn create_bucket(&self, record: &BucketRecord) -> Result<bool, StoreError> {
        self.put_bucket_if(record, "attribute_not_exists(pk)").await
    }

    async fn update_bucket(&self, record: &BucketRecord) -> Result<(), StoreError> {
        // Deleted meanwhile: stays deleted.
        self.put_bucket_if(record, "attribute_exists(pk)")
            .await
            .map(drop)
    }

    async fn delete_bucket(&self, name: &str) -> Result<(), StoreError> {
        self.delete("DeleteItem bucket", BUCKETS.to_owned(), name)
            .await
    }

    async fn list_buckets(&self) -> Result<Vec<BucketRecord>, StoreError> {
        self.query("Query buckets", BUCKETS.to_owned(), "", usize::MAX)
            .await?
            .iter()
            .map(|item| match item.get("record") {
                Some(AttributeValue::S(json)) => serde_json::from_str(json)
                    .map_err(|e| StoreError(format!("dynamodb: corrupt bucket record: {e}"))),
                // Written before bucket records had owners, ACLs and CORS rules.
                _ => Ok(BucketRecord {
                    name: get_s(item, "sk")?.to_owned(),
                    created: get_n(item, "created")?,
                    ..Default::default()
                }),
            })
            .collect()
    }

    async fn add_usage(&self, backend: &str, bytes: i64, objects: i64) -> Result<(), StoreError> {
        self.add(
            "UpdateItem usage",
            USAGE.to_owned(),
            backend,
            &[("used_bytes", bytes), ("objects", objects)],
        )
        .await
    }

    async fn set_usage(&self, usage: &BackendUsage) -> Result<(), StoreError> {
        let mut item = key(USAGE.to_owned(), &usage.backend);
        item.insert("used_bytes".into(), n(usage.used_bytes));
        item.insert("objects".into(), n(usage.objects));
        self.put("PutItem usage", item).await
    }

    async fn list_usage(&self) -> Result<Vec<BackendUsage>, StoreError> {
        self.query("Query usage", USAGE.to_owned(), "", usize::MAX)
            .await?
            .iter()
            .map(|item| {
                Ok(BackendUsage {
                    backend: get_s(item, "sk")?.to_owned(),
                    used_bytes: get_n(item, "used_bytes")?,
                    objects: get_n(item, "objects")?,
                })
            })
            .collect()
    }

    async fn add_operations(
        &self,
        backend: &str,
        month: &str,
        counts: &OperationCounts,
    ) -> Result<(), StoreError> {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.add(
            "UpdateItem operations",
            operations_pk(month),
            backend,
            &[
                ("class_a", clamp(counts.class_a)),
                ("class_b", clamp(counts.class_b)),
            ],
        )
        .await
    }

    async fn get_operations(
        &self,
        backend: &str,
        month: &str,
    ) -> Result<OperationCounts, StoreError> {
        Ok(
            match self
                .get("GetItem operations", operations_pk(month), backend)
                .await?
            {
                Some(item) => OperationCounts {
                    class_a: get_n(&item, "class_a")?,
                    class_b: get_n(&item, "class_b")?,
                },
                None => OperationCounts::default(),
            },
        )
    }

    async fn put_stale_copy(&self, copy: &StaleCopy) -> Result<(), StoreError> {
        let mut item = key(STALE.to_owned(), &stale_sk(copy));
        item.insert("bucket".into(), s(&copy.bucket));
        item.insert("key".into(), s(&copy.key));
        item.insert("backend".into(), s(&copy.backend));
        if let Some(etag) = &copy.etag {
            item.insert("etag".into(), s(etag));
        }
        item.insert("noted".into(), n(copy.noted));
        self.put("PutItem stale copy", item).await
    }

    async fn list_stale_copies(&self, limit: usize) -> Result<Vec<StaleCopy>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.query("Query stale copies", STALE.to_owned(), "", limit)
            .await?
            .iter()
            .map(stale_copy)
            .collect()
    }

    async fn stale_copies_of(&self, bucket: &str, key: &str) -> Result<Vec<StaleCopy>, StoreError> {
        let out = self
            .client()
            .await
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(STALE))
            .expression_attribute_values(":prefix", s(stale_prefix(bucket, key)))
            .send()
            .boxed()
            .await
            .map_err(|e| err("Query stale copies of a key", e))?;
        out.items
            .unwrap_or_default()
            .iter()
            .map(stale_copy)
            // A hash collision is astronomically unlikely; check anyway.
            .filter(|c| {
                c.as_ref()
                    .map_or(true, |c| c.bucket == bucket && c.key == key)
            })
            .collect()
    }

    async fn delete_stale_copy(&self, copy: &StaleCopy) -> Result<(), StoreError> {
        self.delete("DeleteItem stale copy", STALE.to_owned(), &stale_sk(copy))
            .await
    }

    async fn get_document(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.get("GetItem document", DOCUMENTS.to_owned(), name)
            .await?
            .map(|item| get_s(&item, "doc").map(str::to_owned))
            .transpose()
    }

    async fn put_document(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let mut item = key(DOCUMENTS.to_owned(), name);
        item.insert("doc".into(), s(value));
        self.put("PutItem document", item).await
    }
}
