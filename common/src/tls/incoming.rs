//! Accepting TLS connections: TCP accepts in one loop, each handshake in its own task with
//! a timeout, so a slow or silent client delays no one else. The loop never waits for a
//! handshake slot: at the cap, a new connection ends the oldest handshake still in
//! progress (the likeliest to be a silent socket), so silent sockets cannot starve real
//! clients. Finished handshakes come out
//! of a [`TlsIncoming`], which feeds tonic's `serve_with_incoming_shutdown` (as a stream)
//! or axum's `serve` (as a [`axum::serve::Listener`]).

use std::{collections::VecDeque, io, net::SocketAddr, sync::Arc, time::Duration};

use rustls::ServerConfig;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::{AbortHandle, JoinSet},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// A client that has not finished its handshake by then is disconnected.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; beyond it, a new connection ends the oldest one.
pub const MAX_HANDSHAKES: usize = 256;

/// How handshakes are bounded.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeLimits {
    pub max_in_progress: usize,
    pub timeout: Duration,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self {
            max_in_progress: MAX_HANDSHAKES,
            timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

/// Connections whose TLS handshake has completed.
#[derive(Debug)]
pub struct TlsIncoming {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

/// Accepts on `listener` until `stop` fires or the [`TlsIncoming`] is dropped, doing each
/// handshake with the configuration `config` gives at that moment (so reloaded
/// certificates apply to new connections). The accept loop runs on `tasks`.
pub fn incoming(
    listener: TcpListener,
    config: impl Fn() -> Arc<ServerConfig> + Send + Sync + 'static,
    stop: CancellationToken,
    tasks: &TaskTracker,
) -> io::Result<TlsIncoming> {
    incoming_with(listener, config, stop, tasks, HandshakeLimits::default())
}

/// [`incoming`] with the handshake bounds given.
pub fn incoming_with(
    listener: TcpListener,
    config: impl Fn() -> Arc<ServerConfig> + Send + Sync + 'static,
    stop: CancellationToken,
    tasks: &TaskTracker,
    limits: HandshakeLimits,
) -> io::Result<TlsIncoming> {
    let local = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(64);
    tasks.spawn(async move {
        // Owned here: when the loop ends, handshakes still in progress are dropped.
        let mut handshakes = JoinSet::new();
        // Handshakes in progress, oldest first.
        let mut pending: VecDeque<AbortHandle> = VecDeque::new();
        loop {
            while handshakes.try_join_next().is_some() {}
            let (tcp, peer) = tokio::select! {
                () = stop.cancelled() => break,
                () = tx.closed() => break,
                accepted = crate::net::accept_tcp(&listener) => accepted,
            };
            pending.retain(|h| !h.is_finished());
            if pending.len() >= limits.max_in_progress.max(1)
                && let Some(oldest) = pending.pop_front()
            {
                oldest.abort();
                tracing::debug!(%peer, "TLS handshakes at their cap: the oldest one ended");
            }
            let acceptor = TlsAcceptor::from(config());
            let tx = tx.clone();
            let timeout = limits.timeout;
            pending.push_back(handshakes.spawn(async move {
                match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send((tls, peer)).await;
                    }
                    // Debug, not info: anyone who can reach the port could fill the logs.
                    // The refused peer sees the reason in its own handshake error.
                    Ok(Err(err)) => tracing::debug!(%peer, %err, "TLS handshake refused"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }));
        }
    });
    Ok(TlsIncoming { rx, local })
}

impl TlsIncoming {
    /// The next established connection; `None` once accepting has stopped.
    pub async fn next(&mut self) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
        self.rx.recv().await
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The connections as the stream tonic's `serve_with_incoming*` takes.
    pub fn into_stream(self) -> impl Stream<Item = Result<TlsStream<TcpStream>, io::Error>> {
        ReceiverStream::new(self.rx).map(|(tls, _)| Ok(tls))
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // Accepting stopped (shutdown): axum stops calling once its own shutdown
            // signal fires.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
