#!/usr/bin/env python3
"""Oracle: ggml's own quantizers (ggml_quantize_chunk in libggml-base.so of the installed llama-cpp-python, through
ctypes) and gguf-py's numpy ones (gguf.quants.quantize) turn float32 rows into ggml block bytes. The C++ oracle test
(OracleGgufQuantize) runs qtune's quantize_ggml on the same rows and must write the same bytes, byte for byte.

Inputs, per row length N (256 and 512 for every type; 96 also for the 32-value legacy types and the plain ones):
  inputs.N    float32 [rows, N], one row per kind in ROW_KINDS: edge cases (normal, heavy-tailed with outliers, all zero,
              constant, tiny ~1e-6, mixed-sign blocks, all positive, part zero / part constant, subnormal, large), then
              random rows of several distributions and scales
  imatrix.N   float32 [N], a random positive importance vector (llama.cpp's imatrix: mean squared activations), with
              a stretch of exact zeros (columns that never fired)

Cases, per quantizable type T and length N:
  T.N.ref       ggml_quantize_chunk(T, inputs.N, imatrix=NULL): uint8 [rows, row bytes]
  T.N.imatrix   ggml_quantize_chunk(T, inputs.N, imatrix.N)
  T.N.gguf_py   gguf.quants.quantize(inputs.N, T), for the types gguf-py can quantize (F32, F16, BF16, Q8_0, Q4_0,
                Q4_1, Q5_0, Q5_1); metadata T.N.gguf_py_agrees says whether it equals T.N.ref, and if not, which rows
                differ (ggml is what qtune follows)
Metadata: CASE.ggml_type (decimal), CASE.input, CASE.imatrix (tensor names, the latter empty for none), row_kinds
(JSON list), and the llama-cpp-python / ggml / gguf / numpy versions.

Usage: gguf_quantize.py OUT_DIR   (run by ctest as the oracle_gguf_quantize fixture)
"""
import ctypes
import glob
import importlib.metadata
import json
import os
import sys

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from safetensors.numpy import save_file

try:
    import llama_cpp
except ImportError as e:
    sys.exit(f"gguf_quantize.py: cannot import llama_cpp ({e}); run scripts/setup.sh: it builds llama-cpp-python, "
             "whose libggml-base.so is the reference quantizer")

LEGACY = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
K_QUANTS = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
PLAIN = [T.F32, T.F16, T.BF16]
GGUF_PY = PLAIN + LEGACY  # what gguf-py 0.19 quantizes among these
LENGTHS = {256: PLAIN + LEGACY + K_QUANTS, 512: PLAIN + LEGACY + K_QUANTS, 96: PLAIN + LEGACY}

# The named edge cases, then random rows of assorted distributions and scales (1e-5 .. 10) for the searches' rarer
# branches (a positive fitted min, ties, few distinct values).
EDGE_KINDS = ["normal", "heavy_tailed", "zero", "constant", "tiny", "mixed_sign_blocks", "positive",
              "zero_and_constant_blocks", "subnormal", "large"]
RANDOM_DISTS = ["uniform", "laplace", "sparse", "two_values", "lognormal", "few_levels"]
ROW_KINDS = EDGE_KINDS + [f"{RANDOM_DISTS[k % len(RANDOM_DISTS)]}_{k}" for k in range(18)]


def make_row(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    if kind == "normal":
        return rng.standard_normal(n) * 0.02
    if kind == "heavy_tailed":  # Student t (df 2) with a few planted outliers, like real weight rows
        x = rng.standard_t(2, n) * 0.01
        x[rng.choice(n, 4, replace=False)] *= 50
        return x
    if kind == "zero":
        return np.zeros(n)
    if kind == "constant":
        return np.full(n, -0.375)
    if kind == "tiny":
        return rng.standard_normal(n) * 1e-6
    if kind == "mixed_sign_blocks":  # 16-value stretches all positive, all negative, or mixed
        x = rng.standard_normal(n) * 0.05
        sign = rng.choice([-1.0, 1.0, 0.0], n // 16).repeat(16)
        return np.where(sign == 0, x, sign * np.abs(x))
    if kind == "positive":  # every min > 0: the K-quants clamp the min to 0
        return np.abs(rng.standard_normal(n)) * 0.03 + 0.01
    if kind == "zero_and_constant_blocks":
        x = rng.standard_normal(n) * 0.02
        x[:32] = 0
        x[32:64] = 0.125
        x[64:96] = -0.0
        return x
    if kind == "subnormal":  # float32 subnormals: legacy scales whose inverse overflows to inf
        return rng.standard_normal(n) * 1e-39
    if kind == "large":  # beyond fp16's range: F16 saturates to inf
        return rng.standard_normal(n) * 3e4
    dist = kind.rsplit("_", 1)[0]
    scale = 10.0 ** rng.uniform(-5, 1)
    if dist == "uniform":
        return rng.uniform(-1, 1, n) * scale
    if dist == "laplace":
        return rng.laplace(0, 1, n) * scale
    if dist == "sparse":
        return np.where(rng.random(n) < 0.9, 0.0, rng.standard_normal(n)) * scale
    if dist == "two_values":
        return rng.choice([-1.0, 1.0], n) * (1 + 0.01 * rng.standard_normal(n)) * scale
    if dist == "lognormal":
        return np.exp(rng.standard_normal(n)) * scale
    if dist == "few_levels":  # many ties
        return np.round(rng.standard_normal(n) * 3) * scale
    raise ValueError(kind)


def load_ggml():
    lib_dir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    candidates = sorted(glob.glob(os.path.join(lib_dir, "libggml-base.so*")))
    if not candidates:
        sys.exit(f"gguf_quantize.py: no libggml-base.so in {lib_dir}; run scripts/setup.sh: it builds llama-cpp-python")
    lib = ctypes.CDLL(candidates[0])
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    for name in ("ggml_version", "ggml_commit"):
        getattr(lib, name).restype = ctypes.c_char_p
        getattr(lib, name).argtypes = []
    return lib, candidates[0]


def ggml_quantize(lib, qtype: T, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows, n = x.shape
    row_size = lib.ggml_row_size(int(qtype), n)
    out = np.zeros((rows, row_size), dtype=np.uint8)
    im = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
    written = lib.ggml_quantize_chunk(int(qtype), x.ctypes.data, out.ctypes.data, 0, rows, n,
                                      None if im is None else im.ctypes.data)
    assert written == rows * row_size, (qtype.name, written, rows * row_size)
    return out


def gguf_py_quantize(qtype: T, x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):  # subnormal and huge rows overflow on purpose
        q = np.asarray(gguf.quants.quantize(x, qtype))
    return np.ascontiguousarray(q).view(np.uint8).reshape(x.shape[0], -1)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    lib, lib_path = load_ggml()
    rng = np.random.default_rng(20240612)
    tensors, metadata = {}, {}
    disagreements = []
    for n, types in LENGTHS.items():
        x = np.stack([make_row(rng, kind, n) for kind in ROW_KINDS]).astype(np.float32)
        imatrix = np.exp(rng.standard_normal(n) * 1.5).astype(np.float32)
        imatrix[n // 4:n // 4 + 32] = 0
        tensors[f"inputs.{n}"] = x
        tensors[f"imatrix.{n}"] = imatrix
        for qtype in types:
            for variant, im in (("ref", None), ("imatrix", imatrix)):
                name = f"{qtype.name}.{n}.{variant}"
                tensors[name] = ggml_quantize(lib, qtype, x, im)
                metadata[f"{name}.ggml_type"] = str(int(qtype))
                metadata[f"{name}.input"] = f"inputs.{n}"
                metadata[f"{name}.imatrix"] = "" if im is None else f"imatrix.{n}"
            if qtype in GGUF_PY:
                name = f"{qtype.name}.{n}.gguf_py"
                ours = tensors[f"{qtype.name}.{n}.ref"]
                theirs = gguf_py_quantize(qtype, x)
                tensors[name] = theirs
                bad = [ROW_KINDS[r] for r in range(x.shape[0]) if not np.array_equal(ours[r], theirs[r])]
                metadata[f"{name}.gguf_py_agrees"] = "yes" if not bad else "no: rows " + ", ".join(bad)
                if bad:
                    disagreements.append(f"{qtype.name} (N={n}): rows {', '.join(bad)}")
    metadata["row_kinds"] = json.dumps(ROW_KINDS)
    metadata["llama_cpp_python"] = importlib.metadata.version("llama_cpp_python")
    metadata["ggml_version"] = lib.ggml_version().decode()
    metadata["ggml_commit"] = lib.ggml_commit().decode()
    metadata["ggml_library"] = lib_path
    metadata["gguf"] = importlib.metadata.version("gguf")
    metadata["numpy"] = np.__version__
    path = os.path.join(out_dir, "gguf_quantize.safetensors")
    save_file(tensors, path + ".tmp", metadata=metadata)
    os.replace(path + ".tmp", path)
    n_cases = sum(1 for k in metadata if k.endswith(".ggml_type"))
    print(f"wrote {n_cases} ggml cases to {path} (ggml {metadata['ggml_version']} {metadata['ggml_commit']})")
    for d in disagreements:
        print(f"gguf-py and ggml disagree: {d}")


if __name__ == "__main__":
    main()
