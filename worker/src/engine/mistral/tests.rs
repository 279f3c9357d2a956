//! Unit tests of `mistral`.

use super::*;
use crate::engine::ToolCall;
use mistralrs::core::llguidance::toktrie::ApproximateTokEnv;

fn emitter() -> Emitter {
    let env = ApproximateTokEnv::single_byte_env();
    let factory = Arc::new(constrain::factory_for(&env).expect("factory"));
    let end = env.tok_trie().eos_token();
    Emitter {
        factory,
        model_end: Arc::from(vec![end]),
        pending: Vec::new(),
        generated: 0,
    }
}

fn step(e: &Emitter, byte: u8) -> Step {
    let id = e
        .factory
        .tok_env()
        .tok_trie()
        .token_id(&[byte])
        .expect("byte token");
    Step {
        id,
        logprob: -0.25,
        top: vec![(id, -0.25)],
    }
}

#[test]
fn every_token_gets_its_entry_and_its_real_bytes() {
    let mut e = emitter();
    // "é" is two bytes, each its own token here.
    let first = e.delta(vec![step(&e, b'a'), step(&e, 0xc3)]);
    let Some(EngineEvent::Delta { text, tokens }) = first else {
        panic!("{first:?}")
    };
    assert_eq!(text, "a", "half a character waits");
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[1].bytes, vec![0xc3]);
    assert_eq!(
        tokens[1].top[0].bytes,
        vec![0xc3],
        "alternatives' bytes too"
    );
    let second = e.delta(vec![step(&e, 0xa9)]);
    let Some(EngineEvent::Delta { text, tokens }) = second else {
        panic!("{second:?}")
    };
    assert_eq!(text, "é");
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].bytes, vec![0xa9]);
}

#[test]
fn the_end_token_is_neither_counted_nor_listed() {
    let mut e = emitter();
    let end = e.model_end[0];
    let delta = e.delta(vec![
        step(&e, b' '),
        step(&e, b'P'),
        Step {
            id: end,
            logprob: -0.1,
            top: Vec::new(),
        },
    ]);
    let Some(EngineEvent::Delta { text, tokens }) = delta else {
        panic!("{delta:?}")
    };
    assert_eq!(text, " P", "the leading space is the answer's");
    assert_eq!(tokens.len(), 2);
    assert_eq!(e.generated, 2);
    assert_eq!(e.delta(Vec::new()), None);
}

#[test]
fn calls_in_history_reach_the_template_as_objects() {
    let m = template_message(ChatMessage {
        role: "assistant".into(),
        content: String::new(),
        tool_calls: vec![ToolCall {
            id: "call_1".into(),
            name: "now".into(),
            arguments: r#"{"tz":"UTC"}"#.into(),
        }],
        ..ChatMessage::default()
    });
    let either::Either::Right(calls) = &m["tool_calls"] else {
        panic!("{m:?}")
    };
    assert_eq!(calls[0]["function"]["arguments"]["tz"], "UTC");
    let r = template_message(ChatMessage {
        role: "tool".into(),
        content: "12:00".into(),
        tool_call_id: Some("call_1".into()),
        name: Some("now".into()),
        ..ChatMessage::default()
    });
    assert_eq!(r["tool_call_id"], either::Either::Left("call_1".into()));
}

#[test]
fn tools_are_enabled_by_templates_that_write_hermes_calls() {
    assert!(template_calls_tools(
        "{% if tools %}# Tools ... <tool_call>\n{...}\n</tool_call>{% endif %}"
    ));
    assert!(!template_calls_tools("<|im_start|>{{ message.content }}"));
}

#[test]
fn mistral_rs_is_asked_for_no_stops_and_no_sampling() {
    let p = GenerateParams {
        request_id: "r".into(),
        prompt: Prompt::Text("x".into()),
        sampling: super::super::Sampling {
            max_tokens: 5,
            stop: vec!["\n".into()],
            ..Default::default()
        },
        top_logprobs: 0,
        tools: None,
        format: super::super::Format::Text,
    };
    let s = sampling_params(&p);
    assert_eq!(
        s.temperature, None,
        "the Decoder chooses tokens, not mistral.rs"
    );
    assert!(s.stop_toks.is_none(), "stops are matched on the text");
    assert_eq!(choose(&p).temperature, None);
    assert_eq!(s.max_len, Some(5));
    assert_eq!(s.top_n_logprobs, 1);
}
