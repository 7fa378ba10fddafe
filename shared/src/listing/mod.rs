//! Listings: the k-way merge of the backends' own listings into one answer.
//!
//! - [`params`]: the client's request, validated; resume points and continuation tokens.
//! - [`page`]: the request each backend gets, and the reading of its page.
//! - [`merge`](mod@merge): one k-way merge over [`ListEntry`] for objects, versions and uploads.
//! - [`render`]: the answer's XML.
//!
//! ListObjects (v1), ListObjectsV2, ListObjectVersions (unversioned: every VersionId `null`)
//! and ListMultipartUploads. The gateway asks every backend of the pool for a page
//! (ListObjectsV2 with the layout prefix prepended, `start-after` for resuming), merges them,
//! and hands out tokens that carry the last key: stateless and exact.
//!
//! Resume points. A listing resumes strictly after a string `R` (`ListParams::resume_after`).
//! When the previous page ended on a common prefix `P`, every key under `P` is done, so `R` is
//! `P` followed by U+10FFFF, the greatest char: no key under `P` (short of ones that contain
//! U+10FFFF right after `P`, which are filtered in [`merge()`] anyway) sorts after it. Backends
//! get `start-after = layout_prefix + R`, which S3 compares byte-wise like Rust's `str`.
//!
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html>

pub mod merge;
pub mod page;
pub mod params;
pub mod render;

pub use merge::{
    merge, merge_pages, merge_uploads, ListEntry, ListPage, ListResult, MergeRequest, Merged,
    UploadListResult,
};
pub use page::{
    backend_query, backend_upload_query, parse_backend_page, parse_backend_uploads, BackendPage,
    ObjectEntry, UploadEntry, UploadPage,
};
pub use params::{
    encode_continuation_token, parse_params, parse_upload_params, ListKind, ListParams,
    UploadListParams,
};
pub use render::{next_continuation_token, render, render_uploads};

/// The most keys (or uploads) one page holds, as in S3.
pub const MAX_PAGE: usize = 1000;
/// The greatest char; `P` + this sorts after every key under `P`.
const AFTER_ALL: char = '\u{10FFFF}';

#[cfg(test)]
mod tests;
