//! From a parsed OpenAI request to a [`Generation`]: every field checked as OpenAI
//! defines it and against the router's [`RequestLimits`], each error naming its field
//! (and, for a limit, the router config key).

use super::{ChatRequest, Common, CompletionRequest, Content, StringOrList, tools};
use crate::{
    generation::{
        Asks, ChatMessage, Generation, MESSAGE_OVERHEAD_TOKENS, PromptKind, RequestLimits,
        estimate_chat_tokens, estimate_tokens,
    },
    http::error::ApiError,
};

fn over(param: impl Into<String>, limit: &'static str, message: String) -> ApiError {
    ApiError::LimitExceeded {
        param: param.into(),
        limit,
        message: format!("{message} (router config `{limit}`)"),
    }
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

/// `max_tokens` is the effective value and the field it came from.
fn check_common(
    c: &Common,
    limits: &RequestLimits,
    max_tokens: Option<(&'static str, u32)>,
) -> Result<(), ApiError> {
    if c.model.trim().is_empty() {
        return Err(ApiError::invalid("model", "`model` must not be empty"));
    }
    within("temperature", c.temperature, 0.0, 2.0)?;
    if let Some(p) = c.top_p
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(ApiError::invalid(
            "top_p",
            format!("`top_p` must be in (0, 1], got {p}"),
        ));
    }
    within("frequency_penalty", c.frequency_penalty, -2.0, 2.0)?;
    within("presence_penalty", c.presence_penalty, -2.0, 2.0)?;
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
    within(
        "switchback.quality",
        c.switchback.as_ref().and_then(|s| s.quality),
        0.0,
        1.0,
    )?;
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
            prompt_bytes = prompt_bytes.saturating_add(message.bytes());
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
        generation(
            self.common,
            PromptKind::Chat(messages),
            max_tokens,
            logprobs,
            self.ignored,
            asks,
            limits,
        )
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
        generation(
            self.common,
            PromptKind::Text(prompt),
            max_tokens,
            f.logprobs,
            self.ignored,
            Asks::default(),
            limits,
        )
    }
}

/// The generation both endpoints' requests become, from their common fields and what
/// each one validated of its own.
fn generation(
    c: Common,
    prompt: PromptKind,
    max_tokens: Option<u32>,
    logprobs: Option<u32>,
    ignored: Vec<String>,
    asks: Asks,
    limits: &RequestLimits,
) -> Result<Generation, ApiError> {
    Ok(Generation {
        model: c.model,
        prompt,
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
        ignored,
        asks,
    })
}

/// A number the client may set must lie in `[low, high]` (NaN never does).
fn within<T: PartialOrd + Copy + std::fmt::Display>(
    param: &'static str,
    value: Option<T>,
    low: T,
    high: T,
) -> Result<(), ApiError> {
    match value {
        Some(v) if !(low..=high).contains(&v) => Err(ApiError::invalid(
            param,
            format!("`{param}` must be between {low} and {high}, got {v}"),
        )),
        _ => Ok(()),
    }
}
