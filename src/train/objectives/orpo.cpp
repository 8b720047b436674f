#include "qtune/train/objectives/orpo.h"

#include "qtune/train/chunked_loss.h"
#include "qtune/train/objectives/sequence_logps.h"

namespace qtune::train {
namespace {

// log(1 − e^x) for x < 0, split at −ln 2 as TRL's log1mexp (no cancellation on either side).
at::Tensor log1mexp(const at::Tensor& x) {
  return at::where(x < -0.6931471805599453, at::log1p(-at::exp(x)), at::log(-at::expm1(x)));
}

}  // namespace

std::vector<std::string> OrpoObjective::metric_names() const {
  return {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
          "logps/rejected", "nll_loss",       "log_odds_ratio",     "log_odds_chosen"};
}

ObjectiveLoss OrpoObjective::loss(nn::CausalLMImpl& model, const data::Batch& b) {
  const auto hidden = forward_hidden(model, b);
  const auto seq = sequence_logps(model, hidden, b.targets);
  const auto mean = (seq.logps / seq.tokens.to(seq.logps.device()).clamp_min(1).to(at::kFloat)).view({-1, 2});
  const auto chosen = mean.select(1, 0), rejected = mean.select(1, 1);
  const auto log_odds = (chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected));
  const auto ratio = at::log_sigmoid(log_odds);
  // The chosen rows' NLL over every token of their sequence, prompt included.
  const auto chosen_rows = at::arange(0, hidden.size(0), 2, at::kLong).to(hidden.device());
  const auto nll = chunked_cross_entropy(hidden.index_select(0, chosen_rows), model.lm_head_weight(),
                                         sequence_targets(b).index_select(0, chosen_rows.cpu()).to(hidden.device()),
                                         0, model.config().final_logit_softcapping.value_or(0));
  const auto pairs = static_cast<double>(chosen.size(0));
  const auto nll_mean = nll.sum / static_cast<double>(std::max<int64_t>(nll.tokens, 1));
  const auto chosen_rewards = beta_ * chosen.detach(), rejected_rewards = beta_ * rejected.detach();
  auto sum = [](const at::Tensor& t) { return t.sum().item<double>(); };
  return {nll_mean * pairs - beta_ * ratio.sum(),
          {sum(chosen_rewards), sum(rejected_rewards), sum((chosen_rewards > rejected_rewards).to(at::kFloat)),
           sum(chosen_rewards - rejected_rewards), sum(chosen.detach()), sum(rejected.detach()),
           nll_mean.item<double>() * pairs, sum(ratio.detach()), sum(log_odds.detach())}};
}

}  // namespace qtune::train
