//! TLS at every hop, with real processes: etcd serving only TLS with client-certificate
//! auth and password auth on, each component its own etcd user with the role
//! `sbctl etcd-roles` creates; a controller, a `sim` worker and a router speaking mutual
//! TLS to each other with certificates naming their roles; the router's API on HTTPS. Peers without a certificate, or with one from
//! another CA, are refused; certificates replaced on disk are used by new handshakes
//! without a restart while requests keep succeeding; a broken replacement is refused and
//! the previous certificate stays in force.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::json;
use switchback_common::tls::Role;
use switchback_proto::pb;
use switchback_tests::{
    Etcd, EtcdTls, Proc, bin, free_port,
    metrics::Scrape,
    tls::{Ca, Leaf, client_config, grpc_channel, server_certificate},
    wait_for,
};

/// An etcd section for a component: TLS with its own client certificate, and its user
/// `switchback-<name>` (which has the etcd role of that name).
fn etcd_yaml(etcd: &Etcd, dir: &Path, etcd_ca: &Ca, name: &str, password_file: &Path) -> String {
    let ca = etcd_ca.write(dir, "etcd-ca.crt");
    let (cert, key) = etcd_ca.issue(name).write(dir, &format!("etcd-{name}"));
    format!(
        "etcd: {{endpoints: [{}], ca_file: {}, cert_file: {}, key_file: {}, username: switchback-{name}, password_file: {}}}\n",
        etcd.endpoint,
        ca.display(),
        cert.display(),
        key.display(),
        password_file.display()
    )
}

/// A `tls:` section with a fresh cluster certificate for `role` and `id`; returns it and
/// the files.
fn cluster_yaml(dir: &Path, ca: &Ca, role: Role, id: &str) -> (String, Leaf, PathBuf, PathBuf) {
    let ca_file = ca.write(dir, "cluster-ca.crt");
    let leaf = ca.issue_as(role, id);
    let (cert, key) = leaf.write(dir, role.as_str());
    let yaml = format!(
        "tls: {{ca_file: {}, cert_file: {}, key_file: {}}}\n",
        ca_file.display(),
        cert.display(),
        key.display()
    );
    (yaml, leaf, cert, key)
}

/// The controller's cluster view, asked over mTLS with `config`.
async fn cluster_view(
    address: &str,
    config: &Arc<rustls::ClientConfig>,
) -> Option<pb::ClusterView> {
    let ch = grpc_channel(address, Arc::clone(config)).await.ok()?;
    Some(
        pb::controller_client::ControllerClient::new(ch)
            .status(pb::StatusRequest {})
            .await
            .ok()?
            .into_inner(),
    )
}

fn spawn(name: &str, binary: &str, dir: &Path, yaml: &str) -> Proc {
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(&config, yaml).expect("write config");
    Proc::spawn(
        name,
        &bin(binary),
        &["--config".into(), config.display().to_string()],
        &[],
    )
}

/// Installs `leaf` over `cert`/`key` the way a Secret update does: each file replaced
/// atomically, key first (so for a moment the pair does not match; that must be refused).
fn rotate(leaf: &Leaf, cert: &Path, key: &Path) {
    let dir = cert.parent().expect("dir");
    switchback_tests::tls::write(dir, &file_name(key), &leaf.key_pem);
    switchback_tests::tls::write(dir, &file_name(cert), &leaf.cert_pem);
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

fn https_client(public_ca: &Ca) -> reqwest::Client {
    let config = client_config(public_ca, None, b"http/1.1");
    reqwest::Client::builder()
        .use_preconfigured_tls(Arc::unwrap_or_clone(config))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("https client")
}

async fn chat(http: &reqwest::Client, base: &str) -> Result<String, String> {
    let resp = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "small", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .map_err(|e| format!("send: {e:?}"))?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| format!("body: {e}"))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{status}: {body}"))
    }
}

/// The router's reload counter for `material` and `outcome`, scraped over HTTPS.
async fn tls_reloads(
    http: &reqwest::Client,
    base: &str,
    material: &str,
    outcome: &str,
) -> Option<f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Scrape::parse(&text).value(
        "switchback_router_tls_reloads_total",
        &[("material", material), ("outcome", outcome)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_hop_is_mutually_authenticated_and_certificates_rotate_without_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let etcd_ca = Ca::new("etcd CA");
    let cluster_ca = Ca::new("cluster CA");
    let public_ca = Ca::new("public CA");
    let other_ca = Ca::new("someone else's CA");

    // etcd: TLS only, client certificates required, then password auth enabled. The
    // harness's own certificate says CN=root: with auth on, etcd takes it as user root.
    // `sbctl etcd-roles`, run as root, creates a role per component; each component gets
    // a user with its role.
    let etcd_dir = tempfile::tempdir_in(d).expect("etcd dir");
    let (etcd_cert, etcd_key) = etcd_ca.issue("etcd").write(etcd_dir.path(), "server");
    let root = etcd_ca.issue("root");
    let etcd = Etcd::start_tls(&EtcdTls {
        cert_file: etcd_cert,
        key_file: etcd_key,
        ca_file: etcd_ca.write(etcd_dir.path(), "ca.crt"),
        client_pem: (root.cert_pem.clone(), root.key_pem.clone()),
    })
    .await;
    {
        let mut c = etcd.client().await.expect("etcd client with a certificate");
        c.user_add("root", "root password", None)
            .await
            .expect("root");
        c.user_grant_role("root", "root").await.expect("root role");
        c.auth_enable().await.expect("auth enable");
    }
    let etcd_ca_file = etcd_ca.write(d, "etcd-ca.crt");
    let (root_cert, root_key) = root.write(d, "etcd-root");
    let out = tokio::process::Command::new(bin("sbctl"))
        .args(["--etcd-endpoints", &etcd.endpoint, "--etcd-ca-file"])
        .arg(&etcd_ca_file)
        .arg("--etcd-cert-file")
        .arg(&root_cert)
        .arg("--etcd-key-file")
        .arg(&root_key)
        .arg("etcd-roles")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run sbctl etcd-roles");
    assert!(
        out.status.success(),
        "sbctl etcd-roles: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    {
        let mut c = etcd.client().await.expect("etcd client as root");
        for component in ["worker", "controller", "router", "operator"] {
            let user = format!("switchback-{component}");
            c.user_add(user.as_str(), "correct horse", None)
                .await
                .expect("user");
            c.user_grant_role(user.as_str(), user.as_str())
                .await
                .expect("user role");
        }
    }
    let password_file = d.join("etcd-password");
    std::fs::write(&password_file, "correct horse\n").expect("password file");

    // etcd refuses a client without a certificate, and a wrong password.
    let etcd_ca_pem = etcd_ca.pem();
    let no_cert = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(3))
        .with_tls(
            etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(&etcd_ca_pem)),
        );
    let refused = async {
        let mut c = etcd_client::Client::connect([etcd.endpoint.as_str()], Some(no_cert)).await?;
        c.get("any", None).await
    }
    .await;
    assert!(
        refused.is_err(),
        "etcd answered a client without a certificate"
    );
    let someone = etcd_ca.issue("someone");
    let wrong_password = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(3))
        .with_user("switchback", "wrong")
        .with_tls(
            etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(&etcd_ca_pem))
                .identity(etcd_client::Identity::from_pem(
                    &someone.cert_pem,
                    &someone.key_pem,
                )),
        );
    let refused = async {
        let mut c =
            etcd_client::Client::connect([etcd.endpoint.as_str()], Some(wrong_password)).await?;
        c.get("any", None).await
    }
    .await;
    assert!(refused.is_err(), "etcd answered a wrong password");

    // The controller.
    let cdir = tempfile::tempdir_in(d).expect("controller dir");
    let controller_addr = format!("127.0.0.1:{}", free_port());
    let (tls, _, _, _) = cluster_yaml(cdir.path(), &cluster_ca, Role::Controller, "c1");
    let _controller = spawn(
        "controller",
        "switchback-controller",
        cdir.path(),
        &format!(
            "listen: {controller_addr}\nmetrics_listen: 127.0.0.1:{}\n{}{tls}",
            free_port(),
            etcd_yaml(&etcd, cdir.path(), &etcd_ca, "controller", &password_file),
        ),
    );
    let admin = cluster_ca.issue_as(Role::Operator, "admin");
    let admin_h2 = client_config(&cluster_ca, Some(&admin), b"h2");
    wait_for(
        "the controller to be elected (asked over mTLS)",
        Duration::from_secs(30),
        || async {
            let view = cluster_view(&controller_addr, &admin_h2).await?;
            (view.role == "leader").then_some(())
        },
    )
    .await;

    // A sim worker.
    let wdir = tempfile::tempdir_in(d).expect("worker dir");
    let worker_addr = format!("127.0.0.1:{}", free_port());
    let (tls, worker_leaf, worker_cert, worker_key) =
        cluster_yaml(wdir.path(), &cluster_ca, Role::Worker, "w1");
    // A long lease: at the end, only the router's failure report can take it out quickly.
    let mut worker = spawn(
        "worker",
        "switchback-worker",
        wdir.path(),
        &format!(
            "id: w1\ntier: small\nmodel: sim-small\nlisten: {worker_addr}\n\
             engine: {{kind: sim, prefill_ms_per_token: 0.1, decode_ms_per_token: 1}}\n\
             load_report_interval_ms: 100\n{}{tls}",
            etcd_yaml(&etcd, wdir.path(), &etcd_ca, "worker", &password_file)
                .replace("}\n", ", lease_ttl_s: 60}\n"),
        ),
    );
    // Ready in the controller's view: registered in etcd (TLS + password) and reporting
    // load to the controller (mTLS).
    wait_for(
        "worker w1 to be READY in the controller's view",
        Duration::from_secs(60),
        || async {
            let view = cluster_view(&controller_addr, &admin_h2).await?;
            view.workers
                .iter()
                .any(|w| {
                    w.info.as_ref().is_some_and(|i| i.id == "w1")
                        && w.health == pb::WorkerHealth::Ready as i32
                })
                .then_some(())
        },
    )
    .await;

    // The router: mTLS to controller and worker, HTTPS for clients with a certificate
    // from a public CA.
    let rdir = tempfile::tempdir_in(d).expect("router dir");
    let router_port = free_port();
    let (tls, _, _, _) = cluster_yaml(rdir.path(), &cluster_ca, Role::Router, "r1");
    let http_leaf = public_ca.issue("router-http");
    let (http_cert, http_key) = http_leaf.write(rdir.path(), "http");
    let _router = spawn(
        "router",
        "switchback-router",
        rdir.path(),
        &format!(
            "listen: 127.0.0.1:{router_port}\ntiers: [small]\nauth: {{disabled: true}}\n{}{tls}\
             http_tls: {{cert_file: {}, key_file: {}}}\n",
            etcd_yaml(&etcd, rdir.path(), &etcd_ca, "router", &password_file),
            http_cert.display(),
            http_key.display()
        ),
    );
    let base = format!("https://127.0.0.1:{router_port}");
    let https = https_client(&public_ca);
    wait_for(
        "a chat completion through HTTPS",
        Duration::from_secs(60),
        || async { chat(&https, &base).await.ok() },
    )
    .await;

    // Clients that connect and never start a handshake hold up no one: handshakes run in
    // their own tasks, not in the accept loop.
    let mut silent = Vec::new();
    for address in [format!("127.0.0.1:{router_port}"), worker_addr.clone()] {
        for _ in 0..3 {
            silent.push(
                tokio::net::TcpStream::connect(&address)
                    .await
                    .expect("connect"),
            );
        }
    }
    chat(&https_client(&public_ca), &base)
        .await
        .expect("a request on a new connection while silent clients wait");
    server_certificate(&worker_addr, Arc::clone(&admin_h2))
        .await
        .expect("a worker handshake while silent clients wait");
    drop(silent);

    // Plain HTTP to the HTTPS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{router_port}/readyz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    // gRPC without a client certificate, with one from another CA (even naming a role),
    // or with a cluster certificate that names no role: refused by the worker and by the
    // controller. With the cluster CA's operator certificate: answered.
    let stranger = other_ca.issue_as(Role::Operator, "stranger");
    let roleless = cluster_ca.issue("no-role");
    for (who, address) in [("worker", &worker_addr), ("controller", &controller_addr)] {
        for (what, config, accepted) in [
            (
                "no client certificate",
                client_config(&cluster_ca, None, b"h2"),
                false,
            ),
            (
                "a certificate from another CA",
                client_config(&cluster_ca, Some(&stranger), b"h2"),
                false,
            ),
            (
                "a cluster certificate without a role",
                client_config(&cluster_ca, Some(&roleless), b"h2"),
                false,
            ),
            ("the cluster CA's certificate", Arc::clone(&admin_h2), true),
        ] {
            let answered = async {
                let ch = grpc_channel(address, config)
                    .await
                    .map_err(|e| e.to_string())?;
                if who == "worker" {
                    pb::inference_client::InferenceClient::new(ch)
                        .health(pb::HealthRequest {})
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                } else {
                    pb::controller_client::ControllerClient::new(ch)
                        .status(pb::StatusRequest {})
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            }
            .await;
            assert_eq!(
                answered.is_ok(),
                accepted,
                "{who} with {what}: {answered:?}"
            );
        }
    }

    // sbctl finds the leader through etcd (TLS, client certificate, password) and asks it
    // over mTLS; without the --tls-* flags (plaintext) the controller does not answer it.
    let sdir = tempfile::tempdir_in(d).expect("sbctl dir");
    let (etcd_cert, etcd_key) = etcd_ca.issue("sbctl").write(sdir.path(), "etcd-sbctl");
    let (cert, key) = cluster_ca
        .issue_as(Role::Operator, "sbctl")
        .write(sdir.path(), "sbctl");
    let cluster_ca_file = cluster_ca.write(sdir.path(), "cluster-ca.crt");
    let path = |p: &PathBuf| p.display().to_string();
    let etcd_args = [
        "--etcd-endpoints".to_owned(),
        etcd.endpoint.clone(),
        "--etcd-ca-file".into(),
        path(&etcd_ca_file),
        "--etcd-cert-file".into(),
        path(&etcd_cert),
        "--etcd-key-file".into(),
        path(&etcd_key),
        "--etcd-username".into(),
        "switchback-operator".into(),
        "--etcd-password-file".into(),
        path(&password_file),
    ];
    let tls_args = [
        "--tls-ca-file".to_owned(),
        path(&cluster_ca_file),
        "--tls-cert-file".into(),
        path(&cert),
        "--tls-key-file".into(),
        path(&key),
    ];
    let sbctl = |args: Vec<String>| async move {
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new(bin("sbctl"))
                .args(args)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("sbctl did not finish within 60 s")
        .expect("run sbctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let mut args: Vec<String> = etcd_args.iter().chain(&tls_args).cloned().collect();
    args.extend(["status".into(), "--json".into()]);
    let (ok, stdout, stderr) = sbctl(args).await;
    assert!(
        ok && stdout.contains("\"w1\""),
        "sbctl status over TLS: {stdout} {stderr}"
    );
    let mut args: Vec<String> = etcd_args.to_vec();
    args.extend(["status".into(), "--json".into()]);
    let (ok, stdout, _) = sbctl(args).await;
    assert!(!ok, "sbctl in plaintext was answered: {stdout}");

    // Requests keep flowing through the rotations below.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let traffic = tokio::spawn({
        let (stop, ok, https, base) = (
            Arc::clone(&stop),
            Arc::clone(&ok),
            https.clone(),
            base.clone(),
        );
        async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match chat(&https, &base).await {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(e),
                }
            }
            failures
        }
    });

    // Rotate the router's HTTPS certificate: new handshakes present the new one.
    let public_h1 = client_config(&public_ca, None, b"http/1.1");
    assert_eq!(
        server_certificate(&format!("127.0.0.1:{router_port}"), Arc::clone(&public_h1))
            .await
            .expect("handshake"),
        http_leaf.der()
    );
    let http_leaf2 = public_ca.issue("router-http-2");
    rotate(&http_leaf2, &http_cert, &http_key);
    wait_for(
        "the router to present its new HTTPS certificate",
        Duration::from_secs(30),
        || async {
            let cert =
                server_certificate(&format!("127.0.0.1:{router_port}"), Arc::clone(&public_h1))
                    .await
                    .ok()?;
            (cert == http_leaf2.der()).then_some(())
        },
    )
    .await;

    // Rotate the worker's gRPC certificate.
    assert_eq!(
        server_certificate(&worker_addr, Arc::clone(&admin_h2))
            .await
            .expect("handshake"),
        worker_leaf.der()
    );
    let worker_leaf2 = cluster_ca.issue_as(Role::Worker, "w1");
    rotate(&worker_leaf2, &worker_cert, &worker_key);
    wait_for(
        "the worker to present its new gRPC certificate",
        Duration::from_secs(30),
        || async {
            let cert = server_certificate(&worker_addr, Arc::clone(&admin_h2))
                .await
                .ok()?;
            (cert == worker_leaf2.der()).then_some(())
        },
    )
    .await;

    // A broken replacement is refused (counted) and the certificate in force stays.
    let before = tls_reloads(&https, &base, "http", "failed")
        .await
        .unwrap_or(0.0);
    switchback_tests::tls::write(
        rdir.path(),
        &file_name(&http_cert),
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    );
    wait_for(
        "the router to count the broken certificate as a failed reload",
        Duration::from_secs(30),
        || async { (tls_reloads(&https, &base, "http", "failed").await? > before).then_some(()) },
    )
    .await;
    assert_eq!(
        server_certificate(&format!("127.0.0.1:{router_port}"), Arc::clone(&public_h1))
            .await
            .expect("handshake after a broken file"),
        http_leaf2.der(),
        "the broken file replaced the certificate in force"
    );
    assert!(
        tls_reloads(&https, &base, "http", "ok")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );

    // Still answering, on a fresh connection too.
    chat(&https_client(&public_ca), &base)
        .await
        .expect("a request after the rotations");
    let served = ok.load(Ordering::Relaxed);
    wait_for(
        "more requests to succeed after the rotations",
        Duration::from_secs(30),
        || async { (ok.load(Ordering::Relaxed) > served).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let failures = traffic.await.expect("traffic task");
    assert!(
        failures.is_empty(),
        "requests failed during the rotations: {failures:?}"
    );

    // The worker dies: the router's next request to it fails to connect, and the router's
    // failure report reaches the controller over mTLS, long before the lease expires.
    worker.kill().await;
    let _ = chat(&https, &base).await;
    let reason = wait_for(
        "the controller to mark w1 unreachable on the router's report",
        Duration::from_secs(20),
        || async {
            let view = cluster_view(&controller_addr, &admin_h2).await?;
            view.workers
                .into_iter()
                .find(|w| {
                    w.info.as_ref().is_some_and(|i| i.id == "w1")
                        && w.health == pb::WorkerHealth::Unreachable as i32
                })
                .map(|w| w.health_reason)
        },
    )
    .await;
    assert!(reason.contains("router@"), "{reason}");

    // etcd: with the roles of `sbctl etcd-roles`, only a worker's user writes worker
    // records (w1 registered with it above); the others cannot forge one, and only an
    // operator's writes the routing policy.
    let keys = switchback_proto::Keys::new(switchback_proto::keys::DEFAULT_PREFIX);
    let identity = etcd_ca.issue("probe");
    for (user, key) in [
        ("switchback-router", keys.worker("forged")),
        ("switchback-controller", keys.worker("forged")),
        ("switchback-operator", keys.worker("forged")),
        ("switchback-router", keys.policy()),
        ("switchback-worker", keys.policy()),
        ("switchback-worker", keys.controller_election()),
    ] {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(3))
            .with_user(user, "correct horse")
            .with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(&etcd_ca_pem))
                    .identity(etcd_client::Identity::from_pem(
                        &identity.cert_pem,
                        &identity.key_pem,
                    )),
            );
        let mut c = etcd_client::Client::connect([etcd.endpoint.as_str()], Some(options))
            .await
            .unwrap_or_else(|e| panic!("{user} connects: {e}"));
        // Every component reads worker records.
        c.get(keys.worker("w1"), None)
            .await
            .unwrap_or_else(|e| panic!("{user} reads a worker record: {e}"));
        let put = c.put(key.as_str(), "{}", None).await;
        let err = put.expect_err(&format!("{user} wrote {key}"));
        assert!(
            err.to_string().contains("permission denied"),
            "{user} writing {key}: {err}"
        );
    }
}
