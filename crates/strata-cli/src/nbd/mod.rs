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
//!
//! # Block status
//! With structured replies negotiated, `NBD_CMD_BLOCK_STATUS` answers two metadata
//! contexts, so clients skip what they need not read:
//! - `base:allocation`: a block the snapshot does not have is a hole that reads as zeros
//!   (`nbdinfo --map`, `nbdcopy`, `qemu-img map`/`convert` skip it);
//! - `qemu:dirty-bitmap:BASE` (with [`NbdOptions::changed_since`]): the blocks that
//!   ListChangedBlocks reports between `BASE` and the exported snapshot are dirty, the rest
//!   clean, as a qemu dirty bitmap would report them, so incremental-backup readers built on
//!   qemu's bitmaps copy only the changes.

pub mod cache;
pub mod protocol;

use std::collections::{HashMap, HashSet};
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
use protocol::{ExportInfo, Negotiated, Request, Session};

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
    /// Offer the blocks changed since this snapshot (of the same lineage) as the metadata
    /// context `qemu:dirty-bitmap:<id>`.
    pub changed_since: Option<SnapshotId>,
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
            changed_since: None,
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
    /// The base snapshot and the blocks changed since it, for the dirty-bitmap context.
    changed: Option<(SnapshotId, HashSet<BlockIndex>)>,
}

/// What a block-status query asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusContext {
    /// `base:allocation`: holes and zeros.
    Allocation,
    /// `qemu:dirty-bitmap:BASE`: changed since the base snapshot.
    ChangedSince,
}

/// Descriptors per block-status answer at most (a client asks again from where it ends).
const MAX_EXTENTS: usize = 16_384;

impl SnapshotExport {
    /// List the snapshot's blocks and prepare to serve it.
    pub async fn open(
        client: &SnapshotClient,
        options: &NbdOptions,
    ) -> Result<Arc<Self>, ApiError> {
        let listing = client.list_blocks(&options.snapshot).await?;
        let changed = match &options.changed_since {
            Some(base) => {
                let changes = client.list_changed_blocks(base, &options.snapshot).await?;
                Some((
                    base.clone(),
                    changes.blocks.into_iter().map(|b| b.index).collect(),
                ))
            }
            None => None,
        };
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
            changed,
        }))
    }

    /// The metadata contexts this export offers.
    pub fn contexts(&self) -> Vec<(String, StatusContext)> {
        let mut contexts = vec![(
            protocol::BASE_ALLOCATION.to_owned(),
            StatusContext::Allocation,
        )];
        if let Some((base, _)) = &self.changed {
            contexts.push((
                format!("{}{base}", protocol::QEMU_DIRTY_BITMAP),
                StatusContext::ChangedSince,
            ));
        }
        contexts
    }

    /// Block status of `offset..offset + len` (clipped to the export) in `context`, as
    /// `(length, flags)` runs of blocks with the same status; only the first with `one`.
    pub async fn extents(
        &self,
        context: StatusContext,
        offset: u64,
        len: u32,
        one: bool,
    ) -> Vec<(u32, u32)> {
        let end = (offset + u64::from(len)).min(self.size);
        let tokens = self.tokens.read().await;
        let status = |block: u64| -> u32 {
            let index = block_index(block);
            match context {
                StatusContext::Allocation => {
                    if tokens.by_index.contains_key(&index) {
                        0
                    } else {
                        protocol::STATE_HOLE | protocol::STATE_ZERO
                    }
                }
                StatusContext::ChangedSince => match &self.changed {
                    Some((_, changed)) if changed.contains(&index) => protocol::STATE_DIRTY,
                    _ => 0,
                },
            }
        };
        let mut extents = Vec::new();
        let mut at = offset;
        while at < end && extents.len() < MAX_EXTENTS {
            let mut block = at / BLOCK_BYTES;
            let flags = status(block);
            while (block + 1) * BLOCK_BYTES < end && status(block + 1) == flags {
                block += 1;
            }
            let run_end = ((block + 1) * BLOCK_BYTES).min(end);
            // A run is inside one request, whose length is a u32.
            extents.push((u32::try_from(run_end - at).unwrap_or(u32::MAX), flags));
            at = run_end;
            if one {
                break;
            }
        }
        extents
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
        let contexts = self.export.contexts();
        let info = ExportInfo {
            name: self.options.snapshot.to_string(),
            size: self.export.size(),
            contexts: contexts.iter().map(|(name, _)| name.clone()).collect(),
        };
        let kinds: Arc<Vec<StatusContext>> =
            Arc::new(contexts.into_iter().map(|(_, kind)| kind).collect());
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
                    let kinds = Arc::clone(&kinds);
                    let max_in_flight = self.options.max_in_flight.max(1);
                    connections.spawn(async move {
                        // A broken connection only concerns its client.
                        let _ = serve_connection(stream, export, info, kinds, max_in_flight).await;
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
    kinds: Arc<Vec<StatusContext>>,
    max_in_flight: usize,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let session = match protocol::handshake(&mut stream, &info).await? {
        Negotiated::Closed => return Ok(()),
        Negotiated::Transmission(session) => session,
    };
    let selected: Arc<Vec<(u32, StatusContext)>> = Arc::new(
        session
            .contexts
            .iter()
            .filter_map(|&(id, index)| kinds.get(index).map(|kind| (id, *kind)))
            .collect(),
    );
    let Session { structured, .. } = session;
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
            flags,
        } = request;
        let error_reply = |error: u32| {
            if structured {
                protocol::structured_error(cookie, error)
            } else {
                protocol::simple_reply(cookie, error, &[])
            }
        };
        // Success without data: a NONE chunk once structured replies are in use.
        let done_reply = || {
            if structured {
                protocol::structured_chunk(cookie, protocol::REPLY_FLAG_DONE, 0, &[])
            } else {
                protocol::simple_reply(cookie, 0, &[])
            }
        };
        let in_range = offset
            .checked_add(u64::from(length))
            .is_some_and(|end| end <= export.size());
        match command {
            protocol::CMD_READ => {
                if !in_range || length > protocol::MAX_REQUEST_LEN {
                    reply(error_reply(protocol::EINVAL)).await;
                    continue;
                }
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    break;
                };
                let export = Arc::clone(&export);
                let replies = replies.clone();
                tokio::spawn(async move {
                    let frame = match export.read(offset, length).await {
                        Ok(data) if structured => protocol::structured_read(cookie, offset, &data),
                        Ok(data) => protocol::simple_reply(cookie, 0, &data),
                        Err(_) if structured => protocol::structured_error(cookie, protocol::EIO),
                        Err(_) => protocol::simple_reply(cookie, protocol::EIO, &[]),
                    };
                    let _ = replies.send(frame).await;
                    drop(slot);
                });
            }
            protocol::CMD_BLOCK_STATUS => {
                if !structured || selected.is_empty() || !in_range || length == 0 {
                    reply(error_reply(protocol::EINVAL)).await;
                    continue;
                }
                let one = flags & protocol::CMD_FLAG_REQ_ONE != 0;
                let export = Arc::clone(&export);
                let selected = Arc::clone(&selected);
                let replies = replies.clone();
                tokio::spawn(async move {
                    for (n, (id, kind)) in selected.iter().enumerate() {
                        let extents = export.extents(*kind, offset, length, one).await;
                        let last = n + 1 == selected.len();
                        let frame = protocol::block_status_chunk(cookie, last, *id, &extents);
                        if replies.send(frame).await.is_err() {
                            return;
                        }
                    }
                });
            }
            protocol::CMD_WRITE => {
                // The payload follows the header: consume it to stay in sync, then refuse.
                let mut payload = (&mut reader).take(u64::from(length));
                tokio::io::copy(&mut payload, &mut tokio::io::sink()).await?;
                reply(error_reply(protocol::EPERM)).await;
            }
            protocol::CMD_TRIM | protocol::CMD_WRITE_ZEROES => {
                reply(error_reply(protocol::EPERM)).await;
            }
            protocol::CMD_FLUSH => reply(done_reply()).await,
            protocol::CMD_CACHE => {
                if in_range {
                    export.prefetch(offset, length);
                }
                if in_range {
                    reply(done_reply()).await;
                } else {
                    reply(error_reply(protocol::EINVAL)).await;
                }
            }
            protocol::CMD_DISC => break,
            _ => reply(error_reply(protocol::EINVAL)).await,
        }
    }
    // Let in-flight reads answer, then close.
    drop(replies);
    writer_task.await.unwrap_or(Ok(()))
}
