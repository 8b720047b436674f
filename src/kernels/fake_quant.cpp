#include "qtune/kernels/fake_quant.h"

#include <ATen/record_function.h>

#include "qtune/util/error.h"

#if QTUNE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace qtune::kernels {

std::pair<at::Tensor, at::Tensor> fake_quantize_affine(const at::Tensor& x, const at::Tensor& scale,
                                                       const at::Tensor& zero, int64_t group, int64_t qmin,
                                                       int64_t qmax) {
  RECORD_FUNCTION("qtune::fake_quantize_affine", std::vector<c10::IValue>{});
  if (x.dim() != 2 || x.scalar_type() != at::kFloat) fail("fake_quantize_affine: expected a 2-D fp32 tensor");
  if (group <= 0 || x.size(1) % group != 0)
    fail("fake_quantize_affine: group {} does not divide the {} columns", group, x.size(1));
  const std::vector<int64_t> qshape = {x.size(0), x.size(1) / group};
  for (const auto* t : {&scale, &zero})
    if (t->sizes() != at::IntArrayRef(qshape) || t->scalar_type() != at::kFloat || t->device() != x.device())
      fail("fake_quantize_affine: scale and zero must be fp32 [{}, {}] on {}", qshape[0], qshape[1], x.device().str());
  if (qmin >= qmax) fail("fake_quantize_affine: empty range [{}, {}]", qmin, qmax);
  const auto xc = x.contiguous(), sc = scale.contiguous(), zc = zero.contiguous();
  // torchao multiplies by the reciprocal (x * (1.0 / scale)); computed by ATen so both devices take the same one.
  const auto inv = sc.reciprocal();
  auto out = at::empty_like(xc);
  auto mask = at::empty(xc.sizes(), xc.options().dtype(at::kBool));
  FakeQuantAffineParams p;
  p.x = xc.data_ptr<float>();
  p.scale = sc.data_ptr<float>();
  p.inv_scale = inv.data_ptr<float>();
  p.zero = zc.data_ptr<float>();
  p.rows = xc.size(0);
  p.cols = xc.size(1);
  p.group = group;
  p.qmin = static_cast<float>(qmin);
  p.qmax = static_cast<float>(qmax);
  auto* mask_bytes = reinterpret_cast<uint8_t*>(mask.data_ptr<bool>());
  if (xc.is_cuda()) {
#if QTUNE_WITH_CUDA
    const c10::cuda::CUDAGuard guard(xc.device());
    fake_quantize_affine_cuda(p, out.data_ptr<float>(), mask_bytes, at::cuda::getCurrentCUDAStream().stream());
#else
    fail("fake_quantize_affine: qtune was built without CUDA kernels (QTUNE_CUDA=OFF)");
#endif
  } else {
    fake_quantize_affine_cpu(p, out.data_ptr<float>(), mask_bytes);
  }
  return {out, mask};
}

}  // namespace qtune::kernels
