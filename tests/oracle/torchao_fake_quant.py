#!/usr/bin/env python3
"""Oracle: torchao's QAT fake quantizers (pure PyTorch, on CPU) on weights of odd shapes and on activations, forward
and backward. The C++ oracle test (OracleTorchaoFakeQuant) runs qtune's fake quantization on the same inputs: its
forward must equal torchao's bit for bit, its straight-through gradient must pass where torchao's does and nowhere else.

Cases (NAME: what torchao runs):
  intN_sym_gG / int8_sym_row   IntxFakeQuantizer(IntxFakeQuantizeConfig(torch.intN, group_size=G | "per_channel",
                               is_symmetric=True)): the int4 per-group weight QAT of torchao's Int8DynActInt4 recipes
  int4_asym_gG                 torchao's own primitives with an integer zero point, preserve_zero (the convention GPTQ
                               and AWQ checkpoints store): get_groupwise_affine_qparams(..., ZeroPointDomain.INT,
                               preserve_zero=True) + _fake_quantize_affine(quant range 0..15). IntxFakeQuantizer itself
                               is not used for asymmetric weights: it computes a float zero point (tinygemm's domain) but
                               applies it in the integer domain clamped to [-8, 7] (torchao 0.17), which the
                               "intx_asym_error" entry records (its max error against the input, several scales wide).
  *_fp16                       the scales qtune trains with by default, the ones a GPTQ checkpoint stores: torchao's
                               qparams with precision torch.float16 (get_group_qparams_symmetric /
                               get_groupwise_affine_qparams), then _fake_quantize_affine with those scales as fp32
                               values, so the reciprocal is an fp32 one. IntxFakeQuantizer with scale_precision=
                               torch.float16 takes it in fp16, which overflows for scales below 2^-16 (an all-zero
                               group becomes NaN): the "intx_fp16_nan" entry records that it still does.
  tokens_int8                  IntxFakeQuantizer(IntxFakeQuantizeConfig(torch.int8, "per_token", is_symmetric=False))

Writes OUT_DIR/fake_quant.safetensors: NAME.input, NAME.grad_output, NAME.output, NAME.grad_input (fp32).

Usage: torchao_fake_quant.py OUT_DIR   (run by ctest as the oracle_torchao_fake_quant fixture)
"""
import os
import sys
import warnings

import torch
from safetensors.torch import save_file

warnings.filterwarnings("ignore")
from torchao.quantization.qat import IntxFakeQuantizeConfig  # noqa: E402
from torchao.quantization.qat.fake_quantizer import IntxFakeQuantizer  # noqa: E402
from torchao.quantization.quant_primitives import ZeroPointDomain, _fake_quantize_affine  # noqa: E402
from torchao.quantization.utils import get_group_qparams_symmetric, get_groupwise_affine_qparams  # noqa: E402


def weight(gen, rows, cols, std):
    """Random rows plus the corners: an all-zero group, a group of one sign, an outlier, exact ties of the scale."""
    w = torch.randn(rows, cols, generator=gen) * std
    w[0, :cols // 2] = 0
    w[1] = w[1].abs()
    w[2, 3] = w[2].abs().max() * 50
    w[3] = (torch.arange(cols, dtype=torch.float32) % 16 - 7.5) * 0.25
    return w


def run(fn, x, gen):
    x = x.clone().requires_grad_(True)
    y = fn(x)
    g = torch.randn(y.shape, generator=gen)
    y.backward(g)
    return {"input": x.detach(), "grad_output": g, "output": y.detach(), "grad_input": x.grad}


def intx(dtype, granularity, symmetric, scale_precision=torch.float32):
    kw = {"group_size": granularity} if isinstance(granularity, int) else {"granularity": granularity}
    return IntxFakeQuantizer(IntxFakeQuantizeConfig(dtype, is_symmetric=symmetric, scale_precision=scale_precision,
                                                    **kw))


def asym_int(bits, group, scale_precision=torch.float32):
    def fn(w):
        scale, zero = get_groupwise_affine_qparams(w.detach(), bits, group, scale_precision,
                                                   zero_point_domain=ZeroPointDomain.INT, preserve_zero=True)
        return _fake_quantize_affine(w, (1, group), scale.float(), zero, torch.int32, 0, 2 ** bits - 1,
                                     ZeroPointDomain.INT)
    return fn


def sym_int_fp16(bits, group):
    def fn(w):
        g = w.shape[-1] if group == -1 else group
        scale, zero = get_group_qparams_symmetric(w.detach(), bits, g, torch.float16)
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        return _fake_quantize_affine(w, (1, g), scale.float(), zero.float(), torch.int32, lo, hi, ZeroPointDomain.INT)
    return fn


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    gen = torch.Generator().manual_seed(20261202)
    cases = {
        "int4_sym_g32": (intx(torch.int4, 32, True), weight(gen, 17, 96, 0.02)),
        "int4_sym_g128": (intx(torch.int4, 128, True), weight(gen, 9, 384, 0.05)),
        "int2_sym_g32": (intx(torch.int2, 32, True), weight(gen, 7, 64, 1.0)),
        "int3_sym_g64": (intx(torch.int3, 64, True), weight(gen, 5, 192, 0.1)),
        "int8_sym_row": (intx(torch.int8, "per_channel", True), weight(gen, 11, 200, 0.02)),
        "int8_sym_g64": (intx(torch.int8, 64, True), weight(gen, 6, 128, 0.3)),
        "int4_asym_g32": (asym_int(4, 32), weight(gen, 13, 160, 0.02)),
        "int4_asym_g128": (asym_int(4, 128), weight(gen, 4, 256, 0.05)),
        "int8_asym_g32": (asym_int(8, 32), weight(gen, 5, 96, 0.02)),
        "int4_sym_g32_fp16": (sym_int_fp16(4, 32), weight(gen, 17, 96, 0.02)),
        "int8_sym_row_fp16": (sym_int_fp16(8, -1), weight(gen, 11, 200, 0.02)),
        "int2_sym_g64_fp16": (sym_int_fp16(2, 64), weight(gen, 7, 128, 1.0)),
        "int4_asym_g32_fp16": (asym_int(4, 32, torch.float16), weight(gen, 13, 160, 0.02)),
        "int4_asym_g64_fp16": (asym_int(4, 64, torch.float16), weight(gen, 9, 192, 1e-4)),
    }
    tokens = torch.randn(3, 5, 72, generator=gen) * 2
    tokens[0, 0] = 0
    tokens[0, 1] = 0.5
    tokens[1, 2] = tokens[1, 2].abs()
    cases["tokens_int8"] = (intx(torch.int8, "per_token", False), tokens)

    tensors = {}
    for name, (fn, x) in cases.items():
        for key, value in run(fn, x, gen).items():
            tensors[f"{name}.{key}"] = value.contiguous()
    w = weight(gen, 4, 64, 1.0)
    err = (intx(torch.int4, 32, False)(w) - w).abs().max()
    tensors["intx_asym_error"] = torch.tensor([float(err)])
    tensors["intx_fp16_nan"] = torch.tensor([float(intx(torch.int4, 32, True, torch.float16)(w * 0).isnan().any())])
    save_file(tensors, os.path.join(out_dir, "fake_quant.safetensors"))
    print(f"wrote {len(cases)} cases to {out_dir}/fake_quant.safetensors (IntxFakeQuantizer asymmetric int4 g32: "
          f"max error {float(err):.3f} on randn)")


if __name__ == "__main__":
    main()
