//! The synchronous node reader ([`PgNodes`]) over the asynchronous client.
//!
//! Tree walks are synchronous and call [`NodeSource::load`] from threads that must not be
//! tokio worker threads doing async work, but the caller may still be *on* a runtime
//! thread: the conformance suite walks trees inside `#[tokio::test]` functions (a
//! current-thread runtime). There, `Handle::block_on` panics, and blocking the thread
//! would also stop the runtime that drives the pool's connections. So the reads are
//! served by one dedicated thread per store running its own current-thread runtime and
//! its own small pool, whose connections that runtime drives; `load` sends a request
//! and waits on a std channel, which works from any thread.
//!
//! ADR 0004 replaces this by an async, batched `load_many` into the service's node cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use deadpool_postgres::Pool;
use strata_core::block_map::{Node, NodeHash, NodeSource};
use strata_core::ports::StoreError;
use tokio::sync::mpsc as async_mpsc;

use crate::persistence;

/// Connections of the node reader thread.
const READER_POOL_SIZE: usize = 4;

/// Nodes a reader keeps (cleared when full: nodes are immutable, so the cache never needs
/// invalidation, only a bound).
const CACHE_ENTRIES: usize = 4096;

type Reply = mpsc::Sender<Result<Option<Vec<u8>>, StoreError>>;

/// One node read for the reader thread.
struct Request {
    hash: NodeHash,
    reply: Reply,
}

/// The handle of the reader thread; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub(crate) struct NodeService {
    requests: async_mpsc::UnboundedSender<Request>,
}

impl NodeService {
    /// Start the reader thread with its own pool for `config`.
    pub(crate) fn start(config: tokio_postgres::Config) -> Result<Self, StoreError> {
        let (requests, mut queue) = async_mpsc::unbounded_channel::<Request>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::io("start the node reader runtime", e))?;
        let pool = persistence::pool(config, READER_POOL_SIZE)?;
        std::thread::Builder::new()
            .name("strata-pg-nodes".into())
            .spawn(move || {
                runtime.block_on(async move {
                    while let Some(request) = queue.recv().await {
                        let pool = pool.clone();
                        // Concurrent walks are served concurrently (up to the pool size).
                        tokio::spawn(async move {
                            let result = read(&pool, &request.hash).await;
                            // A dropped receiver: the walk went away; nothing to tell it.
                            let _ = request.reply.send(result);
                        });
                    }
                });
            })
            .map_err(|e| StoreError::io("start the node reader thread", e))?;
        Ok(Self { requests })
    }

    /// A reader with an empty cache.
    pub(crate) fn reader(&self) -> PgNodes {
        PgNodes {
            service: self.clone(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn fetch(&self, hash: &NodeHash) -> Result<Option<Vec<u8>>, StoreError> {
        let (reply, answer) = mpsc::channel();
        self.requests
            .send(Request { hash: *hash, reply })
            .map_err(|_| StoreError::Closed("the node reader thread stopped".into()))?;
        answer
            .recv()
            .map_err(|_| StoreError::Closed("the node reader thread dropped a read".into()))?
    }
}

async fn read(pool: &Pool, hash: &NodeHash) -> Result<Option<Vec<u8>>, StoreError> {
    let op = "read a block-map node";
    let client = persistence::connection(pool).await?;
    let statement = client
        .prepare_cached("SELECT bytes FROM nodes WHERE hash = $1")
        .await
        .map_err(|e| persistence::classify(e, op))?;
    let row = client
        .query_opt(&statement, &[&hash.0.as_slice()])
        .await
        .map_err(|e| persistence::classify(e, op))?;
    row.map(|row| row.try_get::<_, Vec<u8>>(0))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("block-map node {hash:?}: {e}")))
}

/// A node reader: reads nodes as currently stored, which is what a reader "as of" a GC
/// view reads too (see the crate docs, "GC views"), through a small cache of its own.
/// A fresh reader (from `nodes()`) never answers from another reader's cache, so it does
/// not return a node deleted before it was made.
pub struct PgNodes {
    service: NodeService,
    cache: Mutex<HashMap<NodeHash, Arc<Node>>>,
}

impl std::fmt::Debug for PgNodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgNodes")
    }
}

impl PgNodes {
    fn cached(&self) -> std::sync::MutexGuard<'_, HashMap<NodeHash, Arc<Node>>> {
        // A plain map of immutable values: consistent whatever a panicking holder did.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl NodeSource for PgNodes {
    fn load(&self, hash: &NodeHash) -> Result<Arc<Node>, StoreError> {
        if let Some(node) = self.cached().get(hash) {
            return Ok(Arc::clone(node));
        }
        let bytes = self
            .service
            .fetch(hash)?
            .ok_or_else(|| StoreError::Corrupt(format!("block-map node {hash:?} is missing")))?;
        if Node::hash_encoded(&bytes) != *hash {
            return Err(StoreError::Corrupt(format!(
                "block-map node {hash:?} does not match its hash"
            )));
        }
        let node = Arc::new(Node::decode(&bytes)?);
        let mut cache = self.cached();
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(*hash, Arc::clone(&node));
        Ok(node)
    }
}
