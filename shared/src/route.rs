//! Request routing: method, raw path, query and Host into one [`Operation`].
//!
//! One pure function, [`route`], as garage's S3 router does. Path style (`/bucket/key`) and
//! virtual-host style (`bucket.<base domain>/key`) give the same result.
//! <https://docs.aws.amazon.com/AmazonS3/latest/userguide/VirtualHosting.html>
//!
//! # Addressing
//!
//! - Virtual-host style when the Host header (port stripped, case-insensitive, trailing dot
//!   ignored) is `<label>.<base domain>` for one of the configured base domains; the longest
//!   matching base domain wins, so `b.s3.example.com` with base domains `example.com` and
//!   `s3.example.com` is bucket `b`. The whole path is then the key (`//k` is key `/k`).
//! - Otherwise (Host is a base domain itself, an IP, `localhost`, absent ...) path style:
//!   `/bucket/key`. `/bucket/` is the bucket itself; `//key` (a key with no bucket) is
//!   `InvalidURI`.
//! - Keys are percent-decoded from the raw path: `%2F` decodes to `/`, `+` stays `+`. Malformed
//!   escapes or invalid UTF-8 are `InvalidURI`; keys over 1024 bytes are `KeyTooLongError`.
//!
//! # Operations
//!
//! | resource | method | query / header | operation |
//! |---|---|---|---|
//! | service `/` | GET | | ListBuckets |
//! | bucket | PUT | | CreateBucket |
//! | bucket | DELETE | | DeleteBucket |
//! | bucket | HEAD | | HeadBucket |
//! | bucket | GET | | ListObjects |
//! | bucket | GET | `list-type=2` | ListObjectsV2 (any other `list-type`: InvalidArgument) |
//! | bucket | GET | `location` | GetBucketLocation |
//! | bucket | GET | `versions` | ListObjectVersions |
//! | bucket | GET | `uploads` | ListMultipartUploads |
//! | bucket | POST | `delete` | DeleteObjects |
//! | bucket | POST | | NotImplemented(PostObject) (browser form upload) |
//! | bucket | GET / PUT | `acl` | GetBucketAcl / PutBucketAcl |
//! | bucket | GET / PUT / DELETE | `cors` | GetBucketCors / PutBucketCors / DeleteBucketCors |
//! | bucket or object | OPTIONS | | Preflight (CORS), whatever the query |
//! | object | GET / HEAD / DELETE | | GetObject / HeadObject / DeleteObject |
//! | object | PUT | | PutObject, CopyObject with `x-amz-copy-source` |
//! | object | POST | `uploads` | CreateMultipartUpload |
//! | object | PUT | `partNumber` & `uploadId` | UploadPart, UploadPartCopy with `x-amz-copy-source` |
//! | object | POST | `uploadId` | CompleteMultipartUpload |
//! | object | DELETE | `uploadId` | AbortMultipartUpload |
//! | object | GET | `uploadId` | ListParts |
//!
//! `partNumber` must be 1..=10000 (`InvalidArgument`); a PUT with `uploadId` and no
//! `partNumber`, or `partNumber` and no `uploadId`, is `InvalidArgument` rather than a PutObject.
//!
//! Every other sub-resource S3 knows is recognised and never falls through to a plain bucket or
//! object operation (a `PUT ?tagging` must not overwrite the object). It is checked before the
//! implemented ones, so `PUT /b/k?partNumber=1&uploadId=u&tagging` is PutObjectTagging too.
//!
//! | sub-resource | resource | method | answer |
//! |---|---|---|---|
//! | `acl` | bucket | GET / PUT | GetBucketAcl / PutBucketAcl (implemented, listed for the order) |
//! | `acl` | object | GET | Default(GetObjectAcl): the bucket's owner and ACL |
//! | `acl` | object | PUT | PutObjectAcl (implemented, listed for the order) |
//! | `versioning` | bucket | GET | Default(GetBucketVersioning): never versioned |
//! | `versioning` | bucket | PUT | NotImplemented(PutBucketVersioning) |
//! | `tagging` | bucket | GET / PUT / DELETE | NotImplemented(Get/Put/DeleteBucketTagging) |
//! | `tagging` | object | GET / PUT / DELETE | NotImplemented(Get/Put/DeleteObjectTagging) |
//! | `policy` | bucket | GET / PUT / DELETE | NotImplemented(Get/Put/DeleteBucketPolicy) |
//! | `policyStatus` | bucket | GET | NotImplemented(GetBucketPolicyStatus) |
//! | `cors` | bucket | GET / PUT / DELETE | Get/Put/DeleteBucketCors (implemented, listed for the order) |
//! | `lifecycle` | bucket | GET / PUT / DELETE | NotImplemented(Get/PutBucketLifecycleConfiguration, DeleteBucketLifecycle) |
//! | `website` | bucket | GET / PUT / DELETE | NotImplemented(Get/Put/DeleteBucketWebsite) |
//! | `encryption` | bucket | GET / PUT / DELETE | NotImplemented(Get/Put/DeleteBucketEncryption) |
//! | `logging` | bucket | GET / PUT | NotImplemented(Get/PutBucketLogging) |
//! | `notification` | bucket | GET / PUT | NotImplemented(Get/PutBucketNotificationConfiguration) |
//! | `replication` | bucket | GET / PUT / DELETE | NotImplemented(Get/Put/DeleteBucketReplication) |
//! | `requestPayment` | bucket | GET / PUT | NotImplemented(Get/PutBucketRequestPayment) |
//! | `accelerate` | bucket | GET / PUT | NotImplemented(Get/PutBucketAccelerateConfiguration) |
//! | `analytics` | bucket | GET (with `id` / without) / PUT / DELETE | NotImplemented(GetBucketAnalyticsConfiguration / ListBucketAnalyticsConfigurations / Put… / Delete…) |
//! | `inventory` | bucket | same | NotImplemented(…BucketInventoryConfiguration(s)) |
//! | `metrics` | bucket | same | NotImplemented(…BucketMetricsConfiguration(s)) |
//! | `intelligent-tiering` | bucket | same | NotImplemented(…BucketIntelligentTieringConfiguration(s)) |
//! | `ownershipControls` | bucket | GET / PUT / DELETE | NotImplemented(Get/Put/DeleteBucketOwnershipControls) |
//! | `publicAccessBlock` | bucket | GET / PUT / DELETE | NotImplemented(Get/Put/DeletePublicAccessBlock) |
//! | `object-lock` | bucket | GET / PUT | NotImplemented(Get/PutObjectLockConfiguration) |
//! | `metadataTable` | bucket | GET / POST / DELETE | NotImplemented(Get/Create/DeleteBucketMetadataTableConfiguration) |
//! | `metadataConfiguration` | bucket | GET / POST / DELETE | NotImplemented(Get/Create/DeleteBucketMetadataConfiguration) |
//! | `session` | bucket | GET | NotImplemented(CreateSession) |
//! | `retention` | object | GET / PUT | NotImplemented(Get/PutObjectRetention) |
//! | `legal-hold` | object | GET / PUT | NotImplemented(Get/PutObjectLegalHold) |
//! | `torrent` | object | GET | NotImplemented(GetObjectTorrent) |
//! | `restore` | object | POST | NotImplemented(RestoreObject) |
//! | `select` | object | POST | NotImplemented(SelectObjectContent) |
//! | `attributes` | object | GET | NotImplemented(GetObjectAttributes) |
//! | `renameObject` | object | PUT | NotImplemented(RenameObject) |
//!
//! Any method S3 does not define for a resource (a sub-resource on the wrong method or on the
//! wrong level, such as `PUT /b/k?uploads`, `GET /b?delete`, `PUT /b/k?cors`, `POST /b/k`,
//! `HEAD /`, `PATCH` anything, `OPTIONS /`) is `MethodNotAllowed`.
//!
//! Other query parameters (`prefix`, `max-keys`, `versionId`, `response-content-type`, `x-id`,
//! the `X-Amz-*` of presigned URLs, `partNumber` on GET/HEAD ...) do not change the operation;
//! they stay in [`S3Request::query`] for the handler.

use http::Method;
use percent_encoding::percent_decode_str;

use crate::error::{S3Error, S3ErrorCode};

/// Longest key S3 accepts, in bytes of UTF-8.
pub const MAX_KEY_LEN: usize = 1024;
/// Highest part number S3 accepts.
pub const MAX_PART_NUMBER: u32 = 10_000;

/// Query parameters, percent-decoded, in request order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    /// Parses a raw query string (`a=1&b&c=%20`); `+` stays `+` (S3 does not use form encoding).
    /// Invalid UTF-8 after decoding is replaced by U+FFFD; [`route`] rejects it instead.
    pub fn parse(raw: &str) -> Query {
        Query(
            split_query(raw)
                .map(|(k, v)| {
                    (
                        percent_decode_str(k).decode_utf8_lossy().into_owned(),
                        percent_decode_str(v).decode_utf8_lossy().into_owned(),
                    )
                })
                .collect(),
        )
    }

    /// As [`Query::parse`], `None` when a name or value is not UTF-8 once decoded.
    pub fn try_parse(raw: &str) -> Option<Query> {
        let mut out = Vec::new();
        for (k, v) in split_query(raw) {
            let k = percent_decode_str(k).decode_utf8().ok()?.into_owned();
            let v = percent_decode_str(v).decode_utf8().ok()?.into_owned();
            out.push((k, v));
        }
        Some(Query(out))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }
}

fn split_query(raw: &str) -> impl Iterator<Item = (&str, &str)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// Read-only probes that common clients make, answered with what a plain, unversioned,
/// private bucket answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultAnswer {
    GetBucketVersioning,
    GetObjectAcl,
}

impl DefaultAnswer {
    pub fn name(self) -> &'static str {
        match self {
            DefaultAnswer::GetBucketVersioning => "GetBucketVersioning",
            DefaultAnswer::GetObjectAcl => "GetObjectAcl",
        }
    }
}

/// Every operation the gateway recognises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    ListBuckets,
    CreateBucket,
    DeleteBucket,
    HeadBucket,
    GetBucketLocation,
    ListObjects,
    ListObjectsV2,
    ListObjectVersions,
    ListMultipartUploads,
    DeleteObjects,
    GetObject,
    HeadObject,
    PutObject,
    /// PUT with `x-amz-copy-source`.
    CopyObject,
    DeleteObject,
    CreateMultipartUpload,
    UploadPart {
        upload_id: String,
        part_number: u32,
    },
    /// UploadPart with `x-amz-copy-source`.
    UploadPartCopy {
        upload_id: String,
        part_number: u32,
    },
    CompleteMultipartUpload {
        upload_id: String,
    },
    AbortMultipartUpload {
        upload_id: String,
    },
    ListParts {
        upload_id: String,
    },
    GetBucketAcl,
    PutBucketAcl,
    /// A canned ACL carried to the backend holding the object.
    PutObjectAcl,
    GetBucketCors,
    PutBucketCors,
    DeleteBucketCors,
    /// A CORS preflight `OPTIONS` (bucket or object): answered from the bucket's CORS rules,
    /// without credentials.
    Preflight,
    Default(DefaultAnswer),
    /// A recognised S3 operation the gateway does not implement (its S3 name, for the
    /// message): answered 501, never handled as another operation.
    NotImplemented(&'static str),
}

impl Operation {
    /// The S3 name, for logs and the `operation` metric label.
    pub fn name(&self) -> &'static str {
        use Operation::*;
        match self {
            ListBuckets => "ListBuckets",
            CreateBucket => "CreateBucket",
            DeleteBucket => "DeleteBucket",
            HeadBucket => "HeadBucket",
            GetBucketLocation => "GetBucketLocation",
            ListObjects => "ListObjects",
            ListObjectsV2 => "ListObjectsV2",
            ListObjectVersions => "ListObjectVersions",
            ListMultipartUploads => "ListMultipartUploads",
            DeleteObjects => "DeleteObjects",
            GetObject => "GetObject",
            HeadObject => "HeadObject",
            PutObject => "PutObject",
            CopyObject => "CopyObject",
            DeleteObject => "DeleteObject",
            CreateMultipartUpload => "CreateMultipartUpload",
            UploadPart { .. } => "UploadPart",
            UploadPartCopy { .. } => "UploadPartCopy",
            CompleteMultipartUpload { .. } => "CompleteMultipartUpload",
            AbortMultipartUpload { .. } => "AbortMultipartUpload",
            ListParts { .. } => "ListParts",
            GetBucketAcl => "GetBucketAcl",
            PutBucketAcl => "PutBucketAcl",
            PutObjectAcl => "PutObjectAcl",
            GetBucketCors => "GetBucketCors",
            PutBucketCors => "PutBucketCors",
            DeleteBucketCors => "DeleteBucketCors",
            Preflight => "Preflight",
            Default(d) => d.name(),
            NotImplemented(name) => name,
        }
    }

    /// Whether the operation changes anything (read-only keys may not use it).
    ///
    /// Unimplemented operations count as writes unless their S3 name is a read (`Get*`,
    /// `List*`, `Head*`, `SelectObjectContent`), so a read-only key gets AccessDenied for
    /// `PutBucketPolicy` just as it would if the gateway implemented it.
    pub fn is_write(&self) -> bool {
        use Operation::*;
        match self {
            ListBuckets
            | HeadBucket
            | GetBucketLocation
            | ListObjects
            | ListObjectsV2
            | ListObjectVersions
            | ListMultipartUploads
            | GetObject
            | HeadObject
            | ListParts { .. }
            | GetBucketAcl
            | GetBucketCors
            | Preflight
            | Default(_) => false,
            CreateBucket
            | DeleteBucket
            | DeleteObjects
            | PutObject
            | CopyObject
            | DeleteObject
            | CreateMultipartUpload
            | UploadPart { .. }
            | UploadPartCopy { .. }
            | CompleteMultipartUpload { .. }
            | AbortMultipartUpload { .. }
            | PutBucketAcl
            | PutObjectAcl
            | PutBucketCors
            | DeleteBucketCors => true,
            NotImplemented(name) => {
                !(["Get", "List", "Head"].iter().any(|p| name.starts_with(p))
                    || *name == "SelectObjectContent")
            }
        }
    }
}

/// A routed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Request {
    pub operation: Operation,
    /// The virtual bucket, when the request names one.
    pub bucket: Option<String>,
    /// The object key, percent-decoded.
    pub key: Option<String>,
    pub query: Query,
    /// The bucket came from the Host header.
    pub virtual_host: bool,
}

/// What the router reads of a request.
#[derive(Debug, Clone, Copy)]
pub struct RouteInput<'a> {
    pub method: &'a http::Method,
    /// The path as sent, still percent-encoded.
    pub raw_path: &'a str,
    /// The query as sent, without `?`.
    pub raw_query: &'a str,
    /// The Host header (may carry a port).
    pub host: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    /// Base domains of virtual-host style (`s3.example.com`); empty turns it off.
    pub base_domains: &'a [String],
}

fn invalid_uri() -> S3Error {
    S3Error::new(S3ErrorCode::InvalidURI, "Couldn't parse the specified URI.")
}

fn method_not_allowed() -> S3Error {
    S3Error::new(
        S3ErrorCode::MethodNotAllowed,
        "The specified method is not allowed against this resource.",
    )
}

fn bad_part_number() -> S3Error {
    S3Error::invalid_argument("Part number must be an integer between 1 and 10000, inclusive")
}

/// Percent-decodes one path piece strictly: a `%` must start two hex digits and the result
/// must be UTF-8, as S3 answers `InvalidURI` otherwise.
fn decode_path(raw: &str) -> Result<String, S3Error> {
    if !raw.contains('%') {
        // Nothing escaped (most keys): the piece as it is.
        return Ok(raw.to_owned());
    }
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok =
                b.len() > i + 2 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(invalid_uri());
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| invalid_uri())
}

/// The host name of a Host header: lowercase, without port or trailing dot.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if host.starts_with('[') {
        // IPv6 literal: never a virtual host, keep it whole without the port.
        host.split_once(']').map_or(host, |(h, _)| h)
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The bucket named by the Host header, if it is `<label>.<base domain>`.
pub(crate) fn virtual_host_bucket(host: &str, base_domains: &[String]) -> Option<String> {
    if base_domains.is_empty() {
        // Path style only: no host name to lower-case and copy.
        return None;
    }
    let host = host_name(host);
    base_domains
        .iter()
        .map(|d| host_name(d.trim_start_matches('.')))
        .filter(|d| !d.is_empty())
        .filter_map(|d| {
            let label = host.strip_suffix(d.as_str())?.strip_suffix('.')?;
            (!label.is_empty()).then(|| (d.len(), label.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, label)| label)
}

/// What a sub-resource is answered with.
enum Ans {
    Ni(&'static str),
    /// With an `id` parameter the first name, without it the listing (second name).
    NiOrList(&'static str, &'static str),
    Def(DefaultAnswer),
    /// An implemented sub-resource operation.
    Op(Operation),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Bucket,
    Object,
}

const GET: u8 = 0;
const PUT: u8 = 1;
const DELETE: u8 = 2;
const POST: u8 = 3;

/// The sub-resources of S3 (`(name, level, method, answer)`): those the gateway implements
/// (`Op`) are listed too, so that the first sub-resource present decides, whichever it is.
/// Kept in step with the table in the module doc.
#[rustfmt::skip]
const UNIMPLEMENTED: &[(&str, Level, u8, Ans)] = {
    use Ans::*;
    use Level::*;
    &[
        ("acl", Bucket, GET, Op(Operation::GetBucketAcl)),
        ("acl", Bucket, PUT, Op(Operation::PutBucketAcl)),
        ("acl", Object, GET, Def(DefaultAnswer::GetObjectAcl)),
        ("acl", Object, PUT, Op(Operation::PutObjectAcl)),
        ("versioning", Bucket, GET, Def(DefaultAnswer::GetBucketVersioning)),
        ("versioning", Bucket, PUT, Ni("PutBucketVersioning")),
        ("tagging", Bucket, GET, Ni("GetBucketTagging")),
        ("tagging", Bucket, PUT, Ni("PutBucketTagging")),
        ("tagging", Bucket, DELETE, Ni("DeleteBucketTagging")),
        ("tagging", Object, GET, Ni("GetObjectTagging")),
        ("tagging", Object, PUT, Ni("PutObjectTagging")),
        ("tagging", Object, DELETE, Ni("DeleteObjectTagging")),
        ("policy", Bucket, GET, Ni("GetBucketPolicy")),
        ("policy", Bucket, PUT, Ni("PutBucketPolicy")),
        ("policy", Bucket, DELETE, Ni("DeleteBucketPolicy")),
        ("policyStatus", Bucket, GET, Ni("GetBucketPolicyStatus")),
        ("cors", Bucket, GET, Op(Operation::GetBucketCors)),
        ("cors", Bucket, PUT, Op(Operation::PutBucketCors)),
        ("cors", Bucket, DELETE, Op(Operation::DeleteBucketCors)),
        ("lifecycle", Bucket, GET, Ni("GetBucketLifecycleConfiguration")),
        ("lifecycle", Bucket, PUT, Ni("PutBucketLifecycleConfiguration")),
        ("lifecycle", Bucket, DELETE, Ni("DeleteBucketLifecycle")),
        ("website", Bucket, GET, Ni("GetBucketWebsite")),
        ("website", Bucket, PUT, Ni("PutBucketWebsite")),
        ("website", Bucket, DELETE, Ni("DeleteBucketWebsite")),
        ("encryption", Bucket, GET, Ni("GetBucketEncryption")),
        ("encryption", Bucket, PUT, Ni("PutBucketEncryption")),
        ("encryption", Bucket, DELETE, Ni("DeleteBucketEncryption")),
        ("logging", Bucket, GET, Ni("GetBucketLogging")),
        ("logging", Bucket, PUT, Ni("PutBucketLogging")),
        ("notification", Bucket, GET, Ni("GetBucketNotificationConfiguration")),
        ("notification", Bucket, PUT, Ni("PutBucketNotificationConfiguration")),
        ("replication", Bucket, GET, Ni("GetBucketReplication")),
        ("replication", Bucket, PUT, Ni("PutBucketReplication")),
        ("replication", Bucket, DELETE, Ni("DeleteBucketReplication")),
        ("requestPayment", Bucket, GET, Ni("GetBucketRequestPayment")),
        ("requestPayment", Bucket, PUT, Ni("PutBucketRequestPayment")),
        ("accelerate", Bucket, GET, Ni("GetBucketAccelerateConfiguration")),
        ("accelerate", Bucket, PUT, Ni("PutBucketAccelerateConfiguration")),
        ("analytics", Bucket, GET, NiOrList("GetBucketAnalyticsConfiguration", "ListBucketAnalyticsConfigurations")),
        ("analytics", Bucket, PUT, Ni("PutBucketAnalyticsConfiguration")),
        ("analytics", Bucket, DELETE, Ni("DeleteBucketAnalyticsConfiguration")),
        ("inventory", Bucket, GET, NiOrList("GetBucketInventoryConfiguration", "ListBucketInventoryConfigurations")),
        ("inventory", Bucket, PUT, Ni("PutBucketInventoryConfiguration")),
        ("inventory", Bucket, DELETE, Ni("DeleteBucketInventoryConfiguration")),
        ("metrics", Bucket, GET, NiOrList("GetBucketMetricsConfiguration", "ListBucketMetricsConfigurations")),
        ("metrics", Bucket, PUT, Ni("PutBucketMetricsConfiguration")),
        ("metrics", Bucket, DELETE, Ni("DeleteBucketMetricsConfiguration")),
        ("intelligent-tiering", Bucket, GET, NiOrList("GetBucketIntelligentTieringConfiguration", "ListBucketIntelligentTieringConfigurations")),
        ("intelligent-tiering", Bucket, PUT, Ni("PutBucketIntelligentTieringConfiguration")),
        ("intelligent-tiering", Bucket, DELETE, Ni("DeleteBucketIntelligentTieringConfiguration")),
        ("ownershipControls", Bucket, GET, Ni("GetBucketOwnershipControls")),
        ("ownershipControls", Bucket, PUT, Ni("PutBucketOwnershipControls")),
        ("ownershipControls", Bucket, DELETE, Ni("DeleteBucketOwnershipControls")),
        ("publicAccessBlock", Bucket, GET, Ni("GetPublicAccessBlock")),
        ("publicAccessBlock", Bucket, PUT, Ni("PutPublicAccessBlock")),
        ("publicAccessBlock", Bucket, DELETE, Ni("DeletePublicAccessBlock")),
        ("object-lock", Bucket, GET, Ni("GetObjectLockConfiguration")),
        ("object-lock", Bucket, PUT, Ni("PutObjectLockConfiguration")),
        ("metadataTable", Bucket, GET, Ni("GetBucketMetadataTableConfiguration")),
        ("metadataTable", Bucket, POST, Ni("CreateBucketMetadataTableConfiguration")),
        ("metadataTable", Bucket, DELETE, Ni("DeleteBucketMetadataTableConfiguration")),
        ("metadataConfiguration", Bucket, GET, Ni("GetBucketMetadataConfiguration")),
        ("metadataConfiguration", Bucket, POST, Ni("CreateBucketMetadataConfiguration")),
        ("metadataConfiguration", Bucket, DELETE, Ni("DeleteBucketMetadataConfiguration")),
        ("session", Bucket, GET, Ni("CreateSession")),
        ("retention", Object, GET, Ni("GetObjectRetention")),
        ("retention", Object, PUT, Ni("PutObjectRetention")),
        ("legal-hold", Object, GET, Ni("GetObjectLegalHold")),
        ("legal-hold", Object, PUT, Ni("PutObjectLegalHold")),
        ("torrent", Object, GET, Ni("GetObjectTorrent")),
        ("restore", Object, POST, Ni("RestoreObject")),
        ("select", Object, POST, Ni("SelectObjectContent")),
        ("attributes", Object, GET, Ni("GetObjectAttributes")),
        ("renameObject", Object, PUT, Ni("RenameObject")),
    ]
};

fn method_code(m: &Method) -> Option<u8> {
    match *m {
        Method::GET => Some(GET),
        Method::PUT => Some(PUT),
        Method::DELETE => Some(DELETE),
        Method::POST => Some(POST),
        _ => None,
    }
}

/// The answer for the first unimplemented sub-resource present, if any.
fn unimplemented(
    query: &Query,
    level: Level,
    method: &Method,
) -> Option<Result<Operation, S3Error>> {
    let present = UNIMPLEMENTED.iter().find(|(name, ..)| query.has(name))?.0;
    let m = method_code(method);
    let row = UNIMPLEMENTED
        .iter()
        .find(|(name, l, meth, _)| *name == present && *l == level && Some(*meth) == m);
    Some(match row {
        None => Err(method_not_allowed()),
        Some((.., Ans::Ni(n))) => Ok(Operation::NotImplemented(n)),
        Some((.., Ans::Def(d))) => Ok(Operation::Default(*d)),
        Some((.., Ans::Op(op))) => Ok(op.clone()),
        Some((.., Ans::NiOrList(get, list))) => Ok(Operation::NotImplemented(if query.has("id") {
            get
        } else {
            list
        })),
    })
}

fn bucket_operation(method: &Method, query: &Query) -> Result<Operation, S3Error> {
    if let Some(answer) = unimplemented(query, Level::Bucket, method) {
        return answer;
    }
    // Object-only sub-resources on a bucket.
    if query.has("uploadId") {
        return Err(method_not_allowed());
    }
    let only = |m: Method, op: Operation| {
        if *method == m {
            Ok(op)
        } else {
            Err(method_not_allowed())
        }
    };
    if query.has("location") {
        return only(Method::GET, Operation::GetBucketLocation);
    }
    if query.has("versions") {
        return only(Method::GET, Operation::ListObjectVersions);
    }
    if query.has("uploads") {
        return only(Method::GET, Operation::ListMultipartUploads);
    }
    if query.has("delete") {
        return only(Method::POST, Operation::DeleteObjects);
    }
    match *method {
        Method::GET => match query.get("list-type") {
            None => Ok(Operation::ListObjects),
            Some("2") => Ok(Operation::ListObjectsV2),
            Some(_) => Err(S3Error::invalid_argument(
                "Invalid List Type specified in Request",
            )),
        },
        Method::PUT => Ok(Operation::CreateBucket),
        Method::DELETE => Ok(Operation::DeleteBucket),
        Method::HEAD => Ok(Operation::HeadBucket),
        // A browser form upload (multipart/form-data) to the bucket.
        Method::POST => Ok(Operation::NotImplemented("PostObject")),
        _ => Err(method_not_allowed()),
    }
}

fn object_operation(method: &Method, query: &Query, copy: bool) -> Result<Operation, S3Error> {
    if let Some(answer) = unimplemented(query, Level::Object, method) {
        return answer;
    }
    // Bucket-only sub-resources on an object.
    if ["location", "versions", "delete"]
        .iter()
        .any(|s| query.has(s))
    {
        return Err(method_not_allowed());
    }
    if query.has("uploads") {
        return if *method == Method::POST {
            Ok(Operation::CreateMultipartUpload)
        } else {
            Err(method_not_allowed())
        };
    }
    if let Some(upload_id) = query.get("uploadId") {
        let upload_id = upload_id.to_owned();
        return match *method {
            Method::PUT => {
                let part = query
                    .get("partNumber")
                    .ok_or_else(|| S3Error::invalid_argument("UploadPart requires a partNumber"))?;
                let part_number = part
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
                    .ok_or_else(bad_part_number)?;
                Ok(if copy {
                    Operation::UploadPartCopy {
                        upload_id,
                        part_number,
                    }
                } else {
                    Operation::UploadPart {
                        upload_id,
                        part_number,
                    }
                })
            }
            Method::POST => Ok(Operation::CompleteMultipartUpload { upload_id }),
            Method::DELETE => Ok(Operation::AbortMultipartUpload { upload_id }),
            Method::GET => Ok(Operation::ListParts { upload_id }),
            _ => Err(method_not_allowed()),
        };
    }
    match *method {
        Method::GET => Ok(Operation::GetObject),
        Method::HEAD => Ok(Operation::HeadObject),
        // A part number without an upload is not a PutObject: refuse rather than guess.
        Method::PUT if query.has("partNumber") => {
            Err(S3Error::invalid_argument("partNumber requires an uploadId"))
        }
        Method::PUT if copy => Ok(Operation::CopyObject),
        Method::PUT => Ok(Operation::PutObject),
        Method::DELETE => Ok(Operation::DeleteObject),
        _ => Err(method_not_allowed()),
    }
}

/// Routes one request. Errors: `InvalidURI` for undecodable paths, `MethodNotAllowed` for a
/// method the resource does not take, `InvalidArgument` for a bad `partNumber` ...
pub fn route(input: &RouteInput<'_>) -> Result<S3Request, S3Error> {
    let query = Query::try_parse(input.raw_query).ok_or_else(invalid_uri)?;
    let raw_path = if input.raw_path.is_empty() {
        "/"
    } else {
        input.raw_path
    };
    let path = raw_path.strip_prefix('/').ok_or_else(invalid_uri)?;

    let vhost = input
        .host
        .and_then(|h| virtual_host_bucket(h, input.base_domains));
    let virtual_host = vhost.is_some();
    let (bucket, raw_key) = match vhost {
        Some(bucket) => (Some(bucket), path),
        None => match path.split_once('/') {
            None if path.is_empty() => (None, ""),
            None => (Some(decode_path(path)?), ""),
            Some(("", _)) => return Err(invalid_uri()),
            Some((b, k)) => (Some(decode_path(b)?), k),
        },
    };
    let key = if raw_key.is_empty() {
        None
    } else {
        Some(decode_path(raw_key)?)
    };
    if key.as_ref().is_some_and(|k| k.len() > MAX_KEY_LEN) {
        return Err(S3Error::new(
            S3ErrorCode::KeyTooLongError,
            "Your key is too long",
        ));
    }
    if bucket
        .as_ref()
        .is_some_and(|b| b.is_empty() || b.contains('/'))
    {
        return Err(S3Error::new(
            S3ErrorCode::InvalidBucketName,
            "The specified bucket is not valid.",
        ));
    }

    let copy = input.headers.contains_key("x-amz-copy-source");
    let operation = match (&bucket, &key) {
        (None, _) if *input.method == Method::GET => Operation::ListBuckets,
        (Some(_), _) if *input.method == Method::OPTIONS => Operation::Preflight,
        (None, _) => return Err(method_not_allowed()),
        (Some(_), None) => bucket_operation(input.method, &query)?,
        (Some(_), Some(_)) => object_operation(input.method, &query, copy)?,
    };
    Ok(S3Request {
        operation,
        bucket,
        key,
        query,
        virtual_host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use DefaultAnswer as D;
    use Operation as O;

    const BASES: &[&str] = &["s3.example.com", "example.org", "storage.example.com"];

    fn bases() -> Vec<String> {
        BASES.iter().map(|s| s.to_string()).collect()
    }

    fn run(
        method: &str,
        path: &str,
        query: &str,
        host: Option<&str>,
        copy: bool,
    ) -> Result<S3Request, S3Error> {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut headers = http::HeaderMap::new();
        if copy {
            headers.insert("x-amz-copy-source", "/src/key".parse().unwrap());
        }
        let base_domains = bases();
        route(&RouteInput {
            method: &method,
            raw_path: path,
            raw_query: query,
            host,
            headers: &headers,
            base_domains: &base_domains,
        })
    }

    fn up(id: &str, n: u32) -> Operation {
        O::UploadPart {
            upload_id: id.into(),
            part_number: n,
        }
    }

    use S3ErrorCode as E;

    type Row = (
        &'static str,
        &'static str,
        &'static str,
        bool,
        Result<Operation, S3ErrorCode>,
        Option<&'static str>,
    );

    /// `(method, path after the bucket, query, x-amz-copy-source, expected, decoded key)`.
    /// The path is `""` for the bucket itself, else `/raw-key`.
    #[rustfmt::skip]
    fn table() -> Vec<Row> {
        let k = Some("k");
        vec![
            // Bucket operations.
            ("PUT", "", "", false, Ok(O::CreateBucket), None),
            ("DELETE", "", "", false, Ok(O::DeleteBucket), None),
            ("HEAD", "", "", false, Ok(O::HeadBucket), None),
            ("GET", "", "", false, Ok(O::ListObjects), None),
            ("GET", "/", "", false, Ok(O::ListObjects), None),
            ("GET", "", "prefix=a%2Fb&delimiter=%2F&max-keys=10", false, Ok(O::ListObjects), None),
            ("GET", "", "list-type=2&prefix=x&continuation-token=abc", false, Ok(O::ListObjectsV2), None),
            ("GET", "", "list-type=3", false, Err(E::InvalidArgument), None),
            ("GET", "", "location", false, Ok(O::GetBucketLocation), None),
            ("GET", "", "location=", false, Ok(O::GetBucketLocation), None),
            ("GET", "", "versions&prefix=a", false, Ok(O::ListObjectVersions), None),
            ("GET", "", "uploads&max-uploads=3", false, Ok(O::ListMultipartUploads), None),
            ("POST", "", "delete", false, Ok(O::DeleteObjects), None),
            ("POST", "", "", false, Ok(O::NotImplemented("PostObject")), None),
            ("GET", "", "x-id=ListObjects&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=ab", false, Ok(O::ListObjects), None),
            // Sub-resources implemented on the wrong method or level.
            ("PUT", "", "location", false, Err(E::MethodNotAllowed), None),
            ("DELETE", "", "versions", false, Err(E::MethodNotAllowed), None),
            ("GET", "", "delete", false, Err(E::MethodNotAllowed), None),
            ("POST", "", "uploads", false, Err(E::MethodNotAllowed), None),
            ("PUT", "", "uploads", false, Err(E::MethodNotAllowed), None),
            ("GET", "", "uploadId=u", false, Err(E::MethodNotAllowed), None),
            ("PATCH", "", "", false, Err(E::MethodNotAllowed), None),
            // A CORS preflight, whatever the query says.
            ("OPTIONS", "", "", false, Ok(O::Preflight), None),
            ("OPTIONS", "", "acl", false, Ok(O::Preflight), None),
            // Object operations.
            ("GET", "/k", "", false, Ok(O::GetObject), k),
            ("HEAD", "/k", "", false, Ok(O::HeadObject), k),
            ("PUT", "/k", "", false, Ok(O::PutObject), k),
            ("PUT", "/k", "", true, Ok(O::CopyObject), k),
            ("DELETE", "/k", "", false, Ok(O::DeleteObject), k),
            ("GET", "/k", "versionId=null&response-content-type=text%2Fplain&partNumber=2", false, Ok(O::GetObject), k),
            ("HEAD", "/k", "partNumber=1", false, Ok(O::HeadObject), k),
            ("DELETE", "/k", "versionId=3", false, Ok(O::DeleteObject), k),
            ("GET", "/k", "x-id=GetObject&X-Amz-Credential=AK%2F2013&X-Amz-Expires=60", false, Ok(O::GetObject), k),
            ("GET", "/k", "list-type=2", false, Ok(O::GetObject), k),
            ("GET", "/k", "", true, Ok(O::GetObject), k),
            ("POST", "/k", "uploads", false, Ok(O::CreateMultipartUpload), k),
            ("POST", "/k", "uploads=", false, Ok(O::CreateMultipartUpload), k),
            ("PUT", "/k", "partNumber=1&uploadId=u1", false, Ok(up("u1", 1)), k),
            ("PUT", "/k", "uploadId=u%2B1&partNumber=10000", false, Ok(up("u+1", 10000)), k),
            ("PUT", "/k", "partNumber=7&uploadId=u1", true, Ok(O::UploadPartCopy { upload_id: "u1".into(), part_number: 7 }), k),
            ("PUT", "/k", "partNumber=0&uploadId=u1", false, Err(E::InvalidArgument), k),
            ("PUT", "/k", "partNumber=10001&uploadId=u1", false, Err(E::InvalidArgument), k),
            ("PUT", "/k", "partNumber=-1&uploadId=u1", false, Err(E::InvalidArgument), k),
            ("PUT", "/k", "partNumber=abc&uploadId=u1", false, Err(E::InvalidArgument), k),
            ("PUT", "/k", "partNumber=&uploadId=u1", false, Err(E::InvalidArgument), k),
            ("PUT", "/k", "partNumber=99999999999&uploadId=u1", false, Err(E::InvalidArgument), k),
            ("PUT", "/k", "uploadId=u1", false, Err(E::InvalidArgument), k),
            ("PUT", "/k", "partNumber=1", false, Err(E::InvalidArgument), k),
            ("POST", "/k", "uploadId=u1", false, Ok(O::CompleteMultipartUpload { upload_id: "u1".into() }), k),
            ("DELETE", "/k", "uploadId=u1", false, Ok(O::AbortMultipartUpload { upload_id: "u1".into() }), k),
            ("GET", "/k", "uploadId=u1&max-parts=5&part-number-marker=2", false, Ok(O::ListParts { upload_id: "u1".into() }), k),
            ("HEAD", "/k", "uploadId=u1", false, Err(E::MethodNotAllowed), k),
            ("POST", "/k", "", false, Err(E::MethodNotAllowed), k),
            ("PATCH", "/k", "", false, Err(E::MethodNotAllowed), k),
            ("OPTIONS", "/k", "", false, Ok(O::Preflight), k),
            ("GET", "/k", "uploads", false, Err(E::MethodNotAllowed), k),
            ("PUT", "/k", "uploads", false, Err(E::MethodNotAllowed), k),
            ("DELETE", "/k", "uploads", false, Err(E::MethodNotAllowed), k),
            ("GET", "/k", "location", false, Err(E::MethodNotAllowed), k),
            ("GET", "/k", "versions", false, Err(E::MethodNotAllowed), k),
            ("POST", "/k", "delete", false, Err(E::MethodNotAllowed), k),
            // Encoded keys.
            ("GET", "/a%20b", "", false, Ok(O::GetObject), Some("a b")),
            ("GET", "/%C3%A9", "", false, Ok(O::GetObject), Some("é")),
            ("GET", "/é", "", false, Ok(O::GetObject), Some("é")),
            ("GET", "/a+b", "", false, Ok(O::GetObject), Some("a+b")),
            ("GET", "/a%2Bb", "", false, Ok(O::GetObject), Some("a+b")),
            ("GET", "/a%2Fb", "", false, Ok(O::GetObject), Some("a/b")),
            ("PUT", "/dir/", "", false, Ok(O::PutObject), Some("dir/")),
            ("GET", "/dir/sub/file.txt", "", false, Ok(O::GetObject), Some("dir/sub/file.txt")),
            ("GET", "//lead", "", false, Ok(O::GetObject), Some("/lead")),
            ("GET", "/a%25b", "", false, Ok(O::GetObject), Some("a%b")),
            ("GET", "/%E2%82%AC%20100", "", false, Ok(O::GetObject), Some("€ 100")),
            ("GET", "/%FF", "", false, Err(E::InvalidURI), None),
            ("GET", "/%C3", "", false, Err(E::InvalidURI), None),
            ("GET", "/a%zzb", "", false, Err(E::InvalidURI), None),
            ("GET", "/a%2", "", false, Err(E::InvalidURI), None),
            ("GET", "/k", "prefix=%FF", false, Err(E::InvalidURI), None),
        ]
    }

    /// `(method, level, query, expected)` for every unimplemented sub-resource.
    #[rustfmt::skip]
    fn sub_resources() -> Vec<(&'static str, bool, &'static str, Result<Operation, S3ErrorCode>)> {
        let ni = |n: &'static str| Ok(O::NotImplemented(n));
        let (b, o) = (false, true);
        vec![
            ("GET", b, "acl", Ok(O::GetBucketAcl)),
            ("PUT", b, "acl", Ok(O::PutBucketAcl)),
            ("GET", o, "acl", Ok(O::Default(D::GetObjectAcl))),
            ("GET", o, "acl=&versionId=3", Ok(O::Default(D::GetObjectAcl))),
            ("PUT", o, "acl", Ok(O::PutObjectAcl)),
            ("DELETE", o, "acl", Err(E::MethodNotAllowed)),
            ("GET", b, "versioning", Ok(O::Default(D::GetBucketVersioning))),
            ("PUT", b, "versioning", ni("PutBucketVersioning")),
            ("DELETE", b, "versioning", Err(E::MethodNotAllowed)),
            ("GET", o, "versioning", Err(E::MethodNotAllowed)),
            ("GET", b, "tagging", ni("GetBucketTagging")),
            ("PUT", b, "tagging", ni("PutBucketTagging")),
            ("DELETE", b, "tagging", ni("DeleteBucketTagging")),
            ("GET", o, "tagging", ni("GetObjectTagging")),
            ("PUT", o, "tagging", ni("PutObjectTagging")),
            ("PUT", o, "tagging&versionId=1", ni("PutObjectTagging")),
            ("DELETE", o, "tagging", ni("DeleteObjectTagging")),
            ("POST", o, "tagging", Err(E::MethodNotAllowed)),
            ("GET", b, "policy", ni("GetBucketPolicy")),
            ("PUT", b, "policy", ni("PutBucketPolicy")),
            ("DELETE", b, "policy", ni("DeleteBucketPolicy")),
            ("PUT", o, "policy", Err(E::MethodNotAllowed)),
            ("GET", b, "policyStatus", ni("GetBucketPolicyStatus")),
            ("GET", b, "cors", Ok(O::GetBucketCors)),
            ("PUT", b, "cors", Ok(O::PutBucketCors)),
            ("DELETE", b, "cors", Ok(O::DeleteBucketCors)),
            ("PUT", b, "cors&tagging", ni("PutBucketTagging")),
            ("PUT", o, "cors", Err(E::MethodNotAllowed)),
            ("GET", b, "lifecycle", ni("GetBucketLifecycleConfiguration")),
            ("PUT", b, "lifecycle", ni("PutBucketLifecycleConfiguration")),
            ("DELETE", b, "lifecycle", ni("DeleteBucketLifecycle")),
            ("GET", b, "website", ni("GetBucketWebsite")),
            ("PUT", b, "website", ni("PutBucketWebsite")),
            ("DELETE", b, "website", ni("DeleteBucketWebsite")),
            ("GET", b, "encryption", ni("GetBucketEncryption")),
            ("PUT", b, "encryption", ni("PutBucketEncryption")),
            ("DELETE", b, "encryption", ni("DeleteBucketEncryption")),
            ("GET", b, "logging", ni("GetBucketLogging")),
            ("PUT", b, "logging", ni("PutBucketLogging")),
            ("GET", b, "notification", ni("GetBucketNotificationConfiguration")),
            ("PUT", b, "notification", ni("PutBucketNotificationConfiguration")),
            ("GET", b, "replication", ni("GetBucketReplication")),
            ("PUT", b, "replication", ni("PutBucketReplication")),
            ("DELETE", b, "replication", ni("DeleteBucketReplication")),
            ("GET", b, "requestPayment", ni("GetBucketRequestPayment")),
            ("PUT", b, "requestPayment", ni("PutBucketRequestPayment")),
            ("GET", b, "accelerate", ni("GetBucketAccelerateConfiguration")),
            ("PUT", b, "accelerate", ni("PutBucketAccelerateConfiguration")),
            ("GET", b, "analytics&id=a1", ni("GetBucketAnalyticsConfiguration")),
            ("GET", b, "analytics", ni("ListBucketAnalyticsConfigurations")),
            ("PUT", b, "analytics&id=a1", ni("PutBucketAnalyticsConfiguration")),
            ("DELETE", b, "analytics&id=a1", ni("DeleteBucketAnalyticsConfiguration")),
            ("GET", b, "inventory&id=i", ni("GetBucketInventoryConfiguration")),
            ("GET", b, "inventory", ni("ListBucketInventoryConfigurations")),
            ("PUT", b, "inventory&id=i", ni("PutBucketInventoryConfiguration")),
            ("DELETE", b, "inventory&id=i", ni("DeleteBucketInventoryConfiguration")),
            ("GET", b, "metrics&id=m", ni("GetBucketMetricsConfiguration")),
            ("GET", b, "metrics", ni("ListBucketMetricsConfigurations")),
            ("PUT", b, "metrics&id=m", ni("PutBucketMetricsConfiguration")),
            ("DELETE", b, "metrics&id=m", ni("DeleteBucketMetricsConfiguration")),
            ("GET", b, "intelligent-tiering&id=t", ni("GetBucketIntelligentTieringConfiguration")),
            ("GET", b, "intelligent-tiering", ni("ListBucketIntelligentTieringConfigurations")),
            ("PUT", b, "intelligent-tiering&id=t", ni("PutBucketIntelligentTieringConfiguration")),
            ("DELETE", b, "intelligent-tiering&id=t", ni("DeleteBucketIntelligentTieringConfiguration")),
            ("GET", b, "ownershipControls", ni("GetBucketOwnershipControls")),
            ("PUT", b, "ownershipControls", ni("PutBucketOwnershipControls")),
            ("DELETE", b, "ownershipControls", ni("DeleteBucketOwnershipControls")),
            ("GET", b, "publicAccessBlock", ni("GetPublicAccessBlock")),
            ("PUT", b, "publicAccessBlock", ni("PutPublicAccessBlock")),
            ("DELETE", b, "publicAccessBlock", ni("DeletePublicAccessBlock")),
            ("GET", b, "object-lock", ni("GetObjectLockConfiguration")),
            ("PUT", b, "object-lock", ni("PutObjectLockConfiguration")),
            ("GET", b, "metadataTable", ni("GetBucketMetadataTableConfiguration")),
            ("POST", b, "metadataTable", ni("CreateBucketMetadataTableConfiguration")),
            ("DELETE", b, "metadataTable", ni("DeleteBucketMetadataTableConfiguration")),
            ("GET", b, "metadataConfiguration", ni("GetBucketMetadataConfiguration")),
            ("POST", b, "metadataConfiguration", ni("CreateBucketMetadataConfiguration")),
            ("DELETE", b, "metadataConfiguration", ni("DeleteBucketMetadataConfiguration")),
            ("GET", b, "session", ni("CreateSession")),
            ("GET", o, "retention", ni("GetObjectRetention")),
            ("PUT", o, "retention", ni("PutObjectRetention")),
            ("GET", o, "legal-hold", ni("GetObjectLegalHold")),
            ("PUT", o, "legal-hold", ni("PutObjectLegalHold")),
            ("GET", o, "torrent", ni("GetObjectTorrent")),
            ("POST", o, "restore", ni("RestoreObject")),
            ("POST", o, "restore&versionId=2", ni("RestoreObject")),
            ("POST", o, "select&select-type=2", ni("SelectObjectContent")),
            ("GET", o, "attributes", ni("GetObjectAttributes")),
            ("PUT", o, "renameObject", ni("RenameObject")),
            // Object sub-resources on a bucket, and the wrong methods.
            ("GET", b, "attributes", Err(E::MethodNotAllowed)),
            ("POST", b, "restore", Err(E::MethodNotAllowed)),
            ("PUT", o, "restore", Err(E::MethodNotAllowed)),
            ("PUT", o, "torrent", Err(E::MethodNotAllowed)),
            ("HEAD", o, "tagging", Err(E::MethodNotAllowed)),
            ("HEAD", b, "acl", Err(E::MethodNotAllowed)),
            // Unimplemented sub-resources win over implemented ones: nothing falls through.
            ("PUT", o, "partNumber=1&uploadId=u&tagging", ni("PutObjectTagging")),
            ("POST", b, "delete&cors", Err(E::MethodNotAllowed)),
            ("GET", b, "list-type=2&policy", ni("GetBucketPolicy")),
        ]
    }

    /// Path-style and virtual-host requests for bucket `bkt` and the rest of the path.
    fn addressings(rest: &str) -> Vec<(String, Option<String>, bool)> {
        let path_style = format!("/bkt{rest}");
        let vhost_path = if rest.is_empty() {
            "/".to_string()
        } else {
            rest.to_string()
        };
        let mut out = vec![];
        for host in [
            None,
            Some("localhost:9000"),
            Some("127.0.0.1"),
            Some("[::1]:9000"),
            Some("s3.example.com"),
            Some("S3.Example.COM:443"),
            Some("example.org"),
        ] {
            out.push((path_style.clone(), host.map(String::from), false));
        }
        for host in [
            "bkt.s3.example.com",
            "bkt.s3.example.com:9000",
            "BKT.S3.EXAMPLE.COM",
            "bkt.example.org:80",
            "bkt.storage.example.com.",
            "bkt.s3.example.com.:8443",
        ] {
            out.push((vhost_path.clone(), Some(host.to_string()), true));
        }
        out
    }

    fn check(
        method: &str,
        rest: &str,
        query: &str,
        copy: bool,
        want: &Result<Operation, S3ErrorCode>,
        want_key: Option<&str>,
    ) {
        for (path, host, vhost) in addressings(rest) {
            let got = run(method, &path, query, host.as_deref(), copy);
            let ctx = format!("{method} {path}?{query} host={host:?}");
            match (want, got) {
                (Ok(op), Ok(req)) => {
                    assert_eq!(&req.operation, op, "{ctx}");
                    assert_eq!(req.bucket.as_deref(), Some("bkt"), "{ctx}");
                    assert_eq!(req.key.as_deref(), want_key, "{ctx}");
                    assert_eq!(req.virtual_host, vhost, "{ctx}");
                    assert_eq!(req.query, Query::parse(query), "{ctx}");
                }
                (Err(code), Err(e)) => assert_eq!(e.code, *code, "{ctx}: {}", e.message),
                (want, got) => panic!("{ctx}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn operations_in_path_and_virtual_host_style() {
        for (method, rest, query, copy, want, key) in table() {
            check(method, rest, query, copy, &want, key);
        }
    }

    #[test]
    fn unimplemented_sub_resources_never_fall_through() {
        for (method, object, query, want) in sub_resources() {
            let rest = if object { "/k" } else { "" };
            let key = object.then_some("k");
            check(method, rest, query, false, &want, key);
            // A copy-source header does not turn any of them into a copy either.
            check(method, rest, query, true, &want, key);
        }
    }

    #[test]
    fn every_table_row_is_tested() {
        let tested = sub_resources();
        for (name, level, m, _) in UNIMPLEMENTED {
            let method = ["GET", "PUT", "DELETE", "POST"][*m as usize];
            let object = *level == Level::Object;
            assert!(
                tested.iter().any(|(tm, to, q, _)| *tm == method
                    && *to == object
                    && Query::parse(q).has(name)),
                "{method} {name} object={object} untested"
            );
        }
    }

    #[test]
    fn service_level() {
        for host in [None, Some("s3.example.com"), Some("localhost:9000")] {
            let r = run("GET", "/", "", host, false).unwrap();
            assert_eq!(
                (r.operation, r.bucket, r.key, r.virtual_host),
                (O::ListBuckets, None, None, false)
            );
            assert_eq!(
                run("GET", "", "", host, false).unwrap().operation,
                O::ListBuckets
            );
            assert_eq!(
                run("GET", "/", "max-buckets=5&prefix=a", host, false)
                    .unwrap()
                    .operation,
                O::ListBuckets
            );
            for m in ["PUT", "POST", "DELETE", "HEAD", "PATCH", "OPTIONS"] {
                assert_eq!(
                    run(m, "/", "", host, false).unwrap_err().code,
                    E::MethodNotAllowed,
                    "{m}"
                );
            }
        }
    }

    #[test]
    fn addressing_errors() {
        // A key with an empty bucket.
        assert_eq!(
            run("GET", "//key", "", None, false).unwrap_err().code,
            E::InvalidURI
        );
        assert_eq!(
            run("PUT", "//", "", Some("localhost"), false)
                .unwrap_err()
                .code,
            E::InvalidURI
        );
        // Not an origin-form path.
        assert_eq!(
            run("GET", "bkt/key", "", None, false).unwrap_err().code,
            E::InvalidURI
        );
        assert_eq!(
            run("GET", "*", "", None, false).unwrap_err().code,
            E::InvalidURI
        );
        // A bucket that decodes to something with a slash.
        assert_eq!(
            run("GET", "/a%2Fb/k", "", None, false).unwrap_err().code,
            E::InvalidBucketName
        );
        assert_eq!(
            run("GET", "/%FF", "", None, false).unwrap_err().code,
            E::InvalidURI
        );
        // Key length limit is on decoded bytes.
        let ok = format!("/b/{}", "a".repeat(MAX_KEY_LEN));
        assert_eq!(
            run("GET", &ok, "", None, false).unwrap().key.unwrap().len(),
            MAX_KEY_LEN
        );
        let long = format!("/b/{}", "%C3%A9".repeat(MAX_KEY_LEN / 2 + 1));
        assert_eq!(
            run("GET", &long, "", None, false).unwrap_err().code,
            E::KeyTooLongError
        );
    }

    #[test]
    fn virtual_host_matching() {
        let bucket = |host: &str, path: &str| {
            let r = run("GET", path, "", Some(host), false).unwrap();
            (r.bucket, r.key, r.virtual_host)
        };
        // Dotted bucket names.
        assert_eq!(
            bucket("my.photos.s3.example.com", "/a"),
            (Some("my.photos".into()), Some("a".into()), true)
        );
        // Longest base domain wins over a shorter one that also matches.
        let base = vec!["example.com".to_string(), "s3.example.com".to_string()];
        let h = http::HeaderMap::new();
        let r = route(&RouteInput {
            method: &Method::GET,
            raw_path: "/k",
            raw_query: "",
            host: Some("b.s3.example.com"),
            headers: &h,
            base_domains: &base,
        })
        .unwrap();
        assert_eq!(
            (r.bucket.as_deref(), r.key.as_deref()),
            (Some("b"), Some("k"))
        );
        // A host that only ends with the base domain's text is not a virtual host.
        assert_eq!(
            bucket("evils3.example.com", "/b/k"),
            (Some("b".into()), Some("k".into()), false)
        );
        assert_eq!(
            bucket("bkt.s3.example.com.evil.net", "/b/k"),
            (Some("b".into()), Some("k".into()), false)
        );
        // In virtual-host style the first path segment is part of the key.
        assert_eq!(
            bucket("bkt.s3.example.com", "/bkt/k"),
            (Some("bkt".into()), Some("bkt/k".into()), true)
        );
        // No base domains: always path style.
        let r = route(&RouteInput {
            method: &Method::GET,
            raw_path: "/x/k",
            raw_query: "",
            host: Some("bkt.s3.example.com"),
            headers: &h,
            base_domains: &[],
        })
        .unwrap();
        assert_eq!((r.bucket.as_deref(), r.virtual_host), (Some("x"), false));
    }

    #[test]
    fn query_parse() {
        let q = Query::parse("acl&a=1&b=&c=%20x+y&%41=%2B&&d=e=f");
        assert_eq!(
            q.0,
            vec![
                ("acl".into(), "".into()),
                ("a".into(), "1".into()),
                ("b".into(), "".into()),
                ("c".into(), " x+y".into()),
                ("A".into(), "+".into()),
                ("d".into(), "e=f".into()),
            ]
        );
        assert_eq!(q.get("acl"), Some(""));
        assert!(q.has("b") && !q.has("z"));
        assert_eq!(Query::parse(""), Query::default());
        assert_eq!(Query::parse("x=%FF").get("x"), Some("\u{FFFD}"));
        assert_eq!(Query::try_parse("x=%FF"), None);
    }

    #[test]
    fn names_and_writes() {
        let cases: Vec<(Operation, &str, bool)> = vec![
            (O::ListBuckets, "ListBuckets", false),
            (O::CreateBucket, "CreateBucket", true),
            (O::DeleteBucket, "DeleteBucket", true),
            (O::HeadBucket, "HeadBucket", false),
            (O::GetBucketLocation, "GetBucketLocation", false),
            (O::ListObjects, "ListObjects", false),
            (O::ListObjectsV2, "ListObjectsV2", false),
            (O::ListObjectVersions, "ListObjectVersions", false),
            (O::ListMultipartUploads, "ListMultipartUploads", false),
            (O::DeleteObjects, "DeleteObjects", true),
            (O::GetObject, "GetObject", false),
            (O::HeadObject, "HeadObject", false),
            (O::PutObject, "PutObject", true),
            (O::CopyObject, "CopyObject", true),
            (O::DeleteObject, "DeleteObject", true),
            (O::CreateMultipartUpload, "CreateMultipartUpload", true),
            (up("u", 1), "UploadPart", true),
            (
                O::UploadPartCopy {
                    upload_id: "u".into(),
                    part_number: 1,
                },
                "UploadPartCopy",
                true,
            ),
            (
                O::CompleteMultipartUpload {
                    upload_id: "u".into(),
                },
                "CompleteMultipartUpload",
                true,
            ),
            (
                O::AbortMultipartUpload {
                    upload_id: "u".into(),
                },
                "AbortMultipartUpload",
                true,
            ),
            (
                O::ListParts {
                    upload_id: "u".into(),
                },
                "ListParts",
                false,
            ),
            (
                O::Default(D::GetBucketVersioning),
                "GetBucketVersioning",
                false,
            ),
            (O::GetBucketAcl, "GetBucketAcl", false),
            (O::PutBucketAcl, "PutBucketAcl", true),
            (O::PutBucketCors, "PutBucketCors", true),
            (O::Preflight, "Preflight", false),
            (O::Default(D::GetObjectAcl), "GetObjectAcl", false),
            (
                O::NotImplemented("PutObjectTagging"),
                "PutObjectTagging",
                true,
            ),
            (O::DeleteBucketCors, "DeleteBucketCors", true),
            (O::NotImplemented("RestoreObject"), "RestoreObject", true),
            (O::NotImplemented("PostObject"), "PostObject", true),
            (
                O::NotImplemented("GetObjectTagging"),
                "GetObjectTagging",
                false,
            ),
            (
                O::NotImplemented("ListBucketMetricsConfigurations"),
                "ListBucketMetricsConfigurations",
                false,
            ),
            (
                O::NotImplemented("SelectObjectContent"),
                "SelectObjectContent",
                false,
            ),
        ];
        for (op, name, write) in cases {
            assert_eq!(op.name(), name);
            assert_eq!(op.is_write(), write, "{name}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(
            method in prop::sample::select(vec!["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "OPTIONS"]),
            path in ".{0,64}",
            path_bytes in proptest::collection::vec(any::<u8>(), 0..64),
            query in ".{0,64}",
            host in proptest::option::of(".{0,40}"),
            copy in any::<bool>(),
        ) {
            let _ = run(method, &path, &query, host.as_deref(), copy);
            let encoded: String = path_bytes.iter().map(|b| format!("%{b:02X}")).collect();
            let _ = run(method, &format!("/b/{encoded}"), &encoded, host.as_deref(), copy);
            let _ = run(method, &format!("/{encoded}"), &query, Some("x.s3.example.com"), copy);
            let _ = Query::parse(&query);
        }

        #[test]
        fn keys_round_trip_through_encoding(key in "[^\u{0}]{1,40}") {
            let enc = percent_encoding::utf8_percent_encode(&key, percent_encoding::NON_ALPHANUMERIC).to_string();
            let r = run("GET", &format!("/b/{enc}"), "", None, false).unwrap();
            prop_assert_eq!(r.key.as_deref(), Some(key.as_str()));
            let r = run("GET", &format!("/{enc}"), "", Some("b.s3.example.com"), false).unwrap();
            prop_assert_eq!(r.key.as_deref(), Some(key.as_str()));
        }
    }
}
