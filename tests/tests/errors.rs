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

    // 400: tools and JSON output that no worker here can do (`sim` workers do neither),
    // named or `auto`: never a prose answer that ignores them.
    let tools = json!([{"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}]);
    for model in ["small", "auto", "sim"] {
        let reply = http::post_json(
            &chat,
            &json!({"model": model, "messages": msgs, "tools": tools}),
        )
        .await;
        assert_openai_error(&reply, 400, Some("tools"));
        let reply = http::post_json(
            &chat,
            &json!({"model": model, "messages": msgs, "response_format": {"type": "json_object"}}),
        )
        .await;
        assert_openai_error(&reply, 400, Some("response_format"));
    }

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
            "listen: 127.0.0.1:{port}\netcd: {{endpoints: [{}]}}\nauth: {{disabled: true}}\n",
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
    // No auth choice: exit 64, naming `auth` and what to set.
    std::fs::write(&config, "listen: 127.0.0.1:1\n").expect("write");
    let out = tokio::process::Command::new(switchback_tests::bin("switchback-router"))
        .arg("--config")
        .arg(&config)
        .output()
        .await
        .expect("run router");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("`auth`")
            && stderr.contains("keys_file")
            && stderr.contains("disabled: true"),
        "{stderr}"
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

/// Decisions the router has made: a request that never got one never reached a worker.
async fn decisions(router: &Router) -> f64 {
    router
        .metric("switchback_router_decision_duration_seconds_count")
        .await
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_limit_is_a_400_naming_field_and_config_key_and_never_reaches_a_worker() {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let _w = Worker::start(&etcd, WorkerSpec::sim("w-lim", "small", "sim", 1.0)).await;
    controller
        .wait_ready("w-lim", Duration::from_secs(20))
        .await;
    let router = Router::start(
        &etcd,
        "tiers: [small]\nmax_body_bytes: 4096\nmax_tokens_limit: 50\nmax_messages: 3\n\
         max_message_bytes: 200\nmax_prompt_tokens: 10\nmax_stop_sequences: 2\nmax_stop_bytes: 4\n\
         max_top_logprobs: 3\nrequest_timeout_s: 5\n",
    )
    .await;
    router.wait_model("sim").await;
    let chat = router.url("/v1/chat/completions");
    let msgs = json!([{"role": "user", "content": "hi"}]);
    // One request that is served, so the decision counter exists.
    let ok = http::post_json(
        &chat,
        &json!({"model": "small", "messages": msgs, "max_tokens": 2}),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let before = decisions(&router).await;
    assert!(before >= 1.0);

    let user = |content: String| json!([{"role": "user", "content": content}]);
    let cases = [
        (
            json!({"model": "small", "messages": msgs, "max_tokens": 51}),
            "max_tokens",
            "max_tokens_limit",
        ),
        (
            json!({"model": "small", "messages": msgs, "max_completion_tokens": 51}),
            "max_completion_tokens",
            "max_tokens_limit",
        ),
        (
            json!({"model": "small", "messages": [msgs[0], msgs[0], msgs[0], msgs[0]]}),
            "messages",
            "max_messages",
        ),
        (
            json!({"model": "small", "messages": user("x".repeat(201))}),
            "messages[0].content",
            "max_message_bytes",
        ),
        (
            json!({"model": "small", "messages": user("y".repeat(41))}),
            "messages",
            "max_prompt_tokens",
        ),
        (
            json!({"model": "small", "messages": msgs, "stop": ["a", "b", "c"]}),
            "stop",
            "max_stop_sequences",
        ),
        (
            json!({"model": "small", "messages": msgs, "stop": "abcde"}),
            "stop[0]",
            "max_stop_bytes",
        ),
        (
            json!({"model": "small", "messages": msgs, "logprobs": true, "top_logprobs": 4}),
            "top_logprobs",
            "max_top_logprobs",
        ),
        (
            json!({"model": "small", "messages": msgs, "switchback": {"deadline_ms": 5001}}),
            "switchback.deadline_ms",
            "request_timeout_s",
        ),
    ];
    for (body, param, key) in cases {
        let reply = http::post_json(&chat, &body).await;
        assert_openai_error(&reply, 400, Some(param));
        let error = &reply.json()["error"];
        assert_eq!(error["code"], "limit_exceeded", "{}", reply.body);
        assert!(
            error["message"].as_str().is_some_and(|m| m.contains(key)),
            "the message names the config key {key}: {}",
            reply.body
        );
    }
    let reply = http::post_json(
        &router.url("/v1/completions"),
        &json!({"model": "small", "prompt": "z".repeat(41)}),
    )
    .await;
    assert_openai_error(&reply, 400, Some("prompt"));
    assert!(reply.body.contains("max_prompt_tokens"), "{}", reply.body);
    let reply = http::post_json(
        &chat,
        &json!({"model": "small", "messages": user("w".repeat(5000))}),
    )
    .await;
    assert_openai_error(&reply, 413, None);
    assert!(reply.body.contains("max_body_bytes"), "{}", reply.body);
    assert_eq!(
        decisions(&router).await,
        before,
        "a request over a limit must never be placed on a worker"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn odd_unicode_reaches_the_worker_intact_and_unknown_fields_are_reported() {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let worker = Worker::start(&etcd, WorkerSpec::sim("w-uni", "small", "sim", 1.0)).await;
    controller
        .wait_ready("w-uni", Duration::from_secs(20))
        .await;
    let router = Router::start(&etcd, "tiers: [small]\n").await;
    router.wait_model("sim").await;
    let url = router.url("/v1/completions");

    // Malformed: invalid UTF-8 and a lone surrogate escape.
    let mut bad = br#"{"model":"small","prompt":""#.to_vec();
    bad.extend_from_slice(&[0xc3, 0x28]);
    bad.extend_from_slice(br#""}"#);
    let reply = http::post(&url, bad).await;
    assert_openai_error(&reply, 400, None);
    assert_eq!(reply.json()["error"]["code"], "invalid_json");
    let reply = http::post(&url, r#"{"model":"small","prompt":"\udc00"}"#).await;
    assert_openai_error(&reply, 400, None);
    assert_eq!(reply.json()["error"]["code"], "invalid_json");

    // NUL, zero-width joiner, right-to-left override, emoji, combining accent. The sim
    // engine seeds its text with a hash of the prompt's bytes: the same text through the
    // router as straight from the worker means the worker got the very same bytes.
    let odd = "a\u{0}b \u{200d}c \u{202e}d \u{1F600}e\u{301} 終わり";
    let reply = http::post_json(
        &url,
        &json!({"model": "small", "prompt": odd, "max_tokens": 12, "logit_bias": {}, "user": "u"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // An empty `logit_bias` is honoured (no bias); `user` is ignored.
    assert_eq!(reply.header("x-switchback-ignored-fields"), Some("user"));
    let via_router = reply.json()["choices"][0]["text"]
        .as_str()
        .expect("text")
        .to_owned();
    assert_eq!(
        via_router,
        direct(&worker, odd).await,
        "the prompt reached the worker unchanged"
    );
    assert_ne!(
        via_router,
        direct(&worker, "a\u{0}b \u{200d}c \u{202e}d \u{1F600}e 終わり").await,
        "a prompt one combining mark shorter gives other text (the check can fail)"
    );
    let reply = http::post_json(
        &url,
        &json!({"model": "small", "prompt": "plain", "max_tokens": 2}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-switchback-ignored-fields"), None);
}

/// The sim worker's text for `prompt`, asked directly over gRPC.
async fn direct(worker: &Worker, prompt: &str) -> String {
    use switchback_proto::pb;
    let mut stream = worker
        .client()
        .await
        .generate(pb::GenerateRequest {
            request_id: "direct".into(),
            prompt: Some(pb::generate_request::Prompt::Text(prompt.to_owned())),
            sampling: Some(pb::SamplingParams {
                max_tokens: 12,
                ..Default::default()
            }),
            top_logprobs: 0,
            ..Default::default()
        })
        .await
        .expect("generate")
        .into_inner();
    let mut text = String::new();
    while let Some(chunk) = stream.message().await.expect("stream") {
        text.push_str(&chunk.text);
    }
    text
}

/// The request timeout bounds a whole answer, not only its start: an answer that is still
/// generating when it runs out is a 504 `timeout` (whole), or a stream that delivered its
/// first tokens and then ends with a `timeout` error event and `[DONE]` (streamed), short
/// of the answer the worker was generating. The worker answered, only too slowly for that
/// request: it keeps serving the next ones (it is not suspected as a dead one would be).
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_still_generating_at_the_request_timeout_is_cut_off_whole_or_streamed() {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    // 200 tokens at 50 ms each: 10 s, against a 1 s request timeout.
    let _w = Worker::start(&etcd, WorkerSpec::sim("w-slow", "small", "sim", 50.0)).await;
    controller
        .wait_ready("w-slow", Duration::from_secs(20))
        .await;
    let router = Router::start(&etcd, "tiers: [small]\nrequest_timeout_s: 1\n").await;
    router.wait_model("sim").await;
    let chat = router.url("/v1/chat/completions");
    let msgs = json!([{"role": "user", "content": "tell me a long story"}]);

    let whole = http::post_json(
        &chat,
        &json!({"model": "small", "messages": msgs, "max_tokens": 200}),
    )
    .await;
    assert_openai_error(&whole, 504, None);
    assert_eq!(whole.json()["error"]["code"], "timeout");
    let short = http::post_json(
        &chat,
        &json!({"model": "small", "messages": msgs, "max_tokens": 2}),
    )
    .await;
    assert_eq!(
        short.status, 200,
        "the slow worker still serves: {}",
        short.body
    );

    let streamed = http::post_json(
        &chat,
        &json!({"model": "small", "messages": msgs, "max_tokens": 200, "stream": true}),
    )
    .await;
    assert_eq!(streamed.status, 200, "{}", streamed.body);
    let sse = http::Sse::parse(&streamed.body);
    assert_eq!(sse.events.last().map(String::as_str), Some("[DONE]"));
    let events = sse.json();
    let (error, pieces) = events.split_last().expect("events");
    assert_eq!(error["error"]["code"], "timeout", "{error}");
    let text: String = pieces
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!text.is_empty(), "the first tokens arrived before the cut");
    let delivered = pieces
        .iter()
        .filter(|e| e["choices"][0]["delta"]["content"].is_string())
        .count();
    assert!(
        delivered < 200,
        "cut short of the answer: {delivered} pieces"
    );
    assert!(
        pieces
            .iter()
            .all(|e| e["choices"][0]["finish_reason"].is_null()),
        "no piece claims the answer finished: {pieces:?}"
    );
}
