#pragma once
// Learning-rate schedules with linear warmup, as transformers' get_{constant,linear,cosine}_schedule_with_warmup
// (cosine: get_cosine_with_min_lr_schedule_with_warmup with one half cycle) compute them.
#include <cstdint>
#include <string>

namespace qtune::optim {

struct ScheduleOptions {
  std::string kind = "constant";  // constant | linear | cosine
  int64_t warmup_steps = 0;       // lr rises linearly from 0 over these steps
  double min_lr_ratio = 0.0;      // linear/cosine decay to min_lr_ratio * lr at total_steps
};
void validate(const ScheduleOptions& schedule);  // fails naming the field

// The learning rate of the 0-based step about to be taken: base_lr * step / warmup_steps during warmup (0 at
// step 0), then base_lr (constant), or a linear or cosine decay from base_lr at the end of warmup to
// min_lr_ratio * base_lr at total_steps, where it stays (transformers' cosine would rise again past it).
double learning_rate(const ScheduleOptions& schedule, double base_lr, int64_t step, int64_t total_steps);

}  // namespace qtune::optim
