//! Operator drains. `sbctl drain <id>` (through the controller) writes `drain/<id>` in
//! etcd; the worker watches that key. While it exists the worker refuses new requests,
//! finishes the ones in flight and then deregisters (revokes its lease). When the key goes
//! away (`sbctl undrain`) the worker registers again and takes work.
//!
//! The mark lives in etcd rather than in the controller so that it survives controller
//! failover and worker restarts; the worker removes it itself on a clean shutdown, so a
//! Kubernetes preStop drain does not keep the next pod of the same name drained.

use std::sync::Arc;

use switchback_common::registry::{self, Registry};
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::load::Load;

/// Follows whether `key` exists, into `marked`, until `cancel` fires. On etcd errors the
/// last known value stands and the watch is retried with backoff.
pub async fn watch_mark(
    registry: impl Registry,
    key: String,
    marked: watch::Sender<bool>,
    cancel: CancellationToken,
) {
    let set = |now: bool| {
        marked.send_if_modified(|m| std::mem::replace(m, now) != now);
    };
    registry::follow(
        &registry,
        &key,
        false,
        &cancel,
        |_, kvs| set(!kvs.is_empty()),
        |change| set(change.value.is_some()),
        |err, retry_in| {
            tracing::warn!(%err, key, retry_in_ms = retry_in.as_millis() as u64, "cannot watch the drain mark; keeping the last known state");
        },
    )
    .await;
}

/// The worker's etcd registration.
#[derive(Debug, Clone)]
pub struct Registration {
    pub etcd: switchback_common::etcd::EtcdAccess,
    pub key: String,
    pub value: Vec<u8>,
    pub ttl_s: i64,
}

/// Resolves when `rx` holds `value`; never, if the sender is gone.
async fn until(rx: &mut watch::Receiver<bool>, value: bool) {
    if rx.wait_for(|v| *v == value).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Keeps the worker registered except while an operator drain is in force (see the module
/// docs), until `stop` fires; then deregisters. After `shutdown` fires (SIGTERM) an
/// undrain is ignored: the worker is on its way out.
pub async fn manage(
    registration: Registration,
    mut drained: watch::Receiver<bool>,
    load: Arc<Load>,
    requests: TaskTracker,
    shutdown: CancellationToken,
    stop: CancellationToken,
) {
    let register = |lease_stop: CancellationToken| {
        let r = registration.clone();
        let load = Arc::clone(&load);
        tokio::spawn(async move {
            switchback_common::etcd::keep_registered(
                &r.etcd,
                &r.key,
                &r.value,
                r.ttl_s,
                lease_stop,
                |lease| load.set_registered(lease.is_some()),
            )
            .await;
        })
    };
    let mut lease_stop = CancellationToken::new();
    let mut keeper = Some(register(lease_stop.clone()));
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = until(&mut drained, true) => {}
        }
        tracing::info!("drained by an operator: refusing new requests, finishing in-flight ones");
        load.start_draining();
        requests.close();
        let finished = tokio::select! {
            () = stop.cancelled() => break,
            () = requests.wait() => true,
            () = until(&mut drained, false), if !shutdown.is_cancelled() => false,
        };
        if finished {
            lease_stop.cancel();
            if let Some(k) = keeper.take() {
                let _ = k.await;
            }
            tracing::info!("drain complete: no request in flight; deregistered from etcd");
            tokio::select! {
                () = stop.cancelled() => break,
                () = until(&mut drained, false) => {}
            }
        }
        if shutdown.is_cancelled() {
            // Shutting down anyway: stay out of routing until `stop`.
            stop.cancelled().await;
            break;
        }
        requests.reopen();
        load.stop_draining();
        if keeper.is_none() {
            lease_stop = CancellationToken::new();
            keeper = Some(register(lease_stop.clone()));
        }
        tracing::info!("undrained by an operator: taking requests again");
    }
    lease_stop.cancel();
    if let Some(k) = keeper {
        let _ = k.await;
    }
}

#[cfg(test)]
mod tests {
    use switchback_common::registry::MemoryRegistry;

    use super::*;

    #[tokio::test]
    async fn the_mark_follows_the_key_and_survives_a_broken_watch() {
        let registry = Arc::new(MemoryRegistry::default());
        registry.put("/c/drain/w1", r#"{"reason": "maintenance"}"#);
        let (marked, mut rx) = watch::channel(false);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(watch_mark(
            Arc::clone(&registry),
            "/c/drain/w1".to_owned(),
            marked,
            cancel.clone(),
        ));
        rx.wait_for(|m| *m)
            .await
            .expect("a mark present at start drains");
        // Another worker's mark is not this worker's.
        registry.put("/c/drain/w10", "{}");
        registry.delete("/c/drain/w1");
        rx.wait_for(|m| !*m)
            .await
            .expect("undrained when the mark goes");
        // etcd goes away: the last known state stands; after the re-read, a mark written
        // meanwhile applies.
        registry.break_watches("etcd restarted");
        registry.put("/c/drain/w1", "{}");
        rx.wait_for(|m| *m)
            .await
            .expect("drained again after the re-read");
        cancel.cancel();
        task.await.expect("stops on cancel");
    }
}
