//! The text log's formatting (the access log's line is one event with nine fields), kept
//! byte for byte what `tracing_subscriber`'s defaults write, at a fraction of the cost.
//!
//! [`PlainFields`] writes exactly what `tracing_subscriber`'s `DefaultFields` writes, but
//! when ANSI colours are off (a log file, journald: the production case) it writes each plain
//! `name=value` field directly instead of through the italic and dimmed styling wrappers and
//! `{:?}`, which cost as much as the value itself: callgrind put the access log at 9% of a
//! proxied 4 KiB GET's instructions, the wrappers at a third of that (docs/performance.md).
//! Everything else (the message, `r#` names, errors, strings with escapes, colours on a
//! terminal) goes through `DefaultFields`' own visitor, so the output is the same (tested
//! below). [`Rfc3339Micros`] is `tracing_subscriber`'s `SystemTime` timestamp the same way.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultFields, DefaultVisitor, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::FormatFields;

/// `DefaultFields`, without the styling wrappers when ANSI is off.
#[derive(Debug, Default)]
pub struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        if writer.has_ansi_escapes() {
            return DefaultFields::new().format_fields(writer, fields);
        }
        let mut visitor = PlainVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// `DefaultVisitor` for one field (it writes the separating space itself).
    fn delegate(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        self.is_empty = false;
    }

    /// `name=` and the value `write_value` writes, as `record_debug` would write them.
    fn plain(&mut self, field: &Field, write_value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        let pad = !std::mem::replace(&mut self.is_empty, false);
        self.result = (|| {
            if pad {
                self.writer.write_char(' ')?;
            }
            self.writer.write_str(field.name())?;
            self.writer.write_char('=')?;
            write_value(&mut self.writer)
        })();
    }

    /// Fields `DefaultVisitor` skips (tracing-log's metadata) or styles differently.
    fn special(name: &str) -> bool {
        name == "message" || name.starts_with("r#") || name.starts_with("log.")
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        if field.name() == "message" {
            self.delegate(|v| v.record_str(field, value));
        } else if !Self::special(field.name()) && nothing_to_escape(value) {
            // What `{:?}` writes of a string with nothing to escape, without its char-by-char
            // escaping: the access log's operation, bucket and backend names.
            self.plain(field, |w| {
                w.write_char('"')?;
                w.write_str(value)?;
                w.write_char('"')
            });
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.result.is_err() {
            return;
        }
        if Self::special(field.name()) {
            self.record_debug(field, &value);
        } else {
            self.plain(field, |w| w.write_str(itoa::Buffer::new().format(value)));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.result.is_err() {
            return;
        }
        if Self::special(field.name()) {
            self.record_debug(field, &value);
        } else {
            self.plain(field, |w| w.write_str(if value { "true" } else { "false" }));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        self.delegate(|v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        if Self::special(name) {
            if !name.starts_with("log.") {
                self.delegate(|v| v.record_debug(field, value));
            }
            return;
        }
        self.plain(field, |w| write!(w, "{value:?}"));
    }
}

/// Whether `{:?}` writes `value` as it is between quotes: printable ASCII, no quote or
/// backslash (the access log's operation, bucket and backend names).
pub(super) fn nothing_to_escape(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' ')
}

/// `tracing_subscriber`'s `SystemTime` timestamp (`2026-12-01T12:45:27.972487Z`: UTC,
/// microseconds), written digit by digit instead of through `fmt` for each part (a quarter of
/// the access log's instructions).
#[derive(Debug, Default, Clone, Copy)]
pub struct Rfc3339Micros;

impl FormatTime for Rfc3339Micros {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        match shared::time::rfc3339_micros(std::time::SystemTime::now()) {
            Some(text) => w.write_str(std::str::from_utf8(&text).unwrap_or_default()),
            None => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer into memory, for capturing lines.
    #[derive(Clone, Default)]
    pub struct Buffer(pub Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer failed")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn events() {
        let error = Outer(std::io::Error::other("inner \"cause\""));
        let r#type = "raw";
        tracing::info!(
            request_id = %"0123456789ABCDEF",
            method = %http::Method::GET,
            operation = "GetObject",
            bucket = "bench",
            backend = "-",
            status = 200u16,
            bytes = 4096u64,
            duration_ms = 0u64,
            complete = true,
            "request"
        );
        tracing::warn!(
            r#type,
            ratio = 0.5f64,
            delta = -3i64,
            "odd \u{1b}[31m message \"quoted\""
        );
        tracing::error!(
            error = &error as &(dyn std::error::Error + 'static),
            "with an error"
        );
        tracing::info!(key = "tab\there", text = %"a b", "");
        tracing::info!(
            quoted = "say \"hi\"",
            accents = "café",
            path = "C:\\x",
            big = u64::MAX,
            no = false
        );
        tracing::info!(only = 1u8);
        tracing::info!("message only");
        tracing::info!(message = "message field", after = "x");
    }

    fn capture(plain: bool, ansi: bool) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(ansi)
            .without_time();
        if plain {
            tracing::subscriber::with_default(builder.fmt_fields(PlainFields).finish(), events);
        } else {
            tracing::subscriber::with_default(builder.finish(), events);
        }
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn timestamps_have_tracing_subscribers_shape() {
        // The same shape as tracing-subscriber's own timestamp, taken a moment apart.
        let mut theirs = String::new();
        tracing_subscriber::fmt::time::SystemTime
            .format_time(&mut Writer::new(&mut theirs))
            .unwrap();
        let mut ours = String::new();
        Rfc3339Micros
            .format_time(&mut Writer::new(&mut ours))
            .unwrap();
        assert_eq!(ours.len(), theirs.len(), "{ours} {theirs}");
        assert_eq!(ours[..15], theirs[..15], "{ours} {theirs}");
        assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
    }

    #[test]
    fn writes_what_default_fields_writes() {
        for ansi in [false, true] {
            let default = capture(false, ansi);
            assert_eq!(default.lines().count(), 8, "{default}");
            assert_eq!(capture(true, ansi), default, "ansi {ansi}");
        }
        assert!(capture(true, false).contains(
            "request request_id=0123456789ABCDEF method=GET operation=\"GetObject\" bucket=\"bench\" \
             backend=\"-\" status=200 bytes=4096 duration_ms=0 complete=true"
        ));
    }
}
