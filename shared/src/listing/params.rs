//! A listing request as the client sent it: validation of the query, resume points and
//! continuation tokens.

use base64::Engine as _;

use super::{AFTER_ALL, MAX_PAGE};
use crate::error::S3Error;
use crate::route::Query;

const BAD_TOKEN: &str = "The continuation token provided is incorrect";

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
    /// key-marker, whichever applies); empty from the start. After a common prefix `P` it is
    /// `P` + U+10FFFF (see the module docs).
    pub resume_after: String,
    /// `encoding-type=url`.
    pub url_encoding: bool,
    /// Echoed request values: `marker` (V1), or `key-marker` (Versions).
    pub marker: Option<String>,
    /// `start-after` (V2).
    pub start_after: Option<String>,
    /// `continuation-token` (V2), or `version-id-marker` (Versions; only ever `null`).
    pub continuation_token: Option<String>,
    pub fetch_owner: bool,
}

fn invalid(message: impl Into<String>) -> S3Error {
    S3Error::invalid_argument(message)
}

/// A non-empty query value.
fn value<'q>(query: &'q Query, name: &str) -> Option<&'q str> {
    query.get(name).filter(|v| !v.is_empty())
}

/// `max-keys` / `max-uploads`: an integer in 0..=2^31-1 (S3's range), capped at 1000.
fn parse_max(query: &Query, name: &str) -> Result<usize, S3Error> {
    let Some(raw) = query.get(name) else {
        return Ok(MAX_PAGE);
    };
    let n: i64 = raw.parse().map_err(|_| {
        invalid(format!(
            "Provided {name} not an integer or within integer range"
        ))
    })?;
    if !(0..=i64::from(i32::MAX)).contains(&n) {
        return Err(invalid(format!(
            "Argument {name} must be an integer between 0 and 2147483647"
        )));
    }
    Ok(usize::try_from(n).map_or(MAX_PAGE, |n| n.min(MAX_PAGE)))
}

fn parse_encoding(query: &Query) -> Result<bool, S3Error> {
    match query.get("encoding-type") {
        None => Ok(false),
        Some("url") => Ok(true),
        Some(_) => Err(invalid("Invalid Encoding Method specified in Request")),
    }
}

/// The common prefix `key` rolls up into under `prefix` and `delimiter`, if any.
pub(super) fn common_prefix_of<'k>(
    key: &'k str,
    prefix: &str,
    delimiter: Option<&str>,
) -> Option<&'k str> {
    let delimiter = delimiter.filter(|d| !d.is_empty())?;
    let rest = key.strip_prefix(prefix)?;
    let at = rest.find(delimiter)?;
    key.get(..prefix.len() + at + delimiter.len())
}

/// The resume point for a client's marker: a marker that is itself a common prefix means
/// "after everything under it" (the contract of V1's NextMarker, which S3 sets to the last
/// common prefix).
pub(super) fn resume_point(marker: &str, prefix: &str, delimiter: Option<&str>) -> String {
    if common_prefix_of(marker, prefix, delimiter) == Some(marker) {
        let mut r = marker.to_string();
        r.push(AFTER_ALL);
        r
    } else {
        marker.to_string()
    }
}

/// Whether every key under the common prefix `p` sorts at or before the resume point.
pub(super) fn prefix_done(p: &str, resume: &str) -> bool {
    match resume.strip_prefix(p) {
        Some(rest) => rest.is_empty() || rest.starts_with(AFTER_ALL),
        None => p < resume,
    }
}

/// The opaque ListObjectsV2 continuation token for resuming after `last` (`is_prefix`: a
/// common prefix): base64url of a tag byte and the item.
pub fn encode_continuation_token(last: &str, is_prefix: bool) -> String {
    let mut raw = Vec::with_capacity(last.len() + 1);
    raw.push(if is_prefix { b'p' } else { b'k' });
    raw.extend_from_slice(last.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The resume point a continuation token carries.
fn decode_continuation_token(token: &str) -> Result<String, S3Error> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| invalid(BAD_TOKEN))?;
    let (tag, item) = raw.split_first().ok_or_else(|| invalid(BAD_TOKEN))?;
    let mut item = String::from_utf8(item.to_vec()).map_err(|_| invalid(BAD_TOKEN))?;
    match tag {
        b'k' => Ok(item),
        b'p' if !item.is_empty() => {
            item.push(AFTER_ALL);
            Ok(item)
        }
        _ => Err(invalid(BAD_TOKEN)),
    }
}

/// Parses and validates the query of a listing (`InvalidArgument` for bad max-keys, an
/// unknown encoding-type, a garbled continuation token).
///
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjects.html>,
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html>,
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectVersions.html>
pub fn parse_params(kind: ListKind, query: &Query) -> Result<ListParams, S3Error> {
    let prefix = query.get("prefix").unwrap_or("").to_string();
    let delimiter = value(query, "delimiter").map(str::to_string);
    let max_keys = parse_max(query, "max-keys")?;
    let url_encoding = parse_encoding(query)?;
    let fetch_owner = query
        .get("fetch-owner")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let resume = |m: &str| resume_point(m, &prefix, delimiter.as_deref());
    let mut params = ListParams {
        kind,
        prefix: prefix.clone(),
        delimiter: delimiter.clone(),
        max_keys,
        resume_after: String::new(),
        url_encoding,
        marker: None,
        start_after: None,
        continuation_token: None,
        fetch_owner,
    };
    match kind {
        ListKind::V1 => {
            params.marker = value(query, "marker").map(str::to_string);
            params.resume_after = params.marker.as_deref().map(resume).unwrap_or_default();
        }
        ListKind::V2 => {
            params.start_after = value(query, "start-after").map(str::to_string);
            params.continuation_token = query.get("continuation-token").map(str::to_string);
            // A continuation token decides where a later page starts; start-after only
            // places the first page (paginators send it again on every page, and minio-py
            // sends the token's own text as start-after).
            params.resume_after = match params.continuation_token.as_deref() {
                Some(token) => decode_continuation_token(token)?,
                None => params
                    .start_after
                    .as_deref()
                    .map(resume)
                    .unwrap_or_default(),
            };
        }
        ListKind::Versions => {
            params.marker = value(query, "key-marker").map(str::to_string);
            params.continuation_token = value(query, "version-id-marker").map(str::to_string);
            if let Some(version) = params.continuation_token.as_deref() {
                if params.marker.is_none() {
                    return Err(invalid(
                        "A version-id marker cannot be specified without a key marker.",
                    ));
                }
                // Unversioned: the only version there is is `null`.
                if version != "null" {
                    return Err(invalid("Invalid version id specified"));
                }
            }
            params.resume_after = params.marker.as_deref().map(resume).unwrap_or_default();
        }
    }
    Ok(params)
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

/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListMultipartUploads.html>
pub fn parse_upload_params(query: &Query) -> Result<UploadListParams, S3Error> {
    let key_marker = value(query, "key-marker").map(str::to_string);
    // S3 ignores the upload-id-marker without a key-marker.
    let upload_id_marker = value(query, "upload-id-marker")
        .filter(|_| key_marker.is_some())
        .map(str::to_string);
    Ok(UploadListParams {
        prefix: query.get("prefix").unwrap_or("").to_string(),
        delimiter: value(query, "delimiter").map(str::to_string),
        max_uploads: parse_max(query, "max-uploads")?,
        key_marker,
        upload_id_marker,
        url_encoding: parse_encoding(query)?,
    })
}

/// Where an uploads listing resumes.
pub(super) enum UploadResume {
    Start,
    /// Strictly after every upload of keys <= this string.
    AfterKey(String),
    /// After (key, upload id): later uploads of `key` still come.
    AfterUpload(String, String),
}

pub(super) fn upload_resume(params: &UploadListParams) -> UploadResume {
    let Some(km) = params.key_marker.as_deref().filter(|k| !k.is_empty()) else {
        return UploadResume::Start;
    };
    let r = resume_point(km, &params.prefix, params.delimiter.as_deref());
    match &params.upload_id_marker {
        Some(id) if r == km => UploadResume::AfterUpload(r, id.clone()),
        _ => UploadResume::AfterKey(r),
    }
}

/// A string just below `key`, so that a backend's `key-marker` (strictly after) still lists
/// `key` itself. Keys between the two begin with the result and are filtered in the merge.
pub(super) fn key_before(key: &str) -> String {
    let mut s = key.to_string();
    if let Some(c) = s.pop() {
        let prev = match c as u32 {
            0 => None,
            0xE000 => char::from_u32(0xD7FF),
            n => char::from_u32(n - 1),
        };
        if let Some(p) = prev {
            s.push(p);
            s.push(AFTER_ALL);
        }
    }
    s
}
