//! Disk baselines in the filesystem that holds Strata's data:
//!
//! - [`direct_write`]: sequential 4 MiB `O_DIRECT` writes to one temp file (what
//!   `dd bs=4M oflag=direct` measures), the device's streaming write rate. The put target
//!   of issue 5 is relative to min(sink, this).
//! - [`direct_read`]: 512 KiB `O_DIRECT` reads at the benchmark's concurrency, in file
//!   order: what GetSnapshotBlock of uncached chunks can get from this disk. The get
//!   figure is reported against min(sink, this) too.
//!
//! `O_DIRECT` needs no `unsafe`: std's `OpenOptionsExt::custom_flags` passes the flag, and
//! the aligned buffer is a slice at an aligned offset inside an over-allocated `Vec`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use strata_types::BLOCK_SIZE;

/// Size of each `O_DIRECT` write.
const DIRECT_CHUNK: usize = 4 * 1024 * 1024;
/// Alignment `O_DIRECT` needs for buffer, offset and length (a page covers every device
/// sector size in use).
const ALIGN: usize = 4096;

/// A file or directory removed when dropped, even on an error path.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        // Best effort: a leftover only wastes space in a temp directory.
        let _ = if self.0.is_dir() {
            std::fs::remove_dir_all(&self.0)
        } else {
            std::fs::remove_file(&self.0)
        };
    }
}

/// What a baseline wrote and how long it took (the final fsync included).
#[derive(Debug, Clone, Copy)]
pub struct DiskRate {
    /// Bytes written.
    pub bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Whether `O_DIRECT` was honoured (some filesystems, e.g. tmpfs, refuse it; the write
    /// is then buffered with one fsync at the end).
    pub direct: bool,
}

/// Incompressible filler, so no layer below can shortcut the write.
fn filler(buffer: &mut [u8], seed: u64) {
    let mut state = seed | 1;
    for chunk in buffer.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// Write `total` bytes (rounded up to 4 MiB) with `O_DIRECT` to a temp file in `dir`.
pub fn direct_write(dir: &Path, total: u64) -> io::Result<DiskRate> {
    let path = dir.join(format!(".strata-bench-direct-{}", std::process::id()));
    let _guard = Removed(path.clone());
    direct_write_to(&path, total)
}

/// Create `path` and write `total` bytes (rounded up to 4 MiB) to it with `O_DIRECT`.
fn direct_write_to(path: &Path, total: u64) -> io::Result<DiskRate> {
    let (mut file, direct) =
        open_maybe_direct(OpenOptions::new().write(true).create_new(true), path)?;
    let mut storage = vec![0u8; DIRECT_CHUNK + ALIGN];
    let offset = storage.as_ptr().align_offset(ALIGN);
    let buffer = &mut storage[offset..offset + DIRECT_CHUNK];
    filler(buffer, 0xD15C);
    let chunks = total.div_ceil(DIRECT_CHUNK as u64).max(1);
    let started = Instant::now();
    for _ in 0..chunks {
        file.write_all(buffer)?;
    }
    file.sync_all()?;
    Ok(DiskRate {
        bytes: chunks * DIRECT_CHUNK as u64,
        elapsed: started.elapsed(),
        direct,
    })
}

/// Read `total` bytes (rounded up to 4 MiB) back in 512 KiB `O_DIRECT` reads from
/// `threads` threads at once, each taking the next block not yet read: the pattern of the
/// `get` scenario (C readers walking a snapshot's blocks in order) on chunks laid out in
/// upload order and not in any cache (the chunk store writes and reads with `O_DIRECT`).
/// The file is written first, untimed. Where `O_DIRECT` is refused the reads are buffered
/// and come from the page cache (`direct: false`).
pub fn direct_read(dir: &Path, total: u64, threads: usize) -> io::Result<DiskRate> {
    let path = dir.join(format!(".strata-bench-read-{}", std::process::id()));
    let _guard = Removed(path.clone());
    let written = direct_write_to(&path, total)?;
    let (file, direct) = open_maybe_direct(OpenOptions::new().read(true), &path)?;
    let blocks = usize::try_from(written.bytes).unwrap_or(usize::MAX) / BLOCK_SIZE;
    let threads = threads.clamp(1, blocks.max(1));
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (file, next) = (&file, &next);
                scope.spawn(move || -> io::Result<()> {
                    use std::os::unix::fs::FileExt;
                    let mut storage = vec![0u8; BLOCK_SIZE + ALIGN];
                    let offset = storage.as_ptr().align_offset(ALIGN);
                    let buffer = &mut storage[offset..offset + BLOCK_SIZE];
                    loop {
                        let block = next.fetch_add(1, Ordering::Relaxed);
                        if block >= blocks {
                            return Ok(());
                        }
                        file.read_exact_at(buffer, (block * BLOCK_SIZE) as u64)?;
                    }
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err(io::Error::other("worker panicked")))
        })
    })?;
    Ok(DiskRate {
        bytes: (blocks * BLOCK_SIZE) as u64,
        elapsed: started.elapsed(),
        direct,
    })
}

/// Open `path` with `options` plus `O_DIRECT`, or without it where the filesystem refuses it.
fn open_maybe_direct(options: &mut OpenOptions, path: &Path) -> io::Result<(File, bool)> {
    match options.clone().custom_flags(libc::O_DIRECT).open(path) {
        Ok(file) => Ok((file, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok((options.open(path)?, false)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_write_and_clean_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let direct = direct_write(dir.path(), 1).expect("direct write");
        assert_eq!(direct.bytes, DIRECT_CHUNK as u64);
        let read = direct_read(dir.path(), 1, 3).expect("direct read");
        assert_eq!(read.bytes, DIRECT_CHUNK as u64);
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
    }
}
