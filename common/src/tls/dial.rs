//! Connecting to Switchback gRPC peers, in plaintext or with mutual TLS. Every gRPC client
//! channel (router → worker, router → controller, worker → controller, standby → leader,
//! sbctl → controller) is made here.
//!
//! With TLS the TCP connection and the rustls handshake happen in a custom connector that
//! reads the cluster client configuration in force at that moment, so a reconnect after a
//! certificate rotation presents the new certificate. The URI keeps the `http` scheme:
//! tonic refuses `https` URIs unless its own (non-reloading) `ClientTlsConfig` is set, and
//! the scheme only fills HTTP/2's `:scheme` header here; the connector always encrypts.
//!
//! Every dial names the role the server must hold ([`Role`]): after the handshake the
//! server's certificate is checked for it, so a router sends prompts only to a worker and
//! reports only to a controller, whatever address a record in etcd gives.

use std::io;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};
use tonic::{
    codegen::http::Uri,
    transport::{Channel, Error},
};

use super::{ClusterTls, Role, role};

/// Makes gRPC channels to peers: plaintext, or mTLS with the cluster identity.
#[derive(Debug, Clone, Default)]
pub struct Dialer {
    tls: Option<ClusterTls>,
}

impl Dialer {
    pub fn new(tls: Option<ClusterTls>) -> Self {
        Self { tls }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Connects to `address` (`host:port`) now; with TLS its certificate must name `role`.
    pub async fn connect(&self, address: &str, role: Role) -> Result<Channel, Error> {
        let endpoint = crate::net::grpc_endpoint(address)?;
        match &self.tls {
            None => endpoint.connect().await,
            Some(tls) => {
                let tls = tls.clone();
                endpoint
                    .connect_with_connector(tower::service_fn(move |uri| {
                        handshake(tls.clone(), uri, role)
                    }))
                    .await
            }
        }
    }

    /// A channel to `address` that connects on first use (and again after a break); with
    /// TLS the server's certificate must name `role`.
    pub fn connect_lazy(&self, address: &str, role: Role) -> Result<Channel, Error> {
        let endpoint = crate::net::grpc_endpoint(address)?;
        Ok(match &self.tls {
            None => endpoint.connect_lazy(),
            Some(tls) => {
                let tls = tls.clone();
                endpoint.connect_with_connector_lazy(tower::service_fn(move |uri| {
                    handshake(tls.clone(), uri, role)
                }))
            }
        })
    }
}

/// TCP, then the TLS handshake; the peer's certificate must be issued by the cluster CA
/// for `tls.server_name` if set, else for the host name or IP address in `uri`, and name
/// `role`.
async fn handshake(
    tls: ClusterTls,
    uri: Uri,
    role: Role,
) -> io::Result<TokioIo<TlsStream<TcpStream>>> {
    let host = uri
        .host()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "address without a host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri
        .port_u16()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "address without a port"))?;
    let name = match tls.server_name() {
        Some(name) => name.clone(),
        None => ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
    };
    let tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    let stream = TlsConnector::from(tls.client_config())
        .connect(name, tcp)
        .await?;
    // Before a byte of any request goes out on it.
    role::check_server(stream.get_ref().1.peer_certificates(), role).map_err(|reason| {
        tracing::warn!(peer = %uri, %reason, "refused a server of the wrong role");
        io::Error::new(io::ErrorKind::PermissionDenied, reason)
    })?;
    Ok(TokioIo::new(stream))
}
