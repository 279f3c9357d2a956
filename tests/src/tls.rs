//! Certificates and TLS clients for the TLS tests: a CA made in the test that issues leaf
//! certificates for 127.0.0.1 / localhost, written to files the way the processes read
//! them, and clients that present (or withhold) a certificate.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use switchback_common::tls::{Role, role};
use tokio::net::TcpStream;

/// A certificate authority.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("self-sign the CA");
        Self { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `common_name`, valid as server (127.0.0.1, localhost) and client,
    /// naming no Switchback role (what etcd and the router's HTTPS use).
    pub fn issue(&self, common_name: &str) -> Leaf {
        self.issue_with(common_name, None)
    }

    /// A cluster certificate naming `role` and `id` (`spiffe://switchback/<role>/<id>`), as
    /// a Switchback component under mutual TLS must present.
    pub fn issue_as(&self, role: Role, id: &str) -> Leaf {
        self.issue_with(&format!("{role}-{id}"), Some(role::uri(role, id)))
    }

    fn issue_with(&self, common_name: &str, uri: Option<String>) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("leaf params");
        if let Some(uri) = uri {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(uri.try_into().expect("URI SAN")));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign the leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes the CA certificate to `dir/name`.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        write(dir, name, &self.pem())
    }
}

impl Leaf {
    /// Writes `dir/<name>.crt` and `dir/<name>.key`; returns (cert, key).
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        (
            write(dir, &format!("{name}.crt"), &self.cert_pem),
            write(dir, &format!("{name}.key"), &self.key_pem),
        )
    }

    /// The certificate, DER (what a TLS peer presents).
    pub fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("leaf PEM")
    }
}

/// Replaces `path` atomically (write aside, rename), as a Secret update or cert-manager
/// renewal does, so a reader never sees half a file.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let aside = dir.join(format!(".{name}.new"));
    std::fs::write(&aside, text).expect("write TLS file");
    std::fs::rename(&aside, &path).expect("rename TLS file");
    path
}

/// A client configuration (ring provider) trusting `ca`, presenting `identity` if given,
/// offering `alpn` (`h2` for gRPC, `http/1.1` for the router's API).
pub fn client_config(ca: &Ca, identity: Option<&Leaf>, alpn: &[u8]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).expect("CA PEM"))
        .expect("add CA");
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![leaf.der()],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key PEM"),
            )
            .expect("client identity"),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// A gRPC channel to `address` over TLS with `config` (TCP and handshake on connect).
pub async fn grpc_channel(
    address: &str,
    config: Arc<ClientConfig>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |uri: tonic::codegen::http::Uri| {
            let config = Arc::clone(&config);
            async move {
                let host = uri.host().unwrap_or("127.0.0.1").to_owned();
                let port = uri.port_u16().unwrap_or(443);
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                let name = ServerName::try_from(host).map_err(std::io::Error::other)?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
}

/// Handshakes with `address` and returns the certificate the server presented.
pub async fn server_certificate(
    address: &str,
    config: Arc<ClientConfig>,
) -> std::io::Result<CertificateDer<'static>> {
    let tcp = TcpStream::connect(address).await?;
    let name = ServerName::try_from("127.0.0.1").map_err(std::io::Error::other)?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or_else(|| std::io::Error::other("the server presented no certificate"))
}

/// Mutual TLS for a whole harness cluster: one CA in a temporary directory, a certificate
/// per component naming its role (`tls:` sections for their configs) and the harness's
/// own client identity, an operator's, with which it asks the controller and workers.
#[derive(Clone)]
pub struct ClusterPki {
    dir: Arc<tempfile::TempDir>,
    issued: Arc<std::sync::atomic::AtomicUsize>,
    ca: Arc<Ca>,
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for ClusterPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPki")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Default for ClusterPki {
    fn default() -> Self {
        Self::new()
    }
}

impl ClusterPki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("PKI dir");
        let ca = Ca::new("cluster CA");
        ca.write(dir.path(), "ca.crt");
        let harness = ca.issue_as(Role::Operator, "harness");
        let client = client_config(&ca, Some(&harness), b"h2");
        Self {
            dir: Arc::new(dir),
            issued: Arc::default(),
            ca: Arc::new(ca),
            client,
        }
    }

    /// A `tls:` config section with a fresh certificate for `role` and `id` (files of its
    /// own, even when two components share a name).
    pub fn yaml(&self, role: Role, id: &str) -> String {
        let n = self
            .issued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (cert, key) = self
            .ca
            .issue_as(role, id)
            .write(self.dir.path(), &format!("{role}-{id}-{n}"));
        format!(
            "tls: {{ca_file: {}, cert_file: {}, key_file: {}}}\n",
            self.dir.path().join("ca.crt").display(),
            cert.display(),
            key.display()
        )
    }

    /// The harness's client configuration (gRPC, with its operator certificate).
    pub fn client(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.client)
    }

    /// A gRPC client configuration presenting a fresh certificate for `role` and `id`.
    pub fn client_as(&self, role: Role, id: &str) -> Arc<ClientConfig> {
        client_config(&self.ca, Some(&self.ca.issue_as(role, id)), b"h2")
    }

    /// The cluster CA (to issue certificates a test needs besides the roles).
    pub fn ca(&self) -> &Ca {
        &self.ca
    }
}
