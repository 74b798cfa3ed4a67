//! Raw disk images and block devices: block reads that know about holes, sparse writes.
//!
//! Reads and writes are positional (`pread`/`pwrite`), so many tasks share one open file
//! without a lock. They block: callers run them on tokio's blocking pool.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use rustix::fs::{FallocateFlags, SeekFrom as RawSeek};
use strata_types::BLOCK_SIZE;

use crate::error::ImageError;

/// [`BLOCK_SIZE`] as a file offset.
pub const BLOCK_BYTES: u64 = BLOCK_SIZE as u64;

/// Blocks needed to hold `len` bytes.
pub fn blocks_for(len: u64) -> u64 {
    len.div_ceil(BLOCK_BYTES)
}

/// Whether `data` is all zeros. OR-folds 4 KiB at a time (which the compiler vectorises)
/// and stops at the first chunk holding data.
pub fn is_zero(data: &[u8]) -> bool {
    data.chunks(4096)
        .all(|chunk| chunk.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// An image to read: a regular file (holes known from `SEEK_DATA`/`SEEK_HOLE`) or a block
/// device.
#[derive(Debug)]
pub struct SourceImage {
    path: PathBuf,
    file: File,
    len: u64,
    /// Byte ranges that may hold data, ascending; everything else reads as zeros.
    data: Vec<Range<u64>>,
}

impl SourceImage {
    /// Open `path` read-only and map its holes.
    pub fn open(path: &Path) -> Result<Self, ImageError> {
        let mut file = File::open(path).map_err(|e| ImageError::new("open", path, e))?;
        let metadata = file
            .metadata()
            .map_err(|e| ImageError::new("inspect", path, e))?;
        let kind = metadata.file_type();
        let (len, data) = if kind.is_file() {
            let len = metadata.len();
            (len, data_ranges(&file, len))
        } else if kind.is_block_device() {
            // A block device's metadata length is 0; its size is where seeking to the end lands.
            let len = file
                .seek(SeekFrom::End(0))
                .map_err(|e| ImageError::new("find the size of", path, e))?;
            (len, whole(len))
        } else {
            return Err(ImageError::new(
                "use",
                path,
                std::io::Error::other("not a regular file or block device"),
            ));
        };
        Ok(Self {
            path: path.to_owned(),
            file,
            len,
            data,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the image is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of blocks, the last one possibly partial.
    pub fn block_count(&self) -> u64 {
        blocks_for(self.len)
    }

    /// Whether block `index` is certainly all zeros without reading it: it lies entirely in
    /// a hole or past the end.
    pub fn in_hole(&self, index: u64) -> bool {
        let start = index.saturating_mul(BLOCK_BYTES);
        let end = start.saturating_add(BLOCK_BYTES).min(self.len);
        if start >= end {
            return true;
        }
        // The first data range ending after `start` is the only one that can overlap.
        let at = self.data.partition_point(|range| range.end <= start);
        self.data.get(at).is_none_or(|range| range.start >= end)
    }

    /// Read block `index`, zero-padded past the end of the image.
    pub fn read_block(&self, index: u64) -> Result<Bytes, ImageError> {
        let mut buffer = BytesMut::zeroed(BLOCK_SIZE);
        let offset = index.saturating_mul(BLOCK_BYTES);
        if offset < self.len {
            let available =
                usize::try_from((self.len - offset).min(BLOCK_BYTES)).unwrap_or(BLOCK_SIZE);
            self.file
                .read_exact_at(&mut buffer[..available], offset)
                .map_err(|e| ImageError::new(format!("read block {index} of"), &self.path, e))?;
        }
        Ok(buffer.freeze())
    }
}

/// One data range covering `0..len`: "no hole known".
fn whole(len: u64) -> Vec<Range<u64>> {
    std::iter::once(0..len).collect()
}

/// The ranges of `file` that may hold data. Where `SEEK_DATA` is not supported, all of it.
fn data_ranges(file: &File, len: u64) -> Vec<Range<u64>> {
    let mut ranges = Vec::new();
    let mut offset = 0;
    while offset < len {
        let start = match rustix::fs::seek(file, RawSeek::Data(offset)) {
            Ok(start) => start,
            // ENXIO: no data after `offset`.
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return whole(len),
        };
        let end = match rustix::fs::seek(file, RawSeek::Hole(start)) {
            Ok(end) => end.min(len),
            Err(_) => return whole(len),
        };
        if end <= start {
            break;
        }
        ranges.push(start..end);
        offset = end;
    }
    ranges
}

/// What a download writes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A regular file: sparse, holes where the snapshot holds zeros.
    File,
    /// A block device: every byte is written, zeros included (its old content is unknown).
    BlockDevice,
}

/// An output image opened for positional writes.
#[derive(Debug)]
pub struct TargetImage {
    path: PathBuf,
    file: File,
    kind: TargetKind,
    len: u64,
}

impl TargetImage {
    /// Create (or truncate) a regular file of `len` bytes that is one big hole.
    pub fn create_sparse(path: &Path, len: u64) -> Result<Self, ImageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| ImageError::new("create", path, e))?;
        file.set_len(len)
            .map_err(|e| ImageError::new("set the size of", path, e))?;
        Ok(Self {
            path: path.to_owned(),
            file,
            kind: TargetKind::File,
            len,
        })
    }

    /// Open an existing regular file (to resume) or block device for writing.
    pub fn open_existing(path: &Path) -> Result<Self, ImageError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| ImageError::new("open", path, e))?;
        let metadata = file
            .metadata()
            .map_err(|e| ImageError::new("inspect", path, e))?;
        let (kind, len) = if metadata.file_type().is_block_device() {
            let len = file
                .seek(SeekFrom::End(0))
                .map_err(|e| ImageError::new("find the size of", path, e))?;
            (TargetKind::BlockDevice, len)
        } else {
            (TargetKind::File, metadata.len())
        };
        Ok(Self {
            path: path.to_owned(),
            file,
            kind,
            len,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// File or block device.
    pub fn kind(&self) -> TargetKind {
        self.kind
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the target has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Write `data` at `offset`.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), ImageError> {
        self.file
            .write_all_at(data, offset)
            .map_err(|e| ImageError::new(format!("write at offset {offset} of"), &self.path, e))
    }

    /// Make `offset..offset + len` read as zeros: a hole in a regular file (zeros written
    /// where the file system cannot punch holes), zeros on a block device.
    pub fn zero_range(&self, offset: u64, len: u64) -> Result<(), ImageError> {
        if self.kind == TargetKind::File
            && rustix::fs::fallocate(
                &self.file,
                FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                offset,
                len,
            )
            .is_ok()
        {
            return Ok(());
        }
        let zeros = vec![0u8; BLOCK_SIZE];
        let mut at = offset;
        let end = offset.saturating_add(len);
        while at < end {
            let n = usize::try_from((end - at).min(BLOCK_BYTES)).unwrap_or(BLOCK_SIZE);
            self.write_at(at, &zeros[..n])?;
            at += n as u64;
        }
        Ok(())
    }

    /// Flush data (not metadata) to stable storage.
    pub fn sync_data(&self) -> Result<(), ImageError> {
        self.file
            .sync_data()
            .map_err(|e| ImageError::new("sync", &self.path, e))
    }

    /// Flush data and metadata to stable storage.
    pub fn sync_all(&self) -> Result<(), ImageError> {
        self.file
            .sync_all()
            .map_err(|e| ImageError::new("sync", &self.path, e))
    }
}

/// Fsync the directory holding `path`, so a rename or creation in it is durable.
pub fn sync_parent_dir(path: &Path) -> Result<(), ImageError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ImageError::new("sync the directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        let mut data = vec![0u8; BLOCK_SIZE];
        assert!(is_zero(&data));
        data[BLOCK_SIZE - 1] = 1;
        assert!(!is_zero(&data));
        assert!(is_zero(&[]));
    }

    #[test]
    fn holes_are_found_and_reads_are_padded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("img");
        let len = 10 * BLOCK_BYTES + 100;
        let target = TargetImage::create_sparse(&path, len).expect("create");
        target
            .write_at(3 * BLOCK_BYTES + 5, b"data")
            .expect("write");
        target
            .write_at(10 * BLOCK_BYTES, &[9u8; 100])
            .expect("write");
        drop(target);

        let image = SourceImage::open(&path).expect("open");
        assert_eq!((image.len(), image.block_count()), (len, 11));
        assert!(!image.in_hole(3));
        assert!(!image.in_hole(10));
        assert!(image.in_hole(11) && image.in_hole(99));
        // Whether 0 is a hole depends on the file system; if it says so, it must be zeros.
        for index in 0..11 {
            let block = image.read_block(index).expect("read");
            assert_eq!(block.len(), BLOCK_SIZE);
            if image.in_hole(index) {
                assert!(is_zero(&block), "block {index}");
            }
        }
        let last = image.read_block(10).expect("read");
        assert!(last[..100].iter().all(|&b| b == 9) && is_zero(&last[100..]));
    }

    #[test]
    fn zero_range_clears_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("img");
        let target = TargetImage::create_sparse(&path, 2 * BLOCK_BYTES).expect("create");
        target
            .write_at(0, &vec![7u8; 2 * BLOCK_SIZE])
            .expect("write");
        target.zero_range(0, BLOCK_BYTES).expect("zero");
        drop(target);
        let image = SourceImage::open(&path).expect("open");
        assert!(is_zero(&image.read_block(0).expect("read")));
        assert!(!is_zero(&image.read_block(1).expect("read")));
    }
}
