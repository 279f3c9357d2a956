//! etcd access shared by the binaries: connecting with bounded timeouts, keeping a key
//! alive under a lease (re-registering after the lease is lost), and finding the
//! controller leader and dialling it.

use std::{path::PathBuf, time::Duration};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, PutOptions, TlsOptions};
use switchback_proto::Keys;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::tls::{Dialer, Role};

/// How to reach etcd: endpoints, and optionally TLS and a user. Files are read at each
/// (re)connect, so rotated etcd certificates and passwords apply to the next connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdAccess {
    pub endpoints: Vec<String>,
    pub tls: Option<EtcdTls>,
    pub user: Option<EtcdUser>,
}

/// TLS to etcd: the CA that signed etcd's server certificate and, for etcd's
/// `--client-cert-auth`, this process's client certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca_file: PathBuf,
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// etcd authentication: user name and the file holding the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUser {
    pub name: String,
    pub password_file: PathBuf,
}

impl EtcdAccess {
    /// Plaintext, no authentication.
    pub fn plaintext(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            tls: None,
            user: None,
        }
    }

    /// Whether the connection to etcd is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `options` with this access's TLS material and credentials, read from their files now.
    fn apply(&self, mut options: ConnectOptions) -> Result<ConnectOptions, etcd_client::Error> {
        let read = |path: &PathBuf| {
            crate::fs::read_file(path).map_err(|e| {
                etcd_client::Error::IoError(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", path.display()),
                ))
            })
        };
        if let Some(tls) = &self.tls {
            let mut t =
                TlsOptions::new().ca_certificate(Certificate::from_pem(read(&tls.ca_file)?));
            if let Some((cert, key)) = &tls.identity {
                t = t.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            options = options.with_tls(t);
        }
        if let Some(user) = &self.user {
            let password = String::from_utf8(read(&user.password_file)?).map_err(|_| {
                etcd_client::Error::InvalidArgs(format!(
                    "{}: the password is not UTF-8",
                    user.password_file.display()
                ))
            })?;
            options = options.with_user(&user.name, password.trim_end_matches(['\r', '\n']));
        }
        Ok(options)
    }
}

/// A change seen by [`read_then_watch`]: a key and its new value, or `None` when it was
/// deleted (a lease expiring deletes too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change<'a> {
    pub key: &'a str,
    pub value: Option<&'a [u8]>,
}

/// One consistent read of `key` (every key under it when `prefix`), handed to `read` as
/// (key, value) pairs, then a watch from the next revision, each change handed to
/// `changed`, so nothing falls between the read and the watch. Keys that are not UTF-8 are
/// skipped. Returns only with an error: etcd unreachable, the watch cancelled by etcd (a
/// compaction, lost authorisation) or its stream ended; the caller reads again after a
/// backoff, which is how every etcd follower converges after an outage.
pub async fn read_then_watch(
    client: &mut Client,
    key: &str,
    prefix: bool,
    mut read: impl FnMut(i64, Vec<(&str, &[u8])>),
    mut changed: impl FnMut(Change<'_>),
) -> Result<std::convert::Infallible, etcd_client::Error> {
    use etcd_client::{EventType, GetOptions, WatchOptions};
    let get = prefix.then(|| GetOptions::new().with_prefix());
    let listing = client.get(key, get).await?;
    let revision = listing.header().map_or(0, |h| h.revision());
    read(
        revision,
        listing
            .kvs()
            .iter()
            .filter_map(|kv| Some((std::str::from_utf8(kv.key()).ok()?, kv.value())))
            .collect(),
    );
    let mut options = WatchOptions::new().with_start_revision(revision + 1);
    if prefix {
        options = options.with_prefix();
    }
    let mut stream = client.watch(key, Some(options)).await?;
    while let Some(response) = stream.message().await? {
        if response.canceled() {
            return Err(etcd_client::Error::WatchError(format!(
                "watch cancelled by etcd: {}",
                response.cancel_reason()
            )));
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let Ok(key) = std::str::from_utf8(kv.key()) else {
                continue;
            };
            changed(Change {
                key,
                value: (event.event_type() == EventType::Put).then(|| kv.value()),
            });
        }
    }
    Err(etcd_client::Error::WatchError(
        "watch stream ended".to_owned(),
    ))
}

/// Connects to etcd. Every call through the client is bounded, so a dead etcd is an
/// error after a few seconds rather than a hang.
pub async fn connect(etcd: &EtcdAccess) -> Result<Client, etcd_client::Error> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
    Client::connect(&etcd.endpoints, Some(etcd.apply(options)?)).await
}

/// Like [`connect`] but without a per-request timeout, for calls that block by design
/// (an election campaign waits until it wins). HTTP/2 keep-alives still detect a dead etcd.
pub async fn connect_unbounded(etcd: &EtcdAccess) -> Result<Client, etcd_client::Error> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
    Client::connect(&etcd.endpoints, Some(etcd.apply(options)?)).await
}

/// The controller leader's gRPC address, if a controller has won the election.
pub async fn controller_leader(
    client: &mut Client,
    keys: &Keys,
) -> Result<Option<String>, etcd_client::Error> {
    match client.leader(keys.controller_election()).await {
        Ok(resp) => Ok(resp
            .kv()
            .and_then(|kv| std::str::from_utf8(kv.value()).ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)),
        // etcd answers "election: no leader" as an error status.
        Err(etcd_client::Error::GRpcStatus(status)) if status.message().contains("no leader") => {
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

/// Where a process finds the controller: a fixed address, or the leader elected in etcd.
#[derive(Debug, Clone)]
pub struct ControllerTarget {
    /// A fixed controller address (`controller:`, `--controller`); `None`: the leader
    /// elected in etcd, looked up at each dial.
    pub address: Option<String>,
    pub etcd: EtcdAccess,
    pub keys: Keys,
    /// Plaintext or mTLS.
    pub dialer: Dialer,
}

/// Why the controller could not be found or dialled.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// etcd did not answer the connection.
    #[error("{0}")]
    EtcdConnect(#[source] etcd_client::Error),
    /// etcd did not answer the election query.
    #[error("{0}")]
    EtcdLeader(#[source] etcd_client::Error),
    /// No controller holds the election.
    #[error("no controller leader elected yet")]
    NoLeader,
    /// The controller at `address` did not answer, or (with TLS) its certificate does
    /// not name the controller role.
    #[error("{source}")]
    Dial {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
}

impl ControllerTarget {
    /// The controller's address: the fixed one, else the elected leader's.
    pub async fn address(&self) -> Result<String, ControllerError> {
        if let Some(address) = &self.address {
            return Ok(address.clone());
        }
        let mut client = connect(&self.etcd)
            .await
            .map_err(ControllerError::EtcdConnect)?;
        controller_leader(&mut client, &self.keys)
            .await
            .map_err(ControllerError::EtcdLeader)?
            .ok_or(ControllerError::NoLeader)
    }

    /// Finds the controller ([`ControllerTarget::address`]) and dials it; with TLS its
    /// certificate must name [`Role::Controller`]. Returns the address dialled and the
    /// channel.
    pub async fn dial(&self) -> Result<(String, Channel), ControllerError> {
        let address = self.address().await?;
        match self.dialer.connect(&address, Role::Controller).await {
            Ok(channel) => Ok((address, channel)),
            Err(source) => Err(ControllerError::Dial { address, source }),
        }
    }
}

/// Why a lease session ended.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("lease {0:x} expired or was revoked")]
    Lost(i64),
}

/// Keeps `key = value` in etcd bound to a lease of `ttl_s` seconds until `cancel` fires,
/// then revokes the lease so the key disappears at once. When the lease is lost (etcd
/// outage, partition, expiry), it logs loudly and registers again with a new lease,
/// backing off between attempts. `on_state` is called with the lease after every
/// (re)registration and with `None` whenever the key may be gone (lease lost or revoked).
pub async fn keep_registered(
    etcd: &EtcdAccess,
    key: &str,
    value: &[u8],
    ttl_s: i64,
    cancel: CancellationToken,
    mut on_state: impl FnMut(Option<i64>),
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let session = async {
            let mut client = connect(etcd).await?;
            let lease = client.lease_grant(ttl_s, None).await?.id();
            client
                .put(key, value, Some(PutOptions::new().with_lease(lease)))
                .await?;
            on_state(Some(lease));
            Ok::<_, LeaseError>((client, lease))
        };
        let (client, lease) = tokio::select! {
            () = cancel.cancelled() => return,
            result = session => match result {
                Ok(session) => session,
                Err(err) => {
                    tracing::error!(%err, key, retry_in_ms = backoff.as_millis() as u64, "cannot register in etcd");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    // Short backoff: after an etcd restart the old lease (restored with a
                    // fresh TTL) would delete the key if we re-registered later than that.
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(200);
        tracing::info!(
            key,
            lease = format_args!("{lease:x}"),
            ttl_s,
            "registered in etcd"
        );
        let mut revoker = client.clone();
        tokio::select! {
            () = cancel.cancelled() => {
                on_state(None);
                match revoker.lease_revoke(lease).await {
                    Ok(_) => tracing::info!(key, "lease revoked; deregistered from etcd"),
                    Err(err) => tracing::warn!(%err, key, "could not revoke lease; the key expires with its TTL"),
                }
                return;
            }
            err = keep_alive(client, lease, ttl_s) => {
                on_state(None);
                tracing::error!(%err, key, "LOST etcd registration; registering again");
            }
        }
    }
}

/// Sends keep-alives at a third of the TTL; returns only when the lease is lost.
async fn keep_alive(mut client: Client, lease: i64, ttl_s: i64) -> LeaseError {
    let result = async {
        let (mut keeper, mut responses) = client.lease_keep_alive(lease).await?;
        let period = Duration::from_millis((ttl_s as u64 * 1000) / 3);
        let mut ticker = tokio::time::interval(period);
        loop {
            ticker.tick().await;
            keeper.keep_alive().await?;
            // A keep-alive that takes longer than the TTL means the lease may be gone.
            let response =
                tokio::time::timeout(Duration::from_secs(ttl_s as u64), responses.message())
                    .await
                    .map_err(|_| LeaseError::Lost(lease))??;
            match response {
                Some(r) if r.ttl() > 0 => {}
                _ => return Err::<(), LeaseError>(LeaseError::Lost(lease)),
            }
        }
    }
    .await;
    match result {
        Err(err) => err,
        Ok(()) => LeaseError::Lost(lease),
    }
}

/// Campaigns in the etcd election `name` with `value` (the candidate's address) until
/// `cancel` fires; `leader` holds true while this process holds leadership. Losing the lease
/// (etcd outage, partition) drops leadership and starts a new campaign. On cancel the
/// lease is revoked so a standby takes over at once.
pub async fn campaign_forever(
    etcd: &EtcdAccess,
    name: &str,
    value: &str,
    ttl_s: i64,
    cancel: CancellationToken,
    leader: tokio::sync::watch::Sender<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let session = async {
            let mut client = connect_unbounded(etcd).await?;
            let lease = client.lease_grant(ttl_s, None).await?.id();
            Ok::<_, LeaseError>((client, lease))
        };
        let (mut client, lease) = tokio::select! {
            () = cancel.cancelled() => return,
            result = session => match result {
                Ok(s) => s,
                Err(err) => {
                    tracing::error!(%err, retry_in_ms = backoff.as_millis() as u64, "cannot reach etcd to campaign");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        let mut revoker = client.clone();
        let keeper = keep_alive(client.clone(), lease, ttl_s);
        tokio::pin!(keeper);
        let campaign = client.campaign(name, value, lease);
        let outcome = tokio::select! {
            () = cancel.cancelled() => None,
            err = &mut keeper => Some(err),
            won = campaign => match won {
                Ok(_) => {
                    backoff = Duration::from_millis(200);
                    leader.send_replace(true);
                    tracing::info!(election = name, value, "elected leader");
                    tokio::select! {
                        () = cancel.cancelled() => None,
                        err = &mut keeper => Some(err),
                    }
                }
                Err(err) => Some(LeaseError::Etcd(err)),
            },
        };
        leader.send_replace(false);
        match outcome {
            None => {
                let _ = revoker.lease_revoke(lease).await;
                tracing::info!(election = name, "left the election");
                return;
            }
            Some(err) => {
                tracing::error!(%err, election = name, retry_in_ms = backoff.as_millis() as u64, "LOST leadership or campaign failed; campaigning again");
                let _ = revoker.lease_revoke(lease).await;
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
