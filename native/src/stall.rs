//! Inactivity timeouts: [`StallTimer`] measures how long an operation has been waiting, and
//! [`StallStream`] applies it to a body. The timer is lazy: a stream that keeps moving touches
//! the clock once per wait, and re-arms its sleep at most once per timeout period, so a fast
//! body pays almost nothing for the check.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use tokio::time::{Instant, Sleep};

/// Fires when an operation has been waiting (pending, with no progress) for `timeout`.
#[derive(Debug)]
pub struct StallTimer {
    timeout: Duration,
    /// When the current wait began; `None` while the operation makes progress.
    waiting_since: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl StallTimer {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            waiting_since: None,
            sleep: None,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The operation moved: the current wait (if any) is over.
    pub fn progress(&mut self) {
        self.waiting_since = None;
    }

    /// The operation is pending. `Ready` once it has been pending, without progress, for the
    /// whole timeout; otherwise `Pending` with a wake-up registered for that moment.
    pub fn poll_waiting(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = *self.waiting_since.get_or_insert_with(Instant::now) + self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
        loop {
            match sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                // A sleep armed for an earlier wait: this wait's deadline is later.
                Poll::Ready(()) if Instant::now() < deadline => sleep.as_mut().reset(deadline),
                Poll::Ready(()) => return Poll::Ready(()),
            }
        }
    }
}

/// A stream of byte chunks that fails with `on_stall(timeout)` when the inner stream yields
/// nothing for the timeout while it is being polled. A stream nobody polls (its reader is
/// slow) is not stalled: the clock runs only while the reader waits for it.
pub struct StallStream<S, F> {
    inner: S,
    timer: StallTimer,
    on_stall: F,
    done: bool,
}

impl<S, F> StallStream<S, F> {
    pub fn new(inner: S, timeout: Duration, on_stall: F) -> Self {
        Self {
            inner,
            timer: StallTimer::new(timeout),
            on_stall,
            done: false,
        }
    }
}

impl<S, E, F> Stream for StallStream<S, F>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    F: Fn(Duration) -> E + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(item) => {
                this.timer.progress();
                this.done = item.is_none();
                Poll::Ready(item)
            }
            Poll::Pending => match this.timer.poll_waiting(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => {
                    this.done = true;
                    Poll::Ready(Some(Err((this.on_stall)(this.timer.timeout()))))
                }
            },
        }
    }
}

/// The error of a connection whose writes stalled (in an `io::Error` of kind `TimedOut`).
#[derive(Debug, thiserror::Error)]
#[error("no bytes taken for {} ms", .0.as_millis())]
pub struct Stalled(pub Duration);

/// A connection whose writes fail with [`Stalled`] when the peer takes no bytes for the
/// timeout: a peer that stopped reading (a hung backend, a client that never reads its
/// response). Reads pass through: an idle keep-alive connection rightly waits to read.
pub struct StallIo<T> {
    inner: T,
    writes: Option<StallTimer>,
}

impl<T> StallIo<T> {
    pub fn new(inner: T, write_timeout: Option<Duration>) -> Self {
        Self {
            inner,
            writes: write_timeout.map(StallTimer::new),
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        let Some(timer) = &mut self.writes else {
            return polled;
        };
        match polled {
            Poll::Ready(r) => {
                timer.progress();
                Poll::Ready(r)
            }
            Poll::Pending => match timer.poll_waiting(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    Stalled(timer.timeout()),
                ))),
            },
        }
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for StallIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for StallIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    const MS: Duration = Duration::from_millis(1);

    fn stalled(t: Duration) -> String {
        format!("stalled {} ms", t.as_millis())
    }

    #[tokio::test]
    async fn a_stream_that_keeps_moving_never_stalls_and_a_silent_one_does() {
        // A chunk every 60 ms under a 150 ms timeout: 10 chunks over 600 ms, no stall.
        let moving = futures_util::stream::unfold(0, |i| async move {
            if i == 10 {
                return None;
            }
            tokio::time::sleep(60 * MS).await;
            Some((Ok::<_, String>(Bytes::from_static(b"x")), i + 1))
        });
        let mut s = StallStream::new(Box::pin(moving), 150 * MS, stalled);
        let mut n = 0;
        while let Some(chunk) = s.next().await {
            chunk.unwrap();
            n += 1;
        }
        assert_eq!(n, 10);

        // One chunk, then silence: fails one timeout after the last chunk.
        let silent =
            futures_util::stream::once(async { Ok::<_, String>(Bytes::from_static(b"x")) })
                .chain(futures_util::stream::pending());
        let mut s = StallStream::new(Box::pin(silent), 150 * MS, stalled);
        assert!(s.next().await.unwrap().is_ok());
        let started = Instant::now();
        assert_eq!(s.next().await.unwrap().unwrap_err(), "stalled 150 ms");
        let took = started.elapsed();
        assert!(took >= 150 * MS && took < 600 * MS, "{took:?}");
        assert!(s.next().await.is_none(), "a stalled stream ends");
    }

    #[tokio::test]
    async fn the_clock_runs_only_while_the_reader_waits() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, String>>();
        let source = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut s = StallStream::new(Box::pin(source), 150 * MS, stalled);
        // The reader waits 50 ms for the first chunk: the timer is armed then.
        let first = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(50 * MS).await;
            first.send(Ok(Bytes::from_static(b"a"))).unwrap();
        });
        assert!(s.next().await.unwrap().is_ok());
        // The reader goes away for 400 ms (a slow client): no stall is charged for that time,
        // although the timer armed before is long past.
        tokio::time::sleep(400 * MS).await;
        tx.send(Ok(Bytes::from_static(b"b"))).unwrap();
        assert!(s.next().await.unwrap().is_ok());
        let started = Instant::now();
        assert!(s.next().await.unwrap().is_err());
        let took = started.elapsed();
        assert!(took >= 150 * MS && took < 600 * MS, "{took:?}");
    }
}
