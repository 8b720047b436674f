// CUDA GPTQ dequantization: one thread per output value, grid-stride; consecutive threads take consecutive input
// columns of one output row, so the stores are coalesced (the packed words are read k times from cache). The fp16
// scale times the integer difference is exact in fp32; one rounding to the output type, as on the CPU.
#include "cuda_common.cuh"
#include "qtune/kernels/dequant_gptq_params.h"

namespace qtune::kernels {
namespace {

using cuda::convert;

template <typename T>
__global__ void dequantize_gptq_kernel(DequantGptqParams p, T* out) {
  const int64_t k = 32 / p.bits, n = p.out * p.in;
  const uint32_t mask = (1u << p.bits) - 1;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = idx / p.in, i = idx % p.in;
    const int64_t g = p.g_idx[i];
    const auto word = static_cast<uint32_t>(p.qweight[(i / k) * p.out + o]);
    const auto code = (word >> (p.bits * (i % k))) & mask;
    const auto zword = static_cast<uint32_t>(p.qzeros[g * (p.out / k) + o / k]);
    const auto zero = (zword >> (p.bits * (o % k))) & mask;
    const float scale = __half2float(__ushort_as_half(p.scales[g * p.out + o]));
    out[idx] = convert<T>(__fmul_rn(scale, static_cast<float>(static_cast<int32_t>(code) - static_cast<int32_t>(zero))));
  }
}

}  // namespace

void dequantize_gptq_cuda(const DequantGptqParams& params, OutType out_type, void* out, void* stream) {
  const int64_t n = params.out * params.in;
  if (n == 0) return;
  const int grid = cuda::grid_for(n);
  auto s = static_cast<cudaStream_t>(stream);
  switch (out_type) {
    case OutType::F32:
      dequantize_gptq_kernel<float><<<grid, cuda::kThreads, 0, s>>>(params, static_cast<float*>(out));
      break;
    case OutType::BF16:
      dequantize_gptq_kernel<__nv_bfloat16><<<grid, cuda::kThreads, 0, s>>>(params, static_cast<__nv_bfloat16*>(out));
      break;
    case OutType::F16:
      dequantize_gptq_kernel<__half><<<grid, cuda::kThreads, 0, s>>>(params, static_cast<__half*>(out));
      break;
  }
  cuda::check_launch("dequantize_gptq_cuda");
}

}  // namespace qtune::kernels
