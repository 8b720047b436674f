#include "qtune/train/objectives/dpo.h"

#include "qtune/train/objectives/reference_logps.h"
#include "qtune/train/objectives/sequence_logps.h"
#include "qtune/util/error.h"

namespace qtune::train {

at::Tensor dpo_pair_loss(const DpoOptions& o, const at::Tensor& chosen, const at::Tensor& rejected,
                         const at::Tensor& ref_chosen, const at::Tensor& ref_rejected, const at::Tensor& chosen_tokens,
                         const at::Tensor& rejected_tokens) {
  const double beta = o.beta, eps = o.label_smoothing;
  const auto chosen_ratio = chosen - ref_chosen, rejected_ratio = rejected - ref_rejected;
  const auto delta = chosen_ratio - rejected_ratio;
  if (o.loss_type == "sigmoid") return -at::log_sigmoid(beta * delta);
  if (o.loss_type == "robust")
    return (-(1 - eps) * at::log_sigmoid(beta * delta) + eps * at::log_sigmoid(-beta * delta)) / (1 - 2 * eps);
  if (o.loss_type == "hinge") return at::relu(1 - beta * delta);
  if (o.loss_type == "ipo") {
    // TRL (confirmed with IPO's authors): each log-ratio per completion token, so β means the same at any length.
    const auto per_token = chosen_ratio / chosen_tokens.clamp_min(1) - rejected_ratio / rejected_tokens.clamp_min(1);
    return (per_token - 1 / (2 * beta)).square();
  }
  fail("dpo.loss_type must be sigmoid, ipo, robust or hinge, got '{}'", o.loss_type);
}

std::vector<std::string> DpoObjective::metric_names() const {
  return {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
          "logps/rejected"};
}

ObjectiveLoss DpoObjective::loss(nn::CausalLMImpl& model, const data::Batch& b) {
  const auto policy = sequence_logps(model, b);
  const auto reference = reference_logps(model, b, reference_);
  // Rows alternate chosen, rejected.
  const auto pairs = policy.logps.view({-1, 2}), refs = reference.view({-1, 2});
  const auto tokens = policy.tokens.view({-1, 2}).to(pairs.device()).to(at::kFloat);
  const auto chosen = pairs.select(1, 0), rejected = pairs.select(1, 1);
  const auto ref_chosen = refs.select(1, 0), ref_rejected = refs.select(1, 1);
  const auto losses =
      dpo_pair_loss(options_, chosen, rejected, ref_chosen, ref_rejected, tokens.select(1, 0), tokens.select(1, 1));
  const auto chosen_rewards = options_.beta * (chosen - ref_chosen).detach();
  const auto rejected_rewards = options_.beta * (rejected - ref_rejected).detach();
  auto sum = [](const at::Tensor& t) { return t.sum().item<double>(); };
  return {losses.sum(),
          {sum(chosen_rewards), sum(rejected_rewards), sum((chosen_rewards > rejected_rewards).to(at::kFloat)),
           sum(chosen_rewards - rejected_rewards), sum(chosen.detach()), sum(rejected.detach())}};
}

}  // namespace qtune::train
