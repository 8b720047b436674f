#include "qtune/nn/rmsnorm.h"

namespace qtune::nn {

RMSNormImpl::RMSNormImpl(at::Tensor weight, double eps, bool plus_one) : eps_(eps), plus_one_(plus_one) {
  weight_ = register_parameter("weight", std::move(weight), /*requires_grad=*/false);
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  auto h = x.to(at::kFloat);
  h = h * at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  if (plus_one_) return (h * (1.0 + weight_.to(at::kFloat))).to(x.scalar_type());
  return weight_ * h.to(x.scalar_type());
}

}  // namespace qtune::nn
