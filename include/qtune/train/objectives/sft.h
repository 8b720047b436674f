#pragma once
// Supervised fine-tuning: the mean next-token cross-entropy over every target token of the step.
#include "qtune/train/objectives/objective.h"

namespace qtune::train {

class SftObjective : public Objective {
 public:
  const char* name() const override { return "sft"; }
  int64_t units(const data::Batch& batch) const override { return batch.target_tokens; }
  ObjectiveLoss loss(nn::CausalLMImpl& model, const data::Batch& batch) override;
};

}  // namespace qtune::train
