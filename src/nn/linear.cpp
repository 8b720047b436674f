#include "qtune/nn/linear.h"

#include "qtune/util/error.h"

namespace qtune::nn {

at::Tensor load_frozen(const io::WeightSource& weights, const std::string& name, at::IntArrayRef shape,
                       at::TensorOptions options) {
  auto t = weights.get(name, shape);
  // Integer codes read as a dense tensor would be garbage weights, silently: a quantized checkpoint without the
  // quantization_config that says how to read it (or a config that leaves this tensor out).
  if (!at::isFloatingType(t.scalar_type()))
    fail("{}: is {}, not a floating-point tensor; quantized codes need a config.json quantization_config that covers "
         "them",
         weights.origin(name), c10::toString(t.scalar_type()));
  return t.to(options).set_requires_grad(false);
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
