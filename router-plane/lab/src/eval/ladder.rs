//! Cost and quality over K tiers on labelled items: routing alone (the predictor's knob),
//! cascade alone (cheapest tier first, escalate while the answer's confidence is below the
//! tier's floor) and cascade routing (route first, then escalate by confidence; Dekoninck
//! et al., "A Unified Approach to Routing and Cascading for LLMs", ICML 2025). Cost is each
//! answer's tokens × its tier's price, the answers a cascade throws away included.
//!
//! Pure: `eval` feeds it items, predicted gaps and prices.

use switchback_routing::difficulty::predictor::choose;

use crate::metrics::push_upper_hull;

/// One tier's labelled answer to one item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rung {
    pub score: f64,
    /// What the answer cost ($ or any unit shared by all tiers).
    pub cost: f64,
    /// The escalation signal (higher is more confident); `-inf` when the answer has none,
    /// so it escalates (as the router escalates an empty answer).
    pub signal: f64,
}

/// One item: its tiers' answers in rising cost, and the predictor's gap of each tier to
/// the top tier.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub rungs: Vec<Rung>,
    pub gaps: Vec<f32>,
}

/// Mean cost and quality of a strategy, and the share of items the top tier answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub cost: f64,
    pub quality: f64,
    pub top_share: f64,
}

fn mean_of(cases: &[Case], each: impl Fn(&Case) -> (f64, f64, bool)) -> Outcome {
    mean(cases.len(), cases.iter().map(each))
}

/// The mean of `n` items' (cost, quality, answered by the top tier).
pub fn mean(n: usize, items: impl Iterator<Item = (f64, f64, bool)>) -> Outcome {
    let n = n.max(1) as f64;
    let (mut cost, mut quality, mut top) = (0.0, 0.0, 0.0);
    for (c, q, t) in items {
        cost += c;
        quality += q;
        top += f64::from(u8::from(t));
    }
    Outcome {
        cost: cost / n,
        quality: quality / n,
        top_share: top / n,
    }
}

/// Every item on tier `k`.
pub fn always(cases: &[Case], k: usize) -> Outcome {
    mean_of(cases, |c| {
        (c.rungs[k].cost, c.rungs[k].score, k + 1 == c.rungs.len())
    })
}

/// Starting at `start`, climbing while the answer's signal is below its tier's floor
/// (`floors[k]`, none for the top tier): the cost of every answer asked for, the score
/// of the last, and whether the top tier answered.
pub fn climb(c: &Case, start: usize, floors: &[f64]) -> (f64, f64, bool) {
    let top = c.rungs.len() - 1;
    let mut k = start.min(top);
    let mut cost = c.rungs[k].cost;
    while k < top && c.rungs[k].signal < floors[k] {
        k += 1;
        cost += c.rungs[k].cost;
    }
    (cost, c.rungs[k].score, k == top)
}

/// Routing alone at knob threshold `t`.
pub fn route(cases: &[Case], t: f32) -> Outcome {
    mean_of(cases, |c| {
        let k = choose(&c.gaps, t);
        (c.rungs[k].cost, c.rungs[k].score, k + 1 == c.rungs.len())
    })
}

/// Cascade routing: route at threshold `t`, then climb by `floors`. A threshold above
/// every gap starts every item on the cheapest tier (cascade alone); floors of `-inf`
/// never escalate (routing alone).
pub fn cascade_route(cases: &[Case], t: f32, floors: &[f64]) -> Outcome {
    mean_of(cases, |c| climb(c, choose(&c.gaps, t), floors))
}

/// Per tier, the `alpha`-quantile of its signals (the floor under which that share of
/// its answers escalate): `alpha` 0 never escalates, 1 always does.
pub fn floors_at(signals: &[Vec<f64>], alpha: f64) -> Vec<f64> {
    signals
        .iter()
        .map(|s| {
            if alpha <= 0.0 || s.is_empty() {
                return f64::NEG_INFINITY;
            }
            if alpha >= 1.0 {
                return f64::INFINITY;
            }
            let mut sorted = s.clone();
            sorted.sort_by(f64::total_cmp);
            // The floor sits above the `alpha` share of the answers.
            let k = ((alpha * sorted.len() as f64).ceil() as usize).min(sorted.len());
            match k {
                0 => f64::NEG_INFINITY,
                k if k == sorted.len() => f64::INFINITY,
                k => (sorted[k - 1] + sorted[k]) / 2.0,
            }
        })
        .collect()
}

/// Knob thresholds that reach every routing the cases allow: each distinct gap, one below
/// all (everything to the top tier) and one above all (everything to the cheapest), at
/// most `max` of them (spread over the sorted gaps).
pub fn thresholds(cases: &[Case], max: usize) -> Vec<f32> {
    let mut gaps: Vec<f32> = cases.iter().flat_map(|c| c.gaps.iter().copied()).collect();
    gaps.sort_by(f32::total_cmp);
    gaps.dedup();
    let mut out: Vec<f32> = if gaps.len() <= max {
        gaps
    } else {
        (0..max)
            .map(|k| gaps[k * (gaps.len() - 1) / (max - 1).max(1)])
            .collect()
    };
    out.insert(0, -1.0 - f32::EPSILON);
    out.push(1.0);
    out.dedup();
    out
}

/// The cost–quality points of a router that places each item by a scalar `score` (higher
/// means dearer): K-1 cut points taken from a grid of its quantiles, each item to the tier
/// of the number of cut points its score exceeds. Every banding a scalar allows, so a
/// baseline such as prompt length gets its best curve.
pub fn bands(cases: &[Case], scores: &[f64], grid: usize) -> Vec<Outcome> {
    let k = cases.first().map_or(0, |c| c.rungs.len());
    let mut sorted = scores.to_vec();
    sorted.sort_by(f64::total_cmp);
    let Some(&last) = sorted.last() else {
        return Vec::new();
    };
    let mut cuts: Vec<f64> = (0..=grid)
        .map(|g| {
            let i = g * (sorted.len() - 1) / grid.max(1);
            if g == 0 { f64::NEG_INFINITY } else { sorted[i] }
        })
        .collect();
    cuts.push(last + 1.0);
    cuts.dedup();
    let mut out = Vec::new();
    let mut chosen = Vec::with_capacity(k.saturating_sub(1));
    fn rec(
        cases: &[Case],
        scores: &[f64],
        cuts: &[f64],
        from: usize,
        need: usize,
        chosen: &mut Vec<f64>,
        out: &mut Vec<Outcome>,
    ) {
        if chosen.len() == need {
            out.push(mean_of_scored(cases, scores, chosen));
            return;
        }
        for i in from..cuts.len() {
            chosen.push(cuts[i]);
            rec(cases, scores, cuts, i, need, chosen, out);
            chosen.pop();
        }
    }
    rec(
        cases,
        scores,
        &cuts,
        0,
        k.saturating_sub(1),
        &mut chosen,
        &mut out,
    );
    out
}

fn mean_of_scored(cases: &[Case], scores: &[f64], cuts: &[f64]) -> Outcome {
    mean(
        cases.len(),
        cases.iter().zip(scores).map(|(c, s)| {
            let k = cuts.iter().filter(|&&cut| *s > cut).count();
            (c.rungs[k].cost, c.rungs[k].score, k + 1 == c.rungs.len())
        }),
    )
}

/// The cheapest tier that scores best on `c`.
fn best_tier(c: &Case) -> usize {
    let best = c.rungs.iter().map(|r| r.score).fold(f64::MIN, f64::max);
    c.rungs
        .iter()
        .position(|r| r.score >= best)
        .unwrap_or(c.rungs.len() - 1)
}

/// The oracle: each item on the cheapest tier that scores best on it.
pub fn oracle(cases: &[Case]) -> Outcome {
    mean_of(cases, |c| {
        let k = best_tier(c);
        (c.rungs[k].cost, c.rungs[k].score, k + 1 == c.rungs.len())
    })
}

/// The oracle's frontier: from every item on the cheapest tier, each item moved to its
/// oracle tier in the order of quality gained per unit of cost (the most efficient first),
/// one point per move. What perfect knowledge of the answers buys at each budget.
pub fn oracle_curve(cases: &[Case]) -> Vec<Outcome> {
    let n = cases.len().max(1) as f64;
    let mut at = always(cases, 0);
    let mut moves: Vec<(f64, f64, bool)> = cases
        .iter()
        .filter_map(|c| {
            let k = best_tier(c);
            let gain = c.rungs[k].score - c.rungs[0].score;
            (k > 0 && gain > 0.0).then(|| {
                (
                    gain,
                    c.rungs[k].cost - c.rungs[0].cost,
                    k + 1 == c.rungs.len(),
                )
            })
        })
        .collect();
    moves.sort_by(|a, b| (b.0 / b.1.max(1e-300)).total_cmp(&(a.0 / a.1.max(1e-300))));
    let mut out = vec![at];
    for (gain, cost, top) in moves {
        at.quality += gain / n;
        at.cost += cost / n;
        at.top_share += f64::from(u8::from(top)) / n;
        out.push(at);
    }
    out
}

/// The upper concave, non-decreasing frontier of `points` (cost, quality): what mixing the
/// strategies behind them can reach at each cost.
pub fn frontier(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(c, q)| c.is_finite() && q.is_finite())
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
    let mut hull: Vec<(f64, f64)> = Vec::new();
    for p in sorted {
        // Non-decreasing: a point below the best so far at a higher cost adds nothing.
        if hull.last().is_some_and(|l| p.1 <= l.1) {
            continue;
        }
        push_upper_hull(&mut hull, p);
    }
    hull
}

/// The frontier's quality at cost `x`: linear between its points, flat after the last,
/// and `None` below its cheapest point.
pub fn quality_at(frontier: &[(f64, f64)], x: f64) -> Option<f64> {
    let first = frontier.first()?;
    if x < first.0 {
        return None;
    }
    for w in frontier.windows(2) {
        if x <= w[1].0 {
            let f = (x - w[0].0) / (w[1].0 - w[0].0).max(1e-300);
            return Some(w[0].1 + f * (w[1].1 - w[0].1));
        }
    }
    frontier.last().map(|p| p.1)
}

/// AIQ (RouterBench): the area under the frontier of `points` over the cost range
/// [`lo`, `hi`], divided by its width. Below the frontier's cheapest point the quality
/// counts as 0 (a strategy that cannot be that cheap earns nothing there).
pub fn aiq(points: &[(f64, f64)], lo: f64, hi: f64) -> f64 {
    let f = frontier(points);
    if f.is_empty() || hi <= lo {
        return 0.0;
    }
    // Integrate exactly over the pieces: the frontier's own points inside the range and
    // the range's ends.
    let mut xs: Vec<f64> = f
        .iter()
        .map(|p| p.0)
        .filter(|x| *x > lo && *x < hi)
        .collect();
    xs.insert(0, lo);
    xs.push(hi);
    let mut area = 0.0;
    for w in xs.windows(2) {
        let (a, b) = (w[0], w[1]);
        // The frontier is linear on [a, b] except where it starts inside it.
        let start = f[0].0.max(a);
        if start >= b {
            continue;
        }
        let (qa, qb) = (
            quality_at(&f, start).unwrap_or(0.0),
            quality_at(&f, b).unwrap_or(0.0),
        );
        area += (b - start) * (qa + qb) / 2.0;
    }
    area / (hi - lo)
}

/// The smallest share of top-tier answers among `outcomes` whose quality reaches `target`.
pub fn least_top_share(outcomes: &[Outcome], target: f64) -> Option<f64> {
    outcomes
        .iter()
        .filter(|o| o.quality >= target - 1e-12)
        .map(|o| o.top_share)
        .min_by(f64::total_cmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rung(score: f64, cost: f64, signal: f64) -> Rung {
        Rung {
            score,
            cost,
            signal,
        }
    }

    /// Item 0: small is right and sure. Item 1: small is wrong and unsure, medium right.
    /// Item 2: only large is right; small and medium are unsure.
    fn cases() -> Vec<Case> {
        vec![
            Case {
                rungs: vec![
                    rung(1.0, 1.0, -0.1),
                    rung(1.0, 3.0, -0.1),
                    rung(1.0, 9.0, 0.0),
                ],
                gaps: vec![0.0, 0.0, 0.0],
            },
            Case {
                rungs: vec![
                    rung(0.0, 1.0, -2.0),
                    rung(1.0, 3.0, -0.2),
                    rung(1.0, 9.0, 0.0),
                ],
                gaps: vec![0.6, 0.1, 0.0],
            },
            Case {
                rungs: vec![
                    rung(0.0, 1.0, -3.0),
                    rung(0.0, 3.0, -2.5),
                    rung(1.0, 9.0, 0.0),
                ],
                gaps: vec![0.9, 0.8, 0.0],
            },
        ]
    }

    #[test]
    fn routing_places_each_item_on_the_cheapest_tier_within_the_threshold() {
        let c = cases();
        let o = route(&c, 0.2);
        // Item 0 small, item 1 medium, item 2 large.
        assert_eq!((o.cost, o.quality), ((1.0 + 3.0 + 9.0) / 3.0, 1.0));
        assert!((o.top_share - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(route(&c, 1.0), always(&c, 0));
        assert_eq!(route(&c, -1.5), always(&c, 2));
    }

    #[test]
    fn a_cascade_pays_for_every_answer_it_throws_away() {
        let c = cases();
        let floors = [-1.0, -1.0];
        // Item 0 stays on small (1); item 1 climbs to medium (1 + 3); item 2 climbs to
        // large (1 + 3 + 9).
        let o = cascade_route(&c, 1.0, &floors);
        assert_eq!((o.cost, o.quality), ((1.0 + 4.0 + 13.0) / 3.0, 1.0));
        assert_eq!(climb(&c[2], 1, &floors), (12.0, 1.0, true));
        // Floors of -inf never escalate: routing alone.
        let never = [f64::NEG_INFINITY; 2];
        assert_eq!(cascade_route(&c, 0.2, &never), route(&c, 0.2));
        // An answer without a signal escalates.
        let mut silent = c[0].clone();
        silent.rungs[0].signal = f64::NEG_INFINITY;
        assert_eq!(climb(&silent, 0, &floors).0, 4.0);
    }

    #[test]
    fn floors_escalate_the_share_asked_for() {
        let s = vec![vec![-4.0, -3.0, -2.0, -1.0]];
        assert_eq!(floors_at(&s, 0.0), [f64::NEG_INFINITY]);
        assert_eq!(floors_at(&s, 1.0), [f64::INFINITY]);
        assert_eq!(floors_at(&s, 0.5), [-2.5]);
        assert_eq!(floors_at(&s, 0.25), [-3.5]);
    }

    #[test]
    fn the_frontier_is_concave_and_never_falls() {
        let f = frontier(&[(0.0, 0.5), (1.0, 0.6), (2.0, 0.9), (3.0, 0.8), (4.0, 1.0)]);
        // (1, 0.6) lies under the segment (0, 0.5)-(2, 0.9); (3, 0.8) falls.
        assert_eq!(f, [(0.0, 0.5), (2.0, 0.9), (4.0, 1.0)]);
        assert_eq!(quality_at(&f, 1.0), Some(0.7));
        assert_eq!(quality_at(&f, 9.0), Some(1.0));
        assert_eq!(quality_at(&f, -1.0), None);
        // Area: 0..2 under 0.5→0.9 is 1.4, 2..4 under 0.9→1.0 is 1.9; over a width of 4.
        assert!((aiq(&[(0.0, 0.5), (2.0, 0.9), (4.0, 1.0)], 0.0, 4.0) - 3.3 / 4.0).abs() < 1e-12);
        // Flat after the last point; zero before the first.
        assert!((aiq(&[(2.0, 1.0)], 0.0, 4.0) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn bands_cover_every_split_of_a_scalar_score() {
        let c = cases();
        // A score that orders the items as their difficulty does: some banding is exact.
        let outcomes = bands(&c, &[0.0, 1.0, 2.0], 10);
        assert!(
            outcomes
                .iter()
                .any(|o| (o.cost - 13.0 / 3.0).abs() < 1e-12 && o.quality == 1.0),
            "{outcomes:?}"
        );
        assert!(outcomes.contains(&always(&c, 0)));
        assert!(outcomes.contains(&always(&c, 2)));
        assert_eq!(oracle(&c), route(&c, 0.2));
        // The oracle moves item 1 to medium (1 for 2) before item 2 to large (1 for 8).
        let curve = oracle_curve(&c);
        let steps: Vec<(f64, f64)> = curve
            .iter()
            .map(|o| (o.cost * 3.0, o.quality * 3.0))
            .collect();
        assert_eq!(steps, [(3.0, 1.0), (5.0, 2.0), (13.0, 3.0)]);
        assert_eq!(curve[2].top_share, oracle(&c).top_share);
    }

    #[test]
    fn the_fewest_top_calls_that_keep_the_quality() {
        let o = |q, t| Outcome {
            cost: 0.0,
            quality: q,
            top_share: t,
        };
        let all = [o(1.0, 1.0), o(1.0, 0.4), o(0.9, 0.1)];
        assert_eq!(least_top_share(&all, 1.0), Some(0.4));
        assert_eq!(least_top_share(&all, 0.9), Some(0.1));
        assert_eq!(least_top_share(&all, 1.1), None);
    }
}
