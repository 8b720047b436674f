// The families in llama.cpp's own architectures (qwen2, qwen3, gemma2, gemma3, phi3): qtune exports each tiny model of
// tests/oracle/gguf_families.py (built by transformers) as an F32 GGUF, llama.cpp runs the file with transformers'
// logits, and qtune reads the file back with them too. This checks the names, the stored conventions (Gemma's
// norms + 1, no rotary permutation outside Llama) and the metadata (soft-caps, windows, the layer pattern, the local
// RoPE base) both ways.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qtune/export/gguf_export.h"
#include "qtune/io/atomic_file.h"
#include "qtune/io/gguf.h"
#include "qtune/io/safetensors.h"
#include "qtune/nn/model_io.h"
#include "test_util.h"

namespace {

using json = nlohmann::json;

std::string oracle_path() { return qtune::test::oracle_dir() + "/gguf_families"; }

// A SentencePiece vocabulary of `n` made-up pieces (<unk>, <s>, </s>, then ▁t3 ...): llama.cpp needs one to load a
// model, and these tests feed it ids.
qtune::io::GgufMetadata tiny_vocab(int64_t n) {
  qtune::io::GgufMetadata m;
  json tokens = json::array(), scores = json::array(), types = json::array();
  for (int64_t i = 0; i < n; ++i) {
    tokens.push_back(i == 0 ? "<unk>" : i == 1 ? "<s>" : i == 2 ? "</s>" : "\xe2\x96\x81t" + std::to_string(i));
    scores.push_back(-static_cast<double>(i));
    types.push_back(i == 0 ? 2 : i < 3 ? 3 : 1);
  }
  m.set_string("tokenizer.ggml.model", "llama");
  m.set_array("tokenizer.ggml.tokens", qtune::io::GgufValueType::STRING, tokens);
  m.set_array("tokenizer.ggml.scores", qtune::io::GgufValueType::FLOAT32, scores);
  m.set_array("tokenizer.ggml.token_type", qtune::io::GgufValueType::INT32, types);
  m.set_u32("tokenizer.ggml.unknown_token_id", 0);
  m.set_u32("tokenizer.ggml.bos_token_id", 1);
  m.set_u32("tokenizer.ggml.eos_token_id", 2);
  return m;
}

class OracleGgufFamilies : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::ifstream in(oracle_path() + "/manifest.json");
    if (!in) GTEST_FAIL() << oracle_path() << "/manifest.json is missing: run through ctest (oracle_gguf_families)";
    const auto manifest = json::parse(in);
    for (const auto& c : manifest["cases"])
      if (c["name"] == GetParam()) entry = c;
    ASSERT_FALSE(entry.is_null()) << GetParam() << " is not in the oracle's manifest";
    auto t = qtune::io::SafetensorsFile::open(entry["tensors"].get<std::string>());
    ids = t->tensor("input_ids").to(at::kLong);
    expected = t->tensor("logits");
  }
  json entry;
  at::Tensor ids, expected;
};

at::Tensor qtune_logits(const std::string& path, const at::Tensor& ids) {
  auto model = qtune::nn::load_causal_lm(path, at::TensorOptions().dtype(at::kFloat));
  torch::NoGradGuard no_grad;
  return model->forward(ids.unsqueeze(0))[0];
}

TEST_P(OracleGgufFamilies, ExportRunsInLlamaCppAndReadsBackWithTransformersLogits) {
  const auto dir = qtune::test::temp_dir();
  const auto gguf = dir + "/" + GetParam() + ".gguf";
  {
    auto model = qtune::nn::load_causal_lm(entry["dir"].get<std::string>(), at::TensorOptions().dtype(at::kFloat));
    qtune::exporting::GgufExportOptions o;
    o.type = "f32";
    qtune::exporting::save_gguf_model(*model, tiny_vocab(model->config().vocab_size), gguf, o);
  }
  const auto file = qtune::io::GgufFile::open(gguf);
  EXPECT_EQ(file->require_string("general.architecture"),
            GetParam() == "gemma3_text" ? std::string("gemma3") : GetParam());

  // qtune reads its own file as it read the Hugging Face directory.
  const auto back = qtune_logits(gguf, ids);
  ASSERT_EQ(back.sizes(), expected.sizes());
  EXPECT_LE((back - expected).abs().max().item<double>(), 1e-4) << "qtune reading the GGUF";

  // llama.cpp runs the file with transformers' logits.
  std::vector<int64_t> tokens(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
  const json jobs = json::array({{{"kind", "logits"}, {"model", gguf}, {"tokens", tokens}, {"out", dir + "/lc.safetensors"}}});
  qtune::io::write_text_atomically(dir + "/jobs.json", jobs.dump());
  const std::string cmd = std::string(QTUNE_TEST_PYTHON) + " " + QTUNE_TEST_SOURCE_DIR +
                          "/tests/oracle/llama_cpp_gguf.py " + dir + "/jobs.json 2>" + dir + "/err.txt";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd << "\n" << qtune::test::read_file(dir + "/err.txt");
  const auto lc = qtune::io::SafetensorsFile::open(dir + "/lc.safetensors")->tensor("logits");
  ASSERT_EQ(lc.sizes(), expected.sizes());
  // llama.cpp computes in fp32 with its own kernel order (and F16 rounding inside some CPU paths).
  EXPECT_LE((lc - expected).abs().max().item<double>(), 2e-3) << "llama.cpp on qtune's GGUF";
}

INSTANTIATE_TEST_SUITE_P(Families, OracleGgufFamilies,
                         ::testing::Values("qwen2", "qwen3", "gemma2", "gemma3_text", "phi3"));

}  // namespace
