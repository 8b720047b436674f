// What a run counts: train.epochs trains exactly that many passes over the data (the last step of an epoch takes
// what is left of it, packing or not), and an fp16 step skipped on inf gradients still counts, saves and stops.
#include <gtest/gtest.h>

#include <filesystem>
#include <regex>

#include "qtune/train/checkpoint.h"
#include "qtune/train/run_setup.h"
#include "qtune/train/trainer.h"
#include "test_util.h"
#include "tiny_run.h"

namespace qtune::train {
namespace {

namespace fs = std::filesystem;

TEST(StepAccounting, EpochsTrainEveryTargetTokenExactlyOncePerEpoch) {
  TinyRun t;
  const std::vector<std::string> base = {"train.max_steps=0", "train.batch_size=1", "data.packing=true"};
  auto setup = RunSetup::create(t.recipe(base), nullptr);
  const int64_t per_epoch = setup.stats.train_targets;
  const int64_t batches = setup.train_loader->batches_per_epoch(0);
  ASSERT_GT(per_epoch, 0);
  // An accumulation that does not divide the epoch, so that a step would otherwise reach into the next epoch.
  int64_t accum = 3;
  while (batches % accum == 0) ++accum;
  auto keys = base;
  keys.insert(keys.end(), {"train.epochs=1", "train.grad_accum=" + std::to_string(accum)});
  auto s = run_training(t.recipe(keys), quiet());
  EXPECT_EQ(s.steps, (batches + accum - 1) / accum);
  EXPECT_EQ(s.tokens, per_epoch) << "one epoch must train every target token once, no more";

  // Two epochs with packing: each epoch packs its own order into its own number of rows.
  keys = base;
  keys.insert(keys.end(), {"train.epochs=2", "train.grad_accum=2", "train.output_dir=" + t.dir + "/two"});
  const int64_t rows = setup.train_loader->batches_per_epoch(0) + setup.train_loader->batches_per_epoch(1);
  s = run_training(t.recipe(keys), quiet());
  EXPECT_EQ(s.tokens, 2 * per_epoch);
  EXPECT_EQ(s.steps, (setup.train_loader->batches_per_epoch(0) + 1) / 2 + (setup.train_loader->batches_per_epoch(1) + 1) / 2)
      << rows << " rows in two epochs";

  // Half an epoch: the first half of its batches.
  keys = base;
  keys.insert(keys.end(), {"train.epochs=0.5", "train.grad_accum=1", "train.output_dir=" + t.dir + "/half"});
  s = run_training(t.recipe(keys), quiet());
  EXPECT_EQ(s.steps, (batches + 1) / 2);
}

// Issue 36 #28: qtune plan ignored train.global_batch_size (33 steps where train ran 17) and so its warm-up under
// schedule.warmup_ratio. It now counts the steps and warm-up the run takes, for one rank or --nproc N.
TEST(StepAccounting, PlanCountsTheStepsAndWarmupTheRunTakesWithAGlobalBatch) {
  TinyRun t;
  const auto recipe = t.dir + "/global.yaml";
  io::write_text_atomically(recipe, t.recipe({"train.max_steps=0", "train.epochs=1", "train.batch_size=2",
                                              "train.global_batch_size=8", "schedule.warmup_steps=-1",
                                              "schedule.warmup_ratio=0.25", "data.packing=false"})
                                        .to_yaml());
  const auto setup = RunSetup::create(with_global_batch(Recipe::load(recipe), 1), nullptr);
  ASSERT_GT(setup.total_steps, 4);
  for (const std::string nproc : {"1", "2"}) {
    const auto r = test::run_qtune("plan " + recipe + " --nproc " + nproc);
    ASSERT_EQ(r.code, 0) << r.err;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(r.out, m, std::regex(R"(steps  (\d+) optimizer steps \((\d+) warmup\) of (\d+) x 2)")))
        << r.out;
    EXPECT_EQ(std::stoll(m[1]), setup.total_steps) << nproc << " rank(s)\n" << r.out;
    EXPECT_EQ(std::stoll(m[2]), setup.warmup_steps) << r.out;
    EXPECT_EQ(std::stoll(m[3]), nproc == "1" ? 4 : 2) << r.out;  // grad_accum = 8 / (2 x ranks)
  }
  auto s = run_training(Recipe::load(recipe), quiet());
  EXPECT_EQ(s.steps, setup.total_steps);
  const auto bad = test::run_qtune("plan " + recipe + " --nproc 3");
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("train.global_batch_size 8 is not a multiple of train.batch_size 2 x 3 rank(s)"),
            std::string::npos)
      << bad.err;
}

TEST(StepAccounting, SkippedFp16StepsStillCountSaveAndStop) {
  TinyRun t;
  auto o = quiet();
  // Steps 2 to 6 all overflow, as a loss scale far too large would make them.
  o.after_backward = [](int64_t step, const std::vector<at::Tensor>& params) {
    if (step >= 2 && step <= 6) params[0].mutable_grad().view(-1)[0] = INFINITY;
  };
  o.stop_after_step = 4;
  auto s = run_training(t.recipe({"train.precision=fp16", "train.max_steps=6", "train.save_every=2"}), o);
  EXPECT_EQ(s.steps, 4);
  EXPECT_EQ(s.skipped_steps, 3);
  const auto dir = t.dir + "/run/checkpoints/";
  EXPECT_NO_THROW(verify_checkpoint(dir + "step-00000002"));
  EXPECT_NO_THROW(verify_checkpoint(dir + "step-00000004"));
  // Resumed to the end: the last step (skipped too) still writes the final checkpoint and the adapter.
  auto rest = quiet();
  rest.resume = "auto";
  rest.after_backward = o.after_backward;
  s = run_training(t.recipe({"train.precision=fp16", "train.max_steps=6", "train.save_every=2"}), rest);
  EXPECT_EQ(s.start_step, 4);
  EXPECT_EQ(s.steps, 6);
  EXPECT_EQ(s.skipped_steps, 5);
  EXPECT_NO_THROW(verify_checkpoint(dir + "step-00000006"));
  EXPECT_TRUE(fs::exists(t.dir + "/run/adapter/adapter_model.safetensors"));
}

}  // namespace
}  // namespace qtune::train

namespace qtune::train {
namespace {

// train.memory_budget_gib picks how many layers recompute; the run's losses do not depend on it.
TEST(StepAccounting, MemoryBudgetChoosesTheCheckpointedLayersWithoutChangingTheRun) {
  TinyRun t;
  EXPECT_EQ(RunSetup::create(t.recipe({"train.memory_budget_gib=100"}), nullptr).checkpointed_layers, 0);
  EXPECT_EQ(RunSetup::create(t.recipe({"train.memory_budget_gib=0.000001"}), nullptr).checkpointed_layers, 2);
  EXPECT_EQ(RunSetup::create(t.recipe(), nullptr).checkpointed_layers, 2);
  std::vector<double> all, none;
  auto o = quiet();
  o.on_step = [&](int64_t, double loss) { all.push_back(loss); };
  run_training(t.recipe({"train.max_steps=4", "lora.dropout=0.1"}), o);
  o.on_step = [&](int64_t, double loss) { none.push_back(loss); };
  run_training(t.recipe({"train.max_steps=4", "lora.dropout=0.1", "train.memory_budget_gib=100",
                         "train.output_dir=" + t.dir + "/budget"}),
               o);
  EXPECT_EQ(all, none);
}

}  // namespace
}  // namespace qtune::train
