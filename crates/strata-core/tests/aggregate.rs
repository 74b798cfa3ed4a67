//! CompleteSnapshot's `LINEAR` aggregate depends only on the final content of each
//! written index, not on the order of the uploads: checked through the service and a
//! store (which must hand back the last write of each index, in index order). This
//! replaces a unit property that shuffled while keeping every index's own order, and so
//! compared a value with itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use strata_core::checksum::linear_aggregate;
use strata_core::service::{AggregateChecksum, StartSnapshotInput};
use strata_core::snapshot::SnapshotStatus;
use strata_core::tokens::TokenIssuer;
use strata_core::{ServiceError, SnapshotService, SystemClock};
use strata_store_testkit::conformance::fixtures::{account, content};
use strata_store_testkit::{MemoryChunkStore, MemoryMetadataStore};
use strata_types::{BlockIndex, ChunkDigest};

/// Upload `writes` (index, content seed) in this order to a new snapshot and complete it
/// with `aggregate`.
async fn upload_and_complete(
    writes: &[(u32, u32)],
    distinct: usize,
    aggregate: ChunkDigest,
) -> Result<SnapshotStatus, ServiceError> {
    let service = SnapshotService::new(
        Arc::new(MemoryMetadataStore::new()),
        Arc::new(MemoryChunkStore::new()),
        TokenIssuer::new([1; 32]),
        Arc::new(SystemClock),
    );
    let owner = account(1);
    let input = StartSnapshotInput {
        volume_size_gib: 1,
        ..StartSnapshotInput::default()
    };
    let id = service.start_snapshot(&owner, input).await?.id;
    for (index, seed) in writes {
        let data = content(*seed);
        let permit = service
            .begin_put(&owner, &id, BlockIndex::new(*index), ChunkDigest::of(&data))
            .await?;
        let mut hasher = permit.block_hasher();
        assert!(hasher.update(&data));
        service.put_block(permit, hasher.finish(), None).await?;
    }
    let count = i64::try_from(distinct).expect("count");
    let claimed = Some(AggregateChecksum { digest: aggregate });
    service.complete_snapshot(&owner, &id, count, claimed).await
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Two upload orders that end with the same content per index: the uploads as drawn
    /// (overwrites included), and the final contents in another order after the same
    /// overwritten ones. Both complete with the aggregate of the final contents in index
    /// order.
    #[test]
    fn the_linear_aggregate_ignores_upload_order(
        writes in proptest::collection::vec((0u32..40, 0u32..6), 1..24),
        rotation in any::<usize>(),
    ) {
        let mut last: BTreeMap<u32, u32> = BTreeMap::new();
        for (index, seed) in &writes {
            last.insert(*index, *seed);
        }
        let expected = linear_aggregate(
            &last
                .iter()
                .map(|(index, seed)| (BlockIndex::new(*index), ChunkDigest::of(&content(*seed))))
                .collect::<Vec<_>>(),
        );
        // The other order: every write that was overwritten, backwards, then each index's
        // final content once, in descending index order rotated by `rotation`.
        let mut finals: Vec<(u32, u32)> = last.iter().rev().map(|(i, s)| (*i, *s)).collect();
        let turn = rotation % finals.len();
        finals.rotate_left(turn);
        let mut seen = std::collections::HashSet::new();
        let mut overwritten: Vec<(u32, u32)> = writes
            .iter()
            .rev()
            .filter(|(index, _)| !seen.insert(*index))
            .copied()
            .collect();
        overwritten.extend(finals);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        for order in [&writes, &overwritten] {
            let status = runtime.block_on(upload_and_complete(order, last.len(), expected));
            prop_assert!(
                matches!(status, Ok(SnapshotStatus::Completed)),
                "{order:?}: {status:?}"
            );
        }
    }
}
