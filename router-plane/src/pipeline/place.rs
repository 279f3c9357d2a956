//! The place stage: a (tier, worker) for the plan, the placement core's choice on a
//! snapshot of the view (a named tier or model by rotation, `auto` by the joint decision
//! over tiers and workers), and the bounded wait while everything allowed is full.

use std::{sync::atomic::Ordering, time::Instant};

use super::{
    Error,
    decision::{ConsideredView, JointView, Route},
    plan::{Plan, Want},
};
use crate::{
    placement::{self, Ask, NoWorker, Target, TierView},
    state::AppState,
    view::Snapshot,
};

/// Where the request goes, and how that was chosen.
#[derive(Debug, Clone)]
pub struct Placement {
    pub tier: String,
    pub worker: String,
    /// The worker's machine.
    pub node: String,
    pub model: String,
    /// The worker's gRPC address.
    pub address: String,
    /// How the tier was chosen.
    pub reason: Route,
    /// Workers the choice considered.
    pub candidates: usize,
    /// The worker's outstanding requests when it was chosen.
    pub queue_depth: u32,
    /// For `auto`: the joint decision over (tier, worker).
    pub joint: Option<JointView>,
}

impl Placement {
    /// A choice not yet tied to a worker.
    fn new(reason: Route, candidates: usize) -> Self {
        Self {
            tier: String::new(),
            worker: String::new(),
            node: String::new(),
            model: String::new(),
            address: String::new(),
            reason,
            candidates,
            queue_depth: 0,
            joint: None,
        }
    }
}

/// Chooses a worker, skipping the workers in `exclude` and, where another one is
/// available, those on the nodes in `avoid_nodes`.
pub fn decide(
    app: &AppState,
    plan: &Plan,
    exclude: &[String],
    avoid_nodes: &[String],
) -> Result<Placement, Error> {
    let started = Instant::now();
    if !app.view.is_ready() {
        return Err(Error::NotReady);
    }
    let snapshot = app.view.snapshot();
    let mut candidates = snapshot.candidates(exclude);
    if plan.needs.any() {
        for (c, (w, _)) in candidates.iter_mut().zip(&snapshot.workers) {
            c.ready &= plan.needs.met_by(&w.record);
        }
    }
    let rotation = app.rotation.fetch_add(1, Ordering::Relaxed);
    let choose_among = |candidates: &[placement::Candidate<'_>]| match &plan.want {
        Want::Named(model) => named(app, candidates, model, rotation),
        Want::Auto(ask) => auto(app, plan, &snapshot, candidates, ask, rotation),
    };
    // Another node first (an escalation should not land next to the answer it replaces),
    // then, if nobody is there, any node; both from the same snapshot.
    let elsewhere = (!avoid_nodes.is_empty())
        .then(|| {
            let others: Vec<placement::Candidate<'_>> = candidates
                .iter()
                .map(|c| placement::Candidate {
                    ready: c.ready && !avoid_nodes.iter().any(|n| n == c.node),
                    ..c.clone()
                })
                .collect();
            choose_among(&others)
        })
        .filter(|d| !matches!(d, Err(Error::NoCapacity { .. } | Error::Saturated { .. })));
    let decided = elsewhere.unwrap_or_else(|| choose_among(&candidates));
    app.metrics
        .decision
        .observe(started.elapsed().as_secs_f64());
    let (index, mut placed) = decided?;
    let (worker, _) = &snapshot.workers[index];
    let c = &candidates[index];
    placed.tier = c.tier.to_owned();
    placed.worker = c.id.to_owned();
    placed.node = c.node.to_owned();
    placed.model = c.model.to_owned();
    placed.queue_depth = c.outstanding();
    placed.address = worker.record.address.clone();
    Ok(placed)
}

fn named(
    app: &AppState,
    candidates: &[placement::Candidate<'_>],
    model: &str,
    rotation: u64,
) -> Result<(usize, Placement), Error> {
    let (target, reason) = if app.config.tiers.iter().any(|t| t == model)
        || candidates.iter().any(|c| c.tier == model)
    {
        (Target::Tier(model), Route::Tier)
    } else {
        (Target::Model(model), Route::Model)
    };
    let tier_of_target = || match target {
        Target::Tier(t) => t.to_owned(),
        Target::Model(m) => candidates
            .iter()
            .find(|c| c.model == m)
            .map_or_else(|| m.to_owned(), |c| c.tier.to_owned()),
        Target::Any => String::new(),
    };
    match placement::choose(candidates, target, rotation) {
        Ok(choice) => Ok((choice.index, Placement::new(reason, choice.considered))),
        Err(NoWorker::Unknown) => match target {
            Target::Tier(tier) => Err(Error::NoCapacity {
                tier: tier.to_owned(),
            }),
            Target::Model(m) => Err(Error::UnknownModel(m.to_owned())),
            Target::Any => Err(Error::NoCapacity {
                tier: String::new(),
            }),
        },
        Err(NoWorker::NoneReady) => Err(Error::NoCapacity {
            tier: tier_of_target(),
        }),
        Err(NoWorker::Saturated) => Err(Error::Saturated {
            tier: tier_of_target(),
        }),
    }
}

fn auto(
    app: &AppState,
    plan: &Plan,
    snapshot: &Snapshot,
    candidates: &[placement::Candidate<'_>],
    ask: &Ask,
    rotation: u64,
) -> Result<(usize, Placement), Error> {
    let policy = &plan.policy;
    let tiers: Vec<TierView<'_>> = app
        .config
        .tiers
        .iter()
        .map(|name| {
            let model = policy.tier_model(name);
            let out = if plan.output_tokens > 0 {
                plan.output_tokens
            } else {
                model.expected_output_tokens
            };
            let first_token_s = (model.prefill_ms_per_token * f64::from(plan.prompt_tokens)
                + model.decode_ms_per_token)
                / 1000.0;
            let service_s = first_token_s + model.decode_ms_per_token * f64::from(out) / 1000.0;
            let mean_service_s = first_token_s
                + model.decode_ms_per_token * f64::from(model.expected_output_tokens) / 1000.0;
            // The tier's price: the cheapest worker's (prices are per tier in practice).
            let cost = snapshot.tier_price(name).map_or(0.0, |(input, output)| {
                (input * f64::from(plan.prompt_tokens) + output * f64::from(out)) / 1e6
            });
            TierView {
                name,
                cost,
                success: plan
                    .prediction
                    .as_ref()
                    .and_then(|p| p.probabilities.iter().find(|(t, _)| t == name))
                    .map(|(_, v)| *v),
                service_s,
                first_token_s,
                mean_service_s,
            }
        })
        .collect();
    match placement::joint(&tiers, candidates, ask, rotation) {
        Ok(choice) => {
            let mut d = Placement::new(
                if plan.prediction.is_some() {
                    Route::Difficulty
                } else {
                    Route::AutoDefaultTier
                },
                choice.considered.len(),
            );
            app.metrics
                .moves
                .get_or_create(&crate::metrics::JointMove {
                    tier: tiers[choice.tier].name.to_owned(),
                    moved: choice.moved.as_str(),
                })
                .inc();
            d.joint = Some(JointView {
                preferred: tiers[ask.preferred.min(tiers.len() - 1)].name.to_owned(),
                stretch: tiers[ask.stretch.min(tiers.len() - 1)].name.to_owned(),
                routed_quality: plan.routed_quality,
                deadline_ms: ask.deadline_s.map(|s| (s * 1000.0).round() as u64),
                moved: choice.moved,
                considered: choice
                    .considered
                    .iter()
                    .map(|c| ConsideredView {
                        tier: tiers[c.tier].name.to_owned(),
                        worker: candidates[c.index].id.to_owned(),
                        queue_depth: candidates[c.index].outstanding(),
                        expected_wait_ms: (c.estimate.wait_s * 1000.0).round() as u64,
                        expected_e2e_ms: (c.estimate.e2e_s * 1000.0).round() as u64,
                        meets_deadline: c.meets_deadline,
                        cost: tiers[c.tier].cost,
                    })
                    .collect(),
            });
            Ok((choice.index, d))
        }
        Err(err) => {
            let tier = app.config.tiers[ask.preferred.min(app.config.tiers.len() - 1)].clone();
            Err(match err {
                NoWorker::Unknown | NoWorker::NoneReady => Error::NoCapacity { tier },
                NoWorker::Saturated => Error::Saturated { tier },
            })
        }
    }
}

/// A request waiting in the router for capacity (holding one of its `max_pending`
/// permits); counted in the pending gauge.
struct Pending<'a> {
    app: &'a AppState,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.app.metrics.pending.dec();
    }
}

/// [`decide`], waiting (bounded by the admission wait, the deadline and the number of
/// requests already waiting) while everything allowed is saturated, instead of sending
/// work that would only be refused.
pub async fn place(
    app: &AppState,
    plan: &Plan,
    exclude: &[String],
    avoid_nodes: &[String],
    deadline: tokio::time::Instant,
) -> Result<Placement, Error> {
    let wait_until = deadline.min(tokio::time::Instant::now() + app.config.admission_wait);
    let mut pending = None;
    loop {
        // Registered before looking, so a slot freed in between is not missed.
        let changed = app.view.changed();
        match decide(app, plan, exclude, avoid_nodes) {
            Err(Error::Saturated { tier }) if tokio::time::Instant::now() < wait_until => {
                if pending.is_none() {
                    let permit = app
                        .pending
                        .try_acquire()
                        .map_err(|_| Error::Saturated { tier: tier.clone() })?;
                    app.metrics.pending.inc();
                    pending = Some(Pending {
                        app,
                        _permit: permit,
                    });
                }
                if tokio::time::timeout_at(wait_until, changed).await.is_err() {
                    return Err(Error::Saturated { tier });
                }
            }
            other => return other,
        }
    }
}
