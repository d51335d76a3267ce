//! The HTTP listener (issue 13): hyper's HTTP/1.1 server with a header-read timeout, an idle
//! timeout and a cap on open connections, so that half-sent requests cannot exhaust the
//! process's file descriptors and an idle or stalled client does not hold a connection forever.
//!
//! - **Connections**: at most `max_connections` are open at once. Past the cap, new ones wait
//!   in the kernel's accept queue until one ends; the connections already open keep being
//!   served (`/healthz` on one of them answers at once).
//! - **Header timeout**: a client must send a whole request head within `header_timeout` of
//!   the connection opening or of its previous response ending (hyper counts the wait for the
//!   next request of a kept-alive connection as header reading), or the connection ends.
//!   A slowloris that trickles header bytes is cut off by it.
//! - **Idle timeout**: once no byte has moved either way for `idle_timeout`, the connection
//!   ends — at once if it waits for a request, after the answer if a request is being worked
//!   on — and a peer that still moves nothing (a body that stopped, a response nobody reads)
//!   is dropped after a second `idle_timeout`.
//!
//! HTTP/2 is not spoken in clear text (hyper-util's protocol detection reads without a timer);
//! a reverse proxy in front speaks HTTP/1.1 to Cairn.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

/// The listener's limits (`CAIRN_HTTP_*`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open requests finish
/// (connections waiting for a request end at once).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut full_since: Option<Instant> = None;
    loop {
        // A slot first, then a connection: past the cap, new connections wait in the queue.
        let permit = if let Ok(p) = slots.clone().try_acquire_owned() {
            p
        } else {
            if full_since.is_none() {
                full_since = Some(Instant::now());
                tracing::warn!(
                    max = limits.max_connections,
                    "HTTP connection limit reached: new connections wait until one ends (CAIRN_HTTP_MAX_CONNECTIONS)"
                );
            }
            tokio::select! {
                p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                _ = &mut shutdown => break,
            }
        };
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    drop(permit);
                    accept_error(e).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        if let Some(since) = full_since.take() {
            tracing::info!(waited_ms = since.elapsed().as_millis() as u64, "HTTP connections below the limit again");
        }
        let app = app.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            metrics::gauge!("cairn_http_connections").increment(1.0);
            serve_connection(stream, addr, app, limits, stop).await;
            metrics::gauge!("cairn_http_connections").decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection gives its slot back when it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(Duration::from_secs(30), slots.acquire_many(all)).await {
        Ok(_) => {}
        Err(_) => tracing::warn!("stopped with HTTP requests still running after 30 s"),
    }
    Ok(())
}

/// As axum's `serve`: a peer that went away is no error; running out of descriptors or memory
/// is logged, and accepting pauses a moment rather than spinning.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "cannot accept an HTTP connection");
    tokio::time::sleep(Duration::from_millis(200)).await;
}

async fn serve_connection(
    stream: TcpStream,
    addr: SocketAddr,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let activity = Activity::new();
    let io = TokioIo::new(Tracked { inner: stream, activity: activity.clone() });
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(addr));
        tower::ServiceExt::oneshot(app.clone(), req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut ending = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(client = %addr, error = %e, "HTTP connection ended");
                }
                return;
            }
            _ = activity.quiet_for(limits.idle_timeout) => {
                if ending {
                    tracing::debug!(client = %addr, "HTTP connection dropped: nothing moved after it was asked to end");
                    return;
                }
                ending = true;
                conn.as_mut().graceful_shutdown();
                activity.touch();
            }
            _ = stop.wait_for(|s| *s), if !ending => {
                ending = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// When bytes last moved on a connection, in milliseconds since it opened.
#[derive(Clone)]
struct Activity {
    opened: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Activity {
        Activity { opened: Instant::now(), last_ms: Arc::new(AtomicU64::new(0)) }
    }

    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `d`.
    async fn quiet_for(&self, d: Duration) {
        loop {
            let deadline = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + d;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A TCP stream that records when bytes move.
struct Tracked {
    inner: TcpStream,
    activity: Activity,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
