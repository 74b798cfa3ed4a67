//! StartSnapshot.

use sha2::{Digest, Sha256};
use strata_types::{AccountId, SnapshotId, VolumeSize};

use super::SnapshotService;
use super::tags::validate_tags;
use crate::error::ServiceError;
use crate::ports::{ChunkStore, CreateOutcome, MetadataStore};
use crate::snapshot::{SnapshotRecord, SnapshotStatus, Tag};

/// Default, minimum and maximum inactivity timeout, minutes (the model's `Timeout`).
pub const DEFAULT_TIMEOUT_MINUTES: i64 = 60;

const TIMEOUT_RANGE_MINUTES: std::ops::RangeInclusive<i64> = 10..=4320;

const MAX_DESCRIPTION_LEN: usize = 255;

const MAX_CLIENT_TOKEN_LEN: usize = 255;

const MAX_KMS_KEY_ARN_LEN: usize = 2048;

/// StartSnapshot's parameters, as the client sent them.
#[derive(Debug, Clone, Default)]
pub struct StartSnapshotInput {
    /// Size in GiB (validated here).
    pub volume_size_gib: i64,
    /// The snapshot to be incremental on.
    pub parent: Option<SnapshotId>,
    /// Tags.
    pub tags: Vec<Tag>,
    /// Description.
    pub description: Option<String>,
    /// Idempotency token.
    pub client_token: Option<String>,
    /// Encryption requested.
    pub encrypted: Option<bool>,
    /// KMS key requested.
    pub kms_key_arn: Option<String>,
    /// Inactivity timeout, minutes.
    pub timeout_minutes: Option<i64>,
}

impl<M: MetadataStore, C: ChunkStore> SnapshotService<M, C> {
    /// StartSnapshot: create a pending snapshot (or return the one this client token made).
    pub async fn start_snapshot(
        &self,
        owner: &AccountId,
        input: StartSnapshotInput,
    ) -> Result<SnapshotRecord, ServiceError> {
        let validated = validate_start(&input)?;
        let now = self.now_ms();
        let fingerprint = start_fingerprint(&input, &validated);

        let parent = match &input.parent {
            Some(parent_id) => {
                let parent = self.owned_snapshot(owner, parent_id).await?;
                if parent.status_at(now) != SnapshotStatus::Completed {
                    return Err(ServiceError::ParentNotCompleted {
                        parent: parent_id.clone(),
                        status: parent.status_at(now),
                    });
                }
                Some(parent)
            }
            None => None,
        };
        let encryption = self
            .start_encryption(
                owner,
                input.encrypted,
                input.kms_key_arn.as_deref(),
                parent.as_ref(),
            )
            .await?;
        let (lineage_of_parent, base_root) = match parent {
            Some(parent) => (Some(parent.lineage), parent.root),
            None => (None, None),
        };
        let id = SnapshotId::generate();
        let record = SnapshotRecord {
            lineage: lineage_of_parent.unwrap_or_else(|| id.clone()),
            id,
            owner: owner.clone(),
            status: SnapshotStatus::Pending,
            volume_size: validated.volume_size,
            parent: input.parent.clone(),
            description: input.description.clone(),
            tags: input.tags.clone(),
            encrypted: encryption.encrypted,
            kms_key_arn: encryption.key.as_ref().map(|key| key.arn.clone()),
            encryption_key: encryption.key.map(|key| key.id),
            timeout_minutes: validated.timeout_minutes,
            client_token: input.client_token.clone(),
            start_fingerprint: fingerprint,
            start_time_ms: now,
            last_activity_ms: now,
            completion_time_ms: None,
            progress: None,
            write_sequence: 0,
            changed_blocks: 0,
            root: None,
            base_root,
            status_message: None,
        };
        match self.metadata.create_snapshot(record.clone()).await? {
            CreateOutcome::Created => {
                // Counted once ours is stored, and ours undone if the count is over the
                // quota: of StartSnapshots racing on any nodes, the last to count sees
                // every other one that was kept, so the quota holds (racers may all be
                // refused; a retry then succeeds). A retry of a StartSnapshot that was
                // created (its client token) is not counted again.
                if let Err(error) = self.check_pending_limit(owner, &record).await {
                    if let Err(undo) = self.metadata.delete_snapshot(&record.id).await {
                        tracing::warn!(id = %record.id, error = %undo, "cannot undo a snapshot over the pending quota; it times out");
                    }
                    return Err(error);
                }
                Ok(record)
            }
            // Deleted (or changed) between our read and the creation: as if it never was.
            CreateOutcome::ParentGone => Err(ServiceError::SnapshotNotFound(
                record.parent.clone().unwrap_or_else(|| record.id.clone()),
            )),
            CreateOutcome::ClientTokenExists(existing) => {
                if existing.start_fingerprint == record.start_fingerprint {
                    Ok(*existing)
                } else {
                    Err(ServiceError::IdempotencyConflict(format!(
                        "The client token was already used for snapshot '{}' with different parameters.",
                        existing.id
                    )))
                }
            }
        }
    }
}

impl<M: MetadataStore, C: ChunkStore> SnapshotService<M, C> {
    /// Refuse when `owner`, `ours` (just stored) included, has more pending snapshots
    /// than the quota allows.
    async fn check_pending_limit(
        &self,
        owner: &AccountId,
        ours: &SnapshotRecord,
    ) -> Result<(), ServiceError> {
        let Some(limit) = self.pending_limit else {
            return Ok(());
        };
        let now = self.now_ms();
        let pending = self
            .metadata
            .list_snapshots(Some(owner))
            .await?
            .into_iter()
            .filter(|r| r.id == ours.id || r.status_at(now) == SnapshotStatus::Pending)
            .count();
        if pending <= limit {
            return Ok(());
        }
        Err(ServiceError::PendingSnapshotLimit(format!(
            "The account has {limit} pending snapshots, its quota; complete or delete one \
             (or let it time out) before starting another."
        )))
    }
}

struct ValidatedStart {
    volume_size: VolumeSize,
    timeout_minutes: u32,
}

fn validate_start(input: &StartSnapshotInput) -> Result<ValidatedStart, ServiceError> {
    let volume_size = VolumeSize::from_gib(input.volume_size_gib)
        .map_err(|e| ServiceError::InvalidVolumeSize(e.0))?;
    let timeout = input.timeout_minutes.unwrap_or(DEFAULT_TIMEOUT_MINUTES);
    let timeout_minutes = u32::try_from(timeout)
        .ok()
        .filter(|_| TIMEOUT_RANGE_MINUTES.contains(&timeout))
        .ok_or_else(|| {
            ServiceError::InvalidParameter(format!(
                "Timeout is {timeout} minutes; it must be between 10 and 4320."
            ))
        })?;
    if input.encrypted == Some(true) && input.parent.is_some() {
        return Err(ServiceError::InvalidParameter(
            "Encrypted cannot be combined with ParentSnapshotId.".into(),
        ));
    }
    if let Some(description) = &input.description
        && (description.is_empty() || description.chars().count() > MAX_DESCRIPTION_LEN)
    {
        return Err(ServiceError::InvalidParameter(format!(
            "Description must be 1 to {MAX_DESCRIPTION_LEN} characters."
        )));
    }
    if let Some(token) = &input.client_token
        && (token.is_empty()
            || token.len() > MAX_CLIENT_TOKEN_LEN
            || token.chars().any(char::is_whitespace))
    {
        return Err(ServiceError::InvalidParameter(format!(
            "ClientToken must be 1 to {MAX_CLIENT_TOKEN_LEN} characters without white space."
        )));
    }
    if let Some(arn) = &input.kms_key_arn
        && !valid_kms_key_arn(arn)
    {
        return Err(ServiceError::InvalidParameter(
            "KmsKeyArn is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID).".into(),
        ));
    }
    validate_tags(&input.tags)?;
    Ok(ValidatedStart {
        volume_size,
        timeout_minutes,
    })
}

/// The model's pattern `arn:aws[a-z\-]*:kms:.*:[0-9]{12}:key/.*`, length 1..=2048.
fn valid_kms_key_arn(arn: &str) -> bool {
    if arn.is_empty() || arn.len() > MAX_KMS_KEY_ARN_LEN {
        return false;
    }
    let Some(rest) = arn.strip_prefix("arn:aws") else {
        return false;
    };
    let partition_end = rest
        .find(|c: char| !(c.is_ascii_lowercase() || c == '-'))
        .unwrap_or(rest.len());
    let Some(rest) = rest[partition_end..].strip_prefix(":kms:") else {
        return false;
    };
    // ".*:[0-9]{12}:key/" somewhere after the region. Bytes, not `str` slices: the text
    // is the client's, and a byte offset may fall inside a multi-byte character.
    rest.match_indices(":key/").any(|(pos, _)| {
        let before = &rest.as_bytes()[..pos];
        before.len() >= 12
            && before[before.len() - 12..].iter().all(u8::is_ascii_digit)
            && (before.len() == 12 || before[before.len() - 13] == b':')
    })
}

/// A canonical digest of the start parameters, compared when a client token is reused.
fn start_fingerprint(input: &StartSnapshotInput, validated: &ValidatedStart) -> String {
    let mut hasher = Sha256::new();
    let mut field = |value: &str| {
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value.as_bytes());
    };
    field(&validated.volume_size.gib().to_string());
    field(input.parent.as_ref().map_or("", SnapshotId::as_str));
    field(input.description.as_deref().unwrap_or("\u{0}"));
    field(&input.encrypted.unwrap_or(false).to_string());
    field(input.kms_key_arn.as_deref().unwrap_or(""));
    field(&validated.timeout_minutes.to_string());
    for tag in &input.tags {
        field(&tag.key);
        field(&tag.value);
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kms_key_arns_follow_the_model_pattern() {
        assert!(valid_kms_key_arn(
            "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        ));
        assert!(valid_kms_key_arn(
            "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/x"
        ));
        assert!(!valid_kms_key_arn("arn:aws:kms:us-east-1:1111:key/x"));
        assert!(!valid_kms_key_arn("arn:aws:s3:::bucket"));
        assert!(!valid_kms_key_arn("alias/foo"));
        // Non-ASCII before ":key/" used to slice inside a character and panic.
        assert!(!valid_kms_key_arn("arn:aws:kms:x€€€€€€€€x:key/y"));
        assert!(!valid_kms_key_arn("arn:aws:kms:€:key/x"));
        assert!(valid_kms_key_arn("arn:aws:kms:é:111122223333:key/x"));
    }
}
