//! The NBD export: `qemu-img convert` + `qemu-img compare`, and concurrent random reads
//! from several connections through a minimal NBD client.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use rand::{Rng, SeedableRng};
use strata_cli::nbd::{NbdOptions, NbdServer};
use strata_cli::{Reporter, UploadOptions, Uploader};
use strata_types::SnapshotId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::harness::TestServer;
use super::images::{BLOCK, Fill, MIB, generate, read_at, sha256_file, zeros_from};

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A 48 MiB image: random, holes, repeated, partial blocks, an unaligned tail.
fn image(dir: &Path) -> (std::path::PathBuf, u64) {
    let path = dir.join("disk.img");
    let len = 48 * MIB - 1000;
    generate(
        &path,
        len,
        &[
            (0..20, Fill::Random(5)),
            (30..40, Fill::Repeated(6)),
            (40..44, Fill::Zeros),
            (60..90, Fill::Partial(7)),
            (95..96, Fill::Random(8)),
        ],
    );
    (path, len)
}

async fn export(
    server: &TestServer,
    snapshot: SnapshotId,
    size: u64,
) -> (SocketAddr, oneshot::Sender<()>) {
    let mut options = NbdOptions::new(snapshot, "127.0.0.1:0".parse().expect("addr"));
    options.size = Some(size);
    let nbd = NbdServer::bind(&server.client(), &options, Reporter::silent())
        .await
        .expect("bind");
    let addr = nbd.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(nbd.serve_until(async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

async fn uploaded(server: &TestServer, image: &Path) -> SnapshotId {
    Uploader::new(&server.client(), Reporter::silent())
        .upload(&UploadOptions::new(image))
        .await
        .expect("upload")
        .snapshot
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_img_converts_the_export_to_an_identical_image() {
    if !on_path("qemu-img") {
        super::harness::required("qemu-img not on PATH");
        return;
    }
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (image, len) = image(dir.path());
    let snapshot = uploaded(&server, &image).await;
    let (addr, _stop) = export(&server, snapshot, len).await;

    let out = dir.path().join("out.img");
    let url = format!("nbd://{addr}");
    let (convert, compare) = {
        let (out, image) = (out.clone(), image.clone());
        tokio::task::spawn_blocking(move || {
            let convert = Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "raw", &url])
                .arg(&out)
                .output()
                .expect("qemu-img runs");
            let compare = Command::new("qemu-img")
                .args(["compare", "-f", "raw", "-F", "raw"])
                .arg(&image)
                .arg(&out)
                .output()
                .expect("qemu-img runs");
            (convert, compare)
        })
        .await
        .expect("join")
    };
    assert!(
        convert.status.success(),
        "convert: {}",
        String::from_utf8_lossy(&convert.stderr)
    );
    assert!(
        compare.status.success(),
        "compare: {}{}",
        String::from_utf8_lossy(&compare.stdout),
        String::from_utf8_lossy(&compare.stderr)
    );
    // The export is rounded up to whole sectors: the image, then zeros.
    assert_eq!(sha256_file(&out, Some(len)), sha256_file(&image, None));
    assert!(zeros_from(&out, len));
}

/// Just enough of an NBD client: fixed newstyle, NBD_OPT_GO, pipelined reads.
struct NbdClient {
    stream: TcpStream,
    size: u64,
}

impl NbdClient {
    async fn connect(addr: SocketAddr) -> Self {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(
            stream.read_u64().await.expect("read"),
            0x4e42_444d_4147_4943
        );
        assert_eq!(
            stream.read_u64().await.expect("read"),
            0x4948_4156_454f_5054
        );
        let _flags = stream.read_u16().await.expect("read");
        stream.write_u32(1 | 2).await.expect("write");
        // NBD_OPT_GO for the default export, no information requests.
        stream
            .write_u64(0x4948_4156_454f_5054)
            .await
            .expect("write");
        stream.write_u32(7).await.expect("write");
        stream.write_u32(6).await.expect("write");
        stream.write_u32(0).await.expect("write");
        stream.write_u16(0).await.expect("write");
        let mut size = 0;
        loop {
            assert_eq!(
                stream.read_u64().await.expect("read"),
                0x0003_e889_0455_65a9
            );
            let _option = stream.read_u32().await.expect("read");
            let kind = stream.read_u32().await.expect("read");
            let len = stream.read_u32().await.expect("read");
            let mut data = vec![0u8; len as usize];
            stream.read_exact(&mut data).await.expect("read");
            match kind {
                1 => break,
                3 if data[..2] == [0, 0] => {
                    size = u64::from_be_bytes(data[2..10].try_into().expect("8 bytes"));
                }
                3 => {}
                other => panic!("unexpected option reply {other:#x}"),
            }
        }
        Self { stream, size }
    }

    async fn send(&mut self, command: u16, cookie: u64, offset: u64, length: u32) {
        let mut frame = Vec::with_capacity(28);
        frame.extend_from_slice(&0x2560_9513u32.to_be_bytes());
        frame.extend_from_slice(&0u16.to_be_bytes());
        frame.extend_from_slice(&command.to_be_bytes());
        frame.extend_from_slice(&cookie.to_be_bytes());
        frame.extend_from_slice(&offset.to_be_bytes());
        frame.extend_from_slice(&length.to_be_bytes());
        self.stream.write_all(&frame).await.expect("send");
    }

    /// One simple reply: (error, cookie); the caller reads the data of a successful read.
    async fn reply_header(&mut self) -> (u32, u64) {
        assert_eq!(self.stream.read_u32().await.expect("read"), 0x6744_6698);
        let error = self.stream.read_u32().await.expect("read");
        let cookie = self.stream.read_u64().await.expect("read");
        (error, cookie)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_random_reads_return_the_image_bytes() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (image, len) = image(dir.path());
    let snapshot = uploaded(&server, &image).await;
    let (addr, _stop) = export(&server, snapshot, len).await;

    let mut connections = Vec::new();
    for seed in 0..4u64 {
        let image = image.clone();
        connections.push(tokio::spawn(async move {
            let mut client = NbdClient::connect(addr).await;
            assert_eq!(client.size, len.next_multiple_of(512));
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            // Pipeline 40 reads at random offsets and lengths (up to 1.5 MiB, across blocks).
            let mut wanted = std::collections::HashMap::new();
            for cookie in 0..40u64 {
                let length = rng.random_range(1..=3 * u32::try_from(BLOCK).expect("fits"));
                let offset = rng.random_range(0..=len - u64::from(length));
                client.send(0, cookie, offset, length).await;
                wanted.insert(cookie, (offset, length));
            }
            for _ in 0..40 {
                let (error, cookie) = client.reply_header().await;
                assert_eq!(error, 0);
                let (offset, length) = wanted.remove(&cookie).expect("known cookie");
                let mut data = vec![0u8; length as usize];
                client.stream.read_exact(&mut data).await.expect("data");
                assert!(
                    data == read_at(&image, offset, length as usize),
                    "read of {length} bytes at {offset} differs"
                );
            }
            // Out of range: EINVAL. A write: EPERM (payload consumed). Then disconnect.
            client.send(0, 100, client.size - 10, 11).await;
            assert_eq!(client.reply_header().await, (22, 100));
            client.send(1, 101, 0, 4).await;
            client.stream.write_all(b"nope").await.expect("payload");
            assert_eq!(client.reply_header().await, (1, 101));
            client.send(2, 102, 0, 0).await;
        }));
    }
    for connection in connections {
        connection.await.expect("connection task");
    }
}

/// A tool a test cannot do without: its absence fails the test, naming the package.
fn require(program: &str, package: &str) {
    assert!(
        on_path(program),
        "{program} is not installed: this test needs it (Debian package {package})"
    );
}

/// `(offset, length, type)` lines of `nbdinfo --map[=CONTEXT] URL`.
fn nbdinfo_map(url: &str, context: Option<&str>) -> Vec<(u64, u64, u32)> {
    let map = match context {
        Some(context) => format!("--map={context}"),
        None => "--map".to_owned(),
    };
    let output = Command::new("nbdinfo")
        .args([map.as_str(), url])
        .output()
        .expect("nbdinfo runs");
    assert!(
        output.status.success(),
        "nbdinfo {map}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let number = |i: usize| -> u64 {
                fields
                    .get(i)
                    .and_then(|f| f.parse().ok())
                    .unwrap_or_else(|| panic!("unexpected nbdinfo line: {line}"))
            };
            (
                number(0),
                number(1),
                u32::try_from(number(2)).expect("type"),
            )
        })
        .collect()
}

/// The blocks a map marks with `flag` (a block counts when any byte of it does).
fn blocks_with(map: &[(u64, u64, u32)], flag: u32, set: bool) -> std::collections::BTreeSet<u32> {
    let mut blocks = std::collections::BTreeSet::new();
    for &(offset, length, kind) in map {
        if (kind & flag != 0) == set {
            for block in offset / BLOCK..(offset + length).div_ceil(BLOCK) {
                blocks.insert(u32::try_from(block).expect("block"));
            }
        }
    }
    blocks
}

/// Issue 13, NBD block status: `base:allocation` tells `nbdinfo`, `qemu-img map` and
/// `nbdcopy` where the holes are, and `qemu:dirty-bitmap:BASE` which blocks changed since
/// the parent snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_status_reports_holes_and_changed_blocks() {
    require("nbdinfo", "libnbd-bin");
    require("nbdcopy", "libnbd-bin");
    require("qemu-img", "qemu-utils");
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (parent_image, len) = image(dir.path());
    let parent_info = generate(
        &dir.path().join("scratch.img"),
        len,
        &[
            (0..20, Fill::Random(5)),
            (30..40, Fill::Repeated(6)),
            (40..44, Fill::Zeros),
            (60..90, Fill::Partial(7)),
            (95..96, Fill::Random(8)),
        ],
    );
    let parent = uploaded(&server, &parent_image).await;
    let child_image = dir.path().join("child.img");
    let child_info = super::images::modified_copy(
        &parent_image,
        &child_image,
        &parent_info,
        &[
            (5, Fill::Random(50)),
            (70, Fill::Random(51)),
            (50, Fill::Random(52)),
        ],
    );
    let mut options = UploadOptions::new(&child_image);
    options.parent = Some(parent.clone());
    options.base = Some(parent_image.clone());
    let child = Uploader::new(&server.client(), Reporter::silent())
        .upload(&options)
        .await
        .expect("upload")
        .snapshot;

    let mut nbd = NbdOptions::new(child, "127.0.0.1:0".parse().expect("addr"));
    nbd.size = Some(len);
    nbd.changed_since = Some(parent.clone());
    let server_nbd = NbdServer::bind(&server.client(), &nbd, Reporter::silent())
        .await
        .expect("bind");
    let addr = server_nbd.local_addr().expect("addr");
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server_nbd.serve_until(async {
        let _ = stopped.await;
    }));
    let url = format!("nbd://{addr}");
    let bitmap = format!("qemu:dirty-bitmap:{parent}");
    let out = dir.path().join("copy.img");
    let (allocation, dirty, qemu_map, copy) = {
        let (url, out) = (url.clone(), out.clone());
        tokio::task::spawn_blocking(move || {
            let allocation = nbdinfo_map(&url, None);
            let dirty = nbdinfo_map(&url, Some(&bitmap));
            let qemu_map = Command::new("qemu-img")
                .args(["map", "--output=json", "-f", "raw", &url])
                .output()
                .expect("qemu-img runs");
            let copy = Command::new("nbdcopy")
                .arg(&url)
                .arg(&out)
                .output()
                .expect("nbdcopy runs");
            (allocation, dirty, qemu_map, copy)
        })
        .await
        .expect("join")
    };

    // Allocation: exactly the child's data blocks are data; the map covers the export.
    let export_size = len.next_multiple_of(512);
    assert_eq!(allocation.first().map(|e| e.0), Some(0));
    assert_eq!(
        allocation.last().map(|e| e.0 + e.1),
        Some(export_size),
        "{allocation:?}"
    );
    assert_eq!(
        blocks_with(&allocation, 1, false),
        child_info.data_blocks,
        "{allocation:?}"
    );
    assert!(
        allocation
            .iter()
            .all(|&(_, _, kind)| kind == 0 || kind == 3),
        "holes read as zeros: {allocation:?}"
    );
    // Dirty bitmap: the three changed blocks, nothing else.
    assert_eq!(
        blocks_with(&dirty, 1, true),
        [5u32, 50, 70].into_iter().collect(),
        "{dirty:?}"
    );

    assert!(
        qemu_map.status.success(),
        "{}",
        String::from_utf8_lossy(&qemu_map.stderr)
    );
    let entries: Vec<(u64, u64, bool)> = String::from_utf8_lossy(&qemu_map.stdout)
        .split('}')
        .filter_map(|entry| {
            let field = |name: &str| {
                let at = entry.find(&format!("\"{name}\":"))? + name.len() + 3;
                let rest = entry[at..].trim_start();
                Some(
                    rest[..rest.find([',', '\n']).unwrap_or(rest.len())]
                        .trim()
                        .to_owned(),
                )
            };
            Some((
                field("start")?.parse().ok()?,
                field("length")?.parse().ok()?,
                field("data")? == "true",
            ))
        })
        .collect();
    let qemu_data: Vec<(u64, u64, u32)> = entries
        .iter()
        .map(|&(start, length, data)| (start, length, u32::from(!data)))
        .collect();
    assert_eq!(
        blocks_with(&qemu_data, 1, false),
        child_info.data_blocks,
        "{entries:?}"
    );

    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    assert_eq!(
        sha256_file(&out, Some(len)),
        sha256_file(&child_image, None)
    );
    assert!(zeros_from(&out, len));
}
