//! Scrub through the service, on the memory stores: damaged and missing chunks and
//! damaged nodes are found and named with the snapshots and blocks that use them, the
//! chunks are quarantined so a re-upload repairs them, and a clean store reports clean.

use std::sync::Arc;

use strata_core::ports::{ChunkStore, MetadataStore};
use strata_core::service::{
    ChunkFault, PageRequest, SCRUB_LEASE, ScrubOptions, ScrubReport, StartSnapshotInput,
};
use strata_core::tokens::TokenIssuer;
use strata_core::{ServiceError, SnapshotService, SystemClock};
use strata_store_testkit::conformance::fixtures::{account, content};
use strata_store_testkit::{MemoryChunkStore, MemoryMetadataStore};
use strata_types::{AccountId, BlockIndex, ChunkDigest, SnapshotId};

type Service = SnapshotService<MemoryMetadataStore, MemoryChunkStore>;

struct Setup {
    service: Service,
    metadata: Arc<MemoryMetadataStore>,
    chunks: Arc<MemoryChunkStore>,
    owner: AccountId,
}

fn setup() -> Setup {
    let metadata = Arc::new(MemoryMetadataStore::new());
    let chunks = Arc::new(MemoryChunkStore::new());
    let service = SnapshotService::new(
        Arc::clone(&metadata),
        Arc::clone(&chunks),
        TokenIssuer::new([1; 32]),
        Arc::new(SystemClock),
    );
    Setup {
        service,
        metadata,
        chunks,
        owner: account(1),
    }
}

impl Setup {
    async fn upload(&self, blocks: &[(u32, u32)]) -> SnapshotId {
        let input = StartSnapshotInput {
            volume_size_gib: 1,
            ..StartSnapshotInput::default()
        };
        let id = self
            .service
            .start_snapshot(&self.owner, input)
            .await
            .expect("start")
            .id;
        for (index, seed) in blocks {
            let data = content(*seed);
            let permit = self
                .service
                .begin_put(
                    &self.owner,
                    &id,
                    BlockIndex::new(*index),
                    ChunkDigest::of(&data),
                )
                .await
                .expect("begin");
            let mut hasher = permit.block_hasher();
            assert!(hasher.update(&data));
            self.service
                .put_block(permit, hasher.finish(), None)
                .await
                .expect("put");
        }
        let count = i64::try_from(blocks.len()).expect("count");
        self.service
            .complete_snapshot(&self.owner, &id, count, None)
            .await
            .expect("complete");
        id
    }

    async fn read(&self, id: &SnapshotId, index: u32) -> Result<Vec<u8>, ServiceError> {
        let page = self
            .service
            .list_blocks(&self.owner, id, PageRequest::default())
            .await?;
        let (index, token) = page
            .blocks
            .into_iter()
            .find(|(i, _)| i.get() == index)
            .expect("listed");
        let block = self
            .service
            .get_block(&self.owner, id, index, &token)
            .await?;
        Ok(block.data.to_vec())
    }

    async fn scrub(&self) -> ScrubReport {
        self.service
            .scrub(
                "test",
                ScrubOptions {
                    bytes_per_second: None,
                },
            )
            .await
            .expect("scrub")
            .expect("the lease is free")
    }
}

fn blocks(indexes: &[u32]) -> Vec<BlockIndex> {
    indexes.iter().copied().map(BlockIndex::new).collect()
}

#[tokio::test]
async fn damaged_and_missing_chunks_are_reported_with_their_blocks_and_a_reupload_repairs_them() {
    let s = setup();
    let first = s.upload(&[(0, 1), (1, 2), (3, 1)]).await;
    let second = s.upload(&[(5, 1), (6, 3)]).await;
    let clean = s.scrub().await;
    assert!(clean.is_clean(), "{clean:?}");
    assert_eq!(clean.chunks_checked, 3);
    assert_eq!(clean.bytes_checked, 3 * content(1).len() as u64);
    assert!(clean.nodes_checked > 0);

    let (rotted, lost) = (ChunkDigest::of(&content(1)), ChunkDigest::of(&content(2)));
    assert!(s.chunks.damage(&rotted));
    s.chunks.delete(vec![lost]).await.expect("lose a chunk");
    let report = s.scrub().await;
    assert_eq!(report.chunks.len(), 2, "{report:?}");
    let finding = |digest| {
        report
            .chunks
            .iter()
            .find(|f| f.digest == digest)
            .expect("reported")
    };
    assert!(matches!(finding(rotted).fault, ChunkFault::Damaged(_)));
    let mut referenced = finding(rotted).referenced_by.clone();
    referenced.sort();
    let mut expected = vec![
        (first.clone(), blocks(&[0, 3])),
        (second.clone(), blocks(&[5])),
    ];
    expected.sort();
    assert_eq!(referenced, expected);
    assert_eq!(finding(lost).fault, ChunkFault::Missing);
    assert_eq!(
        finding(lost).referenced_by,
        vec![(first.clone(), blocks(&[1]))]
    );

    // Quarantined: reads fail, and a Put of the same content stores it again (not
    // trusting the registry), which repairs every snapshot that names it.
    assert!(matches!(
        s.read(&first, 0).await,
        Err(ServiceError::CorruptData(_))
    ));
    assert!(matches!(
        s.read(&first, 1).await,
        Err(ServiceError::CorruptData(_))
    ));
    s.upload(&[(9, 1), (10, 2)]).await;
    assert!(s.read(&first, 0).await.expect("repaired") == content(1));
    assert!(s.read(&second, 5).await.expect("repaired") == content(1));
    assert!(s.read(&first, 1).await.expect("repaired") == content(2));
    let after = s.scrub().await;
    assert!(after.is_clean(), "{after:?}");
}

#[tokio::test]
async fn a_damaged_node_is_reported() {
    let s = setup();
    let id = s.upload(&[(0, 1)]).await;
    let root = s
        .metadata
        .snapshot(&id)
        .await
        .expect("record")
        .expect("stored")
        .root
        .expect("a root");
    assert!(s.metadata.damage_node(&root));
    let report = s.scrub().await;
    assert_eq!(report.nodes.len(), 1, "{report:?}");
    assert_eq!(report.nodes[0].0, root);
    assert!(report.chunks.is_empty());
}

#[tokio::test]
async fn one_scrub_runs_at_a_time() {
    let s = setup();
    assert!(
        s.metadata
            .acquire_lease(SCRUB_LEASE, "elsewhere", std::time::Duration::from_secs(60))
            .await
            .expect("lease")
    );
    let busy = s
        .service
        .scrub(
            "here",
            ScrubOptions {
                bytes_per_second: None,
            },
        )
        .await
        .expect("scrub");
    assert!(
        busy.is_none(),
        "a scrub holding the lease elsewhere keeps this one out"
    );
}
