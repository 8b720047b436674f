#include "qtune/optim/adamw.h"

#include <cmath>

#include "qtune/optim/paged_state.h"

namespace qtune::optim {

AdamW::AdamW(NamedParams params, AdamWOptions options, bool paged)
    : Optimizer(std::move(params), options), paged_(paged) {
  for (const auto& [name, p] : this->params()) {
    exp_avg_.push_back(state_zeros(p.sizes(), at::kFloat, p.device(), paged_));
    exp_avg_sq_.push_back(state_zeros(p.sizes(), at::kFloat, p.device(), paged_));
  }
}

void AdamW::step(double lr) {
  check_lr(lr);
  const at::NoGradGuard no_grad;
  if (paged_)
    for (size_t i = 0; i < exp_avg_.size(); ++i) prefetch(exp_avg_[i]), prefetch(exp_avg_sq_[i]);
  for (size_t i = 0; i < params().size(); ++i) {
    const auto grad = grad_of(i);
    if (!grad.defined()) continue;
    at::Tensor p = params()[i].second;
    auto& exp_avg = exp_avg_[i];
    auto& exp_avg_sq = exp_avg_sq_[i];
    const int64_t step = next_param_step(i);
    const auto o = options_for(i);
    // torch/csrc/api/src/optim/adamw.cpp, op for op (each op rounds to fp32 the same way, so results match).
    if (o.weight_decay != 0) p.mul_(1 - lr * o.weight_decay);
    const double bias_correction1 = 1 - std::pow(o.beta1, step);
    const double bias_correction2 = 1 - std::pow(o.beta2, step);
    exp_avg.mul_(o.beta1).add_(grad, 1 - o.beta1);
    exp_avg_sq.mul_(o.beta2).addcmul_(grad, grad, 1 - o.beta2);
    const auto denom = (exp_avg_sq.sqrt() / std::sqrt(bias_correction2)).add_(o.eps);
    const double step_size = lr / bias_correction1;
    p.addcdiv_(exp_avg, denom, -step_size);
  }
  finish_step();
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::state_tensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < params().size(); ++i) {
    out.emplace_back(params()[i].first + ".exp_avg", exp_avg_[i]);
    out.emplace_back(params()[i].first + ".exp_avg_sq", exp_avg_sq_[i]);
  }
  return out;
}

}  // namespace qtune::optim
