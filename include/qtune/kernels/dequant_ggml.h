#pragma once
// Dispatch point for ggml block dequantization (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K ... Q6_K): rows of blocks as a GGUF
// stores them -> dense [rows, cols] in fp32, bf16 or fp16, on the device the blocks live on. Values equal
// quant::dequantize_ggml (and so gguf-py) bit for bit in fp32, then are rounded once to `dtype`.
#include <ATen/ATen.h>

#include "qtune/kernels/dequant_ggml_params.h"

namespace qtune::kernels {

// blocks: contiguous uint8 [rows, ggml_nbytes(type, cols)].
at::Tensor dequantize_ggml_rows(quant::GgmlType type, const at::Tensor& blocks, int64_t cols, at::ScalarType dtype);

// Whether the kernels hold a layout for `type` (the ten block types; not F32/F16/BF16, which load dense).
bool ggml_kernel_supports(quant::GgmlType type);

// CPU implementation behind the dispatch (out: contiguous [rows, cols] fp32/bf16/fp16 on the CPU).
void dequantize_ggml_cpu(const DequantGgmlParams& params, at::Tensor& out);

}  // namespace qtune::kernels
