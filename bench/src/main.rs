//! `s3-balance-bench`: the tools behind `scripts/bench`.
//!
//! - `backend --port P`: the fast in-memory S3 backend (see [`backend`]).
//! - `run --server PATH ...`: starts the backend, the gateway and nginx on 127.0.0.1, measures
//!   direct / proxy / nginx side by side in interleaved rounds, and prints and writes the report.
#![forbid(unsafe_code)]

mod backend;
mod client;
mod run;

use std::sync::Arc;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "s3-balance-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The in-memory S3 backend, on 127.0.0.1.
    Backend {
        #[arg(long)]
        port: u16,
    },
    /// The whole benchmark.
    Run(run::Options),
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Backend { port } => {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .expect("bind");
                backend::serve(listener, Arc::new(backend::Store::default())).await;
            });
        }
        Command::Run(options) => {
            // One thread for the load driver: it shares two cores with the processes measured.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let code = rt.block_on(run::run(options));
            std::process::exit(code);
        }
    }
}
