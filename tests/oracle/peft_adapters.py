#!/usr/bin/env python3
"""Oracle: LoRA adapters and merged models exchanged between PEFT / transformers and qtune.

  peft_adapters.py OUT_DIR
      builds two tiny random Llamas with transformers (OUT_DIR/base untied, OUT_DIR/base_tied tied) and fixed ids
      (OUT_DIR/ids.safetensors); has transformers + bitsandbytes quantize the untied one to NF4 + double quant
      (OUT_DIR/base_nf4, compute dtype fp32); then for each LoraConfig of CASES trains nothing but gives PEFT's
      adapter random non-zero lora_A/lora_B (and perturbs the modules_to_save copies), saves it with
      PeftModel.save_pretrained (OUT_DIR/<case>/adapter) and records PEFT's fp32 logits on the ids
      (OUT_DIR/<case>/logits.safetensors). OUT_DIR/manifest.json lists everything.
  peft_adapters.py --load-adapter BASE_DIR ADAPTER_DIR IDS OUT [BASE_DIR ADAPTER_DIR IDS OUT ...]
      loads base + PeftModel.from_pretrained(adapter) (e.g. one qtune wrote) and writes the logits. Fails (exit 1)
      when PEFT reports missing or unexpected adapter keys, or when a tensor in the file did not reach the model.
      Several groups share one process (importing torch + transformers + peft takes seconds).
  peft_adapters.py --load-adapter-4bit BASE_DIR ADAPTER_DIR IDS OUT [...]
      the same with the base loaded in 4 bits: quantized by transformers + bitsandbytes while loading (nf4, double
      quant, compute dtype fp32) when BASE_DIR is 16/32-bit, read as stored when BASE_DIR is a 4-bit checkpoint.
  peft_adapters.py --load-merged MODEL_DIR IDS OUT [MODEL_DIR IDS OUT ...]
      loads a merged export with AutoModelForCausalLM.from_pretrained and writes its logits. Fails when the directory
      carries a quantization_config or transformers reports missing, unexpected or mismatched weights.

Everything runs in fp32 on CPU. bitsandbytes 0.50.2's CPU 4-bit paths get the workarounds of bnb_4bit_model.py (its
reference dequantize, and no AVX512-BF16 repacking) and its reference dequantize in Linear4bit's forward as well
(see patch_bnb_cpu), so the 4-bit forward is the documented dequantize-then-matmul.
"""
import json
import os
import sys
import warnings

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
torch.set_num_threads(1)

SEQ, BATCH = 12, 2

# name -> (base: "base" | "base_tied", LoraConfig kwargs, modules_to_save weights to perturb)
CASES = {
    # Every projection, with dropout (which eval must switch off on both sides).
    "all_r8": ("base", dict(r=8, lora_alpha=16, lora_dropout=0.1,
                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                            "down_proj"])),
    # rsLoRA: scale alpha / sqrt(r).
    "rslora_r4": ("base", dict(r=4, lora_alpha=8, use_rslora=True, target_modules="all-linear")),
    # Per-module ranks and alphas. Keys are regexes matched by PEFT as (.*\.)?KEY$ against the full module name
    # ("model.layers.1.self_attn.v_proj"), so "q_proj" hits every q_proj and "layers.1.self_attn.v_proj" one
    # module. The keys do not overlap (qtune tries them in sorted order, PEFT in insertion order).
    "patterns": ("base", dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"],
                              rank_pattern={"q_proj": 2, "layers.1.mlp.down_proj": 6},
                              alpha_pattern={"layers.1.self_attn.v_proj": 5.0, "o_proj": 3.0})),
    # A fully trained lm_head besides the adapters, on an untied base.
    "save_lm_head": ("base", dict(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"])),
    # The same on a tied base: PEFT's copy of lm_head unties it (the embeddings stay the base's).
    "tied_save_lm_head": ("base_tied", dict(r=4, lora_alpha=4, target_modules=["k_proj", "up_proj"],
                                            modules_to_save=["lm_head"])),
    # Trained embeddings on a tied base: lm_head keeps the base's (frozen) embedding matrix.
    "tied_save_embed": ("base_tied", dict(r=4, lora_alpha=8, target_modules=["o_proj", "gate_proj"],
                                          modules_to_save=["embed_tokens"])),
    # Two modules named by their full paths: an adapter must keep them, not widen them to every q_proj/down_proj.
    "full_names": ("base", dict(r=4, lora_alpha=8, target_modules=["model.layers.0.self_attn.q_proj",
                                                                   "model.layers.1.mlp.down_proj"])),
}


def build_base(tied, seed):
    config = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=128, max_position_embeddings=64, rms_norm_eps=1e-5,
                         tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Larger-than-default init so that every layer (and every adapter) shows in the logits.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.08)
            else:
                p.uniform_(0.5, 1.5)  # the RMSNorm weights
    return model.eval()


def load_base(base_dir):
    return LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32, device_map="cpu").eval()


def logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float().contiguous()


def patch_bnb_cpu():
    """bitsandbytes 0.50.2 on CPU: its reference dequantize, in F.dequantize_4bit and in the forward, and no
    AVX512-BF16 repacking in Linear4bit's forward (see bnb_4bit_model.py). The native CPU dequantize (which the
    forward's gemm_4bit op calls) numbers the blocks per row: where in_features is not a multiple of the block size
    (down_proj here, 96 inputs, blocks of 64 running across rows) every row but the first is scaled by the wrong
    absmax, off by up to 0.15 in weights of std 0.08, so the forward is pointed at the reference path too."""
    import bitsandbytes as bnb
    import bitsandbytes.functional as F
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute

    def reference_dequantize_4bit(A, quant_state=None, absmax=None, out=None, blocksize=None, quant_type="fp4"):
        qs = quant_state
        absmax = qs.absmax
        if qs.nested:
            absmax = F.dequantize_blockwise(qs.absmax, qs.state2) + qs.offset
        return _dequantize_4bit_compute(A.reshape(-1).view(torch.uint8), absmax.float(), qs.code, qs.blocksize,
                                        qs.shape, qs.dtype)

    def reference_matmul_4bit(A, B, quant_state, out=None, bias=None):
        result = torch.nn.functional.linear(A, reference_dequantize_4bit(B, quant_state).to(A.dtype), bias)
        return out.copy_(result) if out is not None else result

    F.dequantize_4bit = reference_dequantize_4bit
    bnb.matmul_4bit = reference_matmul_4bit  # what Linear4bit.forward calls


def load_base_4bit(base_dir):
    import bitsandbytes as bnb
    from transformers import BitsAndBytesConfig

    patch_bnb_cpu()
    with open(os.path.join(base_dir, "config.json")) as f:
        prequantized = "quantization_config" in json.load(f)
    kwargs = {} if prequantized else dict(quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32))
    model = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32, device_map="cpu", **kwargs).eval()
    n4 = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            n4 += 1
    if n4 != 7 * model.config.num_hidden_layers:
        raise SystemExit(f"{base_dir}: expected every projection as a bnb Linear4bit, got {n4}")
    return model


def peft_with_adapter(base, adapter_dir):
    """PeftModel.from_pretrained, failing on any key PEFT could not place and checking that every tensor of the
    file is what the model now holds."""
    from peft import PeftModel

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=False).eval()
    problems = [str(w.message) for w in caught
                if any(s in str(w.message).lower() for s in ("missing", "unexpected", "mismatch", "not found"))]
    if problems:
        raise SystemExit(f"PEFT could not load {adapter_dir} cleanly:\n" + "\n".join(problems))
    # PEFT warns about missing keys but ignores unexpected ones: find each stored tensor's parameter
    # ("lora_A.weight" -> "lora_A.default.weight", a modules_to_save copy under "modules_to_save.default") and check
    # that it arrived unchanged.
    params = dict(model.named_parameters())
    stored = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    for key, t in stored.items():
        candidates = [key.replace(".lora_A.weight", ".lora_A.default.weight").replace(
                      ".lora_B.weight", ".lora_B.default.weight")]
        stem = key[: -len(".weight")]
        candidates.append(stem + ".modules_to_save.default.weight")
        hit = [c for c in candidates if c in params]
        if not hit:
            raise SystemExit(f"{adapter_dir}: tensor '{key}' has no parameter in PEFT's model "
                             f"(looked for {candidates})")
        if params[hit[0]].shape != t.shape or not torch.equal(params[hit[0]].detach().float(), t.float()):
            raise SystemExit(f"{adapter_dir}: tensor '{key}' did not reach '{hit[0]}' unchanged")
    n_lora = sum(1 for n in params if ".lora_A.default." in n or ".lora_B.default." in n)
    n_file = sum(1 for k in stored if ".lora_A." in k or ".lora_B." in k)
    if n_lora != n_file:
        raise SystemExit(f"{adapter_dir}: PEFT built {n_lora} lora_A/lora_B tensors, the file holds {n_file}")
    return model


def groups(args, n, mode):
    if not args or len(args) % n:
        raise SystemExit(f"{mode} takes groups of {n} arguments, got {len(args)}")
    return [args[i:i + n] for i in range(0, len(args), n)]


def load_merged_logits(model_dir, ids):
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    if "quantization_config" in config:
        raise SystemExit(f"{model_dir}/config.json has a quantization_config in an fp32 merged export")
    model, info = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, device_map="cpu",
                                                       output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if bad:
        raise SystemExit(f"transformers loaded {model_dir} with {bad}")
    return logits_of(model.eval(), ids)


def generate(out):
    from peft import LoraConfig, get_peft_model

    os.makedirs(out, exist_ok=True)
    bases = {"base": build_base(False, 11), "base_tied": build_base(True, 12)}
    for name, model in bases.items():
        model.save_pretrained(os.path.join(out, name))
    ids = torch.randint(3, 128, (BATCH, SEQ), generator=torch.Generator().manual_seed(5))
    save_file({"input_ids": ids}, os.path.join(out, "ids.safetensors"))
    base_logits = {name: logits_of(load_base(os.path.join(out, name)), ids) for name in bases}
    save_file(base_logits, os.path.join(out, "base_logits.safetensors"))

    # The 4-bit base as transformers + bitsandbytes quantize it (from fp32), for the 4-bit adapter test.
    try:
        load_base_4bit(os.path.join(out, "base")).save_pretrained(os.path.join(out, "base_nf4"))
        nf4 = os.path.join(out, "base_nf4")
    except Exception as e:  # noqa: BLE001  (reported in the manifest; the C++ test skips with the reason)
        nf4, nf4_error = None, f"{type(e).__name__}: {e}"
    else:
        nf4_error = None

    cases = []
    for i, (name, (base_name, kwargs)) in enumerate(CASES.items()):
        base = load_base(os.path.join(out, base_name))
        model = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", init_lora_weights=False, **kwargs))
        gen = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if ".lora_A." in pname or ".lora_B." in pname:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
                elif ".modules_to_save." in pname:  # "trained" in full: the copy moves away from the base
                    p.add_(torch.randn(p.shape, generator=gen) * 0.05)
        model.eval()
        case_dir = os.path.join(out, name)
        model.save_pretrained(os.path.join(case_dir, "adapter"))
        logits = logits_of(model, ids)
        save_file({"logits": logits}, os.path.join(case_dir, "logits.safetensors"))
        # Not a no-op: the adapter moves the logits well beyond the comparison tolerance.
        shift = (logits - base_logits[base_name]).abs().max().item()
        assert shift > 0.05, f"{name}: adapter barely changes the logits ({shift})"
        cases.append({"name": name, "base": os.path.join(out, base_name), "adapter": os.path.join(case_dir, "adapter"),
                      "logits": os.path.join(case_dir, "logits.safetensors"), "shift": shift})

    manifest = {"ids": os.path.join(out, "ids.safetensors"), "base_logits": os.path.join(out, "base_logits.safetensors"),
                "bases": {n: os.path.join(out, n) for n in bases}, "base_nf4": nf4, "base_nf4_error": nf4_error,
                "cases": cases}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"oracle: PEFT adapters, bases and logits in {out}")


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode in ("--load-adapter", "--load-adapter-4bit"):
        for base_dir, adapter_dir, ids_file, out_file in groups(args, 4, mode):
            base = load_base_4bit(base_dir) if mode == "--load-adapter-4bit" else load_base(base_dir)
            model = peft_with_adapter(base, adapter_dir)
            save_file({"logits": logits_of(model, load_file(ids_file)["input_ids"])}, out_file)
    elif mode == "--load-merged":
        for model_dir, ids_file, out_file in groups(args, 3, mode):
            save_file({"logits": load_merged_logits(model_dir, load_file(ids_file)["input_ids"])}, out_file)
    else:
        generate(mode)


if __name__ == "__main__":
    main()
