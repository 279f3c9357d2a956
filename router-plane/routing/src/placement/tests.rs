//! Property and unit tests of the placement core, over seeded random clusters.

use super::*;
use crate::rng::Rng;

fn c<'a>(id: &'a str, tier: &'a str, running: u32, local: u32) -> Candidate<'a> {
    Candidate {
        id,
        tier,
        node: id,
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
fn absurd_load_reports_saturate_instead_of_overflowing() {
    // Found by fuzz/fuzz_targets/grpc_messages.rs (corpus/grpc_messages/
    // regression-load-overflow): a worker reporting running + waiting past u32::MAX, or
    // a record with max_queue = u32::MAX, overflowed `is_full`.
    let mut a = c("a", "small", u32::MAX, 1);
    a.waiting = 7;
    a.max_queue = u32::MAX;
    assert_eq!(a.outstanding(), u32::MAX);
    assert!(a.is_full());
    let b = c("b", "small", 1, 0);
    let cs = [a, b];
    assert_eq!(
        cs[choose(&cs, Target::Tier("small"), 0).expect("worker").index].id,
        "b"
    );
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

fn tv(name: &str, service_s: f64) -> TierView<'_> {
    TierView {
        name,
        cost: service_s,
        success: None,
        service_s,
        first_token_s: service_s / 10.0,
        mean_service_s: service_s,
    }
}

fn ask(preferred: usize, floor: usize, deadline_s: Option<f64>) -> Ask {
    Ask {
        preferred,
        stretch: preferred,
        floor,
        ceiling: 2,
        deadline_s,
    }
}

const TIERS: [&str; 3] = ["small", "medium", "large"];

#[test]
fn joint_stays_on_the_preferred_tier_while_it_meets_the_deadline() {
    let tiers = [tv("small", 1.0), tv("large", 4.0)];
    let cs = [c("s", "small", 0, 0), c("l", "large", 0, 0)];
    let choice = joint(&tiers, &cs, &ask(0, 0, Some(2.0)), 0).expect("choice");
    assert_eq!((cs[choice.index].id, choice.moved), ("s", Move::Preferred));
    assert_eq!(choice.considered.len(), 2);
}

#[test]
fn joint_moves_up_when_the_preferred_tier_would_miss_the_deadline() {
    let tiers = [tv("small", 1.0), tv("large", 2.0)];
    // 12 outstanding on 4 slots: 9 ahead, 2.25 s of waiting plus 1 s of service.
    let cs = [c("s", "small", 4, 8), c("l", "large", 0, 0)];
    let choice = joint(&tiers, &cs, &ask(0, 0, Some(3.0)), 0).expect("choice");
    assert_eq!((cs[choice.index].id, choice.moved), ("l", Move::Up));
    assert!((choice.considered[0].estimate.wait_s - 2.25).abs() < 1e-9);
    assert!(!choice.considered[0].meets_deadline);
    // A roomier deadline keeps it where it is.
    let choice = joint(&tiers, &cs, &ask(0, 0, Some(3.5)), 0).expect("choice");
    assert_eq!(choice.moved, Move::Preferred);
}

#[test]
fn joint_takes_the_headroom_only_onto_a_free_slot() {
    let tiers = [tv("small", 1.0), tv("large", 2.0)];
    let stretch = Ask {
        stretch: 1,
        ..ask(0, 0, Some(10.0))
    };
    let cs = [c("s", "small", 0, 0), c("l", "large", 3, 0)];
    let choice = joint(&tiers, &cs, &stretch, 0).expect("choice");
    assert_eq!((cs[choice.index].id, choice.moved), ("l", Move::Stretch));
    // The large worker busy (every slot taken): the request keeps to its target.
    let cs = [c("s", "small", 0, 0), c("l", "large", 4, 0)];
    let choice = joint(&tiers, &cs, &stretch, 0).expect("choice");
    assert_eq!((cs[choice.index].id, choice.moved), ("s", Move::Preferred));
}

#[test]
fn joint_moves_down_only_to_the_floor() {
    let tiers = [tv("small", 1.0), tv("large", 4.0)];
    let cs = [c("s", "small", 0, 0), c("l", "large", 4, 12)];
    let choice = joint(&tiers, &cs, &ask(1, 0, Some(5.0)), 0).expect("choice");
    assert_eq!((cs[choice.index].id, choice.moved), ("s", Move::Down));
    // The floor is the preferred tier itself: late on the large tier, not cheap.
    let choice = joint(&tiers, &cs, &ask(1, 1, Some(5.0)), 0).expect("choice");
    assert_eq!((cs[choice.index].id, choice.moved), ("l", Move::BestEffort));
}

#[test]
fn joint_without_deadline_moves_up_from_a_full_tier_instead_of_queueing() {
    let tiers = [tv("small", 1.0), tv("large", 4.0)];
    let mut s = c("s", "small", 4, 0);
    s.max_queue = 2;
    s.waiting = 2;
    let cs = [s, c("l", "large", 3, 0)];
    let choice = joint(&tiers, &cs, &ask(0, 0, None), 0).expect("choice");
    assert_eq!((cs[choice.index].id, choice.moved), ("l", Move::Up));
    // Nothing above and nothing allowed below: saturated.
    let choice = joint(&tiers[..1], &cs, &ask(0, 0, None), 0);
    assert_eq!(choice, Err(NoWorker::Saturated));
}

#[test]
fn joint_errors_say_whether_workers_exist() {
    let tiers = [tv("small", 1.0)];
    assert_eq!(
        joint(&tiers, &[c("l", "large", 0, 0)], &ask(0, 0, None), 0),
        Err(NoWorker::Unknown)
    );
    let mut s = c("s", "small", 0, 0);
    s.ready = false;
    assert_eq!(
        joint(&tiers, &[s], &ask(0, 0, None), 0),
        Err(NoWorker::NoneReady)
    );
}

#[test]
fn joint_picks_the_worker_expected_to_finish_first_and_rotates_ties() {
    let tiers = [tv("small", 1.0)];
    let cs = [
        c("a", "small", 4, 4),
        c("b", "small", 0, 0),
        c("c", "small", 0, 0),
    ];
    let picked: std::collections::BTreeSet<_> = (0..4)
        .map(|r| cs[joint(&tiers, &cs, &ask(0, 0, None), r).expect("w").index].id)
        .collect();
    assert_eq!(picked.into_iter().collect::<Vec<_>>(), ["b", "c"]);
}

fn random_cluster(rng: &mut Rng) -> Vec<Candidate<'static>> {
    const IDS: [&str; 6] = ["w0", "w1", "w2", "w3", "w4", "w5"];
    (0..1 + rng.below(6) as usize)
        .map(|i| {
            let mut w = c(IDS[i], TIERS[rng.below(3) as usize], 0, 0);
            w.capacity = 1 + rng.below(4) as u32;
            w.running = rng.below(u64::from(w.capacity) + 1) as u32;
            w.waiting = rng.below(4) as u32;
            w.local_in_flight = rng.below(3) as u32;
            w.max_queue = rng.below(4) as u32;
            w.ready = rng.below(5) != 0;
            w
        })
        .collect()
}

#[test]
fn joint_never_picks_unready_or_full_workers_or_tiers_out_of_range() {
    let tiers = [tv("small", 1.0), tv("medium", 2.0), tv("large", 4.0)];
    let mut rng = Rng::new(0x5eed);
    for _ in 0..20_000 {
        let cs = random_cluster(&mut rng);
        let ceiling = rng.below(3) as usize;
        let preferred = rng.below(ceiling as u64 + 1) as usize;
        let floor = rng.below(preferred as u64 + 1) as usize;
        let deadline = [None, Some(1.5), Some(4.0), Some(100.0)][rng.below(4) as usize];
        let stretch = preferred + rng.below((ceiling - preferred) as u64 + 1) as usize;
        let a = Ask {
            preferred,
            stretch,
            floor,
            ceiling,
            deadline_s: deadline,
        };
        match joint(&tiers, &cs, &a, rng.below(7)) {
            Ok(choice) => {
                let w = &cs[choice.index];
                assert!(w.ready && !w.is_full(), "{w:?}");
                assert!((floor..=ceiling).contains(&choice.tier));
                assert_eq!(w.tier, TIERS[choice.tier]);
                if choice.moved == Move::Down {
                    assert!(choice.tier < preferred);
                }
                if choice.moved == Move::Stretch {
                    assert!(choice.tier > preferred && choice.tier <= stretch);
                    assert!(
                        w.outstanding() < w.capacity,
                        "stretch only onto a free slot"
                    );
                }
            }
            Err(_) => {
                // Refused only when no allowed worker could take it.
                assert!(
                    !cs.iter().any(|w| w.ready
                        && !w.is_full()
                        && TIERS[floor..=ceiling].contains(&w.tier))
                );
            }
        }
    }
}

#[test]
fn joint_is_monotone_in_the_quality_target() {
    // A higher target means a preferred tier and a floor at least as high; the chosen
    // tier must never fall, whatever the load and deadline.
    let tiers = [tv("small", 1.0), tv("medium", 2.0), tv("large", 4.0)];
    let mut rng = Rng::new(0xfeed);
    for _ in 0..20_000 {
        let cs = random_cluster(&mut rng);
        let deadline = [None, Some(1.5), Some(4.0)][rng.below(3) as usize];
        let p1 = rng.below(3) as usize;
        let f1 = rng.below(p1 as u64 + 1) as usize;
        let s1 = p1 + rng.below((3 - p1) as u64) as usize;
        let p2 = p1 + rng.below((3 - p1) as u64) as usize;
        let f2 = f1 + rng.below((p2 - f1) as u64 + 1) as usize;
        let s2 = s1.max(p2) + rng.below((3 - s1.max(p2)) as u64) as usize;
        let rot = rng.below(5);
        let low = joint(
            &tiers,
            &cs,
            &Ask {
                stretch: s1,
                ..ask(p1, f1, deadline)
            },
            rot,
        );
        let high = joint(
            &tiers,
            &cs,
            &Ask {
                stretch: s2,
                ..ask(p2, f2, deadline)
            },
            rot,
        );
        if let (Ok(l), Ok(h)) = (&low, &high) {
            assert!(
                l.tier <= h.tier,
                "({p1},{s1},{f1})→{} but ({p2},{s2},{f2})→{} in {cs:?}",
                l.tier,
                h.tier
            );
        }
    }
}
