// CUDA 4-bit dequantization: one thread per packed byte (two outputs). Products are rounded as in
// bitsandbytes (fp32 multiply, no fused multiply-add, then one rounding to the output type), so the
// GPU result equals the CPU one bit for bit.
#include "cuda_common.cuh"
#include "qtune/kernels/dequant_params.h"

namespace qtune::kernels {
namespace {

using cuda::convert;

__device__ __forceinline__ float scale_of(const Dequant4bitParams& p, int64_t block) {
  if (p.absmax != nullptr) return p.absmax[block];
  // __fmul_rn/__fadd_rn keep nvcc from contracting into an FMA, which would round differently from the CPU.
  return __fadd_rn(__fmul_rn(p.nested_map[p.absmax_codes[block]], p.nested_absmax[block / p.nested_blocksize]),
                   p.offset);
}

template <typename T>
__global__ void dequantize_4bit_kernel(Dequant4bitParams p, T* out) {
  __shared__ float code[16];
  if (threadIdx.x < 16) code[threadIdx.x] = p.code[threadIdx.x];
  __syncthreads();
  const int64_t bytes = (p.n + 1) / 2;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < bytes;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint8_t byte = p.packed[i];
    const int64_t first = 2 * i;
    const float scale = scale_of(p, first / p.blocksize);  // both elements share a block (blocksize is even)
    out[first] = convert<T>(__fmul_rn(code[byte >> 4], scale));
    if (first + 1 < p.n) out[first + 1] = convert<T>(__fmul_rn(code[byte & 15], scale));
  }
}


}  // namespace

void dequantize_4bit_cuda(const Dequant4bitParams& params, OutType out_type, void* out, void* stream) {
  const int64_t bytes = (params.n + 1) / 2;
  if (bytes == 0) return;
  constexpr int kThreads = cuda::kThreads;
  const int grid = cuda::grid_for(bytes);
  auto s = static_cast<cudaStream_t>(stream);
  switch (out_type) {
    case OutType::F32: dequantize_4bit_kernel<float><<<grid, kThreads, 0, s>>>(params, static_cast<float*>(out)); break;
    case OutType::BF16:
      dequantize_4bit_kernel<__nv_bfloat16><<<grid, kThreads, 0, s>>>(params, static_cast<__nv_bfloat16*>(out));
      break;
    case OutType::F16: dequantize_4bit_kernel<__half><<<grid, kThreads, 0, s>>>(params, static_cast<__half*>(out)); break;
  }
  cuda::check_launch("dequantize_4bit_cuda");
}

}  // namespace qtune::kernels
