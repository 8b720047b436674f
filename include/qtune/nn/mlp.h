#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include "qtune/io/hf_config.h"
#include "qtune/nn/linear.h"

namespace qtune::nn {

// SwiGLU: down(silu(gate(x)) * up(x)).
class MLPImpl : public torch::nn::Module {
 public:
  MLPImpl(const io::ModelConfig& config, const std::string& prefix, LinearFactory& factory,
          const io::WeightSource& weights);
  at::Tensor forward(const at::Tensor& x);

 private:
  Linear gate_proj_, up_proj_, down_proj_;
};

}  // namespace qtune::nn
