#!/usr/bin/env python3
"""Oracle: llm-compressor 0.14.0.1's SmoothQuantModifier is the truth for SmoothQuant's scales and folds.

Run as `PYTHONPATH=.cache/llmc-env .venv/bin/python llmcompressor_smoothquant.py OUT_DIR` (scripts/setup.sh installs
llm-compressor with the transformers 5.17 and compressed-tensors 0.19 it pins into .cache/llmc-env, over the main venv's
torch). Everything runs in fp32 on CPU.

  OUT_DIR/calibration.json   the calibration token ids every case uses (4 sequences of 24 tokens)
  OUT_DIR/<case>/model/      a tiny random model of the family (model_families.py's random_model), with a few input
                             channels of the norms that feed linears made 8-30 times larger: the activation outliers
                             SmoothQuant is for
  OUT_DIR/<case>/llmc-a<α>.safetensors
                             after llm-compressor's oneshot(SmoothQuantModifier(smoothing_strength=α)) on those ids:
                             every decoder layer's norm and linear weights ("model.layers.0.input_layernorm.weight"),
                             and per mapping the scales it applied ("scales.model.layers.0.input_layernorm"), read off
                             the balanced weights: W'[:, j] / W[:, j] at each column's largest |W|
  OUT_DIR/manifest.json      the cases: family, α, and the mappings run

llm-compressor's own mappings are used (Llama and Qwen: input_layernorm → q/k/v, post_attention_layernorm → gate/up;
Phi-3: → qkv_proj, → gate_up_proj), except for Gemma 2/3, where the registry's default mapping smooths
post_attention_layernorm — in Gemma's sandwich it closes the attention and feeds no linear — into gate/up, which read
pre_feedforward_layernorm's output: that changes the model's function. The Gemma cases pass the mapping the block has
(pre_feedforward_layernorm → gate/up); llm-compressor folds into Gemma's (1 + w) norms itself (offset_norm.py).

The runs use oneshot's own pipeline for SmoothQuant, "sequential" (each decoder layer calibrated on the outputs of the
layers smoothed before it), except Phi-3: there the traced sequential pipeline loses the causal mask (in calibration
its layer-0 attention output is the model's under an all-zero 4-D mask, position 0 attending to every token), so its
Phi-3 statistics come from another function. Phi-3 runs the "basic" pipeline instead (one pass of the whole model,
then every mapping smoothed): since smoothing keeps the function, its statistics equal the sequential ones of a
correct run up to fp32 rounding.
"""
import json
import os
import sys

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

torch.set_num_threads(1)

SEQS, SEQ_LEN = 4, 24

QKV = ["re:.*self_attn\\.q_proj$", "re:.*self_attn\\.k_proj$", "re:.*self_attn\\.v_proj$"]
GATE_UP = ["re:.*mlp\\.gate_proj$", "re:.*mlp\\.up_proj$"]
GEMMA_MAPPINGS = [[QKV, "re:.*input_layernorm$"], [GATE_UP, "re:.*pre_feedforward_layernorm$"]]

# (case, family in model_families.CASES, α, explicit mappings or None for llm-compressor's registry, pipeline)
RUNS = [
    ("llama", "llama", 0.5, None, "sequential"),
    ("llama", "llama", 0.8, None, "sequential"),
    ("qwen2", "qwen2", 0.5, None, "sequential"),
    ("qwen3", "qwen3", 0.5, None, "sequential"),
    ("phi3", "phi3", 0.5, None, "basic"),
    ("gemma2", "gemma2", 0.5, GEMMA_MAPPINGS, "sequential"),
    ("gemma3_text", "gemma3_text", 0.5, GEMMA_MAPPINGS, "sequential"),
]


def family_config(family):
    from model_families import BASE, CASES
    from transformers import LlamaConfig
    if family == "llama":
        return LlamaConfig(**{**BASE, "tie_word_embeddings": False})
    cls, extra = CASES[family]
    return cls(**{**BASE, **extra})


def with_outliers(model):
    """A few input channels of every norm that feeds linears scaled up (Gemma: its 1 + w), so that the calibration
    activations have the per-channel outliers of real models."""
    gemma = model.config.model_type.startswith("gemma")
    factors = {3: 30.0, 17: 12.0, 40: 8.0}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not any(n in name for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm")):
                continue
            if gemma and "post_attention_layernorm" in name:
                continue  # closes the attention in Gemma's sandwich
            for c, f in factors.items():
                p[c] = (1 + p[c]) * f - 1 if gemma else p[c] * f
    return model


def save_tokenizer(path, vocab):
    """A word-level tokenizer over the ids ("t0" … ): oneshot insists on a processor beside the model."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    tk = Tokenizer(models.WordLevel(vocab={f"t{i}": i for i in range(vocab)}, unk_token="t3"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="t0", bos_token="t1", eos_token="t2",
                            unk_token="t3").save_pretrained(path)


def make_model(out_dir, case, family):
    from model_families import random_model
    path = os.path.join(out_dir, case, "model")
    if not os.path.isdir(path):
        model = with_outliers(random_model(family_config(family), sum(map(ord, case))))
        model.save_pretrained(path)
        save_tokenizer(path, model.config.vocab_size)
    return path


def layer_tensors(model):
    return {k: v.detach().float().clone().contiguous() for k, v in model.state_dict().items()
            if k.startswith("model.layers.")}


def applied_scales(before, after, mappings):
    """Per mapping, the scales folded into its first balance linear: W'[:, j] / W[:, j] at each column's largest |W|."""
    out = {}
    for smooth, balance in mappings:
        w, w2 = before[balance[0] + ".weight"], after[balance[0] + ".weight"]
        rows = w.abs().argmax(0)
        cols = torch.arange(w.shape[1])
        out["scales." + smooth] = (w2[rows, cols] / w[rows, cols]).contiguous()
    return out


def run(out_dir, case, family, alpha, mappings, pipeline, ids):
    from llmcompressor import oneshot
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier
    from transformers import AutoModelForCausalLM

    path = make_model(out_dir, case, family)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    before = layer_tensors(model)
    modifier = SmoothQuantModifier(smoothing_strength=alpha, mappings=mappings)
    # A DataLoader goes to the pipeline as it is (a datasets.Dataset would be fingerprinted through dill, which fails on
    # pyarrow 26's types); one sequence per batch, as oneshot's own loader.
    rows = [{"input_ids": torch.tensor(s), "attention_mask": torch.ones(len(s), dtype=torch.long)} for s in ids]
    data = torch.utils.data.DataLoader(rows, batch_size=1, shuffle=False)
    oneshot(model=model, dataset=data, recipe=[modifier], pipeline=pipeline)
    after = layer_tensors(model)
    # The mappings as run, from the weights that changed: each smoothed norm and the linears it balanced.
    resolved = []
    for layer in range(model.config.num_hidden_layers):
        p = f"model.layers.{layer}."
        qkv = [p + "self_attn.qkv_proj"] if p + "self_attn.qkv_proj.weight" in before else \
            [p + f"self_attn.{n}_proj" for n in "qkv"]
        mlp = [p + "mlp.gate_up_proj"] if p + "mlp.gate_up_proj.weight" in before else \
            [p + "mlp.gate_proj", p + "mlp.up_proj"]
        mlp_norm = p + ("pre_feedforward_layernorm" if p + "pre_feedforward_layernorm.weight" in before
                        else "post_attention_layernorm")
        resolved += [(p + "input_layernorm", qkv), (mlp_norm, mlp)]
    for smooth, balance in resolved:
        if torch.equal(before[smooth + ".weight"], after[smooth + ".weight"]):
            raise SystemExit(f"{case}: llm-compressor did not smooth {smooth}")
    tensors = {**after, **applied_scales(before, after, resolved)}
    name = f"llmc-a{alpha}"
    save_file(tensors, os.path.join(out_dir, case, name + ".safetensors"))
    return {"case": case, "family": family, "alpha": alpha, "pipeline": pipeline, "model": path,
            "tensors": os.path.join(out_dir, case, name + ".safetensors"),
            "mappings": [{"smooth": s, "balance": b} for s, b in resolved]}


def main():
    out_dir = os.path.abspath(sys.argv[1])
    os.makedirs(out_dir, exist_ok=True)
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(3, 101, (SEQS, SEQ_LEN), generator=g).tolist()
    with open(os.path.join(out_dir, "calibration.json"), "w") as f:
        json.dump(ids, f)
    runs = [run(out_dir, *r, ids) for r in RUNS]
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump({"runs": runs, "seqs": SEQS, "seq_len": SEQ_LEN}, f, indent=1)
    print(f"oracle: {len(runs)} llm-compressor SmoothQuant runs in {out_dir}")


if __name__ == "__main__":
    main()
