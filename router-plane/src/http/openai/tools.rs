//! `tools`, `tool_choice`, `parallel_tool_calls`, `response_format` and the calls in a
//! conversation's history: checked as OpenAI defines them and turned into what workers take.
//! A request that asks for any of them can only go to workers that do it (their records say
//! so); the router never answers it with prose from a model that cannot.

use serde_json::Value;
use switchback_proto::pb;

use crate::{generation::Asks, http::error::ApiError};

/// Most tools one request may offer.
pub const MAX_TOOLS: usize = 128;

fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::invalid(param, message)
}

/// OpenAI's rule for function names.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn object_schema(param: &str, v: Option<&Value>) -> Result<String, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(s @ Value::Object(_)) => Ok(s.to_string()),
        Some(_) => Err(invalid(
            param,
            format!("`{param}` must be a JSON Schema object"),
        )),
    }
}

fn parse_tools(tools: Option<&Value>) -> Result<Vec<pb::Tool>, ApiError> {
    let list = match tools {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid("tools", "`tools` must be an array")),
    };
    if list.len() > MAX_TOOLS {
        return Err(invalid(
            "tools",
            format!(
                "`tools` has {} entries; the limit is {MAX_TOOLS}",
                list.len()
            ),
        ));
    }
    let mut out: Vec<pb::Tool> = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        let kind = tool.get("type").and_then(Value::as_str);
        if kind != Some("function") {
            return Err(invalid(
                format!("tools[{i}].type"),
                format!("`tools[{i}].type` must be \"function\""),
            ));
        }
        let Some(function) = tool.get("function").filter(|f| f.is_object()) else {
            return Err(invalid(
                format!("tools[{i}].function"),
                format!("`tools[{i}].function` must be an object"),
            ));
        };
        let name = function.get("name").and_then(Value::as_str).unwrap_or("");
        if !valid_name(name) {
            return Err(invalid(
                format!("tools[{i}].function.name"),
                format!(
                    "`tools[{i}].function.name` must be 1 to 64 letters, digits, `_` or `-`, got {name:?}"
                ),
            ));
        }
        if out.iter().any(|t| t.name == name) {
            return Err(invalid(
                format!("tools[{i}].function.name"),
                format!("two tools are named {name:?}"),
            ));
        }
        let description = match function.get("description") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(invalid(
                    format!("tools[{i}].function.description"),
                    format!("`tools[{i}].function.description` must be a string"),
                ));
            }
        };
        let param = format!("tools[{i}].function.parameters");
        let parameters = object_schema(&param, function.get("parameters"))?;
        out.push(pb::Tool {
            name: name.to_owned(),
            description,
            parameters,
        });
    }
    Ok(out)
}

fn parse_choice(
    choice: Option<&Value>,
    tools: &[pb::Tool],
) -> Result<Option<pb::ToolChoice>, ApiError> {
    use pb::tool_choice::Mode;
    let (mode, name) = match choice {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => (Mode::Auto, String::new()),
            "none" => (Mode::None, String::new()),
            "required" => (Mode::Required, String::new()),
            other => {
                return Err(invalid(
                    "tool_choice",
                    format!(
                        "`tool_choice` {other:?} is not one of auto, none, required, or a named function"
                    ),
                ));
            }
        },
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str);
            match (o.get("type").and_then(Value::as_str), name) {
                (Some("function"), Some(name)) => (Mode::Named, name.to_owned()),
                _ => {
                    return Err(invalid(
                        "tool_choice",
                        "`tool_choice` as an object must be {\"type\": \"function\", \"function\": {\"name\": ...}}",
                    ));
                }
            }
        }
        Some(_) => {
            return Err(invalid(
                "tool_choice",
                "`tool_choice` must be a string or an object",
            ));
        }
    };
    if tools.is_empty() && mode != Mode::None {
        return Err(invalid(
            "tool_choice",
            "`tool_choice` is only allowed when `tools` are given",
        ));
    }
    if mode == Mode::Named && !tools.iter().any(|t| t.name == name) {
        return Err(invalid(
            "tool_choice",
            format!("`tool_choice` names {name:?}, which is not among `tools`"),
        ));
    }
    Ok(Some(pb::ToolChoice {
        mode: mode as i32,
        name,
    }))
}

fn parse_format(format: Option<&Value>) -> Result<Option<pb::ResponseFormat>, ApiError> {
    use pb::response_format::Kind;
    let Some(format) = format.filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    let kind = format.get("type").and_then(Value::as_str);
    let (kind, schema) = match kind {
        Some("text") => return Ok(None),
        Some("json_object") => (Kind::JsonObject, String::new()),
        Some("json_schema") => {
            let Some(spec) = format.get("json_schema").filter(|s| s.is_object()) else {
                return Err(invalid(
                    "response_format.json_schema",
                    "`response_format.json_schema` must be an object with `name` and `schema`",
                ));
            };
            let name = spec.get("name").and_then(Value::as_str).unwrap_or("");
            if !valid_name(name) {
                return Err(invalid(
                    "response_format.json_schema.name",
                    format!(
                        "`response_format.json_schema.name` must be 1 to 64 letters, digits, `_` or `-`, got {name:?}"
                    ),
                ));
            }
            if let Some(strict) = spec
                .get("strict")
                .filter(|s| !s.is_null() && !s.is_boolean())
            {
                return Err(invalid(
                    "response_format.json_schema.strict",
                    format!("`response_format.json_schema.strict` must be a boolean, got {strict}"),
                ));
            }
            let schema = object_schema("response_format.json_schema.schema", spec.get("schema"))?;
            // No schema: any JSON object, as OpenAI does.
            if schema.is_empty() {
                (Kind::JsonObject, String::new())
            } else {
                (Kind::JsonSchema, schema)
            }
        }
        _ => {
            return Err(invalid(
                "response_format.type",
                "`response_format.type` must be one of text, json_object, json_schema",
            ));
        }
    };
    Ok(Some(pb::ResponseFormat {
        kind: kind as i32,
        schema,
    }))
}

/// Reads the request's tool and format fields.
pub fn parse(
    tools: Option<&Value>,
    tool_choice: Option<&Value>,
    parallel_tool_calls: Option<bool>,
    response_format: Option<&Value>,
) -> Result<Asks, ApiError> {
    let tools = parse_tools(tools)?;
    let tool_choice = parse_choice(tool_choice, &tools)?;
    Ok(Asks {
        single_tool_call: parallel_tool_calls == Some(false),
        response_format: parse_format(response_format)?,
        tool_choice,
        tools,
    })
}

/// The calls an assistant message made earlier in the conversation.
pub fn history_calls(i: usize, calls: Option<&Value>) -> Result<Vec<pb::ToolCall>, ApiError> {
    let list = match calls {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(invalid(
                format!("messages[{i}].tool_calls"),
                format!("`messages[{i}].tool_calls` must be an array"),
            ));
        }
    };
    list.iter()
        .enumerate()
        .map(|(j, call)| {
            let param = format!("messages[{i}].tool_calls[{j}]");
            let id = call.get("id").and_then(Value::as_str).unwrap_or("");
            let function = call.get("function");
            let name = function
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let arguments = function
                .and_then(|f| f.get("arguments"))
                .and_then(Value::as_str);
            match (id, name, arguments) {
                ("", _, _) | (_, "", _) | (_, _, None) => Err(invalid(
                    param.clone(),
                    format!(
                        "`{param}` needs `id`, `function.name` and `function.arguments` (a string)"
                    ),
                )),
                (id, name, Some(arguments)) => Ok(pb::ToolCall {
                    id: id.to_owned(),
                    name: name.to_owned(),
                    arguments: arguments.to_owned(),
                }),
            }
        })
        .collect()
}

/// A call as OpenAI returns it in `message.tool_calls`.
pub fn call_json(call: &pb::ToolCall) -> Value {
    serde_json::json!({
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::Needs;
    use serde_json::json;

    fn error_param(r: Result<Asks, ApiError>) -> String {
        match r {
            Err(ApiError::InvalidField { param, .. }) => param,
            other => panic!("expected an invalid-request error, got {other:?}"),
        }
    }

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "description": "d",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
    }

    #[test]
    fn tools_choices_and_formats_become_worker_fields() {
        let asks = parse(
            Some(&weather()),
            Some(&json!({"type": "function", "function": {"name": "get_weather"}})),
            Some(false),
            Some(
                &json!({"type": "json_schema", "json_schema": {"name": "w", "strict": true,
                "schema": {"type": "object"}}}),
            ),
        )
        .expect("valid");
        assert_eq!(asks.tools.len(), 1);
        assert_eq!(asks.tools[0].name, "get_weather");
        assert!(asks.tools[0].parameters.contains("\"city\""));
        assert_eq!(
            asks.tool_choice.as_ref().map(|c| c.name.as_str()),
            Some("get_weather")
        );
        assert!(asks.single_tool_call);
        assert_eq!(
            asks.response_format.as_ref().map(|f| f.kind()),
            Some(pb::response_format::Kind::JsonSchema)
        );
        assert_eq!(
            asks.needs(),
            Needs {
                tools: true,
                schema: true
            }
        );
        let plain = parse(None, None, None, Some(&json!({"type": "text"}))).expect("valid");
        assert_eq!(plain, Asks::default());
        assert!(!plain.needs().any());
    }

    #[test]
    fn bad_tool_fields_are_named() {
        for (tools, choice, format, param) in [
            (json!({}), None, None, "tools"),
            (json!([{"type": "retrieval"}]), None, None, "tools[0].type"),
            (
                json!([{"type": "function", "function": {"name": "bad name"}}]),
                None,
                None,
                "tools[0].function.name",
            ),
            (
                json!([{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
                None,
                None,
                "tools[0].function.parameters",
            ),
            (weather(), Some(json!("sometimes")), None, "tool_choice"),
            (
                weather(),
                Some(json!({"type": "function", "function": {"name": "other"}})),
                None,
                "tool_choice",
            ),
            (json!(null), Some(json!("required")), None, "tool_choice"),
            (
                json!(null),
                None,
                Some(json!({"type": "xml"})),
                "response_format.type",
            ),
            (
                json!(null),
                None,
                Some(json!({"type": "json_schema"})),
                "response_format.json_schema",
            ),
            (
                json!(null),
                None,
                Some(json!({"type": "json_schema", "json_schema": {"name": "n", "schema": [1]}})),
                "response_format.json_schema.schema",
            ),
        ] {
            assert_eq!(
                error_param(parse(Some(&tools), choice.as_ref(), None, format.as_ref())),
                param
            );
        }
    }

    #[test]
    fn history_calls_need_ids_names_and_string_arguments() {
        let calls = history_calls(
            2,
            Some(&json!([{"id": "call_1", "type": "function",
                "function": {"name": "f", "arguments": "{\"a\":1}"}}])),
        )
        .expect("valid");
        assert_eq!(calls[0].arguments, "{\"a\":1}");
        let bad = history_calls(
            2,
            Some(&json!([{"id": "c", "function": {"name": "f", "arguments": {}}}])),
        );
        assert!(
            matches!(bad, Err(ApiError::InvalidField { param, .. }) if param == "messages[2].tool_calls[0]")
        );
    }
}
