//! A standby's warm view: while another replica leads, the standby watches the leader's
//! cluster stream and copies its load reports and router suspicions. Membership and drains
//! already come from etcd on every replica, so a new leader starts with the whole view,
//! not from nothing.

use std::{sync::Arc, time::Duration};

use switchback_common::{
    backoff::Backoff,
    etcd::{ControllerError, ControllerTarget},
};
use switchback_proto::pb;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::view::ClusterView;

/// Mirrors the leader into `view` whenever this replica is not the leader, until `cancel`.
/// `leader_at` says where the leader is found: the election in etcd, no fixed address.
pub async fn follow_leader(
    leader_at: ControllerTarget,
    own_address: String,
    view: Arc<ClusterView>,
    mut leader: watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        // Nothing to mirror while we lead.
        tokio::select! {
            () = cancel.cancelled() => return,
            r = leader.wait_for(|l| !*l) => if r.is_err() { return },
        }
        backoff.start();
        let result = tokio::select! {
            () = cancel.cancelled() => return,
            _ = leader.wait_for(|l| *l) => Ok(()),
            r = mirror_once(&leader_at, &own_address, &view) => r,
        };
        if let Err(err) = result {
            tracing::debug!(%err, "not mirroring the leader right now");
        }
        if !backoff.wait(&cancel).await {
            return;
        }
    }
}

async fn mirror_once(
    leader_at: &ControllerTarget,
    own_address: &str,
    view: &ClusterView,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let address = leader_at.address().await.map_err(|err| match err {
        ControllerError::NoLeader => "no leader elected".into(),
        err => Box::new(err) as Box<dyn std::error::Error + Send + Sync>,
    })?;
    if address == own_address {
        return Err("the election names this replica; waiting for it to take office".into());
    }
    let channel = leader_at
        .dialer
        .connect(&address, switchback_common::tls::Role::Controller)
        .await?;
    let mut client = pb::controller_client::ControllerClient::new(channel);
    let mut stream = client
        .watch_cluster(pb::WatchClusterRequest {
            watcher: format!("standby@{own_address}"),
        })
        .await?
        .into_inner();
    tracing::info!(leader = %address, "standby mirroring the leader's view");
    while let Some(event) = stream.message().await? {
        match event.event {
            Some(pb::cluster_event::Event::Snapshot(snapshot)) => {
                for state in snapshot.workers {
                    apply_state(view, state);
                }
            }
            Some(pb::cluster_event::Event::Upsert(state)) => apply_state(view, state),
            Some(pb::cluster_event::Event::Load(load)) => view.mirror(load, Duration::ZERO),
            Some(pb::cluster_event::Event::Removed(_)) | None => {}
        }
    }
    Ok(())
}

fn apply_state(view: &ClusterView, state: pb::WorkerState) {
    let Some(info) = &state.info else { return };
    if state.health == pb::WorkerHealth::Unreachable as i32 {
        view.suspect(&info.id, "the previous leader", &state.health_reason);
    }
    if let Some(load) = state.load {
        view.mirror(load, Duration::from_millis(state.load_age_ms));
    }
}
