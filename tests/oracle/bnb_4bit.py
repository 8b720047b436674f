#!/usr/bin/env python3
"""Oracle: bitsandbytes (CPU) quantizes tensors to NF4/FP4, with and without double quantization, for several
block sizes and odd sizes, and records its packed codes, absmax / nested state and dequantized values. The C++
OracleBnb4bit tests quantize the same inputs with qtune and compare bit for bit.

Dequantized values come from bitsandbytes' reference PyTorch path (backends/default/ops.py), not from its native
CPU kernel: in bitsandbytes 0.50.2 that kernel scales some blocks by a neighbouring block's absmax on this
machine (errors of 3.6 on values of 0.12), which this script detects and reports.

Usage: bnb_4bit.py OUT_DIR   (run by ctest as the oracle_bnb_4bit fixture)
"""
import json
import os
import sys
import warnings

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")  # bitsandbytes wraps its reference ops in torch.compile
import torch  # noqa: E402

warnings.filterwarnings("ignore")
import bitsandbytes.functional as F  # noqa: E402
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

# name: (shape, dtype, quant_type, blocksize, double_quant)
CASES = {
    "nf4_dq_b64": ((64, 96), torch.float32, "nf4", 64, True),
    "nf4_b64": ((64, 96), torch.float32, "nf4", 64, False),
    "fp4_dq_b32_odd": ((33, 77), torch.float32, "fp4", 32, True),
    "fp4_b128": ((128, 256), torch.float32, "fp4", 128, False),
    "nf4_b256_odd_1d": ((4099,), torch.float32, "nf4", 256, False),
    "nf4_dq_b64_many_nested_blocks": ((300, 700), torch.float32, "nf4", 64, True),
    "nf4_dq_b64_bf16_input": ((64, 128), torch.bfloat16, "nf4", 64, True),
    "fp4_dq_b4096": ((2, 5000), torch.float32, "fp4", 4096, True),
    "nf4_dq_b64_fp16_input": ((96, 64), torch.float16, "nf4", 64, True),
}


def make_input(name, shape, dtype):
    gen = torch.Generator().manual_seed(sum(map(ord, name)))
    x = torch.randn(shape, generator=gen) * 0.05
    flat = x.view(-1)
    flat[:64] = 0.0                    # an all-zero block
    flat[100:110] *= 40.0              # outliers
    return x.to(dtype)


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    manifest = []
    native_bugs = []
    for name, (shape, dtype, qtype, bs, dq) in CASES.items():
        x = make_input(name, shape, dtype)
        packed, st = F.quantize_4bit(x, blocksize=bs, quant_type=qtype, compress_statistics=dq)
        tensors = {"input": x.contiguous(), "packed": packed.contiguous(), "quant_map": st.code.contiguous(),
                   "absmax": st.absmax.contiguous()}
        if dq:
            tensors["nested_absmax"] = st.state2.absmax.contiguous()
            tensors["nested_quant_map"] = st.state2.code.contiguous()
            tensors["offset"] = st.offset.reshape(1).float()
        absmax = st.absmax
        if dq:
            absmax = F.dequantize_blockwise(st.absmax, st.state2) + st.offset
            manual = st.state2.code[st.absmax.long()] * st.state2.absmax.repeat_interleave(256)[: st.absmax.numel()] + st.offset
            assert torch.equal(absmax, manual), "bitsandbytes' 8-bit dequantize disagrees with its own definition"
        for out_dtype, key in [(torch.float32, "dequant_f32"), (torch.bfloat16, "dequant_bf16"), (torch.float16, "dequant_f16")]:
            tensors[key] = _dequantize_4bit_compute(packed.reshape(-1), absmax.float(), st.code, bs, shape, out_dtype).contiguous()
        st.dtype = torch.float32
        native = F.dequantize_4bit(packed, st)
        if not torch.equal(native, tensors["dequant_f32"]):
            native_bugs.append(f"{name}: max |native - reference| = {(native - tensors['dequant_f32']).abs().max().item():.3g}")
        save_file(tensors, os.path.join(out_dir, name + ".safetensors"))
        manifest.append({"name": name, "format": qtype, "blocksize": bs, "double_quant": dq,
                         "file": os.path.join(out_dir, name + ".safetensors")})
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"oracle: {len(manifest)} bitsandbytes 4-bit cases in {out_dir}")
    if native_bugs:
        print("note: bitsandbytes' native CPU dequantize_4bit disagrees with its reference path:", "; ".join(native_bugs))


if __name__ == "__main__":
    main()
