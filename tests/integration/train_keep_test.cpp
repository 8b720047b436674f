// `qtune train` with quant.format keep, end to end: on a tiny GGUF whose projections are ggml blocks of every type
// (the tiny run's tokenizer and data), the base keeps them as stored and the loss falls; on ../shared's stories260K.gguf
// (all F32) every projection loads dense; on a Hugging Face directory the recipe is refused, naming model.path.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>

#include "test_util.h"
#include "tiny_gguf.h"
#include "tiny_run.h"

namespace qtune::train {
namespace {

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

// "train loss A -> B" from qtune train's summary.
std::pair<double, double> train_losses(const std::string& out) {
  std::smatch m;
  if (!std::regex_search(out, m, std::regex(R"(train loss ([0-9.]+) -> ([0-9.]+))"))) return {0, 0};
  return {std::stod(m[1]), std::stod(m[2])};
}

TEST(TrainKeep, QtuneTrainKeepsATinyGgufsBlocksAndLowersTheLoss) {
  TinyRun run;
  const auto tok = data::Tokenizer::load(run.model + "/tokenizer.model");
  test::TinyGgufSpec spec;
  spec.vocab = tok.vocab_size();
  spec.bos = tok.bos_id();
  spec.eos = tok.eos_id();
  const auto gguf = test::write_tiny_gguf(run.dir + "/tiny.gguf", spec);
  const auto recipe = run.dir + "/keep.yaml";
  std::ofstream(recipe) << "name: keep\nmodel:\n  path: " << gguf.path << "\n  tokenizer: " << run.model
                        << "/tokenizer.model\nquant:\n  format: keep\ndata:\n  train: " << run.dir
                        << "/train.jsonl\n  chat_template: none\n  max_seq_len: 64\nlora:\n  r: 8\n  alpha: 16\n"
                           "optim:\n  name: adamw\n  lr: 5e-3\ntrain:\n  batch_size: 4\n  max_steps: 12\n"
                           "  log_every: 4\n  output_dir: "
                        << run.dir << "/run\n";
  const auto r = test::run_qtune("train " + recipe + " --no-eval-before");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "base: 14 linears, gguf-q4_0 x1, gguf-q4_1 x2, gguf-q5_0 x1")) << r.out;
  EXPECT_TRUE(contains(r.out, "gguf-q6_k x1, 16bit x3")) << r.out;
  const auto [first, last] = train_losses(r.out);
  EXPECT_GT(first, 0) << r.out;
  EXPECT_LT(last, first) << r.out;

  const auto plan = test::run_qtune("plan " + recipe);
  ASSERT_EQ(plan.code, 0) << plan.out << plan.err;
  EXPECT_TRUE(contains(plan.out, "quant  keep: the GGUF's own blocks (BF16 x1, F16 x1, F32 x1, Q2_K x1")) << plan.out;
}

TEST(TrainKeep, QtuneTrainKeepOnStories260KGgufLoadsItsF32ProjectionsDense) {
  QTUNE_REQUIRE_SHARED();
  const auto shared = test::shared_dir();
  const auto dir = test::temp_dir();
  const auto r = test::run_qtune("train " + std::string(QTUNE_TEST_SOURCE_DIR) + "/recipes/stories260k-dolly.yaml " +
                                 "model.path=" + shared + "/originals/stories260K.gguf quant.format=keep " +
                                 "data.train=" + shared + "/data/dolly_tiny_train.jsonl data.eval=" + shared +
                                 "/data/dolly_tiny_eval.jsonl train.max_steps=3 train.eval_every=0 train.output_dir=" +
                                 dir + " --no-eval-before");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "base: 35 linears, 16bit x35")) << r.out;
  EXPECT_TRUE(contains(r.out, "trained 3 steps")) << r.out;
}

TEST(TrainKeep, KeepOnAHuggingFaceDirectoryIsRefusedNamingModelPath) {
  TinyRun run;
  const auto recipe = run.dir + "/keep.yaml";
  std::ofstream(recipe) << "model:\n  path: " << run.model << "\nquant:\n  format: keep\ndata:\n  train: " << run.dir
                        << "/train.jsonl\n  chat_template: none\ntrain:\n  output_dir: " << run.dir << "/run\n";
  const auto r = test::run_qtune("train " + recipe);
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.err, "quant.format keep trains on the ggml blocks of a GGUF base, but model.path '" + run.model))
      << r.err;
}

}  // namespace
}  // namespace qtune::train
