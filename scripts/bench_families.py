#!/usr/bin/env python3
"""Each model family on one shape, against the Llama path and against transformers + PEFT, in one run.

  bench_families.py [--shape smollm2-135m] [--rows 4x256] [--families llama,qwen2,qwen3,gemma2,gemma3_text,phi3]
                    [--peers bf16] [--dtype bf16] [--steps 3] [--warmup 1] [--json-out FILE] [bench_train.py options]

The shape (a preset of configs/models/) is kept: hidden size, layers, heads, KV heads, head_dim, MLP width and
vocabulary. Only what makes a family itself is set: Qwen2's q/k/v biases, Qwen3's q/k norms, Gemma's (1 + w) norms,
sandwich norms, GeGLU, scaled embeddings, soft-caps (Gemma 2) and local layers with a window shorter than the row,
Phi-3's fused qkv_proj and gate_up_proj. So the tokens/s of a family over Llama's is what its extra operations cost,
and the ratio to the peer says whether qtune keeps its lead on every family. Prints bench_train.py's table.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def family_keys(name, shape):
    head_dim = shape.get("head_dim", shape["hidden_size"] // shape["num_attention_heads"])
    window = 128  # shorter than the default 256-token rows: the local layers mask
    return {
        "llama": {},
        "qwen2": {"model_type": "qwen2", "use_sliding_window": False},
        "qwen3": {"model_type": "qwen3", "head_dim": head_dim, "attention_bias": False},
        "gemma2": {"model_type": "gemma2", "head_dim": head_dim, "query_pre_attn_scalar": head_dim,
                   "sliding_window": window, "hidden_activation": "gelu_pytorch_tanh"},
        "gemma3_text": {"model_type": "gemma3_text", "head_dim": head_dim, "query_pre_attn_scalar": head_dim,
                        "sliding_window": window, "sliding_window_pattern": 6,
                        "hidden_activation": "gelu_pytorch_tanh"},
        "phi3": {"model_type": "phi3", "sliding_window": None},
    }[name]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="smollm2-135m")
    ap.add_argument("--rows", default="4x256")
    ap.add_argument("--families", default="llama,qwen2,qwen3,gemma2,gemma3_text,phi3")
    a, rest = ap.parse_known_args()
    path = a.shape if os.path.exists(a.shape) else os.path.join(ROOT, "configs", "models", a.shape + ".json")
    with open(path) as f:
        shape = json.load(f)
    shape.pop("hidden_act", None)  # each family's own activation
    tmp = tempfile.mkdtemp(prefix="bench_families_")
    rows = []
    for name in a.families.split(","):
        config = {**shape, **family_keys(name, shape)}
        out = os.path.join(tmp, f"{a.shape}-{name}.json")
        with open(out, "w") as f:
            json.dump(config, f, indent=1)
        rows += [f"{out}:{size}" for size in a.rows.split(",")]
    defaults = {"--peers": "bf16", "--dtype": "bf16", "--steps": "3", "--warmup": "1"}
    args = [x for k, v in defaults.items() if k not in rest for x in (k, v)]
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "bench_train.py"), "--rows", ",".join(rows)] + args + rest
    sys.exit(subprocess.call(cmd))


if __name__ == "__main__":
    main()
