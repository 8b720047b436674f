#!/usr/bin/env python3
"""Oracle: llama.cpp itself (llama-cpp-python, built from source by scripts/setup.sh) loads the GGUF files qtune
exported and says what it computes. The C++ tests (OracleLlamaCpp) write the files, run this script on a job list,
and compare llama.cpp's answers with qtune's on the same files.

Usage: llama_cpp_gguf.py JOBS.json
JOBS.json: a list of jobs, each an object with "kind" and "out" (a file this script writes):
  {"kind": "tokenize", "model": GGUF, "texts": [str, ...], "out": JSON}
      ids of each text as llama.cpp tokenizes it: without BOS, special tokens in the text parsed ("ids"), and with
      what the vocabulary adds ("ids_with_specials"); plus n_vocab, bos and eos.
  {"kind": "logits", "model": GGUF, "tokens": [int, ...], "lora": GGUF adapter or null, "out": SAFETENSORS}
      the logits of every position (float32 [n, vocab]), one batch, one thread.
  {"kind": "greedy", "model": GGUF, "prompt": [int, ...], "n": int, "stop": [int, ...], "out": JSON}
      the greedy continuation: argmax of the logits, token by token, until a stop token or n tokens.
  {"kind": "quantize", "model": GGUF, "ftype": int, "out": GGUF}
      llama-quantize (llama_model_quantize) of the file to the llama_ftype, with llama.cpp's default parameters.
  {"kind": "tensors", "model": GGUF, "out": JSON}
      name → [ggml type name, shape] of every tensor, and the bytes of each, as sha256 (read with gguf-py).
"""
import ctypes
import hashlib
import json
import os
import sys

try:
    import llama_cpp
except ImportError as e:  # pragma: no cover
    sys.exit(f"llama_cpp is not importable ({e}): run scripts/setup.sh, which builds llama-cpp-python")
import numpy as np
from safetensors.numpy import save_file


def load(model, lora=None, n_ctx=512, vocab_only=False):
    # An F32 KV cache (llama.cpp's default is F16): the comparison then measures what the weights' type costs, not
    # the cache's rounding of K and V.
    return llama_cpp.Llama(model_path=model, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=1,
                           n_threads_batch=1, logits_all=True, verbose=False, lora_path=lora, vocab_only=vocab_only,
                           seed=0, type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)


def tokenize(job):
    llm = load(job["model"], vocab_only=True)
    out = {"n_vocab": llm.n_vocab(), "bos": llm.token_bos(), "eos": llm.token_eos(), "texts": []}
    for text in job["texts"]:
        b = text.encode("utf-8")
        out["texts"].append({"text": text,
                             "ids": llm.tokenize(b, add_bos=False, special=True),
                             "ids_with_specials": llm.tokenize(b, add_bos=True, special=True)})
    return out


def logits(job):
    tokens = job["tokens"]
    llm = load(job["model"], job.get("lora"), n_ctx=max(64, len(tokens)))
    llm.eval(tokens)
    return np.ascontiguousarray(np.array(llm.scores[: len(tokens)], dtype=np.float32))


def greedy(job):
    prompt, stop = job["prompt"], set(job.get("stop", []))
    llm = load(job["model"], job.get("lora"), n_ctx=len(prompt) + job["n"] + 8)
    llm.eval(prompt)
    out = []
    for _ in range(job["n"]):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        if nxt in stop:
            break
        llm.eval([nxt])
    return out


def quantize(job):
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = job["ftype"]
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(job["model"].encode(), job["out"].encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({job['model']}) returned {rc}")


def tensors(job):
    import gguf
    r = gguf.GGUFReader(job["model"])
    return {t.name: [t.tensor_type.name, [int(d) for d in t.shape], hashlib.sha256(bytes(t.data)).hexdigest()]
            for t in r.tensors}


def main():
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    for job in jobs:
        kind = job["kind"]
        if kind == "logits":
            save_file({"logits": logits(job)}, job["out"], metadata={"llama_cpp": llama_cpp.__version__})
        elif kind == "quantize":
            quantize(job)
        else:
            result = {"tokenize": tokenize, "greedy": greedy, "tensors": tensors}[kind](job)
            with open(job["out"], "w") as f:
                json.dump(result, f)


if __name__ == "__main__":
    main()
