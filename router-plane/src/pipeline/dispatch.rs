//! The dispatch stage: a placed request on one worker. An answer is opened (at least its
//! first chunk read, so that a worker that fails before producing anything is retried or
//! yields a proper error) and, after a failure before the first token, placed again on
//! another worker of the same choice (never the same worker twice), within the attempt
//! budget and the deadline. Whole answers are read to the end here: the client has seen
//! nothing yet.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use switchback_common::trace_context;
use switchback_proto::pb;
use tracing::{Instrument, field::Empty};

use super::{
    Error, Failed, Upstream,
    decision::Retry,
    failure::Failure,
    place::{self, Placement},
    plan::Plan,
};
use crate::{
    generation::{Generation, PromptKind},
    state::AppState,
    view::InFlight,
};

/// The worker request for a validated generation. A cascade asks for at least two
/// alternatives per token, to judge the first token's margin; [`trim_alternatives`] cuts
/// the answer back to what the client asked for.
pub fn request(request_id: &str, g: &Generation, cascade: bool) -> pb::GenerateRequest {
    let prompt = match &g.prompt {
        PromptKind::Chat(messages) => pb::generate_request::Prompt::Chat(pb::ChatPrompt {
            messages: messages
                .iter()
                .map(|m| pb::ChatMessage {
                    role: m.role.clone(),
                    content: m.content.clone(),
                    tool_calls: m.tool_calls.clone(),
                    tool_call_id: m.tool_call_id.clone().unwrap_or_default(),
                    name: m.name.clone().unwrap_or_default(),
                })
                .collect(),
        }),
        PromptKind::Text(text) => pb::generate_request::Prompt::Text(text.clone()),
    };
    pb::GenerateRequest {
        request_id: request_id.to_owned(),
        prompt: Some(prompt),
        sampling: Some(pb::SamplingParams {
            temperature: g.temperature,
            top_p: g.top_p,
            top_k: None,
            max_tokens: g.max_tokens.unwrap_or(0),
            stop: g.stop.clone(),
            frequency_penalty: g.frequency_penalty,
            presence_penalty: g.presence_penalty,
            seed: g.seed,
        }),
        top_logprobs: if cascade {
            g.logprobs.unwrap_or(0).max(2)
        } else {
            g.logprobs.unwrap_or(0)
        },
        tools: g.asks.tools.clone(),
        tool_choice: g.asks.tool_choice.clone(),
        single_tool_call: g.asks.single_tool_call,
        response_format: g.asks.response_format.clone(),
    }
}

/// Keeps at most `n` alternatives per token: a cascade asks workers for more than the
/// client did, to judge the first token's margin.
pub fn trim_alternatives(tokens: &mut [pb::TokenLogprob], n: u32) {
    for t in tokens {
        t.top.truncate(n as usize);
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

/// A worker's answer, opened: the stream and what was read of it so far (streamed
/// requests; at least the first chunk, more when a cascade judged the answer), or all of
/// it (whole requests, which may be retried until the very end since the client has seen
/// nothing yet).
pub enum Opened {
    Streaming {
        stream: Box<tonic::Streaming<pb::GenerateChunk>>,
        read: Vec<pb::GenerateChunk>,
        /// The worker closed the stream already.
        ended: bool,
    },
    /// The whole answer, and when its first chunk arrived.
    Whole(Collected, Instant),
}

impl Opened {
    /// How the answer finished, if what was read of it includes the end.
    pub fn finish(&self) -> Option<pb::FinishReason> {
        match self {
            Opened::Streaming { read, .. } => {
                read.iter().rev().find_map(|c| finish_of(c.finish_reason))
            }
            Opened::Whole(c, _) => c.finish,
        }
    }

    /// Tokens generated so far.
    pub fn tokens(&self) -> u32 {
        let n = match self {
            Opened::Streaming { read, .. } => read.iter().map(|c| c.tokens.len()).sum(),
            Opened::Whole(c, _) => c.tokens.len(),
        };
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// An answer opened on a worker, with what lives as long as it.
pub struct Opening {
    pub placement: Placement,
    /// Workers tried for this placement before the one that answered.
    pub retries: Vec<Retry>,
    pub answer: Opened,
    /// Counts the request against the worker in this router's view until dropped.
    pub in_flight: InFlight,
    /// The attempt's span (`switchback.attempt`), open until the answer is used up or
    /// dropped.
    pub span: tracing::Span,
}

/// Places the request and opens a worker's answer, moving to another worker of the same
/// choice after a failure before the first token (never the same worker twice), within
/// the attempt budget and the deadline. `attempts_before` numbers the attempt spans
/// across a cascade.
pub async fn open(
    app: &AppState,
    plan: &Plan,
    request: &pb::GenerateRequest,
    stream: bool,
    deadline: tokio::time::Instant,
    avoid_nodes: &[String],
    attempts_before: usize,
) -> Result<Opening, Failed> {
    let mut tried: Vec<String> = Vec::new();
    let mut retries: Vec<Retry> = Vec::new();
    let mut last: Option<Failed> = None;
    loop {
        let placed = match place::place(app, plan, &tried, avoid_nodes, deadline).await {
            Ok(placed) => placed,
            // Nobody else to try: the last worker's failure says more than "no worker".
            Err(error) => return Err(last.unwrap_or_else(|| Failed::unplaced(error))),
        };
        tracing::debug!(
            reason = placed.reason.as_str(),
            candidates = placed.candidates,
            queue_depth = placed.queue_depth,
            attempt = tried.len() + 1,
            "placed"
        );
        // One span per worker attempt, open until its answer is used up or dropped.
        // A trace's structure: no log line is written inside an attempt (its failures are
        // logged by the request, naming the worker), so without a trace exporter there is
        // no span to open, enter on every poll and close.
        let attempt_span = if trace_context::exporting() {
            tracing::info_span!(
                "switchback.attempt",
                otel.kind = "client",
                switchback.attempt = attempts_before + tried.len() + 1,
                switchback.tier = %placed.tier,
                switchback.worker = %placed.worker,
                switchback.node = %placed.node,
                switchback.queue_depth = placed.queue_depth,
                switchback.outcome = Empty,
            )
        } else {
            tracing::Span::none()
        };
        let in_flight = app.view.start(&placed.worker);
        let result = attempt(
            app,
            &placed.address,
            request.clone(),
            stream,
            deadline,
            &attempt_span,
        )
        .instrument(attempt_span.clone())
        .await;
        let (failure, error) = match result {
            Ok(answer) => {
                return Ok(Opening {
                    placement: placed,
                    retries,
                    answer,
                    in_flight,
                    span: attempt_span,
                });
            }
            Err(failed) => failed,
        };
        drop(in_flight);
        attempt_span.record("switchback.outcome", failure.label());
        let error = if failure.saturates() {
            Error::Saturated {
                tier: placed.tier.clone(),
            }
        } else {
            error
        };
        if failure.unreachable() {
            report_unreachable(app, &placed.worker, &error.to_string());
        }
        tried.push(placed.worker.clone());
        let out_of_time = deadline.saturating_duration_since(tokio::time::Instant::now())
            < Duration::from_millis(50);
        if !failure.retryable() || tried.len() >= app.config.max_attempts as usize || out_of_time {
            return Err(Failed {
                tier: placed.tier,
                error,
            });
        }
        app.metrics
            .retries
            .get_or_create(&crate::metrics::Retry {
                tier: placed.tier.clone(),
                reason: failure.label(),
            })
            .inc();
        tracing::warn!(worker = %placed.worker, reason = failure.label(), %error, "attempt failed before the first token; retrying on another worker");
        retries.push(Retry {
            worker: placed.worker.clone(),
            reason: failure,
        });
        last = Some(Failed {
            tier: placed.tier,
            error,
        });
    }
}

/// One attempt on the worker at `address`: its answer opened (streamed) or read whole.
async fn attempt(
    app: &AppState,
    address: &str,
    request: pb::GenerateRequest,
    stream: bool,
    deadline: tokio::time::Instant,
    span: &tracing::Span,
) -> Result<Opened, (Failure, Error)> {
    let mut request = tonic::Request::new(request);
    // The worker continues this attempt's trace (W3C `traceparent` in gRPC metadata).
    trace_context::inject(span, request.metadata_mut());
    let first_token_by = deadline.min(tokio::time::Instant::now() + app.config.first_token_timeout);
    let upstream = |s: tonic::Status| (Failure::of(&s), Error::from(s));
    let mut client = app.clients.get(address).map_err(|e| {
        (
            Failure::Unreachable,
            Error::upstream(Upstream::Failed, format!("bad worker address: {e}")),
        )
    })?;
    // Whether the worker opened the stream: it took the request, so a late first token
    // means it is busy, not dead.
    let took = AtomicBool::new(false);
    let no_first_token = |took: bool| {
        if took {
            (
                Failure::SlowFirstToken,
                Error::upstream(
                    Upstream::Busy,
                    "the worker took the request but is too busy to start it in time",
                ),
            )
        } else {
            (
                Failure::NoFirstToken,
                Error::upstream(
                    Upstream::TimedOut,
                    "the worker produced no first token in time",
                ),
            )
        }
    };
    let opened = tokio::time::timeout_at(first_token_by, async {
        let mut s = client
            .generate(request)
            .await
            .map_err(upstream)?
            .into_inner();
        took.store(true, Ordering::Relaxed);
        // Wait for the first chunk before answering, so that a worker that fails before
        // producing anything is retried, or yields a proper error.
        let first = s.message().await.map_err(upstream)?.ok_or_else(|| {
            (
                Failure::EmptyStream,
                Error::upstream(
                    Upstream::Failed,
                    "the worker closed the stream without answering",
                ),
            )
        })?;
        Ok((s, first))
    })
    .await
    .map_err(|_| no_first_token(took.load(Ordering::Relaxed)))?;
    let (mut s, first) = opened?;
    let first_at = Instant::now();
    if stream {
        return Ok(Opened::Streaming {
            stream: Box::new(s),
            read: vec![first],
            ended: false,
        });
    }
    let mut collected = Collected::default();
    collected.push(first);
    // One deadline for the rest of the answer, not a timer per chunk.
    let rest = async {
        while let Some(chunk) = s.message().await? {
            collected.push(chunk);
        }
        Ok(())
    };
    match tokio::time::timeout_at(deadline, rest).await {
        Ok(Ok(())) => Ok(Opened::Whole(collected, first_at)),
        Ok(Err(status)) => Err(upstream(status)),
        Err(_) => Err((
            Failure::Deadline,
            Error::Timeout(app.config.request_timeout.as_secs()),
        )),
    }
}

/// Tells the controller (best effort, in the background) that a worker is unreachable, so
/// every router stops sending to it, not only this one.
pub fn report_unreachable(app: &AppState, worker: &str, reason: &str) {
    if !app.view.suspect(worker, app.config.suspect_hold) {
        return;
    }
    app.metrics.unreachable.inc();
    tracing::warn!(
        worker,
        reason,
        "worker unreachable; out of this router's routing set"
    );
    let Some(channel) = app.view.controller() else {
        return;
    };
    let failure = pb::WorkerFailure {
        worker_id: worker.to_owned(),
        reporter: app.name.clone(),
        reason: reason.to_owned(),
    };
    // On the cluster watch's connection to the controller (made by the cluster dialer:
    // with `tls:` on, mutual TLS with the router's certificate): a report costs no new
    // connection or handshake.
    tokio::spawn(async move {
        let report = async {
            pb::controller_client::ControllerClient::new(channel)
                .report_worker_failure(failure)
                .await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        };
        match tokio::time::timeout(std::time::Duration::from_secs(3), report).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(%err, "could not report the worker to the controller"),
            Err(_) => tracing::warn!("the controller did not take the failure report in time"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::testing;

    fn token(text: &str, alternatives: usize) -> pb::TokenLogprob {
        pb::TokenLogprob {
            token: text.into(),
            token_id: None,
            logprob: -0.5,
            top: (0..alternatives)
                .map(|i| pb::TopLogprob {
                    token_id: i as u32,
                    token: format!("{text}{i}"),
                    logprob: -1.0,
                    bytes: Vec::new(),
                })
                .collect(),
            bytes: Vec::new(),
        }
    }

    #[test]
    fn a_cascade_asks_for_alternatives_and_the_client_gets_what_it_asked_for() {
        let mut g = testing::generation("auto");
        assert_eq!(request("req-1", &g, false).top_logprobs, 0);
        assert_eq!(request("req-1", &g, true).top_logprobs, 2);
        g.logprobs = Some(5);
        assert_eq!(request("req-1", &g, true).top_logprobs, 5);
        let r = request("req-1", &g, false);
        assert_eq!(r.request_id, "req-1");
        assert_eq!(r.sampling.map(|s| s.max_tokens), Some(8));
        let mut tokens = vec![token("a", 3), token("b", 1)];
        trim_alternatives(&mut tokens, 1);
        assert!(tokens.iter().all(|t| t.top.len() == 1));
        trim_alternatives(&mut tokens, 0);
        assert!(tokens.iter().all(|t| t.top.is_empty()));
    }

    #[test]
    fn an_opened_answer_knows_its_finish_and_its_tokens() {
        let mut collected = Collected::default();
        collected.push(pb::GenerateChunk {
            text: "a".into(),
            tokens: vec![token("a", 0)],
            ..Default::default()
        });
        let mut last = pb::GenerateChunk {
            text: "b".into(),
            tokens: vec![token("b", 0)],
            ..Default::default()
        };
        last.finish_reason = pb::FinishReason::Length as i32;
        collected.push(last.clone());
        assert_eq!(collected.text, "ab");
        let whole = Opened::Whole(collected, Instant::now());
        assert_eq!(whole.finish(), Some(pb::FinishReason::Length));
        assert_eq!(whole.tokens(), 2);
        assert_eq!(finish_of(pb::FinishReason::Unspecified as i32), None);
        assert_eq!(finish_of(99), None);
    }
}
