//! The `mistralrs` engine: real inference through mistral.rs on a local GGUF file (the
//! tokenizer and chat template come from the GGUF metadata). CPU by default; the `cuda`
//! cargo feature lets `device: cuda` run on NVIDIA GPUs.

use std::{path::Path, sync::Arc};

use futures::StreamExt;
use indexmap::IndexMap;
use mistralrs::core::{
    AutoDeviceMapParams, DefaultSchedulerMethod, DeviceMapSetting, GGUFLoaderBuilder,
    GGUFSpecificConfig, MistralRsBuilder, RequestMessage, ResponseLogprob, TokenSource,
};
use mistralrs::{
    Constraint, CustomLogitsProcessor, Device, MessageContent, Model, ModelDType, NormalRequest,
    Request, Response, SamplingParams, SchedulerConfig, StopTokens,
};
use tokio_stream::wrappers::ReceiverStream;

use super::{
    Engine, EngineError, EngineEvent, EventStream, FinishReason, GenerateParams, Prompt, Token,
    TopToken,
    decode::{Choose, Decoder},
};
use crate::config;

/// Turns a token id into its text (for the alternatives in `top_logprobs`).
type Detokenize = Arc<dyn Fn(u32) -> String + Send + Sync>;

pub struct MistralEngine {
    model: Arc<Model>,
    accelerator: String,
    detokenize: Detokenize,
}

impl std::fmt::Debug for MistralEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MistralEngine")
            .field("accelerator", &self.accelerator)
            .finish_non_exhaustive()
    }
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
        let scheduler = SchedulerConfig::DefaultScheduler {
            method: DefaultSchedulerMethod::Fixed(
                std::num::NonZeroUsize::new(max_seqs.max(1)).unwrap_or(std::num::NonZeroUsize::MIN),
            ),
        };
        let detokenize: Detokenize = match pipeline.lock().await.tokenizer() {
            Some(tok) => Arc::new(move |id| tok.decode(&[id], false).unwrap_or_default()),
            None => Arc::new(|_| String::new()),
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
            detokenize,
        })
    }
}

/// What mistral.rs itself is asked for: no temperature, top-k or top-p (the [`Decoder`]
/// chooses every token), its penalties, stops and length limit, and one log-probability
/// per token (which carries the chosen token's id back to us).
fn sampling_params(params: &GenerateParams) -> SamplingParams {
    let s = &params.sampling;
    let mut out = SamplingParams::neutral();
    out.max_len = Some(s.max_tokens as usize);
    out.frequency_penalty = s.frequency_penalty;
    out.presence_penalty = s.presence_penalty;
    if !s.stop.is_empty() {
        out.stop_toks = Some(StopTokens::Seqs(s.stop.clone()));
    }
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

fn request_message(prompt: Prompt) -> RequestMessage {
    match prompt {
        Prompt::Chat(messages) => RequestMessage::Chat {
            messages: messages
                .into_iter()
                .map(|m| {
                    let mut entry: IndexMap<String, MessageContent> = IndexMap::new();
                    entry.insert("role".to_owned(), either::Either::Left(m.role));
                    entry.insert("content".to_owned(), either::Either::Left(m.content));
                    entry
                })
                .collect(),
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

/// Pairs mistral.rs's report of a token with the [`Decoder`]'s step for it.
fn token_of(lp: ResponseLogprob, decoder: &Decoder, detokenize: &Detokenize) -> Token {
    // mistral.rs's value for the forced token is log10(0) = -inf and its top alternative is
    // that token, so the bit-identical entry names the chosen token's id.
    let id = lp
        .top_logprobs
        .iter()
        .find(|t| t.logprob.to_bits() == lp.logprob.to_bits())
        .map(|t| t.token);
    match decoder.take(id) {
        Some(step) => Token {
            text: lp.token,
            token_id: Some(step.id),
            logprob: step.logprob,
            top: step
                .top
                .into_iter()
                .map(|(token_id, logprob)| TopToken {
                    token_id,
                    token: detokenize(token_id),
                    logprob,
                })
                .collect(),
        },
        None => Token {
            text: lp.token,
            token_id: id,
            logprob: f32::NAN,
            top: Vec::new(),
        },
    }
}

/// What a generation has produced so far.
#[derive(Debug, Default)]
struct Progress {
    finished: bool,
    tokens: u32,
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

/// Turns mistral.rs responses into engine events. Returns the event(s) for one response
/// and whether the stream is over.
///
/// `prompt_tokens` is our own count for completions, whose chunks carry no usage.
fn translate(
    response: Response,
    decoder: &Decoder,
    detokenize: &Detokenize,
    prompt_tokens: u32,
) -> (Vec<Result<EngineEvent, EngineError>>, bool) {
    match response {
        Response::Chunk(chunk) => {
            let mut events = Vec::new();
            let mut done = false;
            for choice in chunk.choices {
                let text = choice.delta.content.unwrap_or_default();
                let tokens = choice
                    .logprobs
                    .map(|lp| token_of(lp, decoder, detokenize))
                    .into_iter()
                    .collect();
                events.push(Ok(EngineEvent::Delta { text, tokens }));
                if choice.finish_reason.is_some() {
                    let usage = chunk.usage.as_ref();
                    events.push(Ok(EngineEvent::Done {
                        finish: finish_reason(choice.finish_reason.as_deref()),
                        prompt_tokens: usage.map_or(0, |u| to_u32(u.prompt_tokens)),
                        completion_tokens: usage.map_or(0, |u| to_u32(u.completion_tokens)),
                    }));
                    done = true;
                }
            }
            (events, done)
        }
        Response::CompletionChunk(chunk) => {
            let mut events = Vec::new();
            let mut done = false;
            for choice in chunk.choices {
                let tokens = choice
                    .logprobs
                    .map(|lp| token_of(lp, decoder, detokenize))
                    .into_iter()
                    .collect();
                events.push(Ok(EngineEvent::Delta {
                    text: choice.text,
                    tokens,
                }));
                if choice.finish_reason.is_some() {
                    // Completion chunks carry no usage: the prompt was counted before
                    // sending, and the worker counts the completion tokens it relayed.
                    events.push(Ok(EngineEvent::Done {
                        finish: finish_reason(choice.finish_reason.as_deref()),
                        prompt_tokens,
                        completion_tokens: 0,
                    }));
                    done = true;
                }
            }
            (events, done)
        }
        Response::Done(done) => (
            vec![Ok(EngineEvent::Done {
                finish: finish_reason(done.choices.first().map(|c| c.finish_reason.as_str())),
                prompt_tokens: to_u32(done.usage.prompt_tokens),
                completion_tokens: to_u32(done.usage.completion_tokens),
            })],
            true,
        ),
        Response::CompletionDone(done) => (
            vec![Ok(EngineEvent::Done {
                finish: finish_reason(done.choices.first().map(|c| c.finish_reason.as_str())),
                prompt_tokens: to_u32(done.usage.prompt_tokens),
                completion_tokens: to_u32(done.usage.completion_tokens),
            })],
            true,
        ),
        Response::ValidationError(e) => {
            (vec![Err(EngineError::InvalidRequest(e.to_string()))], true)
        }
        Response::InternalError(e) => (vec![Err(EngineError::Internal(e.to_string()))], true),
        Response::ModelError(msg, _) | Response::CompletionModelError(msg, _) => {
            (vec![Err(EngineError::Internal(msg))], true)
        }
        other => (
            vec![Err(EngineError::Internal(format!(
                "unexpected response from mistral.rs: {}",
                response_kind(&other)
            )))],
            true,
        ),
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

    fn generate(&self, params: GenerateParams) -> EventStream {
        let decoder = Arc::new(Decoder::new(choose(&params), params.top_logprobs as usize));
        let detokenize = Arc::clone(&self.detokenize);
        let max_tokens = params.sampling.max_tokens;
        let sampling = sampling_params(&params);
        let text_prompt = match &params.prompt {
            Prompt::Text(t) => Some(t.clone()),
            Prompt::Chat(_) => None,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let request = Request::Normal(Box::new(NormalRequest {
            messages: request_message(params.prompt),
            sampling_params: sampling,
            response: tx,
            return_logprobs: true,
            is_streaming: true,
            id: 0,
            constraint: Constraint::None,
            suffix: None,
            tools: None,
            tool_choice: None,
            logits_processors: Some(vec![Arc::clone(&decoder) as Arc<dyn CustomLogitsProcessor>]),
            return_raw_logits: false,
            web_search_options: None,
            model_id: None,
            truncate_sequence: false,
        }));
        let model = Arc::clone(&self.model);
        // Dropping the returned stream drops `rx`; mistral.rs then fails to send the next
        // chunk and stops the sequence, so a client that goes away frees its slot.
        let sent = async move {
            let prompt_tokens = match text_prompt {
                Some(text) => model
                    .tokenize(either::Either::Right(text), None, true, false, None)
                    .await
                    .map(|ids| to_u32(ids.len()))
                    .map_err(|e| EngineError::Internal(format!("tokenizing the prompt: {e}")))?,
                None => 0,
            };
            let sender = model
                .inner()
                .get_sender(None)
                .map_err(|e| EngineError::Internal(format!("mistral.rs is not running: {e}")))?;
            sender
                .send(request)
                .await
                .map_err(|_| EngineError::Internal("mistral.rs engine stopped".to_owned()))?;
            Ok::<_, EngineError>((prompt_tokens, ReceiverStream::new(rx)))
        };
        futures::stream::once(sent)
            .flat_map(move |opened| match opened {
                Err(e) => futures::stream::iter(vec![Err(e)]).boxed(),
                Ok((prompt_tokens, responses)) => {
                    let (decoder, detokenize) = (Arc::clone(&decoder), Arc::clone(&detokenize));
                    // `None` marks the end of mistral.rs's channel.
                    let responses = responses
                        .map(Some)
                        .chain(futures::stream::once(async { None }));
                    responses
                        .scan(Progress::default(), move |progress, response| {
                            if progress.finished {
                                return futures::future::ready(None);
                            }
                            let events = match response {
                                Some(response) => {
                                    let (events, done) =
                                        translate(response, &decoder, &detokenize, prompt_tokens);
                                    progress.finished = done;
                                    progress.tokens += events
                                        .iter()
                                        .filter_map(|e| match e {
                                            Ok(EngineEvent::Delta { tokens, .. }) => {
                                                Some(tokens.len() as u32)
                                            }
                                            _ => None,
                                        })
                                        .sum::<u32>();
                                    events
                                }
                                // mistral.rs sends no chunk for a token that ends inside a
                                // multi-byte character; when that is the last token, the
                                // channel closes without a finish. Finish it ourselves.
                                None => {
                                    progress.finished = true;
                                    vec![Ok(EngineEvent::Done {
                                        finish: if progress.tokens >= max_tokens {
                                            FinishReason::Length
                                        } else {
                                            FinishReason::Stop
                                        },
                                        prompt_tokens,
                                        completion_tokens: 0,
                                    })]
                                }
                            };
                            futures::future::ready(Some(futures::stream::iter(events)))
                        })
                        .flatten()
                        .boxed()
                }
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mistralrs::{Tensor, TopLogprob};

    #[test]
    fn forced_token_is_paired_with_its_step() {
        let decoder = Decoder::new(
            Choose {
                temperature: None,
                top_k: None,
                top_p: None,
                seed: 1,
            },
            2,
        );
        decoder
            .apply(
                &Tensor::new(&[0.5f32, 2.0, 1.0], &mistralrs::Device::Cpu).expect("tensor"),
                &[1],
            )
            .expect("apply");
        // What mistral.rs reports for the forced token: log10(0) for it, NaN for the rest.
        let lp = ResponseLogprob {
            token: " Paris".into(),
            logprob: f32::NEG_INFINITY,
            bytes: None,
            top_logprobs: vec![TopLogprob {
                token: 1,
                logprob: f32::NEG_INFINITY,
                bytes: Some(" Paris".into()),
            }],
        };
        let detokenize: Detokenize = Arc::new(|id| format!("t{id}"));
        let token = token_of(lp, &decoder, &detokenize);
        assert_eq!(token.token_id, Some(1));
        assert!(
            token.logprob < 0.0 && token.logprob > -1.0,
            "{}",
            token.logprob
        );
        assert_eq!(
            token
                .top
                .iter()
                .map(|t| t.token.as_str())
                .collect::<Vec<_>>(),
            vec!["t1", "t2"]
        );
    }

    #[test]
    fn greedy_unless_temperature_is_set() {
        let p = GenerateParams {
            request_id: "r".into(),
            prompt: Prompt::Text("x".into()),
            sampling: super::super::Sampling {
                max_tokens: 5,
                stop: vec!["\n".into()],
                ..Default::default()
            },
            top_logprobs: 0,
        };
        let s = sampling_params(&p);
        assert_eq!(
            s.temperature, None,
            "the Decoder chooses tokens, not mistral.rs"
        );
        assert_eq!(choose(&p).temperature, None);
        assert_eq!(s.max_len, Some(5));
        assert_eq!(s.top_n_logprobs, 1);
        assert!(matches!(s.stop_toks, Some(StopTokens::Seqs(ref v)) if v == &["\n"]));
    }
}
