#!/usr/bin/env python3
"""Oracle: the model families beyond Llama (Qwen2, Qwen3, Gemma 2, Gemma 3 text, Phi-3, Mistral Nemo's explicit
head_dim), each built tiny and random by transformers' own config and model classes and saved as safetensors, with
what transformers and PEFT say about them. The C++ OracleFamilies tests load the same directories with qtune.

  model_families.py OUT_DIR
      per case: OUT_DIR/<case>/model (save_pretrained), and in OUT_DIR/<case>.safetensors the ids [2, SEQ], fp32
      logits, generate()'s logits of each greedy step, the loss and every lora_A/lora_B gradient of a PEFT adapter on all linears (random non-zero A and B,
      saved to OUT_DIR/<case>/adapter) with labels = ids, and the logits of that PEFT model. Greedy tokens of
      transformers' generate() go to the manifest. OUT_DIR/config_defaults.json: configs that leave keys out and the
      values transformers resolves them to. OUT_DIR/manifest.json lists everything.
  model_families.py --load-adapter BASE ADAPTER IDS OUT [...] / --load-merged MODEL IDS OUT [...]
      as peft_adapters.py (the base class from its config.json): what PEFT / transformers compute on what qtune wrote.

Everything runs in fp32 on CPU. Gemma's cases run sequences longer than their sliding window, with soft-caps small
enough that tanh bends the scores and logits (the default 50 and 30 would hardly touch tiny random models).
"""
import json
import os
import sys

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (AutoConfig, AutoModelForCausalLM, Gemma2Config, Gemma3TextConfig, MistralConfig,  # noqa: E402
                          Phi3Config, Qwen2Config, Qwen3Config)
from transformers.utils import logging as hf_logging  # noqa: E402

from peft_adapters import groups, load_merged_logits, peft_with_adapter  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
torch.set_num_threads(1)

VOCAB = 101
SEQ = 40       # longer than every sliding window below
PROMPT = 5
NEW_TOKENS = 20

BASE = dict(hidden_size=64, intermediate_size=112, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=VOCAB, max_position_embeddings=128, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
            pad_token_id=0)

CASES = {
    # Biases on q/k/v only; tied embeddings as the small Qwen2.5 sizes; sliding windows from layer 1 on.
    "qwen2": (Qwen2Config, dict(tie_word_embeddings=True, use_sliding_window=True, sliding_window=7,
                                max_window_layers=1, rope_theta=1000000.0)),
    # q_norm/k_norm before RoPE, head_dim given and not hidden/heads.
    "qwen3": (Qwen3Config, dict(head_dim=24, tie_word_embeddings=False, rope_theta=1000000.0)),
    # (1 + w) norms, sandwich norms, GeGLU, scaled embeddings, query_pre_attn_scalar, both soft-caps, local layers
    # (0, 2) around a global one.
    "gemma2": (Gemma2Config, dict(head_dim=16, query_pre_attn_scalar=24, sliding_window=7,
                                  attn_logit_softcapping=3.0, final_logit_softcapping=5.0)),
    # Gemma 3: q/k norms, a global layer between local ones, two RoPE bases (the global one scaled), the optional
    # final soft-cap.
    "gemma3_text": (Gemma3TextConfig, dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=7,
                                           layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                                           final_logit_softcapping=5.0,
                                           rope_parameters={
                                               "full_attention": {"rope_type": "linear", "factor": 2.0,
                                                                  "rope_theta": 1000000.0},
                                               "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})),
    # Fused qkv_proj and gate_up_proj; a window on every layer (Phi-3-mini-4k has one).
    "phi3": (Phi3Config, dict(sliding_window=9, tie_word_embeddings=False)),
    # Phi-3's LongRoPE (Phi-3-mini-128k, Phi-3.5, Phi-4-mini) with an original length of 30, so the 40-token rows take
    # the long factors and greedy generation (25 tokens) the short ones; no window. (At the crossing transformers'
    # generate drops its cache and recomputes every key with the long factors; qtune's does not yet.)
    "phi3_longrope": (Phi3Config, dict(sliding_window=None, tie_word_embeddings=False, original_max_position_embeddings=30,
                                       rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                                        "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.1, 3.8],
                                                        "long_factor": [1.2, 1.9, 2.8, 4.0, 5.5, 7.3, 9.4, 12.0]})),
    # Mistral Nemo: head_dim 24 where hidden/heads is 16, no window.
    "mistral_nemo": (MistralConfig, dict(head_dim=24, sliding_window=None, tie_word_embeddings=False)),
}


def random_model(config, seed):
    """transformers' model for `config`, with weights drawn after torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).float()
    gemma = config.model_type.startswith("gemma")
    # Larger-than-default init so that every layer, norm and bias shows in the logits.
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.08)
            elif "norm" in pname:
                p.uniform_(-0.5, 0.5) if gemma else p.uniform_(0.5, 1.5)  # Gemma's scale is 1 + w
            else:
                p.normal_(0.0, 0.05)
    return model.eval()


def build(name, config_cls, extra):
    return random_model(config_cls(**{**BASE, **extra}), sum(map(ord, name)))


def greedy(model, prompt):
    """generate()'s greedy tokens and the raw logits of each step [NEW_TOKENS, VOCAB] (tiny tied models tend to repeat
    a token, so the test compares the cached steps' logits as well as the tokens)."""
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    with torch.no_grad():
        out = model.generate(prompt, do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                             output_logits=True, return_dict_in_generate=True)
    steps = torch.cat([step.float() for step in out.logits], 0).contiguous()
    return out.sequences[0, prompt.shape[1]:].tolist(), steps


def peft_case(model, model_dir, case_dir, ids, seed):
    """A PEFT adapter on every linear with random A and B; its loss, gradients and logits."""
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, device_map="cpu")
    peft = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, lora_dropout=0.0,
                                           target_modules="all-linear", init_lora_weights=False))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in peft.named_parameters():
            if ".lora_A." in pname or ".lora_B." in pname:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    peft.eval()
    peft.save_pretrained(os.path.join(case_dir, "adapter"))
    out = peft(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = {}
    for pname, p in peft.named_parameters():
        if p.grad is not None:
            # PEFT's "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight" -> qtune's name.
            key = pname.replace("base_model.model.", "", 1).replace(".default.", ".")
            grads["grad." + key] = p.grad.detach().float().contiguous()
    with torch.no_grad():
        logits = peft(input_ids=ids).logits.float().contiguous()
    targets = sorted({k.split(".")[-3] for k in grads})  # the adapted linears' leaf names
    return out.loss.item(), grads, logits, targets


def make_case(out_dir, name, config_cls, extra, index):
    model = build(name, config_cls, extra)
    case_dir = os.path.join(out_dir, name)
    model_dir = os.path.join(case_dir, "model")
    model.save_pretrained(model_dir)
    ids = torch.randint(3, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(7 + index))
    with torch.no_grad():
        logits = model(ids).logits.float().contiguous()
    tokens, step_logits = greedy(model, ids[:1, :PROMPT])
    loss, grads, peft_logits, targets = peft_case(model, model_dir, case_dir, ids, 100 + index)
    tensors = {"input_ids": ids.contiguous(), "logits": logits, "peft_logits": peft_logits,
               "greedy_logits": step_logits, **grads}
    save_file(tensors, os.path.join(out_dir, name + ".safetensors"))
    config = model.config
    windows = [config.sliding_window] if getattr(config, "sliding_window", None) else []
    return {
        "name": name,
        "model_type": config.model_type,
        "dir": model_dir,
        "adapter": os.path.join(case_dir, "adapter"),
        "tensors": os.path.join(out_dir, name + ".safetensors"),
        "prompt": ids[0, :PROMPT].tolist(),
        "greedy": tokens,
        "loss": loss,
        "lora_targets": targets,
        "gradients": len(grads),
        "sliding_window": windows[0] if windows else None,
        "layer_types": getattr(config, "layer_types", None),
        "seq": SEQ,
        "num_parameters": sum(p.numel() for p in model.parameters()),  # a tied lm_head counted once
        "peft_shift": (peft_logits - logits).abs().max().item(),
    }


# config.json files that leave keys out: transformers fills them from the family's config class (head_dim 128 for
# Qwen3, 256 for Gemma, soft-caps 50/30 for Gemma 2, a 5:1 local:global pattern for Gemma 3 ...).
SMALL = {"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 8, "vocab_size": 100}
CONFIG_FILES = {
    "qwen2_window": {"model_type": "qwen2", "num_hidden_layers": 4, "use_sliding_window": True, "sliding_window": 16,
                     "max_window_layers": 2, **SMALL, "num_key_value_heads": 8},
    "qwen2_minimal": {"model_type": "qwen2", "num_hidden_layers": 2, **SMALL, "num_key_value_heads": 4},
    "qwen3_minimal": {"model_type": "qwen3", "num_hidden_layers": 2, **SMALL, "num_key_value_heads": 2},
    # Qwen2Config's num_key_value_heads is 32 when absent, whatever num_attention_heads is.
    "qwen2_kv_default": {"model_type": "qwen2", "num_hidden_layers": 2, **SMALL, "num_attention_heads": 32},
    "gemma2_minimal": {"model_type": "gemma2", "num_hidden_layers": 3, **SMALL},
    "gemma2_no_caps": {"model_type": "gemma2", "num_hidden_layers": 2, "attn_logit_softcapping": None,
                       "final_logit_softcapping": None, **SMALL},
    "gemma3_minimal": {"model_type": "gemma3_text", "num_hidden_layers": 7, **SMALL},
    # The transformers 4 keys of Gemma 3's two RoPEs and its pattern.
    "gemma3_t4_keys": {"model_type": "gemma3_text", "num_hidden_layers": 6, "rope_theta": 500000.0,
                       "rope_local_base_freq": 20000.0, "sliding_window_pattern": 3, "sliding_window": 32,
                       "rope_scaling": {"rope_type": "linear", "factor": 4.0}, **SMALL},
    "phi3_minimal": {"model_type": "phi3", "num_hidden_layers": 2, **SMALL},
    "mistral_head_dim": {"model_type": "mistral", "num_hidden_layers": 2, "head_dim": 128, "sliding_window": None,
                         **SMALL},
}


def rope_of(params):
    return {"type": params.get("rope_type", "default"), "theta": params["rope_theta"], "factor": params.get("factor")}


def config_defaults(out_dir):
    cases = []
    for name, keys in CONFIG_FILES.items():
        d = os.path.join(out_dir, "config_defaults", name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(keys, f)
        c = AutoConfig.from_pretrained(d)
        rp = c.rope_parameters
        per_type = "full_attention" in rp
        layer_types = getattr(c, "layer_types", None)
        if layer_types is None:  # Mistral, Phi-3: one window (or none) for every layer
            layer_types = ["sliding_attention" if getattr(c, "sliding_window", None) else "full_attention"] * \
                c.num_hidden_layers
        cases.append({"name": name, "dir": d, "resolved": {
            "num_key_value_heads": c.num_key_value_heads,
            "head_dim": getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
            "rms_norm_eps": c.rms_norm_eps,
            "max_position_embeddings": c.max_position_embeddings,
            "tie_word_embeddings": c.tie_word_embeddings,
            "sliding_window": getattr(c, "sliding_window", None),
            "layer_types": layer_types,
            "rope": rope_of(rp["full_attention"] if per_type else rp),
            "local_rope": rope_of(rp["sliding_attention"]) if per_type else None,
            "query_pre_attn_scalar": getattr(c, "query_pre_attn_scalar", None),
            "attn_logit_softcapping": getattr(c, "attn_logit_softcapping", None),
            "final_logit_softcapping": getattr(c, "final_logit_softcapping", None),
        }})
    with open(os.path.join(out_dir, "config_defaults.json"), "w") as f:
        json.dump({"cases": cases}, f, indent=1)


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "--load-adapter":
        for base_dir, adapter_dir, ids_file, out_file in groups(args, 4, mode):
            base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, device_map="cpu").eval()
            model = peft_with_adapter(base, adapter_dir)
            with torch.no_grad():
                logits = model(input_ids=load_file(ids_file)["input_ids"]).logits.float().contiguous()
            save_file({"logits": logits}, out_file)
        return
    if mode == "--load-merged":
        for model_dir, ids_file, out_file in groups(args, 3, mode):
            save_file({"logits": load_merged_logits(model_dir, load_file(ids_file)["input_ids"])}, out_file)
        return
    out_dir = mode
    os.makedirs(out_dir, exist_ok=True)
    cases = [make_case(out_dir, n, c, e, i) for i, (n, (c, e)) in enumerate(CASES.items())]
    config_defaults(out_dir)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump({"cases": cases}, f, indent=1)
    print(f"oracle: {len(cases)} model families in {out_dir}")


if __name__ == "__main__":
    main()
