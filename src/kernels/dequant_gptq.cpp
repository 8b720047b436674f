#include "qtune/kernels/dequant_gptq.h"

#include <ATen/record_function.h>

#include "qtune/kernels/dequant.h"
#include "qtune/util/error.h"

#if QTUNE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace qtune::kernels {

at::Tensor dequantize_gptq(const quant::GptqTensors& t, int bits, at::ScalarType dtype) {
  RECORD_FUNCTION("qtune::dequantize_gptq", std::vector<c10::IValue>{});
  const auto type = out_type_of(dtype, "dequantize_gptq");
  const int64_t k = 32 / bits, in = t.qweight.size(0) * k, out = t.qweight.size(1);
  for (const auto* x : {&t.qweight, &t.qzeros, &t.g_idx})
    if (x->scalar_type() != at::kInt || !x->is_contiguous() || x->device() != t.qweight.device())
      fail("dequantize_gptq: qweight, qzeros and g_idx must be contiguous int32 on one device");
  if (t.scales.scalar_type() != at::kHalf || !t.scales.is_contiguous() || t.scales.device() != t.qweight.device())
    fail("dequantize_gptq: scales must be contiguous fp16 beside the codes");
  auto result = at::empty({out, in}, at::TensorOptions().dtype(dtype).device(t.qweight.device()));
  DequantGptqParams p;
  p.qweight = t.qweight.data_ptr<int32_t>();
  p.qzeros = t.qzeros.data_ptr<int32_t>();
  p.scales = reinterpret_cast<const uint16_t*>(t.scales.data_ptr<at::Half>());
  p.g_idx = t.g_idx.data_ptr<int32_t>();
  p.out = out;
  p.in = in;
  p.bits = bits;
  if (t.qweight.is_cuda()) {
#if QTUNE_WITH_CUDA
    const c10::cuda::CUDAGuard guard(t.qweight.device());
    dequantize_gptq_cuda(p, type, result.data_ptr(), at::cuda::getCurrentCUDAStream().stream());
#else
    (void)type;
    fail("dequantize_gptq: qtune was built without CUDA kernels (QTUNE_CUDA=OFF)");
#endif
  } else {
    dequantize_gptq_cpu(p, result);
  }
  return result;
}

}  // namespace qtune::kernels
