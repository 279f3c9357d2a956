//! From a validated request to a (tier, worker): what the client allows (a named tier or
//! model, or `auto` with its quality range and deadline), the placement core's choice on
//! a snapshot of the view, and the bounded wait while everything allowed is full.

use std::{
    ops::RangeInclusive,
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use super::{AppState, error::ApiError, openai::Generation, response::Decision, tools::Needs};
use crate::{
    difficulty::predictor::{Prediction, Predictor},
    placement::{self, Ask, NoWorker, Target, TierView},
    policy::Policy,
    view::Snapshot,
};

/// What the request lets the router choose from.
#[derive(Debug, Clone)]
pub enum Want {
    /// A tier or a model the client named: only its workers.
    Named(String),
    /// `model: "auto"`: the joint decision over tiers, by index into the router's `tiers`.
    Auto(Ask),
}

/// The request's plan for `auto`: what the predictor said and the tier range it allows.
#[derive(Debug, Clone)]
pub struct Plan {
    pub want: Want,
    /// The routing policy in force when the request arrived (one per request, so a policy
    /// swap mid-request cannot mix two).
    pub policy: Arc<Policy>,
    pub prediction: Option<Prediction>,
    /// The quality target of the headroom tier (`Ask::stretch`): the request's plus the
    /// policy's margin.
    pub routed_quality: Option<f32>,
    /// Predicted tokens in and out, for the cost and the service-time estimates.
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    /// The most expensive tier (index) the caller's API key may reach: `auto` is placed
    /// at or below it and cascades stop there.
    pub ceiling: usize,
    /// What a worker must be able to do (tools, a schema): others are not candidates.
    pub needs: Needs,
}

/// Narrows the tiers a request that needs tools or a schema may use to those with a worker
/// that can serve it, or refuses the request, naming the field, when none can: never a
/// prose answer from a model that cannot do what was asked. Before the router has a view,
/// placement answers (not ready).
pub fn require(
    app: &AppState,
    model: &str,
    needs: Needs,
    allowed: RangeInclusive<usize>,
) -> Result<RangeInclusive<usize>, ApiError> {
    if !needs.any() || !app.view.is_ready() {
        return Ok(allowed);
    }
    let snapshot = app.view.snapshot();
    let tiers = &app.config.tiers;
    let able = |tier: &str| {
        snapshot
            .workers
            .iter()
            .any(|(w, _)| w.record.tier == tier && needs.met_by(&w.record))
    };
    let able_tiers: Vec<&str> = tiers
        .iter()
        .map(String::as_str)
        .filter(|t| able(t))
        .collect();
    let refuse = |what: String| {
        ApiError::invalid(
            needs.param(),
            format!(
                "`{}` asks for what {what} cannot do ({}); {}",
                needs.param(),
                needs.what(),
                if able_tiers.is_empty() {
                    "no tier of this cluster can".to_owned()
                } else {
                    format!("tiers that can: {}", able_tiers.join(", "))
                }
            ),
        )
    };
    if model == "auto" {
        let lowest = allowed
            .clone()
            .find(|&i| tiers.get(i).is_some_and(|t| able(t)));
        return match lowest {
            Some(lo) => Ok(lo..=*allowed.end()),
            None => Err(refuse("no tier this request may use".to_owned())),
        };
    }
    let matching: Vec<_> = snapshot
        .workers
        .iter()
        .filter(|(w, _)| w.record.tier == model || w.record.model == model)
        .collect();
    if !matching.is_empty() && !matching.iter().any(|(w, _)| needs.met_by(&w.record)) {
        return Err(refuse(format!("the model `{model}`")));
    }
    Ok(allowed)
}

/// The tier a cascade escalates to from tier `level`: the next one up, within the key's
/// ceiling, that can serve the request.
pub fn next_tier(app: &AppState, plan: &Plan, level: usize) -> Option<String> {
    let snapshot = plan.needs.any().then(|| app.view.snapshot());
    app.config
        .tiers
        .iter()
        .enumerate()
        .skip(level + 1)
        .take_while(|(i, _)| *i <= plan.ceiling)
        .map(|(_, t)| t)
        .find(|t| {
            snapshot.as_ref().is_none_or(|s| {
                s.workers
                    .iter()
                    .any(|(w, _)| &w.record.tier == *t && plan.needs.met_by(&w.record))
            })
        })
        .cloned()
}

/// Fits an `auto` ask into the tiers `allowed` (the caller's key): the preferred tier is
/// clamped into the range, and the rest keep floor <= preferred <= stretch <= ceiling.
pub fn clamp(ask: Ask, allowed: &RangeInclusive<usize>) -> Ask {
    let (lo, hi) = (*allowed.start(), *allowed.end());
    let preferred = ask.preferred.clamp(lo, hi.max(lo));
    let stretch = ask.stretch.clamp(preferred, hi.max(preferred));
    Ask {
        preferred,
        stretch,
        floor: ask.floor.clamp(lo.min(preferred), preferred),
        ceiling: ask.ceiling.min(hi).max(stretch),
        deadline_s: ask.deadline_s,
    }
}

/// Resolves what the request allows. For `auto` with a predictor, the preferred tier is
/// the predictor's choice at the request's quality target (and the floor: the router never
/// goes below it), the stretch tier its choice at the target plus the policy's margin;
/// without a predictor all three are the default tier. `allowed` is the range of tier
/// indexes the caller's key may use.
pub fn plan(
    app: &AppState,
    g: &Generation,
    predictor: Option<&Predictor>,
    policy: &Arc<Policy>,
    allowed: RangeInclusive<usize>,
) -> Plan {
    let prompt = g.prompt_text();
    let prompt_tokens = u32::try_from(g.estimated_prompt_tokens())
        .unwrap_or(u32::MAX)
        .max(1);
    let tiers = &app.config.tiers;
    let index = |name: &str| tiers.iter().position(|t| t == name);
    let default_index = index(&app.config.default_tier).unwrap_or(0);
    let deadline_s = g
        .deadline_ms
        .or(policy.deadline_ms)
        .map(|ms| ms as f64 / 1000.0);
    let (want, prediction, routed_quality) = match (g.model.as_str(), predictor) {
        ("auto", Some(p)) => {
            let quality = g
                .quality
                .or(policy.default_quality)
                .map_or(p.default_quality, |q| q as f32);
            let routed = (quality + policy.quality_margin as f32).min(1.0);
            let started = Instant::now();
            let mut prediction = p.decide(&prompt, quality);
            let gaps: Vec<f32> = prediction.gaps.iter().map(|(_, g)| *g).collect();
            let stretch_tier = p.tier_at(&gaps, routed);
            app.metrics
                .difficulty
                .observe(started.elapsed().as_secs_f64());
            let preferred = index(&prediction.tier).unwrap_or(default_index);
            let stretch = index(stretch_tier).unwrap_or(preferred).max(preferred);
            prediction.quality = quality;
            (
                Want::Auto(Ask {
                    preferred,
                    stretch,
                    // Never below the tier the request's own quality target asks for.
                    floor: preferred,
                    ceiling: tiers.len() - 1,
                    deadline_s,
                }),
                Some(prediction),
                Some(routed),
            )
        }
        ("auto", None) => (
            Want::Auto(Ask {
                preferred: default_index,
                stretch: default_index,
                floor: default_index,
                ceiling: tiers.len() - 1,
                deadline_s,
            }),
            None,
            None,
        ),
        (name, _) => (Want::Named(name.to_owned()), None, None),
    };
    let output_tokens = g.max_tokens.unwrap_or(0);
    let want = match want {
        Want::Auto(ask) => Want::Auto(clamp(ask, &allowed)),
        named => named,
    };
    Plan {
        needs: g.asks.needs(),
        ceiling: *allowed.end(),
        want,
        policy: Arc::clone(policy),
        prediction,
        routed_quality,
        prompt_tokens,
        output_tokens,
    }
}

/// Chooses a worker, skipping the workers in `exclude` and, where another one is
/// available, those on the nodes in `avoid_nodes`.
pub fn decide(
    app: &AppState,
    plan: &Plan,
    exclude: &[String],
    avoid_nodes: &[String],
) -> Result<(Decision, String), ApiError> {
    let started = Instant::now();
    if !app.view.is_ready() {
        return Err(ApiError::NotReady);
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
        .filter(|d| {
            !matches!(
                d,
                Err(ApiError::NoCapacity { .. } | ApiError::Saturated { .. })
            )
        });
    let decided = elsewhere.unwrap_or_else(|| choose_among(&candidates));
    app.metrics
        .decision
        .observe(started.elapsed().as_secs_f64());
    let (index, mut decision) = decided?;
    let (worker, _) = &snapshot.workers[index];
    let c = &candidates[index];
    decision.tier = c.tier.to_owned();
    decision.worker = c.id.to_owned();
    decision.node = c.node.to_owned();
    decision.model = c.model.to_owned();
    decision.queue_depth = c.outstanding();
    Ok((decision, worker.record.address.clone()))
}

fn named(
    app: &AppState,
    candidates: &[placement::Candidate<'_>],
    model: &str,
    rotation: u64,
) -> Result<(usize, Decision), ApiError> {
    let (target, reason) = if app.config.tiers.iter().any(|t| t == model)
        || candidates.iter().any(|c| c.tier == model)
    {
        (Target::Tier(model), "tier")
    } else {
        (Target::Model(model), "model")
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
        Ok(choice) => Ok((choice.index, Decision::new(reason, choice.considered))),
        Err(NoWorker::Unknown) => match target {
            Target::Tier(tier) => Err(ApiError::NoCapacity {
                tier: tier.to_owned(),
            }),
            Target::Model(m) => Err(ApiError::UnknownModel(m.to_owned())),
            Target::Any => Err(ApiError::NoCapacity {
                tier: String::new(),
            }),
        },
        Err(NoWorker::NoneReady) => Err(ApiError::NoCapacity {
            tier: tier_of_target(),
        }),
        Err(NoWorker::Saturated) => Err(ApiError::Saturated {
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
) -> Result<(usize, Decision), ApiError> {
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
            let mut d = Decision::new(
                if plan.prediction.is_some() {
                    "difficulty"
                } else {
                    "auto-default-tier"
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
            d.joint = Some(super::response::JointView {
                preferred: tiers[ask.preferred.min(tiers.len() - 1)].name.to_owned(),
                stretch: tiers[ask.stretch.min(tiers.len() - 1)].name.to_owned(),
                routed_quality: plan.routed_quality,
                deadline_ms: ask.deadline_s.map(|s| (s * 1000.0).round() as u64),
                moved: choice.moved.as_str(),
                considered: choice
                    .considered
                    .iter()
                    .map(|c| super::response::ConsideredView {
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
                NoWorker::Unknown | NoWorker::NoneReady => ApiError::NoCapacity { tier },
                NoWorker::Saturated => ApiError::Saturated { tier },
            })
        }
    }
}

/// A request waiting in the router for capacity; counted in the pending gauge.
struct Pending<'a>(
    &'a AppState,
    #[allow(dead_code)] tokio::sync::SemaphorePermit<'a>,
);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.metrics.pending.dec();
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
) -> Result<(Decision, String), ApiError> {
    let wait_until = deadline.min(tokio::time::Instant::now() + app.config.admission_wait);
    let mut pending = None;
    loop {
        // Registered before looking, so a slot freed in between is not missed.
        let changed = app.view.changed();
        match decide(app, plan, exclude, avoid_nodes) {
            Err(ApiError::Saturated { tier }) if tokio::time::Instant::now() < wait_until => {
                if pending.is_none() {
                    let permit = app
                        .pending
                        .try_acquire()
                        .map_err(|_| ApiError::Saturated { tier: tier.clone() })?;
                    app.metrics.pending.inc();
                    pending = Some(Pending(app, permit));
                }
                if tokio::time::timeout_at(wait_until, changed).await.is_err() {
                    return Err(ApiError::Saturated { tier });
                }
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(floor: usize, preferred: usize, stretch: usize, ceiling: usize) -> Ask {
        Ask {
            preferred,
            stretch,
            floor,
            ceiling,
            deadline_s: None,
        }
    }

    fn shape(a: &Ask) -> (usize, usize, usize, usize) {
        (a.floor, a.preferred, a.stretch, a.ceiling)
    }

    #[test]
    fn a_key_range_caps_and_lifts_auto() {
        // max_tier 0 of three tiers: everything at tier 0.
        assert_eq!(shape(&clamp(ask(1, 1, 2, 2), &(0..=0))), (0, 0, 0, 0));
        // Tiers 1..=2 only: a request that preferred tier 0 is lifted to 1.
        assert_eq!(shape(&clamp(ask(0, 0, 1, 2), &(1..=2))), (1, 1, 1, 2));
        // No restriction: unchanged.
        assert_eq!(shape(&clamp(ask(0, 1, 2, 2), &(0..=2))), (0, 1, 2, 2));
        // Any combination keeps floor <= preferred <= stretch <= ceiling.
        for lo in 0..3 {
            for hi in lo..3 {
                for f in 0..3 {
                    for p in f..3 {
                        for s in p..3 {
                            let (f2, p2, s2, c2) = shape(&clamp(ask(f, p, s, 2), &(lo..=hi)));
                            assert!(f2 <= p2 && p2 <= s2 && s2 <= c2 && c2 <= hi);
                            assert!(p2 >= lo);
                        }
                    }
                }
            }
        }
    }
}
