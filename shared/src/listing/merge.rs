//! The k-way merge of the backends' pages into one answer: one algorithm over [`ListEntry`],
//! serving objects (ListObjects v1/v2, ListObjectVersions) and multipart uploads
//! (ListMultipartUploads).
//!
//! Pages are filtered (prefix, resume point), rolled up under the delimiter again (a backend
//! that ignored it still merges right), sorted, deduplicated, and cut at the page size and at
//! the point up to which every truncated backend's page is complete. Items are sorted, not
//! heap-merged: pages are at most 1000 items each and a sort does not trust the backends'
//! order.

use std::cmp::Ordering;

use super::params::{common_prefix_of, prefix_done, upload_resume, UploadResume};
use super::{BackendPage, ListParams, ObjectEntry, UploadEntry, UploadListParams, UploadPage};

/// What the merge (and the page reader) needs of a listed entry.
pub trait ListEntry {
    /// Several entries may share a key (uploads: any number per key, ordered by
    /// [`ListEntry::cmp_same_key`], duplicates only when that is `Equal`); otherwise one entry
    /// a key survives, the first by [`ListEntry::cmp_same_key`].
    const MANY_PER_KEY: bool;
    /// The key, with the layout prefix removed.
    fn key(&self) -> &str;
    fn key_mut(&mut self) -> &mut String;
    /// The order of two entries of the same key.
    fn cmp_same_key(&self, other: &Self) -> Ordering;
}

impl ListEntry for ObjectEntry {
    const MANY_PER_KEY: bool = false;
    fn key(&self) -> &str {
        &self.key
    }
    fn key_mut(&mut self) -> &mut String {
        &mut self.key
    }
    /// Newest first, so that the newest copy is the one kept; ties go to the first backend.
    fn cmp_same_key(&self, other: &Self) -> Ordering {
        other
            .last_modified
            .cmp(&self.last_modified)
            .then(self.backend.cmp(&other.backend))
    }
}

impl ListEntry for UploadEntry {
    const MANY_PER_KEY: bool = true;
    fn key(&self) -> &str {
        &self.key
    }
    fn key_mut(&mut self) -> &mut String {
        &mut self.key
    }
    /// By upload id, as S3 orders the uploads of one key.
    fn cmp_same_key(&self, other: &Self) -> Ordering {
        self.upload_id.cmp(&other.upload_id)
    }
}

/// One backend's page, whatever its entries.
pub trait ListPage {
    type Entry: ListEntry;
    /// `(entries, common prefixes, truncated)`.
    fn into_parts(self) -> (Vec<Self::Entry>, Vec<String>, bool);
}

impl ListPage for BackendPage {
    type Entry = ObjectEntry;
    fn into_parts(self) -> (Vec<ObjectEntry>, Vec<String>, bool) {
        (self.entries, self.common_prefixes, self.truncated)
    }
}

impl ListPage for UploadPage {
    type Entry = UploadEntry;
    fn into_parts(self) -> (Vec<UploadEntry>, Vec<String>, bool) {
        (self.uploads, self.common_prefixes, self.truncated)
    }
}

/// What a listing asks of the merge.
pub struct MergeRequest<'a, E> {
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
    /// The most items (entries and common prefixes) to return.
    pub max: usize,
    /// Every name at or before this is done (the resume point of the listing).
    pub resume_key: &'a str,
    /// Whether an entry was listed before (at or before the resume point).
    pub done: &'a dyn Fn(&E) -> bool,
}

/// The merged page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged<E> {
    pub entries: Vec<E>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    /// When truncated: the last name returned, and whether it is an entry's key (the last of
    /// `entries`) rather than a common prefix.
    pub next: Option<(String, bool)>,
}

impl<E> Default for Merged<E> {
    fn default() -> Self {
        Merged {
            entries: Vec::new(),
            common_prefixes: Vec::new(),
            truncated: false,
            next: None,
        }
    }
}

enum Item<E> {
    Entry(E),
    Prefix(String),
}

impl<E: ListEntry> Item<E> {
    fn name(&self) -> &str {
        match self {
            Item::Entry(e) => e.key(),
            Item::Prefix(p) => p,
        }
    }

    /// By name; a common prefix before entries of the same name; entries of one key by
    /// [`ListEntry::cmp_same_key`].
    fn cmp(&self, other: &Self) -> Ordering {
        self.name()
            .cmp(other.name())
            .then_with(|| match (self, other) {
                (Item::Entry(a), Item::Entry(b)) => a.cmp_same_key(b),
                (Item::Prefix(_), Item::Entry(_)) => Ordering::Less,
                (Item::Entry(_), Item::Prefix(_)) => Ordering::Greater,
                (Item::Prefix(_), Item::Prefix(_)) => Ordering::Equal,
            })
    }

    /// Whether `self`, sorted right after `earlier`, is the same item.
    fn duplicates(&self, earlier: &Self) -> bool {
        if self.name() != earlier.name() {
            return false;
        }
        match (self, earlier) {
            (Item::Prefix(_), Item::Prefix(_)) => true,
            (Item::Entry(a), Item::Entry(b)) => {
                !E::MANY_PER_KEY || a.cmp_same_key(b) == Ordering::Equal
            }
            _ => !E::MANY_PER_KEY,
        }
    }
}

/// A name a truncated page reached: `inclusive` when everything up to and including it is
/// listed (a common prefix, or the key of a one-per-key entry); an entry of a many-per-key
/// listing leaves more entries of its key possibly unlisted.
type Reached = (String, bool);

fn below(a: &Reached, b: &Reached) -> bool {
    a.0 < b.0 || (a.0 == b.0 && !a.1 && b.1)
}

/// Merges the backends' pages, see the module docs.
pub fn merge_pages<P: ListPage>(
    request: &MergeRequest<'_, P::Entry>,
    pages: Vec<P>,
) -> Merged<P::Entry> {
    if request.max == 0 {
        return Merged::default();
    }
    let (prefix, delimiter, resume) = (request.prefix, request.delimiter, request.resume_key);
    let mut items: Vec<Item<P::Entry>> = Vec::new();
    // The lowest point reached among truncated backends: past it, one of them may hold items
    // not seen yet.
    let mut bound: Option<Reached> = None;
    for page in pages {
        let (entries, prefixes, truncated) = page.into_parts();
        let mut last: Option<Reached> = None;
        let mut see = |name: &str, inclusive: bool| match &mut last {
            // Reuses the buffer: one allocation per page, not one per key.
            Some((l, inc)) if name >= l.as_str() => {
                if name != l.as_str() {
                    l.clear();
                    l.push_str(name);
                }
                *inc = inclusive;
            }
            Some(_) => {}
            None => last = Some((name.to_owned(), inclusive)),
        };
        for entry in entries {
            if !entry.key().starts_with(prefix) {
                continue;
            }
            match common_prefix_of(entry.key(), prefix, delimiter) {
                Some(p) => {
                    see(p, true);
                    if !(request.done)(&entry) && !prefix_done(p, resume) {
                        items.push(Item::Prefix(p.to_owned()));
                    }
                }
                None => {
                    see(entry.key(), !P::Entry::MANY_PER_KEY);
                    if !(request.done)(&entry) {
                        items.push(Item::Entry(entry));
                    }
                }
            }
        }
        for p in prefixes {
            if !p.starts_with(prefix) {
                continue;
            }
            let p = common_prefix_of(&p, prefix, delimiter).map_or(p.clone(), str::to_owned);
            see(&p, true);
            if !prefix_done(&p, resume) {
                items.push(Item::Prefix(p));
            }
        }
        if truncated {
            let last = last.unwrap_or_else(|| (resume.to_owned(), true));
            if bound.as_ref().is_none_or(|b| below(&last, b)) {
                bound = Some(last);
            }
        }
    }
    items.sort_by(Item::cmp);
    items.dedup_by(|later, earlier| later.duplicates(earlier));

    let complete = match &bound {
        None => items.len(),
        Some((name, true)) => items.partition_point(|i| i.name() <= name.as_str()),
        Some((name, false)) => match items.partition_point(|i| i.name() < name.as_str()) {
            // Best effort when a single key fills a backend's page: take what was seen.
            0 => items.partition_point(|i| i.name() <= name.as_str()),
            n => n,
        },
    };
    let take = complete.min(request.max);
    let truncated = bound.is_some() || items.len() > take;
    items.truncate(take);
    let next = match items.last() {
        Some(last) if truncated => Some((last.name().to_owned(), matches!(last, Item::Entry(_)))),
        _ => None,
    };
    let mut merged = Merged {
        truncated,
        next,
        ..Merged::default()
    };
    for item in items {
        match item {
            Item::Entry(e) => merged.entries.push(e),
            Item::Prefix(p) => merged.common_prefixes.push(p),
        }
    }
    merged
}

/// The merged answer of an objects listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListResult {
    pub entries: Vec<ObjectEntry>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    /// The last key or common prefix returned, when truncated (becomes NextMarker /
    /// NextContinuationToken / NextKeyMarker).
    pub next: Option<String>,
}

/// Merges the objects pages of all backends: duplicates resolved (the newest copy wins),
/// resumed strictly after `params.resume_after`, cut at `max_keys`.
pub fn merge(params: &ListParams, pages: Vec<BackendPage>) -> ListResult {
    let resume = params.resume_after.as_str();
    let done = |e: &ObjectEntry| e.key.as_str() <= resume;
    let merged = merge_pages(
        &MergeRequest {
            prefix: &params.prefix,
            delimiter: params.delimiter.as_deref(),
            max: params.max_keys,
            resume_key: resume,
            done: &done,
        },
        pages,
    );
    ListResult {
        entries: merged.entries,
        common_prefixes: merged.common_prefixes,
        truncated: merged.truncated,
        next: merged.next.map(|(name, _)| name),
    }
}

/// The merged answer of an uploads listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UploadListResult {
    pub uploads: Vec<UploadEntry>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_upload_id_marker: Option<String>,
}

/// Merges the backends' uploads: ordered by key then upload id, resumed after
/// (key-marker, upload-id-marker), cut at `max_uploads`.
pub fn merge_uploads(params: &UploadListParams, pages: Vec<UploadPage>) -> UploadListResult {
    let resume = upload_resume(params);
    let resume_key = match &resume {
        UploadResume::Start => "",
        UploadResume::AfterKey(k) | UploadResume::AfterUpload(k, _) => k.as_str(),
    };
    let done = |u: &UploadEntry| match &resume {
        UploadResume::Start => false,
        UploadResume::AfterKey(k) => u.key.as_str() <= k.as_str(),
        UploadResume::AfterUpload(k, id) => {
            u.key.as_str() < k.as_str() || (u.key == *k && u.upload_id.as_str() <= id.as_str())
        }
    };
    let merged = merge_pages(
        &MergeRequest {
            prefix: &params.prefix,
            delimiter: params.delimiter.as_deref(),
            max: params.max_uploads,
            resume_key,
            done: &done,
        },
        pages,
    );
    let next_upload_id_marker = match &merged.next {
        Some((_, true)) => merged.entries.last().map(|u| u.upload_id.clone()),
        _ => None,
    };
    UploadListResult {
        next_key_marker: merged.next.map(|(name, _)| name),
        next_upload_id_marker,
        uploads: merged.entries,
        common_prefixes: merged.common_prefixes,
        truncated: merged.truncated,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    /// An entry type of the merge's own, many per key, to test the algorithm apart from
    /// objects and uploads.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct E(String, u32);

    impl ListEntry for E {
        const MANY_PER_KEY: bool = true;
        fn key(&self) -> &str {
            &self.0
        }
        fn key_mut(&mut self) -> &mut String {
            &mut self.0
        }
        fn cmp_same_key(&self, other: &Self) -> Ordering {
            self.1.cmp(&other.1)
        }
    }

    struct Page(Vec<E>, Vec<String>, bool);

    impl ListPage for Page {
        type Entry = E;
        fn into_parts(self) -> (Vec<E>, Vec<String>, bool) {
            (self.0, self.1, self.2)
        }
    }

    fn e(key: &str, n: u32) -> E {
        E(key.to_owned(), n)
    }

    fn request<'a>(max: usize, done: &'a dyn Fn(&E) -> bool) -> MergeRequest<'a, E> {
        MergeRequest {
            prefix: "",
            delimiter: Some("/"),
            max,
            resume_key: "",
            done,
        }
    }

    #[test]
    fn merges_sorts_dedups_and_rolls_up() {
        let none = |_: &E| false;
        let m = merge_pages(
            &request(10, &none),
            vec![
                Page(vec![e("b", 2), e("a", 1), e("d/x", 1)], vec![], false),
                Page(
                    vec![e("b", 1), e("b", 2)],
                    vec!["d/".into(), "c/".into()],
                    false,
                ),
            ],
        );
        assert_eq!(m.entries, vec![e("a", 1), e("b", 1), e("b", 2)]);
        assert_eq!(m.common_prefixes, vec!["c/", "d/"]);
        assert!(!m.truncated);
        assert_eq!(m.next, None);
    }

    #[test]
    fn a_truncated_page_ending_inside_a_key_holds_the_cut_before_it() {
        let none = |_: &E| false;
        // Backend 1 stopped at an entry of "b": more entries of "b" may follow there.
        let m = merge_pages(
            &request(10, &none),
            vec![
                Page(vec![e("a", 1), e("b", 1)], vec![], true),
                Page(vec![e("b", 2), e("c", 1)], vec![], false),
            ],
        );
        assert_eq!(m.entries, vec![e("a", 1)]);
        assert!(m.truncated);
        assert_eq!(m.next, Some(("a".into(), true)));
        // At the cut by max, the next marker is the last item, a prefix here.
        let m = merge_pages(
            &request(1, &none),
            vec![Page(vec![e("x", 1)], vec!["p/".into()], false)],
        );
        assert_eq!(m.common_prefixes, vec!["p/"]);
        assert_eq!(m.next, Some(("p/".into(), false)));
    }

    #[test]
    fn done_entries_and_prefixes_are_dropped() {
        let done = |x: &E| x.0.as_str() <= "b";
        let m = merge_pages(
            &MergeRequest {
                resume_key: "b",
                ..request(10, &done)
            },
            vec![Page(
                vec![e("a", 1), e("b", 1), e("c", 1), e("a/x", 1), e("c/x", 1)],
                vec!["a/".into(), "d/".into()],
                false,
            )],
        );
        assert_eq!(m.entries, vec![e("c", 1)]);
        assert_eq!(m.common_prefixes, vec!["c/", "d/"]);
    }

    #[test]
    fn one_per_key_entries_keep_the_first_by_their_order() {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let o = |backend, secs| ObjectEntry {
            key: "k".into(),
            size: 0,
            etag: String::new(),
            last_modified: t(secs),
            storage_class: None,
            backend,
        };
        let done = |_: &ObjectEntry| false;
        let m = merge_pages(
            &MergeRequest {
                prefix: "",
                delimiter: None,
                max: 5,
                resume_key: "",
                done: &done,
            },
            vec![
                BackendPage {
                    entries: vec![o(0, 1)],
                    ..BackendPage::default()
                },
                BackendPage {
                    entries: vec![o(1, 2)],
                    ..BackendPage::default()
                },
                BackendPage {
                    entries: vec![o(2, 2)],
                    ..BackendPage::default()
                },
            ],
        );
        assert_eq!(m.entries, vec![o(1, 2)]);
    }
}
