//! Listings: the k-way merge of the backends' own listings into one answer.
//!
//! ListObjects (v1), ListObjectsV2, ListObjectVersions (unversioned: every VersionId `null`)
//! and ListMultipartUploads. The gateway asks every backend of the pool for a page
//! (ListObjectsV2 with the layout prefix prepended, `start-after` for resuming), merges them,
//! and hands out tokens that carry the last key: stateless and exact.
//!
//! Resume points. A listing resumes strictly after a string `R` (`ListParams::resume_after`).
//! When the previous page ended on a common prefix `P`, every key under `P` is done, so `R` is
//! `P` followed by U+10FFFF, the greatest char: no key under `P` (short of ones that contain
//! U+10FFFF right after `P`, which are filtered in [`merge`] anyway) sorts after it. Backends
//! get `start-after = layout_prefix + R`, which S3 compares byte-wise like Rust's `str`.
//!
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html>

use std::borrow::Cow;
use std::time::SystemTime;

use base64::Engine as _;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use quick_xml::escape::escape;
use quick_xml::events::Event;
use quick_xml::Reader;

use crate::error::{S3Error, S3ErrorCode};
use crate::route::Query;

/// The most keys (or uploads) one page holds, as in S3.
pub const MAX_PAGE: usize = 1000;
/// The greatest char; `P` + this sorts after every key under `P`.
const AFTER_ALL: char = '\u{10FFFF}';
const NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
const PROLOG: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
const OWNER: &str = "s3-balance";
const BAD_TOKEN: &str = "The continuation token provided is incorrect";

/// SigV4's unreserved set: what a backend query may carry unencoded.
const QUERY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// `encoding-type=url` in answers: S3 leaves `/` alone. A space becomes `%20` (S3 writes `+`):
/// both decode to a space with botocore's `unquote_plus`, and only `%20` does with
/// `decodeURIComponent`, which JavaScript users apply.
const KEY_SET: &AsciiSet = &QUERY_SET.remove(b'/');

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    V1,
    V2,
    Versions,
}

/// A listing request as the client sent it, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListParams {
    pub kind: ListKind,
    pub prefix: String,
    pub delimiter: Option<String>,
    /// 0..=1000 (larger requests are capped at 1000, as S3 does).
    pub max_keys: usize,
    /// Resume strictly after this key (from marker, start-after, continuation-token or
    /// key-marker, whichever applies); empty from the start. After a common prefix `P` it is
    /// `P` + U+10FFFF (see the module docs).
    pub resume_after: String,
    /// `encoding-type=url`.
    pub url_encoding: bool,
    /// Echoed request values: `marker` (V1), or `key-marker` (Versions).
    pub marker: Option<String>,
    /// `start-after` (V2).
    pub start_after: Option<String>,
    /// `continuation-token` (V2), or `version-id-marker` (Versions; only ever `null`).
    pub continuation_token: Option<String>,
    pub fetch_owner: bool,
}

fn invalid(message: impl Into<String>) -> S3Error {
    S3Error::invalid_argument(message)
}

fn backend_error(message: impl Into<String>) -> S3Error {
    S3Error::new(S3ErrorCode::InternalError, message)
}

/// A non-empty query value.
fn value<'q>(query: &'q Query, name: &str) -> Option<&'q str> {
    query.get(name).filter(|v| !v.is_empty())
}

/// `max-keys` / `max-uploads`: an integer in 0..=2^31-1 (S3's range), capped at 1000.
fn parse_max(query: &Query, name: &str) -> Result<usize, S3Error> {
    let Some(raw) = query.get(name) else {
        return Ok(MAX_PAGE);
    };
    let n: i64 = raw.parse().map_err(|_| {
        invalid(format!(
            "Provided {name} not an integer or within integer range"
        ))
    })?;
    if !(0..=i64::from(i32::MAX)).contains(&n) {
        return Err(invalid(format!(
            "Argument {name} must be an integer between 0 and 2147483647"
        )));
    }
    Ok(usize::try_from(n).map_or(MAX_PAGE, |n| n.min(MAX_PAGE)))
}

fn parse_encoding(query: &Query) -> Result<bool, S3Error> {
    match query.get("encoding-type") {
        None => Ok(false),
        Some("url") => Ok(true),
        Some(_) => Err(invalid("Invalid Encoding Method specified in Request")),
    }
}

/// The common prefix `key` rolls up into under `prefix` and `delimiter`, if any.
fn common_prefix_of<'k>(key: &'k str, prefix: &str, delimiter: Option<&str>) -> Option<&'k str> {
    let delimiter = delimiter.filter(|d| !d.is_empty())?;
    let rest = key.strip_prefix(prefix)?;
    let at = rest.find(delimiter)?;
    Some(&key[..prefix.len() + at + delimiter.len()])
}

/// The resume point for a client's marker: a marker that is itself a common prefix means
/// "after everything under it" (the contract of V1's NextMarker, which S3 sets to the last
/// common prefix).
fn resume_point(marker: &str, prefix: &str, delimiter: Option<&str>) -> String {
    if common_prefix_of(marker, prefix, delimiter) == Some(marker) {
        let mut r = marker.to_string();
        r.push(AFTER_ALL);
        r
    } else {
        marker.to_string()
    }
}

/// Whether every key under the common prefix `p` sorts at or before the resume point.
fn prefix_done(p: &str, resume: &str) -> bool {
    match resume.strip_prefix(p) {
        Some(rest) => rest.is_empty() || rest.starts_with(AFTER_ALL),
        None => p < resume,
    }
}

/// The opaque ListObjectsV2 continuation token for resuming after `last` (`is_prefix`: a
/// common prefix): base64url of a tag byte and the item.
pub fn encode_continuation_token(last: &str, is_prefix: bool) -> String {
    let mut raw = Vec::with_capacity(last.len() + 1);
    raw.push(if is_prefix { b'p' } else { b'k' });
    raw.extend_from_slice(last.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The resume point a continuation token carries.
fn decode_continuation_token(token: &str) -> Result<String, S3Error> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| invalid(BAD_TOKEN))?;
    let (tag, item) = raw.split_first().ok_or_else(|| invalid(BAD_TOKEN))?;
    let mut item = String::from_utf8(item.to_vec()).map_err(|_| invalid(BAD_TOKEN))?;
    match tag {
        b'k' => Ok(item),
        b'p' if !item.is_empty() => {
            item.push(AFTER_ALL);
            Ok(item)
        }
        _ => Err(invalid(BAD_TOKEN)),
    }
}

/// Parses and validates the query of a listing (`InvalidArgument` for bad max-keys, an
/// unknown encoding-type, a garbled continuation token).
///
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjects.html>,
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html>,
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectVersions.html>
pub fn parse_params(kind: ListKind, query: &Query) -> Result<ListParams, S3Error> {
    let prefix = query.get("prefix").unwrap_or("").to_string();
    let delimiter = value(query, "delimiter").map(str::to_string);
    let max_keys = parse_max(query, "max-keys")?;
    let url_encoding = parse_encoding(query)?;
    let fetch_owner = query
        .get("fetch-owner")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let resume = |m: &str| resume_point(m, &prefix, delimiter.as_deref());
    let mut params = ListParams {
        kind,
        prefix: prefix.clone(),
        delimiter: delimiter.clone(),
        max_keys,
        resume_after: String::new(),
        url_encoding,
        marker: None,
        start_after: None,
        continuation_token: None,
        fetch_owner,
    };
    match kind {
        ListKind::V1 => {
            params.marker = value(query, "marker").map(str::to_string);
            params.resume_after = params.marker.as_deref().map(resume).unwrap_or_default();
        }
        ListKind::V2 => {
            params.start_after = value(query, "start-after").map(str::to_string);
            params.continuation_token = query.get("continuation-token").map(str::to_string);
            let from_start = params
                .start_after
                .as_deref()
                .map(resume)
                .unwrap_or_default();
            let from_token = match params.continuation_token.as_deref() {
                Some(token) => decode_continuation_token(token)?,
                None => String::new(),
            };
            params.resume_after = from_start.max(from_token);
        }
        ListKind::Versions => {
            params.marker = value(query, "key-marker").map(str::to_string);
            params.continuation_token = value(query, "version-id-marker").map(str::to_string);
            if let Some(version) = params.continuation_token.as_deref() {
                if params.marker.is_none() {
                    return Err(invalid(
                        "A version-id marker cannot be specified without a key marker.",
                    ));
                }
                // Unversioned: the only version there is is `null`.
                if version != "null" {
                    return Err(invalid("Invalid version id specified"));
                }
            }
            params.resume_after = params.marker.as_deref().map(resume).unwrap_or_default();
        }
    }
    Ok(params)
}

/// One object as a backend lists it, with the layout prefix removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEntry {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified: SystemTime,
    pub storage_class: Option<String>,
    /// Index of the backend (in the pool order) it came from.
    pub backend: usize,
}

/// One backend's page, with the layout prefix removed from keys and common prefixes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendPage {
    pub entries: Vec<ObjectEntry>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
}

/// `name=value&...` with SigV4's encoding; `pairs` must already be sorted by name.
fn query_string(pairs: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (name, value) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.extend(utf8_percent_encode(value, QUERY_SET));
    }
    out
}

/// The query string of the ListObjectsV2 request to send to a backend whose keys for this
/// virtual bucket start with `layout_prefix` (with `list-type=2`, `prefix`, `delimiter`,
/// `start-after`, `max-keys`, `encoding-type=url`), percent-encoded and sorted.
///
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html>
pub fn backend_query(params: &ListParams, layout_prefix: &str) -> String {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    if let Some(d) = params.delimiter.as_deref().filter(|d| !d.is_empty()) {
        pairs.push(("delimiter", d.to_string()));
    }
    // Keys that XML 1.0 cannot carry (control characters) survive only URL-encoded.
    pairs.push(("encoding-type", "url".to_string()));
    pairs.push(("list-type", "2".to_string()));
    pairs.push(("max-keys", params.max_keys.to_string()));
    let prefix = format!("{layout_prefix}{}", params.prefix);
    if !prefix.is_empty() {
        pairs.push(("prefix", prefix));
    }
    if !params.resume_after.is_empty() {
        pairs.push((
            "start-after",
            format!("{layout_prefix}{}", params.resume_after),
        ));
    }
    query_string(&pairs)
}

/// One step of a walk over an XML document: an element opened, or closed with its text.
/// `path` holds the local names from the root down to the element.
enum XmlStep<'a> {
    Open(&'a [String]),
    Close(&'a [String], &'a str),
}

/// Walks `xml`, calling `f` for every element; text is kept untrimmed (keys may begin or end
/// with spaces). Namespaces are ignored.
fn walk_xml(
    xml: &[u8],
    mut f: impl FnMut(XmlStep<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let mut reader = Reader::from_reader(xml);
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut seen_root = false;
    let name_of = |raw: &[u8]| {
        String::from_utf8(raw.to_vec()).map_err(|_| "element name is not UTF-8".to_string())
    };
    loop {
        let event = reader.read_event().map_err(|e| e.to_string())?;
        match event {
            Event::Start(e) => {
                if path.is_empty() && seen_root {
                    return Err("more than one root element".into());
                }
                seen_root = true;
                path.push(name_of(e.local_name().as_ref())?);
                text.clear();
                f(XmlStep::Open(&path))?;
            }
            Event::Empty(e) => {
                if path.is_empty() && seen_root {
                    return Err("more than one root element".into());
                }
                seen_root = true;
                path.push(name_of(e.local_name().as_ref())?);
                f(XmlStep::Open(&path))?;
                f(XmlStep::Close(&path, ""))?;
                path.pop();
                text.clear();
            }
            Event::Text(t) => {
                let t = t.unescape().map_err(|e| e.to_string())?;
                if path.is_empty() {
                    if !t.trim().is_empty() {
                        return Err("text outside the root element".into());
                    }
                } else {
                    text.push_str(&t);
                }
            }
            Event::CData(c) => {
                if path.is_empty() {
                    return Err("text outside the root element".into());
                }
                let raw = c.into_inner();
                text.push_str(
                    std::str::from_utf8(&raw).map_err(|_| "CDATA is not UTF-8".to_string())?,
                );
            }
            Event::End(_) => {
                f(XmlStep::Close(&path, &text))?;
                path.pop();
                text.clear();
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
    if !seen_root || !path.is_empty() {
        return Err("truncated document".into());
    }
    Ok(())
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

/// Reverses `encoding-type=url` as S3 applies it (a space may come as `+`).
fn url_decode(s: &str) -> Result<String, String> {
    let plus = s.replace('+', " ");
    percent_decode_str(&plus)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| format!("undecodable URL-encoded name {s:?}"))
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("bad boolean {other:?}")),
    }
}

#[derive(Default)]
struct RawEntry {
    key: Option<String>,
    size: Option<String>,
    etag: Option<String>,
    last_modified: Option<String>,
    storage_class: Option<String>,
}

/// Parses a backend's ListObjectsV2 answer; `backend` is its pool index.
///
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html#API_ListObjectsV2_ResponseSyntax>
pub fn parse_backend_page(
    xml: &[u8],
    layout_prefix: &str,
    backend: usize,
) -> Result<BackendPage, S3Error> {
    parse_page_inner(xml, layout_prefix, backend).map_err(|why| {
        backend_error(format!(
            "malformed ListObjectsV2 answer from backend {backend}: {why}"
        ))
    })
}

fn parse_page_inner(
    xml: &[u8],
    layout_prefix: &str,
    backend: usize,
) -> Result<BackendPage, String> {
    let mut raw_entries: Vec<RawEntry> = Vec::new();
    let mut raw_prefixes: Vec<String> = Vec::new();
    let mut truncated: Option<bool> = None;
    let mut url = false;
    let mut current: Option<RawEntry> = None;
    walk_xml(xml, |step| {
        match step {
            XmlStep::Open(path) => {
                if path.len() == 1 && path[0] != "ListBucketResult" {
                    return Err(format!("root element is {}", path[0]));
                }
                if path.len() == 2 && path[1] == "Contents" {
                    current = Some(RawEntry::default());
                }
            }
            XmlStep::Close(path, text) => match below_root(path) {
                ["IsTruncated", ""] => truncated = Some(parse_bool(text)?),
                ["EncodingType", ""] => url = text.trim() == "url",
                ["CommonPrefixes", "Prefix"] => raw_prefixes.push(text.to_string()),
                ["Contents", ""] => raw_entries.extend(current.take()),
                ["Contents", field] => {
                    let e = current.as_mut().ok_or("field outside Contents")?;
                    let slot = match field {
                        "Key" => &mut e.key,
                        "Size" => &mut e.size,
                        "ETag" => &mut e.etag,
                        "LastModified" => &mut e.last_modified,
                        "StorageClass" => &mut e.storage_class,
                        _ => return Ok(()),
                    };
                    *slot = Some(text.to_string());
                }
                _ => {}
            },
        }
        Ok(())
    })?;
    let decode = |s: String| if url { url_decode(&s) } else { Ok(s) };
    let mut page = BackendPage {
        truncated: truncated.ok_or("no IsTruncated")?,
        ..BackendPage::default()
    };
    for raw in raw_entries {
        let key = decode(raw.key.ok_or("Contents without Key")?)?;
        let size = raw.size.ok_or("Contents without Size")?;
        let size = size
            .trim()
            .parse()
            .map_err(|_| format!("bad Size {size:?}"))?;
        let lm = raw.last_modified.ok_or("Contents without LastModified")?;
        let last_modified = crate::time::parse_iso8601(lm.trim())
            .ok_or_else(|| format!("bad LastModified {lm:?}"))?;
        // Objects of other virtual buckets (or strays) sharing the real bucket are not ours.
        let Some(key) = key.strip_prefix(layout_prefix) else {
            continue;
        };
        page.entries.push(ObjectEntry {
            key: key.to_string(),
            size,
            etag: raw.etag.unwrap_or_default(),
            last_modified,
            storage_class: raw.storage_class.filter(|s| !s.is_empty()),
            backend,
        });
    }
    for p in raw_prefixes {
        let p = decode(p)?;
        if let Some(p) = p.strip_prefix(layout_prefix) {
            page.common_prefixes.push(p.to_string());
        }
    }
    Ok(page)
}

/// The merged answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListResult {
    pub entries: Vec<ObjectEntry>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    /// The last key or common prefix returned, when truncated (becomes NextMarker /
    /// NextContinuationToken / NextKeyMarker).
    pub next: Option<String>,
}

enum Item {
    Object(ObjectEntry),
    Prefix(String),
}

impl Item {
    fn name(&self) -> &str {
        match self {
            Item::Object(e) => &e.key,
            Item::Prefix(p) => p,
        }
    }
}

/// Merges the pages of all backends: sorted, duplicates resolved (the newest copy wins),
/// common prefixes merged, cut at `max_keys` and at the point up to which every truncated
/// backend's page is complete.
///
/// The delimiter roll-up is applied again here, so a backend that ignored the delimiter
/// still merges right. Items are sorted, not heap-merged: pages are at most 1000 items each
/// and a sort does not trust the backends' order.
pub fn merge(params: &ListParams, pages: Vec<BackendPage>) -> ListResult {
    if params.max_keys == 0 {
        return ListResult::default();
    }
    let delimiter = params.delimiter.as_deref();
    let resume = params.resume_after.as_str();
    let mut items: Vec<Item> = Vec::new();
    // The smallest "last item" among truncated backends: past it, one of them may hold
    // items not seen yet.
    let mut bound: Option<String> = None;
    for page in pages {
        let mut last: Option<String> = None;
        let mut see = |name: &str| match &mut last {
            // Reuses the buffer: one allocation per page, not one per key.
            Some(l) if name > l.as_str() => {
                l.clear();
                l.push_str(name);
            }
            Some(_) => {}
            None => last = Some(name.to_string()),
        };
        for entry in page.entries {
            if !entry.key.starts_with(&params.prefix) {
                continue;
            }
            match common_prefix_of(&entry.key, &params.prefix, delimiter) {
                Some(p) => {
                    see(p);
                    if entry.key.as_str() > resume && !prefix_done(p, resume) {
                        items.push(Item::Prefix(p.to_string()));
                    }
                }
                None => {
                    see(&entry.key);
                    if entry.key.as_str() > resume {
                        items.push(Item::Object(entry));
                    }
                }
            }
        }
        for p in page.common_prefixes {
            if !p.starts_with(&params.prefix) {
                continue;
            }
            let p =
                common_prefix_of(&p, &params.prefix, delimiter).map_or(p.clone(), str::to_string);
            see(&p);
            if !prefix_done(&p, resume) {
                items.push(Item::Prefix(p));
            }
        }
        if page.truncated {
            let last = last.unwrap_or_else(|| resume.to_string());
            if bound.as_ref().is_none_or(|b| last < *b) {
                bound = Some(last);
            }
        }
    }
    // Unstable is enough: the order is total for objects, and equal names (a common prefix
    // from several backends) are the same item, deduplicated below.
    items.sort_unstable_by(|a, b| {
        a.name().cmp(b.name()).then_with(|| match (a, b) {
            // Newest first, so that deduplication keeps it; ties go to the first backend.
            (Item::Object(x), Item::Object(y)) => y
                .last_modified
                .cmp(&x.last_modified)
                .then(x.backend.cmp(&y.backend)),
            _ => std::cmp::Ordering::Equal,
        })
    });
    items.dedup_by(|later, earlier| later.name() == earlier.name());

    let complete = match &bound {
        Some(b) => items.partition_point(|i| i.name() <= b.as_str()),
        None => items.len(),
    };
    let take = complete.min(params.max_keys);
    let truncated = bound.is_some() || items.len() > take;
    items.truncate(take);
    let next = if truncated {
        items.last().map(|i| i.name().to_string())
    } else {
        None
    };
    let mut result = ListResult {
        truncated,
        next,
        ..ListResult::default()
    };
    for item in items {
        match item {
            Item::Object(e) => result.entries.push(e),
            Item::Prefix(p) => result.common_prefixes.push(p),
        }
    }
    result
}

/// The ListObjectsV2 `NextContinuationToken` for a merged page.
pub fn next_continuation_token(result: &ListResult) -> Option<String> {
    let next = result.next.as_deref()?;
    // A key and a common prefix never share a name (the key would have rolled up).
    let is_prefix = result.common_prefixes.last().is_some_and(|p| p == next);
    Some(encode_continuation_token(next, is_prefix))
}

/// A tiny XML writer for the answers.
struct Out(String);

impl Out {
    fn new(root: &str) -> Self {
        Out(format!("{PROLOG}<{root} xmlns=\"{NS}\">"))
    }
    fn open(&mut self, name: &str) {
        self.0.push('<');
        self.0.push_str(name);
        self.0.push('>');
    }
    fn close(&mut self, name: &str) {
        self.0.push_str("</");
        self.0.push_str(name);
        self.0.push('>');
    }
    fn elem(&mut self, name: &str, text: &str) {
        self.open(name);
        self.0.push_str(&escape(text));
        self.close(name);
    }
    fn owner(&mut self, name: &str) {
        self.open(name);
        self.elem("ID", OWNER);
        self.elem("DisplayName", OWNER);
        self.close(name);
    }
    fn finish(mut self, root: &str) -> String {
        self.close(root);
        self.0
    }
}

/// A name as the answer carries it: URL-encoded under `encoding-type=url`.
fn enc(url: bool, s: &str) -> Cow<'_, str> {
    if url {
        Cow::Owned(utf8_percent_encode(s, KEY_SET).to_string())
    } else {
        Cow::Borrowed(s)
    }
}

/// The XML answer (ListBucketResult v1 or v2, or ListVersionsResult).
///
/// V1 carries `NextMarker` whenever the answer is truncated, not only with a delimiter as S3
/// does: clients that find it use it, and the others fall back to the last key, which is the
/// same value when there is no delimiter.
pub fn render(params: &ListParams, bucket: &str, result: &ListResult) -> String {
    let url = params.url_encoding;
    let e = |s: &str| enc(url, s).into_owned();
    let root = match params.kind {
        ListKind::V1 | ListKind::V2 => "ListBucketResult",
        ListKind::Versions => "ListVersionsResult",
    };
    let mut out = Out::new(root);
    out.elem("Name", bucket);
    out.elem("Prefix", &e(&params.prefix));
    match params.kind {
        ListKind::V1 => {
            out.elem("Marker", &e(params.marker.as_deref().unwrap_or("")));
            out.elem("MaxKeys", &params.max_keys.to_string());
        }
        ListKind::V2 => {
            let count = result.entries.len() + result.common_prefixes.len();
            out.elem("KeyCount", &count.to_string());
            out.elem("MaxKeys", &params.max_keys.to_string());
        }
        ListKind::Versions => {
            out.elem("KeyMarker", &e(params.marker.as_deref().unwrap_or("")));
            out.elem(
                "VersionIdMarker",
                params.continuation_token.as_deref().unwrap_or(""),
            );
            out.elem("MaxKeys", &params.max_keys.to_string());
        }
    }
    if let Some(d) = &params.delimiter {
        out.elem("Delimiter", &e(d));
    }
    if url {
        out.elem("EncodingType", "url");
    }
    out.elem(
        "IsTruncated",
        if result.truncated { "true" } else { "false" },
    );
    let next = result.next.as_deref().filter(|_| result.truncated);
    match params.kind {
        ListKind::V1 => {
            if let Some(n) = next {
                out.elem("NextMarker", &e(n));
            }
        }
        ListKind::V2 => {
            if let Some(t) = &params.continuation_token {
                out.elem("ContinuationToken", t);
            }
            if let Some(t) = next_continuation_token(result).filter(|_| result.truncated) {
                out.elem("NextContinuationToken", &t);
            }
            if let Some(s) = &params.start_after {
                out.elem("StartAfter", &e(s));
            }
        }
        ListKind::Versions => {
            if let Some(n) = next {
                out.elem("NextKeyMarker", &e(n));
                out.elem("NextVersionIdMarker", "null");
            }
        }
    }
    for entry in &result.entries {
        let storage = entry.storage_class.as_deref().unwrap_or("STANDARD");
        let tag = if params.kind == ListKind::Versions {
            "Version"
        } else {
            "Contents"
        };
        out.open(tag);
        out.elem("Key", &e(&entry.key));
        if params.kind == ListKind::Versions {
            out.elem("VersionId", "null");
            out.elem("IsLatest", "true");
        }
        out.elem("LastModified", &crate::time::iso8601(entry.last_modified));
        out.elem("ETag", &entry.etag);
        out.elem("Size", &entry.size.to_string());
        match params.kind {
            ListKind::Versions => {
                out.elem("StorageClass", storage);
                out.owner("Owner");
            }
            ListKind::V1 | ListKind::V2 => {
                if params.kind == ListKind::V1 || params.fetch_owner {
                    out.owner("Owner");
                }
                out.elem("StorageClass", storage);
            }
        }
        out.close(tag);
    }
    for p in &result.common_prefixes {
        out.open("CommonPrefixes");
        out.elem("Prefix", &e(p));
        out.close("CommonPrefixes");
    }
    out.finish(root)
}

/// A multipart upload in progress, as a backend lists it (layout prefix removed). The engine
/// replaces `upload_id` with the client-facing id before merging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadEntry {
    pub key: String,
    pub upload_id: String,
    pub initiated: SystemTime,
}

/// ListMultipartUploads request parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadListParams {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub max_uploads: usize,
    pub key_marker: Option<String>,
    pub upload_id_marker: Option<String>,
    pub url_encoding: bool,
}

/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListMultipartUploads.html>
pub fn parse_upload_params(query: &Query) -> Result<UploadListParams, S3Error> {
    let key_marker = value(query, "key-marker").map(str::to_string);
    // S3 ignores the upload-id-marker without a key-marker.
    let upload_id_marker = value(query, "upload-id-marker")
        .filter(|_| key_marker.is_some())
        .map(str::to_string);
    Ok(UploadListParams {
        prefix: query.get("prefix").unwrap_or("").to_string(),
        delimiter: value(query, "delimiter").map(str::to_string),
        max_uploads: parse_max(query, "max-uploads")?,
        key_marker,
        upload_id_marker,
        url_encoding: parse_encoding(query)?,
    })
}

/// Where an uploads listing resumes.
enum UploadResume {
    Start,
    /// Strictly after every upload of keys <= this string.
    AfterKey(String),
    /// After (key, upload id): later uploads of `key` still come.
    AfterUpload(String, String),
}

fn upload_resume(params: &UploadListParams) -> UploadResume {
    let Some(km) = params.key_marker.as_deref().filter(|k| !k.is_empty()) else {
        return UploadResume::Start;
    };
    let r = resume_point(km, &params.prefix, params.delimiter.as_deref());
    match &params.upload_id_marker {
        Some(id) if r == km => UploadResume::AfterUpload(r, id.clone()),
        _ => UploadResume::AfterKey(r),
    }
}

/// A string just below `key`, so that a backend's `key-marker` (strictly after) still lists
/// `key` itself. Keys between the two begin with the result and are filtered in the merge.
fn key_before(key: &str) -> String {
    let mut s = key.to_string();
    if let Some(c) = s.pop() {
        let prev = match c as u32 {
            0 => None,
            0xE000 => char::from_u32(0xD7FF),
            n => char::from_u32(n - 1),
        };
        if let Some(p) = prev {
            s.push(p);
            s.push(AFTER_ALL);
        }
    }
    s
}

/// Query string of the ListMultipartUploads request to a backend (`uploads`, prefix with the
/// layout prefix, key-marker, max-uploads ...).
///
/// `upload-id-marker` is not sent (backend ids are not the client's): with one, the backend
/// gets a key-marker just below the client's, and [`merge_uploads`] drops what was listed.
/// `max-uploads` is always 1000, so that all uploads of one key come in one page (a backend
/// orders them by initiation time, not by the ids the merge sorts by).
pub fn backend_upload_query(params: &UploadListParams, layout_prefix: &str) -> String {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    if let Some(d) = params.delimiter.as_deref().filter(|d| !d.is_empty()) {
        pairs.push(("delimiter", d.to_string()));
    }
    pairs.push(("encoding-type", "url".to_string()));
    match upload_resume(params) {
        UploadResume::Start => {}
        UploadResume::AfterKey(k) => pairs.push(("key-marker", format!("{layout_prefix}{k}"))),
        UploadResume::AfterUpload(k, _) => {
            pairs.push(("key-marker", format!("{layout_prefix}{}", key_before(&k))));
        }
    }
    pairs.push(("max-uploads", MAX_PAGE.to_string()));
    let prefix = format!("{layout_prefix}{}", params.prefix);
    if !prefix.is_empty() {
        pairs.push(("prefix", prefix));
    }
    let mut q = query_string(&pairs);
    q.push_str("&uploads");
    q
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UploadPage {
    pub uploads: Vec<UploadEntry>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
}

/// Parses a backend's ListMultipartUploadsResult.
pub fn parse_backend_uploads(xml: &[u8], layout_prefix: &str) -> Result<UploadPage, S3Error> {
    parse_uploads_inner(xml, layout_prefix)
        .map_err(|why| backend_error(format!("malformed ListMultipartUploads answer: {why}")))
}

fn parse_uploads_inner(xml: &[u8], layout_prefix: &str) -> Result<UploadPage, String> {
    let mut raw: Vec<(Option<String>, Option<String>, Option<String>)> = Vec::new();
    let mut raw_prefixes: Vec<String> = Vec::new();
    let mut truncated: Option<bool> = None;
    let mut url = false;
    walk_xml(xml, |step| {
        match step {
            XmlStep::Open(path) => {
                if path.len() == 1 && path[0] != "ListMultipartUploadsResult" {
                    return Err(format!("root element is {}", path[0]));
                }
                if path.len() == 2 && path[1] == "Upload" {
                    raw.push((None, None, None));
                }
            }
            XmlStep::Close(path, text) => {
                let current = raw.last_mut();
                match (below_root(path), current) {
                    (["IsTruncated", ""], _) => truncated = Some(parse_bool(text)?),
                    (["EncodingType", ""], _) => url = text.trim() == "url",
                    (["CommonPrefixes", "Prefix"], _) => raw_prefixes.push(text.to_string()),
                    (["Upload", "Key"], Some(u)) => u.0 = Some(text.to_string()),
                    (["Upload", "UploadId"], Some(u)) => u.1 = Some(text.to_string()),
                    (["Upload", "Initiated"], Some(u)) => u.2 = Some(text.to_string()),
                    _ => {}
                }
            }
        }
        Ok(())
    })?;
    let decode = |s: String| if url { url_decode(&s) } else { Ok(s) };
    let mut page = UploadPage {
        truncated: truncated.ok_or("no IsTruncated")?,
        ..UploadPage::default()
    };
    for (key, id, initiated) in raw {
        let key = decode(key.ok_or("Upload without Key")?)?;
        let upload_id = id.ok_or("Upload without UploadId")?;
        let initiated = initiated.ok_or("Upload without Initiated")?;
        let initiated = crate::time::parse_iso8601(initiated.trim())
            .ok_or_else(|| format!("bad Initiated {initiated:?}"))?;
        if let Some(key) = key.strip_prefix(layout_prefix) {
            page.uploads.push(UploadEntry {
                key: key.to_string(),
                upload_id,
                initiated,
            });
        }
    }
    for p in raw_prefixes {
        let p = decode(p)?;
        if let Some(p) = p.strip_prefix(layout_prefix) {
            page.common_prefixes.push(p.to_string());
        }
    }
    Ok(page)
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UploadListResult {
    pub uploads: Vec<UploadEntry>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_upload_id_marker: Option<String>,
}

enum UploadItem {
    Upload(UploadEntry),
    Prefix(String),
}

impl UploadItem {
    fn name(&self) -> &str {
        match self {
            UploadItem::Upload(u) => &u.key,
            UploadItem::Prefix(p) => p,
        }
    }
    /// Sort order: by key, then upload id (a prefix never shares its name with a key).
    fn order(&self) -> (&str, Option<&str>) {
        match self {
            UploadItem::Upload(u) => (&u.key, Some(&u.upload_id)),
            UploadItem::Prefix(p) => (p, None),
        }
    }
}

/// Merges the backends' uploads: ordered by key then upload id, resumed after
/// (key-marker, upload-id-marker), cut at `max_uploads` and where a truncated backend's page
/// ends.
pub fn merge_uploads(params: &UploadListParams, pages: Vec<UploadPage>) -> UploadListResult {
    if params.max_uploads == 0 {
        return UploadListResult::default();
    }
    let delimiter = params.delimiter.as_deref();
    let resume = upload_resume(params);
    let resume_key = match &resume {
        UploadResume::Start => "",
        UploadResume::AfterKey(k) | UploadResume::AfterUpload(k, _) => k.as_str(),
    };
    let upload_done = |u: &UploadEntry| match &resume {
        UploadResume::Start => false,
        UploadResume::AfterKey(k) => u.key.as_str() <= k.as_str(),
        UploadResume::AfterUpload(k, id) => {
            u.key.as_str() < k.as_str() || (u.key == *k && u.upload_id.as_str() <= id.as_str())
        }
    };
    let mut items: Vec<UploadItem> = Vec::new();
    // (name, inclusive): a backend truncated in the middle of key K may hold more uploads of
    // K, so only names below K are complete; after a common prefix P, P is complete.
    let mut bound: Option<(String, bool)> = None;
    for page in pages {
        let mut last: Option<(String, bool)> = None;
        let mut see = |name: &str, inclusive: bool| {
            if last.as_ref().is_none_or(|(l, _)| name >= l.as_str()) {
                last = Some((name.to_string(), inclusive));
            }
        };
        for u in page.uploads {
            if !u.key.starts_with(&params.prefix) {
                continue;
            }
            match common_prefix_of(&u.key, &params.prefix, delimiter) {
                Some(p) => {
                    see(p, true);
                    if !upload_done(&u) && !prefix_done(p, resume_key) {
                        items.push(UploadItem::Prefix(p.to_string()));
                    }
                }
                None => {
                    see(&u.key, false);
                    if !upload_done(&u) {
                        items.push(UploadItem::Upload(u));
                    }
                }
            }
        }
        for p in page.common_prefixes {
            if !p.starts_with(&params.prefix) {
                continue;
            }
            let p =
                common_prefix_of(&p, &params.prefix, delimiter).map_or(p.clone(), str::to_string);
            see(&p, true);
            if !prefix_done(&p, resume_key) {
                items.push(UploadItem::Prefix(p));
            }
        }
        if page.truncated {
            let last = last.unwrap_or_else(|| (resume_key.to_string(), true));
            let below =
                |a: &(String, bool), b: &(String, bool)| a.0 < b.0 || (a.0 == b.0 && !a.1 && b.1);
            if bound.as_ref().is_none_or(|b| below(&last, b)) {
                bound = Some(last);
            }
        }
    }
    items.sort_by(|a, b| a.order().cmp(&b.order()));
    items.dedup_by(|later, earlier| later.order() == earlier.order());

    let complete = match &bound {
        None => items.len(),
        Some((name, true)) => items.partition_point(|i| i.name() <= name.as_str()),
        Some((name, false)) => match items.partition_point(|i| i.name() < name.as_str()) {
            // Best effort when a single key fills a backend's page: take what was seen.
            0 => items.partition_point(|i| i.name() <= name.as_str()),
            n => n,
        },
    };
    let take = complete.min(params.max_uploads);
    let truncated = bound.is_some() || items.len() > take;
    items.truncate(take);
    let mut result = UploadListResult {
        truncated,
        ..UploadListResult::default()
    };
    if truncated {
        match items.last() {
            Some(UploadItem::Upload(u)) => {
                result.next_key_marker = Some(u.key.clone());
                result.next_upload_id_marker = Some(u.upload_id.clone());
            }
            Some(UploadItem::Prefix(p)) => result.next_key_marker = Some(p.clone()),
            None => {}
        }
    }
    for item in items {
        match item {
            UploadItem::Upload(u) => result.uploads.push(u),
            UploadItem::Prefix(p) => result.common_prefixes.push(p),
        }
    }
    result
}

/// ListMultipartUploadsResult XML.
///
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListMultipartUploads.html#API_ListMultipartUploads_ResponseSyntax>
pub fn render_uploads(
    params: &UploadListParams,
    bucket: &str,
    result: &UploadListResult,
) -> String {
    let url = params.url_encoding;
    let e = |s: &str| enc(url, s).into_owned();
    let root = "ListMultipartUploadsResult";
    let mut out = Out::new(root);
    out.elem("Bucket", bucket);
    out.elem("KeyMarker", &e(params.key_marker.as_deref().unwrap_or("")));
    out.elem(
        "UploadIdMarker",
        params.upload_id_marker.as_deref().unwrap_or(""),
    );
    if let Some(k) = &result.next_key_marker {
        out.elem("NextKeyMarker", &e(k));
    }
    if let Some(id) = &result.next_upload_id_marker {
        out.elem("NextUploadIdMarker", id);
    }
    out.elem("Prefix", &e(&params.prefix));
    if let Some(d) = &params.delimiter {
        out.elem("Delimiter", &e(d));
    }
    out.elem("MaxUploads", &params.max_uploads.to_string());
    if url {
        out.elem("EncodingType", "url");
    }
    out.elem(
        "IsTruncated",
        if result.truncated { "true" } else { "false" },
    );
    for u in &result.uploads {
        out.open("Upload");
        out.elem("Key", &e(&u.key));
        out.elem("UploadId", &u.upload_id);
        out.owner("Initiator");
        out.owner("Owner");
        out.elem("StorageClass", "STANDARD");
        out.elem("Initiated", &crate::time::iso8601(u.initiated));
        out.close("Upload");
    }
    for p in &result.common_prefixes {
        out.open("CommonPrefixes");
        out.elem("Prefix", &e(p));
        out.close("CommonPrefixes");
    }
    out.finish(root)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::ops::Bound;
    use std::sync::OnceLock;

    use proptest::prelude::*;

    use super::*;
    use crate::time::from_unix_secs;

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
        "photos", "docs", "a", "a b", "ü", "日本", "x+y", "100%", "q&a<b>", "--", "2024--01",
        "a--b", "z", "é", "🎉", " lead", "trail ", "a/b", "",
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
    fn start_after_and_token_resume_at_the_later() {
        let token = encode_continuation_token("m", false);
        let p = parse_params(
            ListKind::V2,
            &q(&[("start-after", "c"), ("continuation-token", &token)]),
        )
        .unwrap();
        assert_eq!(p.resume_after, "m");
        let p = parse_params(
            ListKind::V2,
            &q(&[("start-after", "x"), ("continuation-token", &token)]),
        )
        .unwrap();
        assert_eq!(p.resume_after, "x");
        assert_eq!(p.start_after.as_deref(), Some("x"));
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
        let p =
            parse_upload_params(&q(&[("key-marker", "kb"), ("upload-id-marker", "u")])).unwrap();
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
                None => x += &format!("<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>", s3_url(name)),
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
                    let mut pairs =
                        vec![("max-uploads", size_s.as_str()), ("encoding-type", "url")];
                    pairs.extend(delimiter.map(|d| ("delimiter", d)));
                    pairs.extend(km.as_deref().map(|k| ("key-marker", k)));
                    pairs.extend(uim.as_deref().map(|u| ("upload-id-marker", u)));
                    let p = parse_upload_params(&q(&pairs)).unwrap();
                    let pages = (0..5)
                        .map(|b| {
                            let xml =
                                sim_uploads(&held[b], &backend_upload_query(&p, LAYOUTS[b]), 7);
                            let mut page =
                                parse_backend_uploads(xml.as_bytes(), LAYOUTS[b]).unwrap();
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
}
