//! Per-key write locks: writes and deletes of one key in one process (or isolate) take turns.
//!
//! Without them two concurrent first writes of a key could both find no copy and be placed on
//! two backends (round-robin, weighted and least-space choose freely): two live copies. With
//! them the second write finds the first one's index entry and goes to the same backend.
//! Reads never take a lock. Across processes the per-key protocol still holds (a write on an
//! index miss asks every backend first; old copies are removed with `If-Match`), and what a
//! race leaves behind is recorded as a [`crate::store::StaleCopy`] and settled newest-wins.
//!
//! The lock is an async mutex (`futures_util::lock`), so it works on any executor, the
//! Worker's included; entries are dropped when their last holder or waiter leaves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::lock::{Mutex as AsyncMutex, OwnedMutexGuard};

type Slot = Arc<AsyncMutex<()>>;

#[derive(Default)]
pub(crate) struct KeyLocks {
    /// By `bucket/key`: a bucket name never holds a `/`, so the first one splits them. (One
    /// string instead of a pair: half the allocations and hashing per write.)
    slots: Mutex<HashMap<String, Slot>>,
}

/// Held while a write or delete of one key runs.
pub(crate) struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    id: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyLocks {
    pub(crate) async fn lock(&self, bucket: &str, key: &str) -> KeyGuard<'_> {
        let mut id = String::with_capacity(bucket.len() + 1 + key.len());
        id.push_str(bucket);
        id.push('/');
        id.push_str(key);
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.clone())
            .or_default()
            .clone();
        let guard = slot.lock_owned().await;
        KeyGuard {
            locks: self,
            id,
            guard: Some(guard),
        }
    }

    /// Keys with a holder or a waiter (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut slots = self.locks.slots.lock().unwrap_or_else(|e| e.into_inner());
        // Release first, then drop the slot if nobody else holds or awaits it: the map's
        // reference is then the only one.
        drop(self.guard.take());
        if slots
            .get(&self.id)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            slots.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_executor::block_on;
    use futures_util::FutureExt;

    #[test]
    fn same_key_waits_other_keys_do_not_and_slots_are_freed() {
        let locks = KeyLocks::default();
        block_on(async {
            let a = locks.lock("b", "k").await;
            // Another key is free.
            let other = locks.lock("b", "other").now_or_never();
            assert!(other.is_some());
            drop(other);
            // The same key waits.
            let mut waiting = Box::pin(locks.lock("b", "k"));
            assert!((&mut waiting).now_or_never().is_none());
            drop(a);
            let again = waiting.await;
            assert_eq!(locks.len(), 1);
            drop(again);
            assert_eq!(locks.len(), 0, "no slot left behind");
        });
    }
}
