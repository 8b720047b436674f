#include "qtune/kernels/dequant.h"

#include <ATen/record_function.h>

#include "qtune/util/error.h"

#if QTUNE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace qtune::kernels {
OutType out_type_of(at::ScalarType dtype, const char* what) {
  switch (dtype) {
    case at::kFloat: return OutType::F32;
    case at::kBFloat16: return OutType::BF16;
    case at::kHalf: return OutType::F16;
    default: fail("{}: output dtype must be fp32, bf16 or fp16, got {}", what, c10::toString(dtype));
  }
}

Dequant4bitParams params_of(const quant::Quant4State& s) {
  Dequant4bitParams p;
  p.packed = s.packed.data_ptr<uint8_t>();
  p.n = s.numel();
  p.blocksize = s.blocksize;
  p.code = s.code.data_ptr<float>();
  if (s.nested) {
    p.absmax_codes = s.nested->codes.data_ptr<uint8_t>();
    p.nested_map = s.nested->map.data_ptr<float>();
    p.nested_absmax = s.nested->absmax.data_ptr<float>();
    p.nested_blocksize = s.nested->blocksize;
    p.offset = s.nested->offset;
  } else {
    p.absmax = s.absmax.data_ptr<float>();
  }
  return p;
}

bool cuda_kernels_built() { return QTUNE_WITH_CUDA != 0; }

at::Tensor dequantize_4bit(const quant::Quant4State& state, at::ScalarType dtype) {
  RECORD_FUNCTION("qtune::dequantize_4bit", std::vector<c10::IValue>{});  // a named row in profiles (no ATen op)
  state.validate("dequantize_4bit");
  const auto type = out_type_of(dtype, "dequantize_4bit");
  auto out = at::empty(state.shape, at::TensorOptions().dtype(dtype).device(state.packed.device()));
  const auto params = params_of(state);
  if (state.packed.is_cuda()) {
#if QTUNE_WITH_CUDA
    const c10::cuda::CUDAGuard guard(state.packed.device());  // launch on the codes' GPU, on its current stream
    dequantize_4bit_cuda(params, type, out.data_ptr(), at::cuda::getCurrentCUDAStream().stream());
#else
    fail("dequantize_4bit: qtune was built without CUDA kernels (QTUNE_CUDA=OFF)");
#endif
  } else {
    dequantize_4bit_cpu(params, out);
  }
  return out;
}

}  // namespace qtune::kernels
