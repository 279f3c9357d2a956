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
mod tests;
