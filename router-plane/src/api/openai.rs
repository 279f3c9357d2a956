//! OpenAI wire types for `/v1/chat/completions` and `/v1/completions`, and their
//! validation into one [`Generation`] the rest of the router uses. Unknown top-level
//! fields are ignored, as OpenAI's SDKs send fields this router has no use for, and
//! reported back (`Generation::ignored`). Parsing and validation are pure and total: any
//! byte string gives a `Generation` or an [`ApiError`], never a panic.

use serde::Deserialize;
use switchback_proto::pb;

use super::{
    error::ApiError,
    tools::{self, Asks},
};

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

/// The longest `x-switchback-ignored-fields` header value.
pub const IGNORED_HEADER_MAX: usize = 256;

/// Top-level fields each endpoint reads; the rest are ignored (and reported).
const COMMON_FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stream",
    "stream_options",
    "stop",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "switchback",
    "logit_bias",
];
const CHAT_FIELDS: &[&str] = &[
    "messages",
    "max_completion_tokens",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
];
const COMPLETION_FIELDS: &[&str] = &["prompt", "logprobs", "echo"];

/// A bounded-length value for the `x-switchback-ignored-fields` header: the ignored names
/// that are short printable ASCII, comma-separated, cut at [`IGNORED_HEADER_MAX`] with `...`.
pub fn ignored_header(ignored: &[String]) -> Option<String> {
    if ignored.is_empty() {
        return None;
    }
    let mut out = String::new();
    for name in ignored {
        let printable = name.len() <= 64 && name.bytes().all(|b| b.is_ascii_graphic() && b != b',');
        let item = if printable { name.as_str() } else { "?" };
        let sep = if out.is_empty() { "" } else { "," };
        if out.len() + sep.len() + item.len() > IGNORED_HEADER_MAX - 4 {
            out.push_str(sep);
            out.push_str("...");
            break;
        }
        out.push_str(sep);
        out.push_str(item);
    }
    Some(out)
}

fn ignored_fields(value: &serde_json::Value, own: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = value
        .as_object()
        .map(|o| {
            o.keys()
                .filter(|k| !COMMON_FIELDS.contains(&k.as_str()) && !own.contains(&k.as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn over(param: impl Into<String>, limit: &'static str, message: String) -> ApiError {
    ApiError::LimitExceeded {
        param: param.into(),
        limit,
        message: format!("{message} (router config `{limit}`)"),
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// `/v1/completions`' `prompt` as sent. OpenAI's API takes a string, a batch of strings,
/// a list of token ids or a batch of those; the router serves one text prompt (a string,
/// or a list of one string). Read as plain JSON and sorted out in [`Prompt::into_text`],
/// so that every other shape gets a 400 that says what is supported.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct Prompt(serde_json::Value);

impl Prompt {
    /// The one text prompt, or the 400 naming what was sent instead.
    fn into_text(self) -> Result<String, ApiError> {
        use serde_json::Value;
        let refuse = |sent: String| {
            ApiError::invalid(
                "prompt",
                format!(
                    "`prompt` is {sent}; only one text prompt per request is supported: a string, or a list holding one string"
                ),
            )
        };
        let items = match self.0 {
            Value::String(text) => return Ok(text),
            Value::Array(items) => items,
            other => return Err(refuse(json_type(&other).to_owned())),
        };
        let mut texts = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Value::String(text) => texts.push(text),
                Value::Number(_) => {
                    return Err(refuse(
                        "a list of token ids (token prompts are not supported)".to_owned(),
                    ));
                }
                Value::Array(_) => {
                    return Err(refuse(
                        "a list of token-id lists (token prompts are not supported)".to_owned(),
                    ));
                }
                other => return Err(refuse(format!("a list holding {}", json_type(&other)))),
            }
        }
        match <[String; 1]>::try_from(texts) {
            Ok([text]) => Ok(text),
            Err(texts) if texts.is_empty() => Err(refuse("an empty list".to_owned())),
            Err(texts) => Err(refuse(format!(
                "a batch of {} prompts (batches are not supported: send one request per prompt)",
                texts.len()
            ))),
        }
    }
}

/// The JSON type of `value`, as a message names it ("a number").
fn json_type(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    /// An assistant's calls (checked in [`super::tools::history_calls`]).
    #[serde(default)]
    pub tool_calls: Option<serde_json::Value>,
    /// The call a `tool` message answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// A `function` (or `tool`) message's function name.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Switchback's per-request knobs (`switchback` object of the body).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchbackOptions {
    /// The quality target in [0, 1] for `model: "auto"`.
    pub quality: Option<f64>,
    /// Whether a low-confidence answer from a lower tier may be escalated (policy default
    /// otherwise).
    pub cascade: Option<bool>,
    /// The latency the client needs, in ms: the joint decision moves the request to
    /// another tier rather than queue past it (policy default otherwise).
    pub deadline_ms: Option<u64>,
}

/// Fields shared by both endpoints.
#[derive(Debug, Deserialize)]
pub struct Common {
    pub model: String,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub stop: Option<StringOrList>,
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub switchback: Option<SwitchbackOptions>,
    /// Accepted only empty: the workers cannot bias token probabilities, and ignoring a
    /// bias would change answers silently.
    #[serde(default)]
    pub logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Fields only `/v1/chat/completions` has.
#[derive(Debug, Deserialize)]
pub struct ChatFields {
    pub messages: Vec<Message>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    #[serde(default)]
    pub tools: Option<serde_json::Value>,
    #[serde(default)]
    pub tool_choice: Option<serde_json::Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub response_format: Option<serde_json::Value>,
}

/// Fields only `/v1/completions` has.
#[derive(Debug, Deserialize)]
pub struct CompletionFields {
    pub prompt: Prompt,
    /// Legacy completions: the number of alternatives per token to return.
    #[serde(default)]
    pub logprobs: Option<u32>,
    #[serde(default)]
    pub echo: Option<bool>,
}

// The endpoint-specific and shared fields are read from the same JSON value separately
// (not with `#[serde(flatten)]`, which loses the path of a bad field inside the flattened
// part), so every type error names its field.
#[derive(Debug)]
pub struct ChatRequest {
    pub fields: ChatFields,
    pub common: Common,
    /// Top-level fields the router does not read, sorted.
    pub ignored: Vec<String>,
}

#[derive(Debug)]
pub struct CompletionRequest {
    pub fields: CompletionFields,
    pub common: Common,
    pub ignored: Vec<String>,
}

impl ChatRequest {
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value = parse_object(body)?;
        Ok(Self {
            common: typed(&value)?,
            fields: typed(&value)?,
            ignored: ignored_fields(&value, CHAT_FIELDS),
        })
    }
}

impl CompletionRequest {
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value = parse_object(body)?;
        Ok(Self {
            common: typed(&value)?,
            fields: typed(&value)?,
            ignored: ignored_fields(&value, COMPLETION_FIELDS),
        })
    }
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
            PromptKind::Chat(messages) => messages.iter().map(message_bytes).sum(),
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
}

fn message_bytes(m: &ChatMessage) -> usize {
    m.content.len()
        + m.tool_calls
            .iter()
            .map(|c| c.id.len() + c.name.len() + c.arguments.len())
            .sum::<usize>()
}

fn check_prompt_size(param: &str, estimate: u64, limits: &RequestLimits) -> Result<(), ApiError> {
    if estimate > u64::from(limits.max_prompt_tokens) {
        return Err(over(
            param,
            "max_prompt_tokens",
            format!(
                "`{param}` is about {estimate} tokens (estimated at 4 bytes a token, plus {MESSAGE_OVERHEAD_TOKENS} a chat message); the limit is {}",
                limits.max_prompt_tokens
            ),
        ));
    }
    Ok(())
}

/// Parses the body as a JSON object; anything else is malformed.
fn parse_object(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    if !value.is_object() {
        return Err(ApiError::MalformedJson(
            "the body must be a JSON object".to_owned(),
        ));
    }
    Ok(value)
}

/// Reads `T` out of `value`, naming the offending field on type errors.
fn typed<T: for<'de> Deserialize<'de>>(value: &serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let param = if path == "." {
            missing_field(&inner).unwrap_or_default()
        } else {
            path
        };
        let inner = plain(&inner);
        ApiError::invalid(param.clone(), format!("invalid `{param}`: {inner}"))
    })
}

/// serde's message for a value of the wrong type, in the API's terms rather than Rust's
/// (`expected u32`, `untagged enum StringOrList`, `struct StreamOptions`).
fn plain(message: &str) -> String {
    const UNTAGGED: &str = "data did not match any variant of untagged enum ";
    if let Some(name) = message.strip_prefix(UNTAGGED) {
        let expected = match name {
            "StringOrList" => "a string or a list of strings",
            "Content" => "a string or a list of content parts",
            _ => "one of the shapes the API documents for it",
        };
        return format!("expected {expected}");
    }
    let Some((head, expected)) = message.rsplit_once("expected ") else {
        return message.to_owned();
    };
    // What was sent: serde says `sequence` and `map` for JSON's list and object.
    let head = match head.strip_prefix("invalid type: ") {
        Some(rest) => match (rest.strip_prefix("sequence"), rest.strip_prefix("map")) {
            (Some(tail), _) => format!("invalid type: list{tail}"),
            (_, Some(tail)) => format!("invalid type: object{tail}"),
            (None, None) => head.to_owned(),
        },
        None => head.to_owned(),
    };
    let expected = match expected {
        "u32" => "an integer from 0 to 4294967295",
        "u64" => "an integer from 0 to 18446744073709551615",
        "f32" | "f64" => "a number",
        "a sequence" => "a list",
        "a map" => "an object",
        e if e.starts_with("struct ") => "an object",
        e => e,
    };
    format!("{head}expected {expected}")
}

/// serde reports a missing field at the parent path; pull its name out of the message.
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_owned())
}

/// `max_tokens` is the effective value and the field it came from.
fn check_common(
    c: &Common,
    limits: &RequestLimits,
    max_tokens: Option<(&'static str, u32)>,
) -> Result<(), ApiError> {
    if c.model.trim().is_empty() {
        return Err(ApiError::invalid("model", "`model` must not be empty"));
    }
    if let Some(t) = c.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(ApiError::invalid(
            "temperature",
            format!("`temperature` must be between 0 and 2, got {t}"),
        ));
    }
    if let Some(p) = c.top_p
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(ApiError::invalid(
            "top_p",
            format!("`top_p` must be in (0, 1], got {p}"),
        ));
    }
    for (name, v) in [
        ("frequency_penalty", c.frequency_penalty),
        ("presence_penalty", c.presence_penalty),
    ] {
        if let Some(v) = v
            && !(-2.0..=2.0).contains(&v)
        {
            return Err(ApiError::invalid(
                name,
                format!("`{name}` must be between -2 and 2, got {v}"),
            ));
        }
    }
    if c.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err(ApiError::invalid(
            "logit_bias",
            "`logit_bias` is not supported: the workers cannot bias token probabilities (an empty object is accepted)",
        ));
    }
    if let Some(n) = c.n
        && n != 1
    {
        return Err(ApiError::invalid(
            "n",
            format!("`n` must be 1 (got {n}): one choice per request is supported"),
        ));
    }
    if let Some((param, m)) = max_tokens {
        if m == 0 {
            return Err(ApiError::invalid(
                param,
                format!("`{param}` must be at least 1"),
            ));
        }
        if m > limits.max_tokens_limit {
            return Err(over(
                param,
                "max_tokens_limit",
                format!("`{param}` is {m}; the limit is {}", limits.max_tokens_limit),
            ));
        }
    }
    if let Some(q) = c.switchback.as_ref().and_then(|s| s.quality)
        && !(0.0..=1.0).contains(&q)
    {
        return Err(ApiError::invalid(
            "switchback.quality",
            format!("`switchback.quality` must be in [0, 1], got {q}"),
        ));
    }
    match c.switchback.as_ref().and_then(|s| s.deadline_ms) {
        Some(0) => {
            return Err(ApiError::invalid(
                "switchback.deadline_ms",
                "`switchback.deadline_ms` must be at least 1",
            ));
        }
        Some(ms) if ms > limits.max_deadline_ms => {
            return Err(over(
                "switchback.deadline_ms",
                "request_timeout_s",
                format!(
                    "`switchback.deadline_ms` is {ms}; it cannot be longer than the request timeout of {} ms",
                    limits.max_deadline_ms
                ),
            ));
        }
        _ => {}
    }
    Ok(())
}

fn stop_list(stop: Option<StringOrList>, limits: &RequestLimits) -> Result<Vec<String>, ApiError> {
    let stop = stop.map(StringOrList::into_vec).unwrap_or_default();
    if stop.len() > limits.max_stop_sequences {
        return Err(over(
            "stop",
            "max_stop_sequences",
            format!(
                "`stop` has {} sequences; the limit is {}",
                stop.len(),
                limits.max_stop_sequences
            ),
        ));
    }
    for (i, s) in stop.iter().enumerate() {
        if s.is_empty() {
            return Err(ApiError::invalid(
                "stop",
                "`stop` sequences must not be empty",
            ));
        }
        if s.len() > limits.max_stop_bytes {
            return Err(over(
                format!("stop[{i}]"),
                "max_stop_bytes",
                format!(
                    "`stop[{i}]` is {} bytes long; the limit is {}",
                    s.len(),
                    limits.max_stop_bytes
                ),
            ));
        }
    }
    Ok(stop)
}

impl ChatRequest {
    pub fn validate(self, limits: &RequestLimits) -> Result<Generation, ApiError> {
        let f = self.fields;
        let max_tokens = match (f.max_completion_tokens, self.common.max_tokens) {
            (Some(m), _) => Some(("max_completion_tokens", m)),
            (None, Some(m)) => Some(("max_tokens", m)),
            (None, None) => None,
        };
        check_common(&self.common, limits, max_tokens)?;
        let max_tokens = max_tokens.map(|(_, m)| m);
        if f.messages.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "`messages` must contain at least one message",
            ));
        }
        if f.messages.len() > limits.max_messages {
            return Err(over(
                "messages",
                "max_messages",
                format!(
                    "`messages` has {} entries; the limit is {}",
                    f.messages.len(),
                    limits.max_messages
                ),
            ));
        }
        let mut prompt_bytes = 0usize;
        let mut messages = Vec::with_capacity(f.messages.len());
        for (i, m) in f.messages.into_iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                "tool" | "function" => "tool",
                other => {
                    return Err(ApiError::invalid(
                        format!("messages[{i}].role"),
                        format!(
                            "`messages[{i}].role` {other:?} is not one of system, developer, user, assistant, tool"
                        ),
                    ));
                }
            };
            let content = match m.content {
                None => String::new(),
                Some(Content::Text(t)) => t,
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, p) in parts.into_iter().enumerate() {
                        if p.kind != "text" {
                            return Err(ApiError::invalid(
                                format!("messages[{i}].content[{j}].type"),
                                format!(
                                    "content part type {:?} is not supported; only `text`",
                                    p.kind
                                ),
                            ));
                        }
                        text.push_str(&p.text.unwrap_or_default());
                    }
                    text
                }
            };
            let tool_calls = if role == "assistant" {
                tools::history_calls(i, m.tool_calls.as_ref())?
            } else if m.tool_calls.is_some() {
                return Err(ApiError::invalid(
                    format!("messages[{i}].tool_calls"),
                    format!("`messages[{i}].tool_calls` is only allowed on assistant messages"),
                ));
            } else {
                Vec::new()
            };
            let tool_call_id = m.tool_call_id.filter(|_| role == "tool");
            if m.role == "tool" && tool_call_id.is_none() {
                return Err(ApiError::invalid(
                    format!("messages[{i}].tool_call_id"),
                    format!("`messages[{i}].tool_call_id` is required on a tool message"),
                ));
            }
            if content.len() > limits.max_message_bytes {
                return Err(over(
                    format!("messages[{i}].content"),
                    "max_message_bytes",
                    format!(
                        "`messages[{i}].content` is {} bytes long; the limit is {}",
                        content.len(),
                        limits.max_message_bytes
                    ),
                ));
            }
            if content.is_empty() && role != "assistant" {
                return Err(ApiError::invalid(
                    format!("messages[{i}].content"),
                    format!("`messages[{i}].content` must not be empty"),
                ));
            }
            let message = ChatMessage {
                role: role.to_owned(),
                content,
                tool_calls,
                tool_call_id,
                name: m.name.filter(|_| role == "tool"),
            };
            prompt_bytes = prompt_bytes.saturating_add(message_bytes(&message));
            messages.push(message);
        }
        let asks = tools::parse(
            f.tools.as_ref(),
            f.tool_choice.as_ref(),
            f.parallel_tool_calls,
            f.response_format.as_ref(),
        )?;
        check_prompt_size(
            "messages",
            estimate_chat_tokens(
                prompt_bytes.saturating_add(asks.prompt_bytes()),
                messages.len(),
            ),
            limits,
        )?;
        let logprobs = match (f.logprobs.unwrap_or(false), f.top_logprobs) {
            (_, Some(n)) if n > limits.max_top_logprobs => {
                return Err(over(
                    "top_logprobs",
                    "max_top_logprobs",
                    format!(
                        "`top_logprobs` is {n}; the limit is {}",
                        limits.max_top_logprobs
                    ),
                ));
            }
            (false, Some(_)) => {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    "`top_logprobs` requires `logprobs: true`",
                ));
            }
            (true, n) => Some(n.unwrap_or(0)),
            (false, None) => None,
        };
        let c = self.common;
        Ok(Generation {
            model: c.model,
            prompt: PromptKind::Chat(messages),
            max_tokens,
            temperature: c.temperature,
            top_p: c.top_p,
            stop: stop_list(c.stop, limits)?,
            frequency_penalty: c.frequency_penalty,
            presence_penalty: c.presence_penalty,
            seed: c.seed,
            stream: c.stream.unwrap_or(false),
            include_usage: c.stream_options.is_some_and(|o| o.include_usage),
            logprobs,
            quality: c.switchback.as_ref().and_then(|s| s.quality),
            cascade: c.switchback.as_ref().and_then(|s| s.cascade),
            deadline_ms: c.switchback.as_ref().and_then(|s| s.deadline_ms),
            ignored: self.ignored,
            asks,
        })
    }
}

impl CompletionRequest {
    pub fn validate(self, limits: &RequestLimits) -> Result<Generation, ApiError> {
        // The legacy endpoint defaults to 16 tokens, as OpenAI's does.
        let max_tokens = Some(self.common.max_tokens.unwrap_or(16));
        check_common(&self.common, limits, max_tokens.map(|m| ("max_tokens", m)))?;
        let f = self.fields;
        if f.echo.unwrap_or(false) {
            return Err(ApiError::invalid("echo", "`echo` is not supported"));
        }
        let prompt = f.prompt.into_text()?;
        if prompt.is_empty() {
            return Err(ApiError::invalid("prompt", "`prompt` must not be empty"));
        }
        check_prompt_size("prompt", estimate_tokens(prompt.len()), limits)?;
        if let Some(n) = f.logprobs
            && n > 5
        {
            return Err(ApiError::invalid(
                "logprobs",
                "`logprobs` must be between 0 and 5",
            ));
        }
        let c = self.common;
        Ok(Generation {
            model: c.model,
            prompt: PromptKind::Text(prompt),
            max_tokens,
            temperature: c.temperature,
            top_p: c.top_p,
            stop: stop_list(c.stop, limits)?,
            frequency_penalty: c.frequency_penalty,
            presence_penalty: c.presence_penalty,
            seed: c.seed,
            stream: c.stream.unwrap_or(false),
            include_usage: c.stream_options.is_some_and(|o| o.include_usage),
            logprobs: f.logprobs,
            quality: c.switchback.as_ref().and_then(|s| s.quality),
            cascade: c.switchback.as_ref().and_then(|s| s.cascade),
            deadline_ms: c.switchback.as_ref().and_then(|s| s.deadline_ms),
            ignored: self.ignored,
            asks: Asks::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RequestLimits = RequestLimits {
        max_tokens_limit: 100,
        max_messages: 8,
        max_prompt_tokens: 50,
        max_message_bytes: 120,
        max_stop_sequences: 2,
        max_stop_bytes: 8,
        max_top_logprobs: 5,
        max_deadline_ms: 10_000,
    };

    fn completion(body: &str) -> Result<Generation, ApiError> {
        CompletionRequest::parse(body.as_bytes())?.validate(&LIMITS)
    }

    /// (param, config key, message) of a limit error.
    fn limit(r: Result<Generation, ApiError>) -> (String, &'static str, String) {
        match r {
            Err(ApiError::LimitExceeded {
                param,
                limit,
                message,
            }) => (param, limit, message),
            other => panic!("expected a limit error, got {other:?}"),
        }
    }

    #[test]
    fn each_limit_names_its_field_and_config_key() {
        let user = r#"[{"role":"user","content":"x"}]"#;
        let long = "y".repeat(100);
        let cases: Vec<(String, &str, &str)> = vec![
            (
                format!(r#"{{"model":"m","messages":{user},"max_tokens":101}}"#),
                "max_tokens",
                "max_tokens_limit",
            ),
            (
                format!(
                    r#"{{"model":"m","messages":{user},"max_completion_tokens":101,"max_tokens":5}}"#
                ),
                "max_completion_tokens",
                "max_tokens_limit",
            ),
            (
                format!(
                    r#"{{"model":"m","messages":[{}]}}"#,
                    [r#"{"role":"user","content":"x"}"#; 9].join(",")
                ),
                "messages",
                "max_messages",
            ),
            (
                format!(
                    r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
                    "z".repeat(121)
                ),
                "messages[0].content",
                "max_message_bytes",
            ),
            (
                // 2 x 100 bytes: about 50 tokens, over 50 in all.
                format!(
                    r#"{{"model":"m","messages":[{{"role":"system","content":"{long}"}},{{"role":"user","content":"{long}x"}}]}}"#
                ),
                "messages",
                "max_prompt_tokens",
            ),
            (
                format!(r#"{{"model":"m","messages":{user},"stop":["a","b","c"]}}"#),
                "stop",
                "max_stop_sequences",
            ),
            (
                format!(r#"{{"model":"m","messages":{user},"stop":["a","123456789"]}}"#),
                "stop[1]",
                "max_stop_bytes",
            ),
            (
                format!(r#"{{"model":"m","messages":{user},"logprobs":true,"top_logprobs":6}}"#),
                "top_logprobs",
                "max_top_logprobs",
            ),
            (
                format!(
                    r#"{{"model":"m","messages":{user},"switchback":{{"deadline_ms":10001}}}}"#
                ),
                "switchback.deadline_ms",
                "request_timeout_s",
            ),
        ];
        for (body, param, key) in cases {
            let (p, k, message) = limit(chat(&body));
            assert_eq!((p.as_str(), k), (param, key), "{body}");
            assert!(
                message.contains(param) && message.contains(key),
                "{message}"
            );
        }
        let (p, k, _) = limit(completion(&format!(
            r#"{{"model":"m","prompt":"{}"}}"#,
            "w".repeat(201)
        )));
        assert_eq!((p.as_str(), k), ("prompt", "max_prompt_tokens"));
        let (p, k, _) = limit(completion(r#"{"model":"m","prompt":"p","max_tokens":101}"#));
        assert_eq!((p.as_str(), k), ("max_tokens", "max_tokens_limit"));
        // At the limits, everything passes.
        chat(&format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}],"max_tokens":100,"stop":["12345678","b"],"logprobs":true,"top_logprobs":5,"switchback":{{"deadline_ms":10000}}}}"#,
            "z".repeat(120)
        ))
        .expect("at every limit");
    }

    #[test]
    fn openai_style_rejections_are_400s_naming_the_field() {
        let user = r#"[{"role":"user","content":"x"}]"#;
        for (body, want) in [
            (r#"{"model":"m","messages":[]}"#.to_owned(), "messages"),
            (
                r#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#.to_owned(),
                "messages[0].role",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"},{"role":"","content":"x"}]}"#.to_owned(),
                "messages[1].role",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#.to_owned(),
                "messages[0].content[0].type",
            ),
            (r#"{"model":"m","messages":"hi"}"#.to_owned(), "messages"),
            (r#"{"model":7,"messages":[]}"#.to_owned(), "model"),
            (format!(r#"{{"model":"m","messages":{user},"stream":"yes"}}"#), "stream"),
            (format!(r#"{{"model":"m","messages":{user},"stop":[1]}}"#), "stop"),
            (format!(r#"{{"model":"m","messages":{user},"n":2}}"#), "n"),
            (format!(r#"{{"model":"m","messages":{user},"max_tokens":-1}}"#), "max_tokens"),
            (format!(r#"{{"model":"m","messages":{user},"max_tokens":0}}"#), "max_tokens"),
            (format!(r#"{{"model":"m","messages":{user},"stop":[""]}}"#), "stop"),
            (
                format!(r#"{{"model":"m","messages":{user},"switchback":{{"deadline_ms":0}}}}"#),
                "switchback.deadline_ms",
            ),
            (
                format!(r#"{{"model":"m","messages":{user},"switchback":{{"qualty":1}}}}"#),
                "switchback",
            ),
        ] {
            let got = param(chat(&body));
            assert!(got.starts_with(want), "{body}: {got}");
        }
    }

    #[test]
    fn bad_unicode_is_malformed_json_and_odd_characters_pass_intact() {
        // Invalid UTF-8, and a lone surrogate escape.
        let mut bad = br#"{"model":"m","messages":[{"role":"user","content":""#.to_vec();
        bad.extend_from_slice(&[0xff, 0xfe]);
        bad.extend_from_slice(br#""}]}"#);
        assert!(matches!(
            ChatRequest::parse(&bad),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(
            chat(r#"{"model":"m","messages":[{"role":"user","content":"\ud800"}]}"#),
            Err(ApiError::MalformedJson(_))
        ));
        // NUL, zero-width joiner, right-to-left override, emoji, combining accent.
        let odd = r"a\u0000b\u200dc\u202ed😀e\u0301";
        let g = chat(&format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"{odd}"}}]}}"#
        ))
        .expect("valid");
        assert_eq!(
            g.prompt,
            PromptKind::Chat(vec![ChatMessage {
                role: "user".into(),
                content: "a\0b\u{200d}c\u{202e}d\u{1F600}e\u{0301}".into(),
                ..ChatMessage::default()
            }])
        );
    }

    #[test]
    fn unknown_top_level_fields_are_ignored_and_reported() {
        let g = chat(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"user":"u1","zeta":1,"logit_bias":{}}"#)
            .expect("valid");
        // An empty `logit_bias` is honoured (no bias), so it is not reported.
        assert_eq!(g.ignored, vec!["user", "zeta"]);
        assert_eq!(ignored_header(&g.ignored).as_deref(), Some("user,zeta"));
        let g = completion(r#"{"model":"m","prompt":"p","suffix":"s"}"#).expect("valid");
        assert_eq!(g.ignored, vec!["suffix"]);
        assert_eq!(ignored_header(&[]), None);
        let many: Vec<String> = (0..200).map(|i| format!("field_{i}")).collect();
        let h = ignored_header(&many).expect("header");
        assert!(h.len() <= IGNORED_HEADER_MAX && h.ends_with("..."), "{h}");
        let odd = ignored_header(&["bad\nname".into(), "é".into()]).expect("header");
        assert_eq!(odd, "?,?");
    }

    #[test]
    fn nothing_panics_on_mangled_bodies() {
        // A deterministic sweep of truncations and byte flips of a full request; the
        // fuzzing targets cover far more.
        let full = br#"{"model":"auto","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"max_tokens":5,"stop":["x"],"logprobs":true,"top_logprobs":2,"switchback":{"quality":0.5,"deadline_ms":100}}"#;
        for cut in 0..full.len() {
            let _ = ChatRequest::parse(&full[..cut]).and_then(|r| r.validate(&LIMITS));
            for flip in [0x00u8, b'"', b'{', b'9', 0xff] {
                let mut b = full.to_vec();
                b[cut] = flip;
                let _ = ChatRequest::parse(&b).and_then(|r| r.validate(&LIMITS));
                let _ = CompletionRequest::parse(&b).and_then(|r| r.validate(&LIMITS));
            }
        }
    }

    fn chat(body: &str) -> Result<Generation, ApiError> {
        ChatRequest::parse(body.as_bytes())?.validate(&LIMITS)
    }

    fn param(r: Result<Generation, ApiError>) -> String {
        match r {
            Err(ApiError::InvalidField { param, .. } | ApiError::LimitExceeded { param, .. }) => {
                param
            }
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_chat_request_validates() {
        let g = chat(r#"{"model":"auto","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stream":true,"unknown":1}"#)
            .expect("valid");
        assert_eq!(g.model, "auto");
        assert_eq!(g.max_tokens, Some(5));
        assert!(g.stream);
        assert_eq!(
            g.prompt,
            PromptKind::Chat(vec![ChatMessage {
                role: "user".into(),
                content: "hi".into(),
                ..ChatMessage::default()
            }])
        );
    }

    #[test]
    fn content_parts_are_joined() {
        let g = chat(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#)
            .expect("valid");
        assert_eq!(
            g.prompt,
            PromptKind::Chat(vec![ChatMessage {
                role: "user".into(),
                content: "ab".into(),
                ..ChatMessage::default()
            }])
        );
    }

    #[test]
    fn malformed_json_is_told_apart_from_bad_fields() {
        assert!(matches!(chat("{not json"), Err(ApiError::MalformedJson(_))));
        assert!(matches!(chat("[1,2]"), Err(ApiError::MalformedJson(_))));
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(
            param(chat(r#"{"messages":[{"role":"user","content":"x"}]}"#)),
            "model"
        );
        assert_eq!(param(chat(r#"{"model":"m"}"#)), "messages");
        assert_eq!(param(chat(r#"{"model":"m","messages":[]}"#)), "messages");
        assert_eq!(
            param(chat(
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"ten"}"#
            )),
            "max_tokens"
        );
        assert_eq!(
            param(chat(
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#
            )),
            "max_tokens"
        );
        assert_eq!(
            param(chat(
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":101}"#
            )),
            "max_tokens"
        );
        assert_eq!(
            param(chat(
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#
            )),
            "temperature"
        );
        assert_eq!(
            param(chat(
                r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#
            )),
            "messages[0].role"
        );
        assert_eq!(
            param(chat(
                r#"{"model":"m","messages":[{"role":"user","content":""}]}"#
            )),
            "messages[0].content"
        );
        assert_eq!(
            param(chat(
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#
            )),
            "n"
        );
        assert_eq!(
            param(chat(
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_logprobs":2}"#
            )),
            "top_logprobs"
        );
        assert_eq!(
            param(chat(
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"switchback":{"quality":2}}"#
            )),
            "switchback.quality"
        );
        let many = format!(
            r#"{{"model":"m","messages":[{}]}}"#,
            [r#"{"role":"user","content":"x"}"#; 9].join(",")
        );
        assert_eq!(param(chat(&many)), "messages");
    }

    #[test]
    fn completions_default_to_16_tokens_and_reject_batches() {
        let g = CompletionRequest::parse(br#"{"model":"m","prompt":"Once"}"#)
            .and_then(|r| r.validate(&LIMITS))
            .expect("valid");
        assert_eq!(g.max_tokens, Some(16));
        assert_eq!(g.prompt, PromptKind::Text("Once".into()));
        let r = CompletionRequest::parse(br#"{"model":"m","prompt":["a","b"]}"#)
            .and_then(|r| r.validate(&LIMITS));
        assert_eq!(param(r), "prompt");
    }

    /// The message of a 400 naming `want` as its field.
    fn message_for(r: Result<Generation, ApiError>, want: &str) -> String {
        match r {
            Err(ApiError::InvalidField { param, message }) if param == want => message,
            other => panic!("expected an invalid `{want}`, got {other:?}"),
        }
    }

    #[test]
    fn completion_prompts_are_one_string_and_other_shapes_say_what_is_supported() {
        for body in [
            r#"{"model":"m","prompt":"Once"}"#,
            r#"{"model":"m","prompt":["Once"]}"#,
        ] {
            assert_eq!(
                completion(body).expect(body).prompt,
                PromptKind::Text("Once".into()),
                "{body}"
            );
        }
        for (prompt, sent) in [
            (r#"["a","b"]"#, "a batch of 2 prompts"),
            ("[1,2,3]", "a list of token ids"),
            ("[[1,2],[3]]", "a list of token-id lists"),
            ("[]", "an empty list"),
            (r#"["a",{}]"#, "a list holding an object"),
            ("7", "a number"),
            ("null", "null"),
        ] {
            let body = format!(r#"{{"model":"m","prompt":{prompt}}}"#);
            let message = message_for(completion(&body), "prompt");
            assert!(
                message.contains(sent)
                    && message.contains("a string, or a list holding one string"),
                "{body}: {message}"
            );
            assert!(!message.contains("untagged"), "{body}: {message}");
        }
        assert_eq!(param(completion(r#"{"model":"m","prompt":""}"#)), "prompt");
        assert_eq!(param(completion(r#"{"model":"m"}"#)), "prompt");
    }

    #[test]
    fn wrong_json_types_name_the_field_in_the_apis_terms() {
        let with = |extra: &str| {
            format!(r#""model":"m","messages":[{{"role":"user","content":"x"}}],{extra}"#)
        };
        let chat_cases = [
            (
                r#""model":7,"messages":[{"role":"user","content":"x"}]"#.to_owned(),
                "model",
            ),
            (with(r#""max_tokens":"ten""#), "max_tokens"),
            (with(r#""max_tokens":-1"#), "max_tokens"),
            (
                with(r#""max_completion_tokens":1.5"#),
                "max_completion_tokens",
            ),
            (with(r#""temperature":"hot""#), "temperature"),
            (with(r#""top_p":[]"#), "top_p"),
            (with(r#""n":"two""#), "n"),
            (with(r#""stream":"yes""#), "stream"),
            (with(r#""stream_options":"yes""#), "stream_options"),
            (with(r#""stop":[1]"#), "stop"),
            (with(r#""frequency_penalty":{}"#), "frequency_penalty"),
            (with(r#""presence_penalty":true"#), "presence_penalty"),
            (with(r#""seed":-3"#), "seed"),
            (with(r#""logit_bias":[]"#), "logit_bias"),
            (with(r#""logprobs":"yes""#), "logprobs"),
            (with(r#""top_logprobs":"all""#), "top_logprobs"),
            (with(r#""switchback":"x""#), "switchback"),
            (
                with(r#""switchback":{"quality":"high"}"#),
                "switchback.quality",
            ),
            (r#""model":"m","messages":"hi""#.to_owned(), "messages"),
            (r#""model":"m","messages":["hi"]"#.to_owned(), "messages[0]"),
            (
                r#""model":"m","messages":[{"role":1,"content":"x"}]"#.to_owned(),
                "messages[0].role",
            ),
            (
                r#""model":"m","messages":[{"role":"user","content":5}]"#.to_owned(),
                "messages[0].content",
            ),
        ];
        let completion_cases = [
            (r#""prompt":"p","logprobs":true"#, "logprobs"),
            (r#""prompt":"p","echo":"no""#, "echo"),
            (r#""prompt":"p","max_tokens":"many""#, "max_tokens"),
        ];
        let mut checked = Vec::new();
        for (fields, want) in chat_cases {
            let body = format!("{{{fields}}}");
            checked.push((body.clone(), want, message_for(chat(&body), want)));
        }
        for (fields, want) in completion_cases {
            let body = format!(r#"{{"model":"m",{fields}}}"#);
            checked.push((body.clone(), want, message_for(completion(&body), want)));
        }
        for (body, want, message) in checked {
            assert!(message.contains(&format!("`{want}`")), "{body}: {message}");
            for rust in [
                "untagged", "struct ", "u32", "u64", "f32", "sequence", "a map",
            ] {
                assert!(!message.contains(rust), "{body}: {message}");
            }
        }
    }

    #[test]
    fn logit_bias_is_refused_unless_empty() {
        let user = r#""messages":[{"role":"user","content":"x"}]"#;
        let message = message_for(
            chat(&format!(
                r#"{{"model":"m",{user},"logit_bias":{{"50256":-100}}}}"#
            )),
            "logit_bias",
        );
        assert!(message.contains("not supported"), "{message}");
        assert_eq!(
            param(completion(
                r#"{"model":"m","prompt":"p","logit_bias":{"1":5}}"#
            )),
            "logit_bias"
        );
        for bias in ["{}", "null"] {
            let g = chat(&format!(r#"{{"model":"m",{user},"logit_bias":{bias}}}"#)).expect(bias);
            assert!(g.ignored.is_empty(), "{:?}", g.ignored);
            completion(&format!(
                r#"{{"model":"m","prompt":"p","logit_bias":{bias}}}"#
            ))
            .expect(bias);
        }
    }

    #[test]
    fn n_of_one_is_accepted_and_more_refused() {
        let user = r#""messages":[{"role":"user","content":"x"}]"#;
        chat(&format!(r#"{{"model":"m",{user},"n":1}}"#)).expect("n = 1");
        completion(r#"{"model":"m","prompt":"p","n":1}"#).expect("n = 1");
        let message = message_for(chat(&format!(r#"{{"model":"m",{user},"n":3}}"#)), "n");
        assert!(message.contains("one choice per request"), "{message}");
        assert_eq!(
            param(completion(r#"{"model":"m","prompt":"p","n":2}"#)),
            "n"
        );
    }

    #[test]
    fn openai_fields_without_effect_are_accepted_and_reported() {
        let extra = r#""user":"u1","metadata":{"k":"v"},"store":true,"service_tier":"flex""#;
        let g = chat(&format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],{extra}}}"#
        ))
        .expect("valid");
        assert_eq!(g.ignored, vec!["metadata", "service_tier", "store", "user"]);
        assert_eq!(
            ignored_header(&g.ignored).as_deref(),
            Some("metadata,service_tier,store,user")
        );
        let g = completion(&format!(r#"{{"model":"m","prompt":"p",{extra}}}"#)).expect("valid");
        assert_eq!(g.ignored, vec!["metadata", "service_tier", "store", "user"]);
    }

    #[test]
    fn chat_estimates_count_each_messages_template_tokens() {
        // 1,024 one-byte messages: a template's 4 tokens each, not 256 tokens of text.
        let messages: Vec<String> = (0..1024)
            .map(|_| r#"{"role":"user","content":"x"}"#.to_owned())
            .collect();
        let body = format!(r#"{{"model":"m","messages":[{}]}}"#, messages.join(","));
        let g = ChatRequest::parse(body.as_bytes())
            .expect("parse")
            .validate(&RequestLimits::default())
            .expect("valid");
        assert_eq!(g.estimated_prompt_tokens(), 1024 / 4 + 4 * 1024 + 3);
        assert_eq!(estimate_chat_tokens(0, 0), 3);
        // Over a limit the text alone would pass: refused, naming the limit.
        let limits = RequestLimits {
            max_prompt_tokens: 2048,
            ..RequestLimits::default()
        };
        let err = ChatRequest::parse(body.as_bytes())
            .expect("parse")
            .validate(&limits)
            .expect_err("over the prompt limit");
        assert!(format!("{err:?}").contains("max_prompt_tokens"), "{err:?}");
    }
}
