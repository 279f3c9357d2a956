//! OpenAI wire types for `/v1/chat/completions` and `/v1/completions`, and their
//! validation into one [`Generation`] the rest of the router uses. Unknown fields are
//! ignored, as OpenAI's SDKs send fields this router has no use for.

use serde::Deserialize;

use super::error::ApiError;

/// Limits applied while validating a request.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    pub max_tokens_limit: u32,
    pub max_messages: usize,
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
}

/// Fields only `/v1/completions` has.
#[derive(Debug, Deserialize)]
pub struct CompletionFields {
    pub prompt: StringOrList,
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
}

#[derive(Debug)]
pub struct CompletionRequest {
    pub fields: CompletionFields,
    pub common: Common,
}

impl ChatRequest {
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value = parse_object(body)?;
        Ok(Self {
            common: typed(&value)?,
            fields: typed(&value)?,
        })
    }
}

impl CompletionRequest {
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value = parse_object(body)?;
        Ok(Self {
            common: typed(&value)?,
            fields: typed(&value)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
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
        ApiError::invalid(param.clone(), format!("invalid `{param}`: {inner}"))
    })
}

/// serde reports a missing field at the parent path; pull its name out of the message.
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_owned())
}

fn check_common(
    c: &Common,
    limits: &RequestLimits,
    max_tokens: Option<u32>,
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
    if let Some(n) = c.n
        && n != 1
    {
        return Err(ApiError::invalid(
            "n",
            format!("`n` must be 1 (got {n}): one choice per request is supported"),
        ));
    }
    if let Some(m) = max_tokens
        && (m == 0 || m > limits.max_tokens_limit)
    {
        return Err(ApiError::invalid(
            "max_tokens",
            format!(
                "`max_tokens` must be between 1 and {}, got {m}",
                limits.max_tokens_limit
            ),
        ));
    }
    if let Some(q) = c.switchback.as_ref().and_then(|s| s.quality)
        && !(0.0..=1.0).contains(&q)
    {
        return Err(ApiError::invalid(
            "switchback.quality",
            format!("`switchback.quality` must be in [0, 1], got {q}"),
        ));
    }
    if c.switchback.as_ref().and_then(|s| s.deadline_ms) == Some(0) {
        return Err(ApiError::invalid(
            "switchback.deadline_ms",
            "`switchback.deadline_ms` must be at least 1",
        ));
    }
    Ok(())
}

fn stop_list(stop: Option<StringOrList>) -> Result<Vec<String>, ApiError> {
    let stop = stop.map(StringOrList::into_vec).unwrap_or_default();
    if stop.len() > 4 {
        return Err(ApiError::invalid(
            "stop",
            "`stop` takes at most 4 sequences",
        ));
    }
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop",
            "`stop` sequences must not be empty",
        ));
    }
    Ok(stop)
}

impl ChatRequest {
    pub fn validate(self, limits: &RequestLimits) -> Result<Generation, ApiError> {
        let f = self.fields;
        let max_tokens = f.max_completion_tokens.or(self.common.max_tokens);
        check_common(&self.common, limits, max_tokens)?;
        if f.messages.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "`messages` must contain at least one message",
            ));
        }
        if f.messages.len() > limits.max_messages {
            return Err(ApiError::invalid(
                "messages",
                format!(
                    "`messages` has {} entries; the limit is {}",
                    f.messages.len(),
                    limits.max_messages
                ),
            ));
        }
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
            if content.is_empty() && role != "assistant" {
                return Err(ApiError::invalid(
                    format!("messages[{i}].content"),
                    format!("`messages[{i}].content` must not be empty"),
                ));
            }
            messages.push(ChatMessage {
                role: role.to_owned(),
                content,
            });
        }
        let logprobs = match (f.logprobs.unwrap_or(false), f.top_logprobs) {
            (_, Some(n)) if n > 20 => {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    "`top_logprobs` must be between 0 and 20",
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
            stop: stop_list(c.stop)?,
            frequency_penalty: c.frequency_penalty,
            presence_penalty: c.presence_penalty,
            seed: c.seed,
            stream: c.stream.unwrap_or(false),
            include_usage: c.stream_options.is_some_and(|o| o.include_usage),
            logprobs,
            quality: c.switchback.as_ref().and_then(|s| s.quality),
            cascade: c.switchback.as_ref().and_then(|s| s.cascade),
            deadline_ms: c.switchback.as_ref().and_then(|s| s.deadline_ms),
        })
    }
}

impl CompletionRequest {
    pub fn validate(self, limits: &RequestLimits) -> Result<Generation, ApiError> {
        // The legacy endpoint defaults to 16 tokens, as OpenAI's does.
        let max_tokens = Some(self.common.max_tokens.unwrap_or(16));
        check_common(&self.common, limits, max_tokens)?;
        let f = self.fields;
        if f.echo.unwrap_or(false) {
            return Err(ApiError::invalid("echo", "`echo` is not supported"));
        }
        let prompt = match f.prompt {
            StringOrList::One(p) => p,
            StringOrList::Many(mut ps) if ps.len() == 1 => ps.remove(0),
            StringOrList::Many(_) => {
                return Err(ApiError::invalid(
                    "prompt",
                    "`prompt` must be one string; batches are not supported",
                ));
            }
        };
        if prompt.is_empty() {
            return Err(ApiError::invalid("prompt", "`prompt` must not be empty"));
        }
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
            stop: stop_list(c.stop)?,
            frequency_penalty: c.frequency_penalty,
            presence_penalty: c.presence_penalty,
            seed: c.seed,
            stream: c.stream.unwrap_or(false),
            include_usage: c.stream_options.is_some_and(|o| o.include_usage),
            logprobs: f.logprobs,
            quality: c.switchback.as_ref().and_then(|s| s.quality),
            cascade: c.switchback.as_ref().and_then(|s| s.cascade),
            deadline_ms: c.switchback.as_ref().and_then(|s| s.deadline_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RequestLimits = RequestLimits {
        max_tokens_limit: 100,
        max_messages: 8,
    };

    fn chat(body: &str) -> Result<Generation, ApiError> {
        ChatRequest::parse(body.as_bytes())?.validate(&LIMITS)
    }

    fn param(r: Result<Generation, ApiError>) -> String {
        match r {
            Err(ApiError::InvalidField { param, .. }) => param,
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
                content: "hi".into()
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
                content: "ab".into()
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
}
