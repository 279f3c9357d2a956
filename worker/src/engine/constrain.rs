//! What an answer may be: tool calls and JSON output as llguidance grammars, the per-step
//! token mask they give the [`Decoder`](super::decode::Decoder), and the parsing of calls
//! back out of the answer's text.
//!
//! Calls use the format of the model's own chat template (Qwen2.5 and other Hermes-style
//! templates): `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, one block per
//! call. The grammar fixes the name to one of the offered tools and the arguments to that
//! tool's JSON Schema, so every call the worker returns parses and matches its schema.
//!
//! Under `tool_choice: auto` small models often write a call without the markers: the bare
//! JSON object, or the object in a ```` ```json ```` fence. The grammar leaves such an answer
//! free (it may as well be JSON prose, or a call of a tool that was not offered); once it is
//! complete it is a call if it names an offered tool with arguments that match the tool's
//! schema, checked by the same grammar machinery, and text otherwise.

use mistralrs::core::llguidance::{self, Matcher, ParserFactory, api::TopLevelGrammar};
use serde_json::{Value, json};

use super::{EngineError, Format, ToolCall, ToolChoice, Tools};

/// Opens a call in the Hermes format.
pub const CALL_OPEN: &str = "<tool_call>";
/// Closes it.
pub const CALL_CLOSE: &str = "</tool_call>";
/// Opens a call written as a fenced JSON block.
pub const FENCE_OPEN: &str = "```json\n";
/// Closes the fence.
pub const FENCE_CLOSE: &str = "```";

/// Whether an answer that begins with `head` (leading whitespace trimmed) may be calls
/// (`Some(true)`: held whole until it ends, then [`parse_calls`] decides), is prose
/// (`Some(false)`), or is not yet known (`None`).
pub fn opens_calls(head: &str) -> Option<bool> {
    if head.is_empty() {
        return None;
    }
    if head.starts_with(CALL_OPEN) || head.starts_with(FENCE_OPEN) || head.starts_with('{') {
        return Some(true);
    }
    if CALL_OPEN.starts_with(head) || FENCE_OPEN.starts_with(head) {
        return None;
    }
    Some(false)
}

/// JSON written the way the models were trained to write it (`{"a": 1, "b": 2}`) and with no
/// room for runs of whitespace, which a small model under a grammar can fall into.
fn compact(mut schema: Value) -> Value {
    if let Value::Object(map) = &mut schema {
        map.insert(
            "x-guidance".into(),
            json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
        );
    }
    schema
}

fn format_schema(format: &Format) -> Option<Value> {
    match format {
        Format::Text => None,
        Format::JsonObject => Some(json!({"type": "object"})),
        Format::JsonSchema(schema) => Some(schema.clone()),
    }
}

/// The schema of one call's JSON: the name of an offered tool and that tool's arguments,
/// written compactly (for generation) or with any whitespace (for checking).
fn call_schema(tools: &Tools, compactly: bool) -> Value {
    let style = |v: Value| if compactly { compact(v) } else { v };
    let choices: Vec<Value> = tools
        .list
        .iter()
        .filter(|t| match &tools.choice {
            ToolChoice::Named(name) => &t.name == name,
            _ => true,
        })
        .map(|t| {
            let arguments = match &t.parameters {
                Value::Object(m) if !m.is_empty() => t.parameters.clone(),
                _ => json!({"type": "object"}),
            };
            json!({
                "type": "object",
                "properties": {"name": {"const": t.name}, "arguments": arguments},
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    match <[Value; 1]>::try_from(choices) {
        Ok([one]) => style(one),
        Err(many) => style(json!({ "anyOf": many })),
    }
}

/// How a grammar writes the call markers: as special tokens where the tokenizer has them
/// (Qwen2.5's `<tool_call>` is one token, which a literal string would not match), else as
/// text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Markers {
    pub open: String,
    pub close: String,
}

impl Default for Markers {
    fn default() -> Self {
        Self {
            open: format!("\"{CALL_OPEN}\""),
            close: format!("\"{CALL_CLOSE}\""),
        }
    }
}

impl Markers {
    /// The markers for a tokenizer environment.
    pub fn of(env: &llguidance::toktrie::TokEnv) -> Self {
        let trie = env.tok_trie();
        let mark = |m: &str| match trie.get_special_token(m) {
            Some(_) => m.to_owned(),
            None => format!("\"{m}\""),
        };
        Self {
            open: mark(CALL_OPEN),
            close: mark(CALL_CLOSE),
        }
    }
}

/// The grammar an answer must follow, in llguidance's Lark dialect; `None` when any text
/// will do.
pub fn grammar(tools: Option<&Tools>, format: &Format, markers: &Markers) -> Option<String> {
    let text = format_schema(format).map(|s| format!("%json {}", compact(s)));
    let Some(tools) = tools.filter(|t| t.choice != ToolChoice::None && !t.list.is_empty()) else {
        return text.map(|t| format!("start: {t}\n"));
    };
    let call = format!(
        "call: {} \"\\n\" %json {} \"\\n\" {}\n",
        markers.open,
        call_schema(tools, true),
        markers.close
    );
    let calls = if tools.single || matches!(tools.choice, ToolChoice::Named(_)) {
        "calls: call\n"
    } else {
        "calls: call (\"\\n\" call)*\n"
    };
    let start = match tools.choice {
        // Prose may be anything that does not open a marked call: it cannot begin with `<`.
        ToolChoice::Auto => match text {
            Some(t) => format!("start: calls | {t}\n"),
            None => "start: calls | PROSE\nPROSE: /[^<][\\s\\S]*/\n".to_owned(),
        },
        _ => "start: calls\n".to_owned(),
    };
    Some(format!("{start}{calls}{call}"))
}

/// A grammar compiled for one request, masking each step's tokens.
pub struct Constraint {
    matcher: Matcher,
    /// The grammar's end-of-text token, in the tokenizer environment llguidance uses.
    grammar_end: u32,
    /// The tokens that end the model's answer (mistral.rs stops on them).
    model_end: Vec<u32>,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint").finish_non_exhaustive()
    }
}

impl Constraint {
    /// Compiles `lark`; a grammar llguidance cannot build (an unsupported JSON Schema
    /// feature, say) is the request's fault.
    pub fn new(
        factory: &ParserFactory,
        lark: &str,
        model_end: Vec<u32>,
    ) -> Result<Self, EngineError> {
        let parser = factory
            .create_parser(TopLevelGrammar::from_lark(lark.to_owned()))
            .map_err(|e| EngineError::InvalidRequest(format!("the schema cannot be used: {e}")))?;
        let grammar_end = factory.tok_env().tok_trie().eos_token();
        Ok(Self {
            matcher: Matcher::new(Ok(parser)),
            grammar_end,
            model_end,
        })
    }

    /// Which of `vocab` tokens may come next. Once the grammar is complete only the model's
    /// end tokens may.
    pub fn allowed(&mut self, vocab: usize) -> Result<Vec<bool>, String> {
        let mut allowed = vec![false; vocab];
        let ends = if self.matcher.is_stopped() {
            true
        } else {
            let mask = self.matcher.compute_mask().map_err(|e| e.to_string())?;
            for (id, slot) in allowed.iter_mut().enumerate().take(mask.len()) {
                *slot = mask.is_allowed(id as u32);
            }
            mask.is_allowed(self.grammar_end)
        };
        if let Some(slot) = allowed.get_mut(self.grammar_end as usize) {
            *slot = false;
        }
        for &id in &self.model_end {
            if let Some(slot) = allowed.get_mut(id as usize) {
                *slot = ends;
            }
        }
        if !allowed.contains(&true) {
            return Err(self
                .matcher
                .get_error()
                .unwrap_or_else(|| "the grammar allows no token".to_owned()));
        }
        Ok(allowed)
    }

    /// Advances the grammar past the chosen token.
    pub fn commit(&mut self, id: u32) -> Result<(), String> {
        if self.model_end.contains(&id) || self.matcher.is_stopped() {
            return Ok(());
        }
        self.matcher.consume_token(id).map_err(|e| e.to_string())
    }
}

/// The tokenizer environment's view of the grammar machinery, for tests without a model.
pub fn factory_for(env: &llguidance::toktrie::TokEnv) -> Result<ParserFactory, String> {
    ParserFactory::new_simple(env).map_err(|e| e.to_string())
}

/// The calls in an answer: Hermes blocks, or one call as a bare or fenced JSON object.
/// `None` when the answer is not made of calls alone, or a call names a tool not in `tools`
/// or has arguments that do not match its schema. `id_prefix` makes the calls' ids unique
/// per answer.
pub fn parse_calls(text: &str, id_prefix: &str, tools: &Tools) -> Option<Vec<ToolCall>> {
    let text = text.trim();
    let call = |json: &str, n: usize| -> Option<ToolCall> {
        let (name, arguments) = name_and_arguments(serde_json::from_str(json.trim()).ok()?)?;
        let normal = format!(
            "{{\"name\": {}, \"arguments\": {arguments}}}",
            Value::String(name.clone())
        );
        is_offered_call(tools, &normal).then(|| ToolCall {
            id: format!("{id_prefix}{n}"),
            name,
            arguments,
        })
    };
    if text.starts_with('{') {
        return Some(vec![call(text, 0)?]);
    }
    if let Some(body) = text.strip_prefix(FENCE_OPEN) {
        let body = body.strip_suffix(FENCE_CLOSE)?;
        return Some(vec![call(body, 0)?]);
    }
    let mut calls = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let body = rest.strip_prefix(CALL_OPEN)?;
        let end = body.find(CALL_CLOSE)?;
        calls.push(call(&body[..end], calls.len())?);
        rest = body[end + CALL_CLOSE.len()..].trim_start();
    }
    (!calls.is_empty()).then_some(calls)
}

/// Whether `json` is a call `tools` allow: an offered name, arguments matching its schema.
/// Checked by running the JSON through the call's grammar byte by byte.
fn is_offered_call(tools: &Tools, json: &str) -> bool {
    use llguidance::toktrie::ApproximateTokEnv;
    static ENV: std::sync::OnceLock<Option<(llguidance::toktrie::TokEnv, ParserFactory)>> =
        std::sync::OnceLock::new();
    let Some((env, factory)) = ENV.get_or_init(|| {
        let env = ApproximateTokEnv::single_byte_env();
        let factory = factory_for(&env).ok()?;
        Some((env, factory))
    }) else {
        return false;
    };
    let lark = format!("start: %json {}\n", call_schema(tools, false));
    let trie = env.tok_trie();
    let eos = trie.eos_token();
    let Ok(mut c) = Constraint::new(factory, &lark, vec![eos]) else {
        return false;
    };
    let vocab = trie.vocab_size();
    for b in json.bytes() {
        let Some(id) = trie.token_id(&[b]) else {
            return false;
        };
        if !c.allowed(vocab).is_ok_and(|a| a[id as usize]) || c.commit(id).is_err() {
            return false;
        }
    }
    c.allowed(vocab).is_ok_and(|a| a[eos as usize])
}

/// A call's name and its arguments as a JSON object's text.
fn name_and_arguments(call: Value) -> Option<(String, String)> {
    let name = call.get("name")?.as_str()?.to_owned();
    let arguments = match call.get("arguments")? {
        v @ Value::Object(_) => v.to_string(),
        // Some models write the arguments as a JSON string holding the object.
        Value::String(s) => match serde_json::from_str::<Value>(s).ok()? {
            v @ Value::Object(_) => v.to_string(),
            _ => return None,
        },
        _ => return None,
    };
    Some((name, arguments))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Tool;
    use llguidance::toktrie::ApproximateTokEnv;

    fn tools(choice: ToolChoice) -> Tools {
        Tools {
            list: vec![
                Tool {
                    name: "get_weather".into(),
                    description: "Weather in a city".into(),
                    parameters: json!({
                        "type": "object",
                        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                        "required": ["city"],
                        "additionalProperties": false,
                    }),
                },
                Tool {
                    name: "now".into(),
                    description: String::new(),
                    parameters: json!({}),
                },
            ],
            choice,
            single: false,
        }
    }

    /// Feeds `text` byte by byte (the single-byte tokenizer) through the grammar: `Ok` when
    /// every byte was allowed, with whether the end was allowed after it.
    fn run(lark: &str, text: &str) -> Result<bool, String> {
        let env = ApproximateTokEnv::single_byte_env();
        let factory = factory_for(&env)?;
        let eos = env.tok_trie().eos_token();
        let mut c = Constraint::new(&factory, lark, vec![eos]).map_err(|e| e.to_string())?;
        let vocab = env.tok_trie().vocab_size();
        for (i, b) in text.bytes().enumerate() {
            let id = env.tok_trie().token_id(&[b]).ok_or("no byte token")?;
            let allowed = c.allowed(vocab)?;
            if !allowed[id as usize] {
                return Err(format!("byte {i} ({:?}) refused in {text:?}", b as char));
            }
            c.commit(id)?;
        }
        Ok(c.allowed(vocab).is_ok_and(|a| a[eos as usize]))
    }

    #[test]
    fn required_calls_take_only_offered_tools_with_valid_arguments() {
        let g = grammar(
            Some(&tools(ToolChoice::Required)),
            &Format::Text,
            &Markers::default(),
        )
        .expect("grammar");
        let ok = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}\n</tool_call>";
        assert_eq!(run(&g, ok), Ok(true));
        let two =
            format!("{ok}\n<tool_call>\n{{\"name\": \"now\", \"arguments\": {{}}}}\n</tool_call>");
        assert_eq!(run(&g, &two), Ok(true));
        for bad in [
            "Sure! <tool_call>",
            "<tool_call>\n{\"name\": \"delete_all\"",
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": 3",
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"town\"",
        ] {
            assert!(run(&g, bad).is_err(), "{bad:?} must be refused");
        }
        // Incomplete: the end is not allowed yet.
        assert_eq!(run(&g, &ok[..ok.len() - 3]), Ok(false));
    }

    #[test]
    fn a_named_tool_is_called_once_and_auto_allows_prose() {
        let named = grammar(
            Some(&tools(ToolChoice::Named("now".into()))),
            &Format::Text,
            &Markers::default(),
        )
        .expect("grammar");
        let call = "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>";
        assert_eq!(run(&named, call), Ok(true));
        assert!(run(&named, "<tool_call>\n{\"name\": \"get_weather\"").is_err());
        assert!(run(&named, &format!("{call}\n<")).is_err(), "one call only");
        let auto = grammar(
            Some(&tools(ToolChoice::Auto)),
            &Format::Text,
            &Markers::default(),
        )
        .expect("grammar");
        assert_eq!(run(&auto, "It is sunny <b>today</b>."), Ok(true));
        assert_eq!(run(&auto, call), Ok(true));
        // Prose is free, JSON included: whether it is a call is decided once it is whole.
        for prose in [
            "{\"name\": \"hello\", \"arguments\": {}}",
            "```python\nprint(1)\n```",
        ] {
            assert_eq!(run(&auto, prose), Ok(true), "{prose:?} is allowed");
        }
        assert_eq!(
            grammar(
                Some(&tools(ToolChoice::None)),
                &Format::Text,
                &Markers::default()
            ),
            None,
            "`none` leaves prose free"
        );
    }

    #[test]
    fn json_formats_accept_only_matching_json() {
        let object = grammar(None, &Format::JsonObject, &Markers::default()).expect("grammar");
        assert_eq!(run(&object, "{\"a\": [1, 2]}"), Ok(true));
        assert!(run(&object, "Here is").is_err());
        assert!(run(&object, "[1]").is_err());
        let schema = Format::JsonSchema(json!({
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
            "additionalProperties": false,
        }));
        let g = grammar(None, &schema, &Markers::default()).expect("grammar");
        assert_eq!(run(&g, "{\"name\": \"Ada\", \"age\": 36}"), Ok(true));
        assert!(run(&g, "{\"name\": \"Ada\", \"age\": \"old\"").is_err());
        assert_eq!(
            run(&g, "{\"name\": \"Ada\"}"),
            Err("byte 14 ('}') refused in \"{\\\"name\\\": \\\"Ada\\\"}\"".into())
        );
    }

    #[test]
    fn an_unusable_schema_is_the_requests_fault() {
        let env = ApproximateTokEnv::single_byte_env();
        let factory = factory_for(&env).expect("factory");
        let g = grammar(
            None,
            &Format::JsonSchema(
                json!({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}),
            ),
            &Markers::default(),
        )
        .expect("grammar");
        assert!(matches!(
            Constraint::new(&factory, &g, vec![0]),
            Err(EngineError::InvalidRequest(_))
        ));
    }

    #[test]
    fn calls_parse_back_out_of_the_text() {
        let offered = tools(ToolChoice::Auto);
        let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>";
        let calls = parse_calls(text, "call_x", &offered).expect("calls");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, r#"{"city":"Paris"}"#);
        assert_eq!(calls[0].id, "call_x0");
        assert_eq!(calls[1].id, "call_x1");
        assert_eq!(parse_calls("Sunny.", "c", &offered), None);
        assert_eq!(
            parse_calls("<tool_call>\n{\"name\": \"now\"", "c", &offered),
            None
        );
        assert_eq!(
            parse_calls(
                "<tool_call>\n{\"name\": \"now\", \"arguments\": \"{}\"}\n</tool_call>",
                "c",
                &offered
            )
            .map(|c| c[0].arguments.clone()),
            Some("{}".into())
        );
    }

    #[test]
    fn unmarked_calls_count_only_when_they_fit_an_offered_tool() {
        let offered = tools(ToolChoice::Auto);
        let bare =
            "{\"name\":\"get_weather\",\n \"arguments\": {\"city\": \"Paris\", \"days\": 2}}";
        for text in [bare.to_owned(), format!("```json\n{bare}\n```\n")] {
            let calls = parse_calls(&text, "c", &offered).expect("one unmarked call");
            assert_eq!(calls.len(), 1);
            assert_eq!(calls[0].name, "get_weather");
            assert_eq!(calls[0].arguments, r#"{"city":"Paris","days":2}"#);
        }
        for not_a_call in [
            // A tool nobody offered, arguments off the schema, JSON that is no call at all.
            "{\"name\": \"hello\", \"arguments\": {}}",
            "{\"name\": \"get_weather\", \"arguments\": {\"city\": 3}}",
            "{\"name\": \"get_weather\", \"arguments\": {\"town\": \"Paris\"}}",
            "{\"temperature_c\": 21}",
            "```json\n{\"name\": \"now\"",
        ] {
            assert_eq!(parse_calls(not_a_call, "c", &offered), None, "{not_a_call}");
        }
    }
}
