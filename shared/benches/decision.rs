//! The request decision path, without IO: routing, SigV4 verification, placement, presigning,
//! the listing merge, and a whole GET decision through the engine (redirect mode: route +
//! verify + index lookup + presign, no backend request).
//!
//! `cargo bench -p s3-balance-shared --features testing --bench decision`
//! (`scripts/bench` runs it and quotes the medians).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use http::Method;
use shared::body::{Body as _, ByteFilter};
use shared::config::{Config, Secret, Strategy};
use shared::engine::{Engine, RequestContext};
use shared::listing::{self, BackendPage, ListKind, ObjectEntry};
use shared::placement::{self, BackendState, Entropy};
use shared::route::{self, Query, RouteInput};
use shared::sigv4::oracle;
use shared::sigv4::sign::{self, PayloadHash};
use shared::sigv4::{self, canonical, SignedParts};
use shared::store::{MemoryStore, MetadataStore, ObjectRecord};
use shared::testing::{MemBody, MemoryS3};

const AK: &str = "AKIAIOSFODNN7EXAMPLE";
const SK: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000)
}

/// A config with `n` backends; the first uses the gateway's own key pair, so that
/// `oracle::sign_request` for it signs what a client would send to the gateway.
fn config(n: usize) -> Config {
    let mut yaml = String::from("buckets:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - name: b{i}\n    endpoint: http://127.0.0.1:{}\n    region: us-east-1\n    \
             access_key_id: {AK}\n    secret_access_key: {SK}\n    path_style: true\n",
            9000 + i
        ));
    }
    yaml.push_str(
        "  - name: photos\n    virtual: true\n    reads: redirect\n\
         s3api:\n  access_key: AKIAIOSFODNN7EXAMPLE\n  secret_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n  \
         auth_required: true\n  virtual_host: false\n\
         balancer:\n  strategy: consistent-hash\n",
    );
    Config::from_yaml(&yaml).expect("bench config").0
}

/// The headers of `GET http://gateway.test/photos/2024/holiday/img_0042.jpg`, signed.
fn signed_get(config: &Config) -> http::request::Parts {
    let (mut parts, ()) = http::Request::builder()
        .method(Method::GET)
        .uri("http://gateway.test/photos/2024/holiday/img_0042.jpg")
        .header("user-agent", "aws-sdk-rust/1.0")
        .body(())
        .unwrap()
        .into_parts();
    oracle::sign_request(
        &mut parts,
        &config.backends[0],
        &PayloadHash::Unsigned,
        now(),
    )
    .unwrap();
    parts
}

fn states(n: usize) -> Vec<BackendState> {
    (0..n)
        .map(|i| BackendState {
            name: format!("backend-{i}"),
            weight: 1 + (i as u32 % 3),
            enabled: true,
            read_only: false,
            healthy: true,
            max_size: Some(10 << 40),
            used_bytes: (i as u64) << 30,
            class_a_used: 0,
            class_b_used: 0,
            class_a_limit: Some(1_000_000),
            class_b_limit: None,
        })
        .collect()
}

fn bench_route(c: &mut Criterion) {
    let headers = signed_get(&config(1)).headers;
    let method = Method::GET;
    let base = vec!["s3.example.com".to_owned()];
    c.bench_function("route/GetObject path-style", |b| {
        b.iter(|| {
            route::route(black_box(&RouteInput {
                method: &method,
                raw_path: "/photos/2024/holiday/img_0042.jpg",
                raw_query: "",
                host: Some("gateway.test"),
                headers: &headers,
                base_domains: &base,
            }))
            .unwrap()
        })
    });
    c.bench_function("route/ListObjectsV2 virtual-host", |b| {
        b.iter(|| {
            route::route(black_box(&RouteInput {
                method: &method,
                raw_path: "/",
                raw_query: "list-type=2&prefix=2024%2F&delimiter=%2F&max-keys=1000",
                host: Some("photos.s3.example.com"),
                headers: &headers,
                base_domains: &base,
            }))
            .unwrap()
        })
    });
}

fn bench_verify(c: &mut Criterion) {
    let config = config(1);
    let secret = Secret::new(SK);
    let secret_for = |ak: &str| (ak == AK).then_some(&secret);
    let parts = signed_get(&config);
    let path = parts.uri.path().to_owned();
    c.bench_function("sigv4/verify header", |b| {
        b.iter(|| {
            sigv4::verify(
                black_box(&SignedParts {
                    method: "GET",
                    raw_path: &path,
                    raw_query: "",
                    headers: &parts.headers,
                }),
                &secret_for,
                now(),
            )
            .unwrap()
        })
    });

    let url = oracle::presign(
        &Method::GET,
        &"http://gateway.test/photos/2024/holiday/img_0042.jpg"
            .parse()
            .unwrap(),
        &config.backends[0],
        Duration::from_secs(900),
        now(),
    )
    .unwrap();
    let uri: http::Uri = url.parse().unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("host", "gateway.test".parse().unwrap());
    let (p, q) = (uri.path().to_owned(), uri.query().unwrap_or("").to_owned());
    c.bench_function("sigv4/verify presigned", |b| {
        b.iter(|| {
            sigv4::verify(
                black_box(&SignedParts {
                    method: "GET",
                    raw_path: &p,
                    raw_query: &q,
                    headers: &headers,
                }),
                &secret_for,
                now(),
            )
            .unwrap()
        })
    });

    // STREAMING-AWS4-HMAC-SHA256-PAYLOAD: one 64 KiB chunk and the final empty chunk, each
    // signature chained from the previous one.
    let date = "20260919T024000Z";
    let scope = "20260919/us-east-1/s3/aws4_request";
    let key = canonical::signing_key(SK, "20260919", "us-east-1", "s3");
    let seed = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9".to_owned();
    let empty = canonical::sha256_hex(b"");
    let chunk = vec![b'a'; 64 * 1024];
    let mut body = Vec::new();
    let mut previous = seed.clone();
    for data in [&chunk[..], &[][..]] {
        let sts = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{date}\n{scope}\n{previous}\n{empty}\n{}",
            canonical::sha256_hex(data)
        );
        let sig = canonical::signature(&key, &sts);
        body.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", data.len()).as_bytes());
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
        previous = sig;
    }
    let body = Bytes::from(body);
    let context = sigv4::StreamingContext {
        signing_key: key,
        amz_date: date.into(),
        scope: scope.into(),
        seed_signature: seed,
        signed_trailer: false,
    };
    let mut group = c.benchmark_group("sigv4");
    group.throughput(Throughput::Bytes(chunk.len() as u64));
    group.bench_function("streaming chunk 64 KiB (signed)", |b| {
        b.iter(|| {
            let mut d = sigv4::chunked::ChunkedDecoder::new(
                Some(context.clone()),
                None,
                Some(chunk.len() as u64),
            );
            let mut n = 0;
            for out in d.push(body.clone()).unwrap() {
                n += out.len();
            }
            for out in d.finish().unwrap() {
                n += out.len();
            }
            assert_eq!(n, chunk.len());
        })
    });
    group.finish();
}

fn bench_placement(c: &mut Criterion) {
    let mut group = c.benchmark_group("placement");
    for n in [1usize, 4, 16, 64] {
        let backends = states(n);
        for (label, strategy) in [
            ("consistent-hash", Strategy::ConsistentHash),
            ("least-space", Strategy::LeastSpace),
            ("weighted", Strategy::Weighted),
        ] {
            group.bench_with_input(BenchmarkId::new(label, n), &backends, |b, backends| {
                let mut i = 0u64;
                b.iter(|| {
                    i += 1;
                    let candidates = placement::write_candidates(backends, Some(4096)).unwrap();
                    placement::choose(
                        strategy,
                        &candidates,
                        "photos",
                        "2024/holiday/img_0042.jpg",
                        Entropy {
                            counter: i,
                            random: i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                        },
                    )
                    .name
                    .len()
                })
            });
        }
        group.bench_with_input(
            BenchmarkId::new("probe order", n),
            &backends,
            |b, backends| {
                b.iter(|| {
                    placement::probe_order(backends, "photos", "2024/holiday/img_0042.jpg").len()
                })
            },
        );
    }
    group.finish();
}

fn bench_presign(c: &mut Criterion) {
    let config = config(1);
    let uri: http::Uri = "http://127.0.0.1:9000/real/photos/2024/holiday/img_0042.jpg"
        .parse()
        .unwrap();
    c.bench_function("sigv4/presign", |b| {
        b.iter(|| {
            oracle::presign(
                &Method::GET,
                black_box(&uri),
                &config.backends[0],
                Duration::from_secs(900),
                now(),
            )
            .unwrap()
        })
    });
    let cache = sign::SignerCache::new();
    c.bench_function("sigv4/presign (cached key, fast path)", |b| {
        b.iter(|| {
            cache
                .presign(
                    &Method::GET,
                    black_box(&uri),
                    &config.backends[0],
                    Duration::from_secs(900),
                    now(),
                )
                .unwrap()
        })
    });
    let signer = oracle::BackendSigner::new(&config.backends[0]);
    c.bench_function("sigv4/presign (signer kept)", |b| {
        b.iter(|| {
            signer
                .presign(
                    &Method::GET,
                    black_box(&uri),
                    Duration::from_secs(900),
                    now(),
                )
                .unwrap()
        })
    });
}

fn bench_listing(c: &mut Criterion) {
    // Five backends, 1,000 keys each, interleaved in key order.
    let pages: Vec<BackendPage> = (0..5)
        .map(|b| BackendPage {
            entries: (0..1000)
                .map(|i| ObjectEntry {
                    key: format!("photos/2024/{:06}.jpg", i * 5 + b),
                    size: 1000 + i as u64,
                    etag: format!("\"{:032x}\"", i * 5 + b),
                    last_modified: now(),
                    storage_class: Some("STANDARD".into()),
                    backend: b,
                })
                .collect(),
            common_prefixes: Vec::new(),
            truncated: true,
        })
        .collect();
    let params =
        listing::parse_params(ListKind::V2, &Query::parse("list-type=2&max-keys=1000")).unwrap();
    let mut group = c.benchmark_group("listing");
    group.bench_function("merge 5x1000", |b| {
        b.iter(|| {
            listing::merge(&params, black_box(pages.clone()))
                .entries
                .len()
        })
    });
    group.bench_function("merge+render 5x1000", |b| {
        b.iter_batched(
            || pages.clone(),
            |pages| {
                let result = listing::merge(&params, pages);
                listing::render(&params, "photos", &result).len()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn bench_decision(c: &mut Criterion) {
    let config = config(4);
    let parts = signed_get(&config);
    let store = MemoryStore::new();
    futures_executor::block_on(store.put_object(
        "photos",
        "2024/holiday/img_0042.jpg",
        &ObjectRecord {
            backend: "b2".into(),
            size: 123_456,
            etag: "\"abc\"".into(),
            last_modified: 1_790_000_000,
        },
    ))
    .unwrap();
    let engine = Engine::new(Arc::new(config), store, MemoryS3::new());
    let ctx = RequestContext {
        now: now(),
        request_id: "0123456789ABCDEF".into(),
        random: 7,
    };
    let request = || {
        let mut r = http::Request::new(MemBody::empty());
        *r.method_mut() = parts.method.clone();
        *r.uri_mut() = "/photos/2024/holiday/img_0042.jpg".parse().unwrap();
        *r.headers_mut() = parts.headers.clone();
        r
    };
    let first = futures_executor::block_on(engine.handle(request(), &ctx));
    assert_eq!(first.status(), 307, "{:?}", first.body().bytes());
    c.bench_function(
        "decision/full GET (route+verify+index+place+presign)",
        |b| {
            b.iter(|| {
                let r = futures_executor::block_on(engine.handle(request(), &ctx));
                assert_eq!(r.status(), 307);
            })
        },
    );
    c.bench_function("decision/request construction (subtract)", |b| {
        b.iter(|| black_box(request()))
    });
}

criterion_group!(
    benches,
    bench_route,
    bench_verify,
    bench_placement,
    bench_presign,
    bench_listing,
    bench_decision
);
criterion_main!(benches);
