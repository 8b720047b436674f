#pragma once
// What a training step minimises, behind one small interface: the trainer's loop is the same for every objective
// (next-token SFT, the preference losses), which give it the loss of a micro-batch, the units that loss sums over,
// and their metrics. The loop divides by the step's units (every micro-batch and rank), so a step's loss is the mean
// over its tokens (SFT) or its pairs (DPO), however the step was split.
#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "qtune/data/collate.h"
#include "qtune/nn/decoder.h"

namespace qtune::dist {
class Communicator;
}

namespace qtune::train {

struct Recipe;
class ReferenceTable;

struct ObjectiveLoss {
  at::Tensor sum;                   // scalar fp32, differentiable: Σ over the micro-batch's units of their losses
  std::vector<double> metric_sums;  // Σ over the same units of each of metric_names()
  // What each metric's sum is divided by (KTO's rewards/chosen: the desirable records); empty: the units.
  std::vector<double> metric_counts;
};

class Objective {
 public:
  virtual ~Objective() = default;
  virtual const char* name() const = 0;
  // The units of a micro-batch that its loss sums over: target tokens (SFT), pairs (DPO). Counted on the global
  // micro-batch before a rank takes its share, so every rank knows the step's total without a collective.
  virtual int64_t units(const data::Batch& batch) const = 0;
  virtual ObjectiveLoss loss(nn::CausalLMImpl& model, const data::Batch& batch) = 0;
  // Called before loss() for every micro-batch on every rank, a rank whose share is empty included (loss() is not
  // called on an empty share): what an objective estimates over the whole global micro-batch with one collective,
  // as KTO's KL term, which TRL gathers over the processes.
  virtual void prepare(nn::CausalLMImpl& /*model*/, const data::Batch& /*share*/, dist::Communicator* /*comm*/) {}
  // What loss() sums besides the loss, logged as means over the step's units (TRL's names: "rewards/chosen", ..).
  virtual std::vector<std::string> metric_names() const { return {}; }
  // The logged value of each metric from the step's sums and counts: sum / count (NaN where the count is 0); an
  // objective may derive one from the others (KTO's rewards/margins).
  virtual std::vector<double> metric_values(const std::vector<double>& sums, const std::vector<double>& counts) const;
  // Whether the objective compares with a reference policy (DPO, KTO), whose log-probabilities may be precomputed.
  virtual bool uses_reference() const { return false; }
  // The precomputed reference log-probabilities to read instead of the reference forward (null: computed in the
  // step); the table outlives the objective's use of it.
  void set_reference_table(const ReferenceTable* table) { reference_ = table; }

 protected:
  const ReferenceTable* reference_ = nullptr;
};

// The recipe's train.objective.
std::unique_ptr<Objective> make_objective(const Recipe& recipe);

}  // namespace qtune::train
