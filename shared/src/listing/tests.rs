use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::OnceLock;

use proptest::prelude::*;

use super::params::common_prefix_of;
use super::render::KEY_SET;
use super::*;
use crate::error::{S3Error, S3ErrorCode};
use crate::route::Query;
use crate::time::from_unix_secs;
use crate::xml::S3_NS as NS;
use base64::Engine as _;
use percent_encoding::{percent_decode_str, utf8_percent_encode};
// The simulated backends escape with quick-xml's own escape, not the gateway's writer.
use quick_xml::escape::escape;

/// One step of a walk over a parsed answer, as a client reads it: an element opened, or
/// closed with its text. `path` holds the local names from the root down to the element.
enum XmlStep<'a> {
    #[allow(dead_code)]
    Open(&'a [String]),
    Close(&'a [String], &'a str),
}

/// Walks the document `xml` (read with the XML layer's reader), calling `f` for every element.
fn walk_xml(
    xml: &[u8],
    mut f: impl FnMut(XmlStep<'_>) -> Result<(), String>,
) -> Result<(), String> {
    fn visit(
        el: &crate::xml::Element,
        path: &mut Vec<String>,
        f: &mut dyn FnMut(XmlStep<'_>) -> Result<(), String>,
    ) -> Result<(), String> {
        path.push(el.name.clone());
        f(XmlStep::Open(path))?;
        for child in &el.children {
            visit(child, path, f)?;
        }
        f(XmlStep::Close(path, &el.text))?;
        path.pop();
        Ok(())
    }
    let root = crate::xml::parse(xml).map_err(|e| e.to_string())?;
    visit(&root, &mut Vec::new(), &mut f)
}

/// The element names one and two levels below the root (`""` where there is none), for
/// matching; deeper elements give `["", ""]`.
fn below_root(path: &[String]) -> [&str; 2] {
    match path {
        [_, a] => [a, ""],
        [_, a, b] => [a, b],
        _ => ["", ""],
    }
}

fn q(pairs: &[(&str, &str)]) -> Query {
    Query(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------
// A tiny reference S3: one sorted bucket answering ListObjectsV2 and ListMultipartUploads.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Obj {
    size: u64,
    etag: String,
    secs: u64,
}

/// What a listing shows, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shown {
    Key(String, u64, String),
    Prefix(String),
}

/// S3's listing semantics on a sorted map: keys after `start_after` under `prefix`, rolled
/// up at the first `delimiter` after the prefix, at most `max` items. Returns (items,
/// truncated). A start-after that is itself a common prefix `P` gets no special care: keys
/// under `P` come back (rolled up into `P` again), the worst a backend may do.
fn s3_list<V>(
    keys: &BTreeMap<String, V>,
    prefix: &str,
    delimiter: Option<&str>,
    start_after: &str,
    max: usize,
) -> (Vec<(String, Option<V>)>, bool)
where
    V: Clone,
{
    let rollup = |k: &str| -> Option<String> {
        let d = delimiter.filter(|d| !d.is_empty())?;
        let rest = k.strip_prefix(prefix)?;
        rest.find(d)
            .map(|i| k[..prefix.len() + i + d.len()].to_string())
    };
    let lower = if start_after >= prefix {
        Bound::Excluded(start_after.to_string())
    } else {
        Bound::Included(prefix.to_string())
    };
    let mut out: Vec<(String, Option<V>)> = Vec::new();
    for (k, v) in keys.range((lower, Bound::Unbounded)) {
        if !k.starts_with(prefix) {
            if k.as_str() > prefix {
                break;
            }
            continue;
        }
        let item = match rollup(k) {
            Some(p) => (p, None),
            None => (k.clone(), Some(v.clone())),
        };
        if out.last().is_some_and(|(last, _)| *last == item.0) {
            continue;
        }
        if out.len() == max {
            return (out, true);
        }
        out.push(item);
    }
    (out, false)
}

fn decode_query(raw: &str) -> BTreeMap<String, String> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let d = |s: &str| percent_decode_str(s).decode_utf8().unwrap().into_owned();
            (d(k), d(v))
        })
        .collect()
}

/// S3's own `encoding-type=url` (a space is `+`, `/` stays).
fn s3_url(s: &str) -> String {
    utf8_percent_encode(s, KEY_SET)
        .to_string()
        .replace("%20", "+")
}

struct SimBackend<'a> {
    objects: &'a BTreeMap<String, Obj>,
    /// Answers at most this many items whatever max-keys says (0: no cap), as a backend
    /// may.
    cap: usize,
}

impl SimBackend<'_> {
    fn list_v2(&self, raw_query: &str) -> String {
        let q = decode_query(raw_query);
        assert_eq!(q.get("list-type").map(String::as_str), Some("2"));
        let url = q.get("encoding-type").map(String::as_str) == Some("url");
        let mut max: usize = q.get("max-keys").map_or(1000, |m| m.parse().unwrap());
        if self.cap > 0 {
            max = max.min(self.cap);
        }
        let prefix = q.get("prefix").map_or("", String::as_str);
        let delimiter = q.get("delimiter").map(String::as_str);
        let start_after = q.get("start-after").map_or("", String::as_str);
        let (items, truncated) = s3_list(self.objects, prefix, delimiter, start_after, max);
        let e = |s: &str| {
            if url {
                s3_url(s)
            } else {
                escape(s).into_owned()
            }
        };
        let mut x = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
        );
        x += &format!(
            "<Name>real</Name><Prefix>{}</Prefix><KeyCount>{}</KeyCount>",
            e(prefix),
            items.len()
        );
        x += &format!("<MaxKeys>{max}</MaxKeys>");
        if url {
            x += "<EncodingType>url</EncodingType>";
        }
        x += &format!("<IsTruncated>{truncated}</IsTruncated>");
        for (name, obj) in &items {
            if let Some(o) = obj {
                x += &format!(
                    "<Contents><Key>{}</Key><LastModified>{}</LastModified><ETag>{}</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents>",
                    e(name),
                    crate::time::iso8601(from_unix_secs(o.secs)),
                    escape(&o.etag),
                    o.size
                );
            }
        }
        for (name, obj) in &items {
            if obj.is_none() {
                x += &format!(
                    "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
                    e(name)
                );
            }
        }
        x + "</ListBucketResult>"
    }
}

// ---------------------------------------------------------------------------------------
// The data: a reference bucket spread over 5 backends.
// ---------------------------------------------------------------------------------------

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

const SEGMENTS: &[&str] = &[
    "photos", "docs", "a", "a b", "ü", "日本", "x+y", "100%", "q&a<b>", "--", "2024--01", "a--b",
    "z", "é", "🎉", " lead", "trail ", "a/b", "",
];
const NAMES: &[&str] = &["f", "file ", "img--", "", "ü", "a", "n--m/", "Ω"];

fn gen_keys(n: usize, seed: u64) -> BTreeSet<String> {
    let mut rng = Rng(seed);
    let mut keys = BTreeSet::new();
    // Keys that are prefixes of others, and folder markers.
    for k in ["photos", "photos/", "photos0", "a", "a/", "a--", "日本/"] {
        keys.insert(k.to_string());
    }
    while keys.len() < n {
        let mut k = String::new();
        for _ in 0..rng.below(4) {
            k.push_str(rng.pick(SEGMENTS));
            k.push('/');
        }
        k.push_str(rng.pick(NAMES));
        k.push_str(&rng.below(2000).to_string());
        if rng.below(10) == 0 {
            k.push('/');
        }
        keys.insert(k);
    }
    keys
}

const LAYOUTS: [&str; 5] = ["vb/", "vb/", "vb/", "", ""];

struct Dataset {
    /// The single bucket the merged listing must equal.
    reference: BTreeMap<String, Obj>,
    backends: Vec<BTreeMap<String, Obj>>,
}

fn dataset(n: usize, seed: u64) -> Dataset {
    let mut rng = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
    let mut reference = BTreeMap::new();
    let mut backends: Vec<BTreeMap<String, Obj>> = vec![BTreeMap::new(); 5];
    for (i, key) in gen_keys(n, seed).into_iter().enumerate() {
        let b = rng.below(5);
        let obj = Obj {
            size: i as u64,
            etag: format!("\"{:032x}\"", rng.next()),
            secs: 1_600_000_000 + i as u64,
        };
        // 3% live twice: an older copy elsewhere, which must lose.
        if rng.below(33) == 0 {
            let other = (b + 1 + rng.below(4)) % 5;
            let stale = Obj {
                size: 999_999,
                etag: "\"stale\"".into(),
                secs: obj.secs - 1000,
            };
            backends[other].insert(format!("{}{key}", LAYOUTS[other]), stale);
        }
        backends[b].insert(format!("{}{key}", LAYOUTS[b]), obj.clone());
        reference.insert(key, obj);
    }
    // Objects of another virtual bucket in the shared real buckets.
    for (b, layout) in LAYOUTS.iter().enumerate() {
        if !layout.is_empty() {
            for k in ["other/x", "vb", "vb0", "va/photos/1", "vc/a"] {
                backends[b].insert(
                    k.to_string(),
                    Obj {
                        size: 1,
                        etag: "\"x\"".into(),
                        secs: 1,
                    },
                );
            }
        }
    }
    Dataset {
        reference,
        backends,
    }
}

fn small() -> &'static Dataset {
    static D: OnceLock<Dataset> = OnceLock::new();
    D.get_or_init(|| dataset(1200, 7))
}

fn large() -> &'static Dataset {
    static D: OnceLock<Dataset> = OnceLock::new();
    D.get_or_init(|| dataset(10_000, 11))
}

// ---------------------------------------------------------------------------------------
// A client paging through the gateway.
// ---------------------------------------------------------------------------------------

/// What a client reads from a rendered page.
#[derive(Default, Debug)]
struct ClientPage {
    items: Vec<Shown>,
    truncated: bool,
    next_marker: Option<String>,
    next_token: Option<String>,
    next_key_marker: Option<String>,
    key_count: Option<usize>,
}

fn client_read(xml: &str) -> ClientPage {
    let mut page = ClientPage::default();
    let mut url = false;
    let (mut key, mut size, mut etag) = (String::new(), 0u64, String::new());
    walk_xml(xml.as_bytes(), |step| {
        if let XmlStep::Close(path, text) = step {
            match below_root(path) {
                ["EncodingType", ""] => url = text == "url",
                ["IsTruncated", ""] => page.truncated = text == "true",
                ["NextMarker", ""] => page.next_marker = Some(text.into()),
                ["NextContinuationToken", ""] => page.next_token = Some(text.into()),
                ["NextKeyMarker", ""] => page.next_key_marker = Some(text.into()),
                ["KeyCount", ""] => page.key_count = Some(text.parse().unwrap()),
                ["Contents" | "Version", "Key"] => key = text.into(),
                ["Contents" | "Version", "Size"] => size = text.parse().unwrap(),
                ["Contents" | "Version", "ETag"] => etag = text.into(),
                ["Contents" | "Version", ""] => {
                    page.items.push(Shown::Key(key.clone(), size, etag.clone()))
                }
                ["CommonPrefixes", "Prefix"] => page.items.push(Shown::Prefix(text.into())),
                _ => {}
            }
        }
        Ok(())
    })
    .unwrap();
    // A client decodes with plain percent-decoding (JavaScript's decodeURIComponent).
    let dec = |s: &mut String| {
        if url {
            assert!(!s.contains('+') && !s.contains(' '), "unencoded name {s:?}");
            *s = percent_decode_str(s).decode_utf8().unwrap().into_owned();
        }
    };
    for item in &mut page.items {
        match item {
            Shown::Key(k, _, _) | Shown::Prefix(k) => dec(k),
        }
    }
    page.next_marker.as_mut().map(dec);
    page.next_key_marker.as_mut().map(dec);
    page
}

struct Case<'a> {
    data: &'a Dataset,
    kind: ListKind,
    prefix: &'a str,
    delimiter: Option<&'a str>,
    page_size: usize,
    url: bool,
    /// Backends answer at most this many items per page (0: as asked).
    cap: usize,
}

fn expected(c: &Case<'_>) -> Vec<Shown> {
    s3_list(&c.data.reference, c.prefix, c.delimiter, "", usize::MAX)
        .0
        .into_iter()
        .map(|(name, obj)| match obj {
            Some(o) => Shown::Key(name, o.size, o.etag),
            None => Shown::Prefix(name),
        })
        .collect()
}

fn page_through(c: &Case<'_>) -> Vec<Shown> {
    let sims: Vec<SimBackend> = c
        .data
        .backends
        .iter()
        .map(|objects| SimBackend {
            objects,
            cap: c.cap,
        })
        .collect();
    let mut all = Vec::new();
    let mut resume: Option<String> = None;
    for round in 0.. {
        assert!(round <= c.data.reference.len() + 1, "no progress");
        let size = c.page_size.to_string();
        let mut pairs: Vec<(&str, &str)> = vec![("prefix", c.prefix), ("max-keys", &size)];
        if let Some(d) = c.delimiter {
            pairs.push(("delimiter", d));
        }
        if c.url {
            pairs.push(("encoding-type", "url"));
        }
        if let Some(r) = resume.as_deref() {
            match c.kind {
                ListKind::V1 => pairs.push(("marker", r)),
                ListKind::V2 => pairs.push(("continuation-token", r)),
                ListKind::Versions => {
                    pairs.extend([("key-marker", r), ("version-id-marker", "null")])
                }
            }
        }
        let params = parse_params(c.kind, &q(&pairs)).unwrap();
        let pages = sims
            .iter()
            .enumerate()
            .map(|(i, sim)| {
                let answer = sim.list_v2(&backend_query(&params, LAYOUTS[i]));
                parse_backend_page(answer.as_bytes(), LAYOUTS[i], i).unwrap()
            })
            .collect();
        let result = merge(&params, pages);
        let page = client_read(&render(&params, "vbucket", &result));
        assert!(page.items.len() <= c.page_size);
        if let Some(n) = page.key_count {
            assert_eq!(n, page.items.len());
        }
        if page.truncated {
            assert!(!page.items.is_empty(), "truncated empty page");
        }
        // A page lists its keys, then its common prefixes (as S3 does): one sorted range.
        let name = |i: &Shown| match i {
            Shown::Key(k, _, _) | Shown::Prefix(k) => k.clone(),
        };
        let mut items = page.items;
        items.sort_by_key(name);
        let last = items.last().map(name);
        all.extend(items);
        if !page.truncated {
            break;
        }
        resume = Some(match c.kind {
            // A V1 client uses NextMarker, or else the last key.
            ListKind::V1 => page.next_marker.or(last).unwrap(),
            ListKind::V2 => page.next_token.unwrap(),
            ListKind::Versions => page.next_key_marker.unwrap(),
        });
    }
    all
}

fn check(c: &Case<'_>) {
    let want = expected(c);
    let got = page_through(c);
    if got != want {
        let at = got
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{:?} prefix {:?} delimiter {:?} size {} url {} cap {}: {} items, want {}; first difference at {at}: got {:?}, want {:?}",
            c.kind,
            c.prefix,
            c.delimiter,
            c.page_size,
            c.url,
            c.cap,
            got.len(),
            want.len(),
            got.get(at),
            want.get(at)
        );
    }
}

const KINDS: [ListKind; 3] = [ListKind::V1, ListKind::V2, ListKind::Versions];
const DELIMITERS: [Option<&str>; 3] = [None, Some("/"), Some("--")];

#[test]
fn reference_data_is_rich() {
    let d = large();
    assert_eq!(d.reference.len(), 10_000);
    let dups: usize = d.backends.iter().map(BTreeMap::len).sum::<usize>() - 10_000 - 5 * 3;
    assert!(dups > 100, "{dups} duplicates");
    let slash = expected(&Case {
        data: d,
        kind: ListKind::V2,
        prefix: "",
        delimiter: Some("/"),
        page_size: 1,
        url: false,
        cap: 0,
    });
    assert!(
        slash
            .iter()
            .filter(|s| matches!(s, Shown::Prefix(_)))
            .count()
            > 10
    );
    assert!(d
        .reference
        .keys()
        .any(|k| k.contains("日本") || k.contains('🎉')));
}

#[test]
fn small_pages_equal_the_single_bucket() {
    for (i, size) in [1, 2, 3, 7].into_iter().enumerate() {
        for (j, kind) in KINDS.into_iter().enumerate() {
            for (k, delimiter) in DELIMITERS.into_iter().enumerate() {
                let prefix = ["", "photos/", "a"][(i + j + k) % 3];
                let url = (i + j + k) % 2 == 0;
                check(&Case {
                    data: small(),
                    kind,
                    prefix,
                    delimiter,
                    page_size: size,
                    url,
                    cap: 0,
                });
            }
        }
    }
}

#[test]
fn large_pages_equal_the_single_bucket() {
    // Every size and kind, the delimiters rotating (a full product takes too long).
    for (i, size) in [100, 999, 1000].into_iter().enumerate() {
        for (j, kind) in KINDS.into_iter().enumerate() {
            let delimiter = DELIMITERS[(i + j) % 3];
            let url = (i + j) % 2 == 1;
            check(&Case {
                data: large(),
                kind,
                prefix: "",
                delimiter,
                page_size: size,
                url,
                cap: 0,
            });
        }
    }
}

#[test]
fn prefixes_equal_the_single_bucket() {
    for (i, prefix) in ["photos/", "a", "日本/", "a b/", "nope/", "a--b/"]
        .into_iter()
        .enumerate()
    {
        for (k, delimiter) in DELIMITERS.into_iter().enumerate() {
            let kind = KINDS[(i + k) % 3];
            check(&Case {
                data: large(),
                kind,
                prefix,
                delimiter,
                page_size: 100,
                url: i % 2 == 0,
                cap: 0,
            });
        }
    }
}

#[test]
fn backends_answering_short_pages_still_merge_exactly() {
    for (k, delimiter) in DELIMITERS.into_iter().enumerate() {
        for cap in [1, 5] {
            let kind = KINDS[k];
            check(&Case {
                data: small(),
                kind,
                prefix: "",
                delimiter,
                page_size: 10,
                url: true,
                cap,
            });
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]
    #[test]
    fn any_page_size_equals_the_single_bucket(
        size in 1usize..=1000, kind in 0usize..3, delimiter in 0usize..3, url: bool,
    ) {
        let data = if size >= 100 { large() } else { small() };
        check(&Case { data, kind: KINDS[kind], prefix: "", delimiter: DELIMITERS[delimiter], page_size: size, url, cap: 0 });
    }
}

// ---------------------------------------------------------------------------------------
// Parameters and backend queries.
// ---------------------------------------------------------------------------------------

fn code_and_message(r: Result<ListParams, S3Error>) -> (S3ErrorCode, String) {
    let e = r.unwrap_err();
    (e.code, e.message)
}

#[test]
fn max_keys_is_validated_and_capped() {
    let max = |v: &str| parse_params(ListKind::V2, &q(&[("max-keys", v)])).map(|p| p.max_keys);
    assert_eq!(parse_params(ListKind::V2, &q(&[])).unwrap().max_keys, 1000);
    assert_eq!(max("0"), Ok(0));
    assert_eq!(max("7"), Ok(7));
    assert_eq!(max("5000"), Ok(1000));
    assert_eq!(max("2147483647"), Ok(1000));
    for bad in ["-1", "abc", "", "1.5", "99999999999999999999"] {
        assert_eq!(
            max(bad).unwrap_err().code,
            S3ErrorCode::InvalidArgument,
            "{bad:?}"
        );
    }
}

#[test]
fn encoding_type_only_url() {
    let p = parse_params(ListKind::V1, &q(&[("encoding-type", "url")])).unwrap();
    assert!(p.url_encoding);
    for bad in ["URL", "base64", ""] {
        let r = parse_params(ListKind::V1, &q(&[("encoding-type", bad)]));
        assert_eq!(code_and_message(r).0, S3ErrorCode::InvalidArgument);
    }
    let p = parse_params(ListKind::V2, &q(&[("fetch-owner", "true")])).unwrap();
    assert!(p.fetch_owner);
    assert!(
        !parse_params(ListKind::V2, &q(&[("fetch-owner", "false")]))
            .unwrap()
            .fetch_owner
    );
}

#[test]
fn garbled_continuation_tokens_are_refused() {
    let good = encode_continuation_token("photos/x.jpg", false);
    let p = parse_params(ListKind::V2, &q(&[("continuation-token", &good)])).unwrap();
    assert_eq!(p.resume_after, "photos/x.jpg");
    assert_eq!(p.continuation_token.as_deref(), Some(good.as_str()));
    let wrong_tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("zphotos");
    let not_utf8 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([b'k', 0xff, 0xfe]);
    for bad in ["", "!!!", "a", "a3g=", &wrong_tag, &not_utf8, "cA"] {
        let r = parse_params(ListKind::V2, &q(&[("continuation-token", bad)]));
        assert_eq!(
            code_and_message(r),
            (
                S3ErrorCode::InvalidArgument,
                "The continuation token provided is incorrect".to_string()
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn a_continuation_token_wins_over_start_after() {
    // Paginators send the first page's start-after on every page (boto3's, the Aliyun
    // example), and minio-py sends the token's own text as start-after: the token decides,
    // as MinIO and moto answer. start-after is still echoed.
    let token = encode_continuation_token("m", false);
    let p = parse_params(
        ListKind::V2,
        &q(&[("start-after", "c"), ("continuation-token", &token)]),
    )
    .unwrap();
    assert_eq!(p.resume_after, "m");
    let p = parse_params(
        ListKind::V2,
        &q(&[("start-after", &token), ("continuation-token", &token)]),
    )
    .unwrap();
    assert_eq!(p.resume_after, "m");
    assert_eq!(p.start_after.as_deref(), Some(token.as_str()));
    let p = parse_params(ListKind::V2, &q(&[("start-after", "x")])).unwrap();
    assert_eq!(p.resume_after, "x");
    // V1 ignores V2's parameters and the other way round.
    let p = parse_params(ListKind::V1, &q(&[("start-after", "x"), ("marker", "b")])).unwrap();
    assert_eq!(p.resume_after, "b");
    let p = parse_params(ListKind::V2, &q(&[("marker", "b")])).unwrap();
    assert_eq!(p.resume_after, "");
}

#[test]
fn version_markers() {
    let p = parse_params(
        ListKind::Versions,
        &q(&[("key-marker", "k"), ("version-id-marker", "null")]),
    )
    .unwrap();
    assert_eq!(p.resume_after, "k");
    assert_eq!(p.marker.as_deref(), Some("k"));
    for bad in [
        vec![("version-id-marker", "null")],
        vec![
            ("key-marker", "k"),
            ("version-id-marker", "3sL4kqtJlcpXroDTDmJ"),
        ],
    ] {
        let r = parse_params(ListKind::Versions, &q(&bad));
        assert_eq!(
            code_and_message(r).0,
            S3ErrorCode::InvalidArgument,
            "{bad:?}"
        );
    }
}

#[test]
fn backend_queries_are_sorted_and_encoded() {
    let p = parse_params(
        ListKind::V1,
        &q(&[("prefix", "photos/"), ("delimiter", "/"), ("max-keys", "2")]),
    )
    .unwrap();
    assert_eq!(
        backend_query(&p, "vb/"),
        "delimiter=%2F&encoding-type=url&list-type=2&max-keys=2&prefix=vb%2Fphotos%2F"
    );
    let p = parse_params(ListKind::V1, &q(&[("marker", "a b+ü")])).unwrap();
    assert_eq!(
        backend_query(&p, ""),
        "encoding-type=url&list-type=2&max-keys=1000&start-after=a%20b%2B%C3%BC"
    );
}

/// After a page that ended on the common prefix `photos/d/`, the next page skips every key
/// under it: backends get a start-after past them, and a backend that lists them anyway
/// does not bring the prefix back.
#[test]
fn resuming_after_a_common_prefix_skips_everything_under_it() {
    let base = [("prefix", "photos/"), ("delimiter", "/"), ("max-keys", "2")];
    let mut with_marker = base.to_vec();
    with_marker.push(("marker", "photos/d/"));
    let p = parse_params(ListKind::V1, &q(&with_marker)).unwrap();
    assert_eq!(p.resume_after, "photos/d/\u{10FFFF}");
    assert_eq!(
        backend_query(&p, "vb/"),
        "delimiter=%2F&encoding-type=url&list-type=2&max-keys=2&prefix=vb%2Fphotos%2F&start-after=vb%2Fphotos%2Fd%2F%F4%8F%BF%BF"
    );
    let naive = BackendPage {
        entries: vec![entry("photos/d/zz", 0, 1), entry("photos/e.jpg", 0, 1)],
        common_prefixes: vec!["photos/d/".into()],
        truncated: false,
    };
    let r = merge(&p, vec![naive.clone()]);
    assert_eq!(keys(&r), ["photos/e.jpg"]);
    assert!(r.common_prefixes.is_empty());

    // The same through a V2 token and a Versions key-marker.
    let token = {
        let first = ListResult {
            common_prefixes: vec!["photos/d/".into()],
            truncated: true,
            next: Some("photos/d/".into()),
            ..ListResult::default()
        };
        next_continuation_token(&first).unwrap()
    };
    let mut v2 = base.to_vec();
    v2.push(("continuation-token", &token));
    let p2 = parse_params(ListKind::V2, &q(&v2)).unwrap();
    assert_eq!(p2.resume_after, p.resume_after);
    let mut versions = base.to_vec();
    versions.extend([("key-marker", "photos/d/"), ("version-id-marker", "null")]);
    let p3 = parse_params(ListKind::Versions, &q(&versions)).unwrap();
    assert_eq!(p3.resume_after, p.resume_after);

    // A marker inside the prefix (not the prefix itself) lists the rest of it, as S3 does.
    let mut inside = base.to_vec();
    inside.push(("marker", "photos/d/m"));
    let p4 = parse_params(ListKind::V1, &q(&inside)).unwrap();
    let r = merge(&p4, vec![naive]);
    assert_eq!(r.common_prefixes, ["photos/d/"]);
    assert_eq!(keys(&r), ["photos/e.jpg"]);
}

// ---------------------------------------------------------------------------------------
// Merge.
// ---------------------------------------------------------------------------------------

fn entry(key: &str, secs: u64, backend: usize) -> ObjectEntry {
    ObjectEntry {
        key: key.into(),
        size: secs,
        etag: format!("\"{backend}\""),
        last_modified: from_unix_secs(secs),
        storage_class: None,
        backend,
    }
}

fn keys(r: &ListResult) -> Vec<&str> {
    r.entries.iter().map(|e| e.key.as_str()).collect()
}

fn page(entries: Vec<ObjectEntry>, prefixes: &[&str], truncated: bool) -> BackendPage {
    BackendPage {
        entries,
        common_prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        truncated,
    }
}

fn params(pairs: &[(&str, &str)]) -> ListParams {
    parse_params(ListKind::V2, &q(pairs)).unwrap()
}

#[test]
fn duplicates_keep_the_newest_copy() {
    let p = params(&[]);
    let r = merge(
        &p,
        vec![
            page(vec![entry("a", 10, 0), entry("b", 50, 0)], &[], false),
            page(vec![entry("a", 20, 1), entry("b", 40, 1)], &[], false),
            page(vec![entry("a", 15, 2), entry("c", 1, 2)], &[], false),
        ],
    );
    assert_eq!(keys(&r), ["a", "b", "c"]);
    assert_eq!(r.entries[0].backend, 1);
    assert_eq!(r.entries[1].backend, 0);
    assert!(!r.truncated);
    assert_eq!(r.next, None);
    // Same age: the first backend in pool order.
    let r = merge(
        &p,
        vec![
            page(vec![entry("a", 5, 3)], &[], false),
            page(vec![entry("a", 5, 1)], &[], false),
        ],
    );
    assert_eq!(r.entries[0].backend, 1);
}

#[test]
fn keys_and_common_prefixes_roll_up_across_backends() {
    let p = params(&[("delimiter", "/")]);
    // Backend 0 ignored the delimiter; backend 1 rolled up itself.
    let r = merge(
        &p,
        vec![
            page(
                vec![entry("a/1", 1, 0), entry("a/2/x", 1, 0), entry("b", 1, 0)],
                &[],
                false,
            ),
            page(vec![entry("a", 1, 1)], &["a/", "c/"], false),
        ],
    );
    assert_eq!(keys(&r), ["a", "b"]);
    assert_eq!(r.common_prefixes, ["a/", "c/"]);
    // max-keys counts keys and prefixes together.
    let p = params(&[("delimiter", "/"), ("max-keys", "2")]);
    let r = merge(
        &p,
        vec![page(
            vec![entry("a", 1, 1), entry("b", 1, 0)],
            &["a/", "c/"],
            false,
        )],
    );
    assert_eq!(keys(&r), ["a"]);
    assert_eq!(r.common_prefixes, ["a/"]);
    assert!(r.truncated);
    assert_eq!(r.next.as_deref(), Some("a/"));
}

#[test]
fn the_cut_waits_for_truncated_backends() {
    let p = params(&[("max-keys", "10")]);
    let r = merge(
        &p,
        vec![
            page(vec![entry("a", 1, 0), entry("c", 1, 0)], &[], true),
            page(
                vec![entry("b", 1, 1), entry("d", 1, 1), entry("e", 1, 1)],
                &[],
                false,
            ),
        ],
    );
    // Backend 0 may hold "c0" < "d": nothing past "c" can be answered yet.
    assert_eq!(keys(&r), ["a", "b", "c"]);
    assert!(r.truncated);
    assert_eq!(r.next.as_deref(), Some("c"));
    // Cut by max-keys with items left over.
    let p = params(&[("max-keys", "2")]);
    let r = merge(
        &p,
        vec![page(
            vec![entry("a", 1, 0), entry("b", 1, 0), entry("c", 1, 0)],
            &[],
            false,
        )],
    );
    assert_eq!(
        (keys(&r), r.truncated, r.next.as_deref()),
        (vec!["a", "b"], true, Some("b"))
    );
    // Exactly max-keys and nothing more: not truncated.
    let r = merge(
        &p,
        vec![
            page(vec![entry("a", 1, 0)], &[], false),
            page(vec![entry("b", 1, 1)], &[], false),
        ],
    );
    assert_eq!(
        (keys(&r), r.truncated, r.next.clone()),
        (vec!["a", "b"], false, None)
    );
}

#[test]
fn max_keys_zero_is_empty_and_complete() {
    let p = params(&[("max-keys", "0")]);
    let r = merge(&p, vec![page(vec![entry("a", 1, 0)], &[], true)]);
    assert_eq!(r, ListResult::default());
}

#[test]
fn items_at_or_before_the_resume_point_are_dropped() {
    let p = params(&[("start-after", "b")]);
    let r = merge(
        &p,
        vec![page(
            vec![entry("a", 1, 0), entry("b", 1, 0), entry("c", 1, 0)],
            &[],
            false,
        )],
    );
    assert_eq!(keys(&r), ["c"]);
}

// ---------------------------------------------------------------------------------------
// Backend answers.
// ---------------------------------------------------------------------------------------

const AWS_PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
<Name>real</Name>
<Prefix>vb/</Prefix>
<KeyCount>3</KeyCount>
<MaxKeys>3</MaxKeys>
<Delimiter>/</Delimiter>
<EncodingType>url</EncodingType>
<IsTruncated>true</IsTruncated>
<Contents>
    <Key>vb/a+b%2Bc%C3%BC%25</Key>
    <LastModified>2013-05-24T00:00:00.000Z</LastModified>
    <ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag>
    <Size>434234</Size>
    <Owner><ID>x</ID><DisplayName>y</DisplayName></Owner>
    <StorageClass>STANDARD_IA</StorageClass>
</Contents>
<Contents>
    <Key>vbz</Key>
    <LastModified>2013-05-24T00:00:00Z</LastModified>
    <ETag>"x"</ETag>
    <Size>1</Size>
</Contents>
<CommonPrefixes><Prefix>vb/photos%2F</Prefix></CommonPrefixes>
<CommonPrefixes><Prefix>other/</Prefix></CommonPrefixes>
<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
</ListBucketResult>"#;

#[test]
fn parses_an_aws_page() {
    let page = parse_backend_page(AWS_PAGE.as_bytes(), "vb/", 3).unwrap();
    assert!(page.truncated);
    assert_eq!(
        page.entries,
        [ObjectEntry {
            key: "a b+cü%".into(),
            size: 434234,
            etag: "\"fba9dede5f27731c9771645a39863328\"".into(),
            last_modified: from_unix_secs(1_369_353_600),
            storage_class: Some("STANDARD_IA".into()),
            backend: 3,
        }]
    );
    assert_eq!(page.common_prefixes, ["photos/"]);
}

#[test]
fn parses_without_namespace_or_encoding() {
    let xml = "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key> a+b </Key>\
               <LastModified>2013-05-24T00:00:00.000Z</LastModified><ETag>&quot;e&quot;</ETag><Size>0</Size>\
               </Contents><Contents><Key><![CDATA[x<y]]></Key><LastModified>2013-05-24T00:00:00.000Z</LastModified>\
               <Size>5</Size></Contents></ListBucketResult>";
    let page = parse_backend_page(xml.as_bytes(), "", 0).unwrap();
    let keys: Vec<&str> = page.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, [" a+b ", "x<y"]);
    assert_eq!(page.entries[0].etag, "\"e\"");
    assert!(!page.truncated);
}

#[test]
fn malformed_pages_are_internal_errors() {
    let lm = "<LastModified>2013-05-24T00:00:00.000Z</LastModified>";
    let cases = [
        "".to_string(),
        "not xml".to_string(),
        "<Error><Code>AccessDenied</Code></Error>".to_string(),
        "<ListBucketResult><IsTruncated>false</IsTruncated>".to_string(),
        "<ListBucketResult></ListBucketResult>".to_string(),
        "<ListBucketResult><IsTruncated>maybe</IsTruncated></ListBucketResult>".to_string(),
        format!("<ListBucketResult><IsTruncated>false</IsTruncated><Contents>{lm}<Size>1</Size></Contents></ListBucketResult>"),
        format!("<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>k</Key>{lm}<Size>-1</Size></Contents></ListBucketResult>"),
        "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>k</Key><LastModified>yesterday</LastModified><Size>1</Size></Contents></ListBucketResult>".to_string(),
        "<ListBucketResult><EncodingType>url</EncodingType><IsTruncated>false</IsTruncated><CommonPrefixes><Prefix>%FF</Prefix></CommonPrefixes></ListBucketResult>".to_string(),
        "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult><ListBucketResult/>".to_string(),
        "<ListBucketResult><IsTruncated>false</IsTruncated></Wrong>".to_string(),
    ];
    for xml in cases {
        let e = parse_backend_page(xml.as_bytes(), "", 0).unwrap_err();
        assert_eq!(e.code, S3ErrorCode::InternalError, "{xml}");
        let e = parse_backend_uploads(xml.as_bytes(), "").unwrap_err();
        assert_eq!(e.code, S3ErrorCode::InternalError, "{xml}");
    }
}

// ---------------------------------------------------------------------------------------
// Exact answers.
// ---------------------------------------------------------------------------------------

const T: u64 = 1_369_353_600; // 2013-05-24T00:00:00Z

fn obj(key: &str) -> ObjectEntry {
    ObjectEntry {
        key: key.into(),
        size: 10,
        etag: "\"abc\"".into(),
        last_modified: from_unix_secs(T),
        storage_class: None,
        backend: 0,
    }
}

#[test]
fn renders_v1_exactly() {
    let p = parse_params(
        ListKind::V1,
        &q(&[
            ("prefix", "photos/"),
            ("delimiter", "/"),
            ("max-keys", "2"),
            ("marker", "photos/a"),
        ]),
    )
    .unwrap();
    let r = ListResult {
        entries: vec![obj("photos/b & c.jpg")],
        common_prefixes: vec!["photos/d/".into()],
        truncated: true,
        next: Some("photos/d/".into()),
    };
    assert_eq!(
        render(&p, "vb", &r),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Name>vb</Name><Prefix>photos/</Prefix><Marker>photos/a</Marker><MaxKeys>2</MaxKeys>\
         <Delimiter>/</Delimiter><IsTruncated>true</IsTruncated><NextMarker>photos/d/</NextMarker>\
         <Contents><Key>photos/b &amp; c.jpg</Key><LastModified>2013-05-24T00:00:00.000Z</LastModified>\
         <ETag>&quot;abc&quot;</ETag><Size>10</Size>\
         <Owner><ID>s3-balance</ID><DisplayName>s3-balance</DisplayName></Owner>\
         <StorageClass>STANDARD</StorageClass></Contents>\
         <CommonPrefixes><Prefix>photos/d/</Prefix></CommonPrefixes></ListBucketResult>"
    );
    let p = parse_params(ListKind::V1, &q(&[])).unwrap();
    assert_eq!(
        render(&p, "vb", &ListResult::default()),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Name>vb</Name><Prefix></Prefix><Marker></Marker><MaxKeys>1000</MaxKeys>\
         <IsTruncated>false</IsTruncated></ListBucketResult>"
    );
}

#[test]
fn renders_v2_exactly() {
    let p = parse_params(
        ListKind::V2,
        &q(&[
            ("list-type", "2"),
            ("prefix", "a b"),
            ("max-keys", "1"),
            ("encoding-type", "url"),
            ("start-after", "a a/ü"),
            ("continuation-token", "a3g"),
        ]),
    )
    .unwrap();
    let mut e = obj("a b+ü.txt");
    e.storage_class = Some("GLACIER".into());
    let r = ListResult {
        entries: vec![e],
        common_prefixes: vec![],
        truncated: true,
        next: Some("a b+ü.txt".into()),
    };
    assert_eq!(
        render(&p, "vb", &r),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Name>vb</Name><Prefix>a%20b</Prefix><KeyCount>1</KeyCount><MaxKeys>1</MaxKeys>\
         <EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>\
         <ContinuationToken>a3g</ContinuationToken><NextContinuationToken>a2EgYivDvC50eHQ</NextContinuationToken>\
         <StartAfter>a%20a/%C3%BC</StartAfter>\
         <Contents><Key>a%20b%2B%C3%BC.txt</Key><LastModified>2013-05-24T00:00:00.000Z</LastModified>\
         <ETag>&quot;abc&quot;</ETag><Size>10</Size><StorageClass>GLACIER</StorageClass></Contents>\
         </ListBucketResult>"
    );
    // fetch-owner adds the Owner; a page ending on a prefix hands out a prefix token.
    let p = parse_params(
        ListKind::V2,
        &q(&[("fetch-owner", "true"), ("delimiter", "/")]),
    )
    .unwrap();
    let r = ListResult {
        entries: vec![obj("k")],
        common_prefixes: vec!["photos/d/".into()],
        truncated: true,
        next: Some("photos/d/".into()),
    };
    assert_eq!(
        render(&p, "vb", &r),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Name>vb</Name><Prefix></Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys>\
         <Delimiter>/</Delimiter><IsTruncated>true</IsTruncated>\
         <NextContinuationToken>cHBob3Rvcy9kLw</NextContinuationToken>\
         <Contents><Key>k</Key><LastModified>2013-05-24T00:00:00.000Z</LastModified>\
         <ETag>&quot;abc&quot;</ETag><Size>10</Size>\
         <Owner><ID>s3-balance</ID><DisplayName>s3-balance</DisplayName></Owner>\
         <StorageClass>STANDARD</StorageClass></Contents>\
         <CommonPrefixes><Prefix>photos/d/</Prefix></CommonPrefixes></ListBucketResult>"
    );
}

#[test]
fn renders_versions_exactly() {
    let p = parse_params(
        ListKind::Versions,
        &q(&[
            ("key-marker", "a"),
            ("version-id-marker", "null"),
            ("max-keys", "1"),
            ("delimiter", "/"),
        ]),
    )
    .unwrap();
    let r = ListResult {
        entries: vec![obj("b<")],
        common_prefixes: vec![],
        truncated: true,
        next: Some("b<".into()),
    };
    assert_eq!(
        render(&p, "vb", &r),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <ListVersionsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Name>vb</Name><Prefix></Prefix><KeyMarker>a</KeyMarker><VersionIdMarker>null</VersionIdMarker>\
         <MaxKeys>1</MaxKeys><Delimiter>/</Delimiter><IsTruncated>true</IsTruncated>\
         <NextKeyMarker>b&lt;</NextKeyMarker><NextVersionIdMarker>null</NextVersionIdMarker>\
         <Version><Key>b&lt;</Key><VersionId>null</VersionId><IsLatest>true</IsLatest>\
         <LastModified>2013-05-24T00:00:00.000Z</LastModified><ETag>&quot;abc&quot;</ETag><Size>10</Size>\
         <StorageClass>STANDARD</StorageClass>\
         <Owner><ID>s3-balance</ID><DisplayName>s3-balance</DisplayName></Owner></Version>\
         </ListVersionsResult>"
    );
}

// ---------------------------------------------------------------------------------------
// Multipart uploads.
// ---------------------------------------------------------------------------------------

fn up(key: &str, id: &str, secs: u64) -> UploadEntry {
    UploadEntry {
        key: key.into(),
        upload_id: id.into(),
        initiated: from_unix_secs(secs),
    }
}

#[test]
fn upload_params_and_queries() {
    let p = parse_upload_params(&q(&[])).unwrap();
    assert_eq!(
        p,
        UploadListParams {
            prefix: String::new(),
            delimiter: None,
            max_uploads: 1000,
            key_marker: None,
            upload_id_marker: None,
            url_encoding: false
        }
    );
    assert_eq!(
        backend_upload_query(&p, "vb/"),
        "encoding-type=url&max-uploads=1000&prefix=vb%2F&uploads"
    );
    assert_eq!(
        parse_upload_params(&q(&[("max-uploads", "3000")]))
            .unwrap()
            .max_uploads,
        1000
    );
    assert_eq!(
        parse_upload_params(&q(&[("max-uploads", "-2")]))
            .unwrap_err()
            .code,
        S3ErrorCode::InvalidArgument
    );
    assert_eq!(
        parse_upload_params(&q(&[("encoding-type", "x")]))
            .unwrap_err()
            .code,
        S3ErrorCode::InvalidArgument
    );
    // upload-id-marker alone is ignored, as S3 does.
    assert_eq!(
        parse_upload_params(&q(&[("upload-id-marker", "u")]))
            .unwrap()
            .upload_id_marker,
        None
    );

    let p = parse_upload_params(&q(&[("key-marker", "k b"), ("delimiter", "/")])).unwrap();
    assert_eq!(
        backend_upload_query(&p, "vb/"),
        "delimiter=%2F&encoding-type=url&key-marker=vb%2Fk%20b&max-uploads=1000&prefix=vb%2F&uploads"
    );
    // With an upload-id-marker the backend must still list the marker's key.
    let p = parse_upload_params(&q(&[("key-marker", "kb"), ("upload-id-marker", "u")])).unwrap();
    assert_eq!(
        backend_upload_query(&p, ""),
        "encoding-type=url&key-marker=ka%F4%8F%BF%BF&max-uploads=1000&uploads"
    );
    // After a common prefix: past everything under it.
    let p = parse_upload_params(&q(&[("key-marker", "a/"), ("delimiter", "/")])).unwrap();
    assert_eq!(
        backend_upload_query(&p, ""),
        "delimiter=%2F&encoding-type=url&key-marker=a%2F%F4%8F%BF%BF&max-uploads=1000&uploads"
    );
}

#[test]
fn merges_uploads_by_key_then_id() {
    let pages = || {
        vec![
            UploadPage {
                uploads: vec![up("a", "2", 5), up("b", "1", 1)],
                common_prefixes: vec![],
                truncated: false,
            },
            UploadPage {
                uploads: vec![up("a", "1", 9), up("a", "3", 1)],
                common_prefixes: vec![],
                truncated: false,
            },
        ]
    };
    let ids = |r: &UploadListResult| {
        r.uploads
            .iter()
            .map(|u| format!("{}{}", u.key, u.upload_id))
            .collect::<Vec<_>>()
    };
    let p = parse_upload_params(&q(&[])).unwrap();
    assert_eq!(ids(&merge_uploads(&p, pages())), ["a1", "a2", "a3", "b1"]);
    let p = parse_upload_params(&q(&[("key-marker", "a"), ("upload-id-marker", "1")])).unwrap();
    assert_eq!(ids(&merge_uploads(&p, pages())), ["a2", "a3", "b1"]);
    let p = parse_upload_params(&q(&[("key-marker", "a")])).unwrap();
    assert_eq!(ids(&merge_uploads(&p, pages())), ["b1"]);
    let p = parse_upload_params(&q(&[("max-uploads", "2")])).unwrap();
    let r = merge_uploads(&p, pages());
    assert_eq!(ids(&r), ["a1", "a2"]);
    assert!(r.truncated);
    assert_eq!(
        (
            r.next_key_marker.as_deref(),
            r.next_upload_id_marker.as_deref()
        ),
        (Some("a"), Some("2"))
    );
    let p = parse_upload_params(&q(&[("max-uploads", "0")])).unwrap();
    assert_eq!(merge_uploads(&p, pages()), UploadListResult::default());
}

#[test]
fn parses_and_renders_uploads_exactly() {
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>real</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>vb/my-movie.m2ts</NextKeyMarker><NextUploadIdMarker>YW55IGlk</NextUploadIdMarker>
  <EncodingType>url</EncodingType><MaxUploads>3</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>vb/my+divisor</Key><UploadId>XMgbGlr</UploadId>
<Initiator><ID>arn:aws:iam::111122223333:user/x</ID><DisplayName>x</DisplayName></Initiator>
<Owner><ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID><DisplayName>y</DisplayName></Owner>
<StorageClass>STANDARD</StorageClass><Initiated>2013-05-24T00:00:00.000Z</Initiated></Upload>
  <Upload><Key>elsewhere</Key><UploadId>z</UploadId><Initiated>2013-05-24T00:00:00.000Z</Initiated></Upload>
  <CommonPrefixes><Prefix>vb/photos%2F</Prefix></CommonPrefixes>
</ListMultipartUploadsResult>"#;
    let page = parse_backend_uploads(xml.as_bytes(), "vb/").unwrap();
    assert_eq!(
        page,
        UploadPage {
            uploads: vec![up("my divisor", "XMgbGlr", T)],
            common_prefixes: vec!["photos/".into()],
            truncated: true
        }
    );
    let p = parse_upload_params(&q(&[
        ("delimiter", "/"),
        ("max-uploads", "2"),
        ("encoding-type", "url"),
    ]))
    .unwrap();
    let r = merge_uploads(&p, vec![page]);
    assert_eq!(
        render_uploads(&p, "vb", &r),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <ListMultipartUploadsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Bucket>vb</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>\
         <NextKeyMarker>photos/</NextKeyMarker><Prefix></Prefix><Delimiter>/</Delimiter>\
         <MaxUploads>2</MaxUploads><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>\
         <Upload><Key>my%20divisor</Key><UploadId>XMgbGlr</UploadId>\
         <Initiator><ID>s3-balance</ID><DisplayName>s3-balance</DisplayName></Initiator>\
         <Owner><ID>s3-balance</ID><DisplayName>s3-balance</DisplayName></Owner>\
         <StorageClass>STANDARD</StorageClass><Initiated>2013-05-24T00:00:00.000Z</Initiated></Upload>\
         <CommonPrefixes><Prefix>photos/</Prefix></CommonPrefixes></ListMultipartUploadsResult>"
    );
}

/// (key, initiated, backend's own id) as one backend holds its uploads.
type SimUpload = (String, u64, String);
type SimUploads = Vec<SimUpload>;

/// ListMultipartUploads as S3 answers it: by key then initiation time, at most `cap`.
fn sim_uploads(held: &SimUploads, raw_query: &str, cap: usize) -> String {
    let q = decode_query(raw_query);
    assert!(q.contains_key("uploads") && !q.contains_key("upload-id-marker"));
    let prefix = q.get("prefix").map_or("", String::as_str);
    let delimiter = q.get("delimiter").map(String::as_str);
    let km = q.get("key-marker").map_or("", String::as_str);
    let max: usize = q["max-uploads"].parse::<usize>().unwrap().min(cap);
    let rollup = |k: &str| common_prefix_of(k, prefix, delimiter).map(str::to_string);
    let mut items: Vec<(String, Option<&SimUpload>)> = Vec::new();
    let mut truncated = false;
    for u in held {
        if !u.0.starts_with(prefix) || u.0.as_str() <= km {
            continue;
        }
        let item = match rollup(&u.0) {
            Some(p) => (p, None),
            None => (u.0.clone(), Some(u)),
        };
        if item.1.is_none() && items.last().is_some_and(|l| l.0 == item.0) {
            continue;
        }
        if items.len() == max {
            truncated = true;
            break;
        }
        items.push(item);
    }
    let mut x = format!(
        "<ListMultipartUploadsResult xmlns=\"{NS}\"><Bucket>real</Bucket><EncodingType>url</EncodingType><IsTruncated>{truncated}</IsTruncated>"
    );
    for (name, u) in &items {
        match u {
            Some((_, secs, id)) => {
                x += &format!(
                "<Upload><Key>{}</Key><UploadId>{id}</UploadId><Initiated>{}</Initiated></Upload>",
                s3_url(name),
                crate::time::iso8601(from_unix_secs(*secs))
            )
            }
            None => {
                x += &format!(
                    "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
                    s3_url(name)
                )
            }
        }
    }
    x + "</ListMultipartUploadsResult>"
}

#[test]
fn upload_pages_equal_the_single_bucket() {
    let mut rng = Rng(99);
    let mut held: Vec<SimUploads> = vec![Vec::new(); 5];
    // (key, client id): the reference, ordered as the gateway orders.
    let mut all: Vec<(String, String)> = Vec::new();
    for key in gen_keys(300, 3) {
        for _ in 0..1 + rng.below(3) {
            let b = rng.below(5);
            let id = format!("{:016x}", rng.next());
            held[b].push((
                format!("{}{key}", LAYOUTS[b]),
                rng.next() % 1000,
                id.clone(),
            ));
            all.push((key.clone(), format!("{b}.{id}")));
        }
    }
    for h in &mut held {
        h.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    }
    all.sort();
    for delimiter in [None, Some("/")] {
        let mut want: Vec<(String, Option<String>)> = Vec::new();
        for (k, id) in &all {
            match common_prefix_of(k, "", delimiter) {
                Some(p) if want.last().is_some_and(|l| l.0 == p) => {}
                Some(p) => want.push((p.to_string(), None)),
                None => want.push((k.clone(), Some(id.clone()))),
            }
        }
        for size in [1, 2, 3, 7, 100] {
            let mut got: Vec<(String, Option<String>)> = Vec::new();
            let (mut km, mut uim): (Option<String>, Option<String>) = (None, None);
            for round in 0.. {
                assert!(round <= all.len(), "no progress");
                let size_s = size.to_string();
                let mut pairs = vec![("max-uploads", size_s.as_str()), ("encoding-type", "url")];
                pairs.extend(delimiter.map(|d| ("delimiter", d)));
                pairs.extend(km.as_deref().map(|k| ("key-marker", k)));
                pairs.extend(uim.as_deref().map(|u| ("upload-id-marker", u)));
                let p = parse_upload_params(&q(&pairs)).unwrap();
                let pages = (0..5)
                    .map(|b| {
                        let xml = sim_uploads(&held[b], &backend_upload_query(&p, LAYOUTS[b]), 7);
                        let mut page = parse_backend_uploads(xml.as_bytes(), LAYOUTS[b]).unwrap();
                        // The engine's client-facing ids.
                        for u in &mut page.uploads {
                            u.upload_id = format!("{b}.{}", u.upload_id);
                        }
                        page
                    })
                    .collect();
                let r = merge_uploads(&p, pages);
                let xml = render_uploads(&p, "vb", &r);
                let mut items: Vec<(String, Option<String>)> = Vec::new();
                let (mut key, mut truncated, mut next_k, mut next_u) =
                    (String::new(), false, None, None);
                let dec = |s: &str| percent_decode_str(s).decode_utf8().unwrap().into_owned();
                walk_xml(xml.as_bytes(), |step| {
                    if let XmlStep::Close(path, text) = step {
                        match below_root(path) {
                            ["IsTruncated", ""] => truncated = text == "true",
                            ["NextKeyMarker", ""] => next_k = Some(dec(text)),
                            ["NextUploadIdMarker", ""] => next_u = Some(text.to_string()),
                            ["Upload", "Key"] => key = dec(text),
                            ["Upload", "UploadId"] => {
                                items.push((key.clone(), Some(text.to_string())))
                            }
                            ["CommonPrefixes", "Prefix"] => items.push((dec(text), None)),
                            _ => {}
                        }
                    }
                    Ok(())
                })
                .unwrap();
                assert!(items.len() <= size);
                items.sort();
                got.extend(items);
                if !truncated {
                    break;
                }
                (km, uim) = (next_k, next_u);
            }
            assert_eq!(got, want, "delimiter {delimiter:?} size {size}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Robustness.
// ---------------------------------------------------------------------------------------

fn xmlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("<ListBucketResult>".to_string()),
        Just("</ListBucketResult>".to_string()),
        Just("<ListMultipartUploadsResult xmlns=\"x\">".to_string()),
        Just("</ListMultipartUploadsResult>".to_string()),
        Just("<Contents>".to_string()),
        Just("</Contents>".to_string()),
        Just("<Upload>".to_string()),
        Just("</Upload>".to_string()),
        Just("<Key>".to_string()),
        Just("</Key>".to_string()),
        Just("<Size>12</Size>".to_string()),
        Just("<UploadId>u</UploadId>".to_string()),
        Just("<LastModified>2013-05-24T00:00:00.000Z</LastModified>".to_string()),
        Just("<Initiated>2013-05-24T00:00:00Z</Initiated>".to_string()),
        Just("<IsTruncated>true</IsTruncated>".to_string()),
        Just("<EncodingType>url</EncodingType>".to_string()),
        Just("<CommonPrefixes><Prefix>".to_string()),
        Just("</Prefix></CommonPrefixes>".to_string()),
        Just("<![CDATA[x]]>".to_string()),
        Just("&amp;&#0;&#x110000;&bogus;".to_string()),
        "[a-z%+/ü<>&]{0,6}",
    ];
    prop::collection::vec(piece, 0..30).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn parsers_never_panic_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300), layout in "[a-z/]{0,3}") {
        let _ = parse_backend_page(&bytes, &layout, 0);
        let _ = parse_backend_uploads(&bytes, &layout);
    }

    #[test]
    fn parsers_never_panic_on_xml_like_input(xml in xmlish(), layout in "(vb/)?") {
        if let Err(e) = parse_backend_page(xml.as_bytes(), &layout, 0) {
            prop_assert_eq!(e.code, S3ErrorCode::InternalError);
        }
        if let Err(e) = parse_backend_uploads(xml.as_bytes(), &layout) {
            prop_assert_eq!(e.code, S3ErrorCode::InternalError);
        }
    }

    #[test]
    fn param_parsers_never_panic(
        names in prop::collection::vec(prop_oneof![
            Just("max-keys"), Just("marker"), Just("continuation-token"), Just("start-after"),
            Just("key-marker"), Just("version-id-marker"), Just("encoding-type"), Just("delimiter"),
            Just("prefix"), Just("max-uploads"), Just("upload-id-marker"), Just("fetch-owner"),
        ], 0..6),
        values in prop::collection::vec(any::<String>(), 6),
    ) {
        let query = Query(names.iter().zip(&values).map(|(n, v)| (n.to_string(), v.clone())).collect());
        for kind in KINDS {
            if let Ok(p) = parse_params(kind, &query) {
                prop_assert!(p.max_keys <= 1000);
                let _ = backend_query(&p, "vb/");
                let _ = render(&p, "vb", &merge(&p, vec![BackendPage::default()]));
            } else if let Err(e) = parse_params(kind, &query) {
                prop_assert_eq!(e.code, S3ErrorCode::InvalidArgument);
            }
        }
        if let Ok(p) = parse_upload_params(&query) {
            let _ = backend_upload_query(&p, "vb/");
            let _ = render_uploads(&p, "vb", &merge_uploads(&p, vec![UploadPage::default()]));
        }
    }
}

/// `encoding-type=url`, field by field, as AWS documents it for each listing: the elements
/// that carry key names are encoded, opaque tokens and ids are not.
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjects.html> (Delimiter, Marker,
/// Prefix, NextMarker, Key), `API_ListObjectsV2.html` (Delimiter, Prefix, Key, StartAfter),
/// `API_ListObjectVersions.html` (KeyMarker, NextKeyMarker, Prefix, Key, Delimiter),
/// `API_ListMultipartUploads.html` (Delimiter, KeyMarker, Prefix, NextKeyMarker, Key); a
/// common prefix is a prefix, encoded everywhere.
#[test]
fn url_encoding_field_by_field() {
    const RAW: &str = "a b/ü";
    const ENCODED: &str = "a%20b/%C3%BC";
    let root = |xml: &str| crate::xml::parse(xml.as_bytes()).unwrap();
    // Every element named `name` anywhere in the tree.
    fn texts<'a>(e: &'a crate::xml::Element, name: &str, out: &mut Vec<&'a str>) {
        if e.name == name {
            out.push(&e.text);
        }
        for c in &e.children {
            texts(c, name, out);
        }
    }
    let check = |xml: &str, encoded: &[&str], raw: &[&str]| {
        let tree = root(xml);
        for (names, want) in [(encoded, ENCODED), (raw, RAW)] {
            for name in names {
                let mut found = Vec::new();
                texts(&tree, name, &mut found);
                assert!(!found.is_empty(), "{name} missing in {xml}");
                assert!(
                    found.iter().all(|t| *t == want),
                    "{name}: {found:?} in {xml}"
                );
            }
        }
    };
    let result = ListResult {
        entries: vec![obj(RAW)],
        common_prefixes: vec![RAW.into()],
        truncated: true,
        next: Some(RAW.into()),
    };
    let delimiter = "ü";
    let delimited = |xml: &str| {
        let tree = root(xml);
        let mut found = Vec::new();
        texts(&tree, "Delimiter", &mut found);
        assert_eq!(found, ["%C3%BC"], "Delimiter in {xml}");
    };
    // V1: Prefix, Marker, NextMarker, Key, CommonPrefixes/Prefix, Delimiter.
    let v1 = parse_params(
        ListKind::V1,
        &q(&[
            ("prefix", RAW),
            ("marker", RAW),
            ("delimiter", delimiter),
            ("encoding-type", "url"),
        ]),
    )
    .unwrap();
    let xml = render(&v1, "vb", &result);
    check(&xml, &["Prefix", "Marker", "NextMarker", "Key"], &[]);
    delimited(&xml);
    // V2: Prefix, StartAfter, Key, CommonPrefixes/Prefix, Delimiter; the continuation tokens
    // are opaque and stay as given.
    let v2 = parse_params(
        ListKind::V2,
        &q(&[
            ("list-type", "2"),
            ("prefix", RAW),
            ("start-after", RAW),
            ("delimiter", delimiter),
            ("continuation-token", "a2EgYg"),
            ("encoding-type", "url"),
        ]),
    )
    .unwrap();
    let xml = render(&v2, "vb", &result);
    check(&xml, &["Prefix", "StartAfter", "Key"], &[]);
    delimited(&xml);
    assert!(
        xml.contains("<ContinuationToken>a2EgYg</ContinuationToken>"),
        "{xml}"
    );
    // Versions: Prefix, KeyMarker, NextKeyMarker, Key; version ids are not names.
    let versions = parse_params(
        ListKind::Versions,
        &q(&[
            ("versions", ""),
            ("prefix", RAW),
            ("key-marker", RAW),
            ("delimiter", delimiter),
            ("encoding-type", "url"),
        ]),
    )
    .unwrap();
    let xml = render(&versions, "vb", &result);
    check(&xml, &["Prefix", "KeyMarker", "NextKeyMarker", "Key"], &[]);
    delimited(&xml);
    assert!(xml.contains("<NextVersionIdMarker>null</NextVersionIdMarker>"));
    // Without encoding-type every field is the name itself (XML-escaped only).
    let plain = parse_params(ListKind::V1, &q(&[("prefix", RAW), ("marker", RAW)])).unwrap();
    check(
        &render(&plain, "vb", &result),
        &[],
        &["Prefix", "Marker", "NextMarker", "Key"],
    );
    // Multipart uploads: Prefix, KeyMarker, NextKeyMarker, Key; upload ids are not names.
    let uploads = parse_upload_params(&q(&[
        ("uploads", ""),
        ("prefix", RAW),
        ("key-marker", RAW),
        ("upload-id-marker", "id 1"),
        ("encoding-type", "url"),
    ]))
    .unwrap();
    let listed = UploadListResult {
        uploads: vec![UploadEntry {
            key: RAW.into(),
            upload_id: "id 2".into(),
            initiated: from_unix_secs(T),
        }],
        common_prefixes: vec![RAW.into()],
        truncated: true,
        next_key_marker: Some(RAW.into()),
        next_upload_id_marker: Some("id 2".into()),
    };
    let xml = render_uploads(&uploads, "vb", &listed);
    check(&xml, &["Prefix", "KeyMarker", "NextKeyMarker", "Key"], &[]);
    assert!(
        xml.contains("<UploadIdMarker>id 1</UploadIdMarker>")
            && xml.contains("<NextUploadIdMarker>id 2</NextUploadIdMarker>"),
        "{xml}"
    );
}
