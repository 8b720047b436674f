// qtune's SmoothQuant against llm-compressor's SmoothQuantModifier (tests/oracle/llmcompressor_smoothquant.py): on tiny
// random models of the families with activation outliers and the same calibration ids, every layer's scales, smoothed
// norms and smoothed linears equal llm-compressor's within 1e-5 relative (Llama at α 0.5 and 0.8, Qwen2, Qwen3, Phi-3's
// fused linears, Gemma 2 and 3's (1 + w) norms); the smoothed model computes the original's function for every family,
// with and without --smooth-down; --alpha auto's W8A8 block error is no worse than α 0.5's on any layer.
#include <gtest/gtest.h>

#include <filesystem>

#include "qtune/calib/smoothquant.h"
#include "qtune/io/json_file.h"
#include "qtune/io/safetensors.h"
#include "qtune/nn/model_io.h"
#include "test_util.h"

namespace qtune::calib {
namespace {

const auto kFp32 = at::TensorOptions().dtype(at::kFloat);

std::string oracle() { return test::oracle_dir() + "/llmcompressor_smoothquant"; }

std::vector<std::vector<int64_t>> calibration() {
  return io::read_json_file(oracle() + "/calibration.json").get<std::vector<std::vector<int64_t>>>();
}

// max |a − ref| / max |ref|.
double max_rel(const at::Tensor& a, const at::Tensor& ref) {
  return (a - ref).abs().max().item<double>() / ref.abs().max().item<double>();
}

at::Tensor probe_logits(const std::string& dir) {
  torch::NoGradGuard no_grad;
  auto m = nn::load_causal_lm(dir, kFp32);
  m->eval();
  return m->forward(at::arange(3, 43, at::kLong).view({2, 20}));
}

TEST(OracleLlmCompressorSmoothQuant, ScalesAndSmoothedWeightsAreLlmCompressors) {
  const auto manifest = io::read_json_file(oracle() + "/manifest.json");
  const auto dir = test::temp_dir();
  ASSERT_EQ(manifest["runs"].size(), 7u);
  for (const auto& run : manifest["runs"]) {
    const std::string name = run["case"].get<std::string>() + " alpha " + std::to_string(run["alpha"].get<double>());
    SCOPED_TRACE(name);
    SmoothQuantOptions o;
    o.alpha = run["alpha"].get<double>();
    const auto out = dir + "/" + run["case"].get<std::string>() + "-" + std::to_string(o.alpha);
    const auto report = smoothquant_model(run["model"], calibration(), o, out);
    const auto ref = io::SafetensorsFile::open(run["tensors"]);

    // The mappings llm-compressor ran (its registry's; Gemma's as its block has them) are qtune's.
    std::map<std::string, at::Tensor> ours;
    for (const auto& l : report.layers)
      for (const auto& [smooth, s] : l.scales) ours[smooth] = s;
    ASSERT_EQ(ours.size(), run["mappings"].size());
    for (const auto& m : run["mappings"]) {
      const std::string smooth = m["smooth"];
      ASSERT_TRUE(ours.count(smooth)) << smooth;
      const auto theirs = ref->tensor("scales." + smooth);
      EXPECT_LT(max_rel(ours[smooth], theirs), 1e-5) << smooth;
      EXPECT_TRUE(at::allclose(ours[smooth], theirs, 1e-5, 0)) << smooth;
    }
    // Every smoothed tensor of the decoder layers, as written.
    const auto written = io::SafetensorsFile::open(out + "/model.safetensors");
    int64_t compared = 0;
    for (const auto& info : written->tensors()) {
      if (info.name.rfind("model.layers.", 0) != 0) continue;
      ASSERT_TRUE(ref->find(info.name)) << info.name;
      EXPECT_LT(max_rel(written->tensor(info.name), ref->tensor(info.name)), 1e-5) << info.name;
      ++compared;
    }
    EXPECT_GE(compared, 18);  // 3 layers × (2 norms + fused qkv, o, gate_up, down) at least
    // And the smoothing moved something: the norms are not the source's.
    const auto source = io::SafetensorsFile::open(run["model"].get<std::string>() + "/model.safetensors");
    EXPECT_GT(max_rel(written->tensor("model.layers.0.input_layernorm.weight"),
                      source->tensor("model.layers.0.input_layernorm.weight")), 0.1);
  }
}

TEST(OracleLlmCompressorSmoothQuant, TheSmoothedModelComputesTheOriginalsFunctionInEveryFamily) {
  const auto dir = test::temp_dir();
  for (const auto& entry : std::filesystem::directory_iterator(oracle())) {
    if (!std::filesystem::exists(entry.path() / "model" / "config.json")) continue;
    const auto model = (entry.path() / "model").string();
    const auto family = entry.path().filename().string();
    const auto ref = probe_logits(model);
    for (const bool down : {false, true}) {
      SCOPED_TRACE(family + (down ? " --smooth-down" : ""));
      SmoothQuantOptions o;
      o.alpha = 0.7;
      o.smooth_down = down;
      const auto out = dir + "/" + family + (down ? "-down" : "");
      const auto report = smoothquant_model(model, calibration(), o, out);
      ASSERT_EQ(report.mappings.size(), down ? 3u : 2u);
      // fp32 rounding: the scales reach 30× and 1/30× across a norm and its linears.
      EXPECT_LT(max_rel(probe_logits(out), ref), 2e-5);
      if (down) {  // up_proj's rows (Phi-3: the up half of gate_up_proj's) changed, and down_proj's columns
        const auto written = io::SafetensorsFile::open(out + "/model.safetensors");
        const auto source = io::SafetensorsFile::open(model + "/model.safetensors");
        EXPECT_GT(max_rel(written->tensor("model.layers.1.mlp.down_proj.weight"),
                          source->tensor("model.layers.1.mlp.down_proj.weight")), 1e-3);
      }
    }
  }
}

TEST(OracleLlmCompressorSmoothQuant, AutoAlphaIsNoWorseThanHalfOnEveryLayerAndSaysWhichItChose) {
  const auto model = oracle() + "/llama/model";
  const auto dir = test::temp_dir();
  SmoothQuantOptions half;
  const auto fixed = smoothquant_model(model, calibration(), half, dir + "/half");
  SmoothQuantOptions a;
  a.auto_alpha = true;
  const auto searched = smoothquant_model(model, calibration(), a, dir + "/auto");
  ASSERT_EQ(searched.layers.size(), fixed.layers.size());
  const auto record = io::read_json_file(dir + "/auto/smoothquant.json");
  EXPECT_EQ(record["alpha"], "auto");
  EXPECT_EQ(record["calibration_tokens"], 4 * 24);
  for (size_t i = 0; i < fixed.layers.size(); ++i) {
    const auto& s = searched.layers[i];
    SCOPED_TRACE("layer " + std::to_string(i));
    EXPECT_EQ(fixed.layers[i].alpha, 0.5);
    ASSERT_EQ(s.searched.size(), 21u);
    EXPECT_LE(s.error, fixed.layers[i].error * (1 + 1e-6));
    // The chosen α is the grid's best, and the record says so.
    for (const auto& [alpha, error] : s.searched) EXPECT_LE(s.error, error);
    EXPECT_EQ(record["layers"][i]["alpha"].get<double>(), s.alpha);
    EXPECT_EQ(record["layers"][i]["searched"].size(), 21u);
    // On a model with activation outliers, smoothing beats unsmoothed W8A8.
    EXPECT_LT(s.error, s.rtn_error);
  }
  // Auto's model is the same function too.
  EXPECT_LT(max_rel(probe_logits(dir + "/auto"), probe_logits(model)), 2e-5);
}

}  // namespace
}  // namespace qtune::calib
