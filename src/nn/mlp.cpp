#include "qtune/nn/mlp.h"

namespace qtune::nn {

MLPImpl::MLPImpl(const io::ModelConfig& c, const std::string& prefix, LinearFactory& factory,
                 const io::WeightSource& weights)
    : activation_(c.activation) {
  const int64_t h = c.hidden_size, i = c.intermediate_size;
  const bool bias = c.mlp_bias;
  if (c.fused_gate_up) {
    gate_up_proj_ = register_module("gate_up_proj", factory.make({prefix + ".gate_up_proj", h, 2 * i, bias}, weights));
  } else {
    gate_proj_ = register_module("gate_proj", factory.make({prefix + ".gate_proj", h, i, bias}, weights));
    up_proj_ = register_module("up_proj", factory.make({prefix + ".up_proj", h, i, bias}, weights));
  }
  down_proj_ = register_module("down_proj", factory.make({prefix + ".down_proj", i, h, bias}, weights));
}

at::Tensor MLPImpl::forward(const at::Tensor& x) {
  at::Tensor gate, up;
  if (gate_up_proj_) {
    const auto both = gate_up_proj_->forward(x);
    const int64_t i = both.size(-1) / 2;
    gate = both.narrow(-1, 0, i), up = both.narrow(-1, i, i);
  } else {
    gate = gate_proj_->forward(x), up = up_proj_->forward(x);
  }
  const auto act = activation_ == io::Activation::GeluTanh ? at::gelu(gate, "tanh") : at::silu(gate);
  return down_proj_->forward(act * up);
}

}  // namespace qtune::nn
