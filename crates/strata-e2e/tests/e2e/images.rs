//! Test images: generated sparse files with random, repeated, zero-filled and empty regions.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

pub const BLOCK: u64 = 524_288;
pub const MIB: u64 = 1024 * 1024;

/// What a region of blocks holds.
#[derive(Debug, Clone, Copy)]
pub enum Fill {
    /// Never written: a hole.
    Hole,
    /// Different random bytes in every block.
    Random(u64),
    /// The same random block, again and again.
    Repeated(u64),
    /// Zeros, written (allocated, but all-zero content).
    Zeros,
    /// Random bytes in the first 100 KiB of each block, then zeros.
    Partial(u64),
}

/// A generated image and what it holds.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub len: u64,
    /// Blocks whose content is not all zeros.
    pub data_blocks: BTreeSet<u32>,
}

fn random(seed: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// Content of block `index` under `fill` (`None`: leave a hole).
fn content(fill: Fill, index: u64) -> Option<Vec<u8>> {
    let block = usize::try_from(BLOCK).expect("fits");
    match fill {
        Fill::Hole => None,
        Fill::Random(seed) => Some(random(seed.wrapping_mul(1_000_003) ^ index, block)),
        Fill::Repeated(seed) => Some(random(seed, block)),
        Fill::Zeros => Some(vec![0u8; block]),
        Fill::Partial(seed) => {
            let mut data = random(seed.wrapping_mul(7_919) ^ index, 100 * 1024);
            data.resize(block, 0);
            Some(data)
        }
    }
}

/// Create a sparse image of `len` bytes laid out by `regions` (block ranges).
pub fn generate(path: &Path, len: u64, regions: &[(Range<u64>, Fill)]) -> ImageInfo {
    let file = File::create(path).expect("create image");
    file.set_len(len).expect("size image");
    let mut data_blocks = BTreeSet::new();
    for (range, fill) in regions {
        for index in range.clone() {
            write_block(&file, len, index, *fill, &mut data_blocks);
        }
    }
    ImageInfo { len, data_blocks }
}

fn write_block(file: &File, len: u64, index: u64, fill: Fill, data_blocks: &mut BTreeSet<u32>) {
    let offset = index * BLOCK;
    let index32 = u32::try_from(index).expect("index");
    match content(fill, index) {
        None => {}
        Some(data) => {
            let n = usize::try_from((len - offset).min(BLOCK)).expect("fits");
            file.write_all_at(&data[..n], offset).expect("write image");
            if data[..n].iter().any(|&b| b != 0) {
                data_blocks.insert(index32);
            } else {
                data_blocks.remove(&index32);
            }
        }
    }
}

/// The 256 MiB image of the round-trip tests: random, repeated, zero-filled and empty
/// regions, and a last block with a few bytes at its end.
pub fn standard_image(path: &Path) -> ImageInfo {
    let len = 256 * MIB;
    let mut info = generate(
        path,
        len,
        &[
            (0..64, Fill::Random(1)),
            (64..128, Fill::Hole),
            (128..192, Fill::Repeated(2)),
            (192..200, Fill::Zeros),
            (200..300, Fill::Hole),
            (300..360, Fill::Partial(3)),
            (360..511, Fill::Hole),
        ],
    );
    let file = OpenOptions::new().write(true).open(path).expect("open");
    file.write_all_at(b"the end", len - 7).expect("write");
    info.data_blocks.insert(511);
    info
}

/// Copy `from` to `to` (sparse), then rewrite the given blocks.
pub fn modified_copy(
    from: &Path,
    to: &Path,
    base: &ImageInfo,
    changes: &[(u64, Fill)],
) -> ImageInfo {
    let source = File::open(from).expect("open");
    let target = File::create(to).expect("create");
    target.set_len(base.len).expect("size");
    let mut buffer = vec![0u8; usize::try_from(BLOCK).expect("fits")];
    for &index in &base.data_blocks {
        let offset = u64::from(index) * BLOCK;
        let n = usize::try_from((base.len - offset).min(BLOCK)).expect("fits");
        source
            .read_exact_at(&mut buffer[..n], offset)
            .expect("read");
        target.write_all_at(&buffer[..n], offset).expect("write");
    }
    let mut info = base.clone();
    for &(index, fill) in changes {
        match fill {
            Fill::Hole => {
                let offset = index * BLOCK;
                let n = usize::try_from((base.len - offset).min(BLOCK)).expect("fits");
                target.write_all_at(&vec![0u8; n], offset).expect("write");
                info.data_blocks
                    .remove(&u32::try_from(index).expect("index"));
            }
            fill => write_block(&target, base.len, index, fill, &mut info.data_blocks),
        }
    }
    info
}

/// Hex SHA-256 of the first `limit` bytes of a file (all of it when `None`).
pub fn sha256_file(path: &Path, limit: Option<u64>) -> String {
    let file = File::open(path).expect("open");
    let mut reader: Box<dyn Read> = match limit {
        Some(limit) => Box::new(file.take(limit)),
        None => Box::new(file),
    };
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 4 * 1024 * 1024];
    loop {
        let n = reader.read(&mut buffer).expect("read");
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    hex::encode(hasher.finalize())
}

/// Whether `path` holds only zeros from `offset` on.
pub fn zeros_from(path: &Path, offset: u64) -> bool {
    let file = File::open(path).expect("open");
    let len = file.metadata().expect("metadata").len();
    let mut buffer = vec![0u8; 4 * 1024 * 1024];
    let mut at = offset;
    while at < len {
        let n = usize::try_from((len - at).min(buffer.len() as u64)).expect("fits");
        file.read_exact_at(&mut buffer[..n], at).expect("read");
        if buffer[..n].iter().any(|&b| b != 0) {
            return false;
        }
        at += n as u64;
    }
    true
}

/// Bytes the file system allocated for `path`.
pub fn allocated_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).expect("metadata").blocks() * 512
}

/// `len` bytes of `path` at `offset`.
/// [`allocated_bytes`], or 0 while the file does not exist.
pub fn allocated_bytes_if_exists(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

pub fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let file = File::open(path).expect("open");
    let mut data = vec![0u8; len];
    file.read_exact_at(&mut data, offset).expect("read");
    data
}
