#!/usr/bin/env python3
"""Oracle: gguf-py (llama.cpp's Python package) dequantizes ggml blocks to float32 with gguf.quants.dequantize.
The C++ oracle test (OracleGgufBlocks) runs qtune's dequantize_ggml on the same bytes and must agree bit for bit.

Cases, per dequantizable type T (named by gguf-py, e.g. Q4_K):
  T.random     random bytes (7 blocks; 33 values for the plain types F32/F16/BF16), every f16 scale/min field
               overwritten by a finite random half (so the values are finite; F16/BF16 data keep their random
               NaN/inf patterns, plus planted signalling and quiet NaNs, whose payloads must survive)
  T.quantized  gguf.quants.quantize of random normal data (one block all zero), where gguf-py can quantize T

Writes OUT_DIR/gguf_blocks.safetensors holding, per case NAME: NAME.raw (uint8, the ggml bytes) and
NAME.expected (float32, gguf-py's result; its length is the element count). Metadata: NAME.ggml_type (the ggml
type number, decimal), ggml_types (JSON {name: [number, block values, block bytes]} from gguf-py's
GGML_QUANT_SIZES, to check qtune's type table against), and the gguf / numpy versions.

Usage: gguf_blocks.py OUT_DIR   (run by ctest as the oracle_gguf_blocks fixture)
"""
import importlib.metadata
import json
import os
import sys

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from safetensors.numpy import save_file

# Byte offsets of the f16 scale fields (d, and m / dmin where the type has one) inside one block, from
# ggml-common.h's block_* structs: random bytes there would often be NaN or inf halves.
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82],  # scales[16], qs[64], d, dmin
    T.Q3_K: [108],     # hmask[32], qs[64], scales[12], d
    T.Q4_K: [0, 2], T.Q5_K: [0, 2],
    T.Q6_K: [208],     # ql[128], qh[64], scales[16], d
}
PLAIN = [T.F32, T.F16, T.BF16]
# What gguf-py 0.19.0 can quantize among these (the K-quants it only dequantizes).
QUANTIZABLE = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]


def random_halves(rng: np.random.Generator, n: int) -> np.ndarray:
    """Finite halves of either sign, magnitudes from 1e-4 to 1 (a few exactly zero), as seen in real scales."""
    h = (rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(-4, 0, n)).astype(np.float16)
    h[rng.random(n) < 0.05] = 0
    assert np.isfinite(h).all()
    return h


def random_case(rng: np.random.Generator, qtype: T) -> np.ndarray:
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    if qtype in PLAIN:
        raw = rng.integers(0, 256, 33 * block_bytes, dtype=np.uint8)
        if qtype in (T.F16, T.BF16):
            # signalling NaN, quiet NaN with a payload, -inf (f16 bits, then bf16 bits)
            planted = [0x7C01, 0xFE01, 0xFC00] if qtype == T.F16 else [0x7F81, 0xFFC1, 0xFF80]
            raw[:6] = np.array(planted, dtype="<u2").view(np.uint8)
        return raw
    blocks = rng.integers(0, 256, (7, block_bytes), dtype=np.uint8)
    for offset in F16_FIELDS[qtype]:
        blocks[:, offset:offset + 2] = random_halves(rng, 7).astype("<f2").view(np.uint8).reshape(7, 2)
    return blocks.reshape(-1)


def quantized_case(rng: np.random.Generator, qtype: T) -> np.ndarray:
    block_elems, _ = gguf.GGML_QUANT_SIZES[qtype]
    width = 96 if block_elems == 1 else 3 * block_elems
    data = (rng.standard_normal((4, width)) * 0.05).astype(np.float32)
    data[0, :max(block_elems, 8)] = 0  # an all-zero block: scale 0, and 0 * negative codes gives -0
    return np.ascontiguousarray(gguf.quants.quantize(data, qtype)).view(np.uint8).reshape(-1)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(20240611)
    tensors, metadata = {}, {}
    for qtype in PLAIN + list(F16_FIELDS):
        makers = [("random", random_case)] + ([("quantized", quantized_case)] if qtype in QUANTIZABLE else [])
        for kind, make in makers:
            name = f"{qtype.name}.{kind}"
            raw = make(rng, qtype)
            expected = np.asarray(gguf.quants.dequantize(raw, qtype)).reshape(-1)
            assert expected.dtype == np.float32, (name, expected.dtype)
            tensors[f"{name}.raw"] = raw
            tensors[f"{name}.expected"] = np.ascontiguousarray(expected)
            metadata[f"{name}.ggml_type"] = str(int(qtype))
    metadata["ggml_types"] = json.dumps({t.name: [int(t), *gguf.GGML_QUANT_SIZES[t]] for t in gguf.GGML_QUANT_SIZES})
    metadata["gguf"] = importlib.metadata.version("gguf")
    metadata["numpy"] = np.__version__
    path = os.path.join(out_dir, "gguf_blocks.safetensors")
    save_file(tensors, path + ".tmp", metadata=metadata)
    os.replace(path + ".tmp", path)
    print(f"wrote {len(tensors) // 2} cases to {path}")


if __name__ == "__main__":
    main()
