//! Request and response bodies, with the member names of the model.
//!
//! Timestamps are epoch seconds as JSON numbers (aws-sdk-rust rejects strings); absent
//! optional members are omitted rather than sent as `null`.

use serde::{Deserialize, Serialize};

/// `Tag`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    /// `Key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// StartSnapshot request body.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StartSnapshotRequest {
    /// `VolumeSize` (required; GiB).
    pub volume_size: Option<i64>,
    /// `ParentSnapshotId`.
    pub parent_snapshot_id: Option<String>,
    /// `Tags`.
    pub tags: Option<Vec<Tag>>,
    /// `Description`.
    pub description: Option<String>,
    /// `ClientToken`.
    pub client_token: Option<String>,
    /// `Encrypted`.
    pub encrypted: Option<bool>,
    /// `KmsKeyArn`.
    pub kms_key_arn: Option<String>,
    /// `Timeout` (minutes).
    pub timeout: Option<i64>,
}

/// StartSnapshot response body.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StartSnapshotResponse {
    /// `Description`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `SnapshotId`.
    pub snapshot_id: String,
    /// `OwnerId`.
    pub owner_id: String,
    /// `Status`.
    pub status: String,
    /// `StartTime` (epoch seconds).
    pub start_time: f64,
    /// `VolumeSize` (GiB).
    pub volume_size: u64,
    /// `BlockSize`.
    pub block_size: i32,
    /// `Tags`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
    /// `ParentSnapshotId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_snapshot_id: Option<String>,
    /// `KmsKeyArn`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key_arn: Option<String>,
    /// `SseType`: `sse-ebs`, `sse-kms` or `none`.
    pub sse_type: String,
}

/// PutSnapshotBlock response body (always `{}`; the checksum travels in headers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PutSnapshotBlockResponse {}

/// CompleteSnapshot response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CompleteSnapshotResponse {
    /// `Status`.
    pub status: String,
}

/// `Block`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Block {
    /// `BlockIndex`.
    pub block_index: u32,
    /// `BlockToken`.
    pub block_token: String,
}

/// ListSnapshotBlocks response body.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListSnapshotBlocksResponse {
    /// `Blocks`.
    pub blocks: Vec<Block>,
    /// `ExpiryTime` (epoch seconds).
    pub expiry_time: f64,
    /// `VolumeSize` (GiB).
    pub volume_size: u64,
    /// `BlockSize`.
    pub block_size: i32,
    /// `NextToken`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `ChangedBlock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChangedBlock {
    /// `BlockIndex`.
    pub block_index: u32,
    /// `FirstBlockToken`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_block_token: Option<String>,
    /// `SecondBlockToken`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub second_block_token: Option<String>,
}

/// ListChangedBlocks response body.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListChangedBlocksResponse {
    /// `ChangedBlocks`.
    pub changed_blocks: Vec<ChangedBlock>,
    /// `ExpiryTime` (epoch seconds).
    pub expiry_time: f64,
    /// `VolumeSize` (GiB).
    pub volume_size: u64,
    /// `BlockSize`.
    pub block_size: i32,
    /// `NextToken`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// Milliseconds since the epoch as the JSON number of seconds the wire uses.
pub fn epoch_seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_use_model_names_and_numeric_times() {
        let response = ListSnapshotBlocksResponse {
            blocks: vec![Block {
                block_index: 1,
                block_token: "abc".into(),
            }],
            expiry_time: epoch_seconds(1_576_287_332_806),
            volume_size: 3,
            block_size: 524_288,
            next_token: None,
        };
        let json = serde_json::to_string(&response).expect("json");
        assert_eq!(
            json,
            r#"{"Blocks":[{"BlockIndex":1,"BlockToken":"abc"}],"ExpiryTime":1576287332.806,"VolumeSize":3,"BlockSize":524288}"#
        );
    }

    #[test]
    fn start_request_reads_every_member() {
        let body = r#"{"VolumeSize":8,"ParentSnapshotId":"snap-1","Tags":[{"Key":"k","Value":"v"}],
            "Description":"d","ClientToken":"t","Encrypted":false,"KmsKeyArn":"a","Timeout":60,"Unknown":1}"#;
        let request: StartSnapshotRequest = serde_json::from_str(body).expect("parse");
        assert_eq!(request.volume_size, Some(8));
        assert_eq!(request.parent_snapshot_id.as_deref(), Some("snap-1"));
        assert_eq!(request.tags.map(|t| t.len()), Some(1));
        assert_eq!(request.timeout, Some(60));
    }
}
