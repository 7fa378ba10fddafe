//! The canonical request, string to sign and signing key of SigV4, with S3's rules: the path
//! is encoded once (never double-encoded) and never normalized.
//!
//! <https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html>
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html>

use hmac::{Hmac, Mac};
use percent_encoding::percent_decode;
use sha2::{Digest, Sha256};

/// Hex SHA-256 of the empty string.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// URI-encodes `bytes` as SigV4 requires: every byte but the unreserved ones
/// (`A-Z a-z 0-9 - . _ ~`) becomes `%XX`, upper-case hex. With `keep_slash`, `/` is kept (paths).
pub fn uri_encode(bytes: &[u8], keep_slash: bool, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let kept = |b: u8| {
        b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
    };
    out.reserve(bytes.len());
    // Runs of kept bytes are copied at once: this runs over every path and query signed.
    let mut rest = bytes;
    loop {
        let run = rest.iter().position(|&b| !kept(b)).unwrap_or(rest.len());
        // Kept bytes are ASCII, so the run is valid UTF-8.
        out.push_str(std::str::from_utf8(&rest[..run]).unwrap_or_default());
        let Some((&b, tail)) = rest[run..].split_first() else {
            break;
        };
        out.push('%');
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
        rest = tail;
    }
}

/// Lower-case hex of a SHA-256 digest or HMAC, as signatures and hashes are written. (The
/// `hex` crate's `encode` goes through a char iterator: slower on this path.)
pub fn hex32(bytes: &[u8; 32]) -> String {
    let mut out = String::with_capacity(64);
    push_hex32(bytes, &mut out);
    out
}

/// [`hex32`], appended to `out`.
pub fn push_hex32(bytes: &[u8; 32], out: &mut String) {
    let mut buf = [0u8; 64];
    // Cannot fail: the buffer is exactly twice the input.
    let _ = hex::encode_to_slice(bytes, &mut buf);
    // ASCII: `from_utf8` checks it a word at a time.
    out.push_str(std::str::from_utf8(&buf).unwrap_or_default());
}

/// What goes between `url` and a parameter appended to it: `?` when it has no query yet,
/// nothing after a trailing `?` or `&`, `&` otherwise.
pub fn query_separator(url: &str) -> &'static str {
    if !url.contains('?') {
        "?"
    } else if url.ends_with(['?', '&']) {
        ""
    } else {
        "&"
    }
}

/// Appends `params` to `url`'s query, each name and value URI-encoded (a presigned URL's
/// `X-Amz-*` parameters).
pub fn append_query<'a>(url: &mut String, params: impl IntoIterator<Item = (&'a str, &'a str)>) {
    let mut separator = query_separator(url);
    for (name, value) in params {
        url.push_str(separator);
        uri_encode(name.as_bytes(), false, url);
        url.push('=');
        uri_encode(value.as_bytes(), false, url);
        separator = "&";
    }
}

/// Whether `raw_path` is its own canonical URI: not empty, and only unreserved bytes and `/`
/// (nothing to decode or encode). Most object keys are; the check spares the signer a
/// decode and re-encode per segment.
pub fn is_canonical_path(raw_path: &str) -> bool {
    !raw_path.is_empty()
        && raw_path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/'))
}

/// The canonical URI of a raw (as sent) path: each segment is percent-decoded and encoded
/// again, so `/a b`, `/a%20b` and `/a%20b` all sign as `/a%20b`, while an encoded `%2F` stays
/// inside its segment. No `.`/`..`/`//` normalization: S3 keys may contain them.
pub fn canonical_uri(raw_path: &str) -> String {
    if raw_path.is_empty() {
        return "/".to_owned();
    }
    if is_canonical_path(raw_path) {
        return raw_path.to_owned();
    }
    let mut out = String::with_capacity(raw_path.len() + 8);
    for (i, segment) in raw_path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let decoded: Vec<u8> = percent_decode(segment.as_bytes()).collect();
        uri_encode(&decoded, false, &mut out);
    }
    out
}

/// Decodes one query component as form decoding does (`+` is a space), like the AWS SDKs'
/// signers and S3 itself.
pub fn query_decode(s: &str) -> Vec<u8> {
    let plus_as_space: Vec<u8> = s
        .bytes()
        .map(|b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_decode(&plus_as_space).collect()
}

/// The decoded `(key, value)` pairs of a raw query, in order. A piece without `=` has an empty
/// value; empty pieces (`a=1&&b=2`) are skipped.
pub fn query_pairs(raw_query: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (query_decode(k), query_decode(v)),
            None => (query_decode(p), Vec::new()),
        })
        .collect()
}

/// The canonical query string: pairs URI-encoded, sorted by encoded key then value, joined by
/// `&`. `skip` drops parameters by exact (decoded) name, e.g. `X-Amz-Signature` when presigned.
pub fn canonical_query(raw_query: &str, skip: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> = query_pairs(raw_query)
        .into_iter()
        .filter(|(k, _)| skip.is_none_or(|s| k.as_slice() != s.as_bytes()))
        .map(|(k, v)| {
            let (mut ek, mut ev) = (String::new(), String::new());
            uri_encode(&k, false, &mut ek);
            uri_encode(&v, false, &mut ev);
            (ek, ev)
        })
        .collect();
    join_sorted(&mut pairs)
}

/// Encoded `(name, value)` pairs sorted (by name, then value) and joined as a query:
/// `a=1&b=2`.
pub fn join_sorted<K: AsRef<str> + Ord, V: AsRef<str> + Ord>(pairs: &mut [(K, V)]) -> String {
    pairs.sort_unstable();
    let mut out = String::with_capacity(pairs.len() * 24);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k.as_ref());
        out.push('=');
        out.push_str(v.as_ref());
    }
    out
}

/// The query as some clients canonicalize a URL they did not build (botocore with a query
/// already in the URL): pairs kept as sent, only sorted. Tried when the canonical form does not
/// match; both describe the same decoded parameters, so accepting either admits nothing more.
pub fn as_sent_query(raw_query: &str, skip: Option<&str>) -> String {
    let mut pairs: Vec<(&str, &str)> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .filter(|(k, _)| skip.is_none_or(|s| *k != s))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A header value as canonicalized: trimmed, runs of spaces collapsed to one (also runs of
/// tabs and the line breaks of folded headers).
fn push_trimmed_value(value: &[u8], out: &mut Vec<u8>) {
    let mut pending_space = false;
    let mut started = false;
    for &b in value {
        if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            pending_space = started;
        } else {
            if pending_space {
                out.push(b' ');
                pending_space = false;
            }
            out.push(b);
            started = true;
        }
    }
}

/// The canonical headers block (`name:value\n` for each signed header, in the order of
/// `signed`, which clients sort). Several values of one header are joined with `,`. A signed
/// header that is absent signs as an empty value (and so fails unless the client did the same).
pub fn canonical_headers(headers: &http::HeaderMap, signed: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    for name in signed {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        for (i, v) in headers.get_all(*name).iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_trimmed_value(v.as_bytes(), &mut out);
        }
        out.push(b'\n');
    }
    out
}

/// The whole canonical request.
pub fn canonical_request(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    headers: &http::HeaderMap,
    signed: &[&str],
    payload_hash: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(method.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_uri.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_query.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&canonical_headers(headers, signed));
    out.push(b'\n');
    out.extend_from_slice(signed.join(";").as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex32(&Sha256::digest(data).into())
}

/// `AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hex sha256(canonical request)}`.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &[u8]) -> String {
    let mut hex = [0u8; 64];
    // Cannot fail: the buffer is exactly twice the digest.
    let _ = hex::encode_to_slice(Sha256::digest(canonical_request), &mut hex);
    let mut sts = String::with_capacity(ALGORITHM.len() + amz_date.len() + scope.len() + 67);
    sts.push_str(ALGORITHM);
    sts.push('\n');
    sts.push_str(amz_date);
    sts.push('\n');
    sts.push_str(scope);
    sts.push('\n');
    sts.push_str(std::str::from_utf8(&hex).unwrap_or_default());
    sts
}

pub fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `kSigning` of the secret for one day, region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// `kSigning` keys derived before, one per owner (a backend's name, a client's access key):
/// deriving one is four HMACs, as much work as the rest of a signature, and it changes only
/// with the date, the region or the secret. Owners come from the config (callers look the
/// secret up first), so the map stays as small as the config.
#[derive(Default)]
pub struct SigningKeys {
    keys: std::sync::Mutex<std::collections::HashMap<String, CachedKey>>,
}

struct CachedKey {
    /// What the key was derived from: a config reload may change any of them.
    secret: String,
    region: String,
    date: String,
    key: [u8; 32],
    /// HMAC-SHA256 keyed with `key` (its inner and outer pads hashed once): a signature
    /// clones it instead of hashing both pads again.
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys").finish_non_exhaustive()
    }
}

impl SigningKeys {
    /// [`signing_key`] for service `s3`, from the cache when `owner`'s entry was derived from
    /// the same secret, date and region.
    pub fn s3_key(&self, owner: &str, secret: &str, date: &str, region: &str) -> [u8; 32] {
        self.with_s3_key(owner, secret, date, region, |c| c.key)
    }

    /// HMAC-SHA256 keyed with [`Self::s3_key`]'s key, ready for [`signature_with`].
    pub fn s3_mac(&self, owner: &str, secret: &str, date: &str, region: &str) -> Hmac<Sha256> {
        self.with_s3_key(owner, secret, date, region, |c| c.mac.clone())
    }

    fn with_s3_key<T>(
        &self,
        owner: &str,
        secret: &str,
        date: &str,
        region: &str,
        read: impl FnOnce(&CachedKey) -> T,
    ) -> T {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = keys.get(owner) {
            if c.date == date && c.region == region && c.secret == secret {
                return read(c);
            }
        }
        let key = signing_key(secret, date, region, "s3");
        let cached = CachedKey {
            secret: secret.to_owned(),
            region: region.to_owned(),
            date: date.to_owned(),
            key,
            mac: <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key length"),
        };
        let value = read(&cached);
        keys.insert(owner.to_owned(), cached);
        value
    }
}

/// [`signature`] with the signing key's HMAC state from [`SigningKeys::s3_mac`].
pub fn signature_with(mac: Hmac<Sha256>, string_to_sign: &str) -> String {
    let mut out = String::with_capacity(64);
    push_signature_with(mac, string_to_sign, &mut out);
    out
}

/// [`signature_with`], appended to `out` (the `Authorization` header being built).
pub fn push_signature_with(mut mac: Hmac<Sha256>, string_to_sign: &str, out: &mut String) {
    mac.update(string_to_sign.as_bytes());
    push_hex32(&mac.finalize().into_bytes().into(), out);
}

/// The hex signature of a string to sign.
pub fn signature(signing_key: &[u8; 32], string_to_sign: &str) -> String {
    hex32(&hmac(signing_key, string_to_sign.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The run-copying encoder writes exactly what the byte-by-byte definition of
        /// SigV4's UriEncode writes.
        #[test]
        fn uri_encode_matches_the_definition(bytes in proptest::collection::vec(any::<u8>(), 0..64), keep_slash: bool) {
            let mut expected = String::new();
            for &b in &bytes {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
                    expected.push(b as char);
                } else {
                    expected.push_str(&format!("%{b:02X}"));
                }
            }
            let mut out = String::from("prefix:");
            uri_encode(&bytes, keep_slash, &mut out);
            prop_assert_eq!(out, format!("prefix:{expected}"));
        }

        /// The shortcut for paths with nothing to encode writes what decoding and encoding
        /// each segment writes, and is taken only for such paths.
        #[test]
        fn canonical_uri_shortcut_matches_the_segment_by_segment_form(path in "[a-zA-Z0-9._~/%+ $-]{0,24}") {
            let mut expected = String::new();
            for (i, segment) in path.split('/').enumerate() {
                if i > 0 {
                    expected.push('/');
                }
                let decoded: Vec<u8> = percent_decode(segment.as_bytes()).collect();
                uri_encode(&decoded, false, &mut expected);
            }
            if path.is_empty() {
                expected = "/".into();
            }
            prop_assert_eq!(canonical_uri(&path), expected.clone());
            if is_canonical_path(&path) {
                prop_assert_eq!(&path, &expected);
            }
        }

        #[test]
        fn hex32_is_lower_case_hex(bytes in any::<[u8; 32]>()) {
            prop_assert_eq!(hex32(&bytes), hex::encode(bytes));
        }
    }

    #[test]
    fn path_is_encoded_once_and_not_normalized() {
        assert_eq!(canonical_uri("/test$file.text"), "/test%24file.text");
        assert_eq!(canonical_uri("/a b/%20c"), "/a%20b/%20c");
        assert_eq!(canonical_uri("/a%2Fb"), "/a%2Fb");
        assert_eq!(canonical_uri("/a%2fb"), "/a%2Fb");
        assert_eq!(canonical_uri("//x/./../"), "//x/./../");
        assert_eq!(canonical_uri("/a+b"), "/a%2Bb");
        assert_eq!(canonical_uri("/ሴ"), "/%E1%88%B4");
        assert_eq!(canonical_uri(""), "/");
    }

    #[test]
    fn query_is_sorted_encoded_and_plus_is_space() {
        assert_eq!(
            canonical_query("prefix=J&max-keys=2", None),
            "max-keys=2&prefix=J"
        );
        assert_eq!(canonical_query("lifecycle", None), "lifecycle=");
        assert_eq!(canonical_query("a=x+y&b=%2b", None), "a=x%20y&b=%2B");
        assert_eq!(
            canonical_query("b=2&a=1&&X-Amz-Signature=f", Some("X-Amz-Signature")),
            "a=1&b=2"
        );
        assert_eq!(canonical_query("k=2&k=1", None), "k=1&k=2");
    }

    #[test]
    fn as_sent_query_keeps_what_the_client_wrote() {
        assert_eq!(
            as_sent_query("prefix=a/b&list-type=2", None),
            "list-type=2&prefix=a/b"
        );
        assert_eq!(as_sent_query("uploads", None), "uploads=");
        assert_eq!(
            as_sent_query("b=1&X-Amz-Signature=f", Some("X-Amz-Signature")),
            "b=1"
        );
    }

    #[test]
    fn header_values_are_trimmed_and_joined() {
        let mut h = http::HeaderMap::new();
        h.append("my-header", http::HeaderValue::from_static("  a   b  c "));
        h.append("my-header", http::HeaderValue::from_static("d"));
        assert_eq!(
            canonical_headers(&h, &["my-header"]),
            b"my-header:a b c,d\n"
        );
    }
}
