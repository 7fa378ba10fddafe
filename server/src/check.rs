//! `s3-balance check`: validate a config and probe every backend.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use shared::body::Body as _;
use shared::config::BackendConfig;
use shared::http::{HttpClient, RequestTimeout};
use shared::sigv4::sign::{sign_request, PayloadHash};

use crate::setup::load_config;
use native::{BackendClient, NativeBody};

/// SHA-256 of the empty body.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The URL of a backend's real bucket plus `path_and_query` (which starts with `/` or `?`).
pub fn bucket_url(backend: &BackendConfig, path_and_query: &str) -> String {
    let endpoint = backend.endpoint.trim_end_matches('/');
    if backend.path_style {
        format!("{endpoint}/{}{path_and_query}", backend.bucket)
    } else {
        let (scheme, host) = endpoint.split_once("://").unwrap_or(("https", endpoint));
        let path_and_query = if path_and_query.starts_with('/') {
            path_and_query.to_owned()
        } else {
            format!("/{path_and_query}")
        };
        format!("{scheme}://{}.{host}{path_and_query}", backend.bucket)
    }
}

/// One signed ListObjectsV2 max-keys=1: `Ok(latency)` on 200, else what went wrong.
pub async fn probe(
    client: &BackendClient,
    backend: &BackendConfig,
    timeout: Duration,
) -> (Result<(), String>, Duration) {
    let started = Instant::now();
    let result = async {
        let uri: http::Uri = bucket_url(backend, "?list-type=2&max-keys=1")
            .parse()
            .map_err(|e| format!("bad endpoint: {e}"))?;
        let (mut parts, body) = http::Request::get(uri)
            .body(NativeBody::Empty)
            .map_err(|e| e.to_string())?
            .into_parts();
        sign_request(
            &mut parts,
            backend,
            &PayloadHash::Sha256(EMPTY_SHA256.into()),
            SystemTime::now(),
        )
        .map_err(|e| e.to_string())?;
        parts.extensions.insert(RequestTimeout(timeout));
        let response = client
            .send(http::Request::from_parts(parts, body))
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response
            .into_body()
            .collect(64 * 1024)
            .await
            .unwrap_or_default();
        let code = shared::xml::parse_error(&body)
            .map(|(code, _)| code)
            .unwrap_or_default();
        Err(format!("HTTP {} {code}", status.as_u16())
            .trim_end()
            .to_owned())
    }
    .await;
    (result, started.elapsed())
}

pub async fn check(config_path: &Path) -> ExitCode {
    let (config, warnings) = match load_config(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("config invalid: {e}");
            return ExitCode::FAILURE;
        }
    };
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "config ok: {} backends, {} virtual buckets",
        config.backends.len(),
        config.virtual_buckets.len()
    );
    let client = match BackendClient::new() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("HTTP client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let probes = config
        .backends
        .iter()
        .filter(|b| b.enabled)
        .map(|b| probe(&client, b, config.balancer.probe_timeout));
    let results = futures_util::future::join_all(probes).await;
    let mut rows = vec![[
        "NAME".to_owned(),
        "ENDPOINT".into(),
        "BUCKET".into(),
        "STATUS".into(),
        "LATENCY".into(),
    ]];
    let mut down = 0;
    for (b, (result, latency)) in config.backends.iter().filter(|b| b.enabled).zip(results) {
        let status = result.map(|()| "up".to_owned()).unwrap_or_else(|e| {
            down += 1;
            format!("DOWN: {e}")
        });
        rows.push([
            b.name.clone(),
            b.endpoint.clone(),
            b.bucket.clone(),
            status,
            format!("{} ms", latency.as_millis()),
        ]);
    }
    for b in config.backends.iter().filter(|b| !b.enabled) {
        rows.push([
            b.name.clone(),
            b.endpoint.clone(),
            b.bucket.clone(),
            "disabled".into(),
            "-".into(),
        ]);
    }
    print_table(&rows);
    if down > 0 {
        eprintln!("{down} backend(s) down");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn print_table(rows: &[[String; 5]]) {
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::config::Secret;

    pub fn backend(endpoint: &str, path_style: bool) -> BackendConfig {
        BackendConfig {
            name: "one".into(),
            bucket: "real".into(),
            endpoint: endpoint.into(),
            region: "us-east-1".into(),
            access_key: "ak".into(),
            secret_key: Secret::new("sk"),
            path_style,
            max_size: None,
            weight: 1,
            enabled: true,
            read_only: false,
            limit_class_a: None,
            limit_class_b: None,
        }
    }

    #[test]
    fn bucket_urls_follow_the_addressing_style() {
        assert_eq!(
            bucket_url(&backend("http://127.0.0.1:9000/", true), "?list-type=2"),
            "http://127.0.0.1:9000/real?list-type=2"
        );
        assert_eq!(
            bucket_url(&backend("https://s3.example.com", false), "?list-type=2"),
            "https://real.s3.example.com/?list-type=2"
        );
        assert_eq!(
            bucket_url(&backend("https://s3.example.com", false), "/k"),
            "https://real.s3.example.com/k"
        );
    }
}
