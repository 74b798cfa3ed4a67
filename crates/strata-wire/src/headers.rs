//! Header names of the EBS direct API (lowercase, as `http` stores them).

/// `x-amz-Data-Length` (PutSnapshotBlock request, GetSnapshotBlock response).
pub const DATA_LENGTH: &str = "x-amz-data-length";
/// `x-amz-Checksum`.
pub const CHECKSUM: &str = "x-amz-checksum";
/// `x-amz-Checksum-Algorithm`.
pub const CHECKSUM_ALGORITHM: &str = "x-amz-checksum-algorithm";
/// `x-amz-Checksum-Aggregation-Method` (CompleteSnapshot).
pub const CHECKSUM_AGGREGATION_METHOD: &str = "x-amz-checksum-aggregation-method";
/// `x-amz-ChangedBlocksCount` (CompleteSnapshot).
pub const CHANGED_BLOCKS_COUNT: &str = "x-amz-changedblockscount";
/// `x-amz-Progress` (PutSnapshotBlock).
pub const PROGRESS: &str = "x-amz-progress";
/// Request id on every response.
pub const REQUEST_ID: &str = "x-amzn-requestid";
/// Error code on every error response.
pub const ERROR_TYPE: &str = "x-amzn-errortype";

/// The only checksum algorithm: `SHA256`.
pub const SHA256: &str = "SHA256";
/// The only aggregation method: `LINEAR`.
pub const LINEAR: &str = "LINEAR";
