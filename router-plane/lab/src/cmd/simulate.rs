//! `simulate`: builds the trace from labelled data and the predictor,
//! sizes the cluster, runs every strategy at the headline load and over a load sweep, and
//! writes the tables, a JSON report and two SVG plots.

use std::{fmt::Write as _, path::PathBuf};

use switchback_routing::{difficulty::predictor, rng::Rng};

use super::args::EncoderArgs;
use crate::{
    Error, artifact,
    data::{self, Split},
    error::{create_dir, write},
    plot::{Plot, Series, Style},
    simulate::{self, Report, Setup, Strategy, TierSpec, TraceItem},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Labelled JSONL (from `import` or `label`); items need scores of every one of the
    /// predictor's tier models.
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    #[arg(long)]
    pub predictor: PathBuf,
    #[command(flatten)]
    pub encoder: EncoderArgs,
    /// Workers in the cluster, all tiers together.
    #[arg(long, default_value_t = 1000)]
    pub workers: u32,
    /// Requests at the headline load.
    #[arg(long, default_value_t = 1_000_000)]
    pub requests: usize,
    /// Headline offered load, as a fraction of capacity.
    #[arg(long, default_value_t = 0.9)]
    pub load: f64,
    /// Loads of the goodput-vs-load sweep (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0.5,0.7,0.8,0.9,1.0,1.1")]
    pub sweep: Vec<f64>,
    /// Skip the sweep.
    #[arg(long)]
    pub no_sweep: bool,
    /// Requests per sweep point.
    #[arg(long, default_value_t = 100_000)]
    pub sweep_requests: usize,
    /// Quality target, as a fraction of always-top quality.
    #[arg(long, default_value_t = 0.95)]
    pub quality: f64,
    /// The quality target the cluster was sized for (default: --quality). Setting it apart
    /// from --quality models a traffic mix that moved since the operator provisioned.
    #[arg(long)]
    pub size_quality: Option<f64>,
    /// The joint policy's headroom above the target (policy `quality_margin`).
    #[arg(long, default_value_t = 0.02)]
    pub margin: f64,
    /// End-to-end SLO in seconds; default: 3 × the top tier's mean service time.
    #[arg(long)]
    pub slo_s: Option<f64>,
    /// Slots per worker.
    #[arg(long, default_value_t = 8)]
    pub slots: u32,
    /// Queue places per worker beyond its slots.
    #[arg(long, default_value_t = 64)]
    pub max_queue: u32,
    /// Per-token times (ms) of each tier, cheapest first, one flag per tier:
    /// PREFILL,DECODE. Default for two tiers: 0.2,10 and 0.6,30.
    #[arg(long = "tier-ms")]
    pub tier_ms: Vec<String>,
    /// Prices of each tier ($ per million tokens), cheapest first, one flag per tier:
    /// IN,OUT. Default for two tiers: 0.02,0.04 and 0.10,0.20.
    #[arg(long = "tier-price")]
    pub tier_price: Vec<String>,
    /// Mean output tokens per answer (log-normal spread per prompt).
    #[arg(long, default_value_t = 128)]
    pub output_tokens: u32,
    /// AUROC of each lower tier's confidence between its right and wrong answers, where
    /// the labels carry no confidence of their own (public data has no log-probabilities;
    /// labels from `label` do, and those are used).
    #[arg(long, default_value_t = 0.75)]
    pub confidence_auroc: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where the report (results.md, results.json) and plots go.
    #[arg(long)]
    pub out_dir: PathBuf,
}

/// `A,B` pairs of non-negative numbers, one per tier; `defaults` for two tiers.
fn pairs(
    given: &[String],
    tiers: usize,
    defaults: [(f64, f64); 2],
    flag: &str,
) -> Result<Vec<(f64, f64)>, Error> {
    if given.is_empty() && tiers == 2 {
        return Ok(defaults.to_vec());
    }
    if given.len() != tiers {
        return Err(Error::usage(format!(
            "{flag}: give one per tier, cheapest first ({tiers} tiers, {} given)",
            given.len()
        )));
    }
    given
        .iter()
        .map(|g| {
            let parsed = g.split_once(',').and_then(|(a, b)| {
                Some((a.trim().parse::<f64>().ok()?, b.trim().parse::<f64>().ok()?))
            });
            match parsed {
                Some((a, b)) if a >= 0.0 && b >= 0.0 => Ok((a, b)),
                _ => Err(Error::usage(format!(
                    "{flag} {g:?}: two non-negative numbers, e.g. 0.2,10"
                ))),
            }
        })
        .collect()
}

pub fn run(a: Args) -> Result<(), Error> {
    if !(0.0..=1.0).contains(&a.quality) || a.workers < 2 || a.requests == 0 {
        return Err(Error::usage(
            "--quality must be in [0, 1], --workers at least 2, --requests at least 1",
        ));
    }
    let predictor = artifact::load_predictor(&a.predictor, a.encoder.encoder()?)?;
    let models: Vec<String> = predictor.heads.iter().map(|h| h.model.clone()).collect();
    let names: Vec<String> = predictor.tiers().map(str::to_owned).collect();
    let k = models.len();
    let ms = pairs(&a.tier_ms, k, [(0.2, 10.0), (0.6, 30.0)], "--tier-ms")?;
    let price = pairs(
        &a.tier_price,
        k,
        [(0.02, 0.04), (0.10, 0.20)],
        "--tier-price",
    )?;
    let mut rng = Rng::new(a.seed);
    let started = std::time::Instant::now();
    let labelled: Vec<data::Item> = {
        let mut all = Vec::new();
        for path in &a.data {
            all.extend(
                data::read_jsonl(path)?
                    .into_iter()
                    .filter(|i| models.iter().all(|m| i.scores.contains_key(m)))
                    .filter(|i| data::split_of(&i.prompt) != Split::Train),
            );
        }
        all
    };
    // A tier's confidences are the labels' own when every item has one, else modelled.
    let real: Vec<bool> = models
        .iter()
        .map(|m| {
            !labelled.is_empty()
                && labelled
                    .iter()
                    .all(|i| i.confidence.get(m).is_some_and(|c| c.is_finite()))
        })
        .collect();
    let mut items: Vec<TraceItem> = Vec::new();
    for item in &labelled {
        let x = predictor.features(&item.prompt);
        let p = predictor.probabilities(&x);
        let out = f64::from(a.output_tokens) * (0.5 * rng.normal() - 0.125).exp();
        let score: Vec<f64> = models.iter().map(|m| item.scores[m]).collect();
        // The top tier's answer is never judged, so it needs no confidence.
        let confidence = (0..k)
            .map(|t| {
                if t + 1 == k {
                    0.0
                } else if real[t] {
                    item.confidence[&models[t]] as f32
                } else {
                    simulate::modelled_confidence(score[t] >= 0.5, a.confidence_auroc, &mut rng)
                }
            })
            .collect();
        items.push(TraceItem {
            gaps: predictor.gaps(&x, &p),
            score,
            prompt_tokens: u32::try_from(item.prompt.len().div_ceil(4))
                .unwrap_or(u32::MAX)
                .max(1),
            output_tokens: (out.round() as u32).clamp(1, 4096),
            confidence,
            calibration: data::split_of(&item.prompt) == Split::Calibration,
        });
    }
    let test: Vec<u32> = (0..items.len() as u32)
        .filter(|&i| !items[i as usize].calibration)
        .collect();
    if test.is_empty() {
        return Err(Error::usage(
            "no test-split items with every tier's score in --data",
        ));
    }
    eprintln!(
        "trace: {} test + {} calibration items, predicted in {:.1} s",
        test.len(),
        items.len() - test.len(),
        started.elapsed().as_secs_f64()
    );

    let spec = |t: usize, workers| TierSpec {
        name: names[t].clone(),
        workers,
        slots: a.slots,
        max_queue: a.max_queue,
        prefill_ms_per_token: ms[t].0,
        decode_ms_per_token: ms[t].1,
        price_in: price[t].0,
        price_out: price[t].1,
        mean_service_s: 0.0,
    };
    let threshold = predictor.threshold(a.quality as f32);
    let sizing_threshold = predictor.threshold(a.size_quality.unwrap_or(a.quality) as f32);
    let threshold_with_margin = predictor.threshold((a.quality + a.margin).min(1.0) as f32);
    // The cluster is sized for difficulty-only routing at the target: each tier gets
    // workers in proportion to the work that routing sends it (the operator provisions
    // for the mix; the most favourable cluster for the difficulty-only baseline), at
    // least one each.
    let probes: Vec<TierSpec> = (0..k).map(|t| spec(t, 1)).collect();
    let mut work = vec![0.0f64; k];
    for i in test.iter().map(|&i| &items[i as usize]) {
        let t = predictor::choose(&i.gaps, sizing_threshold);
        work[t] += probes[t].service_s(i);
    }
    let total: f64 = work.iter().sum::<f64>().max(1e-300);
    let mut counts: Vec<u32> = work
        .iter()
        .map(|w| ((f64::from(a.workers) * w / total).round() as u32).max(1))
        .collect();
    // Rounding and the minimum of one each: settle the difference on the busiest tier.
    let busiest = (0..k)
        .max_by(|&x, &y| work[x].total_cmp(&work[y]))
        .unwrap_or(0);
    let others: u32 = counts.iter().sum::<u32>() - counts[busiest];
    counts[busiest] = a.workers.saturating_sub(others).max(1);
    if counts.iter().sum::<u32>() != a.workers {
        return Err(Error::usage(format!(
            "--workers {}: too few for {k} tiers",
            a.workers
        )));
    }
    let mut tiers: Vec<TierSpec> = (0..k).map(|t| spec(t, counts[t])).collect();
    tiers.iter_mut().for_each(|t| t.fit(&items));
    let slo_s = a.slo_s.unwrap_or(3.0 * tiers[k - 1].mean_service_s);
    let cascade_floors = simulate::fit_cascade_floors(&items, a.quality);
    let setup = |load: f64, requests: usize| Setup {
        tiers: tiers.clone(),
        load,
        requests,
        slo_s,
        quality: a.quality,
        margin: a.margin,
        threshold,
        threshold_with_margin,
        cascade_floors: cascade_floors.clone(),
        seed: a.seed,
    };
    let trace_of = |n: usize, seed: u64| -> Vec<u32> {
        let mut r = Rng::new(seed);
        (0..n)
            .map(|_| test[(r.next_u64() % test.len() as u64) as usize])
            .collect()
    };

    let headline = setup(a.load, a.requests);
    let trace = trace_of(a.requests, a.seed ^ 0x7ace);
    let mut reports = Vec::new();
    for strategy in Strategy::ALL {
        let r = simulate::run(strategy, &headline, &items, &trace);
        eprintln!("{} at load {}: {:.1} s wall", r.policy, r.load, r.wall_s);
        reports.push(r);
    }
    let mut sweep = Vec::new();
    if !a.no_sweep {
        let trace = trace_of(a.sweep_requests, a.seed ^ 0x5eef);
        for &load in &a.sweep {
            for strategy in Strategy::ALL {
                sweep.push(simulate::run(
                    strategy,
                    &setup(load, a.sweep_requests),
                    &items,
                    &trace,
                ));
            }
        }
    }

    create_dir(&a.out_dir)?;
    let mut md = String::new();
    let per_tier = tiers
        .iter()
        .map(|t| {
            format!(
                "{} {} workers, {} / {} ms per prompt / output token, {}/{} $ per Mtok in/out",
                t.name,
                t.workers,
                t.prefill_ms_per_token,
                t.decode_ms_per_token,
                t.price_in,
                t.price_out
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let floors = cascade_floors
        .iter()
        .zip(&names)
        .zip(&real)
        .map(|((f, n), real)| {
            format!(
                "{n} {f:.3} ({})",
                if *real {
                    "on its labels' confidence".to_owned()
                } else {
                    format!("on a modelled confidence with AUROC {}", a.confidence_auroc)
                }
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        md,
        "Cluster: {} workers ({per_tier}; {} slots and {} queue places each); capacity {:.0} req/s; SLO {:.2} s end to end; quality target {} (sized for {}; the joint policy takes +{} headroom onto free slots); cascade floors {floors}; trace: {} test items of {}.\n",
        a.workers,
        a.slots,
        a.max_queue,
        simulate::capacity(&tiers, &items),
        slo_s,
        a.quality,
        a.size_quality.unwrap_or(a.quality),
        a.margin,
        test.len(),
        a.data
            .iter()
            .map(|p| p
                .file_name()
                .map_or_else(String::new, |f| f.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(md, "Headline: load {}, {} requests.\n", a.load, a.requests);
    md.push_str(&simulate::table(&reports));
    if !sweep.is_empty() {
        let _ = writeln!(
            md,
            "\nLoad sweep ({} requests per point):\n",
            a.sweep_requests
        );
        md.push_str(&simulate::table(&sweep));
    }
    write(&a.out_dir.join("results.md"), &md)?;
    let json = serde_json::json!({
        "headline": reports.iter().map(report_json).collect::<Vec<_>>(),
        "sweep": sweep.iter().map(report_json).collect::<Vec<_>>(),
        "slo_s": slo_s,
        "workers": tiers.iter().map(|t| (t.name.clone(), serde_json::json!(t.workers))).collect::<serde_json::Map<_, _>>(),
    });
    // A tree of strings and numbers: it serialises.
    let pretty = serde_json::to_string_pretty(&json).unwrap_or_default();
    write(&a.out_dir.join("results.json"), pretty)?;
    write(
        &a.out_dir.join("quality-cost.svg"),
        quality_cost(&reports).svg(),
    )?;
    if !sweep.is_empty() {
        write(&a.out_dir.join("goodput-load.svg"), goodput(&sweep).svg())?;
    }
    print!("{md}");
    Ok(())
}

fn report_json(r: &Report) -> serde_json::Value {
    serde_json::json!({
        "policy": r.policy, "load": r.load, "requests": r.requests, "rejected": r.rejected,
        "quality": r.quality, "relative_quality": r.relative_quality, "cost_per_1k": r.cost_per_1k,
        "ttft_p50_s": r.ttft_p50, "ttft_p99_s": r.ttft_p99, "e2e_p50_s": r.e2e_p50, "e2e_p99_s": r.e2e_p99,
        "goodput_rps": r.goodput, "correct_in_slo_rps": r.quality_goodput,
        "top_share": r.top_share, "escalated_share": r.escalated_share,
        "simulated_s": r.simulated_s, "wall_s": r.wall_s,
    })
}

/// Each policy's quality against its cost at the headline load, one dot each.
fn quality_cost(reports: &[Report]) -> Plot {
    Plot {
        title: "Quality vs cost at the headline load".into(),
        x_label: "$ per 1,000 requests".into(),
        y_label: "quality (of always-top)".into(),
        series: reports
            .iter()
            .map(|r| {
                Series::new(
                    r.policy,
                    vec![(r.cost_per_1k, r.relative_quality)],
                    Style::Points,
                )
            })
            .collect(),
        marks: Vec::new(),
    }
}

/// Each policy's goodput under the SLO over the load sweep, one line each.
fn goodput(sweep: &[Report]) -> Plot {
    Plot {
        title: "Goodput under the SLO vs offered load".into(),
        x_label: "offered load (of capacity)".into(),
        y_label: "requests/s within the SLO".into(),
        series: Strategy::ALL
            .iter()
            .map(|s| {
                let mut points: Vec<(f64, f64)> = sweep
                    .iter()
                    .filter(|r| r.policy == s.name())
                    .map(|r| (r.load, r.goodput))
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series::new(s.name(), points, Style::LinePoints)
            })
            .collect(),
        marks: Vec::new(),
    }
}
