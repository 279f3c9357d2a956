//! Builds OpenAI response bodies (whole and streamed) from worker chunks.

use serde_json::{Value, json};
use switchback_proto::pb;

use super::Endpoint;

/// What was decided for a request; sent in headers and the `switchback` body object.
#[derive(Debug, Clone)]
pub struct Decision {
    pub tier: String,
    pub worker: String,
    /// The chosen worker's machine.
    pub node: String,
    pub model: String,
    /// How the tier was chosen: `difficulty`, `auto-default-tier`, `tier`, `model`.
    pub reason: &'static str,
    pub candidates: usize,
    /// The chosen worker's outstanding requests when it was chosen.
    pub queue_depth: u32,
    /// Workers tried before this one, each with why it failed (before the first token).
    pub retries: Vec<(String, &'static str)>,
    /// For `auto` with difficulty routing: the predictor's view of the prompt.
    pub difficulty: Option<crate::difficulty::predictor::Prediction>,
    /// For `auto`: the joint decision over (tier, worker) of the final attempt's tier.
    pub joint: Option<JointView>,
    /// Lower tiers whose answers were judged not confident, in order.
    pub escalations: Vec<Escalation>,
}

/// The joint decision, as the client and the trace see it.
#[derive(Debug, Clone)]
pub struct JointView {
    pub preferred: String,
    /// The headroom tier (taken only onto a free slot).
    pub stretch: String,
    pub routed_quality: Option<f32>,
    pub deadline_ms: Option<u64>,
    pub moved: &'static str,
    pub considered: Vec<ConsideredView>,
}

#[derive(Debug, Clone)]
pub struct ConsideredView {
    pub tier: String,
    pub worker: String,
    pub queue_depth: u32,
    pub expected_wait_ms: u64,
    pub expected_e2e_ms: u64,
    pub meets_deadline: bool,
    pub cost: f64,
}

/// One escalation: which answer was dropped, why, and what it cost.
#[derive(Debug, Clone)]
pub struct Escalation {
    pub from_tier: String,
    pub from_worker: String,
    pub to_tier: String,
    pub reason: &'static str,
    pub confidence: Option<crate::cascade::Confidence>,
    /// Tokens the lower tier generated for nothing.
    pub wasted_tokens: u32,
}

/// An f32 as the short decimal it stands for (0.95, not 0.949999988079071).
fn round6(x: f32) -> f64 {
    (f64::from(x) * 1e6).round() / 1e6
}

impl Decision {
    pub fn new(reason: &'static str, candidates: usize) -> Self {
        Self {
            tier: String::new(),
            worker: String::new(),
            node: String::new(),
            model: String::new(),
            reason,
            candidates,
            queue_depth: 0,
            retries: Vec::new(),
            difficulty: None,
            joint: None,
            escalations: Vec::new(),
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "tier": self.tier,
            "worker": self.worker,
            "node": self.node,
            "model": self.model,
            "reason": self.reason,
            "candidates": self.candidates,
            "queue_depth": self.queue_depth,
            "retries": self.retries.iter().map(|(w, why)| json!({"worker": w, "reason": why})).collect::<Vec<_>>(),
            "escalations": self.escalations.iter().map(|e| json!({
                "from_tier": e.from_tier,
                "from_worker": e.from_worker,
                "to_tier": e.to_tier,
                "reason": e.reason,
                "wasted_tokens": e.wasted_tokens,
                "confidence": e.confidence.map(|c| json!({
                    "tokens": c.tokens,
                    "mean_logprob": round6(c.mean_logprob),
                    "min_logprob": round6(c.min_logprob),
                    "first_margin": c.first_margin.map(round6),
                })),
            })).collect::<Vec<_>>(),
            "joint": self.joint.as_ref().map(|j| json!({
                "preferred_tier": j.preferred,
                "stretch_tier": j.stretch,
                "routed_quality": j.routed_quality.map(round6),
                "deadline_ms": j.deadline_ms,
                "moved": j.moved,
                "considered": j.considered.iter().map(|c| json!({
                    "tier": c.tier,
                    "worker": c.worker,
                    "queue_depth": c.queue_depth,
                    "expected_wait_ms": c.expected_wait_ms,
                    "expected_e2e_ms": c.expected_e2e_ms,
                    "meets_deadline": c.meets_deadline,
                    "cost": c.cost,
                })).collect::<Vec<_>>(),
            })),
            "difficulty": self.difficulty.as_ref().map(|p| json!({
                "quality_target": round6(p.quality),
                "threshold": round6(p.threshold),
                "gain": round6(p.gain),
                "tier": p.tier,
                "reason": p.reason,
                "probabilities": p.probabilities.iter().map(|(t, v)| (t.clone(), json!(round6(*v)))).collect::<serde_json::Map<_, _>>(),
                "gaps": p.gaps.iter().map(|(t, v)| (t.clone(), json!(round6(*v)))).collect::<serde_json::Map<_, _>>(),
            })),
        })
    }
}

/// Everything a finished generation produced.
#[derive(Debug, Default)]
pub struct Collected {
    pub text: String,
    pub tokens: Vec<pb::TokenLogprob>,
    pub finish: Option<pb::FinishReason>,
    pub usage: Option<pb::Usage>,
    /// The answer's function calls (finish `tool_calls`).
    pub tool_calls: Vec<pb::ToolCall>,
}

impl Collected {
    pub fn push(&mut self, chunk: pb::GenerateChunk) {
        self.text.push_str(&chunk.text);
        self.tokens.extend(chunk.tokens);
        self.tool_calls.extend(chunk.tool_calls);
        if let Some(f) = finish_of(chunk.finish_reason) {
            self.finish = Some(f);
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
    }
}

/// The finish reason of a chunk, if it is the final one.
pub fn finish_of(raw: i32) -> Option<pb::FinishReason> {
    match pb::FinishReason::try_from(raw) {
        Ok(pb::FinishReason::Unspecified) | Err(_) => None,
        Ok(f) => Some(f),
    }
}

pub fn finish_str(f: pb::FinishReason) -> &'static str {
    match f {
        pb::FinishReason::Length => "length",
        pb::FinishReason::ToolCalls => "tool_calls",
        pb::FinishReason::Stop | pb::FinishReason::Unspecified => "stop",
    }
}

pub fn usage_json(usage: Option<&pb::Usage>, streamed_tokens: usize) -> Value {
    let prompt = usage.map_or(0, |u| u.prompt_tokens);
    let completion = usage.map_or(streamed_tokens as u32, |u| u.completion_tokens);
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

/// A token's exact bytes, as the worker sent them (older workers send only the text).
fn token_bytes<'a>(bytes: &'a [u8], token: &'a str) -> &'a [u8] {
    if bytes.is_empty() {
        token.as_bytes()
    } else {
        bytes
    }
}

/// The assistant message of a whole chat answer: its calls, when it made some (and then no
/// content, as OpenAI returns them).
fn chat_message(c: &Collected) -> Value {
    if c.tool_calls.is_empty() {
        json!({"role": "assistant", "content": c.text})
    } else {
        json!({
            "role": "assistant",
            "content": if c.text.is_empty() { Value::Null } else { json!(c.text) },
            "tool_calls": c.tool_calls.iter().map(super::tools::call_json).collect::<Vec<_>>(),
        })
    }
}

fn chat_logprobs(tokens: &[pb::TokenLogprob]) -> Value {
    json!({
        "content": tokens.iter().map(|t| json!({
            "token": t.token,
            "logprob": t.logprob,
            "bytes": token_bytes(&t.bytes, &t.token),
            "top_logprobs": t.top.iter().map(|a| json!({
                "token": a.token,
                "logprob": a.logprob,
                "bytes": token_bytes(&a.bytes, &a.token),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>()
    })
}

fn completion_logprobs(tokens: &[pb::TokenLogprob]) -> Value {
    let mut offset = 0usize;
    let mut offsets = Vec::with_capacity(tokens.len());
    for t in tokens {
        offsets.push(offset);
        offset += t.token.len();
    }
    json!({
        "tokens": tokens.iter().map(|t| &t.token).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(|t| {
            t.top.iter().map(|a| (a.token.clone(), json!(a.logprob))).collect::<serde_json::Map<_, _>>()
        }).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

/// The whole (non-streaming) response body.
pub fn whole(
    endpoint: Endpoint,
    id: &str,
    created: u64,
    decision: &Decision,
    c: &Collected,
    logprobs: bool,
) -> Value {
    let finish = finish_str(c.finish.unwrap_or(pb::FinishReason::Stop));
    let usage = usage_json(c.usage.as_ref(), c.tokens.len());
    match endpoint {
        Endpoint::Chat => json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": decision.model,
            "choices": [{
                "index": 0,
                "message": chat_message(c),
                "logprobs": if logprobs { chat_logprobs(&c.tokens) } else { Value::Null },
                "finish_reason": finish,
            }],
            "usage": usage,
            "switchback": decision.json(),
        }),
        Endpoint::Completion => json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": decision.model,
            "choices": [{
                "index": 0,
                "text": c.text,
                "logprobs": if logprobs { completion_logprobs(&c.tokens) } else { Value::Null },
                "finish_reason": finish,
            }],
            "usage": usage,
            "switchback": decision.json(),
        }),
    }
}

/// What every chunk of one stream shares.
#[derive(Debug, Clone)]
pub struct StreamHead {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub logprobs: bool,
}

impl StreamHead {
    fn object(&self) -> &'static str {
        match self.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completion => "text_completion",
        }
    }

    /// One streamed chunk. `text: None` is the role-only opening chat chunk; `calls` are
    /// streamed whole, one entry per call in one delta.
    pub fn chunk(
        &self,
        text: Option<&str>,
        tokens: &[pb::TokenLogprob],
        calls: &[pb::ToolCall],
        finish: Option<pb::FinishReason>,
    ) -> Value {
        let finish = finish.map(finish_str);
        let logprobs = self.logprobs && !tokens.is_empty();
        let choice = match self.endpoint {
            Endpoint::Chat => {
                let delta = match text {
                    None => json!({"role": "assistant", "content": ""}),
                    Some(_) if !calls.is_empty() => json!({
                        "tool_calls": calls.iter().enumerate().map(|(i, c)| {
                            let mut call = super::tools::call_json(c);
                            call["index"] = json!(i);
                            call
                        }).collect::<Vec<_>>(),
                    }),
                    Some(t) if finish.is_some() && t.is_empty() => json!({}),
                    Some(t) => json!({"content": t}),
                };
                json!({
                    "index": 0,
                    "delta": delta,
                    "logprobs": if logprobs { chat_logprobs(tokens) } else { Value::Null },
                    "finish_reason": finish,
                })
            }
            Endpoint::Completion => json!({
                "index": 0,
                "text": text.unwrap_or(""),
                "logprobs": if logprobs { completion_logprobs(tokens) } else { Value::Null },
                "finish_reason": finish,
            }),
        };
        json!({
            "id": self.id,
            "object": self.object(),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }

    /// The usage-only chunk sent when `stream_options.include_usage` is set.
    pub fn usage(&self, usage: Value, decision: &Decision) -> Value {
        json!({
            "id": self.id,
            "object": self.object(),
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
            "switchback": decision.json(),
        })
    }
}
