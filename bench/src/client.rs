//! The load driver: a pooled hyper HTTP/1.1 client (TCP_NODELAY), optional SigV4 signing
//! with `aws-sigv4` (UNSIGNED-PAYLOAD), latency recording.

use std::convert::Infallible;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Clone)]
pub struct Driver {
    client: Client<HttpConnector, Body>,
    /// Gateway credentials: requests are signed when set.
    pub keys: Option<(String, String)>,
}

/// What one request should carry.
#[derive(Clone)]
pub enum Payload {
    None,
    Bytes(Bytes),
    /// `count` copies of `chunk` streamed (a 1 GiB upload without 1 GiB in the client).
    Repeat(Bytes, usize),
}

impl Payload {
    fn len(&self) -> u64 {
        match self {
            Payload::None => 0,
            Payload::Bytes(b) => b.len() as u64,
            Payload::Repeat(b, n) => (b.len() * n) as u64,
        }
    }

    fn body(&self) -> Body {
        match self {
            Payload::None => Empty::new().boxed_unsync(),
            Payload::Bytes(b) => Full::new(b.clone()).boxed_unsync(),
            Payload::Repeat(b, n) => {
                let b = b.clone();
                let frames = futures_util::stream::iter(
                    (0..*n).map(move |_| Ok::<_, Infallible>(http_body::Frame::data(b.clone()))),
                );
                StreamBody::new(frames).boxed_unsync()
            }
        }
    }
}

/// One finished request.
pub struct Outcome {
    pub status: u16,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Driver {
    pub fn new(keys: Option<(String, String)>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { client, keys }
    }

    /// Sends one request and reads the whole response body (discarding it).
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        payload: &Payload,
    ) -> Result<Outcome, String> {
        let started = Instant::now();
        let mut req = Request::builder()
            .method(method.clone())
            .uri(url)
            .body(payload.body())
            .map_err(|e| e.to_string())?;
        if method == Method::PUT {
            req.headers_mut()
                .insert("content-length", payload.len().into());
        }
        if let Some((ak, sk)) = &self.keys {
            sign(&mut req, ak, sk)?;
        }
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("{method} {url}: {e:?}"))?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("{method} {url}: body: {e}"))?;
            if let Some(d) = frame.data_ref() {
                bytes += d.len() as u64;
            }
        }
        Ok(Outcome {
            status,
            bytes,
            elapsed: started.elapsed(),
        })
    }
}

/// Signs for the gateway (region us-east-1, service s3), payload unsigned.
fn sign(req: &mut Request<Body>, ak: &str, sk: &str) -> Result<(), String> {
    use aws_sigv4::http_request::{
        sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
    };
    use aws_sigv4::sign::v4;
    let host = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .ok_or("no host")?;
    req.headers_mut()
        .insert("host", host.parse().map_err(|_| "host")?);
    let identity = aws_credential_types::Credentials::new(ak, sk, None, None, "bench").into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let headers: Vec<(&str, &str)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect();
    let uri = req.uri().to_string();
    let signable = SignableRequest::new(
        req.method().as_str(),
        &uri,
        headers.into_iter(),
        SignableBody::UnsignedPayload,
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let (new_headers, _) = instructions.into_parts();
    for h in new_headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(h.name().as_bytes()).map_err(|e| e.to_string())?,
            h.value().parse().map_err(|_| "header value")?,
        );
    }
    Ok(())
}

/// Latencies and throughput of one load run.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    pub ops: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
}

impl RunStats {
    pub fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.seconds
    }
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e6
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64
}

/// Runs `concurrency` loops of `make(i)` requests until `max_ops` requests in total or
/// `max_time` has passed, whichever first. `expect` is the status every answer must have.
pub async fn run_load(
    driver: &Driver,
    concurrency: usize,
    max_ops: u64,
    max_time: Duration,
    expect: u16,
    make: impl Fn(u64) -> (Method, String, Payload) + Send + Sync + 'static,
) -> RunStats {
    let make = std::sync::Arc::new(make);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + max_time;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (driver, make, next) = (driver.clone(), make.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut bytes, mut errors) = (0u64, 0u64);
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= max_ops || Instant::now() >= deadline {
                    break;
                }
                let (m, url, p) = make(i);
                match driver.send(m, &url, &p).await {
                    Ok(o) if o.status == expect => {
                        lat.push(o.elapsed.as_micros() as u64);
                        bytes += o.bytes.max(if o.status == 200 { p.len() } else { 0 });
                    }
                    Ok(o) => {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("unexpected status {} for {url}", o.status);
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("{e}");
                        }
                    }
                }
                if errors > 100 {
                    break;
                }
            }
            (lat, bytes, errors)
        }));
    }
    let mut all = Vec::new();
    let mut stats = RunStats::default();
    for t in tasks {
        let (lat, bytes, errors) = t.await.unwrap_or_default();
        all.extend(lat);
        stats.bytes += bytes;
        stats.errors += errors;
    }
    stats.seconds = started.elapsed().as_secs_f64();
    all.sort_unstable();
    stats.ops = all.len() as u64;
    stats.p50_us = percentile(&all, 0.5);
    stats.p99_us = percentile(&all, 0.99);
    stats
}
