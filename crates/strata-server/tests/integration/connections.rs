//! Connection limits over a real socket: the request-head deadline, the idle keep-alive
//! timeout and the connection cap.

use std::time::{Duration, Instant};

use aws_sdk_ebs::error::ProvideErrorMetadata;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Harness, SocketHarness};

/// The longest any of these tests waits for the server to do something.
const PATIENCE: Duration = Duration::from_secs(5);

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n";

async fn server(adjust: impl FnOnce(&mut strata_server::Settings)) -> SocketHarness {
    Harness::with_settings(adjust).into_socket().await
}

/// Read one response (head and `content-length` body) from a keep-alive connection.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut buffer))
            .await
            .expect("the server answers")
            .expect("read");
        assert!(read > 0, "connection closed mid-response: {text}");
        data.extend_from_slice(&buffer[..read]);
    }
}

/// Wait until the server closes `stream`; how long it took.
async fn closed_after(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buffer)).await {
            Err(_) => panic!("the server kept the connection open for {PATIENCE:?}"),
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn a_request_head_must_arrive_in_time() {
    let server = server(|s| {
        s.limits.header_read_timeout = Duration::from_millis(300);
        s.limits.idle_timeout = Duration::from_secs(30);
    })
    .await;
    // Half a head, then nothing: closed at the head deadline, not held open.
    let mut slow = TcpStream::connect(server.addr()).await.expect("connect");
    slow.write_all(b"PUT /snapshots/snap-0a/blocks/0 HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let waited = closed_after(&mut slow).await;
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    // A connection that never sends anything is closed at the same deadline.
    let mut silent = TcpStream::connect(server.addr()).await.expect("connect");
    let waited = closed_after(&mut silent).await;
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    // A head that arrives in time is served.
    let mut prompt = TcpStream::connect(server.addr()).await.expect("connect");
    prompt.write_all(HEALTH).await.expect("write");
    assert!(read_response(&mut prompt).await.starts_with("HTTP/1.1 200"));
    server.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(1500);
    let server = server(|s| {
        s.limits.header_read_timeout = Duration::from_millis(300);
        s.limits.idle_timeout = idle;
    })
    .await;
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    stream.write_all(HEALTH).await.expect("write");
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    // Idle for longer than the head deadline but within the idle timeout: still open.
    tokio::time::sleep(Duration::from_millis(700)).await;
    stream.write_all(HEALTH).await.expect("write");
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    // Then idle for good: closed once the idle timeout has passed.
    let waited = closed_after(&mut stream).await;
    assert!(
        waited >= idle - Duration::from_millis(100) && waited < idle * 3,
        "{waited:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_answered_503_and_closed() {
    let server = server(|s| s.limits.max_connections = 2).await;
    let mut first = TcpStream::connect(server.addr()).await.expect("connect");
    first.write_all(HEALTH).await.expect("write");
    assert!(read_response(&mut first).await.starts_with("HTTP/1.1 200"));
    let mut second = TcpStream::connect(server.addr()).await.expect("connect");
    second.write_all(HEALTH).await.expect("write");
    assert!(read_response(&mut second).await.starts_with("HTTP/1.1 200"));

    // A third connection gets an immediate, complete answer and is closed.
    let started = Instant::now();
    let mut third = TcpStream::connect(server.addr()).await.expect("connect");
    third.write_all(HEALTH).await.expect("write");
    let answer = read_response(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("x-amzn-errortype: RequestThrottledException"),
        "{answer}"
    );
    closed_after(&mut third).await;
    assert!(started.elapsed() < Duration::from_secs(2));

    // The SDK sees a throttling error it would retry.
    let client = server.client();
    let error = client
        .start_snapshot()
        .volume_size(1)
        .send()
        .await
        .expect_err("over the cap");
    assert_eq!(error.code(), Some("RequestThrottledException"), "{error:?}");
    drop(client);

    // Once a connection closes, its slot serves a new one.
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = TcpStream::connect(server.addr()).await.expect("connect");
    fourth.write_all(HEALTH).await.expect("write");
    assert!(read_response(&mut fourth).await.starts_with("HTTP/1.1 200"));
    drop((second, fourth));
    server.stop().await;
}
