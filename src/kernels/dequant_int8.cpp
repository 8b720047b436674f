#include "qtune/kernels/dequant_int8.h"

#include <ATen/record_function.h>

#include "qtune/kernels/dequant.h"
#include "qtune/util/error.h"

#if QTUNE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace qtune::kernels {

at::Tensor dequantize_int8(const quant::Int8State& state, at::ScalarType dtype) {
  RECORD_FUNCTION("qtune::dequantize_int8", std::vector<c10::IValue>{});  // a named row in profiles (no ATen op)
  state.validate("dequantize_int8");
  const auto type = out_type_of(dtype, "dequantize_int8");
  auto out = at::empty(state.codes.sizes(), at::TensorOptions().dtype(dtype).device(state.codes.device()));
  DequantInt8Params params;
  params.codes = state.codes.data_ptr<int8_t>();
  params.row_absmax = state.row_absmax.data_ptr<float>();
  params.rows = state.rows();
  params.cols = state.cols();
  if (state.codes.is_cuda()) {
#if QTUNE_WITH_CUDA
    const c10::cuda::CUDAGuard guard(state.codes.device());  // launch on the codes' GPU, on its current stream
    dequantize_int8_cuda(params, type, out.data_ptr(), at::cuda::getCurrentCUDAStream().stream());
#else
    (void)type;
    fail("dequantize_int8: qtune was built without CUDA kernels (QTUNE_CUDA=OFF)");
#endif
  } else {
    dequantize_int8_cpu(params, out);
  }
  return out;
}

}  // namespace qtune::kernels
