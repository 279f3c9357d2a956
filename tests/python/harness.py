"""What clients.py's checks share: expectations that fail with a detail, validation against
the pinned OpenAPI schemas (openapi/schemas.json), clients of each library whose requests are
recorded, and reading SSE streams.
"""
import copy
import json
from pathlib import Path

import httpx
import jsonschema
import openai

TIMEOUT = 180.0


class Fail(Exception):
    """A check's expectation not met; `detail` says what came back."""

    def __init__(self, message, /, **detail):
        super().__init__(message)
        self.detail = detail


def expect(condition, message, /, **detail):
    if not condition:
        raise Fail(message, **detail)


# ---------------------------------------------------------------- the spec's schemas

SCHEMAS = json.loads((Path(__file__).with_name("openapi") / "schemas.json").read_text())
_validators = {}


def _completion_chunk(defs):
    """The spec has streamed completions share CreateCompletionResponse's shape, whose
    finish_reason is never null; OpenAI's streams (like its chat chunks) carry null until the
    last chunk. This schema is CreateCompletionResponse with that one difference."""
    schema = copy.deepcopy(defs["CreateCompletionResponse"])
    finish = schema["properties"]["choices"]["items"]["properties"]["finish_reason"]
    finish["type"] = [finish["type"], "null"]
    finish["enum"] = finish["enum"] + [None]
    return schema


SCHEMAS["$defs"]["CreateCompletionStreamChunk"] = _completion_chunk(SCHEMAS["$defs"])


def spec_errors(name, body):
    """Where `body` breaks the spec's schema `name`, one line per error."""
    if name not in _validators:
        _validators[name] = jsonschema.Draft202012Validator(
            {"$ref": f"#/$defs/{name}", "$defs": SCHEMAS["$defs"]}
        )
    out = []
    for e in _validators[name].iter_errors(body):
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        why = e.message
        if e.context:
            why += " (" + jsonschema.exceptions.best_match(e.context).message + ")"
        out.append(f"{where}: {why}"[:400])
    return out


def expect_spec(name, body, what):
    errors = spec_errors(name, body)
    expect(not errors, f"{what} does not match the spec's {name}", errors=errors[:8], body=body)


def expect_args_match(call_name, arguments, tools):
    """A tool call's `arguments` string parses as JSON and fits the named tool's parameters."""
    tool = next((t for t in tools if t["function"]["name"] == call_name), None)
    expect(tool is not None, f"tool call names {call_name!r}, not one of the request's tools")
    try:
        args = json.loads(arguments)
    except (TypeError, ValueError) as e:
        raise Fail(f"arguments of {call_name} are not JSON: {e}", arguments=arguments) from e
    errors = [e.message for e in jsonschema.Draft202012Validator(tool["function"]["parameters"]).iter_errors(args)]
    expect(not errors, f"arguments of {call_name} do not fit its parameters", arguments=args, errors=errors)
    return args


# ---------------------------------------------------------------- clients and capture


class Trace:
    """The requests one check's libraries sent (method, URL, JSON body, status), through
    httpx event hooks on the HTTP client handed to each library."""

    def __init__(self, base):
        self.base = base
        self.root = base[: -len("/v1")] if base.endswith("/v1") else base
        self.requests = []
        self._open = {}

    def _on_request(self, request):
        try:
            body = json.loads(request.content) if request.content else None
        except (ValueError, httpx.RequestNotRead):
            body = "<not JSON>"
        entry = {"method": request.method, "url": str(request.url), "body": body}
        self._open[id(request)] = entry
        self.requests.append(entry)

    def _on_response(self, response):
        entry = self._open.pop(id(response.request), None)
        if entry is not None:
            entry["status"] = response.status_code

    async def _on_request_async(self, request):
        self._on_request(request)

    async def _on_response_async(self, response):
        self._on_response(response)

    def hooks(self):
        return {"request": [self._on_request], "response": [self._on_response]}

    def async_hooks(self):
        return {"request": [self._on_request_async], "response": [self._on_response_async]}

    def http(self):
        return httpx.Client(timeout=TIMEOUT, event_hooks=self.hooks())

    def openai(self):
        return openai.OpenAI(
            base_url=self.base,
            api_key="unused",
            max_retries=0,
            timeout=TIMEOUT,
            http_client=openai.DefaultHttpxClient(event_hooks=self.hooks()),
        )

    def async_openai(self):
        return openai.AsyncOpenAI(
            base_url=self.base,
            api_key="unused",
            max_retries=0,
            timeout=TIMEOUT,
            http_client=openai.DefaultAsyncHttpxClient(event_hooks=self.async_hooks()),
        )

    def langchain(self, model, **kwargs):
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(
            model=model,
            base_url=self.base,
            api_key="unused",
            temperature=0,
            max_retries=0,
            timeout=TIMEOUT,
            http_client=httpx.Client(timeout=TIMEOUT, event_hooks=self.hooks()),
            http_async_client=httpx.AsyncClient(timeout=TIMEOUT, event_hooks=self.async_hooks()),
            **kwargs,
        )


def user(text):
    return [{"role": "user", "content": text}]


def sse_data(lines):
    """The `data:` payloads of an SSE body, in order."""
    return [line[len("data:"):].strip() for line in lines if line.startswith("data:")]


def stream_chunks(events, schema, what):
    """Streamed chunks: the last event is `[DONE]`, every other one a JSON object that
    matches `schema`."""
    expect(events and events[-1] == "[DONE]", f"{what} does not end with data: [DONE]", last=events[-1:])
    chunks = []
    for i, event in enumerate(events[:-1]):
        try:
            chunk = json.loads(event)
        except ValueError as e:
            raise Fail(f"{what}: event {i} is not JSON", event=event) from e
        expect_spec(schema, chunk, f"{what}: chunk {i}")
        chunks.append(chunk)
    return chunks


def raw_stream(c, endpoint, **params):
    """(status, headers, chunks) of a streamed request sent by the SDK, from its raw SSE."""
    create = c.chat.completions if endpoint == "chat" else c.completions
    schema = "CreateChatCompletionStreamResponse" if endpoint == "chat" else "CreateCompletionStreamChunk"
    with create.with_streaming_response.create(stream=True, **params) as resp:
        lines = list(resp.iter_lines())
        headers = dict(resp.headers)
    return headers, stream_chunks(sse_data(lines), schema, f"streamed {endpoint}")


def chat_text(chunks):
    return "".join(
        (ch["delta"].get("content") or "") for c in chunks for ch in c["choices"]
    )


def finishes(chunks):
    return [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch.get("finish_reason")]


def api_error(call):
    """Runs `call`, which must fail with an HTTP error from the SDK; returns (status, JSON
    body, the SDK's exception)."""
    try:
        call()
    except openai.APIStatusError as e:
        return e.status_code, e.response.json(), e
    raise Fail("the request succeeded; expected an error")
