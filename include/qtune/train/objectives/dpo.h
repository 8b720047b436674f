#pragma once
// Direct Preference Optimization (Rafailov et al. 2023) and its variants, as TRL's DPOTrainer computes them. A batch
// holds pairs in adjacent rows (chosen, rejected); the policy's sequence log-probabilities come from one forward over
// both, the reference's from the same model with its adapters off (lora/adapter_switch.h), under no-grad in the same
// step: no second model. With Δ = (log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r)):
//   sigmoid  −log σ(βΔ)
//   robust   (−(1−ε) log σ(βΔ) + ε log σ(−βΔ)) / (1 − 2ε)
//   hinge    max(0, 1 − βΔ)
//   ipo      (Δ' − 1/(2β))², Δ' taking each log-ratio per completion token
// Units are pairs: a step's loss is the mean over its pairs.
#include <string>

#include "qtune/train/objectives/objective.h"

namespace qtune::train {

struct DpoOptions {
  double beta = 0.1;
  std::string loss_type = "sigmoid";  // sigmoid | ipo | robust | hinge
  double label_smoothing = 0.0;
};

// The loss of each pair from the log-probabilities of its completions ([pairs] each) and their token counts.
at::Tensor dpo_pair_loss(const DpoOptions& o, const at::Tensor& chosen, const at::Tensor& rejected,
                         const at::Tensor& ref_chosen, const at::Tensor& ref_rejected, const at::Tensor& chosen_tokens,
                         const at::Tensor& rejected_tokens);

class DpoObjective : public Objective {
 public:
  explicit DpoObjective(DpoOptions options) : options_(std::move(options)) {}
  const char* name() const override { return "dpo"; }
  int64_t units(const data::Batch& batch) const override { return batch.samples / 2; }
  ObjectiveLoss loss(nn::CausalLMImpl& model, const data::Batch& batch) override;
  std::vector<std::string> metric_names() const override;
  bool uses_reference() const override { return true; }

 private:
  DpoOptions options_;
};

}  // namespace qtune::train
