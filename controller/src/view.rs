//! The one cluster view: workers (from etcd membership) with their live load (from the
//! workers' report streams) and health, plus a broadcast of every change for routers.

use std::{
    collections::{BTreeMap, HashMap},
    sync::RwLock,
    time::{Duration, Instant},
};

use switchback_proto::{WorkerRecord, pb};
use tokio::sync::broadcast;

/// A router's report that it could not reach a worker.
#[derive(Debug, Clone)]
struct Suspicion {
    at: Instant,
    reporter: String,
    reason: String,
}

#[derive(Debug, Default)]
struct Entry {
    record: Option<WorkerRecord>,
    load: Option<pb::LoadReport>,
    reported_at: Option<Instant>,
    /// Operator drain, with its reason.
    drained: Option<String>,
    unreachable: Option<Suspicion>,
    /// Health as last assessed (and broadcast), and why.
    health: pb::WorkerHealth,
    reason: String,
}

/// Thread-safe cluster view. Every change is also broadcast as a [`pb::ClusterEvent`].
#[derive(Debug)]
pub struct ClusterView {
    controller_id: String,
    stale_after: Duration,
    /// How long a worker a router could not reach stays out, even if it keeps reporting.
    suspect_hold: Duration,
    state: RwLock<State>,
    events: broadcast::Sender<pb::ClusterEvent>,
}

#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<String, Entry>,
    /// When this controller became leader; `None` while it is a standby.
    leader_since: Option<Instant>,
}

/// A worker's health and why, from what the view knows at `now`. Order matters: a router's
/// failed connection beats everything, an operator's drain beats load reports.
fn assess(
    e: &Entry,
    now: Instant,
    stale_after: Duration,
    leader_since: Option<Instant>,
) -> (pb::WorkerHealth, String) {
    use pb::WorkerHealth as H;
    if let Some(s) = &e.unreachable {
        return (
            H::Unreachable,
            format!(
                "{} could not reach it {} ms ago: {}",
                s.reporter,
                now.saturating_duration_since(s.at).as_millis(),
                s.reason
            ),
        );
    }
    if let Some(reason) = &e.drained {
        let reason = if reason.is_empty() {
            "no reason given"
        } else {
            reason
        };
        return (H::Draining, format!("drained by an operator ({reason})"));
    }
    let (Some(load), Some(at)) = (&e.load, e.reported_at) else {
        return (H::Stale, "registered; no load report yet".to_owned());
    };
    // A new leader gives every worker twice `stale_after` to find it and reconnect its
    // load stream before calling it stale: the workers did not stop, the leader changed.
    // A worker that has reported to this leader already needs no grace.
    let in_grace =
        leader_since.is_some_and(|l| at < l && now.saturating_duration_since(l) <= stale_after * 2);
    if now.saturating_duration_since(at) > stale_after && !in_grace {
        return (
            H::Stale,
            format!(
                "no load report for {} ms (stale after {} ms)",
                now.saturating_duration_since(at).as_millis(),
                stale_after.as_millis()
            ),
        );
    }
    if load.draining {
        (
            H::Draining,
            "the worker is draining (shutting down)".to_owned(),
        )
    } else {
        (H::Ready, "reporting load".to_owned())
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
            suspect_hold: stale_after * 2,
            state: RwLock::new(State::default()),
            events,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn worker_state(&self, entry: &Entry, now: Instant) -> Option<pb::WorkerState> {
        let record = entry.record.clone()?;
        Some(pb::WorkerState {
            info: Some(record.into()),
            load: entry.load.clone(),
            health: entry.health as i32,
            load_age_ms: entry.reported_at.map_or(u64::MAX, |at| {
                now.saturating_duration_since(at).as_millis() as u64
            }),
            health_reason: entry.reason.clone(),
            drained: entry.drained.is_some(),
        })
    }

    /// Re-assesses one entry; broadcasts it if its health changed.
    fn refresh(&self, id: &str, entry: &mut Entry, now: Instant, leader_since: Option<Instant>) {
        let (health, reason) = assess(entry, now, self.stale_after, leader_since);
        entry.reason = reason;
        if health != entry.health {
            entry.health = health;
            let reason = &entry.reason;
            if entry.record.is_some() {
                tracing::info!(worker = id, ?health, reason, "worker health changed");
            }
            if let Some(state) = self.worker_state(entry, now) {
                let _ = self
                    .events
                    .send(event(pb::cluster_event::Event::Upsert(state)));
            }
        }
    }

    /// Subscribes to changes; take the snapshot after subscribing so nothing is missed.
    pub fn subscribe(&self) -> broadcast::Receiver<pb::ClusterEvent> {
        self.events.subscribe()
    }

    /// Every registered worker, for routers.
    pub fn snapshot(&self) -> pb::ClusterView {
        let now = Instant::now();
        let state = self.read();
        pb::ClusterView {
            workers: state
                .entries
                .values()
                .filter_map(|e| self.worker_state(e, now))
                .collect(),
            controller_id: self.controller_id.clone(),
            ..Default::default()
        }
    }

    /// The snapshot plus per-tier capacity, role and drains, for operators.
    pub fn status(&self) -> pb::ClusterView {
        let mut view = self.snapshot();
        let state = self.read();
        view.role = if state.leader_since.is_some() {
            "leader"
        } else {
            "standby"
        }
        .to_owned();
        view.drained = state
            .entries
            .iter()
            .filter(|(_, e)| e.drained.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        drop(state);
        view.tiers = tiers(&view.workers);
        view
    }

    /// Leadership won (`true`) or lost. A new leader gives every worker one `stale_after`
    /// to reconnect its load stream before calling it stale.
    pub fn set_leader(&self, leader: bool) {
        let now = Instant::now();
        let mut state = self.write();
        state.leader_since = leader.then_some(now);
        let since = state.leader_since;
        for (id, entry) in &mut state.entries {
            self.refresh(id, entry, now, since);
        }
    }

    /// A worker joined or its record changed. A new instance (restart) clears a router's
    /// suspicion.
    pub fn upsert(&self, record: WorkerRecord) {
        let now = Instant::now();
        let mut state = self.write();
        let since = state.leader_since;
        let id = record.id.clone();
        let entry = state.entries.entry(id.clone()).or_default();
        match &entry.record {
            None => {
                tracing::info!(worker = %record.id, tier = %record.tier, address = %record.address, "worker joined");
            }
            Some(old) if old.started_at_unix_ms != record.started_at_unix_ms => {
                entry.unreachable = None;
            }
            Some(_) => {}
        }
        entry.record = Some(record);
        (entry.health, entry.reason) = assess(entry, now, self.stale_after, since);
        if let Some(state) = self.worker_state(entry, now) {
            let _ = self
                .events
                .send(event(pb::cluster_event::Event::Upsert(state)));
        }
    }

    /// A worker left: deregistered, or its lease expired. An operator drain stays.
    pub fn remove(&self, worker_id: &str) {
        let mut state = self.write();
        let Some(entry) = state.entries.get_mut(worker_id) else {
            return;
        };
        let was_registered = entry.record.take().is_some();
        entry.load = None;
        entry.reported_at = None;
        entry.unreachable = None;
        if entry.drained.is_none() {
            state.entries.remove(worker_id);
        }
        if was_registered {
            tracing::info!(worker = %worker_id, "worker left");
            let _ = self.events.send(event(pb::cluster_event::Event::Removed(
                worker_id.to_owned(),
            )));
        }
    }

    /// Replaces membership and drains with a fresh read of etcd.
    pub fn replace_all(&self, records: Vec<WorkerRecord>, drains: HashMap<String, String>) {
        let present: std::collections::HashSet<String> =
            records.iter().map(|r| r.id.clone()).collect();
        let (gone, undrained): (Vec<String>, Vec<String>) = {
            let state = self.read();
            (
                state
                    .entries
                    .iter()
                    .filter(|(id, e)| e.record.is_some() && !present.contains(*id))
                    .map(|(id, _)| id.clone())
                    .collect(),
                state
                    .entries
                    .iter()
                    .filter(|(id, e)| e.drained.is_some() && !drains.contains_key(*id))
                    .map(|(id, _)| id.clone())
                    .collect(),
            )
        };
        for id in gone {
            self.remove(&id);
        }
        for id in undrained {
            self.set_drained(&id, None);
        }
        for (id, reason) in drains {
            self.set_drained(&id, Some(reason));
        }
        for record in records {
            self.upsert(record);
        }
    }

    /// An operator drained (`Some(reason)`) or undrained (`None`) a worker.
    pub fn set_drained(&self, worker_id: &str, reason: Option<String>) {
        let now = Instant::now();
        let mut state = self.write();
        let since = state.leader_since;
        if reason.is_none() && !state.entries.contains_key(worker_id) {
            return;
        }
        let entry = state.entries.entry(worker_id.to_owned()).or_default();
        if entry.drained == reason {
            return;
        }
        tracing::info!(
            worker = worker_id,
            drained = reason.is_some(),
            "operator drain changed"
        );
        entry.drained = reason;
        self.refresh(worker_id, entry, now, since);
        if entry.record.is_none() && entry.drained.is_none() && entry.load.is_none() {
            state.entries.remove(worker_id);
        }
    }

    /// A router could not reach the worker. Returns false when the worker is unknown.
    pub fn suspect(&self, worker_id: &str, reporter: &str, reason: &str) -> bool {
        let now = Instant::now();
        let mut state = self.write();
        let since = state.leader_since;
        let Some(entry) = state
            .entries
            .get_mut(worker_id)
            .filter(|e| e.record.is_some())
        else {
            return false;
        };
        tracing::warn!(
            worker = worker_id,
            reporter,
            reason,
            "a router could not reach the worker"
        );
        entry.unreachable = Some(Suspicion {
            at: now,
            reporter: reporter.to_owned(),
            reason: reason.to_owned(),
        });
        self.refresh(worker_id, entry, now, since);
        true
    }

    /// A worker's load report. Reports may arrive before the etcd record; they are kept
    /// and shown once the record appears.
    pub fn report(&self, load: pb::LoadReport) {
        self.report_at(load, Instant::now());
    }

    /// A load report as relayed by the leader (on a standby), `age` old.
    pub fn mirror(&self, load: pb::LoadReport, age: Duration) {
        let now = Instant::now();
        self.report_at(load, now.checked_sub(age).unwrap_or(now));
    }

    fn report_at(&self, load: pb::LoadReport, at: Instant) {
        let now = Instant::now();
        let mut state = self.write();
        let since = state.leader_since;
        let id = load.worker_id.clone();
        let entry = state.entries.entry(id.clone()).or_default();
        entry.load = Some(load.clone());
        entry.reported_at = Some(at);
        // A worker that keeps reporting after the hold gets another chance with routers.
        if entry
            .unreachable
            .as_ref()
            .is_some_and(|s| now.saturating_duration_since(s.at) >= self.suspect_hold)
        {
            tracing::info!(worker = %id, "worker still reporting after the hold; routable again");
            entry.unreachable = None;
        }
        if entry.record.is_none() {
            (entry.health, entry.reason) = assess(entry, now, self.stale_after, since);
            return;
        }
        let before = entry.health;
        self.refresh(&id, entry, now, since);
        if entry.health == before {
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
        let mut state = self.write();
        let since = state.leader_since;
        for (id, entry) in &mut state.entries {
            self.refresh(id, entry, now, since);
        }
        // Reports from workers that never registered are forgotten once stale.
        state.entries.retain(|_, e| {
            e.record.is_some() || e.drained.is_some() || e.health != pb::WorkerHealth::Stale
        });
    }
}

/// Per-tier capacity and cost from the workers' states.
pub fn tiers(workers: &[pb::WorkerState]) -> Vec<pb::TierSummary> {
    use pb::WorkerHealth as H;
    let mut by_tier: BTreeMap<&str, (pb::TierSummary, u32)> = BTreeMap::new();
    for w in workers {
        let Some(info) = &w.info else { continue };
        let (t, n) = by_tier.entry(info.tier.as_str()).or_insert_with(|| {
            (
                pb::TierSummary {
                    tier: info.tier.clone(),
                    ..Default::default()
                },
                0,
            )
        });
        *n += 1;
        t.cost_per_mtok_input += info.cost_per_mtok_input;
        t.cost_per_mtok_output += info.cost_per_mtok_output;
        match H::try_from(w.health).unwrap_or(H::Stale) {
            H::Ready => {
                t.workers_ready += 1;
                let load = w.load.clone().unwrap_or_default();
                // Reports come from the workers over the network: saturate on absurd
                // values rather than overflow.
                t.capacity = t
                    .capacity
                    .saturating_add(load.capacity.max(info.max_concurrency));
                t.running = t.running.saturating_add(load.running);
                t.waiting = t.waiting.saturating_add(load.waiting);
                t.tokens_per_second += f64::from(load.tokens_per_second);
            }
            H::Draining => t.workers_draining += 1,
            H::Unreachable => t.workers_unreachable += 1,
            H::Stale | H::Unspecified => t.workers_stale += 1,
        }
    }
    by_tier
        .into_values()
        .map(|(mut t, n)| {
            t.cost_per_mtok_input /= f64::from(n);
            t.cost_per_mtok_output /= f64::from(n);
            t
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;
