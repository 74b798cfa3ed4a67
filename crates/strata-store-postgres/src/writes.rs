//! Group commit of block writes: one task per store takes every `record_block` queued at
//! the moment (up to [`GROUP_LIMIT`]) and records them in one transaction, then answers
//! each caller after the commit. Under N parallel Puts this is one transaction (and one
//! WAL flush) for the group instead of N, each queued on the same row lock.
//!
//! The same transaction keeps the chunk registry (ADR 0004): it takes the per-digest
//! locks of its digests (shared, after the record row locks), refuses writes of condemned
//! chunks and writes that relied on a chunk no longer registered, and registers or
//! re-stamps the rest with one stamp taken under the fence.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use deadpool_postgres::{Pool, Transaction};
use strata_core::ports::{BlockWrite, RecordBlockError, StoreError};
use strata_core::snapshot::{SnapshotRecord, SnapshotStatus};
use strata_types::ChunkDigest;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::IsolationLevel::ReadCommitted;

use crate::persistence::{Failure, Repeat, transact};
use crate::store::{
    column, decode_record, encode_record, execute, fenced_stamp, lock_digests, query,
};

/// The most writes one transaction records.
const GROUP_LIMIT: usize = 512;

type Answer = oneshot::Sender<Result<(), RecordBlockError>>;

/// The queue of the writer task; the task ends when the last handle is dropped.
#[derive(Clone)]
pub(crate) struct Writer {
    queue: mpsc::UnboundedSender<(BlockWrite, Answer)>,
    groups: Arc<AtomicU64>,
}

impl Writer {
    /// Start the writer task on the current runtime.
    pub(crate) fn start(pool: Pool, fence: i64) -> Self {
        let (queue, mut requests) = mpsc::unbounded_channel::<(BlockWrite, Answer)>();
        let groups = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&groups);
        tokio::spawn(async move {
            while let Some(first) = requests.recv().await {
                let mut group = vec![first];
                while group.len() < GROUP_LIMIT {
                    match requests.try_recv() {
                        Ok(next) => group.push(next),
                        Err(_) => break,
                    }
                }
                counted.fetch_add(1, Ordering::Relaxed);
                commit(&pool, fence, group).await;
            }
        });
        Self { queue, groups }
    }

    /// How many groups (transactions) the task has taken so far.
    pub(crate) fn groups(&self) -> u64 {
        self.groups.load(Ordering::Relaxed)
    }

    /// Record `write` with the next group; returns once that group committed.
    pub(crate) async fn record(&self, write: BlockWrite) -> Result<(), RecordBlockError> {
        let (answer, outcome) = oneshot::channel();
        self.queue
            .send((write, answer))
            .map_err(|_| StoreError::Closed("the block-write task stopped".into()))?;
        outcome
            .await
            .map_err(|_| StoreError::Closed("the block-write task dropped a write".into()))?
    }
}

/// Record one group and answer every caller: its own outcome after the commit, or the
/// transaction's error.
async fn commit(pool: &Pool, fence: i64, group: Vec<(BlockWrite, Answer)>) {
    let (writes, answers): (Vec<BlockWrite>, Vec<Answer>) = group.into_iter().unzip();
    let result = transact(
        pool,
        "record block writes",
        ReadCommitted,
        // Recording the same writes again records the same digests; the sequences move
        // once more, which only makes a seal built in between rebuild.
        Repeat::Safe,
        |txn| {
            let writes = writes.clone();
            Box::pin(async move { apply(txn, fence, &writes).await })
        },
    )
    .await;
    match result {
        Ok(outcomes) => {
            for (answer, outcome) in answers.into_iter().zip(outcomes) {
                // A dropped receiver: the caller went away; its write is recorded anyway.
                let _ = answer.send(outcome);
            }
        }
        Err(error) => {
            tracing::warn!(%error, writes = answers.len(), "a group of block writes failed");
            for answer in answers {
                let _ = answer.send(Err(error.clone().into()));
            }
        }
    }
}

/// The records a group touches: decoded once, written once.
// A few per group, short-lived: their size does not matter.
#[allow(clippy::large_enum_variant)]
enum Loaded {
    Record { record: SnapshotRecord, dirty: bool },
    Damaged(StoreError),
}

/// Apply `writes` in order, each as `record_block` alone would (a write sees the records
/// as the writes before it in the group left them), in one transaction.
async fn apply(
    txn: &Transaction<'_>,
    fence: i64,
    writes: &[BlockWrite],
) -> Result<Vec<Result<(), RecordBlockError>>, Failure> {
    let mut ids: Vec<&str> = writes.iter().map(|w| w.snapshot.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    // Locked in id order (as `drop_pending_writes` does): no deadlock between two groups.
    let rows = query(
        txn,
        "SELECT id, record::text FROM snapshots WHERE id = ANY($1)
         ORDER BY id COLLATE \"C\" FOR UPDATE",
        &[&ids],
    )
    .await?;
    let mut records: HashMap<String, Loaded> = HashMap::new();
    for row in rows {
        let id: String = column(&row, 0)?;
        let loaded = match decode_record(&column::<String>(&row, 1)?) {
            Ok(record) => Loaded::Record {
                record,
                dirty: false,
            },
            Err(error) => Loaded::Damaged(error),
        };
        records.insert(id, loaded);
    }
    // The registry's view of the group's digests, under their locks (see the module docs).
    let digests: Vec<ChunkDigest> = writes
        .iter()
        .map(|w| w.digest)
        .filter(|d| !d.is_zero_block())
        .collect();
    lock_digests(txn, digests.iter().copied(), false).await?;
    let wanted: Vec<&[u8]> = digests.iter().map(|d| d.0.as_slice()).collect();
    let mut condemned: HashSet<[u8; 32]> = HashSet::new();
    let mut registered: HashMap<[u8; 32], i64> = HashMap::new();
    if !wanted.is_empty() {
        for row in query(
            txn,
            "SELECT digest FROM condemned_chunks WHERE digest = ANY($1)",
            &[&wanted],
        )
        .await?
        {
            condemned.insert(digest_bytes(column(&row, 0)?)?);
        }
        for row in query(
            txn,
            "SELECT digest, size FROM chunks WHERE digest = ANY($1)",
            &[&wanted],
        )
        .await?
        {
            registered.insert(digest_bytes(column(&row, 0)?)?, column(&row, 1)?);
        }
    }
    let mut outcomes = Vec::with_capacity(writes.len());
    // The final write per (snapshot, index): one row each in the upsert below.
    let mut pending: BTreeMap<(&str, i64), &BlockWrite> = BTreeMap::new();
    // Chunks to register or re-stamp, with their size.
    let mut chunks: BTreeMap<[u8; 32], i64> = BTreeMap::new();
    for write in writes {
        let outcome = match records.get_mut(write.snapshot.as_str()) {
            None => Err(RecordBlockError::NotFound),
            Some(Loaded::Damaged(error)) => Err(RecordBlockError::Store(error.clone())),
            // Pending at the write's time, not only as stored (`MetadataStore::record_block`).
            Some(Loaded::Record { record, .. })
                if record.status_at(write.at_ms) != SnapshotStatus::Pending =>
            {
                Err(RecordBlockError::NotPending(Box::new(
                    record.as_of(write.at_ms),
                )))
            }
            Some(Loaded::Record { .. })
                if !write.digest.is_zero_block()
                    && (condemned.contains(&write.digest.0)
                        || (write.stored_size.is_none()
                            && !registered.contains_key(&write.digest.0))) =>
            {
                Err(RecordBlockError::ChunkNotRegistered)
            }
            Some(Loaded::Record { record, dirty }) => {
                if !write.digest.is_zero_block() {
                    let size = match write.stored_size {
                        Some(size) => i64::try_from(size).unwrap_or(i64::MAX),
                        None => registered.get(&write.digest.0).copied().unwrap_or(0),
                    };
                    chunks.insert(write.digest.0, size);
                    // Registered from here on, for the writes after it in the group.
                    registered.insert(write.digest.0, size);
                }
                pending.insert(
                    (write.snapshot.as_str(), i64::from(write.index.get())),
                    write,
                );
                record.write_sequence += 1;
                record.last_activity_ms = record.last_activity_ms.max(write.at_ms);
                if write.progress.is_some() {
                    record.progress = write.progress;
                }
                *dirty = true;
                Ok(())
            }
        };
        outcomes.push(outcome);
    }
    if !pending.is_empty() {
        let snapshots: Vec<&str> = pending.keys().map(|(s, _)| *s).collect();
        let indexes: Vec<i64> = pending.keys().map(|(_, i)| *i).collect();
        let digests: Vec<&[u8]> = pending.values().map(|w| w.digest.0.as_slice()).collect();
        let checksums: Vec<Option<&[u8]>> = pending
            .values()
            .map(|w| w.checksum.as_ref().map(<[u8; 32]>::as_slice))
            .collect();
        // The checksum is replaced too, by NULL for a write without one: it belongs to
        // the final write of the index only.
        execute(
            txn,
            "INSERT INTO pending_writes (snapshot, block_index, digest, checksum)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::bytea[])
             ON CONFLICT (snapshot, block_index)
             DO UPDATE SET digest = EXCLUDED.digest, checksum = EXCLUDED.checksum",
            &[&snapshots, &indexes, &digests, &checksums],
        )
        .await?;
    }
    if !chunks.is_empty() {
        let stamp = fenced_stamp(txn, fence).await?;
        let digests: Vec<&[u8]> = chunks.keys().map(|d| d.as_slice()).collect();
        let sizes: Vec<i64> = chunks.values().copied().collect();
        execute(
            txn,
            "INSERT INTO chunks (digest, size, stamp)
             SELECT d, s, $3 FROM unnest($1::bytea[], $2::bigint[]) AS t (d, s)
             ON CONFLICT (digest) DO UPDATE SET stamp = EXCLUDED.stamp",
            &[&digests, &sizes, &stamp],
        )
        .await?;
    }
    let mut ids = Vec::new();
    let mut texts = Vec::new();
    for (id, loaded) in &records {
        if let Loaded::Record {
            record,
            dirty: true,
        } = loaded
        {
            ids.push(id.as_str());
            texts.push(encode_record(record)?);
        }
    }
    if !ids.is_empty() {
        execute(
            txn,
            "UPDATE snapshots AS s SET record = v.record
             FROM unnest($1::text[], $2::text[]) AS v (id, record) WHERE s.id = v.id",
            &[&ids, &texts],
        )
        .await?;
    }
    Ok(outcomes)
}

fn digest_bytes(bytes: Vec<u8>) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(bytes)
        .map_err(|b| StoreError::Corrupt(format!("a digest of {} bytes", b.len())))
}
