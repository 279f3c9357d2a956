//! Parsing and validation of both endpoints' bodies, through [`ChatRequest::parse`] /
//! [`CompletionRequest::parse`] and `validate`, as the handlers run them.

use super::*;
use crate::generation::{ChatMessage, Generation, PromptKind, RequestLimits, estimate_chat_tokens};

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
            format!(r#"{{"model":"m","messages":{user},"switchback":{{"deadline_ms":10001}}}}"#),
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
        Err(ApiError::InvalidField { param, .. } | ApiError::LimitExceeded { param, .. }) => param,
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
            message.contains(sent) && message.contains("a string, or a list holding one string"),
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
