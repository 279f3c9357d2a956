//! The discrete-event run of one policy over one trace: arrivals at the offered load,
//! placement by the router's own core, service in worker slots and FIFO queues, and
//! cascades judged by the router's own judgement.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
};

use switchback_routing::{
    cascade::{self, Confidence},
    difficulty::predictor,
    placement::{self, Ask, Candidate, Target, TierView},
    policy::{CascadePolicy, Floors},
    rng::Rng,
};

use super::{Report, Setup, Strategy, TraceItem, capacity};

#[derive(Debug, Clone, Copy)]
struct Request {
    item: u32,
    arrival: f64,
    /// When the answer the client gets started streaming, and finished.
    ttft: f64,
    done: f64,
    tier: u8,
    escalated: bool,
    rejected: bool,
    cost: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Arrival,
    /// A worker finished request `.1`.
    Done(u32, u32),
}

/// Nanosecond clock, so events order totally.
fn ns(s: f64) -> u64 {
    (s * 1e9).round() as u64
}

struct Worker {
    tier: usize,
    running: u32,
    queue: VecDeque<u32>,
}

/// Runs one policy over one trace. `trace` indexes into `items`.
pub fn run(policy: Strategy, setup: &Setup, items: &[TraceItem], trace: &[u32]) -> Report {
    let started = std::time::Instant::now();
    let tiers = &setup.tiers;
    let names: Vec<String> = tiers
        .iter()
        .flat_map(|t| (0..t.workers).map(move |i| format!("{}-{i}", t.name)))
        .collect();
    let mut workers: Vec<Worker> = tiers
        .iter()
        .enumerate()
        .flat_map(|(ti, t)| {
            (0..t.workers).map(move |_| Worker {
                tier: ti,
                running: 0,
                queue: VecDeque::new(),
            })
        })
        .collect();
    let mut candidates: Vec<Candidate<'_>> = workers
        .iter()
        .zip(&names)
        .map(|(w, id)| Candidate {
            id,
            tier: &tiers[w.tier].name,
            node: id,
            model: &tiers[w.tier].name,
            ready: true,
            running: 0,
            waiting: 0,
            capacity: tiers[w.tier].slots,
            max_queue: tiers[w.tier].max_queue,
            local_in_flight: 0,
        })
        .collect();
    let rate = setup.load * capacity(tiers, items);
    let mut rng = Rng::new(setup.seed);
    let mut requests: Vec<Request> = Vec::with_capacity(trace.len());
    let mut events: BinaryHeap<Reverse<(u64, u64, Event)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut now = 0.0f64;
    let mut rotation = 0u64;
    events.push(Reverse((0, 0, Event::Arrival)));
    let top = tiers.len() - 1;
    // The live router's cascade policy, with each lower tier's fitted floor.
    let cascade_policy = CascadePolicy {
        enabled: true,
        max_escalations: top as u32,
        per_tier: tiers
            .iter()
            .zip(&setup.cascade_floors)
            .map(|(t, &f)| {
                let floors = Floors {
                    min_mean_logprob: Some(f),
                    min_token_logprob: None,
                    min_first_margin: None,
                };
                (t.name.clone(), floors)
            })
            .collect(),
        ..CascadePolicy::default()
    };

    // Starts `r` on worker `w` now, or queues it.
    macro_rules! admit {
        ($w:expr, $r:expr) => {{
            let (w, r) = ($w, $r);
            let worker = &mut workers[w];
            if worker.running < tiers[worker.tier].slots {
                worker.running += 1;
                let item = &items[requests[r as usize].item as usize];
                let tier = &tiers[worker.tier];
                let req = &mut requests[r as usize];
                req.ttft = now + tier.first_token_s(item);
                seq += 1;
                events.push(Reverse((
                    ns(now + tier.service_s(item)),
                    seq,
                    Event::Done(w as u32, r),
                )));
            } else {
                worker.queue.push_back(r);
            }
            candidates[w].running = workers[w].running;
            candidates[w].waiting = workers[w].queue.len() as u32;
        }};
    }

    while let Some(Reverse((t, _, event))) = events.pop() {
        now = t as f64 / 1e9;
        match event {
            Event::Arrival => {
                let r = requests.len() as u32;
                let item_index = trace[r as usize];
                let item = &items[item_index as usize];
                requests.push(Request {
                    item: item_index,
                    arrival: now,
                    ttft: 0.0,
                    done: 0.0,
                    tier: 0,
                    escalated: false,
                    rejected: false,
                    cost: 0.0,
                });
                if requests.len() < trace.len() {
                    seq += 1;
                    let gap = -rng.unit().ln() / rate;
                    events.push(Reverse((ns(now + gap), seq, Event::Arrival)));
                }
                rotation += 1;
                let preferred = predictor::choose(&item.gaps, setup.threshold);
                let stretch =
                    predictor::choose(&item.gaps, setup.threshold_with_margin).max(preferred);
                let chosen = match policy {
                    Strategy::RoundRobin => {
                        let n = candidates.len();
                        (0..n)
                            .map(|k| (rotation as usize + k) % n)
                            .find(|&i| !candidates[i].is_full())
                    }
                    Strategy::LeastQueue => placement::choose(&candidates, Target::Any, rotation)
                        .ok()
                        .map(|c| c.index),
                    Strategy::Difficulty => placement::choose(
                        &candidates,
                        Target::Tier(&tiers[preferred].name),
                        rotation,
                    )
                    .ok()
                    .map(|c| c.index),
                    Strategy::Cascade => {
                        placement::choose(&candidates, Target::Tier(&tiers[0].name), rotation)
                            .ok()
                            .map(|c| c.index)
                    }
                    Strategy::Joint | Strategy::JointCascade => {
                        let views: Vec<TierView<'_>> = tiers
                            .iter()
                            .map(|t| TierView {
                                name: &t.name,
                                cost: t.cost(item),
                                success: None,
                                service_s: t.service_s(item),
                                first_token_s: t.first_token_s(item),
                                mean_service_s: t.mean_service_s,
                            })
                            .collect();
                        let ask = Ask {
                            preferred,
                            stretch,
                            floor: preferred,
                            ceiling: tiers.len() - 1,
                            deadline_s: Some(setup.slo_s),
                        };
                        placement::joint(&views, &candidates, &ask, rotation)
                            .ok()
                            .map(|c| c.index)
                    }
                };
                match chosen {
                    Some(w) => {
                        requests[r as usize].tier = workers[w].tier as u8;
                        admit!(w, r);
                    }
                    None => requests[r as usize].rejected = true,
                }
            }
            Event::Done(w, r) => {
                let w = w as usize;
                workers[w].running -= 1;
                if let Some(next) = workers[w].queue.pop_front() {
                    admit!(w, next);
                }
                candidates[w].running = workers[w].running;
                candidates[w].waiting = workers[w].queue.len() as u32;
                let tier = workers[w].tier;
                let item = &items[requests[r as usize].item as usize];
                requests[r as usize].cost += tiers[tier].cost(item);
                let judge = tier < top
                    && match policy {
                        Strategy::Cascade => true,
                        Strategy::JointCascade => candidates.iter().any(|c| {
                            c.tier == tiers[tier + 1].name && c.outstanding() < c.capacity
                        }),
                        _ => false,
                    };
                let escalate = judge && {
                    let confidence = Confidence {
                        tokens: item.output_tokens as usize,
                        mean_logprob: item.confidence[tier],
                        min_logprob: item.confidence[tier],
                        first_margin: None,
                    };
                    let answer = cascade::Answer::judged(Some(confidence));
                    cascade::next(&cascade_policy, &tiers[tier].name, &answer, false)
                        != cascade::Verdict::Keep
                };
                let up = escalate
                    .then(|| {
                        placement::choose(
                            &candidates,
                            Target::Tier(&tiers[tier + 1].name),
                            rotation,
                        )
                        .ok()
                    })
                    .flatten();
                match up {
                    Some(choice) => {
                        let req = &mut requests[r as usize];
                        req.escalated = true;
                        req.tier = (tier + 1) as u8;
                        admit!(choice.index, r);
                    }
                    None => requests[r as usize].done = now,
                }
            }
        }
    }
    summarise(
        policy,
        setup,
        items,
        &requests,
        now,
        started.elapsed().as_secs_f64(),
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summarise(
    policy: Strategy,
    setup: &Setup,
    items: &[TraceItem],
    requests: &[Request],
    end: f64,
    wall_s: f64,
) -> Report {
    let served: Vec<&Request> = requests.iter().filter(|r| !r.rejected).collect();
    let n = requests.len() as f64;
    let mut ttft: Vec<f64> = served.iter().map(|r| r.ttft - r.arrival).collect();
    let mut e2e: Vec<f64> = served.iter().map(|r| r.done - r.arrival).collect();
    ttft.sort_by(f64::total_cmp);
    e2e.sort_by(f64::total_cmp);
    let score = |r: &Request| items[r.item as usize].score[usize::from(r.tier)];
    let quality = served.iter().map(|r| score(r)).sum::<f64>() / n;
    let last = setup.tiers.len() - 1;
    let top = requests
        .iter()
        .map(|r| items[r.item as usize].score[last])
        .sum::<f64>()
        / n;
    let good: Vec<&&Request> = served
        .iter()
        .filter(|r| r.done - r.arrival <= setup.slo_s)
        .collect();
    // Rates are over the arrival span: the drain after the last arrival is not offered
    // load, and counting it would make short runs look slower than they are.
    let duration = requests.last().map_or(1e-9, |r| r.arrival).max(1e-9);
    Report {
        policy: policy.name(),
        load: setup.load,
        requests: requests.len(),
        rejected: requests.len() - served.len(),
        quality,
        relative_quality: quality / top,
        cost_per_1k: served.iter().map(|r| r.cost).sum::<f64>() / n * 1000.0,
        ttft_p50: percentile(&ttft, 0.5),
        ttft_p99: percentile(&ttft, 0.99),
        e2e_p50: percentile(&e2e, 0.5),
        e2e_p99: percentile(&e2e, 0.99),
        goodput: good.len() as f64 / duration,
        quality_goodput: good.iter().map(|r| score(r)).sum::<f64>() / duration,
        top_share: served
            .iter()
            .filter(|r| usize::from(r.tier) == last)
            .count() as f64
            / n,
        escalated_share: served.iter().filter(|r| r.escalated).count() as f64 / n,
        simulated_s: end,
        wall_s,
    }
}
