//! Accounts and their access keys.
//!
//! The root account's key pair comes from `STRATA_ROOT_ACCESS_KEY_ID` /
//! `STRATA_ROOT_SECRET_ACCESS_KEY`, or else from `DATA_DIR/root-credentials`, which the
//! first start generates (mode 0600) and prints once. A config file may add accounts.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use rand::Rng;
use rand::distr::Alphanumeric;
use strata_sigv4::CredentialLookup;
use strata_types::AccountId;

/// One access key of one account.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// The access key id (public).
    pub access_key_id: String,
    /// The secret (never logged).
    pub secret_access_key: String,
    /// The account it authenticates as.
    pub account: AccountId,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key_id", &self.access_key_id)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// Every key the server accepts.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: HashMap<String, AccessKey>,
}

impl KeyRing {
    /// A key ring holding `keys`; later duplicates of an access key id are refused.
    pub fn new(keys: impl IntoIterator<Item = AccessKey>) -> anyhow::Result<Self> {
        let mut ring = HashMap::new();
        for key in keys {
            if ring.contains_key(&key.access_key_id) {
                anyhow::bail!(
                    "the access key id '{}' is configured twice",
                    key.access_key_id
                );
            }
            ring.insert(key.access_key_id.clone(), key);
        }
        Ok(Self { keys: ring })
    }

    /// The account an access key belongs to.
    pub fn account_of(&self, access_key_id: &str) -> Option<&AccountId> {
        self.keys.get(access_key_id).map(|k| &k.account)
    }
}

impl CredentialLookup for KeyRing {
    fn secret_access_key(&self, access_key_id: &str) -> Option<String> {
        self.keys
            .get(access_key_id)
            .map(|k| k.secret_access_key.clone())
    }
}

/// Where the root key pair came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKeySource {
    /// The environment.
    Environment,
    /// The data directory's `root-credentials` file, written earlier.
    DataDir,
    /// Generated just now (and saved in the data directory when asked to).
    Generated,
}

const ROOT_CREDENTIALS_FILE: &str = "root-credentials";

/// The root key pair: from `from_env` if both parts are set, else from the data
/// directory, else freshly generated and saved there with mode 0600.
pub fn root_key(
    data_dir: &Path,
    account: &AccountId,
    from_env: Option<(String, String)>,
    save_generated: bool,
) -> anyhow::Result<(AccessKey, RootKeySource)> {
    let key = |id: String, secret: String| AccessKey {
        access_key_id: id,
        secret_access_key: secret,
        account: account.clone(),
    };
    if let Some((id, secret)) = from_env {
        return Ok((key(id, secret), RootKeySource::Environment));
    }
    let path = data_dir.join(ROOT_CREDENTIALS_FILE);
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                .map(|v| v.trim().to_owned())
                .with_context(|| format!("{} has no '{name}=' line", path.display()))
        };
        let id = field("aws_access_key_id")?;
        let secret = field("aws_secret_access_key")?;
        return Ok((key(id, secret), RootKeySource::DataDir));
    }
    let random = |len: usize| -> String {
        rand::rng()
            .sample_iter(Alphanumeric)
            .take(len)
            .map(char::from)
            .collect()
    };
    let id = format!("AKIA{}", random(16).to_uppercase());
    let secret = random(40);
    let generated = key(id, secret);
    if save_generated {
        write_private(&path, &encode_root_key(&generated))?;
    }
    Ok((generated, RootKeySource::Generated))
}

/// The text of a root key pair, as in the `root-credentials` file.
pub fn encode_root_key(key: &AccessKey) -> String {
    format!(
        "aws_access_key_id={}\naws_secret_access_key={}\n",
        key.access_key_id, key.secret_access_key
    )
}

/// A root key pair of `account` from the text [`encode_root_key`] writes.
pub fn decode_root_key(text: &str, account: &AccountId) -> anyhow::Result<AccessKey> {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
            .map(|v| v.trim().to_owned())
            .with_context(|| format!("the stored root credentials have no '{name}=' line"))
    };
    Ok(AccessKey {
        access_key_id: field("aws_access_key_id")?,
        secret_access_key: field("aws_secret_access_key")?,
        account: account.clone(),
    })
}

/// Write a file readable only by its owner, durably.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_key_is_generated_once_and_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let account = AccountId::parse("000000000000").expect("account");
        let (first, source) = root_key(dir.path(), &account, None, true).expect("generate");
        assert_eq!(source, RootKeySource::Generated);
        let (second, source) = root_key(dir.path(), &account, None, true).expect("reload");
        assert_eq!(source, RootKeySource::DataDir);
        assert_eq!(first, second);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(ROOT_CREDENTIALS_FILE))
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (env, source) =
            root_key(dir.path(), &account, Some(("AK".into(), "SK".into())), true).expect("env");
        assert_eq!(source, RootKeySource::Environment);
        assert_eq!(env.access_key_id, "AK");
    }

    #[test]
    fn duplicate_access_keys_are_refused() {
        let account = AccountId::parse("000000000000").expect("account");
        let key = AccessKey {
            access_key_id: "AK".into(),
            secret_access_key: "S".into(),
            account,
        };
        assert!(KeyRing::new([key.clone(), key]).is_err());
    }
}
