#pragma once
// The CPU kernels' one switch over the output dtypes their dispatchers accept (fp32, bf16, fp16): calls `run` with
// the output's typed pointer. Any other dtype was already rejected there (kernels::out_type_of).
#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

namespace qtune::kernels {

template <typename Run>
void with_typed_out(at::Tensor& out, Run&& run) {
  switch (out.scalar_type()) {
    case at::kFloat: run(out.data_ptr<float>()); break;
    case at::kBFloat16: run(out.data_ptr<c10::BFloat16>()); break;
    case at::kHalf: run(out.data_ptr<c10::Half>()); break;
    default: break;
  }
}

}  // namespace qtune::kernels
