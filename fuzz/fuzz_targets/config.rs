//! The three binaries' YAML config loaders: `RawConfig::from_yaml` then `validate()` of
//! the router, the controller and the worker, on the same text (each rejects the others'
//! keys, so one corpus of real configs serves all three). A config that validates must
//! hold the ranges `validate()` promises.
//!
//! The worker's loader is compiled from worker/src/config.rs itself (the `#[path]` module
//! below): the worker crate links mistral.rs, which this pure module does not need.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, clippy::all)]
#[path = "../../worker/src/config.rs"]
mod worker_config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    router(text);
    controller(text);
    worker(text);
});

fn router(text: &str) {
    use switchback_router::config::RawConfig;
    let Ok(c) = RawConfig::from_yaml(text).map(RawConfig::validate) else {
        return;
    };
    let Ok(c) = c else { return };
    assert!(c.tiers.contains(&c.default_tier), "default tier not a tier");
    assert!(c.max_body_bytes >= 1024);
    assert!(c.max_tokens_limit >= 1);
    assert!((1..=10).contains(&c.max_attempts));
    assert!(!c.request_timeout.is_zero() && !c.first_token_timeout.is_zero());
    assert!(c.admission_wait <= c.request_timeout);
    assert_eq!(c.policy.check(), Ok(()));
    if let Some(q) = c.difficulty.and_then(|d| d.default_quality) {
        assert!((0.0..=1.0).contains(&q));
    }
}

fn controller(text: &str) {
    use switchback_controller::config::RawConfig;
    let Ok(c) = RawConfig::from_yaml(text).map(RawConfig::validate) else {
        return;
    };
    let Ok(c) = c else { return };
    assert!((2..=300).contains(&c.lease_ttl_s));
    let ms = c.stale_after.as_millis();
    assert!((100..=600_000).contains(&ms));
}

fn worker(text: &str) {
    use worker_config::{EngineConfig, RawConfig};
    let Ok(c) = RawConfig::from_yaml(text).map(RawConfig::validate) else {
        return;
    };
    let Ok(c) = c else { return };
    for name in [&c.tier, &c.id] {
        assert!(
            (1..=128).contains(&name.len())
                && name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.')),
            "name {name:?} outside the safe alphabet"
        );
    }
    assert!(!c.model.trim().is_empty());
    assert!(c.max_concurrency >= 1);
    assert!((1..=c.max_tokens_limit).contains(&c.default_max_tokens));
    assert!(c.cost_per_mtok_input >= 0.0 && c.cost_per_mtok_output >= 0.0);
    assert!((2..=300).contains(&c.lease_ttl_s));
    let ms = c.load_report_interval.as_millis();
    assert!((10..=10_000).contains(&ms));
    if let EngineConfig::Sim(sim) = &c.engine {
        assert!((0.0..=60_000.0).contains(&sim.prefill_ms_per_token));
        assert!((0.0..=60_000.0).contains(&sim.decode_ms_per_token));
    }
}
