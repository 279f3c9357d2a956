//! The relay stage: the kept answer, handed over for rendering. A whole answer is settled
//! at once; a streamed one becomes a stream of [`Event`]s (pieces of the answer, then its
//! end or the break that cut it short) that the HTTP shell renders as they come, with the
//! request's deadline bounding the whole stream. Either way the key's token charge is
//! settled against the worker's usage and the tier's metrics and the spans' usage are
//! recorded when the answer is done.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::stream::BoxStream;
use switchback_common::trace_context;
use switchback_proto::pb;

use super::{
    Error,
    dispatch::{Collected, Opened, finish_of, report_unreachable, trim_alternatives},
    failure::Failure,
};
use crate::{auth::Charge, metrics::Tier, state::AppState, view::InFlight};

/// A piece of a streamed answer: never empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub text: String,
    pub tokens: Vec<pb::TokenLogprob>,
    pub tool_calls: Vec<pb::ToolCall>,
    /// Set on the answer's last piece.
    pub finish: Option<pb::FinishReason>,
}

/// What a streamed answer yields, in order: pieces, then `End` or `Broke`.
#[derive(Debug)]
pub enum Event {
    Piece(Piece),
    /// The answer is complete: the worker's usage, or the tokens streamed when it sent
    /// none.
    End {
        usage: Option<pb::Usage>,
        streamed_tokens: usize,
    },
    /// The stream broke after the first token (the worker failed, or the deadline came):
    /// nothing follows.
    Broke(Error),
}

/// A streamed answer.
pub type Relay = BoxStream<'static, Event>;

/// The answer, whole or streamed.
pub enum Body {
    Whole(Collected),
    Stream(Relay),
}

/// What the relay settles when the answer is done, from the stages before it.
pub struct Settle {
    pub app: Arc<AppState>,
    pub tier: String,
    pub worker: String,
    /// The key's up-front token charge, if its key has a tokens-per-minute limit.
    pub charge: Option<Charge>,
    /// When the request reached the pipeline, for the time to first token and the
    /// duration.
    pub started: Instant,
    /// Alternatives per token the client asked for.
    pub alternatives: u32,
    /// The request's span and the kept attempt's: open until the answer is done.
    pub request_span: tracing::Span,
    pub attempt_span: tracing::Span,
}

impl Settle {
    /// Settles the charge against `usage` (`fallback` tokens when the worker reported
    /// none) and records the usage and the attempt's success.
    fn done(&mut self, usage: Option<&pb::Usage>, fallback: u64) {
        if let Some(c) = self.charge.take() {
            c.settle(usage.map_or(fallback, |u| {
                u64::from(u.prompt_tokens) + u64::from(u.completion_tokens)
            }));
        }
        if let Some(u) = usage {
            self.app
                .metrics
                .tokens(&self.tier, u.prompt_tokens, u.completion_tokens);
        }
        // For traces only: see `record_decision`.
        if !trace_context::exporting() {
            return;
        }
        if let Some(u) = usage {
            self.request_span
                .record("gen_ai.usage.input_tokens", u.prompt_tokens);
            self.request_span
                .record("gen_ai.usage.output_tokens", u.completion_tokens);
        }
        self.attempt_span.record("switchback.outcome", "ok");
    }

    fn observe_ttft(&self, ttft: Duration) {
        self.app
            .metrics
            .ttft
            .get_or_create(&Tier {
                tier: self.tier.clone(),
            })
            .observe(ttft.as_secs_f64());
    }

    fn finished(&self) {
        self.app.metrics.request(&self.tier, "ok");
        self.app
            .metrics
            .duration
            .get_or_create(&Tier {
                tier: self.tier.clone(),
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// The answer as the HTTP shell renders it. The in-flight guard lives as long as the
/// answer: a client that disconnects drops the stream and with it the gRPC call, which
/// cancels the generation on the worker.
pub fn relay(
    mut settle: Settle,
    answer: Opened,
    in_flight: InFlight,
    deadline: tokio::time::Instant,
) -> Body {
    match answer {
        Opened::Whole(mut collected, first_at) => {
            drop(in_flight);
            trim_alternatives(&mut collected.tokens, settle.alternatives);
            settle.observe_ttft(first_at.duration_since(settle.started));
            settle.done(collected.usage.as_ref(), 0);
            settle.finished();
            Body::Whole(collected)
        }
        Opened::Streaming {
            stream,
            read,
            ended,
        } => {
            settle.observe_ttft(settle.started.elapsed());
            Body::Stream(streamed(settle, stream, read, ended, in_flight, deadline))
        }
    }
}

fn streamed(
    mut settle: Settle,
    mut stream: Box<tonic::Streaming<pb::GenerateChunk>>,
    read: Vec<pb::GenerateChunk>,
    ended: bool,
    in_flight: InFlight,
    deadline: tokio::time::Instant,
) -> Relay {
    // The request deadline bounds the whole stream, not only its start.
    let timeout_s = settle.app.config.request_timeout.as_secs();
    let inter_token = settle
        .app
        .metrics
        .inter_token
        .get_or_create(&Tier {
            tier: settle.tier.clone(),
        })
        .clone();
    Box::pin(async_stream::stream! {
        let _in_flight = in_flight;
        let mut streamed_tokens = 0usize;
        let mut usage = None;
        let mut read = read.into_iter();
        let mut last_chunk = Instant::now();
        // One timer for the whole stream, not one per chunk.
        let out_of_time = tokio::time::sleep_until(deadline);
        tokio::pin!(out_of_time);
        loop {
            // A worker error and the request deadline end the stream the same way: an
            // error, never a hang.
            let item = match read.next() {
                Some(chunk) => Ok(Some(chunk)),
                None if ended => Ok(None),
                None => match tokio::select! {
                    biased;
                    item = stream.message() => {
                        // Only chunks that arrive live count: buffered ones are replayed at
                        // once.
                        inter_token.observe(last_chunk.elapsed().as_secs_f64());
                        last_chunk = Instant::now();
                        Ok(item)
                    }
                    () = &mut out_of_time => Err(()),
                } {
                    Ok(item) => item.map_err(|s| {
                        if Failure::of(&s).unreachable() {
                            report_unreachable(&settle.app, &settle.worker, s.message());
                        }
                        Error::from(s)
                    }),
                    Err(_) => Err(Error::Timeout(timeout_s)),
                },
            };
            match item {
                Ok(Some(mut chunk)) => {
                    trim_alternatives(&mut chunk.tokens, settle.alternatives);
                    streamed_tokens += chunk.tokens.len();
                    let finish = finish_of(chunk.finish_reason);
                    if chunk.usage.is_some() {
                        usage = chunk.usage;
                    }
                    if !chunk.text.is_empty() || !chunk.tokens.is_empty() || !chunk.tool_calls.is_empty() || finish.is_some() {
                        yield Event::Piece(Piece {
                            text: chunk.text,
                            tokens: chunk.tokens,
                            tool_calls: chunk.tool_calls,
                            finish,
                        });
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(worker = %settle.worker, %err, streamed_tokens, "stream broke after the first token");
                    settle.attempt_span.record("switchback.outcome", err.outcome());
                    settle.app.metrics.request(&settle.tier, err.outcome());
                    // A stream that broke off keeps the key's full up-front charge.
                    yield Event::Broke(err);
                    return;
                }
            }
        }
        // Settled against what the worker reports; a stream the client dropped keeps the
        // full up-front charge.
        settle.done(usage.as_ref(), streamed_tokens as u64);
        yield Event::End { usage, streamed_tokens };
        settle.finished();
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::testing;

    #[tokio::test]
    async fn a_whole_answer_is_trimmed_settled_and_counted() {
        let mut k = testing::key("t");
        k.tokens_per_minute = Some(100);
        let app = Arc::new(testing::app(testing::gate(vec![k])));
        let caller = app.auth.authenticate(Some("Bearer t")).expect("key");
        let charge = caller
            .charge_tokens(90, Instant::now())
            .expect("fits")
            .expect("limited");
        let mut collected = Collected::default();
        collected.push(pb::GenerateChunk {
            text: "Hi".into(),
            tokens: vec![pb::TokenLogprob {
                token: "Hi".into(),
                top: vec![pb::TopLogprob::default(); 3],
                ..Default::default()
            }],
            finish_reason: pb::FinishReason::Stop as i32,
            usage: Some(pb::Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
                ..Default::default()
            }),
            ..Default::default()
        });
        let settle = Settle {
            app: Arc::clone(&app),
            tier: "small".into(),
            worker: "small-0".into(),
            charge: Some(charge),
            started: Instant::now(),
            alternatives: 1,
            request_span: tracing::Span::none(),
            attempt_span: tracing::Span::none(),
        };
        let in_flight = app.view.start("small-0");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let Body::Whole(c) = relay(
            settle,
            Opened::Whole(collected, Instant::now()),
            in_flight,
            deadline,
        ) else {
            panic!("a whole answer stays whole")
        };
        assert_eq!(
            c.tokens[0].top.len(),
            1,
            "trimmed to what the client asked for"
        );
        // The 90 tokens charged up front are settled to the 5 the worker used.
        let remaining = caller
            .rate_headers(Instant::now())
            .into_iter()
            .find(|(name, _)| *name == "x-ratelimit-remaining-tokens")
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .expect("remaining tokens");
        assert!(remaining >= 95, "{remaining}");
        let metrics = app.metrics.encode();
        for line in [
            r#"tier="small",outcome="ok"} 1"#,
            r#"tier="small",kind="completion"} 2"#,
        ] {
            assert!(metrics.contains(line), "{line} in {metrics}");
        }
    }
}
