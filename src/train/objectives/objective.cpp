#include "qtune/train/objectives/objective.h"

#include <cmath>
#include <limits>

#include "qtune/train/objectives/dpo.h"
#include "qtune/train/objectives/kto.h"
#include "qtune/train/objectives/orpo.h"
#include "qtune/train/objectives/simpo.h"
#include "qtune/train/objectives/sft.h"
#include "qtune/train/recipe.h"
#include "qtune/util/error.h"

namespace qtune::train {

std::vector<double> Objective::metric_values(const std::vector<double>& sums, const std::vector<double>& counts) const {
  std::vector<double> out;
  for (size_t i = 0; i < sums.size(); ++i)
    out.push_back(counts[i] > 0 ? sums[i] / counts[i] : std::numeric_limits<double>::quiet_NaN());
  return out;
}

std::unique_ptr<Objective> make_objective(const Recipe& recipe) {
  const auto& name = recipe.train.objective;
  if (name == "sft") return std::make_unique<SftObjective>();
  if (name == "dpo")
    return std::make_unique<DpoObjective>(DpoOptions{recipe.dpo.beta, recipe.dpo.loss_type, recipe.dpo.label_smoothing});
  if (name == "orpo") return std::make_unique<OrpoObjective>(recipe.orpo.beta);
  if (name == "simpo") {
    const auto& s = recipe.simpo;
    return std::make_unique<SimpoObjective>(SimpoOptions{s.beta, s.gamma, s.label_smoothing, s.cpo_alpha});
  }
  if (name == "kto") {
    const auto& k = recipe.kto;
    return std::make_unique<KtoObjective>(KtoOptions{k.beta, k.desirable_weight, k.undesirable_weight});
  }
  fail("{}: train.objective must be sft, dpo, orpo, simpo or kto, got '{}'", recipe.source, name);
}

}  // namespace qtune::train
