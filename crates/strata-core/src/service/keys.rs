//! The local key service (KMS-like keys) and the choice of a snapshot's key.
//!
//! Keys are stored by the metadata store with their material wrapped by the master key
//! ([`crate::encryption`]); the service unwraps a key's material when it first needs it
//! and keeps the result for [`KEY_CACHE_TTL`], so a Put or a read does not cost a
//! metadata round trip for its key. A key disabled through this service stops working
//! here at once, and on other nodes sharing the store within that time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_types::AccountId;

use super::SnapshotService;
use crate::encryption::{DataKey, KeyRecord, MasterKey, default_key_id, key_id_of_arn};
use crate::error::ServiceError;
use crate::ports::{ChunkStore, MetadataStore};
use crate::snapshot::SnapshotRecord;

/// How long a node uses what it learnt about a key (enabled or not) before asking the
/// store again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(2);

/// Longest key description accepted (KMS's limit).
const MAX_KEY_DESCRIPTION_LEN: usize = 8192;

/// What the service needs to encrypt at rest.
#[derive(Debug, Clone)]
pub struct EncryptionConfig {
    /// Wraps every key's material.
    pub master: MasterKey,
    /// The region named in key ARNs.
    pub region: String,
    /// Encrypt every new snapshot, requested or not (AWS's account-level "encryption by
    /// default"), under the account's default key unless the request names one.
    pub by_default: bool,
}

/// The service's encryption state: its configuration and the keys it unwrapped.
pub(super) struct Encryption {
    config: EncryptionConfig,
    cache: Mutex<HashMap<String, CachedKey>>,
}

#[derive(Clone)]
struct CachedKey {
    fetched: Instant,
    record: KeyRecord,
    data_key: Arc<DataKey>,
}

impl Encryption {
    pub(super) fn new(config: EncryptionConfig) -> Self {
        Self {
            config,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, id: &str) -> Option<CachedKey> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(id)
            .filter(|entry| entry.fetched.elapsed() < KEY_CACHE_TTL)
            .cloned()
    }

    fn remember(&self, record: KeyRecord, data_key: Arc<DataKey>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(
            record.id.clone(),
            CachedKey {
                fetched: Instant::now(),
                record,
                data_key,
            },
        );
    }

    fn forget(&self, id: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.remove(id);
    }
}

/// How a new snapshot's blocks are stored, decided at StartSnapshot.
pub(super) struct StartEncryption {
    /// Reported as encrypted.
    pub encrypted: bool,
    /// The key that encrypts the blocks, if any.
    pub key: Option<KeyRecord>,
}

impl<M: MetadataStore, C: ChunkStore> SnapshotService<M, C> {
    /// The same service, encrypting at rest with `config` (without it, a request to
    /// encrypt is refused: there is no master key to wrap keys with).
    pub fn with_encryption(mut self, config: EncryptionConfig) -> Self {
        self.encryption = Some(Arc::new(Encryption::new(config)));
        self
    }

    fn encryption(&self) -> Result<&Encryption, ServiceError> {
        self.encryption.as_deref().ok_or_else(|| {
            ServiceError::InvalidCustomerKey(
                "This server has no master key, so it cannot encrypt: start it with \
                 --master-key-file FILE (or STRATA_MASTER_KEY)."
                    .into(),
            )
        })
    }

    /// Create a key for `owner` (`strata keys create`).
    pub async fn create_key(
        &self,
        owner: &AccountId,
        description: Option<String>,
    ) -> Result<KeyRecord, ServiceError> {
        if let Some(text) = &description
            && text.chars().count() > MAX_KEY_DESCRIPTION_LEN
        {
            return Err(ServiceError::InvalidParameter(format!(
                "A key description has at most {MAX_KEY_DESCRIPTION_LEN} characters."
            )));
        }
        let encryption = self.encryption()?;
        let record = KeyRecord::create(
            &encryption.config.master,
            uuid::Uuid::new_v4().to_string(),
            &encryption.config.region,
            owner.clone(),
            description,
            false,
            self.now_ms(),
        );
        Ok(self.metadata.create_key(record).await?)
    }

    /// The keys of `owner` (every key when `None`), ordered by id.
    pub async fn list_keys(
        &self,
        owner: Option<&AccountId>,
    ) -> Result<Vec<KeyRecord>, ServiceError> {
        Ok(self.metadata.keys(owner).await?)
    }

    /// Enable or disable the key named by `arn_or_id`. A disabled key neither encrypts nor
    /// decrypts: the snapshots under it cannot be written or read until it is enabled.
    pub async fn set_key_enabled(
        &self,
        arn_or_id: &str,
        enabled: bool,
    ) -> Result<KeyRecord, ServiceError> {
        let id = key_id_of_arn(arn_or_id).unwrap_or(arn_or_id);
        let stored = self.metadata.set_key_enabled(id, enabled).await?;
        if let Some(encryption) = &self.encryption {
            encryption.forget(id);
        }
        stored.ok_or_else(|| {
            ServiceError::InvalidCustomerKey(format!("The KMS key '{arn_or_id}' does not exist."))
        })
    }

    /// Decide how a new snapshot is encrypted: as its parent (children of an encrypted
    /// parent stay encrypted, under the parent's key, so unchanged blocks are shared), else
    /// as requested or by the default.
    pub(super) async fn start_encryption(
        &self,
        owner: &AccountId,
        requested: Option<bool>,
        kms_key_arn: Option<&str>,
        parent: Option<&SnapshotRecord>,
    ) -> Result<StartEncryption, ServiceError> {
        let by_default = self
            .encryption
            .as_ref()
            .is_some_and(|e| e.config.by_default);
        if let Some(parent) = parent {
            let Some(parent_key) = &parent.encryption_key else {
                if by_default {
                    return Err(ServiceError::InvalidParameter(format!(
                        "Encryption by default is on, so the unencrypted snapshot '{}' cannot be a parent.",
                        parent.id
                    )));
                }
                if let Some(arn) = kms_key_arn {
                    return Err(ServiceError::InvalidCustomerKey(format!(
                        "The parent snapshot '{}' is not encrypted, so its children cannot be encrypted under '{arn}'.",
                        parent.id
                    )));
                }
                return Ok(StartEncryption {
                    encrypted: parent.encrypted,
                    key: None,
                });
            };
            let key = self.usable_key(owner, parent_key).await?.record;
            if let Some(arn) = kms_key_arn
                && arn != key.arn
            {
                return Err(ServiceError::InvalidCustomerKey(format!(
                    "The children of snapshot '{}' are encrypted under its key '{}', not '{arn}'.",
                    parent.id, key.arn
                )));
            }
            return Ok(StartEncryption {
                encrypted: true,
                key: Some(key),
            });
        }
        // With encryption by default, a request cannot opt out (as on AWS).
        let encrypt = requested == Some(true) || by_default;
        if !encrypt && kms_key_arn.is_some() {
            return Err(ServiceError::InvalidParameter(
                "KmsKeyArn requires Encrypted to be true.".into(),
            ));
        }
        if !encrypt {
            return Ok(StartEncryption {
                encrypted: false,
                key: None,
            });
        }
        let key = match kms_key_arn {
            Some(arn) => self.key_by_arn(owner, arn).await?,
            None => self.default_key(owner).await?,
        };
        Ok(StartEncryption {
            encrypted: true,
            key: Some(key),
        })
    }

    /// The key an ARN names, if `owner` may use it.
    async fn key_by_arn(&self, owner: &AccountId, arn: &str) -> Result<KeyRecord, ServiceError> {
        let unknown =
            || ServiceError::InvalidCustomerKey(format!("The KMS key '{arn}' does not exist."));
        let id = key_id_of_arn(arn).ok_or_else(unknown)?;
        let key = self.loaded_key(id).await?.ok_or_else(unknown)?;
        if key.record.arn != arn {
            return Err(unknown());
        }
        Ok(usable(owner, key)?.record)
    }

    /// `owner`'s default key, created on first use.
    async fn default_key(&self, owner: &AccountId) -> Result<KeyRecord, ServiceError> {
        let encryption = self.encryption()?;
        let id = default_key_id(owner);
        if let Some(cached) = encryption.cached(&id)
            && cached.record.enabled
        {
            return Ok(cached.record);
        }
        if self.metadata.key(&id).await?.is_none() {
            let record = KeyRecord::create(
                &encryption.config.master,
                id.clone(),
                &encryption.config.region,
                owner.clone(),
                Some("Default key for EBS snapshots (aws/ebs)".into()),
                true,
                self.now_ms(),
            );
            let stored = self.metadata.create_key(record).await?;
            tracing::info!(account = %owner, key = %stored.arn, "created the account's default key");
        }
        Ok(self.usable_key(owner, &id).await?.record)
    }

    /// The data key of a snapshot's blocks, or `None` if they are stored in plaintext.
    pub(super) async fn snapshot_data_key(
        &self,
        record: &SnapshotRecord,
    ) -> Result<Option<Arc<DataKey>>, ServiceError> {
        match &record.encryption_key {
            None => Ok(None),
            Some(id) => Ok(Some(self.usable_key(&record.owner, id).await?.data_key)),
        }
    }

    /// The key `id` with its data key, if it exists, belongs to `owner` and is enabled.
    async fn usable_key(&self, owner: &AccountId, id: &str) -> Result<CachedKey, ServiceError> {
        let key = self.loaded_key(id).await?.ok_or_else(|| {
            ServiceError::InvalidCustomerKey(format!("The KMS key '{id}' does not exist."))
        })?;
        usable(owner, key)
    }

    /// The key `id` with its data key (from the cache while it is fresh), if it exists.
    async fn loaded_key(&self, id: &str) -> Result<Option<CachedKey>, ServiceError> {
        let encryption = self.encryption()?;
        if let Some(cached) = encryption.cached(id) {
            return Ok(Some(cached));
        }
        let Some(record) = self.metadata.key(id).await? else {
            return Ok(None);
        };
        let data_key = record.data_key(&encryption.config.master).map_err(|e| {
            tracing::error!(key = %record.arn, error = %e, "a key's material does not unwrap");
            ServiceError::InvalidCustomerKey(format!(
                "The KMS key '{}' cannot be used: its material does not unwrap with this server's master key.",
                record.arn
            ))
        })?;
        let data_key = Arc::new(data_key);
        encryption.remember(record.clone(), Arc::clone(&data_key));
        Ok(Some(CachedKey {
            fetched: Instant::now(),
            record,
            data_key,
        }))
    }
}

/// `key` if `owner` may use it now.
fn usable(owner: &AccountId, key: CachedKey) -> Result<CachedKey, ServiceError> {
    if key.record.owner != *owner {
        return Err(ServiceError::KeyAccessDenied(format!(
            "The KMS key '{}' belongs to another account.",
            key.record.arn
        )));
    }
    if !key.record.enabled {
        return Err(ServiceError::InvalidCustomerKey(format!(
            "The KMS key '{}' is disabled.",
            key.record.arn
        )));
    }
    Ok(key)
}
