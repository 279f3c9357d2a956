//! The router's API keys file (`switchback_router::auth::keys::parse`), read from a
//! Kubernetes Secret and re-read every 2 s: whatever an operator (or a half-written file)
//! puts there must be a clear error or a key set that keeps the promises the gate relies on.

#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use switchback_router::auth::keys;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let tiers = ["small", "medium", "large"].map(String::from);
    let Ok(parsed) = keys::parse(text, &tiers) else {
        return;
    };
    let mut ids = HashSet::new();
    let mut digests = HashSet::new();
    for k in &parsed {
        // Ids become log fields and metric labels: short, and nothing that needs escaping.
        assert!((1..=64).contains(&k.id.len()), "id length {}", k.id.len());
        assert!(
            k.id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
            "id {:?}",
            k.id
        );
        assert!(ids.insert(k.id.clone()), "duplicate id {:?}", k.id);
        assert!(digests.insert(k.digest), "duplicate digest");
        if let Some((lo, hi)) = k.tiers {
            assert!(lo <= hi && hi < tiers.len(), "tiers {lo}..={hi}");
            if let Some(c) = k.ceiling {
                assert!((lo..=hi).contains(&c), "ceiling {c} outside {lo}..={hi}");
            }
        }
        assert!(k.ceiling.is_none_or(|c| c < tiers.len()), "ceiling");
        assert_ne!(k.requests_per_minute, Some(0), "zero requests_per_minute");
        assert_ne!(k.tokens_per_minute, Some(0), "zero tokens_per_minute");
        assert!(
            k.default_quality.is_none_or(|q| (0.0..=1.0).contains(&q)),
            "default_quality {:?}",
            k.default_quality
        );
    }
});
