//! The router's Prometheus metrics; every name lives here. Labels are bounded and
//! server-controlled: tier names come from the cluster, outcomes from a fixed set.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use switchback_common::process::ProcessGauges;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub tier: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Tier {
    pub tier: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Tokens {
    pub tier: String,
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Retry {
    pub tier: String,
    pub reason: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<Outcome, Counter>,
    pub duration: Family<Tier, Histogram>,
    pub ttft: Family<Tier, Histogram>,
    pub tokens: Family<Tokens, Counter>,
    pub decision: Histogram,
    pub controller_connected: Gauge,
    pub controller_sessions: Gauge,
    pub retries: Family<Retry, Counter>,
    pub unreachable: Counter,
    pub pending: Gauge,
    pub difficulty: Histogram,
    pub reloads: Family<Reload, Counter>,
    pub escalations: Family<Escalation, Counter>,
    pub wasted_tokens: Family<Tier, Counter>,
    pub moves: Family<JointMove, Counter>,
    pub policy_updates: Family<Reload, Counter>,
    pub etcd_connected: Gauge,
    pub inter_token: Family<Tier, Histogram>,
    /// Live tokio tasks, open fds and sockets, read at scrape time.
    pub process: ProcessGauges,
    pub auth_enabled: Gauge,
    pub auth_failures: Family<Reason, Counter>,
    pub key_requests: Family<KeyStatus, Counter>,
    pub rate_limited: Family<KeyLimit, Counter>,
    pub keys_reloads: Family<Reload, Counter>,
    pub keys_loaded: Gauge,
    /// The HTTP listener's connections.
    pub connections: switchback_common::http_serve::ConnMetrics,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

/// `key` is a configured key id or `none`: never a string from the request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyStatus {
    pub key: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLimit {
    pub key: String,
    pub limit: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Escalation {
    pub from: String,
    pub to: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JointMove {
    pub tier: String,
    pub moved: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reload {
    pub outcome: &'static str,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    ]
    .into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("switchback_router");
        switchback_common::tls::register_metrics(&mut registry);
        let requests = Family::<Outcome, Counter>::default();
        let duration =
            Family::<Tier, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        let ttft =
            Family::<Tier, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        let tokens = Family::<Tokens, Counter>::default();
        let decision = Histogram::new([1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3]);
        let controller_connected = Gauge::default();
        registry.register("requests", "Requests by tier and outcome", requests.clone());
        registry.register(
            "request_duration_seconds",
            "End-to-end request latency",
            duration.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Time to the first streamed token",
            ttft.clone(),
        );
        registry.register("tokens", "Prompt and completion tokens", tokens.clone());
        registry.register(
            "decision_duration_seconds",
            "Time to choose a tier and worker",
            decision.clone(),
        );
        registry.register(
            "controller_connected",
            "1 while the cluster watch to the controller is up",
            controller_connected.clone(),
        );
        let retries = Family::<Retry, Counter>::default();
        registry.register(
            "retries",
            "Attempts that failed before the first token and moved to another worker, by reason",
            retries.clone(),
        );
        let unreachable = Counter::default();
        registry.register(
            "worker_unreachable",
            "Workers this router could not reach (taken out of routing and reported)",
            unreachable.clone(),
        );
        let pending = Gauge::default();
        registry.register(
            "pending_requests",
            "Requests waiting in this router for a slot in a saturated tier",
            pending.clone(),
        );
        let controller_sessions = Gauge::default();
        registry.register(
            "controller_watch_sessions",
            "Cluster watches opened since start; it grows by one at every controller failover",
            controller_sessions.clone(),
        );
        let difficulty = Histogram::new([1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2]);
        registry.register(
            "difficulty_decision_seconds",
            "Time to predict a prompt's difficulty and pick its tier (model auto)",
            difficulty.clone(),
        );
        let reloads = Family::<Reload, Counter>::default();
        registry.register(
            "predictor_reloads",
            "Reloads of the difficulty predictor after its artifact changed, by outcome",
            reloads.clone(),
        );
        let escalations = Family::<Escalation, Counter>::default();
        registry.register(
            "escalations",
            "Answers of a lower tier judged not confident and sent to the next tier, by tier pair and reason",
            escalations.clone(),
        );
        let wasted_tokens = Family::<Tier, Counter>::default();
        registry.register(
            "escalation_wasted_tokens",
            "Tokens a lower tier generated for answers that were then escalated",
            wasted_tokens.clone(),
        );
        let moves = Family::<JointMove, Counter>::default();
        registry.register(
            "joint_decisions",
            "model auto decisions by chosen tier and how the tier was reached (preferred, up-for-latency, down-for-latency, best-effort)",
            moves.clone(),
        );
        let policy_updates = Family::<Reload, Counter>::default();
        registry.register(
            "policy_updates",
            "Routing policies read from etcd, by outcome (ok, invalid)",
            policy_updates.clone(),
        );
        let etcd_connected = Gauge::default();
        registry.register(
            "etcd_connected",
            "1 while this router's watch of the routing policy in etcd is up",
            etcd_connected.clone(),
        );
        let inter_token = Family::<Tier, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ])
        });
        registry.register(
            "inter_token_seconds",
            "Time between streamed chunks of an answer, by tier",
            inter_token.clone(),
        );
        let process = ProcessGauges::register(&mut registry);
        let auth_enabled = Gauge::default();
        registry.register(
            "auth_enabled",
            "1 while this router checks API keys; 0 when auth.disabled is set",
            auth_enabled.clone(),
        );
        let auth_failures = Family::<Reason, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests refused with 401, by reason (missing, malformed, unknown_key)",
            auth_failures.clone(),
        );
        let key_requests = Family::<KeyStatus, Counter>::default();
        registry.register(
            "key_requests",
            "Authenticated /v1 requests by API key id (none: auth disabled) and HTTP status",
            key_requests.clone(),
        );
        let rate_limited = Family::<KeyLimit, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused with 429 by an API key's limit, by key id and limit",
            rate_limited.clone(),
        );
        let keys_reloads = Family::<Reload, Counter>::default();
        registry.register(
            "keys_reloads",
            "Reloads of the API keys file after it changed, by outcome (ok, failed)",
            keys_reloads.clone(),
        );
        let keys_loaded = Gauge::default();
        registry.register(
            "keys_loaded",
            "API keys in force on this router",
            keys_loaded.clone(),
        );
        let connections = switchback_common::http_serve::ConnMetrics::default();
        connections.register(&mut registry);
        Self {
            connections,
            auth_enabled,
            auth_failures,
            key_requests,
            rate_limited,
            keys_reloads,
            keys_loaded,
            registry,
            process,
            etcd_connected,
            inter_token,
            escalations,
            wasted_tokens,
            moves,
            policy_updates,
            reloads,
            difficulty,
            controller_sessions,
            retries,
            unreachable,
            pending,
            requests,
            duration,
            ttft,
            tokens,
            decision,
            controller_connected,
        }
    }
}

impl Metrics {
    pub fn request(&self, tier: &str, outcome: &str) {
        self.requests
            .get_or_create(&Outcome {
                tier: tier.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn tokens(&self, tier: &str, prompt: u32, completion: u32) {
        for (kind, n) in [("prompt", prompt), ("completion", completion)] {
            self.tokens
                .get_or_create(&Tokens {
                    tier: tier.to_owned(),
                    kind: kind.to_owned(),
                })
                .inc_by(u64::from(n));
        }
    }

    pub fn key_request(&self, key: &str, status: u16) {
        self.key_requests
            .get_or_create(&KeyStatus {
                key: key.to_owned(),
                status,
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
