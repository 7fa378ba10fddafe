//! `s3-balance drain BACKEND` and `s3-balance rebalance`: move objects between backends, safely
//! next to serving gateways (see `shared/src/engine/moves.rs` for why no object is ever
//! unreadable or doubled). The run is kept in the metadata store: a killed command resumes
//! where it stopped, and the admin API and every runtime's scheduled job see and continue it.
//! Progress: a bar on a terminal (objects, bytes, rate, ETA), JSON lines otherwise.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shared::engine::{MoveCursor, MoveDriver, MoveGoal, MoveLimits, MoveReport, MoveRun, MoveStep};
use shared::store::MetadataStore;

use crate::setup::{build_engine, load_config, ServerEngine};

pub struct Options {
    pub dry_run: bool,
    pub restart: bool,
    pub limits: MoveLimits,
}

pub async fn run(config_path: &Path, goal: MoveGoal, options: Options) -> ExitCode {
    let engine = match load_config(config_path).and_then(|(config, _)| build_engine(config)) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // Health, usage, overrides and created buckets as the serving gateways see them.
    if let Err(e) = engine.refresh(SystemTime::now()).await {
        eprintln!("reading the metadata store: {e}");
        return ExitCode::FAILURE;
    }
    if options.dry_run {
        return dry_run(&engine, &goal, options.limits).await;
    }
    let run = match engine
        .start_move_run(
            goal,
            MoveDriver::Cli,
            options.limits,
            options.restart,
            SystemTime::now(),
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("could not start: {}", e.message);
            return ExitCode::FAILURE;
        }
    };
    if run.examined > 0 {
        eprintln!(
            "resuming a run started at {} ({} objects moved so far); --restart starts over",
            shared::time::iso8601(shared::time::from_unix_secs(run.started)),
            run.moved
        );
    }
    let estimate = estimate(&engine, &run.goal).await;
    let progress = Progress::new(estimate, std::io::stderr().is_terminal());
    let started = Instant::now();
    let mut last_pass = run.pass;
    let owner = format!("cli-{}-{:x}", std::process::id(), rand::random::<u64>());
    let mut waiting_said = false;
    let final_run = loop {
        let now = SystemTime::now();
        let step = engine
            .continue_move_run(options.limits.batch, MoveDriver::Cli, &owner, now)
            .await;
        // Usage and operation counts of the moves, for the serving gateways.
        if let Err(e) = engine.refresh(now).await {
            tracing::warn!(error = %e, "flushing usage failed");
        }
        match step {
            Ok(MoveStep::Stepped(run)) => {
                progress.show(&run, started.elapsed());
                if run.done {
                    break run;
                }
                if run.pass != last_pass {
                    // Objects deferred as too young get older meanwhile.
                    last_pass = run.pass;
                    tokio::time::sleep(Duration::from_secs(run.limits.settle_secs.clamp(1, 5)))
                        .await;
                }
            }
            Ok(MoveStep::Busy(run)) => {
                // A killed command's lease runs out by itself.
                if !std::mem::replace(&mut waiting_said, true) {
                    eprintln!(
                        "waiting for the lease of {} (until {})",
                        run.lease_owner,
                        shared::time::iso8601(shared::time::from_unix_secs(run.lease_until))
                    );
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(MoveStep::Idle) => {
                progress.finish();
                eprintln!("the run was stopped (DELETE /_admin/api/moves) or replaced");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                progress.finish();
                eprintln!(
                    "stopped: {}; run the same command again to resume",
                    e.message
                );
                return ExitCode::FAILURE;
            }
        }
    };
    progress.finish();
    println!(
        "{}: {} objects ({} bytes) moved in {:.1} s over {} pass(es); {} left (deferred or failed), {} too large to move",
        describe(&final_run.goal),
        final_run.moved,
        final_run.moved_bytes,
        started.elapsed().as_secs_f64(),
        final_run.pass,
        final_run.left,
        final_run.too_large
    );
    if final_run.left == 0 && final_run.too_large == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Walks the whole index and prints what would move, moving nothing.
async fn dry_run(engine: &ServerEngine, goal: &MoveGoal, limits: MoveLimits) -> ExitCode {
    let mut cursor = MoveCursor::default();
    let mut total = MoveReport::default();
    let mut by_route = std::collections::BTreeMap::<(String, String), (u64, u64)>::new();
    loop {
        match engine
            .move_step(goal, &cursor, limits, true, SystemTime::now())
            .await
        {
            Ok((report, next)) => {
                total.examined += report.examined;
                total.too_large += report.too_large;
                for m in &report.planned {
                    let e = by_route.entry((m.from.clone(), m.to.clone())).or_default();
                    e.0 += 1;
                    e.1 += m.size;
                }
                cursor = next;
                if report.done {
                    break;
                }
            }
            Err(e) => {
                eprintln!("dry run stopped: {}", e.message);
                return ExitCode::FAILURE;
            }
        }
    }
    for ((from, to), (n, bytes)) in &by_route {
        println!("would move {n} objects ({bytes} bytes) from {from} to {to}");
    }
    let planned: u64 = by_route.values().map(|(n, _)| n).sum();
    println!(
        "dry run, {}: {planned} of {} objects would move; {} too large to move",
        describe(goal),
        total.examined,
        total.too_large
    );
    ExitCode::SUCCESS
}

fn describe(goal: &MoveGoal) -> String {
    match goal {
        MoveGoal::Drain(b) => format!("drain {b}"),
        MoveGoal::Rebalance => "rebalance".to_owned(),
    }
}

/// Objects the run will look at, from the usage counts (no ETA when they are unknown).
async fn estimate(engine: &ServerEngine, goal: &MoveGoal) -> u64 {
    let usage = engine.store().list_usage().await.unwrap_or_default();
    let objects = |u: &shared::store::BackendUsage| u.objects.max(0) as u64;
    match goal {
        MoveGoal::Drain(b) => usage.iter().filter(|u| u.backend == *b).map(objects).sum(),
        MoveGoal::Rebalance => usage.iter().map(objects).sum(),
    }
}

/// A bar on a terminal; one JSON line per step otherwise.
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(estimate: u64, terminal: bool) -> Self {
        if !terminal {
            return Self { bar: None };
        }
        let bar = ProgressBar::with_draw_target(
            (estimate > 0).then_some(estimate),
            ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/~{len} objects looked at {per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar: Some(bar) }
    }

    fn show(&self, run: &MoveRun, elapsed: Duration) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(run.examined);
                bar.set_message(format!(
                    "· moved {} ({:.1} MiB) · pass {} · left {}",
                    run.moved,
                    run.moved_bytes as f64 / (1024.0 * 1024.0),
                    run.pass,
                    run.left_this_pass
                ));
            }
            None => {
                let secs = elapsed.as_secs_f64().max(0.001);
                let line = serde_json::json!({
                    "examined": run.examined,
                    "moved": run.moved,
                    "moved_bytes": run.moved_bytes,
                    "pass": run.pass,
                    "left_this_pass": run.left_this_pass,
                    "objects_per_second": (run.moved as f64 / secs * 10.0).round() / 10.0,
                    "bytes_per_second": (run.moved_bytes as f64 / secs).round(),
                    "done": run.done,
                });
                eprintln!("{line}");
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
