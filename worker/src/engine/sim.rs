//! The `sim` engine: no weights, deterministic text and realistic timing (prefill cost per
//! prompt token, then a fixed time per generated token), so GPU-less clusters, scale tests
//! and the simulator exercise the same gRPC path as real inference.
//!
//! Concurrency is bounded by the worker's admission layer, exactly as for real engines.

use std::time::Duration;

use futures::StreamExt;

use super::{
    Engine, EngineError, EngineEvent, EventStream, FinishReason, GenerateParams, Prompt, Token,
    TopToken,
};
use crate::config::SimConfig;

const WORDS: &[&str] = &[
    "the",
    "cluster",
    "routes",
    "each",
    "query",
    "to",
    "a",
    "model",
    "that",
    "fits",
    "its",
    "difficulty",
    "and",
    "load",
    "switchback",
    "serves",
    "tokens",
    "quickly",
];

#[derive(Debug)]
pub struct SimEngine {
    config: SimConfig,
}

impl SimEngine {
    pub fn new(config: SimConfig) -> Self {
        Self { config }
    }
}

/// Whitespace-separated words stand in for tokens.
fn count_prompt_tokens(prompt: &Prompt) -> u32 {
    let words = match prompt {
        Prompt::Text(text) => text.split_whitespace().count(),
        Prompt::Chat(messages) => messages
            .iter()
            .map(|m| m.content.split_whitespace().count() + 4)
            .sum(),
    };
    u32::try_from(words.max(1)).unwrap_or(u32::MAX)
}

/// FNV-1a: the generated text depends only on the prompt.
fn seed_of(prompt: &Prompt) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |s: &str| {
        for b in s.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    match prompt {
        Prompt::Text(t) => feed(t),
        Prompt::Chat(ms) => ms.iter().for_each(|m| {
            feed(&m.role);
            feed(&m.content)
        }),
    }
    h
}

impl Engine for SimEngine {
    fn kind(&self) -> &'static str {
        "sim"
    }

    fn accelerator(&self) -> String {
        "none".to_owned()
    }

    fn generate(&self, params: GenerateParams) -> EventStream {
        let prompt_tokens = count_prompt_tokens(&params.prompt);
        let max_tokens = if params.sampling.max_tokens == 0 {
            self.config.default_tokens
        } else {
            params.sampling.max_tokens
        };
        let config = self.config.clone();
        let mut state = seed_of(&params.prompt);
        let top_n = params.top_logprobs as usize;
        let delay = move |index| config.token_delay(prompt_tokens, index);
        let stream = async_stream(prompt_tokens, max_tokens, delay, move || {
            // xorshift: deterministic per prompt.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let id = (state % WORDS.len() as u64) as u32;
            let logprob = -((state >> 40) as f32 / (1u64 << 24) as f32);
            let top = (0..top_n)
                .map(|i| {
                    let tid = (id + i as u32) % WORDS.len() as u32;
                    let token = format!(" {}", WORDS[tid as usize]);
                    TopToken {
                        token_id: tid,
                        bytes: token.clone().into_bytes(),
                        token,
                        logprob: logprob - i as f32,
                    }
                })
                .collect();
            let text = format!(" {}", WORDS[id as usize]);
            Token {
                bytes: text.clone().into_bytes(),
                text,
                token_id: Some(id),
                logprob,
                top,
            }
        });
        futures::stream::iter([Ok(EngineEvent::Started { prompt_tokens })])
            .chain(stream)
            .boxed()
    }
}

impl SimConfig {
    /// How long token `index` (0-based) of a generation takes: the first token pays for
    /// the prefill of `prompt_tokens` too.
    pub fn token_delay(&self, prompt_tokens: u32, index: u32) -> Duration {
        let ms = if index == 0 {
            self.prefill_ms_per_token * f64::from(prompt_tokens) + self.decode_ms_per_token
        } else {
            self.decode_ms_per_token
        };
        Duration::from_secs_f64(ms / 1000.0)
    }
}

fn async_stream(
    prompt_tokens: u32,
    max_tokens: u32,
    delay: impl Fn(u32) -> Duration + Send + 'static,
    mut next: impl FnMut() -> Token + Send + 'static,
) -> impl futures::Stream<Item = Result<EngineEvent, EngineError>> + Send + 'static {
    futures::stream::unfold(0u32, move |produced| {
        let delay = delay(produced);
        let event = if produced < max_tokens {
            let token = next();
            Some(EngineEvent::Delta {
                text: token.text.clone(),
                tokens: vec![token],
            })
        } else if produced == max_tokens {
            Some(EngineEvent::Done {
                finish: FinishReason::Length,
                prompt_tokens,
                completion_tokens: max_tokens,
            })
        } else {
            None
        };
        async move {
            let event = event?;
            // A zero-length sleep still waits for the timer's next 1 ms tick.
            if matches!(event, EngineEvent::Delta { .. }) && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Some((Ok(event), produced + 1))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ChatMessage, Sampling};

    fn params(text: &str, max_tokens: u32) -> GenerateParams {
        GenerateParams {
            request_id: "r".into(),
            prompt: Prompt::Chat(vec![ChatMessage {
                role: "user".into(),
                content: text.into(),
                ..ChatMessage::default()
            }]),
            sampling: Sampling {
                max_tokens,
                ..Sampling::default()
            },
            top_logprobs: 2,
            tools: None,
            format: crate::engine::Format::Text,
        }
    }

    async fn run(engine: &SimEngine, p: GenerateParams) -> Vec<EngineEvent> {
        engine
            .generate(p)
            .map(|e| e.expect("sim never fails"))
            .collect()
            .await
    }

    #[tokio::test]
    async fn generates_max_tokens_then_done_with_usage() {
        let engine = SimEngine::new(SimConfig {
            prefill_ms_per_token: 0.0,
            decode_ms_per_token: 0.0,
            default_tokens: 8,
        });
        let events = run(&engine, params("hello there", 3)).await;
        assert_eq!(events.len(), 5);
        assert_eq!(events[0], EngineEvent::Started { prompt_tokens: 6 });
        for e in &events[1..4] {
            let EngineEvent::Delta { tokens, .. } = e else {
                panic!("expected a delta, got {e:?}")
            };
            assert_eq!(tokens.len(), 1);
            assert_eq!(tokens[0].top.len(), 2);
            assert!(tokens[0].logprob <= 0.0);
        }
        assert_eq!(
            events[4],
            EngineEvent::Done {
                finish: FinishReason::Length,
                prompt_tokens: 6,
                completion_tokens: 3
            }
        );
    }

    #[tokio::test]
    async fn text_is_deterministic_per_prompt() {
        let engine = SimEngine::new(SimConfig {
            prefill_ms_per_token: 0.0,
            decode_ms_per_token: 0.0,
            default_tokens: 8,
        });
        let a = run(&engine, params("same", 0)).await;
        let b = run(&engine, params("same", 0)).await;
        let c = run(&engine, params("different", 0)).await;
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 10, "default_tokens applies when max_tokens is 0");
    }

    #[test]
    fn timing_follows_the_configured_speeds() {
        let config = SimConfig {
            prefill_ms_per_token: 10.0,
            decode_ms_per_token: 20.0,
            default_tokens: 8,
        };
        // 10 prompt tokens at 10 ms, then 20 ms per token.
        assert_eq!(config.token_delay(10, 0), Duration::from_millis(120));
        assert_eq!(config.token_delay(10, 1), Duration::from_millis(20));
        assert_eq!(config.token_delay(10, 7), Duration::from_millis(20));
        // 6 words + 4 for the chat message's framing.
        let p = params("one two three four five six", 2);
        assert_eq!(count_prompt_tokens(&p.prompt), 10);
    }
}
