#pragma once
// Pieces shared by the dequantize kernels: one rounding from fp32 to the output type, the launch grid, and the
// launch check (errors become exceptions the dispatcher turns into qtune errors).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace qtune::kernels::cuda {

template <typename T>
__device__ __forceinline__ T convert(float v);
template <>
__device__ __forceinline__ float convert<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 convert<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ __half convert<__half>(float v) { return __float2half_rn(v); }

constexpr int kThreads = 256;

// Enough blocks to fill any current GPU; kernels use grid-stride loops for the rest.
inline int grid_for(int64_t items) {
  const int64_t wanted = (items + kThreads - 1) / kThreads;
  return static_cast<int>(wanted < 65535 ? wanted : 65535);
}

inline void check_launch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(kernel) + ": kernel launch: " + cudaGetErrorString(err));
}

}  // namespace qtune::kernels::cuda
