//! `strata_server::migrate` on the committed data directory of the first format (the
//! fixture of strata-store-embedded: a parent, a child with dedup and zero blocks, a
//! pending snapshot that has timed out since) into a fresh PostgreSQL schema and Ceph RGW
//! prefix: every block reads back as from the data directory, the token key comes along,
//! and a second run copies nothing.

use std::path::Path;
use std::sync::Arc;

use strata_core::ports::{ChunkStore, MetadataStore};
use strata_core::service::PageRequest;
use strata_core::snapshot::SnapshotStatus;
use strata_core::tokens::TokenIssuer;
use strata_core::{SnapshotService, SystemClock};
use strata_server::migrate::{MigrateSettings, Outcome, SecretOutcome, migrate};
use strata_server::stores::{ChunkBackend, MetadataBackend, Stores};
use strata_types::{AccountId, SnapshotId};

use crate::harness::fresh_engines;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Every block of a completed snapshot, read through a service (tokens, verification).
async fn read_all<M: MetadataStore, C: ChunkStore>(
    service: &SnapshotService<M, C>,
    owner: &AccountId,
    id: &SnapshotId,
) -> Vec<(u32, Vec<u8>)> {
    let page = service
        .list_blocks(owner, id, PageRequest::default())
        .await
        .expect("list blocks");
    let mut blocks = Vec::new();
    for (index, token) in page.blocks {
        let block = service
            .get_block(owner, id, index, &token)
            .await
            .expect("get");
        blocks.push((index.get(), block.data.to_vec()));
    }
    blocks
}

async fn service_over(stores: Stores) -> SnapshotService<impl MetadataStore, impl ChunkStore> {
    SnapshotService::new(
        Arc::new(stores.metadata),
        Arc::new(stores.chunks),
        TokenIssuer::new([3; 32]),
        Arc::new(SystemClock),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_format_fixture_moves_into_postgres_and_s3_and_reads_back() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../strata-store-embedded/tests/fixtures/format-v1");
    let dir = tempfile::tempdir().expect("tempdir");
    let (source, reference) = (dir.path().join("source"), dir.path().join("reference"));
    copy_dir(&fixture, &source);
    copy_dir(&fixture, &reference);
    let (url, chunks) = fresh_engines().await;
    let settings = MigrateSettings {
        from_data_dir: source.clone(),
        metadata: MetadataBackend::Postgres(url.clone()),
        chunks: chunks.resolve().expect("chunk options"),
        data_dir: None,
        concurrency: 4,
    };

    let migrated = migrate(&settings, |_| {}).await.expect("migrate");
    let report = &migrated.report;
    assert!(!report.failed(), "{report:#?}");
    assert_eq!(report.snapshots.len(), 3, "{report:#?}");
    assert!(
        report
            .snapshots
            .iter()
            .all(|s| s.outcome == Outcome::Copied),
        "{report:#?}"
    );
    // The parent's three stored blocks and the child's one new content: four chunks.
    assert_eq!(report.stored().0, 4, "{report:#?}");
    assert_eq!(migrated.token_key, SecretOutcome::Copied);
    assert_eq!(migrated.root_credentials, SecretOutcome::Absent);

    let target = Stores::open(
        dir.path(),
        &MetadataBackend::Postgres(url),
        &settings.chunks,
    )
    .await
    .expect("open the target");
    let target = service_over(target).await;
    let reference = Stores::open(
        &reference,
        &MetadataBackend::Embedded,
        &ChunkBackend::Embedded,
    )
    .await
    .expect("open the reference copy");
    let reference = service_over(reference).await;

    let owner = AccountId::parse("123456789012").expect("the fixture's owner");
    let copied = target
        .list_snapshots(&owner)
        .await
        .expect("list the target");
    let original = reference
        .list_snapshots(&owner)
        .await
        .expect("list the reference");
    assert_eq!(copied.len(), 3);
    let mut completed = 0;
    for record in &original {
        let held = copied.iter().find(|r| r.id == record.id).expect("copied");
        assert_eq!(held.description, record.description);
        assert_eq!(held.tags, record.tags);
        assert_eq!(held.client_token, record.client_token);
        assert_eq!(held.status, record.status, "{}", record.id);
        if record.status == SnapshotStatus::Completed {
            completed += 1;
            let blocks = read_all(&target, &owner, &record.id).await;
            assert!(!blocks.is_empty());
            assert_eq!(
                blocks,
                read_all(&reference, &owner, &record.id).await,
                "{}",
                record.id
            );
        }
    }
    assert_eq!(completed, 2, "parent and child");

    let again = migrate(&settings, |_| {}).await.expect("migrate again");
    assert!(
        again
            .report
            .snapshots
            .iter()
            .all(|s| s.outcome == Outcome::AlreadyPresent),
        "{:#?}",
        again.report
    );
    assert_eq!(again.report.stored(), (0, 0));
}
