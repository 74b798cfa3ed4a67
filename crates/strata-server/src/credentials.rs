//! Accounts and their access keys.
//!
//! The root account's key pair comes from `STRATA_ROOT_ACCESS_KEY_ID` /
//! `STRATA_ROOT_SECRET_ACCESS_KEY`, or else from `DATA_DIR/root-credentials`, which the
//! first start generates (mode 0600) and prints once. A config file may add accounts,
//! each with several keys, and a key may be limited to a list of operations (a scope).
//! The keys of the config file are read again on SIGHUP ([`Keys::reload`]).

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

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
    /// The operations it may call (names of [`OPERATIONS`]); `None`: every operation its
    /// account may call.
    pub allow: Option<Arc<BTreeSet<String>>>,
}

impl AccessKey {
    /// An unscoped key.
    pub fn new(access_key_id: String, secret_access_key: String, account: AccountId) -> Self {
        Self {
            access_key_id,
            secret_access_key,
            account,
            allow: None,
        }
    }
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key_id", &self.access_key_id)
            .field("account", &self.account)
            .field("allow", &self.allow)
            .finish_non_exhaustive()
    }
}

/// Every operation name an access key's allow list may hold: the EBS direct APIs, the
/// EC2 calls, the admin API and the signed `/metrics`.
pub const OPERATIONS: &[&str] = &[
    "StartSnapshot",
    "PutSnapshotBlock",
    "CompleteSnapshot",
    "GetSnapshotBlock",
    "ListSnapshotBlocks",
    "ListChangedBlocks",
    "DescribeSnapshots",
    "DeleteSnapshot",
    "CreateTags",
    "DeleteTags",
    "AdminListSnapshots",
    "AdminDescribeSnapshot",
    "AdminDeleteSnapshot",
    "AdminCollectGarbage",
    "AdminScrub",
    "AdminBackup",
    "AdminCreateKey",
    "AdminListKeys",
    "AdminDisableKey",
    "AdminEnableKey",
    "GetMetrics",
];

/// An allow list from a config file, each name checked against [`OPERATIONS`].
pub fn parse_allow_list(names: &[String]) -> anyhow::Result<BTreeSet<String>> {
    names
        .iter()
        .map(|name| {
            if OPERATIONS.contains(&name.as_str()) {
                Ok(name.clone())
            } else {
                Err(anyhow::anyhow!(
                    "unknown operation '{name}' in an allow list (known: {})",
                    OPERATIONS.join(", ")
                ))
            }
        })
        .collect()
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

    /// The key of an access key id.
    pub fn get(&self, access_key_id: &str) -> Option<&AccessKey> {
        self.keys.get(access_key_id)
    }

    /// How many keys the ring holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the ring holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The keys the server accepts now: the root keys found at start and the config file's
/// keys, replaced as a whole by [`Keys::reload`]. A request verifies its signature and
/// learns its account and scope from one ring ([`Keys::current`]), so a reload never
/// splits a request between two.
#[derive(Debug)]
pub struct Keys {
    roots: Vec<AccessKey>,
    config_file: Option<PathBuf>,
    current: RwLock<Arc<KeyRing>>,
}

impl Keys {
    /// The root keys and `extra` (the config file's, as read at start); `config_file` is
    /// read again by [`Keys::reload`].
    pub fn new(
        roots: Vec<AccessKey>,
        extra: Vec<AccessKey>,
        config_file: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let ring = KeyRing::new(roots.iter().cloned().chain(extra))?;
        Ok(Self {
            roots,
            config_file,
            current: RwLock::new(Arc::new(ring)),
        })
    }

    /// The ring in force.
    pub fn current(&self) -> Arc<KeyRing> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Read the config file's accounts again and accept exactly the root keys and those
    /// from now on (keys added are accepted, keys removed refused, scopes changed apply
    /// to the next request). Returns the number of keys in force; on any error (the file
    /// unreadable, invalid, or readable by others while it holds secrets) the keys in
    /// force stay. Without a config file nothing changes.
    pub fn reload(&self) -> anyhow::Result<usize> {
        let Some(path) = &self.config_file else {
            return Ok(self.current().len());
        };
        let file = crate::config::ConfigFile::load(path)?;
        if file.holds_secrets() {
            check_private(path, "the config file (it holds secret keys)")?;
        }
        let ring = KeyRing::new(self.roots.iter().cloned().chain(file.access_keys()?))?;
        let count = ring.len();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(ring);
        Ok(count)
    }
}

/// Refuse a file holding secrets that its group or others may read, naming the file and
/// the command that fixes it.
pub fn check_private(path: &Path, what: &str) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("cannot read {what} {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o044 != 0 {
            let who = match (mode & 0o040 != 0, mode & 0o004 != 0) {
                (true, true) => "its group and everyone",
                (true, false) => "its group",
                _ => "everyone",
            };
            anyhow::bail!(
                "{what} {path} is readable by {who} (mode {mode:04o}); make it private to \
                 the server's user: chmod 600 {path}",
                path = path.display(),
                mode = mode & 0o7777,
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (path, what);
    Ok(())
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

/// The data directory's file holding the root key pair.
pub const ROOT_CREDENTIALS_FILE: &str = "root-credentials";

/// The root key pair: from `from_env` if both parts are set, else from the data
/// directory, else freshly generated and saved there with mode 0600.
pub fn root_key(
    data_dir: &Path,
    account: &AccountId,
    from_env: Option<(String, String)>,
    save_generated: bool,
) -> anyhow::Result<(AccessKey, RootKeySource)> {
    let key = |id: String, secret: String| AccessKey::new(id, secret, account.clone());
    if let Some((id, secret)) = from_env {
        return Ok((key(id, secret), RootKeySource::Environment));
    }
    let path = data_dir.join(ROOT_CREDENTIALS_FILE);
    if path.exists() {
        check_private(&path, "the root credentials file")?;
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
    Ok(AccessKey::new(
        field("aws_access_key_id")?,
        field("aws_secret_access_key")?,
        account.clone(),
    ))
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
        let key = AccessKey::new("AK".into(), "S".into(), account);
        assert!(KeyRing::new([key.clone(), key]).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn readable_key_files_are_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("root-credentials");
        write_private(&path, "aws_access_key_id=A\naws_secret_access_key=B\n").expect("write");
        check_private(&path, "the key").expect("0600 is private");
        for (mode, who) in [
            (0o640, "its group"),
            (0o604, "everyone"),
            (0o644, "group and"),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let error = check_private(&path, "the key").expect_err("readable");
            let text = format!("{error:#}");
            assert!(text.contains(who), "{text}");
            assert!(
                text.contains(&format!("chmod 600 {}", path.display())),
                "{text}"
            );
        }
        // The root key loader applies it.
        let account = AccountId::parse("000000000000").expect("account");
        assert!(root_key(dir.path(), &account, None, true).is_err());
    }
}
