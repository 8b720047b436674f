// CUDA ggml-block dequantization: a block per row (grid-stride over rows), its threads stride over the row's values,
// one value each, so stores are coalesced; a value's block header is re-read by each of its threads, from cache. The
// values come from quant/ggml_block_layout.h, the layout code dequantize_ggml and the CPU kernel run, with each fp32
// product and sum rounded on its own (__fmul_rn / __fadd_rn / __fsub_rn: never fused), then one rounding to the
// output type, so the GPU result equals the CPU one bit for bit.
#include "cuda_common.cuh"
#include "qtune/kernels/dequant_ggml_params.h"
#include "qtune/quant/ggml_block_layout.h"

namespace qtune::kernels {
namespace {

using cuda::convert;

template <class B, typename T>
__global__ void dequantize_ggml_kernel(DequantGgmlParams p, T* out) {
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const uint8_t* src = p.blocks + row * p.row_bytes;
    T* dst = out + row * p.cols;
    for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) {
      const int64_t block = c / B::kValues;
      dst[c] = convert<T>(quant::layout::block_value<B>(src + block * B::kBytes, static_cast<int>(c % B::kValues)));
    }
  }
}

template <class B>
void launch(const DequantGgmlParams& params, OutType out_type, void* out, cudaStream_t s) {
  // 256 threads cover a 4096-wide row in 16 coalesced sweeps; a block per row up to 65535 (as the int8 kernel), the
  // grid-stride loop covers taller matrices.
  constexpr int kThreads = cuda::kThreads;
  const int grid = static_cast<int>(params.rows < 65535 ? params.rows : 65535);
  switch (out_type) {
    case OutType::F32:
      dequantize_ggml_kernel<B, float><<<grid, kThreads, 0, s>>>(params, static_cast<float*>(out));
      break;
    case OutType::BF16:
      dequantize_ggml_kernel<B, __nv_bfloat16><<<grid, kThreads, 0, s>>>(params, static_cast<__nv_bfloat16*>(out));
      break;
    case OutType::F16:
      dequantize_ggml_kernel<B, __half><<<grid, kThreads, 0, s>>>(params, static_cast<__half*>(out));
      break;
  }
}

}  // namespace

void dequantize_ggml_cuda(const DequantGgmlParams& params, OutType out_type, void* out, void* stream) {
  if (params.rows == 0 || params.cols == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  const bool known = quant::layout::with_layout(params.type, [&](auto block) {
    launch<decltype(block)>(params, out_type, out, s);
  });
  if (!known) throw std::runtime_error("dequantize_ggml_cuda: not a ggml block type the kernels hold");
  cuda::check_launch("dequantize_ggml_cuda");
}

}  // namespace qtune::kernels
