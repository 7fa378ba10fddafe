//! `s3-balance`: the self-hosted S3 Balance server.
#![forbid(unsafe_code)]

mod check;
mod connections;
mod dev;
mod healthcheck;
mod http_server;
mod log;
mod migrate;
mod moves;
mod reindex;
mod setup;
mod store;
mod tasks;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "s3-balance",
    version,
    about = "One S3 endpoint in front of many buckets."
)]
struct Cli {
    /// Log line format (RUST_LOG sets the level; default info).
    #[arg(long, global = true, value_enum, default_value_t = log::Format::Text)]
    log_format: log::Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the S3 endpoint described by a config file (reloaded when it changes).
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// Threads serving requests, each with its own event loop (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Local playground: three file-system backends and the gateway, no config needed.
    Dev {
        /// Where the backends' files and the metadata database live.
        #[arg(long, default_value = "data")]
        data: PathBuf,
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// Validate a config file and probe every backend; exit 1 if anything is wrong.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Rebuild the object index and usage from the backends' listings. Safe while `serve`
    /// runs; a killed run resumes where it stopped.
    Reindex {
        #[arg(long)]
        config: PathBuf,
        /// Only report what would change (duplicates, entries), changing nothing.
        #[arg(long)]
        dry_run: bool,
        /// Start over instead of resuming a run that was killed.
        #[arg(long)]
        restart: bool,
    },
    /// Empty a backend: mark it read-only for every gateway, then move each of its objects to
    /// where placement puts it now (verified before the index switches; never unreadable).
    /// Safe while gateways serve; a killed run resumes.
    Drain {
        #[arg(long)]
        config: PathBuf,
        /// The backend (the `name` of a real bucket in the config).
        backend: String,
        #[command(flatten)]
        moves: MoveArgs,
    },
    /// Move objects where the strategy wants them now: with consistent-hash, those whose place
    /// changed (about 1/N after adding a backend); otherwise towards each backend's share of
    /// the bytes (capacity, else weight). Safe while gateways serve; a killed run resumes.
    Rebalance {
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        moves: MoveArgs,
    },
    /// Copy all metadata between stores: sqlite:PATH, postgres://..., mysql://... (stop the
    /// gateways first). Shows a progress bar on a terminal.
    Migrate {
        /// Where the metadata is now, e.g. sqlite:data/s3-balance.db
        #[arg(long)]
        from: String,
        /// Where it goes, e.g. postgres://user:pass@db/s3balance
        #[arg(long)]
        to: String,
        /// Merge into a target that already holds index entries (same keys are replaced).
        #[arg(long)]
        overwrite: bool,
    },
    /// GET /health of a running gateway; exit 0 on 200 (the container's HEALTHCHECK).
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:8080/health")]
        url: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
}

/// Options of `drain` and `rebalance`.
#[derive(clap::Args)]
struct MoveArgs {
    /// Print what would move (per source and target), moving nothing.
    #[arg(long)]
    dry_run: bool,
    /// Start over instead of resuming the stored run.
    #[arg(long)]
    restart: bool,
    /// Index entries looked at per step.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Larger objects are left in place (objects move whole through memory).
    #[arg(long, default_value = "256MiB", value_parser = shared::config::parse_size)]
    max_object_size: u64,
    /// Seconds an index entry must be old to move; more than the clock skew between gateways.
    #[arg(long, default_value_t = shared::engine::SETTLE_SECS)]
    settle: u64,
}

impl MoveArgs {
    fn options(self) -> moves::Options {
        moves::Options {
            dry_run: self.dry_run,
            restart: self.restart,
            limits: shared::engine::MoveLimits {
                batch: self.batch.max(1),
                max_object: self.max_object_size,
                settle_secs: self.settle,
            },
        }
    }
}

async fn serve(config_path: PathBuf, threads: Option<usize>) -> ExitCode {
    let (config, warnings) = match setup::load_config(&config_path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for w in warnings {
        tracing::warn!("config: {w}");
    }
    let address = (config.server.host.clone(), config.server.port);
    let engine = match setup::build_engine(config) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match std::net::TcpListener::bind((address.0.as_str(), address.1)) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("binding {}:{}: {e}", address.0, address.1);
            return ExitCode::FAILURE;
        }
    };
    let threads = threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let health = tasks::start(engine.clone(), Some(config_path));
    let served = tokio::select! {
        served = http_server::serve_threads(engine, listener, threads) => served,
        () = health => unreachable!("the health loop never ends"),
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Dropped last, after the runtime: the final lines are written before the process ends.
    let _log = log::init(cli.log_format, matches!(cli.command, Command::Serve { .. }));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Serve { config, threads } => serve(config, threads).await,
            Command::Dev { data, port } => dev::run(data, port).await,
            Command::Check { config } => check::check(&config).await,
            Command::Reindex {
                config,
                dry_run,
                restart,
            } => reindex::run(&config, reindex::Options { dry_run, restart }).await,
            Command::Drain {
                config,
                backend,
                moves,
            } => {
                moves::run(
                    &config,
                    shared::engine::MoveGoal::Drain(backend),
                    moves.options(),
                )
                .await
            }
            Command::Rebalance { config, moves } => {
                moves::run(
                    &config,
                    shared::engine::MoveGoal::Rebalance,
                    moves.options(),
                )
                .await
            }
            Command::Migrate {
                from,
                to,
                overwrite,
            } => migrate::run(&from, &to, overwrite).await,
            Command::Healthcheck { url, timeout } => {
                healthcheck::run(&url, std::time::Duration::from_secs(timeout)).await
            }
        }
    });
    // Background loops and idle connections must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}
