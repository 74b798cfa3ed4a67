//! The on-disk format of the embedded stores, as written by the code of 2026-12-03
//! (`tests/fixtures/format-v1/`: `metadata.redb`, `chunks/index.redb`, `chunks/segments/`),
//! opened by today's code: every snapshot reads back as it was written.
//!
//! The fixture was made by `generate_format_v1_fixture` below (ignored; run it only to
//! make a fixture of the *current* format, never to "fix" this test). The expected contents
//! are derived here from the same seeds ([`Fixture`]), not read back from the store.
//! A fixed clock makes the pending snapshot still pending and the tokens still valid.

use std::path::Path;
use std::sync::Arc;

use strata_core::body::BlockHasher;
use strata_core::encryption::{KeyRecord, MasterKey};
use strata_core::ports::{BlockWrite, ChunkStore, MetadataStore};
use strata_core::service::{PageRequest, StartSnapshotInput};
use strata_core::snapshot::{SnapshotRecord, SnapshotStatus, Tag};
use strata_core::tokens::TokenIssuer;
use strata_core::{Clock, ServiceError, SnapshotService};
use strata_store_embedded::{EmbeddedStore, FsChunkStore, RedbMetadataStore};
use strata_types::{AccountId, BLOCK_SIZE, BlockIndex, ChunkDigest, SnapshotId};

type Service = SnapshotService<RedbMetadataStore, FsChunkStore>;

/// The service's time while the fixture was written, and while it is read.
const FIXTURE_NOW_MS: i64 = 1_764_547_200_000;

struct FixedClock;

impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        FIXTURE_NOW_MS
    }
}

/// The content of one block: `Zero` (recorded, never stored) or 512 KiB made from a seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Zero,
    Seed(u8),
}

impl Content {
    fn bytes(self) -> Vec<u8> {
        match self {
            Content::Zero => vec![0; BLOCK_SIZE],
            Content::Seed(seed) => {
                let mut data = vec![seed; BLOCK_SIZE];
                data[0] = seed.wrapping_mul(31);
                data[4095] = seed ^ 0x5a;
                data[BLOCK_SIZE - 1] = 0xee;
                data
            }
        }
    }

    fn digest(self) -> ChunkDigest {
        ChunkDigest::of(&self.bytes())
    }
}

const A: Content = Content::Seed(1);
const B: Content = Content::Seed(2);
const C: Content = Content::Seed(3);
const D: Content = Content::Seed(4);
const E: Content = Content::Seed(5);
const ZERO: Content = Content::Zero;

/// What the fixture holds, as (description → writes in order).
struct Fixture;

impl Fixture {
    const PARENT: &str = "fixture parent";
    const CHILD: &str = "fixture child";
    const PENDING: &str = "fixture pending";
    const PARENT_TOKEN: &str = "fixture-parent-token";
    const PENDING_TOKEN: &str = "fixture-pending-token";

    /// The parent's writes: a zero block among three stored ones.
    const PARENT_WRITES: &[(u32, Content)] = &[(0, A), (1, B), (2, ZERO), (3, C)];
    /// The child's: 1 changed, 3 rewritten with the same content (not a change), 5 new with
    /// the parent's content of block 0 (one chunk, two indexes), 6 a new zero block.
    const CHILD_WRITES: &[(u32, Content)] = &[(1, D), (3, C), (5, A), (6, ZERO)];
    /// The pending snapshot's: block 0 written twice (the last write wins), 2 with the
    /// child's content of block 1, 4 a zero block.
    const PENDING_WRITES: &[(u32, Content)] = &[(0, B), (2, D), (0, E), (4, ZERO)];

    fn parent_blocks() -> Vec<(u32, Content)> {
        Self::PARENT_WRITES.to_vec()
    }

    fn child_blocks() -> Vec<(u32, Content)> {
        vec![(0, A), (1, D), (2, ZERO), (3, C), (5, A), (6, ZERO)]
    }

    fn pending_blocks() -> Vec<(u32, Content)> {
        vec![(0, E), (2, D), (4, ZERO)]
    }

    /// (index, parent's content, child's content) of every block that differs.
    fn changed() -> Vec<(u32, Option<Content>, Option<Content>)> {
        vec![
            (1, Some(B), Some(D)),
            (5, None, Some(A)),
            (6, None, Some(ZERO)),
        ]
    }

    fn parent_input() -> StartSnapshotInput {
        StartSnapshotInput {
            volume_size_gib: 1,
            description: Some(Self::PARENT.into()),
            tags: vec![tag("role", "parent"), tag("format", "v1")],
            client_token: Some(Self::PARENT_TOKEN.into()),
            ..StartSnapshotInput::default()
        }
    }

    fn child_input(parent: &SnapshotId) -> StartSnapshotInput {
        StartSnapshotInput {
            volume_size_gib: 1,
            parent: Some(parent.clone()),
            description: Some(Self::CHILD.into()),
            tags: vec![tag("role", "child")],
            ..StartSnapshotInput::default()
        }
    }

    fn pending_input() -> StartSnapshotInput {
        StartSnapshotInput {
            volume_size_gib: 2,
            description: Some(Self::PENDING.into()),
            tags: vec![tag("role", "pending")],
            client_token: Some(Self::PENDING_TOKEN.into()),
            timeout_minutes: Some(4320),
            ..StartSnapshotInput::default()
        }
    }
}

fn tag(key: &str, value: &str) -> Tag {
    Tag {
        key: key.into(),
        value: value.into(),
    }
}

fn owner() -> AccountId {
    AccountId::parse("123456789012").expect("account")
}

/// A service over the data directory `dir`, and its chunk store.
fn service(dir: &Path) -> (Service, FsChunkStore) {
    let store = EmbeddedStore::open(dir).expect("open the data directory");
    let service = SnapshotService::new(
        Arc::new(store.metadata),
        Arc::new(store.chunks.clone()),
        TokenIssuer::new([3; 32]),
        Arc::new(FixedClock),
    );
    (service, store.chunks)
}

fn fixture_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-v1")
}

async fn put(service: &Service, id: &SnapshotId, index: u32, content: Content) {
    let mut hasher = BlockHasher::default();
    assert!(hasher.update(&content.bytes()));
    let block = hasher.finish();
    let permit = service
        .begin_put(&owner(), id, BlockIndex::new(index), block.digest)
        .await
        .expect("writable");
    // The hasher the permit asks for: stored content (dedup, zero) keeps no body.
    let mut hasher = permit.block_hasher();
    assert!(hasher.update(&content.bytes()));
    service
        .put_block(permit, hasher.finish(), None)
        .await
        .expect("put");
}

async fn write(
    service: &Service,
    input: StartSnapshotInput,
    writes: &[(u32, Content)],
) -> SnapshotId {
    let id = service
        .start_snapshot(&owner(), input)
        .await
        .expect("start")
        .id;
    for (index, content) in writes {
        put(service, &id, *index, *content).await;
    }
    id
}

/// Writes `tests/fixtures/format-v1/` with the code of the day. Run only to make a fixture
/// of a new format: `cargo test -p strata-store-embedded --test fixture -- --ignored`.
#[tokio::test]
#[ignore = "writes the committed fixture"]
async fn generate_format_v1_fixture() {
    let dir = fixture_dir();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("remove the old fixture");
    }
    let (service, _) = service(&dir);
    let parent = write(&service, Fixture::parent_input(), Fixture::PARENT_WRITES).await;
    let count = Fixture::parent_blocks().len() as i64;
    service
        .complete_snapshot(&owner(), &parent, count, None)
        .await
        .expect("complete the parent");
    let child = write(
        &service,
        Fixture::child_input(&parent),
        Fixture::CHILD_WRITES,
    )
    .await;
    service
        .complete_snapshot(&owner(), &child, Fixture::CHILD_WRITES.len() as i64, None)
        .await
        .expect("complete the child");
    write(&service, Fixture::pending_input(), Fixture::PENDING_WRITES).await;
}

/// Copies `from` into `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create");
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn by_description<'r>(records: &'r [SnapshotRecord], description: &str) -> &'r SnapshotRecord {
    let found: Vec<&SnapshotRecord> = records
        .iter()
        .filter(|r| r.description.as_deref() == Some(description))
        .collect();
    assert_eq!(found.len(), 1, "one snapshot described {description:?}");
    found[0]
}

/// Every block of completed snapshot `id` is listed and reads back as `expected`.
async fn assert_blocks(service: &Service, id: &SnapshotId, expected: &[(u32, Content)]) {
    let page = service
        .list_blocks(&owner(), id, PageRequest::default())
        .await
        .expect("list blocks");
    assert!(page.next_token.is_none());
    let listed: Vec<u32> = page.blocks.iter().map(|(index, _)| index.get()).collect();
    let wanted: Vec<u32> = expected.iter().map(|(index, _)| *index).collect();
    assert_eq!(listed, wanted, "blocks of {id}");
    for ((index, token), (_, content)) in page.blocks.iter().zip(expected) {
        let block = service
            .get_block(&owner(), id, *index, token)
            .await
            .expect("get block");
        assert_eq!(block.digest, content.digest(), "block {index} of {id}");
        assert!(
            block.data[..] == content.bytes()[..],
            "block {index} of {id}"
        );
    }
}

#[tokio::test]
async fn a_data_directory_of_format_v1_opens_and_reads_back_identically() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture_dir(), dir.path());
    let (service, chunks) = service(dir.path());

    let records = service.list_snapshots(&owner()).await.expect("list");
    assert_eq!(records.len(), 3, "{records:#?}");
    let parent = by_description(&records, Fixture::PARENT).clone();
    let child = by_description(&records, Fixture::CHILD).clone();
    let pending = by_description(&records, Fixture::PENDING).clone();

    // The records: status, lineage, tags, tokens, sizes.
    assert_eq!(parent.status, SnapshotStatus::Completed);
    assert_eq!(parent.parent, None);
    assert_eq!(parent.tags, Fixture::parent_input().tags);
    assert_eq!(parent.client_token.as_deref(), Some(Fixture::PARENT_TOKEN));
    assert_eq!(parent.changed_blocks, 4);
    assert_eq!(parent.volume_size.gib(), 1);
    assert_eq!(child.status, SnapshotStatus::Completed);
    assert_eq!(child.parent.as_ref(), Some(&parent.id));
    assert_eq!(child.lineage, parent.lineage);
    assert_eq!(child.tags, vec![tag("role", "child")]);
    assert_eq!(child.changed_blocks, 4);
    assert_eq!(pending.status, SnapshotStatus::Pending);
    assert_eq!(pending.tags, vec![tag("role", "pending")]);
    assert_eq!(pending.volume_size.gib(), 2);
    assert_eq!(pending.timeout_minutes, 4320);

    // Every block of both completed snapshots, and what changed between them.
    assert_blocks(&service, &parent.id, &Fixture::parent_blocks()).await;
    assert_blocks(&service, &child.id, &Fixture::child_blocks()).await;
    let changed = service
        .list_changed_blocks(
            &owner(),
            Some(&parent.id),
            &child.id,
            PageRequest::default(),
        )
        .await
        .expect("list changed blocks");
    let indexes: Vec<u32> = changed.blocks.iter().map(|b| b.index.get()).collect();
    let expected = Fixture::changed();
    assert_eq!(indexes, expected.iter().map(|c| c.0).collect::<Vec<_>>());
    for (block, (_, first, second)) in changed.blocks.iter().zip(&expected) {
        for (id, token, content) in [
            (&parent.id, &block.first_token, first),
            (&child.id, &block.second_token, second),
        ] {
            assert_eq!(token.is_some(), content.is_some(), "{block:?}");
            if let (Some(token), Some(content)) = (token, content) {
                let read = service
                    .get_block(&owner(), id, block.index, token)
                    .await
                    .expect("get changed block");
                assert!(read.data[..] == content.bytes()[..], "{block:?}");
            }
        }
    }

    // The chunk store holds each stored content once (A is shared by two indexes, D by
    // two snapshots), and never the zero block.
    let listed = chunks.list(None, 1000).await.expect("list chunks");
    let mut stored: Vec<ChunkDigest> = listed.iter().map(|c| c.digest).collect();
    stored.sort_unstable_by_key(|d| d.0);
    let mut wanted: Vec<ChunkDigest> = [A, B, C, D, E].iter().map(|c| c.digest()).collect();
    wanted.sort_unstable_by_key(|d| d.0);
    assert_eq!(stored, wanted);

    // The pending snapshot kept its writes (the last write of block 0 won) and completes.
    let writes = service
        .metadata()
        .pending_writes(&pending.id)
        .await
        .expect("pending writes");
    let wanted: Vec<(BlockIndex, ChunkDigest)> = Fixture::pending_blocks()
        .into_iter()
        .map(|(index, content)| (BlockIndex::new(index), content.digest()))
        .collect();
    assert_eq!(writes.blocks, wanted);
    assert_eq!(writes.sequence, Fixture::PENDING_WRITES.len() as u64);

    // Client tokens still bind: the same StartSnapshot returns the same snapshot (even the
    // completed one), a different one with the same token is refused.
    for (input, id) in [
        (Fixture::parent_input(), &parent.id),
        (Fixture::pending_input(), &pending.id),
    ] {
        let again = service
            .start_snapshot(&owner(), input)
            .await
            .expect("idempotent start");
        assert_eq!(&again.id, id);
    }
    let conflicting = StartSnapshotInput {
        volume_size_gib: 3,
        ..Fixture::pending_input()
    };
    assert!(matches!(
        service.start_snapshot(&owner(), conflicting).await,
        Err(ServiceError::IdempotencyConflict(_))
    ));
    assert_eq!(
        service.list_snapshots(&owner()).await.expect("list").len(),
        3
    );

    let count = Fixture::pending_blocks().len() as i64;
    assert_eq!(
        service
            .complete_snapshot(&owner(), &pending.id, count, None)
            .await
            .expect("complete the pending snapshot"),
        SnapshotStatus::Completed
    );
    assert_blocks(&service, &pending.id, &Fixture::pending_blocks()).await;
}

/// A format-v1 `metadata.redb` predates encryption at rest: it opens with no keys and no
/// pending checksums (its pending writes read back as they were), then takes both,
/// durably, next to what it held.
#[tokio::test]
async fn a_data_directory_of_format_v1_opens_without_keys_or_checksums_and_takes_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture_dir(), dir.path());
    let pending_id = {
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let metadata = store.metadata;
        assert!(metadata.keys(None).await.expect("keys").is_empty());
        let records = metadata.list_snapshots(None).await.expect("list");
        let pending = by_description(&records, Fixture::PENDING).id.clone();
        let writes = metadata.pending_writes(&pending).await.expect("pending");
        let blocks: Vec<(u32, ChunkDigest)> = writes
            .blocks
            .iter()
            .map(|(index, digest)| (index.get(), *digest))
            .collect();
        let expected: Vec<(u32, ChunkDigest)> = Fixture::pending_blocks()
            .iter()
            .map(|(index, content)| (*index, content.digest()))
            .collect();
        assert_eq!(blocks, expected);
        assert!(writes.checksums.is_empty());

        let key = KeyRecord::create(
            &MasterKey::generate(),
            "k1".into(),
            "us-east-1",
            owner(),
            None,
            true,
            FIXTURE_NOW_MS,
        );
        assert_eq!(metadata.create_key(key.clone()).await.expect("create"), key);
        metadata
            .record_block(BlockWrite {
                snapshot: pending.clone(),
                index: BlockIndex::new(9),
                digest: A.digest(),
                progress: None,
                at_ms: FIXTURE_NOW_MS,
                // Content A is stored (the parent's block 0): registered on open.
                stored_size: None,
                checksum: Some([5; 32]),
            })
            .await
            .expect("write");
        pending
    };
    let store = EmbeddedStore::open(dir.path()).expect("reopen");
    assert_eq!(store.metadata.keys(None).await.expect("keys").len(), 1);
    let writes = store
        .metadata
        .pending_writes(&pending_id)
        .await
        .expect("pending");
    assert_eq!(writes.checksums, vec![(BlockIndex::new(9), [5; 32])]);
    assert_eq!(writes.blocks.len(), Fixture::pending_blocks().len() + 1);
}

/// Losing `metadata.redb` must not lose the chunks: the data directory is refused, with
/// what to do, and nothing in `chunks/` is touched. (Opened with empty metadata, the first
/// collection would have found every chunk unreferenced.)
#[test]
fn a_data_directory_without_its_metadata_is_refused_and_its_chunks_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture_dir(), dir.path());
    std::fs::remove_file(dir.path().join("metadata.redb")).expect("remove metadata");
    let segment = dir.path().join("chunks/segments/00000001.seg");
    let before = std::fs::metadata(&segment).expect("segment").len();
    let error = EmbeddedStore::open(dir.path()).expect_err("refused");
    assert!(
        error.to_string().contains("metadata.redb is missing"),
        "{error}"
    );
    assert!(
        !dir.path().join("metadata.redb").exists(),
        "nothing re-created"
    );
    assert_eq!(std::fs::metadata(&segment).expect("segment").len(), before);
}
