"""The llama.cpp side of worker-bench: the same GGUF file, prompts and thread count.

Reads one JSON request on stdin and writes one JSON result on stdout:

  in:  {"model": PATH, "threads": N, "prompts": [TEXT, ...], "decode_prompt": TEXT,
        "decode_tokens": N, "repeats": N, "gpu": BOOL}
  out: {"version": "0.3.x", "prefill": [{"tokens": N, "seconds": S}, ...],
        "decode": {"tokens": N, "seconds": S}}

Prefill is the time to the first token: one `eval` of the whole prompt from an empty KV cache
(llama.cpp batches it, n_batch 512), then choosing the first token and its text; best of
`repeats`. Decode is greedy generation after the decode prompt, one `eval` per
token, timed without the prompt, so it is decode alone. The model is loaded once.
"""

import json
import sys
import time

import llama_cpp
import numpy as np


def next_token(llm):
    """The greedy choice after the last eval: argmax of the last position's logits."""
    logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
    return int(np.argmax(logits))


def first_token(llm, tokens):
    """Seconds from an empty KV cache to the first greedy token's text."""
    llm.reset()  # eval drops the cached positions past n_tokens: an empty KV cache
    started = time.perf_counter()
    llm.eval(tokens)
    llm.detokenize([next_token(llm)])
    return time.perf_counter() - started


def main():
    req = json.load(sys.stdin)
    threads = int(req["threads"])
    llm = llama_cpp.Llama(
        model_path=req["model"],
        n_ctx=4096,
        n_batch=512,
        n_threads=threads,
        n_threads_batch=threads,
        n_gpu_layers=-1 if req.get("gpu") else 0,
        verbose=False,
    )
    repeats = int(req.get("repeats", 3))
    out = {"version": llama_cpp.__version__, "prefill": []}

    for text in req["prompts"]:
        tokens = llm.tokenize(text.encode(), add_bos=True, special=False)
        best = min(first_token(llm, tokens) for _ in range(repeats))
        out["prefill"].append({"tokens": len(tokens), "seconds": best})

    # Greedy decoding after the decode prompt, one eval per token: `steps` decoding steps
    # in `seconds`. Stops early only at an end-of-generation token.
    tokens = llm.tokenize(req["decode_prompt"].encode(), add_bos=True, special=False)
    llm.reset()
    llm.eval(tokens)
    steps = 0
    started = time.perf_counter()
    for _ in range(int(req["decode_tokens"])):
        token = next_token(llm)
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
            break
        llm.detokenize([token])
        llm.eval([token])
        steps += 1
    out["decode"] = {"tokens": steps, "seconds": time.perf_counter() - started}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
