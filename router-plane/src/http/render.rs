//! OpenAI response bodies, whole and streamed, from the pipeline's answer: the chunks'
//! JSON, the `switchback` decision object, usage and log-probabilities.

use serde_json::{Value, json};
use switchback_proto::pb;

use super::Endpoint;
use crate::pipeline::{Collected, Decision};

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
            "tool_calls": c.tool_calls.iter().map(super::openai::tools::call_json).collect::<Vec<_>>(),
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
                            let mut call = super::openai::tools::call_json(c);
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
    use crate::pipeline::decision::Route;

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
            tier: "small".into(),
            worker: "w".into(),
            node: "n".into(),
            model: "m".into(),
            reason: Route::Tier,
            candidates: 1,
            queue_depth: 0,
            retries: Vec::new(),
            escalations: Vec::new(),
            joint: None,
            difficulty: None,
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
