// qtune reads real GGUF files (../shared's stories260K: SentencePiece vocabulary, F32; SmolLM2-135M-Instruct:
// byte-level BPE, Q4_1 + Q8_0; Gemma 3 270M: gemma3, Q4_K_M) as transformers + gguf read them (the oracle_gguf_models
// fixture, tests/oracle/gguf_models.py): the same config, token ids, fp32 logits within 1e-4 and the same greedy
// tokens; and as llama.cpp runs them: perplexity within 1%.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <torch/csrc/autograd/grad_mode.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qtune/data/sentencepiece_tokenizer.h"
#include "qtune/data/tokenizer.h"
#include "qtune/eval/generate.h"
#include "qtune/io/atomic_file.h"
#include "qtune/io/gguf_model.h"
#include "qtune/io/safetensors.h"
#include "qtune/nn/model_io.h"
#include "test_util.h"

namespace {

std::string oracle_path() { return qtune::test::oracle_dir() + "/gguf_models"; }

nlohmann::json manifest() {
  std::ifstream in(oracle_path() + "/manifest.json");
  return nlohmann::json::parse(in);
}

class OracleGgufModel : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(oracle_path() + "/manifest.json"))
      GTEST_FAIL() << oracle_path() << "/manifest.json is missing: run through ctest (the oracle_gguf_models fixture)";
    const auto m = manifest();
    if (!m["models"].contains(GetParam()))
      GTEST_SKIP() << GetParam() << " is absent (../shared for stories260K; scripts/setup.sh installs SmolLM2 and Gemma 3 270M): skipping";
    entry = m["models"][GetParam()];
    path = entry["gguf"].get<std::string>();
  }
  nlohmann::json entry;
  std::string path;
};

TEST_P(OracleGgufModel, ConfigEqualsTransformers) {
  const auto c = qtune::io::ModelConfig::load(path);
  const auto& t = entry["config"];
  EXPECT_EQ(c.hidden_size, t["hidden_size"]);
  EXPECT_EQ(c.intermediate_size, t["intermediate_size"]);
  EXPECT_EQ(c.num_hidden_layers, t["num_hidden_layers"]);
  EXPECT_EQ(c.num_attention_heads, t["num_attention_heads"]);
  EXPECT_EQ(c.num_key_value_heads, t["num_key_value_heads"]);
  EXPECT_EQ(c.head_dim, t["head_dim"]);
  EXPECT_EQ(c.vocab_size, t["vocab_size"]);
  EXPECT_EQ(c.max_position_embeddings, t["max_position_embeddings"]);
  EXPECT_EQ(c.tie_word_embeddings, t["tie_word_embeddings"]);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, t["rms_norm_eps"].get<double>());
  // transformers 5 nests RoPE per layer type where the types have their own (Gemma 3: full and sliding).
  const auto& rope = !t.contains("rope_parameters")                   ? t
                     : t["rope_parameters"].contains("full_attention") ? t["rope_parameters"]["full_attention"]
                                                                        : t["rope_parameters"];
  const double theta = rope["rope_theta"].get<double>();
  EXPECT_DOUBLE_EQ(c.rope.theta, theta);
  EXPECT_EQ(c.bos_token_id.value_or(-1), t["bos_token_id"]);
  if (t.contains("layer_types")) {
    ASSERT_EQ(t["layer_types"].size(), static_cast<size_t>(c.num_hidden_layers));
    for (int64_t il = 0; il < c.num_hidden_layers; ++il)
      EXPECT_EQ(c.layer_attention(il) == qtune::io::LayerAttention::Sliding, t["layer_types"][il] == "sliding_attention")
          << "layer " << il;
    EXPECT_EQ(c.sliding_window.value_or(-1), t["sliding_window"]);
    if (t["rope_parameters"].contains("sliding_attention"))
      EXPECT_DOUBLE_EQ(c.local_rope.value_or(c.rope).theta, t["rope_parameters"]["sliding_attention"]["rope_theta"]);
  }
  if (t.contains("query_pre_attn_scalar")) EXPECT_EQ(c.query_pre_attn_scalar, t["query_pre_attn_scalar"].get<double>());
  if (t.contains("final_logit_softcapping"))
    EXPECT_EQ(c.final_logit_softcapping.value_or(0), t["final_logit_softcapping"].is_null() ? 0.0 : t["final_logit_softcapping"].get<double>());
}

TEST_P(OracleGgufModel, TokenIdsEqualTransformers) {
  const auto tok = qtune::data::Tokenizer::load(path);
  // A SentencePiece vocabulary with the dummy prefix (Gemma's has none).
  const auto* sp = dynamic_cast<const qtune::data::SentencePieceTokenizer*>(&tok.backend());
  const bool sentencepiece = sp != nullptr && sp->adds_dummy_prefix();
  for (const auto& t : entry["texts"]) {
    const auto text = t["text"].get<std::string>();
    // A SentencePiece vocabulary: qtune adds the dummy prefix as SentencePiece and llama.cpp do ("  two" → "▁▁▁two");
    // transformers' GGUF tokenizer uses Metaspace, which skips it when the text already starts with a space.
    if (sentencepiece && !text.empty() && text[0] == ' ') {
      EXPECT_EQ(tok.encode(text, false).front(), tok.piece_id("\xe2\x96\x81")) << text;
      continue;
    }
    EXPECT_EQ(tok.encode(text, false), t["ids"].get<std::vector<int64_t>>()) << "text: " << text;
    EXPECT_EQ(tok.encode(text), t["ids_with_specials"].get<std::vector<int64_t>>()) << "text: " << text;
  }
}

TEST_P(OracleGgufModel, Fp32LogitsWithin1e4OfTransformers) {
  auto file = qtune::io::SafetensorsFile::open(oracle_path() + "/" + GetParam() + ".safetensors");
  auto model = qtune::nn::load_causal_lm(path, at::TensorOptions().dtype(at::kFloat));
  torch::NoGradGuard no_grad;
  const auto logits = model->forward(file->tensor("input_ids").unsqueeze(0))[0];
  const auto expected = file->tensor("logits");
  ASSERT_EQ(logits.sizes(), expected.sizes());
  EXPECT_LE((logits - expected).abs().max().item<double>(), 1e-4);
}

TEST_P(OracleGgufModel, GreedyContinuationsEqualTransformers) {
  auto model = qtune::nn::load_causal_lm(path, at::TensorOptions().dtype(at::kFloat));
  const auto eos = model->config().eos_token_ids;
  auto check = [&](const nlohmann::json& g, const char* what) {
    qtune::eval::GenerateOptions opts;
    const auto expected = g["tokens"].get<std::vector<int64_t>>();
    opts.max_new_tokens = static_cast<int64_t>(expected.size());
    opts.stop_ids = eos;
    const auto result = qtune::eval::generate(*model, g["prompt"].get<std::vector<int64_t>>(), opts);
    EXPECT_EQ(result.tokens, expected) << what;
  };
  check(entry["greedy"], "plain prompt");
  if (entry.contains("chat")) check(entry["chat"], "chat prompt");
}

TEST_P(OracleGgufModel, ConvertedDirectoryLoadsInTransformersWithTheSameLogits) {
  const auto out = qtune::test::temp_dir() + "/hf";
  const auto r = qtune::test::run_qtune("convert " + path + " --out " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string cmd = std::string(QTUNE_TEST_PYTHON) + " " + QTUNE_TEST_SOURCE_DIR +
                          "/tests/oracle/gguf_models.py --check-converted " + out + " " + oracle_path() + " " + GetParam() +
                          " 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  // Converting again into the same directory is refused, never overwritten.
  const auto again = qtune::test::run_qtune("convert " + path + " --out " + out);
  EXPECT_EQ(again.code, 1);
  EXPECT_NE(again.err.find("exists"), std::string::npos) << again.err;
}

// llama.cpp (llama-cpp-python) on the same file and the same 256 tokens of TinyStories: its CPU matmuls round the
// activations to 8 bits for quantized weights, so logits are compared by perplexity (within 1%) and by how often
// the top token agrees, not bit for bit.
TEST_P(OracleGgufModel, PerplexityWithinOnePercentOfLlamaCpps) {
  QTUNE_REQUIRE_SHARED();
  const auto dir = qtune::test::temp_dir();
  const auto tok = qtune::data::Tokenizer::load(path);
  auto ids = tok.encode(qtune::test::read_file(qtune::test::shared_dir() + "/data/tinystories_valid_head.txt"));
  ids.resize(std::min<size_t>(ids.size(), 256));
  const nlohmann::json jobs = nlohmann::json::array(
      {{{"kind", "logits"}, {"model", path}, {"tokens", ids}, {"out", dir + "/lc.safetensors"}}});
  qtune::io::write_text_atomically(dir + "/jobs.json", jobs.dump());
  const std::string cmd = std::string(QTUNE_TEST_PYTHON) + " " + QTUNE_TEST_SOURCE_DIR +
                          "/tests/oracle/llama_cpp_gguf.py " + dir + "/jobs.json 2>" + dir + "/err.txt";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd << "\n" << qtune::test::read_file(dir + "/err.txt");
  const auto theirs = qtune::io::SafetensorsFile::open(dir + "/lc.safetensors")->tensor("logits");
  auto model = qtune::nn::load_causal_lm(path, at::TensorOptions().dtype(at::kFloat));
  torch::NoGradGuard no_grad;
  const auto input = at::tensor(ids, at::kLong);
  const auto ours = model->forward(input.unsqueeze(0))[0];
  ASSERT_EQ(ours.sizes(), theirs.sizes());
  auto perplexity = [&](const at::Tensor& logits) {
    const auto n = input.size(0) - 1;
    return std::exp(at::cross_entropy_loss(logits.slice(0, 0, n), input.slice(0, 1)).item<double>());
  };
  const double q = perplexity(ours), l = perplexity(theirs);
  EXPECT_NEAR(q / l, 1.0, 0.01) << "qtune " << q << ", llama.cpp " << l;
  const double agree = ours.argmax(-1).eq(theirs.argmax(-1)).to(at::kFloat).mean().item<double>();
  EXPECT_GE(agree, 0.9) << "top-1 agreement with llama.cpp";
  std::fprintf(stderr, "%s: perplexity qtune %.4f, llama.cpp %.4f; top-1 agreement %.3f\n", GetParam().c_str(), q, l,
               agree);
}

INSTANTIATE_TEST_SUITE_P(RealModels, OracleGgufModel, ::testing::Values("stories260K", "smollm2", "gemma3_270m"));

}  // namespace
