//! XML bodies: AWS's error body, the answers the gateway builds, the requests it reads
//! (DeleteObjects, CompleteMultipartUpload) and the backend answers it must rewrite.
//! Written with quick-xml; every renderer has an exact-string test.
//!
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html>
//!
//! Conventions:
//! - Every body starts with `<?xml version="1.0" encoding="UTF-8"?>` and a newline; response
//!   roots carry `xmlns="http://s3.amazonaws.com/doc/2006-03-01/"` as AWS's do, except
//!   `<Error>`, which AWS sends without a namespace.
//! - The gateway has no AWS account: the owner of every bucket, ACL, upload and part listing
//!   is the fixed canonical user [`OWNER_ID`] (`s3-balance`, also the display name).
//! - Parsers read with `quick_xml::Reader` into a small element tree, match elements by local
//!   name (any namespace prefix is ignored), and tolerate whitespace and comments. A client's
//!   body that is not well-formed is `MalformedXML`; a backend's answer that cannot be read is
//!   `InternalError` (the client did nothing wrong).

use std::time::SystemTime;

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::error::{S3Error, S3ErrorCode};
use crate::route::DefaultAnswer;
use crate::time::{iso8601, parse_iso8601};

/// The S3 namespace AWS puts on response roots.
pub const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
/// Owner ID and display name the gateway answers for everything it owns.
pub const OWNER_ID: &str = "s3-balance";
/// Most keys a DeleteObjects request may name.
pub const MAX_DELETE_KEYS: usize = 1000;

const PROLOG: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
/// Deeper than any S3 body; bounds the tree (and its recursive drop) on hostile input.
const MAX_DEPTH: usize = 32;

// ---------------------------------------------------------------------------------------------
// Writing

/// A body under construction: prolog, then elements written in order.
struct Doc(String);

impl Doc {
    /// Starts a body with `root` open; `ns` adds the S3 namespace.
    fn new(root: &str, ns: bool) -> Doc {
        let mut s = String::with_capacity(256);
        s.push_str(PROLOG);
        s.push('<');
        s.push_str(root);
        if ns {
            s.push_str(" xmlns=\"");
            s.push_str(S3_NS);
            s.push('"');
        }
        s.push('>');
        Doc(s)
    }

    fn open(&mut self, name: &str) -> &mut Self {
        self.0.push('<');
        self.0.push_str(name);
        self.0.push('>');
        self
    }

    fn close(&mut self, name: &str) -> &mut Self {
        self.0.push_str("</");
        self.0.push_str(name);
        self.0.push('>');
        self
    }

    /// `<name>text</name>`, text escaped.
    fn el(&mut self, name: &str, text: &str) -> &mut Self {
        self.open(name);
        self.0.push_str(&escape(text));
        self.close(name)
    }

    fn owner(&mut self, element: &str) -> &mut Self {
        self.open(element)
            .el("ID", OWNER_ID)
            .el("DisplayName", OWNER_ID)
            .close(element)
    }

    fn finish(mut self, root: &str) -> String {
        self.close(root);
        self.0
    }
}

/// Escapes text for an XML element (or a double- or single-quoted attribute): `& < > " '`,
/// and `\r`, which a parser would otherwise turn into `\n`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

/// `<?xml ...?><Error><Code/><Message/><Resource/><RequestId/></Error>`; the same RequestId
/// goes in the `x-amz-request-id` header.
pub fn error_body(error: &S3Error, request_id: &str) -> String {
    let mut d = Doc::new("Error", false);
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
pub fn list_buckets(buckets: &[(String, SystemTime)]) -> String {
    let mut d = Doc::new("ListAllMyBucketsResult", true);
    d.open("Buckets");
    for (name, created) in buckets {
        d.open("Bucket")
            .el("Name", name)
            .el("CreationDate", &iso8601(*created))
            .close("Bucket");
    }
    d.close("Buckets").owner("Owner");
    d.finish("ListAllMyBucketsResult")
}

/// LocationConstraint (empty for us-east-1, as S3 answers).
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketLocation.html>
pub fn bucket_location(region: &str) -> String {
    if region.is_empty() || region == "us-east-1" {
        format!("{PROLOG}<LocationConstraint xmlns=\"{S3_NS}\"/>")
    } else {
        format!(
            "{PROLOG}<LocationConstraint xmlns=\"{S3_NS}\">{}</LocationConstraint>",
            escape(region)
        )
    }
}

/// The body of a default answer (unversioned, private).
///
/// - GetBucketVersioning: the empty configuration of a bucket that was never versioned
///   (<https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketVersioning.html>).
/// - GetBucketAcl / GetObjectAcl: the owner `s3-balance` with FULL_CONTROL, the ACL of a
///   private resource (<https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketAcl.html>).
pub fn default_answer(answer: DefaultAnswer) -> String {
    match answer {
        DefaultAnswer::GetBucketVersioning => {
            format!("{PROLOG}<VersioningConfiguration xmlns=\"{S3_NS}\"/>")
        }
        DefaultAnswer::GetBucketAcl | DefaultAnswer::GetObjectAcl => {
            let mut d = Doc::new("AccessControlPolicy", true);
            d.owner("Owner").open("AccessControlList").open("Grant");
            d.0.push_str(
                "<Grantee xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
                 xsi:type=\"CanonicalUser\">",
            );
            d.el("ID", OWNER_ID)
                .el("DisplayName", OWNER_ID)
                .close("Grantee");
            d.el("Permission", "FULL_CONTROL")
                .close("Grant")
                .close("AccessControlList");
            d.finish("AccessControlPolicy")
        }
    }
}

/// InitiateMultipartUploadResult to the client.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_CreateMultipartUpload.html>
pub fn initiate_multipart_result(bucket: &str, key: &str, upload_id: &str) -> String {
    let mut d = Doc::new("InitiateMultipartUploadResult", true);
    d.el("Bucket", bucket)
        .el("Key", key)
        .el("UploadId", upload_id);
    d.finish("InitiateMultipartUploadResult")
}

/// The CompleteMultipartUpload body sent to the backend.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_CompleteMultipartUpload.html>
pub fn complete_multipart(parts: &[CompletedPart]) -> String {
    let mut d = Doc::new("CompleteMultipartUpload", true);
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
    let mut d = Doc::new("CompleteMultipartUploadResult", true);
    d.el("Location", location)
        .el("Bucket", bucket)
        .el("Key", key)
        .el("ETag", etag);
    d.finish("CompleteMultipartUploadResult")
}

/// DeleteResult: quiet mode lists only failures.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObjects.html>
pub fn delete_result(outcomes: &[DeleteOutcome], quiet: bool) -> String {
    let mut d = Doc::new("DeleteResult", true);
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
    let mut d = Doc::new(root, true);
    d.el("LastModified", &iso8601(last_modified))
        .el("ETag", etag);
    d.finish(root)
}

/// ListPartsResult to the client, with the client's bucket, key and UploadId.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListParts.html>
pub fn list_parts_result(bucket: &str, key: &str, upload_id: &str, page: &PartsPage) -> String {
    let mut d = Doc::new("ListPartsResult", true);
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

/// One element: local name, its elements and its text (concatenated, untrimmed).
#[derive(Debug, Default)]
struct El {
    name: String,
    children: Vec<El>,
    text: String,
}

impl El {
    fn child(&self, name: &str) -> Option<&El> {
        self.children.iter().find(|c| c.name == name)
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a El> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The trimmed text of the first child `name`.
    fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }
}

/// Reads a whole document into its root element; `None` when it is not well-formed XML.
fn parse_tree(xml: &[u8]) -> Option<El> {
    let mut reader = Reader::from_reader(xml);
    let mut stack: Vec<El> = Vec::new();
    let mut root: Option<El> = None;
    fn element(e: &quick_xml::events::BytesStart<'_>) -> Option<El> {
        // Reading every attribute is what makes quick-xml check their syntax.
        for attr in e.attributes() {
            attr.ok()?;
        }
        let name = std::str::from_utf8(e.local_name().into_inner()).ok()?;
        Some(El {
            name: name.to_owned(),
            ..El::default()
        })
    }
    fn attach(stack: &mut [El], root: &mut Option<El>, el: El) -> Option<()> {
        match stack.last_mut() {
            Some(parent) => parent.children.push(el),
            None if root.is_none() => *root = Some(el),
            None => return None, // a second root element
        }
        Some(())
    }
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH || (stack.is_empty() && root.is_some()) {
                    return None;
                }
                stack.push(element(&e)?);
            }
            Event::Empty(e) => {
                if stack.len() >= MAX_DEPTH {
                    return None;
                }
                let el = element(&e)?;
                attach(&mut stack, &mut root, el)?;
            }
            Event::End(_) => {
                // quick-xml has checked that the name matches the open element.
                let el = stack.pop()?;
                attach(&mut stack, &mut root, el)?;
            }
            Event::Text(t) => {
                let text = t.unescape().ok()?;
                match stack.last_mut() {
                    Some(top) => top.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return None,
                }
            }
            Event::CData(c) => {
                let text = std::str::from_utf8(&c).ok()?;
                stack.last_mut()?.text.push_str(text);
            }
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            // No DTDs: nothing S3 sends or accepts has one, and they only bring entity tricks.
            Event::DocType(_) => return None,
            Event::Eof => {
                return if stack.is_empty() { root } else { None };
            }
        }
    }
}

fn malformed() -> S3Error {
    S3Error::new(
        S3ErrorCode::MalformedXML,
        "The XML you provided was not well-formed or did not validate against our published schema",
    )
}

/// A client's body: its root, which must be `root`.
fn client_root(xml: &[u8], root: &str) -> Result<El, S3Error> {
    parse_tree(xml)
        .filter(|el| el.name == root)
        .ok_or_else(malformed)
}

/// A backend's answer that cannot be understood: the client is not at fault.
fn bad_backend_answer() -> S3Error {
    S3Error::internal()
}

/// A backend's answer: its root, which must be one of `roots` (or an `<Error>` that is returned
/// as that error, for the 200 answers that carry one).
fn backend_root(xml: &[u8], roots: &[&str]) -> Result<El, S3Error> {
    let el = parse_tree(xml).ok_or_else(bad_backend_answer)?;
    if el.name == "Error" {
        let code = el.text_of("Code").unwrap_or_default();
        let message = el.text_of("Message").unwrap_or_default();
        return Err(backend_error(code, message));
    }
    if roots.contains(&el.name.as_str()) {
        Ok(el)
    } else {
        Err(bad_backend_answer())
    }
}

const ALL_CODES: &[S3ErrorCode] = {
    use S3ErrorCode::*;
    &[
        AccessDenied,
        AuthorizationHeaderMalformed,
        AuthorizationQueryParametersError,
        BadDigest,
        BucketAlreadyExists,
        BucketAlreadyOwnedByYou,
        BucketNotEmpty,
        EntityTooLarge,
        EntityTooSmall,
        ExpiredToken,
        IncompleteBody,
        InsufficientStorage,
        InternalError,
        InvalidAccessKeyId,
        InvalidArgument,
        InvalidBucketName,
        InvalidDigest,
        InvalidPart,
        InvalidPartOrder,
        InvalidRange,
        InvalidRequest,
        InvalidStorageClass,
        InvalidURI,
        KeyTooLongError,
        MalformedXML,
        MethodNotAllowed,
        MissingContentLength,
        NoSuchBucket,
        NoSuchKey,
        NoSuchUpload,
        NotImplemented,
        NotModified,
        PreconditionFailed,
        RequestTimeTooSkewed,
        ServiceUnavailable,
        SignatureDoesNotMatch,
        SlowDown,
        XAmzContentSHA256Mismatch,
    ]
};

/// The error to give the client for an error a backend answered.
///
/// Codes about the request itself (`InvalidPart`, `EntityTooSmall`, `NoSuchUpload` ...) pass
/// through with the backend's message. Server-side codes keep their code with a generic
/// message, so retrying clients back off; authentication failures (the gateway's own
/// credentials for the backend) and unknown codes are `InternalError`: the client can do
/// nothing about them and must not see the backend's details.
pub fn backend_error(code: &str, message: &str) -> S3Error {
    use S3ErrorCode::*;
    let Some(&known) = ALL_CODES.iter().find(|c| c.as_str() == code) else {
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
    let el = parse_tree(xml).filter(|el| el.name == "Error")?;
    let code = el.text_of("Code").filter(|c| !c.is_empty())?;
    Some((
        code.to_owned(),
        el.text_of("Message").unwrap_or_default().to_owned(),
    ))
}

/// The UploadId of a backend's InitiateMultipartUploadResult.
pub fn parse_initiate_multipart_result(xml: &[u8]) -> Result<String, S3Error> {
    let el = backend_root(xml, &["InitiateMultipartUploadResult"])?;
    match el.text_of("UploadId") {
        Some(id) if !id.is_empty() => Ok(id.to_owned()),
        _ => Err(bad_backend_answer()),
    }
}

/// One part of a CompleteMultipartUpload request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    pub part_number: u32,
    pub etag: String,
    /// `(element name, value)` of any `Checksum*` elements, passed through.
    pub checksums: Vec<(String, String)>,
}

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
            .filter(|c| c.name.starts_with("Checksum"))
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
    match el.text_of("ETag") {
        Some(etag) if !etag.is_empty() => Ok(etag.to_owned()),
        _ => Err(bad_backend_answer()),
    }
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

/// `(ETag, LastModified)` of a backend's CopyObjectResult or CopyPartResult.
pub fn parse_copy_result(xml: &[u8]) -> Result<(String, SystemTime), S3Error> {
    let el = backend_root(xml, &["CopyObjectResult", "CopyPartResult"])?;
    let etag = el
        .text_of("ETag")
        .filter(|e| !e.is_empty())
        .ok_or_else(bad_backend_answer)?;
    let modified = el
        .text_of("LastModified")
        .and_then(parse_iso8601)
        .ok_or_else(bad_backend_answer)?;
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
    fn number<T: std::str::FromStr>(el: &El, name: &str) -> Result<Option<T>, S3Error> {
        match el.text_of(name) {
            None | Some("") => Ok(None),
            Some(t) => t.parse().map(Some).map_err(|_| bad_backend_answer()),
        }
    }
    let truncated = match el.text_of("IsTruncated") {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(bad_backend_answer()),
    };
    let mut parts = Vec::new();
    for p in el.all("Part") {
        parts.push(PartEntry {
            part_number: number(p, "PartNumber")?.ok_or_else(bad_backend_answer)?,
            etag: p.text_of("ETag").ok_or_else(bad_backend_answer)?.to_owned(),
            size: number(p, "Size")?.ok_or_else(bad_backend_answer)?,
            last_modified: p
                .text_of("LastModified")
                .and_then(parse_iso8601)
                .ok_or_else(bad_backend_answer)?,
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
mod tests {
    use super::*;
    use crate::time::from_unix_secs;
    use proptest::prelude::*;

    const P: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
    const NS: &str = "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"";
    /// 2009-10-12T17:50:30.000Z
    fn t0() -> SystemTime {
        from_unix_secs(1_255_369_830)
    }

    fn code(r: Result<impl std::fmt::Debug, S3Error>) -> S3ErrorCode {
        r.expect_err("must fail").code
    }

    #[test]
    fn escapes_the_five_and_carriage_return() {
        assert_eq!(escape(r#"a&b<c>d"e'f"#), "a&amp;b&lt;c&gt;d&quot;e&apos;f");
        assert_eq!(escape("x\ry\nz\té"), "x&#13;y\nz\té");
        assert_eq!(escape(""), "");
        assert_eq!(escape("&amp;"), "&amp;amp;");
    }

    #[test]
    fn error_body_exact() {
        let e = S3Error::no_such_key("photos/2006/<February>.jpg");
        assert_eq!(
            error_body(&e, "4442587FB7D0A2F9"),
            format!("{P}<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Resource>photos/2006/&lt;February&gt;.jpg</Resource><RequestId>4442587FB7D0A2F9</RequestId></Error>")
        );
        let e = S3Error::new(S3ErrorCode::SlowDown, "Please reduce your request rate.");
        assert_eq!(
            error_body(&e, "r1"),
            format!("{P}<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>r1</RequestId></Error>")
        );
    }

    #[test]
    fn list_buckets_exact() {
        let owner = "<Owner><ID>s3-balance</ID><DisplayName>s3-balance</DisplayName></Owner>";
        assert_eq!(
            list_buckets(&[]),
            format!("{P}<ListAllMyBucketsResult {NS}><Buckets></Buckets>{owner}</ListAllMyBucketsResult>")
        );
        let buckets = vec![
            ("photos".to_string(), t0()),
            ("a&b".to_string(), from_unix_secs(0)),
        ];
        assert_eq!(
            list_buckets(&buckets),
            format!(
                "{P}<ListAllMyBucketsResult {NS}><Buckets>\
                 <Bucket><Name>photos</Name><CreationDate>2009-10-12T17:50:30.000Z</CreationDate></Bucket>\
                 <Bucket><Name>a&amp;b</Name><CreationDate>1970-01-01T00:00:00.000Z</CreationDate></Bucket>\
                 </Buckets>{owner}</ListAllMyBucketsResult>"
            )
        );
    }

    #[test]
    fn bucket_location_exact() {
        assert_eq!(
            bucket_location("us-east-1"),
            format!("{P}<LocationConstraint {NS}/>")
        );
        assert_eq!(
            bucket_location(""),
            format!("{P}<LocationConstraint {NS}/>")
        );
        assert_eq!(
            bucket_location("eu-west-1"),
            format!("{P}<LocationConstraint {NS}>eu-west-1</LocationConstraint>")
        );
    }

    #[test]
    fn default_answers_exact() {
        assert_eq!(
            default_answer(DefaultAnswer::GetBucketVersioning),
            format!("{P}<VersioningConfiguration {NS}/>")
        );
        let acl = format!(
            "{P}<AccessControlPolicy {NS}><Owner><ID>s3-balance</ID><DisplayName>s3-balance</DisplayName></Owner>\
             <AccessControlList><Grant><Grantee xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"CanonicalUser\">\
             <ID>s3-balance</ID><DisplayName>s3-balance</DisplayName></Grantee><Permission>FULL_CONTROL</Permission></Grant>\
             </AccessControlList></AccessControlPolicy>"
        );
        assert_eq!(default_answer(DefaultAnswer::GetBucketAcl), acl);
        assert_eq!(default_answer(DefaultAnswer::GetObjectAcl), acl);
        // Well-formed, with the namespace-prefixed attribute.
        assert_eq!(
            parse_tree(acl.as_bytes()).unwrap().name,
            "AccessControlPolicy"
        );
    }

    #[test]
    fn initiate_multipart_exact_and_parsed() {
        let body = initiate_multipart_result("example-bucket", "a <b>.txt", "VXBsb2Fk-_");
        assert_eq!(
            body,
            format!("{P}<InitiateMultipartUploadResult {NS}><Bucket>example-bucket</Bucket><Key>a &lt;b&gt;.txt</Key><UploadId>VXBsb2Fk-_</UploadId></InitiateMultipartUploadResult>")
        );
        assert_eq!(
            parse_initiate_multipart_result(body.as_bytes()).unwrap(),
            "VXBsb2Fk-_"
        );
    }

    #[test]
    fn parses_aws_initiate_sample() {
        // From the CreateMultipartUpload API reference.
        let aws = br#"<?xml version="1.0" encoding="UTF-8"?>
<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>example-bucket</Bucket>
  <Key>example-object</Key>
  <UploadId>VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA</UploadId>
</InitiateMultipartUploadResult>"#;
        assert_eq!(
            parse_initiate_multipart_result(aws).unwrap(),
            "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA"
        );
        // B2/R2-style upload ids with `~` and a missing namespace.
        let b2 = b"<InitiateMultipartUploadResult><UploadId>2~iCw_lDY8V</UploadId></InitiateMultipartUploadResult>";
        assert_eq!(parse_initiate_multipart_result(b2).unwrap(), "2~iCw_lDY8V");
        assert_eq!(
            code(parse_initiate_multipart_result(
                b"<InitiateMultipartUploadResult><UploadId/></InitiateMultipartUploadResult>"
            )),
            S3ErrorCode::InternalError
        );
        assert_eq!(
            code(parse_initiate_multipart_result(b"<Other/>")),
            S3ErrorCode::InternalError
        );
        assert_eq!(
            code(parse_initiate_multipart_result(b"not xml")),
            S3ErrorCode::InternalError
        );
        let err = br#"<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>"#;
        assert_eq!(
            code(parse_initiate_multipart_result(err)),
            S3ErrorCode::NoSuchBucket
        );
    }

    fn part(n: u32, etag: &str) -> CompletedPart {
        CompletedPart {
            part_number: n,
            etag: etag.into(),
            checksums: vec![],
        }
    }

    #[test]
    fn parses_aws_complete_multipart_sample() {
        // From the CompleteMultipartUpload API reference.
        let aws = br#"<CompleteMultipartUpload>
  <Part>
    <PartNumber>1</PartNumber>
    <ETag>"a54357aff0632cce46d942af68356b38"</ETag>
  </Part>
  <Part>
    <PartNumber>2</PartNumber>
    <ETag>"0c78aef83f66abc1fa1e8477f296d394"</ETag>
  </Part>
  <Part>
    <PartNumber>3</PartNumber>
    <ETag>"acbd18db4cc2f85cedef654fccc4a4d8"</ETag>
  </Part>
</CompleteMultipartUpload>"#;
        assert_eq!(
            parse_complete_multipart(aws).unwrap(),
            vec![
                part(1, "\"a54357aff0632cce46d942af68356b38\""),
                part(2, "\"0c78aef83f66abc1fa1e8477f296d394\""),
                part(3, "\"acbd18db4cc2f85cedef654fccc4a4d8\""),
            ]
        );
    }

    #[test]
    fn parses_sdk_complete_multipart_with_checksums_and_namespace() {
        // As the AWS SDKs send it: namespace, ETag before PartNumber, escaped quotes, checksums.
        let sdk = br#"<?xml version="1.0" encoding="UTF-8"?><CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><ChecksumCRC32>AAAAAA==</ChecksumCRC32><ETag>&quot;e1&quot;</ETag><PartNumber>1</PartNumber></Part><Part><ETag>"e2"</ETag><ChecksumCRC32>BBBBBB==</ChecksumCRC32><PartNumber>5</PartNumber></Part></CompleteMultipartUpload>"#;
        let parts = parse_complete_multipart(sdk).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[0].part_number, parts[0].etag.as_str()),
            (1, "\"e1\"")
        );
        assert_eq!(
            parts[0].checksums,
            vec![("ChecksumCRC32".to_string(), "AAAAAA==".to_string())]
        );
        assert_eq!(
            (parts[1].part_number, parts[1].etag.as_str()),
            (5, "\"e2\"")
        );
        // A namespace prefix is ignored.
        let prefixed = br#"<s3:CompleteMultipartUpload xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/"><s3:Part><s3:PartNumber>1</s3:PartNumber><s3:ETag>x</s3:ETag></s3:Part></s3:CompleteMultipartUpload>"#;
        assert_eq!(
            parse_complete_multipart(prefixed).unwrap(),
            vec![part(1, "x")]
        );
    }

    #[test]
    fn complete_multipart_errors() {
        let body =
            |parts: &str| format!("<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>");
        let p = |n: &str| format!("<Part><PartNumber>{n}</PartNumber><ETag>e</ETag></Part>");
        let c = |s: String| code(parse_complete_multipart(s.as_bytes()));
        assert_eq!(c(body(&(p("2") + &p("1")))), S3ErrorCode::InvalidPartOrder);
        assert_eq!(c(body(&(p("1") + &p("1")))), S3ErrorCode::InvalidPartOrder);
        assert_eq!(c(body("")), S3ErrorCode::MalformedXML);
        assert_eq!(
            c("<CompleteMultipartUpload/>".into()),
            S3ErrorCode::MalformedXML
        );
        assert_eq!(c(body(&p("x"))), S3ErrorCode::MalformedXML);
        assert_eq!(c(body(&p(""))), S3ErrorCode::MalformedXML);
        assert_eq!(c(body(&p("0"))), S3ErrorCode::InvalidArgument);
        assert_eq!(c(body(&p("10001"))), S3ErrorCode::InvalidArgument);
        assert_eq!(c(body(&p("99999999999"))), S3ErrorCode::InvalidArgument);
        assert_eq!(
            c(body("<Part><PartNumber>1</PartNumber></Part>")),
            S3ErrorCode::MalformedXML
        );
        assert_eq!(
            c(body("<Part><PartNumber>1</PartNumber><ETag>e</ETag>")),
            S3ErrorCode::MalformedXML
        );
        assert_eq!(
            c("<Delete><Part><PartNumber>1</PartNumber><ETag>e</ETag></Part></Delete>".into()),
            S3ErrorCode::MalformedXML
        );
        assert_eq!(c("".into()), S3ErrorCode::MalformedXML);
        assert_eq!(c(body(&p("1")) + "<Extra/>"), S3ErrorCode::MalformedXML);
        assert_eq!(c(body(&p("1")) + "junk"), S3ErrorCode::MalformedXML);
        assert_eq!(
            c(format!("<!DOCTYPE x [<!ENTITY a \"b\">]>{}", body(&p("1")))),
            S3ErrorCode::MalformedXML
        );
        assert_eq!(
            c(body(
                "<Part><PartNumber>1</PartNumber><ETag>&bogus;</ETag></Part>"
            )),
            S3ErrorCode::MalformedXML
        );
        assert_eq!(
            c("<CompleteMultipartUpload a=\"1></CompleteMultipartUpload>".into()),
            S3ErrorCode::MalformedXML
        );
        let deep = "<a>".repeat(10_000) + &"</a>".repeat(10_000);
        assert_eq!(c(body(&deep)), S3ErrorCode::MalformedXML);
    }

    #[test]
    fn complete_multipart_exact_and_round_trip() {
        let parts = vec![
            CompletedPart {
                part_number: 1,
                etag: "\"e1\"".into(),
                checksums: vec![("ChecksumSHA256".into(), "q+w/=".into())],
            },
            part(2, "\"e2\""),
        ];
        let body = complete_multipart(&parts);
        assert_eq!(
            body,
            format!(
                "{P}<CompleteMultipartUpload {NS}>\
                 <Part><PartNumber>1</PartNumber><ETag>&quot;e1&quot;</ETag><ChecksumSHA256>q+w/=</ChecksumSHA256></Part>\
                 <Part><PartNumber>2</PartNumber><ETag>&quot;e2&quot;</ETag></Part>\
                 </CompleteMultipartUpload>"
            )
        );
        assert_eq!(parse_complete_multipart(body.as_bytes()).unwrap(), parts);
    }

    #[test]
    fn complete_multipart_result_exact_and_parsed() {
        let body = complete_multipart_result(
            "https://s3.example.com/b/k%20x",
            "b",
            "k x",
            "\"3858f62230ac3c915f300c664312c11f-9\"",
        );
        assert_eq!(
            body,
            format!(
                "{P}<CompleteMultipartUploadResult {NS}><Location>https://s3.example.com/b/k%20x</Location><Bucket>b</Bucket><Key>k x</Key><ETag>&quot;3858f62230ac3c915f300c664312c11f-9&quot;</ETag></CompleteMultipartUploadResult>"
            )
        );
        assert_eq!(
            parse_complete_multipart_result(body.as_bytes()).unwrap(),
            "\"3858f62230ac3c915f300c664312c11f-9\""
        );
    }

    #[test]
    fn parses_aws_complete_result_and_embedded_error() {
        // From the CompleteMultipartUpload API reference, after S3's keep-alive whitespace.
        let aws = format!(
            "{P}{}<CompleteMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">
 <Location>http://Example-Bucket.s3.<Region>.amazonaws.com/Example-Object</Location>
 <Bucket>Example-Bucket</Bucket>
 <Key>Example-Object</Key>
 <ETag>\"3858f62230ac3c915f300c664312c11f-9\"</ETag>
</CompleteMultipartUploadResult>",
            " \n".repeat(50)
        )
        .replace("<Region>", "us-west-2");
        assert_eq!(
            parse_complete_multipart_result(aws.as_bytes()).unwrap(),
            "\"3858f62230ac3c915f300c664312c11f-9\""
        );
        // The 200 answer that carries an error (sample of the same page).
        let err = format!(
            "{P}   \n<Error>
<Code>InternalError</Code>
<Message>We encountered an internal error. Please try again.</Message>
<RequestId>656c76696e6727732072657175657374</RequestId>
<HostId>Uuag1LuByRx9e6j5Onimru9pO4ZVKnJ2Qz7/C1NPcfTWAtRPfTaOFg==</HostId>
</Error>"
        );
        assert_eq!(
            code(parse_complete_multipart_result(err.as_bytes())),
            S3ErrorCode::InternalError
        );
        let bad_part = b"<Error><Code>InvalidPart</Code><Message>One or more of the specified parts could not be found.</Message></Error>";
        let e = parse_complete_multipart_result(bad_part).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                S3ErrorCode::InvalidPart,
                "One or more of the specified parts could not be found."
            )
        );
        assert_eq!(
            code(parse_complete_multipart_result(b"")),
            S3ErrorCode::InternalError
        );
        assert_eq!(code(parse_complete_multipart_result(b"<CompleteMultipartUploadResult><Bucket>b</Bucket></CompleteMultipartUploadResult>")), S3ErrorCode::InternalError);
    }

    #[test]
    fn backend_errors_do_not_leak_infrastructure() {
        let e = backend_error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match for key AKIA...",
        );
        assert_eq!(e, S3Error::internal());
        assert_eq!(
            backend_error("SomethingNew", "details"),
            S3Error::internal()
        );
        assert_eq!(backend_error("SlowDown", "x").code, S3ErrorCode::SlowDown);
        assert_eq!(
            backend_error("ServiceUnavailable", "x").code,
            S3ErrorCode::ServiceUnavailable
        );
        assert_eq!(
            backend_error("InsufficientStorage", "backend b1 full").message,
            "The backend could not complete the request."
        );
        let e = backend_error(
            "EntityTooSmall",
            "Your proposed upload is smaller than the minimum allowed size",
        );
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                S3ErrorCode::EntityTooSmall,
                "Your proposed upload is smaller than the minimum allowed size"
            )
        );
    }

    #[test]
    fn parse_error_reads_backend_errors() {
        // From the Error Responses page.
        let aws = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error>
  <Code>NoSuchKey</Code>
  <Message>The resource you requested does not exist</Message>
  <Resource>/mybucket/myfoto.jpg</Resource>
  <RequestId>4442587FB7D0A2F9</RequestId>
</Error>"#;
        assert_eq!(
            parse_error(aws),
            Some((
                "NoSuchKey".into(),
                "The resource you requested does not exist".into()
            ))
        );
        assert_eq!(
            parse_error(b"<Error><Code>X</Code></Error>"),
            Some(("X".into(), "".into()))
        );
        assert_eq!(parse_error(b"<Error><Message>m</Message></Error>"), None);
        assert_eq!(parse_error(b"<ListBucketResult/>"), None);
        assert_eq!(
            parse_error(b"<html><body>502 Bad Gateway</body></html>"),
            None
        );
        assert_eq!(parse_error(b"<Error><Code>X</Code>"), None);
        assert_eq!(parse_error(b""), None);
        // Round trip with our own body.
        let ours = error_body(&S3Error::new(S3ErrorCode::AccessDenied, "a & b"), "id");
        assert_eq!(
            parse_error(ours.as_bytes()),
            Some(("AccessDenied".into(), "a & b".into()))
        );
    }

    #[test]
    fn parses_aws_delete_objects_samples() {
        // From the DeleteObjects API reference.
        let aws = br#"<Delete>
  <Object>
    <Key>sample1.txt</Key>
  </Object>
  <Object>
    <Key>sample2.txt</Key>
  </Object>
</Delete>"#;
        assert_eq!(
            parse_delete_objects(aws).unwrap(),
            DeleteRequest {
                quiet: false,
                keys: vec!["sample1.txt".into(), "sample2.txt".into()]
            }
        );
        let versioned = br#"<?xml version="1.0" encoding="UTF-8"?>
<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Quiet>true</Quiet>
  <Object>
    <Key>HappyFace.jpg</Key>
    <VersionId>2LWg7lQLnY41.maGB5Z6SWW.dcq0vx7b</VersionId>
  </Object>
  <Object>
    <Key>HappyFace.jpg</Key>
    <VersionId>yoz3HB.ZhCS_tKVEmIOr7qYyyAaZSKVd</VersionId>
  </Object>
</Delete>"#;
        assert_eq!(
            parse_delete_objects(versioned).unwrap(),
            DeleteRequest {
                quiet: true,
                keys: vec!["HappyFace.jpg".into(), "HappyFace.jpg".into()]
            }
        );
    }

    #[test]
    fn delete_objects_keeps_keys_exact() {
        let body = br#"<Delete><Quiet>False</Quiet><Object><Key> spaced </Key></Object><Object><Key>a&amp;b&lt;&#233;&#x41;</Key></Object><Object><Key><![CDATA[<raw>]]></Key></Object><Object><Key>cr&#13;lf</Key></Object></Delete>"#;
        assert_eq!(
            parse_delete_objects(body).unwrap(),
            DeleteRequest {
                quiet: false,
                keys: vec![
                    " spaced ".into(),
                    "a&b<éA".into(),
                    "<raw>".into(),
                    "cr\rlf".into()
                ]
            }
        );
    }

    #[test]
    fn delete_objects_errors() {
        let objects = |n: usize| {
            (0..n)
                .map(|i| format!("<Object><Key>k{i}</Key></Object>"))
                .collect::<String>()
        };
        let ok = format!("<Delete>{}</Delete>", objects(1000));
        assert_eq!(
            parse_delete_objects(ok.as_bytes()).unwrap().keys.len(),
            1000
        );
        let over = format!("<Delete>{}</Delete>", objects(1001));
        assert_eq!(
            code(parse_delete_objects(over.as_bytes())),
            S3ErrorCode::MalformedXML
        );
        for bad in [
            "<Delete></Delete>",
            "<Delete><Quiet>true</Quiet></Delete>",
            "<Delete><Quiet>yes</Quiet><Object><Key>k</Key></Object></Delete>",
            "<Delete><Object><VersionId>1</VersionId></Object></Delete>",
            "<Delete><Object><Key></Key></Object></Delete>",
            "<Delete><Object><Key>k</Key></Object>",
            "<Delete><Object><Key>k</Object></Key></Delete>",
            "<Remove><Object><Key>k</Key></Object></Remove>",
            "<Delete><Object><Key>k</Key></Object></Delete><Delete/>",
            "garbage",
            "",
        ] {
            assert_eq!(
                code(parse_delete_objects(bad.as_bytes())),
                S3ErrorCode::MalformedXML,
                "{bad}"
            );
        }
    }

    #[test]
    fn delete_result_exact() {
        let outcomes = vec![
            DeleteOutcome::Deleted {
                key: "sample1.txt".into(),
            },
            DeleteOutcome::Failed {
                key: "sample2.txt".into(),
                code: "AccessDenied".into(),
                message: "Access Denied".into(),
            },
            DeleteOutcome::Deleted { key: "a<b".into() },
        ];
        assert_eq!(
            delete_result(&outcomes, false),
            format!(
                "{P}<DeleteResult {NS}><Deleted><Key>sample1.txt</Key></Deleted>\
                 <Error><Key>sample2.txt</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>\
                 <Deleted><Key>a&lt;b</Key></Deleted></DeleteResult>"
            )
        );
        assert_eq!(
            delete_result(&outcomes, true),
            format!("{P}<DeleteResult {NS}><Error><Key>sample2.txt</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error></DeleteResult>")
        );
        assert_eq!(
            delete_result(&outcomes[..1], true),
            format!("{P}<DeleteResult {NS}></DeleteResult>")
        );
    }

    #[test]
    fn copy_results_exact_and_parsed() {
        let obj = copy_object_result("\"9b2cf535f27731c974343645a3985328\"", t0());
        assert_eq!(
            obj,
            format!("{P}<CopyObjectResult {NS}><LastModified>2009-10-12T17:50:30.000Z</LastModified><ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag></CopyObjectResult>")
        );
        let part = copy_part_result("\"b\"", t0());
        assert_eq!(
            part,
            format!("{P}<CopyPartResult {NS}><LastModified>2009-10-12T17:50:30.000Z</LastModified><ETag>&quot;b&quot;</ETag></CopyPartResult>")
        );
        assert_eq!(
            parse_copy_result(obj.as_bytes()).unwrap(),
            ("\"9b2cf535f27731c974343645a3985328\"".into(), t0())
        );
        assert_eq!(
            parse_copy_result(part.as_bytes()).unwrap(),
            ("\"b\"".into(), t0())
        );
    }

    #[test]
    fn parses_aws_copy_samples() {
        // From the CopyObject and UploadPartCopy API references.
        let obj = br#"<?xml version="1.0" encoding="UTF-8"?>
<CopyObjectResult>
   <LastModified>2009-10-12T17:50:30.000Z</LastModified>
   <ETag>"9b2cf535f27731c974343645a3985328"</ETag>
</CopyObjectResult>"#;
        assert_eq!(
            parse_copy_result(obj).unwrap(),
            ("\"9b2cf535f27731c974343645a3985328\"".into(), t0())
        );
        let part = br#"<CopyPartResult>
   <LastModified>2009-10-12T17:50:30Z</LastModified>
   <ETag>"b20b0f082c6ea48a6d0b8e8c5f0b1ef5"</ETag>
</CopyPartResult>"#;
        assert_eq!(
            parse_copy_result(part).unwrap(),
            ("\"b20b0f082c6ea48a6d0b8e8c5f0b1ef5\"".into(), t0())
        );
        assert_eq!(
            code(parse_copy_result(
                b"<CopyObjectResult><ETag>x</ETag></CopyObjectResult>"
            )),
            S3ErrorCode::InternalError
        );
        assert_eq!(code(parse_copy_result(b"<CopyObjectResult><ETag>x</ETag><LastModified>yesterday</LastModified></CopyObjectResult>")), S3ErrorCode::InternalError);
        let err = b"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>";
        assert_eq!(code(parse_copy_result(err)), S3ErrorCode::NoSuchKey);
    }

    fn page() -> PartsPage {
        PartsPage {
            parts: vec![
                PartEntry {
                    part_number: 2,
                    etag: "\"7778aef83f66abc1fa1e8477f296d394\"".into(),
                    size: 10485760,
                    last_modified: t0(),
                },
                PartEntry {
                    part_number: 3,
                    etag: "\"aaaa18db4cc2f85cedef654fccc4a4x8\"".into(),
                    size: 10485760,
                    last_modified: from_unix_secs(1_255_369_831),
                },
            ],
            part_number_marker: 1,
            next_part_number_marker: Some(3),
            max_parts: 2,
            truncated: true,
        }
    }

    #[test]
    fn list_parts_result_exact_and_round_trip() {
        let owner = |e: &str| {
            format!("<{e}><ID>s3-balance</ID><DisplayName>s3-balance</DisplayName></{e}>")
        };
        let body = list_parts_result("example-bucket", "example-object", "XXBsb2Fk", &page());
        assert_eq!(
            body,
            format!(
                "{P}<ListPartsResult {NS}><Bucket>example-bucket</Bucket><Key>example-object</Key><UploadId>XXBsb2Fk</UploadId>\
                 {}{}<StorageClass>STANDARD</StorageClass><PartNumberMarker>1</PartNumberMarker>\
                 <NextPartNumberMarker>3</NextPartNumberMarker><MaxParts>2</MaxParts><IsTruncated>true</IsTruncated>\
                 <Part><PartNumber>2</PartNumber><LastModified>2009-10-12T17:50:30.000Z</LastModified><ETag>&quot;7778aef83f66abc1fa1e8477f296d394&quot;</ETag><Size>10485760</Size></Part>\
                 <Part><PartNumber>3</PartNumber><LastModified>2009-10-12T17:50:31.000Z</LastModified><ETag>&quot;aaaa18db4cc2f85cedef654fccc4a4x8&quot;</ETag><Size>10485760</Size></Part>\
                 </ListPartsResult>",
                owner("Initiator"),
                owner("Owner")
            )
        );
        assert_eq!(parse_list_parts(body.as_bytes()).unwrap(), page());
        let empty = PartsPage {
            max_parts: 1000,
            ..PartsPage::default()
        };
        let body = list_parts_result("b", "k", "u", &empty);
        assert!(body.contains("<PartNumberMarker>0</PartNumberMarker><MaxParts>1000</MaxParts><IsTruncated>false</IsTruncated></ListPartsResult>"), "{body}");
        assert_eq!(parse_list_parts(body.as_bytes()).unwrap(), empty);
    }

    #[test]
    fn parses_aws_list_parts_sample() {
        // From the ListParts API reference.
        let aws = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>example-bucket</Bucket>
  <Key>example-object</Key>
  <UploadId>XXBsb2FkIElEIGZvciBlbHZpbmcncyVcdS1tb3ZpZS5tMnRzEEEwbG9hZA</UploadId>
  <Initiator>
      <ID>arn:aws:iam::111122223333:user/some-user-11116a31-17b5-4fb7-9df5-b288870f11xx</ID>
      <DisplayName>umat-user-11116a31-17b5-4fb7-9df5-b288870f11xx</DisplayName>
  </Initiator>
  <Owner>
    <ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID>
    <DisplayName>someName</DisplayName>
  </Owner>
  <StorageClass>STANDARD</StorageClass>
  <PartNumberMarker>1</PartNumberMarker>
  <NextPartNumberMarker>3</NextPartNumberMarker>
  <MaxParts>2</MaxParts>
  <IsTruncated>true</IsTruncated>
  <Part>
    <PartNumber>2</PartNumber>
    <LastModified>2009-10-12T17:50:30.000Z</LastModified>
    <ETag>"7778aef83f66abc1fa1e8477f296d394"</ETag>
    <Size>10485760</Size>
  </Part>
  <Part>
    <PartNumber>3</PartNumber>
    <LastModified>2009-10-12T17:50:31.000Z</LastModified>
    <ETag>"aaaa18db4cc2f85cedef654fccc4a4x8"</ETag>
    <Size>10485760</Size>
  </Part>
</ListPartsResult>"#;
        assert_eq!(parse_list_parts(aws).unwrap(), page());
        // Empty markers, as some S3-compatible stores send them.
        let sparse = b"<ListPartsResult><PartNumberMarker/><IsTruncated>false</IsTruncated></ListPartsResult>";
        assert_eq!(
            parse_list_parts(sparse).unwrap(),
            PartsPage {
                max_parts: 1000,
                ..PartsPage::default()
            }
        );
        for bad in [
            "<ListPartsResult><MaxParts>many</MaxParts></ListPartsResult>",
            "<ListPartsResult><IsTruncated>maybe</IsTruncated></ListPartsResult>",
            "<ListPartsResult><Part><PartNumber>1</PartNumber><ETag>e</ETag><Size>1</Size></Part></ListPartsResult>",
            "<ListPartsResult><Part><PartNumber>-1</PartNumber><ETag>e</ETag><Size>1</Size><LastModified>2009-10-12T17:50:31.000Z</LastModified></Part></ListPartsResult>",
            "<ListMultipartUploadsResult/>",
        ] {
            assert_eq!(code(parse_list_parts(bad.as_bytes())), S3ErrorCode::InternalError, "{bad}");
        }
        let err = b"<Error><Code>NoSuchUpload</Code><Message>The specified upload does not exist.</Message></Error>";
        assert_eq!(code(parse_list_parts(err)), S3ErrorCode::NoSuchUpload);
    }

    proptest! {
        #[test]
        fn parsers_never_panic_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_error(&bytes);
            let _ = parse_initiate_multipart_result(&bytes);
            let _ = parse_complete_multipart(&bytes);
            let _ = parse_complete_multipart_result(&bytes);
            let _ = parse_delete_objects(&bytes);
            let _ = parse_copy_result(&bytes);
            let _ = parse_list_parts(&bytes);
        }

        #[test]
        fn parsers_never_panic_on_xml_like_input(
            pieces in proptest::collection::vec(prop::sample::select(vec![
                "<Delete>", "</Delete>", "<Object>", "</Object>", "<Key>", "</Key>", "k", "&amp;", "&#0;",
                "<CompleteMultipartUpload>", "</CompleteMultipartUpload>", "<Part>", "</Part>",
                "<PartNumber>", "</PartNumber>", "1", "4294967296", "<ETag>", "</ETag>", "<Error>", "</Error>",
                "<Code>", "</Code>", "<ListPartsResult>", "</ListPartsResult>", "<![CDATA[x]]>", "<?xml version=\"1.0\"?>",
                "<!-- c -->", "<a/>", "<x:y xmlns:x=\"u\">", "</x:y>", " ", "<", ">", "&", "\"",
            ]), 0..40)
        ) {
            let s = pieces.concat();
            let bytes = s.as_bytes();
            let _ = parse_error(bytes);
            let _ = parse_initiate_multipart_result(bytes);
            let _ = parse_complete_multipart(bytes);
            let _ = parse_complete_multipart_result(bytes);
            let _ = parse_delete_objects(bytes);
            let _ = parse_copy_result(bytes);
            let _ = parse_list_parts(bytes);
        }

        #[test]
        fn escaped_keys_parse_back_exactly(key in "[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x{FFFE}\\x{FFFF}]{1,30}") {
            let body = format!("<Delete><Object><Key>{}</Key></Object></Delete>", escape(&key));
            prop_assert_eq!(parse_delete_objects(body.as_bytes()).unwrap().keys, vec![key.clone()]);
            // Backend upload ids are trimmed; one that is only whitespace is no id at all.
            let parsed = parse_initiate_multipart_result(initiate_multipart_result("b", "k", &key).as_bytes());
            if key.trim().is_empty() {
                prop_assert!(parsed.is_err());
            } else {
                prop_assert_eq!(parsed.unwrap(), key.trim());
            }
        }
    }
}
