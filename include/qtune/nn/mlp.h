#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include "qtune/io/hf_config.h"
#include "qtune/nn/linear.h"

namespace qtune::nn {

// The gated MLP: down(act(gate(x)) * up(x)), act SiLU (SwiGLU) or tanh-GELU (Gemma's GeGLU). Phi-3 stores gate and up
// as one gate_up_proj, [gate; up] by rows, whose output is split in halves.
class MLPImpl : public torch::nn::Module {
 public:
  MLPImpl(const io::ModelConfig& config, const std::string& prefix, LinearFactory& factory,
          const io::WeightSource& weights);
  at::Tensor forward(const at::Tensor& x);

 private:
  io::Activation activation_;
  Linear gate_proj_, up_proj_, gate_up_proj_, down_proj_;  // gate/up or gate_up (fused), never both
};

}  // namespace qtune::nn
