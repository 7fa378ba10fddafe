//! The serving process's log sink: lines are appended to a buffer in memory and written to
//! stderr by a thread of their own, every [`FLUSH_EVERY`] or sooner, so no request waits on a
//! `write(2)` and the event-loop threads never queue on stderr's lock.
//!
//! Writing each access-log line straight to stderr cost a system call per request, and with
//! two event-loop threads logging at once, a futex sleep and wake-up on std's stderr lock
//! (`perf` and `strace -c` in docs/performance.md). Here a line costs a copy under a mutex held
//! for just that copy. tracing-appender's `non_blocking` was not used: its worker is woken by
//! every line (a futex wake per request under light load), where this one wakes at most once
//! per [`FLUSH_EVERY`] unless a warning or a full buffer asks sooner.
//!
//! Warnings and errors are flushed at once. A line that would grow the buffer past
//! [`MAX_BUFFERED`] (stderr not taking bytes: a stuck pipe) is dropped and counted, and the
//! count is written when stderr takes bytes again: a stuck log reader never stops the gateway
//! nor grows its memory. [`FlushOnDrop`] flushes what is left when the process ends; a process
//! killed with SIGKILL loses at most the last [`FLUSH_EVERY`] of lines.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// The longest a line waits in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// A buffer this full is written at once.
const FLUSH_AT: usize = 64 * 1024;
/// Lines beyond this many buffered bytes are dropped (and counted).
pub const MAX_BUFFERED: usize = 4 * 1024 * 1024;

/// A [`MakeWriter`] for `tracing_subscriber` that buffers lines for a writer thread.
#[derive(Clone)]
pub struct BufferedStderr {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer thread.
    wake: Condvar,
}

#[derive(Default)]
struct State {
    lines: Vec<u8>,
    dropped: u64,
    /// The writer thread sleeps until a line arrives (nothing buffered).
    idle: bool,
    /// A warning or error, or a full buffer: write without waiting out [`FLUSH_EVERY`].
    urgent: bool,
    /// [`FlushOnDrop`] ran: lines go straight to stderr.
    closed: bool,
}

/// Ends the writer thread when dropped, once everything buffered is written.
pub struct FlushOnDrop {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl BufferedStderr {
    /// The sink for stderr, its writer thread started.
    pub fn start() -> io::Result<(Self, FlushOnDrop)> {
        Self::start_with(io::stderr())
    }

    /// The sink for any output (tests write to a pipe or a buffer).
    pub fn start_with(mut out: impl Write + Send + 'static) -> io::Result<(Self, FlushOnDrop)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("log-writer".into())
                .spawn(move || shared.write_loop(&mut out))?
        };
        Ok((
            Self {
                shared: shared.clone(),
            },
            FlushOnDrop {
                shared,
                thread: Some(thread),
            },
        ))
    }

    /// Appends one whole line, written with the next batch (the access log's lines,
    /// [`super::access`]).
    pub fn append(&self, line: &[u8]) {
        self.shared.append(line, false);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Only byte copies happen under the lock: a panic cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one line (tracing-subscriber writes each event with one `write_all`).
    fn append(&self, line: &[u8], urgent: bool) {
        let mut state = self.lock();
        if state.closed {
            drop(state);
            let _ = io::stderr().write_all(line);
            return;
        }
        if state.lines.len() + line.len() > MAX_BUFFERED {
            state.dropped += 1;
            return;
        }
        let was_idle = std::mem::take(&mut state.idle);
        state.lines.extend_from_slice(line);
        let full = state.lines.len() >= FLUSH_AT;
        let hurry = (urgent || full) && !state.urgent;
        state.urgent |= urgent || full;
        drop(state);
        // A wake-up only when the thread sleeps without a deadline or must cut one short: at
        // most a few per FLUSH_EVERY, not one per line.
        if was_idle || hurry {
            self.wake.notify_one();
        }
    }

    fn write_loop(&self, out: &mut dyn Write) {
        let mut spare = Vec::new();
        let mut state = self.lock();
        loop {
            if state.lines.is_empty() && state.dropped == 0 && !state.closed {
                state.idle = true;
                state = self
                    .wake
                    .wait_while(state, |s| s.idle && !s.closed)
                    .unwrap_or_else(|e| e.into_inner());
            }
            // Let lines gather for a moment, as long as nothing asks for them sooner.
            state = self
                .wake
                .wait_timeout_while(state, FLUSH_EVERY, |s| !s.urgent && !s.closed)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            state.urgent = false;
            std::mem::swap(&mut state.lines, &mut spare);
            let dropped = std::mem::take(&mut state.dropped);
            let closed = state.closed;
            drop(state);
            // Nothing to do about a failing stderr but go on: the lines are gone either way.
            let _ = out.write_all(&spare);
            if dropped > 0 {
                let _ = writeln!(
                    out,
                    "s3-balance: {dropped} log lines dropped: stderr took no bytes while \
                     {MAX_BUFFERED} were waiting"
                );
            }
            let _ = out.flush();
            spare.clear();
            state = self.lock();
            if closed && state.lines.is_empty() {
                return;
            }
        }
    }
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One event's line.
pub struct LineWriter<'a> {
    shared: &'a Shared,
    urgent: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.shared.append(line, self.urgent);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BufferedStderr {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
            urgent: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// One `write` that reached the output.
    type Written = (Instant, Vec<u8>);

    /// An output that records what reached it, and when.
    #[derive(Clone, Default)]
    struct Recorded(Arc<Mutex<Vec<Written>>>);

    impl Write for Recorded {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push((Instant::now(), b.to_vec()));
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Recorded {
        fn text(&self) -> String {
            let writes = self.0.lock().unwrap();
            String::from_utf8(writes.iter().flat_map(|(_, b)| b.clone()).collect()).unwrap()
        }
        fn first_write(&self) -> Option<Instant> {
            self.0.lock().unwrap().first().map(|(t, _)| *t)
        }
    }

    fn capture(events: impl FnOnce()) -> (Recorded, FlushOnDrop) {
        let out = Recorded::default();
        let (sink, guard) = BufferedStderr::start_with(out.clone()).unwrap();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(sink)
            .with_ansi(false)
            .without_time()
            .finish();
        tracing::subscriber::with_default(subscriber, events);
        (out, guard)
    }

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_guard_drops() {
        let (out, guard) = capture(|| {
            for i in 0..5000 {
                tracing::info!(i, "request");
            }
        });
        drop(guard);
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5000);
        for (i, line) in lines.iter().enumerate() {
            assert!(line.ends_with(&format!("request i={i}")), "{line}");
        }
        // Batched: far fewer writes than lines.
        assert!(out.0.lock().unwrap().len() < 500);
    }

    #[test]
    fn info_lines_wait_for_the_next_flush_and_warnings_do_not() {
        let start = Instant::now();
        let (out, guard) = capture(|| tracing::info!("quiet"));
        std::thread::sleep(FLUSH_EVERY * 4);
        let info_written = out
            .first_write()
            .expect("written within a few flush periods");
        assert!(
            info_written - start >= FLUSH_EVERY,
            "{:?}",
            info_written - start
        );
        drop(guard);

        let (out, guard) = capture(|| tracing::warn!("loud"));
        // A warning wakes the writer thread at once; give a loaded machine some slack, but
        // well under the flush period twice over.
        let deadline = Instant::now() + FLUSH_EVERY * 20;
        while out.first_write().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(out.text().contains("WARN"), "{}", out.text());
        drop(guard);
    }

    /// An output that takes nothing until released: a stuck pipe.
    struct Stuck {
        released: Arc<(Mutex<bool>, Condvar)>,
        inner: Recorded,
    }

    impl Write for Stuck {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let (lock, cv) = &*self.released;
            let _released = cv
                .wait_while(lock.lock().unwrap(), |released| !*released)
                .unwrap();
            self.inner.write(b)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_output_costs_dropped_lines_not_a_blocked_caller() {
        let released = Arc::new((Mutex::new(false), Condvar::new()));
        let out = Recorded::default();
        let (sink, guard) = BufferedStderr::start_with(Stuck {
            released: released.clone(),
            inner: out.clone(),
        })
        .unwrap();
        let mut line = vec![b'x'; 1023];
        line.push(b'\n');
        let mut w = sink.make_writer();
        // Far more than the buffer holds: every call returns (the test would hang otherwise).
        for _ in 0..(3 * MAX_BUFFERED / 1024) {
            w.write_all(&line).unwrap();
        }
        *released.0.lock().unwrap() = true;
        released.1.notify_all();
        drop(guard);
        let text = out.text();
        // What the writer thread had taken before it stuck, plus one full buffer.
        assert!(text.len() <= 2 * MAX_BUFFERED + 200, "{}", text.len());
        assert!(
            text.contains("log lines dropped"),
            "{}",
            &text[text.len() - 200..]
        );
    }
}
