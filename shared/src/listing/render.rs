//! The listing answers to the client, written with the XML layer's writer
//! ([`crate::xml::Writer`]): ListBucketResult (v1, v2), ListVersionsResult and
//! ListMultipartUploadsResult.

use std::borrow::Cow;

use percent_encoding::{utf8_percent_encode, AsciiSet};

use super::page::QUERY_SET;
use super::{encode_continuation_token, ListKind, ListParams, ListResult};
use super::{UploadListParams, UploadListResult};
use crate::xml::Writer;

/// `encoding-type=url` in answers: S3 leaves `/` alone. A space becomes `%20` (S3 writes `+`):
/// both decode to a space with botocore's `unquote_plus`, and only `%20` does with
/// `decodeURIComponent`, which JavaScript users apply.
pub(super) const KEY_SET: &AsciiSet = &QUERY_SET.remove(b'/');

/// The ListObjectsV2 `NextContinuationToken` for a merged page.
pub fn next_continuation_token(result: &ListResult) -> Option<String> {
    let next = result.next.as_deref()?;
    // A key and a common prefix never share a name (the key would have rolled up).
    let is_prefix = result.common_prefixes.last().is_some_and(|p| p == next);
    Some(encode_continuation_token(next, is_prefix))
}

/// A name as the answer carries it: URL-encoded under `encoding-type=url`.
fn enc(url: bool, s: &str) -> Cow<'_, str> {
    if url {
        Cow::Owned(utf8_percent_encode(s, KEY_SET).to_string())
    } else {
        Cow::Borrowed(s)
    }
}

/// The XML answer (ListBucketResult v1 or v2, or ListVersionsResult).
///
/// V1 carries `NextMarker` whenever the answer is truncated, not only with a delimiter as S3
/// does: clients that find it use it, and the others fall back to the last key, which is the
/// same value when there is no delimiter.
pub fn render(params: &ListParams, bucket: &str, result: &ListResult) -> String {
    let url = params.url_encoding;
    let e = |s: &str| enc(url, s).into_owned();
    let root = match params.kind {
        ListKind::V1 | ListKind::V2 => "ListBucketResult",
        ListKind::Versions => "ListVersionsResult",
    };
    let mut out = Writer::new(root, true);
    out.el("Name", bucket);
    out.el("Prefix", &e(&params.prefix));
    match params.kind {
        ListKind::V1 => {
            out.el("Marker", &e(params.marker.as_deref().unwrap_or("")));
            out.el("MaxKeys", &params.max_keys.to_string());
        }
        ListKind::V2 => {
            let count = result.entries.len() + result.common_prefixes.len();
            out.el("KeyCount", &count.to_string());
            out.el("MaxKeys", &params.max_keys.to_string());
        }
        ListKind::Versions => {
            out.el("KeyMarker", &e(params.marker.as_deref().unwrap_or("")));
            out.el(
                "VersionIdMarker",
                params.continuation_token.as_deref().unwrap_or(""),
            );
            out.el("MaxKeys", &params.max_keys.to_string());
        }
    }
    if let Some(d) = &params.delimiter {
        out.el("Delimiter", &e(d));
    }
    if url {
        out.el("EncodingType", "url");
    }
    out.el(
        "IsTruncated",
        if result.truncated { "true" } else { "false" },
    );
    let next = result.next.as_deref().filter(|_| result.truncated);
    match params.kind {
        ListKind::V1 => {
            if let Some(n) = next {
                out.el("NextMarker", &e(n));
            }
        }
        ListKind::V2 => {
            if let Some(t) = &params.continuation_token {
                out.el("ContinuationToken", t);
            }
            if let Some(t) = next_continuation_token(result).filter(|_| result.truncated) {
                out.el("NextContinuationToken", &t);
            }
            if let Some(s) = &params.start_after {
                out.el("StartAfter", &e(s));
            }
        }
        ListKind::Versions => {
            if let Some(n) = next {
                out.el("NextKeyMarker", &e(n));
                out.el("NextVersionIdMarker", "null");
            }
        }
    }
    for entry in &result.entries {
        let storage = entry.storage_class.as_deref().unwrap_or("STANDARD");
        let tag = if params.kind == ListKind::Versions {
            "Version"
        } else {
            "Contents"
        };
        out.open(tag);
        out.el("Key", &e(&entry.key));
        if params.kind == ListKind::Versions {
            out.el("VersionId", "null");
            out.el("IsLatest", "true");
        }
        out.el("LastModified", &crate::time::iso8601(entry.last_modified));
        out.el("ETag", &entry.etag);
        out.el("Size", &entry.size.to_string());
        match params.kind {
            ListKind::Versions => {
                out.el("StorageClass", storage);
                out.owner("Owner");
            }
            ListKind::V1 | ListKind::V2 => {
                if params.kind == ListKind::V1 || params.fetch_owner {
                    out.owner("Owner");
                }
                out.el("StorageClass", storage);
            }
        }
        out.close(tag);
    }
    for p in &result.common_prefixes {
        out.open("CommonPrefixes");
        out.el("Prefix", &e(p));
        out.close("CommonPrefixes");
    }
    out.finish(root)
}

/// ListMultipartUploadsResult XML.
///
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListMultipartUploads.html#API_ListMultipartUploads_ResponseSyntax>
pub fn render_uploads(
    params: &UploadListParams,
    bucket: &str,
    result: &UploadListResult,
) -> String {
    let url = params.url_encoding;
    let e = |s: &str| enc(url, s).into_owned();
    let root = "ListMultipartUploadsResult";
    let mut out = Writer::new(root, true);
    out.el("Bucket", bucket);
    out.el("KeyMarker", &e(params.key_marker.as_deref().unwrap_or("")));
    out.el(
        "UploadIdMarker",
        params.upload_id_marker.as_deref().unwrap_or(""),
    );
    if let Some(k) = &result.next_key_marker {
        out.el("NextKeyMarker", &e(k));
    }
    if let Some(id) = &result.next_upload_id_marker {
        out.el("NextUploadIdMarker", id);
    }
    out.el("Prefix", &e(&params.prefix));
    if let Some(d) = &params.delimiter {
        out.el("Delimiter", &e(d));
    }
    out.el("MaxUploads", &params.max_uploads.to_string());
    if url {
        out.el("EncodingType", "url");
    }
    out.el(
        "IsTruncated",
        if result.truncated { "true" } else { "false" },
    );
    for u in &result.uploads {
        out.open("Upload");
        out.el("Key", &e(&u.key));
        out.el("UploadId", &u.upload_id);
        out.owner("Initiator");
        out.owner("Owner");
        out.el("StorageClass", "STANDARD");
        out.el("Initiated", &crate::time::iso8601(u.initiated));
        out.close("Upload");
    }
    for p in &result.common_prefixes {
        out.open("CommonPrefixes");
        out.el("Prefix", &e(p));
        out.close("CommonPrefixes");
    }
    out.finish(root)
}
