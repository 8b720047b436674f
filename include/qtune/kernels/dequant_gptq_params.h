#pragma once
// Raw-pointer description of a GPTQ dequantization (v2 zeros), shared by the CPU and CUDA implementations (plain
// C++, no ATen: the .cu file compiles with nvcc alone). Element [o, i] of the dense [out, in] result is
// fp32(scales[g, o]) · (code − zero) with g = g_idx[i]: an fp16 scale times an integer below 2^bits is exact in fp32,
// so the one rounding is to the output type, and fp16 output equals gptqmodel's fp16 arithmetic.
#include <cstdint>

#include "qtune/kernels/dequant_params.h"  // OutType

namespace qtune::kernels {

struct DequantGptqParams {
  const int32_t* qweight = nullptr;  // [in / k, out]
  const int32_t* qzeros = nullptr;   // [groups, out / k]
  const uint16_t* scales = nullptr;  // fp16 bits [groups, out]
  const int32_t* g_idx = nullptr;    // [in]
  int64_t out = 0, in = 0;
  int bits = 4;
};

// CUDA launcher (src/kernels/cuda/dequant_gptq.cu); `stream` is a cudaStream_t.
void dequantize_gptq_cuda(const DequantGptqParams& params, OutType out_type, void* out, void* stream);

}  // namespace qtune::kernels
