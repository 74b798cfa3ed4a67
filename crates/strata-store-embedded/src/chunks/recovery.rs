//! What [`super::FsChunkStore::open`] does before serving: give back the space of writes a
//! crash interrupted, and import chunks stored in the layout of format version 1.
//!
//! # Never delete data because of what the index does not say
//! A segment holds bare chunk bytes (no digests), so the index is the only way to find a
//! chunk. An index that is missing or older than the segments (a lost file, an index
//! restored from an older backup than the segments) must therefore never lead to deleting
//! segment bytes:
//!
//! - **No index (or an empty file) but segment files exist: open is refused**
//!   ([`require_index`]), with an error that says what to do, and nothing is created or
//!   changed, so every later attempt refuses too. The index is created (and its directory
//!   synced) before the first segment is, so this never happens to a healthy directory.
//!   Starting with an empty index instead would make every snapshot unreadable while new
//!   data mixed in with the old; only the operator knows whether to restore the index or
//!   to give the segments up.
//! - **A segment file with data but no indexed chunk: moved to `ROOT/lost+found/`**, not
//!   deleted, and the store opens. This is also what a crash between writing a new
//!   segment's first chunks and committing their entries leaves behind (then the file is
//!   garbage), and refusing to start after such a crash would turn every crash into an
//!   outage; moving costs only the disk space until someone removes the file. A segment
//!   with no data at all (empty, or only holes GC punched) is removed.
//!
//! Within a segment the index does name, bytes no entry covers are still given back: they
//! are the slots of writes that never committed and holes already punched.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use strata_core::ports::StoreError;
use strata_types::ChunkDigest;

use super::index::Location;
use super::segments::{self, Segments};

/// What [`reclaim`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reclaimed {
    /// The id the next new segment must get (above every existing or referenced one).
    pub(super) next_segment: u32,
    /// Segment files removed because no chunk in them is indexed and they hold no data.
    pub(super) segments_removed: usize,
    /// Segment files with data but no indexed chunk, moved to `lost+found`.
    pub(super) segments_moved_aside: usize,
    /// Unindexed byte ranges given back to the file system.
    pub(super) ranges_punched: usize,
}

/// Refuse to open a chunk directory whose index file `index` is missing or empty while
/// the segment directory `dir` holds segment files (see the module docs); `Ok` otherwise.
pub(super) fn require_index(index: &Path, dir: &Path) -> Result<(), StoreError> {
    let present = match fs::metadata(index) {
        Ok(metadata) => metadata.len() > 0,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(io_error("inspect", index, &e)),
    };
    if present || !dir.exists() {
        return Ok(());
    }
    let segments = read_dir(dir)?
        .iter()
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(segments::parse_file_name)
                .is_some()
        })
        .count();
    if segments == 0 {
        return Ok(());
    }
    Err(StoreError::Backend(format!(
        "the chunk index {} is missing or empty, but {} holds {segments} segment file(s): \
         without the index their chunks cannot be found. Nothing was changed. Restore \
         index.redb from a backup taken with these segments, or, to give their chunks up \
         (every snapshot referring to them then reads as missing), move {} somewhere else \
         and start again",
        index.display(),
        dir.display(),
        dir.display(),
    )))
}

/// Give back every byte of the segments in `dir` that no index entry covers: the slots of
/// writes that never committed (the process stopped between the write and the commit),
/// and the holes GC already punched (a no-op then). A segment with no entry at all is
/// removed if it holds no data, else moved to `lost_found` (see the module docs). Must
/// run before any new write: only then is every unindexed byte garbage.
pub(super) fn reclaim(
    dir: &Path,
    lost_found: &Path,
    segments: &Segments,
    entries: &[(ChunkDigest, Location)],
) -> Result<Reclaimed, StoreError> {
    let mut by_segment: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
    for (_, location) in entries {
        by_segment
            .entry(location.segment)
            .or_default()
            .push((location.offset, location.offset + location.slot()));
    }
    // New segments are numbered above every existing file and every id the index names
    // (a segment file may be missing: reusing its id would put new chunks where old
    // entries point).
    let mut reclaimed = Reclaimed {
        next_segment: by_segment
            .last_key_value()
            .map_or(0, |(id, _)| id.saturating_add(1)),
        ..Reclaimed::default()
    };
    for entry in read_dir(dir)? {
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(segments::parse_file_name)
        else {
            continue;
        };
        reclaimed.next_segment = reclaimed.next_segment.max(id.saturating_add(1));
        let Some(slots) = by_segment.get_mut(&id) else {
            let path = entry.path();
            if holds_data(&path)? {
                let moved = move_aside(&path, lost_found)?;
                tracing::warn!(
                    segment = %path.display(),
                    moved_to = %moved.display(),
                    "a segment with data holds no indexed chunk (a crash before its first commit, \
                     or an index older than the segments): moved aside; remove it once you know \
                     it is not needed"
                );
                reclaimed.segments_moved_aside += 1;
            } else {
                fs::remove_file(&path).map_err(|e| io_error("remove", &path, &e))?;
                reclaimed.segments_removed += 1;
            }
            continue;
        };
        let Some(segment) = segments
            .get(id)
            .map_err(|e| io_error("open", &entry.path(), &e))?
        else {
            continue;
        };
        let failed = |e: io::Error| io_error("reclaim space in", segment.path(), &e);
        slots.sort_unstable();
        let mut covered_to = 0;
        for &(start, end) in slots.iter() {
            if start > covered_to {
                segment
                    .punch(covered_to, start - covered_to)
                    .map_err(failed)?;
                reclaimed.ranges_punched += 1;
            }
            covered_to = covered_to.max(end);
        }
        if segment.len().map_err(failed)? > covered_to {
            segment.truncate(covered_to).map_err(failed)?;
            reclaimed.ranges_punched += 1;
        }
    }
    if reclaimed.segments_moved_aside > 0 {
        // The new names (and `lost+found` itself, if it was just made) must be durable
        // before the old ones' removal is.
        sync_dir(lost_found)?;
        if let Some(parent) = lost_found.parent() {
            sync_dir(parent)?;
        }
    }
    if reclaimed.segments_moved_aside + reclaimed.segments_removed > 0 {
        sync_dir(dir)?;
    }
    Ok(reclaimed)
}

/// Whether the file at `path` holds any data (not only holes). Where the file system
/// cannot tell, it does (nothing is deleted on a guess).
fn holds_data(path: &Path) -> Result<bool, StoreError> {
    let file = fs::File::open(path).map_err(|e| io_error("open", path, &e))?;
    let len = file
        .metadata()
        .map_err(|e| io_error("inspect", path, &e))?
        .len();
    if len == 0 {
        return Ok(false);
    }
    match rustix::fs::seek(&file, rustix::fs::SeekFrom::Data(0)) {
        Ok(_) => Ok(true),
        // No data from offset 0 to the end: only holes.
        Err(rustix::io::Errno::NXIO) => Ok(false),
        Err(_) => Ok(true),
    }
}

/// Move the file at `path` into `lost_found` (created if needed) under its own name, or
/// that name with a numeric suffix if it is taken. Returns where it went.
fn move_aside(path: &Path, lost_found: &Path) -> Result<PathBuf, StoreError> {
    fs::create_dir_all(lost_found).map_err(|e| io_error("create", lost_found, &e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = name.unwrap_or_else(|| "segment".into());
    let mut target = lost_found.join(&name);
    let mut n = 1;
    while target.exists() {
        target = lost_found.join(format!("{name}.{n}"));
        n += 1;
    }
    fs::rename(path, &target).map_err(|e| io_error("move aside", path, &e))?;
    Ok(target)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("sync", dir, &e))
}

/// The chunk files of format version 1 under `root`: `root/ab/cd/abcd…` (64 hex digits),
/// with their digests. A `root/tmp/` of that format holds only unfinished writes.
pub(super) fn legacy_chunks(root: &Path) -> Result<Vec<(ChunkDigest, PathBuf)>, StoreError> {
    let mut found = Vec::new();
    for first in read_dir(root)? {
        if !is_fan_out_dir(&first) {
            continue;
        }
        for second in read_dir(&first.path())? {
            if !is_fan_out_dir(&second) {
                continue;
            }
            for file in read_dir(&second.path())? {
                if let Some(digest) = file
                    .file_name()
                    .to_str()
                    .and_then(|name| ChunkDigest::from_hex(name).ok())
                {
                    found.push((digest, file.path()));
                }
            }
        }
    }
    Ok(found)
}

/// Remove the empty fan-out directories and the `tmp/` of format version 1.
pub(super) fn remove_legacy_dirs(root: &Path) -> Result<(), StoreError> {
    let tmp = root.join("tmp");
    if tmp.is_dir() {
        fs::remove_dir_all(&tmp).map_err(|e| io_error("remove", &tmp, &e))?;
    }
    for first in read_dir(root)? {
        if !is_fan_out_dir(&first) {
            continue;
        }
        for second in read_dir(&first.path())? {
            if is_fan_out_dir(&second) {
                // Fails (and is left) if a file the import could not take is still there.
                let _ = fs::remove_dir(second.path());
            }
        }
        let _ = fs::remove_dir(first.path());
    }
    Ok(())
}

fn is_fan_out_dir(entry: &fs::DirEntry) -> bool {
    let name = entry.file_name();
    let name = name.to_string_lossy();
    name.len() == 2
        && name.bytes().all(|b| b.is_ascii_hexdigit())
        && entry.file_type().is_ok_and(|t| t.is_dir())
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, StoreError> {
    fs::read_dir(dir)
        .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
        .map_err(|e| io_error("list", dir, &e))
}

/// A typed I/O failure (its kind decides whether a retry may help, see
/// `StoreError::is_retryable`), naming what was done to which file.
pub(super) fn io_error(action: &str, path: &Path, error: &io::Error) -> StoreError {
    let source = match error.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(error.kind(), error.to_string()),
    };
    StoreError::io(format!("{action} {}", path.display()), source)
}
