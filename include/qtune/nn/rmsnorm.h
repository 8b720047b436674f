#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>

namespace qtune::nn {

// Llama's RMSNorm, computed in fp32 and cast back before the weight, exactly as transformers does.
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(at::Tensor weight, double eps);
  at::Tensor forward(const at::Tensor& x);
  const at::Tensor& weight() const { return weight_; }

 private:
  at::Tensor weight_;
  double eps_;
};

}  // namespace qtune::nn
