#pragma once
// Quantization of float32 rows into ggml's block formats (quant/ggml_types.h), byte-identical to ggml's own
// `ggml_quantize_chunk` (llama.cpp's ggml-quants.c), so a GGUF file qtune writes holds the bytes llama-quantize
// would. The inverse is gguf_blocks.h's dequantize_ggml.
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "qtune/quant/ggml_types.h"

namespace qtune::quant {

// The types qtune can write: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
bool ggml_quantizable(GgmlType type);

// `rows` x `row_elems` float32 values (row-major, contiguous) as the bytes ggml_quantize_chunk(type, values, dst, 0,
// rows, row_elems, importance) writes: rows * ggml_nbytes(type, row_elems) bytes, row after row.
// `importance`: nullptr, or row_elems finite non-negative weights (llama.cpp's imatrix: the mean squared activation
// of each input column). Like ggml, without it the reference quantizers (quantize_row_*_ref) run, with it the
// importance-weighted searches (quantize_row_*_impl); F32, F16, BF16 and Q8_0 ignore it.
// Errors: a type qtune cannot write, row_elems not a whole number of blocks, a negative or non-finite weight.
// Rows are quantized in parallel (at::parallel_for); the bytes do not depend on the thread count.
std::vector<uint8_t> quantize_ggml(GgmlType type, const float* values, int64_t rows, int64_t row_elems,
                                   const float* importance = nullptr);

// Tensor form: `values` [rows, row_elems] of any floating dtype (converted to float32 first), `importance` float
// [row_elems] or undefined. Returns uint8 [rows, ggml_nbytes(type, row_elems)] on the CPU.
at::Tensor quantize_ggml(GgmlType type, const at::Tensor& values, const at::Tensor& importance = {});

}  // namespace qtune::quant
