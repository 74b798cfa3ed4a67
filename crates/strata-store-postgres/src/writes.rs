//! Group commit of block writes: one task per store takes every `record_block` queued at
//! the moment (up to [`GROUP_LIMIT`]) and records them in one transaction, then answers
//! each caller after the commit. Under N parallel Puts this is one transaction (and one
//! WAL flush) for the group instead of N, each queued on the same row lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use deadpool_postgres::{Pool, Transaction};
use strata_core::ports::{BlockWrite, RecordBlockError, StoreError};
use strata_core::snapshot::{SnapshotRecord, SnapshotStatus};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::IsolationLevel::ReadCommitted;

use crate::persistence::{Failure, Repeat, transact};
use crate::store::{column, decode_record, encode_record, execute, query};

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
    pub(crate) fn start(pool: Pool) -> Self {
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
                commit(&pool, group).await;
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
async fn commit(pool: &Pool, group: Vec<(BlockWrite, Answer)>) {
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
            Box::pin(async move { apply(txn, &writes).await })
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
    let mut outcomes = Vec::with_capacity(writes.len());
    // The final digest per (snapshot, index): one row each in the upsert below.
    let mut pending: BTreeMap<(&str, i64), &[u8]> = BTreeMap::new();
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
            Some(Loaded::Record { record, dirty }) => {
                pending.insert(
                    (write.snapshot.as_str(), i64::from(write.index.get())),
                    write.digest.0.as_slice(),
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
        let digests: Vec<&[u8]> = pending.values().copied().collect();
        execute(
            txn,
            "INSERT INTO pending_writes (snapshot, block_index, digest)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[])
             ON CONFLICT (snapshot, block_index) DO UPDATE SET digest = EXCLUDED.digest",
            &[&snapshots, &indexes, &digests],
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
            "UPDATE snapshots AS s SET record = v.record::jsonb
             FROM unnest($1::text[], $2::text[]) AS v (id, record) WHERE s.id = v.id",
            &[&ids, &texts],
        )
        .await?;
    }
    Ok(outcomes)
}
