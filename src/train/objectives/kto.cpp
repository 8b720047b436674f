#include "qtune/train/objectives/kto.h"

#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>

#include "qtune/dist/communicator.h"
#include "qtune/train/objectives/reference_logps.h"
#include "qtune/train/objectives/sequence_logps.h"
#include "qtune/util/error.h"

namespace qtune::train {
namespace {

// The log-ratio of each row to the reference: the policy's differentiable, the reference's under no-grad.
at::Tensor logratios(nn::CausalLMImpl& model, const data::Batch& b, const ReferenceTable* table,
                     at::Tensor* policy_logps = nullptr) {
  const auto policy = sequence_logps(model, b).logps;
  const auto reference = reference_logps(model, b, table);
  if (policy_logps) *policy_logps = policy;
  return policy - reference;
}

}  // namespace

at::Tensor kto_losses(const KtoOptions& o, const at::Tensor& r, const at::Tensor& desirable, double z) {
  return at::where(desirable, o.desirable_weight * (1 - at::sigmoid(o.beta * (r - z))),
                   o.undesirable_weight * (1 - at::sigmoid(o.beta * (z - r))));
}

void KtoObjective::prepare(nn::CausalLMImpl& model, const data::Batch& share, dist::Communicator* comm) {
  if (share.samples > 0 && !share.mismatched)
    fail("train.objective kto: the batch has no mismatched pairs for the KL term (KTO needs prompt/completion/label "
         "records)");
  double sum = 0, rows = 0;
  if (share.samples > 0) {
    torch::NoGradGuard no_grad;  // TRL detaches the estimate
    sum = logratios(model, *share.mismatched, reference_).sum().item<double>();
    rows = static_cast<double>(share.samples);
  }
  if (comm && comm->connected()) {  // TRL's gather_for_metrics(kl).mean(): every rank's rows
    std::vector<at::Tensor> totals{at::tensor({sum, rows}, at::kDouble)};
    comm->all_reduce_sum(totals, "KTO's KL estimate");
    sum = totals[0][0].item<double>(), rows = totals[0][1].item<double>();
  }
  kl_ = rows > 0 ? std::max(0.0, sum / rows) : 0.0;
}

std::vector<std::string> KtoObjective::metric_names() const {
  return {"rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected", "kl"};
}

ObjectiveLoss KtoObjective::loss(nn::CausalLMImpl& model, const data::Batch& b) {
  at::Tensor policy;
  const auto r = logratios(model, b, reference_, &policy);
  const auto desirable = b.desirable.to(r.device());
  const auto losses = kto_losses(options_, r, desirable, kl_);
  const auto rewards = options_.beta * r.detach();
  const auto logps = policy.detach();
  const auto undesirable = desirable.logical_not();
  auto sum_where = [](const at::Tensor& t, const at::Tensor& mask) {
    return at::where(mask, t, at::zeros_like(t)).sum().item<double>();
  };
  const double n = static_cast<double>(b.samples);
  const double chosen = desirable.sum().item<double>(), rejected = n - chosen;
  // TRL's metrics: the rewards and log-probabilities as means over the records of each label; the KL estimate.
  return {losses.sum(),
          {sum_where(rewards, desirable), sum_where(rewards, undesirable), 0.0, sum_where(logps, desirable),
           sum_where(logps, undesirable), kl_ * n},
          {chosen, rejected, n, chosen, rejected, n}};
}

std::vector<double> KtoObjective::metric_values(const std::vector<double>& sums,
                                                const std::vector<double>& counts) const {
  auto v = Objective::metric_values(sums, counts);
  v[2] = v[0] - v[1];  // TRL: rewards/chosen − rewards/rejected (NaN when a label is missing, where TRL logs none)
  return v;
}

}  // namespace qtune::train
