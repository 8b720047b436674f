#include "qtune/train/objectives/sft.h"

#include "qtune/train/chunked_loss.h"

namespace qtune::train {

ObjectiveLoss SftObjective::loss(nn::CausalLMImpl& model, const data::Batch& b) {
  nn::ForwardOptions fo;
  fo.position_ids = b.position_ids;
  fo.segment_ids = b.segment_ids;
  auto hidden = model.hidden_states(b.input_ids, fo);
  auto ls = chunked_cross_entropy(hidden, model.lm_head_weight(), b.targets.to(hidden.device()), 0,
                                  model.config().final_logit_softcapping.value_or(0));
  return {ls.sum, {}};
}

}  // namespace qtune::train
