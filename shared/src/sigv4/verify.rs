//! Inbound SigV4 verification: the Authorization header and presigned query strings.
//!
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-auth-using-authorization-header.html>
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html>

use std::time::{Duration, SystemTime};

use subtle::ConstantTimeEq;

use super::canonical::{self, ALGORITHM};
use super::{Identity, Payload, SignedParts, StreamingContext, Verified};
use crate::config::Secret;
use crate::error::{S3Error, S3ErrorCode};

/// How far the request time may be from ours (header auth), and how early a presigned URL may
/// be used.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// Presigned URLs live at most seven days.
pub const MAX_EXPIRES: u64 = 604_800;

pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
pub const STREAMING_SIGNED: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
pub const STREAMING_SIGNED_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
pub const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";

fn header_malformed(detail: &str) -> S3Error {
    S3Error::new(
        S3ErrorCode::AuthorizationHeaderMalformed,
        format!("The authorization header is malformed; {detail}"),
    )
}

fn query_error(detail: &str) -> S3Error {
    S3Error::new(S3ErrorCode::AuthorizationQueryParametersError, detail)
}

pub(crate) fn signature_mismatch() -> S3Error {
    S3Error::new(
        S3ErrorCode::SignatureDoesNotMatch,
        "The request signature we calculated does not match the signature you provided. \
         Check your key and signing method.",
    )
}

fn unknown_key() -> S3Error {
    S3Error::new(
        S3ErrorCode::InvalidAccessKeyId,
        "The AWS Access Key Id you provided does not exist in our records.",
    )
}

/// The parts of a credential scope: `AKID/20130524/us-east-1/s3/aws4_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub access_key: String,
    pub date: String,
    pub region: String,
    pub service: String,
}

impl Credential {
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// Parses a credential; the error is the detail of the malformed message.
pub fn parse_credential(s: &str) -> Result<Credential, &'static str> {
    let parts: Vec<&str> = s.split('/').collect();
    let [access_key, date, region, service, terminator] = parts[..] else {
        return Err("the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".");
    };
    if access_key.is_empty() || region.is_empty() {
        return Err("the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".");
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err("incorrect date format. This date in the credential must be in the format \"yyyyMMdd\".");
    }
    if service != "s3" {
        return Err("incorrect service. This endpoint belongs to \"s3\".");
    }
    if terminator != "aws4_request" {
        return Err("incorrect terminal. This endpoint uses \"aws4_request\".");
    }
    Ok(Credential {
        access_key: access_key.to_owned(),
        date: date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
    })
}

/// A parsed `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthHeader {
    pub credential: Credential,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

fn valid_signature(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Signed header names: lower-case header tokens separated by `;`.
fn parse_signed_headers(s: &str) -> Option<Vec<String>> {
    let names: Vec<String> = s.split(';').map(str::to_owned).collect();
    let ok = names.iter().all(|n| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase() && b != b':' && b != b',')
    });
    ok.then_some(names)
}

/// Parses the Authorization header of SigV4.
pub fn parse_authorization(value: &[u8]) -> Result<AuthHeader, S3Error> {
    let value =
        std::str::from_utf8(value).map_err(|_| header_malformed("it is not valid text."))?;
    let value = value.trim();
    let (algorithm, rest) = value.split_once(' ').unwrap_or((value, ""));
    if algorithm != ALGORITHM {
        return Err(S3Error::new(
            S3ErrorCode::InvalidRequest,
            "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.",
        ));
    }
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for component in rest.split(',') {
        let component = component.trim();
        let Some((key, val)) = component.split_once('=') else {
            return Err(header_malformed(&format!(
                "the authorization component \"{component}\" is malformed."
            )));
        };
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => {
                return Err(header_malformed(&format!(
                    "the authorization component \"{component}\" is malformed."
                )))
            }
        };
        if slot.replace(val).is_some() {
            return Err(header_malformed(&format!(
                "the authorization component \"{key}\" is repeated."
            )));
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return Err(header_malformed(
            "it must contain Credential, SignedHeaders and Signature.",
        ));
    };
    let credential = parse_credential(credential).map_err(header_malformed)?;
    let signed_headers = parse_signed_headers(signed)
        .ok_or_else(|| header_malformed("the SignedHeaders are malformed."))?;
    if !valid_signature(signature) {
        return Err(header_malformed(
            "the Signature is not 64 lower-case hex digits.",
        ));
    }
    Ok(AuthHeader {
        credential,
        signed_headers,
        signature: signature.to_owned(),
    })
}

/// Classifies `x-amz-content-sha256`.
fn parse_payload(
    value: &str,
    streaming_context: impl FnOnce(bool) -> Option<StreamingContext>,
) -> Result<Payload, S3Error> {
    let invalid = || {
        S3Error::new(
            S3ErrorCode::InvalidArgument,
            "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, \
             STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid sha256 value.",
        )
    };
    match value {
        UNSIGNED_PAYLOAD => Ok(Payload::Unsigned),
        STREAMING_UNSIGNED_TRAILER => Ok(Payload::StreamingUnsignedTrailer),
        STREAMING_SIGNED | STREAMING_SIGNED_TRAILER => {
            streaming_context(value == STREAMING_SIGNED_TRAILER)
                .map(Payload::StreamingSigned)
                .ok_or_else(invalid)
        }
        hex_digest if hex_digest.len() == 64 => {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hex_digest, &mut digest).map_err(|_| invalid())?;
            Ok(Payload::Sha256(digest))
        }
        _ => Err(invalid()),
    }
}

/// Compares the signature the client sent with ours, in constant time.
fn check_signature(computed: &str, provided: &str) -> Result<(), S3Error> {
    if bool::from(computed.as_bytes().ct_eq(provided.as_bytes())) {
        Ok(())
    } else {
        Err(signature_mismatch())
    }
}

fn differs_more_than(a: SystemTime, b: SystemTime, limit: Duration) -> bool {
    match a.duration_since(b) {
        Ok(d) => d > limit,
        Err(e) => e.duration() > limit,
    }
}

/// The request time of a header-signed request: `x-amz-date`, else `Date`. Returns the time
/// and its `YYYYMMDDTHHMMSSZ` form as the string to sign uses it.
fn request_time(headers: &http::HeaderMap) -> Result<(SystemTime, String), S3Error> {
    let bad = || {
        S3Error::new(
            S3ErrorCode::AccessDenied,
            "AWS authentication requires a valid Date or x-amz-date header",
        )
    };
    if let Some(v) = headers.get("x-amz-date") {
        let s = v.to_str().map_err(|_| bad())?.trim();
        let t = crate::time::parse_amz_date(s).ok_or_else(bad)?;
        return Ok((t, s.to_owned()));
    }
    if let Some(v) = headers.get(http::header::DATE) {
        let t =
            crate::time::parse_http_date(v.to_str().map_err(|_| bad())?.trim()).ok_or_else(bad)?;
        return Ok((t, crate::time::amz_date(t)));
    }
    Err(bad())
}

pub fn verify<'s>(
    parts: &SignedParts<'_>,
    secret_for: &dyn Fn(&str) -> Option<&'s Secret>,
    now: SystemTime,
) -> Result<Verified, S3Error> {
    verify_with_keys(parts, secret_for, now, &canonical::SigningKeys::default())
}

/// [`verify`], taking signing keys derived before from `keys` (and adding new ones to it): a
/// gateway keeps one [`canonical::SigningKeys`] for its clients' access keys.
pub fn verify_with_keys<'s>(
    parts: &SignedParts<'_>,
    secret_for: &dyn Fn(&str) -> Option<&'s Secret>,
    now: SystemTime,
    keys: &canonical::SigningKeys,
) -> Result<Verified, S3Error> {
    let auth = parts.headers.get(http::header::AUTHORIZATION);
    let pairs = canonical::query_pairs(parts.raw_query);
    let presigned = pairs
        .iter()
        .any(|(k, _)| k.as_slice() == b"X-Amz-Algorithm" || k.as_slice() == b"X-Amz-Signature");
    match (auth, presigned) {
        (Some(_), true) => Err(S3Error::invalid_argument(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, \
             Signature query string parameter or the Authorization header should be specified",
        )),
        (Some(auth), false) => verify_header(parts, auth.as_bytes(), secret_for, now, keys),
        (None, true) => verify_presigned(parts, &pairs, secret_for, now, keys),
        (None, false) if pairs.iter().any(|(k, _)| k.as_slice() == b"AWSAccessKeyId") => {
            // A SigV2 presigned URL: refused, not mistaken for an anonymous request.
            Err(S3Error::new(
                S3ErrorCode::InvalidRequest,
                "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.",
            ))
        }
        (None, false) => {
            // Anonymous: the body may still be aws-chunked or carry a declared hash.
            let payload = match parts.headers.get("x-amz-content-sha256") {
                None => Payload::Unsigned,
                Some(v) => parse_payload(v.to_str().unwrap_or(""), |_| None)?,
            };
            Ok(Verified {
                identity: Identity::Anonymous,
                presigned: false,
                payload,
            })
        }
    }
}

fn verify_header<'s>(
    parts: &SignedParts<'_>,
    auth: &[u8],
    secret_for: &dyn Fn(&str) -> Option<&'s Secret>,
    now: SystemTime,
    keys: &canonical::SigningKeys,
) -> Result<Verified, S3Error> {
    let auth = parse_authorization(auth)?;
    if !auth.signed_headers.iter().any(|h| h == "host") {
        return Err(header_malformed("the SignedHeaders must include host."));
    }
    let secret = secret_for(&auth.credential.access_key).ok_or_else(unknown_key)?;
    let (time, amz_date) = request_time(parts.headers)?;
    if amz_date.get(..8) != Some(auth.credential.date.as_str()) {
        return Err(header_malformed(
            "Invalid credential date. Date is not the same as X-Amz-Date.",
        ));
    }
    if differs_more_than(time, now, MAX_SKEW) {
        return Err(S3Error::new(
            S3ErrorCode::RequestTimeTooSkewed,
            "The difference between the request time and the current time is too large.",
        ));
    }
    let content_sha = parts
        .headers
        .get("x-amz-content-sha256")
        .ok_or_else(|| {
            S3Error::new(
                S3ErrorCode::InvalidRequest,
                "Missing required header for this request: x-amz-content-sha256",
            )
        })?
        .to_str()
        .map_err(|_| S3Error::invalid_argument("x-amz-content-sha256 is not valid text"))?
        .trim()
        .to_owned();

    let scope = auth.credential.scope();
    let key = keys.s3_key(
        &auth.credential.access_key,
        secret.expose(),
        &auth.credential.date,
        &auth.credential.region,
    );
    let signed: Vec<&str> = auth.signed_headers.iter().map(String::as_str).collect();
    let sign_with_query = |query: &str| {
        let creq = canonical::canonical_request(
            parts.method,
            &canonical::canonical_uri(parts.raw_path),
            query,
            parts.headers,
            &signed,
            &content_sha,
        );
        canonical::signature(&key, &canonical::string_to_sign(&amz_date, &scope, &creq))
    };
    let canonical_query = canonical::canonical_query(parts.raw_query, None);
    let as_sent = canonical::as_sent_query(parts.raw_query, None);
    check_signature(&sign_with_query(&canonical_query), &auth.signature).or_else(|e| {
        if as_sent == canonical_query {
            Err(e)
        } else {
            check_signature(&sign_with_query(&as_sent), &auth.signature)
        }
    })?;

    let payload = parse_payload(&content_sha, |signed_trailer| {
        Some(StreamingContext {
            signing_key: key,
            amz_date: amz_date.clone(),
            scope: scope.clone(),
            seed_signature: auth.signature.clone(),
            signed_trailer,
        })
    })?;
    Ok(Verified {
        identity: Identity::AccessKey(auth.credential.access_key),
        presigned: false,
        payload,
    })
}

fn verify_presigned<'s>(
    parts: &SignedParts<'_>,
    pairs: &[(Vec<u8>, Vec<u8>)],
    secret_for: &dyn Fn(&str) -> Option<&'s Secret>,
    now: SystemTime,
    keys: &canonical::SigningKeys,
) -> Result<Verified, S3Error> {
    const MISSING: &str = "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, \
                           X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.";
    let param = |name: &str| -> Result<&str, S3Error> {
        let mut values = pairs
            .iter()
            .filter(|(k, _)| k.as_slice() == name.as_bytes());
        let (Some((_, v)), None) = (values.next(), values.next()) else {
            return Err(query_error(MISSING));
        };
        std::str::from_utf8(v).map_err(|_| query_error(MISSING))
    };
    if param("X-Amz-Algorithm")? != ALGORITHM {
        return Err(query_error(
            "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"",
        ));
    }
    let credential = param("X-Amz-Credential")?;
    let amz_date = param("X-Amz-Date")?;
    let expires = param("X-Amz-Expires")?;
    let signed = param("X-Amz-SignedHeaders")?;
    let signature = param("X-Amz-Signature")?;

    let credential = parse_credential(credential).map_err(|detail| {
        query_error(&format!(
            "Error parsing the X-Amz-Credential parameter; {detail}"
        ))
    })?;
    let time = crate::time::parse_amz_date(amz_date).ok_or_else(|| {
        query_error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    })?;
    // AWS's answers, value by value: not a number, negative, over a week; 0 is a URL that
    // expired as it was made.
    let expires: i64 = expires
        .parse()
        .map_err(|_| query_error("X-Amz-Expires should be a number"))?;
    if expires < 0 {
        return Err(query_error("X-Amz-Expires must be non-negative"));
    }
    let expires = expires.unsigned_abs();
    if expires > MAX_EXPIRES {
        return Err(query_error(
            "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be less than 604800 seconds",
        ));
    }
    let signed_headers = parse_signed_headers(signed)
        .ok_or_else(|| query_error("Error parsing the X-Amz-SignedHeaders parameter"))?;
    if !signed_headers.iter().any(|h| h == "host") {
        return Err(query_error(
            "Error parsing the X-Amz-SignedHeaders parameter; it must include host",
        ));
    }
    if !valid_signature(signature) {
        return Err(query_error("Error parsing the X-Amz-Signature parameter"));
    }
    let secret = secret_for(&credential.access_key).ok_or_else(unknown_key)?;
    if amz_date.get(..8) != Some(credential.date.as_str()) {
        return Err(query_error(
            "Error parsing the X-Amz-Credential parameter; Invalid credential date. Date is not the same as X-Amz-Date.",
        ));
    }
    if expires == 0 || now > time + Duration::from_secs(expires) {
        return Err(S3Error::new(
            S3ErrorCode::AccessDenied,
            "Request has expired",
        ));
    }
    if time > now + MAX_SKEW {
        return Err(S3Error::new(
            S3ErrorCode::AccessDenied,
            "Request is not valid yet",
        ));
    }
    // Headers that change what S3 does (x-amz-*) must be covered by the URL's signature, or
    // whoever holds the URL could add them.
    let unsigned_amz = parts.headers.keys().any(|name| {
        name.as_str().starts_with("x-amz-") && !signed_headers.iter().any(|s| s == name.as_str())
    });
    if unsigned_amz {
        return Err(S3Error::new(
            S3ErrorCode::AccessDenied,
            "There were headers present in the request which were not signed",
        ));
    }

    let key = keys.s3_key(
        &credential.access_key,
        secret.expose(),
        &credential.date,
        &credential.region,
    );
    let signed: Vec<&str> = signed_headers.iter().map(String::as_str).collect();
    let creq = canonical::canonical_request(
        parts.method,
        &canonical::canonical_uri(parts.raw_path),
        &canonical::canonical_query(parts.raw_query, Some("X-Amz-Signature")),
        parts.headers,
        &signed,
        UNSIGNED_PAYLOAD,
    );
    let computed = canonical::signature(
        &key,
        &canonical::string_to_sign(amz_date, &credential.scope(), &creq),
    );
    check_signature(&computed, signature)?;
    Ok(Verified {
        identity: Identity::AccessKey(credential.access_key),
        presigned: true,
        payload: Payload::Unsigned,
    })
}
