//! The sockets every binary opens: the TCP accept loop under both the plain and the TLS
//! listeners, and the gRPC client endpoint every channel to a peer starts from. A leaf
//! module: the HTTP server, TLS and the dialer build on it.

use std::{net::SocketAddr, time::Duration};

use tokio::net::{TcpListener, TcpStream};

/// The next TCP connection on `listener`, with `TCP_NODELAY` set; an accept error (e.g. out
/// of file descriptors) is logged and retried after a short back-off instead of spinning.
/// Cancel-safe.
pub async fn accept_tcp(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                // Streamed tokens are small writes: without TCP_NODELAY, Nagle's algorithm
                // and delayed ACKs hold each one back by up to 40 ms.
                if let Err(err) = tcp.set_nodelay(true) {
                    tracing::warn!(%err, "cannot set TCP_NODELAY");
                }
                return (tcp, peer);
            }
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// HTTP/2 flow-control window of one gRPC stream, in bytes: far more than a token stream
/// needs in flight on a LAN.
pub const STREAM_WINDOW: u32 = 256 * 1024;

/// An HTTP/2 endpoint for a Switchback gRPC peer, with keep-alives so that a hung or
/// partitioned peer is noticed instead of blocking a stream forever.
pub fn grpc_endpoint(address: &str) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(3))
            .keep_alive_while_idle(true)
            // One stream whose reader stalls (a client that stops reading its answer) can
            // hold at most its own window of the connection's: the connection's window is
            // that of a thousand streams, so the others on it keep flowing.
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(STREAM_WINDOW * 1024),
    )
}
