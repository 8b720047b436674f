#!/usr/bin/env python3
"""Oracle: tiny random models of each family that llama.cpp can state in a GGUF, built by transformers' own config
and model classes and saved as safetensors, with transformers' fp32 logits. The C++ OracleGgufFamilies tests export
each one with qtune (`export/gguf_export`), run llama.cpp on the file (llama_cpp_gguf.py) and read the file back.

These differ from model_families.py's cases where llama.cpp reads a model differently from transformers: llama.cpp's
qwen2 attends fully in every layer, its phi3 ignores the window, and its Gemma scales scores by 1/sqrt(head_dim)
(query_pre_attn_scalar = head_dim) and takes a sliding layer's RoPE base from its own key.

  gguf_families.py OUT_DIR
      per case: OUT_DIR/<case>/model (save_pretrained); OUT_DIR/<case>.safetensors: input_ids [SEQ] and fp32 logits;
      OUT_DIR/manifest.json lists the cases.
  gguf_families.py --check-converted DIR TENSORS
      `qtune convert`'s DIR loads in transformers (AutoModelForCausalLM) and gives TENSORS' logits within 1e-4.
"""
import json
import os
import sys

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import Gemma2Config, Gemma3TextConfig, Phi3Config, Qwen2Config, Qwen3Config  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from model_families import random_model  # noqa: E402

hf_logging.set_verbosity_error()
torch.set_num_threads(1)

VOCAB = 101
SEQ = 24  # longer than the sliding windows below

BASE = dict(hidden_size=64, intermediate_size=112, num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
            max_position_embeddings=128, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0)

CASES = {
    "qwen2": (Qwen2Config, dict(num_hidden_layers=2, tie_word_embeddings=True, rope_theta=1000000.0)),
    "qwen3": (Qwen3Config, dict(num_hidden_layers=2, head_dim=24, tie_word_embeddings=False)),
    # Soft-caps small enough that tanh bends; layers 0 and 2 local, 1 global (llama.cpp's gemma2 pattern).
    "gemma2": (Gemma2Config, dict(num_hidden_layers=3, head_dim=16, query_pre_attn_scalar=16, sliding_window=7,
                                  attn_logit_softcapping=3.0, final_logit_softcapping=5.0)),
    # A layer pattern llama.cpp's default (five local, one global) does not give, so the file must list it; a local
    # RoPE base other than llama.cpp's default 10000.
    "gemma3_text": (Gemma3TextConfig, dict(num_hidden_layers=3, head_dim=16, query_pre_attn_scalar=16, sliding_window=7,
                                           layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                                           rope_parameters={
                                               "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                                               "sliding_attention": {"rope_type": "default", "rope_theta": 20000.0}})),
    "phi3": (Phi3Config, dict(num_hidden_layers=2, sliding_window=None, tie_word_embeddings=False)),
}


def build(name, config_cls, extra):
    return random_model(config_cls(**{**BASE, **extra}), sum(map(ord, name)) + 1)


def check_converted(directory, tensors):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    expected = load_file(tensors)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(expected["input_ids"].unsqueeze(0)).logits[0]
    diff = (logits - expected["logits"]).abs().max().item()
    print(f"{directory}: {type(model).__name__}, max |logit - transformers' logit| {diff:.3g}")
    sys.exit(0 if diff <= 1e-4 else 1)


def main():
    if sys.argv[1] == "--check-converted":
        check_converted(*sys.argv[2:4])
        return
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    cases = []
    for index, (name, (config_cls, extra)) in enumerate(CASES.items()):
        model = build(name, config_cls, extra)
        model_dir = os.path.join(out_dir, name, "model")
        model.save_pretrained(model_dir)
        ids = torch.randint(3, VOCAB, (SEQ,), generator=torch.Generator().manual_seed(11 + index))
        with torch.no_grad():
            logits = model(ids.unsqueeze(0)).logits[0].float().contiguous()
        tensors = os.path.join(out_dir, name + ".safetensors")
        save_file({"input_ids": ids.contiguous(), "logits": logits}, tensors)
        cases.append({"name": name, "model_type": model.config.model_type, "dir": model_dir, "tensors": tensors})
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump({"cases": cases}, f, indent=1)
    print(f"oracle: {len(cases)} GGUF family models in {out_dir}")


if __name__ == "__main__":
    main()
