//! [`PostgresMetadataStore`]: the [`MetadataStore`] port, one method per operation, each
//! one transaction through [`persistence::transact`].

use std::collections::BTreeMap;

use deadpool_postgres::{Pool, Transaction};
use strata_core::block_map::NodeHash;
use strata_core::encryption::KeyRecord;
use strata_core::ports::{
    Announced, AnnouncementId, BlockWrite, CreateOutcome, GcView, MetadataStore, PendingWrites,
    RecordBlockError, RecordChange, RegisteredChunk, Seal, SealError, Stamp, StoreError,
};
use strata_core::snapshot::{SnapshotRecord, SnapshotStatus};
use strata_types::{AccountId, BlockIndex, ChunkDigest, SnapshotId};
use tokio_postgres::IsolationLevel::{ReadCommitted, RepeatableRead};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::nodes::{NodeService, PgNodes};
use crate::persistence::{self, Failure, Repeat, transact};
use crate::writes::Writer;

/// The high half of the stamp fence's advisory-lock key ("stra"); the low half is the OID
/// of the stamp sequence, so that two schemas of one database have two fences.
const FENCE_CLASS: i64 = 0x7374_7261;

/// Snapshot metadata in PostgreSQL, shared by every node of a cluster. Cheap to clone.
#[derive(Clone)]
pub struct PostgresMetadataStore {
    pool: Pool,
    nodes: NodeService,
    writer: Writer,
    /// The advisory-lock key that orders stamped writes with GC views (crate docs).
    fence: i64,
}

impl std::fmt::Debug for PostgresMetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the configuration: it holds the password.
        f.write_str("PostgresMetadataStore")
    }
}

impl PostgresMetadataStore {
    /// Connect to the database at `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`, or
    /// the key-value form `host=… user=…`), apply the migrations it lacks and return the
    /// store. The URL (with its password) is never logged nor put in an error.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config = url.parse().map_err(|_| {
            StoreError::Backend(
                "the PostgreSQL URL is not valid (expected postgres://USER[:PASSWORD]@HOST[:PORT]/DB)"
                    .into(),
            )
        })?;
        Self::connect_with(config).await
    }

    /// [`PostgresMetadataStore::connect`] with a parsed configuration (for settings a URL
    /// does not carry, such as `options` with a `search_path`).
    pub async fn connect_with(config: tokio_postgres::Config) -> Result<Self, StoreError> {
        let pool = persistence::pool(config.clone(), persistence::pool_size())?;
        persistence::migrate(&pool).await?;
        let client = persistence::connection(&pool).await?;
        let op = "read the stamp sequence's id";
        let row = client
            .query_one("SELECT 'strata_stamps'::regclass::oid::bigint", &[])
            .await
            .map_err(|e| persistence::classify(e, op))?;
        let oid: i64 = row.try_get(0).map_err(|e| persistence::classify(e, op))?;
        drop(client);
        let fence = (FENCE_CLASS << 32) | (oid & 0xFFFF_FFFF);
        Ok(Self {
            writer: Writer::start(pool.clone(), fence),
            pool,
            nodes: NodeService::start(config)?,
            fence,
        })
    }

    /// How many groups of block writes (one transaction each) this store has recorded so
    /// far: with concurrent writers, fewer than the writes.
    pub fn write_groups(&self) -> u64 {
        self.writer.groups()
    }

    /// The pool, for this crate's tests.
    #[doc(hidden)]
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The advisory-lock key of the stamp fence (crate docs), for this crate's tests.
    #[doc(hidden)]
    pub fn stamp_fence(&self) -> i64 {
        self.fence
    }
}

// ---- decoding -------------------------------------------------------------------------

pub(crate) fn decode_record(text: &str) -> Result<SnapshotRecord, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("snapshot record: {e}")))
}

pub(crate) fn encode_record(record: &SnapshotRecord) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|e| StoreError::Backend(format!("encode record: {e}")))
}

fn decode_key(text: &str) -> Result<KeyRecord, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("key record: {e}")))
}

fn encode_key(key: &KeyRecord) -> Result<String, StoreError> {
    serde_json::to_string(key).map_err(|e| StoreError::Backend(format!("encode key: {e}")))
}

fn checksum_of(bytes: Vec<u8>) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(bytes)
        .map_err(|b| StoreError::Corrupt(format!("a pending checksum of {} bytes", b.len())))
}

/// Whether `id` can name a stored key: a `text` column cannot hold NUL (PostgreSQL refuses
/// the parameter), so no stored key has such an id, and a lookup of one finds nothing
/// instead of failing.
fn storable_key_id(id: &str) -> bool {
    !id.contains('\0')
}

fn digest_of(bytes: Vec<u8>) -> Result<ChunkDigest, StoreError> {
    <[u8; 32]>::try_from(bytes)
        .map(ChunkDigest)
        .map_err(|b| StoreError::Corrupt(format!("a digest of {} bytes", b.len())))
}

fn index_of(value: i64) -> Result<BlockIndex, StoreError> {
    u32::try_from(value)
        .map(BlockIndex::new)
        .map_err(|_| StoreError::Corrupt(format!("block index {value} out of range")))
}

fn stamp_of(value: i64) -> Result<Stamp, StoreError> {
    u64::try_from(value)
        .map(Stamp)
        .map_err(|_| StoreError::Corrupt(format!("negative stamp {value}")))
}

/// The class of the per-digest advisory locks (two-key form, a key space apart from the
/// single-key fence and migration locks): "strc" in ASCII.
const DIGEST_LOCK_CLASS: i32 = 0x7374_7263;

/// The second key of a digest's advisory lock: its first four bytes. Two digests that
/// share it only wait for each other now and then.
pub(crate) fn digest_lock_key(digest: &ChunkDigest) -> i32 {
    i32::from_le_bytes([digest.0[0], digest.0[1], digest.0[2], digest.0[3]])
}

/// Take the per-digest advisory locks of `digests` for this transaction, shared (Puts:
/// announcements, write records) or exclusive (condemnations): an announcement or a
/// write record and a condemnation of the same digest then run one after the other. In
/// ascending key order, so two takers never deadlock.
pub(crate) async fn lock_digests(
    txn: &Transaction<'_>,
    digests: impl IntoIterator<Item = ChunkDigest>,
    exclusive: bool,
) -> Result<(), Failure> {
    let mut keys: Vec<i32> = digests.into_iter().map(|d| digest_lock_key(&d)).collect();
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() {
        return Ok(());
    }
    let sql = if exclusive {
        "SELECT pg_advisory_xact_lock($1, k) FROM unnest($2::int4[]) AS k"
    } else {
        "SELECT pg_advisory_xact_lock_shared($1, k) FROM unnest($2::int4[]) AS k"
    };
    query(txn, sql, &[&DIGEST_LOCK_CLASS, &keys]).await?;
    Ok(())
}

/// The stamp fence, shared, held until the transaction ends, and then the next stamp:
/// see the crate docs ("Stamps") for why a GC view's stamp then orders correctly with
/// this transaction's commit.
pub(crate) async fn fenced_stamp(txn: &Transaction<'_>, fence: i64) -> Result<i64, Failure> {
    execute(txn, "SELECT pg_advisory_xact_lock_shared($1)", &[&fence]).await?;
    let row = query(txn, "SELECT nextval('strata_stamps')", &[]).await?;
    Ok(row
        .first()
        .map(|r| column(r, 0))
        .transpose()?
        .ok_or_else(|| StoreError::Backend("nextval returned no row".into()))?)
}

fn stamp_value(stamp: Stamp) -> i64 {
    // Stamps come from a bigint sequence; a larger one matches nothing stored.
    i64::try_from(stamp.0).unwrap_or(i64::MAX)
}

pub(crate) fn column<'r, T: tokio_postgres::types::FromSql<'r>>(
    row: &'r Row,
    at: usize,
) -> Result<T, StoreError> {
    row.try_get(at)
        .map_err(|e| StoreError::Corrupt(format!("unexpected column {at}: {e}")))
}

// ---- statements -----------------------------------------------------------------------

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(crate) async fn query(
    txn: &Transaction<'_>,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, Failure> {
    let statement = txn.prepare_cached(sql).await?;
    Ok(txn.query(&statement, params).await?)
}

pub(crate) async fn execute(
    txn: &Transaction<'_>,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, Failure> {
    let statement = txn.prepare_cached(sql).await?;
    Ok(txn.execute(&statement, params).await?)
}

/// The record of `id`, row-locked (`FOR UPDATE`) until the transaction ends.
async fn lock_record(
    txn: &Transaction<'_>,
    id: &SnapshotId,
) -> Result<Option<SnapshotRecord>, Failure> {
    let rows = query(
        txn,
        "SELECT record::text FROM snapshots WHERE id = $1 FOR UPDATE",
        &[&id.as_str()],
    )
    .await?;
    match rows.first() {
        Some(row) => Ok(Some(decode_record(&column::<String>(row, 0)?)?)),
        None => Ok(None),
    }
}

async fn save_record(txn: &Transaction<'_>, record: &SnapshotRecord) -> Result<(), Failure> {
    let text = encode_record(record)?;
    execute(
        txn,
        "UPDATE snapshots SET record = $2 WHERE id = $1",
        &[&record.id.as_str(), &text],
    )
    .await?;
    Ok(())
}

async fn create(txn: &Transaction<'_>, record: &SnapshotRecord) -> Result<CreateOutcome, Failure> {
    if let Some(parent) = &record.parent {
        // FOR SHARE: a concurrent delete of the parent waits until this commits.
        let rows = query(
            txn,
            "SELECT record::text FROM snapshots WHERE id = $1 FOR SHARE",
            &[&parent.as_str()],
        )
        .await?;
        let intact = match rows.first() {
            Some(row) => {
                let p = decode_record(&column::<String>(row, 0)?)?;
                p.status == SnapshotStatus::Completed
                    && p.owner == record.owner
                    && p.root == record.base_root
            }
            None => false,
        };
        if !intact {
            return Ok(CreateOutcome::ParentGone);
        }
    }
    if let Some(token) = &record.client_token {
        // A concurrent create with the same token waits here for the first to commit (or
        // roll back), then sees its row.
        let inserted = execute(
            txn,
            "INSERT INTO client_tokens (owner, token, snapshot) VALUES ($1, $2, $3)
             ON CONFLICT (owner, token) DO NOTHING",
            &[
                &record.owner.as_str(),
                &token.as_bytes(),
                &record.id.as_str(),
            ],
        )
        .await?;
        if inserted == 0 {
            let rows = query(
                txn,
                "SELECT s.record::text FROM client_tokens t JOIN snapshots s ON s.id = t.snapshot
                 WHERE t.owner = $1 AND t.token = $2",
                &[&record.owner.as_str(), &token.as_bytes()],
            )
            .await?;
            if let Some(row) = rows.first() {
                let existing = decode_record(&column::<String>(row, 0)?)?;
                return Ok(CreateOutcome::ClientTokenExists(Box::new(existing)));
            }
            // A token whose snapshot is gone binds nothing any more.
            execute(
                txn,
                "UPDATE client_tokens SET snapshot = $3 WHERE owner = $1 AND token = $2",
                &[
                    &record.owner.as_str(),
                    &token.as_bytes(),
                    &record.id.as_str(),
                ],
            )
            .await?;
        }
    }
    let text = encode_record(record)?;
    execute(
        txn,
        "INSERT INTO snapshots (id, owner, record) VALUES ($1, $2, $3)",
        &[&record.id.as_str(), &record.owner.as_str(), &text],
    )
    .await?;
    Ok(CreateOutcome::Created)
}

async fn seal(
    txn: &Transaction<'_>,
    fence: i64,
    seal: &Seal,
) -> Result<Result<(), SealError>, Failure> {
    let stored = match lock_record(txn, &seal.snapshot).await? {
        Some(stored) if stored.status == SnapshotStatus::Pending => stored,
        _ => return Ok(Err(SealError::NotPending)),
    };
    if stored.write_sequence != seal.expected_sequence {
        return Ok(Err(SealError::Raced));
    }
    // Taken after the row lock, so a seal waiting for a record never holds the fence
    // meanwhile.
    let stamp = fenced_stamp(txn, fence).await?;
    store_nodes(txn, stamp, &seal.new_nodes).await?;
    execute(
        txn,
        "DELETE FROM pending_writes WHERE snapshot = $1",
        &[&seal.snapshot.as_str()],
    )
    .await?;
    execute(
        txn,
        "DELETE FROM staged_roots WHERE snapshot = $1",
        &[&seal.snapshot.as_str()],
    )
    .await?;
    let completed = stored.completed(seal.root, seal.changed_blocks, seal.completed_at_ms);
    save_record(txn, &completed).await?;
    Ok(Ok(()))
}

/// Store (or re-stamp) nodes with `stamp`.
async fn store_nodes(
    txn: &Transaction<'_>,
    stamp: i64,
    new_nodes: &[(NodeHash, Vec<u8>)],
) -> Result<(), Failure> {
    // Sorted and unique: one row per node, and concurrent seals lock shared nodes in the
    // same order (no deadlock between them).
    let nodes: BTreeMap<&[u8], &[u8]> = new_nodes
        .iter()
        .map(|(hash, bytes)| (hash.0.as_slice(), bytes.as_slice()))
        .collect();
    if !nodes.is_empty() {
        let hashes: Vec<&[u8]> = nodes.keys().copied().collect();
        let bytes: Vec<&[u8]> = nodes.values().copied().collect();
        execute(
            txn,
            "INSERT INTO nodes (hash, stamp, bytes)
             SELECT h, $2, b FROM unnest($1::bytea[], $3::bytea[]) AS t (h, b)
             ON CONFLICT (hash) DO UPDATE SET stamp = EXCLUDED.stamp",
            &[&hashes, &stamp, &bytes],
        )
        .await?;
    }
    Ok(())
}

/// Store nodes ahead of a seal (see [`MetadataStore::stage_nodes`]).
async fn stage(
    txn: &Transaction<'_>,
    fence: i64,
    id: &SnapshotId,
    roots: &[NodeHash],
    nodes: &[(NodeHash, Vec<u8>)],
) -> Result<Result<(), SealError>, Failure> {
    match lock_record(txn, id).await? {
        Some(stored) if stored.status == SnapshotStatus::Pending => {}
        _ => return Ok(Err(SealError::NotPending)),
    }
    let stamp = fenced_stamp(txn, fence).await?;
    store_nodes(txn, stamp, nodes).await?;
    let roots: Vec<&[u8]> = roots.iter().map(|root| root.0.as_slice()).collect();
    execute(
        txn,
        "INSERT INTO staged_roots (snapshot, root)
         SELECT $1, r FROM unnest($2::bytea[]) AS t (r)
         ON CONFLICT DO NOTHING",
        &[&id.as_str(), &roots],
    )
    .await?;
    Ok(Ok(()))
}

/// What an `update_snapshot` attempt saw and produced: its change is `FnOnce`, so an
/// attempt after a serialization failure re-applies the first outcome, and only if the
/// record is still the one the change saw.
enum Change {
    Pending(RecordChange),
    Ran {
        seen: Box<SnapshotRecord>,
        result: Option<Box<SnapshotRecord>>,
    },
    /// Taken by an attempt that did not finish (only between attempts).
    Gone,
}

async fn update(
    txn: &Transaction<'_>,
    id: &SnapshotId,
    change: &std::sync::Mutex<Change>,
) -> Result<Option<SnapshotRecord>, Failure> {
    let Some(stored) = lock_record(txn, id).await? else {
        return Ok(None);
    };
    let state = std::mem::replace(
        &mut *change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
        Change::Gone,
    );
    let result = match state {
        Change::Pending(change) => change(&stored).filter(|r| r.id == *id),
        Change::Ran { seen, result } if *seen == stored => result.map(|r| *r),
        Change::Ran { .. } | Change::Gone => {
            return Err(StoreError::Conflict(
                "the snapshot record changed while its update was run again".into(),
            )
            .into());
        }
    };
    *change
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Change::Ran {
        seen: Box::new(stored),
        result: result.clone().map(Box::new),
    };
    if let Some(record) = &result {
        save_record(txn, record).await?;
    }
    Ok(result)
}

async fn gc_view(
    client: &mut deadpool_postgres::Client,
    fence: i64,
) -> Result<
    (
        Stamp,
        Vec<SnapshotRecord>,
        Vec<(SnapshotId, Vec<ChunkDigest>)>,
        Vec<NodeHash>,
        Vec<(NodeHash, Stamp)>,
        Vec<RegisteredChunk>,
    ),
    Failure,
> {
    // Session-level and exclusive: granted once no seal holds the fence, and new seals
    // wait for it. Outside the transaction because a REPEATABLE READ snapshot is taken at
    // the transaction's first statement, and this wait must come before it.
    client
        .execute("SELECT pg_advisory_lock($1)", &[&fence])
        .await?;
    let txn = client
        .build_transaction()
        .isolation_level(RepeatableRead)
        .start()
        .await?;
    // The first statement: it takes the transaction's snapshot, then the view's stamp.
    let row = txn
        .query_one("SELECT nextval('strata_stamps')", &[])
        .await?;
    let start = stamp_of(column(&row, 0)?)?;
    txn.execute("SELECT pg_advisory_unlock($1)", &[&fence])
        .await?;

    let mut records = Vec::new();
    for row in txn
        .query(
            "SELECT record::text FROM snapshots ORDER BY id COLLATE \"C\"",
            &[],
        )
        .await?
    {
        records.push(decode_record(&column::<String>(&row, 0)?)?);
    }
    let mut pending: Vec<(SnapshotId, Vec<ChunkDigest>)> = Vec::new();
    for row in txn
        .query(
            "SELECT snapshot, digest FROM pending_writes ORDER BY snapshot COLLATE \"C\", block_index",
            &[],
        )
        .await?
    {
        let id: String = column(&row, 0)?;
        let digest = digest_of(column(&row, 1)?)?;
        match pending.last_mut() {
            Some((last, digests)) if last.as_str() == id => digests.push(digest),
            _ => {
                let id = SnapshotId::parse(&id)
                    .map_err(|e| StoreError::Corrupt(format!("pending write key: {e}")))?;
                pending.push((id, vec![digest]));
            }
        }
    }
    let pending_ids: std::collections::HashSet<&str> = records
        .iter()
        .filter(|r| r.status == SnapshotStatus::Pending)
        .map(|r| r.id.as_str())
        .collect();
    let mut staged = Vec::new();
    for row in txn
        .query("SELECT snapshot, root FROM staged_roots", &[])
        .await?
    {
        let id: String = column(&row, 0)?;
        if pending_ids.contains(id.as_str()) {
            let root = <[u8; 32]>::try_from(column::<Vec<u8>>(&row, 1)?)
                .map_err(|_| StoreError::Corrupt("a staged root that is not 32 bytes".into()))?;
            staged.push(NodeHash(root));
        }
    }
    let mut nodes = Vec::new();
    for row in txn.query("SELECT hash, stamp FROM nodes", &[]).await? {
        let hash = <[u8; 32]>::try_from(column::<Vec<u8>>(&row, 0)?)
            .map_err(|_| StoreError::Corrupt("a node hash that is not 32 bytes".into()))?;
        nodes.push((NodeHash(hash), stamp_of(column(&row, 1)?)?));
    }
    let mut chunks = Vec::new();
    for row in txn
        .query("SELECT digest, size, stamp FROM chunks", &[])
        .await?
    {
        chunks.push(RegisteredChunk {
            digest: digest_of(column(&row, 0)?)?,
            size: u64::try_from(column::<i64>(&row, 1)?)
                .map_err(|_| StoreError::Corrupt("a negative chunk size".into()))?,
            stamp: stamp_of(column(&row, 2)?)?,
        });
    }
    txn.commit().await?;
    Ok((start, records, pending, staged, nodes, chunks))
}

/// How long an announcement of a node that died before withdrawing it keeps its chunk
/// from GC: longer than any Put takes (a Put's body has its own deadline).
const ANNOUNCEMENT_TTL_MS: f64 = 3_600_000.0;

impl MetadataStore for PostgresMetadataStore {
    type Nodes = PgNodes;

    async fn create_snapshot(&self, record: SnapshotRecord) -> Result<CreateOutcome, StoreError> {
        transact(
            &self.pool,
            "create a snapshot",
            ReadCommitted,
            Repeat::Unsafe,
            move |txn| {
                let record = record.clone();
                Box::pin(async move { create(txn, &record).await })
            },
        )
        .await
    }

    async fn snapshot(&self, id: &SnapshotId) -> Result<Option<SnapshotRecord>, StoreError> {
        let op = "read a snapshot";
        let client = persistence::connection(&self.pool).await?;
        let statement = client
            .prepare_cached("SELECT record::text FROM snapshots WHERE id = $1")
            .await
            .map_err(|e| persistence::classify(e, op))?;
        let row = client
            .query_opt(&statement, &[&id.as_str()])
            .await
            .map_err(|e| persistence::classify(e, op))?;
        row.map(|row| decode_record(&column::<String>(&row, 0)?))
            .transpose()
    }

    async fn update_snapshot(
        &self,
        id: &SnapshotId,
        change: RecordChange,
    ) -> Result<Option<SnapshotRecord>, StoreError> {
        let id = id.clone();
        let change = std::sync::Arc::new(std::sync::Mutex::new(Change::Pending(change)));
        transact(
            &self.pool,
            "update a snapshot",
            ReadCommitted,
            Repeat::Unsafe,
            move |txn| {
                let (id, change) = (id.clone(), std::sync::Arc::clone(&change));
                Box::pin(async move { update(txn, &id, &change).await })
            },
        )
        .await
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> Result<bool, StoreError> {
        let id = id.clone();
        transact(
            &self.pool,
            "delete a snapshot",
            ReadCommitted,
            Repeat::Unsafe,
            move |txn| {
                let id = id.clone();
                Box::pin(async move {
                    // The record first: the same lock order as every other writer.
                    let deleted =
                        execute(txn, "DELETE FROM snapshots WHERE id = $1", &[&id.as_str()])
                            .await?;
                    if deleted == 0 {
                        return Ok(false);
                    }
                    execute(
                        txn,
                        "DELETE FROM client_tokens WHERE snapshot = $1",
                        &[&id.as_str()],
                    )
                    .await?;
                    execute(
                        txn,
                        "DELETE FROM pending_writes WHERE snapshot = $1",
                        &[&id.as_str()],
                    )
                    .await?;
                    execute(
                        txn,
                        "DELETE FROM staged_roots WHERE snapshot = $1",
                        &[&id.as_str()],
                    )
                    .await?;
                    Ok(true)
                })
            },
        )
        .await
    }

    async fn record_block(&self, write: BlockWrite) -> Result<(), RecordBlockError> {
        self.writer.record(write).await
    }

    async fn pending_writes_page(
        &self,
        id: &SnapshotId,
        after: Option<BlockIndex>,
        limit: usize,
    ) -> Result<PendingWrites, StoreError> {
        let id = id.clone();
        let after = after.map_or(-1, |index| i64::from(index.get()));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        transact(
            &self.pool,
            "read pending writes",
            RepeatableRead,
            Repeat::Safe,
            move |txn| {
                let id = id.clone();
                Box::pin(async move {
                    let rows = query(
                        txn,
                        "SELECT record::text FROM snapshots WHERE id = $1",
                        &[&id.as_str()],
                    )
                    .await?;
                    let Some(row) = rows.first() else {
                        return Ok(PendingWrites::default());
                    };
                    let record = decode_record(&column::<String>(row, 0)?)?;
                    let mut page = PendingWrites {
                        sequence: record.write_sequence,
                        ..PendingWrites::default()
                    };
                    if record.status == SnapshotStatus::Completed {
                        return Ok(page);
                    }
                    for row in query(
                        txn,
                        "SELECT block_index, digest, checksum FROM pending_writes
                         WHERE snapshot = $1 AND block_index > $2
                         ORDER BY block_index LIMIT $3",
                        &[&id.as_str(), &after, &limit],
                    )
                    .await?
                    {
                        let index = index_of(column(&row, 0)?)?;
                        page.blocks.push((index, digest_of(column(&row, 1)?)?));
                        if let Some(checksum) = column::<Option<Vec<u8>>>(&row, 2)? {
                            page.checksums.push((index, checksum_of(checksum)?));
                        }
                    }
                    Ok(page)
                })
            },
        )
        .await
    }

    async fn stage_nodes(
        &self,
        id: &SnapshotId,
        roots: Vec<NodeHash>,
        nodes: Vec<(NodeHash, Vec<u8>)>,
    ) -> Result<(), SealError> {
        let fence = self.fence;
        let request = std::sync::Arc::new((id.clone(), roots, nodes));
        transact(
            &self.pool,
            "store tree nodes ahead of a seal",
            ReadCommitted,
            // Storing the same nodes and roots again is harmless.
            Repeat::Safe,
            move |txn| {
                let request = std::sync::Arc::clone(&request);
                Box::pin(async move {
                    let (id, roots, nodes) = &*request;
                    stage(txn, fence, id, roots, nodes).await
                })
            },
        )
        .await?
    }

    async fn seal_snapshot(&self, request: Seal) -> Result<(), SealError> {
        let fence = self.fence;
        let request = std::sync::Arc::new(request);
        transact(
            &self.pool,
            "seal a snapshot",
            ReadCommitted,
            Repeat::Unsafe,
            move |txn| {
                let request = std::sync::Arc::clone(&request);
                Box::pin(async move { seal(txn, fence, &request).await })
            },
        )
        .await?
    }

    fn nodes(&self) -> Result<PgNodes, StoreError> {
        Ok(self.nodes.reader())
    }

    async fn list_snapshots(
        &self,
        owner: Option<&AccountId>,
    ) -> Result<Vec<SnapshotRecord>, StoreError> {
        let owner = owner.map(|o| o.as_str().to_owned());
        transact(
            &self.pool,
            "list snapshots",
            ReadCommitted,
            Repeat::Safe,
            move |txn| {
                let owner = owner.clone();
                Box::pin(async move {
                    // COLLATE "C": byte order, as `SnapshotId`'s `Ord`, whatever the
                    // database's default collation.
                    let rows = match &owner {
                        Some(owner) => {
                            query(
                                txn,
                                "SELECT record::text FROM snapshots WHERE owner = $1
                                 ORDER BY id COLLATE \"C\"",
                                &[owner],
                            )
                            .await?
                        }
                        None => {
                            query(
                                txn,
                                "SELECT record::text FROM snapshots ORDER BY id COLLATE \"C\"",
                                &[],
                            )
                            .await?
                        }
                    };
                    let mut records = Vec::with_capacity(rows.len());
                    for row in rows {
                        records.push(decode_record(&column::<String>(&row, 0)?)?);
                    }
                    Ok(records)
                })
            },
        )
        .await
    }

    async fn gc_view(&self) -> Result<GcView<PgNodes>, StoreError> {
        let pool = self.pool.clone();
        let fence = self.fence;
        // A task of its own: a caller that gives up (a timeout) must not drop this future
        // between taking the session lock and releasing it, which would hand the
        // connection back to the pool still holding the fence.
        let view = tokio::spawn(async move {
            let mut client = persistence::connection(&pool).await?;
            match gc_view(&mut client, fence).await {
                Ok(view) => Ok(view),
                Err(failure) => {
                    // The session lock may still be held: close this connection (which
                    // releases it) instead of returning it to the pool.
                    drop(deadpool_postgres::Object::take(client));
                    Err(match failure {
                        Failure::Db(error) => persistence::classify(error, "take a GC view"),
                        Failure::Store(error) => error,
                    })
                }
            }
        })
        .await
        .map_err(|e| StoreError::Backend(format!("the GC view task failed: {e}")))??;
        let (start, records, pending, staged, nodes, chunks) = view;
        Ok(GcView {
            start,
            records,
            pending,
            staged,
            nodes,
            chunks,
            reader: self.nodes.reader(),
        })
    }

    async fn announce_put(&self, digest: ChunkDigest) -> Result<Announced, StoreError> {
        let announced = transact(
            &self.pool,
            "announce a put",
            ReadCommitted,
            // A rerun after an unknown outcome may leave a second announcement: it keeps
            // the chunk a little longer, and lapses.
            Repeat::Safe,
            move |txn| {
                Box::pin(async move {
                    // The digest's lock first (shared): a condemnation of it runs entirely
                    // before or after this transaction, and the next statement (a new
                    // snapshot, at READ COMMITTED) sees what it committed.
                    lock_digests(txn, [digest], false).await?;
                    let rows = query(
                        txn,
                        "WITH state AS (
                             SELECT EXISTS (SELECT 1 FROM condemned_chunks WHERE digest = $1)
                                        AS condemned,
                                    EXISTS (SELECT 1 FROM chunks WHERE digest = $1)
                                        AS registered),
                         announced AS (
                             INSERT INTO announcements (digest, expires_at)
                             SELECT $1, now() + $2 * interval '1 millisecond'
                             FROM state WHERE NOT condemned
                             RETURNING id)
                         SELECT (SELECT id FROM announced), registered FROM state",
                        &[&digest.0.as_slice(), &ANNOUNCEMENT_TTL_MS],
                    )
                    .await?;
                    let row = rows
                        .first()
                        .ok_or_else(|| StoreError::Backend("announce returned no row".into()))?;
                    let id: Option<i64> = column(row, 0)?;
                    let registered: bool = column(row, 1)?;
                    Ok(id.map(|id| (id, registered)))
                })
            },
        )
        .await?;
        let Some((id, registered)) = announced else {
            return Err(StoreError::Conflict(format!(
                "chunk {digest} is being deleted"
            )));
        };
        let id = u64::try_from(id)
            .map(AnnouncementId)
            .map_err(|_| StoreError::Corrupt(format!("announcement id {id}")))?;
        Ok(Announced { id, registered })
    }

    fn withdraw_put(&self, id: AnnouncementId) {
        // Fire and forget (the port's contract): an announcement that cannot be deleted
        // now lapses at its expiry.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Ok(id) = i64::try_from(id.0) else {
            return;
        };
        let pool = self.pool.clone();
        runtime.spawn(async move {
            let deleted = match persistence::connection(&pool).await {
                Ok(client) => client
                    .execute("DELETE FROM announcements WHERE id = $1", &[&id])
                    .await
                    .map_err(|e| persistence::classify(e, "withdraw a put")),
                Err(error) => Err(error),
            };
            if let Err(error) = deleted {
                tracing::debug!(%error, "an announcement lapses instead of being withdrawn");
            }
        });
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let op = "acquire a lease";
        // A float: PostgreSQL multiplies an interval by `double precision`.
        let ttl_ms = ttl.as_secs_f64() * 1000.0;
        let client = persistence::connection(&self.pool).await?;
        // One statement, so atomic: taken if absent, renewed by its holder, or taken over
        // once expired (by the database's clock).
        let row = client
            .query_opt(
                "INSERT INTO leases (name, holder, expires_at)
                 VALUES ($1, $2, now() + $3 * interval '1 millisecond')
                 ON CONFLICT (name) DO UPDATE
                   SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
                   WHERE leases.holder = EXCLUDED.holder OR leases.expires_at <= now()
                 RETURNING holder",
                &[&name, &holder, &ttl_ms],
            )
            .await
            .map_err(|e| persistence::classify(e, op))?;
        Ok(row.is_some())
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let client = persistence::connection(&self.pool).await?;
        client
            .execute(
                "DELETE FROM leases WHERE name = $1 AND holder = $2",
                &[&name, &holder],
            )
            .await
            .map_err(|e| persistence::classify(e, "release a lease"))?;
        Ok(())
    }

    async fn secret(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let op = "read a cluster secret";
        let client = persistence::connection(&self.pool).await?;
        // Insert-if-absent, then read what is stored: whoever inserted first wins.
        client
            .execute(
                "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &candidate],
            )
            .await
            .map_err(|e| persistence::classify(e, op))?;
        let row = client
            .query_one("SELECT value FROM secrets WHERE name = $1", &[&name])
            .await
            .map_err(|e| persistence::classify(e, op))?;
        column(&row, 0)
    }

    async fn create_key(&self, key: KeyRecord) -> Result<KeyRecord, StoreError> {
        let text = encode_key(&key)?;
        let owner = key.owner.as_str().to_owned();
        let id = key.id;
        transact(
            &self.pool,
            "create a key",
            ReadCommitted,
            // A rerun finds the key stored by the first run (or by whoever won) and
            // returns it: the same answer.
            Repeat::Safe,
            move |txn| {
                let (id, owner, text) = (id.clone(), owner.clone(), text.clone());
                Box::pin(async move {
                    // A concurrent create of the same id waits here until the first
                    // commits, then inserts nothing; the next statement (a new snapshot,
                    // at READ COMMITTED) sees the key that won.
                    execute(
                        txn,
                        "INSERT INTO kms_keys (id, owner, record) VALUES ($1, $2, $3)
                         ON CONFLICT (id) DO NOTHING",
                        &[&id, &owner, &text],
                    )
                    .await?;
                    let rows =
                        query(txn, "SELECT record FROM kms_keys WHERE id = $1", &[&id]).await?;
                    let row = rows.first().ok_or_else(|| {
                        StoreError::Backend(format!("key {id} is not there once stored"))
                    })?;
                    Ok(decode_key(&column::<String>(row, 0)?)?)
                })
            },
        )
        .await
    }

    async fn key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        if !storable_key_id(id) {
            return Ok(None);
        }
        let op = "read a key";
        let client = persistence::connection(&self.pool).await?;
        let row = client
            .query_opt("SELECT record FROM kms_keys WHERE id = $1", &[&id])
            .await
            .map_err(|e| persistence::classify(e, op))?;
        row.map(|row| decode_key(&column::<String>(&row, 0)?))
            .transpose()
    }

    async fn keys(&self, owner: Option<&AccountId>) -> Result<Vec<KeyRecord>, StoreError> {
        let op = "list keys";
        let client = persistence::connection(&self.pool).await?;
        // COLLATE "C": byte order, as `String`'s `Ord`, whatever the database's default
        // collation.
        let rows =
            match owner {
                Some(owner) => client
                    .query(
                        "SELECT record FROM kms_keys WHERE owner = $1 ORDER BY id COLLATE \"C\"",
                        &[&owner.as_str()],
                    )
                    .await,
                None => {
                    client
                        .query("SELECT record FROM kms_keys ORDER BY id COLLATE \"C\"", &[])
                        .await
                }
            }
            .map_err(|e| persistence::classify(e, op))?;
        rows.iter()
            .map(|row| decode_key(&column::<String>(row, 0)?))
            .collect()
    }

    async fn set_key_enabled(
        &self,
        id: &str,
        enabled: bool,
    ) -> Result<Option<KeyRecord>, StoreError> {
        if !storable_key_id(id) {
            return Ok(None);
        }
        let id = id.to_owned();
        transact(
            &self.pool,
            "enable or disable a key",
            ReadCommitted,
            // A rerun stores the same record again.
            Repeat::Safe,
            move |txn| {
                let id = id.clone();
                Box::pin(async move {
                    // Locked: a concurrent change of the same key waits, then sees this one.
                    let rows = query(
                        txn,
                        "SELECT record FROM kms_keys WHERE id = $1 FOR UPDATE",
                        &[&id],
                    )
                    .await?;
                    let Some(row) = rows.first() else {
                        return Ok(None);
                    };
                    let mut key = decode_key(&column::<String>(row, 0)?)?;
                    key.enabled = enabled;
                    execute(
                        txn,
                        "UPDATE kms_keys SET record = $2 WHERE id = $1",
                        &[&id, &encode_key(&key)?],
                    )
                    .await?;
                    Ok(Some(key))
                })
            },
        )
        .await
    }

    async fn delete_nodes(
        &self,
        hashes: Vec<NodeHash>,
        stamped_before: Stamp,
    ) -> Result<usize, StoreError> {
        let hashes: Vec<Vec<u8>> = hashes.iter().map(|h| h.0.to_vec()).collect();
        let before = stamp_value(stamped_before);
        let deleted = transact(
            &self.pool,
            "delete nodes",
            ReadCommitted,
            // Deleting again deletes nothing more (its count is then smaller: GC only
            // reports it).
            Repeat::Safe,
            move |txn| {
                let hashes = hashes.clone();
                Box::pin(async move {
                    // The stamp is checked by the DELETE itself: a node a seal re-stamped
                    // and committed meanwhile is re-checked on its new version and kept.
                    execute(
                        txn,
                        "DELETE FROM nodes WHERE hash = ANY($1) AND stamp < $2",
                        &[&hashes, &before],
                    )
                    .await
                })
            },
        )
        .await?;
        usize::try_from(deleted).map_err(|_| StoreError::Backend("deleted count".into()))
    }

    async fn drop_pending_writes(&self, ids: Vec<SnapshotId>) -> Result<usize, StoreError> {
        let ids: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
        let dropped = transact(
            &self.pool,
            "drop pending writes",
            ReadCommitted,
            Repeat::Safe,
            move |txn| {
                let ids = ids.clone();
                Box::pin(async move {
                    // Locked, so that no update takes a snapshot out of `error` between
                    // the check and the delete. In id order: no deadlock between two.
                    let rows = query(
                        txn,
                        "SELECT id, record::text FROM snapshots WHERE id = ANY($1)
                         ORDER BY id COLLATE \"C\" FOR UPDATE",
                        &[&ids],
                    )
                    .await?;
                    let mut failed = Vec::new();
                    for row in rows {
                        let record = decode_record(&column::<String>(&row, 1)?)?;
                        if record.status == SnapshotStatus::Error {
                            failed.push(column::<String>(&row, 0)?);
                        }
                    }
                    if failed.is_empty() {
                        return Ok(0);
                    }
                    execute(
                        txn,
                        "DELETE FROM staged_roots WHERE snapshot = ANY($1)",
                        &[&failed],
                    )
                    .await?;
                    execute(
                        txn,
                        "DELETE FROM pending_writes WHERE snapshot = ANY($1)",
                        &[&failed],
                    )
                    .await
                })
            },
        )
        .await?;
        usize::try_from(dropped).map_err(|_| StoreError::Backend("dropped count".into()))
    }

    async fn condemn_chunks(
        &self,
        digests: Vec<ChunkDigest>,
        stamped_before: Stamp,
    ) -> Result<Vec<ChunkDigest>, StoreError> {
        let before = stamp_value(stamped_before);
        let rows = transact(
            &self.pool,
            "condemn chunks",
            ReadCommitted,
            // A rerun condemns nothing more: what the first run condemned is in
            // `condemned_chunks` (and the next collection deletes it).
            Repeat::Safe,
            move |txn| {
                let digests = digests.clone();
                Box::pin(async move {
                    // Exclusive per-digest locks: every announcement and write record of
                    // these digests committed before, or waits until this commits (and
                    // then finds the tombstone). The next statement sees the former.
                    lock_digests(txn, digests.iter().copied(), true).await?;
                    let wanted: Vec<&[u8]> = digests.iter().map(|d| d.0.as_slice()).collect();
                    query(
                        txn,
                        "WITH idle AS (
                             SELECT DISTINCT d FROM unnest($1::bytea[]) AS d
                             WHERE NOT EXISTS (SELECT 1 FROM announcements a
                                               WHERE a.digest = d AND a.expires_at > now())
                               AND NOT EXISTS (SELECT 1 FROM chunks c
                                               WHERE c.digest = d AND c.stamp >= $2)),
                         unregistered AS (
                             DELETE FROM chunks WHERE digest IN (SELECT d FROM idle))
                         INSERT INTO condemned_chunks (digest) SELECT d FROM idle
                         ON CONFLICT (digest) DO NOTHING
                         RETURNING digest",
                        &[&wanted, &before],
                    )
                    .await
                })
            },
        )
        .await?;
        rows.into_iter()
            .map(|row| digest_of(column(&row, 0)?))
            .collect()
    }

    async fn condemned_chunks(&self) -> Result<Vec<ChunkDigest>, StoreError> {
        let op = "list condemned chunks";
        let client = persistence::connection(&self.pool).await?;
        let rows = client
            .query("SELECT digest FROM condemned_chunks ORDER BY digest", &[])
            .await
            .map_err(|e| persistence::classify(e, op))?;
        rows.into_iter()
            .map(|row| digest_of(column(&row, 0)?))
            .collect()
    }

    async fn finalize_chunks(&self, digests: Vec<ChunkDigest>) -> Result<(), StoreError> {
        let op = "finalize chunk deletions";
        let wanted: Vec<&[u8]> = digests.iter().map(|d| d.0.as_slice()).collect();
        let client = persistence::connection(&self.pool).await?;
        client
            .execute(
                "DELETE FROM condemned_chunks WHERE digest = ANY($1)",
                &[&wanted],
            )
            .await
            .map_err(|e| persistence::classify(e, op))?;
        Ok(())
    }

    async fn forget_chunk(&self, digest: ChunkDigest) -> Result<(), StoreError> {
        let op = "forget a damaged chunk";
        let client = persistence::connection(&self.pool).await?;
        client
            .execute(
                "DELETE FROM chunks WHERE digest = $1",
                &[&digest.0.as_slice()],
            )
            .await
            .map_err(|e| persistence::classify(e, op))?;
        Ok(())
    }
}
