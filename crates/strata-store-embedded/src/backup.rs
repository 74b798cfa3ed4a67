//! The pieces of an online backup of a data directory, for the server's `backup` admin call
//! (which orders them and holds the GC lease meanwhile; see its module docs):
//! [`RedbMetadataStore::backup_to`](crate::RedbMetadataStore::backup_to) and
//! [`FsChunkStore::backup_to`](crate::FsChunkStore::backup_to), both built on this module.
//!
//! # A redb database through one read transaction
//! redb has no copy or backup call of its own (4.x has `compact` and `check_integrity`,
//! nothing that writes another file), and its tables are typed: a table can only be opened
//! with the key and value types it was created with. So each store names its own tables
//! ([`TableCopy::table`], one generic copy per definition), and [`copy_database`] refuses
//! to finish if the source holds a table the store did not name: a table added later
//! without adding it to the backup fails every backup loudly instead of leaving it out.
//! Every row comes from the one read transaction the caller opened: a consistent point in
//! time (redb's MVCC), taken without stopping the writer threads.
//!
//! # Segment files: only what the index names
//! A segment is copied range by range, only the bytes the copied index names (adjacent
//! slots merged into one run), each written at its own offset in a new file. The copy is
//! therefore sparse wherever the original is (GC's holes are not named) and also where it
//! holds bytes no entry covers (interrupted writes, or chunks appended after the index was
//! copied): the same bytes an open of the original would give back anyway
//! (`chunks/recovery.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use redb::backends::FileBackend;
use redb::{
    Key, MultimapTableHandle, ReadTransaction, ReadableTable, TableDefinition, TableError,
    TableHandle, Value, WriteTransaction,
};
use strata_core::ports::StoreError;

/// The mode of every file a backup writes: it holds everything the server keeps.
const PRIVATE_FILE: u32 = 0o600;
/// The mode of every directory a backup creates.
const PRIVATE_DIR: u32 = 0o700;
/// How much of a segment is copied per read and write.
const COPY_BUFFER: usize = 8 << 20;

fn redb_error(what: &str, error: impl Into<redb::Error>) -> StoreError {
    match error.into() {
        redb::Error::Io(io) => StoreError::io(format!("back up {what}"), io),
        error => StoreError::Backend(format!("back up {what}: {error}")),
    }
}

fn io_error(action: &str, path: &Path, error: io::Error) -> StoreError {
    StoreError::io(format!("{action} {}", path.display()), error)
}

/// Copies named tables from a read transaction into a new database (see the module docs).
pub(crate) struct TableCopy<'a> {
    what: &'a str,
    from: &'a ReadTransaction,
    to: &'a WriteTransaction,
    copied: BTreeSet<String>,
    rows: u64,
}

impl TableCopy<'_> {
    /// Copy every row of `table` (nothing if the source has no such table). Returns the
    /// rows copied.
    pub(crate) fn table<K: Key + 'static, V: Value + 'static>(
        &mut self,
        table: TableDefinition<K, V>,
    ) -> Result<u64, StoreError> {
        self.copied.insert(table.name().to_owned());
        let source = match self.from.open_table(table) {
            Ok(source) => source,
            Err(TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(redb_error(self.what, e)),
        };
        let mut target = self
            .to
            .open_table(table)
            .map_err(|e| redb_error(self.what, e))?;
        let mut rows = 0;
        for entry in source.iter().map_err(|e| redb_error(self.what, e))? {
            let (key, value) = entry.map_err(|e| redb_error(self.what, e))?;
            target
                .insert(key.value(), value.value())
                .map_err(|e| redb_error(self.what, e))?;
            rows += 1;
        }
        self.rows += rows;
        Ok(rows)
    }
}

/// Write a new database at `to` (which must not exist) holding the tables `tables` copies
/// from `from`, durably; refuse if `from` holds a table `tables` did not copy. Returns the
/// rows copied.
pub(crate) fn copy_database(
    what: &str,
    from: &ReadTransaction,
    to: &Path,
    tables: impl FnOnce(&mut TableCopy<'_>) -> Result<(), StoreError>,
) -> Result<u64, StoreError> {
    // Created empty first, private and refusing an existing file; redb initialises an
    // empty file as a new database.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(to)
        .map_err(|e| io_error("create", to, e))?;
    let backend = FileBackend::new(file).map_err(|e| redb_error(what, e))?;
    let db = redb::Builder::new()
        .create_with_backend(backend)
        .map_err(|e| redb_error(what, e))?;
    let txn = db.begin_write().map_err(|e| redb_error(what, e))?;
    let mut copy = TableCopy {
        what,
        from,
        to: &txn,
        copied: BTreeSet::new(),
        rows: 0,
    };
    tables(&mut copy)?;
    let rows = copy.rows;
    let copied = copy.copied;
    let present: Vec<String> = from
        .list_tables()
        .map_err(|e| redb_error(what, e))?
        .map(|table| table.name().to_owned())
        .chain(
            from.list_multimap_tables()
                .map_err(|e| redb_error(what, e))?
                .map(|table| table.name().to_owned()),
        )
        .collect();
    if let Some(missed) = present.iter().find(|name| !copied.contains(*name)) {
        return Err(StoreError::Backend(format!(
            "back up {what}: the table {missed:?} is not one the backup knows; refusing an \
             incomplete copy (this build's backup must be taught the table)"
        )));
    }
    // The default durability (`Immediate`): the commit is on disk when it returns.
    txn.commit().map_err(|e| redb_error(what, e))?;
    drop(db);
    Ok(rows)
}

/// A byte range `[start, end)` of a segment to copy.
pub(crate) type Range = (u64, u64);

/// Copy `ranges` of `source` into the new file `target` at the same offsets. `merge_gap`:
/// ranges less than this apart are copied as one run (the slot padding between them).
/// Returns the bytes copied.
pub(crate) fn copy_ranges(
    source: &Path,
    target: &Path,
    mut ranges: Vec<Range>,
    merge_gap: u64,
) -> Result<u64, StoreError> {
    ranges.sort_unstable();
    let mut runs: Vec<Range> = Vec::new();
    for (start, end) in ranges {
        match runs.last_mut() {
            Some(last) if start <= last.1.saturating_add(merge_gap) => last.1 = last.1.max(end),
            _ => runs.push((start, end)),
        }
    }
    let from = File::open(source).map_err(|e| io_error("open", source, e))?;
    let to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(target)
        .map_err(|e| io_error("create", target, e))?;
    let mut buffer = vec![0u8; COPY_BUFFER];
    let mut copied = 0;
    for (start, end) in runs {
        let mut at = start;
        while at < end {
            let len = usize::try_from(end - at).map_or(COPY_BUFFER, |n| n.min(COPY_BUFFER));
            let part = &mut buffer[..len];
            from.read_exact_at(part, at).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    StoreError::Corrupt(format!(
                        "{} ends before the chunks its index names (at {at}); `strata verify \
                         --all` finds the snapshots affected",
                        source.display()
                    ))
                } else {
                    io_error("read", source, e)
                }
            })?;
            to.write_all_at(part, at)
                .map_err(|e| io_error("write", target, e))?;
            at += len as u64;
            copied += len as u64;
        }
    }
    to.sync_all().map_err(|e| io_error("sync", target, e))?;
    Ok(copied)
}

/// Ranges grouped by the file they are in.
pub(crate) type RangesByFile = BTreeMap<u32, Vec<Range>>;

/// Create the directory `dir` (its parent exists), private.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(PRIVATE_DIR)
        .create(dir)
        .map_err(|e| io_error("create", dir, e))
}

/// Copy the regular files of `source` (not recursively) into the new directory `target`,
/// private; nothing if `source` does not exist. Returns the bytes copied.
pub(crate) fn copy_dir_files(source: &Path, target: &Path) -> Result<u64, StoreError> {
    let entries = match std::fs::read_dir(source) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_error("list", source, e)),
    };
    create_private_dir(target)?;
    let mut bytes = 0;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list", source, e))?;
        let kind = entry
            .file_type()
            .map_err(|e| io_error("inspect", source, e))?;
        if kind.is_file() {
            bytes += copy_private_file(&entry.path(), &target.join(entry.file_name()))?;
        }
    }
    sync_dir(target)?;
    Ok(bytes)
}

/// Copy the file `source` to the new file `target`, mode 0600, durably. Returns its length.
pub fn copy_private_file(source: &Path, target: &Path) -> Result<u64, StoreError> {
    let mut from = File::open(source).map_err(|e| io_error("open", source, e))?;
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(target)
        .map_err(|e| io_error("create", target, e))?;
    let bytes = io::copy(&mut from, &mut to).map_err(|e| io_error("copy", source, e))?;
    // `mode` is filtered by the umask; 0600 is what the file must have whatever it is.
    to.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE))
        .map_err(|e| io_error("chmod", target, e))?;
    to.sync_all().map_err(|e| io_error("sync", target, e))?;
    Ok(bytes)
}

/// Make the names in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("sync", dir, e))
}
