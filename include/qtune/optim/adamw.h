#pragma once
// AdamW with fp32 state, the same arithmetic as LibTorch's torch::optim::AdamW (decoupled weight decay
// p *= 1 - lr * wd, bias-corrected moments, addcdiv), so its results equal torch's bit for bit. `paged` puts
// the moments in CUDA managed memory for parameters on a GPU (paged_state.h); the arithmetic is unchanged.
#include "qtune/optim/optimizer.h"

namespace qtune::optim {

class AdamW : public Optimizer {
 public:
  AdamW(NamedParams params, AdamWOptions options, bool paged = false);
  void step(double lr) override;
  std::string kind() const override { return paged_ ? "paged_adamw" : "adamw"; }

 protected:
  std::vector<std::pair<std::string, at::Tensor>> state_tensors() const override;

 private:
  bool paged_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;  // one per parameter, its shape
};

}  // namespace qtune::optim
