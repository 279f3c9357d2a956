//! What the client receives of a generation: the answer ends before the first stop
//! sequence, and an answer made of tool calls comes back as calls, not as their text. One
//! layer over any engine's events, so `sim` and `mistralrs` behave alike.
//!
//! Stop sequences are matched on the text, not on tokens, so one that ends inside a token
//! still stops the answer there. Text that might be the start of a stop sequence is held
//! back until it either completes one (and is dropped) or cannot (and is released), so a
//! stream never shows text past a stop. Each token travels with the text it starts in; the
//! token that completes a stop is counted in usage but not listed, unless some of its text
//! was returned.

use std::collections::VecDeque;

use futures::StreamExt;

use super::{
    EngineError, EngineEvent, EventStream, FinishReason, Token, ToolChoice, Tools, constrain,
};

/// How the answer is shaped.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    pub stop: Vec<String>,
    /// The tools the answer may call (offered, choice other than `none`).
    pub calls: Option<Tools>,
    /// Prefix of the calls' ids.
    pub call_ids: String,
}

impl Shape {
    pub fn new(stop: Vec<String>, tools: Option<&Tools>, request_id: &str) -> Self {
        Self {
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
            calls: tools
                .filter(|t| t.choice != ToolChoice::None && !t.list.is_empty())
                .cloned(),
            call_ids: format!("call_{}_", short_id(request_id)),
        }
    }

    fn is_plain(&self) -> bool {
        self.stop.is_empty() && self.calls.is_none()
    }
}

/// 16 hex digits from a request id, so call ids are short and stable per request.
fn short_id(request_id: &str) -> String {
    let h = request_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{h:016x}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Not yet known whether the answer is calls or prose.
    Undecided,
    Prose,
    Calls,
}

#[derive(Debug)]
struct State {
    shape: Shape,
    kind: Kind,
    /// Text generated but not yet sent.
    held: String,
    /// Tokens not yet sent, with the offset (in the whole answer's text) where each starts.
    tokens: VecDeque<(usize, Token)>,
    /// Bytes of text sent so far.
    sent: usize,
    /// Where the next token starts.
    next_offset: usize,
    generated: u32,
    prompt_tokens: u32,
    finished: bool,
}

impl State {
    fn new(shape: Shape) -> Self {
        let kind = if shape.calls.is_some() {
            Kind::Undecided
        } else {
            Kind::Prose
        };
        Self {
            shape,
            kind,
            held: String::new(),
            tokens: VecDeque::new(),
            sent: 0,
            next_offset: 0,
            generated: 0,
            prompt_tokens: 0,
            finished: false,
        }
    }

    /// Sends the first `n` bytes of the held text with the tokens that start in them.
    fn release(&mut self, n: usize) -> Option<EngineEvent> {
        if n == 0 {
            return None;
        }
        let text: String = self.held.drain(..n).collect();
        self.sent += n;
        let mut tokens = Vec::new();
        while self.tokens.front().is_some_and(|(at, _)| *at < self.sent) {
            if let Some((_, t)) = self.tokens.pop_front() {
                tokens.push(t);
            }
        }
        Some(EngineEvent::Delta { text, tokens })
    }

    fn on_delta(&mut self, text: String, tokens: Vec<Token>) -> Vec<EngineEvent> {
        for t in tokens {
            let len = t.bytes.len();
            self.tokens.push_back((self.next_offset, t));
            self.next_offset += len;
            self.generated += 1;
        }
        self.held.push_str(&text);
        if self.kind == Kind::Undecided {
            match constrain::opens_calls(self.held.trim_start()) {
                Some(true) => self.kind = Kind::Calls,
                Some(false) => self.kind = Kind::Prose,
                None => {}
            }
        }
        if self.kind != Kind::Prose {
            return Vec::new();
        }
        if let Some(at) = first_stop(&self.held, &self.shape.stop) {
            self.finished = true;
            let mut events: Vec<EngineEvent> = self.release(at).into_iter().collect();
            events.push(EngineEvent::Done {
                finish: FinishReason::Stop,
                prompt_tokens: self.prompt_tokens,
                completion_tokens: self.generated,
            });
            return events;
        }
        let keep = partial_stop(&self.held, &self.shape.stop);
        self.release(self.held.len() - keep).into_iter().collect()
    }

    fn on_done(
        &mut self,
        finish: FinishReason,
        prompt_tokens: u32,
        completion_tokens: u32,
    ) -> Vec<EngineEvent> {
        self.finished = true;
        let mut events = Vec::new();
        let mut finish = finish;
        if self.kind == Kind::Calls
            && finish == FinishReason::Stop
            && let Some(tools) = &self.shape.calls
        {
            match constrain::parse_calls(&self.held, &self.shape.call_ids, tools) {
                Some(calls) => {
                    // The calls replace their text; their tokens still say how sure the
                    // model was.
                    let tokens: Vec<Token> = self.tokens.drain(..).map(|(_, t)| t).collect();
                    self.held.clear();
                    if !tokens.is_empty() {
                        events.push(EngineEvent::Delta {
                            text: String::new(),
                            tokens,
                        });
                    }
                    events.push(EngineEvent::ToolCalls(calls));
                    finish = FinishReason::ToolCalls;
                }
                // JSON that is no call of an offered tool: the text goes out as it is.
                None => tracing::debug!("an answer that looked like calls is text"),
            }
        }
        let rest = self.held.len();
        events.extend(self.release(rest));
        if !self.tokens.is_empty() {
            // Tokens whose text never came (an unfinished character at the very end).
            events.push(EngineEvent::Delta {
                text: String::new(),
                tokens: self.tokens.drain(..).map(|(_, t)| t).collect(),
            });
        }
        events.push(EngineEvent::Done {
            finish,
            prompt_tokens: if prompt_tokens > 0 {
                prompt_tokens
            } else {
                self.prompt_tokens
            },
            completion_tokens: completion_tokens.max(self.generated),
        });
        events
    }
}

/// Where the first stop sequence starts in `text`.
fn first_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops.iter().filter_map(|s| text.find(s.as_str())).min()
}

/// How many bytes at the end of `text` could begin a stop sequence (a proper prefix of
/// one), and so must be held back.
fn partial_stop(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .flat_map(|s| {
            s.char_indices()
                .skip(1)
                .map(|(i, _)| i)
                .filter(|&i| text.ends_with(&s[..i]))
        })
        .max()
        .unwrap_or(0)
}

/// Shapes `events` as `shape` says. Dropping the result drops `events`, which stops the
/// generation: a stop sequence ends the work, not only the answer.
pub fn shape(events: EventStream, shape: Shape) -> EventStream {
    if shape.is_plain() {
        return events;
    }
    let state = State::new(shape);
    events
        .scan(state, |state, event| {
            if state.finished {
                return futures::future::ready(None);
            }
            let out: Vec<Result<EngineEvent, EngineError>> = match event {
                Ok(EngineEvent::Started { prompt_tokens }) => {
                    state.prompt_tokens = prompt_tokens;
                    vec![Ok(EngineEvent::Started { prompt_tokens })]
                }
                Ok(EngineEvent::Delta { text, tokens }) => {
                    state.on_delta(text, tokens).into_iter().map(Ok).collect()
                }
                Ok(EngineEvent::Done {
                    finish,
                    prompt_tokens,
                    completion_tokens,
                }) => state
                    .on_done(finish, prompt_tokens, completion_tokens)
                    .into_iter()
                    .map(Ok)
                    .collect(),
                Ok(other) => vec![Ok(other)],
                Err(e) => {
                    state.finished = true;
                    vec![Err(e)]
                }
            };
            futures::future::ready(Some(futures::stream::iter(out)))
        })
        .flatten()
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Tool, ToolCall};

    fn token(text: &[u8]) -> Token {
        Token {
            text: String::from_utf8_lossy(text).into_owned(),
            bytes: text.to_vec(),
            token_id: Some(1),
            logprob: -0.5,
            top: Vec::new(),
        }
    }

    /// An engine that produced these tokens' bytes, with the text each delta carries (whole
    /// characters only, as the engines send it), then finished with `finish`.
    fn engine(pieces: &[&[u8]], finish: FinishReason) -> EventStream {
        let mut events = vec![Ok(EngineEvent::Started { prompt_tokens: 7 })];
        let mut pending: Vec<u8> = Vec::new();
        for piece in pieces {
            pending.extend_from_slice(piece);
            let valid = match std::str::from_utf8(&pending) {
                Ok(_) => pending.len(),
                Err(e) => e.valid_up_to(),
            };
            let text = String::from_utf8(pending.drain(..valid).collect()).expect("utf-8");
            events.push(Ok(EngineEvent::Delta {
                text,
                tokens: vec![token(piece)],
            }));
        }
        events.push(Ok(EngineEvent::Done {
            finish,
            prompt_tokens: 7,
            completion_tokens: pieces.len() as u32,
        }));
        futures::stream::iter(events).boxed()
    }

    async fn collect(stream: EventStream) -> Vec<EngineEvent> {
        stream.map(|e| e.expect("event")).collect().await
    }

    fn text_of(events: &[EngineEvent]) -> (Vec<String>, usize) {
        let mut deltas = Vec::new();
        let mut tokens = 0;
        for e in events {
            if let EngineEvent::Delta { text, tokens: t } = e {
                deltas.push(text.clone());
                tokens += t.len();
            }
        }
        (deltas, tokens)
    }

    fn done(events: &[EngineEvent]) -> (FinishReason, u32, u32) {
        match events.last() {
            Some(EngineEvent::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            }) => (*finish, *prompt_tokens, *completion_tokens),
            other => panic!("last event {other:?}"),
        }
    }

    fn stops(s: &[&str]) -> Shape {
        Shape::new(s.iter().map(|s| (*s).to_owned()).collect(), None, "r")
    }

    #[tokio::test]
    async fn the_answer_ends_before_a_stop_on_a_token_boundary() {
        let events = collect(shape(
            engine(
                &[b"1", b".", b" Red", b"\n", b"2", b".", b" Blue"],
                FinishReason::Length,
            ),
            stops(&["\n"]),
        ))
        .await;
        let (deltas, tokens) = text_of(&events);
        assert_eq!(deltas.concat(), "1. Red");
        assert_eq!(tokens, 3, "the newline's token brought no text");
        assert_eq!(done(&events), (FinishReason::Stop, 7, 4));
    }

    #[tokio::test]
    async fn a_stop_inside_a_token_cuts_the_token() {
        // "Blue" arrives as " Bl" + "ue," : the stop ends inside the second token.
        let events = collect(shape(
            engine(&[b"Red", b" Bl", b"ue,", b" Green"], FinishReason::Length),
            stops(&["Blue"]),
        ))
        .await;
        let (deltas, tokens) = text_of(&events);
        assert_eq!(deltas.concat(), "Red ");
        assert_eq!(tokens, 2, "\" Bl\" starts in the returned text");
        assert_eq!(done(&events).0, FinishReason::Stop);
    }

    #[tokio::test]
    async fn text_that_could_start_a_stop_is_held_then_released() {
        let events = collect(shape(
            engine(&[b"a", b"<", b"/", b"x", b"b"], FinishReason::Length),
            stops(&["</y>"]),
        ))
        .await;
        let (deltas, tokens) = text_of(&events);
        assert_eq!(deltas, vec!["a", "</x", "b"], "\"<\" and \"</\" waited");
        assert_eq!(tokens, 5);
        assert_eq!(done(&events), (FinishReason::Length, 7, 5));
    }

    #[tokio::test]
    async fn stops_match_across_multibyte_characters() {
        // "é" is split across two tokens; the stop is "é!".
        let events = collect(shape(
            engine(
                &[b"caf", &[0xc3], &[0xa9], b"!", b" more"],
                FinishReason::Length,
            ),
            stops(&["é!"]),
        ))
        .await;
        let (deltas, tokens) = text_of(&events);
        assert_eq!(deltas.concat(), "caf");
        assert_eq!(tokens, 1);
        assert_eq!(done(&events), (FinishReason::Stop, 7, 4));
    }

    fn tool_shape() -> Shape {
        let tools = Tools {
            list: vec![Tool {
                name: "now".into(),
                description: String::new(),
                parameters: serde_json::json!({}),
            }],
            choice: ToolChoice::Auto,
            single: false,
        };
        Shape::new(vec!["\n".into()], Some(&tools), "req-1")
    }

    #[tokio::test]
    async fn an_answer_of_calls_comes_back_as_calls() {
        let events = collect(shape(
            engine(
                &[
                    b"<tool_call>",
                    b"\n{\"name\": \"now\", \"arguments\": {}}",
                    b"\n</tool_call>",
                ],
                FinishReason::Stop,
            ),
            tool_shape(),
        ))
        .await;
        let (deltas, tokens) = text_of(&events);
        assert_eq!(deltas.concat(), "", "no call text as content");
        assert_eq!(tokens, 3, "the calls' tokens keep their log-probabilities");
        let calls: Vec<ToolCall> = events
            .iter()
            .find_map(|e| match e {
                EngineEvent::ToolCalls(c) => Some(c.clone()),
                _ => None,
            })
            .expect("calls");
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "now");
        assert!(calls[0].id.starts_with("call_"));
        assert_eq!(done(&events).0, FinishReason::ToolCalls);
    }

    #[tokio::test]
    async fn unmarked_calls_come_back_as_calls_and_other_fences_as_text() {
        let call: &[&[u8]] = &[b"{\"name\": \"now\",", b" \"arguments\": {}}"];
        let fenced: &[&[u8]] = &[b"``", b"`json\n{\"name\": \"now\", \"arguments\": {}}\n```"];
        for pieces in [call, fenced] {
            let events = collect(shape(engine(pieces, FinishReason::Stop), tool_shape())).await;
            assert!(
                events
                    .iter()
                    .any(|e| matches!(e, EngineEvent::ToolCalls(c) if c[0].name == "now")),
                "{events:?}"
            );
            assert_eq!(text_of(&events).0.concat(), "");
            assert_eq!(done(&events).0, FinishReason::ToolCalls);
        }
        let code = collect(shape(
            engine(&[b"``", b"`py", b"thon"], FinishReason::Stop),
            tool_shape(),
        ))
        .await;
        assert_eq!(text_of(&code).0.concat(), "```python");
        assert_eq!(done(&code).0, FinishReason::Stop);
    }

    #[tokio::test]
    async fn prose_under_tools_is_text_and_a_cut_call_is_not_a_call() {
        let prose = collect(shape(
            engine(&[b"<", b"b>Hi", b"\nthere"], FinishReason::Stop),
            tool_shape(),
        ))
        .await;
        assert_eq!(text_of(&prose).0.concat(), "<b>Hi");
        assert_eq!(done(&prose).0, FinishReason::Stop);
        let cut = collect(shape(
            engine(
                &[b"<tool_call>", b"\n{\"name\": \"now\""],
                FinishReason::Length,
            ),
            tool_shape(),
        ))
        .await;
        assert!(!cut.iter().any(|e| matches!(e, EngineEvent::ToolCalls(_))));
        assert_eq!(text_of(&cut).0.concat(), "<tool_call>\n{\"name\": \"now\"");
        assert_eq!(done(&cut).0, FinishReason::Length);
    }

    #[tokio::test]
    async fn a_plain_request_passes_through() {
        let events = collect(shape(
            engine(&[b"a", b"b"], FinishReason::Stop),
            Shape::new(Vec::new(), None, "r"),
        ))
        .await;
        assert_eq!(events.len(), 4);
        assert_eq!(done(&events), (FinishReason::Stop, 7, 2));
    }
}
