#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>

namespace qtune::nn {

// RMSNorm computed in fp32, exactly as transformers does it. Llama's casts the normalized input back before the
// weight; Gemma's (plus_one) scales by (1 + w) in fp32 and casts the product (a stored w of 0 is the identity).
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(at::Tensor weight, double eps, bool plus_one = false);
  at::Tensor forward(const at::Tensor& x);
  const at::Tensor& weight() const { return weight_; }
  bool plus_one() const { return plus_one_; }

 private:
  at::Tensor weight_;
  double eps_;
  bool plus_one_;
};

}  // namespace qtune::nn
