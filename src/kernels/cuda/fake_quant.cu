// CUDA affine fake quantization: one thread per element (grid-stride), its group's scale read through the cache.
// __fmul_rn / __fadd_rn / __fsub_rn keep every step one IEEE rounding, never contracted into an FMA, so the result
// equals the CPU kernel's bit for bit; rintf rounds half to even like std::nearbyint.
#include "cuda_common.cuh"
#include "qtune/kernels/fake_quant_params.h"

namespace qtune::kernels {
namespace {

__global__ void fake_quantize_affine_kernel(FakeQuantAffineParams p, float* out, uint8_t* mask) {
  const int64_t n = p.rows * p.cols;
  const int64_t groups = p.cols / p.group;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / p.cols, c = i % p.cols;
    const int64_t k = r * groups + c / p.group;
    const float zero = p.zero[k];
    const float q = __fadd_rn(rintf(__fmul_rn(p.x[i], p.inv_scale[k])), zero);
    mask[i] = q >= p.qmin && q <= p.qmax;
    out[i] = __fmul_rn(__fsub_rn(fminf(fmaxf(q, p.qmin), p.qmax), zero), p.scale[k]);
  }
}

}  // namespace

void fake_quantize_affine_cuda(const FakeQuantAffineParams& params, float* out, uint8_t* mask, void* stream) {
  const int64_t n = params.rows * params.cols;
  if (n == 0) return;
  fake_quantize_affine_kernel<<<cuda::grid_for(n), cuda::kThreads, 0, static_cast<cudaStream_t>(stream)>>>(params, out,
                                                                                                     mask);
  cuda::check_launch("fake_quantize_affine_cuda");
}

}  // namespace qtune::kernels
