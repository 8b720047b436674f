#include "qtune/kernels/dequant_ggml.h"

#include <ATen/record_function.h>
#include <fmt/ranges.h>

#include "qtune/kernels/dequant.h"
#include "qtune/quant/ggml_block_layout.h"
#include "qtune/util/error.h"

#if QTUNE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace qtune::kernels {

bool ggml_kernel_supports(quant::GgmlType type) {
  return quant::layout::with_layout(type, [](auto) {});
}

at::Tensor dequantize_ggml_rows(quant::GgmlType type, const at::Tensor& blocks, int64_t cols, at::ScalarType dtype) {
  RECORD_FUNCTION("qtune::dequantize_ggml", std::vector<c10::IValue>{});  // a named row in profiles (no ATen op)
  const auto& info = quant::ggml_type_info(type);
  if (!ggml_kernel_supports(type))
    fail("dequantize_ggml_rows: ggml type {} has no block kernel (expected one of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, "
         "Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)", info.name);
  const auto row_bytes = static_cast<int64_t>(quant::ggml_nbytes(type, cols));
  if (blocks.scalar_type() != at::kByte || blocks.dim() != 2 || blocks.size(1) != row_bytes || !blocks.is_contiguous())
    fail("dequantize_ggml_rows: {} blocks of {} values per row must be contiguous uint8 [rows, {}], got {} [{}]",
         info.name, cols, row_bytes, c10::toString(blocks.scalar_type()), fmt::join(blocks.sizes(), ", "));
  const auto out_type = out_type_of(dtype, "dequantize_ggml_rows");
  auto out = at::empty({blocks.size(0), cols}, at::TensorOptions().dtype(dtype).device(blocks.device()));
  DequantGgmlParams params;
  params.type = type;
  params.blocks = blocks.data_ptr<uint8_t>();
  params.rows = blocks.size(0);
  params.cols = cols;
  params.row_bytes = row_bytes;
  if (blocks.is_cuda()) {
#if QTUNE_WITH_CUDA
    const c10::cuda::CUDAGuard guard(blocks.device());  // launch on the blocks' GPU, on its current stream
    dequantize_ggml_cuda(params, out_type, out.data_ptr(), at::cuda::getCurrentCUDAStream().stream());
#else
    (void)out_type;
    fail("dequantize_ggml_rows: qtune was built without CUDA kernels (QTUNE_CUDA=OFF)");
#endif
  } else {
    dequantize_ggml_cpu(params, out);
  }
  return out;
}

}  // namespace qtune::kernels
