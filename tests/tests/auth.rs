//! API keys at the router's front door, end to end: real etcd, controller, `sim` workers
//! and the router binary reading a keys file. 401 without a valid key, 403 for what a key
//! may not use, `max_tier` capping `auto`, 429 with a computed Retry-After for each
//! per-minute limit, key rotation and a broken file, and the key id in /metrics.

use std::{path::Path, time::Duration};

use serde_json::json;
use switchback_tests::{Controller, Etcd, Router, Worker, WorkerSpec, http, wait_for};

/// sha256 of a token, as the keys file holds it.
fn sha256_hex(token: &str) -> String {
    use switchback_router::auth::keys;
    keys::to_hex(&keys::digest(token))
}

/// Replaces the keys file in one step (write + rename), as a Secret update does.
fn write_keys(path: &Path, yaml: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, yaml).expect("write keys");
    std::fs::rename(&tmp, path).expect("rename keys");
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn chat(router: &Router, token: Option<&str>, body: serde_json::Value) -> http::Reply {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    http::post_json_with(&router.url("/v1/chat/completions"), &body, &headers).await
}

fn hi(model: &str, max_tokens: u32) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens})
}

fn assert_401(reply: &http::Reply) {
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    let body = reply.json();
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(e["type"], "invalid_request_error", "{body}");
    assert_eq!(e["code"], "invalid_api_key", "{body}");
    assert!(e.get("param").is_some_and(|p| p.is_null()), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_gate_limit_and_rotate() {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let _small = Worker::start(&etcd, WorkerSpec::sim("s-0", "small", "sim-s", 1.0)).await;
    let _large = Worker::start(&etcd, WorkerSpec::sim("l-0", "large", "sim-l", 1.0)).await;
    for w in ["s-0", "l-0"] {
        controller.wait_ready(w, Duration::from_secs(20)).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys.yaml");
    let (full, capped, rpm, tpm) = (
        "sb-full-token",
        "sb-capped-token",
        "sb-rpm-token",
        "sb-tpm-token",
    );
    write_keys(
        &keys,
        &format!(
            "keys:\n  - {{id: full, sha256: {}}}\n  - {{id: capped, sha256: {}, max_tier: small, models: [sim-s]}}\n  - {{id: rpm, sha256: {}, requests_per_minute: 1}}\n  - {{id: tpm, sha256: {}, tokens_per_minute: 100}}\n",
            sha256_hex(full),
            sha256_hex(capped),
            sha256_hex(rpm),
            sha256_hex(tpm)
        ),
    );
    // `auto` means the large tier here, so a key's max_tier visibly caps it.
    let router =
        Router::start_with_keys(&etcd, "tiers: [small, large]\ndefault_tier: large", &keys).await;
    // /healthz, /readyz and /metrics stay open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            http::get_with(&router.url(path), &[]).await.status,
            200,
            "{path}"
        );
    }
    let full_auth = bearer(full);
    wait_for(
        "the router to list sim-l",
        Duration::from_secs(30),
        || async {
            let r =
                http::get_with(&router.url("/v1/models"), &[("authorization", &full_auth)]).await;
            r.body.contains("sim-l").then_some(())
        },
    )
    .await;

    // 401: no key, an unknown key, a malformed header; also on /v1/models.
    assert_401(&chat(&router, None, hi("small", 2)).await);
    assert_401(&chat(&router, Some("sb-not-a-key"), hi("small", 2)).await);
    let basic = http::post_json_with(
        &router.url("/v1/chat/completions"),
        &hi("small", 2),
        &[("authorization", "Basic c2I6c2I=")],
    )
    .await;
    assert_401(&basic);
    assert_401(&http::get_with(&router.url("/v1/models"), &[]).await);

    // 200 with a good key; `auto` goes to the large tier for an unrestricted key.
    let ok = chat(&router, Some(full), hi("auto", 2)).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.header("x-switchback-tier"), Some("large"));

    // The capped key: `auto` stays at its max_tier, and naming more is 403.
    let capped_auto = chat(&router, Some(capped), hi("auto", 2)).await;
    assert_eq!(capped_auto.status, 200, "{}", capped_auto.body);
    assert_eq!(capped_auto.header("x-switchback-tier"), Some("small"));
    for model in ["large", "sim-l"] {
        let reply = chat(&router, Some(capped), hi(model, 2)).await;
        assert_eq!(reply.status, 403, "{model}: {}", reply.body);
        let body = reply.json();
        assert_eq!(body["error"]["param"], "model", "{body}");
        assert_eq!(body["error"]["code"], "model_not_allowed", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(model)),
            "{body}"
        );
    }
    assert_eq!(
        chat(&router, Some(capped), hi("sim-s", 2)).await.status,
        200
    );
    // Its model list shows only what it may use.
    let listed = http::get_with(
        &router.url("/v1/models"),
        &[("authorization", &bearer(capped))],
    )
    .await;
    assert_eq!(listed.status, 200);
    assert!(
        listed.body.contains("sim-s") && !listed.body.contains("sim-l"),
        "{}",
        listed.body
    );

    // requests_per_minute 1: the second request is 429 with a Retry-After from the bucket.
    let first = chat(&router, Some(rpm), hi("small", 2)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.header("x-ratelimit-limit-requests"), Some("1"));
    let limited = chat(&router, Some(rpm), hi("small", 2)).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.json()["error"]["code"], "rate_limit_exceeded");
    let retry: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("a numeric Retry-After");
    // 1 a minute: the bucket refills in 60 s from when it was emptied.
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(limited.header("x-ratelimit-remaining-requests"), Some("0"));
    // Listing the models is metered too: the same key is at its limit there.
    let listing = http::get_with(
        &router.url("/v1/models"),
        &[("authorization", &bearer(rpm))],
    )
    .await;
    assert_eq!(listing.status, 429, "{}", listing.body);
    assert_eq!(listing.json()["error"]["code"], "rate_limit_exceeded");
    assert!(
        listing.header("retry-after").is_some(),
        "{:?}",
        listing.headers
    );

    // tokens_per_minute 100: a request that can never fit, then one that fits (8 + 90
    // charged: one token of text and the chat template's 4 + 3; settled to the 5 + 90 the
    // worker used), then one that must wait ~55 s.
    let too_big = chat(&router, Some(tpm), hi("small", 200)).await;
    assert_eq!(too_big.status, 429, "{}", too_big.body);
    assert!(
        too_big.header("retry-after").is_none(),
        "waiting cannot help"
    );
    assert!(
        too_big.body.contains("tokens_per_minute"),
        "{}",
        too_big.body
    );
    let fits = chat(&router, Some(tpm), hi("small", 90)).await;
    assert_eq!(fits.status, 200, "{}", fits.body);
    let over = chat(&router, Some(tpm), hi("small", 85)).await;
    assert_eq!(over.status, 429, "{}", over.body);
    assert!(
        over.header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|s| s >= 1),
        "{:?}",
        over.headers
    );
    assert!(over.body.contains("tokens_per_minute"), "{}", over.body);

    // The key ids (and only they) label the metrics.
    for (series, at_least) in [
        ("switchback_router_auth_enabled", 1.0),
        (
            r#"switchback_router_key_requests_total{key="full",status="200"}"#,
            1.0,
        ),
        (
            r#"switchback_router_key_requests_total{key="capped",status="403"}"#,
            2.0,
        ),
        (
            r#"switchback_router_rate_limited_total{key="rpm",limit="requests_per_minute"}"#,
            1.0,
        ),
        (
            r#"switchback_router_rate_limited_total{key="tpm",limit="tokens_per_minute"}"#,
            2.0,
        ),
        (
            r#"switchback_router_auth_failures_total{reason="missing"}"#,
            2.0,
        ),
        (
            r#"switchback_router_auth_failures_total{reason="unknown_key"}"#,
            1.0,
        ),
        (
            r#"switchback_router_auth_failures_total{reason="malformed"}"#,
            1.0,
        ),
        ("switchback_router_keys_loaded", 4.0),
    ] {
        let v = router.metric(series).await;
        assert!(v.is_some_and(|v| v >= at_least), "{series} = {v:?}");
    }
    let text = http::get_with(&router.url("/metrics"), &[]).await.body;
    assert!(
        !text.contains("sb-") && !text.contains(&sha256_hex(full)),
        "no token or hash in /metrics"
    );

    // Rotation: a new file with a new key; the new key starts working, the old one stops.
    let fresh = "sb-fresh-token";
    write_keys(
        &keys,
        &format!("keys:\n  - {{id: fresh, sha256: {}}}\n", sha256_hex(fresh)),
    );
    wait_for(
        "the rotated keys file to be in force",
        Duration::from_secs(30),
        || async {
            let new_ok = chat(&router, Some(fresh), hi("small", 1)).await.status == 200;
            let old_gone = chat(&router, Some(full), hi("small", 1)).await.status == 401;
            (new_ok && old_gone).then_some(())
        },
    )
    .await;
    assert_eq!(
        router.metric("switchback_router_keys_loaded").await,
        Some(1.0)
    );

    // A broken file is refused and counted; the keys in force stay.
    let failed = r#"switchback_router_keys_reloads_total{outcome="failed"}"#;
    let failed_before = router.metric(failed).await.unwrap_or(0.0);
    write_keys(
        &keys,
        "keys:\n  - {id: fresh, sha256: not-a-hash, colour: red}\n",
    );
    wait_for(
        "the broken keys file to be refused",
        Duration::from_secs(30),
        || async { (router.metric(failed).await.unwrap_or(0.0) > failed_before).then_some(()) },
    )
    .await;
    let still = chat(&router, Some(fresh), hi("small", 1)).await;
    assert_eq!(
        still.status, 200,
        "the old keys stay in force: {}",
        still.body
    );
    assert_eq!(
        router.metric("switchback_router_keys_loaded").await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn disabled_auth_is_explicit_and_labelled_none() {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let _w = Worker::start(&etcd, WorkerSpec::sim("s-open", "small", "sim-s", 1.0)).await;
    controller
        .wait_ready("s-open", Duration::from_secs(20))
        .await;
    let router = Router::start(&etcd, "tiers: [small]\nauth: {disabled: true}").await;
    router.wait_model("sim-s").await;
    // /v1/models (wait_model) counts too: compare before and after one chat request.
    let series = r#"switchback_router_key_requests_total{key="none",status="200"}"#;
    let before = router.metric(series).await.unwrap_or(0.0);
    let reply = chat(&router, None, hi("small", 2)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        router.metric("switchback_router_auth_enabled").await,
        Some(0.0)
    );
    assert_eq!(router.metric(series).await, Some(before + 1.0));
}
