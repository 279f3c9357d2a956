//! The `mistralrs` engine: real inference through mistral.rs on a local GGUF file (the
//! tokenizer and chat template come from the GGUF metadata). CPU by default; the `cuda`
//! cargo feature lets `device: cuda` run on NVIDIA GPUs.

use std::{path::Path, sync::Arc};

use futures::StreamExt;
use indexmap::IndexMap;
use mistralrs::core::{
    AutoDeviceMapParams, DefaultSchedulerMethod, DeviceMapSetting, Function, GGUFLoaderBuilder,
    GGUFSpecificConfig, MistralRsBuilder, RequestMessage, TokenSource, TokenizationRequest,
    ToolChoice as MistralToolChoice, ToolType,
    llguidance::{ParserFactory, toktrie::TokTrie},
};
use mistralrs::{
    Constraint as MistralConstraint, CustomLogitsProcessor, Device, MessageContent, Model,
    ModelDType, NormalRequest, Request, Response, SamplingParams, SchedulerConfig,
};
use serde_json::Value;
use tokio_stream::wrappers::ReceiverStream;

use super::{
    Abilities, ChatMessage, Engine, EngineError, EngineEvent, EventStream, FinishReason,
    GenerateParams, Prompt, Token, Tool, TopToken,
    constrain::{self, Constraint},
    decode::{Choose, Decoder, Step},
};
use crate::config;

pub struct MistralEngine {
    model: Arc<Model>,
    accelerator: String,
    /// The tokenizer environment llguidance uses; it also holds every token's bytes.
    factory: Arc<ParserFactory>,
    /// Tokens that end an answer.
    model_end: Arc<[u32]>,
    /// How grammars write the call markers for this tokenizer.
    markers: constrain::Markers,
    abilities: Abilities,
}

impl std::fmt::Debug for MistralEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MistralEngine")
            .field("accelerator", &self.accelerator)
            .field("abilities", &self.abilities)
            .finish_non_exhaustive()
    }
}

/// Whether a chat template renders tools and asks for calls in the format
/// [`constrain`] writes and parses.
pub fn template_calls_tools(template: &str) -> bool {
    template.contains("tools") && template.contains(constrain::CALL_OPEN)
}

impl MistralEngine {
    /// Loads the GGUF at `path` with activations in `dtype`. `max_seqs` bounds how many
    /// sequences mistral.rs batches.
    pub async fn load(
        path: &Path,
        device: config::Device,
        dtype: ModelDType,
        max_seqs: usize,
    ) -> Result<Self, EngineError> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let file = path.file_name().ok_or_else(|| {
            EngineError::InvalidRequest(format!("{} is not a file", path.display()))
        })?;
        if !path.is_file() {
            return Err(EngineError::InvalidRequest(format!(
                "model file {} does not exist (run deploy/local/fetch-models.sh)",
                path.display()
            )));
        }
        let device_kind = match device {
            config::Device::Cpu => Device::Cpu,
            config::Device::Cuda(ordinal) => Device::new_cuda(ordinal)
                .map_err(|e| EngineError::Internal(format!("cuda:{ordinal}: {e}")))?,
        };
        let accelerator = match device {
            config::Device::Cpu => "cpu".to_owned(),
            config::Device::Cuda(ordinal) => format!("cuda:{ordinal}"),
        };
        // The lower-level loader, because the high-level GgufModelBuilder fixes the
        // activation dtype to `auto` (F16 on CPU), which garbles SmolLM2-135M's answers;
        // F32 activations measured as fast on CPU and answer correctly.
        let loader = GGUFLoaderBuilder::new(
            None,
            None,
            dir.to_string_lossy().into_owned(),
            vec![file.to_string_lossy().into_owned()],
            GGUFSpecificConfig { topology: None },
            false,
            None,
        )
        .build();
        let pipeline = loader
            .load_model_from_hf(
                None,
                TokenSource::None,
                &dtype,
                &device_kind,
                true,
                DeviceMapSetting::Auto(AutoDeviceMapParams::default_text()),
                None,
                None,
            )
            .map_err(|e| EngineError::Internal(format!("loading {}: {e:#}", path.display())))?;
        let (factory, model_end, abilities) = {
            let pipeline = pipeline.lock().await;
            let metadata = pipeline.get_metadata();
            let factory = metadata.llg_factory.clone().ok_or_else(|| {
                EngineError::Internal(format!(
                    "{}: mistral.rs built no tokenizer environment",
                    path.display()
                ))
            })?;
            let template = pipeline
                .get_chat_template()
                .and_then(|t| {
                    t.chat_template.as_ref().map(|v| match &v.0 {
                        either::Either::Left(text) => text.clone(),
                        either::Either::Right(named) => {
                            named.iter().flat_map(|m| m.values().cloned()).collect()
                        }
                    })
                })
                .unwrap_or_default();
            let abilities = Abilities {
                tool_calls: template_calls_tools(&template),
                structured_output: true,
            };
            (factory, Arc::from(metadata.eos_tok.clone()), abilities)
        };
        let scheduler = SchedulerConfig::DefaultScheduler {
            method: DefaultSchedulerMethod::Fixed(
                std::num::NonZeroUsize::new(max_seqs.max(1)).unwrap_or(std::num::NonZeroUsize::MIN),
            ),
        };
        // mistral.rs keeps each finished sequence's KV cache for prefix reuse and evicts
        // only caches on an accelerator (`PrefixCacheManagerV2::evict_caches` counts those
        // alone), so on CPU every distinct prompt left at least 512 tokens of K and V
        // behind: workers grew by gigabytes over a few hundred requests. On CUDA it stays
        // on, bounded to mistral.rs's 16 sequences.
        let runner = MistralRsBuilder::new(pipeline, scheduler, false, None)
            .with_no_prefix_cache(matches!(device, config::Device::Cpu))
            .build()
            .await;
        let model = Model::new(runner);
        Ok(Self {
            model: Arc::new(model),
            accelerator,
            markers: constrain::Markers::of(factory.tok_env()),
            factory,
            model_end,
            abilities,
        })
    }
}

/// What mistral.rs itself is asked for: no temperature, top-k or top-p (the [`Decoder`]
/// chooses every token), no stop sequences (the worker matches them on the text,
/// [`super::answer`]), its penalties and length limit, and one log-probability per token
/// (which paces the stream).
fn sampling_params(params: &GenerateParams) -> SamplingParams {
    let s = &params.sampling;
    let mut out = SamplingParams::neutral();
    out.max_len = Some(s.max_tokens as usize);
    out.frequency_penalty = s.frequency_penalty;
    out.presence_penalty = s.presence_penalty;
    out.top_n_logprobs = 1;
    out
}

fn choose(params: &GenerateParams) -> Choose {
    let s = &params.sampling;
    Choose {
        temperature: s.temperature.filter(|t| *t > 0.0),
        top_k: s.top_k,
        top_p: s.top_p,
        seed: s.seed.unwrap_or_else(|| {
            // No seed asked for: vary by request.
            params
                .request_id
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                })
        }),
    }
}

/// One message as the chat template reads it: calls with their arguments as objects (the
/// templates write them with `tojson`), a tool result with its call id and name.
fn template_message(m: ChatMessage) -> IndexMap<String, MessageContent> {
    let mut entry: IndexMap<String, MessageContent> = IndexMap::new();
    entry.insert("role".to_owned(), either::Either::Left(m.role));
    entry.insert("content".to_owned(), either::Either::Left(m.content));
    if !m.tool_calls.is_empty() {
        let calls = m
            .tool_calls
            .into_iter()
            .map(|c| {
                let arguments = serde_json::from_str::<Value>(&c.arguments)
                    .unwrap_or(Value::String(c.arguments));
                IndexMap::from([
                    ("id".to_owned(), Value::String(c.id)),
                    ("type".to_owned(), Value::String("function".to_owned())),
                    (
                        "function".to_owned(),
                        serde_json::json!({"name": c.name, "arguments": arguments}),
                    ),
                ])
            })
            .collect();
        entry.insert("tool_calls".to_owned(), either::Either::Right(calls));
    }
    if let Some(id) = m.tool_call_id {
        entry.insert("tool_call_id".to_owned(), either::Either::Left(id));
    }
    if let Some(name) = m.name {
        entry.insert("name".to_owned(), either::Either::Left(name));
    }
    entry
}

fn mistral_tools(tools: &[Tool]) -> Vec<mistralrs::core::Tool> {
    tools
        .iter()
        .map(|t| mistralrs::core::Tool {
            tp: ToolType::Function,
            function: Function {
                description: (!t.description.is_empty()).then(|| t.description.clone()),
                name: t.name.clone(),
                parameters: match &t.parameters {
                    Value::Object(m) => Some(m.clone().into_iter().collect()),
                    _ => None,
                },
            },
        })
        .collect()
}

fn request_message(prompt: Prompt) -> RequestMessage {
    match prompt {
        Prompt::Chat(messages) => RequestMessage::Chat {
            messages: messages.into_iter().map(template_message).collect(),
            enable_thinking: None,
            reasoning_effort: None,
        },
        Prompt::Text(text) => RequestMessage::Completion {
            text,
            echo_prompt: false,
            best_of: None,
        },
    }
}

/// A token's bytes (a special token's: its name).
fn token_bytes(trie: &TokTrie, id: u32) -> Vec<u8> {
    let bytes = trie.token(id);
    match bytes.split_first() {
        Some((&TokTrie::SPECIAL_TOKEN_MARKER, name)) => name.to_vec(),
        _ => bytes.to_vec(),
    }
}

/// Turns the [`Decoder`]'s steps into tokens and text. The text is the tokens' bytes in
/// order, released a whole character at a time: a token that ends inside a character gets
/// its entry at once and its text with the token that completes the character.
struct Emitter {
    factory: Arc<ParserFactory>,
    model_end: Arc<[u32]>,
    pending: Vec<u8>,
    generated: u32,
}

impl Emitter {
    fn delta(&mut self, steps: Vec<Step>) -> Option<EngineEvent> {
        if steps.is_empty() {
            return None;
        }
        let env = self.factory.tok_env();
        let trie = env.tok_trie();
        let mut tokens = Vec::with_capacity(steps.len());
        for step in steps {
            if self.model_end.contains(&step.id) {
                // The end of the answer is neither part of it nor counted: usage and the
                // log-probabilities list the same tokens.
                continue;
            }
            self.generated += 1;
            // A special token the model chose (other than the end) is part of the answer by
            // its name: Qwen2.5 opens a call with its `<tool_call>` token.
            let bytes = token_bytes(trie, step.id);
            self.pending.extend_from_slice(&bytes);
            tokens.push(Token {
                text: String::from_utf8_lossy(&bytes).into_owned(),
                bytes,
                token_id: Some(step.id),
                logprob: step.logprob,
                top: step
                    .top
                    .into_iter()
                    .map(|(token_id, logprob)| {
                        let bytes = token_bytes(trie, token_id);
                        TopToken {
                            token_id,
                            token: String::from_utf8_lossy(&bytes).into_owned(),
                            bytes,
                            logprob,
                        }
                    })
                    .collect(),
            });
        }
        let whole = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) if e.error_len().is_some() => self.pending.len(),
            Err(e) => e.valid_up_to(),
        };
        let text = String::from_utf8_lossy(&self.pending[..whole]).into_owned();
        self.pending.drain(..whole);
        (!tokens.is_empty() || !text.is_empty()).then_some(EngineEvent::Delta { text, tokens })
    }

    /// Whatever is left of an unfinished character, as U+FFFD.
    fn flush(&mut self) -> Option<EngineEvent> {
        (!self.pending.is_empty()).then(|| EngineEvent::Delta {
            text: String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned(),
            tokens: Vec::new(),
        })
    }
}

fn finish_reason(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("length") => FinishReason::Length,
        _ => FinishReason::Stop,
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What one response from mistral.rs says about the generation.
enum Heard {
    /// More tokens may have been decided.
    Progress,
    /// The generation is over: why, and mistral.rs's prompt count where it gave one.
    Finished(FinishReason, Option<u32>),
    Failed(EngineError),
}

fn read(response: Response) -> Heard {
    match response {
        Response::Chunk(chunk) => {
            match chunk.choices.iter().find_map(|c| c.finish_reason.clone()) {
                Some(reason) => Heard::Finished(
                    finish_reason(Some(&reason)),
                    chunk.usage.as_ref().map(|u| to_u32(u.prompt_tokens)),
                ),
                None => Heard::Progress,
            }
        }
        Response::CompletionChunk(chunk) => {
            match chunk.choices.iter().find_map(|c| c.finish_reason.clone()) {
                Some(reason) => Heard::Finished(finish_reason(Some(&reason)), None),
                None => Heard::Progress,
            }
        }
        Response::Done(done) => Heard::Finished(
            finish_reason(done.choices.first().map(|c| c.finish_reason.as_str())),
            Some(to_u32(done.usage.prompt_tokens)),
        ),
        Response::CompletionDone(done) => Heard::Finished(
            finish_reason(done.choices.first().map(|c| c.finish_reason.as_str())),
            Some(to_u32(done.usage.prompt_tokens)),
        ),
        Response::ValidationError(e) => Heard::Failed(EngineError::InvalidRequest(e.to_string())),
        Response::InternalError(e) => Heard::Failed(EngineError::Internal(e.to_string())),
        Response::ModelError(msg, _) | Response::CompletionModelError(msg, _) => {
            Heard::Failed(EngineError::Internal(msg))
        }
        other => Heard::Failed(EngineError::Internal(format!(
            "unexpected response from mistral.rs: {}",
            response_kind(&other)
        ))),
    }
}

fn response_kind(r: &Response) -> &'static str {
    match r {
        Response::ImageGeneration(_) => "image generation",
        Response::Speech { .. } => "speech",
        Response::Raw { .. } => "raw logits",
        Response::Embeddings { .. } => "embeddings",
        _ => "text",
    }
}

impl Engine for MistralEngine {
    fn kind(&self) -> &'static str {
        "mistralrs"
    }

    fn accelerator(&self) -> String {
        self.accelerator.clone()
    }

    fn abilities(&self) -> Abilities {
        self.abilities
    }

    fn generate(&self, params: GenerateParams) -> EventStream {
        let constraint =
            match constrain::grammar(params.tools.as_ref(), &params.format, &self.markers) {
                None => None,
                Some(lark) => {
                    match Constraint::new(&self.factory, &lark, self.model_end.to_vec()) {
                        Ok(c) => Some(c),
                        Err(e) => return futures::stream::iter([Err(e)]).boxed(),
                    }
                }
            };
        let decoder = Arc::new(
            Decoder::new(choose(&params), params.top_logprobs as usize).constrained(constraint),
        );
        let max_tokens = params.sampling.max_tokens;
        let sampling = sampling_params(&params);
        let tools = params.tools.as_ref().map(|t| mistral_tools(&t.list));
        let messages = request_message(params.prompt);
        let counted = match &messages {
            RequestMessage::Chat { messages, .. } => either::Either::Left(messages.clone()),
            RequestMessage::Completion { text, .. } => either::Either::Right(text.clone()),
            _ => either::Either::Right(String::new()),
        };
        let is_chat = counted.is_left();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let request = Request::Normal(Box::new(NormalRequest {
            messages,
            sampling_params: sampling,
            response: tx,
            return_logprobs: true,
            is_streaming: true,
            id: 0,
            constraint: MistralConstraint::None,
            suffix: None,
            // Rendered by the chat template; calls are constrained and parsed by us, so
            // mistral.rs is told not to look for any.
            tool_choice: tools.as_ref().map(|_| MistralToolChoice::None),
            tools: tools.clone(),
            logits_processors: Some(vec![Arc::clone(&decoder) as Arc<dyn CustomLogitsProcessor>]),
            return_raw_logits: false,
            web_search_options: None,
            model_id: None,
            truncate_sequence: false,
        }));
        let model = Arc::clone(&self.model);
        // Dropping the returned stream drops `rx`; mistral.rs then fails to send the next
        // chunk and stops the sequence, so a client that goes away (or a stop sequence)
        // frees its slot.
        let sent = async move {
            let sender = model
                .inner()
                .get_sender(None)
                .map_err(|e| EngineError::Internal(format!("mistral.rs is not running: {e}")))?;
            // The prompt's length, known before the first token (usage needs it when a stop
            // sequence ends the answer before mistral.rs reports it).
            let (count_tx, mut count_rx) = tokio::sync::mpsc::channel(1);
            sender
                .send(Request::Tokenize(TokenizationRequest {
                    text: counted,
                    tools,
                    add_generation_prompt: true,
                    add_special_tokens: !is_chat,
                    enable_thinking: None,
                    reasoning_effort: None,
                    response: count_tx,
                }))
                .await
                .map_err(|_| EngineError::Internal("mistral.rs engine stopped".to_owned()))?;
            let prompt_tokens = match count_rx.recv().await {
                Some(Ok(ids)) => to_u32(ids.len()),
                Some(Err(e)) => {
                    return Err(EngineError::InvalidRequest(format!(
                        "the prompt cannot be rendered: {e}"
                    )));
                }
                None => {
                    return Err(EngineError::Internal(
                        "mistral.rs engine stopped".to_owned(),
                    ));
                }
            };
            sender
                .send(request)
                .await
                .map_err(|_| EngineError::Internal("mistral.rs engine stopped".to_owned()))?;
            Ok::<_, EngineError>((prompt_tokens, ReceiverStream::new(rx)))
        };
        let (factory, model_end) = (Arc::clone(&self.factory), Arc::clone(&self.model_end));
        futures::stream::once(sent)
            .flat_map(move |opened| match opened {
                Err(e) => futures::stream::iter(vec![Err(e)]).boxed(),
                Ok((prompt_tokens, responses)) => {
                    let decoder = Arc::clone(&decoder);
                    let emitter = Emitter {
                        factory: Arc::clone(&factory),
                        model_end: Arc::clone(&model_end),
                        pending: Vec::new(),
                        generated: 0,
                    };
                    // `None` marks the end of mistral.rs's channel.
                    let responses = responses
                        .map(Some)
                        .chain(futures::stream::once(async { None }));
                    let started =
                        futures::stream::iter([Ok(EngineEvent::Started { prompt_tokens })]);
                    started
                        .chain(
                            responses
                                .scan((emitter, false), move |(emitter, finished), response| {
                                    if *finished {
                                        return futures::future::ready(None);
                                    }
                                    let mut events: Vec<Result<EngineEvent, EngineError>> = emitter
                                        .delta(decoder.drain())
                                        .into_iter()
                                        .map(Ok)
                                        .collect();
                                    let step = match response {
                                        Some(response) => read(response),
                                        // The channel closed without a finish (the last
                                        // chunk can go missing when a token ends inside a
                                        // character): finish here.
                                        None => Heard::Finished(
                                            if emitter.generated >= max_tokens {
                                                FinishReason::Length
                                            } else {
                                                FinishReason::Stop
                                            },
                                            None,
                                        ),
                                    };
                                    match step {
                                        Heard::Progress => {}
                                        Heard::Finished(finish, counted) => {
                                            *finished = true;
                                            events.extend(emitter.flush().map(Ok));
                                            events.push(Ok(EngineEvent::Done {
                                                finish,
                                                prompt_tokens: counted
                                                    .filter(|&n| n > 0)
                                                    .unwrap_or(prompt_tokens),
                                                completion_tokens: emitter.generated,
                                            }));
                                        }
                                        Heard::Failed(e) => {
                                            *finished = true;
                                            events.push(Err(e));
                                        }
                                    }
                                    futures::future::ready(Some(futures::stream::iter(events)))
                                })
                                .flatten(),
                        )
                        .boxed()
                }
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests;
