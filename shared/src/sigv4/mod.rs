//! AWS Signature Version 4: verifying what clients send (written here: no crate exposes a
//! verifier) and signing what the gateway sends to backends (written here too, with signing
//! keys cached per day; the tests hold it to AWS's `aws-sigv4` crate, [`oracle`]).
//!
//! <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html>
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-authenticating-requests.html>

use std::time::SystemTime;

use crate::body::ByteFilter;
use crate::config::Secret;
use crate::error::S3Error;

pub mod canonical;
pub mod chunked;
#[cfg(any(test, feature = "testing"))]
pub mod oracle;
pub mod sign;
pub mod verify;

#[cfg(test)]
mod tests;

/// The parts of a request that a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct SignedParts<'a> {
    pub method: &'a str,
    /// As sent, still percent-encoded (the canonical URI is built from it, never re-normalized).
    pub raw_path: &'a str,
    /// As sent, without `?`.
    pub raw_query: &'a str,
    pub headers: &'a http::HeaderMap,
}

/// How the request body is covered, from `x-amz-content-sha256` (or the presigned form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// `UNSIGNED-PAYLOAD`, or a presigned URL.
    Unsigned,
    /// A hex SHA-256 the body must hash to.
    Sha256([u8; 32]),
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` (and `...-TRAILER`): aws-chunked with a signature
    /// per chunk chained from the seed signature.
    StreamingSigned(StreamingContext),
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: aws-chunked, unsigned, with a trailing checksum.
    StreamingUnsignedTrailer,
}

/// What the chunk signatures of a streaming upload chain from.
#[derive(Clone, PartialEq, Eq)]
pub struct StreamingContext {
    pub signing_key: [u8; 32],
    /// `20130524T000000Z`.
    pub amz_date: String,
    /// `20130524/us-east-1/s3/aws4_request`.
    pub scope: String,
    /// The Authorization header's signature, hex.
    pub seed_signature: String,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER` also signs the trailer.
    pub signed_trailer: bool,
}

impl std::fmt::Debug for StreamingContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingContext")
            .field("amz_date", &self.amz_date)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Who signed a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Anonymous,
    AccessKey(String),
}

/// A verified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub identity: Identity,
    /// Authenticated by a presigned query string (the client can follow a redirect).
    pub presigned: bool,
    pub payload: Payload,
}

/// Verifies the signature of a request, header or presigned query, at time `now`.
///
/// `secret_for` looks up the secret of an access key id. A request with no signature at all
/// is `Identity::Anonymous` (the caller decides whether anonymous access is allowed).
/// Errors are AWS's: `SignatureDoesNotMatch`, `InvalidAccessKeyId`, `RequestTimeTooSkewed`
/// (15 minutes), `AccessDenied` (expired presigned URL), `AuthorizationHeaderMalformed`,
/// `AuthorizationQueryParametersError`, `InvalidArgument` ...
pub fn verify<'s>(
    parts: &SignedParts<'_>,
    secret_for: &dyn Fn(&str) -> Option<&'s Secret>,
    now: SystemTime,
) -> Result<Verified, S3Error> {
    verify::verify(parts, secret_for, now)
}

/// The filter that turns the request body into the object's bytes, checking what `payload`
/// promises: the SHA-256, each chunk signature, the trailing `x-amz-checksum-*`. `None` when
/// the body passes unchanged. `headers` are the request's (for `x-amz-trailer`).
pub fn body_filter(
    payload: &Payload,
    headers: &http::HeaderMap,
) -> Result<Option<Box<dyn ByteFilter + Send>>, S3Error> {
    let streaming =
        |signing: Option<StreamingContext>| -> Result<Option<Box<dyn ByteFilter + Send>>, S3Error> {
            let trailer = match headers.get("x-amz-trailer") {
                None => None,
                Some(v) => {
                    let name = v.to_str().unwrap_or("");
                    Some(
                        chunked::ChecksumAlgorithm::from_header(name).ok_or_else(|| {
                            S3Error::invalid_argument(
                                "The value specified in the x-amz-trailer header is not supported",
                            )
                        })?,
                    )
                }
            };
            let expected = header_u64(headers, "x-amz-decoded-content-length");
            Ok(Some(Box::new(chunked::ChunkedDecoder::new(
                signing, trailer, expected,
            ))))
        };
    match payload {
        Payload::Unsigned => Ok(None),
        Payload::Sha256(digest) => Ok(Some(Box::new(crate::body::Sha256Check::new(*digest)))),
        Payload::StreamingSigned(ctx) => streaming(Some(ctx.clone())),
        Payload::StreamingUnsignedTrailer => streaming(None),
    }
}

fn header_u64(headers: &http::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The length of the object's bytes: `x-amz-decoded-content-length` for aws-chunked bodies,
/// `Content-Length` otherwise.
pub fn decoded_content_length(payload: &Payload, headers: &http::HeaderMap) -> Option<u64> {
    match payload {
        Payload::StreamingSigned(_) | Payload::StreamingUnsignedTrailer => {
            header_u64(headers, "x-amz-decoded-content-length")
        }
        Payload::Unsigned | Payload::Sha256(_) => header_u64(headers, "content-length"),
    }
}
