#include "qtune/nn/rmsnorm.h"

namespace qtune::nn {

RMSNormImpl::RMSNormImpl(at::Tensor weight, double eps) : eps_(eps) {
  weight_ = register_parameter("weight", std::move(weight), /*requires_grad=*/false);
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  auto h = x.to(at::kFloat);
  h = h * at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return weight_ * h.to(x.scalar_type());
}

}  // namespace qtune::nn
