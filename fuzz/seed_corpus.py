#!/usr/bin/env python3
"""fuzz/seed_corpus.py: (re)writes the committed seed corpora under fuzz/corpus/ from real
inputs in the repository: the shipped configs (deploy/local/config, deploy/compose, the
Helm chart's rendered ConfigMaps when the chart venv of helm/tests exists), the policy
documented in README.md and set by the tests, request bodies the tests send, the records
and drain marks the binaries write to etcd, and the protobuf messages the controller
sends. Run it after changing one of those; fuzz/run.sh only reads the result.

Seed files are named by the SHA-1 of their content, as libFuzzer names the inputs it adds.
"""

import hashlib
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent


def write(target: str, data: bytes | str) -> None:
    if isinstance(data, str):
        data = data.encode()
    d = FUZZ / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


# --- configs ------------------------------------------------------------------------------

def configs() -> list[str]:
    texts = []
    for d in ["deploy/local/config", "deploy/compose"]:
        texts += [p.read_text() for p in sorted((ROOT / d).glob("*.yaml"))]
    texts += helm_configs()
    texts += [
        "",
        "tier: small\nmodel: m\nengine: {kind: sim}\n",
        "tier: s\nmodel: m\nengine: {kind: mistralrs, model_path: /m.gguf, device: 'cuda:1', dtype: bf16}\n",
        "etcd: {lease_ttl_s: 0}",
        "tiers: [a, b]\ndefault_tier: c",
        "stale_after_ms: 100\netcd: {endpoints: ['https://10.0.0.1:2379/'], prefix: /x/}\n",
    ]
    return texts


def helm_configs() -> list[str]:
    """The config files the chart renders into its ConfigMaps, for its default values and
    its examples. Needs the venv helm/tests/venv.sh makes; skipped without it."""
    venv_python = Path.home() / ".cache/switchback/helm-venv/bin/python"
    if not venv_python.exists():
        print("seed_corpus: no helm venv; skipping the chart's rendered configs", file=sys.stderr)
        return []
    try:
        out = subprocess.run(
            [str(venv_python), str(FUZZ / "render_helm_configs.py")],
            check=True, capture_output=True, text=True, cwd=ROOT,
        ).stdout
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        print(f"seed_corpus: helm render failed: {e}", file=sys.stderr)
        return []
    return json.loads(out)


# --- policy -------------------------------------------------------------------------------

def policies() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("**Routing policy.**", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    return [
        block,
        "{}",
        "cascade: {per_tier: {small: {min_mean_logprob: -0.8}}}",
        "cascade: {enabled: true, judge_tokens: 4, floors: {min_first_margin: 1.5, min_token_logprob: -6}}",
        "deadline_ms: 2000\ntiers: {small: {decode_ms_per_token: 5}}",
        '{"default_quality": 0.9, "cascade": {"idle_boost": 0.5}}',
        "quality_margin: 1.5",
    ]


# --- HTTP requests ------------------------------------------------------------------------

def requests() -> list[str]:
    msgs = [{"role": "user", "content": "hi"}]
    bodies = [
        {"model": "small", "messages": msgs, "max_tokens": 4},
        {"model": "auto", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4,
         "switchback": {"deadline_ms": 2000}},
        {"model": "small", "messages": [{"role": "user", "content": "What is the capital of France?"}],
         "max_tokens": 12, "stream": True, "logprobs": True, "top_logprobs": 2,
         "switchback": {"cascade": True}},
        {"model": "auto", "max_tokens": 4, "messages": msgs, "switchback": {"quality": 0.9}},
        {"model": "large", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": None},
            {"role": "tool", "content": "42"},
            {"role": "user", "content": "and?"}],
         "temperature": 0.7, "top_p": 0.9, "stop": ["\n", "END"], "seed": 7,
         "frequency_penalty": 0.5, "presence_penalty": -0.5, "n": 1,
         "stream": True, "stream_options": {"include_usage": True}, "max_completion_tokens": 9},
        {"model": "small", "prompt": "Once upon a time", "max_tokens": 5, "logprobs": 2, "stop": "."},
        {"model": "small", "prompt": ["Once"], "echo": False},
        {"messages": msgs},
        {"model": "small", "messages": msgs, "temperature": 9},
        {"model": "small", "messages": msgs, "max_tokens": "many"},
        {"model": "small", "messages": [{"role": "robot", "content": "x"}]},
        {"model": "small", "messages": msgs, "n": 3},
        {"model": "small", "prompt": ""},
    ]
    out = [json.dumps(b) for b in bodies]
    out += [
        "x-switchback-quality: 0.8\n" + json.dumps(bodies[0]),
        "x-switchback-quality:  1 \n" + json.dumps(bodies[5]),
        "x-switchback-quality: 2\n" + json.dumps(bodies[0]),
        "{not json",
        "[1,2]",
    ]
    return out


# --- etcd values --------------------------------------------------------------------------

RECORD = {
    "id": "w1", "address": "10.0.0.1:50051", "node": "gpu-a", "tier": "small",
    "model": "smollm2-135m", "engine": "mistralrs", "accelerator": "cpu",
    "max_concurrency": 4, "max_queue": 8, "cost_per_mtok_input": 0.1,
    "cost_per_mtok_output": 0.2, "version": "0.1.0", "started_at_unix_ms": 1763840000000,
}


def etcd_values() -> list[str]:
    older = {k: v for k, v in RECORD.items() if k != "max_queue"}
    newer = dict(RECORD, added_in_a_later_version=1)
    return [
        json.dumps(RECORD, separators=(",", ":")),
        json.dumps(older),
        json.dumps(newer),
        json.dumps(dict(RECORD, address="")),
        json.dumps({"reason": "kernel upgrade", "at_unix_ms": 1763840000000}),
        json.dumps({"reason": "", "at_unix_ms": 0}),
        "/switchback/v1/workers/w1",
        "/switchback/v1/drain/w1",
        "/switchback/v1/policy",
        "/p/workers/a/b",
        "w-small-0",
    ]


# --- protobuf -----------------------------------------------------------------------------

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num: int, value) -> bytes:
    if isinstance(value, bool):
        return varint(num << 3) + varint(int(value))
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    if isinstance(value, tuple) and value[0] == "f32":
        return varint(num << 3 | 5) + struct.pack("<f", value[1])
    if isinstance(value, tuple) and value[0] == "f64":
        return varint(num << 3 | 1) + struct.pack("<d", value[1])
    if isinstance(value, str):
        value = value.encode()
    return varint(num << 3 | 2) + varint(len(value)) + value


def load_report(worker: str, running: int, waiting: int, capacity: int, draining=False) -> bytes:
    return (field(1, worker) + field(2, running) + field(3, waiting) + field(4, capacity)
            + field(5, ("f32", 42.5)) + field(6, ("f32", 120.0)) + field(7, ("f32", 0.3))
            + (field(8, True) if draining else b""))


def worker_info(r: dict) -> bytes:
    return (field(1, r["id"]) + field(2, r["address"]) + field(3, r["node"]) + field(4, r["tier"])
            + field(5, r["model"]) + field(6, r["engine"]) + field(7, r["accelerator"])
            + field(8, r["max_concurrency"]) + field(9, ("f64", r["cost_per_mtok_input"]))
            + field(10, ("f64", r["cost_per_mtok_output"])) + field(11, r["version"])
            + field(12, r["started_at_unix_ms"]) + field(13, r["max_queue"]))


def worker_state(r: dict, load: bytes | None, health: int) -> bytes:
    out = field(1, worker_info(r))
    if load is not None:
        out += field(2, load)
    return out + field(3, health) + field(4, 120) + field(5, "reporting load")


def grpc_messages() -> list[bytes]:
    small = dict(RECORD)
    small2 = dict(RECORD, id="w2", address="10.0.0.2:50051", node="gpu-b")
    large = dict(RECORD, id="w3", tier="large", model="smollm2-1.7b", cost_per_mtok_input=1.0)
    view = (field(1, worker_state(small, load_report("w1", 2, 1, 4), 1))
            + field(1, worker_state(small2, load_report("w2", 0, 0, 4), 1))
            + field(1, worker_state(large, None, 2))
            + field(2, "controller-a"))
    return [
        field(1, view),                                                  # ClusterEvent snapshot
        field(2, worker_state(large, load_report("w3", 1, 0, 2), 1)),   # upsert
        field(3, "w2"),                                                  # removed
        field(4, load_report("w1", 4, 3, 4)),                            # load
        load_report("w1", 1, 0, 4),                                      # a LoadReport itself
        load_report("w2", 0, 0, 4, draining=True),
    ]


def api_keys() -> list[str]:
    """Keys files: the shapes the docs and the auth test use, and near misses."""
    h = hashlib.sha256(b"sb-test").hexdigest()
    g = hashlib.sha256(b"sb-other").hexdigest()
    return [
        "keys: []\n",
        f"keys:\n  - {{id: full, sha256: {h}}}\n",
        f"keys:\n  - id: team-a\n    sha256: {h}\n    tiers: [small, medium]\n    models: [smollm2-135m]\n"
        f"    max_tier: small\n    requests_per_minute: 60\n    tokens_per_minute: 50000\n    default_quality: 0.8\n",
        f"keys:\n  - {{id: a, sha256: {h}, max_tier: large}}\n  - {{id: b, sha256: {g}, tiers: [large]}}\n",
        f"keys:\n  - {{id: a, sha256: {h}}}\n  - {{id: a, sha256: {g}}}\n",
        f"keys:\n  - {{id: a, sha256: {h}, tiers: [small, large]}}\n",
        f"keys:\n  - {{id: a, sha256: {h[:63]}}}\n",
        f"keys:\n  - {{id: 'a b', sha256: {h}, requests_per_minute: 0}}\n",
    ]


def main() -> None:
    for text in api_keys():
        write("api_keys", text)
    for text in configs():
        write("config", text)
    for text in policies():
        write("policy", text)
    for text in requests():
        write("http_request", text)
    for text in etcd_values():
        write("etcd_values", text)
    for data in grpc_messages():
        write("grpc_messages", data)
    for t in sorted((FUZZ / "corpus").iterdir()):
        print(f"{t.name}: {len(list(t.iterdir()))} seeds")


if __name__ == "__main__":
    main()
