#pragma once
// Dispatch point of the W8A8 matmul (quant/w8a8.h): the input quantized per token to int8, int8 x int8 -> int32
// products, then the int32 sums rescaled by the token's and the channel's scale. On the CPU and on CUDA both steps are
// ATen calls (at::_int_mm: oneDNN's s8s8s32 GEMM on a CPU with AVX512-VNNI, cuBLASLt's int8 GEMM on a GPU); the
// per-token quantization is a few elementwise ATen ops, memory-bound beside the GEMM, so it has no kernel of its own.
#include <ATen/ATen.h>

#include "qtune/quant/w8a8.h"

namespace qtune::kernels {

struct TokenCodes {
  at::Tensor codes;  // int8 [tokens, in]
  at::Tensor scale;  // fp32 [tokens]
};

// Per-token dynamic symmetric int8 quantization of a 2-D [tokens, in] fp32, bf16 or fp16 tensor (quant/w8a8.h).
TokenCodes quantize_tokens_int8(const at::Tensor& x);

// a·bᵀ for int8 a [m, k] and int8 b [n, k] on one device, as exact int32 [m, n]: each product is below 2^14 in
// magnitude, so the sum cannot overflow while k < 2^17.
at::Tensor int8_matmul(const at::Tensor& a, const at::Tensor& b);

// y = x·Wᵀ through W8A8 for x [..., in] in fp32, bf16 or fp16 on the weight's device; y [..., out] in x's dtype.
at::Tensor w8a8_matmul(const at::Tensor& x, const quant::W8A8State& weight);

}  // namespace qtune::kernels
