//! OpenAI response bodies, whole and streamed, from the pipeline's answer: the chunks'
//! JSON, the `switchback` decision object, usage and log-probabilities.

use axum::body::Bytes;
use serde::Serialize;
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

/// The `usage` object.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

/// The usage the worker reported, or the tokens streamed when it reported none.
pub fn usage(usage: Option<&pb::Usage>, streamed_tokens: usize) -> Usage {
    let prompt = usage.map_or(0, |u| u.prompt_tokens);
    let completion = usage.map_or(streamed_tokens as u32, |u| u.completion_tokens);
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
    }
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
/// content, as OpenAI returns them). `refusal` is always null: the router never refuses
/// in-band.
#[derive(Serialize)]
pub struct Message<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: (),
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<Value>>,
}

fn chat_message(c: &Collected) -> Message<'_> {
    if c.tool_calls.is_empty() {
        Message {
            role: "assistant",
            content: Some(&c.text),
            refusal: (),
            tool_calls: None,
        }
    } else {
        Message {
            role: "assistant",
            content: (!c.text.is_empty()).then_some(c.text.as_str()),
            refusal: (),
            tool_calls: Some(
                c.tool_calls
                    .iter()
                    .map(super::openai::tools::call_json)
                    .collect(),
            ),
        }
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

/// A response body, whole or one streamed chunk: the fields every OpenAI body shares,
/// then what this one carries. Serialized straight from the answer, no JSON tree between.
#[derive(Serialize)]
pub struct Body<'a, C> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: C,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    switchback: Option<&'a Decision>,
    /// Chat bodies carry it; completions have none.
    #[serde(skip_serializing_if = "Option::is_none")]
    service_tier: Option<&'static str>,
}

/// One choice: a chat `message` or `delta`, or a completion's `text`.
#[derive(Serialize)]
pub struct Choice<'a, M> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<M>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<M>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    logprobs: Option<Value>,
    finish_reason: Option<&'static str>,
}

/// The whole (non-streaming) response body.
pub fn whole<'a>(
    endpoint: Endpoint,
    id: &'a str,
    created: u64,
    decision: &'a Decision,
    c: &'a Collected,
    logprobs: bool,
) -> Body<'a, [Choice<'a, Message<'a>>; 1]> {
    let finish = finish_str(c.finish.unwrap_or(pb::FinishReason::Stop));
    let (object, choice, service_tier) = match endpoint {
        Endpoint::Chat => (
            "chat.completion",
            Choice {
                index: 0,
                message: Some(chat_message(c)),
                delta: None,
                text: None,
                logprobs: logprobs.then(|| chat_logprobs(&c.tokens)),
                finish_reason: Some(finish),
            },
            Some(SERVICE_TIER),
        ),
        Endpoint::Completion => (
            "text_completion",
            Choice {
                index: 0,
                message: None,
                delta: None,
                text: Some(&c.text),
                logprobs: logprobs.then(|| completion_logprobs(&c.tokens, 0).0),
                finish_reason: Some(finish),
            },
            None,
        ),
    };
    Body {
        id,
        object,
        created,
        model: &decision.model,
        choices: [choice],
        usage: Some(usage(c.usage.as_ref(), c.tokens.len())),
        switchback: Some(decision),
        service_tier,
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
    pub fn chunk<'a>(
        &'a mut self,
        text: Option<&'a str>,
        tokens: &[pb::TokenLogprob],
        calls: &[pb::ToolCall],
        finish: Option<pb::FinishReason>,
    ) -> Body<'a, [Choice<'a, Delta<'a>>; 1]> {
        let finish = finish.map(finish_str);
        let logprobs = self.logprobs && !tokens.is_empty();
        let choice = match self.endpoint {
            Endpoint::Chat => {
                let delta = match text {
                    None => Delta {
                        role: Some("assistant"),
                        content: Some(""),
                        tool_calls: None,
                    },
                    Some(_) if !calls.is_empty() => Delta {
                        role: None,
                        content: None,
                        tool_calls: Some(
                            calls
                                .iter()
                                .enumerate()
                                .map(|(i, c)| {
                                    let mut call = super::openai::tools::call_json(c);
                                    call["index"] = Value::from(i);
                                    call
                                })
                                .collect(),
                        ),
                    },
                    Some(t) if finish.is_some() && t.is_empty() => Delta::default(),
                    Some(t) => Delta {
                        role: None,
                        content: Some(t),
                        tool_calls: None,
                    },
                };
                Choice {
                    index: 0,
                    message: None,
                    delta: Some(delta),
                    text: None,
                    logprobs: logprobs.then(|| chat_logprobs(tokens)),
                    finish_reason: finish,
                }
            }
            Endpoint::Completion => {
                let logprobs = logprobs.then(|| {
                    let (body, end) = completion_logprobs(tokens, self.text_offset);
                    self.text_offset = end;
                    body
                });
                Choice {
                    index: 0,
                    message: None,
                    delta: None,
                    text: Some(text.unwrap_or("")),
                    logprobs,
                    finish_reason: finish,
                }
            }
        };
        self.body([choice], None, None)
    }

    /// The fields every chunk of the stream shares around `choices`. Chat chunks carry
    /// `service_tier`, as whole chat answers do; completions have none.
    fn body<'a, C>(
        &'a self,
        choices: C,
        usage: Option<Usage>,
        switchback: Option<&'a Decision>,
    ) -> Body<'a, C> {
        Body {
            id: &self.id,
            object: self.object(),
            created: self.created,
            model: &self.model,
            choices,
            usage,
            switchback,
            service_tier: (self.endpoint == Endpoint::Chat).then_some(SERVICE_TIER),
        }
    }

    /// The usage-only chunk sent when `stream_options.include_usage` is set.
    pub fn usage<'a>(
        &'a self,
        usage: Usage,
        decision: &'a Decision,
    ) -> Body<'a, [Choice<'a, Delta<'a>>; 0]> {
        self.body([], Some(usage), Some(decision))
    }
}

/// A chat chunk's `delta`: the role-only opening, a piece of content, the calls, or nothing
/// (the closing chunk that only carries the finish reason).
#[derive(Default, Serialize)]
pub struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<Value>>,
}

/// One server-sent event carrying `body` as JSON: `data: {...}` and a blank line.
pub fn event(body: &impl Serialize) -> Bytes {
    let mut out = b"data: ".to_vec();
    // Plain data with string keys: serializing it cannot fail.
    let _ = serde_json::to_writer(&mut out, body);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::decision::Route;

    fn json_of(body: impl Serialize) -> Value {
        serde_json::to_value(body).expect("serializes")
    }

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
        let body = json_of(whole(
            Endpoint::Chat,
            "chatcmpl-1",
            7,
            &decision(),
            &c,
            true,
        ));
        assert_eq!(*present(&body, "/choices/0/message/refusal"), Value::Null);
        assert_eq!(*present(&body, "/choices/0/logprobs/refusal"), Value::Null);
        assert_eq!(body["choices"][0]["message"]["content"], "Hi there");
        assert_eq!(
            body["choices"][0]["logprobs"]["content"][1]["token"],
            " there"
        );
        assert_eq!(body["service_tier"], SERVICE_TIER);
        // Without logprobs the message still has its refusal.
        let body = json_of(whole(
            Endpoint::Chat,
            "chatcmpl-1",
            7,
            &decision(),
            &c,
            false,
        ));
        assert_eq!(*present(&body, "/choices/0/message/refusal"), Value::Null);
        assert_eq!(*present(&body, "/choices/0/logprobs"), Value::Null);
    }

    #[test]
    fn streamed_chat_logprobs_carry_a_null_refusal() {
        let mut head = StreamHead::new(Endpoint::Chat, "chatcmpl-1".into(), 7, "m".into(), true);
        let opening = json_of(head.chunk(None, &[], &[], None));
        assert_eq!(opening["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(opening["service_tier"], SERVICE_TIER);
        let chunk = json_of(head.chunk(Some("Hi"), &[token("Hi")], &[], None));
        assert_eq!(*present(&chunk, "/choices/0/logprobs/refusal"), Value::Null);
        assert_eq!(chunk["choices"][0]["logprobs"]["content"][0]["token"], "Hi");
        assert_eq!(
            json_of(head.usage(usage(None, 1), &decision()))["service_tier"],
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
            let chunk = json_of(head.chunk(Some("text"), &tokens, &[], None));
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
        let body = json_of(whole(
            Endpoint::Completion,
            "cmpl-1",
            7,
            &decision(),
            &c,
            true,
        ));
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
