#!/usr/bin/env python3
"""Oracle: 4-bit checkpoints exchanged between transformers + bitsandbytes and qtune.

  bnb_4bit_model.py OUT_DIR
      builds a tiny random Llama (GQA, untied), saves it in 16 bits (OUT_DIR/base16), has transformers quantize it
      (BitsAndBytesConfig nf4 + double quant, and fp4 without) and save_pretrained it (OUT_DIR/tf_nf4, tf_fp4),
      and records transformers' fp32 logits of the 4-bit models on fixed ids. transformers quantizes from bf16 (its
      default dtype with bitsandbytes), so these checkpoints store bf16 tensors and a bf16 quant_state dtype.
  bnb_4bit_model.py --logits MODEL_DIR IDS.safetensors OUT.safetensors
      loads a 4-bit checkpoint (e.g. one qtune wrote) with transformers and records its logits.

bitsandbytes 0.50.2's native CPU dequantize_4bit scales some blocks by a neighbour's absmax on this machine (see
bnb_4bit.py), so its functional dequantize_4bit is pointed at bitsandbytes' own reference path for these runs;
and on CPUs with AVX512-BF16, Linear4bit's inference forward repacks the weight for a bf16 kernel, which is
turned off (support_avx512bf16_for_cpu = False) so the forward is the documented dequantize-then-matmul.
"""
import json
import os
import sys
import warnings

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
warnings.filterwarnings("ignore")
import torch  # noqa: E402
import bitsandbytes as bnb  # noqa: E402
import bitsandbytes.functional as F  # noqa: E402
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()
_native_dequantize_4bit = F.dequantize_4bit


def reference_dequantize_4bit(A, quant_state=None, absmax=None, out=None, blocksize=None, quant_type="fp4"):
    qs = quant_state
    absmax = qs.absmax
    if qs.nested:
        absmax = F.dequantize_blockwise(qs.absmax, qs.state2) + qs.offset
    return _dequantize_4bit_compute(A.reshape(-1).view(torch.uint8), absmax.float(), qs.code, qs.blocksize, qs.shape, qs.dtype)


F.dequantize_4bit = reference_dequantize_4bit


def logits_of(model_dir, ids):
    model = LlamaForCausalLM.from_pretrained(model_dir, device_map="cpu", dtype=torch.float32).eval()
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
    with torch.no_grad():
        return model(ids).logits.float().contiguous()


def main():
    if sys.argv[1] == "--logits":
        model_dir, ids_file, out_file = sys.argv[2:5]
        ids = load_file(ids_file)["input_ids"]
        save_file({"logits": logits_of(model_dir, ids)}, out_file)
        return
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    config = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=120, tie_word_embeddings=False, rms_norm_eps=1e-5)
    torch.manual_seed(3)
    base = LlamaForCausalLM(config)
    with torch.no_grad():
        for p in base.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
    base.save_pretrained(os.path.join(out, "base16"))
    ids = torch.randint(3, 120, (2, 24), generator=torch.Generator().manual_seed(1))
    save_file({"input_ids": ids}, os.path.join(out, "ids.safetensors"))
    cases = []
    for name, qtype, dq in [("tf_nf4", "nf4", True), ("tf_fp4", "fp4", False)]:
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=qtype, bnb_4bit_use_double_quant=dq,
                                 bnb_4bit_compute_dtype=torch.float32)
        model = LlamaForCausalLM.from_pretrained(os.path.join(out, "base16"), quantization_config=bnb, device_map="cpu")
        model.save_pretrained(os.path.join(out, name))
        save_file({"logits": logits_of(os.path.join(out, name), ids)}, os.path.join(out, name + ".logits.safetensors"))
        cases.append({"name": name, "dir": os.path.join(out, name), "format": qtype, "double_quant": dq,
                      "logits": os.path.join(out, name + ".logits.safetensors")})
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump({"base16": os.path.join(out, "base16"), "ids": os.path.join(out, "ids.safetensors"), "cases": cases}, f, indent=1)
    print(f"oracle: transformers + bitsandbytes 4-bit checkpoints in {out}")


if __name__ == "__main__":
    main()
