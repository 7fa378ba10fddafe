//! A fast in-memory S3 backend for benchmarks: path-style only, any signature accepted
//! without checking. PUT stores the bytes (honouring `If-Match`), GET returns them in one
//! write (TCP_NODELAY, one `Bytes` handed to hyper, no copy), HEAD, DELETE, HeadBucket and
//! ListObjectsV2 (prefix, start-after, continuation-token, max-keys, encoding-type=url: what
//! the gateway's listing merge and health probe send).
//!
//! It is deliberately not a conformance target (s3s-fs and moto are): it exists so that the
//! backend is not the bottleneck when the proxy's own cost is measured.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

const KEY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

#[derive(Clone)]
struct Object {
    data: Bytes,
    etag: String,
    modified: String,
}

#[derive(Default)]
pub struct Store {
    buckets: Mutex<HashMap<String, BTreeMap<String, Object>>>,
    etags: AtomicU64,
}

impl Store {
    /// Puts an object directly (to pre-fill a benchmark).
    pub fn put(&self, bucket: &str, key: &str, data: Bytes) {
        let n = self.etags.fetch_add(1, Ordering::Relaxed);
        let object = Object {
            data,
            // Not an MD5: hashing 64 MiB would make the backend the bottleneck of a PUT.
            etag: format!("\"{n:032x}\""),
            modified: httpdate::fmt_http_date(std::time::SystemTime::now()),
        };
        self.buckets
            .lock()
            .unwrap()
            .entry(bucket.to_owned())
            .or_default()
            .insert(key.to_owned(), object);
    }

    fn get(&self, bucket: &str, key: &str) -> Option<Object> {
        self.buckets
            .lock()
            .unwrap()
            .get(bucket)
            .and_then(|b| b.get(key))
            .cloned()
    }
}

fn response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r
}

fn error(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    let mut r = response(
        status,
        Bytes::from(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{code}</Message></Error>"
        )),
    );
    r.headers_mut()
        .insert("content-type", "application/xml".parse().unwrap());
    r
}

fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let d = |s: &str| {
                percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (d(k), d(v))
        })
        .collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn list(store: &Store, bucket: &str, query: &str) -> Response<Full<Bytes>> {
    let q = query_pairs(query);
    let get = |n: &str| q.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let prefix = get("prefix").unwrap_or("");
    let max_keys: usize = get("max-keys")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
        .min(1000);
    let after = get("continuation-token")
        .or(get("start-after"))
        .unwrap_or("")
        .to_owned();
    let url = get("encoding-type") == Some("url");
    let enc = |k: &str| {
        if url {
            utf8_percent_encode(k, KEY_SET).to_string()
        } else {
            escape(k)
        }
    };
    let buckets = store.buckets.lock().unwrap();
    let mut out = String::with_capacity(200 + max_keys * 250);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    out.push_str(&format!(
        "<Name>{}</Name><Prefix>{}</Prefix><MaxKeys>{max_keys}</MaxKeys>",
        escape(bucket),
        enc(prefix)
    ));
    if url {
        out.push_str("<EncodingType>url</EncodingType>");
    }
    let mut count = 0;
    let mut truncated = false;
    let mut last = String::new();
    let mut body = String::new();
    if let Some(objects) = buckets.get(bucket) {
        let start = if after.is_empty() {
            std::ops::Bound::Unbounded
        } else {
            std::ops::Bound::Excluded(after.clone())
        };
        for (key, o) in objects.range((start, std::ops::Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                if key.as_str() > prefix {
                    break;
                }
                continue;
            }
            if count == max_keys {
                truncated = true;
                break;
            }
            count += 1;
            last.clone_from(key);
            body.push_str(&format!(
                "<Contents><Key>{}</Key><LastModified>2025-01-01T00:00:00.000Z</LastModified><ETag>{}</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents>",
                enc(key),
                escape(&o.etag),
                o.data.len()
            ));
        }
    }
    out.push_str(&format!(
        "<KeyCount>{count}</KeyCount><IsTruncated>{truncated}</IsTruncated>"
    ));
    if truncated {
        out.push_str(&format!(
            "<NextContinuationToken>{}</NextContinuationToken>",
            escape(&last)
        ));
    }
    out.push_str(&body);
    out.push_str("</ListBucketResult>");
    let mut r = response(StatusCode::OK, Bytes::from(out));
    r.headers_mut()
        .insert("content-type", "application/xml".parse().unwrap());
    r
}

async fn handle(store: Arc<Store>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let rest = path.trim_start_matches('/');
    let (bucket, key) = match rest.split_once('/') {
        Some((b, k)) => (
            b.to_owned(),
            percent_decode_str(k).decode_utf8_lossy().into_owned(),
        ),
        None => (rest.to_owned(), String::new()),
    };
    if bucket.is_empty() {
        return error(StatusCode::NOT_IMPLEMENTED, "NotImplemented");
    }
    let method = req.method().clone();
    if key.is_empty() {
        return match method {
            Method::HEAD | Method::PUT => response(StatusCode::OK, Bytes::new()),
            Method::GET if query.is_empty() || query.contains("list-type=2") => {
                list(&store, &bucket, &query)
            }
            _ => error(StatusCode::NOT_IMPLEMENTED, "NotImplemented"),
        };
    }
    if !query.is_empty() && !query.starts_with("x-id=") && !query.contains("X-Amz-") {
        return error(StatusCode::NOT_IMPLEMENTED, "NotImplemented");
    }
    match method {
        Method::PUT => {
            let content_type = req.headers().get("content-type").cloned();
            let req_if_match = req
                .headers()
                .get("if-match")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return error(StatusCode::BAD_REQUEST, "IncompleteBody"),
            };
            let _ = content_type;
            // Conditional writes, as S3 answers them: the gateway's overwrites carry the
            // indexed ETag (`conditional_writes: true` in the bench config).
            if let Some(wanted) = req_if_match {
                match store.get(&bucket, &key).map(|o| o.etag) {
                    None => return error(StatusCode::NOT_FOUND, "NoSuchKey"),
                    Some(etag) if etag != wanted => {
                        return error(StatusCode::PRECONDITION_FAILED, "PreconditionFailed")
                    }
                    Some(_) => {}
                }
            }
            store.put(&bucket, &key, body);
            let etag = store.buckets.lock().unwrap()[&bucket][&key].etag.clone();
            let mut r = response(StatusCode::OK, Bytes::new());
            r.headers_mut().insert("etag", etag.parse().unwrap());
            r
        }
        Method::GET | Method::HEAD => {
            let Some(o) = store.get(&bucket, &key) else {
                if method == Method::HEAD {
                    return response(StatusCode::NOT_FOUND, Bytes::new());
                }
                return error(StatusCode::NOT_FOUND, "NoSuchKey");
            };
            let len = o.data.len();
            let mut r = if method == Method::HEAD {
                response(StatusCode::OK, Bytes::new())
            } else {
                response(StatusCode::OK, o.data)
            };
            let h = r.headers_mut();
            h.insert("etag", o.etag.parse().unwrap());
            h.insert("last-modified", o.modified.parse().unwrap());
            h.insert("content-type", "application/octet-stream".parse().unwrap());
            h.insert("accept-ranges", "bytes".parse().unwrap());
            if method == Method::HEAD {
                h.insert("content-length", len.into());
            }
            r
        }
        Method::DELETE => {
            if let Some(b) = store.buckets.lock().unwrap().get_mut(&bucket) {
                b.remove(&key);
            }
            response(StatusCode::NO_CONTENT, Bytes::new())
        }
        _ => error(StatusCode::NOT_IMPLEMENTED, "NotImplemented"),
    }
}

/// Serves on `listener` forever.
pub async fn serve(listener: tokio::net::TcpListener, store: Arc<Store>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let _ = socket.set_nodelay(true);
        let store = store.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let store = store.clone();
                async move { Ok::<_, Infallible>(handle(store, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                // Large reads of request bodies; the response body goes out as one write.
                .max_buf_size(1 << 20)
                .serve_connection(TokioIo::new(socket), svc)
                .await;
        });
    }
}
