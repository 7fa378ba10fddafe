//! The one S3 error type, rendered as AWS's XML error body.
//!
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html>

use std::fmt;

macro_rules! codes {
    ($($name:ident => $status:expr),* $(,)?) => {
        /// S3 error codes as AWS sends them, each with its HTTP status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum S3ErrorCode { $($name),* }
        impl S3ErrorCode {
            /// The code string AWS puts in `<Code>`.
            pub fn as_str(self) -> &'static str {
                match self { $(S3ErrorCode::$name => stringify!($name)),* }
            }
            /// The code from its string, as a backend's error body names it.
            pub fn parse(code: &str) -> Option<Self> {
                match code { $(stringify!($name) => Some(S3ErrorCode::$name),)* _ => None }
            }
            /// The HTTP status AWS answers with for this code.
            pub fn status(self) -> u16 {
                match self { $(S3ErrorCode::$name => $status),* }
            }
        }
    };
}

codes! {
    AccessDenied => 403,
    AccessForbidden => 403,
    AuthorizationHeaderMalformed => 400,
    AuthorizationQueryParametersError => 400,
    BadDigest => 400,
    BadRequest => 400,
    BucketAlreadyExists => 409,
    BucketAlreadyOwnedByYou => 409,
    BucketNotEmpty => 409,
    ConditionalRequestConflict => 409,
    EntityTooLarge => 400,
    EntityTooSmall => 400,
    ExpiredToken => 400,
    IncompleteBody => 400,
    InsufficientStorage => 507,
    InternalError => 500,
    InvalidAccessKeyId => 403,
    InvalidArgument => 400,
    InvalidBucketName => 400,
    InvalidDigest => 400,
    InvalidObjectState => 403,
    InvalidPart => 400,
    InvalidPartOrder => 400,
    InvalidRange => 416,
    InvalidRequest => 400,
    InvalidStorageClass => 400,
    InvalidTag => 400,
    InvalidURI => 400,
    KeyTooLongError => 400,
    MalformedACLError => 400,
    MalformedXML => 400,
    MetadataTooLarge => 400,
    MethodNotAllowed => 405,
    MissingContentLength => 411,
    MissingRequestBodyError => 400,
    MissingSecurityHeader => 400,
    NoSuchBucket => 404,
    NoSuchCORSConfiguration => 404,
    NoSuchKey => 404,
    NoSuchUpload => 404,
    NoSuchVersion => 404,
    NotImplemented => 501,
    NotModified => 304,
    OperationAborted => 409,
    PreconditionFailed => 412,
    RequestTimeTooSkewed => 403,
    RequestTimeout => 400,
    ServiceUnavailable => 503,
    SignatureDoesNotMatch => 403,
    SlowDown => 503,
    UnexpectedContent => 400,
    XAmzContentSHA256Mismatch => 400,
}

impl fmt::Display for S3ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answered to the client. Infrastructure failures are logged where they happen and
/// become `InternalError` or `ServiceUnavailable` here; their details never reach the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Error {
    pub code: S3ErrorCode,
    pub message: String,
    /// `<Resource>`: the bucket or object the request named, when known.
    pub resource: Option<String>,
}

impl S3Error {
    pub fn new(code: S3ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            resource: None,
        }
    }

    pub fn with_resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    pub fn internal() -> Self {
        Self::new(
            S3ErrorCode::InternalError,
            "We encountered an internal error. Please try again.",
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(S3ErrorCode::ServiceUnavailable, message)
    }

    pub fn access_denied() -> Self {
        Self::new(S3ErrorCode::AccessDenied, "Access Denied")
    }

    pub fn not_implemented(what: &str) -> Self {
        Self::new(
            S3ErrorCode::NotImplemented,
            format!("{what} is not implemented by this gateway"),
        )
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(S3ErrorCode::InvalidArgument, message)
    }

    pub fn no_such_bucket(bucket: &str) -> Self {
        Self::new(
            S3ErrorCode::NoSuchBucket,
            "The specified bucket does not exist",
        )
        .with_resource(bucket)
    }

    pub fn no_such_key(key: &str) -> Self {
        Self::new(S3ErrorCode::NoSuchKey, "The specified key does not exist.").with_resource(key)
    }
}

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for S3Error {}
