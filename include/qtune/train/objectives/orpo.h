#pragma once
// ORPO (Hong et al. 2024), as TRL's ORPOTrainer computes it: no reference model. The chosen side's NLL over its whole
// sequence (prompt included, a token mean over the micro-batch) minus β · log σ(log odds), where each completion's
// log-probability is its mean per token and odds(p) = p / (1 − p):
//   log_odds = (c − r) − (log(1 − e^c) − log(1 − e^r))
// Units are pairs (the micro-batch's NLL counts once per pair in it).
#include "qtune/train/objectives/objective.h"

namespace qtune::train {

class OrpoObjective : public Objective {
 public:
  explicit OrpoObjective(double beta) : beta_(beta) {}
  const char* name() const override { return "orpo"; }
  int64_t units(const data::Batch& batch) const override { return batch.samples / 2; }
  ObjectiveLoss loss(nn::CausalLMImpl& model, const data::Batch& batch) override;
  std::vector<std::string> metric_names() const override;

 private:
  double beta_;
};

}  // namespace qtune::train
