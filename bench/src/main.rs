//! `s3-balance-bench`: the tools behind `scripts/bench`.
//!
//! - `backend --port P`: the fast in-memory S3 backend (see [`backend`]).
//! - `bare-proxy --port P --backend URL`: a proxy on the gateway's HTTP stack that does
//!   nothing else (see [`bare_proxy`]).
//! - `run --server PATH ...`: starts the backend, the gateway, nginx and the bare proxy on
//!   127.0.0.1, measures direct / proxy / nginx / bare side by side in interleaved rounds, and
//!   prints and writes the report.
//! - `load --url URL ...`: a fixed number of requests to one URL (GET, or PUT of `--size`
//!   bytes), for profiling a process under a known load (`valgrind --tool=callgrind`).
#![forbid(unsafe_code)]

mod backend;
mod bare_proxy;
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
    /// A reverse proxy on the gateway's HTTP stack doing nothing else (the floor), on
    /// 127.0.0.1.
    BareProxy {
        #[arg(long)]
        port: u16,
        /// `http://127.0.0.1:PORT` of the backend.
        #[arg(long)]
        backend: String,
        /// Event-loop threads; default: one per core, as the gateway.
        #[arg(long)]
        threads: Option<usize>,
    },
    /// The whole benchmark.
    Run(run::Options),
    /// A fixed number of requests to one URL: prints ops/s and p50/p99.
    Load {
        /// Object URL; PUTs go to `URL-<i % 64>`.
        #[arg(long)]
        url: String,
        /// GET or PUT.
        #[arg(long, default_value = "GET")]
        method: String,
        /// Body size of a PUT, in bytes.
        #[arg(long, default_value_t = 4096)]
        size: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long, default_value_t = 2000)]
        count: u64,
        /// Expected status of every answer.
        #[arg(long, default_value_t = 200)]
        expect: u16,
        /// Upper bound on the run, in seconds.
        #[arg(long, default_value_t = 120)]
        max_seconds: u64,
    },
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
        Command::BareProxy {
            port,
            backend,
            threads,
        } => bare_proxy::serve(port, &backend, threads),
        Command::Run(options) => {
            // One thread for the load driver: it shares two cores with the processes measured.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let code = rt.block_on(run::run(options));
            std::process::exit(code);
        }
        Command::Load {
            url,
            method,
            size,
            concurrency,
            count,
            expect,
            max_seconds,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let put = method.eq_ignore_ascii_case("PUT");
            let body = bytes::Bytes::from(vec![0x5au8; size]);
            let driver = client::Driver::new(None);
            let stats = rt.block_on(client::run_load(
                &driver,
                concurrency,
                count,
                std::time::Duration::from_secs(max_seconds),
                expect,
                move |i| {
                    if put {
                        (
                            http::Method::PUT,
                            format!("{url}-{}", i % 64),
                            client::Payload::Bytes(body.clone()),
                        )
                    } else {
                        (http::Method::GET, url.clone(), client::Payload::None)
                    }
                },
            ));
            println!(
                "{} ops in {:.2} s ({:.0} ops/s), p50 {:.0} us, p99 {:.0} us, {} errors",
                stats.ops,
                stats.seconds,
                stats.ops_per_s(),
                stats.p50_us,
                stats.p99_us,
                stats.errors
            );
            if stats.errors > 0 {
                std::process::exit(1);
            }
        }
    }
}
