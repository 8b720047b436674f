#pragma once
// Kahneman-Tversky Optimization (Ethayarajh et al. 2024), as TRL's KTOTrainer computes it. Each record is one
// completion labelled desirable or undesirable; its implied reward is its log-ratio to the reference (the base with
// the adapters off), r = log π(y|x) − log π_ref(y|x), measured against the KL estimate z = max(0, mean over the
// micro-batch's mismatched pairs (x_i, y_{i−1}) of their log-ratio), detached and taken over every rank's rows:
//   desirable     w_d (1 − σ(β (r − z)))
//   undesirable   w_u (1 − σ(β (z − r)))
// Units are records: a step's loss is the mean over its records (TRL's losses.nanmean()).
#include "qtune/train/objectives/objective.h"

namespace qtune::train {

struct KtoOptions {
  double beta = 0.1;
  double desirable_weight = 1.0, undesirable_weight = 1.0;
};

// The loss of each record from its log-ratio [n], its label [n] (bool) and the KL estimate.
at::Tensor kto_losses(const KtoOptions& o, const at::Tensor& logratios, const at::Tensor& desirable, double kl);

class KtoObjective : public Objective {
 public:
  explicit KtoObjective(KtoOptions options) : options_(options) {}
  const char* name() const override { return "kto"; }
  int64_t units(const data::Batch& batch) const override { return batch.samples; }
  void prepare(nn::CausalLMImpl& model, const data::Batch& share, dist::Communicator* comm) override;
  ObjectiveLoss loss(nn::CausalLMImpl& model, const data::Batch& batch) override;
  std::vector<std::string> metric_names() const override;
  std::vector<double> metric_values(const std::vector<double>& sums, const std::vector<double>& counts) const override;
  bool uses_reference() const override { return true; }

 private:
  KtoOptions options_;
  double kl_ = 0;  // the last prepare()'s estimate
};

}  // namespace qtune::train
