//! Listings: the k-way merge of the backends' own listings into one answer.
//!
//! ListObjects (v1), ListObjectsV2, ListObjectVersions (unversioned: every VersionId `null`)
//! and ListMultipartUploads. The gateway asks every backend of the pool for a page
//! (ListObjectsV2 with the layout prefix prepended, `start-after` for resuming), merges them,
//! and hands out tokens that carry the last key: stateless and exact.
//!
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html>

use std::time::SystemTime;

use crate::error::S3Error;
use crate::route::Query;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    V1,
    V2,
    Versions,
}

/// A listing request as the client sent it, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListParams {
    pub kind: ListKind,
    pub prefix: String,
    pub delimiter: Option<String>,
    /// 0..=1000 (larger requests are capped at 1000, as S3 does).
    pub max_keys: usize,
    /// Resume strictly after this key (from marker, start-after, continuation-token or
    /// key-marker, whichever applies); empty from the start.
    pub resume_after: String,
    /// `encoding-type=url`.
    pub url_encoding: bool,
    /// Echoed request values.
    pub marker: Option<String>,
    pub start_after: Option<String>,
    pub continuation_token: Option<String>,
    pub fetch_owner: bool,
}

/// Parses and validates the query of a listing (`InvalidArgument` for bad max-keys, an
/// unknown encoding-type, a garbled continuation token).
pub fn parse_params(kind: ListKind, query: &Query) -> Result<ListParams, S3Error> {
    let _ = (kind, query);
    todo!("listing helper")
}

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

/// The query string of the ListObjectsV2 request to send to a backend whose keys for this
/// virtual bucket start with `layout_prefix` (with `list-type=2`, `prefix`, `delimiter`,
/// `start-after`, `max-keys`, `encoding-type=url`), percent-encoded and sorted.
pub fn backend_query(params: &ListParams, layout_prefix: &str) -> String {
    let _ = (params, layout_prefix);
    todo!("listing helper")
}

/// Parses a backend's ListObjectsV2 answer; `backend` is its pool index.
pub fn parse_backend_page(xml: &[u8], layout_prefix: &str, backend: usize) -> Result<BackendPage, S3Error> {
    let _ = (xml, layout_prefix, backend);
    todo!("listing helper")
}

/// The merged answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListResult {
    pub entries: Vec<ObjectEntry>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    /// The last key or common prefix returned, when truncated (becomes NextMarker /
    /// NextContinuationToken / NextKeyMarker).
    pub next: Option<String>,
}

/// Merges the pages of all backends: sorted, duplicates resolved (the newest copy wins),
/// common prefixes merged, cut at `max_keys` and at the point up to which every truncated
/// backend's page is complete.
pub fn merge(params: &ListParams, pages: Vec<BackendPage>) -> ListResult {
    let _ = (params, pages);
    todo!("listing helper")
}

/// The XML answer (ListBucketResult v1 or v2, or ListVersionsResult).
pub fn render(params: &ListParams, bucket: &str, result: &ListResult) -> String {
    let _ = (params, bucket, result);
    todo!("listing helper")
}

/// A multipart upload in progress, as a backend lists it (layout prefix removed). The engine
/// replaces `upload_id` with the client-facing id before merging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadEntry {
    pub key: String,
    pub upload_id: String,
    pub initiated: SystemTime,
}

/// ListMultipartUploads request parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadListParams {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub max_uploads: usize,
    pub key_marker: Option<String>,
    pub upload_id_marker: Option<String>,
    pub url_encoding: bool,
}

pub fn parse_upload_params(query: &Query) -> Result<UploadListParams, S3Error> {
    let _ = query;
    todo!("listing helper")
}

/// Query string of the ListMultipartUploads request to a backend (`uploads`, prefix with the
/// layout prefix, key-marker, max-uploads ...).
pub fn backend_upload_query(params: &UploadListParams, layout_prefix: &str) -> String {
    let _ = (params, layout_prefix);
    todo!("listing helper")
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UploadPage {
    pub uploads: Vec<UploadEntry>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
}

pub fn parse_backend_uploads(xml: &[u8], layout_prefix: &str) -> Result<UploadPage, S3Error> {
    let _ = (xml, layout_prefix);
    todo!("listing helper")
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UploadListResult {
    pub uploads: Vec<UploadEntry>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_upload_id_marker: Option<String>,
}

pub fn merge_uploads(params: &UploadListParams, pages: Vec<UploadPage>) -> UploadListResult {
    let _ = (params, pages);
    todo!("listing helper")
}

/// ListMultipartUploadsResult XML.
pub fn render_uploads(params: &UploadListParams, bucket: &str, result: &UploadListResult) -> String {
    let _ = (params, bucket, result);
    todo!("listing helper")
}
