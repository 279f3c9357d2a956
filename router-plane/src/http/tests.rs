//! The HTTP shell in-process: the real [`router`] over a fake worker, a gRPC `Inference`
//! service on a loopback port that answers scripted chunks and records the request ids
//! it was sent.

use std::{
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::Instant,
};

use axum::{
    body::Body,
    http::{HeaderMap, Method, Request, StatusCode, header},
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use switchback_proto::pb;
use tower::ServiceExt;

use super::router;
use crate::{
    auth::{
        Gate,
        keys::{Key, digest},
    },
    clients::Clients,
    config::RawConfig,
    state::AppState,
    view::View,
};

const TIERS: &str = "tiers: [small, large]\ndefault_tier: small";

fn state(gate: Gate) -> Arc<AppState> {
    let config = RawConfig::from_yaml(&format!("auth: {{disabled: true}}\n{TIERS}"))
        .expect("yaml")
        .validate()
        .expect("valid config");
    let limits = config.limits();
    let policy = std::sync::RwLock::new(Arc::new(config.policy.clone()));
    // A cluster view has arrived, with no workers yet.
    let view = Arc::new(View::default());
    view.apply(pb::cluster_event::Event::Snapshot(
        pb::ClusterView::default(),
    ));
    Arc::new(AppState {
        policy,
        difficulty: std::sync::RwLock::new(None),
        pending: tokio::sync::Semaphore::new(config.max_pending),
        name: "router@test".into(),
        config,
        view,
        clients: Clients::new(switchback_common::tls::Dialer::new(None)),
        metrics: Default::default(),
        rotation: AtomicU64::new(0),
        limits,
        auth: gate,
    })
}

/// Adds a ready worker to the view.
fn add_worker(app: &AppState, id: &str, tier: &str, model: &str, address: &str) {
    app.view
        .apply(pb::cluster_event::Event::Upsert(pb::WorkerState {
            info: Some(pb::WorkerInfo {
                id: id.into(),
                tier: tier.into(),
                model: model.into(),
                address: address.into(),
                node: format!("node-{id}"),
                max_concurrency: 4,
                ..Default::default()
            }),
            load: Some(pb::LoadReport {
                worker_id: id.into(),
                capacity: 4,
                ..Default::default()
            }),
            health: pb::WorkerHealth::Ready as i32,
            ..Default::default()
        }));
}

/// A key for `token` with at most `per_minute` requests a minute.
fn key(token: &str, per_minute: Option<u32>) -> Key {
    Key {
        id: format!("key-{token}"),
        digest: digest(token),
        tiers: None,
        models: None,
        ceiling: None,
        requests_per_minute: per_minute,
        tokens_per_minute: None,
        default_quality: None,
    }
}

fn keyed(keys: Vec<Key>) -> Gate {
    Gate::with_keys(keys, vec!["small".into(), "large".into()], Instant::now())
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("{} lacks {name}: {:?}", self.status, self.headers))
            .to_str()
            .expect("ASCII header")
    }

    /// The `data:` events of an SSE body, `[DONE]` left out.
    fn events(&self) -> Vec<Value> {
        String::from_utf8_lossy(&self.body)
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).expect("event JSON"))
            .collect()
    }
}

async fn call(app: &Arc<AppState>, method: Method, uri: &str, body: Option<Value>) -> Reply {
    call_with(app, method, uri, body, None).await
}

async fn call_with(
    app: &Arc<AppState>,
    method: Method,
    uri: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = match body {
        Some(v) => request
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(v.to_string())),
        None => request.body(Body::empty()),
    }
    .expect("request");
    let response = router(Arc::clone(app))
        .oneshot(request)
        .await
        .expect("infallible");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes().to_vec();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// A worker that answers every generation with `chunks`, recording each request's id.
#[derive(Clone)]
struct FakeWorker {
    chunks: Vec<pb::GenerateChunk>,
    seen: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl pb::inference_server::Inference for FakeWorker {
    type GenerateStream =
        futures::stream::BoxStream<'static, Result<pb::GenerateChunk, tonic::Status>>;

    async fn generate(
        &self,
        request: tonic::Request<pb::GenerateRequest>,
    ) -> Result<tonic::Response<Self::GenerateStream>, tonic::Status> {
        self.seen
            .lock()
            .expect("lock")
            .push(request.into_inner().request_id);
        let chunks = self.chunks.clone().into_iter().map(Ok);
        Ok(tonic::Response::new(Box::pin(futures::stream::iter(
            chunks,
        ))))
    }

    async fn health(
        &self,
        _request: tonic::Request<pb::HealthRequest>,
    ) -> Result<tonic::Response<pb::HealthResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::HealthResponse::default()))
    }
}

fn token(text: &str) -> pb::TokenLogprob {
    pb::TokenLogprob {
        token: text.into(),
        token_id: None,
        logprob: -0.25,
        top: vec![pb::TopLogprob {
            token_id: 7,
            token: text.into(),
            logprob: -0.25,
            bytes: text.as_bytes().to_vec(),
        }],
        bytes: text.as_bytes().to_vec(),
    }
}

/// "Once upon a time." in three chunks, the last with the finish reason and usage.
fn story() -> Vec<pb::GenerateChunk> {
    let chunk = |tokens: &[&str]| pb::GenerateChunk {
        text: tokens.concat(),
        tokens: tokens.iter().map(|t| token(t)).collect(),
        ..Default::default()
    };
    let mut last = chunk(&[" time", "."]);
    last.finish_reason = pb::FinishReason::Stop as i32;
    last.usage = Some(pb::Usage {
        prompt_tokens: 3,
        completion_tokens: 5,
        ..Default::default()
    });
    vec![chunk(&["Once", " upon"]), chunk(&[" a"]), last]
}

/// A router whose one worker (tier `small`, model `sim-small`) is a [`FakeWorker`]
/// telling [`story`]; the worker's record of request ids.
async fn with_worker(gate: Gate) -> (Arc<AppState>, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let worker = FakeWorker {
        chunks: story(),
        seen: Arc::clone(&seen),
    };
    // Ends with the test's runtime.
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::inference_server::InferenceServer::new(worker))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let app = state(gate);
    add_worker(&app, "small-0", "small", "sim-small", &address);
    (app, seen)
}

fn chat_body(extra: Value) -> Value {
    let mut body = json!({"model": "small", "messages": [{"role": "user", "content": "Tell me."}]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

#[tokio::test]
async fn answers_and_streams_carry_their_request_id_which_the_body_and_worker_share() {
    let (app, seen) = with_worker(Gate::disabled()).await;
    let whole = call(
        &app,
        Method::POST,
        "/v1/chat/completions",
        Some(chat_body(json!({}))),
    )
    .await;
    assert_eq!(whole.status, StatusCode::OK, "{:?}", whole.json());
    let id = whole.header("x-request-id").to_owned();
    assert!(id.starts_with("chatcmpl-"), "{id}");
    assert_eq!(whole.json()["id"], id);

    let stream = call(
        &app,
        Method::POST,
        "/v1/completions",
        Some(json!({"model": "small", "prompt": "Once", "stream": true})),
    )
    .await;
    assert_eq!(stream.status, StatusCode::OK);
    let streamed = stream.header("x-request-id").to_owned();
    assert!(streamed.starts_with("cmpl-"), "{streamed}");
    let events = stream.events();
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e["id"] == streamed), "{events:?}");
    assert_eq!(*seen.lock().expect("lock"), vec![id, streamed]);
}

#[tokio::test]
async fn every_refusal_carries_a_fresh_request_id() {
    let app = state(keyed(vec![key("sb-one", Some(1))]));
    let mut ids = Vec::new();
    let mut check = |reply: &Reply, status: StatusCode, prefix: &str| {
        assert_eq!(
            reply.status,
            status,
            "{:?}",
            String::from_utf8_lossy(&reply.body)
        );
        let id = reply.header("x-request-id");
        assert!(id.starts_with(prefix), "{id}");
        ids.push(id.to_owned());
    };
    let chat = Some(chat_body(json!({})));
    // 401: no key.
    let r = call(&app, Method::POST, "/v1/chat/completions", chat.clone()).await;
    check(&r, StatusCode::UNAUTHORIZED, "chatcmpl-");
    // The key's one request this minute: 400 (it counts), then 429.
    let bad = Some(json!({"model": "small", "prompt": 7}));
    let r = call_with(&app, Method::POST, "/v1/completions", bad, Some("sb-one")).await;
    check(&r, StatusCode::BAD_REQUEST, "cmpl-");
    let r = call_with(
        &app,
        Method::POST,
        "/v1/chat/completions",
        chat.clone(),
        Some("sb-one"),
    )
    .await;
    check(&r, StatusCode::TOO_MANY_REQUESTS, "chatcmpl-");
    let r = call_with(&app, Method::GET, "/v1/models", None, Some("sb-one")).await;
    check(&r, StatusCode::TOO_MANY_REQUESTS, "req-");
    // 404, 405 and the plain routes.
    check(
        &call(&app, Method::GET, "/v2/nothing", None).await,
        StatusCode::NOT_FOUND,
        "req-",
    );
    check(
        &call(&app, Method::GET, "/v1/chat/completions", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "chatcmpl-",
    );
    check(
        &call(&app, Method::GET, "/healthz", None).await,
        StatusCode::OK,
        "req-",
    );
    check(
        &call(&app, Method::GET, "/readyz", None).await,
        StatusCode::OK,
        "req-",
    );
    // 5xx: no worker for the tier.
    let open = state(Gate::disabled());
    let r = call(&open, Method::POST, "/v1/chat/completions", chat).await;
    check(&r, StatusCode::SERVICE_UNAVAILABLE, "chatcmpl-");
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
}

#[tokio::test]
async fn a_wrong_method_is_405_with_allow_and_an_openai_error() {
    let app = state(Gate::disabled());
    for (method, path, allow) in [
        (Method::GET, "/v1/chat/completions", "POST"),
        (Method::GET, "/v1/completions", "POST"),
        (Method::PUT, "/v1/chat/completions", "POST"),
        (Method::POST, "/v1/models", "GET,HEAD"),
        (Method::DELETE, "/v1/models/sim-small", "GET,HEAD"),
        (Method::POST, "/healthz", "GET,HEAD"),
    ] {
        let r = call(&app, method.clone(), path, None).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(r.header("allow"), allow, "{method} {path}");
        assert!(r.header("content-type").starts_with("application/json"));
        let error = &r.json()["error"];
        assert_eq!(error["type"], "invalid_request_error", "{method} {path}");
        assert_eq!(error["code"], "method_not_allowed");
        assert_eq!(error["param"], Value::Null);
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains("Allow")),
            "{error}"
        );
    }
    let r = call(&app, Method::GET, "/v1/nothing", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["code"], "not_found");
}

#[tokio::test]
async fn retrieving_a_model_gives_its_list_entry_for_every_listed_id() {
    let app = state(Gate::disabled());
    add_worker(&app, "s", "small", "sim-small", "127.0.0.1:9");
    add_worker(
        &app,
        "l",
        "large",
        "Qwen/Qwen2.5-1.5B-Instruct",
        "127.0.0.1:9",
    );
    add_worker(
        &app,
        "l2",
        "large",
        "org/sub/model-v1.5.gguf",
        "127.0.0.1:9",
    );
    let list = call(&app, Method::GET, "/v1/models", None).await;
    assert_eq!(list.status, StatusCode::OK);
    let data = list.json()["data"].as_array().expect("data").clone();
    let ids: Vec<&str> = data.iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(
        ids,
        [
            "auto",
            "large",
            "small",
            "Qwen/Qwen2.5-1.5B-Instruct",
            "org/sub/model-v1.5.gguf",
            "sim-small"
        ]
    );
    let without_created = |mut v: Value| {
        v.as_object_mut().map(|o| o.remove("created"));
        v
    };
    for entry in &data {
        let id = entry["id"].as_str().expect("id");
        for path in [
            format!("/v1/models/{id}"),
            format!("/v1/models/{}", id.replace('/', "%2F")),
        ] {
            let r = call(&app, Method::GET, &path, None).await;
            assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.json());
            assert!(r.json()["created"].is_u64(), "{path}");
            assert_eq!(
                without_created(r.json()),
                without_created(entry.clone()),
                "{path}"
            );
        }
    }
    for missing in [
        "/v1/models/gpt-4o",
        "/v1/models/Qwen",
        "/v1/models/sim-small/x",
    ] {
        let r = call(&app, Method::GET, missing, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{missing}");
        let body = r.json();
        let error = body["error"].as_object().expect("error object");
        assert_eq!(error.len(), 4, "{body}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(error["param"], "model");
        assert_eq!(error["code"], "model_not_found");
    }
}

#[tokio::test]
async fn retrieving_a_model_is_authenticated_and_metered_like_the_list() {
    let app = state(keyed(vec![key("sb-two", Some(2))]));
    add_worker(&app, "s", "small", "sim-small", "127.0.0.1:9");
    let r = call(&app, Method::GET, "/v1/models/sim-small", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    for _ in 0..2 {
        let r = call_with(
            &app,
            Method::GET,
            "/v1/models/sim-small",
            None,
            Some("sb-two"),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["id"], "sim-small");
    }
    let r = call_with(
        &app,
        Method::GET,
        "/v1/models/sim-small",
        None,
        Some("sb-two"),
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let requests = app.metrics.encode();
    assert!(
        requests.contains(r#"key="key-sb-two",status="200"} 2"#),
        "{requests}"
    );
}

#[tokio::test]
async fn chat_answers_have_a_null_refusal_and_report_no_op_fields() {
    let (app, _) = with_worker(Gate::disabled()).await;
    let extra = json!({"logprobs": true, "user": "u1", "metadata": {"k": "v"}, "store": false, "service_tier": "flex"});
    let whole = call(
        &app,
        Method::POST,
        "/v1/chat/completions",
        Some(chat_body(extra.clone())),
    )
    .await;
    assert_eq!(whole.status, StatusCode::OK);
    let body = whole.json();
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
    assert_eq!(choice["message"]["content"], "Once upon a time.");
    assert_eq!(body["service_tier"], "default");
    assert_eq!(
        whole.header("x-switchback-ignored-fields"),
        "metadata,service_tier,store,user"
    );

    let mut streamed = chat_body(extra);
    streamed["stream"] = json!(true);
    let stream = call(&app, Method::POST, "/v1/chat/completions", Some(streamed)).await;
    let events = stream.events();
    let with_logprobs: Vec<&Value> = events
        .iter()
        .filter(|e| !e["choices"][0]["logprobs"].is_null())
        .collect();
    assert_eq!(with_logprobs.len(), 3, "{events:?}");
    for e in with_logprobs {
        assert_eq!(
            e["choices"][0]["logprobs"].get("refusal"),
            Some(&Value::Null),
            "{e}"
        );
    }
    assert!(
        events.iter().all(|e| e["service_tier"] == "default"),
        "{events:?}"
    );
}

#[tokio::test]
async fn streamed_completion_offsets_continue_and_match_the_whole_answer() {
    let (app, _) = with_worker(Gate::disabled()).await;
    let body = json!({"model": "small", "prompt": ["Once"], "logprobs": 1});
    let whole = call(&app, Method::POST, "/v1/completions", Some(body.clone())).await;
    assert_eq!(whole.status, StatusCode::OK, "{:?}", whole.json());
    let whole = whole.json();
    let text = whole["choices"][0]["text"]
        .as_str()
        .expect("text")
        .to_owned();
    let offsets = &whole["choices"][0]["logprobs"]["text_offset"];
    assert_eq!(*offsets, json!([0, 4, 9, 11, 16]));
    let tokens = whole["choices"][0]["logprobs"]["tokens"]
        .as_array()
        .expect("tokens");
    for (t, at) in tokens.iter().zip(offsets.as_array().expect("offsets")) {
        let at = usize::try_from(at.as_u64().expect("offset")).expect("usize");
        assert!(
            text[at..].starts_with(t.as_str().expect("token")),
            "{t} at {at}"
        );
    }

    let mut streamed = body;
    streamed["stream"] = json!(true);
    let stream = call(&app, Method::POST, "/v1/completions", Some(streamed)).await;
    let offsets: Vec<Value> = stream
        .events()
        .iter()
        .filter_map(|e| {
            e["choices"][0]["logprobs"]["text_offset"]
                .as_array()
                .cloned()
        })
        .flatten()
        .collect();
    assert_eq!(json!(offsets), json!([0, 4, 9, 11, 16]));
}
