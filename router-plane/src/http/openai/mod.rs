//! OpenAI wire types for `/v1/chat/completions` and `/v1/completions` and their parsing
//! (this file), their validation into one [`Generation`] the pipeline takes
//! ([`validate`]), and the `tools` and `response_format` fields ([`tools`]). Unknown
//! top-level fields are ignored, as OpenAI's SDKs send fields this router has no use for,
//! and reported back (`Generation::ignored`). Parsing and validation are pure and total:
//! any byte string gives a `Generation` or an [`ApiError`], never a panic.
//!
//! [`Generation`]: crate::generation::Generation

#[cfg(test)]
mod tests;
pub mod tools;
pub mod validate;

use serde::Deserialize;

use super::error::ApiError;

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

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    pub(crate) fn into_vec(self) -> Vec<String> {
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
    pub(crate) fn into_text(self) -> Result<String, ApiError> {
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
    /// An assistant's calls (checked in [`tools::history_calls`]).
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

/// Reads `T` out of `value`, naming the offending field on type errors. A valid request
/// is read once, directly; only a bad one is read again, tracking the path to its error.
fn typed<T: for<'de> Deserialize<'de>>(value: &serde_json::Value) -> Result<T, ApiError> {
    if let Ok(t) = T::deserialize(value) {
        return Ok(t);
    }
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
