//! Unit tests of `view`.

use super::*;

/// A worker record on tier `small` (shared with the membership tests).
pub(crate) fn record(id: &str) -> WorkerRecord {
    WorkerRecord {
        id: id.into(),
        address: format!("{id}:1"),
        node: "n".into(),
        tier: "small".into(),
        model: "m".into(),
        engine: "sim".into(),
        accelerator: "none".into(),
        max_concurrency: 2,
        max_queue: 0,
        tool_calls: false,
        structured_output: false,
        cost_per_mtok_input: 1.0,
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
    view.replace_all(vec![record("b"), record("c")], HashMap::new());
    let ids: Vec<_> = view
        .snapshot()
        .workers
        .into_iter()
        .map(|w| w.info.expect("info").id)
        .collect();
    assert_eq!(ids, vec!["b", "c"]);
}

fn health_of(view: &ClusterView, id: &str) -> (pb::WorkerHealth, String) {
    let w = view
        .status()
        .workers
        .into_iter()
        .find(|w| w.info.as_ref().is_some_and(|i| i.id == id))
        .expect("worker in view");
    (
        pb::WorkerHealth::try_from(w.health).expect("health"),
        w.health_reason,
    )
}

#[test]
fn a_router_suspicion_wins_until_a_report_after_the_hold_or_a_restart() {
    let view = ClusterView::new("c".into(), Duration::from_secs(60));
    view.upsert(record("a"));
    view.report(load("a", 0, false));
    assert!(view.suspect("a", "router@r1", "connection refused"));
    assert!(!view.suspect("nobody", "router@r1", "connection refused"));
    let (h, reason) = health_of(&view, "a");
    assert_eq!(h, pb::WorkerHealth::Unreachable);
    assert!(
        reason.contains("router@r1") && reason.contains("connection refused"),
        "{reason}"
    );
    // A report within the hold does not clear it.
    view.report(load("a", 0, false));
    assert_eq!(health_of(&view, "a").0, pb::WorkerHealth::Unreachable);
    // A new instance of the worker does.
    let mut restarted = record("a");
    restarted.started_at_unix_ms = 7;
    view.upsert(restarted);
    assert_eq!(health_of(&view, "a").0, pb::WorkerHealth::Ready);
}

#[test]
fn operator_drain_is_kept_across_deregistration_and_cleared_by_undrain() {
    let view = ClusterView::new("c".into(), Duration::from_secs(60));
    view.upsert(record("a"));
    view.report(load("a", 1, false));
    view.set_drained("a", Some("kernel upgrade".into()));
    let (h, reason) = health_of(&view, "a");
    assert_eq!(h, pb::WorkerHealth::Draining);
    assert!(reason.contains("kernel upgrade"), "{reason}");
    view.remove("a");
    let status = view.status();
    assert!(status.workers.is_empty());
    assert_eq!(status.drained, vec!["a".to_owned()]);
    view.set_drained("a", None);
    assert!(view.status().drained.is_empty());
}

#[test]
fn stale_reason_and_new_leader_grace() {
    let view = ClusterView::new("c".into(), Duration::from_millis(100));
    view.upsert(record("a"));
    assert!(health_of(&view, "a").1.contains("no load report yet"));
    view.mirror(load("a", 0, false), Duration::from_secs(5));
    let (h, reason) = health_of(&view, "a");
    assert_eq!(h, pb::WorkerHealth::Stale);
    assert!(reason.contains("no load report for"), "{reason}");
    // Elected: the worker gets a grace period to reconnect its stream.
    view.set_leader(true);
    assert_eq!(health_of(&view, "a").0, pb::WorkerHealth::Ready);
    assert_eq!(view.status().role, "leader");
    view.sweep_at(Instant::now() + Duration::from_secs(1));
    assert_eq!(health_of(&view, "a").0, pb::WorkerHealth::Stale);
}

#[test]
fn tier_summary_counts_capacity_of_ready_workers_only() {
    let view = ClusterView::new("c".into(), Duration::from_secs(60));
    for id in ["a", "b", "c"] {
        view.upsert(record(id));
        view.report(load(id, 1, false));
    }
    view.set_drained("c", Some(String::new()));
    let tiers = view.status().tiers;
    assert_eq!(tiers.len(), 1);
    let t = &tiers[0];
    assert_eq!((t.workers_ready, t.workers_draining), (2, 1));
    assert_eq!((t.capacity, t.running), (4, 2));
    assert!((t.cost_per_mtok_input - 1.0).abs() < 1e-9);
}

#[test]
fn tier_summary_saturates_on_absurd_reports() {
    // The router's placement overflowed on such reports (found by
    // fuzz/fuzz_targets/grpc_messages.rs); the controller's sums had the same flaw.
    let view = ClusterView::new("c".into(), Duration::from_secs(60));
    for id in ["a", "b"] {
        view.upsert(record(id));
        let mut report = load(id, u32::MAX, false);
        report.waiting = u32::MAX;
        report.capacity = u32::MAX;
        view.report(report);
    }
    let tiers = view.status().tiers;
    let t = &tiers[0];
    assert_eq!(t.workers_ready, 2);
    assert_eq!(
        (t.capacity, t.running, t.waiting),
        (u32::MAX, u32::MAX, u32::MAX)
    );
}
