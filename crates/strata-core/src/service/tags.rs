//! CreateTags and DeleteTags, and the tag rules StartSnapshot shares.

use strata_types::{AccountId, SnapshotId};

use super::SnapshotService;
use crate::error::ServiceError;
use crate::ports::{ChunkStore, MetadataStore, RecordChange};
use crate::snapshot::{SnapshotRecord, Tag};

/// Tags per snapshot, and tag key/value lengths (the model's `Tags`, `TagKey`, `TagValue`).
pub const MAX_TAGS: usize = 50;

const MAX_TAG_KEY_LEN: usize = 127;

const MAX_TAG_VALUE_LEN: usize = 255;

impl<M: MetadataStore, C: ChunkStore> SnapshotService<M, C> {
    /// CreateTags: add or overwrite tags on snapshots of `owner`; all or nothing.
    pub async fn create_tags(
        &self,
        owner: &AccountId,
        ids: &[SnapshotId],
        tags: &[Tag],
    ) -> Result<(), ServiceError> {
        for id in ids {
            let mut merged = self.owned_snapshot(owner, id).await?.tags;
            merge_tags(&mut merged, tags);
            validate_tags(&merged)?;
        }
        for id in ids {
            let tags = tags.to_vec();
            let change: RecordChange = Box::new(move |stored: &SnapshotRecord| {
                let mut record = stored.clone();
                merge_tags(&mut record.tags, &tags);
                (record.tags.len() <= MAX_TAGS).then_some(record)
            });
            if self.metadata.update_snapshot(id, change).await?.is_none() {
                return Err(ServiceError::SnapshotNotFound(id.clone()));
            }
        }
        Ok(())
    }

    /// DeleteTags: remove tags by key (and value, when given; all tags when `keys` is empty).
    pub async fn delete_tags(
        &self,
        owner: &AccountId,
        ids: &[SnapshotId],
        keys: &[(String, Option<String>)],
    ) -> Result<(), ServiceError> {
        for id in ids {
            self.owned_snapshot(owner, id).await?;
        }
        for id in ids {
            let keys = keys.to_vec();
            let change: RecordChange = Box::new(move |stored: &SnapshotRecord| {
                let mut record = stored.clone();
                record.tags.retain(|tag| {
                    !keys.is_empty()
                        && !keys.iter().any(|(key, value)| {
                            *key == tag.key && value.as_ref().is_none_or(|v| *v == tag.value)
                        })
                });
                Some(record)
            });
            self.metadata.update_snapshot(id, change).await?;
        }
        Ok(())
    }
}

pub(super) fn validate_tags(tags: &[Tag]) -> Result<(), ServiceError> {
    if tags.len() > MAX_TAGS {
        return Err(ServiceError::TagLimitExceeded(format!(
            "{} tags were given; a snapshot can have at most {MAX_TAGS}.",
            tags.len()
        )));
    }
    let mut keys = std::collections::HashSet::new();
    for tag in tags {
        let key_len = tag.key.chars().count();
        if key_len == 0 || key_len > MAX_TAG_KEY_LEN {
            return Err(ServiceError::InvalidTag(format!(
                "Tag keys must be 1 to {MAX_TAG_KEY_LEN} characters."
            )));
        }
        if tag.value.chars().count() > MAX_TAG_VALUE_LEN {
            return Err(ServiceError::InvalidTag(format!(
                "The value of tag '{}' is longer than {MAX_TAG_VALUE_LEN} characters.",
                tag.key
            )));
        }
        if !keys.insert(tag.key.as_str()) {
            return Err(ServiceError::InvalidTag(format!(
                "The tag key '{}' is given more than once.",
                tag.key
            )));
        }
    }
    Ok(())
}

/// Add `new` to `tags`, replacing the values of keys already present.
fn merge_tags(tags: &mut Vec<Tag>, new: &[Tag]) {
    for tag in new {
        match tags.iter_mut().find(|t| t.key == tag.key) {
            Some(existing) => existing.value.clone_from(&tag.value),
            None => tags.push(tag.clone()),
        }
    }
}
