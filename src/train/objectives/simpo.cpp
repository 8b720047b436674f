#include "qtune/train/objectives/simpo.h"

#include "qtune/train/chunked_loss.h"
#include "qtune/train/objectives/sequence_logps.h"

namespace qtune::train {

std::vector<std::string> SimpoObjective::metric_names() const {
  return {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
          "logps/chosen",   "logps/rejected",   "nll_loss"};
}

ObjectiveLoss SimpoObjective::loss(nn::CausalLMImpl& model, const data::Batch& b) {
  const auto hidden = forward_hidden(model, b);
  const auto seq = sequence_logps(model, hidden, b.targets);
  const auto mean = (seq.logps / seq.tokens.to(seq.logps.device()).clamp_min(1).to(at::kFloat)).view({-1, 2});
  const auto chosen = mean.select(1, 0), rejected = mean.select(1, 1);
  const auto logits = (chosen - rejected) - o_.gamma / o_.beta;
  const double eps = o_.label_smoothing;
  auto losses = -(1 - eps) * at::log_sigmoid(o_.beta * logits) - eps * at::log_sigmoid(-o_.beta * logits);
  const auto pairs = static_cast<double>(chosen.size(0));
  at::Tensor total = losses.sum();
  double nll_value = 0;
  if (o_.cpo_alpha != 0) {  // the chosen completions' NLL, a token mean over the micro-batch
    const auto chosen_rows = at::arange(0, hidden.size(0), 2, at::kLong);
    const auto nll = chunked_cross_entropy(hidden.index_select(0, chosen_rows.to(hidden.device())),
                                           model.lm_head_weight(),
                                           b.targets.index_select(0, chosen_rows).to(hidden.device()), 0,
                                           model.config().final_logit_softcapping.value_or(0));
    const auto nll_mean = nll.sum / static_cast<double>(std::max<int64_t>(nll.tokens, 1));
    total = total + o_.cpo_alpha * pairs * nll_mean;
    nll_value = nll_mean.item<double>() * pairs;
  }
  const auto chosen_rewards = o_.beta * chosen.detach(), rejected_rewards = o_.beta * rejected.detach();
  auto sum = [](const at::Tensor& t) { return t.sum().item<double>(); };
  return {total,
          {sum(chosen_rewards), sum(rejected_rewards), sum((chosen_rewards > rejected_rewards).to(at::kFloat)),
           sum(chosen_rewards - rejected_rewards), sum(chosen.detach()), sum(rejected.detach()), nll_value}};
}

}  // namespace qtune::train
