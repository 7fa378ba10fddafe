//! The store's own small runtime: every query runs there.
//!
//! The server serves from one current-thread runtime per thread, and the CLI commands from
//! another runtime again. A pooled connection's socket belongs to the runtime that opened it
//! and is only driven while that runtime runs, so a pool shared by several runtimes would
//! stall or break when one of them is busy or gone. Running every query on one runtime owned
//! by the store keeps the pool whole, whichever runtime (or plain executor) awaits the
//! answer; the hop costs a task spawn, small next to a network round trip.

use std::future::Future;

use shared::store::StoreError;
use tokio::runtime::{Builder, Handle, Runtime};

pub(crate) struct Runner {
    /// `Some` until dropped: a runtime dropped inside another runtime panics, so `Drop` shuts
    /// it down in the background instead.
    runtime: Option<Runtime>,
    handle: Handle,
    /// `postgres` or `mysql`: the prefix of every error.
    name: &'static str,
}

impl Runner {
    pub(crate) fn new(name: &'static str) -> Result<Self, StoreError> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("{name}-store"))
            .enable_all()
            .build()
            .map_err(|e| StoreError(format!("{name}: starting the store's runtime: {e}")))?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            name,
        })
    }

    pub(crate) fn error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError(format!("{}: {e}", self.name))
    }

    /// Runs `query` on the store's runtime. A caller that stops waiting does not stop the
    /// query: a write that started completes, as with the SQLite store.
    pub(crate) async fn run<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, sqlx::Error>> + Send + 'static,
    {
        match self.handle.spawn(query).await {
            Ok(result) => result.map_err(|e| self.error(e)),
            Err(e) => Err(self.error(format!("query task failed: {e}"))),
        }
    }

    /// Runs `work` on the store's runtime and blocks the calling thread until it is done
    /// (opening the store at start-up, from sync code).
    pub(crate) fn block_on<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let task = self.handle.spawn(work);
        match futures_executor::block_on(task) {
            Ok(result) => result,
            Err(e) => Err(self.error(format!("start-up task failed: {e}"))),
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
