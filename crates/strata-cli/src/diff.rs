//! [`Differ`]: which block ranges differ between two snapshots of one lineage.

use serde::Serialize;
use strata_types::{BlockIndex, SnapshotId, VolumeSize};

use crate::api::{ChangedBlock, SnapshotClient};
use crate::error::ApiError;
use crate::image::BLOCK_BYTES;
use crate::progress::{Reporter, Step};

/// How a range differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    /// Both snapshots have the blocks, with different content.
    Changed,
    /// Only the first snapshot has the blocks (the second reads zeros there).
    OnlyInFirst,
    /// Only the second snapshot has the blocks (the first reads zeros there).
    OnlyInSecond,
}

/// A run of consecutive blocks that differ in the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedRange {
    /// First block.
    pub start_block: u32,
    /// Number of blocks.
    pub blocks: u32,
    /// Byte offset of the first block.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// How the blocks differ.
    pub kind: ChangeKind,
}

/// The differences between two snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// The first snapshot.
    pub first: SnapshotId,
    /// The second snapshot.
    pub second: SnapshotId,
    /// The second snapshot's volume size in GiB.
    pub volume_size_gib: u64,
    /// Block size in bytes.
    pub block_size: u64,
    /// Changed ranges, ascending.
    pub ranges: Vec<ChangedRange>,
    /// Blocks that differ.
    pub changed_blocks: u64,
    /// Bytes that differ (`changed_blocks` × block size).
    pub changed_bytes: u64,
}

/// Computes [`DiffReport`]s through a [`SnapshotClient`].
#[derive(Debug, Clone)]
pub struct Differ {
    client: SnapshotClient,
    reporter: Reporter,
}

impl Differ {
    /// A differ that reports progress (and retries) to `reporter`.
    pub fn new(client: &SnapshotClient, reporter: Reporter) -> Self {
        Self {
            client: client.with_reporter(reporter.clone()),
            reporter,
        }
    }

    /// The changes from `first` to `second` (ListChangedBlocks, all pages).
    pub async fn diff(
        &self,
        first: &SnapshotId,
        second: &SnapshotId,
    ) -> Result<DiffReport, ApiError> {
        self.reporter
            .step(Step::ListingChanges(first.clone(), second.clone()));
        let listing = self.client.list_changed_blocks(first, second).await?;
        Ok(report(first, second, listing.volume_size, &listing.blocks))
    }
}

/// Merge changed blocks into ranges.
pub fn report(
    first: &SnapshotId,
    second: &SnapshotId,
    volume_size: VolumeSize,
    blocks: &[ChangedBlock],
) -> DiffReport {
    let mut ranges: Vec<ChangedRange> = Vec::new();
    for block in blocks {
        let kind = match (&block.first_token, &block.second_token) {
            (Some(_), None) => ChangeKind::OnlyInFirst,
            (None, Some(_)) => ChangeKind::OnlyInSecond,
            _ => ChangeKind::Changed,
        };
        let index = block.index.get();
        match ranges.last_mut() {
            Some(last) if last.kind == kind && last.start_block + last.blocks == index => {
                last.blocks += 1;
                last.length += BLOCK_BYTES;
            }
            _ => ranges.push(ChangedRange {
                start_block: index,
                blocks: 1,
                offset: u64::from(index) * BLOCK_BYTES,
                length: BLOCK_BYTES,
                kind,
            }),
        }
    }
    let changed_blocks = blocks.len() as u64;
    DiffReport {
        first: first.clone(),
        second: second.clone(),
        volume_size_gib: volume_size.gib(),
        block_size: BLOCK_BYTES,
        ranges,
        changed_blocks,
        changed_bytes: changed_blocks * BLOCK_BYTES,
    }
}

/// Every block index the report covers, ascending (the ranges expanded).
pub fn indexes(report: &DiffReport) -> Vec<BlockIndex> {
    report
        .ranges
        .iter()
        .flat_map(|r| (r.start_block..r.start_block + r.blocks).map(BlockIndex::new))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(index: u32, first: bool, second: bool) -> ChangedBlock {
        ChangedBlock {
            index: BlockIndex::new(index),
            first_token: first.then(|| "a".to_owned()),
            second_token: second.then(|| "b".to_owned()),
        }
    }

    #[test]
    fn consecutive_blocks_of_one_kind_merge() {
        let a = SnapshotId::parse("snap-a").expect("id");
        let b = SnapshotId::parse("snap-b").expect("id");
        let blocks = [
            changed(1, true, true),
            changed(2, true, true),
            changed(3, false, true),
            changed(4, false, true),
            changed(9, true, true),
            changed(10, true, false),
        ];
        let report = report(&a, &b, VolumeSize::from_gib(1).expect("size"), &blocks);
        let summary: Vec<_> = report
            .ranges
            .iter()
            .map(|r| (r.start_block, r.blocks, r.kind))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, 2, ChangeKind::Changed),
                (3, 2, ChangeKind::OnlyInSecond),
                (9, 1, ChangeKind::Changed),
                (10, 1, ChangeKind::OnlyInFirst),
            ]
        );
        assert_eq!(report.changed_bytes, 6 * 524_288);
        assert_eq!(report.ranges[1].offset, 3 * 524_288);
        assert_eq!(indexes(&report).len(), 6);
    }
}
