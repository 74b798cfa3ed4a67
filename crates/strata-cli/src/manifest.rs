//! `IMAGE.strata-manifest`: the SHA-256 of every block of one snapshot, kept next to the
//! image it was uploaded from or downloaded to.
//!
//! Why: the EBS APIs list which blocks a snapshot has but not what they hold, so an
//! incremental upload against a parent would otherwise have to download the parent's blocks
//! to compare. With the manifest of the parent (written by the upload or download that
//! produced it), the client compares digests locally and sends only the blocks that differ.
//! A download also accepts a manifest, to learn the original image length and to check every
//! block end to end.
//!
//! Format (text, one item per line, so it can be read and diffed by people):
//!
//! ```text
//! strata-manifest 1
//! snapshot snap-0123456789abcdef0
//! parent snap-0fedcba9876543210
//! volume-size-gib 1
//! image-size 268435456
//! block-size 524288
//!
//! 0 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//! 7 ...
//! ```
//!
//! `parent` is optional. After the blank line each line is `<block index> <hex SHA-256>`; a
//! block without a line holds zeros. The same format, appended to as blocks finish, is the
//! resume log of a download (`OUTPUT.strata-resume`: blocks saved) and of an upload
//! (`IMAGE.strata-upload`: blocks the pending snapshot holds). In a log a torn last line (a
//! crash mid-append) is ignored, a later line for the same index wins, and zero blocks are
//! listed too (they are done).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use strata_types::{BLOCK_SIZE, BlockIndex, ChunkDigest, SnapshotId, VolumeSize};

use crate::error::{ImageError, ManifestError};
use crate::image::sync_parent_dir;

/// File name suffix of a manifest: `disk.img` → `disk.img.strata-manifest`.
pub const MANIFEST_SUFFIX: &str = ".strata-manifest";

const MAGIC: &str = "strata-manifest 1";

/// Environment variable naming the directory where manifests are also kept by snapshot id
/// (default: `$XDG_CACHE_HOME/strata`, else `~/.cache/strata`).
pub const CACHE_DIR_ENV: &str = "STRATA_CACHE_DIR";

/// The directory of manifests kept by snapshot id, if one can be named.
pub fn cache_dir() -> Option<PathBuf> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    env(CACHE_DIR_ENV)
        .map(PathBuf::from)
        .or_else(|| env("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("strata")))
        .or_else(|| env("HOME").map(|d| PathBuf::from(d).join(".cache").join("strata")))
}

/// Where the cached manifest of `snapshot` lives (see [`cache_dir`]).
pub fn cached_path(snapshot: &SnapshotId) -> Option<PathBuf> {
    cache_dir().map(|dir| {
        dir.join("manifests")
            .join(format!("{snapshot}{MANIFEST_SUFFIX}"))
    })
}

/// The content digests of one snapshot's blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The snapshot described.
    pub snapshot: SnapshotId,
    /// Its volume size.
    pub volume_size: VolumeSize,
    /// Length of the image the snapshot was made from (or restored to), in bytes.
    pub image_size: u64,
    /// The snapshot's parent, when the writer knew it (an upload does).
    pub parent: Option<SnapshotId>,
    /// Digest of each block that may hold data; absent blocks hold zeros.
    pub blocks: BTreeMap<BlockIndex, ChunkDigest>,
}

impl Manifest {
    /// An empty manifest (every block zero).
    pub fn new(snapshot: SnapshotId, volume_size: VolumeSize, image_size: u64) -> Self {
        Self {
            snapshot,
            volume_size,
            image_size,
            parent: None,
            blocks: BTreeMap::new(),
        }
    }

    /// The manifest path that goes with `image`.
    pub fn path_for(image: &Path) -> PathBuf {
        let mut name = image.as_os_str().to_owned();
        name.push(MANIFEST_SUFFIX);
        PathBuf::from(name)
    }

    /// The content digest of block `index` (the zero block's when not listed).
    pub fn digest(&self, index: BlockIndex) -> ChunkDigest {
        self.blocks
            .get(&index)
            .copied()
            .unwrap_or_else(ChunkDigest::zero_block)
    }

    /// Record block `index`; zero blocks are left out (absence means zeros).
    pub fn insert(&mut self, index: BlockIndex, digest: ChunkDigest) {
        if digest.is_zero_block() {
            self.blocks.remove(&index);
        } else {
            self.blocks.insert(index, digest);
        }
    }

    /// Keep a copy under [`cached_path`], so that a later download or NBD export of the
    /// snapshot finds the image length and digests wherever it runs on this machine.
    pub fn save_to_cache(&self) -> Result<Option<PathBuf>, ManifestError> {
        let Some(path) = cached_path(&self.snapshot) else {
            return Ok(None);
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| ImageError::new("create the manifest cache", dir, e))?;
        }
        self.write(&path)?;
        Ok(Some(path))
    }

    /// The first readable manifest of `snapshot` among `candidates`, then the cached one:
    /// for commands that use a manifest when there is one.
    pub fn find(snapshot: &SnapshotId, candidates: &[PathBuf]) -> Option<(Self, PathBuf)> {
        candidates
            .iter()
            .cloned()
            .chain(cached_path(snapshot))
            .filter(|path| path.is_file())
            .find_map(|path| {
                Self::read(&path)
                    .ok()
                    .filter(|m| &m.snapshot == snapshot)
                    .map(|m| (m, path))
            })
    }

    /// Read a complete manifest.
    pub fn read(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ImageError::new("read the manifest", path, e))?;
        parse(&text, path, false).map(|(manifest, _)| manifest)
    }

    /// Write atomically (temporary file, fsync, rename, fsync of the directory).
    pub fn write(&self, path: &Path) -> Result<(), ManifestError> {
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        let mut text = header(self);
        for (index, digest) in &self.blocks {
            text.push_str(&entry(*index, digest));
        }
        let io = |action: &str, p: &Path, e| ManifestError::Io(ImageError::new(action, p, e));
        let mut file = File::create(&temporary).map_err(|e| io("create", &temporary, e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io("write", &temporary, e))?;
        std::fs::rename(&temporary, path).map_err(|e| io("rename into place", path, e))?;
        sync_parent_dir(path)?;
        Ok(())
    }
}

fn header(manifest: &Manifest) -> String {
    let parent = manifest
        .parent
        .as_ref()
        .map(|p| format!("parent {p}\n"))
        .unwrap_or_default();
    format!(
        "{MAGIC}\nsnapshot {}\n{parent}volume-size-gib {}\nimage-size {}\nblock-size {BLOCK_SIZE}\n\n",
        manifest.snapshot,
        manifest.volume_size.gib(),
        manifest.image_size
    )
}

fn entry(index: BlockIndex, digest: &ChunkDigest) -> String {
    format!("{index} {}\n", digest.to_hex())
}

/// The manifest, and every index that has a line (zero blocks included: a resume log
/// records them as done).
fn parse(
    text: &str,
    path: &Path,
    torn_tail_allowed: bool,
) -> Result<(Manifest, BTreeSet<BlockIndex>), ManifestError> {
    let error = |line: usize, message: String| ManifestError::Parse {
        path: path.to_owned(),
        line,
        message,
    };
    // A log's last line is complete only if the file ends with a newline.
    let complete = if torn_tail_allowed && !text.ends_with('\n') {
        text.rfind('\n').map_or("", |end| &text[..=end])
    } else {
        text
    };
    let mut lines = complete.lines().enumerate().map(|(n, l)| (n + 1, l));
    match lines.next() {
        Some((_, MAGIC)) => {}
        _ => return Err(error(1, format!("not a manifest (expected '{MAGIC}')"))),
    }
    let mut fields = BTreeMap::new();
    for (number, line) in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        let (key, value) = line
            .split_once(' ')
            .ok_or_else(|| error(number, format!("expected 'key value', got '{line}'")))?;
        fields.insert(key, (number, value));
    }
    let field = |key: &str| {
        fields
            .get(key)
            .copied()
            .ok_or_else(|| error(1, format!("the header has no '{key}'")))
    };
    let number = |key: &str| -> Result<u64, ManifestError> {
        let (line, value) = field(key)?;
        value
            .parse::<u64>()
            .map_err(|_| error(line, format!("'{key}' is not a number: '{value}'")))
    };
    let (line, snapshot) = field("snapshot")?;
    let snapshot = SnapshotId::parse(snapshot).map_err(|e| error(line, e.to_string()))?;
    let gib = number("volume-size-gib")?;
    let volume_size = i64::try_from(gib)
        .ok()
        .and_then(|g| VolumeSize::from_gib(g).ok())
        .ok_or_else(|| error(1, format!("invalid volume size {gib}")))?;
    let image_size = number("image-size")?;
    let block_size = number("block-size")?;
    if usize::try_from(block_size).ok() != Some(BLOCK_SIZE) {
        return Err(error(
            1,
            format!("block size {block_size} is not {BLOCK_SIZE}"),
        ));
    }
    let mut manifest = Manifest::new(snapshot, volume_size, image_size);
    if let Some(&(line, parent)) = fields.get("parent") {
        manifest.parent = Some(SnapshotId::parse(parent).map_err(|e| error(line, e.to_string()))?);
    }
    let mut listed = BTreeSet::new();
    for (number, line) in lines {
        let parsed = line.split_once(' ').and_then(|(index, digest)| {
            Some((
                BlockIndex::parse(index).ok()?,
                ChunkDigest::from_hex(digest).ok()?,
            ))
        });
        let (index, digest) = parsed
            .ok_or_else(|| error(number, format!("expected '<index> <sha256>', got '{line}'")))?;
        if u64::from(index.get()) >= volume_size.block_count() {
            return Err(error(
                number,
                format!("block {index} is outside the volume"),
            ));
        }
        manifest.insert(index, digest);
        listed.insert(index);
    }
    Ok((manifest, listed))
}

/// An append-only manifest: a download records each block as it becomes durable, so an
/// interrupted download resumes where it stopped.
#[derive(Debug)]
pub struct ManifestLog {
    path: PathBuf,
    file: File,
}

impl ManifestLog {
    /// Start a new log for `manifest`'s snapshot (its header only; entries are appended).
    pub fn create(path: &Path, manifest: &Manifest) -> Result<Self, ManifestError> {
        let mut file =
            File::create(path).map_err(|e| ImageError::new("create the resume log", path, e))?;
        file.write_all(header(manifest).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| ImageError::new("write the resume log", path, e))?;
        sync_parent_dir(path)?;
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    /// Reopen an existing log to append to it, returning what it holds so far: the digests
    /// and every index recorded as done.
    pub fn reopen(path: &Path) -> Result<(Self, Manifest, BTreeSet<BlockIndex>), ManifestError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ImageError::new("read the resume log", path, e))?;
        let (manifest, done) = parse(&text, path, true)?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| ImageError::new("open the resume log", path, e))?;
        if !text.ends_with('\n') {
            // Cut a torn last line off, so the next entry starts on a line of its own.
            let complete = text.rfind('\n').map_or(0, |end| end + 1);
            file.set_len(complete as u64)
                .map_err(|e| ImageError::new("repair the resume log", path, e))?;
        }
        Ok((
            Self {
                path: path.to_owned(),
                file,
            },
            manifest,
            done,
        ))
    }

    /// Append entries (the caller has made their data durable first). Not fsynced: a lost
    /// entry only means that block is fetched again.
    pub fn append(&mut self, entries: &[(BlockIndex, ChunkDigest)]) -> Result<(), ManifestError> {
        let text: String = entries.iter().map(|(i, d)| entry(*i, d)).collect();
        self.file
            .write_all(text.as_bytes())
            .map_err(|e| ImageError::new("append to the resume log", &self.path, e))?;
        Ok(())
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let mut manifest = Manifest::new(
            SnapshotId::parse("snap-0123456789abcdef0").expect("id"),
            VolumeSize::from_gib(1).expect("size"),
            300_000_000,
        );
        manifest.insert(BlockIndex::new(0), ChunkDigest::of(b"a"));
        manifest.insert(BlockIndex::new(7), ChunkDigest::of(b"b"));
        manifest.insert(BlockIndex::new(9), ChunkDigest::zero_block());
        manifest.parent = Some(SnapshotId::parse("snap-0fff").expect("id"));
        manifest
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m");
        let manifest = sample();
        manifest.write(&path).expect("write");
        assert_eq!(Manifest::read(&path).expect("read"), manifest);
        assert_eq!(manifest.blocks.len(), 2, "zero blocks are implicit");
        assert_eq!(
            manifest.digest(BlockIndex::new(3)),
            ChunkDigest::zero_block()
        );
    }

    #[test]
    fn path_appends_the_suffix() {
        assert_eq!(
            Manifest::path_for(Path::new("/x/disk.img")),
            PathBuf::from("/x/disk.img.strata-manifest")
        );
    }

    #[test]
    fn a_log_survives_a_torn_tail_and_resumes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let manifest = sample();
        let mut log = ManifestLog::create(&path, &manifest).expect("create");
        log.append(&[(BlockIndex::new(1), ChunkDigest::of(b"x"))])
            .expect("append");
        drop(log);
        // A crash in the middle of an append.
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(b"2 abc").expect("write");
        drop(file);
        assert!(
            Manifest::read(&path).is_err(),
            "a torn line is an error in a manifest"
        );

        let (mut log, so_far, done) = ManifestLog::reopen(&path).expect("reopen");
        assert_eq!(done.len(), 1);
        assert_eq!(
            so_far.blocks.keys().copied().collect::<Vec<_>>(),
            vec![BlockIndex::new(1)]
        );
        log.append(&[(BlockIndex::new(2), ChunkDigest::of(b"y"))])
            .expect("append");
        drop(log);
        let (_, now, _) = ManifestLog::reopen(&path).expect("reopen");
        assert_eq!(now.blocks.len(), 2);
        assert_eq!(now.digest(BlockIndex::new(2)), ChunkDigest::of(b"y"));
    }

    #[test]
    fn errors_name_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m");
        sample().write(&path).expect("write");
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str("12 nothex\n");
        std::fs::write(&path, text).expect("write");
        let message = Manifest::read(&path).expect_err("bad").to_string();
        assert!(
            message.ends_with(":10: expected '<index> <sha256>', got '12 nothex'"),
            "{message}"
        );
    }
}
