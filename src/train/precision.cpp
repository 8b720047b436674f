#include "qtune/train/precision.h"

#include <cmath>

#include "qtune/util/device.h"
#include "qtune/util/error.h"

namespace qtune::train {

at::ScalarType compute_dtype(const std::string& precision, at::Device device, int64_t hidden_size) {
  // auto: bf16 on a GPU that has it, fp16 (with loss scaling) on an older one, fp32 on CPU.
  if (precision == "auto")
    return device.is_cpu() && cpu_has_fast_bf16() && hidden_size >= kCpuBf16MinHidden ? at::kBFloat16
                                                                                       : resolve_dtype("auto", device);
  if (precision == "bf16") return at::kBFloat16;
  if (precision == "fp16") return at::kHalf;
  if (precision == "fp32") return at::kFloat;
  fail("train.precision must be auto, bf16, fp16 or fp32, got '{}'", precision);
}

DynamicLossScaler::DynamicLossScaler(double initial_scale, double growth_factor, double backoff_factor,
                                     int64_t growth_interval)
    : scale_(initial_scale), growth_(growth_factor), backoff_(backoff_factor), interval_(growth_interval) {}

bool DynamicLossScaler::unscale_and_check(const std::vector<at::Tensor>& params) {
  bool finite = true;
  for (const auto& p : params) {
    auto g = p.grad();
    if (!g.defined()) continue;
    g.mul_(1.0 / scale_);
    if (finite && !at::isfinite(g).all().item<bool>()) finite = false;
  }
  if (!finite) {
    scale_ = std::max(scale_ * backoff_, 1.0);
    good_steps_ = 0;
    ++skipped_;
  }
  return finite;
}

void DynamicLossScaler::update_after_good_step() {
  if (++good_steps_ >= interval_) {
    scale_ *= growth_;
    good_steps_ = 0;
  }
}

void DynamicLossScaler::load_state(const std::vector<double>& s) {
  if (s.size() != 3) fail("loss scaler state: expected 3 values, got {}", s.size());
  scale_ = s[0];
  good_steps_ = static_cast<int64_t>(s[1]);
  skipped_ = static_cast<int64_t>(s[2]);
}

double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm) {
  std::vector<at::Tensor> norms;
  for (const auto& p : params)
    if (p.grad().defined()) norms.push_back(p.grad().to(at::kFloat).norm(2));
  if (norms.empty()) return 0.0;
  const double total = at::stack(norms).norm(2).item<double>();
  if (max_norm > 0 && std::isfinite(total) && total > max_norm) {
    const double factor = max_norm / (total + 1e-6);  // torch.nn.utils.clip_grad_norm_'s epsilon
    for (const auto& p : params)
      if (p.grad().defined()) p.grad().mul_(factor);
  }
  return total;
}

}  // namespace qtune::train
