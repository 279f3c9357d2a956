"""Drives a Switchback router with the official `openai` Python client.

Usage: openai_client.py BASE_URL   (e.g. http://127.0.0.1:8080/v1)
Prints one JSON object with what it saw; exits non-zero on any client error.
"""
import json
import sys

from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=0, timeout=240)
question = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]

models = [m.id for m in client.models.list()]
# `models.retrieve` puts the id in the path as it is (ids may hold `/`).
retrieved = [client.models.retrieve(m).id for m in models]

raw = client.chat.completions.with_raw_response.create(model="small", messages=question, max_tokens=24)
chat = raw.parse()

chunks = 0
streamed = []
for chunk in client.chat.completions.create(model="small", messages=question, max_tokens=24, stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        chunks += 1
        streamed.append(chunk.choices[0].delta.content)

print(json.dumps({
    "models": models,
    "retrieved": retrieved,
    "request_id": raw.headers.get("x-request-id"),
    "chat_id": chat.id,
    "refusal": chat.choices[0].message.refusal,
    "chat": chat.choices[0].message.content,
    "tier": raw.headers.get("x-switchback-tier"),
    "usage": chat.usage.total_tokens,
    "stream_chunks": chunks,
    "stream": "".join(streamed),
}))
