//! Membership from etcd: reads every worker record under the prefix, then watches for
//! joins, changes and leaves (a lease expiring deletes the record). Any break in the
//! watch leads to a fresh full read, so the view converges after etcd outages.

use std::{sync::Arc, time::Duration};

use etcd_client::{EventType, GetOptions, WatchOptions};
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

/// Follows the worker prefix until `cancel` fires. `synced` turns true after the first
/// complete read.
pub async fn follow(
    endpoints: Vec<String>,
    keys: Keys,
    view: Arc<ClusterView>,
    synced: watch::Sender<bool>,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    while !cancel.is_cancelled() {
        let session_started = std::time::Instant::now();
        let result = tokio::select! {
            () = cancel.cancelled() => return,
            r = follow_once(&endpoints, &keys, &view, &synced) => r,
        };
        // A watch that worked for a while starts the backoff over.
        if session_started.elapsed() > Duration::from_secs(5) {
            backoff = Duration::from_millis(200);
        }
        if let Err(err) = result {
            tracing::error!(%err, retry_in_ms = backoff.as_millis() as u64, "etcd membership watch broke");
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn follow_once(
    endpoints: &[String],
    keys: &Keys,
    view: &ClusterView,
    synced: &watch::Sender<bool>,
) -> Result<(), etcd_client::Error> {
    let mut client = switchback_common::etcd::connect(endpoints).await?;
    let prefix = keys.workers();
    let listing = client
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await?;
    let revision = listing.header().map_or(0, |h| h.revision());
    let records = listing
        .kvs()
        .iter()
        .filter_map(|kv| decode(kv.key(), kv.value()))
        .collect::<Vec<_>>();
    tracing::info!(
        workers = records.len(),
        revision,
        "membership read from etcd"
    );
    view.replace_all(records);
    synced.send_replace(true);

    let mut stream = client
        .watch(
            prefix.as_str(),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await?;
    while let Some(response) = stream.message().await? {
        if response.canceled() {
            return Err(etcd_client::Error::WatchError(format!(
                "watch cancelled by etcd: {}",
                response.cancel_reason()
            )));
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let Some(id) = std::str::from_utf8(kv.key())
                .ok()
                .and_then(|k| keys.worker_id_of(k))
            else {
                continue;
            };
            match event.event_type() {
                EventType::Put => {
                    if let Some(record) = decode(kv.key(), kv.value()) {
                        if record.id == id {
                            view.upsert(record);
                        } else {
                            tracing::warn!(key_id = id, record_id = %record.id, "worker record id does not match its key; ignored");
                        }
                    }
                }
                EventType::Delete => view.remove(id),
            }
        }
    }
    Err(etcd_client::Error::WatchError(
        "watch stream ended".to_owned(),
    ))
}
