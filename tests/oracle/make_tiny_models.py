#!/usr/bin/env python3
"""Oracle: transformers builds tiny random Llama/Mistral models, saves them with save_pretrained, and records
their fp32 logits, greedy continuations and sliding-window perplexity. The C++ oracle tests load the same
directories with qtune and compare. Also records transformers' figures on ../shared's stories260K when present.

Usage: make_tiny_models.py OUT_DIR   (run by ctest as the oracle_transformers_models fixture)
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

VOCAB = 97
SEQ = 40          # logits test sequence, longer than the sliding windows below
PROMPT = 5
NEW_TOKENS = 20
PPL_MAX_LEN, PPL_STRIDE = 16, 6

CASES = {
    # grouped-query attention, untied lm_head, default rope
    "llama_gqa_untied": (LlamaConfig, dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)),
    # tied embeddings (no lm_head.weight stored), multi-head, non-default rope_theta
    "llama_tied_theta": (LlamaConfig, dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True,
                                           rope_theta=500000.0)),
    # llama3 rope scaling, head_dim not equal to hidden/heads, attention bias
    "llama3_rope": (LlamaConfig, dict(num_attention_heads=4, num_key_value_heads=1, head_dim=24, attention_bias=True,
                                      rope_theta=500000.0,
                                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
    # linear rope scaling, sharded checkpoint with an index
    "llama_linear_sharded": (LlamaConfig, dict(num_attention_heads=4, num_key_value_heads=2,
                                               rope_scaling={"rope_type": "linear", "factor": 2.0})),
    # Mistral with a sliding window shorter than the test sequence and the generated length
    "mistral_window": (MistralConfig, dict(num_attention_heads=4, num_key_value_heads=2, sliding_window=7,
                                           tie_word_embeddings=False)),
}


def build(name, config_cls, extra):
    base = dict(hidden_size=64, intermediate_size=112, num_hidden_layers=3, vocab_size=VOCAB,
                max_position_embeddings=128, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)
    base.update(extra)
    config = config_cls(**base)
    torch.manual_seed(sum(map(ord, name)))
    model = (MistralForCausalLM if config_cls is MistralConfig else LlamaForCausalLM)(config)
    # Larger-than-default init so that the layers matter and errors in any of them show in the logits.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.08)
            elif "norm" in "".join(n for n, q in model.named_parameters() if q is p):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.05)
    return model.eval()


def sliding_window_nll(model, ids, max_length, stride):
    """Exact count: each token after the first is scored once, by the first window that covers it newly."""
    nll_sum, count, prev_end = 0.0, 0, 0
    n = ids.shape[1]
    for begin in range(0, n, stride):
        end = min(begin + max_length, n)
        target_len = end - prev_end
        window = ids[:, begin:end]
        with torch.no_grad():
            logits = model(window).logits.float()
        logp = torch.log_softmax(logits[0, :-1], -1)
        nll = -logp.gather(1, window[0, 1:, None])[:, 0]
        scored = min(target_len, nll.shape[0])
        nll_sum += nll[nll.shape[0] - scored:].sum().item()
        count += scored
        prev_end = end
        if end == n:
            break
    return nll_sum, count


def greedy(model, prompt):
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    with torch.no_grad():
        out = model.generate(prompt, do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
    return out[0, prompt.shape[1]:].tolist()


def make_case(out_dir, name, config_cls, extra):
    model = build(name, config_cls, extra)
    model_dir = os.path.join(out_dir, name)
    shard = {"max_shard_size": "40KB"} if "sharded" in name else {}
    model.save_pretrained(model_dir, **shard)
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(3, VOCAB, (2, SEQ), generator=gen)
    with torch.no_grad():
        logits = model(ids).logits.float()
    save_file({"input_ids": ids.contiguous(), "logits": logits.contiguous()}, os.path.join(out_dir, name + ".logits.safetensors"))
    prompt = ids[:1, :PROMPT]
    nll_sum, count = sliding_window_nll(model, ids[:1], PPL_MAX_LEN, PPL_STRIDE)
    stored = sorted(os.listdir(model_dir))
    return {
        "name": name,
        "dir": model_dir,
        "logits": os.path.join(out_dir, name + ".logits.safetensors"),
        "prompt": prompt[0].tolist(),
        "greedy": greedy(model, prompt),
        "ppl": {"max_length": PPL_MAX_LEN, "stride": PPL_STRIDE, "nll_sum": nll_sum, "tokens": count},
        "files": stored,
    }


def shared_stories(shared_dir):
    model_dir = os.path.join(shared_dir, "models", "stories260K")
    if not os.path.isdir(model_dir):
        return None
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(model_dir, "tokenizer.model"))
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompt_ids = [1] + sp.encode("Once upon a time")
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids])).logits[0].float()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), do_sample=False, max_new_tokens=60, min_new_tokens=60)
    greedy_ids = out[0, len(prompt_ids):].tolist()
    text = open(os.path.join(shared_dir, "data", "tinystories_valid_head.txt"), encoding="utf-8").read()
    stories = [s.strip() for s in text.split("<|endoftext|>") if s.strip()]
    nll_sum, count = 0.0, 0
    for story in stories:
        ids = ([1] + sp.encode(story))[:512]
        with torch.no_grad():
            lg = model(torch.tensor([ids])).logits[0].float()
        logp = torch.log_softmax(lg[:-1], -1)
        nll_sum += -logp.gather(1, torch.tensor(ids[1:])[:, None]).sum().item()
        count += len(ids) - 1
    return {
        "prompt_ids": prompt_ids,
        "last_logits_top5": torch.topk(logits[-1], 5).indices.tolist(),
        "prompt_logits": logits.tolist(),
        "greedy_60": greedy_ids,
        "greedy_text": sp.decode(prompt_ids[1:] + greedy_ids),
        "heldout": {"stories": len(stories), "nll_sum": nll_sum, "tokens": count, "perplexity": math.exp(nll_sum / count)},
    }


# config.json files that leave keys out: transformers fills them with its config class's defaults, which differ
# between Llama and Mistral. qtune must resolve each file to the same values (config_defaults.json).
CONFIG_FILES = {
    "mistral_minimal": {"model_type": "mistral", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
                        "num_attention_heads": 8, "vocab_size": 100},
    "mistral_window_null": {"model_type": "mistral", "hidden_size": 64, "intermediate_size": 96,
                            "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
                            "vocab_size": 100, "sliding_window": None},
    "mistral_window_16": {"model_type": "mistral", "hidden_size": 64, "intermediate_size": 96,
                          "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 100, "sliding_window": 16,
                          "max_position_embeddings": 4096},
    "llama_minimal": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
                      "num_attention_heads": 8, "vocab_size": 100},
    "llama_attention_dropout": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
                                "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 100,
                                "attention_dropout": 0.1},
}


def config_defaults(out_dir):
    from transformers import AutoConfig
    cases = []
    for name, keys in CONFIG_FILES.items():
        d = os.path.join(out_dir, "config_defaults", name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(keys, f)
        c = AutoConfig.from_pretrained(d)
        cases.append({"name": name, "dir": d, "resolved": {
            "sliding_window": getattr(c, "sliding_window", None),
            "max_position_embeddings": c.max_position_embeddings,
            "num_key_value_heads": c.num_key_value_heads,
            "head_dim": getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
            "rms_norm_eps": c.rms_norm_eps,
            "rope_theta": (getattr(c, "rope_parameters", None) or {}).get("rope_theta", getattr(c, "rope_theta", None)),
            "tie_word_embeddings": c.tie_word_embeddings,
            "attention_dropout": c.attention_dropout,
        }})
    with open(os.path.join(out_dir, "config_defaults.json"), "w") as f:
        json.dump({"cases": cases}, f, indent=1)


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(2)
    manifest = {"cases": [make_case(out_dir, n, c, e) for n, (c, e) in CASES.items()]}
    config_defaults(out_dir)
    shared = os.environ.get("QTUNE_SHARED_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared")
    stories = shared_stories(shared) if os.path.isdir(shared) else None
    if stories is not None:
        with open(os.path.join(out_dir, "stories260K.json"), "w") as f:
            json.dump(stories, f)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"oracle: {len(manifest['cases'])} transformers models in {out_dir}"
          f"{'; stories260K figures recorded' if stories else '; ../shared absent, stories260K skipped'}")


if __name__ == "__main__":
    main()
