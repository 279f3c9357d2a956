//! Membership from etcd: reads every worker record and operator drain under the cluster
//! prefix, then watches for joins, changes, leaves (a lease expiring deletes the record)
//! and drains. Any break in the watch leads to a fresh full read, so the view converges
//! after etcd outages.

use std::{collections::HashMap, sync::Arc, time::Duration};

use switchback_common::{
    backoff::Backoff,
    etcd::{Change, read_then_watch},
};
use switchback_proto::{Keys, WorkerRecord};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::view::ClusterView;

fn decode(key: &[u8], value: &[u8]) -> Option<WorkerRecord> {
    match WorkerRecord::from_json(value) {
        Ok(record) => Some(record),
        Err(err) => {
            tracing::warn!(key = %String::from_utf8_lossy(key), %err, "ignoring an unreadable worker record");
            None
        }
    }
}

/// The reason stored in a drain mark (`{"reason": ...}`); an unreadable mark still drains.
pub fn drain_reason(value: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(value)
        .ok()
        .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
        .unwrap_or_default()
}

/// Follows the cluster prefix until `cancel` fires. `synced` turns true after the first
/// complete read.
pub async fn follow(
    etcd: switchback_common::etcd::EtcdAccess,
    keys: Keys,
    view: Arc<ClusterView>,
    synced: watch::Sender<bool>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
    loop {
        backoff.start();
        let result = tokio::select! {
            () = cancel.cancelled() => return,
            r = follow_once(&etcd, &keys, &view, &synced) => r,
        };
        if let Err(err) = result {
            tracing::error!(%err, retry_in_ms = backoff.delay().as_millis() as u64, "etcd membership watch broke");
        }
        if !backoff.wait(&cancel).await {
            return;
        }
    }
}

async fn follow_once(
    etcd: &switchback_common::etcd::EtcdAccess,
    keys: &Keys,
    view: &ClusterView,
    synced: &watch::Sender<bool>,
) -> Result<(), etcd_client::Error> {
    let mut client = switchback_common::etcd::connect(etcd).await?;
    // One read and one watch over the whole cluster prefix: worker records and drains
    // stay consistent with each other (one revision).
    let read = |revision: i64, kvs: Vec<(&str, &[u8])>| {
        let mut records = Vec::new();
        let mut drains = HashMap::new();
        for (key, value) in kvs {
            if keys.worker_id_of(key).is_some() {
                records.extend(decode(key.as_bytes(), value));
            } else if let Some(id) = keys.drained_id_of(key) {
                drains.insert(id.to_owned(), drain_reason(value));
            }
        }
        tracing::info!(
            workers = records.len(),
            drained = drains.len(),
            revision,
            "membership read from etcd"
        );
        view.replace_all(records, drains);
        synced.send_replace(true);
    };
    let changed = |change: Change<'_>| {
        if let Some(id) = keys.worker_id_of(change.key) {
            match change.value {
                None => view.remove(id),
                Some(value) => {
                    if let Some(record) = decode(change.key.as_bytes(), value) {
                        if record.id == id {
                            view.upsert(record);
                        } else {
                            tracing::warn!(key_id = id, record_id = %record.id, "worker record id does not match its key; ignored");
                        }
                    }
                }
            }
        } else if let Some(id) = keys.drained_id_of(change.key) {
            view.set_drained(id, change.value.map(drain_reason));
        }
    };
    match read_then_watch(&mut client, keys.prefix(), true, read, changed).await? {}
}
