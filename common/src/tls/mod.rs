//! TLS for Switchback's hops, over rustls with the `ring` provider: certificates, keys and
//! CAs read from PEM files, the server and client configurations built from them, and
//! their reload when the files change on disk (a rotated Kubernetes Secret, a renewed
//! certificate) without restarting the process.
//!
//! Two kinds of material:
//! - the cluster identity ([`RawClusterTls`], config key `tls`): one certificate and key
//!   used both as the gRPC server's certificate and as the client certificate this process
//!   presents to its peers, and the cluster CA that every peer's certificate must chain
//!   to (mutual TLS);
//! - a server-only identity ([`RawServerTls`], e.g. the router's public `http_tls`): no
//!   client certificates are asked for.
//!
//! Each handshake reads the configuration in force at that moment ([`Reloadable::current`]),
//! so a reload applies to new connections while established ones continue. A changed file
//! that does not load is refused: logged, counted in
//! `switchback_<component>_tls_reloads_total{outcome="failed"}`, and the previous material
//! stays in force.

pub mod dial;
pub mod incoming;
pub mod role;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, LazyLock, RwLock},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
    server::WebPkiClientVerifier,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, invalid};

pub use dial::Dialer;
pub use incoming::{
    HANDSHAKE_TIMEOUT, HandshakeLimits, MAX_HANDSHAKES, TlsIncoming, incoming, incoming_with,
};
pub use role::{Peer, Role};

/// How often the certificate files are read to notice a change.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);

/// `tls:` — this process's cluster identity for gRPC (server and client) and the cluster
/// CA that peers' certificates must chain to. Absent: gRPC is plaintext.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClusterTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The DNS name every peer's certificate is checked against, instead of the host
    /// dialled. For deployments where peers are dialled by IP addresses that change (pods)
    /// and share one certificate issued for this name.
    pub server_name: Option<String>,
}

/// A server-only identity (no client certificates), e.g. the router's `http_tls:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerTls {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// The checked file names of a cluster identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTlsFiles {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub server_name: Option<ServerName<'static>>,
}

/// The checked file names of a server-only identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Config key names, so that errors name the key the operator wrote.
#[derive(Debug, Clone, Copy)]
pub struct Keys {
    pub ca_file: &'static str,
    pub cert_file: &'static str,
    pub key_file: &'static str,
    pub server_name: &'static str,
}

/// The keys of the shared `tls:` section.
pub const CLUSTER_KEYS: Keys = Keys {
    ca_file: "tls.ca_file",
    cert_file: "tls.cert_file",
    key_file: "tls.key_file",
    server_name: "tls.server_name",
};

/// A file every TLS section needs once the section is there.
fn required(path: Option<PathBuf>, key: &'static str) -> Result<PathBuf, ConfigError> {
    path.ok_or_else(|| invalid(key, "required when TLS is on"))
}

impl RawClusterTls {
    /// Checks that all three files are named, read, parse, and that the key is the
    /// certificate's.
    pub fn validate(self, keys: Keys) -> Result<ClusterTlsFiles, ConfigError> {
        let files = ClusterTlsFiles {
            ca_file: required(self.ca_file, keys.ca_file)?,
            cert_file: required(self.cert_file, keys.cert_file)?,
            key_file: required(self.key_file, keys.key_file)?,
            server_name: self
                .server_name
                .map(|name| {
                    ServerName::try_from(name.clone()).map_err(|e| {
                        invalid(keys.server_name, format!("{name:?} is not a DNS name: {e}"))
                    })
                })
                .transpose()?,
        };
        let bytes = read_all(&files.paths()).map_err(|e| e.at(keys))?;
        build_cluster(&bytes).map_err(|e| e.at(keys))?;
        Ok(files)
    }
}

impl RawServerTls {
    pub fn validate(self, keys: Keys) -> Result<ServerTlsFiles, ConfigError> {
        let files = ServerTlsFiles {
            cert_file: required(self.cert_file, keys.cert_file)?,
            key_file: required(self.key_file, keys.key_file)?,
        };
        let bytes = read_all(&files.paths()).map_err(|e| e.at(keys))?;
        build_server_only(&bytes).map_err(|e| e.at(keys))?;
        Ok(files)
    }
}

impl ClusterTlsFiles {
    /// The role this process's certificate names, which must be one of `allowed` (and, with
    /// `id`, for that id): a certificate of the wrong role would be refused by every peer,
    /// so it is refused at start, naming the key of the file at fault.
    pub fn expect_role(
        &self,
        keys: Keys,
        allowed: &[Role],
        id: Option<&str>,
    ) -> Result<Peer, ConfigError> {
        let bytes = crate::fs::read_file(&self.cert_file)
            .map_err(|e| invalid(keys.cert_file, format!("{}: {e}", self.cert_file.display())))?;
        let chain = certs(&self.cert_file, &bytes, File::Cert).map_err(|e| e.at(keys))?;
        let peer = role::peer_of(&chain[0]).map_err(|e| invalid(keys.cert_file, e.to_string()))?;
        let wanted = allowed
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(" or ");
        if !allowed.contains(&peer.role) {
            return Err(invalid(
                keys.cert_file,
                format!(
                    "the certificate names the {peer}; this process needs a {wanted} certificate ({})",
                    role::uri(allowed[0], id.unwrap_or("<id>"))
                ),
            ));
        }
        if let Some(id) = id
            && peer.id != id
        {
            return Err(invalid(
                keys.cert_file,
                format!("the certificate names the {peer}, but this process is {id:?}"),
            ));
        }
        Ok(peer)
    }

    fn paths(&self) -> Vec<PathBuf> {
        vec![
            self.cert_file.clone(),
            self.key_file.clone(),
            self.ca_file.clone(),
        ]
    }
}

impl ServerTlsFiles {
    fn paths(&self) -> Vec<PathBuf> {
        vec![self.cert_file.clone(), self.key_file.clone()]
    }
}

/// Why TLS material does not load; `file` says which of the files is at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        file: File,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse {
        file: File,
        path: PathBuf,
        reason: String,
    },
    #[error("the certificate does not parse, or the private key does not match it: {0}")]
    KeyMismatch(rustls::Error),
    #[error("{0}")]
    Rustls(String),
}

/// Which file of an identity an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum File {
    Cert,
    Key,
    Ca,
}

impl TlsError {
    /// The config error naming the key of the file at fault.
    fn at(self, keys: Keys) -> ConfigError {
        let key = match &self {
            TlsError::Read { file, .. } | TlsError::Parse { file, .. } => match file {
                File::Cert => keys.cert_file,
                File::Key => keys.key_file,
                File::Ca => keys.ca_file,
            },
            TlsError::KeyMismatch(rustls::Error::InvalidCertificate(_)) => keys.cert_file,
            TlsError::KeyMismatch(_) | TlsError::Rustls(_) => keys.key_file,
        };
        invalid(key, self.to_string())
    }
}

/// The file contents, in the order cert, key[, ca].
struct Bytes {
    files: Vec<(PathBuf, Vec<u8>)>,
}

fn read_all(paths: &[PathBuf]) -> Result<Bytes, TlsError> {
    let kinds = [File::Cert, File::Key, File::Ca];
    let mut files = Vec::with_capacity(paths.len());
    for (path, file) in paths.iter().zip(kinds) {
        let bytes = crate::fs::read_file(path).map_err(|source| TlsError::Read {
            file,
            path: path.clone(),
            source,
        })?;
        files.push((path.clone(), bytes));
    }
    Ok(Bytes { files })
}

/// The crypto provider of every Switchback TLS configuration: ring, named explicitly so
/// that no process-wide default has to be installed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path, bytes: &[u8], file: File) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let parse = |reason: String| TlsError::Parse {
        file,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parse(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(parse("holds no PEM certificate".into()));
    }
    Ok(certs)
}

fn key(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| TlsError::Parse {
        file: File::Key,
        path: path.to_owned(),
        reason: format!("no PEM private key: {e}"),
    })
}

fn roots(path: &Path, bytes: &[u8]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certs(path, bytes, File::Ca)? {
        store.add(cert).map_err(|e| TlsError::Parse {
            file: File::Ca,
            path: path.to_owned(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(Arc::new(store))
}

/// The identity (chain and key), checked to belong together.
fn identity(b: &Bytes) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let (cert_path, cert_bytes) = &b.files[0];
    let (key_path, key_bytes) = &b.files[1];
    let chain = certs(cert_path, cert_bytes, File::Cert)?;
    let key = key(key_path, key_bytes)?;
    rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider())
        .map_err(TlsError::KeyMismatch)?;
    Ok((chain, key))
}

/// Checks the TLS files of the connection to etcd as the cluster identity's are checked
/// (etcd-client reads them itself at each connect): the CA that signed etcd's certificate
/// and, for `--client-cert-auth`, a client certificate and its key.
pub(crate) fn check_etcd_files(
    ca_file: &Path,
    client: Option<(&Path, &Path)>,
    keys: Keys,
) -> Result<(), ConfigError> {
    let ca = crate::fs::read_file(ca_file).map_err(|source| {
        TlsError::Read {
            file: File::Ca,
            path: ca_file.to_owned(),
            source,
        }
        .at(keys)
    })?;
    roots(ca_file, &ca).map_err(|e| e.at(keys))?;
    if let Some((cert, key)) = client {
        let bytes = read_all(&[cert.to_owned(), key.to_owned()]).map_err(|e| e.at(keys))?;
        identity(&bytes).map_err(|e| e.at(keys))?;
    }
    Ok(())
}

/// The configurations of a cluster identity.
#[derive(Debug)]
pub struct ClusterConfigs {
    /// Asks for and verifies a client certificate signed by the cluster CA.
    pub server: Arc<ServerConfig>,
    /// Trusts only the cluster CA and presents this process's certificate.
    pub client: Arc<ClientConfig>,
}

fn build_cluster(b: &Bytes) -> Result<ClusterConfigs, TlsError> {
    let (chain, key) = identity(b)?;
    let (ca_path, ca_bytes) = &b.files[2];
    let roots = roots(ca_path, ca_bytes)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), provider())
        .build()
        .map_err(|e| TlsError::Rustls(format!("client verifier: {e}")))?;
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(TlsError::KeyMismatch)?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let mut client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(TlsError::KeyMismatch)?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(ClusterConfigs {
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

fn build_server_only(b: &Bytes) -> Result<ServerConfig, TlsError> {
    let (chain, key) = identity(b)?;
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::KeyMismatch)?;
    // The router's API is HTTP/1.1 (axum's `http1` feature).
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(server)
}

/// TLS configuration `T` built from files, rebuilt when they change. Cloning shares it.
pub struct Reloadable<T> {
    current: Arc<RwLock<Arc<T>>>,
    /// Cluster identity only: the name peers' certificates are checked against.
    server_name: Option<ServerName<'static>>,
    paths: Arc<Vec<PathBuf>>,
    build: fn(&Bytes) -> Result<T, TlsError>,
    /// Which material this is, for logs and the reload metric (`cluster`, `http`).
    material: &'static str,
}

impl<T> Clone for Reloadable<T> {
    fn clone(&self) -> Self {
        Self {
            current: Arc::clone(&self.current),
            server_name: self.server_name.clone(),
            paths: Arc::clone(&self.paths),
            build: self.build,
            material: self.material,
        }
    }
}

impl<T> std::fmt::Debug for Reloadable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloadable")
            .field("material", &self.material)
            .field("paths", &self.paths)
            .finish()
    }
}

/// The cluster identity, reloading.
pub type ClusterTls = Reloadable<ClusterConfigs>;
/// A server-only identity, reloading.
pub type ServerTls = Reloadable<ServerConfig>;

impl ClusterTls {
    pub fn load(files: &ClusterTlsFiles) -> Result<Self, TlsError> {
        let mut tls = Self::from_paths(files.paths(), build_cluster, "cluster")?;
        tls.server_name = files.server_name.clone();
        Ok(tls)
    }

    /// The name to check a peer's certificate against, if not the host dialled.
    pub fn server_name(&self) -> Option<&ServerName<'static>> {
        self.server_name.as_ref()
    }

    /// The server side of the configuration in force now.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current().server)
    }

    /// The client side of the configuration in force now.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.current().client)
    }
}

impl ServerTls {
    pub fn load(files: &ServerTlsFiles) -> Result<Self, TlsError> {
        Self::from_paths(files.paths(), build_server_only, "http")
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current()
    }
}

impl<T> Reloadable<T> {
    fn from_paths(
        paths: Vec<PathBuf>,
        build: fn(&Bytes) -> Result<T, TlsError>,
        material: &'static str,
    ) -> Result<Self, TlsError> {
        let bytes = read_all(&paths)?;
        let config = build(&bytes)?;
        Ok(Self {
            current: Arc::new(RwLock::new(Arc::new(config))),
            server_name: None,
            paths: Arc::new(paths),
            build,
            material,
        })
    }

    /// The configuration in force now.
    pub fn current(&self) -> Arc<T> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads the files again; when they differ from `last`, builds the new configuration
    /// and puts it in force, or keeps the old one if it does not build. Returns the
    /// contents seen, to compare with next time.
    fn reload_if_changed(&self, last: Option<Vec<Vec<u8>>>) -> Option<Vec<Vec<u8>>> {
        let bytes = match read_all(&self.paths) {
            Ok(b) => b,
            Err(err) => {
                // A file in the middle of being replaced; counted once per change.
                if last.is_some() {
                    record(self.material, "failed");
                    tracing::error!(material = self.material, %err, "TLS files unreadable; keeping the current certificates");
                }
                return None;
            }
        };
        let seen: Vec<Vec<u8>> = bytes.files.iter().map(|(_, b)| b.clone()).collect();
        if last.as_ref() == Some(&seen) {
            return last;
        }
        match (self.build)(&bytes) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
                record(self.material, "ok");
                tracing::info!(
                    material = self.material,
                    "TLS certificates reloaded; new connections use them"
                );
            }
            Err(err) => {
                record(self.material, "failed");
                tracing::error!(material = self.material, %err, "changed TLS files do not load; keeping the current certificates");
            }
        }
        Some(seen)
    }

    /// Polls the files every [`RELOAD_POLL`] until `stop` fires, putting changed material
    /// in force (see the module documentation).
    pub async fn watch(self, stop: CancellationToken)
    where
        T: Send + Sync + 'static,
    {
        let mut last = read_all(&self.paths)
            .ok()
            .map(|b| b.files.into_iter().map(|(_, b)| b).collect::<Vec<_>>());
        crate::reload::poll(self.material, RELOAD_POLL, stop, move || {
            last = self.reload_if_changed(last.take());
        })
        .await;
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabel {
    material: &'static str,
    outcome: &'static str,
}

/// Reloads of TLS material in this process, by material and outcome.
static RELOADS: LazyLock<Family<ReloadLabel, Counter>> = LazyLock::new(Family::default);

fn record(material: &'static str, outcome: &'static str) {
    RELOADS
        .get_or_create(&ReloadLabel { material, outcome })
        .inc();
}

/// Registers `tls_reloads` (rendered `<prefix>_tls_reloads_total`) in `registry`.
pub fn register_metrics(registry: &mut Registry) {
    registry.register(
        "tls_reloads",
        "Reloads of TLS certificates after their files changed, by material and outcome (failed: the old ones stay in force)",
        RELOADS.clone(),
    );
}

/// Logs, once at start, whether a hop is encrypted.
pub fn log_hop(hop: &'static str, encrypted: bool) {
    if encrypted {
        tracing::info!(hop, "TLS on");
    } else {
        tracing::warn!(hop, "plaintext (no TLS configured)");
    }
}

#[cfg(test)]
pub(crate) mod tests;
