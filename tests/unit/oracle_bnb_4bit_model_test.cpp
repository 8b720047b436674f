// 4-bit checkpoints cross the boundary both ways: one quantized and saved by transformers + bitsandbytes
// loads in qtune with transformers' logits, and one quantized and saved by qtune loads in transformers with
// qtune's logits (the oracle script tests/oracle/bnb_4bit_model.py runs transformers).
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qtune/io/safetensors.h"
#include "qtune/io/sharded_checkpoint.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quant_linear_factory.h"
#include "qtune/nn/quantized_linear.h"
#include "test_util.h"

namespace {

using namespace qtune;
const auto kFp32 = at::TensorOptions().dtype(at::kFloat);

nlohmann::json manifest() {
  std::ifstream in(test::oracle_dir() + "/bnb_4bit_model/manifest.json");
  EXPECT_TRUE(in.good()) << "oracle output missing: run through ctest";
  return nlohmann::json::parse(in);
}

double max_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

TEST(OracleBnb4bitModel, TransformersCheckpointLoadsWithTransformersLogits) {
  QTUNE_REQUIRE_ORACLE();
  const auto m = manifest();
  auto ids = io::SafetensorsFile::open(m["ids"])->tensor("input_ids");
  for (const auto& c : m["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    auto model = nn::load_causal_lm(c["dir"], kFp32);
    int quantized = 0;
    for (const auto& item : model->named_modules("", false))
      quantized += std::dynamic_pointer_cast<nn::QuantizedLinearImpl>(item.value()) != nullptr;
    EXPECT_EQ(quantized, 2 * 7) << "every projection should load as a 4-bit linear";
    torch::NoGradGuard no_grad;
    auto expected = io::SafetensorsFile::open(c["logits"])->tensor("logits");
    EXPECT_LE(max_diff(model->forward(ids), expected), 1e-4);
  }
}

TEST(OracleBnb4bitModel, QtuneCheckpointLoadsInTransformersWithQtuneLogits) {
  QTUNE_REQUIRE_ORACLE();
  const auto m = manifest();
  auto ids = io::SafetensorsFile::open(m["ids"])->tensor("input_ids");
  for (const auto& c : m["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    quant::QuantPlan plan;
    plan.base.format = c["format"] == "nf4" ? quant::WeightFormat::NF4 : quant::WeightFormat::FP4;
    plan.base.double_quant = c["double_quant"];
    nn::QuantLinearFactory factory(plan, kFp32);
    auto base = io::ShardedCheckpoint::open(m["base16"]);
    nn::CausalLMImpl model(io::ModelConfig::load(m["base16"].get<std::string>()), factory, *base, kFp32);
    const auto dir = test::temp_dir();
    nn::save_pretrained(model, dir + "/q");
    torch::NoGradGuard no_grad;
    auto ours = model.forward(ids);

    const std::string cmd = std::string(QTUNE_TEST_PYTHON) + " " + QTUNE_TEST_SOURCE_DIR +
                            "/tests/oracle/bnb_4bit_model.py --logits " + dir + "/q " + m["ids"].get<std::string>() +
                            " " + dir + "/tf.safetensors > " + dir + "/log.txt 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << "transformers failed to load qtune's checkpoint; see " << dir << "/log.txt";
    auto theirs = io::SafetensorsFile::open(dir + "/tf.safetensors")->tensor("logits");
    EXPECT_LE(max_diff(ours, theirs), 1e-4);
    // And qtune's quantization is bitsandbytes' (up to its rare nested-code choices): close to transformers' own.
    auto tf_quantized = io::SafetensorsFile::open(c["logits"])->tensor("logits");
    EXPECT_LE(max_diff(ours, tf_quantized), 0.02 * tf_quantized.abs().max().item<double>());
  }
}

}  // namespace
