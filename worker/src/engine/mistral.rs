//! The `mistralrs` engine: real inference through mistral.rs on a local GGUF file (the
//! tokenizer and chat template come from the GGUF metadata). CPU by default; the `cuda`
//! cargo feature lets `device: cuda` run on NVIDIA GPUs.

use std::{path::Path, sync::Arc};

use futures::StreamExt;
use indexmap::IndexMap;
use mistralrs::core::RequestMessage;
use mistralrs::{
    Constraint, Device, GgufModelBuilder, MessageContent, Model, NormalRequest, Request, Response,
    ResponseLogprob, SamplingParams, StopTokens,
};
use tokio_stream::wrappers::ReceiverStream;

use super::{
    Engine, EngineError, EngineEvent, EventStream, FinishReason, GenerateParams, Prompt, Token,
    TopToken,
};
use crate::config;

pub struct MistralEngine {
    model: Arc<Model>,
    accelerator: String,
}

impl std::fmt::Debug for MistralEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MistralEngine")
            .field("accelerator", &self.accelerator)
            .finish_non_exhaustive()
    }
}

impl MistralEngine {
    /// Loads the GGUF at `path`. `max_seqs` bounds how many sequences mistral.rs batches.
    pub async fn load(
        path: &Path,
        device: config::Device,
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
        let mut builder = GgufModelBuilder::new(
            dir.to_string_lossy(),
            vec![file.to_string_lossy().into_owned()],
        )
        .with_max_num_seqs(max_seqs);
        let accelerator = match device {
            config::Device::Cpu => {
                builder = builder.with_force_cpu();
                "cpu".to_owned()
            }
            config::Device::Cuda(ordinal) => {
                let dev = Device::new_cuda(ordinal)
                    .map_err(|e| EngineError::Internal(format!("cuda:{ordinal}: {e}")))?;
                builder = builder.with_device(dev);
                format!("cuda:{ordinal}")
            }
        };
        let model = builder
            .build()
            .await
            .map_err(|e| EngineError::Internal(format!("loading {}: {e:#}", path.display())))?;
        Ok(Self {
            model: Arc::new(model),
            accelerator,
        })
    }
}

fn sampling_params(params: &GenerateParams) -> SamplingParams {
    let s = &params.sampling;
    let mut out = SamplingParams::deterministic();
    out.temperature = s.temperature.map(f64::from);
    out.top_p = s.top_p.map(f64::from);
    out.top_k = s.top_k.map(|k| k as usize);
    out.max_len = Some(s.max_tokens as usize);
    out.frequency_penalty = s.frequency_penalty;
    out.presence_penalty = s.presence_penalty;
    if !s.stop.is_empty() {
        out.stop_toks = Some(StopTokens::Seqs(s.stop.clone()));
    }
    // We always ask for log-probabilities (the router judges confidence from them) and at
    // least one alternative, which also recovers the sampled token's id.
    out.top_n_logprobs = (params.top_logprobs as usize).max(1);
    out
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

fn token_of(lp: ResponseLogprob, top_n: usize) -> Token {
    // mistral.rs reports the sampled token's text and logprob but not its id; the id is the
    // alternative whose logprob is bit-identical (both come from the same softmax row).
    let token_id = lp
        .top_logprobs
        .iter()
        .find(|t| t.logprob.to_bits() == lp.logprob.to_bits())
        .map(|t| t.token);
    Token {
        text: lp.token,
        token_id,
        logprob: lp.logprob,
        top: lp
            .top_logprobs
            .into_iter()
            .take(top_n)
            .map(|t| TopToken {
                token_id: t.token,
                token: t.bytes.unwrap_or_default(),
                logprob: t.logprob,
            })
            .collect(),
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

/// Turns mistral.rs responses into engine events. Returns the event(s) for one response
/// and whether the stream is over.
///
/// `prompt_tokens` is our own count for completions, whose chunks carry no usage.
fn translate(
    response: Response,
    top_n: usize,
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
                    .map(|lp| token_of(lp, top_n))
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
                    .map(|lp| token_of(lp, top_n))
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
        let top_n = params.top_logprobs as usize;
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
            logits_processors: None,
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
                Ok((prompt_tokens, responses)) => responses
                    .scan(false, move |finished, response| {
                        if *finished {
                            return futures::future::ready(None);
                        }
                        let (events, done) = translate(response, top_n, prompt_tokens);
                        *finished = done;
                        futures::future::ready(Some(futures::stream::iter(events)))
                    })
                    .flatten()
                    .boxed(),
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mistralrs::TopLogprob;

    #[test]
    fn sampled_token_id_is_recovered_from_alternatives() {
        let lp = ResponseLogprob {
            token: " Paris".into(),
            logprob: -0.25,
            bytes: None,
            top_logprobs: vec![
                TopLogprob {
                    token: 7,
                    logprob: -0.25,
                    bytes: Some(" Paris".into()),
                },
                TopLogprob {
                    token: 9,
                    logprob: -2.0,
                    bytes: Some(" Lyon".into()),
                },
            ],
        };
        let token = token_of(lp, 1);
        assert_eq!(token.token_id, Some(7));
        assert_eq!(token.top.len(), 1);
        assert_eq!(token.top[0].token, " Paris");
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
        assert_eq!(s.temperature, None);
        assert_eq!(s.max_len, Some(5));
        assert_eq!(s.top_n_logprobs, 1);
        assert!(matches!(s.stop_toks, Some(StopTokens::Seqs(ref v)) if v == &["\n"]));
    }
}
