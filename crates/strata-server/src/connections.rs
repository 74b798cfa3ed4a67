//! The listener: accepts TCP connections and serves HTTP/1.1 on them with hyper, within
//! the connection limits of [`Limits`].
//!
//! * **Head deadline.** A request head must be complete [`Limits::header_read_timeout`]
//!   after the connection opened or after the head's first byte; else the connection is
//!   closed without an answer (a slow-loris client holds a connection for that long at most).
//! * **Idle timeout.** A keep-alive connection with no request in flight and no byte moving
//!   either way for [`Limits::idle_timeout`] is closed, as a client closing it would be.
//! * **Connection cap.** At most [`Limits::max_connections`] connections are served at once.
//!   A connection beyond the cap is answered at once, before its request is read, with
//!   `503` and `x-amzn-ErrorType: RequestThrottledException` (a JSON `Message`),
//!   `Retry-After: 1` and `Connection: close`, then closed. Every SDK retries a 503 with
//!   backoff (EC2 clients too, which cannot parse the JSON body but go by the status); an
//!   EBS client also sees the throttling code. Refusals are themselves bounded
//!   ([`MAX_REFUSALS`] at a time, each at most [`REFUSAL_TIME`]); past that a connection is
//!   closed unanswered.
//!
//! hyper's own head timeout starts when it begins waiting for a head, so it would also cut
//! idle keep-alive connections at the (short) head deadline; the two clocks are therefore
//! kept here, in [`TimedIo`], and hyper's timer (which needs `TokioTimer`) is set to their
//! sum as a backstop.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use strata_wire::headers::{ERROR_TYPE, REQUEST_ID};
use strata_wire::{ErrorCode, WireError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::config::Limits;

/// Over-cap connections being answered at once; beyond, they are closed unanswered.
pub const MAX_REFUSALS: usize = 64;
/// The longest an over-cap connection is kept: writing the 503 and draining what the
/// client sent meanwhile (closing with unread data would reset the connection and could
/// destroy the answer before the client reads it).
pub const REFUSAL_TIME: Duration = Duration::from_secs(1);
/// Bytes of an over-cap client's request drained at most.
const REFUSAL_DRAIN_BYTES: usize = 64 * 1024;

/// Serve `app` on `listener` until `shutdown` resolves, then stop accepting, let every
/// connection finish its request in flight, and return. With `tls`, every connection is
/// a TLS connection; its handshake must complete within the head deadline.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let (closing, closing_seen) = watch::channel(false);
    // The signal is watched by a task of its own (as axum::serve does): once it fires,
    // the connections and requests already on their way get a turn before accepting stops.
    let closing = Arc::new(closing);
    let watcher = tokio::spawn({
        let closing = Arc::clone(&closing);
        async move {
            shutdown.await;
            let _ = closing.send(true);
        }
    });
    let mut stopping = closing_seen.clone();
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = async {
                let _ = stopping.wait_for(|closing| *closing).await;
            } => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Per-connection failures (reset before accept) are harmless; others
                    // (out of file descriptors) are retried after a pause, not spun on.
                    if !matches!(
                        error.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
        };
        if let Err(error) = stream.set_nodelay(true) {
            // Answers are small and written whole: send them at once (no Nagle delay).
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, max = limits.max_connections, "connection limit reached: refusing");
            if let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() {
                let max = limits.max_connections;
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => refuse(stream, max).await,
                        // The answer goes through TLS; the handshake counts in REFUSAL_TIME.
                        Some(tls) => {
                            if let Ok(Ok(stream)) =
                                tokio::time::timeout(REFUSAL_TIME, tls.accept(stream)).await
                            {
                                refuse(stream, max).await;
                            }
                        }
                    }
                    drop(permit);
                });
            }
            continue;
        };
        let app = app.clone();
        let mut closing = closing_seen.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let activity = Arc::new(Activity::default());
            let io = TimedIo::new(stream, &limits, Arc::clone(&activity));
            match tls {
                None => serve_connection(io, activity, peer, app, limits, &mut closing).await,
                Some(tls) => {
                    // The handshake reads through `TimedIo`, so it is held to the head
                    // deadline as a request head is.
                    let handshake = tokio::select! {
                        accepted = tls.accept(io) => Some(accepted),
                        () = async {
                            let _ = closing.wait_for(|closing| *closing).await;
                        } => None,
                    };
                    match handshake {
                        Some(Ok(io)) => {
                            serve_connection(io, activity, peer, app, limits, &mut closing).await;
                        }
                        Some(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                        }
                        None => {}
                    }
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    watcher.abort();
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// The address a request came from: every request served here carries it as an
/// extension (for the request log line).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// Serve one connection until it closes, or until shutdown once it is idle. `activity`
/// is what the connection's [`TimedIo`] watches.
async fn serve_connection<S>(
    stream: S,
    activity: Arc<Activity>,
    peer: std::net::SocketAddr,
    app: Router,
    limits: Limits,
    closing: &mut watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(stream);
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(ClientAddr(peer));
        let request_guard = activity.begin_request();
        let app = app.clone();
        async move {
            let response = app.oneshot(request.map(Body::new)).await;
            drop(request_guard);
            Ok::<_, Infallible>(match response {
                Ok(response) => response,
                Err(never) => match never {},
            })
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout + limits.idle_timeout)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = async {
            // (The guard `wait_for` returns must not live across an await.)
            let _ = closing.wait_for(|closing| *closing).await;
        } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection closed with an error");
    }
}

/// Answer an over-cap connection with a 503 once its request head has arrived, and close
/// it, all within [`REFUSAL_TIME`]. (Answering before the request would be read by an
/// HTTP client as an unsolicited message on an idle connection, not as the answer.)
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, max_connections: usize) {
    let answer = refusal(max_connections);
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        let mut buffer = [0u8; 4096];
        let mut received = Vec::new();
        while !received.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
            if received.len() > REFUSAL_DRAIN_BYTES {
                return;
            }
        }
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        let _ = stream.shutdown().await;
        // Drain the rest (a body) so that closing does not reset the connection under
        // the answer before the client has read it.
        let mut drained = received.len();
        while drained < REFUSAL_DRAIN_BYTES {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

/// The complete HTTP answer to an over-cap connection.
fn refusal(max_connections: usize) -> String {
    let error = WireError::new(
        ErrorCode::RequestThrottledException,
        None,
        format!("The server is serving its maximum of {max_connections} connections; retry later."),
    );
    let body = String::from_utf8_lossy(&error.body()).into_owned();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n{ERROR_TYPE}: {}\r\n\
         {REQUEST_ID}: {}\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        error.code.as_str(),
        uuid::Uuid::new_v4(),
        body.len()
    )
}

/// What the service tells the connection's I/O: requests started and still running.
#[derive(Debug, Default)]
struct Activity {
    started: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.started.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard(Arc::clone(self))
    }
}

/// A request in flight on a connection (its handler has not answered yet).
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A TCP stream that ends itself when the head deadline or the idle timeout passes.
///
/// Reads pending while no request is in flight are bounded: by the head deadline once a
/// head has begun (or since the connection opened, for the first request), else by the
/// idle timeout since the last byte moved. A head past its deadline fails the read
/// (`TimedOut`); an idle connection reads as closed by the client, which hyper closes
/// quietly. While a request is in flight the handler's own body deadlines apply.
struct TimedIo {
    stream: TcpStream,
    activity: Arc<Activity>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    timer: Pin<Box<Sleep>>,
    last_io: Instant,
    head_since: Option<Instant>,
    seen_started: u64,
}

impl TimedIo {
    fn new(stream: TcpStream, limits: &Limits, activity: Arc<Activity>) -> Self {
        let now = Instant::now();
        Self {
            stream,
            activity,
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            timer: Box::pin(tokio::time::sleep_until(now + limits.header_read_timeout)),
            last_io: now,
            // The first request's head is due from the moment the connection opened.
            head_since: Some(now),
            seen_started: 0,
        }
    }

    /// Forget the head clock once the service has started the request it belonged to.
    fn sync(&mut self) {
        let started = self.activity.started.load(Ordering::Acquire);
        if started != self.seen_started {
            self.seen_started = started;
            self.head_since = None;
        }
    }

    fn idle(&self) -> bool {
        self.activity.in_flight.load(Ordering::Acquire) == 0
    }

    fn on_read(&mut self) {
        self.sync();
        let now = Instant::now();
        self.last_io = now;
        if self.head_since.is_none() && self.idle() {
            self.head_since = Some(now);
        }
    }

    /// A read is pending: end it if its deadline has passed, else wake up at the deadline.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.sync();
        if !self.idle() {
            return Poll::Pending;
        }
        let (deadline, head) = match self.head_since {
            Some(since) => (since + self.header_read_timeout, true),
            None => (self.last_io + self.idle_timeout, false),
        };
        if Instant::now() < deadline {
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        if head {
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request head was not received in time",
            )))
        } else {
            // Reads as end of stream: hyper closes an idle connection quietly.
            Poll::Ready(Ok(()))
        }
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.on_read();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => this.poll_deadline(cx),
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.last_io = Instant::now();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.last_io = Instant::now();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_complete_ebs_shaped_answer() {
        let answer = refusal(7);
        let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains("x-amzn-errortype: RequestThrottledException"));
        assert!(head.contains("connection: close"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).expect("json");
        assert!(
            json["Message"]
                .as_str()
                .is_some_and(|m| m.contains("7 connections"))
        );
    }
}
