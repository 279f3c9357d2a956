//! The router's HTTP request path, as the handlers run it: the body through
//! `ChatRequest::parse` / `CompletionRequest::parse` and `validate`, then the
//! `x-switchback-quality` header. Beyond "no panic", a request that validates must
//! respect every limit it was validated against.
//!
//! Input: the request body, optionally preceded by one line
//! `x-switchback-quality: VALUE\n` giving the header (so the seed corpus stays readable
//! JSON). Every input is tried on both endpoints and under two sets of limits.

#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use switchback_router::{
    generation::{Generation, PromptKind, RequestLimits, estimate_tokens},
    http::{
        openai::{ChatRequest, CompletionRequest},
        quality_header,
    },
};

const HEADER: &[u8] = b"x-switchback-quality:";

fuzz_target!(|data: &[u8]| {
    let (header, body) = split(data);
    let mut headers = HeaderMap::new();
    if let Some(value) = header.and_then(|h| HeaderValue::from_bytes(h).ok()) {
        headers.insert("x-switchback-quality", value);
    }
    // The router's defaults, and tight limits so that rejections are reached too.
    let limits = [
        RequestLimits::default(),
        RequestLimits {
            max_tokens_limit: 7,
            max_messages: 2,
            max_prompt_tokens: 16,
            max_message_bytes: 40,
            max_stop_sequences: 2,
            max_stop_bytes: 3,
            max_top_logprobs: 2,
            max_deadline_ms: 1000,
        },
    ];
    for limits in &limits {
        if let Ok(g) = ChatRequest::parse(body).and_then(|r| r.validate(limits)) {
            check(&g, limits, &headers);
        }
        if let Ok(g) = CompletionRequest::parse(body).and_then(|r| r.validate(limits)) {
            check(&g, limits, &headers);
        }
    }
});

fn split(data: &[u8]) -> (Option<&[u8]>, &[u8]) {
    if let Some(rest) = data.strip_prefix(HEADER) {
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let body = rest.get(end + 1..).unwrap_or_default();
        return (Some(&rest[..end]), body);
    }
    (None, data)
}

/// What a validated request promises the rest of the router.
fn check(g: &Generation, limits: &RequestLimits, headers: &HeaderMap) {
    assert!(!g.model.trim().is_empty(), "empty model accepted");
    if let Some(m) = g.max_tokens {
        assert!(
            (1..=limits.max_tokens_limit).contains(&m),
            "max_tokens {m} outside 1..={}",
            limits.max_tokens_limit
        );
    }
    if let Some(t) = g.temperature {
        assert!((0.0..=2.0).contains(&t), "temperature {t}");
    }
    if let Some(p) = g.top_p {
        assert!(p > 0.0 && p <= 1.0, "top_p {p}");
    }
    for v in [g.frequency_penalty, g.presence_penalty]
        .into_iter()
        .flatten()
    {
        assert!((-2.0..=2.0).contains(&v), "penalty {v}");
    }
    assert!(
        g.stop.len() <= limits.max_stop_sequences,
        "{} stop sequences",
        g.stop.len()
    );
    assert!(
        g.stop
            .iter()
            .all(|s| !s.is_empty() && s.len() <= limits.max_stop_bytes),
        "empty or over-long stop sequence"
    );
    assert!(
        g.deadline_ms.is_none_or(|d| d <= limits.max_deadline_ms),
        "deadline_ms over the limit"
    );
    assert!(
        estimate_tokens(match &g.prompt {
            PromptKind::Chat(messages) => messages.iter().map(|m| m.content.len()).sum(),
            PromptKind::Text(t) => t.len(),
        }) <= u64::from(limits.max_prompt_tokens),
        "prompt over max_prompt_tokens"
    );
    if let Some(q) = g.quality {
        assert!((0.0..=1.0).contains(&q), "quality {q}");
    }
    assert_ne!(g.deadline_ms, Some(0), "deadline_ms 0 accepted");
    match &g.prompt {
        PromptKind::Chat(messages) => {
            assert!(
                (1..=limits.max_messages).contains(&messages.len()),
                "{} messages under a limit of {}",
                messages.len(),
                limits.max_messages
            );
            for m in messages {
                assert!(
                    matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool"),
                    "role {:?} passed on",
                    m.role
                );
                assert!(
                    m.content.len() <= limits.max_message_bytes,
                    "message over max_message_bytes"
                );
                assert!(
                    m.role == "assistant" || !m.content.is_empty(),
                    "empty {} message",
                    m.role
                );
            }
            assert!(
                g.logprobs.is_none_or(|n| n <= limits.max_top_logprobs),
                "top_logprobs"
            );
        }
        PromptKind::Text(prompt) => {
            assert!(!prompt.is_empty(), "empty prompt accepted");
            assert!(g.max_tokens.is_some(), "completions default max_tokens");
            assert!(g.logprobs.is_none_or(|n| n <= 5), "logprobs");
        }
    }

    // The header fills the quality target only when the body set none, and only with a
    // value in [0, 1].
    let mut with_header = g.clone();
    match quality_header(headers, &mut with_header) {
        Ok(()) => {
            if g.quality.is_some() {
                assert_eq!(
                    with_header.quality, g.quality,
                    "the header overrode the body"
                );
            }
            if let Some(q) = with_header.quality {
                assert!((0.0..=1.0).contains(&q), "header quality {q}");
            }
        }
        Err(_) => assert!(g.quality.is_none(), "the header was read despite the body"),
    }
}
