//! The cluster simulator: the routing core's placement
//! ([`switchback_routing::placement::joint`], [`switchback_routing::placement::choose`]) and
//! escalation step ([`switchback_routing::cascade::next`]), which the live router takes
//! too, driven by a
//! discrete-event model of tiers and workers, with arrivals drawn from real labelled data
//! so that every answer's quality is the real model's outcome on that prompt.
//!
//! The worker model is the `sim` engine's: a request takes `prefill_ms_per_token` per
//! prompt token, then `decode_ms_per_token` per output token, in one of the worker's
//! slots; requests beyond the slots wait in the worker's FIFO queue, and a worker whose
//! slots and queue are full is not sent more (as the live router does). One thing is not
//! in public data and is modelled there instead: each lower tier's confidence in its own
//! answer, drawn per prompt from two unit normals whose separation gives a chosen AUROC
//! between right and wrong answers (`confidence_auroc`). Labels from `label` carry the real
//! confidences, and the trace uses those.
//!
//! Any number of tiers, in rising cost: the policies place by the predictor's K-tier
//! decision ([`switchback_routing::difficulty::predictor::choose`]) and cascades climb one
//! tier at a time.

mod confidence;
mod engine;

pub use confidence::{fit_cascade_floors, modelled_confidence};
pub use engine::run;

use std::fmt::Write as _;

/// One tier of the simulated cluster.
#[derive(Debug, Clone)]
pub struct TierSpec {
    pub name: String,
    pub workers: u32,
    pub slots: u32,
    pub max_queue: u32,
    pub prefill_ms_per_token: f64,
    pub decode_ms_per_token: f64,
    /// $ per million tokens.
    pub price_in: f64,
    pub price_out: f64,
    /// Mean service time of the trace's requests on this tier (set by [`TierSpec::fit`]):
    /// what each queued request ahead costs in the joint decision's estimate.
    pub mean_service_s: f64,
}

impl TierSpec {
    /// Sets the mean service time from the trace.
    pub fn fit(&mut self, items: &[TraceItem]) {
        self.mean_service_s =
            items.iter().map(|i| self.service_s(i)).sum::<f64>() / items.len().max(1) as f64;
    }

    /// Seconds one slot takes for `item`: prefill and decode.
    pub fn service_s(&self, item: &TraceItem) -> f64 {
        (self.prefill_ms_per_token * f64::from(item.prompt_tokens)
            + self.decode_ms_per_token * f64::from(item.output_tokens))
            / 1000.0
    }

    fn first_token_s(&self, item: &TraceItem) -> f64 {
        (self.prefill_ms_per_token * f64::from(item.prompt_tokens) + self.decode_ms_per_token)
            / 1000.0
    }

    fn cost(&self, item: &TraceItem) -> f64 {
        (self.price_in * f64::from(item.prompt_tokens)
            + self.price_out * f64::from(item.output_tokens))
            / 1e6
    }
}

/// One prompt of the trace, with everything a policy may know and the real outcomes.
#[derive(Debug, Clone)]
pub struct TraceItem {
    /// The predictor's gap of each tier to the top tier (the top tier's is 0).
    pub gaps: Vec<f32>,
    /// Real outcome (score in [0, 1]) of each tier's model.
    pub score: Vec<f64>,
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    /// Each tier's confidence in its answer: real (from the labels) or modelled (see the
    /// module docs). The top tier's is never judged.
    pub confidence: Vec<f32>,
    /// Calibration split (fits the cascade's floor) or test split (the trace).
    pub calibration: bool,
}

/// The policies compared, each a way to place a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Every worker in turn, blind to tier and load.
    RoundRobin,
    /// The least loaded worker of any tier (load-only, like the Kubernetes inference
    /// gateway's endpoint picker).
    LeastQueue,
    /// The predictor's tier at the quality target, least-loaded worker within it
    /// (RouteLLM / Hybrid LLM threshold routing).
    Difficulty,
    /// Cheapest tier first; escalate answers below the confidence floor, one tier at a
    /// time (FrugalGPT-style).
    Cascade,
    /// Switchback: the joint decision over (tier, worker) with the quality range and the
    /// SLO as deadline.
    Joint,
    /// The joint decision plus escalation of unconfident answers while the next tier has
    /// idle slots.
    JointCascade,
}

impl Strategy {
    pub const ALL: [Strategy; 6] = [
        Strategy::RoundRobin,
        Strategy::LeastQueue,
        Strategy::Difficulty,
        Strategy::Cascade,
        Strategy::Joint,
        Strategy::JointCascade,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round-robin",
            Strategy::LeastQueue => "least-queue",
            Strategy::Difficulty => "difficulty-only",
            Strategy::Cascade => "cascade-only",
            Strategy::Joint => "switchback-joint",
            Strategy::JointCascade => "switchback-joint+cascade",
        }
    }
}

/// What one run is.
#[derive(Debug, Clone)]
pub struct Setup {
    /// In rising cost, at least two; the items' scores, gaps and confidences follow them.
    pub tiers: Vec<TierSpec>,
    /// Offered load as a fraction of [`capacity`].
    pub load: f64,
    pub requests: usize,
    /// End-to-end latency SLO, seconds.
    pub slo_s: f64,
    /// Quality target, as a fraction of always-top quality.
    pub quality: f64,
    /// The joint policy's headroom (policy `quality_margin`).
    pub margin: f64,
    /// The difficulty threshold at `quality` and at `quality + margin` (from the
    /// predictor's calibration table).
    pub threshold: f32,
    pub threshold_with_margin: f32,
    /// Cascade floor on each lower tier's confidence, fitted on calibration items.
    pub cascade_floors: Vec<f32>,
    pub seed: u64,
}

/// Requests per second the cluster completes with every slot busy, each tier serving a
/// representative sample of the trace.
pub fn capacity(tiers: &[TierSpec], items: &[TraceItem]) -> f64 {
    tiers
        .iter()
        .map(|t| {
            let mean = items.iter().map(|i| t.service_s(i)).sum::<f64>() / items.len() as f64;
            f64::from(t.workers * t.slots) / mean
        })
        .sum()
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub policy: &'static str,
    pub load: f64,
    pub requests: usize,
    pub rejected: usize,
    /// Mean real outcome of the answers returned, and as a fraction of always-top on the
    /// same requests.
    pub quality: f64,
    pub relative_quality: f64,
    /// $ per 1,000 requests, wasted escalated tokens included.
    pub cost_per_1k: f64,
    pub ttft_p50: f64,
    pub ttft_p99: f64,
    pub e2e_p50: f64,
    pub e2e_p99: f64,
    /// Requests per second (over the arrival span) answered within the SLO.
    pub goodput: f64,
    /// Correct answers per second within the SLO (score-weighted).
    pub quality_goodput: f64,
    /// Share of requests the top tier answered.
    pub top_share: f64,
    pub escalated_share: f64,
    /// Simulated seconds and the wall-clock seconds the run took.
    pub simulated_s: f64,
    pub wall_s: f64,
}

/// Reports as a Markdown table.
pub fn table(reports: &[Report]) -> String {
    let mut out = String::from(
        "| policy | load | quality (of always-top) | $ / 1k req | top-tier share | escalated | TTFT p50 / p99 (s) | e2e p50 / p99 (s) | goodput (req/s in SLO) | correct in SLO (/s) | rejected | wall (s) |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.3} ({:.1} %) | {:.3} | {:.1} % | {:.1} % | {:.2} / {:.2} | {:.2} / {:.2} | {:.1} | {:.1} | {} | {:.1} |",
            r.policy,
            r.load,
            r.quality,
            100.0 * r.relative_quality,
            r.cost_per_1k,
            100.0 * r.top_share,
            100.0 * r.escalated_share,
            r.ttft_p50,
            r.ttft_p99,
            r.e2e_p50,
            r.e2e_p99,
            r.goodput,
            r.quality_goodput,
            r.rejected,
            r.wall_s,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchback_routing::rng::Rng;

    fn tier(name: &str, workers: u32, decode: f64, price: f64) -> TierSpec {
        TierSpec {
            name: name.to_owned(),
            workers,
            slots: 4,
            max_queue: 64,
            prefill_ms_per_token: 0.1,
            decode_ms_per_token: decode,
            price_in: price,
            price_out: price,
            mean_service_s: 0.0,
        }
    }

    fn items(n: usize) -> Vec<TraceItem> {
        let mut rng = Rng::new(7);
        (0..n)
            .map(|i| {
                let hard = i % 3 == 0;
                let weak_right = !hard;
                TraceItem {
                    gaps: vec![if hard { 0.6 } else { -0.1 }, 0.0],
                    score: vec![f64::from(u8::from(weak_right)), 1.0],
                    prompt_tokens: 100,
                    output_tokens: 50,
                    confidence: vec![modelled_confidence(weak_right, 0.8, &mut rng), 0.0],
                    calibration: i % 10 == 2,
                }
            })
            .collect()
    }

    fn setup(load: f64) -> Setup {
        let mut tiers = vec![tier("small", 4, 10.0, 1.0), tier("large", 2, 40.0, 10.0)];
        let it = items(1000);
        for t in &mut tiers {
            t.fit(&it);
        }
        Setup {
            tiers,
            load,
            requests: 1000,
            slo_s: 5.0,
            quality: 0.95,
            margin: 0.0,
            threshold: 0.3,
            threshold_with_margin: 0.3,
            cascade_floors: fit_cascade_floors(&it, 0.9),
            seed: 1,
        }
    }

    /// Three tiers: a third of the prompts every tier answers, a third from the medium
    /// tier up, a third only the large tier; the predictor's gaps say so, and a wrong
    /// answer is unsure.
    fn three_tier_items(n: usize) -> Vec<TraceItem> {
        (0..n)
            .map(|i| {
                let (gaps, score): (Vec<f32>, Vec<f64>) = match i % 3 {
                    0 => (vec![0.0, 0.0, 0.0], vec![1.0, 1.0, 1.0]),
                    1 => (vec![0.8, 0.0, 0.0], vec![0.0, 1.0, 1.0]),
                    _ => (vec![0.9, 0.8, 0.0], vec![0.0, 0.0, 1.0]),
                };
                let confidence = score
                    .iter()
                    .map(|&s| if s > 0.5 { -0.1 } else { -3.0 })
                    .collect();
                TraceItem {
                    gaps,
                    score,
                    prompt_tokens: 100,
                    output_tokens: 50,
                    confidence,
                    calibration: i % 10 == 2,
                }
            })
            .collect()
    }

    #[test]
    fn three_tiers_each_serve_what_only_they_answer_and_cascades_climb_one_at_a_time() {
        let it = three_tier_items(900);
        let mut tiers = vec![
            tier("small", 4, 10.0, 1.0),
            tier("medium", 3, 20.0, 3.0),
            tier("large", 2, 40.0, 10.0),
        ];
        for t in &mut tiers {
            t.fit(&it);
        }
        let floors = fit_cascade_floors(&it, 1.0);
        assert_eq!(floors.len(), 2);
        assert!(floors.iter().all(|f| *f > -3.0 && *f < -0.1), "{floors:?}");
        let setup = Setup {
            tiers,
            load: 0.3,
            requests: 900,
            slo_s: 60.0,
            quality: 1.0,
            margin: 0.0,
            threshold: 0.3,
            threshold_with_margin: 0.3,
            cascade_floors: floors,
            seed: 1,
        };
        let trace: Vec<u32> = (0..900).collect();
        // Routing places each third on its cheapest right tier: always-top quality with a
        // third of the prompts on the top tier.
        let d = run(Strategy::Difficulty, &setup, &it, &trace);
        assert!((d.relative_quality - 1.0).abs() < 1e-9, "{d:?}");
        assert!((d.top_share - 1.0 / 3.0).abs() < 1e-9, "{d:?}");
        assert_eq!(d.escalated_share, 0.0);
        // The cascade starts everyone on small and climbs unsure answers: the same
        // quality, two thirds escalated, and it pays for the answers it threw away.
        let c = run(Strategy::Cascade, &setup, &it, &trace);
        assert!((c.relative_quality - 1.0).abs() < 1e-9, "{c:?}");
        assert!((c.top_share - 1.0 / 3.0).abs() < 1e-9, "{c:?}");
        assert!((c.escalated_share - 2.0 / 3.0).abs() < 1e-9, "{c:?}");
        assert!(c.cost_per_1k > d.cost_per_1k, "{c:?} {d:?}");
    }

    #[test]
    fn every_request_is_served_or_rejected_and_quality_is_the_real_outcome() {
        let it = items(1000);
        let trace: Vec<u32> = (0..1000).collect();
        for policy in Strategy::ALL {
            let r = run(policy, &setup(0.5), &it, &trace);
            assert_eq!(r.requests, 1000, "{}", r.policy);
            assert!(r.relative_quality <= 1.0 + 1e-9, "{}", r.policy);
            assert!(r.e2e_p50 > 0.0 && r.e2e_p99 >= r.e2e_p50, "{}", r.policy);
        }
        // Difficulty routing with a perfect gain sends exactly the hard third up and so
        // matches always-large quality.
        let d = run(Strategy::Difficulty, &setup(0.5), &it, &trace);
        assert!((d.relative_quality - 1.0).abs() < 1e-9);
        assert!((d.top_share - 1.0 / 3.0).abs() < 0.01);
    }

    #[test]
    fn cascade_floor_meets_the_target_on_calibration_items() {
        let it = items(2000);
        let floor = fit_cascade_floors(&it, 0.9)[0];
        let cal: Vec<_> = it.iter().filter(|i| i.calibration).collect();
        let q: f64 = cal
            .iter()
            .map(|i| {
                if i.confidence[0] < floor {
                    i.score[1]
                } else {
                    i.score[0]
                }
            })
            .sum::<f64>()
            / cal.iter().map(|i| i.score[1]).sum::<f64>();
        assert!(q >= 0.9, "{q}");
    }

    #[test]
    fn modelled_confidence_has_the_requested_auroc() {
        let mut rng = Rng::new(3);
        let right: Vec<f32> = (0..4000)
            .map(|_| modelled_confidence(true, 0.75, &mut rng))
            .collect();
        let wrong: Vec<f32> = (0..4000)
            .map(|_| modelled_confidence(false, 0.75, &mut rng))
            .collect();
        let mut wins = 0u64;
        for (a, b) in right.iter().zip(&wrong) {
            wins += u64::from(a > b);
        }
        let auroc = wins as f64 / 4000.0;
        assert!((auroc - 0.75).abs() < 0.03, "{auroc}");
    }

    #[test]
    fn same_seed_same_result() {
        let it = items(500);
        let trace: Vec<u32> = (0..500).collect();
        let a = run(Strategy::Joint, &setup(0.9), &it, &trace);
        let b = run(Strategy::Joint, &setup(0.9), &it, &trace);
        assert_eq!((a.e2e_p99, a.goodput), (b.e2e_p99, b.goodput));
    }
}
