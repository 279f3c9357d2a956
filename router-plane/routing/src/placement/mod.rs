//! The placement core: from a snapshot of candidates, pick the worker for a request.
//! Pure (no I/O, no clock, no globals) so the live router, the evaluator and the
//! simulator share it.
//!
//! Within a tier the rule is "least outstanding work per slot": outstanding is the
//! worker's last reported running + waiting plus this router's own in-flight requests to
//! it (which the report may not include yet), divided by the worker's capacity. Ties are
//! broken by a caller-supplied rotation so equal workers share the work.

/// What the caller asked for in `model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// Any worker of this tier.
    Tier(&'a str),
    /// Any worker serving this model id.
    Model(&'a str),
    /// Any worker at all (load-only placement, as the simulator's baseline).
    Any,
}

/// One worker as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<'a> {
    pub id: &'a str,
    pub tier: &'a str,
    /// The machine it runs on: an escalation prefers another one.
    pub node: &'a str,
    pub model: &'a str,
    /// Ready: registered, reporting, not draining.
    pub ready: bool,
    pub running: u32,
    pub waiting: u32,
    pub capacity: u32,
    /// Requests the worker queues beyond `capacity` before refusing (0: unknown).
    pub max_queue: u32,
    /// This router's requests in flight to the worker.
    pub local_in_flight: u32,
}

impl Candidate<'_> {
    /// Saturates: `running` and `waiting` come from the worker's load report over the
    /// network, and an absurd report must not overflow (a panic in debug builds, a wrong
    /// placement in release; found by fuzz/fuzz_targets/grpc_messages.rs).
    pub fn outstanding(&self) -> u32 {
        self.running
            .saturating_add(self.waiting)
            .saturating_add(self.local_in_flight)
    }

    /// Every slot and queue place is taken, as far as this router can tell: sending more
    /// would only be refused.
    ///
    /// Reported load already includes this router's requests once the next report is in,
    /// so for this bound the two are not added up (that would refuse work the worker has
    /// room for); the larger one counts. The worker enforces its exact limit anyway.
    pub fn is_full(&self) -> bool {
        let known = self
            .running
            .saturating_add(self.waiting)
            .max(self.local_in_flight);
        self.max_queue > 0 && known >= self.capacity.max(1).saturating_add(self.max_queue)
    }

    fn load_per_slot(&self) -> f64 {
        f64::from(self.outstanding()) / f64::from(self.capacity.max(1))
    }

    fn matches(&self, target: Target<'_>) -> bool {
        match target {
            Target::Tier(t) => self.tier == t,
            Target::Model(m) => self.model == m,
            Target::Any => true,
        }
    }
}

/// Why no worker was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoWorker {
    /// No worker of the target exists at all.
    Unknown,
    /// Workers exist but none is ready.
    NoneReady,
    /// Ready workers exist but all of them are full (slots and queues).
    Saturated,
}

/// The chosen candidate's index and how many were considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub index: usize,
    pub considered: usize,
}

pub fn choose(
    candidates: &[Candidate<'_>],
    target: Target<'_>,
    rotation: u64,
) -> Result<Choice, NoWorker> {
    let matching: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].matches(target))
        .collect();
    if matching.is_empty() {
        return Err(NoWorker::Unknown);
    }
    let ready: Vec<usize> = matching
        .iter()
        .copied()
        .filter(|&i| candidates[i].ready)
        .collect();
    if ready.is_empty() {
        return Err(NoWorker::NoneReady);
    }
    let ready: Vec<usize> = ready
        .into_iter()
        .filter(|&i| !candidates[i].is_full())
        .collect();
    // Ties rotate over the positions of the ready candidates, so equal workers take turns
    // whatever else is in the view.
    let n = ready.len() as u64;
    let best = (0..ready.len())
        .min_by(|&a, &b| {
            let la = candidates[ready[a]].load_per_slot();
            let lb = candidates[ready[b]].load_per_slot();
            la.total_cmp(&lb)
                .then_with(|| ((a as u64 + rotation) % n).cmp(&((b as u64 + rotation) % n)))
        })
        .ok_or(NoWorker::Saturated)?;
    Ok(Choice {
        index: ready[best],
        considered: matching.len(),
    })
}

/// One tier as the joint decision sees it. [`joint`] takes them in rising cost order.
#[derive(Debug, Clone, PartialEq)]
pub struct TierView<'a> {
    pub name: &'a str,
    /// This request's cost on this tier (the tier's prices times the request's tokens).
    pub cost: f64,
    /// The predictor's probability that this tier answers acceptably, when known.
    pub success: Option<f32>,
    /// Seconds one slot of this tier takes for this request, prefill and decode.
    pub service_s: f64,
    /// Seconds to this request's first token on an idle slot (prefill).
    pub first_token_s: f64,
    /// Seconds one slot takes for a typical request of this tier: what each request
    /// queued ahead costs.
    pub mean_service_s: f64,
}

/// What the request allows, as tier indexes into the [`TierView`] list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ask {
    /// The cheapest tier that meets the request's quality target.
    pub preferred: usize,
    /// The tier the quality target plus the policy's headroom asks for (at least
    /// `preferred`): taken only while one of its workers has a free slot, so that idle
    /// expensive capacity buys quality and busy capacity is left to the requests that
    /// need it.
    pub stretch: usize,
    /// The cheapest tier the request may fall to when nothing at or above `preferred`
    /// meets the deadline (at most `preferred`; equal to it for a strict quality target).
    pub floor: usize,
    /// The most expensive tier the request may use (at least `stretch`).
    pub ceiling: usize,
    /// Seconds the client can wait for the whole answer, if it said.
    pub deadline_s: Option<f64>,
}

/// What a worker is expected to deliver for the request, from its queue and its tier's
/// speed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Until a slot is free for the request.
    pub wait_s: f64,
    pub ttft_s: f64,
    pub e2e_s: f64,
}

impl Estimate {
    /// A worker with `capacity` slots and `outstanding` requests starts a new one at once
    /// while a slot is free; otherwise after the requests ahead of it drain, `capacity`
    /// at a time, each taking the tier's mean service time.
    pub fn of(c: &Candidate<'_>, tier: &TierView<'_>) -> Self {
        let slots = f64::from(c.capacity.max(1));
        let ahead = (f64::from(c.outstanding()) + 1.0 - slots).max(0.0);
        let wait_s = ahead / slots * tier.mean_service_s;
        Self {
            wait_s,
            ttft_s: wait_s + tier.first_token_s,
            e2e_s: wait_s + tier.service_s,
        }
    }
}

/// Why the joint decision chose the tier it chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// A tier above the preferred one within the headroom, because it had a free slot.
    Stretch,
    /// The preferred tier, within the deadline (or with no deadline).
    Preferred,
    /// A more expensive tier, because the preferred one could not meet the deadline or
    /// was full; quality can only rise.
    Up,
    /// A cheaper tier that still meets the request's own quality target, because the
    /// preferred one could not meet the deadline or was full.
    Down,
    /// No allowed tier meets the deadline: the one expected to finish first.
    BestEffort,
}

impl serde::Serialize for Move {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Move {
    pub fn as_str(self) -> &'static str {
        match self {
            Move::Stretch => "stretch-idle",
            Move::Preferred => "preferred",
            Move::Up => "up-for-latency",
            Move::Down => "down-for-latency",
            Move::BestEffort => "best-effort",
        }
    }
}

/// A tier's best worker for the request, as the decision weighed it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Considered {
    pub tier: usize,
    /// Index into the candidates.
    pub index: usize,
    pub estimate: Estimate,
    pub meets_deadline: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JointChoice {
    /// Index into the candidates.
    pub index: usize,
    /// Index into the tiers.
    pub tier: usize,
    pub estimate: Estimate,
    pub moved: Move,
    /// The best available worker of every allowed tier, in tier order.
    pub considered: Vec<Considered>,
}

/// The joint decision over (tier, worker): one pure function of the request's quality
/// range and deadline, each tier's cost and speed, and each worker's live queue.
///
/// Rules, in order (a lexicographic score: quality first, then the deadline, then cost,
/// then wait):
/// 1. Only tiers in `floor..=ceiling` and workers that are ready and not full count.
/// 2. Within a tier, the worker expected to finish first (ties rotate).
/// 3. The highest tier in `preferred + 1..=stretch` whose best worker has a free slot and
///    meets the deadline (headroom on idle capacity only).
/// 4. The preferred tier if it meets the deadline; else the cheapest more expensive tier
///    that does (quality rises); else the most expensive cheaper tier down to `floor`
///    that does (quality stays within what the request allows).
/// 5. If none meets it: the allowed tier at or above `preferred` expected to finish
///    first, else the highest one below it — the request is served late rather than
///    refused. (Highest, not fastest, keeps the choice monotone in the quality target.)
/// 6. With no deadline, a tier meets it whenever it has an available worker, so a full
///    preferred tier moves the request up (then down) instead of queueing it.
pub fn joint(
    tiers: &[TierView<'_>],
    candidates: &[Candidate<'_>],
    ask: &Ask,
    rotation: u64,
) -> Result<JointChoice, NoWorker> {
    if tiers.is_empty() {
        return Err(NoWorker::Unknown);
    }
    let ceiling = ask.ceiling.min(tiers.len() - 1);
    let preferred = ask.preferred.min(ceiling);
    let stretch = ask.stretch.clamp(preferred, ceiling);
    let floor = ask.floor.min(preferred);
    // Two passes over the candidates and no per-candidate allocation: the simulator calls
    // this a million times over a thousand workers.
    let tier_of = |c: &Candidate<'_>| (floor..=ceiling).find(|&t| tiers[t].name == c.tier);
    let n = tiers.len();
    let (mut any, mut any_ready) = (false, false);
    let mut best: Vec<Option<(f64, f64)>> = vec![None; n];
    let mut available = vec![0u64; n];
    for c in candidates {
        let Some(t) = tier_of(c) else { continue };
        any = true;
        if !c.ready {
            continue;
        }
        any_ready = true;
        if c.is_full() {
            continue;
        }
        available[t] += 1;
        let key = (Estimate::of(c, &tiers[t]).e2e_s, c.load_per_slot());
        if best[t].is_none_or(|b| key.0.total_cmp(&b.0).then(key.1.total_cmp(&b.1)).is_lt()) {
            best[t] = Some(key);
        }
    }
    // Ties rotate over the positions of the tier's available workers.
    let mut position = vec![0u64; n];
    let mut winner: Vec<Option<(u64, usize)>> = vec![None; n];
    for (i, c) in candidates.iter().enumerate() {
        let Some(t) = tier_of(c) else { continue };
        if !c.ready || c.is_full() {
            continue;
        }
        let pos = position[t];
        position[t] += 1;
        let key = (Estimate::of(c, &tiers[t]).e2e_s, c.load_per_slot());
        if best[t] != Some(key) {
            continue;
        }
        let turn = (pos + rotation) % available[t];
        if winner[t].is_none_or(|(w, _)| turn < w) {
            winner[t] = Some((turn, i));
        }
    }
    let considered: Vec<Considered> = (floor..=ceiling)
        .filter_map(|t| {
            let (_, index) = winner[t]?;
            let estimate = Estimate::of(&candidates[index], &tiers[t]);
            Some(Considered {
                tier: t,
                index,
                estimate,
                meets_deadline: ask.deadline_s.is_none_or(|d| estimate.e2e_s <= d),
            })
        })
        .collect();
    let at = |t: usize| considered.iter().find(|c| c.tier == t);
    let idle = (preferred + 1..=stretch)
        .rev()
        .filter_map(at)
        .find(|c| c.meets_deadline && c.estimate.wait_s == 0.0);
    if let Some(c) = idle {
        return Ok(JointChoice {
            index: c.index,
            tier: c.tier,
            estimate: c.estimate,
            moved: Move::Stretch,
            considered: considered.clone(),
        });
    }
    let order = std::iter::once(preferred)
        .chain(preferred + 1..=ceiling)
        .chain((floor..preferred).rev());
    let mut pick = None;
    for t in order {
        if let Some(c) = at(t).filter(|c| c.meets_deadline) {
            let moved = match t.cmp(&preferred) {
                std::cmp::Ordering::Equal => Move::Preferred,
                std::cmp::Ordering::Greater => Move::Up,
                std::cmp::Ordering::Less => Move::Down,
            };
            pick = Some((*c, moved));
            break;
        }
    }
    if pick.is_none() {
        let soonest = |range: std::ops::RangeInclusive<usize>| {
            considered
                .iter()
                .filter(|c| range.contains(&c.tier))
                .min_by(|a, b| a.estimate.e2e_s.total_cmp(&b.estimate.e2e_s))
                .copied()
        };
        // Below the preferred tier the highest available one, not the fastest: a higher
        // quality target must never end on a cheaper tier than a lower one would.
        pick = soonest(preferred..=ceiling)
            .or_else(|| {
                considered
                    .iter()
                    .rev()
                    .find(|c| c.tier < preferred)
                    .copied()
            })
            .map(|c| (c, Move::BestEffort));
    }
    match pick {
        Some((c, moved)) => Ok(JointChoice {
            index: c.index,
            tier: c.tier,
            estimate: c.estimate,
            moved,
            considered,
        }),
        None if !any => Err(NoWorker::Unknown),
        None if !any_ready => Err(NoWorker::NoneReady),
        None => Err(NoWorker::Saturated),
    }
}

#[cfg(test)]
mod tests;
