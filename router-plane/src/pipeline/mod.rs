//! The request path as stages, one file each, each taking what the one before returned:
//! [`admit`] (what the caller's key allows) → [`plan`] (which tiers, and whether a cascade
//! may follow) → [`cascade`], the only loop, around [`dispatch`] (a worker's answer opened,
//! retried on another worker before the first token) and [`place`] (a (tier, worker) on
//! the view) → [`relay`] (the answer handed over, settled when done). [`run`] takes a
//! validated request from the HTTP shell and returns the [`Answer`] it renders, or the
//! [`Error`] it maps; nothing here knows HTTP.

pub mod admit;
pub mod cascade;
pub mod decision;
pub mod dispatch;
pub mod error;
pub mod failure;
pub mod place;
pub mod plan;
pub mod relay;

use std::{sync::Arc, time::Instant};

use switchback_common::trace_context;
use tracing::field::Empty;

pub use self::{
    decision::{Decision, Route},
    dispatch::Collected,
    error::{Error, Failed, Upstream},
    relay::{Body, Event, Piece, Relay},
};
use crate::{
    auth::{Caller, Charge},
    generation::Generation,
    state::AppState,
};

/// One authenticated, validated request, as the HTTP shell hands it over.
pub struct Context {
    pub app: Arc<AppState>,
    /// The request's id: its answer's id, and the worker's `request_id`.
    pub id: String,
    pub generation: Generation,
    pub caller: Caller,
}

/// A request's answer: what was decided, and the answer itself.
pub struct Answer {
    pub id: String,
    pub decision: Decision,
    pub body: Body,
}

/// Runs a request through the stages within the router's request timeout. A request that
/// produced no answer costs its key no tokens; every outcome is counted.
pub async fn run(ctx: Context) -> Result<Answer, Error> {
    let Context {
        app,
        id,
        mut generation,
        caller,
    } = ctx;
    let mut charge = admit::admit(&app, &id, &caller, &mut generation)?;
    let timeout = app.config.request_timeout;
    let served =
        tokio::time::timeout(timeout, serve(&app, id, generation, &caller, &mut charge)).await;
    let refund = |charge: Option<Charge>| {
        if let Some(c) = charge {
            c.settle(0);
        }
    };
    match served {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(Failed { tier, error })) => {
            refund(charge);
            app.metrics.request(&tier, error.outcome());
            Err(error)
        }
        Err(_) => {
            refund(charge);
            let error = Error::Timeout(timeout.as_secs());
            app.metrics.request("none", error.outcome());
            Err(error)
        }
    }
}

/// Plan, cascade (placing and dispatching), relay, in the request's span. The decision is
/// assembled once, from what the stages produced.
#[tracing::instrument(name = "request", skip_all, fields(
    otel.name = %format_args!("{} {}", generation.operation(), generation.model),
    otel.kind = "server",
    gen_ai.operation.name = generation.operation(),
    gen_ai.request.model = %generation.model,
    gen_ai.response.model = Empty,
    gen_ai.usage.input_tokens = Empty,
    gen_ai.usage.output_tokens = Empty,
    stream = generation.stream,
    switchback.quality_target = Empty,
    switchback.decision = Empty,
    switchback.tier = Empty,
    switchback.worker = Empty,
    switchback.joint.moved = Empty,
    switchback.candidates = Empty,
    switchback.escalations = Empty,
    switchback.attempts = Empty,
    switchback.key_id = %caller.id(),
    switchback.request_id = %id,
))]
async fn serve(
    app: &Arc<AppState>,
    id: String,
    generation: Generation,
    caller: &Caller,
    charge: &mut Option<Charge>,
) -> Result<Answer, Failed> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + app.config.request_timeout);
    let policy = app.policy();
    let predictor = app
        .difficulty
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut plan = plan::plan(app, &generation, caller, predictor.as_deref(), &policy)
        .map_err(Failed::unplaced)?;
    let request = dispatch::request(&id, &generation, plan.cascade);
    let kept = cascade::run(app, &mut plan, &request, generation.stream, deadline).await?;
    let cascade::Kept {
        opening,
        escalations,
        joint,
    } = kept;
    let placed = opening.placement;
    let decision = Decision {
        reason: if escalations.is_empty() {
            placed.reason
        } else {
            Route::Cascade
        },
        tier: placed.tier,
        worker: placed.worker,
        node: placed.node,
        model: placed.model,
        candidates: placed.candidates,
        queue_depth: placed.queue_depth,
        retries: opening.retries,
        escalations,
        joint,
        difficulty: plan.prediction,
    };
    // Held until the answer is used up: streamed answers outlive this function.
    let request_span = tracing::Span::current();
    record_decision(&request_span, &decision, generation.quality);
    let settle = relay::Settle {
        app: Arc::clone(app),
        tier: decision.tier.clone(),
        worker: decision.worker.clone(),
        charge: charge.take(),
        started,
        alternatives: generation.logprobs.unwrap_or(0),
        request_span,
        attempt_span: opening.span,
    };
    let body = relay::relay(settle, opening.answer, opening.in_flight, deadline);
    Ok(Answer { id, decision, body })
}

/// The request's span attributes from the final decision: what a trace shows of it. Log
/// lines in the request carry its tier and worker; the rest is recorded only for a trace
/// exporter (each field recorded costs every request the log layer's formatting, and the
/// decision is in the answer's `switchback` object anyway).
fn record_decision(span: &tracing::Span, d: &Decision, quality: Option<f64>) {
    span.record("switchback.tier", d.tier.as_str());
    span.record("switchback.worker", d.worker.as_str());
    if !trace_context::exporting() {
        return;
    }
    span.record("switchback.decision", d.reason.as_str());
    span.record("switchback.escalations", d.escalations.len());
    span.record(
        "switchback.attempts",
        d.retries.len() + d.escalations.len() + 1,
    );
    span.record("gen_ai.response.model", d.model.as_str());
    let quality = quality.or(d.difficulty.as_ref().map(|p| f64::from(p.quality)));
    if let Some(q) = quality {
        span.record("switchback.quality_target", q);
    }
    if let Some(p) = &d.difficulty {
        for (tier, v) in &p.probabilities {
            trace_context::set_attribute(
                span,
                format!("switchback.difficulty.p.{tier}"),
                f64::from(*v),
            );
        }
    }
    if let Some(j) = &d.joint {
        span.record("switchback.joint.moved", j.moved.as_str());
        let considered: Vec<String> = j
            .considered
            .iter()
            .map(|c| {
                format!(
                    "{}/{} q={} e2e_ms={}",
                    c.tier, c.worker, c.queue_depth, c.expected_e2e_ms
                )
            })
            .collect();
        span.record("switchback.candidates", considered.join("; ").as_str());
    }
}

/// What the stages' tests share: a router over a ready view with no workers, keys, and a
/// plain chat request.
#[cfg(test)]
pub(crate) mod testing {
    use std::{
        sync::{Arc, RwLock, atomic::AtomicU64},
        time::Instant,
    };

    use switchback_proto::pb;

    use crate::{
        auth::{
            Gate,
            keys::{Key, digest},
        },
        clients::Clients,
        config::RawConfig,
        generation::{Asks, ChatMessage, Generation, PromptKind},
        state::AppState,
        view::View,
    };

    /// Tiers `small` (the default) and `large`; the keys of `gate`.
    pub fn app(gate: Gate) -> AppState {
        let config = RawConfig::from_yaml(
            "auth: {disabled: true}\ntiers: [small, large]\ndefault_tier: small",
        )
        .expect("yaml")
        .validate()
        .expect("valid config");
        let view = Arc::new(View::default());
        view.apply(pb::cluster_event::Event::Snapshot(
            pb::ClusterView::default(),
        ));
        AppState {
            policy: RwLock::new(Arc::new(config.policy.clone())),
            difficulty: RwLock::new(None),
            pending: tokio::sync::Semaphore::new(config.max_pending),
            name: "router@test".into(),
            limits: config.limits(),
            view,
            clients: Clients::new(switchback_common::tls::Dialer::new(None)),
            metrics: Default::default(),
            rotation: AtomicU64::new(0),
            auth: gate,
            config,
        }
    }

    /// A key for the bearer token `token`, with no limits.
    pub fn key(token: &str) -> Key {
        Key {
            id: format!("key-{token}"),
            digest: digest(token),
            tiers: None,
            models: None,
            ceiling: None,
            requests_per_minute: None,
            tokens_per_minute: None,
            default_quality: None,
        }
    }

    pub fn gate(keys: Vec<Key>) -> Gate {
        Gate::with_keys(keys, vec!["small".into(), "large".into()], Instant::now())
    }

    /// One user message for `model`, at most 8 tokens back.
    pub fn generation(model: &str) -> Generation {
        Generation {
            model: model.into(),
            prompt: PromptKind::Chat(vec![ChatMessage {
                role: "user".into(),
                content: "Tell me.".into(),
                ..ChatMessage::default()
            }]),
            max_tokens: Some(8),
            temperature: None,
            top_p: None,
            stop: Vec::new(),
            frequency_penalty: None,
            presence_penalty: None,
            seed: None,
            stream: false,
            include_usage: false,
            logprobs: None,
            quality: None,
            cascade: None,
            deadline_ms: None,
            ignored: Vec::new(),
            asks: Asks::default(),
        }
    }
}
