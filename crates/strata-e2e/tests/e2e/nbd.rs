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
        super::harness::skip("qemu-img not on PATH");
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
