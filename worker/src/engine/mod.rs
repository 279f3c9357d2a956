//! The `Engine` trait: one model that turns a prompt into a stream of tokens with their
//! log-probabilities. `mistralrs` runs real inference; `sim` simulates it without weights.

pub mod answer;
pub mod constrain;
pub mod decode;
pub mod gguf;
pub mod mistral;
pub mod sim;

use futures::stream::BoxStream;

/// One chat message, already validated by the router.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// Calls an assistant made (role `assistant`).
    pub tool_calls: Vec<ToolCall>,
    /// The call a tool result answers (role `tool`).
    pub tool_call_id: Option<String>,
    /// The tool's name, on a tool result.
    pub name: Option<String>,
}

/// A function call: `arguments` is a JSON object, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// Prose or calls, as the model decides.
    Auto,
    /// Prose only (the tools are still shown to the model).
    None,
    /// At least one call.
    Required,
    /// A call of this tool.
    Named(String),
}

/// The tools a request offers and how the model may use them.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    pub list: Vec<Tool>,
    pub choice: ToolChoice,
    /// At most one call per answer.
    pub single: bool,
}

/// What the answer's text must be.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Format {
    #[default]
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching this schema.
    JsonSchema(serde_json::Value),
}

/// What an engine can do besides free text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Abilities {
    /// The chat template renders tools and the model answers calls in a format the worker
    /// parses.
    pub tool_calls: bool,
    /// Answers can be constrained to a JSON Schema.
    pub structured_output: bool,
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
    /// Functions the model may call; `None` when the request offers none.
    pub tools: Option<Tools>,
    pub format: Format,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopToken {
    pub token_id: u32,
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// One generated token.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// `bytes` read as UTF-8 (U+FFFD for a partial character).
    pub text: String,
    /// The token's exact bytes: an answer's text is its tokens' bytes, in order.
    pub bytes: Vec<u8>,
    pub token_id: Option<u32>,
    pub logprob: f32,
    pub top: Vec<TopToken>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    /// The answer is the calls in the preceding [`EngineEvent::ToolCalls`].
    ToolCalls,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// The first event of every generation: the prompt's length in tokens.
    Started { prompt_tokens: u32 },
    /// New text and the tokens that produced it.
    Delta { text: String, tokens: Vec<Token> },
    /// The answer's function calls, just before `Done`.
    ToolCalls(Vec<ToolCall>),
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
    /// Tool calls and constrained output, where the model supports them.
    fn abilities(&self) -> Abilities {
        Abilities::default()
    }
    fn generate(&self, params: GenerateParams) -> EventStream;
}
