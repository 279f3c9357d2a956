//! How good a router is on a two-model pair, with RouteLLM's and RouterBench's metrics.
//!
//! A router gives each item a score ("how much it needs the strong model"); sweeping a
//! threshold over the scores gives, for each share c of calls to the strong model, the
//! mean quality r(c). PGR(c) = (r(c) − r_weak) / (r_strong − r_weak); APGR is the area
//! under PGR over c in [0, 1]; CPT(x) the smallest c with PGR ≥ x. Items with tied scores
//! cannot be split by a threshold: the curve goes straight across a tie (the expected
//! value of breaking it at random), which is also what makes random routing score 0.5.

use serde::Serialize;

/// Quality at each reachable strong-call share, from c = 0 to c = 1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Curve {
    pub points: Vec<(f64, f64)>,
}

impl Curve {
    /// The curve of a router with `scores` (higher: send to the strong model) on items
    /// whose weak and strong qualities are `weak[i]`, `strong[i]`.
    pub fn of(scores: &[f64], weak: &[f64], strong: &[f64]) -> Self {
        let n = scores.len();
        assert!(
            n > 0 && weak.len() == n && strong.len() == n,
            "one score and two qualities per item"
        );
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let mut sum: f64 = weak.iter().sum();
        let mut points = vec![(0.0, sum / n as f64)];
        let mut i = 0;
        while i < n {
            let mut j = i;
            while j < n && scores[order[j]] == scores[order[i]] {
                sum += strong[order[j]] - weak[order[j]];
                j += 1;
            }
            points.push((j as f64 / n as f64, sum / n as f64));
            i = j;
        }
        Self { points }
    }

    /// Random routing: the straight line from all-weak to all-strong.
    pub fn random(weak: &[f64], strong: &[f64]) -> Self {
        let n = weak.len() as f64;
        Self {
            points: vec![
                (0.0, weak.iter().sum::<f64>() / n),
                (1.0, strong.iter().sum::<f64>() / n),
            ],
        }
    }

    /// The oracle: knows each item's gain from the strong model.
    pub fn oracle(weak: &[f64], strong: &[f64]) -> Self {
        let gain: Vec<f64> = weak.iter().zip(strong).map(|(w, s)| s - w).collect();
        Self::of(&gain, weak, strong)
    }

    fn ends(&self) -> (f64, f64) {
        (self.points[0].1, self.points[self.points.len() - 1].1)
    }

    /// PGR at each point.
    pub fn pgr(&self) -> Vec<(f64, f64)> {
        let (w, s) = self.ends();
        let span = s - w;
        self.points
            .iter()
            .map(|&(c, r)| {
                (
                    c,
                    if span.abs() < 1e-12 {
                        0.0
                    } else {
                        (r - w) / span
                    },
                )
            })
            .collect()
    }

    /// Area under PGR(c), c in [0, 1].
    pub fn apgr(&self) -> f64 {
        area(&self.pgr())
    }

    /// The smallest strong-call share with PGR ≥ `x` (linear between points).
    pub fn cpt(&self, x: f64) -> f64 {
        first_reaching(&self.pgr(), x)
    }

    /// The smallest strong-call share with quality ≥ `quality`.
    pub fn share_at_quality(&self, quality: f64) -> f64 {
        first_reaching(&self.points, quality)
    }

    /// RouterBench's AIQ with cost proportional to the strong-call share: area under the
    /// non-decreasing upper convex hull of the (c, r) points.
    pub fn aiq(&self) -> f64 {
        let mut hull: Vec<(f64, f64)> = Vec::new();
        for &p in &self.points {
            push_upper_hull(&mut hull, p);
        }
        let mut best = f64::MIN;
        let monotone: Vec<(f64, f64)> = hull
            .into_iter()
            .map(|(c, r)| {
                best = best.max(r);
                (c, best)
            })
            .collect();
        area(&monotone)
    }
}

/// Adds `p` (to the right of every point in `hull`) to an upper convex hull built left to
/// right, dropping the points that lie on or below the segment to it.
pub fn push_upper_hull(hull: &mut Vec<(f64, f64)>, p: (f64, f64)) {
    while hull.len() >= 2 {
        let (a, b) = (hull[hull.len() - 2], hull[hull.len() - 1]);
        if (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0) >= 0.0 {
            hull.pop();
        } else {
            break;
        }
    }
    hull.push(p);
}

fn area(points: &[(f64, f64)]) -> f64 {
    points
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
        .sum()
}

fn first_reaching(points: &[(f64, f64)], y: f64) -> f64 {
    if points[0].1 >= y {
        return points[0].0;
    }
    for w in points.windows(2) {
        let ((c0, y0), (c1, y1)) = (w[0], w[1]);
        if y1 >= y && y1 > y0 {
            return c0 + (c1 - c0) * (y - y0) / (y1 - y0);
        }
    }
    1.0
}

/// The numbers the results page reports for one router on one pair.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub router: String,
    pub apgr: f64,
    pub cpt50: f64,
    pub cpt80: f64,
    /// Strong-call share that matches always-strong quality.
    pub strong_share_no_drop: f64,
    /// Strong-call share within 1 % (relative) of always-strong quality.
    pub strong_share_1pct_drop: f64,
    pub aiq: f64,
    pub curve: Vec<(f64, f64)>,
}

impl Report {
    pub fn of(router: &str, curve: Curve) -> Self {
        let strong = curve.ends().1;
        Self {
            router: router.to_owned(),
            apgr: curve.apgr(),
            cpt50: curve.cpt(0.5),
            cpt80: curve.cpt(0.8),
            strong_share_no_drop: curve.share_at_quality(strong - 1e-12),
            strong_share_1pct_drop: curve.share_at_quality(strong * 0.99),
            aiq: curve.aiq(),
            curve: curve.points,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn random_scores_half_and_cpt_equals_x() {
        let weak = [0.0, 1.0, 0.0, 1.0];
        let strong = [1.0, 1.0, 1.0, 0.0];
        let c = Curve::random(&weak, &strong);
        assert!(close(c.apgr(), 0.5));
        assert!(close(c.cpt(0.5), 0.5) && close(c.cpt(0.8), 0.8));
        // All scores tied: the same as random.
        let tied = Curve::of(&[0.3; 4], &weak, &strong);
        assert!(close(tied.apgr(), 0.5));
    }

    #[test]
    fn oracle_routes_the_gains_first() {
        // Item 0 gains from strong, items 1 and 2 do not, item 3 loses.
        let weak = [0.0, 1.0, 0.0, 1.0];
        let strong = [1.0, 1.0, 0.0, 0.0];
        let o = Curve::oracle(&weak, &strong);
        // r_weak = 0.5, r_strong = 0.5: no gap; PGR is defined as 0 then.
        assert!(close(o.points[0].1, 0.5));
        let weak = [0.0, 0.0, 1.0, 1.0];
        let strong = [1.0, 1.0, 1.0, 1.0];
        let o = Curve::oracle(&weak, &strong);
        // Two items gain; sending those two (c = 0.5) reaches PGR 1.
        assert!(close(o.cpt(1.0), 0.5));
        assert!(close(o.cpt(0.5), 0.25));
        assert!(o.apgr() > 0.7);
        let r = Report::of("oracle", o);
        assert!(close(r.strong_share_no_drop, 0.5));
    }

    #[test]
    fn a_perfectly_wrong_router_scores_below_random() {
        let weak = [0.0, 0.0, 1.0, 1.0];
        let strong = [1.0, 1.0, 1.0, 1.0];
        let worst = Curve::of(&[0.0, 0.0, 1.0, 1.0], &weak, &strong);
        assert!(worst.apgr() < 0.5);
        // AIQ takes the hull: never below the straight line between the ends.
        assert!(worst.aiq() >= Curve::random(&weak, &strong).aiq() - 1e-9);
    }
}
