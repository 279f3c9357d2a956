//! A validated generation request: what the HTTP shell makes of a chat or completion body
//! and hands the pipeline, the limits it was validated against, and the router's token
//! estimates. Nothing here parses or knows HTTP.

use switchback_proto::pb;

/// Limits applied while validating a request. Each field is the router config key of the
/// same name (`max_deadline_ms` comes from `request_timeout_s`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimits {
    pub max_tokens_limit: u32,
    pub max_messages: usize,
    /// Estimated prompt tokens ([`estimate_tokens`]).
    pub max_prompt_tokens: u32,
    /// UTF-8 bytes of one chat message's content.
    pub max_message_bytes: usize,
    pub max_stop_sequences: usize,
    /// UTF-8 bytes of one stop sequence.
    pub max_stop_bytes: usize,
    pub max_top_logprobs: u32,
    /// The longest `switchback.deadline_ms`: the request timeout.
    pub max_deadline_ms: u64,
}

impl Default for RequestLimits {
    /// The router's defaults.
    fn default() -> Self {
        Self {
            max_tokens_limit: 4096,
            max_messages: 1024,
            max_prompt_tokens: 32_768,
            max_message_bytes: 4 * 1024 * 1024,
            max_stop_sequences: 4,
            max_stop_bytes: 256,
            max_top_logprobs: 20,
            max_deadline_ms: 600_000,
        }
    }
}

/// The router's token estimate for text of `bytes` UTF-8 bytes: 4 bytes a token, rounded
/// up. The router has no tokenizer; workers count exactly.
pub fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// Tokens a chat template adds around each message (role markers and separators: four in
/// ChatML, `<|im_start|>user\n ... <|im_end|>\n`), and once to open the reply.
pub const MESSAGE_OVERHEAD_TOKENS: u64 = 4;
pub const REPLY_PRIMER_TOKENS: u64 = 3;

/// The router's token estimate for a chat prompt of `messages` messages whose contents
/// hold `bytes` UTF-8 bytes: the text, plus the template's tokens for each message (1,024
/// empty messages are still some 4,000 tokens of prompt).
pub fn estimate_chat_tokens(bytes: usize, messages: usize) -> u64 {
    estimate_tokens(bytes)
        .saturating_add(MESSAGE_OVERHEAD_TOKENS.saturating_mul(messages as u64))
        .saturating_add(REPLY_PRIMER_TOKENS)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// An assistant's calls earlier in the conversation.
    pub tool_calls: Vec<pb::ToolCall>,
    /// The call a tool result answers.
    pub tool_call_id: Option<String>,
    /// The tool's name, on a tool result.
    pub name: Option<String>,
}

impl ChatMessage {
    /// UTF-8 bytes of its text and of its calls.
    pub fn bytes(&self) -> usize {
        self.content.len()
            + self
                .tool_calls
                .iter()
                .map(|c| c.id.len() + c.name.len() + c.arguments.len())
                .sum::<usize>()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PromptKind {
    Chat(Vec<ChatMessage>),
    Text(String),
}

/// A validated request of either endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub model: String,
    pub prompt: PromptKind,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Vec<String>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub seed: Option<u64>,
    pub stream: bool,
    pub include_usage: bool,
    /// Whether to return log-probabilities, and how many alternatives per token.
    pub logprobs: Option<u32>,
    /// The request's quality target for `auto` (body `switchback.quality`).
    pub quality: Option<f64>,
    /// `switchback.cascade`.
    pub cascade: Option<bool>,
    /// `switchback.deadline_ms`.
    pub deadline_ms: Option<u64>,
    /// Top-level fields of the body the router ignored.
    pub ignored: Vec<String>,
    /// Tools and output format.
    pub asks: Asks,
}

impl Generation {
    /// The text the difficulty predictor reads: every message's content, in order.
    pub fn prompt_text(&self) -> String {
        match &self.prompt {
            PromptKind::Chat(messages) => messages
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            PromptKind::Text(t) => t.clone(),
        }
    }

    /// UTF-8 bytes of the prompt's text (with the tools and schema the template adds).
    pub fn prompt_bytes(&self) -> usize {
        let text: usize = match &self.prompt {
            PromptKind::Chat(messages) => messages.iter().map(ChatMessage::bytes).sum(),
            PromptKind::Text(t) => t.len(),
        };
        text + self.asks.prompt_bytes()
    }

    /// The router's estimate of the prompt's tokens (with the chat template's, for chat).
    pub fn estimated_prompt_tokens(&self) -> u64 {
        match &self.prompt {
            PromptKind::Chat(messages) => estimate_chat_tokens(self.prompt_bytes(), messages.len()),
            PromptKind::Text(t) => estimate_tokens(t.len()),
        }
    }

    /// The GenAI semantic conventions' `gen_ai.operation.name`.
    pub fn operation(&self) -> &'static str {
        match self.prompt {
            PromptKind::Chat(_) => "chat",
            PromptKind::Text(_) => "text_completion",
        }
    }
}

/// What a request asks of the answer besides text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Asks {
    pub tools: Vec<pb::Tool>,
    pub tool_choice: Option<pb::ToolChoice>,
    /// `parallel_tool_calls: false`.
    pub single_tool_call: bool,
    pub response_format: Option<pb::ResponseFormat>,
}

impl Asks {
    pub fn needs(&self) -> Needs {
        Needs {
            tools: !self.tools.is_empty(),
            schema: self
                .response_format
                .as_ref()
                .is_some_and(|f| f.kind() != pb::response_format::Kind::Text),
        }
    }

    /// Bytes the tools and the schema add to the prompt.
    pub fn prompt_bytes(&self) -> usize {
        self.tools
            .iter()
            .map(|t| t.name.len() + t.description.len() + t.parameters.len())
            .sum::<usize>()
            + self.response_format.as_ref().map_or(0, |f| f.schema.len())
    }
}

/// What a worker must be able to do to serve a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    pub tools: bool,
    pub schema: bool,
}

impl Needs {
    pub fn any(self) -> bool {
        self.tools || self.schema
    }

    /// Whether a worker with this record can serve the request.
    pub fn met_by(self, record: &switchback_proto::record::WorkerRecord) -> bool {
        (!self.tools || (record.tool_calls && record.structured_output))
            && (!self.schema || record.structured_output)
    }

    /// The request field that needs what is missing, for the error.
    pub fn param(self) -> &'static str {
        if self.tools {
            "tools"
        } else {
            "response_format"
        }
    }

    pub fn what(self) -> &'static str {
        if self.tools {
            "call tools"
        } else {
            "constrain output to a JSON schema"
        }
    }
}
