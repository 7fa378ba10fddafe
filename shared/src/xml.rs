//! XML bodies: AWS's error body, the answers the gateway builds, the requests it reads
//! (DeleteObjects, CompleteMultipartUpload) and the backend answers it must rewrite.
//! Written with quick-xml; every renderer has an exact-string test.
//!
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html>

use std::time::SystemTime;

use crate::error::S3Error;
use crate::route::DefaultAnswer;

/// `<?xml ...?><Error><Code/><Message/><Resource/><RequestId/></Error>`; the same RequestId
/// goes in the `x-amz-request-id` header.
pub fn error_body(error: &S3Error, request_id: &str) -> String {
    let _ = (error, request_id);
    todo!("xml helper")
}

/// Parses a backend's error body: `(Code, Message)`. `None` when it is not one.
pub fn parse_error(xml: &[u8]) -> Option<(String, String)> {
    let _ = xml;
    todo!("xml helper")
}

/// ListAllMyBucketsResult: `(name, creation date)` pairs; owner id and display name fixed.
pub fn list_buckets(buckets: &[(String, SystemTime)]) -> String {
    let _ = buckets;
    todo!("xml helper")
}

/// LocationConstraint (empty for us-east-1, as S3 answers).
pub fn bucket_location(region: &str) -> String {
    let _ = region;
    todo!("xml helper")
}

/// The body of a default answer (unversioned, private).
pub fn default_answer(answer: DefaultAnswer) -> String {
    let _ = answer;
    todo!("xml helper")
}

/// InitiateMultipartUploadResult to the client.
pub fn initiate_multipart_result(bucket: &str, key: &str, upload_id: &str) -> String {
    let _ = (bucket, key, upload_id);
    todo!("xml helper")
}

/// The UploadId of a backend's InitiateMultipartUploadResult.
pub fn parse_initiate_multipart_result(xml: &[u8]) -> Result<String, S3Error> {
    let _ = xml;
    todo!("xml helper")
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
pub fn parse_complete_multipart(xml: &[u8]) -> Result<Vec<CompletedPart>, S3Error> {
    let _ = xml;
    todo!("xml helper")
}

/// The CompleteMultipartUpload body sent to the backend.
pub fn complete_multipart(parts: &[CompletedPart]) -> String {
    let _ = parts;
    todo!("xml helper")
}

/// The ETag of a backend's CompleteMultipartUploadResult. A 200 answer carrying an `<Error>`
/// (S3 does that) is returned as that error.
pub fn parse_complete_multipart_result(xml: &[u8]) -> Result<String, S3Error> {
    let _ = xml;
    todo!("xml helper")
}

/// CompleteMultipartUploadResult to the client.
pub fn complete_multipart_result(location: &str, bucket: &str, key: &str, etag: &str) -> String {
    let _ = (location, bucket, key, etag);
    todo!("xml helper")
}

/// A DeleteObjects request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    pub quiet: bool,
    pub keys: Vec<String>,
}

/// Parses a DeleteObjects body: `MalformedXML` past 1000 keys or when malformed.
pub fn parse_delete_objects(xml: &[u8]) -> Result<DeleteRequest, S3Error> {
    let _ = xml;
    todo!("xml helper")
}

/// The outcome of one key of a DeleteObjects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted { key: String },
    Failed { key: String, code: String, message: String },
}

/// DeleteResult: quiet mode lists only failures.
pub fn delete_result(outcomes: &[DeleteOutcome], quiet: bool) -> String {
    let _ = (outcomes, quiet);
    todo!("xml helper")
}

/// `(ETag, LastModified)` of a backend's CopyObjectResult or CopyPartResult.
pub fn parse_copy_result(xml: &[u8]) -> Result<(String, SystemTime), S3Error> {
    let _ = xml;
    todo!("xml helper")
}

/// CopyObjectResult to the client.
pub fn copy_object_result(etag: &str, last_modified: SystemTime) -> String {
    let _ = (etag, last_modified);
    todo!("xml helper")
}

/// CopyPartResult to the client.
pub fn copy_part_result(etag: &str, last_modified: SystemTime) -> String {
    let _ = (etag, last_modified);
    todo!("xml helper")
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

pub fn parse_list_parts(xml: &[u8]) -> Result<PartsPage, S3Error> {
    let _ = xml;
    todo!("xml helper")
}

/// ListPartsResult to the client, with the client's bucket, key and UploadId.
pub fn list_parts_result(bucket: &str, key: &str, upload_id: &str, page: &PartsPage) -> String {
    let _ = (bucket, key, upload_id, page);
    todo!("xml helper")
}

/// Escapes text for an XML element.
pub fn escape(text: &str) -> String {
    let _ = text;
    todo!("xml helper")
}
