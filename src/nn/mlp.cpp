#include "qtune/nn/mlp.h"

namespace qtune::nn {

MLPImpl::MLPImpl(const io::ModelConfig& c, const std::string& prefix, LinearFactory& factory,
                 const io::WeightSource& weights) {
  const int64_t h = c.hidden_size, i = c.intermediate_size;
  const bool bias = c.mlp_bias;
  gate_proj_ = register_module("gate_proj", factory.make({prefix + ".gate_proj", h, i, bias}, weights));
  up_proj_ = register_module("up_proj", factory.make({prefix + ".up_proj", h, i, bias}, weights));
  down_proj_ = register_module("down_proj", factory.make({prefix + ".down_proj", i, h, bias}, weights));
}

at::Tensor MLPImpl::forward(const at::Tensor& x) {
  return down_proj_->forward(at::silu(gate_proj_->forward(x)) * up_proj_->forward(x));
}

}  // namespace qtune::nn
