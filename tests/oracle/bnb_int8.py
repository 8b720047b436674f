#!/usr/bin/env python3
"""Oracle: bitsandbytes quantizes a few weight matrices to int8 row-wise (int8_vectorwise_quant, threshold 0,
its CPU path) and dequantizes them back (int8_vectorwise_dequant). The C++ oracle test (OracleBnbInt8) runs
qtune's quantize_int8_rowwise / dequantize_int8 on the same weights and must agree bit for bit.

Writes OUT_DIR/int8.safetensors holding, per case NAME: NAME.weight (the input, in its dtype), NAME.codes
(int8), NAME.row_stats (fp32), NAME.dequant_f32 (bitsandbytes' fp32 result) and NAME.dequant_bf16 /
NAME.dequant_f16 (that result rounded with torch's .to(), as bitsandbytes' callers do).

Usage: bnb_int8.py OUT_DIR   (run by ctest as the oracle_bnb_int8 fixture)
"""
import os
import sys

import bitsandbytes
import bitsandbytes.functional as F
import torch
from safetensors.torch import save_file


def special_rows(w: torch.Tensor) -> torch.Tensor:
    """Row 0 all zero, row 1 one outlier 200x the rest, row 2 exact halves (absmax 127 makes the scale exactly 1,
    so the products tie and test round-half-to-even), row 3 subnormal (the scale overflows to inf)."""
    w = w.clone()
    cols = w.shape[1]
    w[0] = 0
    w[1, cols // 3] = w[1].abs().max() * 200
    w[2] = torch.arange(cols, dtype=torch.float32).remainder(254).sub(127).add(0.5).to(w.dtype)
    w[2, 0] = 127
    w[3] = 0
    w[3, :2] = torch.tensor([1e-40, -3e-41])
    return w


def cases(gen: torch.Generator):
    def randn(rows, cols, std):
        return torch.randn(rows, cols, generator=gen) * std

    yield "f32_odd", special_rows(randn(7, 33, 1.0))
    yield "bf16_proj", special_rows(randn(64, 256, 0.02)).to(torch.bfloat16)
    yield "f32_proj", special_rows(randn(96, 160, 0.02))
    # bitsandbytes' Linear8bitLt casts its weight to fp16 before quantizing (Int8Params._quantize)
    yield "f16_linear8bitlt", special_rows(randn(32, 130, 0.05)).to(torch.float16)
    yield "f32_one_column", randn(5, 1, 1.0)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    gen = torch.Generator().manual_seed(1234)
    tensors = {}
    for name, weight in cases(gen):
        codes, row_stats, outliers = F.int8_vectorwise_quant(weight.clone(), threshold=0.0)
        assert outliers is None and codes.dtype == torch.int8 and row_stats.dtype == torch.float32
        dequant = F.int8_vectorwise_dequant(codes, row_stats)
        assert dequant.dtype == torch.float32
        tensors[f"{name}.weight"] = weight.contiguous()
        tensors[f"{name}.codes"] = codes.contiguous()
        tensors[f"{name}.row_stats"] = row_stats.contiguous()
        tensors[f"{name}.dequant_f32"] = dequant.contiguous()
        tensors[f"{name}.dequant_bf16"] = dequant.to(torch.bfloat16).contiguous()
        tensors[f"{name}.dequant_f16"] = dequant.to(torch.float16).contiguous()
    path = os.path.join(out_dir, "int8.safetensors")
    save_file(tensors, path + ".tmp",
              metadata={"bitsandbytes": bitsandbytes.__version__, "torch": torch.__version__})
    os.replace(path + ".tmp", path)
    print(f"wrote {len(tensors) // 6} cases to {path}")


if __name__ == "__main__":
    main()
