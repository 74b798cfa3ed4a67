//! Scrub: read back every stored chunk and every block-map node, check each against its
//! digest, report what is damaged or missing, and quarantine it.
//!
//! A chunk found damaged or missing is unregistered ([`MetadataStore::forget_chunk`]), as a
//! read that finds it damaged does: it is never again trusted for dedup, and the next
//! upload of that content (to any snapshot) stores a good copy, which repairs every
//! snapshot naming it. The report says which snapshots and blocks name it, so an operator
//! knows what to upload again. A damaged node cannot be repaired that way in general
//! (nodes are rewritten only by the CompleteSnapshot that makes them): it is reported.
//!
//! One scrub per cluster at a time, under [`SCRUB_LEASE`]. Reads are paced to at most
//! [`ScrubOptions::bytes_per_second`], so a scrub does not starve the uploads it runs
//! beside.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use strata_types::{BlockIndex, ChunkDigest, SnapshotId};

use super::gc::{LEASE_RENEWAL, LEASE_TTL};
use super::{SnapshotService, run_blocking};
use crate::block_map::{self, NodeHash, NodeSource};
use crate::error::ServiceError;
use crate::ports::{ChunkStore, MetadataStore, StoreError};
use crate::snapshot::SnapshotStatus;

/// The lease a scrub runs under.
pub const SCRUB_LEASE: &str = "scrub";

/// How a scrub runs.
#[derive(Debug, Clone, Copy)]
pub struct ScrubOptions {
    /// Read at most this many chunk bytes per second (`None`: as fast as the store
    /// answers).
    pub bytes_per_second: Option<u64>,
}

/// Why a chunk is in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkFault {
    /// Its stored bytes do not match their checksum (or the medium could not return them).
    Damaged(String),
    /// Registered as stored, but the chunk store does not hold it.
    Missing,
}

/// One chunk the scrub found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkFinding {
    /// The chunk.
    pub digest: ChunkDigest,
    /// What is wrong.
    pub fault: ChunkFault,
    /// The completed snapshots that name it, with the blocks that do (ascending).
    pub referenced_by: Vec<(SnapshotId, Vec<BlockIndex>)>,
}

/// What a scrub checked and found.
#[derive(Debug, Clone, Default)]
pub struct ScrubReport {
    /// Chunks read back and checked.
    pub chunks_checked: u64,
    /// Their bytes.
    pub bytes_checked: u64,
    /// Block-map nodes read back and checked.
    pub nodes_checked: u64,
    /// Chunks damaged or missing (all quarantined).
    pub chunks: Vec<ChunkFinding>,
    /// Nodes damaged or missing, with why.
    pub nodes: Vec<(NodeHash, String)>,
    /// How long it took.
    pub duration: Duration,
}

impl ScrubReport {
    /// Whether everything checked was intact.
    pub fn is_clean(&self) -> bool {
        self.chunks.is_empty() && self.nodes.is_empty()
    }
}

impl<M: MetadataStore, C: ChunkStore> SnapshotService<M, C> {
    /// A scrub under the [`SCRUB_LEASE`], as `holder`; `Ok(None)` when a scrub runs
    /// elsewhere.
    pub async fn scrub(
        &self,
        holder: &str,
        options: ScrubOptions,
    ) -> Result<Option<ScrubReport>, ServiceError> {
        if !self
            .metadata
            .acquire_lease(SCRUB_LEASE, holder, LEASE_TTL)
            .await?
        {
            return Ok(None);
        }
        let heartbeat = async {
            loop {
                tokio::time::sleep(LEASE_RENEWAL).await;
                if let Err(error) = self
                    .metadata
                    .acquire_lease(SCRUB_LEASE, holder, LEASE_TTL)
                    .await
                {
                    tracing::warn!(%error, "cannot renew the scrub lease; trying again");
                }
            }
        };
        let outcome = tokio::select! {
            outcome = self.scrub_now(options) => outcome,
            never = heartbeat => match never {},
        };
        if let Err(error) = self.metadata.release_lease(SCRUB_LEASE, holder).await {
            tracing::warn!(%error, "cannot release the scrub lease; it expires by itself");
        }
        outcome.map(Some)
    }

    async fn scrub_now(&self, options: ScrubOptions) -> Result<ScrubReport, ServiceError> {
        let started = Instant::now();
        let mut report = ScrubReport::default();
        // The view before the listing: a chunk registered in the view was stored before
        // it, so the listing holds it unless it is missing (or a collection deleted it
        // meanwhile, which the recheck below tells apart).
        let view = self.metadata.gc_view().await?;
        let mut stored = HashSet::new();
        let mut after = None;
        let mut faults: BTreeMap<ChunkDigest, ChunkFault> = BTreeMap::new();
        loop {
            const PAGE: usize = 1000;
            let page = crate::with_retries!(
                self.retry,
                "list the chunk store",
                self.chunks.list(after, PAGE)
            )?;
            for chunk in &page {
                stored.insert(chunk.digest);
                match crate::with_retries!(
                    self.retry,
                    "read a chunk",
                    self.chunks.get(chunk.digest)
                ) {
                    Ok(Some(bytes)) => {
                        report.chunks_checked += 1;
                        report.bytes_checked += bytes.len() as u64;
                    }
                    // Deleted since the listing (a collection): nothing to check.
                    Ok(None) => {}
                    Err(StoreError::Corrupt(why)) => {
                        report.chunks_checked += 1;
                        report.bytes_checked += chunk.size;
                        faults.insert(chunk.digest, ChunkFault::Damaged(why));
                    }
                    Err(error) => return Err(error.into()),
                }
                pace(options, report.bytes_checked, started).await;
            }
            after = page.last().map(|c| c.digest);
            if page.len() < PAGE {
                break;
            }
        }
        // Wanted but not listed: named by a completed snapshot's tree, by a pending
        // write, or registered as stored. (A chunk a read found damaged is unregistered
        // and may be gone from the store's own index: the trees still name it.)
        let roots: Vec<_> = view
            .records
            .iter()
            .filter(|r| r.status == SnapshotStatus::Completed)
            .filter_map(|r| r.root)
            .collect();
        let reader = view.reader;
        let (reader, mut wanted) = run_blocking(move || {
            let wanted = chunks_named_by(&reader, &roots);
            Ok((reader, wanted))
        })
        .await?;
        wanted.extend(
            view.pending
                .iter()
                .flat_map(|(_, digests)| digests.iter().copied()),
        );
        wanted.extend(view.chunks.iter().map(|c| c.digest));
        for digest in wanted {
            if !digest.is_zero_block()
                && !stored.contains(&digest)
                && !faults.contains_key(&digest)
                && self.is_missing(digest).await?
            {
                faults.insert(digest, ChunkFault::Missing);
            }
        }
        for digest in faults.keys() {
            self.metadata.forget_chunk(*digest).await?;
        }

        let hashes: Vec<NodeHash> = view.nodes.iter().map(|(hash, _)| *hash).collect();
        let (reader, checked, bad_nodes) = run_blocking(move || {
            let mut bad = Vec::new();
            for hash in &hashes {
                if let Err(StoreError::Corrupt(why)) = reader.load(hash) {
                    bad.push((*hash, why));
                }
            }
            Ok((reader, hashes.len() as u64, bad))
        })
        .await?;
        report.nodes_checked = checked;
        report.nodes = bad_nodes;
        drop(reader);

        if !faults.is_empty() {
            let references = self
                .blocks_naming(&faults.keys().copied().collect())
                .await?;
            for (digest, fault) in faults {
                report.chunks.push(ChunkFinding {
                    digest,
                    fault,
                    referenced_by: references.get(&digest).cloned().unwrap_or_default(),
                });
            }
        }
        report.duration = started.elapsed();
        for finding in &report.chunks {
            tracing::error!(
                chunk = %finding.digest,
                fault = ?finding.fault,
                snapshots = finding.referenced_by.len(),
                "scrub: chunk damaged or missing; quarantined (an upload of the same content repairs it)"
            );
        }
        for (hash, why) in &report.nodes {
            tracing::error!(node = ?hash, "scrub: block-map node damaged: {why}");
        }
        tracing::info!(
            chunks_checked = report.chunks_checked,
            bytes_checked = report.bytes_checked,
            nodes_checked = report.nodes_checked,
            chunk_faults = report.chunks.len(),
            node_faults = report.nodes.len(),
            duration_ms = report.duration.as_millis() as u64,
            "scrub finished"
        );
        Ok(report)
    }

    /// Whether `digest`, wanted but absent from the listing, is still not stored: asked
    /// under an announcement, so no collection deletes it while we look (and a Put that
    /// stored it since the listing is seen).
    async fn is_missing(&self, digest: ChunkDigest) -> Result<bool, ServiceError> {
        let announced = match self.metadata.announce_put(digest).await {
            Ok(announced) => announced,
            // Being deleted by a collection: its snapshots are gone, it is not missing.
            Err(StoreError::Conflict(_)) => return Ok(false),
            Err(error) => return Err(error.into()),
        };
        let result = crate::with_retries!(self.retry, "read a chunk", self.chunks.get(digest))
            .map(|found| found.is_none())
            .or_else(|error| match error {
                // Not listed, yet bytes are there and damaged: reported by the next scrub,
                // whose listing has them (a read that finds them damaged quarantines them
                // meanwhile).
                StoreError::Corrupt(_) => Ok(false),
                other => Err(other),
            })
            .map_err(ServiceError::from);
        self.metadata.withdraw_put(announced.id);
        result
    }

    /// For each of `wanted`, the completed snapshots and blocks that name it.
    async fn blocks_naming(
        &self,
        wanted: &HashSet<ChunkDigest>,
    ) -> Result<BTreeMap<ChunkDigest, Vec<(SnapshotId, Vec<BlockIndex>)>>, ServiceError> {
        let mut found: BTreeMap<ChunkDigest, Vec<(SnapshotId, Vec<BlockIndex>)>> = BTreeMap::new();
        for record in self.metadata.list_snapshots(None).await? {
            if record.status != SnapshotStatus::Completed {
                continue;
            }
            let Some(root) = record.root else { continue };
            let nodes = self.metadata.nodes()?;
            let wanted = wanted.clone();
            let hits = run_blocking(move || {
                let mut hits: BTreeMap<ChunkDigest, Vec<BlockIndex>> = BTreeMap::new();
                let mut start = BlockIndex::new(0);
                loop {
                    const PAGE: usize = 65_536;
                    let page = block_map::scan(&nodes, Some(root), start, PAGE)?;
                    for (index, digest) in &page {
                        if wanted.contains(digest) {
                            hits.entry(*digest).or_default().push(*index);
                        }
                    }
                    match page.last() {
                        Some((last, _)) if page.len() == PAGE => {
                            start = BlockIndex::new(last.get() + 1);
                        }
                        _ => return Ok(hits),
                    }
                }
            })
            .await?;
            for (digest, indexes) in hits {
                found
                    .entry(digest)
                    .or_default()
                    .push((record.id.clone(), indexes));
            }
        }
        Ok(found)
    }
}

/// Every chunk named by the trees under `roots` (shared subtrees visited once). A node
/// that does not load is skipped: the node check reports it.
fn chunks_named_by(reader: &impl NodeSource, roots: &[NodeHash]) -> HashSet<ChunkDigest> {
    let mut seen = HashSet::new();
    let mut chunks = HashSet::new();
    let mut stack: Vec<NodeHash> = roots.to_vec();
    while let Some(hash) = stack.pop() {
        if !seen.insert(hash) {
            continue;
        }
        let Ok(node) = reader.load(&hash) else {
            continue;
        };
        if node.level() == 0 {
            chunks.extend(node.values().map(ChunkDigest));
        } else {
            stack.extend(node.values().map(NodeHash));
        }
    }
    chunks
}

/// Sleep as long as it takes for `bytes` read since `started` to stay within the rate.
async fn pace(options: ScrubOptions, bytes: u64, started: Instant) {
    if let Some(delay) = pacing_delay(options.bytes_per_second, bytes, started.elapsed()) {
        tokio::time::sleep(delay).await;
    }
}

/// How long to wait so that `bytes` read in `elapsed` stay within `rate` bytes per second.
fn pacing_delay(rate: Option<u64>, bytes: u64, elapsed: Duration) -> Option<Duration> {
    let rate = rate.filter(|r| *r > 0)?;
    let due = Duration::from_secs_f64(bytes as f64 / rate as f64);
    due.checked_sub(elapsed).filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_waits_only_for_reads_ahead_of_the_rate() {
        let mib = 1 << 20;
        assert_eq!(pacing_delay(None, 100 * mib, Duration::ZERO), None);
        assert_eq!(pacing_delay(Some(0), 100 * mib, Duration::ZERO), None);
        assert_eq!(
            pacing_delay(Some(10 * mib), 20 * mib, Duration::from_millis(500)),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            pacing_delay(Some(10 * mib), 20 * mib, Duration::from_secs(3)),
            None
        );
    }
}
