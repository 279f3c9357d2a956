//! The `Engine` trait: one model that turns a prompt into a stream of tokens with their
//! log-probabilities. `mistralrs` runs real inference; `sim` simulates it without weights.

pub mod decode;
pub mod gguf;
pub mod mistral;
pub mod sim;

use futures::stream::BoxStream;

/// One chat message, already validated by the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Sent to the model as it is.
    Text(String),
}

/// Sampling settings; `temperature: None` means greedy decoding.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sampling {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub max_tokens: u32,
    pub stop: Vec<String>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    /// Seed for sampling; absent, each request draws its own.
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    pub request_id: String,
    pub prompt: Prompt,
    pub sampling: Sampling,
    pub top_logprobs: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopToken {
    pub token_id: u32,
    pub token: String,
    pub logprob: f32,
}

/// One generated token.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub text: String,
    pub token_id: Option<u32>,
    pub logprob: f32,
    pub top: Vec<TopToken>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// New text and the tokens that produced it.
    Delta { text: String, tokens: Vec<Token> },
    /// The last event of every successful generation.
    Done {
        finish: FinishReason,
        prompt_tokens: u32,
        completion_tokens: u32,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request cannot be served as asked (e.g. the prompt is longer than the context).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The engine failed; the request may succeed elsewhere.
    #[error("engine failure: {0}")]
    Internal(String),
}

pub type EventStream = BoxStream<'static, Result<EngineEvent, EngineError>>;

/// A loaded model. Generation stops when the returned stream is dropped.
pub trait Engine: Send + Sync + 'static {
    /// `mistralrs` or `sim`.
    fn kind(&self) -> &'static str;
    /// `cpu`, `cuda:0`, `none`.
    fn accelerator(&self) -> String;
    fn generate(&self, params: GenerateParams) -> EventStream;
}
