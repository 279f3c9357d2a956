//! Roles between Switchback components under mutual TLS. A certificate names what its
//! holder is with one URI subject alternative name, `spiffe://switchback/<role>/<id>`
//! (`router`, `worker`, `controller` or `operator`; for a worker the id is its worker id).
//! A CA-signed certificate proves membership of the cluster; the role says which calls
//! its holder may make:
//!
//! | call | allowed roles |
//! | --- | --- |
//! | controller `ReportLoad` | worker, and only for the worker id its certificate names |
//! | controller `ReportWorkerFailure` | router |
//! | controller `Drain` | operator; a worker for itself (the preStop drain) |
//! | controller `WatchCluster` | router, controller (a standby mirrors the leader), operator |
//! | controller `Status` | router, controller, operator |
//! | worker `Generate` | router |
//! | worker `Health` | any role |
//!
//! A client checks the server's role too: a router sends prompts only to a server whose
//! certificate says `worker`, and every process reports only to a `controller`.
//! Without TLS there are no certificates and no roles: every caller is trusted (see
//! docs/SECURITY.md).

use std::fmt;

use rustls::pki_types::CertificateDer;
use tonic::{Request, Status};

/// The URI prefix of a role name.
pub const URI_PREFIX: &str = "spiffe://switchback/";

/// What a component is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Router,
    Worker,
    Controller,
    /// A person or tool acting for one (`sbctl`).
    Operator,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Router, Role::Worker, Role::Controller, Role::Operator];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Router => "router",
            Role::Worker => "worker",
            Role::Controller => "controller",
            Role::Operator => "operator",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub role: Role,
    pub id: String,
}

impl Peer {
    /// The URI SAN naming this peer.
    pub fn uri(&self) -> String {
        uri(self.role, &self.id)
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.role, self.id)
    }
}

/// The URI SAN for `role` and `id`.
pub fn uri(role: Role, id: &str) -> String {
    format!("{URI_PREFIX}{}/{id}", role.as_str())
}

/// Why a certificate names no usable role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    #[error("the certificate does not parse: {0}")]
    Unparsable(String),
    #[error("the certificate names no role (a URI SAN spiffe://switchback/<role>/<id>)")]
    Missing,
    #[error("the certificate names more than one role")]
    Ambiguous,
    #[error("{0:?} is not spiffe://switchback/<router|worker|controller|operator>/<id>")]
    Malformed(String),
}

/// Reads the role of a leaf certificate: exactly one URI SAN under [`URI_PREFIX`] with a
/// known role and a non-empty id without `/`. Other URI SANs are ignored.
pub fn peer_of(cert: &CertificateDer<'_>) -> Result<Peer, RoleError> {
    let parsed =
        webpki::EndEntityCert::try_from(cert).map_err(|e| RoleError::Unparsable(e.to_string()))?;
    let mut found = None;
    for name in parsed.valid_uri_names() {
        let Some(rest) = name.strip_prefix(URI_PREFIX) else {
            continue;
        };
        let peer = rest
            .split_once('/')
            .and_then(|(role, id)| {
                let ok = !id.is_empty()
                    && !id.contains('/')
                    && id.chars().all(|c| !c.is_control() && !c.is_whitespace());
                Role::parse(role).filter(|_| ok).map(|role| Peer {
                    role,
                    id: id.to_owned(),
                })
            })
            .ok_or_else(|| RoleError::Malformed(name.to_owned()))?;
        if found.replace(peer).is_some() {
            return Err(RoleError::Ambiguous);
        }
    }
    found.ok_or(RoleError::Missing)
}

/// The caller of a gRPC request, when the server runs mutual TLS (`tls_on`): its role must
/// be one of `allowed`, else PERMISSION_DENIED (UNAUTHENTICATED when no certificate came
/// with it at all). Without TLS there is no caller identity: `Ok(None)`.
pub fn authorize<T>(
    req: &Request<T>,
    tls_on: bool,
    allowed: &[Role],
) -> Result<Option<Peer>, Status> {
    if !tls_on {
        return Ok(None);
    }
    let certs = req
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("mutual TLS: no client certificate"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("mutual TLS: no client certificate"))?;
    let peer = peer_of(leaf).map_err(|e| Status::permission_denied(format!("caller: {e}")))?;
    if !allowed.contains(&peer.role) {
        return Err(Status::permission_denied(format!(
            "a {} may not make this call (allowed: {})",
            peer.role,
            allowed
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(Some(peer))
}

/// Checks that a server presented a certificate of `expected` role, after the handshake
/// and before any request is sent on the connection.
pub fn check_server(certs: Option<&[CertificateDer<'_>]>, expected: Role) -> Result<Peer, String> {
    let leaf = certs
        .and_then(|c| c.first())
        .ok_or_else(|| "the server presented no certificate".to_owned())?;
    let peer = peer_of(leaf).map_err(|e| format!("server: {e}"))?;
    if peer.role != expected {
        return Err(format!(
            "the server is a {peer}, not a {expected}: not sending it anything"
        ));
    }
    Ok(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn cert_with(uris: &[&str]) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        for u in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*u).try_into().expect("ia5 string")));
        }
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("sign").der().clone()
    }

    #[test]
    fn reads_the_one_role_uri() {
        let cert = cert_with(&["spiffe://switchback/worker/w-1"]);
        assert_eq!(
            peer_of(&cert),
            Ok(Peer {
                role: Role::Worker,
                id: "w-1".into()
            })
        );
        // Other URIs (another mesh's identity) do not count.
        let cert = cert_with(&[
            "spiffe://cluster.local/ns/a/sa/b",
            "spiffe://switchback/router/r",
        ]);
        assert_eq!(peer_of(&cert).map(|p| p.role), Ok(Role::Router));
    }

    #[test]
    fn refuses_missing_ambiguous_and_malformed_roles() {
        assert_eq!(peer_of(&cert_with(&[])), Err(RoleError::Missing));
        assert_eq!(
            peer_of(&cert_with(&[
                "spiffe://switchback/router/r",
                "spiffe://switchback/operator/r"
            ])),
            Err(RoleError::Ambiguous)
        );
        for bad in [
            "spiffe://switchback/admin/x",
            "spiffe://switchback/worker/",
            "spiffe://switchback/worker",
            "spiffe://switchback/worker/a/b",
        ] {
            assert!(
                matches!(peer_of(&cert_with(&[bad])), Err(RoleError::Malformed(_))),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn a_server_of_another_role_is_refused() {
        let router = cert_with(&["spiffe://switchback/router/r"]);
        let worker = cert_with(&["spiffe://switchback/worker/w"]);
        assert!(check_server(Some(&[worker.clone()][..]), Role::Worker).is_ok());
        let err = check_server(Some(&[router][..]), Role::Worker).expect_err("router as worker");
        assert!(err.contains("not a worker"), "{err}");
        assert!(check_server(None, Role::Worker).is_err());
    }

    #[test]
    fn plaintext_servers_trust_every_caller() {
        let req = Request::new(());
        assert_eq!(authorize(&req, false, &[Role::Router]).ok(), Some(None));
        // With TLS on, a request without connection info (no certificate) is refused.
        let err = authorize(&req, true, &[Role::Router]).expect_err("no certificate");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }
}
