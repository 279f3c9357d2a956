//! The floor under the router's overhead: the least an HTTP-to-gRPC proxy on the router's
//! stack (hyper through axum, tonic, serde_json, mimalloc, a multi-threaded tokio runtime)
//! does for one chat request. It parses the request, sends it to one worker over gRPC,
//! collects the answer and writes an OpenAI-shaped JSON response, with no keys, limits,
//! placement, cascade, retries, deadlines, metrics or spans. `router-bench` runs it beside
//! the router so that what the router adds is split into what any proxy on this stack pays
//! and what Switchback's own work costs. Not a product: it trusts its input.
//!
//!   bare-proxy --listen 127.0.0.1:PORT --worker 127.0.0.1:PORT

use std::net::SocketAddr;

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use serde::Deserialize;
use serde_json::{Value, json};
use switchback_proto::pb::{self, inference_client::InferenceClient};
use tonic::transport::Channel;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Deserialize)]
struct Message {
    role: String,
    content: String,
}

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<Message>,
    max_tokens: Option<u32>,
}

async fn chat(
    State(mut worker): State<InferenceClient<Channel>>,
    Json(req): Json<ChatRequest>,
) -> Result<Json<Value>, (StatusCode, String)> {
    let request = pb::GenerateRequest {
        prompt: Some(pb::generate_request::Prompt::Chat(pb::ChatPrompt {
            messages: req
                .messages
                .into_iter()
                .map(|m| pb::ChatMessage {
                    role: m.role,
                    content: m.content,
                    ..Default::default()
                })
                .collect(),
        })),
        sampling: Some(pb::SamplingParams {
            max_tokens: req.max_tokens.unwrap_or(0),
            ..Default::default()
        }),
        ..Default::default()
    };
    let bad_gateway = |s: tonic::Status| (StatusCode::BAD_GATEWAY, s.to_string());
    let mut stream = worker
        .generate(request)
        .await
        .map_err(bad_gateway)?
        .into_inner();
    let (mut text, mut usage) = (String::new(), None);
    while let Some(chunk) = stream.message().await.map_err(bad_gateway)? {
        text.push_str(&chunk.text);
        if chunk.usage.is_some() {
            usage = chunk.usage;
        }
    }
    let usage = usage.unwrap_or_default();
    Ok(Json(json!({
        "id": "chatcmpl-bare",
        "object": "chat.completion",
        "model": req.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        },
    })))
}

const HELP: &str = "bare-proxy: the least an HTTP-to-gRPC proxy on the router's stack does for \
a chat request (parse, one gRPC call to one worker, JSON back; no auth, placement, metrics or \
spans). router-bench starts it to measure the floor under the router's overhead. Writes \
nothing.\n\nOptions:\n  --listen ADDR   where to serve /v1/chat/completions (e.g. 127.0.0.1:8090)\n  \
--worker ADDR   the worker's gRPC address (e.g. 127.0.0.1:50051)";

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut worker) = (None::<SocketAddr>, None::<String>);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().and_then(|v| v.parse().ok()),
            "--worker" => worker = args.next(),
            "--help" | "-h" => {
                println!("{HELP}");
                return;
            }
            other => panic!("unknown argument {other} (see --help)"),
        }
    }
    let (Some(listen), Some(worker)) = (listen, worker) else {
        panic!("--listen ADDR and --worker ADDR are required (see --help)");
    };
    // The router's transport settings for worker channels.
    let channel = switchback_common::net::grpc_endpoint(&worker)
        .expect("--worker HOST:PORT")
        .connect_lazy();
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(InferenceClient::new(channel));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .expect("bind --listen");
    // Like every Switchback server: no Nagle delay on streamed or small answers.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(switchback_common::telemetry::shutdown_signal())
        .await
        .expect("serve");
}
