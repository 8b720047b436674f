#include "qtune/train/objectives/objective.h"

#include "qtune/train/objectives/dpo.h"
#include "qtune/train/objectives/orpo.h"
#include "qtune/train/objectives/simpo.h"
#include "qtune/train/objectives/sft.h"
#include "qtune/train/recipe.h"
#include "qtune/util/error.h"

namespace qtune::train {

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
  fail("{}: train.objective must be sft, dpo, orpo or simpo, got '{}'", recipe.source, name);
}

}  // namespace qtune::train
