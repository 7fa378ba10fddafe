//! `s3-balance reindex`: rebuild the index from the backends, safely next to a serving gateway.
//!
//! The engine walks one page per step ([`shared::engine::Engine::reindex_step`]); this command
//! drives the steps, resumes a run that was killed (the cursor is in the metadata store),
//! retries a backend that fails for a moment, and shows progress: a bar on a terminal (keys,
//! per backend, rate, ETA against the usage counts), one summary line otherwise.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shared::engine::{ReindexCursor, ReindexError, ReindexReport};
use shared::store::MetadataStore;

use crate::setup::{build_engine, load_config};

/// How often one step is tried when a backend cannot be listed, and the first pause.
const ATTEMPTS: u32 = 5;
const FIRST_PAUSE: Duration = Duration::from_secs(1);

pub struct Options {
    pub dry_run: bool,
    /// Start over even when a killed run left a cursor.
    pub restart: bool,
}

pub async fn run(config_path: &Path, options: Options) -> ExitCode {
    let engine = match load_config(config_path).and_then(|(config, _)| build_engine(config)) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut cursor = match engine
        .reindex_start(SystemTime::now(), options.dry_run, !options.restart)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("reindex could not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cursor.report.objects > 0 {
        eprintln!(
            "resuming a reindex started at {} ({} keys done); --restart starts over",
            shared::time::iso8601(SystemTime::UNIX_EPOCH + Duration::from_secs(cursor.started)),
            cursor.report.objects
        );
    }
    // The usage counts estimate the total (they may be lost with the index: then no ETA).
    let estimate: u64 = match engine.store().list_usage().await {
        Ok(u) => u.iter().map(|u| u.objects.max(0) as u64).sum(),
        Err(_) => 0,
    };
    let progress = Progress::new(estimate, std::io::stderr().is_terminal());
    let started = Instant::now();
    loop {
        progress.show(&cursor);
        match step_with_retries(&engine, &mut cursor).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                progress.finish();
                eprintln!("reindex stopped: {e}");
                if !cursor.dry_run {
                    eprintln!("the cursor is kept: run the same command again to resume");
                }
                return ExitCode::FAILURE;
            }
        }
    }
    progress.finish();
    print_summary(&cursor, started.elapsed());
    if cursor.report.backends_failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn step_with_retries(
    engine: &crate::setup::ServerEngine,
    cursor: &mut ReindexCursor,
) -> Result<bool, ReindexError> {
    let mut pause = FIRST_PAUSE;
    for attempt in 1..=ATTEMPTS {
        match engine.reindex_step(cursor, SystemTime::now()).await {
            Err(ReindexError::Backend { backend, error }) if attempt < ATTEMPTS => {
                tracing::warn!(%backend, %error, attempt, "listing failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            other => return other,
        }
    }
    unreachable!("the last attempt returns")
}

fn print_summary(cursor: &ReindexCursor, took: Duration) {
    let r: &ReindexReport = &cursor.report;
    if cursor.dry_run {
        for (bucket, key, live, older) in &r.duplicate_keys {
            println!(
                "duplicate {bucket}/{key}: live on {live}, older on {}",
                older.join(", ")
            );
        }
    }
    let listed: Vec<String> = r.listed.iter().map(|(b, n)| format!("{b} {n}")).collect();
    println!(
        "{}{} objects ({} bytes) in {:.1} s; listed: {}; duplicates {}, older copies {} {}, left {}, forgotten {}; entries written {}, kept (newer) {}, dropped {}",
        if cursor.dry_run { "dry run: " } else { "reindexed " },
        r.objects,
        r.bytes,
        took.as_secs_f64(),
        if listed.is_empty() { "nothing".to_owned() } else { listed.join(", ") },
        r.duplicates,
        if cursor.dry_run { "to remove" } else { "removed" },
        r.older_copies_removed,
        r.older_copies_left,
        r.older_copies_forgotten,
        r.entries_written,
        r.entries_kept_newer,
        r.entries_dropped,
    );
    if !r.backends_failed.is_empty() {
        eprintln!(
            "backends that could not be listed: {}",
            r.backends_failed.join(", ")
        );
    }
}

/// The progress bar on a terminal; nothing otherwise.
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(estimate: u64, terminal: bool) -> Self {
        if !terminal {
            return Self { bar: None };
        }
        let bar = if estimate > 0 {
            let bar = ProgressBar::with_draw_target(Some(estimate), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/~{len} keys {per_sec} ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        } else {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {pos} keys {per_sec} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        };
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar: Some(bar) }
    }

    fn show(&self, cursor: &ReindexCursor) {
        let Some(bar) = &self.bar else { return };
        bar.set_position(cursor.report.objects);
        let bucket = cursor
            .buckets
            .get(cursor.bucket)
            .map(String::as_str)
            .unwrap_or("done");
        let per_backend: Vec<String> = cursor
            .report
            .listed
            .iter()
            .map(|(b, n)| format!("{b} {n}"))
            .collect();
        bar.set_message(format!(
            "bucket {}/{} {bucket} · {}",
            (cursor.bucket + 1).min(cursor.buckets.len()),
            cursor.buckets.len(),
            per_backend.join(" · ")
        ));
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
