// qtune against transformers on the same files: the oracle fixture (tests/oracle/make_tiny_models.py) saved
// tiny random Llama/Mistral models with save_pretrained and recorded their logits, greedy tokens and
// sliding-window perplexity; here qtune loads the same directories and must agree.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "qtune/data/text_file.h"
#include "qtune/data/tokenizer.h"
#include "qtune/eval/generate.h"
#include "qtune/eval/perplexity.h"
#include "qtune/io/safetensors.h"
#include "qtune/io/sharded_checkpoint.h"
#include "qtune/nn/model_io.h"
#include "test_util.h"

namespace {

using qtune::test::oracle_dir;

constexpr double kLogitTolerance = 1e-4;  // fp32, as the foundation issue requires

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return nlohmann::json::parse(in);
}

std::vector<nlohmann::json> cases() {
  return read_json(oracle_dir() + "/models/manifest.json")["cases"].get<std::vector<nlohmann::json>>();
}

const auto kFp32 = at::TensorOptions().dtype(at::kFloat);

TEST(OracleTransformers, CoversTheRequiredArchitectures) {
  QTUNE_REQUIRE_ORACLE();
  bool gqa = false, tied = false, untied = false, window = false, theta = false, llama3 = false, sharded = false;
  for (const auto& c : cases()) {
    const auto cfg = qtune::io::ModelConfig::load(c["dir"].get<std::string>());
    gqa |= cfg.num_key_value_heads < cfg.num_attention_heads;
    tied |= cfg.tie_word_embeddings;
    untied |= !cfg.tie_word_embeddings;
    window |= cfg.sliding_window.has_value() && *cfg.sliding_window < static_cast<int64_t>(c["prompt"].size() + c["greedy"].size());
    theta |= cfg.rope.theta != 10000.0;
    llama3 |= cfg.rope.type == "llama3";
    sharded |= std::filesystem::exists(c["dir"].get<std::string>() + "/model.safetensors.index.json");
  }
  EXPECT_TRUE(gqa && tied && untied && window && theta && llama3 && sharded);
}

TEST(OracleTransformers, LogitsEqualTransformers) {
  QTUNE_REQUIRE_ORACLE();
  for (const auto& c : cases()) {
    SCOPED_TRACE(c["name"].get<std::string>());
    auto model = qtune::nn::load_causal_lm(c["dir"], kFp32);
    auto ref = qtune::io::SafetensorsFile::open(c["logits"]);
    auto ids = ref->tensor("input_ids");
    auto expected = ref->tensor("logits");
    torch::NoGradGuard no_grad;
    auto logits = model->forward(ids);
    ASSERT_EQ(logits.sizes(), expected.sizes());
    const double diff = (logits - expected).abs().max().item<double>();
    EXPECT_LE(diff, kLogitTolerance);
  }
}

TEST(OracleTransformers, TiedCheckpointWithoutLmHeadLoads) {
  QTUNE_REQUIRE_ORACLE();
  int tied_without_head = 0;
  for (const auto& c : cases()) {
    const auto cfg = qtune::io::ModelConfig::load(c["dir"].get<std::string>());
    const auto ckpt = qtune::io::ShardedCheckpoint::open(c["dir"]);
    if (cfg.tie_word_embeddings && !ckpt->has("lm_head.weight")) {
      ++tied_without_head;
      auto model = qtune::nn::load_causal_lm(c["dir"], kFp32);
      EXPECT_TRUE(model->lm_head_weight().is_same(model->trunk().embed_tokens->weight()));
    }
  }
  EXPECT_GE(tied_without_head, 1) << "transformers stored lm_head.weight for every tied model: case not covered";
}

TEST(OracleTransformers, GreedyTokensEqualTransformersGenerate) {
  QTUNE_REQUIRE_ORACLE();
  for (const auto& c : cases()) {
    SCOPED_TRACE(c["name"].get<std::string>());
    auto model = qtune::nn::load_causal_lm(c["dir"], kFp32);
    const auto expected = c["greedy"].get<std::vector<int64_t>>();
    qtune::eval::GenerateOptions opts;
    opts.max_new_tokens = static_cast<int64_t>(expected.size());
    auto result = qtune::eval::generate(*model, c["prompt"].get<std::vector<int64_t>>(), opts);
    EXPECT_EQ(result.tokens, expected);
  }
}

TEST(OracleTransformers, SlidingWindowPerplexityEqualsTransformers) {
  QTUNE_REQUIRE_ORACLE();
  for (const auto& c : cases()) {
    SCOPED_TRACE(c["name"].get<std::string>());
    auto model = qtune::nn::load_causal_lm(c["dir"], kFp32);
    auto ids = qtune::io::SafetensorsFile::open(c["logits"])->tensor("input_ids")[0];
    std::vector<int64_t> seq(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
    const auto& ppl = c["ppl"];
    auto result = qtune::eval::sliding_window_perplexity(*model, seq, ppl["max_length"], ppl["stride"]);
    EXPECT_EQ(result.predicted_tokens, ppl["tokens"].get<int64_t>());
    EXPECT_NEAR(result.nll_sum, ppl["nll_sum"].get<double>(), 1e-3);
  }
}

// transformers' figures on the real stories260K checkpoint (recorded by the oracle when ../shared exists).
TEST(OracleTransformers, Stories260KEqualsTransformers) {
  QTUNE_REQUIRE_ORACLE();
  QTUNE_REQUIRE_SHARED();
  const auto path = oracle_dir() + "/models/stories260K.json";
  ASSERT_TRUE(std::filesystem::exists(path)) << "oracle did not record stories260K although ../shared exists";
  const auto ref = read_json(path);
  const auto dir = qtune::test::shared_dir() + "/models/stories260K";
  auto model = qtune::nn::load_causal_lm(dir, kFp32);
  auto tok = qtune::data::Tokenizer::load(dir, &model->config());

  const auto prompt = tok.encode("Once upon a time");
  EXPECT_EQ(prompt, ref["prompt_ids"].get<std::vector<int64_t>>());

  torch::NoGradGuard no_grad;
  auto logits = model->forward(at::tensor(prompt, at::kLong).unsqueeze(0))[0];
  std::vector<float> flat;
  for (const auto& row : ref["prompt_logits"]) for (const auto& v : row) flat.push_back(v.get<float>());
  auto expected = at::tensor(flat).view(logits.sizes());
  EXPECT_LE((logits - expected).abs().max().item<double>(), kLogitTolerance);

  qtune::eval::GenerateOptions opts;
  opts.max_new_tokens = 60;
  auto result = qtune::eval::generate(*model, prompt, opts);
  EXPECT_EQ(result.tokens, ref["greedy_60"].get<std::vector<int64_t>>());
  std::vector<int64_t> all(prompt);
  all.insert(all.end(), result.tokens.begin(), result.tokens.end());
  EXPECT_EQ(tok.decode(all), ref["greedy_text"].get<std::string>());

  const auto& held = ref["heldout"];
  std::vector<std::vector<int64_t>> docs;
  const auto text = qtune::data::read_text_file(qtune::test::shared_dir() + "/data/tinystories_valid_head.txt", "text");
  for (const auto& doc : qtune::data::split_documents(text, "<|endoftext|>")) docs.push_back(tok.encode(doc));
  EXPECT_EQ(static_cast<int64_t>(docs.size()), held["stories"].get<int64_t>());
  auto ppl = qtune::eval::document_perplexity(*model, docs, 512);
  EXPECT_EQ(ppl.predicted_tokens, held["tokens"].get<int64_t>());
  EXPECT_NEAR(ppl.nll_sum, held["nll_sum"].get<double>(), 0.05);
  EXPECT_NEAR(ppl.perplexity(), held["perplexity"].get<double>(), 1e-4);
}

}  // namespace

namespace {

// A config.json that leaves keys out means transformers' defaults for its model_type (MistralConfig: a 4096-token
// sliding window, 131072 positions, 8 kv heads); only an explicit null turns Mistral's window off.
TEST(OracleTransformers, MissingConfigKeysTakeTransformersDefaults) {
  QTUNE_REQUIRE_ORACLE();
  const auto all = read_json(qtune::test::oracle_dir() + "/models/config_defaults.json");
  ASSERT_GE(all["cases"].size(), 4u);
  for (const auto& c : all["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const auto& want = c["resolved"];
    const auto got = qtune::io::ModelConfig::load(c["dir"].get<std::string>());
    if (want["sliding_window"].is_null())
      EXPECT_FALSE(got.sliding_window.has_value());
    else
      EXPECT_EQ(got.sliding_window.value_or(-1), want["sliding_window"].get<int64_t>());
    EXPECT_EQ(got.max_position_embeddings, want["max_position_embeddings"].get<int64_t>());
    EXPECT_EQ(got.num_key_value_heads, want["num_key_value_heads"].get<int64_t>());
    EXPECT_EQ(got.head_dim, want["head_dim"].get<int64_t>());
    EXPECT_DOUBLE_EQ(got.rms_norm_eps, want["rms_norm_eps"].get<double>());
    EXPECT_DOUBLE_EQ(got.rope.theta, want["rope_theta"].get<double>());
    EXPECT_EQ(got.tie_word_embeddings, want["tie_word_embeddings"].get<bool>());
    EXPECT_DOUBLE_EQ(got.attention_dropout, want["attention_dropout"].get<double>());
  }
}

}  // namespace
