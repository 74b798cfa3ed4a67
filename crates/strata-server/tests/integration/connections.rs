//! Connection limits over a real socket: the request-head deadline, the idle keep-alive
//! timeout, the connection cap, and the overall body deadline.

use std::time::{Duration, Instant};

use aws_sdk_ebs::error::ProvideErrorMetadata;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{BLOCK, Harness, RawRequest, SocketHarness, block};
use crate::sdk::{complete, list_all, start};

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

/// The stall timer alone lets a body that trickles (one piece before each stall) live
/// forever; the body deadline ends it however steadily it arrives.
#[tokio::test]
async fn a_steadily_trickled_put_body_is_cut_off_at_the_body_deadline() {
    use http_body_util::channel::Channel;
    let deadline = Duration::from_millis(1000);
    let harness = Harness::with_settings(|s| {
        s.body_timeout = Duration::from_millis(300);
        s.limits.body_deadline = deadline;
    });
    let client = harness.client();
    let id = start(&client, 1, None).await;
    let data = block(9);
    // 64 pieces 100 ms apart: never 300 ms of silence, 6.4 s in all.
    let (mut sender, body) = Channel::<bytes::Bytes>::new(1);
    let pieces: Vec<bytes::Bytes> = data
        .chunks(BLOCK / 64)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    let feeder = tokio::spawn(async move {
        for piece in pieces {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if sender.send_data(piece).await.is_err() {
                return;
            }
        }
    });
    let mut trickle = RawRequest::put_block(&id, "0", data.clone());
    trickle.streamed = Some(axum::body::Body::new(body));
    let started = Instant::now();
    let response = harness.raw(trickle).await;
    let took = started.elapsed();
    response.assert_error(400, "ValidationException", "INVALID_PARAMETER_VALUE");
    let message = response.json()["Message"].as_str().unwrap_or("").to_owned();
    assert!(message.contains("Failed to read block data"), "{message}");
    assert!(
        took >= deadline && took < deadline * 3,
        "cut off after {took:?}"
    );
    feeder.abort();
    complete(&client, &id, 0, None).await;
    assert!(
        list_all(&client, &id, 100).await.is_empty(),
        "nothing was recorded"
    );
}

/// A Put throttled before its body is read (the memory budget is held by a slow Put) is
/// answered `RequestThrottledException` over a real socket, also to a client that sends
/// its whole block before it reads (as simple HTTP clients do): the connection is not
/// reset under the body, which would turn the throttle into a network error.
#[tokio::test]
async fn a_put_throttled_before_its_body_still_gets_its_answer_over_the_socket() {
    use http_body_util::channel::Channel;
    let server = server(|s| {
        s.limits.body_budget_bytes = BLOCK;
        s.body_timeout = Duration::from_secs(10);
        s.limits.body_deadline = Duration::from_secs(10);
    })
    .await;
    let client = server.client();
    let id = start(&client, 1, None).await;
    // The budget's one block, held by a Put whose body stops half way.
    let (mut sender, body) = Channel::<bytes::Bytes>::new(1);
    let held = block(1);
    sender
        .send_data(bytes::Bytes::copy_from_slice(&held[..BLOCK / 2]))
        .await
        .expect("buffered");
    let mut slow = RawRequest::put_block(&id, "0", held);
    slow.streamed = Some(axum::body::Body::new(body));
    let (addr, clock) = (server.addr(), server.clock.clone());
    let holder = tokio::spawn(async move { crate::harness::raw_at(addr, &clock, slow).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let data = block(2);
    let request = crate::harness::signed(
        &addr.to_string(),
        &server.clock,
        &RawRequest::put_block(&id, "1", data.clone()),
    );
    let mut head = format!("PUT {} HTTP/1.1\r\n", request.uri().path());
    for (name, value) in request.headers() {
        head.push_str(&format!("{name}: {}\r\n", value.to_str().expect("ascii")));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", data.len()));
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("head");
    let sent = tokio::time::timeout(PATIENCE, stream.write_all(&data)).await;
    assert!(
        matches!(sent, Ok(Ok(()))),
        "the whole body is taken in, not reset: {sent:?}"
    );
    let answer = read_response(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-amzn-errortype: requestthrottledexception"),
        "{answer}"
    );
    drop(sender);
    holder.abort();
}
