use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use super::*;

/// A test CA (also used by the etcd section's TLS tests).
pub(crate) struct Ca {
    pub(crate) cert: rcgen::Certificate,
    key: KeyPair,
}

pub(crate) fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("self-signed");
    Ca { cert, key }
}

/// A leaf for localhost / 127.0.0.1: (cert PEM, key PEM).
pub(crate) fn leaf(ca: &Ca, name: &str) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.signed_by(&key, &ca.cert, &ca.key).expect("signed");
    (cert.pem(), key.serialize_pem())
}

/// A leaf naming a Switchback role: (cert PEM, key PEM).
fn role_leaf(ca: &Ca, role: Role, id: &str) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params");
    params.subject_alt_names.push(rcgen::SanType::URI(
        role::uri(role, id).try_into().expect("URI"),
    ));
    let cert = params.signed_by(&key, &ca.cert, &ca.key).expect("signed");
    (cert.pem(), key.serialize_pem())
}

/// A cluster identity of `role` in `dir`.
fn role_identity(dir: &Path, ca: &Ca, role: Role, id: &str) -> ClusterTls {
    let (cert, key) = role_leaf(ca, role, id);
    let files = RawClusterTls {
        ca_file: Some(write(dir, "ca.pem", &ca.cert.pem())),
        cert_file: Some(write(dir, &format!("{role}.pem"), &cert)),
        key_file: Some(write(dir, &format!("{role}.key"), &key)),
        server_name: None,
    }
    .validate(CLUSTER_KEYS)
    .expect("valid");
    ClusterTls::load(&files).expect("load")
}

/// A dial must reach a server of the role it names: to one of another role (a forged
/// worker record pointing at a router's certificate) it fails after the handshake and
/// sends nothing; to the right role it sends the HTTP/2 preface.
#[test]
fn a_dial_sends_nothing_to_a_server_of_another_role() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca("cluster CA");
    let server = role_identity(dir.path(), &ca, Role::Router, "impostor");
    let client = role_identity(dir.path(), &ca, Role::Router, "r1");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let acceptor = tokio_rustls::TlsAcceptor::from(server.server_config());
        // Accepts two connections; returns the bytes each sent after its handshake.
        let served = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (tcp, _) = listener.accept().await.expect("accept");
                let mut tls = acceptor.accept(tcp).await.expect("handshake");
                let mut bytes = Vec::new();
                let mut buf = [0u8; 64];
                // Until the client hangs up, or the HTTP/2 preface's first line is in.
                loop {
                    match tokio::io::AsyncReadExt::read(&mut tls, &mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => bytes.extend_from_slice(&buf[..n]),
                    }
                    if bytes.len() >= 16 {
                        break;
                    }
                }
                seen.push(bytes);
            }
            seen
        });
        let dialer = Dialer::new(Some(client));
        let err = dialer
            .connect(&address, Role::Worker)
            .await
            .expect_err("connected to a router as if it were a worker");
        let chain = format!("{:?}", std::error::Error::source(&err));
        assert!(chain.contains("not a worker"), "{chain}");
        // The right role: the client goes on to speak HTTP/2 (the test server does not
        // answer it, so the connect itself is left to time out in the background).
        let right = tokio::spawn({
            let dialer = dialer.clone();
            let address = address.clone();
            async move { dialer.connect(&address, Role::Router).await }
        });
        let seen = served.await.expect("server task");
        right.abort();
        assert!(seen[0].is_empty(), "sent {:?} to the wrong role", seen[0]);
        assert!(
            seen[1].starts_with(b"PRI * HTTP/2.0"),
            "no HTTP/2 preface to the right role: {:?}",
            seen[1]
        );
    });
}

pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn cluster_files(dir: &Path, ca: &Ca, name: &str) -> RawClusterTls {
    let (cert, key) = leaf(ca, name);
    RawClusterTls {
        ca_file: Some(write(dir, "ca.pem", &ca.cert.pem())),
        cert_file: Some(write(dir, "cert.pem", &cert)),
        key_file: Some(write(dir, "key.pem", &key)),
        server_name: None,
    }
}

fn expect_invalid(raw: RawClusterTls, key: &str) -> String {
    let err = raw.validate(CLUSTER_KEYS).expect_err(key).to_string();
    assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
    err
}

#[test]
fn validation_names_the_key_at_fault() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca("cluster CA");
    let good = cluster_files(dir.path(), &ca, "worker");
    let files = good.clone().validate(CLUSTER_KEYS).expect("valid");
    assert_eq!(Some(&files.cert_file), good.cert_file.as_ref());

    expect_invalid(
        RawClusterTls {
            key_file: None,
            ..good.clone()
        },
        "tls.key_file",
    );
    expect_invalid(
        RawClusterTls {
            ca_file: None,
            ..good.clone()
        },
        "tls.ca_file",
    );
    let err = expect_invalid(
        RawClusterTls {
            cert_file: Some(dir.path().join("missing.pem")),
            ..good.clone()
        },
        "tls.cert_file",
    );
    assert!(err.contains("missing.pem"), "{err}");
    let garbage = write(dir.path(), "garbage.pem", "not a certificate\n");
    expect_invalid(
        RawClusterTls {
            cert_file: Some(garbage.clone()),
            ..good.clone()
        },
        "tls.cert_file",
    );
    expect_invalid(
        RawClusterTls {
            ca_file: Some(garbage.clone()),
            ..good.clone()
        },
        "tls.ca_file",
    );
    expect_invalid(
        RawClusterTls {
            key_file: Some(garbage),
            ..good.clone()
        },
        "tls.key_file",
    );
    expect_invalid(
        RawClusterTls {
            server_name: Some("not a name".into()),
            ..good.clone()
        },
        "tls.server_name",
    );
    // A key that is not the certificate's.
    let (_, other_key) = leaf(&ca, "other");
    let err = expect_invalid(
        RawClusterTls {
            key_file: Some(write(dir.path(), "other-key.pem", &other_key)),
            ..good
        },
        "tls.key_file",
    );
    assert!(err.contains("does not match"), "{err}");
}

#[test]
fn server_only_needs_no_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = leaf(&ca("public CA"), "router");
    let raw = RawServerTls {
        cert_file: Some(write(dir.path(), "cert.pem", &cert)),
        key_file: Some(write(dir.path(), "key.pem", &key)),
    };
    let keys = Keys {
        ca_file: "http_tls.ca_file",
        cert_file: "http_tls.cert_file",
        key_file: "http_tls.key_file",
        server_name: "http_tls.server_name",
    };
    let files = raw.clone().validate(keys).expect("valid");
    ServerTls::load(&files).expect("loads");
    let err = RawServerTls {
        key_file: None,
        ..raw
    }
    .validate(keys)
    .expect_err("no key");
    assert!(err.to_string().contains("http_tls.key_file"), "{err}");
}

fn reloads(outcome: &'static str) -> u64 {
    RELOADS
        .get_or_create(&ReloadLabel {
            material: "cluster",
            outcome,
        })
        .get()
}

#[test]
fn a_broken_new_file_keeps_the_old_material_and_a_good_one_replaces_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca("cluster CA");
    let files = cluster_files(dir.path(), &ca, "first")
        .validate(CLUSTER_KEYS)
        .expect("valid");
    let tls = ClusterTls::load(&files).expect("loads");
    // The first look records the contents; unchanged files are not rebuilt after that.
    let seen = tls.reload_if_changed(None);
    let before = tls.current();
    let seen = tls.reload_if_changed(seen);
    assert!(
        Arc::ptr_eq(&before, &tls.current()),
        "unchanged files rebuilt the config"
    );

    // A truncated certificate (a half-written file): refused, counted, old one kept.
    let failed = reloads("failed");
    std::fs::write(&files.cert_file, "-----BEGIN CERTIFICATE-----\nAAAA\n").expect("write");
    let seen = tls.reload_if_changed(seen);
    assert!(
        Arc::ptr_eq(&before, &tls.current()),
        "a broken file replaced the config"
    );
    assert!(reloads("failed") > failed);
    // Not retried until the files change again.
    let failed = reloads("failed");
    let seen = tls.reload_if_changed(seen);
    assert_eq!(reloads("failed"), failed);

    // A new certificate and key: in force for new handshakes.
    let ok = reloads("ok");
    let (cert, key) = leaf(&ca, "second");
    std::fs::write(&files.key_file, key).expect("write");
    std::fs::write(&files.cert_file, &cert).expect("write");
    tls.reload_if_changed(seen);
    assert!(
        !Arc::ptr_eq(&before, &tls.current()),
        "a good file was not put in force"
    );
    assert!(reloads("ok") > ok);
    let expected = CertificateDer::from_pem_slice(cert.as_bytes()).expect("pem");
    assert_eq!(server_cert_seen(&tls, &tls).expect("handshake"), expected);
}

/// Handshakes in memory (client `client`, server `server`); the server's certificate as
/// the client saw it.
fn server_cert_seen(
    client: &ClusterTls,
    server: &ClusterTls,
) -> Result<CertificateDer<'static>, std::io::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server.server_config());
        let connector = tokio_rustls::TlsConnector::from(client.client_config());
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let client_side = async {
            let mut tls = connector.connect(name, a).await?;
            tokio::io::AsyncWriteExt::write_all(&mut tls, b"x").await?;
            tokio::io::AsyncWriteExt::flush(&mut tls).await?;
            Ok::<_, std::io::Error>(tls)
        };
        let server_side = async move {
            let mut tls = acceptor.accept(b).await?;
            // TLS 1.3: the server learns of a refused client certificate on first read.
            let mut byte = [0u8; 1];
            tokio::io::AsyncReadExt::read_exact(&mut tls, &mut byte).await?;
            Ok::<_, std::io::Error>(())
        };
        let (client, server) = tokio::join!(client_side, server_side);
        let client = client?;
        server?;
        let cert = client
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .cloned()
            .ok_or_else(|| std::io::Error::other("no server certificate"))?;
        Ok(cert)
    })
}

#[test]
fn mutual_tls_refuses_a_peer_from_another_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ours = ca("cluster CA");
    let theirs = ca("other CA");
    let a = tempfile::tempdir_in(dir.path()).expect("a");
    let b = tempfile::tempdir_in(dir.path()).expect("b");
    let server = ClusterTls::load(
        &cluster_files(a.path(), &ours, "server")
            .validate(CLUSTER_KEYS)
            .expect("valid"),
    )
    .expect("server");
    let friend = ClusterTls::load(
        &cluster_files(b.path(), &ours, "friend")
            .validate(CLUSTER_KEYS)
            .expect("valid"),
    )
    .expect("friend");
    server_cert_seen(&friend, &server).expect("same CA: accepted");
    // A client whose certificate comes from another CA (it trusts ours, so only the
    // server's check of the client certificate can refuse it).
    let c = tempfile::tempdir_in(dir.path()).expect("c");
    let mut raw = cluster_files(c.path(), &theirs, "stranger");
    raw.ca_file = Some(write(c.path(), "ca.pem", &ours.cert.pem()));
    let stranger = ClusterTls::load(&raw.validate(CLUSTER_KEYS).expect("valid")).expect("stranger");
    server_cert_seen(&stranger, &server).expect_err("another CA's client certificate was accepted");
}

/// Silent sockets beyond the handshake cap cannot keep a real client out: the accept loop
/// never waits for a slot, and the oldest handshake in progress makes room. The silent
/// sockets here would hold their slots for an hour; the real handshake must not wait for
/// them (the 60 s bound only turns a hang into a failure).
#[test]
fn silent_sockets_beyond_the_cap_do_not_starve_a_real_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ours = ca("cluster CA");
    let tls = ClusterTls::load(
        &cluster_files(dir.path(), &ours, "server")
            .validate(CLUSTER_KEYS)
            .expect("valid"),
    )
    .expect("tls");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let tasks = tokio_util::task::TaskTracker::new();
        let stop = tokio_util::sync::CancellationToken::new();
        let server = tls.clone();
        let mut incoming = incoming_with(
            listener,
            move || server.server_config(),
            stop.clone(),
            &tasks,
            HandshakeLimits {
                max_in_progress: 8,
                timeout: std::time::Duration::from_secs(3600),
            },
        )
        .expect("incoming");
        let mut silent = Vec::new();
        for _ in 0..40 {
            silent.push(
                tokio::net::TcpStream::connect(address)
                    .await
                    .expect("connect"),
            );
        }
        let connector = tokio_rustls::TlsConnector::from(tls.client_config());
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let handshake = async {
            let tcp = tokio::net::TcpStream::connect(address).await?;
            connector.connect(name, tcp).await
        };
        let (client, accepted) = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            tokio::join!(handshake, incoming.next())
        })
        .await
        .expect("the real handshake waited behind the silent sockets");
        client.expect("the client's handshake");
        assert!(accepted.is_some(), "the server side of the connection");
        stop.cancel();
        drop(silent);
    });
}
