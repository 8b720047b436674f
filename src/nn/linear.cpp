#include "qtune/nn/linear.h"

namespace qtune::nn {

at::Tensor load_frozen(const io::WeightSource& weights, const std::string& name, at::IntArrayRef shape,
                       at::TensorOptions options) {
  return weights.get(name, shape).to(options).set_requires_grad(false);
}

DenseLinearImpl::DenseLinearImpl(LinearSpec spec, at::Tensor weight, at::Tensor bias)
    : LinearImpl(std::move(spec)) {
  weight_ = register_parameter("weight", std::move(weight), /*requires_grad=*/false);
  if (bias.defined()) bias_ = register_parameter("bias", std::move(bias), /*requires_grad=*/false);
}

at::Tensor DenseLinearImpl::forward(const at::Tensor& x) { return at::linear(x, weight_, bias_); }

Linear DenseLinearFactory::make(const LinearSpec& spec, const io::WeightSource& weights) {
  auto w = load_frozen(weights, spec.name + ".weight", {spec.out_features, spec.in_features}, options_);
  at::Tensor b;
  if (spec.bias) b = load_frozen(weights, spec.name + ".bias", {spec.out_features}, options_);
  return std::make_shared<DenseLinearImpl>(spec, std::move(w), std::move(b));
}

}  // namespace qtune::nn
