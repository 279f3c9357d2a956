//! The router's copy of the cluster view, fed by the controller's `WatchCluster` stream,
//! plus this router's own in-flight count per worker. When the controller is unreachable
//! the router keeps routing on its last view and reconnects in the background.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use switchback_common::backoff::Backoff;
pub use switchback_common::etcd::ControllerTarget;
use switchback_proto::{WorkerRecord, pb};
use tokio_util::sync::CancellationToken;

use crate::placement::Candidate;

/// A worker's token as the routing core's cascade judges it.
pub fn token(t: &pb::TokenLogprob) -> crate::cascade::Token<'_> {
    crate::cascade::Token {
        text: &t.token,
        logprob: t.logprob,
        alternatives: t
            .top
            .iter()
            .map(|a| (a.token.as_str(), a.logprob))
            .collect(),
    }
}

#[derive(Debug, Clone)]
pub struct Worker {
    pub record: WorkerRecord,
    pub health: pb::WorkerHealth,
    pub load: pb::LoadReport,
    /// This router could not reach it recently (filled in snapshots only).
    pub suspect: bool,
}

/// Shared, thread-safe view.
#[derive(Debug, Default)]
pub struct View {
    workers: RwLock<BTreeMap<String, Worker>>,
    in_flight: Mutex<HashMap<String, Arc<AtomicU32>>>,
    /// Workers this router could not reach, out of its routing set until the instant.
    suspects: Mutex<HashMap<String, Instant>>,
    /// The controller the cluster watch is connected to, for failure reports.
    controller: RwLock<Option<tonic::transport::Channel>>,
    /// Woken when capacity may have freed up: a request finished or the view changed.
    changed: Arc<Notify>,
    ready: AtomicBool,
    connected: AtomicBool,
    /// Cluster watches opened so far (a new one after every controller failover).
    sessions: std::sync::atomic::AtomicU64,
}

/// Owned copy of a worker for one placement decision.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub workers: Vec<(Worker, u32)>,
}

impl Snapshot {
    /// Placement's view of the workers; a worker in `exclude` (tried already for this
    /// request) or suspected by this router is not ready.
    pub fn candidates(&self, exclude: &[String]) -> Vec<Candidate<'_>> {
        self.workers
            .iter()
            .map(|(w, local)| Candidate {
                id: &w.record.id,
                tier: &w.record.tier,
                node: &w.record.node,
                model: &w.record.model,
                ready: w.health == pb::WorkerHealth::Ready
                    && !w.suspect
                    && !exclude.contains(&w.record.id),
                running: w.load.running,
                waiting: w.load.waiting,
                capacity: w.load.capacity.max(w.record.max_concurrency),
                max_queue: w.record.max_queue,
                local_in_flight: *local,
            })
            .collect()
    }
}

impl Snapshot {
    /// The tier's prices per million tokens (input, output): its cheapest worker's.
    pub fn tier_price(&self, tier: &str) -> Option<(f64, f64)> {
        self.workers
            .iter()
            .filter(|(w, _)| w.record.tier == tier)
            .map(|(w, _)| (w.record.cost_per_mtok_input, w.record.cost_per_mtok_output))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }
}

/// Decrements the router's in-flight count for a worker when dropped, and wakes requests
/// waiting for capacity.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicU32>, Arc<Notify>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        self.1.notify_waiters();
    }
}

impl View {
    /// True once the first snapshot arrived.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Cluster watches opened so far.
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    fn counter(&self, worker_id: &str) -> Arc<AtomicU32> {
        let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(map.entry(worker_id.to_owned()).or_default())
    }

    /// Counts a request in flight to `worker_id` until the guard is dropped.
    pub fn start(&self, worker_id: &str) -> InFlight {
        let c = self.counter(worker_id);
        c.fetch_add(1, Ordering::Relaxed);
        InFlight(c, Arc::clone(&self.changed))
    }

    /// Resolves when capacity may have freed up. Create it before looking at the view, so
    /// a change in between is not missed.
    pub fn changed(&self) -> tokio::sync::futures::OwnedNotified {
        Arc::clone(&self.changed).notified_owned()
    }

    /// Takes a worker out of this router's routing set for `hold` after a failed
    /// connection. Returns false if it was already out.
    pub fn suspect(&self, worker_id: &str, hold: Duration) -> bool {
        let mut suspects = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let fresh = suspects.get(worker_id).is_none_or(|until| *until <= now);
        suspects.insert(worker_id.to_owned(), now + hold);
        fresh
    }

    /// The channel of the cluster watch, to the controller it is connected to: failure
    /// reports ride on it, with no connection or handshake of their own.
    pub fn controller(&self) -> Option<tonic::transport::Channel> {
        self.controller
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn snapshot(&self) -> Snapshot {
        let workers = self.workers.read().unwrap_or_else(|e| e.into_inner());
        let in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Per request: no copy of the suspects, only a lookup while the lock is held.
        let mut suspects = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
        suspects.retain(|_, until| *until > now);
        Snapshot {
            workers: workers
                .values()
                .map(|w| {
                    let local = in_flight
                        .get(&w.record.id)
                        .map_or(0, |c| c.load(Ordering::Relaxed));
                    let mut w = w.clone();
                    w.suspect = suspects.contains_key(&w.record.id);
                    (w, local)
                })
                .collect(),
        }
    }

    /// Tiers and models known to the cluster, for `/v1/models`.
    pub fn models(&self) -> Vec<(String, String)> {
        let workers = self.workers.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, String)> = workers
            .values()
            .map(|w| (w.record.tier.clone(), w.record.model.clone()))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether a ready worker of the tier has a free slot, counting this router's own
    /// requests to it.
    pub fn has_idle_slot(&self, tier: &str) -> bool {
        self.snapshot()
            .candidates(&[])
            .iter()
            .any(|c| c.tier == tier && c.ready && c.outstanding() < c.capacity)
    }

    pub fn apply(&self, event: pb::cluster_event::Event) {
        use pb::cluster_event::Event;
        let mut workers = self.workers.write().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Snapshot(view) => {
                workers.clear();
                for state in view.workers {
                    if let Some(w) = worker_of(state) {
                        workers.insert(w.record.id.clone(), w);
                    }
                }
                self.ready.store(true, Ordering::Relaxed);
            }
            Event::Upsert(state) => {
                if let Some(w) = worker_of(state) {
                    workers.insert(w.record.id.clone(), w);
                }
            }
            Event::Removed(id) => {
                workers.remove(&id);
            }
            Event::Load(load) => {
                if let Some(w) = workers.get_mut(&load.worker_id) {
                    w.load = load;
                }
            }
        }
        drop(workers);
        self.changed.notify_waiters();
    }
}

fn worker_of(state: pb::WorkerState) -> Option<Worker> {
    let record = WorkerRecord::from(state.info?);
    Some(Worker {
        health: pb::WorkerHealth::try_from(state.health).unwrap_or(pb::WorkerHealth::Stale),
        load: state.load.unwrap_or_else(|| pb::LoadReport {
            worker_id: record.id.clone(),
            capacity: record.max_concurrency,
            ..Default::default()
        }),
        record,
        suspect: false,
    })
}

/// Watches the controller until `cancel` fires, reconnecting with backoff.
pub async fn follow(
    view: Arc<View>,
    target: ControllerTarget,
    watcher: String,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        backoff.start();
        let result = tokio::select! {
            () = cancel.cancelled() => return,
            r = follow_once(&view, &target, &watcher) => r,
        };
        view.connected.store(false, Ordering::Relaxed);
        match result {
            Ok(()) => tracing::warn!("controller ended the cluster watch"),
            Err(err) => tracing::warn!(%err, "cluster watch failed; routing on the last view"),
        }
        if !backoff.wait(&cancel).await {
            return;
        }
    }
}

async fn follow_once(
    view: &View,
    target: &ControllerTarget,
    watcher: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (address, channel) = target.dial().await?;
    let mut client = pb::controller_client::ControllerClient::new(channel.clone());
    let mut stream = client
        .watch_cluster(pb::WatchClusterRequest {
            watcher: watcher.to_owned(),
        })
        .await?
        .into_inner();
    tracing::info!(%address, "watching the cluster");
    view.connected.store(true, Ordering::Relaxed);
    view.sessions.fetch_add(1, Ordering::Relaxed);
    *view.controller.write().unwrap_or_else(|e| e.into_inner()) = Some(channel);
    while let Some(event) = stream.message().await? {
        if let Some(event) = event.event {
            view.apply(event);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::cluster_event::Event;

    fn state(id: &str, running: u32) -> pb::WorkerState {
        pb::WorkerState {
            info: Some(pb::WorkerInfo {
                id: id.into(),
                tier: "small".into(),
                model: "m".into(),
                address: "a:1".into(),
                max_concurrency: 2,
                ..Default::default()
            }),
            load: Some(pb::LoadReport {
                worker_id: id.into(),
                running,
                capacity: 2,
                ..Default::default()
            }),
            health: pb::WorkerHealth::Ready as i32,
            ..Default::default()
        }
    }

    #[test]
    fn events_build_the_view() {
        let view = View::default();
        assert!(!view.is_ready());
        view.apply(Event::Snapshot(pb::ClusterView {
            workers: vec![state("a", 0)],
            controller_id: "c".into(),
            ..Default::default()
        }));
        assert!(view.is_ready());
        view.apply(Event::Upsert(state("b", 1)));
        view.apply(Event::Load(pb::LoadReport {
            worker_id: "a".into(),
            running: 2,
            capacity: 2,
            ..Default::default()
        }));
        view.apply(Event::Removed("b".into()));
        let snap = view.snapshot();
        assert_eq!(snap.workers.len(), 1);
        assert_eq!(snap.workers[0].0.load.running, 2);
    }

    #[test]
    fn in_flight_guards_are_counted_in_snapshots() {
        let view = View::default();
        view.apply(Event::Upsert(state("a", 0)));
        let g1 = view.start("a");
        let _g2 = view.start("a");
        assert_eq!(view.snapshot().candidates(&[])[0].local_in_flight, 2);
        drop(g1);
        assert_eq!(view.snapshot().candidates(&[])[0].local_in_flight, 1);
    }

    #[test]
    fn suspects_and_excluded_workers_are_not_ready() {
        let view = View::default();
        view.apply(Event::Upsert(state("a", 0)));
        view.apply(Event::Upsert(state("b", 0)));
        assert!(view.suspect("a", Duration::from_secs(60)));
        assert!(!view.suspect("a", Duration::from_secs(60)), "already out");
        let snap = view.snapshot();
        let ready: Vec<_> = snap
            .candidates(&["b".to_owned()])
            .iter()
            .map(|c| (c.id.to_owned(), c.ready))
            .collect();
        assert_eq!(ready, vec![("a".into(), false), ("b".into(), false)]);
        // The hold ends on its own.
        assert!(view.suspect("b", Duration::ZERO));
        assert!(view.snapshot().candidates(&[])[1].ready);
    }
}
