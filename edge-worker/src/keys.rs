//! The layout of S3 Balance's records in a Workers KV namespace. Pure (no runtime), so it is
//! unit-tested natively.
//!
//! | KV key | value |
//! |---|---|
//! | `o/<bucket>/<key>` | [`ObjectEntry`] (JSON): where the object lives |
//! | `b/<bucket>` | `BucketRecord` (JSON): a bucket created at run time |
//! | `u/<backend>` | `BackendUsage` (JSON) |
//! | `n/<backend>/<YYYY-MM>` | `OperationCounts` (JSON) |
//! | `d/<name>` | a document (health snapshot, scan cursor) |
//! | `s/<hash of bucket and key>` | the `StaleCopy` records of one key (JSON list): one point read per delete, no KV list |
//! | `config` | the hot-switched configuration (read by `lib.rs`, written by the operator) |
//!
//! Every key may carry a namespace prefix (the test routes use a fresh one per run).
//! KV keys are at most 512 bytes: a longer name keeps a readable, order-preserving head and
//! ends in `#` and the SHA-256 (hex) of the whole name; the real key is then stored inside
//! the value so listings still return it.
//!
//! <https://developers.cloudflare.com/kv/platform/limits/>

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use shared::store::ObjectRecord;

/// Workers KV's limit on a key's length, in bytes.
pub const KV_KEY_MAX: usize = 512;
/// The hashed form ends in `#` + 64 hex digits.
const HASH_SUFFIX: usize = 1 + 64;

/// The KV key for `prefix` + `name`; hashed when over [`KV_KEY_MAX`].
pub fn kv_key(prefix: &str, name: &str) -> String {
    let full = format!("{prefix}{name}");
    if full.len() <= KV_KEY_MAX {
        return full;
    }
    let digest = hex::encode(Sha256::digest(full.as_bytes()));
    let mut head = KV_KEY_MAX - HASH_SUFFIX;
    while !full.is_char_boundary(head) {
        head -= 1;
    }
    format!("{}#{digest}", &full[..head])
}

/// Whether a KV key has the hashed form (its real name is then in the value). A short name
/// can look the same; readers fall back to the KV key when the value holds no name.
pub fn is_hashed(kv_key: &str) -> bool {
    let n = kv_key.len();
    // The head is cut at a character boundary: at most 3 bytes short of its maximum.
    (KV_KEY_MAX - 3..=KV_KEY_MAX).contains(&n)
        && kv_key.as_bytes()[n - HASH_SUFFIX] == b'#'
        && kv_key.as_bytes()[n - 64..]
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The prefix of every object key of `bucket` (before namespacing).
pub fn object_prefix(bucket: &str) -> String {
    format!("o/{bucket}/")
}

pub fn object_name(bucket: &str, key: &str) -> String {
    format!("o/{bucket}/{key}")
}

pub fn bucket_name(bucket: &str) -> String {
    format!("b/{bucket}")
}

pub fn usage_name(backend: &str) -> String {
    format!("u/{backend}")
}

pub fn operations_name(backend: &str, month: &str) -> String {
    format!("n/{backend}/{month}")
}

pub fn document_name(name: &str) -> String {
    format!("d/{name}")
}

/// The prefix of every stale-copy record.
pub const STALE_PREFIX: &str = "s/";

/// The record of the stale copies of one key: named by a hash, as bucket and key may be long.
pub fn stale_name(bucket: &str, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(bucket.len().to_be_bytes());
    h.update(bucket.as_bytes());
    h.update(key.as_bytes());
    format!("{STALE_PREFIX}{}", hex::encode(&h.finalize()[..16]))
}

/// The value of an object key. `key` is set only when the KV key is hashed; the same entry
/// without `key` is the KV metadata (at most 1024 bytes), so listings read no values for
/// ordinary keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(flatten)]
    pub record: ObjectRecord,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept_as_they_are() {
        assert_eq!(
            kv_key("t/1/", "o/photos/a b/é.jpg"),
            "t/1/o/photos/a b/é.jpg"
        );
        assert!(!is_hashed(&kv_key("", "o/b/k")));
    }

    #[test]
    fn long_names_fit_kv_and_stay_distinct() {
        let a = kv_key("", &format!("o/b/{}", "k/".repeat(500)));
        let b = kv_key("", &format!("o/b/{}x", "k/".repeat(500)));
        assert!(a.len() <= KV_KEY_MAX && b.len() <= KV_KEY_MAX);
        assert_ne!(a, b);
        assert!(
            a.starts_with("o/b/k/k/"),
            "the head stays readable and under the bucket's prefix"
        );
        assert!(is_hashed(&a) && is_hashed(&b));
    }

    #[test]
    fn hashing_cuts_at_a_character_boundary() {
        let name = format!("o/b/{}", "é".repeat(400)); // 804 bytes of two-byte characters
        let k = kv_key("", &name);
        assert!(k.len() <= KV_KEY_MAX);
        assert!(is_hashed(&k));
    }

    #[test]
    fn entries_round_trip_and_metadata_omits_the_key() {
        let record = ObjectRecord {
            backend: "one".into(),
            size: 3,
            etag: "\"e\"".into(),
            last_modified: 7,
        };
        let meta = serde_json::to_string(&ObjectEntry {
            key: None,
            record: record.clone(),
        })
        .unwrap();
        assert!(!meta.contains("\"key\""));
        let back: ObjectEntry = serde_json::from_str(&meta).unwrap();
        assert_eq!(back.record, record);
        let full = ObjectEntry {
            key: Some("long".into()),
            record,
        };
        assert_eq!(
            serde_json::from_str::<ObjectEntry>(&serde_json::to_string(&full).unwrap()).unwrap(),
            full
        );
    }
}
