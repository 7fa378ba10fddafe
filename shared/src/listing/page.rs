//! The backends' side of a listing: the request each backend gets (ListObjectsV2 or
//! ListMultipartUploads with the layout prefix prepended) and the reading of its answer into a
//! page of entries with the layout prefix removed. Both answers are read by one page reader on
//! the XML layer's tree reader ([`crate::xml::parse`]).

use std::borrow::Cow;
use std::time::SystemTime;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::params::{key_before, upload_resume, UploadResume};
use super::{ListEntry, ListParams, UploadListParams, MAX_PAGE};
use crate::error::S3Error;
use crate::xml::Element;

/// SigV4's unreserved set: what a backend query may carry unencoded.
pub(super) const QUERY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// One object as a backend lists it, with the layout prefix removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEntry {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified: SystemTime,
    pub storage_class: Option<String>,
    /// Index of the backend (in the pool order) it came from.
    pub backend: usize,
}

/// One backend's page, with the layout prefix removed from keys and common prefixes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendPage {
    pub entries: Vec<ObjectEntry>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
}

/// `name=value&...` with SigV4's encoding; `pairs` must already be sorted by name.
pub(super) fn query_string(pairs: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (name, value) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.extend(utf8_percent_encode(value, QUERY_SET));
    }
    out
}

/// The query string of the ListObjectsV2 request to send to a backend whose keys for this
/// virtual bucket start with `layout_prefix` (with `list-type=2`, `prefix`, `delimiter`,
/// `start-after`, `max-keys`, `encoding-type=url`), percent-encoded and sorted.
///
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html>
pub fn backend_query(params: &ListParams, layout_prefix: &str) -> String {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    if let Some(d) = params.delimiter.as_deref().filter(|d| !d.is_empty()) {
        pairs.push(("delimiter", d.to_string()));
    }
    // Keys that XML 1.0 cannot carry (control characters) survive only URL-encoded.
    pairs.push(("encoding-type", "url".to_string()));
    pairs.push(("list-type", "2".to_string()));
    pairs.push(("max-keys", params.max_keys.to_string()));
    let prefix = format!("{layout_prefix}{}", params.prefix);
    if !prefix.is_empty() {
        pairs.push(("prefix", prefix));
    }
    if !params.resume_after.is_empty() {
        pairs.push((
            "start-after",
            format!("{layout_prefix}{}", params.resume_after),
        ));
    }
    query_string(&pairs)
}

/// A multipart upload in progress, as a backend lists it (layout prefix removed). The engine
/// replaces `upload_id` with the client-facing id before merging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadEntry {
    pub key: String,
    pub upload_id: String,
    pub initiated: SystemTime,
}

/// Query string of the ListMultipartUploads request to a backend (`uploads`, prefix with the
/// layout prefix, key-marker, max-uploads ...).
///
/// `upload-id-marker` is not sent (backend ids are not the client's): with one, the backend
/// gets a key-marker just below the client's, and [`merge_uploads`] drops what was listed.
/// `max-uploads` is always 1000, so that all uploads of one key come in one page (a backend
/// orders them by initiation time, not by the ids the merge sorts by).
pub fn backend_upload_query(params: &UploadListParams, layout_prefix: &str) -> String {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    if let Some(d) = params.delimiter.as_deref().filter(|d| !d.is_empty()) {
        pairs.push(("delimiter", d.to_string()));
    }
    pairs.push(("encoding-type", "url".to_string()));
    match upload_resume(params) {
        UploadResume::Start => {}
        UploadResume::AfterKey(k) => pairs.push(("key-marker", format!("{layout_prefix}{k}"))),
        UploadResume::AfterUpload(k, _) => {
            pairs.push(("key-marker", format!("{layout_prefix}{}", key_before(&k))));
        }
    }
    pairs.push(("max-uploads", MAX_PAGE.to_string()));
    let prefix = format!("{layout_prefix}{}", params.prefix);
    if !prefix.is_empty() {
        pairs.push(("prefix", prefix));
    }
    let mut q = query_string(&pairs);
    q.push_str("&uploads");
    q
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UploadPage {
    pub uploads: Vec<UploadEntry>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
}

/// Reverses `encoding-type=url` as S3 applies it (a space may come as `+`).
fn url_decode(s: &str) -> Result<String, String> {
    let plus = s.replace('+', " ");
    percent_decode_str(&plus)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| format!("undecodable URL-encoded name {s:?}"))
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("bad boolean {other:?}")),
    }
}

/// Removes the layout prefix from a name a backend listed; `None` for a name outside it (an
/// object of another virtual bucket, or a stray, sharing the real bucket): not ours.
fn strip_layout(name: String, layout_prefix: &str) -> Option<String> {
    if layout_prefix.is_empty() {
        return Some(name);
    }
    name.strip_prefix(layout_prefix).map(str::to_owned)
}

/// Reads one backend's listing answer: root `root`, `IsTruncated`, `EncodingType`, the
/// `entry` elements (each read by `read` with its decoded key, before the layout prefix is
/// removed: a malformed entry fails the page even when it is not ours) and the common
/// prefixes.
fn read_page<E: ListEntry>(
    xml: &[u8],
    root: &str,
    entry: &str,
    layout_prefix: &str,
    read: impl Fn(&Element, String) -> Result<E, String>,
) -> Result<(Vec<E>, Vec<String>, bool), String> {
    let el = crate::xml::parse(xml).map_err(|e| e.to_string())?;
    if el.name != root {
        return Err(format!("root element is {}", el.name));
    }
    let truncated = parse_bool(el.raw_text_of("IsTruncated").ok_or("no IsTruncated")?)?;
    let url = el.text_of("EncodingType") == Some("url");
    let decode = |s: &str| {
        if url {
            url_decode(s)
        } else {
            Ok(s.to_owned())
        }
    };
    let mut entries = Vec::new();
    for e in el.all(entry) {
        let key = decode(
            e.raw_text_of("Key")
                .ok_or_else(|| format!("{entry} without Key"))?,
        )?;
        let mut listed = read(e, key)?;
        let key = std::mem::take(listed.key_mut());
        if let Some(key) = strip_layout(key, layout_prefix) {
            *listed.key_mut() = key;
            entries.push(listed);
        }
    }
    let mut prefixes = Vec::new();
    for p in el.all("CommonPrefixes") {
        for p in p.all("Prefix") {
            if let Some(p) = strip_layout(decode(&p.text)?, layout_prefix) {
                prefixes.push(p);
            }
        }
    }
    Ok((entries, prefixes, truncated))
}

fn date(e: &Element, name: &str, entry: &str) -> Result<SystemTime, String> {
    let text = e
        .raw_text_of(name)
        .ok_or_else(|| format!("{entry} without {name}"))?;
    crate::time::parse_iso8601(text.trim()).ok_or_else(|| format!("bad {name} {text:?}"))
}

/// A backend's answer that cannot be read: logged, and `InternalError` to the client.
fn unreadable(what: String) -> S3Error {
    crate::xml::bad_backend_answer(&what)
}

/// Parses a backend's ListObjectsV2 answer; `backend` is its pool index.
///
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html#API_ListObjectsV2_ResponseSyntax>
pub fn parse_backend_page(
    xml: &[u8],
    layout_prefix: &str,
    backend: usize,
) -> Result<BackendPage, S3Error> {
    let read = |e: &Element, key: String| {
        let size = e.raw_text_of("Size").ok_or("Contents without Size")?;
        Ok(ObjectEntry {
            key,
            size: size
                .trim()
                .parse()
                .map_err(|_| format!("bad Size {size:?}"))?,
            etag: e.raw_text_of("ETag").unwrap_or_default().to_owned(),
            last_modified: date(e, "LastModified", "Contents")?,
            storage_class: e
                .raw_text_of("StorageClass")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            backend,
        })
    };
    let (entries, common_prefixes, truncated) =
        read_page(xml, "ListBucketResult", "Contents", layout_prefix, read).map_err(|why| {
            unreadable(format!(
                "malformed ListObjectsV2 answer from backend {backend}: {why}"
            ))
        })?;
    Ok(BackendPage {
        entries,
        common_prefixes,
        truncated,
    })
}

/// Parses a backend's ListMultipartUploadsResult.
///
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListMultipartUploads.html#API_ListMultipartUploads_ResponseSyntax>
pub fn parse_backend_uploads(xml: &[u8], layout_prefix: &str) -> Result<UploadPage, S3Error> {
    let read = |e: &Element, key: String| {
        Ok(UploadEntry {
            key,
            upload_id: e
                .raw_text_of("UploadId")
                .ok_or("Upload without UploadId")?
                .to_owned(),
            initiated: date(e, "Initiated", "Upload")?,
        })
    };
    let (uploads, common_prefixes, truncated) = read_page(
        xml,
        "ListMultipartUploadsResult",
        "Upload",
        layout_prefix,
        read,
    )
    .map_err(|why| unreadable(format!("malformed ListMultipartUploads answer: {why}")))?;
    Ok(UploadPage {
        uploads,
        common_prefixes,
        truncated,
    })
}
