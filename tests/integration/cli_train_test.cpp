// `qtune train`'s command line: where --resume's value ends and the positionals begin, early and accurate errors, and
// the end-of-run summary.
#include <gtest/gtest.h>

#include <torch/cuda.h>

#include <regex>

#include "test_util.h"
#include "tiny_run.h"

namespace qtune::train {
namespace {

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

// A run of `steps` stopped after `stop` (saved every step) into `dir`: what --resume continues.
std::string interrupted_run(const TinyRun& t, const std::string& name, int64_t steps, int64_t stop) {
  const auto path = t.dir + "/" + name + ".yaml";
  const auto recipe = t.recipe({"train.max_steps=" + std::to_string(steps), "train.save_every=1",
                                "train.output_dir=" + t.dir + "/" + name});
  io::write_text_atomically(path, recipe.to_yaml());
  auto o = quiet();
  o.stop_after_step = stop;
  run_training(recipe, o);
  return path;
}

// Issue 36 #30: `r.yaml --resume k=v` resumed from a checkpoint named "k=v" after loading the model, and `--resume
// r.yaml k=v` took the override for the recipe. --resume's value is auto or a directory; other words are positionals.
TEST(CliTrain, ResumeTakesOnlyAutoOrADirectoryAsItsValue) {
  TinyRun t;
  const auto a = interrupted_run(t, "a", 4, 2);
  const auto after = test::run_qtune("train " + a + " --resume train.log_every=1 --no-eval-before");
  ASSERT_EQ(after.code, 0) << after.err;
  EXPECT_TRUE(contains(after.out, "resumed from " + t.dir + "/a/checkpoints/step-00000002 at step 2")) << after.out;
  EXPECT_TRUE(std::regex_search(after.out, std::regex("step 3/4"))) << after.out;  // log_every=1 took effect (5 would skip step 3)

  const auto b = interrupted_run(t, "b", 4, 2);
  const auto before = test::run_qtune("train --resume " + b + " train.log_every=1 --no-eval-before");
  ASSERT_EQ(before.code, 0) << before.err;
  EXPECT_TRUE(contains(before.out, "resumed from " + t.dir + "/b/checkpoints/step-00000002 at step 2")) << before.out;

  const auto c = interrupted_run(t, "c", 4, 3);
  const auto bare = test::run_qtune("train " + c + " --resume --no-eval-before");
  ASSERT_EQ(bare.code, 0) << bare.err;
  EXPECT_TRUE(contains(bare.out, "at step 3")) << bare.out;
  const auto d = interrupted_run(t, "d", 4, 2);
  const auto dir = test::run_qtune("train " + d + " --resume " + t.dir + "/d/checkpoints/step-00000001 --no-eval-before");
  ASSERT_EQ(dir.code, 0) << dir.err;
  EXPECT_TRUE(contains(dir.out, "at step 1")) << dir.out;

  // A value that is neither is refused before anything loads.
  const auto missing = test::run_qtune("train " + a + " --resume " + t.dir + "/nowhere");
  EXPECT_EQ(missing.code, 1);
  EXPECT_TRUE(contains(missing.err, "--resume '" + t.dir + "/nowhere': no such checkpoint or run directory")) << missing.err;
  EXPECT_FALSE(contains(missing.out, "model:")) << missing.out;
  const auto not_a_checkpoint = test::run_qtune("train " + a + " --resume " + t.model);
  EXPECT_EQ(not_a_checkpoint.code, 1);
  EXPECT_FALSE(contains(not_a_checkpoint.out, "model:")) << not_a_checkpoint.out;
}

// Issue 36 #31: errors that came late or pointed elsewhere.
TEST(CliTrain, RecipeErrorsNameTheRecipeKeyBeforeAnythingLoads) {
  TinyRun t;
  const auto path = t.dir + "/r.yaml";
  io::write_text_atomically(path, t.recipe().to_yaml());
  const auto full = test::run_qtune("train " + path + " train.mode=full quant.format=none train.precision=bf16");
  EXPECT_EQ(full.code, 1);
  EXPECT_TRUE(contains(full.err, "train.mode full trains fp32 weights: 'train.precision' must be auto or fp32, got "
                                 "'bf16'"))
      << full.err;
  if (!torch::cuda::is_available()) {
    const auto cuda = test::run_qtune("train " + path + " device=cuda");
    EXPECT_EQ(cuda.code, 1);
    EXPECT_TRUE(contains(cuda.err, path + ": 'device' cuda: no usable CUDA GPU on this machine (set it to cpu or auto)"))
        << cuda.err;
    EXPECT_FALSE(contains(cuda.err, "--device")) << cuda.err;
  }
  // --resume auto without a checkpoint says, on stderr, that it starts afresh.
  const auto fresh = test::run_qtune("train " + path + " train.max_steps=1 --resume auto --no-eval-before");
  ASSERT_EQ(fresh.code, 0) << fresh.err;
  EXPECT_TRUE(contains(fresh.err, "warning: --resume auto: no checkpoint in " + t.dir + "/run; starting a fresh run"))
      << fresh.err;
}

// Issue 36 #32: the summary line ends with a mean over the last log interval and the run's mean.
TEST(CliTrain, TheSummaryReportsMeansNotOneStep) {
  TinyRun t;
  const auto path = t.dir + "/r.yaml";
  io::write_text_atomically(path, t.recipe({"train.max_steps=12", "train.log_every=5"}).to_yaml());
  const auto r = test::run_qtune("train " + path + " --no-eval-before");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(std::regex_search(
      r.out, std::regex(R"(trained 12 steps on \d+ target tokens in [0-9.]+s; train loss [0-9.]+ -> [0-9.]+ \(step 1 -> )"
                        R"(mean of steps 11-12\); mean [0-9.]+ over the run)")))
      << r.out;
}

}  // namespace
}  // namespace qtune::train
