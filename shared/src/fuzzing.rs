//! The properties the fuzz targets check (`fuzz/`, `cargo +nightly fuzz run <target>`), one
//! function a target, each taking the fuzzer's raw bytes. Every function asserts that the
//! parser does not panic and, where cheap, a round-trip or an invariant; a failed assertion is
//! a panic, which is what the fuzzer reports.
//!
//! They live here, not in the fuzz crate, so that a stable `cargo test` replays the kept
//! inputs (`fuzz/regressions/<target>/`: the crashes found and the interesting inputs) as
//! regression tests, see the tests below.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::body::ByteFilter;
use crate::config::Secret;
use crate::listing::{self, ListKind};
use crate::route::{self, Query, RouteInput};
use crate::sigv4::{self, canonical, chunked, verify, SignedParts};
use crate::xml;

/// A target's check: the fuzzer's bytes in, a panic when a property fails.
pub type Check = fn(&[u8]);

/// Every target: its name (the file in `fuzz/fuzz_targets/` and the folder of its corpus)
/// and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("route", route),
    ("sigv4", sigv4),
    ("chunked", chunked),
    ("xml_client", xml_client),
    ("xml_backend", xml_backend),
    ("listing", listing),
    ("config", config),
];

/// Splits `data` into `N` fields at `\n`; the last takes the rest (with its `\n`s).
fn fields<const N: usize>(data: &[u8]) -> [&[u8]; N] {
    let mut out = [&data[..0]; N];
    let mut rest = data;
    for slot in out.iter_mut().take(N - 1) {
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                *slot = &rest[..i];
                rest = &rest[i + 1..];
            }
            None => {
                *slot = rest;
                rest = &rest[rest.len()..];
            }
        }
    }
    out[N - 1] = rest;
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `name: value` lines into a header map; lines that are no valid header are skipped.
fn headers(lines: &[u8]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for line in lines.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) {
            map.append(n, v);
        }
    }
    map
}

const METHODS: [http::Method; 6] = [
    http::Method::GET,
    http::Method::PUT,
    http::Method::POST,
    http::Method::DELETE,
    http::Method::HEAD,
    http::Method::OPTIONS,
];

/// The router: `method-byte path \n query \n host \n headers`. Invariants: a routed key is
/// at most 1024 bytes and never empty; a bucket is never empty; `Query::try_parse`, when it
/// succeeds, agrees with `Query::parse`.
pub fn route(data: &[u8]) {
    let Some((&m, data)) = data.split_first() else {
        return;
    };
    let [path, query, host, header_lines] = fields::<4>(data);
    let (path, query, host) = (text(path), text(query), text(host));
    let headers = headers(header_lines);
    let base_domains = vec!["s3.example.com".to_owned()];
    let input = RouteInput {
        method: &METHODS[usize::from(m) % METHODS.len()],
        raw_path: &path,
        raw_query: &query,
        host: (!host.is_empty()).then_some(host.as_str()),
        headers: &headers,
        base_domains: &base_domains,
    };
    if let Ok(request) = route::route(&input) {
        if let Some(key) = &request.key {
            assert!(!key.is_empty() && key.len() <= route::MAX_KEY_LEN);
        }
        if let Some(bucket) = &request.bucket {
            assert!(!bucket.is_empty());
        }
    }
    if let Some(strict) = Query::try_parse(&query) {
        assert_eq!(strict, Query::parse(&query));
    }
}

/// SigV4 parsing: the Authorization header, a Credential, the canonical query, and a whole
/// verification with header or presigned query (`auth \n query \n headers`). Invariant: the
/// canonical query is the same whatever the order of the pairs.
pub fn sigv4(data: &[u8]) {
    let [auth, query, header_lines] = fields::<3>(data);
    if let Ok(parsed) = verify::parse_authorization(auth) {
        assert!(!parsed.signed_headers.is_empty());
        assert_eq!(parsed.signature.len(), 64);
    }
    let _ = verify::parse_credential(&text(auth));
    let query = text(query);
    let canonical_query = canonical::canonical_query(&query, None);
    let reversed: Vec<&str> = query.split('&').rev().collect();
    assert_eq!(
        canonical::canonical_query(&reversed.join("&"), None),
        canonical_query
    );
    let _ = canonical::canonical_query(&query, Some("X-Amz-Signature"));
    let _ = canonical::as_sent_query(&query, Some("X-Amz-Signature"));
    let _ = canonical::canonical_uri(&query);
    let mut headers = headers(header_lines);
    if let Ok(v) = http::HeaderValue::from_bytes(auth) {
        headers.insert(http::header::AUTHORIZATION, v);
    }
    headers
        .entry("x-amz-date")
        .or_insert(http::HeaderValue::from_static("20130524T000000Z"));
    let secret = Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
    let secret_for = |key: &str| (key == "AKIAIOSFODNN7EXAMPLE").then_some(&secret);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600);
    for method in ["GET", "PUT"] {
        let parts = SignedParts {
            method,
            raw_path: "/test.txt",
            raw_query: &query,
            headers: &headers,
        };
        if let Ok(verified) = sigv4::verify(&parts, &secret_for, now) {
            let _ = sigv4::body_filter(&verified.payload, &headers);
        }
    }
}

/// An aws-chunked body of `data` (unsigned, CRC32 trailer), in chunks of `chunk` bytes.
pub fn aws_chunked(data: &[u8], chunk: usize) -> Vec<u8> {
    use base64::Engine as _;
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    let mut crc = chunked::ChecksumAlgorithm::Crc32.hasher();
    crc.update(data);
    let crc = base64::engine::general_purpose::STANDARD.encode(crc.finalize());
    out.extend_from_slice(format!("0\r\nx-amz-checksum-crc32:{crc}\r\n\r\n").as_bytes());
    out
}

/// Runs a fresh decoder over `body` fed in pieces of `step` bytes.
fn decode(
    signing: Option<sigv4::StreamingContext>,
    trailer: Option<chunked::ChecksumAlgorithm>,
    body: &[u8],
    step: usize,
) -> Result<Vec<u8>, crate::S3Error> {
    let mut decoder = chunked::ChunkedDecoder::new(signing, trailer, None);
    let mut out = Vec::new();
    for piece in body.chunks(step.max(1)) {
        for b in decoder.push(Bytes::copy_from_slice(piece))? {
            out.extend_from_slice(&b);
        }
    }
    for b in decoder.finish()? {
        out.extend_from_slice(&b);
    }
    Ok(out)
}

/// The aws-chunked decoder: `mode step body`. Invariants: the outcome does not depend on how
/// the body is cut into pieces; the decoder's output for a body this module encodes is the
/// data encoded.
pub fn chunked(data: &[u8]) {
    let [mode, step, body @ ..] = data else {
        return;
    };
    let signing = (mode & 1 == 1).then(|| sigv4::StreamingContext {
        signing_key: [7; 32],
        amz_date: "20130524T000000Z".into(),
        scope: "20130524/us-east-1/s3/aws4_request".into(),
        seed_signature: "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9".into(),
        signed_trailer: mode & 2 == 2,
    });
    let trailer = (mode & 4 == 4).then_some(chunked::ChecksumAlgorithm::Crc32);
    let whole = decode(signing.clone(), trailer, body, body.len());
    let cut = decode(signing, trailer, body, usize::from(*step));
    match (&whole, &cut) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.code, b.code),
        _ => panic!("the outcome depends on the cut: {whole:?} / {cut:?}"),
    }
    let encoded = aws_chunked(body, usize::from(*step) + 1);
    let decoded = decode(
        None,
        Some(chunked::ChecksumAlgorithm::Crc32),
        &encoded,
        usize::from(*mode) + 1,
    );
    assert_eq!(decoded.as_deref(), Ok(body));
}

/// The readers of clients' bodies: the tree reader, DeleteObjects, CompleteMultipartUpload.
/// Round trips: what parses, written back with the one writer, parses to the same request.
pub fn xml_client(data: &[u8]) {
    let _ = xml::parse(data);
    if let Ok(request) = xml::parse_delete_objects(data) {
        let again = xml::parse_delete_objects(xml::delete_objects(&request).as_bytes());
        assert_eq!(again.as_ref(), Ok(&request));
    }
    if let Ok(parts) = xml::parse_complete_multipart(data) {
        let again = xml::parse_complete_multipart(xml::complete_multipart(&parts).as_bytes());
        assert_eq!(again.as_ref(), Ok(&parts));
    }
}

/// The readers of backends' answers: error bodies, multipart results, copy results, part
/// listings, DeleteResult. Round trip: a DeleteResult written back parses the same.
pub fn xml_backend(data: &[u8]) {
    let _ = xml::parse_error(data);
    let _ = xml::parse_initiate_multipart_result(data);
    let _ = xml::parse_complete_multipart_result(data);
    let _ = xml::parse_copy_result(data);
    let _ = xml::parse_list_parts(data);
    if let Ok(outcomes) = xml::parse_delete_result(data) {
        let again = xml::parse_delete_result(xml::delete_result(&outcomes, false).as_bytes());
        assert_eq!(again.as_ref(), Ok(&outcomes));
        let sent: Vec<String> = outcomes
            .iter()
            .map(|o| match o {
                xml::DeleteOutcome::Deleted { key } | xml::DeleteOutcome::Failed { key, .. } => {
                    key.clone()
                }
            })
            .collect();
        assert_eq!(xml::account_deletes(&sent, &outcomes).len(), sent.len());
    }
}

/// The backend listing page parsers and the merge: `query \n layout-prefix \n page`, the page
/// read as a ListObjectsV2 and as a ListMultipartUploads answer, then merged (twice, as from two
/// backends) and rendered. Invariants: the merged names are strictly ascending, within
/// max-keys, and every rendered answer is well-formed XML.
pub fn listing(data: &[u8]) {
    let [query, layout, page] = fields::<3>(data);
    let query = Query::parse(&text(query));
    let layout = text(layout);
    let objects = listing::parse_backend_page(page, &layout, 0);
    let uploads = listing::parse_backend_uploads(page, &layout);
    for kind in [ListKind::V1, ListKind::V2, ListKind::Versions] {
        let (Ok(params), Ok(page)) = (listing::parse_params(kind, &query), &objects) else {
            continue;
        };
        let _ = listing::backend_query(&params, &layout);
        let mut second = page.clone();
        second.entries.iter_mut().for_each(|e| e.backend = 1);
        let result = listing::merge(&params, vec![page.clone(), second]);
        assert!(result.entries.len() + result.common_prefixes.len() <= params.max_keys);
        let mut names: Vec<&str> = result.entries.iter().map(|e| e.key.as_str()).collect();
        names.extend(result.common_prefixes.iter().map(String::as_str));
        names.sort_unstable();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
        let body = listing::render(&params, "bucket", &result);
        assert!(xml::parse(body.as_bytes()).is_ok(), "{body}");
    }
    if let (Ok(params), Ok(page)) = (listing::parse_upload_params(&query), &uploads) {
        let _ = listing::backend_upload_query(&params, &layout);
        let result = listing::merge_uploads(&params, vec![page.clone(), page.clone()]);
        assert!(result.uploads.len() + result.common_prefixes.len() <= params.max_uploads);
        let order: Vec<(&str, &str)> = result
            .uploads
            .iter()
            .map(|u| (u.key.as_str(), u.upload_id.as_str()))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        let body = listing::render_uploads(&params, "bucket", &result);
        assert!(xml::parse(body.as_bytes()).is_ok(), "{body}");
    }
}

/// The config loader: the text as YAML and as TOML, and `${NAME}` expansion.
pub fn config(data: &[u8]) {
    let text = text(data);
    let _ = crate::config::Config::from_yaml(&text);
    let _ = crate::config::Config::from_toml(&text);
    let lookup = |name: &str| (name.len() < 8).then(|| name.to_lowercase());
    if let Ok(expanded) = crate::config::expand_env(&text, &lookup) {
        let _ = crate::config::Config::from_yaml(&expanded);
    }
    for line in text.lines().take(8) {
        let _ = crate::config::parse_size(line);
        let _ = crate::config::parse_duration(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fuzz/regressions/<target>/`: crashes the fuzzer found (each fixed, with a unit test
    /// beside the fix) and inputs it found interesting, replayed on every `cargo test`.
    #[test]
    fn fuzz_regressions_replay() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
        let mut replayed = 0;
        for (name, check) in TARGETS {
            let dir = root.join(name);
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|entry| entry.expect("readable corpus entry").path())
                .collect();
            files.sort();
            assert!(!files.is_empty(), "no kept inputs for {name}");
            for file in files {
                let data = std::fs::read(&file).expect("readable corpus file");
                let outcome = std::panic::catch_unwind(|| check(&data));
                assert!(outcome.is_ok(), "{name}: {} fails", file.display());
                replayed += 1;
            }
        }
        assert!(replayed >= TARGETS.len());
    }

    #[test]
    fn targets_accept_empty_and_tiny_inputs() {
        for (_, check) in TARGETS {
            check(b"");
            check(b"\n");
            check(b"\x01\x02\n\n\n");
        }
    }

    #[test]
    fn aws_chunked_round_trips() {
        let data = b"hello, chunked world";
        for chunk in [1, 3, 64] {
            let body = aws_chunked(data, chunk);
            assert_eq!(
                decode(None, Some(chunked::ChecksumAlgorithm::Crc32), &body, 5).unwrap(),
                data
            );
        }
    }
}
