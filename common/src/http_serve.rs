//! Serving an HTTP app on a listener a stranger can reach: a cap on open connections,
//! header, idle and write timeouts, and a bound on HTTP/2 streams per connection, each
//! configurable (`http:` in the router's config) with a default that holds on the open
//! internet. Both HTTP/1.1 and HTTP/2 (prior knowledge, or ALPN over TLS).
//!
//! - **Connection cap.** A connection past `max_connections` is closed as soon as it is
//!   accepted, so a flood costs the flooder one accept per socket and never takes the file
//!   descriptors the process needs for its own files (the API keys, certificates). The cap
//!   is held below the process's descriptor limit.
//! - **Header timeout** (HTTP/1): the request head must arrive within it, also on a kept-alive
//!   connection between requests (slowloris).
//! - **Idle timeout**: a connection with no request in flight for that long is closed
//!   gracefully (both protocols; HTTP/2 has no header timeout, so this bounds a stream of
//!   headers that never completes too).
//! - **Write timeout**: a write that makes no progress for that long (a client that stopped
//!   reading) fails the connection, which drops the answer being sent and with it the
//!   upstream generation — the client's unread answer is not held in memory.
//!
//! The request body's deadline belongs to whoever reads the body (the router's handlers).

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::body::Body;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};
use serde::Deserialize;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::Sleep,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

use crate::config::{ConfigError, invalid};

/// The bounds of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub max_streams_per_connection: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            max_streams_per_connection: 128,
        }
    }
}

impl HttpLimits {
    /// A metrics and health endpoint: few scrapers, the same timeouts.
    pub fn for_metrics() -> Self {
        Self {
            max_connections: 256,
            ..Self::default()
        }
    }
}

/// The `http:` section of a config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// Open connections at once (default 4096; held below the descriptor limit).
    pub max_connections: Option<usize>,
    /// Seconds a request head may take to arrive (default 10).
    pub header_timeout_s: Option<u64>,
    /// Seconds a request body may take to arrive (default 30).
    pub body_timeout_s: Option<u64>,
    /// Seconds a connection may stay open with no request in flight (default 60).
    pub idle_timeout_s: Option<u64>,
    /// Seconds a write to the client may make no progress (default 30).
    pub write_timeout_s: Option<u64>,
    /// Concurrent HTTP/2 streams per connection (default 128).
    pub max_streams_per_connection: Option<u32>,
}

impl RawHttp {
    /// The listener's limits and the body timeout, from the `http:` section.
    pub fn validate(self) -> Result<(HttpLimits, Duration), ConfigError> {
        let d = HttpLimits::default();
        let secs = |v: Option<u64>, key: &'static str, default: Duration| match v {
            None => Ok(default),
            Some(s) if (1..=86_400).contains(&s) => Ok(Duration::from_secs(s)),
            Some(_) => Err(invalid(key, "must be in 1..=86400")),
        };
        let max_connections = self.max_connections.unwrap_or(d.max_connections);
        if max_connections == 0 {
            return Err(invalid("http.max_connections", "must be at least 1"));
        }
        let max_streams_per_connection = self
            .max_streams_per_connection
            .unwrap_or(d.max_streams_per_connection);
        if !(1..=10_000).contains(&max_streams_per_connection) {
            return Err(invalid(
                "http.max_streams_per_connection",
                "must be in 1..=10000",
            ));
        }
        let limits = HttpLimits {
            max_connections,
            header_timeout: secs(
                self.header_timeout_s,
                "http.header_timeout_s",
                d.header_timeout,
            )?,
            idle_timeout: secs(self.idle_timeout_s, "http.idle_timeout_s", d.idle_timeout)?,
            write_timeout: secs(
                self.write_timeout_s,
                "http.write_timeout_s",
                d.write_timeout,
            )?,
            max_streams_per_connection,
        };
        let body = secs(
            self.body_timeout_s,
            "http.body_timeout_s",
            Duration::from_secs(30),
        )?;
        Ok((limits, body))
    }
}

/// What a listener counts, for the component's metrics registry.
#[derive(Debug, Clone, Default)]
pub struct ConnMetrics {
    pub open: Gauge,
    pub refused: Counter,
    pub idle_closed: Counter,
    pub write_timeouts: Counter,
}

impl ConnMetrics {
    /// Registers the series as `connections_*` (under the registry's prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "connections_open",
            "HTTP connections open",
            self.open.clone(),
        );
        registry.register(
            "connections_refused",
            "HTTP connections closed at accept because the connection cap was reached",
            self.refused.clone(),
        );
        registry.register(
            "connections_idle_closed",
            "HTTP connections closed after the idle timeout",
            self.idle_closed.clone(),
        );
        registry.register(
            "connections_write_timeouts",
            "HTTP connections failed because the client stopped reading",
            self.write_timeouts.clone(),
        );
    }
}

/// A source of accepted connections: a TCP listener, or TLS connections after their
/// handshake.
pub trait Connections: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection; `None` when there will be no more.
    fn next(&mut self) -> impl Future<Output = Option<(Self::Io, SocketAddr)>> + Send;
}

impl Connections for TcpListener {
    type Io = TcpStream;

    async fn next(&mut self) -> Option<(TcpStream, SocketAddr)> {
        Some(crate::net::accept_tcp(self).await)
    }
}

impl Connections for crate::tls::TlsIncoming {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;

    async fn next(&mut self) -> Option<(Self::Io, SocketAddr)> {
        crate::tls::TlsIncoming::next(self).await
    }
}

/// The connection cap `wanted` held below the process's open-file limit, which is first
/// raised to its hard maximum. Some descriptors stay free for the process's own files and
/// its upstream connections.
pub fn connection_cap(wanted: usize) -> usize {
    const RESERVE: u64 = 256;
    let Some(limit) = raise_nofile() else {
        return wanted;
    };
    let room = usize::try_from(limit.saturating_sub(RESERVE).max(16)).unwrap_or(usize::MAX);
    if wanted > room {
        tracing::warn!(
            wanted,
            cap = room,
            open_file_limit = limit,
            "connection cap lowered to fit the open-file limit (raise `ulimit -n` for more)"
        );
        room
    } else {
        wanted
    }
}

/// Raises the soft open-file limit to the hard one; the soft limit in effect after.
fn raise_nofile() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (limit.current, limit.maximum)
        && cur < max
    {
        limit.current = Some(max);
        if setrlimit(Resource::Nofile, limit).is_err() {
            limit.current = Some(cur);
        }
    }
    limit.current
}

/// Serves `app` on `conns` until `shutdown` fires, then lets the open connections finish
/// their requests (no new ones) and returns.
pub async fn serve<C: Connections>(
    mut conns: C,
    app: axum::Router,
    limits: HttpLimits,
    metrics: ConnMetrics,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let open = TaskTracker::new();
    loop {
        let (io, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            next = conns.next() => match next {
                Some(c) => c,
                None => break,
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics.refused.inc();
            tracing::debug!(%peer, "connection cap reached: closed at accept");
            drop(io);
            continue;
        };
        let (app, metrics, shutdown) = (app.clone(), metrics.clone(), shutdown.clone());
        open.spawn(async move {
            metrics.open.inc();
            connection(io, app, limits, &metrics, shutdown).await;
            metrics.open.dec();
            drop(slot);
        });
    }
    open.close();
    open.wait().await;
}

/// Serves one connection to its end.
async fn connection<I>(
    io: I,
    app: axum::Router,
    limits: HttpLimits,
    metrics: &ConnMetrics,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = WriteDeadline::new(io, limits.write_timeout, metrics.write_timeouts.clone());
    let activity = Arc::new(Activity::new());
    let service = tower::service_fn({
        let activity = Arc::clone(&activity);
        move |req: http::Request<hyper::body::Incoming>| {
            let guard = InFlight::start(Arc::clone(&activity));
            let app = app.clone();
            async move {
                let response = app.oneshot(req.map(Body::new)).await?;
                Ok::<_, std::convert::Infallible>(response.map(|body| {
                    Body::new(Tracked {
                        body,
                        _guard: guard,
                    })
                }))
            }
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection)
        .keep_alive_interval(Some(limits.idle_timeout))
        .keep_alive_timeout(limits.write_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%err, "connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = activity.idle_for(limits.idle_timeout), if !closing => {
                closing = true;
                metrics.idle_closed.inc();
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A connection's requests in flight and when the last one ended. Plain atomics that the
/// idle check reads at most once per idle timeout: a request costs no wake-up.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` when the last request ended (0: none yet).
    last_done_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
        }
    }

    /// Resolves once no request has been in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        let mut wake = Instant::now() + timeout;
        loop {
            tokio::time::sleep_until(wake.into()).await;
            let now = Instant::now();
            if self.in_flight.load(Ordering::Acquire) > 0 {
                wake = now + timeout;
                continue;
            }
            let last =
                self.opened + Duration::from_millis(self.last_done_ms.load(Ordering::Acquire));
            let idle_until = last + timeout;
            if now >= idle_until {
                return;
            }
            wake = idle_until;
        }
    }
}

/// Counts a request in flight from its head until its answer's body is sent or dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_done_ms.store(ms, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds its request's [`InFlight`] until it is done.
struct Tracked {
    body: Body,
    _guard: InFlight,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// An I/O stream whose writes fail with `TimedOut` after `timeout` without progress.
struct WriteDeadline<I> {
    io: I,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
    timeouts: Counter,
}

impl<I> WriteDeadline<I> {
    fn new(io: I, timeout: Duration, timeouts: Counter) -> Self {
        Self {
            io,
            timeout,
            stalled: None,
            timeouts,
        }
    }

    /// After a write that could not proceed: whether it has been stuck past the timeout.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.timeouts.inc();
                Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client stopped reading",
                ))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_stalled(cx).map(Err),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteDeadline<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.progress(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.progress(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.progress(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
