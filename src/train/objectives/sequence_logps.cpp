#include "qtune/train/objectives/sequence_logps.h"

#include "qtune/train/chunked_loss.h"

namespace qtune::train {

at::Tensor forward_hidden(nn::CausalLMImpl& model, const data::Batch& b) {
  nn::ForwardOptions fo;
  fo.position_ids = b.position_ids;
  fo.segment_ids = b.segment_ids;
  return model.hidden_states(b.input_ids, fo);
}

SequenceLogps sequence_logps(nn::CausalLMImpl& model, const at::Tensor& hidden, const at::Tensor& targets_in) {
  const auto targets = targets_in.to(hidden.device());
  const double softcap = model.config().final_logit_softcapping.value_or(0);
  std::vector<at::Tensor> rows;
  for (int64_t i = 0; i < hidden.size(0); ++i)
    rows.push_back(-chunked_cross_entropy(hidden.narrow(0, i, 1), model.lm_head_weight(), targets.narrow(0, i, 1), 0,
                                          softcap)
                        .sum);
  SequenceLogps out;
  out.logps = rows.empty() ? at::zeros({0}, hidden.options().dtype(at::kFloat)) : at::stack(rows);
  out.tokens = targets_in.ne(data::kIgnoreLabel).sum(1).cpu();
  return out;
}

SequenceLogps sequence_logps(nn::CausalLMImpl& model, const data::Batch& b) {
  return sequence_logps(model, forward_hidden(model, b), b.targets);
}

at::Tensor sequence_targets(const data::Batch& b) {
  const int64_t t = b.input_ids.size(1);
  auto out = at::full_like(b.input_ids, data::kIgnoreLabel);
  if (t < 2) return out;
  // Position k predicts token k + 1 of the same sample (one sample per row: segment 0; padding is -1).
  const auto next = b.input_ids.narrow(1, 1, t - 1);
  const auto same = b.segment_ids.narrow(1, 1, t - 1).eq(b.segment_ids.narrow(1, 0, t - 1)) &
                    b.segment_ids.narrow(1, 1, t - 1).ge(0);
  out.narrow(1, 0, t - 1).copy_(at::where(same, next, at::full_like(next, data::kIgnoreLabel)));
  return out;
}

}  // namespace qtune::train
