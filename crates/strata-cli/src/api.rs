//! [`SnapshotClient`]: the six EBS direct API operations in domain types, each call retried
//! by [`RetryPolicy`], every fetched block verified before it is returned.
//!
//! This is the only module that touches `aws-sdk-ebs` types; the SDK's `i32`/`i64` integers
//! are converted here, once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_sdk_ebs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAggregationMethod, ChecksumAlgorithm, Status, Tag};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use strata_types::{BLOCK_SIZE, BlockIndex, ChunkDigest, SnapshotId, VolumeSize};

use crate::connect::{is_connection_refused, root_message};
use crate::error::ApiError;
use crate::progress::Reporter;
use crate::retry::{Failure, RetryPolicy};

/// The most entries a List call may ask for (the model's maximum): fewest round trips.
const MAX_RESULTS: i32 = 10_000;

/// Error codes that mean "slow down", as the SDKs' own retry classifiers list them.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "RequestThrottleException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "SlowDown",
    "PriorRequestNotComplete",
];

/// Parameters of StartSnapshot.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// Volume size.
    pub volume_size: VolumeSize,
    /// Parent snapshot, for an incremental snapshot.
    pub parent: Option<SnapshotId>,
    /// Description (at most 255 characters).
    pub description: Option<String>,
    /// Tags.
    pub tags: Vec<(String, String)>,
    /// Minutes without a write after which the service abandons the snapshot.
    pub timeout_minutes: Option<u32>,
    /// Ask for encryption (`Encrypted`; refused by the service together with a parent).
    pub encrypted: bool,
    /// The KMS key to encrypt under (`KmsKeyArn`).
    pub kms_key_arn: Option<String>,
}

/// What StartSnapshot answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The new snapshot.
    pub snapshot: SnapshotId,
    /// Whether the service encrypts it (`SseType` other than `none`, or a `KmsKeyArn`):
    /// then its unwritten blocks do not read as zeros on AWS, and zero blocks must be sent.
    pub encrypted: bool,
}

/// What CompleteSnapshot answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionStatus {
    /// Sealed and readable.
    Completed,
    /// Sealing (AWS seals asynchronously).
    Pending,
    /// The service gave up on the snapshot.
    Error,
}

/// Every block of a snapshot, with the tokens to read them.
#[derive(Debug, Clone)]
pub struct BlockListing {
    /// The snapshot's volume size.
    pub volume_size: VolumeSize,
    /// Blocks in ascending index order, each with its block token.
    pub blocks: Vec<(BlockIndex, String)>,
}

/// One entry of ListChangedBlocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedBlock {
    /// The block.
    pub index: BlockIndex,
    /// Token to read the block from the first snapshot, if it has the block.
    pub first_token: Option<String>,
    /// Token to read the block from the second snapshot, if it has the block.
    pub second_token: Option<String>,
}

/// The changes between two snapshots.
#[derive(Debug, Clone)]
pub struct ChangedListing {
    /// The second snapshot's volume size.
    pub volume_size: VolumeSize,
    /// Changed blocks in ascending index order.
    pub blocks: Vec<ChangedBlock>,
}

/// A block read from a snapshot, its content checked against the service's checksum.
#[derive(Debug, Clone)]
pub struct FetchedBlock {
    /// Exactly [`BLOCK_SIZE`] bytes.
    pub data: Bytes,
    /// Their SHA-256.
    pub digest: ChunkDigest,
}

/// The EBS direct APIs, with retries and verification.
#[derive(Debug, Clone)]
pub struct SnapshotClient {
    sdk: aws_sdk_ebs::Client,
    retry: RetryPolicy,
    reporter: Reporter,
    /// Whether the endpoint has answered anything yet (shared by clones). Until it has, a
    /// refused or unresolvable connection is a mistake in the settings or a server that is
    /// not running, and fails at once; afterwards it is an outage worth retrying.
    contacted: Arc<AtomicBool>,
}

impl SnapshotClient {
    /// Wrap an SDK client (see [`crate::connect::connect`]).
    pub fn new(sdk: aws_sdk_ebs::Client, retry: RetryPolicy) -> Self {
        Self {
            sdk,
            retry,
            reporter: Reporter::silent(),
            contacted: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Run one call under the retry policy, remembering that the endpoint answered.
    async fn run<T, F, Fut>(
        &self,
        call: &(dyn Fn() -> String + Sync),
        attempt: F,
    ) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let result = self.retry.run(call, &self.reporter, attempt).await;
        if result.is_ok() {
            self.contacted.store(true, Ordering::Relaxed);
        }
        result
    }

    /// Sort an SDK error into transient or permanent (see [`classify`]), knowing whether the
    /// endpoint has ever answered.
    fn classify<E>(&self, error: SdkError<E>, not_found_is_transient: bool) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        if matches!(
            error,
            SdkError::ServiceError(_) | SdkError::ResponseError(_)
        ) {
            self.contacted.store(true, Ordering::Relaxed);
        }
        let failure = classify(error, not_found_is_transient);
        if failure.unreachable && !self.contacted.load(Ordering::Relaxed) {
            return Failure::permanent(failure.message);
        }
        failure
    }

    /// The same client, reporting retries to `reporter`.
    pub fn with_reporter(&self, reporter: Reporter) -> Self {
        Self {
            reporter,
            ..self.clone()
        }
    }

    /// The retry policy in use.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// StartSnapshot. The client token is fixed before the first attempt, so a retry after
    /// a lost answer returns the same snapshot instead of creating a second one.
    pub async fn start_snapshot(&self, request: &StartRequest) -> Result<Started, ApiError> {
        let client_token = uuid::Uuid::new_v4().to_string();
        let volume_size = i64::try_from(request.volume_size.gib()).unwrap_or(i64::MAX);
        self.run(&|| "StartSnapshot".to_owned(), || async {
            let mut call = self
                .sdk
                .start_snapshot()
                .volume_size(volume_size)
                .client_token(&client_token)
                .set_parent_snapshot_id(request.parent.as_ref().map(|p| p.to_string()))
                .set_description(request.description.clone())
                .set_encrypted(request.encrypted.then_some(true))
                .set_kms_key_arn(request.kms_key_arn.clone())
                .set_timeout(
                    request
                        .timeout_minutes
                        .map(|m| i32::try_from(m).unwrap_or(i32::MAX)),
                );
            for (key, value) in &request.tags {
                call = call.tags(Tag::builder().key(key).value(value).build());
            }
            let output = call.send().await.map_err(|e| self.classify(e, false))?;
            if let Some(size) = output.block_size()
                && usize::try_from(size).ok() != Some(BLOCK_SIZE)
            {
                return Err(Failure::permanent(format!(
                    "the service uses {size}-byte blocks; only {BLOCK_SIZE} is supported"
                )));
            }
            let id = output
                .snapshot_id()
                .ok_or_else(|| Failure::permanent("the answer has no SnapshotId"))?;
            let snapshot = SnapshotId::parse(id).map_err(|e| Failure::permanent(e.to_string()))?;
            let encrypted = output.kms_key_arn().is_some()
                || output
                    .sse_type()
                    .is_some_and(|sse| !matches!(sse.as_str(), "none" | ""));
            Ok(Started {
                snapshot,
                encrypted,
            })
        })
        .await
    }

    /// PutSnapshotBlock of one full block whose SHA-256 is `digest`; `progress` (0-100) is
    /// passed on as `x-amz-Progress`. `just_started`: the snapshot was started by this run,
    /// so "not found" may be AWS's delay in knowing it and is retried; for a snapshot an
    /// earlier run started, "not found" means it is gone and fails at once.
    pub async fn put_block(
        &self,
        snapshot: &SnapshotId,
        index: BlockIndex,
        data: &Bytes,
        digest: &ChunkDigest,
        progress: Option<u8>,
        just_started: bool,
    ) -> Result<(), ApiError> {
        let checksum = BASE64.encode(digest.0);
        let data_length = sdk_len(data.len());
        let block_index = sdk_index(index);
        self.run(
            &|| format!("PutSnapshotBlock ({snapshot}, block {index})"),
            || async {
                self.sdk
                    .put_snapshot_block()
                    .snapshot_id(snapshot.as_str())
                    .block_index(block_index)
                    .block_data(ByteStream::from(data.clone()))
                    .data_length(data_length)
                    .checksum(&checksum)
                    .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
                    .set_progress(progress.map(i32::from))
                    .send()
                    .await
                    // Right after StartSnapshot, AWS may briefly not know the snapshot
                    // (coldsnap#43): for writes, "not found" is worth a retry.
                    .map_err(|e| self.classify(e, just_started))?;
                Ok(())
            },
        )
        .await
    }

    /// CompleteSnapshot with the count of written blocks and the LINEAR aggregate (SHA-256
    /// over the raw digests of the written blocks in ascending index order).
    pub async fn complete_snapshot(
        &self,
        snapshot: &SnapshotId,
        changed_blocks: u64,
        aggregate: &ChunkDigest,
    ) -> Result<CompletionStatus, ApiError> {
        let count = i32::try_from(changed_blocks).unwrap_or(i32::MAX);
        let checksum = BASE64.encode(aggregate.0);
        self.run(&|| format!("CompleteSnapshot ({snapshot})"), || async {
            let output = self
                .sdk
                .complete_snapshot()
                .snapshot_id(snapshot.as_str())
                .changed_blocks_count(count)
                .checksum(&checksum)
                .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
                .checksum_aggregation_method(ChecksumAggregationMethod::ChecksumAggregationLinear)
                .send()
                .await
                .map_err(|e| self.classify(e, false))?;
            Ok(match output.status() {
                Some(Status::Completed) => CompletionStatus::Completed,
                Some(Status::Error) => CompletionStatus::Error,
                _ => CompletionStatus::Pending,
            })
        })
        .await
    }

    /// Every block of `snapshot` (all pages of ListSnapshotBlocks).
    pub async fn list_blocks(&self, snapshot: &SnapshotId) -> Result<BlockListing, ApiError> {
        let mut volume_size = None;
        let mut blocks = Vec::new();
        self.each_page(
            &|| format!("ListSnapshotBlocks ({snapshot})"),
            |token| async move {
                self.sdk
                    .list_snapshot_blocks()
                    .snapshot_id(snapshot.as_str())
                    .max_results(MAX_RESULTS)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| self.classify(e, false))
            },
            |page| page.next_token(),
            |page| {
                if volume_size.is_none() {
                    volume_size = Some(parse_volume_size(page.volume_size(), snapshot)?);
                }
                for block in page.blocks() {
                    let index = parse_index(block.block_index(), snapshot)?;
                    let token = block.block_token().unwrap_or_default().to_owned();
                    blocks.push((index, token));
                }
                Ok(())
            },
        )
        .await
        .map_err(unreadable_hint)?;
        blocks.sort_by_key(|(index, _)| *index);
        blocks.dedup_by_key(|(index, _)| *index);
        Ok(BlockListing {
            volume_size: volume_size
                .ok_or_else(|| bad_answer(snapshot, "no page was answered".into()))?,
            blocks,
        })
    }

    /// Walk every page of a paged call: `fetch(token)` asks for one page (retried like any
    /// call), `each` takes it in, and `next` reads its NextToken. Stops at the first page
    /// without one, or that hands back the token it was asked with (which would otherwise
    /// loop forever).
    async fn each_page<P, Fut>(
        &self,
        call: &(dyn Fn() -> String + Sync),
        fetch: impl Fn(Option<String>) -> Fut,
        next: impl Fn(&P) -> Option<&str>,
        mut each: impl FnMut(&P) -> Result<(), ApiError>,
    ) -> Result<(), ApiError>
    where
        Fut: Future<Output = Result<P, Failure>>,
    {
        let mut page_token: Option<String> = None;
        loop {
            let token = page_token.clone();
            let page = self.run(call, || fetch(token.clone())).await?;
            each(&page)?;
            match next(&page) {
                Some(next) if Some(next) != page_token.as_deref() => {
                    page_token = Some(next.to_owned());
                }
                _ => return Ok(()),
            }
        }
    }

    /// Whether `snapshot` is readable (completed): one small ListSnapshotBlocks call; "not
    /// found" means not (yet) readable.
    pub async fn is_readable(&self, snapshot: &SnapshotId) -> Result<bool, ApiError> {
        let answer = self
            .run(&|| format!("ListSnapshotBlocks ({snapshot})"), || async {
                self.sdk
                    .list_snapshot_blocks()
                    .snapshot_id(snapshot.as_str())
                    .max_results(100)
                    .send()
                    .await
                    .map_err(|e| self.classify(e, false))
            })
            .await;
        match answer {
            Ok(_) => Ok(true),
            Err(error) if error.is_not_found() => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// GetSnapshotBlock, verified: the body must be one full block whose SHA-256 matches the
    /// `x-amz-Checksum` the service sent. A mismatch is retried like a network error.
    pub async fn get_block(
        &self,
        snapshot: &SnapshotId,
        index: BlockIndex,
        token: &str,
    ) -> Result<FetchedBlock, ApiError> {
        let block_index = sdk_index(index);
        self.run(
            &|| format!("GetSnapshotBlock ({snapshot}, block {index})"),
            || async {
                let output = self
                    .sdk
                    .get_snapshot_block()
                    .snapshot_id(snapshot.as_str())
                    .block_index(block_index)
                    .block_token(token)
                    .send()
                    .await
                    .map_err(|e| self.classify(e, false))?;
                let declared_length = output.data_length();
                let checksum = output.checksum().map(str::to_owned);
                let algorithm = output.checksum_algorithm().cloned();
                let data = output
                    .block_data
                    .collect()
                    .await
                    .map_err(|e| {
                        Failure::transient(format!("reading the block body: {}", root_message(&e)))
                    })?
                    .into_bytes();
                verify_block(data, declared_length, checksum, algorithm)
            },
        )
        .await
    }

    /// ListChangedBlocks between `first` and `second` (all pages).
    pub async fn list_changed_blocks(
        &self,
        first: &SnapshotId,
        second: &SnapshotId,
    ) -> Result<ChangedListing, ApiError> {
        let mut volume_size = None;
        let mut blocks = Vec::new();
        self.each_page(
            &|| format!("ListChangedBlocks ({first} to {second})"),
            |token| async move {
                self.sdk
                    .list_changed_blocks()
                    .first_snapshot_id(first.as_str())
                    .second_snapshot_id(second.as_str())
                    .max_results(MAX_RESULTS)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| self.classify(e, false))
            },
            |page| page.next_token(),
            |page| {
                if volume_size.is_none() {
                    volume_size = Some(parse_volume_size(page.volume_size(), second)?);
                }
                for block in page.changed_blocks() {
                    blocks.push(ChangedBlock {
                        index: parse_index(block.block_index(), second)?,
                        first_token: block.first_block_token().map(str::to_owned),
                        second_token: block.second_block_token().map(str::to_owned),
                    });
                }
                Ok(())
            },
        )
        .await
        .map_err(unreadable_hint)?;
        blocks.sort_by_key(|b| b.index);
        blocks.dedup_by_key(|b| b.index);
        Ok(ChangedListing {
            volume_size: volume_size
                .ok_or_else(|| bad_answer(second, "no page was answered".into()))?,
            blocks,
        })
    }
}

/// "Not found" from a read means more than "does not exist": say what else it can be.
fn unreadable_hint(mut error: ApiError) -> ApiError {
    if error.is_not_found() {
        error.message.push_str(
            " (the EBS APIs read only completed snapshots: it may not exist, still be pending, be in error, or belong to another account)",
        );
    }
    error
}

fn verify_block(
    data: Bytes,
    declared_length: Option<i32>,
    checksum: Option<String>,
    algorithm: Option<ChecksumAlgorithm>,
) -> Result<FetchedBlock, Failure> {
    if data.len() != BLOCK_SIZE {
        return Err(Failure::corrupt(format!(
            "the body has {} bytes, not {BLOCK_SIZE}",
            data.len()
        )));
    }
    if let Some(length) = declared_length
        && usize::try_from(length).ok() != Some(data.len())
    {
        return Err(Failure::corrupt(format!(
            "x-amz-Data-Length says {length} but the body has {} bytes",
            data.len()
        )));
    }
    if let Some(algorithm) = algorithm
        && algorithm != ChecksumAlgorithm::ChecksumAlgorithmSha256
    {
        return Err(Failure::permanent(format!(
            "unsupported checksum algorithm {algorithm}"
        )));
    }
    let checksum =
        checksum.ok_or_else(|| Failure::permanent("the answer has no x-amz-Checksum"))?;
    let digest = ChunkDigest::of(&data);
    if BASE64.encode(digest.0) != checksum {
        return Err(Failure::corrupt(format!(
            "checksum mismatch: the service says {checksum}, the body hashes to {}",
            BASE64.encode(digest.0)
        )));
    }
    Ok(FetchedBlock { data, digest })
}

fn sdk_index(index: BlockIndex) -> i32 {
    // Valid indexes are below 65536 GiB * 2048 = 2^27; larger ones are rejected by the
    // service, which is the right place to say so.
    i32::try_from(index.get()).unwrap_or(i32::MAX)
}

fn sdk_len(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

fn parse_index(index: Option<i32>, snapshot: &SnapshotId) -> Result<BlockIndex, ApiError> {
    index
        .and_then(|i| u32::try_from(i).ok())
        .map(BlockIndex::new)
        .ok_or_else(|| bad_answer(snapshot, format!("invalid BlockIndex {index:?}")))
}

fn parse_volume_size(size: Option<i64>, snapshot: &SnapshotId) -> Result<VolumeSize, ApiError> {
    let size = size.ok_or_else(|| bad_answer(snapshot, "the answer has no VolumeSize".into()))?;
    VolumeSize::from_gib(size).map_err(|e| bad_answer(snapshot, e.to_string()))
}

fn bad_answer(snapshot: &SnapshotId, message: String) -> ApiError {
    ApiError {
        call: format!("listing {snapshot}"),
        code: None,
        message,
        attempts: 1,
        retryable: false,
    }
}

/// Sort an SDK error into transient or permanent, with a one-line message.
fn classify<E>(error: SdkError<E>, not_found_is_transient: bool) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &error {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            let service_error = context.err();
            let code = service_error.code().unwrap_or("UnknownError").to_owned();
            let message = service_error.message().unwrap_or("(no message)").to_owned();
            let retryable = status >= 500
                || status == 429
                || THROTTLING_CODES.contains(&code.as_str())
                // AWS lists this one as transient (EBS "error retries" table).
                || (code == "ValidationException" && message == "Failed to read block data")
                || (not_found_is_transient && code == "ResourceNotFoundException");
            Failure {
                message: format!("{code}: {message}"),
                code: Some(code),
                retryable,
                unreachable: false,
            }
        }
        SdkError::TimeoutError(_) => Failure::transient("timed out"),
        SdkError::DispatchFailure(failure) => {
            let root = root_message(&error);
            if failure.is_user() {
                return Failure::permanent(format!("cannot reach the endpoint: {root}"));
            }
            let refused = is_connection_refused(&error);
            let unresolved = root.contains("failed to lookup address")
                || root.contains("dns error")
                || root.contains("Name or service not known");
            let message = if refused {
                "cannot reach the endpoint: connection refused (is the server running, on this address and port?)".to_owned()
            } else {
                format!("cannot reach the endpoint: {root}")
            };
            Failure {
                unreachable: refused || unresolved,
                ..Failure::transient(message)
            }
        }
        SdkError::ResponseError(_) => Failure::transient(format!(
            "the answer could not be read: {}",
            root_message(&error)
        )),
        _ => Failure::permanent(root_message(&error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(byte: u8) -> Bytes {
        Bytes::from(vec![byte; BLOCK_SIZE])
    }

    fn checksum_of(data: &[u8]) -> String {
        BASE64.encode(ChunkDigest::of(data).0)
    }

    #[test]
    fn a_good_block_passes() {
        let data = block(7);
        let sum = checksum_of(&data);
        let fetched = verify_block(
            data.clone(),
            Some(524_288),
            Some(sum),
            Some(ChecksumAlgorithm::ChecksumAlgorithmSha256),
        )
        .expect("valid");
        assert_eq!(fetched.digest, ChunkDigest::of(&data));
    }

    #[test]
    fn corrupt_or_short_blocks_are_transient_failures() {
        let sum = checksum_of(&block(7));
        let corrupt = verify_block(block(8), Some(524_288), Some(sum.clone()), None);
        assert!(corrupt.is_err_and(|f| f.retryable && f.message.contains("checksum mismatch")));
        let short = verify_block(Bytes::from(vec![7; 100]), Some(100), Some(sum), None);
        assert!(short.is_err_and(|f| f.retryable));
    }

    #[test]
    fn a_missing_checksum_is_permanent() {
        let missing = verify_block(block(1), Some(524_288), None, None);
        assert!(missing.is_err_and(|f| !f.retryable));
    }
}
