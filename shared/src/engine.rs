//! The request engine: every operation against backends, through the adapter's
//! [`MetadataStore`](crate::store::MetadataStore) and [`HttpClient`](crate::http::HttpClient).
