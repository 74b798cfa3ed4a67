//! Segment files: append-only files that hold chunk bytes at 4 KiB-aligned offsets.
//!
//! New chunks are appended to the *active* segment; when it is full, the next one is
//! created. A segment is never appended to again once the process that filled it has
//! stopped, which is what lets [`super::recovery`] reclaim whatever an interrupted write
//! left behind. Space of deleted chunks is returned to the file system by punching holes
//! (`fallocate(PUNCH_HOLE)`), so there is no compaction.
//!
//! A rollover that fails after creating its file (the `O_DIRECT` open or the directory
//! sync failed) removes that file and never reuses its id: the failure costs the writes
//! of that group, not every rollover until a restart.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Bytes;
use strata_core::buffers::BlockBuffer;
use strata_core::buffers::{BUFFER_ALIGN, aligned_buffer};

/// Every chunk starts on this boundary, so `O_DIRECT` can read and write it.
pub(super) const SLOT_ALIGN: u64 = BUFFER_ALIGN as u64;

/// The bytes a chunk of `len` bytes occupies in its segment.
pub(super) fn slot_len(len: u64) -> u64 {
    len.div_ceil(SLOT_ALIGN) * SLOT_ALIGN
}

/// The file name of segment `id`.
pub(super) fn file_name(id: u32) -> String {
    format!("{id:08x}.seg")
}

/// The id of a segment file name, if it is one.
pub(super) fn parse_file_name(name: &str) -> Option<u32> {
    let hex = name.strip_suffix(".seg")?;
    if hex.len() != 8 {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

/// One open segment file.
#[derive(Debug)]
pub(super) struct Segment {
    pub(super) id: u32,
    path: PathBuf,
    /// The file opened with `O_DIRECT`, where the file system allows it: aligned chunks
    /// go between the disk and our buffers without a copy through the page cache.
    direct: Option<File>,
    /// The same file through the page cache: for unaligned buffers, `fdatasync` and holes.
    buffered: File,
    #[cfg(test)]
    faults: Arc<Faults>,
}

/// Faults a test injects into the I/O of one [`Segments`] (test builds only: no cost in
/// the real one).
#[cfg(test)]
#[derive(Debug, Default)]
pub(super) struct Faults {
    /// Fail the next rollover after its file was created (as a failed directory sync would).
    pub(super) rollover: std::sync::atomic::AtomicBool,
    /// Fail every segment read with this OS error number (0: none).
    pub(super) read_errno: std::sync::atomic::AtomicI32,
    /// Fail every segment write with this OS error number (0: none).
    pub(super) write_errno: std::sync::atomic::AtomicI32,
}

#[cfg(test)]
impl Faults {
    fn check(errno: &std::sync::atomic::AtomicI32) -> io::Result<()> {
        match errno.load(std::sync::atomic::Ordering::SeqCst) {
            0 => Ok(()),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }

    fn rollover(&self) -> io::Result<()> {
        if self
            .rollover
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(io::Error::other("injected: the rollover failed"));
        }
        Ok(())
    }
}

impl Segment {
    fn open(path: PathBuf, id: u32, create: bool) -> io::Result<Self> {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if create {
            options.create_new(true);
        }
        let buffered = options.open(&path)?;
        let direct = match open_direct(&path) {
            Ok(direct) => direct,
            Err(e) => {
                if create {
                    discard(&path);
                }
                return Err(e);
            }
        };
        Ok(Self {
            id,
            path,
            direct,
            buffered,
            #[cfg(test)]
            faults: Arc::default(),
        })
    }

    #[cfg(test)]
    fn with_faults(mut self, faults: &Arc<Faults>) -> Self {
        self.faults = Arc::clone(faults);
        self
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Write `data` at `offset` (not yet durable: see [`Segment::sync`]).
    pub(super) fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        Faults::check(&self.faults.write_errno)?;
        match &self.direct {
            Some(direct) if is_aligned(data) => direct.write_all_at(data, offset),
            _ => self.buffered.write_all_at(data, offset),
        }
    }

    /// Write `parts` back to back from `offset` in as few system calls as possible: one
    /// `pwritev` when every part can go `O_DIRECT` (one submission for the lot), else one
    /// write per part. Not yet durable: see [`Segment::sync`].
    pub(super) fn write_all_vectored_at(&self, offset: u64, parts: &[&[u8]]) -> io::Result<()> {
        #[cfg(test)]
        Faults::check(&self.faults.write_errno)?;
        let Some(direct) = self
            .direct
            .as_ref()
            .filter(|_| parts.iter().all(|p| is_aligned(p)))
        else {
            let mut at = offset;
            for part in parts {
                self.write_at(at, part)?;
                at += part.len() as u64;
            }
            return Ok(());
        };
        let mut slices: Vec<io::IoSlice<'_>> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
        let mut remaining: &mut [io::IoSlice<'_>] = &mut slices;
        let mut at = offset;
        while !remaining.is_empty() {
            let written = rustix::io::pwritev(direct, remaining, at)?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            at += written as u64;
            io::IoSlice::advance_slices(&mut remaining, written);
        }
        Ok(())
    }

    /// Read `len` bytes at `offset` (into a pooled buffer when it fits one block).
    pub(super) fn read_at(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let mut pooled = BlockBuffer::take_for_reading();
        if let Some(window) = pooled.fill(len) {
            self.read_into(window, offset)?;
            return Ok(pooled.freeze());
        }
        let mut buffer = aligned_buffer(len);
        buffer.resize(len, 0);
        self.read_into(&mut buffer, offset)?;
        Ok(buffer.freeze())
    }

    fn read_into(&self, buffer: &mut [u8], offset: u64) -> io::Result<()> {
        #[cfg(test)]
        Faults::check(&self.faults.read_errno)?;
        match &self.direct {
            Some(direct) if is_aligned(buffer) => direct.read_exact_at(buffer, offset),
            _ => self.buffered.read_exact_at(buffer, offset),
        }
    }

    /// Make every completed write durable (`fdatasync`).
    pub(super) fn sync(&self) -> io::Result<()> {
        self.buffered.sync_data()
    }

    /// Give the bytes of `[offset, offset + len)` back to the file system. Returns false
    /// where the file system cannot punch holes (the space then stays allocated).
    pub(super) fn punch(&self, offset: u64, len: u64) -> io::Result<bool> {
        use rustix::fs::{FallocateFlags, fallocate};
        match fallocate(
            &self.buffered,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Shorten the file to `len` bytes.
    pub(super) fn truncate(&self, len: u64) -> io::Result<()> {
        self.buffered.set_len(len)
    }

    pub(super) fn len(&self) -> io::Result<u64> {
        Ok(self.buffered.metadata()?.len())
    }
}

/// Remove the file of a rollover that failed after creating it. Best effort: its id is
/// not used again either way, and a segment without data is removed at the next open.
fn discard(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(segment = %path.display(), "cannot remove the file of a failed rollover: {e}");
    }
}

fn is_aligned(data: &[u8]) -> bool {
    data.as_ptr().align_offset(BUFFER_ALIGN) == 0 && data.len().is_multiple_of(BUFFER_ALIGN)
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(file) => Ok(Some(file)),
        // tmpfs and some others refuse O_DIRECT: everything goes through the page cache there.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> io::Result<Option<File>> {
    Ok(None)
}

/// The segment directory: the open segments, and where the next chunk goes.
#[derive(Debug)]
pub(super) struct Segments {
    dir: PathBuf,
    segment_bytes: u64,
    open: RwLock<HashMap<u32, Arc<Segment>>>,
    active: Mutex<Active>,
    #[cfg(test)]
    pub(super) faults: Arc<Faults>,
}

#[derive(Debug)]
struct Active {
    /// The segment being appended to, and the offset of its next free slot.
    current: Option<(Arc<Segment>, u64)>,
    /// The id the next new segment gets.
    next_id: u32,
}

impl Segments {
    /// The segments of `dir`; new chunks go to new segments (numbered from 1, or from
    /// [`Segments::start_at`]), each filled up to `segment_bytes`.
    pub(super) fn new(dir: PathBuf, segment_bytes: u64) -> Self {
        Self {
            dir,
            segment_bytes,
            open: RwLock::new(HashMap::new()),
            active: Mutex::new(Active {
                current: None,
                next_id: 1,
            }),
            #[cfg(test)]
            faults: Arc::default(),
        }
    }

    /// Number new segments from `next_id` on (before the first allocation).
    pub(super) fn start_at(&self, next_id: u32) {
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        active.next_id = active.next_id.max(next_id);
    }

    /// Reserve a slot for `len` bytes: the segment and the offset to write them at.
    pub(super) fn allocate(&self, len: u64) -> io::Result<(Arc<Segment>, u64)> {
        let slot = slot_len(len);
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((segment, next)) = &mut active.current
            && (*next == 0 || *next + slot <= self.segment_bytes)
        {
            let offset = *next;
            *next += slot;
            return Ok((Arc::clone(segment), offset));
        }
        let id = active.next_id;
        // Taken before the file is made: if this rollover fails half-way, the next one
        // gets a fresh id instead of meeting the file this one left (`create_new`).
        active.next_id = id
            .checked_add(1)
            .ok_or_else(|| io::Error::other("segment ids exhausted"))?;
        let path = self.dir.join(file_name(id));
        let segment = Segment::open(path.clone(), id, true)?;
        #[cfg(test)]
        let segment = segment.with_faults(&self.faults);
        let segment = Arc::new(segment);
        let durable = (|| {
            #[cfg(test)]
            self.faults.rollover()?;
            // The new name must survive a crash before any chunk in it is acknowledged.
            File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = durable {
            discard(&path);
            return Err(e);
        }
        self.open
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::clone(&segment));
        active.current = Some((Arc::clone(&segment), slot));
        Ok((segment, 0))
    }

    /// Segment `id`, opened on first use; `None` if its file does not exist.
    pub(super) fn get(&self, id: u32) -> io::Result<Option<Arc<Segment>>> {
        if let Some(segment) = self
            .open
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
        {
            return Ok(Some(Arc::clone(segment)));
        }
        let segment = match Segment::open(self.dir.join(file_name(id)), id, false) {
            #[cfg(test)]
            Ok(segment) => Arc::new(segment.with_faults(&self.faults)),
            #[cfg(not(test))]
            Ok(segment) => Arc::new(segment),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut open = self.open.write().unwrap_or_else(PoisonError::into_inner);
        Ok(Some(Arc::clone(open.entry(id).or_insert(segment))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_aligned_and_names_round_trip() {
        assert_eq!(slot_len(1), 4096);
        assert_eq!(slot_len(4096), 4096);
        assert_eq!(slot_len(524_288), 524_288);
        assert_eq!(parse_file_name(&file_name(0x1234)), Some(0x1234));
        assert_eq!(parse_file_name("0000001.seg"), None);
        assert_eq!(parse_file_name("00000001.tmp"), None);
    }

    #[test]
    fn allocation_fills_a_segment_then_starts_the_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segments = Segments::new(dir.path().to_path_buf(), 3 * 4096);
        segments.start_at(7);
        let offsets: Vec<(u32, u64)> = (0..5)
            .map(|_| {
                let (segment, offset) = segments.allocate(4000).expect("allocate");
                (segment.id, offset)
            })
            .collect();
        assert_eq!(
            offsets,
            vec![(7, 0), (7, 4096), (7, 8192), (8, 0), (8, 4096)]
        );
        // A chunk bigger than a segment still gets one (alone).
        let (big, offset) = segments.allocate(5 * 4096).expect("allocate");
        assert_eq!((big.id, offset), (9, 0));
        assert!(segments.get(8).expect("get").is_some());
        assert!(segments.get(99).expect("get").is_none());
    }

    #[test]
    fn vectored_writes_put_each_part_in_its_slot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segments = Segments::new(dir.path().to_path_buf(), 1 << 30);
        let parts: Vec<bytes::BytesMut> = (1..=3u8)
            .map(|n| {
                let mut part = aligned_buffer(8192);
                part.resize(8192, n);
                part
            })
            .collect();
        let (segment, offset) = segments.allocate(3 * 8192).expect("allocate");
        let slices: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
        segment
            .write_all_vectored_at(offset, &slices)
            .expect("direct, one call");
        // Unaligned parts take the one-write-per-part path.
        let (_, tail) = segments.allocate(6).expect("allocate");
        segment
            .write_all_vectored_at(tail, &[b"abc", b"def"])
            .expect("buffered");
        for (n, part) in parts.iter().enumerate() {
            let at = offset + 8192 * n as u64;
            assert_eq!(segment.read_at(at, 8192).expect("read"), part[..]);
        }
        assert_eq!(&segment.read_at(tail, 6).expect("read")[..], b"abcdef");
    }

    #[test]
    fn written_bytes_read_back_and_punched_ones_read_as_zeros() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segments = Segments::new(dir.path().to_path_buf(), 1 << 30);
        let mut aligned = aligned_buffer(8192);
        aligned.resize(8192, 0xab);
        let (segment, first) = segments.allocate(8192).expect("allocate");
        segment.write_at(first, &aligned).expect("write");
        let (_, second) = segments.allocate(10).expect("allocate");
        segment.write_at(second, b"0123456789").expect("write");
        segment.sync().expect("sync");
        assert_eq!(
            segment.read_at(first, 8192).expect("read"),
            aligned.freeze()
        );
        assert_eq!(
            &segment.read_at(second, 10).expect("read")[..],
            b"0123456789"
        );
        if segment.punch(first, 8192).expect("punch") {
            assert!(
                segment
                    .read_at(first, 8192)
                    .expect("read")
                    .iter()
                    .all(|b| *b == 0)
            );
        }
        assert_eq!(segment.len().expect("len"), second + 10);
    }
}
