//! The access log's line (one per request, logged by `http_server` when the response is
//! done), written straight into the serving process's log buffer: byte for byte what its
//! `tracing` event writes through `tracing_subscriber` (tested below), at a fraction of the
//! cost.
//!
//! Why: the event's way through `tracing` (the dispatcher's thread-local, the subscriber's
//! formatter, the field visitor, the level and target written through `fmt`) was 13% of a 307
//! redirect's instructions once SHA-256 is counted as the CPU runs it (docs/performance.md).
//! Used only where the result is the same: text lines, no colours, the buffered sink; JSON
//! lines, a terminal and the one-shot commands take the `tracing` event.

use std::sync::OnceLock;

use super::stderr::BufferedStderr;

/// The sink access lines go to directly; unset when they must take the `tracing` event.
static SINK: OnceLock<BufferedStderr> = OnceLock::new();

/// Sends access lines straight to `sink` from now on.
pub(super) fn write_directly_to(sink: BufferedStderr) {
    let _ = SINK.set(sink);
}

/// The fields of one request's line, in the order they are written.
pub struct Request<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub operation: &'a str,
    pub bucket: &'a str,
    pub backend: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub duration_ms: u64,
    pub complete: bool,
}

/// The event's target: the module that logged the line before this one did, so `RUST_LOG`
/// directives and the lines stay what they were.
const TARGET: &str = "s3_balance::http_server";

/// Logs the request's line, if the `tracing` filter lets this event through.
pub fn log(r: &Request<'_>) {
    if tracing::enabled!(target: TARGET, tracing::Level::INFO) && !write_directly(r) {
        event(r);
    }
}

/// Appends the request's line to the log buffer; `false` when it must take the `tracing`
/// event instead.
fn write_directly(r: &Request<'_>) -> bool {
    let Some(sink) = SINK.get() else {
        return false;
    };
    let Some(time) = shared::time::rfc3339_micros(std::time::SystemTime::now()) else {
        return false;
    };
    let mut line = Vec::with_capacity(256);
    line.extend_from_slice(&time);
    r.write_after_time(&mut line);
    sink.append(&line);
    true
}

/// The line as a `tracing` event.
fn event(r: &Request<'_>) {
    tracing::info!(
        target: TARGET,
        request_id = %r.request_id,
        method = %r.method,
        operation = r.operation,
        bucket = r.bucket,
        backend = r.backend,
        status = r.status,
        bytes = r.bytes,
        duration_ms = r.duration_ms,
        complete = r.complete,
        "request"
    );
}

impl Request<'_> {
    /// The line after its timestamp: level, target, message and fields, as
    /// `tracing_subscriber`'s full format with `log::format::PlainFields` writes them.
    fn write_after_time(&self, line: &mut Vec<u8>) {
        line.extend_from_slice(b"  INFO ");
        line.extend_from_slice(TARGET.as_bytes());
        line.extend_from_slice(b": request request_id=");
        line.extend_from_slice(self.request_id.as_bytes());
        line.extend_from_slice(b" method=");
        line.extend_from_slice(self.method.as_bytes());
        quoted(line, b" operation=", self.operation);
        quoted(line, b" bucket=", self.bucket);
        quoted(line, b" backend=", self.backend);
        number(line, b" status=", self.status.into());
        number(line, b" bytes=", self.bytes);
        number(line, b" duration_ms=", self.duration_ms);
        line.extend_from_slice(if self.complete {
            b" complete=true\n"
        } else {
            b" complete=false\n"
        });
    }
}

/// A string field as `{:?}` writes it (what the `tracing` event records).
fn quoted(line: &mut Vec<u8>, name: &[u8], value: &str) {
    line.extend_from_slice(name);
    if super::format::nothing_to_escape(value) {
        line.push(b'"');
        line.extend_from_slice(value.as_bytes());
        line.push(b'"');
    } else {
        line.extend_from_slice(format!("{value:?}").as_bytes());
    }
}

fn number(line: &mut Vec<u8>, name: &[u8], value: u64) {
    line.extend_from_slice(name);
    line.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::format::tests::Buffer;
    use crate::log::format::PlainFields;

    /// What the `tracing` event writes for `r`, without the timestamp.
    fn through_tracing(r: &Request<'_>) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(PlainFields)
            .with_timer(crate::log::format::Rfc3339Micros)
            .finish();
        tracing::subscriber::with_default(subscriber, || event(r));
        let line = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        // The timestamp is as long as ours (`format::tests`).
        line[27..].to_owned()
    }

    fn direct(r: &Request<'_>) -> String {
        let mut line = Vec::new();
        r.write_after_time(&mut line);
        String::from_utf8(line).unwrap()
    }

    #[test]
    fn lines_are_what_the_tracing_event_writes() {
        let plain = Request {
            request_id: "0123456789ABCDEF",
            method: "GET",
            operation: "GetObject",
            bucket: "bench",
            backend: "-",
            status: 200,
            bytes: 4096,
            duration_ms: 0,
            complete: true,
        };
        assert_eq!(direct(&plain), through_tracing(&plain));
        assert!(direct(&plain).starts_with("  INFO s3_balance::http_server: request "));
        let odd = Request {
            request_id: "18C0FFEE",
            method: "PROPFIND",
            operation: "",
            bucket: "a \"quoted\" tab\there, café \\ \u{1b}[31m",
            backend: "b0 (eu)",
            status: 503,
            bytes: u64::MAX,
            duration_ms: 12345,
            complete: false,
        };
        assert_eq!(direct(&odd), through_tracing(&odd));
    }
}
