//! Multipart UploadIds handed to clients: they carry the backend and the backend's own id,
//! authenticated with the gateway's secret together with the virtual bucket and key the upload
//! was created for, so parts, Complete, Abort and ListParts route with no metadata read, a
//! forged id routes nowhere, and an id used under another bucket or key is `NoSuchUpload`
//! whatever the backend would do (some providers do not check that an upload id belongs to
//! the key it is used with).
//!
//! Format (version 2), before base64url without padding:
//!
//! | bytes | content |
//! |---|---|
//! | 1 | version, `2` |
//! | 1-5 | length of the backend name, unsigned LEB128 |
//! | n | backend name, UTF-8 |
//! | rest − 16 | the backend's own upload id, UTF-8 |
//! | 16 | HMAC-SHA256, first 16 bytes, over `"s3-balance/upload-id/2\0"`, the bucket and the key (each preceded by its length as a LEB128), then everything above |
//!
//! The bucket and key are bound by the tag, not carried: the id stays short, and the request
//! that uses it supplies them. The context prefix keeps a tag made here from being valid for
//! any other HMAC the gateway computes with the same secret. Version 1 ids (no binding) are
//! refused. The result only uses `A-Z a-z 0-9 - _`, so it needs no escaping in a query string.
//!
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/API_CreateMultipartUpload.html>

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::{S3Error, S3ErrorCode};

const VERSION: u8 = 2;
const TAG_LEN: usize = 16;
const CONTEXT: &[u8] = b"s3-balance/upload-id/2\0";
/// Longer than any id a backend hands out; bounds the work done on a hostile input.
const MAX_ENCODED_LEN: usize = 8 * 1024;

/// The backend and its upload id, decoded from a client's UploadId.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadTarget {
    pub backend: String,
    pub backend_upload_id: String,
}

/// Where an upload belongs: the virtual bucket and key it was created for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadScope<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
}

fn tag(scope: UploadScope<'_>, payload: &[u8], secret: &[u8]) -> [u8; TAG_LEN] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(CONTEXT);
    let mut scope_bytes = Vec::with_capacity(scope.bucket.len() + scope.key.len() + 6);
    push_varint(&mut scope_bytes, scope.bucket.len());
    scope_bytes.extend_from_slice(scope.bucket.as_bytes());
    push_varint(&mut scope_bytes, scope.key.len());
    scope_bytes.extend_from_slice(scope.key.as_bytes());
    mac.update(&scope_bytes);
    mac.update(payload);
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&full[..TAG_LEN]);
    out
}

fn push_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Reads an unsigned LEB128 of at most 5 bytes; `(value, bytes read)`.
fn read_varint(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value: usize = 0;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn no_such_upload() -> S3Error {
    S3Error::new(
        S3ErrorCode::NoSuchUpload,
        "The specified upload does not exist. The upload ID may be invalid, or the upload may \
         have been aborted or completed.",
    )
}

/// Encodes `target` into a URL-safe UploadId for an upload of `scope`, authenticated with
/// `secret`.
pub fn encode_upload_id(target: &UploadTarget, scope: UploadScope<'_>, secret: &[u8]) -> String {
    let backend = target.backend.as_bytes();
    let id = target.backend_upload_id.as_bytes();
    let mut buf = Vec::with_capacity(1 + 5 + backend.len() + id.len() + TAG_LEN);
    buf.push(VERSION);
    push_varint(&mut buf, backend.len());
    buf.extend_from_slice(backend);
    buf.extend_from_slice(id);
    let t = tag(scope, &buf, secret);
    buf.extend_from_slice(&t);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Decodes and authenticates an UploadId used for `scope`; anything forged, garbled, or made
/// for another bucket or key is `NoSuchUpload`.
pub fn decode_upload_id(
    upload_id: &str,
    scope: UploadScope<'_>,
    secret: &[u8],
) -> Result<UploadTarget, S3Error> {
    if upload_id.len() > MAX_ENCODED_LEN {
        return Err(no_such_upload());
    }
    let raw = URL_SAFE_NO_PAD
        .decode(upload_id)
        .map_err(|_| no_such_upload())?;
    if raw.len() < 2 + TAG_LEN {
        return Err(no_such_upload());
    }
    let (payload, given) = raw.split_at(raw.len() - TAG_LEN);
    // Authenticate before looking at anything else, so a forged id learns nothing.
    let expected = tag(scope, payload, secret);
    if !bool::from(expected.ct_eq(given)) {
        return Err(no_such_upload());
    }
    if payload[0] != VERSION {
        return Err(no_such_upload());
    }
    let (len, used) = read_varint(&payload[1..]).ok_or_else(no_such_upload)?;
    let rest = &payload[1 + used..];
    if len > rest.len() {
        return Err(no_such_upload());
    }
    let (backend, id) = rest.split_at(len);
    let backend = std::str::from_utf8(backend).map_err(|_| no_such_upload())?;
    let id = std::str::from_utf8(id).map_err(|_| no_such_upload())?;
    Ok(UploadTarget {
        backend: backend.to_owned(),
        backend_upload_id: id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"gateway secret";
    const SCOPE: UploadScope<'static> = UploadScope {
        bucket: "photos",
        key: "2026/cat.jpg",
    };

    fn target(backend: &str, id: &str) -> UploadTarget {
        UploadTarget {
            backend: backend.into(),
            backend_upload_id: id.into(),
        }
    }

    fn encode(t: &UploadTarget) -> String {
        encode_upload_id(t, SCOPE, SECRET)
    }

    fn decode(id: &str) -> Result<UploadTarget, S3Error> {
        decode_upload_id(id, SCOPE, SECRET)
    }

    fn assert_no_such_upload(r: Result<UploadTarget, S3Error>) {
        let err = r.expect_err("must not decode");
        assert_eq!(err.code, S3ErrorCode::NoSuchUpload);
        assert!(err
            .message
            .starts_with("The specified upload does not exist"));
    }

    #[test]
    fn round_trips_a_real_aws_upload_id() {
        let t = target(
            "aws-eu",
            "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA",
        );
        let id = encode(&t);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{id}"
        );
        assert_eq!(decode(&id).unwrap(), t);
    }

    #[test]
    fn an_id_used_under_another_bucket_or_key_is_no_such_upload() {
        let id = encode(&target("b1", "upload-1"));
        for (bucket, key) in [
            ("other", "2026/cat.jpg"),
            ("photos", "2026/dog.jpg"),
            ("photos", "2026/cat.jpg "),
            ("photos2026", "/cat.jpg"),
            // Moving bytes from the bucket to the key must not give the same tag.
            ("photo", "s2026/cat.jpg"),
            ("", "photos/2026/cat.jpg"),
        ] {
            assert_no_such_upload(decode_upload_id(&id, UploadScope { bucket, key }, SECRET));
        }
        assert_eq!(decode(&id).unwrap(), target("b1", "upload-1"));
    }

    #[test]
    fn version_1_ids_are_refused() {
        // A version-1 id (no bucket or key binding) made with the same secret, as earlier
        // releases handed out: its tag covers neither, so it must not route.
        let mut raw = vec![1u8, 2, b'b', b'1'];
        raw.extend_from_slice(b"upload-1");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET).unwrap();
        mac.update(b"s3-balance/upload-id\0");
        mac.update(&raw);
        raw.extend_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
        assert_no_such_upload(decode(&URL_SAFE_NO_PAD.encode(&raw)));
    }

    #[test]
    fn ids_with_backend_names_that_look_like_ids_stay_apart() {
        // The length prefix, not a separator, splits name from id.
        let a = encode(&target("ab", "c"));
        let b = encode(&target("a", "bc"));
        assert_ne!(a, b);
        assert_eq!(decode(&a).unwrap(), target("ab", "c"));
        assert_eq!(decode(&b).unwrap(), target("a", "bc"));
    }

    #[test]
    fn long_backend_names_and_keys_round_trip() {
        let name = "n".repeat(300); // length needs two varint bytes
        let key = "k".repeat(1024);
        let scope = UploadScope {
            bucket: "b",
            key: &key,
        };
        let t = target(&name, "id");
        let id = encode_upload_id(&t, scope, SECRET);
        assert_eq!(decode_upload_id(&id, scope, SECRET).unwrap(), t);
    }

    #[test]
    fn wrong_secret_is_no_such_upload() {
        let id = encode(&target("b1", "x"));
        assert_no_such_upload(decode_upload_id(&id, SCOPE, b"another secret"));
        assert_no_such_upload(decode_upload_id(&id, SCOPE, b""));
    }

    #[test]
    fn garbage_is_no_such_upload() {
        for s in [
            "",
            "a",
            "!!!!",
            "AAAA",
            "====",
            "VXBsb2FkIElE",
            &"A".repeat(10_000),
        ] {
            assert_no_such_upload(decode(s));
        }
    }

    #[test]
    fn tampering_any_byte_fails() {
        let id = encode(&target("backend-1", "2~abcdef"));
        let raw = URL_SAFE_NO_PAD.decode(&id).unwrap();
        for i in 0..raw.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut forged = raw.clone();
                forged[i] ^= flip;
                assert_no_such_upload(decode(&URL_SAFE_NO_PAD.encode(&forged)));
            }
        }
        // Truncated or extended ids fail too.
        assert_no_such_upload(decode(&URL_SAFE_NO_PAD.encode(&raw[..raw.len() - 1])));
        let mut longer = raw.clone();
        longer.push(0);
        assert_no_such_upload(decode(&URL_SAFE_NO_PAD.encode(&longer)));
    }

    proptest! {
        #[test]
        fn round_trip(
            backend in ".{0,40}",
            id in ".{0,200}",
            bucket in "[a-z0-9.-]{0,63}",
            key in ".{0,200}",
            secret in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let t = target(&backend, &id);
            let scope = UploadScope { bucket: &bucket, key: &key };
            let enc = encode_upload_id(&t, scope, &secret);
            prop_assert_eq!(decode_upload_id(&enc, scope, &secret).unwrap(), t);
        }

        #[test]
        fn another_scope_never_decodes(
            key in ".{0,60}",
            other in ".{0,60}",
        ) {
            prop_assume!(key != other);
            let t = target("b1", "id");
            let enc = encode_upload_id(&t, UploadScope { bucket: "b", key: &key }, SECRET);
            let other_scope = UploadScope { bucket: "b", key: &other };
            prop_assert!(decode_upload_id(&enc, other_scope, SECRET).is_err());
        }

        #[test]
        fn random_strings_never_panic(s in ".{0,300}", b64 in "[A-Za-z0-9_-]{0,200}") {
            prop_assert!(decode(&s).is_err());
            prop_assert!(decode(&b64).is_err());
        }
    }
}
