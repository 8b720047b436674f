#include "qtune/optim/schedule.h"

#include <algorithm>
#include <cmath>

#include "qtune/util/error.h"

namespace qtune::optim {

void validate(const ScheduleOptions& s) {
  if (s.kind != "constant" && s.kind != "linear" && s.kind != "cosine")
    fail("lr schedule kind '{}': expected constant, linear or cosine", s.kind);
  if (s.warmup_steps < 0) fail("lr schedule warmup_steps must be >= 0, got {}", s.warmup_steps);
  if (!(s.min_lr_ratio >= 0 && s.min_lr_ratio <= 1))
    fail("lr schedule min_lr_ratio must be in [0, 1], got {}", s.min_lr_ratio);
}

double learning_rate(const ScheduleOptions& s, double base_lr, int64_t step, int64_t total_steps) {
  validate(s);
  if (step < 0) fail("learning_rate: step must be >= 0, got {}", step);
  // transformers' lr_lambda values, in its operation order, times base_lr (LambdaLR).
  if (step < s.warmup_steps)
    return base_lr * (static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, s.warmup_steps)));
  if (s.kind == "constant") return base_lr * 1.0;
  const double decay_steps = static_cast<double>(std::max<int64_t>(1, total_steps - s.warmup_steps));
  const double min = s.min_lr_ratio;
  double factor;
  if (s.kind == "linear") {
    factor = std::max(0.0, static_cast<double>(total_steps - step) / decay_steps);
  } else {
    // Past total_steps the progress stops at 1: transformers' cosine would climb back up.
    const double progress = std::min(1.0, static_cast<double>(step - s.warmup_steps) / decay_steps);
    constexpr double kPi = 3.141592653589793, kHalfCycle = 0.5;
    factor = 0.5 * (1.0 + std::cos(kPi * kHalfCycle * 2.0 * progress));
  }
  return base_lr * std::max(0.0, factor * (1 - min) + min);
}

}  // namespace qtune::optim
