//! The one cluster view: workers (from etcd membership) with their live load (from the
//! workers' report streams) and health, plus a broadcast of every change for routers.

use std::{
    collections::BTreeMap,
    sync::RwLock,
    time::{Duration, Instant},
};

use switchback_proto::{WorkerRecord, pb};
use tokio::sync::broadcast;

#[derive(Debug)]
struct Entry {
    record: Option<WorkerRecord>,
    load: Option<pb::LoadReport>,
    reported_at: Option<Instant>,
    /// Health as last broadcast, to announce changes only.
    health: pb::WorkerHealth,
}

/// Thread-safe cluster view. Every change is also broadcast as a [`pb::ClusterEvent`].
#[derive(Debug)]
pub struct ClusterView {
    controller_id: String,
    stale_after: Duration,
    entries: RwLock<BTreeMap<String, Entry>>,
    events: broadcast::Sender<pb::ClusterEvent>,
}

fn health(entry: &Entry, now: Instant, stale_after: Duration) -> pb::WorkerHealth {
    match (&entry.load, entry.reported_at) {
        (Some(load), Some(at)) if now.duration_since(at) <= stale_after => {
            if load.draining {
                pb::WorkerHealth::Draining
            } else {
                pb::WorkerHealth::Ready
            }
        }
        _ => pb::WorkerHealth::Stale,
    }
}

fn event(e: pb::cluster_event::Event) -> pb::ClusterEvent {
    pb::ClusterEvent { event: Some(e) }
}

impl ClusterView {
    pub fn new(controller_id: String, stale_after: Duration) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            controller_id,
            stale_after,
            entries: RwLock::new(BTreeMap::new()),
            events,
        }
    }

    fn state(&self, entry: &Entry, now: Instant) -> Option<pb::WorkerState> {
        let record = entry.record.clone()?;
        Some(pb::WorkerState {
            info: Some(record.into()),
            load: entry.load.clone(),
            health: entry.health as i32,
            load_age_ms: entry
                .reported_at
                .map_or(u64::MAX, |at| now.duration_since(at).as_millis() as u64),
        })
    }

    /// Subscribes to changes; take the snapshot after subscribing so nothing is missed.
    pub fn subscribe(&self) -> broadcast::Receiver<pb::ClusterEvent> {
        self.events.subscribe()
    }

    pub fn snapshot(&self) -> pb::ClusterView {
        let now = Instant::now();
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        pb::ClusterView {
            workers: entries
                .values()
                .filter_map(|e| self.state(e, now))
                .collect(),
            controller_id: self.controller_id.clone(),
        }
    }

    /// A worker joined or its record changed.
    pub fn upsert(&self, record: WorkerRecord) {
        let now = Instant::now();
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let entry = entries.entry(record.id.clone()).or_insert(Entry {
            record: None,
            load: None,
            reported_at: None,
            health: pb::WorkerHealth::Stale,
        });
        if entry.record.is_none() {
            tracing::info!(worker = %record.id, tier = %record.tier, address = %record.address, "worker joined");
        }
        entry.record = Some(record);
        entry.health = health(entry, now, self.stale_after);
        if let Some(state) = self.state(entry, now) {
            let _ = self
                .events
                .send(event(pb::cluster_event::Event::Upsert(state)));
        }
    }

    /// A worker left: deregistered, or its lease expired.
    pub fn remove(&self, worker_id: &str) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = entries.remove(worker_id)
            && entry.record.is_some()
        {
            tracing::info!(worker = %worker_id, "worker left");
            let _ = self.events.send(event(pb::cluster_event::Event::Removed(
                worker_id.to_owned(),
            )));
        }
    }

    /// Replaces the membership with `records` (after a fresh read of etcd).
    pub fn replace_all(&self, records: Vec<WorkerRecord>) {
        let present: std::collections::HashSet<String> =
            records.iter().map(|r| r.id.clone()).collect();
        let gone: Vec<String> = {
            let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
            entries
                .iter()
                .filter(|(id, e)| e.record.is_some() && !present.contains(*id))
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in gone {
            self.remove(&id);
        }
        for record in records {
            self.upsert(record);
        }
    }

    /// A worker's load report. Reports may arrive before the etcd record; they are kept
    /// and shown once the record appears.
    pub fn report(&self, load: pb::LoadReport) {
        let now = Instant::now();
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let entry = entries.entry(load.worker_id.clone()).or_insert(Entry {
            record: None,
            load: None,
            reported_at: None,
            health: pb::WorkerHealth::Stale,
        });
        entry.load = Some(load.clone());
        entry.reported_at = Some(now);
        let new_health = health(entry, now, self.stale_after);
        if entry.record.is_none() {
            entry.health = new_health;
            return;
        }
        if new_health != entry.health {
            entry.health = new_health;
            if let Some(state) = self.state(entry, now) {
                let _ = self
                    .events
                    .send(event(pb::cluster_event::Event::Upsert(state)));
            }
        } else {
            let _ = self
                .events
                .send(event(pb::cluster_event::Event::Load(load)));
        }
    }

    /// Re-evaluates health against the clock; announces workers that went stale.
    pub fn sweep(&self) {
        self.sweep_at(Instant::now());
    }

    /// [`ClusterView::sweep`] as of `now`.
    pub fn sweep_at(&self, now: Instant) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        for entry in entries.values_mut() {
            let h = health(entry, now, self.stale_after);
            if h != entry.health {
                entry.health = h;
                if let Some(state) = self.state(entry, now) {
                    tracing::warn!(worker = %state.info.as_ref().map_or("", |i| i.id.as_str()), health = ?h, "worker health changed");
                    let _ = self
                        .events
                        .send(event(pb::cluster_event::Event::Upsert(state)));
                }
            }
        }
        // Reports from workers that never registered are forgotten once stale.
        entries.retain(|_, e| e.record.is_some() || e.health != pb::WorkerHealth::Stale);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> WorkerRecord {
        WorkerRecord {
            id: id.into(),
            address: format!("{id}:1"),
            node: "n".into(),
            tier: "small".into(),
            model: "m".into(),
            engine: "sim".into(),
            accelerator: "none".into(),
            max_concurrency: 2,
            cost_per_mtok_input: 0.0,
            cost_per_mtok_output: 0.0,
            version: "v".into(),
            started_at_unix_ms: 0,
        }
    }

    fn load(id: &str, running: u32, draining: bool) -> pb::LoadReport {
        pb::LoadReport {
            worker_id: id.into(),
            running,
            capacity: 2,
            draining,
            ..Default::default()
        }
    }

    #[test]
    fn join_report_leave_are_broadcast_in_order() {
        let view = ClusterView::new("c".into(), Duration::from_secs(60));
        let mut rx = view.subscribe();
        view.upsert(record("a"));
        view.report(load("a", 1, false));
        view.report(load("a", 2, false));
        view.remove("a");
        let kinds: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| match e.event.expect("event") {
                pb::cluster_event::Event::Upsert(s) => format!("upsert:{}", s.health),
                pb::cluster_event::Event::Load(l) => format!("load:{}", l.running),
                pb::cluster_event::Event::Removed(id) => format!("removed:{id}"),
                pb::cluster_event::Event::Snapshot(_) => "snapshot".into(),
            })
            .collect();
        let ready = pb::WorkerHealth::Ready as i32;
        let stale = pb::WorkerHealth::Stale as i32;
        assert_eq!(
            kinds,
            vec![
                format!("upsert:{stale}"),
                format!("upsert:{ready}"),
                "load:2".to_owned(),
                "removed:a".to_owned()
            ]
        );
        assert!(view.snapshot().workers.is_empty());
    }

    #[test]
    fn report_before_record_is_kept() {
        let view = ClusterView::new("c".into(), Duration::from_secs(60));
        view.report(load("a", 1, false));
        assert!(view.snapshot().workers.is_empty());
        view.upsert(record("a"));
        let snap = view.snapshot();
        assert_eq!(snap.workers.len(), 1);
        assert_eq!(snap.workers[0].health, pb::WorkerHealth::Ready as i32);
        assert_eq!(snap.workers[0].load.as_ref().map(|l| l.running), Some(1));
    }

    #[test]
    fn draining_and_stale_health() {
        let view = ClusterView::new("c".into(), Duration::from_millis(100));
        view.upsert(record("a"));
        view.report(load("a", 0, true));
        view.sweep_at(Instant::now() + Duration::from_secs(1));
        assert_eq!(
            view.snapshot().workers[0].health,
            pb::WorkerHealth::Stale as i32
        );

        let view = ClusterView::new("c".into(), Duration::from_secs(60));
        view.upsert(record("a"));
        view.report(load("a", 0, true));
        assert_eq!(
            view.snapshot().workers[0].health,
            pb::WorkerHealth::Draining as i32
        );
    }

    #[test]
    fn replace_all_removes_missing_workers() {
        let view = ClusterView::new("c".into(), Duration::from_secs(60));
        view.upsert(record("a"));
        view.upsert(record("b"));
        view.replace_all(vec![record("b"), record("c")]);
        let ids: Vec<_> = view
            .snapshot()
            .workers
            .into_iter()
            .map(|w| w.info.expect("info").id)
            .collect();
        assert_eq!(ids, vec!["b", "c"]);
    }
}
