//! The router's answers against OpenAI's published API schema, on a `sim` cluster whose
//! model id holds `/` and `.`: required fields present, `GET /v1/models/{id}`, 405s,
//! `x-request-id` on every response, the prompt shapes `/v1/completions` takes, and the
//! fields refused or ignored.

use std::time::Duration;

use serde_json::{Value, json};
use switchback_tests::{Controller, Etcd, Router, Worker, WorkerSpec, http};

const MODEL: &str = "org/sim-model.v1";

async fn cluster() -> (Etcd, Controller, Worker, Router) {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let worker = Worker::start(&etcd, WorkerSpec::sim("w-api", "small", MODEL, 1.0)).await;
    controller
        .wait_ready("w-api", Duration::from_secs(20))
        .await;
    let router = Router::start(&etcd, "tiers: [small, large]").await;
    router.wait_model(MODEL).await;
    (etcd, controller, worker, router)
}

/// The request id of `reply`, which every response carries.
fn request_id(reply: &http::Reply) -> String {
    reply
        .header("x-request-id")
        .unwrap_or_else(|| panic!("{} without x-request-id: {}", reply.status, reply.body))
        .to_owned()
}

async fn send(method: reqwest::Method, url: &str) -> http::Reply {
    let resp = reqwest::Client::new()
        .request(method, url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    http::Reply {
        status: resp.status().as_u16(),
        headers: resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: resp.text().await.expect("body"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_follow_the_openai_schema_and_carry_their_request_id() {
    let (_etcd, _controller, _worker, router) = cluster().await;
    let chat = router.url("/v1/chat/completions");
    let messages = json!([{"role": "user", "content": "Say something."}]);

    let whole = http::post_json(
        &chat,
        &json!({"model": "small", "messages": messages, "max_tokens": 5, "logprobs": true, "top_logprobs": 1}),
    )
    .await;
    assert_eq!(whole.status, 200, "{}", whole.body);
    let body = whole.json();
    assert_eq!(request_id(&whole), body["id"].as_str().expect("id"));
    let choice = &body["choices"][0];
    assert_eq!(
        choice["message"].get("refusal"),
        Some(&Value::Null),
        "{body}"
    );
    assert_eq!(
        choice["logprobs"].get("refusal"),
        Some(&Value::Null),
        "{body}"
    );
    assert_eq!(body["service_tier"], "default");

    let streamed = http::post_json(
        &chat,
        &json!({"model": "small", "messages": messages, "max_tokens": 5, "logprobs": true, "stream": true}),
    )
    .await;
    assert_eq!(streamed.status, 200, "{}", streamed.body);
    let id = request_id(&streamed);
    let events = http::Sse::parse(&streamed.body).json();
    assert!(events.iter().all(|e| e["id"] == id.as_str()), "{events:?}");
    let with_logprobs: Vec<&Value> = events
        .iter()
        .filter(|e| !e["choices"][0]["logprobs"].is_null())
        .collect();
    assert!(!with_logprobs.is_empty(), "{events:?}");
    for e in with_logprobs {
        assert_eq!(
            e["choices"][0]["logprobs"].get("refusal"),
            Some(&Value::Null),
            "{e}"
        );
    }
    assert_ne!(request_id(&whole), id);
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_completion_offsets_run_on_across_chunks() {
    let (_etcd, _controller, _worker, router) = cluster().await;
    let reply = http::post_json(
        &router.url("/v1/completions"),
        &json!({"model": "small", "prompt": ["Once upon a time"], "max_tokens": 12, "logprobs": 1, "stream": true}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(request_id(&reply).starts_with("cmpl-"));
    let mut next = 0u64;
    let mut chunks = 0;
    for e in http::Sse::parse(&reply.body).json() {
        let logprobs = &e["choices"][0]["logprobs"];
        let (Some(tokens), Some(offsets)) = (
            logprobs["tokens"].as_array(),
            logprobs["text_offset"].as_array(),
        ) else {
            continue;
        };
        chunks += 1;
        for (token, offset) in tokens.iter().zip(offsets) {
            assert_eq!(offset.as_u64(), Some(next), "{e}");
            next += token.as_str().expect("token").len() as u64;
        }
    }
    assert!(chunks > 1, "one chunk proves nothing: {}", reply.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn models_are_retrievable_by_id_and_unknown_ones_are_404() {
    let (_etcd, _controller, _worker, router) = cluster().await;
    let list = http::get_with(&router.url("/v1/models"), &[]).await;
    let data = list.json()["data"].as_array().expect("data").clone();
    for entry in &data {
        let id = entry["id"].as_str().expect("id");
        for path in [id.to_owned(), id.replace('/', "%2F")] {
            let one = http::get_with(&router.url(&format!("/v1/models/{path}")), &[]).await;
            assert_eq!(one.status, 200, "{path}: {}", one.body);
            let mut got = one.json();
            let mut want = entry.clone();
            for v in [&mut got, &mut want] {
                v.as_object_mut().map(|o| o.remove("created"));
            }
            assert_eq!(got, want, "{path}");
            assert!(request_id(&one).starts_with("req-"));
        }
    }
    assert!(data.iter().any(|m| m["id"] == MODEL));
    let missing = http::get_with(&router.url("/v1/models/gpt-4o"), &[]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.json(),
        json!({"error": {
            "message": missing.json()["error"]["message"],
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }})
    );
    assert!(
        missing.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("gpt-4o"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_openai_shaped_with_a_request_id() {
    let (_etcd, _controller, _worker, router) = cluster().await;
    let mut ids = Vec::new();
    for (method, path, allow) in [
        (reqwest::Method::GET, "/v1/chat/completions", "POST"),
        (reqwest::Method::GET, "/v1/completions", "POST"),
        (reqwest::Method::POST, "/v1/models", "GET,HEAD"),
    ] {
        let r = send(method.clone(), &router.url(path)).await;
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.header("allow"), Some(allow));
        assert_eq!(
            r.json()["error"]["code"],
            "method_not_allowed",
            "{}",
            r.body
        );
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
        ids.push(request_id(&r));
    }
    let r = send(reqwest::Method::GET, &router.url("/v1/nothing")).await;
    assert_eq!(r.status, 404);
    ids.push(request_id(&r));

    let completions = router.url("/v1/completions");
    for (prompt, says) in [
        (json!(["a", "b"]), "a batch of 2 prompts"),
        (json!([1, 2, 3]), "a list of token ids"),
        (json!([[1, 2], [3]]), "a list of token-id lists"),
    ] {
        let r = http::post_json(&completions, &json!({"model": "small", "prompt": prompt})).await;
        assert_eq!(r.status, 400, "{}", r.body);
        let error = &r.json()["error"];
        assert_eq!(error["param"], "prompt");
        let message = error["message"].as_str().expect("message");
        assert!(
            message.contains(says) && message.contains("a string"),
            "{message}"
        );
        ids.push(request_id(&r));
    }
    let one = http::post_json(
        &completions,
        &json!({"model": "small", "prompt": ["Once"], "max_tokens": 3}),
    )
    .await;
    assert_eq!(one.status, 200, "{}", one.body);

    let chat = router.url("/v1/chat/completions");
    let messages = json!([{"role": "user", "content": "hi"}]);
    for (extra, param) in [
        (json!({"n": 2}), "n"),
        (json!({"logit_bias": {"42": 5}}), "logit_bias"),
        (json!({"max_tokens": "many"}), "max_tokens"),
    ] {
        let mut body = json!({"model": "small", "messages": messages});
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        let r = http::post_json(&chat, &body).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.json()["error"]["param"], param, "{}", r.body);
        ids.push(request_id(&r));
    }
    let ignored = http::post_json(
        &chat,
        &json!({"model": "small", "messages": messages, "max_tokens": 2, "n": 1, "logit_bias": {}, "user": "u", "metadata": {"a": "b"}, "store": true, "service_tier": "auto"}),
    )
    .await;
    assert_eq!(ignored.status, 200, "{}", ignored.body);
    assert_eq!(
        ignored.header("x-switchback-ignored-fields"),
        Some("metadata,service_tier,store,user")
    );
    assert_eq!(ignored.json()["service_tier"], "default");
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
}

/// The official `openai` Python client (the venv tests/run.sh installs) lists, retrieves
/// (an id with `/` in the path as it is), chats and streams against the sim cluster.
#[tokio::test(flavor = "multi_thread")]
async fn the_openai_python_client_retrieves_every_model_and_sees_the_request_id() {
    let (_etcd, _controller, _worker, router) = cluster().await;
    let python = switchback_tests::python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/openai_client.py");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(&python)
            .arg(script)
            .arg(router.url("/v1"))
            .output(),
    )
    .await
    .expect("the openai client script did not finish within 120 s")
    .unwrap_or_else(|e| panic!("cannot run {python} (run deploy/local/ensure-deps.sh): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "openai client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("script prints JSON");
    assert!(
        report["models"]
            .as_array()
            .expect("models")
            .iter()
            .any(|m| m == MODEL),
        "{report}"
    );
    assert_eq!(report["retrieved"], report["models"]);
    assert_eq!(report["request_id"], report["chat_id"]);
    assert_eq!(report["refusal"], Value::Null);
    assert_eq!(report["tier"], "small");
}
