//! The OpenAI API as applications use it, on the real models: stop sequences (on a token
//! boundary and inside a token), log-probabilities with one entry and the exact bytes per
//! generated token, the completion's leading space, tool calls and JSON output by
//! constrained decoding on Qwen (`medium`), and their refusal on SmolLM2 (`small`), whose
//! chat template has no tools. Decoding is greedy, so every answer is reproducible.

use std::time::Duration;

use serde_json::{Value, json};
use switchback_tests::{Controller, Etcd, Router, Worker, WorkerSpec, http};

struct Cluster {
    _etcd: Etcd,
    _controller: Controller,
    _workers: Vec<Worker>,
    router: Router,
}

async fn cluster() -> Cluster {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let small = Worker::start(&etcd, WorkerSpec::small_real("small-0")).await;
    let medium = Worker::start(&etcd, WorkerSpec::medium_real("medium-0")).await;
    for id in ["small-0", "medium-0"] {
        controller.wait_ready(id, Duration::from_secs(60)).await;
    }
    let router = Router::start(&etcd, "tiers: [small, medium]").await;
    router.wait_model("smollm2-135m").await;
    router.wait_model("qwen2.5-coder-0.5b").await;
    Cluster {
        _etcd: etcd,
        _controller: controller,
        _workers: vec![small, medium],
        router,
    }
}

async fn chat(c: &Cluster, body: Value) -> Value {
    let reply = http::post_json(&c.router.url("/v1/chat/completions"), &body).await;
    assert_eq!(reply.status, 200, "{body} -> {}", reply.body);
    reply.json()
}

fn content(body: &Value) -> &str {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content: {body}"))
}

/// The streamed chunks' content, each delta on its own.
async fn stream_deltas(c: &Cluster, path: &str, mut body: Value) -> (Vec<String>, Vec<Value>) {
    body["stream"] = json!(true);
    let reply = http::post_json(&c.router.url(path), &body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let chunks = http::Sse::parse(&reply.body).json();
    let deltas = chunks
        .iter()
        .filter_map(|c| {
            let choice = c["choices"].get(0)?;
            choice["delta"]["content"]
                .as_str()
                .or(choice["text"].as_str())
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
        })
        .collect();
    (deltas, chunks)
}

fn finish_of(chunks: &[Value]) -> Vec<String> {
    chunks
        .iter()
        .filter_map(|c| {
            c["choices"].get(0)?["finish_reason"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// The middle two characters of the answer's longest word: a stop sequence that ends inside
/// a token of the answer.
fn inside_a_word(answer: &str) -> String {
    let word = answer
        .split(|c: char| !c.is_alphanumeric())
        .max_by_key(|w| w.chars().count())
        .expect("a word");
    assert!(word.chars().count() >= 4, "no long word in {answer:?}");
    let chars: Vec<char> = word.chars().collect();
    let mid = chars.len() / 2;
    chars[mid - 1..=mid].iter().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_sequences_end_the_answer_before_the_first_stop() {
    let c = cluster().await;
    let ask = |stop: Option<Value>| {
        let mut body = json!({"model": "small", "max_tokens": 24,
            "messages": [{"role": "user", "content": "Name three colors."}]});
        if let Some(stop) = stop {
            body["stop"] = stop;
        }
        body
    };
    let free = content(&chat(&c, ask(None)).await).to_owned();
    let newline = free
        .find('\n')
        .unwrap_or_else(|| panic!("no newline in {free:?}"));
    assert!(newline > 0, "{free:?}");

    // On a token boundary: the newline.
    let body = chat(&c, ask(Some(json!(["\n"])))).await;
    assert_eq!(content(&body), &free[..newline]);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let completion = body["usage"]["completion_tokens"].as_u64().expect("usage");
    assert!(completion >= 1, "{body}");

    // Inside a token, and the first of two stops wins wherever it is in the list.
    let stop = inside_a_word(&free);
    let at = free.find(&stop).expect("the stop is in the answer");
    let body = chat(&c, ask(Some(json!(["zzzz", stop])))).await;
    assert_eq!(content(&body), &free[..at], "stop {stop:?} in {free:?}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");

    // Streamed: nothing past the stop is ever sent.
    let (deltas, chunks) =
        stream_deltas(&c, "/v1/chat/completions", ask(Some(json!([stop])))).await;
    assert_eq!(deltas.concat(), &free[..at], "{deltas:?}");
    assert_eq!(finish_of(&chunks), vec!["stop"]);

    // Completions, whole and streamed.
    let prompt = json!({"model": "small", "prompt": "Paris is the capital of", "max_tokens": 12});
    let free = http::post_json(&c.router.url("/v1/completions"), &prompt)
        .await
        .json();
    let free = free["choices"][0]["text"]
        .as_str()
        .expect("text")
        .to_owned();
    let stop = inside_a_word(&free);
    let at = free.find(&stop).expect("stop in text");
    let mut stopped = prompt.clone();
    stopped["stop"] = json!(stop);
    let body = http::post_json(&c.router.url("/v1/completions"), &stopped)
        .await
        .json();
    assert_eq!(
        body["choices"][0]["text"],
        free[..at],
        "stop {stop:?} in {free:?}"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let (deltas, _) = stream_deltas(&c, "/v1/completions", stopped).await;
    assert_eq!(deltas.concat(), &free[..at]);
}

#[tokio::test(flavor = "multi_thread")]
async fn completions_keep_the_leading_space_and_logprobs_are_per_token_and_byte_exact() {
    let c = cluster().await;
    let body = http::post_json(
        &c.router.url("/v1/completions"),
        &json!({"model": "small", "prompt": "The capital of France is", "max_tokens": 3, "logprobs": 1}),
    )
    .await
    .json();
    let text = body["choices"][0]["text"].as_str().expect("text");
    assert!(
        text.starts_with(' '),
        "the first token's space is lost: {text:?}"
    );
    let tokens: Vec<&str> = body["choices"][0]["logprobs"]["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t.as_str().expect("token"))
        .collect();
    assert_eq!(tokens.concat(), text);

    // Text with characters of several bytes, cut by the length limit (so every generated
    // token is in the answer): one entry per token, and their bytes are the answer's.
    for model in ["small", "medium"] {
        let body = chat(
            &c,
            json!({"model": model, "max_tokens": 10, "logprobs": true, "top_logprobs": 3,
                "messages": [{"role": "user", "content": "Répète exactement: « café, crème brûlée, 東京, 😀 »"}]}),
        )
        .await;
        assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
        let entries = body["choices"][0]["logprobs"]["content"]
            .as_array()
            .expect("logprobs");
        assert_eq!(
            entries.len() as u64,
            body["usage"]["completion_tokens"].as_u64().expect("usage"),
            "{model}: one entry per generated token"
        );
        let bytes: Vec<u8> = entries
            .iter()
            .flat_map(|e| e["bytes"].as_array().expect("bytes").iter())
            .map(|b| b.as_u64().expect("byte") as u8)
            .collect();
        let answer = content(&body);
        assert!(
            !answer.is_ascii(),
            "{model}: the answer should hold non-ASCII text: {answer:?}"
        );
        assert!(
            String::from_utf8_lossy(&bytes).starts_with(answer.trim_end_matches('\u{fffd}')),
            "{model}: bytes {bytes:?} vs {answer:?}"
        );
        for e in entries {
            assert!(!e["bytes"].as_array().expect("bytes").is_empty(), "{e}");
            for alt in e["top_logprobs"].as_array().expect("top") {
                let b: Vec<u8> = alt["bytes"]
                    .as_array()
                    .expect("bytes")
                    .iter()
                    .map(|b| b.as_u64().expect("byte") as u8)
                    .collect();
                assert_ne!(
                    b,
                    "\u{fffd}".as_bytes(),
                    "{model}: a replacement character instead of real bytes: {alt}"
                );
            }
        }
    }
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {"type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"], "additionalProperties": false}}}])
}

fn check_call(call: &Value) -> Value {
    assert_eq!(call["type"], "function", "{call}");
    assert_eq!(call["function"]["name"], "get_weather", "{call}");
    assert!(
        call["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("call_")),
        "{call}"
    );
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().expect("arguments"))
            .unwrap_or_else(|e| panic!("arguments are not JSON ({e}): {call}"));
    assert!(args["city"].is_string(), "{args}");
    assert!(
        ["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap_or("")),
        "{args}"
    );
    args
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_give_calls_that_match_their_schema_and_round_trip() {
    let c = cluster().await;
    let question = json!([{"role": "user", "content": "What is the weather in Paris right now?"}]);
    for choice in [
        json!("required"),
        json!({"type": "function", "function": {"name": "get_weather"}}),
    ] {
        let body = chat(
            &c,
            json!({"model": "medium", "max_tokens": 64, "messages": question, "tools": weather_tool(), "tool_choice": choice, "parallel_tool_calls": false}),
        )
        .await;
        let choice0 = &body["choices"][0];
        assert_eq!(choice0["finish_reason"], "tool_calls", "{body}");
        assert!(choice0["message"]["content"].is_null(), "{body}");
        let calls = choice0["message"]["tool_calls"]
            .as_array()
            .expect("tool_calls");
        assert!(!calls.is_empty());
        for call in calls {
            check_call(call);
        }
    }

    // Streamed: the calls arrive as delta.tool_calls, no call text as content.
    let (deltas, chunks) = stream_deltas(
        &c,
        "/v1/chat/completions",
        json!({"model": "medium", "max_tokens": 64, "messages": question, "tools": weather_tool(), "tool_choice": "required", "parallel_tool_calls": false}),
    )
    .await;
    assert!(deltas.is_empty(), "{deltas:?}");
    let streamed: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert!(!streamed.is_empty(), "{chunks:?}");
    assert_eq!(streamed[0]["index"], 0);
    let args = check_call(streamed[0]);
    assert_eq!(finish_of(&chunks), vec!["tool_calls"]);

    // The call and its result go back to the model: it answers in prose, and the history
    // reached its prompt (more prompt tokens than without the call and the result).
    let call_id = streamed[0]["id"].as_str().expect("id");
    let history = json!([
        {"role": "user", "content": "What is the weather in Paris right now?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": call_id, "type": "function",
            "function": {"name": "get_weather", "arguments": args.to_string()}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "{\"temperature\": 21, \"sky\": \"sunny\"}"}
    ]);
    let body = chat(
        &c,
        json!({"model": "medium", "max_tokens": 40, "messages": history, "tools": weather_tool(), "tool_choice": "none"}),
    )
    .await;
    assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
    assert!(
        body["choices"][0]["message"]["tool_calls"].is_null(),
        "{body}"
    );
    assert!(!content(&body).is_empty());
    let with_history = body["usage"]["prompt_tokens"].as_u64().expect("usage");
    let body = chat(
        &c,
        json!({"model": "medium", "max_tokens": 1, "messages": [history[0]], "tools": weather_tool(), "tool_choice": "none"}),
    )
    .await;
    let without = body["usage"]["prompt_tokens"].as_u64().expect("usage");
    assert!(with_history > without + 20, "{with_history} vs {without}");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_output_matches_the_schema_and_models_that_cannot_are_refused() {
    let c = cluster().await;
    let schema = json!({"type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "languages": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
        "required": ["name", "age", "languages"], "additionalProperties": false});
    let body = chat(
        &c,
        json!({"model": "medium", "max_tokens": 120,
            "messages": [{"role": "user", "content": "Describe Ada Lovelace as a person record."}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "person", "strict": true, "schema": schema}}}),
    )
    .await;
    let person: Value =
        serde_json::from_str(content(&body)).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert!(
        person["name"].is_string() && person["age"].is_i64() && person["languages"].is_array(),
        "{person}"
    );
    assert_eq!(person.as_object().map(|o| o.len()), Some(3), "{person}");

    let body = chat(
        &c,
        json!({"model": "medium", "max_tokens": 40,
            "messages": [{"role": "user", "content": "Give me a JSON object with a greeting."}],
            "response_format": {"type": "json_object"}}),
    )
    .await;
    let object: Value =
        serde_json::from_str(content(&body)).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert!(object.is_object(), "{object}");

    // SmolLM2 cannot call tools: naming it is a 400 that names the field, and `auto`
    // places the request on a tier that can.
    let reply = http::post_json(
        &c.router.url("/v1/chat/completions"),
        &json!({"model": "small", "max_tokens": 8, "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": weather_tool()}),
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let error = &reply.json()["error"];
    assert_eq!(error["param"], "tools", "{error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("medium")),
        "{error}"
    );
    let reply = http::post_json(
        &c.router.url("/v1/chat/completions"),
        &json!({"model": "auto", "max_tokens": 64, "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": weather_tool(), "tool_choice": "required", "parallel_tool_calls": false}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-switchback-tier"), Some("medium"));
    check_call(&reply.json()["choices"][0]["message"]["tool_calls"][0]);
}
