//! A read-only NBD export of a snapshot: `qemu-img`, `nbd-client` or `qemu-nbd` clients
//! read any byte range, and only the blocks they touch are fetched ("instant restore").
//!
//! Blocks come through [`SnapshotClient::get_block`] (verified, retried) into a small LRU
//! [`cache::BlockCache`] that also merges concurrent fetches of one block. When a read
//! continues where earlier reads left off (the block before it is cached), the next few
//! blocks are fetched ahead in the background, so sequential readers such as
//! `qemu-img convert` stream at full speed. Blocks the snapshot does not have read as zeros
//! without a request.
//!
//! Each connection negotiates with [`protocol::handshake`], then serves requests
//! concurrently (up to a bound per connection); replies go out through one writer task, each
//! frame whole, in completion order (NBD matches them by cookie).

pub mod cache;
pub mod protocol;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_types::{BLOCK_SIZE, BLOCKS_PER_GIB, BlockIndex, SnapshotId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{RwLock, Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::api::SnapshotClient;
use crate::error::{ApiError, NbdError};
use crate::image::BLOCK_BYTES;
use crate::progress::{Reporter, Step};
use protocol::{ExportInfo, Negotiated, Request};

/// Export sizes are multiples of this.
const SECTOR: u64 = 512;

/// Block tokens live 7 days; re-list a little before that, for exports left running.
const TOKEN_REFRESH: Duration = Duration::from_secs(6 * 24 * 3600);

/// How to export.
#[derive(Debug, Clone)]
pub struct NbdOptions {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Export size in bytes, rounded up to whole 512-byte sectors; `None`: the volume size.
    pub size: Option<u64>,
    /// Blocks kept in memory (512 KiB each).
    pub cache_blocks: usize,
    /// Blocks fetched ahead of a sequential reader.
    pub readahead_blocks: u32,
    /// Requests served at once per connection.
    pub max_in_flight: usize,
}

impl NbdOptions {
    /// Defaults: a 64 MiB cache, 8 blocks (4 MiB) of read-ahead, 16 requests per connection.
    pub fn new(snapshot: SnapshotId, listen: SocketAddr) -> Self {
        Self {
            snapshot,
            listen,
            size: None,
            cache_blocks: 128,
            readahead_blocks: 8,
            max_in_flight: 16,
        }
    }
}

struct Tokens {
    listed_at: Instant,
    by_index: HashMap<BlockIndex, String>,
}

/// A snapshot readable at any byte offset, fetched lazily.
pub struct SnapshotExport {
    client: SnapshotClient,
    snapshot: SnapshotId,
    size: u64,
    tokens: RwLock<Tokens>,
    cache: cache::BlockCache,
    readahead: u32,
    zero: Bytes,
}

impl SnapshotExport {
    /// List the snapshot's blocks and prepare to serve it.
    pub async fn open(
        client: &SnapshotClient,
        options: &NbdOptions,
    ) -> Result<Arc<Self>, ApiError> {
        let listing = client.list_blocks(&options.snapshot).await?;
        let volume_bytes = listing.volume_size.gib() * BLOCKS_PER_GIB * BLOCK_BYTES;
        Ok(Arc::new(Self {
            client: client.clone(),
            snapshot: options.snapshot.clone(),
            // Sizes are rounded up to whole 512-byte sectors: qemu's NBD client stalls on an
            // export whose size is not sector-aligned, and the bytes added are the zero
            // padding of the snapshot's last block anyway.
            size: options
                .size
                .unwrap_or(volume_bytes)
                .next_multiple_of(SECTOR)
                .min(volume_bytes),
            tokens: RwLock::new(Tokens {
                listed_at: Instant::now(),
                by_index: listing.blocks.into_iter().collect(),
            }),
            cache: cache::BlockCache::new(options.cache_blocks),
            readahead: options.readahead_blocks,
            zero: Bytes::from(vec![0u8; BLOCK_SIZE]),
        }))
    }

    /// Export size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// `len` bytes at `offset` (the caller keeps the range inside the export).
    pub async fn read(self: &Arc<Self>, offset: u64, len: u32) -> Result<Vec<u8>, ApiError> {
        let end = offset + u64::from(len);
        if len == 0 {
            return Ok(Vec::new());
        }
        let first = offset / BLOCK_BYTES;
        let last = (end - 1) / BLOCK_BYTES;
        // A reader that continues from the previous block is sequential: fetch ahead.
        if first > 0 && self.cache.contains(block_index(first - 1)) {
            self.read_ahead(last + 1);
        }
        let blocks = if first == last {
            vec![self.block(first).await?]
        } else {
            let mut tasks = JoinSet::new();
            for index in first..=last {
                let export = Arc::clone(self);
                tasks.spawn(async move { (index, export.block(index).await) });
            }
            let mut blocks = vec![Bytes::new(); usize::try_from(last - first + 1).unwrap_or(0)];
            while let Some(joined) = tasks.join_next().await {
                let (index, block) = joined.map_err(|e| ApiError {
                    call: format!("reading {}", self.snapshot),
                    code: None,
                    message: e.to_string(),
                    attempts: 1,
                    retryable: false,
                })?;
                if let Some(slot) = usize::try_from(index - first)
                    .ok()
                    .and_then(|i| blocks.get_mut(i))
                {
                    *slot = block?;
                }
            }
            blocks
        };
        let mut out = Vec::with_capacity(len as usize);
        for (n, block) in blocks.iter().enumerate() {
            let block_start = (first + n as u64) * BLOCK_BYTES;
            let from = usize::try_from(offset.saturating_sub(block_start)).unwrap_or(0);
            let to = usize::try_from((end - block_start).min(BLOCK_BYTES)).unwrap_or(BLOCK_SIZE);
            out.extend_from_slice(&block[from..to]);
        }
        Ok(out)
    }

    /// Start fetching the blocks from `start` on (up to the read-ahead window) in the
    /// background; failures are ignored (a real read will retry and report).
    fn read_ahead(self: &Arc<Self>, start: u64) {
        let end = (start + u64::from(self.readahead)).min(self.size.div_ceil(BLOCK_BYTES));
        for index in start..end {
            if self.cache.contains(block_index(index)) {
                continue;
            }
            let export = Arc::clone(self);
            tokio::spawn(async move {
                let _ = export.block(index).await;
            });
        }
    }

    /// Prefetch the blocks covering `offset..offset + len` (NBD_CMD_CACHE).
    pub fn prefetch(self: &Arc<Self>, offset: u64, len: u32) {
        if len == 0 {
            return;
        }
        let first = offset / BLOCK_BYTES;
        let last = (offset + u64::from(len) - 1) / BLOCK_BYTES;
        for index in first..=last.min(first + 64) {
            let export = Arc::clone(self);
            tokio::spawn(async move {
                let _ = export.block(index).await;
            });
        }
    }

    async fn block(&self, index: u64) -> Result<Bytes, ApiError> {
        let index = block_index(index);
        let Some(token) = self.token(index).await? else {
            return Ok(self.zero.clone());
        };
        self.cache
            .get_or_fetch(index, || async {
                self.client
                    .get_block(&self.snapshot, index, &token)
                    .await
                    .map(|block| block.data)
            })
            .await
    }

    /// The block token for `index` (`None`: the snapshot has no such block), re-listing
    /// when the tokens are about to expire.
    async fn token(&self, index: BlockIndex) -> Result<Option<String>, ApiError> {
        {
            let tokens = self.tokens.read().await;
            if tokens.listed_at.elapsed() < TOKEN_REFRESH {
                return Ok(tokens.by_index.get(&index).cloned());
            }
        }
        let mut tokens = self.tokens.write().await;
        if tokens.listed_at.elapsed() >= TOKEN_REFRESH {
            let listing = self.client.list_blocks(&self.snapshot).await?;
            *tokens = Tokens {
                listed_at: Instant::now(),
                by_index: listing.blocks.into_iter().collect(),
            };
        }
        Ok(tokens.by_index.get(&index).cloned())
    }
}

fn block_index(index: u64) -> BlockIndex {
    BlockIndex::new(u32::try_from(index).unwrap_or(u32::MAX))
}

/// A listening NBD server for one snapshot.
pub struct NbdServer {
    listener: TcpListener,
    export: Arc<SnapshotExport>,
    options: NbdOptions,
}

impl NbdServer {
    /// List the snapshot and bind the listener.
    pub async fn bind(
        client: &SnapshotClient,
        options: &NbdOptions,
        reporter: Reporter,
    ) -> Result<Self, NbdError> {
        let client = client.with_reporter(reporter.clone());
        reporter.step(Step::Listing(options.snapshot.clone()));
        let export = SnapshotExport::open(&client, options).await?;
        let listener =
            TcpListener::bind(options.listen)
                .await
                .map_err(|cause| NbdError::Listen {
                    addr: options.listen.to_string(),
                    cause,
                })?;
        Ok(Self {
            listener,
            export,
            options: options.clone(),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, NbdError> {
        self.listener
            .local_addr()
            .map_err(|cause| NbdError::Listen {
                addr: self.options.listen.to_string(),
                cause,
            })
    }

    /// The export's size in bytes.
    pub fn size(&self) -> u64 {
        self.export.size()
    }

    /// Serve connections until `shutdown` completes; then drop them all.
    pub async fn serve_until(self, shutdown: impl Future<Output = ()>) -> Result<(), NbdError> {
        let info = ExportInfo {
            name: self.options.snapshot.to_string(),
            size: self.export.size(),
        };
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => {
                    // A failed accept (e.g. out of file descriptors) is not fatal to the export.
                    let Ok((stream, _)) = accepted else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let export = Arc::clone(&self.export);
                    let info = info.clone();
                    let max_in_flight = self.options.max_in_flight.max(1);
                    connections.spawn(async move {
                        // A broken connection only concerns its client.
                        let _ = serve_connection(stream, export, info, max_in_flight).await;
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.abort_all();
        Ok(())
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    export: Arc<SnapshotExport>,
    info: ExportInfo,
    max_in_flight: usize,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    if protocol::handshake(&mut stream, &info).await? == Negotiated::Closed {
        return Ok(());
    }
    let (mut reader, mut writer) = stream.into_split();
    let (replies, mut outbox) = mpsc::channel::<Vec<u8>>(max_in_flight);
    let writer_task = tokio::spawn(async move {
        while let Some(frame) = outbox.recv().await {
            writer.write_all(&frame).await?;
        }
        writer.shutdown().await
    });
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let reply = |frame: Vec<u8>| {
        let replies = replies.clone();
        async move {
            // The writer is gone only if the connection broke; the read loop ends next.
            let _ = replies.send(frame).await;
        }
    };
    while let Some(request) = protocol::read_request(&mut reader).await? {
        let Request {
            command,
            cookie,
            offset,
            length,
            ..
        } = request;
        let in_range = offset
            .checked_add(u64::from(length))
            .is_some_and(|end| end <= export.size());
        match command {
            protocol::CMD_READ => {
                if !in_range || length > protocol::MAX_REQUEST_LEN {
                    reply(protocol::simple_reply(cookie, protocol::EINVAL, &[])).await;
                    continue;
                }
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    break;
                };
                let export = Arc::clone(&export);
                let replies = replies.clone();
                tokio::spawn(async move {
                    let frame = match export.read(offset, length).await {
                        Ok(data) => protocol::simple_reply(cookie, 0, &data),
                        Err(_) => protocol::simple_reply(cookie, protocol::EIO, &[]),
                    };
                    let _ = replies.send(frame).await;
                    drop(slot);
                });
            }
            protocol::CMD_WRITE => {
                // The payload follows the header: consume it to stay in sync, then refuse.
                let mut payload = (&mut reader).take(u64::from(length));
                tokio::io::copy(&mut payload, &mut tokio::io::sink()).await?;
                reply(protocol::simple_reply(cookie, protocol::EPERM, &[])).await;
            }
            protocol::CMD_TRIM | protocol::CMD_WRITE_ZEROES => {
                reply(protocol::simple_reply(cookie, protocol::EPERM, &[])).await;
            }
            protocol::CMD_FLUSH => reply(protocol::simple_reply(cookie, 0, &[])).await,
            protocol::CMD_CACHE => {
                if in_range {
                    export.prefetch(offset, length);
                }
                let error = if in_range { 0 } else { protocol::EINVAL };
                reply(protocol::simple_reply(cookie, error, &[])).await;
            }
            protocol::CMD_DISC => break,
            _ => reply(protocol::simple_reply(cookie, protocol::EINVAL, &[])).await,
        }
    }
    // Let in-flight reads answer, then close.
    drop(replies);
    writer_task.await.unwrap_or(Ok(()))
}
