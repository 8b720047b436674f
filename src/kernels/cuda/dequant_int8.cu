// CUDA int8 row-wise dequantization: a block per row (grid-stride over rows), its threads stride over the
// columns, so loads and stores are coalesced and the row's absmax is read once per thread. Products are
// rounded as in bitsandbytes (two fp32 multiplies, never fused or reassociated, then one rounding to the
// output type), so the GPU result equals the CPU one bit for bit.
#include "cuda_common.cuh"
#include "qtune/kernels/dequant_int8_params.h"

namespace qtune::kernels {
namespace {

using cuda::convert;

template <typename T>
__global__ void dequantize_int8_kernel(DequantInt8Params p, T* out) {
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const float absmax = p.row_absmax[row];
    const int8_t* src = p.codes + row * p.cols;
    T* dst = out + row * p.cols;
    for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x)
      dst[c] = convert<T>(__fmul_rn(__fmul_rn(static_cast<float>(src[c]), absmax), kInt8Dequant));
  }
}

}  // namespace

void dequantize_int8_cuda(const DequantInt8Params& params, OutType out_type, void* out, void* stream) {
  if (params.rows == 0 || params.cols == 0) return;
  // 256 threads cover a 4096-wide row in 16 coalesced sweeps; a block per row up to the 65535 grid the 4-bit
  // kernel uses too, the grid-stride loop covers taller matrices.
  constexpr int kThreads = cuda::kThreads;
  const int grid = static_cast<int>(params.rows < 65535 ? params.rows : 65535);
  auto s = static_cast<cudaStream_t>(stream);
  switch (out_type) {
    case OutType::F32: dequantize_int8_kernel<float><<<grid, kThreads, 0, s>>>(params, static_cast<float*>(out)); break;
    case OutType::BF16:
      dequantize_int8_kernel<__nv_bfloat16><<<grid, kThreads, 0, s>>>(params, static_cast<__nv_bfloat16*>(out));
      break;
    case OutType::F16: dequantize_int8_kernel<__half><<<grid, kThreads, 0, s>>>(params, static_cast<__half*>(out)); break;
  }
  cuda::check_launch("dequantize_int8_cuda");
}

}  // namespace qtune::kernels
