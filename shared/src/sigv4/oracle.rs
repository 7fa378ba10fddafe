//! AWS's own SigV4 signer, the `aws-sigv4` crate, as the tests' oracle: the gateway signs
//! with [`super::sign::SignerCache`], and the property tests check that it produces exactly
//! what `aws-sigv4` produces. Built for tests and the `testing` feature only: production does
//! not depend on `aws-sigv4`.
//!
//! <https://docs.rs/aws-sigv4>

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation,
    SigningSettings, UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

use super::canonical;
use super::sign::{
    canonical_path_uri, canonical_target, host_header, signing_failed, PayloadHash, MAX_PRESIGN,
};
use crate::config::BackendConfig;
use crate::error::S3Error;

/// What signing for one backend needs, built once per backend (cheap to keep in a config
/// snapshot): the credentials as an `aws-sigv4` identity and the region.
#[derive(Debug)]
pub struct BackendSigner {
    identity: Identity,
    region: String,
}

impl BackendSigner {
    pub fn new(backend: &BackendConfig) -> Self {
        let credentials = Credentials::new(
            &backend.access_key,
            backend.secret_key.expose(),
            None,
            None,
            "s3-balance-backend",
        );
        Self {
            identity: credentials.into(),
            region: backend.region.clone(),
        }
    }

    /// S3's rules: the path is signed as sent (no double encoding, no normalization), and the
    /// payload hash is declared in `x-amz-content-sha256`.
    fn settings(location: SignatureLocation, expires_in: Option<Duration>) -> SigningSettings {
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.signature_location = location;
        settings.expires_in = expires_in;
        settings
    }

    fn params(
        &self,
        settings: SigningSettings,
        now: SystemTime,
    ) -> Result<v4::SigningParams<'_, SigningSettings>, S3Error> {
        v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("s3")
            .time(now)
            .settings(settings)
            .build()
            .map_err(|e| signing_failed("building signing params", e))
    }

    /// See [`sign_request`].
    pub fn sign_request(
        &self,
        parts: &mut http::request::Parts,
        payload: &PayloadHash,
        now: SystemTime,
    ) -> Result<(), S3Error> {
        canonical_target(parts)?;
        let mut headers = Vec::with_capacity(parts.headers.len());
        for (name, value) in &parts.headers {
            let value = value
                .to_str()
                .map_err(|e| signing_failed("header value to sign is not text", e))?;
            headers.push((name.as_str(), value));
        }
        let body = match payload {
            PayloadHash::Unsigned => SignableBody::UnsignedPayload,
            PayloadHash::Sha256(hash) => SignableBody::Precomputed(hash.clone()),
        };
        let uri = parts.uri.to_string();
        let request = SignableRequest::new(parts.method.as_str(), uri, headers.into_iter(), body)
            .map_err(|e| signing_failed("signable request", e))?;
        let params = self
            .params(Self::settings(SignatureLocation::Headers, None), now)?
            .into();
        let (instructions, _signature) = aws_sigv4::http_request::sign(request, &params)
            .map_err(|e| signing_failed("signing", e))?
            .into_parts();
        let (new_headers, _) = instructions.into_parts();
        for header in new_headers {
            let mut value = http::HeaderValue::from_str(header.value())
                .map_err(|e| signing_failed("signed header", e))?;
            value.set_sensitive(header.sensitive());
            parts.headers.insert(header.name(), value);
        }
        Ok(())
    }

    /// See [`presign`].
    pub fn presign(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        expires: Duration,
        now: SystemTime,
    ) -> Result<String, S3Error> {
        let uri = canonical_path_uri(uri)?;
        let host = host_header(&uri)?;
        // S3 accepts 1 second to 7 days.
        let expires = expires.clamp(Duration::from_secs(1), MAX_PRESIGN);
        let uri_string = uri.to_string();
        let request = SignableRequest::new(
            method.as_str(),
            uri_string.as_str(),
            [("host", host.as_str())].into_iter(),
            SignableBody::UnsignedPayload,
        )
        .map_err(|e| signing_failed("signable request", e))?;
        let params = self
            .params(
                Self::settings(SignatureLocation::QueryParams, Some(expires)),
                now,
            )?
            .into();
        let (instructions, _signature) = aws_sigv4::http_request::sign(request, &params)
            .map_err(|e| signing_failed("presigning", e))?
            .into_parts();
        let mut url = uri_string;
        canonical::append_query(
            &mut url,
            instructions.params().iter().map(|(n, v)| (*n, v.as_ref())),
        );
        Ok(url)
    }
}

/// Signs `parts` (absolute URI, headers to send) for `backend` at `now`: adds `Authorization`,
/// `x-amz-date`, `x-amz-content-sha256` and `host` if missing. The URI's path is rewritten to
/// its canonical encoding (same object key, the form that is signed).
pub fn sign_request(
    parts: &mut http::request::Parts,
    backend: &BackendConfig,
    payload: &PayloadHash,
    now: SystemTime,
) -> Result<(), S3Error> {
    BackendSigner::new(backend).sign_request(parts, payload, now)
}

/// A presigned URL for `method` on `uri` (absolute, the backend's), valid for `expires`
/// (clamped to S3's 1 second ..= 7 days).
pub fn presign(
    method: &http::Method,
    uri: &http::Uri,
    backend: &BackendConfig,
    expires: Duration,
    now: SystemTime,
) -> Result<String, S3Error> {
    BackendSigner::new(backend).presign(method, uri, expires, now)
}
