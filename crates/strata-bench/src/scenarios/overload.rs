//! `overload`: what a Strata server holds and answers under hostile or excessive load
//! (issue 12), on one embedded server with tight limits so that the run takes seconds (the
//! report states them):
//!
//! - **idle connections**: twice the connection cap opened and left silent — how many the
//!   server closes, and when (the head deadline);
//! - **half-open heads**: request heads that stop half way — when they are closed;
//! - **a trickled body**: a PutSnapshotBlock body sent a few bytes at a time — how long it
//!   lives and what it is answered;
//! - **10× overload**: ten times the memory budget's worth of concurrent PutSnapshotBlocks,
//!   each sending half its body and then pausing — the answers by kind, how fast the
//!   refused ones came back, and the process's peak RSS against what the bodies would need.
//!
//! The server runs in the benchmark's process, so the RSS is the process's: the clients
//! hold a few KiB each, the rest is the server.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine as _;
use http_body_util::Full;
use sha2::{Digest as _, Sha256};
use strata_server::config::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{Signer, identity};
use crate::cpu::RssPeak;
use crate::report::Record;
use crate::targets::{Instance, Launcher, strata_settings};

const BLOCK: usize = 512 * 1024;

/// The limits of the measured server.
fn limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(3),
        max_connections: 256,
        body_deadline: Duration::from_secs(4),
        body_budget_bytes: 16 << 20,
    }
}

/// Run every phase; one record per phase.
pub async fn run(launcher: &Launcher) -> anyhow::Result<Vec<Record>> {
    let dir = launcher.new_data_dir()?;
    let mut settings = strata_settings(dir.path())?;
    settings.limits = limits();
    settings.body_timeout = Duration::from_secs(3);
    settings.gc_interval = None;
    let server = launcher.start_strata(&settings).await?;
    let addr = server.addr;
    let instance = Instance::strata(server, dir);
    let result = phases(&instance, addr).await;
    instance.stop().await?;
    result
}

async fn phases(instance: &Instance, addr: SocketAddr) -> anyhow::Result<Vec<Record>> {
    let limits = limits();
    let mut records = vec![
        Record::new("overload")
            .text("phase", "limits")
            .int("max_connections", limits.max_connections as u64)
            .num(
                "header_read_timeout_s",
                limits.header_read_timeout.as_secs_f64(),
            )
            .num("idle_timeout_s", limits.idle_timeout.as_secs_f64())
            .num("body_deadline_s", limits.body_deadline.as_secs_f64())
            .int("body_budget_mib", (limits.body_budget_bytes >> 20) as u64),
    ];
    records.push(idle_connections(addr, 2 * limits.max_connections).await?);
    records.push(half_open_heads(addr, 64).await?);
    let client = instance.client();
    let snapshot = client
        .start_snapshot(1, None)
        .await
        .context("StartSnapshot")?;
    records.push(trickled_body(instance, addr, &snapshot).await?);
    let overload = 10 * limits.body_budget_bytes / BLOCK;
    records.push(ten_times_the_budget(instance, addr, &snapshot, overload).await?);
    Ok(records)
}

/// Open `count` connections, send nothing, and time when the server closes each. They
/// are opened one after another: opened all at once, some would overflow the listen
/// backlog, and the kernel (not the server) would leave them half-made.
async fn idle_connections(addr: SocketAddr, count: usize) -> anyhow::Result<Record> {
    let opened = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr).await?;
        tasks.spawn(async move { closed_within(&mut stream, Duration::from_secs(30)).await });
    }
    let mut closed = Vec::new();
    let mut held = 0u64;
    while let Some(joined) = tasks.join_next().await {
        match joined.ok().flatten() {
            Some(after) => closed.push(after),
            None => held += 1,
        }
    }
    // Times from each connection's own opening.
    closed.sort();
    Ok(Record::new("overload")
        .text("phase", "idle_connections")
        .int("opened", count as u64)
        .int("closed_by_server", closed.len() as u64)
        .int("still_open_after_30s", held)
        .num("median_closed_after_s", median_secs(&closed))
        .num(
            "last_closed_after_s",
            closed.last().map_or(0.0, Duration::as_secs_f64),
        )
        .num("took_s", opened.elapsed().as_secs_f64()))
}

/// `count` connections that send half a request head and stop.
async fn half_open_heads(addr: SocketAddr, count: usize) -> anyhow::Result<Record> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(b"PUT /snapshots/snap-0123456789abcdef0/blocks/0 HTTP/1.1\r\nhost: x\r\n")
            .await?;
        tasks.spawn(async move { closed_within(&mut stream, Duration::from_secs(30)).await });
    }
    let mut closed = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Some(after) = joined.ok().flatten() {
            closed.push(after);
        }
    }
    closed.sort();
    Ok(Record::new("overload")
        .text("phase", "half_open_heads")
        .int("opened", count as u64)
        .int("closed_by_server", closed.len() as u64)
        .num("median_closed_after_s", median_secs(&closed)))
}

/// One Put whose body arrives 64 bytes every 100 ms (a block would take 14 minutes).
async fn trickled_body(
    instance: &Instance,
    addr: SocketAddr,
    snapshot: &str,
) -> anyhow::Result<Record> {
    let block = vec![7u8; BLOCK];
    let mut stream = TcpStream::connect(addr).await?;
    let head = put_head(instance, snapshot, 0, &Sha256::digest(&block), BLOCK)?;
    stream.write_all(&head).await?;
    let started = Instant::now();
    let mut sent = 0usize;
    let mut answer = Vec::new();
    loop {
        let mut buf = [0u8; 4096];
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            },
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if sent < BLOCK && stream.write_all(&block[sent..sent + 64]).await.is_err() {
                    break;
                }
                sent += 64;
            }
        }
        if started.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("a trickled body lived for more than 120 s");
        }
    }
    let lived = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    let status = text.split_whitespace().nth(1).unwrap_or("none").to_owned();
    let error_type = header(&text, "x-amzn-errortype").unwrap_or_else(|| "none".into());
    Ok(Record::new("overload")
        .text("phase", "trickled_body")
        .num("lived_s", lived.as_secs_f64())
        .int("bytes_sent", sent as u64)
        .text("status", status)
        .text("error_type", error_type))
}

/// `count` concurrent Puts that each send half a body, pause 2 s, then finish: the answers
/// by kind, how fast refusals came back, and the peak RSS. Every Put has distinct content
/// (so the server must keep each body it accepts), generated piece by piece as it is
/// sent, so the clients themselves hold almost nothing.
async fn ten_times_the_budget(
    instance: &Instance,
    addr: SocketAddr,
    snapshot: &str,
    count: usize,
) -> anyhow::Result<Record> {
    const PIECE: usize = 64 * 1024;
    let piece = |index: usize, offset: usize| -> Vec<u8> {
        (offset..offset + PIECE)
            .map(|i| ((i as u64).wrapping_mul(31) ^ (index as u64).wrapping_mul(0x9E37_79B9)) as u8)
            .collect()
    };
    let before = crate::cpu::rss_mib(None).unwrap_or(0.0);
    let peak = RssPeak::start(None);
    // Every Put's head goes out at once, after all have connected.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(count));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..count {
        let mut hasher = Sha256::new();
        for offset in (0..BLOCK).step_by(PIECE) {
            hasher.update(piece(index, offset));
        }
        let head = put_head(instance, snapshot, index, &hasher.finalize(), BLOCK)?;
        let barrier = std::sync::Arc::clone(&barrier);
        tasks.spawn(async move {
            let stream = TcpStream::connect(addr).await;
            barrier.wait().await;
            let mut stream = stream.ok()?;
            let sent = Instant::now();
            stream.write_all(&head).await.ok()?;
            for offset in (0..BLOCK / 2).step_by(PIECE) {
                if stream.write_all(&piece(index, offset)).await.is_err() {
                    return Some((read_answer(&mut stream).await, sent.elapsed()));
                }
            }
            // Half the body, then a pause: the server holds a share of its budget meanwhile.
            let mut buf = [0u8; 4096];
            let early = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
            if let Ok(Ok(n)) = early
                && n > 0
            {
                // Answered before the body was done: refused.
                return Some((
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                    sent.elapsed(),
                ));
            }
            for offset in (BLOCK / 2..BLOCK).step_by(PIECE) {
                stream.write_all(&piece(index, offset)).await.ok()?;
            }
            Some((read_answer(&mut stream).await, sent.elapsed()))
        });
    }
    let (mut created, mut throttled, mut other) = (0u64, 0u64, 0u64);
    let mut throttled_after = Vec::new();
    let mut other_kinds = std::collections::BTreeSet::new();
    while let Some(joined) = tasks.join_next().await {
        let Some((answer, after)) = joined.ok().flatten() else {
            other += 1;
            other_kinds.insert("connection_failed".to_owned());
            continue;
        };
        let status = answer
            .split_whitespace()
            .nth(1)
            .unwrap_or("none")
            .to_owned();
        let kind = header(&answer, "x-amzn-errortype");
        match (status.as_str(), kind.as_deref()) {
            ("201", _) => created += 1,
            (_, Some("RequestThrottledException")) => {
                throttled += 1;
                throttled_after.push(after);
            }
            // The connection closed before any answer arrived: a server that answers
            // before reading a body and closes lets TCP reset the connection under the
            // unread data, which can destroy the answer (clients retry a reset).
            ("none", None) => {
                other += 1;
                other_kinds.insert("reset_before_the_answer".to_owned());
            }
            (status, kind) => {
                other += 1;
                other_kinds.insert(format!("{status}:{}", kind.unwrap_or("none")));
            }
        }
    }
    let peak_mib = peak.finish(None).unwrap_or(0.0);
    throttled_after.sort();
    let bodies_mib = (count * BLOCK) as f64 / 1_048_576.0;
    Ok(Record::new("overload")
        .text("phase", "ten_times_the_budget")
        .int("puts", count as u64)
        .int("created", created)
        .int("throttled", throttled)
        .int("other", other)
        .text(
            "other_kinds",
            if other_kinds.is_empty() {
                "none".to_owned()
            } else {
                other_kinds.into_iter().collect::<Vec<_>>().join(",")
            },
        )
        .num(
            "throttled_median_ms",
            median_secs(&throttled_after) * 1000.0,
        )
        .num("rss_before_mib", before)
        .num("rss_peak_mib", peak_mib)
        .num("bodies_would_need_mib", bodies_mib))
}

/// A signed PutSnapshotBlock head for a body of `len` bytes whose SHA-256 is `sha256`
/// (UNSIGNED-PAYLOAD, as the SDKs send it).
fn put_head(
    instance: &Instance,
    snapshot: &str,
    index: usize,
    sha256: &[u8],
    len: usize,
) -> anyhow::Result<Vec<u8>> {
    use aws_sigv4::http_request::{PayloadChecksumKind, SignableBody, SigningSettings};
    let endpoint = &instance.endpoint;
    let path = format!("/snapshots/{snapshot}/blocks/{index}");
    let uri = format!("http://{}{path}", endpoint.authority);
    let checksum = base64::engine::general_purpose::STANDARD.encode(sha256);
    let mut request = http::Request::builder()
        .method("PUT")
        .uri(&uri)
        .header(http::header::HOST, &endpoint.authority)
        .header("x-amz-data-length", len.to_string())
        .header("x-amz-checksum", &checksum)
        .header("x-amz-checksum-algorithm", "SHA256")
        .body(Full::new(bytes::Bytes::new()))?;
    let identity = identity(endpoint);
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    Signer {
        identity: &identity,
        region: &endpoint.region,
        service: "ebs",
        settings,
    }
    .sign(&mut request, &uri, SignableBody::UnsignedPayload)?;
    let mut head = format!("PUT {path} HTTP/1.1\r\n");
    for (name, value) in request.headers() {
        head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap_or("")));
    }
    head.push_str(&format!("content-length: {len}\r\n\r\n"));
    Ok(head.into_bytes())
}

/// How long until the peer closes `stream` (`None`: still open after `limit`).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// The response head (and whatever followed), up to 30 s.
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn header(response: &str, name: &str) -> Option<String> {
    response.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

fn median_secs(sorted: &[Duration]) -> f64 {
    sorted
        .get(sorted.len() / 2)
        .map_or(0.0, Duration::as_secs_f64)
}
