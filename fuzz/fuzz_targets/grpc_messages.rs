//! The gRPC messages a process takes from another: the cluster events a router receives
//! from the controller (`WatchCluster`) and the load reports a controller receives from
//! workers (`ReportLoad`). Each is decoded with prost and then used as the receiver uses
//! it: the router applies the event to its view and places requests on the result; the
//! controller takes the workers and reports into its view and sums the tiers for
//! `Status`.
//!
//! Invariants: an encoding of a decoded message decodes and re-encodes to the same bytes;
//! a placement picks a ready, not full worker of the asked tier; the tier summary counts
//! every registered worker once.

#![no_main]

use std::{collections::BTreeSet, time::Duration};

use libfuzzer_sys::fuzz_target;
use prost::Message;
use switchback_controller::view::ClusterView;
use switchback_proto::{WorkerRecord, pb};
use switchback_router::{
    placement::{self, Ask, Target, TierView},
    view::View,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = pb::ClusterEvent::decode(data) {
        round_trip(&event);
        if let Some(pb::cluster_event::Event::Snapshot(view)) = &event.event {
            controller(view.workers.clone(), None);
        }
        if let Some(event) = event.event {
            router(event);
        }
    }
    if let Ok(load) = pb::LoadReport::decode(data) {
        round_trip(&load);
        controller(Vec::new(), Some(load));
    }
});

fn round_trip<M: Message + Default>(m: &M) {
    let bytes = m.encode_to_vec();
    let again = M::decode(bytes.as_slice()).expect("own encoding decodes");
    assert_eq!(
        again.encode_to_vec(),
        bytes,
        "re-encoding changed the message"
    );
}

fn router(event: pb::cluster_event::Event) {
    let view = View::default();
    view.apply(event);
    let snapshot = view.snapshot();
    let candidates = snapshot.candidates(&[]);
    let tiers: BTreeSet<&str> = candidates.iter().map(|c| c.tier).collect();
    for (rotation, tier) in tiers.iter().enumerate() {
        let target = Target::Tier(tier);
        if let Ok(choice) = placement::choose(&candidates, target, rotation as u64) {
            let c = &candidates[choice.index];
            assert!(
                c.tier == *tier && c.ready && !c.is_full(),
                "bad choice {c:?}"
            );
            assert!(choice.considered <= candidates.len());
        }
        let _ = snapshot.tier_price(tier);
    }
    let _ = placement::choose(&candidates, Target::Any, 7);
    let views: Vec<TierView<'_>> = tiers
        .iter()
        .take(4)
        .map(|name| TierView {
            name,
            cost: 1.0,
            success: None,
            service_s: 2.0,
            first_token_s: 0.1,
            mean_service_s: 1.5,
        })
        .collect();
    if views.is_empty() {
        return;
    }
    let ask = Ask {
        preferred: 0,
        stretch: views.len() - 1,
        floor: 0,
        ceiling: views.len() - 1,
        deadline_s: Some(10.0),
    };
    if let Ok(choice) = placement::joint(&views, &candidates, &ask, 3) {
        let c = &candidates[choice.index];
        assert_eq!(c.tier, views[choice.tier].name, "joint chose across tiers");
        assert!(
            c.ready && !c.is_full(),
            "joint chose an unavailable worker {c:?}"
        );
    }
}

fn controller(workers: Vec<pb::WorkerState>, load: Option<pb::LoadReport>) {
    let view = ClusterView::new("fuzz".to_owned(), Duration::from_secs(2));
    view.set_leader(true);
    let mut registered = BTreeSet::new();
    for w in workers {
        if let Some(info) = w.info {
            // Records reach the controller only through `WorkerRecord::from_json`, which
            // refuses records without these.
            let record = WorkerRecord::from(info);
            if [&record.id, &record.address, &record.tier, &record.model]
                .iter()
                .all(|f| !f.is_empty())
            {
                registered.insert(record.id.clone());
                view.upsert(record);
            }
        }
        if let Some(load) = w.load {
            view.report(load);
        }
    }
    if let Some(load) = load {
        view.report(load);
    }
    view.sweep();
    let status = view.status();
    let counted: u32 = status
        .tiers
        .iter()
        .map(|t| t.workers_ready + t.workers_draining + t.workers_unreachable + t.workers_stale)
        .sum();
    assert_eq!(counted as usize, registered.len(), "tier summary miscounts");
}
