// Learning-rate schedules: hand-checked values of transformers' formulas, endpoints, monotonicity and errors.
#include <gtest/gtest.h>

#include <cmath>

#include "qtune/optim/schedule.h"
#include "test_util.h"

namespace {

using qtune::optim::learning_rate;
using qtune::optim::ScheduleOptions;

ScheduleOptions schedule(const std::string& kind, int64_t warmup, double min_ratio = 0.0) {
  ScheduleOptions s;
  s.kind = kind;
  s.warmup_steps = warmup;
  s.min_lr_ratio = min_ratio;
  return s;
}

constexpr double kLr = 2e-4;

TEST(Schedule, WarmupRisesLinearlyFromZero) {
  for (const char* kind : {"constant", "linear", "cosine"}) {
    SCOPED_TRACE(kind);
    const auto s = schedule(kind, 10);
    EXPECT_EQ(learning_rate(s, kLr, 0, 100), 0.0);  // transformers: lr_lambda(0) = 0 with warmup
    EXPECT_DOUBLE_EQ(learning_rate(s, kLr, 5, 100), 1e-4);
    EXPECT_DOUBLE_EQ(learning_rate(s, kLr, 9, 100), 1.8e-4);
    EXPECT_DOUBLE_EQ(learning_rate(s, kLr, 10, 100), kLr);  // the peak, where the decay starts
  }
}

TEST(Schedule, HandCheckedValues) {
  EXPECT_EQ(learning_rate(schedule("constant", 0), kLr, 0, 100), kLr);
  EXPECT_EQ(learning_rate(schedule("constant", 0), kLr, 99, 100), kLr);
  // linear, warmup 10 of 110: halfway through the decay (step 60) half the lr, 0 at the end
  EXPECT_DOUBLE_EQ(learning_rate(schedule("linear", 10), kLr, 60, 110), 1e-4);
  EXPECT_DOUBLE_EQ(learning_rate(schedule("linear", 10), kLr, 35, 110), 1.5e-4);
  EXPECT_EQ(learning_rate(schedule("linear", 10), kLr, 110, 110), 0.0);
  EXPECT_EQ(learning_rate(schedule("linear", 10), kLr, 150, 110), 0.0);
  // ... with min_lr_ratio 0.1: 0.1 + 0.9 * 0.5 = 0.55 halfway, 0.1 at the end
  EXPECT_DOUBLE_EQ(learning_rate(schedule("linear", 10, 0.1), kLr, 60, 110), 0.55 * kLr);
  EXPECT_DOUBLE_EQ(learning_rate(schedule("linear", 10, 0.1), kLr, 110, 110), 0.1 * kLr);
  // cosine, no warmup, 100 steps: 0.5 * (1 + cos(pi * step / 100))
  EXPECT_EQ(learning_rate(schedule("cosine", 0), kLr, 0, 100), kLr);
  EXPECT_NEAR(learning_rate(schedule("cosine", 0), kLr, 50, 100), 0.5 * kLr, 1e-18);
  EXPECT_NEAR(learning_rate(schedule("cosine", 0), kLr, 25, 100), kLr * 0.5 * (1 + std::sqrt(0.5)), 1e-18);
  EXPECT_NEAR(learning_rate(schedule("cosine", 0), kLr, 100, 100), 0.0, 1e-20);
  // cosine with min_lr_ratio 0.1 and warmup 20 of 120: 0.1 + 0.9 * 0.5 = 0.55 halfway (step 70)
  EXPECT_NEAR(learning_rate(schedule("cosine", 20, 0.1), kLr, 70, 120), 0.55 * kLr, 1e-18);
  EXPECT_DOUBLE_EQ(learning_rate(schedule("cosine", 20, 0.1), kLr, 120, 120), 0.1 * kLr);
  // past the end it stays at the minimum (transformers' formula would rise again)
  EXPECT_DOUBLE_EQ(learning_rate(schedule("cosine", 20, 0.1), kLr, 170, 120), 0.1 * kLr);
}

TEST(Schedule, DecaysMonotonicallyAfterWarmup) {
  for (const char* kind : {"linear", "cosine"}) {
    for (double min_ratio : {0.0, 0.25}) {
      SCOPED_TRACE(std::string(kind) + " min " + std::to_string(min_ratio));
      const auto s = schedule(kind, 7, min_ratio);
      double previous = -1;
      for (int64_t step = 0; step <= 7; ++step) {
        const double lr = learning_rate(s, kLr, step, 57);
        EXPECT_GT(lr, previous);
        previous = lr;
      }
      for (int64_t step = 8; step <= 60; ++step) {
        const double lr = learning_rate(s, kLr, step, 57);
        EXPECT_LE(lr, previous) << step;
        EXPECT_GE(lr, min_ratio * kLr - 1e-18) << step;
        previous = lr;
      }
      EXPECT_NEAR(learning_rate(s, kLr, 57, 57), min_ratio * kLr, 1e-18);
    }
  }
}

TEST(Schedule, ValidationNamesTheField) {
  using qtune::test::error_of;
  EXPECT_NE(error_of([] { qtune::optim::validate(schedule("step", 0)); }).find("kind 'step': expected constant, linear or cosine"),
            std::string::npos);
  EXPECT_NE(error_of([] { qtune::optim::validate(schedule("linear", -1)); }).find("warmup_steps must be >= 0, got -1"),
            std::string::npos);
  EXPECT_NE(error_of([] { qtune::optim::validate(schedule("cosine", 0, 1.5)); }).find("min_lr_ratio must be in [0, 1], got 1.5"),
            std::string::npos);
  EXPECT_NE(error_of([] { learning_rate(schedule("cosine", 0), kLr, -1, 10); }).find("step must be >= 0"),
            std::string::npos);
}

}  // namespace
