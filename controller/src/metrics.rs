//! Prometheus metrics of the controller, rendered at scrape time from the view itself, so
//! that a tier or worker that left leaves no stale series behind; with the process's live
//! tasks, open fds and sockets.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use switchback_proto::pb;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabel {
    tier: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierHealth {
    tier: String,
    health: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierDirection {
    tier: String,
    direction: &'static str,
}

fn tier_gauge(registry: &mut Registry, name: &str, help: &str) -> Family<TierLabel, Gauge> {
    let f = Family::<TierLabel, Gauge>::default();
    registry.register(name, help, f.clone());
    f
}

fn tier_gauge_f(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> Family<TierLabel, Gauge<f64, std::sync::atomic::AtomicU64>> {
    let f = Family::<TierLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    registry.register(name, help, f.clone());
    f
}

/// OpenMetrics text for `status` (the controller's `Status` answer).
pub fn render(status: &pb::ClusterView) -> String {
    let mut r = Registry::with_prefix("switchback_controller");
    switchback_common::tls::register_metrics(&mut r);
    let leader = Gauge::<i64>::default();
    r.register(
        "leader",
        "1 while this replica is the elected leader",
        leader.clone(),
    );
    leader.set(i64::from(status.role == "leader"));
    let drained = Gauge::<i64>::default();
    r.register(
        "drained_workers",
        "Workers an operator drained",
        drained.clone(),
    );
    drained.set(status.drained.len() as i64);

    let workers = Family::<TierHealth, Gauge>::default();
    r.register(
        "tier_workers",
        "Workers per tier by health",
        workers.clone(),
    );
    let capacity = tier_gauge(
        &mut r,
        "tier_capacity",
        "Concurrency slots of ready workers",
    );
    let running = tier_gauge(
        &mut r,
        "tier_running",
        "Requests generating on ready workers",
    );
    let waiting = tier_gauge(&mut r, "tier_waiting", "Requests queued on ready workers");
    let speed = tier_gauge_f(
        &mut r,
        "tier_tokens_per_second",
        "Recent decode speed summed over ready workers",
    );
    let cost = Family::<TierDirection, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    r.register(
        "tier_cost_per_mtok",
        "Mean advertised cost per million tokens",
        cost.clone(),
    );
    for t in &status.tiers {
        let tier = TierLabel {
            tier: t.tier.clone(),
        };
        for (health, n) in [
            ("ready", t.workers_ready),
            ("draining", t.workers_draining),
            ("stale", t.workers_stale),
            ("unreachable", t.workers_unreachable),
        ] {
            workers
                .get_or_create(&TierHealth {
                    tier: t.tier.clone(),
                    health,
                })
                .set(i64::from(n));
        }
        capacity.get_or_create(&tier).set(i64::from(t.capacity));
        running.get_or_create(&tier).set(i64::from(t.running));
        waiting.get_or_create(&tier).set(i64::from(t.waiting));
        speed.get_or_create(&tier).set(t.tokens_per_second);
        for (direction, v) in [
            ("input", t.cost_per_mtok_input),
            ("output", t.cost_per_mtok_output),
        ] {
            cost.get_or_create(&TierDirection {
                tier: t.tier.clone(),
                direction,
            })
            .set(v);
        }
    }
    switchback_common::process::ProcessGauges::register(&mut r).update();
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &r).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_tier_series() {
        let status = pb::ClusterView {
            role: "leader".into(),
            tiers: vec![pb::TierSummary {
                tier: "small".into(),
                workers_ready: 2,
                capacity: 8,
                running: 3,
                cost_per_mtok_output: 0.5,
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render(&status);
        assert!(text.contains("switchback_controller_leader 1"), "{text}");
        assert!(
            text.contains(r#"switchback_controller_tier_workers{tier="small",health="ready"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"switchback_controller_tier_capacity{tier="small"} 8"#));
        assert!(
            text.contains("switchback_controller_open_sockets "),
            "{text}"
        );
        assert!(text.contains(
            r#"switchback_controller_tier_cost_per_mtok{tier="small",direction="output"} 0.5"#
        ));
    }
}
