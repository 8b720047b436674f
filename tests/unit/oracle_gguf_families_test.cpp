// The families in llama.cpp's own architectures (qwen2, qwen3, gemma2, gemma3, phi3): qtune exports each tiny model of
// tests/oracle/gguf_families.py (built by transformers) as an F32 GGUF, llama.cpp runs the file with transformers'
// logits, and qtune reads the file back with them too. This checks the names, the stored conventions (Gemma's
// norms + 1, no rotary permutation outside Llama) and the metadata (soft-caps, windows, the layer pattern, the local
// RoPE base) both ways. Then the file goes on as a user's would: `qtune convert` turns it into a directory that
// transformers loads, and QLoRA on its own blocks (quant.format: keep) gives a `--gguf-adapter` that llama.cpp applies
// to the same file with qtune's logits.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qtune/data/tokenizer.h"
#include "qtune/export/gguf_export.h"
#include "qtune/export/trained_model.h"
#include "qtune/io/atomic_file.h"
#include "qtune/io/gguf.h"
#include "qtune/io/safetensors.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quant_linear_factory.h"
#include "qtune/train/recipe.h"
#include "qtune/train/trainer.h"
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
  // The transformers model exported by qtune as a GGUF of `type`, into `dir`.
  std::string export_gguf(const std::string& dir, const std::string& type) const {
    const auto gguf = dir + "/" + GetParam() + "." + type + ".gguf";
    auto model = qtune::nn::load_causal_lm(entry["dir"].get<std::string>(), at::TensorOptions().dtype(at::kFloat));
    qtune::exporting::GgufExportOptions o;
    o.type = type;
    qtune::exporting::save_gguf_model(*model, tiny_vocab(model->config().vocab_size), gguf, o);
    return gguf;
  }
  json entry;
  at::Tensor ids, expected;
};

at::Tensor qtune_logits(const std::string& path, const at::Tensor& ids) {
  auto model = qtune::nn::load_causal_lm(path, at::TensorOptions().dtype(at::kFloat));
  torch::NoGradGuard no_grad;
  return model->forward(ids.unsqueeze(0))[0];
}

// llama.cpp's logits for `ids` on `gguf`, with the GGUF LoRA adapter `lora` when it is not empty.
at::Tensor llama_cpp_logits(const std::string& dir, const std::string& gguf, const at::Tensor& ids,
                            const std::string& lora = "") {
  std::vector<int64_t> tokens(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
  json job = {{"kind", "logits"}, {"model", gguf}, {"tokens", tokens}, {"out", dir + "/lc.safetensors"}};
  if (!lora.empty()) job["lora"] = lora;
  qtune::io::write_text_atomically(dir + "/jobs.json", json::array({job}).dump());
  const std::string cmd = std::string(QTUNE_TEST_PYTHON) + " " + QTUNE_TEST_SOURCE_DIR +
                          "/tests/oracle/llama_cpp_gguf.py " + dir + "/jobs.json 2>" + dir + "/err.txt";
  if (std::system(cmd.c_str()) != 0) ADD_FAILURE() << cmd << "\n" << qtune::test::read_file(dir + "/err.txt");
  return qtune::io::SafetensorsFile::open(dir + "/lc.safetensors")->tensor("logits");
}

TEST_P(OracleGgufFamilies, ExportRunsInLlamaCppAndReadsBackWithTransformersLogits) {
  const auto dir = qtune::test::temp_dir();
  const auto gguf = export_gguf(dir, "f32");
  const auto file = qtune::io::GgufFile::open(gguf);
  EXPECT_EQ(file->require_string("general.architecture"),
            GetParam() == "gemma3_text" ? std::string("gemma3") : GetParam());

  // qtune reads its own file as it read the Hugging Face directory.
  const auto back = qtune_logits(gguf, ids);
  ASSERT_EQ(back.sizes(), expected.sizes());
  EXPECT_LE((back - expected).abs().max().item<double>(), 1e-4) << "qtune reading the GGUF";

  // llama.cpp runs the file with transformers' logits.
  const auto lc = llama_cpp_logits(dir, gguf, ids);
  ASSERT_EQ(lc.sizes(), expected.sizes());
  // llama.cpp computes in fp32 with its own kernel order (and F16 rounding inside some CPU paths).
  EXPECT_LE((lc - expected).abs().max().item<double>(), 2e-3) << "llama.cpp on qtune's GGUF";
}

TEST_P(OracleGgufFamilies, ConvertedGgufLoadsInTransformersWithItsLogits) {
  const auto dir = qtune::test::temp_dir();
  const auto gguf = export_gguf(dir, "f32");
  const auto r = qtune::test::run_qtune("convert " + gguf + " --out " + dir + "/hf");
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string cmd = std::string(QTUNE_TEST_PYTHON) + " " + QTUNE_TEST_SOURCE_DIR +
                          "/tests/oracle/gguf_families.py --check-converted " + dir + "/hf " +
                          entry["tensors"].get<std::string>() + " 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

// QLoRA on the quantized file itself: its Q8_0 blocks stay as stored, and the adapter exported for llama.cpp moves
// llama.cpp's logits on that same file to qtune's.
TEST_P(OracleGgufFamilies, KeepTrainingOnTheGgufGivesAnAdapterLlamaCppAppliesWithQtunesLogits) {
  const auto dir = qtune::test::temp_dir();
  const auto gguf = export_gguf(dir, "q8_0");
  // Documents of the made-up pieces in a fixed cycle: something to learn in a few steps.
  std::string train;
  for (int d = 0; d < 16; ++d) {
    std::string text;
    for (int i = 0; i < 20; ++i) text += (i ? " t" : "t") + std::to_string(3 + (7 * (d + i)) % 90);
    train += json{{"text", text}}.dump() + "\n";
  }
  qtune::io::write_text_atomically(dir + "/train.jsonl", train);
  const auto run = dir + "/run";
  const auto recipe = qtune::train::Recipe::from_yaml_text(
      "name: keep-" + GetParam() + "\nmodel:\n  path: " + gguf + "\nquant:\n  format: keep\ndata:\n  train: " + dir +
          "/train.jsonl\n  format: text\n  chat_template: none\n  max_seq_len: 32\nlora:\n  r: 8\n  alpha: 16\n"
          "  dropout: 0.0\n  targets: all-linear\noptim:\n  name: adamw\n  lr: 2e-2\ntrain:\n  batch_size: 4\n"
          "  max_steps: 4\n  log_every: 1\n  output_dir: " + run + "\n",
      "keep.yaml");
  qtune::train::TrainOptions o;
  o.out = std::fopen("/dev/null", "w");
  o.terminal = false;
  qtune::train::run_training(recipe, o);

  const auto adapter = dir + "/adapter.gguf";
  const auto res = qtune::test::run_qtune("export " + run + " --gguf-adapter " + adapter);
  ASSERT_EQ(res.code, 0) << res.err;
  auto trained = qtune::exporting::load_trained_model(run, "", at::TensorOptions().dtype(at::kFloat), nullptr);
  const auto* factory = dynamic_cast<const qtune::nn::QuantLinearFactory*>(trained.base_factory.get());
  ASSERT_NE(factory, nullptr);
  // down_proj's 112 input columns are not whole Q8_0 blocks of 32, so the export stored it as F16, as llama-quantize
  // falls back; every other projection is kept in its Q8_0 blocks.
  for (const auto& l : factory->layers())
    EXPECT_EQ(l.format, l.name.find("down_proj") == std::string::npos ? "gguf-q8_0" : "16bit") << l.name;
  at::Tensor ours;
  {
    torch::NoGradGuard no_grad;
    trained.model->eval();
    ours = trained.model->forward(ids.unsqueeze(0))[0];
  }
  const auto with_adapter = llama_cpp_logits(dir, gguf, ids, adapter);
  const auto base = llama_cpp_logits(dir, gguf, ids);
  ASSERT_EQ(with_adapter.sizes(), ours.sizes());
  const double scale = ours.abs().max().item<double>();
  const double diff = (with_adapter - ours).abs().max().item<double>() / scale;
  const double moved = (base - ours).abs().max().item<double>() / scale;
  std::printf("[ measured ] %s: max |llama.cpp + adapter - qtune| / max |logit| = %.3g; without the adapter %.3g\n",
              GetParam().c_str(), diff, moved);
  // llama.cpp rounds the activations to 8 bits before a Q8_0 matmul; measured 2026-12-07: 0.012 (phi3) to 0.023
  // (qwen3), and 0.67 to 1.09 without the adapter.
  EXPECT_LE(diff, 0.05);
  EXPECT_GT(moved, 3 * diff);
}

INSTANTIATE_TEST_SUITE_P(Families, OracleGgufFamilies,
                         ::testing::Values("qwen2", "qwen3", "gemma2", "gemma3_text", "phi3"));

}  // namespace
