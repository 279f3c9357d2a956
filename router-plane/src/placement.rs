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
}

/// One worker as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<'a> {
    pub id: &'a str,
    pub tier: &'a str,
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
    pub fn outstanding(&self) -> u32 {
        self.running + self.waiting + self.local_in_flight
    }

    /// Every slot and queue place is taken, as far as this router can tell: sending more
    /// would only be refused.
    ///
    /// Reported load already includes this router's requests once the next report is in,
    /// so for this bound the two are not added up (that would refuse work the worker has
    /// room for); the larger one counts. The worker enforces its exact limit anyway.
    pub fn is_full(&self) -> bool {
        let known = (self.running + self.waiting).max(self.local_in_flight);
        self.max_queue > 0 && known >= self.capacity.max(1) + self.max_queue
    }

    fn load_per_slot(&self) -> f64 {
        f64::from(self.outstanding()) / f64::from(self.capacity.max(1))
    }

    fn matches(&self, target: Target<'_>) -> bool {
        match target {
            Target::Tier(t) => self.tier == t,
            Target::Model(m) => self.model == m,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn c<'a>(id: &'a str, tier: &'a str, running: u32, local: u32) -> Candidate<'a> {
        Candidate {
            id,
            tier,
            model: "m",
            ready: true,
            running,
            waiting: 0,
            capacity: 4,
            max_queue: 0,
            local_in_flight: local,
        }
    }

    #[test]
    fn full_workers_are_skipped_and_all_full_is_saturated() {
        let mut a = c("a", "small", 4, 6);
        a.max_queue = 2;
        let mut b = c("b", "small", 4, 0);
        b.max_queue = 2;
        assert!(a.is_full() && !b.is_full());
        let cs = [a.clone(), b.clone()];
        assert_eq!(
            cs[choose(&cs, Target::Tier("small"), 0).expect("worker").index].id,
            "b"
        );
        b.waiting = 2;
        assert_eq!(
            choose(&[a, b], Target::Tier("small"), 0),
            Err(NoWorker::Saturated)
        );
    }

    #[test]
    fn picks_least_loaded_in_tier() {
        let cs = [
            c("a", "small", 3, 0),
            c("b", "small", 1, 0),
            c("x", "large", 0, 0),
        ];
        let choice = choose(&cs, Target::Tier("small"), 0).expect("a worker");
        assert_eq!(cs[choice.index].id, "b");
        assert_eq!(choice.considered, 2);
    }

    #[test]
    fn counts_local_in_flight_on_top_of_reports() {
        let cs = [c("a", "small", 1, 0), c("b", "small", 0, 2)];
        assert_eq!(
            cs[choose(&cs, Target::Tier("small"), 0).expect("worker").index].id,
            "a"
        );
    }

    #[test]
    fn normalises_by_capacity() {
        let mut big = c("big", "small", 3, 0);
        big.capacity = 16;
        let cs = [c("a", "small", 1, 0), big];
        assert_eq!(
            cs[choose(&cs, Target::Tier("small"), 0).expect("worker").index].id,
            "big"
        );
    }

    #[test]
    fn skips_workers_that_are_not_ready() {
        let mut a = c("a", "small", 0, 0);
        a.ready = false;
        let cs = [a.clone(), c("b", "small", 9, 0)];
        assert_eq!(
            cs[choose(&cs, Target::Tier("small"), 0).expect("worker").index].id,
            "b"
        );
        assert_eq!(
            choose(&[a], Target::Tier("small"), 0),
            Err(NoWorker::NoneReady)
        );
        assert_eq!(
            choose(&cs, Target::Tier("large"), 0),
            Err(NoWorker::Unknown)
        );
    }

    #[test]
    fn model_targets_match_model_ids() {
        let mut q = c("q", "large", 0, 0);
        q.model = "qwen";
        let cs = [c("a", "small", 0, 0), q];
        assert_eq!(
            cs[choose(&cs, Target::Model("qwen"), 0).expect("worker").index].id,
            "q"
        );
    }

    #[test]
    fn rotation_spreads_ties() {
        let cs = [
            c("a", "small", 0, 0),
            c("b", "small", 0, 0),
            c("c", "small", 0, 0),
        ];
        let picked: std::collections::BTreeSet<_> = (0..3)
            .map(|r| cs[choose(&cs, Target::Tier("small"), r).expect("worker").index].id)
            .collect();
        assert_eq!(
            picked.len(),
            3,
            "each rotation picks a different idle worker"
        );
    }

    #[test]
    fn rotation_is_fair_among_the_target_whatever_else_is_in_the_view() {
        let mut cs: Vec<Candidate<'_>> = (0..8).map(|_| c("other", "large", 0, 0)).collect();
        cs.push(c("a", "small", 0, 0));
        cs.push(c("b", "small", 0, 0));
        let mut on_a = 0;
        for r in 0..100 {
            if cs[choose(&cs, Target::Tier("small"), r).expect("worker").index].id == "a" {
                on_a += 1;
            }
        }
        assert_eq!(on_a, 50);
    }

    #[test]
    fn never_picks_a_more_loaded_ready_worker() {
        // Exhaustive over small load combinations: the choice always has minimal load/slot.
        for ra in 0..4 {
            for rb in 0..4 {
                for la in 0..3 {
                    for rot in 0..3 {
                        let cs = [c("a", "t", ra, la), c("b", "t", rb, 0)];
                        let i = choose(&cs, Target::Tier("t"), rot).expect("worker").index;
                        let min = cs
                            .iter()
                            .map(Candidate::outstanding)
                            .min()
                            .expect("non-empty");
                        assert_eq!(cs[i].outstanding(), min);
                    }
                }
            }
        }
    }
}
