//! Helpers shared by the store's service-level tests (`gc.rs`, `backup.rs`): block
//! contents chosen by a seed, writing a snapshot, and reading one back.

use strata_core::SnapshotService;
use strata_core::body::BlockHasher;
use strata_core::service::{PageRequest, StartSnapshotInput};
use strata_store_embedded::{FsChunkStore, RedbMetadataStore};
use strata_types::{AccountId, BLOCK_SIZE, BlockIndex, SnapshotId};

pub type Service = SnapshotService<RedbMetadataStore, FsChunkStore>;

/// A block whose content is chosen by `seed`.
fn content(seed: u8) -> Vec<u8> {
    let mut data = vec![seed; BLOCK_SIZE];
    data[0] = seed.wrapping_mul(31);
    data[BLOCK_SIZE - 1] = 7;
    data
}

/// Start a snapshot (on `parent`) and write `blocks` (index, content seed); complete it if
/// `complete`.
pub async fn write(
    service: &Service,
    owner: &AccountId,
    parent: Option<&SnapshotId>,
    blocks: &[(u32, u8)],
    complete: bool,
) -> SnapshotId {
    let input = StartSnapshotInput {
        volume_size_gib: 1,
        parent: parent.cloned(),
        ..StartSnapshotInput::default()
    };
    let id = service
        .start_snapshot(owner, input)
        .await
        .expect("start")
        .id;
    for (index, seed) in blocks {
        let mut hasher = BlockHasher::default();
        assert!(hasher.update(&content(*seed)));
        let block = hasher.finish();
        let permit = service
            .begin_put(owner, &id, BlockIndex::new(*index), block.digest)
            .await
            .expect("writable");
        service.put_block(permit, block, None).await.expect("put");
    }
    if complete {
        let count = i64::try_from(blocks.len()).expect("count");
        service
            .complete_snapshot(owner, &id, count, None)
            .await
            .expect("complete");
    }
    id
}

/// Read every block of `id` and compare with `expected` (index, content seed).
pub async fn verify(service: &Service, owner: &AccountId, id: &SnapshotId, expected: &[(u32, u8)]) {
    let page = service
        .list_blocks(
            owner,
            id,
            PageRequest {
                max_results: Some(1000),
                ..PageRequest::default()
            },
        )
        .await
        .expect("list");
    let indexes: Vec<u32> = page.blocks.iter().map(|(i, _)| i.get()).collect();
    assert_eq!(
        indexes,
        expected.iter().map(|(i, _)| *i).collect::<Vec<_>>()
    );
    for ((index, token), (_, seed)) in page.blocks.iter().zip(expected) {
        let block = service
            .get_block(owner, id, *index, token)
            .await
            .expect("get");
        assert_eq!(block.data.as_ref(), content(*seed).as_slice());
    }
}
