#pragma once
// SimPO (Meng et al. 2024), as TRL's CPOTrainer computes it with loss_type "simpo": no reference model; each
// completion's log-probability is its mean per token, and with Δ = c − r:
//   −(1 − ε) log σ(β(Δ − γ/β)) − ε log σ(−β(Δ − γ/β))   [+ cpo_alpha · the chosen completions' NLL: CPO-SimPO]
// Units are pairs.
#include "qtune/train/objectives/objective.h"

namespace qtune::train {

struct SimpoOptions {
  double beta = 0.1, gamma = 0.5;
  double label_smoothing = 0.0;
  double cpo_alpha = 0.0;  // TRL's CPOConfig default is 1 (CPO's behaviour-cloning term); 0 is the SimPO paper's loss
};

class SimpoObjective : public Objective {
 public:
  explicit SimpoObjective(SimpoOptions options) : o_(options) {}
  const char* name() const override { return "simpo"; }
  int64_t units(const data::Batch& batch) const override { return batch.samples / 2; }
  ObjectiveLoss loss(nn::CausalLMImpl& model, const data::Batch& batch) override;
  std::vector<std::string> metric_names() const override;

 private:
  SimpoOptions o_;
};

}  // namespace qtune::train
