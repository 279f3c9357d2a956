#!/usr/bin/env python3
"""check.py: the workspace's layout rules, checked on the source (run by tests/run.sh).

1. No product source file over 600 lines (test-only files, `tests.rs` and `tests/`
   folders, are not product files).
2. No import circles between the top-level modules of a crate: a module's `crate::`
   paths are its edges (the crate root, which wires the modules together, is left out).
3. The serving crate's request path points one way: `pipeline` stages never import the
   HTTP shell (`http`), and `auth` imports nothing of HTTP (`http`, `axum`).
4. The routing core stays pure: `switchback-routing` depends on none of the I/O and
   model crates (tokio, axum, hyper, tonic, reqwest, etcd-client, candle-core).

Prints every violation and exits 1 if there is one; prints the module graph of each
crate with --graph.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 600
CRATES = {
    "proto": "proto/src",
    "common": "common/src",
    "worker": "worker/src",
    "controller": "controller/src",
    "router": "router-plane/src",
    "routing": "router-plane/routing/src",
    "lab": "router-plane/lab/src",
}
# (crate, module that must not import, forbidden targets); a target is a top-level module
# of the same crate or an external crate name.
ONE_WAY = [
    ("router", "pipeline", {"http", "axum"}),
    ("router", "auth", {"http", "axum"}),
]
IMPURE = {"tokio", "axum", "hyper", "tonic", "reqwest", "etcd-client", "candle-core"}


def product_files(src: Path):
    for f in sorted(src.rglob("*.rs")):
        rel = f.relative_to(src)
        if f.name == "tests.rs" or "tests" in rel.parts[:-1]:
            continue
        yield f


def module_of(src: Path, f: Path) -> str | None:
    rel = f.relative_to(src)
    if len(rel.parts) == 1 and rel.stem in ("lib", "main"):
        return None
    if rel.parts[0] == "bin":
        return None
    return rel.parts[0].removesuffix(".rs")


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def expand(tree: str) -> list[str]:
    """`a::{b, c::{d, e}}` -> [`a::b`, `a::c::d`, `a::c::e`]."""
    tree = tree.replace(" ", "").replace("\n", "")
    depth, start = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                head, inner, tail = tree[:start], tree[start + 1 : i], tree[i + 1 :]
                parts, d, cur = [], 0, ""
                for c in inner:
                    if c == "," and d == 0:
                        parts.append(cur)
                        cur = ""
                        continue
                    d += c == "{"
                    d -= c == "}"
                    cur += c
                parts.append(cur)
                return [p for part in parts if part for p in expand(head + part + tail)]
    return [tree]


def edges(text: str) -> set[str]:
    """Top-level crate modules and external crates this file refers to."""
    text = strip_comments(text)
    out = set()
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        for path in expand(m.group(1)):
            segs = [s for s in path.split("::") if s]
            if segs and segs[0] == "crate" and len(segs) > 1:
                out.add(segs[1])
            elif segs and segs[0] not in ("self", "super", "std", "core", "alloc"):
                out.add(segs[0])
    for m in re.finditer(r"\bcrate::([a-z_][a-z0-9_]*)", text):
        out.add(m.group(1))
    for m in re.finditer(r"(?<![:\w])(axum|tonic|tokio|candle_core|reqwest)::", text):
        out.add(m.group(1))
    return {"http" if e == "http" else e for e in out}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def routing_dependencies() -> set[str]:
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    packages = {p["id"]: p["name"] for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    start = next(i for i, name in packages.items() if name == "switchback-routing")
    seen, todo = set(), [start]
    while todo:
        node = nodes[todo.pop()]
        for dep in node["deps"]:
            if any(k["kind"] in (None, "build") for k in dep["dep_kinds"]) and dep["pkg"] not in seen:
                seen.add(dep["pkg"])
                todo.append(dep["pkg"])
    return {packages[i] for i in seen}


def main() -> int:
    problems = []
    show = "--graph" in sys.argv
    for crate, rel in CRATES.items():
        src = ROOT / rel
        if not src.is_dir():
            continue
        graph: dict[str, set[str]] = {}
        for f in product_files(src):
            text = f.read_text()
            lines = text.count("\n")
            if lines > MAX_LINES:
                problems.append(f"{f.relative_to(ROOT)}: {lines} lines (at most {MAX_LINES})")
            module = module_of(src, f)
            if module is None:
                continue
            graph.setdefault(module, set()).update(e for e in edges(text) if e != module)
        internal = {m: {e for e in es if e in graph} for m, es in graph.items()}
        for comp in cycles(internal):
            problems.append(f"{crate}: import circle between modules {', '.join(comp)}")
        for c, module, forbidden in ONE_WAY:
            if c == crate and module in graph:
                bad = graph[module] & forbidden
                if bad:
                    problems.append(f"{crate}: `{module}` imports {', '.join(sorted(bad))}")
        if show:
            print(f"{crate}:")
            for m in sorted(internal):
                print(f"  {m} -> {', '.join(sorted(internal[m])) or '-'}")
    impure = routing_dependencies() & IMPURE
    if impure:
        problems.append(f"switchback-routing depends on {', '.join(sorted(impure))}")
    for p in problems:
        print(f"layout: {p}", file=sys.stderr)
    if not problems:
        print("layout: no file over 600 lines, no import circles, the request path points one way, routing is pure")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
