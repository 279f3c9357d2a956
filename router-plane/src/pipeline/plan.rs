//! The plan stage: what the request lets the router choose from. A named tier or model,
//! or for `auto` the predictor's tiers at the request's quality target, within the tiers
//! the caller's key may use and those whose workers can do what the request needs; and
//! whether a cascade may follow.

use std::{ops::RangeInclusive, sync::Arc, time::Instant};

use super::Error;
use crate::{
    auth::Caller,
    difficulty::predictor::{Prediction, Predictor},
    generation::{Generation, Needs},
    placement::Ask,
    policy::Policy,
    state::AppState,
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
    /// Whether a lower tier's answer is judged, and escalated when not confident.
    pub cascade: bool,
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
) -> Result<RangeInclusive<usize>, Error> {
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
        Error::invalid(
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

/// The plan for a request from `caller`: the tiers its key may use, narrowed to those
/// that can serve it ([`require`]), then what it allows within them ([`resolve`]), under
/// the routing policy in force when it arrived.
pub fn plan(
    app: &AppState,
    g: &Generation,
    caller: &Caller,
    predictor: Option<&Predictor>,
    policy: &Arc<Policy>,
) -> Result<Plan, Error> {
    let top = app.config.tiers.len() - 1;
    let allowed = caller.floor().unwrap_or(0).min(top)..=caller.ceiling().unwrap_or(top).min(top);
    let allowed = require(app, &g.model, g.asks.needs(), allowed)?;
    Ok(resolve(app, g, predictor, policy, allowed))
}

/// Resolves what the request allows. For `auto` with a predictor, the preferred tier is
/// the predictor's choice at the request's quality target (and the floor: the router never
/// goes below it), the stretch tier its choice at the target plus the policy's margin;
/// without a predictor all three are the default tier. `allowed` is the range of tier
/// indexes the caller's key may use. Cascades apply to `auto` by the policy's default, and
/// to a named tier only when the client asks for one.
pub fn resolve(
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
    let cascade = match want {
        Want::Auto(_) => g.cascade.unwrap_or(policy.cascade.enabled),
        Want::Named(_) => g.cascade == Some(true),
    };
    Plan {
        cascade,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::testing;

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

    fn caller(tiers: Option<(usize, usize)>, ceiling: Option<usize>) -> Caller {
        let mut k = testing::key("t");
        k.tiers = tiers;
        k.ceiling = ceiling;
        Caller {
            entry: Some(Arc::new(crate::auth::Entry {
                key: k,
                requests: None,
                tokens: None,
            })),
        }
    }

    #[test]
    fn a_cascade_follows_auto_by_the_policy_and_a_named_tier_only_when_asked() {
        let app = testing::app(crate::auth::Gate::disabled());
        let on = Arc::new(Policy {
            cascade: crate::policy::CascadePolicy {
                enabled: true,
                ..Default::default()
            },
            ..Policy::default()
        });
        let off = Arc::new(Policy::default());
        let open = Caller { entry: None };
        let plan_of = |model: &str, cascade: Option<bool>, policy: &Arc<Policy>| {
            let mut g = testing::generation(model);
            g.cascade = cascade;
            plan(&app, &g, &open, None, policy).expect("a plan")
        };
        assert!(plan_of("auto", None, &on).cascade);
        assert!(!plan_of("auto", None, &off).cascade);
        assert!(!plan_of("auto", Some(false), &on).cascade);
        assert!(!plan_of("small", None, &on).cascade);
        assert!(plan_of("small", Some(true), &off).cascade);
        assert!(matches!(plan_of("small", None, &on).want, Want::Named(t) if t == "small"));
    }

    #[test]
    fn auto_without_a_predictor_asks_for_the_default_tier_within_the_key() {
        let app = testing::app(crate::auth::Gate::disabled());
        let policy = Arc::new(Policy::default());
        let g = testing::generation("auto");
        let p = plan(&app, &g, &Caller { entry: None }, None, &policy).expect("plan");
        let Want::Auto(ask) = &p.want else {
            panic!("auto asks: {:?}", p.want)
        };
        assert_eq!(shape(ask), (0, 0, 0, 1));
        assert_eq!(p.ceiling, 1);
        assert!(p.prediction.is_none());
        assert_eq!(p.output_tokens, 8);
        // A key that may use only `large` lifts it; one capped at `small` holds it there.
        let p = plan(&app, &g, &caller(Some((1, 1)), Some(1)), None, &policy).expect("plan");
        let Want::Auto(ask) = &p.want else {
            panic!("auto asks: {:?}", p.want)
        };
        assert_eq!(shape(ask), (1, 1, 1, 1));
        let p = plan(&app, &g, &caller(None, Some(0)), None, &policy).expect("plan");
        assert_eq!(p.ceiling, 0);
        assert_eq!(
            next_tier(&app, &p, 0),
            None,
            "no cascade past the key's ceiling"
        );
        let open = plan(&app, &g, &Caller { entry: None }, None, &policy).expect("plan");
        assert_eq!(next_tier(&app, &open, 0).as_deref(), Some("large"));
    }
}
