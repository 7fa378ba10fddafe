//! Group commit of the index writes requests make (`put_object`, `delete_object`): the writes
//! that become ready in the same turn of an event loop share one SQLite transaction.
//!
//! Why: a transaction per PUT was a fifth of a proxied PUT's CPU (its WAL frame written, the
//! write and read locks taken and released with `fcntl`, the commit), while the statement
//! itself is a few microseconds (docs/performance.md). A write is queued, then its task yields
//! once, so every other request of this thread whose backend answered in the same turn queues
//! its write too; the first of them to run again commits the whole queue, and each caller
//! gets its own result.
//!
//! What does not change: a caller's write is committed before its call returns (a request is
//! answered after its index entry is durable, as before), writes commit in the order they
//! were queued (the queue is taken under the writer connection's lock), and a write whose
//! request is dropped while it waits is committed anyway ([`CommitOnDrop`]): a request gone
//! after its object reached a backend still leaves its index entry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection};
use shared::store::{ObjectRecord, StoreError};
use tokio::sync::oneshot;

use super::{err, insert_object};

/// One index write that can share a transaction with others.
pub enum IndexWrite {
    Put {
        bucket: String,
        key: String,
        record: ObjectRecord,
    },
    Delete {
        bucket: String,
        key: String,
    },
}

impl IndexWrite {
    fn apply(&self, c: &Connection) -> rusqlite::Result<()> {
        match self {
            IndexWrite::Put {
                bucket,
                key,
                record,
            } => insert_object(c, bucket, key, record),
            IndexWrite::Delete { bucket, key } => c
                .prepare_cached("DELETE FROM objects WHERE bucket = ?1 AND key = ?2")?
                .execute(params![bucket, key])
                .map(drop),
        }
    }
}

struct Queued {
    write: IndexWrite,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The writes waiting for the next commit.
#[derive(Default)]
pub struct WriteQueue {
    queued: Mutex<Vec<Queued>>,
    /// Transactions committed so far (the tests check that writes share them).
    commits: AtomicU64,
}

impl WriteQueue {
    /// Queues `write` and returns once it is committed on `writer`.
    pub async fn write(
        &self,
        writer: &Mutex<Connection>,
        write: IndexWrite,
    ) -> Result<(), StoreError> {
        let (done, committed) = oneshot::channel();
        lock(&self.queued).push(Queued { write, done });
        {
            let _commit = CommitOnDrop {
                queue: self,
                writer,
            };
            // Other requests of this thread whose backends answered in this turn queue
            // theirs before the commit.
            tokio::task::yield_now().await;
        }
        committed
            .await
            .unwrap_or_else(|_| Err(StoreError("sqlite: the index write was lost".into())))
    }

    #[cfg(test)]
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Commits everything queued (nothing if another caller took it already).
    fn commit_queued(&self, writer: &Mutex<Connection>) {
        // Empty: another caller took the queue, under the writer's lock, and commits it. Not
        // waiting for that lock here spares a thread a futex sleep for nothing.
        if lock(&self.queued).is_empty() {
            return;
        }
        // The writer's lock first: batches are taken in the order they commit.
        let mut conn = lock(writer);
        let batch = std::mem::take(&mut *lock(&self.queued));
        if batch.is_empty() {
            return;
        }
        self.commits.fetch_add(1, Ordering::Relaxed);
        let together = conn.transaction().and_then(|tx| {
            for q in &batch {
                q.write.apply(&tx)?;
            }
            tx.commit()
        });
        match together {
            Ok(()) => {
                for q in batch {
                    let _ = q.done.send(Ok(()));
                }
            }
            // One write's failure must not fail the others: each on its own (the transaction
            // was rolled back whole).
            Err(e) if batch.len() == 1 => {
                for q in batch {
                    let _ = q.done.send(Err(err(&e)));
                }
            }
            Err(_) => {
                for q in batch {
                    let _ = q.done.send(q.write.apply(&conn).map_err(err));
                }
            }
        }
    }
}

/// Commits the queue when dropped: after the yield, or when the waiting request is dropped.
struct CommitOnDrop<'a> {
    queue: &'a WriteQueue,
    writer: &'a Mutex<Connection>,
}

impl Drop for CommitOnDrop<'_> {
    fn drop(&mut self) {
        self.queue.commit_queued(self.writer);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Statements are atomic and the queue is only pushed to or taken whole: a panic while
    // holding either lock leaves it consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::FutureExt;
    use shared::store::{MetadataStore, ObjectRecord};

    use super::super::SqliteStore;

    fn record(etag: &str) -> ObjectRecord {
        ObjectRecord {
            backend: "b0".into(),
            size: 1,
            etag: etag.into(),
            last_modified: 1,
        }
    }

    fn store() -> (tempfile::TempDir, Arc<SqliteStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("index.db")).unwrap();
        (dir, Arc::new(store))
    }

    fn etag(store: &SqliteStore, key: &str) -> Option<String> {
        futures_util::FutureExt::now_or_never(store.get_object("b", key))
            .unwrap()
            .unwrap()
            .map(|r| r.etag)
    }

    #[test]
    fn writes_ready_in_one_turn_share_a_commit_in_the_order_they_were_made() {
        let (_dir, store) = store();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let tasks: Vec<_> = (0..50)
                .map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        store
                            .put_object("b", "same", &record(&format!("v{i}")))
                            .await
                            .unwrap();
                        store
                            .put_object("b", &format!("k{i}"), &record("e"))
                            .await
                            .unwrap();
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        // The last write of the key wins, as without batching.
        assert_eq!(etag(&store, "same").as_deref(), Some("v49"));
        for i in 0..50 {
            assert_eq!(etag(&store, &format!("k{i}")).as_deref(), Some("e"), "k{i}");
        }
        // 100 writes: 50 in the first turn together, the rest as their tasks came back.
        let commits = store.writes.commits();
        assert!(commits <= 51, "{commits} commits for 100 writes");
        runtime.block_on(store.delete_object("b", "same")).unwrap();
        assert_eq!(etag(&store, "same"), None);
    }

    #[test]
    fn a_write_whose_request_is_dropped_while_it_waits_is_committed() {
        let (_dir, store) = store();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            // Queued, then waiting at its yield when the request goes away.
            assert!(store
                .put_object("b", "dropped", &record("d"))
                .now_or_never()
                .is_none());
        });
        assert_eq!(etag(&store, "dropped").as_deref(), Some("d"));
    }

    #[test]
    fn writes_from_many_threads_all_land() {
        let (_dir, store) = store();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .build()
            .unwrap();
        runtime.block_on(async {
            let tasks: Vec<_> = (0..400)
                .map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        store
                            .put_object("b", &format!("k{i}"), &record(&format!("e{i}")))
                            .await
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap().unwrap();
            }
        });
        for i in 0..400 {
            assert_eq!(etag(&store, &format!("k{i}")), Some(format!("e{i}")));
        }
    }
}
