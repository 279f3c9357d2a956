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
    pub reason: crate::cascade::EscalationReason,
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
                "reason": e.reason.as_str(),
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
        json!({"role": "assistant", "content": c.text, "refusal": null})
    } else {
        json!({
            "role": "assistant",
            "content": if c.text.is_empty() { Value::Null } else { json!(c.text) },
            "refusal": null,
            "tool_calls": c.tool_calls.iter().map(super::tools::call_json).collect::<Vec<_>>(),
        })
    }
}

/// The tier OpenAI's `service_tier` response field reports: every request is served the
/// same way, whatever the request's `service_tier` asked for.
pub const SERVICE_TIER: &str = "default";

/// A chat `logprobs` object. `refusal` is always null: the router never refuses in-band.
fn chat_logprobs(tokens: &[pb::TokenLogprob]) -> Value {
    json!({
        "refusal": null,
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

/// A completion `logprobs` object for `tokens`, whose first token starts `start` bytes
/// into the choice's text; `text_offset` holds each token's byte offset into that text.
/// Returns the object and the offset just past the last token.
fn completion_logprobs(tokens: &[pb::TokenLogprob], start: usize) -> (Value, usize) {
    let mut offset = start;
    let mut offsets = Vec::with_capacity(tokens.len());
    for t in tokens {
        offsets.push(offset);
        offset += t.token.len();
    }
    let body = json!({
        "tokens": tokens.iter().map(|t| &t.token).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(|t| {
            t.top.iter().map(|a| (a.token.clone(), json!(a.logprob))).collect::<serde_json::Map<_, _>>()
        }).collect::<Vec<_>>(),
        "text_offset": offsets,
    });
    (body, offset)
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
            "service_tier": SERVICE_TIER,
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
                "logprobs": if logprobs { completion_logprobs(&c.tokens, 0).0 } else { Value::Null },
                "finish_reason": finish,
            }],
            "usage": usage,
            "switchback": decision.json(),
        }),
    }
}

/// What every chunk of one stream shares, and where the stream's text has got to.
#[derive(Debug, Clone)]
pub struct StreamHead {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub logprobs: bool,
    /// Bytes of completion text the tokens of earlier chunks covered: where the next
    /// chunk's `text_offset` starts.
    text_offset: usize,
}

impl StreamHead {
    pub fn new(
        endpoint: Endpoint,
        id: String,
        created: u64,
        model: String,
        logprobs: bool,
    ) -> Self {
        Self {
            endpoint,
            id,
            created,
            model,
            logprobs,
            text_offset: 0,
        }
    }

    fn object(&self) -> &'static str {
        match self.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completion => "text_completion",
        }
    }

    /// One streamed chunk. `text: None` is the role-only opening chat chunk; `calls` are
    /// streamed whole, one entry per call in one delta. Chunks are made in stream order: a
    /// completion's `text_offset` continues from the last chunk.
    pub fn chunk(
        &mut self,
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
            Endpoint::Completion => {
                let logprobs = if logprobs {
                    let (body, end) = completion_logprobs(tokens, self.text_offset);
                    self.text_offset = end;
                    body
                } else {
                    Value::Null
                };
                json!({
                    "index": 0,
                    "text": text.unwrap_or(""),
                    "logprobs": logprobs,
                    "finish_reason": finish,
                })
            }
        };
        let mut chunk = json!({
            "id": self.id,
            "object": self.object(),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        });
        self.service_tier(&mut chunk);
        chunk
    }

    /// Chat chunks carry `service_tier`, as whole chat answers do; completions have none.
    fn service_tier(&self, chunk: &mut Value) {
        match self.endpoint {
            Endpoint::Chat => chunk["service_tier"] = json!(SERVICE_TIER),
            Endpoint::Completion => {}
        }
    }

    /// The usage-only chunk sent when `stream_options.include_usage` is set.
    pub fn usage(&self, usage: Value, decision: &Decision) -> Value {
        let mut chunk = json!({
            "id": self.id,
            "object": self.object(),
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
            "switchback": decision.json(),
        });
        self.service_tier(&mut chunk);
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> pb::TokenLogprob {
        pb::TokenLogprob {
            token: text.to_owned(),
            token_id: None,
            logprob: -0.5,
            top: vec![pb::TopLogprob {
                token_id: 1,
                token: text.to_owned(),
                logprob: -0.5,
                bytes: text.as_bytes().to_vec(),
            }],
            bytes: text.as_bytes().to_vec(),
        }
    }

    fn collected(tokens: &[&str]) -> Collected {
        Collected {
            text: tokens.concat(),
            tokens: tokens.iter().map(|t| token(t)).collect(),
            finish: Some(pb::FinishReason::Stop),
            usage: None,
            tool_calls: Vec::new(),
        }
    }

    fn decision() -> Decision {
        Decision {
            model: "m".into(),
            ..Decision::new("tier", 1)
        }
    }

    /// The value at `pointer`, which must be present (a JSON null counts as present).
    fn present<'a>(body: &'a Value, pointer: &str) -> &'a Value {
        body.pointer(pointer)
            .unwrap_or_else(|| panic!("{pointer} is missing from {body}"))
    }

    #[test]
    fn whole_chat_answers_carry_the_fields_openai_requires() {
        let c = collected(&["Hi", " there"]);
        let body = whole(Endpoint::Chat, "chatcmpl-1", 7, &decision(), &c, true);
        assert_eq!(*present(&body, "/choices/0/message/refusal"), Value::Null);
        assert_eq!(*present(&body, "/choices/0/logprobs/refusal"), Value::Null);
        assert_eq!(body["choices"][0]["message"]["content"], "Hi there");
        assert_eq!(
            body["choices"][0]["logprobs"]["content"][1]["token"],
            " there"
        );
        assert_eq!(body["service_tier"], SERVICE_TIER);
        // Without logprobs the message still has its refusal.
        let body = whole(Endpoint::Chat, "chatcmpl-1", 7, &decision(), &c, false);
        assert_eq!(*present(&body, "/choices/0/message/refusal"), Value::Null);
        assert_eq!(*present(&body, "/choices/0/logprobs"), Value::Null);
    }

    #[test]
    fn streamed_chat_logprobs_carry_a_null_refusal() {
        let mut head = StreamHead::new(Endpoint::Chat, "chatcmpl-1".into(), 7, "m".into(), true);
        let opening = head.chunk(None, &[], &[], None);
        assert_eq!(opening["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(opening["service_tier"], SERVICE_TIER);
        let chunk = head.chunk(Some("Hi"), &[token("Hi")], &[], None);
        assert_eq!(*present(&chunk, "/choices/0/logprobs/refusal"), Value::Null);
        assert_eq!(chunk["choices"][0]["logprobs"]["content"][0]["token"], "Hi");
        assert_eq!(
            head.usage(usage_json(None, 1), &decision())["service_tier"],
            SERVICE_TIER
        );
    }

    #[test]
    fn completion_text_offsets_continue_across_streamed_chunks() {
        let pieces = [&["Once", " upon"][..], &[" a"], &[" time", "."]];
        let mut head = StreamHead::new(Endpoint::Completion, "cmpl-1".into(), 7, "m".into(), true);
        let mut streamed = Vec::new();
        for tokens in pieces {
            let tokens: Vec<_> = tokens.iter().map(|t| token(t)).collect();
            let chunk = head.chunk(Some("text"), &tokens, &[], None);
            assert!(chunk.get("service_tier").is_none(), "{chunk}");
            let offsets = chunk["choices"][0]["logprobs"]["text_offset"]
                .as_array()
                .expect("text_offset")
                .iter()
                .map(|v| v.as_u64().expect("offset"))
                .collect::<Vec<_>>();
            streamed.extend(offsets);
        }
        assert_eq!(streamed, vec![0, 4, 9, 11, 16]);
        // The whole answer's offsets are the same ones: each token's start in the text.
        let c = collected(&["Once", " upon", " a", " time", "."]);
        let body = whole(Endpoint::Completion, "cmpl-1", 7, &decision(), &c, true);
        assert_eq!(
            body["choices"][0]["logprobs"]["text_offset"],
            json!(streamed)
        );
        for (i, t) in ["Once", " upon", " a", " time", "."].iter().enumerate() {
            let at = usize::try_from(streamed[i]).expect("offset");
            assert!(c.text[at..].starts_with(t), "{t} at {at}");
        }
        assert!(body.get("service_tier").is_none(), "{body}");
    }
}
