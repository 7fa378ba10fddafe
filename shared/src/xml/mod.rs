//! XML: one writer ([`writer::Writer`]) and one reader ([`reader::parse`]) on quick-xml, used by
//! every producer and parser of XML in the workspace; and here, the S3 bodies built on them:
//! AWS's error body, the answers the gateway builds, the requests it reads (DeleteObjects,
//! CompleteMultipartUpload), the requests it sends to backends (DeleteObjects,
//! CompleteMultipartUpload) and the backend answers it must read. The listing pages and
//! answers are in [`crate::listing`], on the same writer and reader. Every renderer has an
//! exact-string test.
//!
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html>
//!
//! Conventions:
//! - Every body starts with `<?xml version="1.0" encoding="UTF-8"?>` and a newline; response
//!   roots carry `xmlns="http://s3.amazonaws.com/doc/2006-03-01/"` as AWS's do, except
//!   `<Error>`, which AWS sends without a namespace.
//! - The gateway has no AWS account: the owner of every bucket, ACL, upload and part listing
//!   is the fixed canonical user [`OWNER_ID`] (`s3-balance`, also the display name).
//! - A client's body that is not well-formed is `MalformedXML`; a backend's answer that cannot
//!   be read is an error too, never an empty answer: it is logged with the reason and answered
//!   `InternalError` (the client did nothing wrong).

pub mod reader;
pub mod writer;

use std::time::SystemTime;

use crate::error::{S3Error, S3ErrorCode};
use crate::route::DefaultAnswer;
use crate::time::{iso8601, parse_iso8601};

pub use reader::{parse, Element, ReadError};
pub use writer::{escape, Writer, OWNER_ID, S3_NS};

/// Most keys a DeleteObjects request may name.
pub const MAX_DELETE_KEYS: usize = 1000;

// ---------------------------------------------------------------------------------------------
// Writing

/// `<?xml ...?><Error><Code/><Message/><Resource/><RequestId/></Error>`; the same RequestId
/// goes in the `x-amz-request-id` header.
pub fn error_body(error: &S3Error, request_id: &str) -> String {
    let mut d = Writer::new("Error", false);
    d.el("Code", error.code.as_str())
        .el("Message", &error.message);
    if let Some(resource) = &error.resource {
        d.el("Resource", resource);
    }
    d.el("RequestId", request_id);
    d.finish("Error")
}

/// ListAllMyBucketsResult: `(name, creation date)` pairs; owner id and display name fixed.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListBuckets.html>
///
/// `continuation_token`: where the next page starts, when this one was cut at `max-buckets`;
/// `prefix`: the request's, echoed.
pub fn list_buckets(
    buckets: &[(String, SystemTime)],
    continuation_token: Option<&str>,
    prefix: Option<&str>,
) -> String {
    let mut d = Writer::new("ListAllMyBucketsResult", true);
    d.open("Buckets");
    for (name, created) in buckets {
        d.open("Bucket")
            .el("Name", name)
            .el("CreationDate", &iso8601(*created))
            .close("Bucket");
    }
    d.close("Buckets").owner("Owner");
    if let Some(token) = continuation_token {
        d.el("ContinuationToken", token);
    }
    if let Some(prefix) = prefix {
        d.el("Prefix", prefix);
    }
    d.finish("ListAllMyBucketsResult")
}

/// LocationConstraint (empty for us-east-1, as S3 answers).
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketLocation.html>
pub fn bucket_location(region: &str) -> String {
    if region.is_empty() || region == "us-east-1" {
        Writer::empty("LocationConstraint", true)
    } else {
        let mut d = Writer::new("LocationConstraint", true);
        d.raw(&escape(region));
        d.finish("LocationConstraint")
    }
}

/// The body of a default answer (unversioned, private).
///
/// - GetBucketVersioning: the empty configuration of a bucket that was never versioned
///   (<https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketVersioning.html>).
/// - GetObjectAcl: the owner `s3-balance` with FULL_CONTROL, the ACL of a private resource;
///   the engine answers it with the bucket's owner and ACL ([`crate::acl`]).
pub fn default_answer(answer: DefaultAnswer) -> String {
    match answer {
        DefaultAnswer::GetBucketVersioning => Writer::empty("VersioningConfiguration", true),
        DefaultAnswer::GetObjectAcl => {
            crate::acl::access_control_policy(OWNER_ID, crate::acl::CannedAcl::Private)
        }
    }
}

/// InitiateMultipartUploadResult to the client.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_CreateMultipartUpload.html>
pub fn initiate_multipart_result(bucket: &str, key: &str, upload_id: &str) -> String {
    let mut d = Writer::new("InitiateMultipartUploadResult", true);
    d.el("Bucket", bucket)
        .el("Key", key)
        .el("UploadId", upload_id);
    d.finish("InitiateMultipartUploadResult")
}

/// The CompleteMultipartUpload body sent to the backend.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_CompleteMultipartUpload.html>
pub fn complete_multipart(parts: &[CompletedPart]) -> String {
    let mut d = Writer::new("CompleteMultipartUpload", true);
    for p in parts {
        d.open("Part")
            .el("PartNumber", &p.part_number.to_string())
            .el("ETag", &p.etag);
        for (name, value) in &p.checksums {
            d.el(name, value);
        }
        d.close("Part");
    }
    d.finish("CompleteMultipartUpload")
}

/// CompleteMultipartUploadResult to the client.
pub fn complete_multipart_result(location: &str, bucket: &str, key: &str, etag: &str) -> String {
    let mut d = Writer::new("CompleteMultipartUploadResult", true);
    d.el("Location", location)
        .el("Bucket", bucket)
        .el("Key", key)
        .el("ETag", etag);
    d.finish("CompleteMultipartUploadResult")
}

/// DeleteResult: quiet mode lists only failures.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObjects.html>
pub fn delete_result(outcomes: &[DeleteOutcome], quiet: bool) -> String {
    let mut d = Writer::new("DeleteResult", true);
    for o in outcomes {
        match o {
            DeleteOutcome::Deleted { key } => {
                if !quiet {
                    d.open("Deleted").el("Key", key).close("Deleted");
                }
            }
            DeleteOutcome::Failed { key, code, message } => {
                d.open("Error")
                    .el("Key", key)
                    .el("Code", code)
                    .el("Message", message)
                    .close("Error");
            }
        }
    }
    d.finish("DeleteResult")
}

/// CopyObjectResult to the client.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html>
pub fn copy_object_result(etag: &str, last_modified: SystemTime) -> String {
    copy_result("CopyObjectResult", etag, last_modified)
}

/// CopyPartResult to the client.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_UploadPartCopy.html>
pub fn copy_part_result(etag: &str, last_modified: SystemTime) -> String {
    copy_result("CopyPartResult", etag, last_modified)
}

fn copy_result(root: &str, etag: &str, last_modified: SystemTime) -> String {
    let mut d = Writer::new(root, true);
    d.el("LastModified", &iso8601(last_modified))
        .el("ETag", etag);
    d.finish(root)
}

/// ListPartsResult to the client, with the client's bucket, key and UploadId.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListParts.html>
pub fn list_parts_result(bucket: &str, key: &str, upload_id: &str, page: &PartsPage) -> String {
    let mut d = Writer::new("ListPartsResult", true);
    d.el("Bucket", bucket)
        .el("Key", key)
        .el("UploadId", upload_id);
    d.owner("Initiator")
        .owner("Owner")
        .el("StorageClass", "STANDARD");
    d.el("PartNumberMarker", &page.part_number_marker.to_string());
    if let Some(next) = page.next_part_number_marker {
        d.el("NextPartNumberMarker", &next.to_string());
    }
    d.el("MaxParts", &page.max_parts.to_string());
    d.el("IsTruncated", if page.truncated { "true" } else { "false" });
    for p in &page.parts {
        d.open("Part")
            .el("PartNumber", &p.part_number.to_string())
            .el("LastModified", &iso8601(p.last_modified))
            .el("ETag", &p.etag)
            .el("Size", &p.size.to_string())
            .close("Part");
    }
    d.finish("ListPartsResult")
}

// ---------------------------------------------------------------------------------------------
// Reading

fn malformed() -> S3Error {
    S3Error::new(
        S3ErrorCode::MalformedXML,
        "The XML you provided was not well-formed or did not validate against our published schema",
    )
}

/// A client's body: its root, which must be `root`.
fn client_root(xml: &[u8], root: &str) -> Result<Element, S3Error> {
    parse(xml)
        .ok()
        .filter(|el| el.name == root)
        .ok_or_else(malformed)
}

/// A backend's answer that cannot be understood (logged with `why`): the client is not at
/// fault.
pub(crate) fn bad_backend_answer(why: &str) -> S3Error {
    tracing::error!(why, "backend answer unreadable");
    S3Error::internal()
}

/// A backend's answer: its root, which must be one of `roots` (or an `<Error>` that is returned
/// as that error, for the 200 answers that carry one).
fn backend_root(xml: &[u8], roots: &[&str]) -> Result<Element, S3Error> {
    let el = parse(xml).map_err(|e| bad_backend_answer(&format!("{}: {e}", roots[0])))?;
    if el.name == "Error" {
        let code = el.text_of("Code").unwrap_or_default();
        let message = el.text_of("Message").unwrap_or_default();
        return Err(backend_error(code, message));
    }
    // Some implementations (moto) name the root `...Response` instead of `...Result`.
    let name = el
        .name
        .strip_suffix("Response")
        .map(|n| format!("{n}Result"));
    if roots.contains(&el.name.as_str()) || name.is_some_and(|n| roots.contains(&n.as_str())) {
        Ok(el)
    } else {
        Err(bad_backend_answer(&format!(
            "expected {}, got root element {}",
            roots[0], el.name
        )))
    }
}

/// The error to give the client for an error a backend answered.
///
/// Codes about the request itself (`InvalidPart`, `EntityTooSmall`, `NoSuchUpload` ...) pass
/// through with the backend's message. Server-side codes keep their code with a generic
/// message, so retrying clients back off; authentication failures (the gateway's own
/// credentials for the backend) and unknown codes are `InternalError`: the client can do
/// nothing about them and must not see the backend's details.
pub fn backend_error(code: &str, message: &str) -> S3Error {
    use S3ErrorCode::*;
    let Some(known) = S3ErrorCode::parse(code) else {
        return S3Error::internal();
    };
    match known {
        AccessDenied
        | AuthorizationHeaderMalformed
        | AuthorizationQueryParametersError
        | ExpiredToken
        | InvalidAccessKeyId
        | RequestTimeTooSkewed
        | SignatureDoesNotMatch
        | InternalError => S3Error::internal(),
        SlowDown => S3Error::new(SlowDown, "Please reduce your request rate."),
        ServiceUnavailable => S3Error::unavailable("Please reduce your request rate."),
        c if c.status() >= 500 => S3Error::new(c, "The backend could not complete the request."),
        c => S3Error::new(c, message),
    }
}

/// Parses a backend's error body: `(Code, Message)`. `None` when it is not one.
pub fn parse_error(xml: &[u8]) -> Option<(String, String)> {
    let el = parse(xml).ok().filter(|el| el.name == "Error")?;
    let code = el.text_of("Code").filter(|c| !c.is_empty())?;
    Some((
        code.to_owned(),
        el.text_of("Message").unwrap_or_default().to_owned(),
    ))
}

/// The UploadId of a backend's InitiateMultipartUploadResult.
pub fn parse_initiate_multipart_result(xml: &[u8]) -> Result<String, S3Error> {
    let el = backend_root(xml, &["InitiateMultipartUploadResult"])?;
    required_text(&el, "UploadId").map(str::to_owned)
}

/// The trimmed, non-empty text of `el`'s child `name` in a backend's answer.
fn required_text<'e>(el: &'e Element, name: &str) -> Result<&'e str, S3Error> {
    el.text_of(name)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad_backend_answer(&format!("{} without {name}", el.name)))
}

/// One part of a CompleteMultipartUpload request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    pub part_number: u32,
    pub etag: String,
    /// `(element name, value)` of any `Checksum*` elements, passed through.
    pub checksums: Vec<(String, String)>,
}

/// The checksum elements of a CompletedPart, passed through to the backend. Only these: the
/// element name is written back as it came, and the reader does not check names (fuzzing found
/// `<ChecksumCRC((x<aP/>` passed on as an element name, which made the backend's body
/// malformed); any other element is ignored, as S3 does.
const PART_CHECKSUMS: [&str; 5] = [
    "ChecksumCRC32",
    "ChecksumCRC32C",
    "ChecksumCRC64NVME",
    "ChecksumSHA1",
    "ChecksumSHA256",
];

/// Parses a client's CompleteMultipartUpload body (`MalformedXML`, `InvalidPartOrder`).
///
/// Part numbers must be 1..=10000 (`InvalidArgument`) and strictly ascending
/// (`InvalidPartOrder`); a part without PartNumber or ETag, or no part at all, is
/// `MalformedXML`. <https://docs.aws.amazon.com/AmazonS3/latest/API/API_CompleteMultipartUpload.html>
pub fn parse_complete_multipart(xml: &[u8]) -> Result<Vec<CompletedPart>, S3Error> {
    let root = client_root(xml, "CompleteMultipartUpload")?;
    let mut parts: Vec<CompletedPart> = Vec::new();
    for part in root.all("Part") {
        let number: u64 = part
            .text_of("PartNumber")
            .and_then(|n| n.parse().ok())
            .ok_or_else(malformed)?;
        let part_number = u32::try_from(number)
            .ok()
            .filter(|n| (1..=crate::route::MAX_PART_NUMBER).contains(n))
            .ok_or_else(|| {
                S3Error::invalid_argument(
                    "Part number must be an integer between 1 and 10000, inclusive",
                )
            })?;
        let etag = part
            .text_of("ETag")
            .filter(|e| !e.is_empty())
            .ok_or_else(malformed)?;
        let checksums = part
            .children
            .iter()
            .filter(|c| PART_CHECKSUMS.contains(&c.name.as_str()))
            .map(|c| (c.name.clone(), c.text.trim().to_owned()))
            .collect();
        if parts
            .last()
            .is_some_and(|last| last.part_number >= part_number)
        {
            return Err(S3Error::new(
                S3ErrorCode::InvalidPartOrder,
                "The list of parts was not in ascending order. The parts list must be specified in order by part number.",
            ));
        }
        parts.push(CompletedPart {
            part_number,
            etag: etag.to_owned(),
            checksums,
        });
    }
    if parts.is_empty() {
        return Err(malformed());
    }
    Ok(parts)
}

/// The ETag of a backend's CompleteMultipartUploadResult. A 200 answer carrying an `<Error>`
/// (S3 does that) is returned as that error, see [`backend_error`]. Leading whitespace (S3's
/// keep-alive while it assembles the parts) is ignored.
pub fn parse_complete_multipart_result(xml: &[u8]) -> Result<String, S3Error> {
    let el = backend_root(xml, &["CompleteMultipartUploadResult"])?;
    required_text(&el, "ETag").map(str::to_owned)
}

/// A DeleteObjects request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    pub quiet: bool,
    pub keys: Vec<String>,
}

/// Parses a DeleteObjects body: `MalformedXML` past 1000 keys or when malformed.
///
/// Keys keep their exact text (leading and trailing spaces are part of a key); `VersionId` is
/// ignored, as the gateway's buckets are unversioned.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObjects.html>
pub fn parse_delete_objects(xml: &[u8]) -> Result<DeleteRequest, S3Error> {
    let root = client_root(xml, "Delete")?;
    let quiet = match root.text_of("Quiet") {
        None => false,
        Some(q) if q.eq_ignore_ascii_case("true") => true,
        Some(q) if q.eq_ignore_ascii_case("false") => false,
        Some(_) => return Err(malformed()),
    };
    let mut keys = Vec::new();
    for object in root.all("Object") {
        let key = object
            .child("Key")
            .map(|k| k.text.as_str())
            .filter(|k| !k.is_empty());
        keys.push(key.ok_or_else(malformed)?.to_owned());
        if keys.len() > MAX_DELETE_KEYS {
            return Err(malformed());
        }
    }
    if keys.is_empty() {
        return Err(malformed());
    }
    Ok(DeleteRequest { quiet, keys })
}

/// The outcome of one key of a DeleteObjects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted {
        key: String,
    },
    Failed {
        key: String,
        code: String,
        message: String,
    },
}

/// The DeleteObjects body sent to a backend. Not quiet, so that the answer accounts for every
/// key (see [`account_deletes`]).
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObjects.html>
pub fn delete_objects(request: &DeleteRequest) -> String {
    let mut d = Writer::new("Delete", true);
    if request.quiet {
        d.el("Quiet", "true");
    }
    for key in &request.keys {
        d.open("Object").el("Key", key).close("Object");
    }
    d.finish("Delete")
}

/// Parses a backend's DeleteResult: every `<Deleted>` and `<Error>` entry, in order. An answer
/// that is not a DeleteResult, or an entry without its Key (or an `<Error>` without its Code),
/// is an error, never an empty result.
pub fn parse_delete_result(xml: &[u8]) -> Result<Vec<DeleteOutcome>, S3Error> {
    let el = backend_root(xml, &["DeleteResult"])?;
    let mut outcomes = Vec::new();
    for entry in &el.children {
        let key = || {
            entry
                .raw_text_of("Key")
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| {
                    bad_backend_answer(&format!("DeleteResult: {} without Key", entry.name))
                })
        };
        match entry.name.as_str() {
            "Deleted" => outcomes.push(DeleteOutcome::Deleted { key: key()? }),
            "Error" => outcomes.push(DeleteOutcome::Failed {
                key: key()?,
                code: required_text(entry, "Code")?.to_owned(),
                message: entry.text_of("Message").unwrap_or_default().to_owned(),
            }),
            _ => {}
        }
    }
    Ok(outcomes)
}

/// What a backend's DeleteResult says of each key `sent` to it, in the order sent: `None`
/// when deleted, else the `(code, message)` it failed with. A key the answer does not
/// account for failed (`InternalError`, logged): the gateway cannot tell whether it is gone.
/// Keys the answer names that were not sent are ignored.
pub fn account_deletes(sent: &[String], answer: &[DeleteOutcome]) -> Vec<Option<(String, String)>> {
    let mut by_key: std::collections::HashMap<&str, &DeleteOutcome> =
        std::collections::HashMap::with_capacity(answer.len());
    for outcome in answer {
        let key = match outcome {
            DeleteOutcome::Deleted { key } | DeleteOutcome::Failed { key, .. } => key.as_str(),
        };
        // A failure wins over a success for the same key.
        if !matches!(by_key.get(key), Some(DeleteOutcome::Failed { .. })) {
            by_key.insert(key, outcome);
        }
    }
    sent.iter()
        .map(|key| match by_key.get(key.as_str()) {
            Some(DeleteOutcome::Deleted { .. }) => None,
            Some(DeleteOutcome::Failed { code, message, .. }) => {
                Some((code.clone(), message.clone()))
            }
            None => {
                let e = bad_backend_answer(&format!("DeleteResult does not account for {key:?}"));
                Some((e.code.as_str().to_owned(), e.message))
            }
        })
        .collect()
}

/// `(ETag, LastModified)` of a backend's CopyObjectResult or CopyPartResult.
pub fn parse_copy_result(xml: &[u8]) -> Result<(String, SystemTime), S3Error> {
    let el = backend_root(xml, &["CopyObjectResult", "CopyPartResult"])?;
    let etag = required_text(&el, "ETag")?;
    let modified = el
        .text_of("LastModified")
        .and_then(parse_iso8601)
        .ok_or_else(|| bad_backend_answer("CopyObjectResult without a LastModified date"))?;
    Ok((etag.to_owned(), modified))
}

/// A part as a backend's ListPartsResult lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartEntry {
    pub part_number: u32,
    pub etag: String,
    pub size: u64,
    pub last_modified: SystemTime,
}

/// The parts page of a backend's ListPartsResult.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartsPage {
    pub parts: Vec<PartEntry>,
    pub part_number_marker: u32,
    pub next_part_number_marker: Option<u32>,
    pub max_parts: u32,
    pub truncated: bool,
}

/// Parses a backend's ListPartsResult. Missing or empty markers read as absent (some
/// S3-compatible stores send `<PartNumberMarker/>`), a missing MaxParts as S3's default 1000.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListParts.html>
pub fn parse_list_parts(xml: &[u8]) -> Result<PartsPage, S3Error> {
    let el = backend_root(xml, &["ListPartsResult"])?;
    fn number<T: std::str::FromStr>(el: &Element, name: &str) -> Result<Option<T>, S3Error> {
        match el.text_of(name) {
            None | Some("") => Ok(None),
            Some(t) => t
                .parse()
                .map(Some)
                .map_err(|_| bad_backend_answer(&format!("ListPartsResult: bad {name} {t:?}"))),
        }
    }
    let truncated = match el.text_of("IsTruncated") {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(bad_backend_answer("ListPartsResult: bad IsTruncated")),
    };
    let mut parts = Vec::new();
    for p in el.all("Part") {
        parts.push(PartEntry {
            part_number: number(p, "PartNumber")?
                .ok_or_else(|| bad_backend_answer("ListPartsResult: Part without PartNumber"))?,
            // s3s-fs lists parts without their ETag; a missing one is not fatal.
            etag: p.text_of("ETag").unwrap_or_default().to_owned(),
            size: number(p, "Size")?
                .ok_or_else(|| bad_backend_answer("ListPartsResult: Part without Size"))?,
            last_modified: p
                .text_of("LastModified")
                .and_then(parse_iso8601)
                .ok_or_else(|| {
                    bad_backend_answer("ListPartsResult: Part without a LastModified date")
                })?,
        });
    }
    Ok(PartsPage {
        parts,
        part_number_marker: number(&el, "PartNumberMarker")?.unwrap_or(0),
        next_part_number_marker: number(&el, "NextPartNumberMarker")?,
        max_parts: number(&el, "MaxParts")?.unwrap_or(1000),
        truncated,
    })
}

#[cfg(test)]
mod tests;
