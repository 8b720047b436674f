#include "qtune/dist/gradient_all_reduce.h"

#include <torch/csrc/autograd/grad_mode.h>

namespace qtune::dist {

GradientAllReduce::GradientAllReduce(std::vector<at::Tensor> params, int64_t bucket_bytes) : params_(std::move(params)) {
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& p = params_[i];
    const int64_t size = p.numel() * static_cast<int64_t>(p.element_size());
    bytes_ += size;
    const bool fits = !buckets_.empty() && buckets_.back().numel * p.element_size() + size <= bucket_bytes &&
                      params_[buckets_.back().params.front()].scalar_type() == p.scalar_type() &&
                      params_[buckets_.back().params.front()].device() == p.device();
    if (!fits) buckets_.emplace_back();
    buckets_.back().params.push_back(i);
    buckets_.back().numel += p.numel();
  }
}

void GradientAllReduce::run(Communicator& comm, const std::string& what, std::vector<at::Tensor> extra) {
  if (!comm.connected()) return;
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> flats;
  flats.reserve(buckets_.size() + extra.size());
  for (const auto& b : buckets_) {
    const auto& first = params_[b.params.front()];
    auto flat = at::empty({b.numel}, first.options());
    int64_t offset = 0;
    for (size_t i : b.params) {
      const auto& p = params_[i];
      auto slot = flat.narrow(0, offset, p.numel());
      if (p.grad().defined()) slot.copy_(p.grad().reshape({-1}));
      else slot.zero_();
      offset += p.numel();
    }
    flats.push_back(std::move(flat));
  }
  for (auto& e : extra) flats.push_back(e);
  comm.all_reduce_sum(flats, what);
  for (size_t k = 0; k < buckets_.size(); ++k) {
    int64_t offset = 0;
    for (size_t i : buckets_[k].params) {
      auto& p = params_[i];
      auto sum = flats[k].narrow(0, offset, p.numel()).view(p.sizes());
      if (p.grad().defined()) p.mutable_grad().copy_(sum);
      else p.mutable_grad() = sum.clone();
      offset += p.numel();
    }
  }
}

}  // namespace qtune::dist
