#pragma once
// Raw-pointer description of an int8 row-wise dequantization, shared by the CPU and CUDA implementations
// (plain C++, no ATen: the .cu file compiles with nvcc alone).
#include <cstdint>

#include "qtune/kernels/dequant_params.h"  // OutType

namespace qtune::kernels {

// bitsandbytes' constant (backends/default/ops.py, int8_vectorwise_dequant): 1/127 rounded to fp32 (the Python
// literal 7.874015718698502e-3 is that float printed as a double). It multiplies after the row's absmax:
// value = (fp32(code) * row_absmax) * kInt8Dequant, two fp32 roundings, in that order.
inline constexpr float kInt8Dequant = 7.874015718698502e-3f;

struct DequantInt8Params {
  const int8_t* codes = nullptr;      // [rows, cols], row-major
  const float* row_absmax = nullptr;  // [rows]
  int64_t rows = 0;
  int64_t cols = 0;
};

// CUDA launcher (src/kernels/cuda/dequant_int8.cu); `stream` is a cudaStream_t.
void dequantize_int8_cuda(const DequantInt8Params& params, OutType out_type, void* out, void* stream);

}  // namespace qtune::kernels
