//! What [`super::FsChunkStore::open`] does before serving: give back the space of writes a
//! crash interrupted, and import chunks stored in the layout of format version 1.

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
    /// Segment files removed because no chunk in them is indexed.
    pub(super) segments_removed: usize,
    /// Unindexed byte ranges given back to the file system.
    pub(super) ranges_punched: usize,
}

/// Give back every byte of the segments in `dir` that no index entry covers: the slots of
/// writes that never committed (the process stopped between the write and the commit),
/// and the holes GC already punched (a no-op then). Segments with no entry at all are
/// removed. Must run before any new write: only then is every unindexed byte garbage.
pub(super) fn reclaim(
    dir: &Path,
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
            fs::remove_file(&path).map_err(|e| io_error("remove", &path, &e))?;
            reclaimed.segments_removed += 1;
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
    Ok(reclaimed)
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

pub(super) fn io_error(action: &str, path: &Path, error: &io::Error) -> StoreError {
    StoreError::Backend(format!("cannot {action} {}: {error}", path.display()))
}
