//! The process's log: text or JSON lines on stderr (RUST_LOG sets the level; default info).
//! The serving process buffers them ([`stderr`]); the one-shot commands write each line at
//! once, so their lines interleave with what they print.

pub mod access;
mod format;
mod stderr;

use clap::ValueEnum;
use tracing_subscriber::fmt::MakeWriter;

pub use stderr::FlushOnDrop;

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Installs the global subscriber. With `buffered`, lines go through [`stderr`]'s writer
/// thread; keep the returned guard until the end of `main` so the last lines are written.
pub fn init(format: Format, buffered: bool) -> Option<FlushOnDrop> {
    if buffered {
        match stderr::BufferedStderr::start() {
            Ok((sink, guard)) => {
                if matches!(format, Format::Text) && !ansi() {
                    access::write_directly_to(sink.clone());
                }
                install(format, sink);
                return Some(guard);
            }
            Err(e) => {
                install(format, std::io::stderr);
                tracing::warn!(error = %e, "no log writer thread: writing log lines unbuffered");
                return None;
            }
        }
    }
    install(format, std::io::stderr);
    None
}

/// Colour codes only on a terminal: a log file or journald gets plain text.
fn ansi() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
}

fn install<W>(format: Format, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(format::Rfc3339Micros)
        .with_writer(writer)
        .with_ansi(ansi());
    match format {
        Format::Text => builder.fmt_fields(format::PlainFields).init(),
        Format::Json => builder.json().flatten_event(true).init(),
    }
}
