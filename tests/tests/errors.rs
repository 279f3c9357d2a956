//! Every error the router answers is an OpenAI-shaped body with the right status.

use std::time::Duration;

use serde_json::json;
use switchback_tests::{Controller, Etcd, Router, Worker, WorkerSpec, http};

fn assert_openai_error(reply: &http::Reply, status: u16, param: Option<&str>) {
    assert_eq!(reply.status, status, "{}", reply.body);
    let body = reply.json();
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        error["type"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert!(
        error.get("code").is_some() && error.get("param").is_some(),
        "{body}"
    );
    if let Some(p) = param {
        assert_eq!(error["param"], p, "{body}");
        assert!(
            error["message"].as_str().is_some_and(|m| m.contains(p)),
            "the message names the field: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_error_case_has_its_status_and_an_openai_body() {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let _w = Worker::start(&etcd, WorkerSpec::sim("w-err", "small", "sim", 1.0)).await;
    controller
        .wait_ready("w-err", Duration::from_secs(20))
        .await;
    let router = Router::start(&etcd, "tiers: [small, large]\nmax_body_bytes: 4096\n").await;
    router.wait_model("sim").await;
    let chat = router.url("/v1/chat/completions");
    let msgs = json!([{"role": "user", "content": "hi"}]);

    // 400: malformed JSON.
    let reply = http::post(&chat, "{\"model\": \"small\", ").await;
    assert_openai_error(&reply, 400, None);
    assert_eq!(reply.json()["error"]["code"], "invalid_json");

    // 400: invalid fields, each named.
    for (body, param) in [
        (json!({"messages": msgs}), "model"),
        (json!({"model": "small"}), "messages"),
        (
            json!({"model": "small", "messages": msgs, "temperature": 9}),
            "temperature",
        ),
        (
            json!({"model": "small", "messages": msgs, "max_tokens": "many"}),
            "max_tokens",
        ),
        (
            json!({"model": "small", "messages": [{"role": "robot", "content": "x"}]}),
            "messages[0].role",
        ),
        (json!({"model": "small", "messages": msgs, "n": 3}), "n"),
    ] {
        assert_openai_error(&http::post_json(&chat, &body).await, 400, Some(param));
    }
    let reply = http::post_json(
        &router.url("/v1/completions"),
        &json!({"model": "small", "prompt": ""}),
    )
    .await;
    assert_openai_error(&reply, 400, Some("prompt"));

    // 404: unknown model.
    let reply = http::post_json(&chat, &json!({"model": "gpt-17", "messages": msgs})).await;
    assert_openai_error(&reply, 404, Some("model"));
    assert_eq!(reply.json()["error"]["code"], "model_not_found");

    // 503 with Retry-After: a configured tier with no worker.
    let reply = http::post_json(&chat, &json!({"model": "large", "messages": msgs})).await;
    assert_openai_error(&reply, 503, None);
    assert_eq!(reply.header("retry-after"), Some("1"));

    // 413: body over the configured limit (4 KiB), with and without Content-Length.
    let big =
        json!({"model": "small", "messages": [{"role": "user", "content": "x".repeat(8192)}]})
            .to_string();
    let reply = http::post(&chat, big.clone()).await;
    assert_openai_error(&reply, 413, None);
    let chunked = reqwest::Body::wrap_stream(futures::stream::iter(
        big.into_bytes()
            .chunks(1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    ));
    assert_openai_error(&http::post(&chat, chunked).await, 413, None);

    // The router is still healthy and serving after all of that.
    let reply = http::post_json(
        &chat,
        &json!({"model": "small", "messages": msgs, "max_tokens": 2}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn router_is_not_ready_without_a_cluster_view_and_bad_config_exits_64() {
    // A router whose etcd has no controller: alive, but not ready, and requests get 503.
    let etcd = Etcd::start().await;
    let port = switchback_tests::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("router.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\netcd: {{endpoints: [{}]}}\n",
            etcd.endpoint
        ),
    )
    .expect("write");
    let mut router = tokio::process::Command::new(switchback_tests::bin("switchback-router"))
        .arg("--config")
        .arg(&config)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn router");
    let base = format!("http://127.0.0.1:{port}");
    switchback_tests::wait_for(
        "the router to answer /healthz",
        Duration::from_secs(20),
        || async {
            reqwest::get(format!("{base}/healthz"))
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        },
    )
    .await;
    let ready = reqwest::get(format!("{base}/readyz"))
        .await
        .expect("GET /readyz");
    assert_eq!(ready.status(), 503);
    let reply = http::post_json(
        &format!("{base}/v1/chat/completions"),
        &json!({"model": "small", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_openai_error(&reply, 503, None);
    router.kill().await.expect("kill");

    // A typo in a config file: exit 64, naming the key.
    std::fs::write(&config, "lisen: 127.0.0.1:1\n").expect("write");
    let out = tokio::process::Command::new(switchback_tests::bin("switchback-router"))
        .arg("--config")
        .arg(&config)
        .output()
        .await
        .expect("run router");
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lisen"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tokio::process::Command::new(switchback_tests::bin("switchback-worker"))
        .args(["--tier", "small", "--model", "m"])
        .output()
        .await
        .expect("run worker");
    assert_eq!(
        out.status.code(),
        Some(64),
        "a worker without an engine is a config error"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("engine"));
}
