//! Disk baselines in the filesystem that holds Strata's data:
//!
//! - [`direct_write`]: sequential 4 MiB `O_DIRECT` writes to one temp file (what
//!   `dd bs=4M oflag=direct` measures), the device's streaming write rate. The put target
//!   of issue 5 is relative to min(sink, this).
//! - [`chunk_files`]: the pattern of Strata's chunk store, without HTTP or hashing: each
//!   512 KiB block written to its own temp file, fsynced, renamed into place, and the
//!   directory fsynced, from many threads at once. It shows what that layout costs on this
//!   disk, apart from everything else Strata does.
//!
//! `O_DIRECT` needs no `unsafe`: std's `OpenOptionsExt::custom_flags` passes the flag, and
//! the aligned buffer is a slice at an aligned offset inside an over-allocated `Vec`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
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
    let (mut file, direct) = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
    {
        Ok(file) => (file, true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?,
            false,
        ),
        Err(e) => return Err(e),
    };
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

/// Write `files` blocks of 512 KiB as Strata's chunk store does (temp file, fsync, rename,
/// fsync of the directory), from `threads` threads at once, under `dir`. With `direct`,
/// the same with each file opened `O_DIRECT` (no copy into the page cache), to measure
/// what that option would change.
pub fn chunk_files(dir: &Path, files: usize, threads: usize, direct: bool) -> io::Result<DiskRate> {
    let root = dir.join(format!(
        ".strata-bench-chunks-{}-{}",
        std::process::id(),
        if direct { "direct" } else { "buffered" }
    ));
    std::fs::create_dir(&root)?;
    let _guard = Removed(root.clone());
    let temp = root.join("tmp");
    let target = root.join("ab");
    std::fs::create_dir(&temp)?;
    std::fs::create_dir(&target)?;
    let mut storage = vec![0u8; BLOCK_SIZE + ALIGN];
    let offset = storage.as_ptr().align_offset(ALIGN);
    let block = &mut storage[offset..offset + BLOCK_SIZE];
    filler(block, 0xC4_0C);
    let block: &[u8] = block;
    let flags = if direct { libc::O_DIRECT } else { 0 };
    let threads = threads.clamp(1, files.max(1));
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (temp, target) = (&temp, &target);
                scope.spawn(move || -> io::Result<()> {
                    for n in (t..files).step_by(threads) {
                        let name = format!("chunk-{n}");
                        let staged = temp.join(&name);
                        let mut file = OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .custom_flags(flags)
                            .open(&staged)?;
                        file.write_all(block)?;
                        file.sync_all()?;
                        drop(file);
                        std::fs::rename(&staged, target.join(&name))?;
                        File::open(target)?.sync_all()?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err(io::Error::other("worker panicked")))
        })
    })?;
    Ok(DiskRate {
        bytes: (files * BLOCK_SIZE) as u64,
        elapsed: started.elapsed(),
        direct,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_write_and_clean_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let direct = direct_write(dir.path(), 1).expect("direct write");
        assert_eq!(direct.bytes, DIRECT_CHUNK as u64);
        for direct in [false, true] {
            let chunks = chunk_files(dir.path(), 8, 3, direct).expect("chunk files");
            assert_eq!(chunks.bytes, 8 * BLOCK_SIZE as u64);
        }
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
    }
}
