//! A small block cache with in-flight deduplication: concurrent readers of one block wait
//! for a single fetch, and recently used blocks are kept (least recently used evicted).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use strata_types::BlockIndex;
use tokio::sync::OnceCell;

type Slot = Arc<OnceCell<Bytes>>;

/// Blocks by index, at most `capacity` of them.
#[derive(Debug)]
pub struct BlockCache {
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    slots: HashMap<BlockIndex, Slot>,
    /// Least recently used first.
    order: VecDeque<BlockIndex>,
}

impl BlockCache {
    /// A cache of `capacity` blocks (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            state: Mutex::new(State::default()),
        }
    }

    /// The block at `index`, fetched with `fetch` unless cached or already being fetched.
    /// A failed fetch leaves nothing behind, so the next reader tries again.
    pub async fn get_or_fetch<F, Fut, E>(&self, index: BlockIndex, fetch: F) -> Result<Bytes, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
    {
        let slot = self.slot(index);
        slot.get_or_try_init(fetch).await.cloned()
    }

    /// Whether `index` is cached or being fetched.
    pub fn contains(&self, index: BlockIndex) -> bool {
        self.lock().slots.contains_key(&index)
    }

    fn slot(&self, index: BlockIndex) -> Slot {
        let mut state = self.lock();
        if let Some(slot) = state.slots.get(&index).cloned() {
            // Mark as most recently used. The queue is short (a few hundred), so a scan is fine.
            if let Some(at) = state.order.iter().position(|&i| i == index) {
                state.order.remove(at);
            }
            state.order.push_back(index);
            return slot;
        }
        while state.slots.len() >= self.capacity {
            let Some(oldest) = state.order.pop_front() else {
                break;
            };
            // Readers still waiting on an evicted slot hold their own Arc; they are unaffected.
            state.slots.remove(&oldest);
        }
        let slot = Slot::default();
        state.slots.insert(index, Arc::clone(&slot));
        state.order.push_back(index);
        slot
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update is one step.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_readers_share_one_fetch() {
        let cache = Arc::new(BlockCache::new(4));
        let fetches = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let cache = Arc::clone(&cache);
            let fetches = Arc::clone(&fetches);
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(BlockIndex::new(1), || async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        Ok::<_, ()>(Bytes::from_static(b"one"))
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.expect("join"), Ok(Bytes::from_static(b"one")));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn least_recently_used_is_evicted_and_failures_are_not_cached() {
        let cache = BlockCache::new(2);
        let fill =
            |i: u32| async move { Ok::<_, ()>(Bytes::from(vec![u8::try_from(i).unwrap_or(0)])) };
        for i in [1, 2] {
            cache
                .get_or_fetch(BlockIndex::new(i), || fill(i))
                .await
                .expect("fetch");
        }
        cache
            .get_or_fetch(BlockIndex::new(1), || fill(1))
            .await
            .expect("hit");
        cache
            .get_or_fetch(BlockIndex::new(3), || fill(3))
            .await
            .expect("fetch");
        assert!(cache.contains(BlockIndex::new(1)) && cache.contains(BlockIndex::new(3)));
        assert!(!cache.contains(BlockIndex::new(2)));

        let failed: Result<Bytes, &str> = cache
            .get_or_fetch(BlockIndex::new(4), || async { Err("boom") })
            .await;
        assert!(failed.is_err());
        let retried = cache
            .get_or_fetch(BlockIndex::new(4), || async {
                Ok::<_, &str>(Bytes::from_static(b"ok"))
            })
            .await;
        assert_eq!(retried, Ok(Bytes::from_static(b"ok")));
    }
}
