"""Drives a Switchback router with the client libraries applications use, and checks every
response shape against OpenAI's OpenAPI spec.

Usage: clients.py BASE_URL [--kind wire|model] [CHECK ...]   (BASE_URL e.g. http://127.0.0.1:8080/v1)

Runs the named checks (default: all of `--kind`, default both kinds), each on its own, so one
failing does not stop the others, and prints one JSON object on stdout:
`{check: {"ok": bool, "detail": ...}}`. A failed check's detail says what was expected, what
came back, and the requests the library sent. Exits 0 whatever the checks found; non-zero
only when the script itself cannot run (bad arguments, a library missing).

Two kinds of check:
- `wire`: the API's shapes and protocol (the spec's schemas, streaming, models, request ids,
  error bodies, what each library sends and parses). Any engine answers them, `sim` included;
  they use the `small` tier.
- `model`: behaviour that depends on a real model and its tokenizer (stop strings that end
  inside a token, a completion's leading space, tool calls and JSON output on `medium`,
  `small` refusing tools). They expect the real ladder: `small` SmolLM2-135M (no tool
  support), `medium` Qwen2.5-Coder-0.5B-Instruct.

Libraries, pinned in requirements.txt: the official `openai` SDK (sync, async, streaming,
raw responses, `parse`), `langchain-openai`, `litellm` (the `openai/` provider) and
`instructor`; response bodies are validated with `jsonschema` against openapi/schemas.json.
"""
import argparse
import asyncio
import contextlib
import json
import os
import sys
import traceback

# litellm fetches a model price map from GitHub on import unless told to use its own copy;
# the tests run with no network beyond the router.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import jsonschema  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from harness import (  # noqa: E402
    TIMEOUT,
    Fail,
    Trace,
    api_error,
    chat_text,
    expect,
    expect_args_match,
    expect_spec,
    finishes,
    raw_stream,
    user,
)
QUESTION = "What is the capital of France? Answer in one sentence."
COLORS = "Name three colors."
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city, e.g. London"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current local time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string", "description": "IANA zone, e.g. Asia/Tokyo"}},
            "required": ["timezone"],
        },
    },
}
TOOLS = [WEATHER_TOOL, TIME_TOOL]
PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
PERSON_TEXT = "Alice is 30 years old and lives in Lyon."


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str
    age: int


class GetWeather(BaseModel):
    """Get the current weather in a city."""

    city: str


# ---------------------------------------------------------------- checks

CHECKS = {}
WIRE, MODEL = "wire", "model"


def check(kind):
    def register(fn):
        CHECKS[fn.__name__] = (kind, fn)
        return fn

    return register


@check(WIRE)
def openai_chat(t):
    """Sync chat; the raw body matches CreateChatCompletionResponse; message.refusal null."""
    raw = t.openai().chat.completions.with_raw_response.create(model="small", messages=user(QUESTION), max_tokens=16)
    body = raw.http_response.json()
    expect_spec("CreateChatCompletionResponse", body, "the chat completion")
    chat = raw.parse()
    message = chat.choices[0].message
    expect(message.content, "empty content", body=body)
    expect(message.refusal is None, "message.refusal is not null", body=body)
    expect(chat.object == "chat.completion", "object is not chat.completion", body=body)
    return {"content": message.content, "finish_reason": chat.choices[0].finish_reason}


@check(WIRE)
def openai_chat_logprobs(t):
    """One log-probability per generated token, each with its real UTF-8 `bytes`; the bytes
    put together are the content; logprobs.refusal null."""
    raw = t.openai().chat.completions.with_raw_response.create(
        model="small", messages=user(QUESTION), max_tokens=12, logprobs=True, top_logprobs=2
    )
    body = raw.http_response.json()
    expect_spec("CreateChatCompletionResponse", body, "the chat completion with logprobs")
    choice = body["choices"][0]
    expect(choice.get("logprobs"), "no logprobs although asked for", choice=choice)
    lps = choice["logprobs"].get("content") or []
    expect(choice["logprobs"].get("refusal", "missing") is None, "logprobs.refusal is not null", logprobs=choice["logprobs"])
    expect(
        len(lps) == body["usage"]["completion_tokens"],
        "not one logprobs entry per generated token",
        entries=len(lps),
        usage=body["usage"],
    )
    for lp in lps:
        expect(isinstance(lp.get("bytes"), list) and lp["bytes"], "a token without bytes", entry=lp)
        expect(all(0 <= b <= 255 for b in lp["bytes"]), "bytes out of range", entry=lp)
        expect(len(lp["top_logprobs"]) == 2, "top_logprobs is not the 2 asked for", entry=lp)
        for top in lp["top_logprobs"]:
            expect(isinstance(top.get("bytes"), list), "a top_logprobs entry without bytes", entry=lp)
    joined = b"".join(bytes(lp["bytes"]) for lp in lps).decode("utf-8", "replace")
    content = choice["message"]["content"]
    expect(joined == content, "the tokens' bytes do not spell the content", bytes_text=joined, content=content)
    return {"tokens": [lp["token"] for lp in lps]}


@check(WIRE)
def openai_async(t):
    """AsyncOpenAI: two chats at once and an async stream."""

    async def run():
        c = t.async_openai()
        async with c:
            a, b = await asyncio.gather(
                c.chat.completions.create(model="small", messages=user(QUESTION), max_tokens=8),
                c.chat.completions.create(model="small", messages=user(COLORS), max_tokens=8),
            )
            parts = []
            async for chunk in await c.chat.completions.create(
                model="small", messages=user(QUESTION), max_tokens=8, stream=True
            ):
                if chunk.choices and chunk.choices[0].delta.content:
                    parts.append(chunk.choices[0].delta.content)
        return a.choices[0].message.content, b.choices[0].message.content, "".join(parts)

    a, b, streamed = asyncio.run(run())
    expect(a and b and streamed, "an empty answer", answers=[a, b, streamed])
    return {"answers": [a, b], "streamed": streamed}


@check(WIRE)
def openai_stream(t):
    """Streamed chat with logprobs and usage: every chunk matches
    CreateChatCompletionStreamResponse, one id, role first, one finish_reason, a final usage
    chunk with no choices, `[DONE]`; the SDK's own iteration yields the same text."""
    c = t.openai()
    params = dict(
        model="small",
        messages=user(QUESTION),
        max_tokens=12,
        logprobs=True,
        top_logprobs=1,
        stream_options={"include_usage": True},
    )
    headers, chunks = raw_stream(c, "chat", **params)
    expect(chunks, "no chunks")
    expect(len({ch["id"] for ch in chunks}) == 1, "chunks carry different ids", ids=[ch["id"] for ch in chunks])
    expect(chunks[0]["choices"][0]["delta"].get("role") == "assistant", "first delta has no role", first=chunks[0])
    expect(len(finishes(chunks)) == 1, "not exactly one finish_reason", finishes=finishes(chunks))
    last = chunks[-1]
    expect(last["choices"] == [] and last.get("usage"), "no final usage chunk with empty choices", last=last)
    tokens = sum(len((ch.get("logprobs") or {}).get("content") or []) for c_ in chunks for ch in c_["choices"])
    expect(tokens == last["usage"]["completion_tokens"], "usage does not count the streamed tokens", tokens=tokens, usage=last["usage"])
    expect(headers.get("x-request-id"), "no x-request-id on the stream", headers=headers)
    raw_text = chat_text(chunks)
    sdk_text = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in c.chat.completions.create(stream=True, **params)
        if chunk.choices
    )
    expect(raw_text and raw_text == sdk_text, "the SDK's stream differs from the raw one", raw=raw_text, sdk=sdk_text)
    return {"chunks": len(chunks), "text": raw_text}


@check(WIRE)
def openai_models(t):
    """models.list matches ListModelsResponse and holds auto and the tiers; models.retrieve
    of every listed id matches Model; an unknown id is a 404 ErrorResponse."""
    c = t.openai()
    raw = c.models.with_raw_response.list()
    body = raw.http_response.json()
    expect_spec("ListModelsResponse", body, "the model list")
    ids = [m["id"] for m in body["data"]]
    expect({"auto", "small", "medium"} <= set(ids), "auto, small or medium is not listed", ids=ids)
    for model_id in ids:
        one = c.models.with_raw_response.retrieve(model_id)
        model = one.http_response.json()
        expect_spec("Model", model, f"models.retrieve({model_id!r})")
        expect(model["id"] == model_id, "models.retrieve answered another model", asked=model_id, got=model)
    status, err, _ = api_error(lambda: c.models.retrieve("no-such-model"))
    expect(status == 404, "an unknown model is not 404", status=status, body=err)
    expect_spec("ErrorResponse", err, "the 404 body")
    return {"ids": ids}


@check(WIRE)
def openai_request_id(t):
    """x-request-id on chat (whole, streamed), models and errors, and the SDK exposes it
    (`_request_id`, `with_raw_response` headers, the error's `request_id`)."""
    c = t.openai()
    raw = c.chat.completions.with_raw_response.create(model="small", messages=user(QUESTION), max_tokens=4)
    header = raw.headers.get("x-request-id")
    chat = raw.parse()
    expect(header, "no x-request-id header on chat", headers=dict(raw.headers))
    expect(chat._request_id == header, "the SDK's _request_id is not the header", sdk=chat._request_id, header=header)
    models = c.models.with_raw_response.list()
    expect(models.headers.get("x-request-id"), "no x-request-id on models", headers=dict(models.headers))
    _, _, error = api_error(lambda: c.models.retrieve("no-such-model"))
    expect(error.request_id, "no request id on an error", headers=dict(error.response.headers))
    created = c.chat.completions.create(model="small", messages=user(QUESTION), max_tokens=4)
    expect(created._request_id and created._request_id != header, "request ids are not per request",
           first=header, second=created._request_id)
    return {"chat": header, "error": error.request_id}


@check(WIRE)
def http_request_ids(t):
    """Every response carries x-request-id: probes, models, chat, 404s and 405s."""
    http = t.http()
    probes = {
        "GET /healthz": http.get(t.root + "/healthz"),
        "GET /readyz": http.get(t.root + "/readyz"),
        "GET /v1/models": http.get(t.base + "/models"),
        "GET /v1/no-such-route": http.get(t.base + "/no-such-route"),
        "GET /v1/chat/completions": http.get(t.base + "/chat/completions"),
        "POST /v1/chat/completions": http.post(
            t.base + "/chat/completions", json={"model": "small", "messages": user(QUESTION), "max_tokens": 2}
        ),
    }
    missing = {k: r.status_code for k, r in probes.items() if not r.headers.get("x-request-id")}
    expect(not missing, "responses without x-request-id", missing=missing)
    return {k: r.status_code for k, r in probes.items()}


@check(WIRE)
def http_405(t):
    """A wrong method is 405 with an Allow header and an OpenAI error body."""
    http = t.http()
    seen = {}
    for method, path, allowed in [("GET", "/chat/completions", "POST"), ("GET", "/completions", "POST"),
                                  ("POST", "/models", "GET")]:
        r = http.request(method, t.base + path, json={} if method == "POST" else None)
        where = f"{method} {path}"
        expect(r.status_code == 405, f"{where} is not 405", status=r.status_code, body=r.text[:300])
        expect(allowed in r.headers.get("allow", ""), f"{where}: 405 without Allow: {allowed}", headers=dict(r.headers))
        expect(r.headers.get("content-type", "").startswith("application/json"), f"{where}: 405 body is not JSON",
               headers=dict(r.headers), body=r.text[:300])
        expect_spec("ErrorResponse", r.json(), f"{where}'s 405 body")
        seen[where] = r.json()["error"]
    return seen


@check(WIRE)
def error_bodies(t):
    """Errors are OpenAI-shaped (ErrorResponse), with the right status and `param`."""
    http = t.http()
    chat = t.base + "/chat/completions"
    cases = [
        ("malformed JSON", http.post(chat, content=b"{not json", headers={"content-type": "application/json"}), 400, None),
        ("unknown model", http.post(chat, json={"model": "no-such-model", "messages": user("hi")}), 404, None),
        ("negative max_tokens", http.post(chat, json={"model": "small", "messages": user("hi"), "max_tokens": -1}),
         400, "max_tokens"),
        ("no messages", http.post(chat, json={"model": "small"}), 400, "messages"),
        ("completions without prompt", http.post(t.base + "/completions", json={"model": "small"}), 400, "prompt"),
    ]
    seen = {}
    for name, r, status, param in cases:
        expect(r.status_code == status, f"{name}: status {r.status_code}, expected {status}", body=r.text[:300])
        try:
            body = r.json()
        except ValueError as e:
            raise Fail(f"{name}: the error body is not JSON", body=r.text[:300]) from e
        expect_spec("ErrorResponse", body, f"{name}'s error body")
        if param:
            expect(body["error"]["param"] == param, f"{name}: param is not {param!r}", body=body)
        seen[name] = body["error"]
    return seen


@check(WIRE)
def completions_shapes(t):
    """Completions, whole (with logprobs) and streamed: each body and chunk matches
    CreateCompletionResponse, and both give the same text."""
    c = t.openai()
    params = dict(model="small", prompt="The capital of France is", max_tokens=6)
    raw = c.completions.with_raw_response.create(logprobs=1, **params)
    body = raw.http_response.json()
    expect_spec("CreateCompletionResponse", body, "the completion")
    expect(body["object"] == "text_completion", "object is not text_completion", body=body)
    _, chunks = raw_stream(c, "completions", **params)
    streamed = "".join(ch["text"] for c_ in chunks for ch in c_["choices"])
    text = body["choices"][0]["text"]
    expect(text == streamed, "streamed text differs from the whole one", whole=text, streamed=streamed)
    return {"text": text, "chunks": len(chunks)}


@check(WIRE)
def langchain_invoke(t):
    """langchain-openai ChatOpenAI.invoke."""
    reply = t.langchain("small", max_tokens=16).invoke(QUESTION)
    expect(reply.content, "empty content", reply=repr(reply))
    return {"content": reply.content, "usage": reply.usage_metadata}


@check(WIRE)
def langchain_stream(t):
    """ChatOpenAI.stream yields several chunks that add up to the answer."""
    parts = [chunk.content for chunk in t.langchain("small", max_tokens=16).stream(QUESTION)]
    text = "".join(p for p in parts if isinstance(p, str))
    expect(len([p for p in parts if p]) >= 2 and text, "fewer than two non-empty chunks", parts=parts)
    return {"chunks": len(parts), "text": text}


@check(WIRE)
def litellm_completion(t):
    """litellm.completion through its `openai/` provider with api_base."""
    import litellm

    litellm.suppress_debug_info = True
    r = litellm.completion(
        model="openai/small", api_base=t.base, api_key="unused", messages=user(QUESTION), max_tokens=16,
        timeout=TIMEOUT, num_retries=0,
    )
    content = r.choices[0].message.content
    expect(content, "empty content", response=r.model_dump())
    return {"content": content, "usage": dict(r.usage)}


@check(WIRE)
def litellm_stream(t):
    """litellm.completion(stream=True)."""
    import litellm

    litellm.suppress_debug_info = True
    parts = [
        chunk.choices[0].delta.content or ""
        for chunk in litellm.completion(
            model="openai/small", api_base=t.base, api_key="unused", messages=user(QUESTION), max_tokens=16,
            stream=True, timeout=TIMEOUT, num_retries=0,
        )
        if chunk.choices
    ]
    expect("".join(parts), "empty stream", parts=parts)
    return {"chunks": len(parts), "text": "".join(parts)}


# -- model behaviour: the tokenizer


@check(MODEL)
def completions_leading_space(t):
    """A completion keeps its first token's leading space, whole and streamed."""
    c = t.openai()
    params = dict(model="small", prompt="The capital of France is", max_tokens=3)
    text = c.completions.create(**params).choices[0].text
    expect(text.startswith(" "), "the completion lost its leading space", text=text)
    _, chunks = raw_stream(c, "completions", **params)
    streamed = "".join(ch["text"] for c_ in chunks for ch in c_["choices"])
    expect(streamed == text, "the streamed completion differs", whole=text, streamed=streamed)
    return {"text": text}


@check(MODEL)
def stop_chat_newline(t):
    """stop ["\\n"]: the text ends before the first newline and finish_reason is stop."""
    c = t.openai()
    free = c.chat.completions.create(model="small", messages=user(COLORS), max_tokens=12).choices[0]
    stopped = c.chat.completions.create(model="small", messages=user(COLORS), max_tokens=12, stop=["\n"]).choices[0]
    text = stopped.message.content or ""
    expect("\n" not in text, "a newline past the stop string", text=text)
    if "\n" in free.message.content:
        expected = free.message.content.split("\n")[0]
        expect(text == expected, "not the text before the first newline", text=text, expected=expected)
        expect(stopped.finish_reason == "stop", "finish_reason is not stop", finish_reason=stopped.finish_reason)
    return {"without_stop": free.message.content, "with_stop": text, "finish_reason": stopped.finish_reason}


_free_run = {}


def free_chat_with_tokens(t):
    """The greedy answer to COLORS with its tokens, and a stop string whose first occurrence
    ends inside a token (not the first or last token); cached across the stop checks."""
    if "value" not in _free_run:
        body = t.openai().chat.completions.with_raw_response.create(
            model="small", messages=user(COLORS), max_tokens=16, logprobs=True
        ).http_response.json()
        content = body["choices"][0]["message"]["content"]
        tokens = [lp["token"] for lp in body["choices"][0]["logprobs"]["content"]]
        expect("".join(tokens) == content, "the tokens do not spell the content", tokens=tokens, content=content)
        bounds, at = set(), 0
        for tok in tokens:
            at += len(tok)
            bounds.add(at)
        stop = None
        for i, tok in enumerate(tokens[1:-1], start=1):
            for cut in range(2, len(tok)):
                candidate = tok[:cut]
                if not candidate.strip():
                    continue
                start = content.find(candidate)
                if start > 0 and start + len(candidate) not in bounds:
                    stop = candidate
                    break
            if stop:
                break
        expect(stop, "no token long enough to cut a stop string inside it", tokens=tokens)
        _free_run["value"] = (content, tokens, stop)
    return _free_run["value"]


@check(MODEL)
def stop_chat_inside_token(t):
    """A stop string that ends inside a token: the text ends right before it."""
    content, tokens, stop = free_chat_with_tokens(t)
    expected = content[: content.find(stop)]
    choice = t.openai().chat.completions.create(model="small", messages=user(COLORS), max_tokens=16, stop=[stop]).choices[0]
    text = choice.message.content or ""
    expect(text == expected, "not the text before the stop string", stop=stop, text=text, expected=expected, tokens=tokens)
    expect(choice.finish_reason == "stop", "finish_reason is not stop", finish_reason=choice.finish_reason)
    return {"stop": stop, "text": text}


@check(MODEL)
def stop_chat_streamed(t):
    """The same stop string, streamed: no chunk carries text past it."""
    content, tokens, stop = free_chat_with_tokens(t)
    expected = content[: content.find(stop)]
    _, chunks = raw_stream(t.openai(), "chat", model="small", messages=user(COLORS), max_tokens=16, stop=[stop])
    text = chat_text(chunks)
    expect(text == expected, "streamed text past or short of the stop string", stop=stop, text=text, expected=expected)
    expect(finishes(chunks) == ["stop"], "finish_reason is not one stop", finishes=finishes(chunks))
    return {"stop": stop, "text": text}


@check(MODEL)
def stop_completions(t):
    """Completions with a stop string cut inside a word, whole and streamed."""
    c = t.openai()
    params = dict(model="small", prompt="The three primary colors are", max_tokens=16)
    free = c.completions.create(**params).choices[0].text
    words = [w for w in free.split() if len(w) >= 4]
    expect(words, "no word long enough to cut", text=free)
    stop = words[0][1:3]
    expected = free[: free.find(stop)]
    choice = c.completions.create(stop=[stop], **params).choices[0]
    expect(choice.text == expected, "not the text before the stop string", stop=stop, text=choice.text, expected=expected)
    expect(choice.finish_reason == "stop", "finish_reason is not stop", finish_reason=choice.finish_reason)
    _, chunks = raw_stream(c, "completions", stop=[stop], **params)
    streamed = "".join(ch["text"] for c_ in chunks for ch in c_["choices"])
    expect(streamed == expected, "streamed text past or short of the stop string", stop=stop, text=streamed,
           expected=expected)
    return {"stop": stop, "text": choice.text}


# -- model behaviour: tools and structured output (medium: Qwen2.5-Coder-0.5B)


def expect_tool_calls(body, tools, what):
    """The response asks for tool calls whose arguments fit, and the spec accepts it (checked
    last, so that a missing call is what a failure reports first)."""
    choice = body["choices"][0]
    calls = choice["message"].get("tool_calls") or []
    expect(calls, f"{what}: no tool_calls", message=choice["message"], finish_reason=choice["finish_reason"])
    expect(choice["finish_reason"] == "tool_calls", f"{what}: finish_reason is not tool_calls",
           finish_reason=choice["finish_reason"])
    out = []
    for call in calls:
        expect(call.get("id") and call.get("type") == "function", f"{what}: a call without id or type function", call=call)
        out.append((call["function"]["name"], expect_args_match(call["function"]["name"], call["function"]["arguments"], tools)))
    expect_spec("CreateChatCompletionResponse", body, what)
    return out


def chat_raw(t, **params):
    raw = t.openai().chat.completions.with_raw_response.create(**params)
    return raw.headers, raw.http_response.json()


@check(MODEL)
def tools_named(t):
    """tool_choice naming a function: one call of it, arguments fit, finish_reason tool_calls."""
    _, body = chat_raw(
        t, model="medium", messages=user("What is the weather like in Paris right now?"), tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=64,
    )
    calls = expect_tool_calls(body, TOOLS, "named tool_choice")
    expect([n for n, _ in calls] == ["get_weather"], "not one call of get_weather", calls=calls)
    expect("paris" in calls[0][1]["city"].lower(), "the city is not Paris", calls=calls)
    return {"calls": calls}


@check(MODEL)
def tools_required(t):
    """tool_choice required: at least one call of a listed tool."""
    _, body = chat_raw(
        t, model="medium", messages=user("What time is it in Tokyo?"), tools=TOOLS, tool_choice="required",
        parallel_tool_calls=False, max_tokens=64,
    )
    return {"calls": expect_tool_calls(body, TOOLS, "tool_choice required")}


@check(MODEL)
def tools_auto(t):
    """tool_choice auto (the default) on a question only a tool can answer: a call (greedy,
    so the model's choice between prose and a call is the same every run)."""
    _, body = chat_raw(
        t, model="medium", messages=user("What is the weather like in Paris right now? Use the tool."), tools=TOOLS,
        parallel_tool_calls=False, max_tokens=64, temperature=0,
    )
    return {"calls": expect_tool_calls(body, TOOLS, "tool_choice auto")}


@check(MODEL)
def tools_none(t):
    """tool_choice none: text, no tool calls."""
    _, body = chat_raw(
        t, model="medium", messages=user("Say hello in one short sentence."), tools=TOOLS, tool_choice="none",
        max_tokens=24,
    )
    choice = body["choices"][0]
    expect(not choice["message"].get("tool_calls"), "tool calls despite tool_choice none", message=choice["message"])
    expect(choice["message"]["content"], "no content", message=choice["message"])
    expect(choice["finish_reason"] in ("stop", "length"), "finish_reason", finish_reason=choice["finish_reason"])
    expect_spec("CreateChatCompletionResponse", body, "tool_choice none")
    return {"content": choice["message"]["content"]}


@check(MODEL)
def tools_streamed(t):
    """A streamed tool call: delta.tool_calls chunks (spec-valid) that assemble into a call
    whose arguments fit; finish_reason tool_calls."""
    _, chunks = raw_stream(
        t.openai(), "chat", model="medium", messages=user("What is the weather like in Paris right now?"),
        tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=64,
    )
    calls = {}
    for c in chunks:
        for ch in c["choices"]:
            for d in ch["delta"].get("tool_calls") or []:
                call = calls.setdefault(d["index"], {"id": None, "name": "", "arguments": ""})
                call["id"] = call["id"] or d.get("id")
                fn = d.get("function") or {}
                call["name"] += fn.get("name") or ""
                call["arguments"] += fn.get("arguments") or ""
    expect(calls, "no delta.tool_calls in the stream", chunks=chunks[:5])
    expect(finishes(chunks) == ["tool_calls"], "finish_reason is not one tool_calls", finishes=finishes(chunks))
    for call in calls.values():
        expect(call["id"], "a streamed call without id", call=call)
        expect_args_match(call["name"], call["arguments"], TOOLS)
    return {"calls": list(calls.values())}


@check(MODEL)
def tools_history(t):
    """A tool call and its result sent back (assistant tool_calls, then role tool with
    tool_call_id): the answer uses the result."""
    messages = user("What is the weather like in Paris right now?") + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature_c": 21, "sky": "sunny"}'},
    ]
    _, body = chat_raw(t, model="medium", messages=messages, tools=TOOLS, max_tokens=48)
    expect(body.get("choices"), "no answer after a tool result", body=body)
    content = body["choices"][0]["message"]["content"] or ""
    expect("21" in content, "the answer does not use the tool's result (21)", content=content)
    expect_spec("CreateChatCompletionResponse", body, "the answer after a tool result")
    return {"content": content}


@check(MODEL)
def auto_with_tools_avoids_small(t):
    """model auto with tools never lands on small (which has no tool support)."""
    headers, body = chat_raw(
        t, model="auto", messages=user("What is the weather like in Paris right now?"), tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=64,
    )
    tier = headers.get("x-switchback-tier")
    expect(tier and tier != "small", "auto with tools answered on small", tier=tier)
    expect_tool_calls(body, TOOLS, "auto with tools")
    return {"tier": tier}


@check(MODEL)
def small_rejects_tools(t):
    """tools to small: 400 whose error names `tools`."""
    c = t.openai()
    status, body, _ = api_error(lambda: c.chat.completions.create(
        model="small", messages=user("What is the weather in Paris?"), tools=TOOLS, max_tokens=16))
    expect(status == 400, "not 400", status=status, body=body)
    expect_spec("ErrorResponse", body, "the 400 body")
    expect(body["error"]["param"] == "tools", "param does not name tools", body=body)
    return body["error"]


@check(MODEL)
def small_answers_json_under_constraint(t):
    """response_format json_object to small: SmolLM2 cannot call tools, but any model's output
    can be constrained, so the answer is a JSON object."""
    _, body = chat_raw(
        t, model="small", max_tokens=48, response_format={"type": "json_object"},
        messages=user("A JSON object with a greeting, please."),
    )
    content = body["choices"][0]["message"]["content"]
    if body["choices"][0]["finish_reason"] == "stop":
        expect(isinstance(json.loads(content), dict), "not a JSON object", content=content)
    else:
        expect(content.lstrip().startswith("{"), "not the start of a JSON object", content=content)
    return {"content": content}


@check(MODEL)
def response_format_json_object(t):
    """response_format json_object: the content is a JSON object."""
    _, body = chat_raw(
        t, model="medium", max_tokens=64, response_format={"type": "json_object"},
        messages=user("Describe a cat named Tom who is 3 years old as a JSON object with keys name and age."),
    )
    content = body["choices"][0]["message"]["content"]
    try:
        value = json.loads(content)
    except (TypeError, ValueError) as e:
        raise Fail("the content is not JSON", content=content, finish_reason=body["choices"][0]["finish_reason"]) from e
    expect(isinstance(value, dict), "the content is JSON but not an object", content=content)
    expect_spec("CreateChatCompletionResponse", body, "the json_object answer")
    return {"content": value}


@check(MODEL)
def response_format_json_schema(t):
    """response_format json_schema, strict: the content validates against the schema."""
    _, body = chat_raw(
        t, model="medium", max_tokens=64, messages=user(f"Extract the person: {PERSON_TEXT}"),
        response_format={"type": "json_schema",
                         "json_schema": {"name": "person", "schema": PERSON_SCHEMA, "strict": True}},
    )
    content = body["choices"][0]["message"]["content"]
    try:
        value = json.loads(content)
    except (TypeError, ValueError) as e:
        raise Fail("the content is not JSON", content=content, finish_reason=body["choices"][0]["finish_reason"]) from e
    errors = [e.message for e in jsonschema.Draft202012Validator(PERSON_SCHEMA).iter_errors(value)]
    expect(not errors, "the content does not fit the schema", content=value, errors=errors)
    expect_spec("CreateChatCompletionResponse", body, "the json_schema answer")
    return {"content": value}


@check(MODEL)
def openai_parse_pydantic(t):
    """The SDK's structured-output helper, chat.completions.parse(response_format=Person)."""
    completion = t.openai().chat.completions.parse(
        model="medium", messages=user(f"Extract the person: {PERSON_TEXT}"), response_format=Person, max_tokens=64
    )
    parsed = completion.choices[0].message.parsed
    expect(isinstance(parsed, Person), "nothing parsed", message=completion.choices[0].message.model_dump())
    return parsed.model_dump()


@check(MODEL)
def langchain_bind_tools(t):
    """ChatOpenAI.bind_tools with a pydantic tool, named in tool_choice."""
    reply = t.langchain("medium", max_tokens=64).bind_tools([GetWeather], tool_choice="GetWeather").invoke(
        "What is the weather like in Paris right now?"
    )
    calls = reply.tool_calls
    expect(calls and calls[0]["name"] == "GetWeather", "no GetWeather call", reply=repr(reply))
    expect(isinstance(calls[0]["args"].get("city"), str), "no city argument", calls=calls)
    return {"calls": calls}


def langchain_structured(t, method):
    runnable = t.langchain("medium", max_tokens=64).with_structured_output(Person, method=method, include_raw=True)
    prompt = f"Extract the person: {PERSON_TEXT}"
    if method == "json_mode":
        prompt += ' Answer with a JSON object with keys "name" (a string) and "age" (an integer).'
    out = runnable.invoke(prompt)
    expect(isinstance(out["parsed"], Person), f"with_structured_output(method={method!r}) parsed nothing",
           parsing_error=repr(out["parsing_error"]), raw=repr(out["raw"]))
    return out["parsed"].model_dump()


@check(MODEL)
def langchain_structured_function_calling(t):
    """with_structured_output(method="function_calling"): a forced tool call."""
    return langchain_structured(t, "function_calling")


@check(MODEL)
def langchain_structured_json_mode(t):
    """with_structured_output(method="json_mode"): response_format json_object."""
    return langchain_structured(t, "json_mode")


@check(MODEL)
def langchain_structured_json_schema(t):
    """with_structured_output(method="json_schema"): response_format json_schema."""
    return langchain_structured(t, "json_schema")


@check(MODEL)
def litellm_tools(t):
    """litellm.completion with tools and a named tool_choice."""
    import litellm

    litellm.suppress_debug_info = True
    r = litellm.completion(
        model="openai/medium", api_base=t.base, api_key="unused", max_tokens=64, timeout=TIMEOUT, num_retries=0,
        messages=user("What is the weather like in Paris right now?"), tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    calls = r.choices[0].message.tool_calls or []
    expect(calls and calls[0].function.name == "get_weather", "no get_weather call", message=r.choices[0].message.model_dump())
    return {"arguments": expect_args_match("get_weather", calls[0].function.arguments, TOOLS)}


def instructor_person(t, mode):
    import instructor

    client = instructor.from_openai(t.openai(), mode=mode)
    person = client.chat.completions.create(
        model="medium", response_model=Person, max_tokens=64, max_retries=0,
        messages=user(f"Extract the person: {PERSON_TEXT}"),
    )
    expect(isinstance(person, Person), "no Person", got=repr(person))
    return person.model_dump()


@check(MODEL)
def instructor_tools(t):
    """instructor, Mode.TOOLS: a Person from a forced tool call."""
    import instructor

    return instructor_person(t, instructor.Mode.TOOLS)


@check(MODEL)
def instructor_json(t):
    """instructor, Mode.JSON: a Person from response_format json_object."""
    import instructor

    return instructor_person(t, instructor.Mode.JSON)


# ---------------------------------------------------------------- the runner


def run(name, fn, base):
    t = Trace(base)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # libraries that print keep stdout JSON
            return {"ok": True, "detail": fn(t)}
    except Exception as e:  # noqa: BLE001 - a check's failure, whatever raised it
        detail = {"error": f"{type(e).__name__}: {e}"[:2000]}
        detail.update(getattr(e, "detail", {}))
        if not isinstance(e, Fail):
            detail["where"] = traceback.format_exc(limit=-3)[-1500:]
        detail["requests"] = t.requests[-4:]
        return {"ok": False, "detail": detail}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("base_url")
    parser.add_argument("--kind", choices=[WIRE, MODEL])
    parser.add_argument("checks", nargs="*", metavar="CHECK", help=f"any of: {', '.join(CHECKS)}")
    args = parser.parse_args()
    unknown = [n for n in args.checks if n not in CHECKS]
    if unknown:
        parser.error(f"unknown checks {unknown}")
    names = args.checks or [n for n, (kind, _) in CHECKS.items() if args.kind in (None, kind)]
    report = {}
    for name in names:
        report[name] = run(name, CHECKS[name][1], args.base_url.rstrip("/"))
        print(f"{name}: {'ok' if report[name]['ok'] else 'FAILED'}", file=sys.stderr, flush=True)
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
