//! The `Inference` gRPC service: validates a request, admits it through a bounded queue
//! and a concurrency limit, and relays the engine's stream to the caller. When the caller
//! goes away the relay stops, dropping the engine stream, which stops generation.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use switchback_common::trace_context;
use switchback_proto::{
    Refusal,
    pb::{self, inference_server::Inference},
};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Request, Response, Status};
use tracing::{Instrument, field::Empty};

use crate::{
    engine::{
        ChatMessage, Engine, EngineError, EngineEvent, FinishReason, Format, GenerateParams,
        Prompt, Sampling, Tool, ToolCall, ToolChoice, Tools,
        answer::{self, Shape},
    },
    load::Load,
};

/// Most alternatives per position we return (OpenAI's limit).
const MAX_TOP_LOGPROBS: u32 = 20;

/// Who this worker is, as `Health` reports it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub worker_id: String,
    pub tier: String,
    pub model: String,
}

/// What one Generate request may hold, whoever sends it: well above what a router passes
/// on (its own limits are lower by default), well below what would hurt the worker.
pub const MAX_REQUEST_ID_BYTES: usize = 128;
pub const MAX_MESSAGES: usize = 4096;
pub const MAX_PROMPT_BYTES: usize = 1 << 20;
pub const MAX_STOP: usize = 16;
pub const MAX_STOP_BYTES: usize = 256;
pub const MAX_TOOLS: usize = 128;
/// The largest gRPC message the worker decodes (a prompt at its limit, with room).
pub const MAX_REQUEST_BYTES: usize = 2 << 20;

/// Limits that apply to every request.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_queue: u32,
    /// How long the caller may leave the answer unread before the generation is cancelled:
    /// a stalled reader must not hold a slot.
    pub stalled_caller: Duration,
    pub default_max_tokens: u32,
    pub max_tokens_limit: u32,
}

pub struct InferenceService {
    pub worker_id: String,
    pub tier: String,
    pub model: String,
    engine: Arc<dyn Engine>,
    load: Arc<Load>,
    slots: Arc<Semaphore>,
    limits: Limits,
    /// Every request's relay task, so shutdown can wait for in-flight work.
    requests: TaskTracker,
    /// Fired when the shutdown grace period is over: relays end their streams at once.
    abort: CancellationToken,
    /// Mutual TLS on: `Generate` only from routers (a caller's role, from its certificate).
    mtls: bool,
}

impl InferenceService {
    /// With mutual TLS, callers are checked by role: only routers may generate.
    pub fn with_mtls(mut self, on: bool) -> Self {
        self.mtls = on;
        self
    }

    pub fn new(
        identity: Identity,
        engine: Arc<dyn Engine>,
        load: Arc<Load>,
        limits: Limits,
        requests: TaskTracker,
        abort: CancellationToken,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(load.capacity as usize));
        Self {
            worker_id: identity.worker_id,
            tier: identity.tier,
            model: identity.model,
            engine,
            load,
            slots,
            limits,
            requests,
            abort,
            mtls: false,
        }
    }

    fn params(&self, req: pb::GenerateRequest) -> Result<GenerateParams, Status> {
        if req.request_id.len() > MAX_REQUEST_ID_BYTES
            || req.request_id.chars().any(char::is_control)
        {
            return Err(Status::invalid_argument(format!(
                "request_id must be at most {MAX_REQUEST_ID_BYTES} bytes without control characters"
            )));
        }
        let prompt_bytes = match &req.prompt {
            Some(pb::generate_request::Prompt::Chat(chat)) => {
                if chat.messages.len() > MAX_MESSAGES {
                    return Err(Status::invalid_argument(format!(
                        "chat.messages holds {} messages; this worker takes at most {MAX_MESSAGES}",
                        chat.messages.len()
                    )));
                }
                chat.messages
                    .iter()
                    .map(|m| {
                        m.content.len()
                            + m.role.len()
                            + m.tool_call_id.len()
                            + m.name.len()
                            + m.tool_calls
                                .iter()
                                .map(|c| c.id.len() + c.name.len() + c.arguments.len())
                                .sum::<usize>()
                    })
                    .sum()
            }
            Some(pb::generate_request::Prompt::Text(text)) => text.len(),
            None => 0,
        } + req
            .tools
            .iter()
            .map(|t| t.name.len() + t.description.len() + t.parameters.len())
            .sum::<usize>()
            + req.response_format.as_ref().map_or(0, |f| f.schema.len());
        if prompt_bytes > MAX_PROMPT_BYTES {
            return Err(Status::invalid_argument(format!(
                "the prompt is {prompt_bytes} bytes; this worker takes at most {MAX_PROMPT_BYTES}"
            )));
        }
        let stop = req.sampling.as_ref().map_or(&[][..], |s| &s.stop[..]);
        if stop.len() > MAX_STOP || stop.iter().any(|s| s.len() > MAX_STOP_BYTES) {
            return Err(Status::invalid_argument(format!(
                "sampling.stop: at most {MAX_STOP} sequences of at most {MAX_STOP_BYTES} bytes"
            )));
        }
        let prompt = match req.prompt {
            Some(pb::generate_request::Prompt::Chat(chat)) => {
                if chat.messages.is_empty() {
                    return Err(Status::invalid_argument("chat.messages is empty"));
                }
                Prompt::Chat(
                    chat.messages
                        .into_iter()
                        .map(|m| ChatMessage {
                            role: m.role,
                            content: m.content,
                            tool_calls: m
                                .tool_calls
                                .into_iter()
                                .map(|c| ToolCall {
                                    id: c.id,
                                    name: c.name,
                                    arguments: c.arguments,
                                })
                                .collect(),
                            tool_call_id: Some(m.tool_call_id).filter(|s| !s.is_empty()),
                            name: Some(m.name).filter(|s| !s.is_empty()),
                        })
                        .collect(),
                )
            }
            Some(pb::generate_request::Prompt::Text(text)) => Prompt::Text(text),
            None => return Err(Status::invalid_argument("prompt is missing")),
        };
        let s = req.sampling.unwrap_or_default();
        let max_tokens = match s.max_tokens {
            0 => self.limits.default_max_tokens,
            n if n > self.limits.max_tokens_limit => {
                return Err(Status::invalid_argument(format!(
                    "max_tokens {n} is over this worker's limit of {}",
                    self.limits.max_tokens_limit
                )));
            }
            n => n,
        };
        if req.top_logprobs > MAX_TOP_LOGPROBS {
            return Err(Status::invalid_argument(format!(
                "top_logprobs must be at most {MAX_TOP_LOGPROBS}"
            )));
        }
        let tools = self.tools(req.tools, req.tool_choice, req.single_tool_call)?;
        let format = self.format(req.response_format)?;
        Ok(GenerateParams {
            request_id: req.request_id,
            prompt,
            sampling: Sampling {
                temperature: s.temperature.filter(|t| *t > 0.0),
                top_p: s.top_p,
                top_k: s.top_k,
                max_tokens,
                stop: s.stop,
                frequency_penalty: s.frequency_penalty,
                presence_penalty: s.presence_penalty,
                seed: s.seed,
            },
            top_logprobs: req.top_logprobs,
            tools,
            format,
        })
    }

    /// The request's tools, if this worker's model can call them.
    fn tools(
        &self,
        tools: Vec<pb::Tool>,
        choice: Option<pb::ToolChoice>,
        single: bool,
    ) -> Result<Option<Tools>, Status> {
        if tools.is_empty() {
            return match choice.map(|c| c.mode()) {
                None | Some(pb::tool_choice::Mode::Auto | pb::tool_choice::Mode::None) => Ok(None),
                Some(_) => Err(Status::invalid_argument(
                    "tool_choice asks for a call but no tools are given",
                )),
            };
        }
        let abilities = self.engine.abilities();
        if !abilities.tool_calls || !abilities.structured_output {
            return Err(Status::failed_precondition(format!(
                "this worker's model ({}) does not call tools",
                self.model
            )));
        }
        if tools.len() > MAX_TOOLS {
            return Err(Status::invalid_argument(format!(
                "tools: at most {MAX_TOOLS} tools"
            )));
        }
        let list = tools
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                if t.name.is_empty() {
                    return Err(Status::invalid_argument(format!(
                        "tools[{i}].name is empty"
                    )));
                }
                let parameters = if t.parameters.is_empty() {
                    serde_json::Value::Object(serde_json::Map::new())
                } else {
                    serde_json::from_str(&t.parameters).map_err(|e| {
                        Status::invalid_argument(format!("tools[{i}].parameters is not JSON: {e}"))
                    })?
                };
                Ok(Tool {
                    name: t.name,
                    description: t.description,
                    parameters,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let choice = match choice {
            None => ToolChoice::Auto,
            Some(c) => match c.mode() {
                pb::tool_choice::Mode::Auto => ToolChoice::Auto,
                pb::tool_choice::Mode::None => ToolChoice::None,
                pb::tool_choice::Mode::Required => ToolChoice::Required,
                pb::tool_choice::Mode::Named => {
                    if !list.iter().any(|t| t.name == c.name) {
                        return Err(Status::invalid_argument(format!(
                            "tool_choice names {:?}, which is not among the tools",
                            c.name
                        )));
                    }
                    ToolChoice::Named(c.name)
                }
            },
        };
        Ok(Some(Tools {
            list,
            choice,
            single,
        }))
    }

    fn format(&self, format: Option<pb::ResponseFormat>) -> Result<Format, Status> {
        let Some(format) = format else {
            return Ok(Format::Text);
        };
        let wanted = match format.kind() {
            pb::response_format::Kind::Text => return Ok(Format::Text),
            pb::response_format::Kind::JsonObject => Format::JsonObject,
            pb::response_format::Kind::JsonSchema => {
                Format::JsonSchema(serde_json::from_str(&format.schema).map_err(|e| {
                    Status::invalid_argument(format!("response_format.schema is not JSON: {e}"))
                })?)
            }
        };
        if !self.engine.abilities().structured_output {
            return Err(Status::failed_precondition(format!(
                "this worker ({} engine) does not constrain output to a schema",
                self.engine.kind()
            )));
        }
        Ok(wanted)
    }
}

fn engine_status(err: EngineError) -> Status {
    match err {
        EngineError::InvalidRequest(msg) => Status::invalid_argument(msg),
        EngineError::Internal(msg) => {
            switchback_proto::refusal(Status::internal(msg), Refusal::EngineError)
        }
    }
}

fn to_pb_token(t: crate::engine::Token) -> pb::TokenLogprob {
    pb::TokenLogprob {
        token: t.text,
        token_id: t.token_id,
        logprob: t.logprob,
        top: t
            .top
            .into_iter()
            .map(|a| pb::TopLogprob {
                token_id: a.token_id,
                token: a.token,
                logprob: a.logprob,
                bytes: a.bytes,
            })
            .collect(),
        bytes: t.bytes,
    }
}

fn millis(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

type GenerateStream = ReceiverStream<Result<pb::GenerateChunk, Status>>;

impl InferenceService {
    /// Admits a request and starts its relay, which runs in `span` (the request's span,
    /// open until the generation ends) with a child span per phase: waiting for a slot,
    /// prefill (to the first token) and decode.
    async fn open(
        &self,
        req: Request<pb::GenerateRequest>,
        span: tracing::Span,
    ) -> Result<Response<GenerateStream>, Status> {
        let refused = |reason: &'static str| {
            span.record("switchback.outcome", reason);
        };
        if self.load.is_draining() {
            refused(Refusal::Draining.as_str());
            return Err(switchback_proto::refusal(
                Status::unavailable("worker is draining"),
                Refusal::Draining,
            ));
        }
        let params = self
            .params(req.into_inner())
            .inspect_err(|_| refused("invalid"))?;
        // Take a free slot at once if there is one; otherwise wait in the bounded queue.
        let slot_now = Arc::clone(&self.slots).try_acquire_owned().ok();
        let queued = if slot_now.is_some() {
            None
        } else if self.load.waiting() >= self.limits.max_queue {
            refused(Refusal::QueueFull.as_str());
            return Err(switchback_proto::refusal(
                Status::resource_exhausted(format!(
                    "worker queue is full ({} waiting)",
                    self.limits.max_queue
                )),
                Refusal::QueueFull,
            ));
        } else {
            Some(self.load.enter_queue())
        };
        let accepted = Instant::now();
        let (tx, rx) = mpsc::channel(32);
        let engine = Arc::clone(&self.engine);
        let load = Arc::clone(&self.load);
        let slots = Arc::clone(&self.slots);
        let abort = self.abort.clone();
        let stalled_caller = self.limits.stalled_caller;
        let relay_span = span.clone();
        self.requests.spawn(async move {
            let span = relay_span;
            let outcome = |o: &'static str| {
                span.record("switchback.outcome", o);
            };
            let queue_span = tracing::info_span!(parent: &span, "switchback.queue");
            let _slot = match slot_now {
                Some(slot) => slot,
                None => {
                    let permit = tokio::select! {
                        permit = slots.acquire_owned() => permit,
                        () = tx.closed() => return outcome("cancelled"),
                        () = abort.cancelled() => return outcome("shutdown"),
                    };
                    let Ok(permit) = permit else { return };
                    permit
                }
            };
            drop(queued);
            drop(queue_span);
            let _running = load.enter_running();
            let queue_ms = millis(accepted.elapsed());
            span.record("switchback.queue_ms", queue_ms);
            // Prefill until the first token, then decode; each phase is a child span.
            let mut phase = tracing::info_span!(parent: &span, "switchback.prefill");
            let shape = Shape::new(
                params.sampling.stop.clone(),
                params.tools.as_ref(),
                &params.request_id,
            );
            let mut events = answer::shape(engine.generate(params), shape);
            let mut first_token_at = None;
            let mut completion_tokens = 0u32;
            loop {
                let event = tokio::select! {
                    event = events.next() => event,
                    () = tx.closed() => {
                        tracing::info!("caller went away; generation cancelled");
                        return outcome("cancelled");
                    }
                    () = abort.cancelled() => {
                        outcome("shutdown");
                        let _ = tx.send(Err(switchback_proto::refusal(Status::unavailable("the worker shut down before the request finished"), Refusal::Shutdown))).await;
                        return;
                    }
                };
                let chunk = match event {
                    Some(Ok(EngineEvent::Started { prompt_tokens })) => {
                        span.record("gen_ai.usage.input_tokens", prompt_tokens);
                        continue;
                    }
                    Some(Ok(EngineEvent::ToolCalls(calls))) => Ok(pb::GenerateChunk {
                        tool_calls: calls
                            .into_iter()
                            .map(|c| pb::ToolCall {
                                id: c.id,
                                name: c.name,
                                arguments: c.arguments,
                            })
                            .collect(),
                        ..pb::GenerateChunk::default()
                    }),
                    Some(Ok(EngineEvent::Delta { text, tokens })) => {
                        if first_token_at.is_none() && !tokens.is_empty() {
                            let now = Instant::now();
                            load.record_ttft(now - accepted);
                            first_token_at = Some(now);
                            span.record("switchback.ttft_ms", millis(now - accepted));
                            phase = tracing::info_span!(parent: &span, "switchback.decode");
                        }
                        completion_tokens += u32::try_from(tokens.len()).unwrap_or(0);
                        load.add_tokens(tokens.len() as u64);
                        Ok(pb::GenerateChunk {
                            text,
                            tokens: tokens.into_iter().map(to_pb_token).collect(),
                            finish_reason: pb::FinishReason::Unspecified as i32,
                            usage: None,
                            tool_calls: Vec::new(),
                        })
                    }
                    Some(Ok(EngineEvent::Done {
                        finish,
                        prompt_tokens,
                        completion_tokens: engine_count,
                    })) => {
                        let finish = match finish {
                            FinishReason::Stop => pb::FinishReason::Stop,
                            FinishReason::Length => pb::FinishReason::Length,
                            FinishReason::ToolCalls => pb::FinishReason::ToolCalls,
                        };
                        let ttft = first_token_at.map_or(0, |t| millis(t - accepted));
                        // Prefer the engine's count (it sees tokens that decode to no text);
                        // fall back to ours where the engine reports none.
                        let completion_tokens = if engine_count > 0 {
                            engine_count
                        } else {
                            completion_tokens
                        };
                        drop(phase);
                        span.record("gen_ai.usage.input_tokens", prompt_tokens);
                        span.record("gen_ai.usage.output_tokens", completion_tokens);
                        outcome(match finish {
                            pb::FinishReason::Length => "length",
                            pb::FinishReason::ToolCalls => "tool_calls",
                            _ => "stop",
                        });
                        let _ = tx
                            .send(Ok(pb::GenerateChunk {
                                text: String::new(),
                                tokens: Vec::new(),
                                finish_reason: finish as i32,
                                usage: Some(pb::Usage {
                                    prompt_tokens,
                                    completion_tokens,
                                    time_to_first_token_ms: ttft,
                                    queue_ms,
                                }),
                                tool_calls: Vec::new(),
                            }))
                            .await;
                        return;
                    }
                    Some(Err(err)) => {
                        tracing::warn!(%err, "generation failed");
                        outcome("engine-error");
                        Err(engine_status(err))
                    }
                    None => Err(switchback_proto::refusal(Status::internal("engine stream ended without finishing"), Refusal::EngineError)),
                };
                let failed = chunk.is_err();
                match tokio::time::timeout(stalled_caller, tx.send(chunk)).await {
                    Ok(Ok(())) if !failed => {}
                    Ok(_) => return,
                    Err(_) => {
                        tracing::warn!(seconds = stalled_caller.as_secs(), "the caller stopped reading; generation cancelled");
                        return outcome("stalled");
                    }
                }
            }
        }.instrument(span));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl Inference for InferenceService {
    type GenerateStream = GenerateStream;

    /// Continues the caller's trace (W3C trace context in the gRPC metadata).
    async fn generate(
        &self,
        req: Request<pb::GenerateRequest>,
    ) -> Result<Response<Self::GenerateStream>, Status> {
        use switchback_common::tls::{Role, role::authorize};
        authorize(&req, self.mtls, &[Role::Router])?;
        let span = tracing::info_span!(
            "generate",
            otel.name = "switchback.worker.generate",
            otel.kind = "server",
            // Escaped and cut: the id is checked only after the span opens.
            request_id = %switchback_common::text::bounded(&req.get_ref().request_id, 160),
            switchback.worker = %self.worker_id,
            switchback.tier = %self.tier,
            gen_ai.response.model = %self.model,
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
            switchback.queue_ms = Empty,
            switchback.ttft_ms = Empty,
            switchback.outcome = Empty,
        );
        trace_context::continue_from(&span, req.metadata());
        self.open(req, span.clone()).instrument(span).await
    }

    async fn health(
        &self,
        req: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        use switchback_common::tls::{Role, role::authorize};
        authorize(&req, self.mtls, &Role::ALL)?;
        Ok(Response::new(pb::HealthResponse {
            serving: !self.load.is_draining(),
            worker_id: self.worker_id.clone(),
            tier: self.tier.clone(),
            model: self.model.clone(),
            running: self.load.running(),
            waiting: self.load.waiting(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::SimConfig, engine::sim::SimEngine};
    use switchback_proto::pb::generate_request::Prompt as PbPrompt;

    fn service(
        capacity: u32,
        max_queue: u32,
        decode_ms: f64,
    ) -> (InferenceService, Arc<Load>, TaskTracker) {
        let load = Arc::new(Load::new(capacity));
        let tracker = TaskTracker::new();
        let engine = Arc::new(SimEngine::new(SimConfig {
            prefill_ms_per_token: 0.0,
            decode_ms_per_token: decode_ms,
            default_tokens: 4,
        }));
        let svc = InferenceService::new(
            Identity {
                worker_id: "w".into(),
                tier: "small".into(),
                model: "m".into(),
            },
            engine,
            Arc::clone(&load),
            Limits {
                max_queue,
                stalled_caller: Duration::from_secs(1),
                default_max_tokens: 4,
                max_tokens_limit: 100,
            },
            tracker.clone(),
            CancellationToken::new(),
        );
        (svc, load, tracker)
    }

    fn request(max_tokens: u32) -> Request<pb::GenerateRequest> {
        Request::new(pb::GenerateRequest {
            request_id: "r".into(),
            prompt: Some(PbPrompt::Text("hello".into())),
            sampling: Some(pb::SamplingParams {
                max_tokens,
                ..Default::default()
            }),
            top_logprobs: 0,
            ..Default::default()
        })
    }

    /// Waits (bounded) until the spawned relay tasks have made `cond` true.
    async fn settle(what: &str, cond: impl Fn() -> bool) {
        let waited = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while !cond() {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "never happened: {what}");
    }

    async fn drain(
        stream: ReceiverStream<Result<pb::GenerateChunk, Status>>,
    ) -> Vec<pb::GenerateChunk> {
        stream.map(|c| c.expect("chunk")).collect().await
    }

    #[tokio::test]
    async fn streams_tokens_then_usage() {
        let (svc, _load, _t) = service(2, 4, 1.0);
        let chunks = drain(
            svc.generate(request(3))
                .await
                .expect("accepted")
                .into_inner(),
        )
        .await;
        assert_eq!(chunks.len(), 4);
        let last = chunks.last().expect("final chunk");
        assert_eq!(last.finish_reason, pb::FinishReason::Length as i32);
        assert_eq!(last.usage.as_ref().map(|u| u.completion_tokens), Some(3));
        assert!(
            chunks[..3]
                .iter()
                .all(|c| c.tokens.len() == 1 && !c.text.is_empty())
        );
    }

    #[tokio::test]
    async fn a_caller_that_stops_reading_loses_its_slot() {
        // One slot; the sim makes 100 tokens in 10 ms, far more than the relay buffers.
        let (svc, load, _t) = service(1, 4, 0.1);
        let unread = svc.generate(request(100)).await.expect("accepted");
        settle("the unread answer fills its buffer", || load.running() == 1).await;
        // The next caller waits for the slot, which the stall (1 s here) gives back.
        let next = tokio::time::timeout(
            Duration::from_secs(20),
            drain(svc.generate(request(3)).await.expect("queued").into_inner()),
        )
        .await
        .expect("the stalled caller's slot never came back");
        assert_eq!(
            next.last()
                .and_then(|c| c.usage.as_ref())
                .map(|u| u.completion_tokens),
            Some(3)
        );
        // The unread stream ends without a finish: its generation was cancelled.
        let cut: Vec<_> = unread.into_inner().collect().await;
        assert!(cut.len() < 100, "{} chunks", cut.len());
        assert!(
            cut.iter()
                .all(|c| c.as_ref().is_ok_and(|c| c.usage.is_none()))
        );
    }

    #[tokio::test]
    async fn invalid_requests_are_rejected_with_invalid_argument() {
        let (svc, _load, _t) = service(1, 1, 1.0);
        let mut no_prompt = request(1);
        no_prompt.get_mut().prompt = None;
        assert_eq!(
            svc.generate(no_prompt).await.err().map(|s| s.code()),
            Some(tonic::Code::InvalidArgument)
        );
        assert_eq!(
            svc.generate(request(101)).await.err().map(|s| s.code()),
            Some(tonic::Code::InvalidArgument)
        );
    }

    #[tokio::test]
    async fn stop_sequences_end_the_stream_and_count_what_was_generated() {
        let (svc, _load, _t) = service(1, 1, 1.0);
        let free = drain(svc.generate(request(8)).await.expect("open").into_inner()).await;
        let text: String = free.iter().map(|c| c.text.as_str()).collect();
        // The sim's words each start with a space: stop at the third word's start.
        let third = text
            .match_indices(' ')
            .nth(2)
            .map(|(i, _)| i)
            .expect("three words");
        let stop = text[third..third + 3].to_owned();
        let mut req = request(8);
        req.get_mut().sampling.get_or_insert_default().stop = vec![stop.clone()];
        let chunks = drain(svc.generate(req).await.expect("open").into_inner()).await;
        let got: String = chunks.iter().map(|c| c.text.as_str()).collect();
        let at = text.find(&stop).expect("stop");
        assert_eq!(got, text[..at], "stop {stop:?} in {text:?}");
        // Each free chunk is one token: where each starts and ends in the text.
        let mut spans = Vec::new();
        let mut offset = 0;
        for c in free.iter().filter(|c| !c.tokens.is_empty()) {
            spans.push((offset, offset + c.text.len()));
            offset += c.text.len();
        }
        let returned = spans.iter().filter(|(start, _)| *start < at).count();
        let generated = 1 + spans
            .iter()
            .position(|(_, end)| *end >= at + stop.len())
            .expect("the stop ends in a token");
        let last = chunks.last().expect("final chunk");
        assert_eq!(last.finish_reason, pb::FinishReason::Stop as i32);
        assert_eq!(
            last.usage.as_ref().map(|u| u.completion_tokens),
            Some(generated as u32),
            "usage counts every token generated, the one the stop ends in too"
        );
        assert_eq!(
            chunks.iter().map(|c| c.tokens.len()).sum::<usize>(),
            returned,
            "tokens that start after the stop are not listed"
        );
        assert!(generated > returned);
    }

    #[tokio::test]
    async fn tools_and_schemas_are_refused_by_an_engine_that_cannot_do_them() {
        let (svc, _load, _t) = service(1, 1, 1.0);
        let mut tools = request(4);
        tools.get_mut().tools = vec![pb::Tool {
            name: "now".into(),
            ..Default::default()
        }];
        let Err(status) = svc.generate(tools).await else {
            panic!("tools accepted by an engine that cannot call them")
        };
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(
            status.message().contains("does not call tools"),
            "{status:?}"
        );
        let mut json = request(4);
        json.get_mut().response_format = Some(pb::ResponseFormat {
            kind: pb::response_format::Kind::JsonObject as i32,
            schema: String::new(),
        });
        let Err(status) = svc.generate(json).await else {
            panic!("a schema accepted by an engine that cannot constrain output")
        };
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        let mut named = request(4);
        named.get_mut().tool_choice = Some(pb::ToolChoice {
            mode: pb::tool_choice::Mode::Required as i32,
            name: String::new(),
        });
        assert_eq!(
            svc.generate(named).await.err().map(|s| s.code()),
            Some(tonic::Code::InvalidArgument),
            "a required call without tools"
        );
    }

    #[tokio::test]
    async fn a_worker_bounds_what_any_caller_sends() {
        let (svc, _load, _t) = service(1, 1, 1.0);
        let refused = |mut req: Request<pb::GenerateRequest>,
                       edit: &dyn Fn(&mut pb::GenerateRequest)| {
            edit(req.get_mut());
            req
        };
        let cases: Vec<(&str, Request<pb::GenerateRequest>)> = vec![
            (
                "request_id",
                refused(request(1), &|r| r.request_id = "r\nERROR forged".into()),
            ),
            (
                "request_id",
                refused(request(1), &|r| r.request_id = "r".repeat(129)),
            ),
            (
                "prompt",
                refused(request(1), &|r| {
                    r.prompt = Some(PbPrompt::Text("x".repeat(MAX_PROMPT_BYTES + 1)));
                }),
            ),
            (
                "chat.messages",
                refused(request(1), &|r| {
                    r.prompt = Some(PbPrompt::Chat(pb::ChatPrompt {
                        messages: vec![
                            pb::ChatMessage {
                                role: "user".into(),
                                content: "x".into(),
                                ..Default::default()
                            };
                            MAX_MESSAGES + 1
                        ],
                    }));
                }),
            ),
            (
                "sampling.stop",
                refused(request(1), &|r| {
                    r.sampling.get_or_insert_default().stop = vec!["s".into(); MAX_STOP + 1];
                }),
            ),
        ];
        for (field, req) in cases {
            let Err(status) = svc.generate(req).await else {
                panic!("{field}: accepted");
            };
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{field}");
            assert!(
                status.message().contains(field),
                "{field}: {}",
                status.message()
            );
        }
        // At the bounds, accepted.
        let mut ok = request(1);
        ok.get_mut().request_id = "r".repeat(MAX_REQUEST_ID_BYTES);
        ok.get_mut().sampling.get_or_insert_default().stop = vec!["s".into(); MAX_STOP];
        assert!(svc.generate(ok).await.is_ok());
    }

    #[tokio::test]
    async fn full_queue_is_resource_exhausted_and_slots_are_respected() {
        let (svc, load, _t) = service(1, 1, 100.0);
        let first = svc.generate(request(10)).await.expect("first runs");
        let mut first = first.into_inner();
        first.next().await; // generating now
        let second = svc.generate(request(10)).await.expect("second queues");
        assert_eq!((load.running(), load.waiting()), (1, 1));
        let third = svc.generate(request(10)).await;
        assert_eq!(
            third.err().map(|s| s.code()),
            Some(tonic::Code::ResourceExhausted)
        );
        drop(second); // a caller that leaves while queued is uncounted
        settle("the queued request to be uncounted", || load.waiting() == 0).await;
        drop(first); // and one that leaves mid-generation frees its slot
        settle("the running request to be cancelled", || {
            load.running() == 0
        })
        .await;
    }

    #[tokio::test]
    async fn draining_refuses_new_work() {
        let (svc, load, _t) = service(1, 1, 1.0);
        load.start_draining();
        assert_eq!(
            svc.generate(request(1)).await.err().map(|s| s.code()),
            Some(tonic::Code::Unavailable)
        );
        let health = svc
            .health(Request::new(pb::HealthRequest {}))
            .await
            .expect("health")
            .into_inner();
        assert!(!health.serving);
    }
}
