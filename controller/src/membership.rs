//! Membership from etcd: reads every worker record and operator drain under the cluster
//! prefix, then watches for joins, changes, leaves (a lease expiring deletes the record)
//! and drains. Any break in the watch leads to a fresh full read, so the view converges
//! after etcd outages.

use std::{collections::HashMap, sync::Arc, time::Duration};

use switchback_common::registry::{self, Change, Registry, RegistryError};
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
    registry: impl Registry,
    keys: Keys,
    view: Arc<ClusterView>,
    synced: watch::Sender<bool>,
    cancel: CancellationToken,
) {
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
    let broke = |err: &RegistryError, retry_in: Duration| {
        tracing::error!(%err, retry_in_ms = retry_in.as_millis() as u64, "etcd membership watch broke");
    };
    registry::follow(
        &registry,
        keys.prefix(),
        true,
        &cancel,
        read,
        changed,
        broke,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use switchback_common::registry::MemoryRegistry;

    use super::*;
    use crate::view::tests::record;

    /// (worker id, drained) of every worker in the view.
    fn members(view: &ClusterView) -> Vec<(String, bool)> {
        let mut m: Vec<_> = view
            .snapshot()
            .workers
            .into_iter()
            .map(|w| (w.info.map(|i| i.id).unwrap_or_default(), w.drained))
            .collect();
        m.sort();
        m
    }

    #[tokio::test]
    async fn membership_follows_records_and_drains_and_ignores_mismatched_ids() {
        let keys = Keys::new("/c/");
        let registry = Arc::new(MemoryRegistry::default());
        registry.put(&keys.worker("a"), record("a").to_json());
        registry.put(&keys.drain("a"), r#"{"reason": "maintenance"}"#);
        let view = Arc::new(ClusterView::new("c1".into(), Duration::from_secs(5)));
        let (synced, mut synced_rx) = watch::channel(false);
        let cancel = CancellationToken::new();
        let mut events = view.subscribe();
        let task = tokio::spawn(follow(
            Arc::clone(&registry),
            keys.clone(),
            Arc::clone(&view),
            synced,
            cancel.clone(),
        ));
        synced_rx
            .wait_for(|s| *s)
            .await
            .expect("the first read completes");
        assert_eq!(members(&view), [("a".to_owned(), true)]);

        // A record whose id is not its key's is ignored; the next join is applied.
        registry.put(&keys.worker("c"), record("not-c").to_json());
        registry.put(&keys.worker("b"), record("b").to_json());
        registry.delete(&keys.drain("a"));
        while members(&view) != [("a".to_owned(), false), ("b".to_owned(), false)] {
            events.recv().await.expect("the view announces changes");
        }
        // A lease expiring deletes the record: the worker leaves.
        registry.delete(&keys.worker("a"));
        while members(&view) != [("b".to_owned(), false)] {
            events.recv().await.expect("the view announces the leave");
        }
        cancel.cancel();
        task.await.expect("membership stops on cancel");
    }
}
