//! `s3-balance check`: validate a config and probe every backend.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use shared::engine::Engine;
use shared::store::MemoryStore;

use crate::setup::load_config;
use native::BackendClient;

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
    // The probe the health task runs, through an engine with a throwaway index.
    let enabled: Vec<_> = config
        .backends
        .iter()
        .filter(|b| b.enabled)
        .cloned()
        .collect();
    let config = Arc::new(config);
    let engine = Engine::new(config.clone(), MemoryStore::default(), client);
    let probes = enabled.iter().map(|b| engine.probe(b, &SystemTime::now));
    let results = futures_util::future::join_all(probes).await;
    let mut rows = vec![[
        "NAME".to_owned(),
        "ENDPOINT".into(),
        "BUCKET".into(),
        "STATUS".into(),
        "LATENCY".into(),
    ]];
    let mut down = 0;
    for (b, result) in enabled.iter().zip(results) {
        let status = match result.error {
            None => "up".to_owned(),
            Some(e) => {
                down += 1;
                format!("DOWN: {e}")
            }
        };
        rows.push([
            b.name.clone(),
            b.endpoint.clone(),
            b.bucket.clone(),
            status,
            format!("{} ms", result.latency_ms),
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
