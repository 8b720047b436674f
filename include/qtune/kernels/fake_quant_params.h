#pragma once
// Raw-pointer description of an affine fake quantization (quantize to integers, dequantize at once), shared by the
// CPU and CUDA implementations (plain C++, no ATen: the .cu file compiles with nvcc alone). Per element of group g:
//   q     = round_half_even(x * inv_scale[g]) + zero[g]     (inv_scale = 1 / scale, both fp32: torchao's order)
//   out   = (clamp(q, qmin, qmax) - zero[g]) * scale[g]
//   mask  = qmin <= q <= qmax                               (the straight-through estimator's pass-through)
// Every step is one fp32 rounding in this order, never fused, so the CPU and the GPU agree bit for bit.
#include <cstdint>

namespace qtune::kernels {

struct FakeQuantAffineParams {
  const float* x = nullptr;          // [rows, cols], row-major
  const float* scale = nullptr;      // [rows, cols / group]
  const float* inv_scale = nullptr;  // [rows, cols / group]
  const float* zero = nullptr;       // [rows, cols / group], integer values
  int64_t rows = 0, cols = 0, group = 0;
  float qmin = 0, qmax = 0;
};

// CUDA launcher (src/kernels/cuda/fake_quant.cu); `stream` is a cudaStream_t. out: [rows, cols] fp32, mask: bytes.
void fake_quantize_affine_cuda(const FakeQuantAffineParams& params, float* out, uint8_t* mask, void* stream);

}  // namespace qtune::kernels
