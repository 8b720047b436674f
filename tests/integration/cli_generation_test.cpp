// What `qtune generate` and `qtune eval --data` take from the model and report: generation_config.json's stop ids
// and sampling defaults, a tiny temperature that must not crash, and the records eval cut or dropped.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>

#include "qtune/data/tokenizer.h"
#include "qtune/eval/generate.h"
#include "qtune/io/atomic_file.h"
#include "qtune/nn/model_io.h"
#include "test_util.h"

namespace {

using namespace qtune;

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

// A tiny random model made by `qtune init` (its own tokenizer, trained on generated stories).
struct InitModel {
  std::string dir = test::temp_dir();
  std::string model = dir + "/m";
  InitModel() {
    const auto r = test::run_qtune("init " + model + " --config " + std::string(QTUNE_TEST_SOURCE_DIR) +
                                   "/configs/models/tiny-llama.json --seed 1");
    EXPECT_EQ(r.code, 0) << r.err;
  }
  void generation_config(const nlohmann::json& j) const {
    io::write_text_atomically(model + "/generation_config.json", j.dump() + "\n");
  }
};

TEST(CliGeneration, StopsAtGenerationConfigEosAndTakesItsSamplingDefaults) {
  InitModel m;
  auto model = nn::load_causal_lm(m.model, at::TensorOptions().dtype(at::kFloat));
  const auto tok = data::Tokenizer::load(m.model, &model->config());
  eval::GenerateOptions greedy;
  greedy.max_new_tokens = 12;
  const auto tokens = eval::generate(*model, tok.encode("One day, Lily"), greedy).tokens;
  ASSERT_EQ(tokens.size(), 12u);
  // A token not produced before (and not EOS, which config.json already stops at): generation must stop right
  // after it, where config.json's stop ids alone let it run on. Preferably not the first, so a stop is not trivial.
  size_t stop_at = tokens.size();
  for (size_t i = tokens.size(); i-- > 0;)
    if (tokens[i] != tok.eos_id() && std::find(tokens.begin(), tokens.begin() + i, tokens[i]) == tokens.begin() + i)
      stop_at = i;
  for (size_t i = 1; i < tokens.size(); ++i)
    if (std::find(tokens.begin(), tokens.begin() + i, tokens[i]) == tokens.begin() + i && tokens[i] != tok.eos_id()) {
      stop_at = i;
      break;
    }
  ASSERT_LT(stop_at, tokens.size());
  ASSERT_TRUE(std::find(tokens.begin(), tokens.begin() + stop_at, tok.eos_id()) == tokens.begin() + stop_at);
  m.generation_config({{"bos_token_id", tok.bos_id()}, {"eos_token_id", {tok.eos_id(), tokens[stop_at]}}});
  auto r = test::run_qtune("generate " + m.model + " --prompt 'One day, Lily' -n 12");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, std::to_string(stop_at + 1) + " new tokens, stop: stop token")) << r.err;

  // do_sample with its temperature and top_k, unless the command line says otherwise.
  m.generation_config({{"eos_token_id", tok.eos_id()}, {"do_sample", true}, {"temperature", 0.7}, {"top_k", 5}});
  r = test::run_qtune("generate " + m.model + " --prompt 'One day' -n 4 --seed 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "sampling at temperature 0.7, top_p 1, top_k 5")) << r.err;
  r = test::run_qtune("generate " + m.model + " --prompt 'One day' -n 4 --temperature 0");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "; greedy")) << r.err;
  // A bad file names itself and the key.
  m.generation_config({{"eos_token_id", "two"}});
  r = test::run_qtune("generate " + m.model + " --prompt 'One day' -n 4");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.err, "generation_config.json: key 'eos_token_id'")) << r.err;
}

TEST(CliGeneration, ATinyTemperatureGeneratesGreedilyWithoutAStackTrace) {
  InitModel m;
  const auto greedy = test::run_qtune("generate " + m.model + " --prompt 'One day' -n 6 --ignore-eos");
  ASSERT_EQ(greedy.code, 0) << greedy.err;
  for (const std::string t : {"1e-38", "1e-300"}) {
    const auto r = test::run_qtune("generate " + m.model + " --prompt 'One day' -n 6 --ignore-eos --temperature " + t);
    EXPECT_EQ(r.code, 0) << t << ": " << r.err;
    EXPECT_FALSE(contains(r.err, "Exception raised from")) << r.err;
    EXPECT_EQ(r.out, greedy.out) << t;
  }
}

TEST(CliGeneration, EvalDataReportsTruncatedAndDroppedRecords) {
  InitModel m;
  std::string long_text;
  for (int i = 0; i < 40; ++i) long_text += "Tom had a red ball and a big dog. ";
  const auto data = m.dir + "/eval.jsonl";
  io::write_text_atomically(data, nlohmann::json({{"instruction", "Hi"}, {"output", "Yes."}}).dump() + "\n" +
                                      nlohmann::json({{"instruction", "Tell"}, {"output", long_text}}).dump() + "\n" +
                                      nlohmann::json({{"instruction", long_text}, {"output", "No."}}).dump() + "\n");
  auto r = test::run_qtune("eval " + m.model + " --data " + data + " --template none --seq-len 48");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "2 records truncated to 48 tokens (--seq-len), 1 dropped")) << r.out;
  r = test::run_qtune("eval " + m.model + " --data " + data + " --template none --seq-len 48 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["truncated"], 2);
  EXPECT_EQ(j["dropped"], 1);
  // Nothing left to score is an error, not a NaN.
  io::write_text_atomically(data, nlohmann::json({{"instruction", long_text}, {"output", "No."}}).dump() + "\n");
  r = test::run_qtune("eval " + m.model + " --data " + data + " --template none --seq-len 48");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.err, "nothing to score")) << r.err;
}

}  // namespace
