//! The soak's request mix and what one request's client sees: whole and streamed chat and
//! text completions over every way of naming a model, clients that hang up mid-stream, and
//! bad requests that must get their 4xx. Each outcome is expected or unexpected; only the
//! unexpected ones fail a soak.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use switchback_routing::rng::Rng;

/// What a request is, and so what its client expects back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Chat,
    ChatStream,
    Completion,
    CompletionStream,
    /// A streamed chat whose client hangs up after the first token.
    Disconnect,
    /// Malformed JSON: 400.
    BadJson,
    /// A model nobody serves: 404.
    UnknownModel,
    /// An invalid field (a role that does not exist): 400.
    BadField,
    /// A body over the router's `max_body_bytes`: 413.
    TooLarge,
    /// No `Authorization` header: 401.
    NoKey,
    /// A bearer token that is not in the keys file: 401.
    UnknownKey,
}

/// Kinds with their weight in the mix (out of 100): 85 % answered requests (10 % of them
/// abandoned mid-stream), 15 % bad requests.
pub const MIX: [(Kind, u64); 11] = [
    (Kind::Chat, 30),
    (Kind::ChatStream, 25),
    (Kind::Completion, 10),
    (Kind::CompletionStream, 10),
    (Kind::Disconnect, 10),
    (Kind::BadJson, 3),
    (Kind::UnknownModel, 3),
    (Kind::BadField, 3),
    (Kind::TooLarge, 2),
    (Kind::NoKey, 2),
    (Kind::UnknownKey, 2),
];

/// The soak cluster's one API key (the routers run with auth on: the gate, its key lookup
/// and the per-key counters are on every request's path, so the soak watches them too).
pub const API_KEY: &str = "sb-soak-0123456789abcdef0123456789abcdef0123456789abcdef0123456789";

/// How a request may name its model: the predictor's choice, a tier, a model id.
pub const MODELS: [&str; 5] = ["auto", "small", "large", "sim-small", "sim-large"];

/// The router's body limit in the soak cluster; `TooLarge` bodies exceed it.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

const PROMPTS: [&str; 6] = [
    "What is the capital of France?",
    "Prove that there are infinitely many primes.",
    "Write a haiku about autumn rain.",
    "Explain the difference between TCP and UDP in two sentences.",
    "If a train leaves at 3pm going 60 km/h, when has it gone 150 km?",
    "Translate 'good morning' into Spanish, German and Japanese.",
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::ChatStream => "chat stream",
            Self::Completion => "completion",
            Self::CompletionStream => "completion stream",
            Self::Disconnect => "disconnect mid-stream",
            Self::BadJson => "bad JSON (400)",
            Self::UnknownModel => "unknown model (404)",
            Self::BadField => "invalid role (400)",
            Self::TooLarge => "body too large (413)",
            Self::NoKey => "no API key (401)",
            Self::UnknownKey => "unknown API key (401)",
        }
    }

    /// The status a bad request must get; `None` for requests that must be answered.
    pub fn expected_error(self) -> Option<u16> {
        match self {
            Self::BadJson | Self::BadField => Some(400),
            Self::UnknownModel => Some(404),
            Self::TooLarge => Some(413),
            Self::NoKey | Self::UnknownKey => Some(401),
            Self::Chat
            | Self::ChatStream
            | Self::Completion
            | Self::CompletionStream
            | Self::Disconnect => None,
        }
    }

    fn streams(self) -> bool {
        matches!(
            self,
            Self::ChatStream | Self::CompletionStream | Self::Disconnect
        )
    }

    fn path(self) -> &'static str {
        match self {
            Self::Completion | Self::CompletionStream => "/v1/completions",
            _ => "/v1/chat/completions",
        }
    }
}

/// One request to send: its kind, path and body.
#[derive(Debug, Clone)]
pub struct Request {
    pub kind: Kind,
    pub path: &'static str,
    pub body: String,
}

/// Draws the next request of the mix.
pub fn draw(rng: &mut Rng) -> Request {
    let total: u64 = MIX.iter().map(|(_, w)| w).sum();
    let mut pick = rng.next_u64() % total;
    let kind = MIX
        .iter()
        .find(|(_, w)| {
            if pick < *w {
                true
            } else {
                pick -= w;
                false
            }
        })
        .map_or(Kind::Chat, |(k, _)| *k);
    let model = MODELS[(rng.next_u64() % MODELS.len() as u64) as usize];
    let prompt = PROMPTS[(rng.next_u64() % PROMPTS.len() as u64) as usize];
    let max_tokens = 4 + rng.next_u64() % 29;
    let chat = |model: &str, role: &str, content: &str| {
        json!({
            "model": model,
            "messages": [{"role": role, "content": content}],
            "max_tokens": max_tokens,
            "stream": kind.streams(),
        })
    };
    let body: Value = match kind {
        Kind::Chat | Kind::ChatStream | Kind::Disconnect => chat(model, "user", prompt),
        Kind::Completion | Kind::CompletionStream => json!({
            "model": model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "stream": kind.streams(),
        }),
        Kind::BadJson => {
            return Request {
                kind,
                path: kind.path(),
                body: format!(r#"{{"model": "{model}", "messages": [{{"role": "user""#),
            };
        }
        Kind::UnknownModel => chat("no-such-model", "user", prompt),
        Kind::BadField => chat(model, "wizard", prompt),
        Kind::NoKey | Kind::UnknownKey => chat(model, "user", prompt),
        Kind::TooLarge => chat(model, "user", &"x".repeat(MAX_BODY_BYTES + 1024)),
    };
    Request {
        kind,
        path: kind.path(),
        body: body.to_string(),
    }
}

/// What the client saw.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub kind: Kind,
    /// Send to the last byte read (or to the hang-up).
    pub e2e: Duration,
    /// Send to the first token of a stream.
    pub ttft: Option<Duration>,
    /// `None` when the outcome is what this kind expects; otherwise what went wrong.
    pub unexpected: Option<String>,
}

/// Sends `req` to `base` and judges the answer. `timeout` bounds the whole exchange, so a
/// hang is an unexpected error, not a stuck soak.
pub async fn send(http: &reqwest::Client, base: &str, req: Request, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let kind = req.kind;
    let result = tokio::time::timeout(timeout, exchange(http, base, req, started)).await;
    let (ttft, unexpected) = match result {
        Ok(Ok(ttft)) => (ttft, None),
        Ok(Err(why)) => (None, Some(why)),
        Err(_) => (None, Some(format!("no answer within {timeout:?}"))),
    };
    Outcome {
        kind,
        e2e: started.elapsed(),
        ttft,
        unexpected,
    }
}

/// The exchange; `Ok` carries the time to first token for streams.
async fn exchange(
    http: &reqwest::Client,
    base: &str,
    req: Request,
    started: Instant,
) -> Result<Option<Duration>, String> {
    let post = http
        .post(format!("{base}{}", req.path))
        .header("content-type", "application/json");
    let post = match req.kind {
        Kind::NoKey => post,
        Kind::UnknownKey => post.bearer_auth("sb-not-a-key-of-this-cluster"),
        _ => post.bearer_auth(API_KEY),
    };
    let resp = post
        .body(req.body)
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = resp.status().as_u16();
    if let Some(expected) = req.kind.expected_error() {
        let body = resp
            .text()
            .await
            .map_err(|e| format!("reading body: {e}"))?;
        if status != expected {
            return Err(format!("status {status}, expected {expected}: {body}"));
        }
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| format!("{status} body is not JSON ({e}): {body}"))?;
        if !v["error"]["message"].is_string() {
            return Err(format!("{status} body is not an OpenAI error: {body}"));
        }
        return Ok(None);
    }
    if status != 200 {
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("status {status}: {body}"));
    }
    if !req.kind.streams() {
        let v: Value = resp
            .json()
            .await
            .map_err(|e| format!("reading body: {e}"))?;
        return if v["choices"][0]["finish_reason"].is_string() {
            Ok(None)
        } else {
            Err(format!("answer without a finished choice: {v}"))
        };
    }
    // A stream: events until `[DONE]`; the first token's arrival is the TTFT.
    let mut body = resp.bytes_stream();
    let mut pending = String::new();
    let mut ttft = None;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("stream cut: {e}"))?;
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                return match ttft {
                    Some(_) => Ok(ttft),
                    None => Err("stream ended without a token".into()),
                };
            }
            let v: Value =
                serde_json::from_str(data).map_err(|e| format!("event is not JSON ({e})"))?;
            if v.get("error").is_some() {
                return Err(format!("error event: {v}"));
            }
            let choice = &v["choices"][0];
            let token = choice["delta"]["content"]
                .as_str()
                .or_else(|| choice["text"].as_str())
                .is_some_and(|t| !t.is_empty());
            if token && ttft.is_none() {
                ttft = Some(started.elapsed());
                if req.kind == Kind::Disconnect {
                    // Hang up: dropping the body closes the connection mid-stream.
                    return Ok(ttft);
                }
            }
        }
    }
    Err("stream ended without [DONE]".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_draws_every_kind_in_proportion() {
        let mut rng = Rng::new(1);
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..10_000 {
            *counts.entry(draw(&mut rng).kind).or_insert(0u32) += 1;
        }
        for (kind, weight) in MIX {
            let share = f64::from(counts[&kind]) / 100.0;
            assert!(
                (share - weight as f64).abs() < 2.0,
                "{kind:?}: {share} % drawn, weight {weight}"
            );
        }
        let big = draw_until(&mut rng, Kind::TooLarge);
        assert!(big.body.len() > MAX_BODY_BYTES);
        assert!(serde_json::from_str::<Value>(&draw_until(&mut rng, Kind::BadJson).body).is_err());
    }

    fn draw_until(rng: &mut Rng, kind: Kind) -> Request {
        loop {
            let r = draw(rng);
            if r.kind == kind {
                return r;
            }
        }
    }
}
