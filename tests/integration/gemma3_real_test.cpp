// Gemma 3 270M, the GGUF users run (Q4_K_M, gemma3 architecture, 262k vocabulary, no chat template), through the
// commands: a chat answer with its family's gemma template (the file has none), and a QLoRA run on the file's own blocks whose loss falls.
// Its logits, tokens and greedy text against transformers and llama.cpp: oracle_gguf_model_test.cpp.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

#include "test_util.h"

namespace {

namespace test = qtune::test;

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

// The file has no chat template: --chat takes its family's (gemma), and says so on stderr.
TEST(Gemma3Real, ChatWithItsFamilysTemplate) {
  QTUNE_REQUIRE_GEMMA3();
  const auto r = test::run_qtune("generate " + test::gemma3_gguf() +
                                 " --chat 'What is the capital of France?' -n 12 --device cpu");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "has no chat template; using its family's, gemma")) << r.err;
  EXPECT_TRUE(contains(r.err, "chat template: gemma")) << r.err;
  EXPECT_TRUE(contains(r.err, "12 new tokens")) << r.err;  // the base model (not -it) rambles; it must not stop at once
}

TEST(Gemma3Real, QloraOnTheFilesOwnBlocksLowersTheLoss) {
  QTUNE_REQUIRE_GEMMA3();
  const auto dir = test::temp_dir();
  const std::string src = QTUNE_TEST_SOURCE_DIR;
  const auto r = test::run_qtune("train " + src + "/recipes/gemma3-facts.yaml model.path=" + test::gemma3_gguf() +
                                 " quant.format=keep data.train=" + src + "/data/demo/facts_train.jsonl data.eval=" +
                                 src + "/data/demo/facts_eval.jsonl train.batch_size=4 train.max_steps=6 " +
                                 "train.log_every=1 train.eval_every=0 lora.r=8 optim.lr=2e-3 train.output_dir=" + dir +
                                 " --no-eval-before");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "trained 6 steps")) << r.out;
  std::istringstream in(test::read_file(dir + "/metrics.jsonl"));
  std::vector<double> losses;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss") && j.contains("step")) losses.push_back(j["loss"].get<double>());
  }
  ASSERT_GE(losses.size(), 6u);
  EXPECT_LT(losses.back(), losses.front()) << "loss " << losses.front() << " -> " << losses.back();
}

}  // namespace
