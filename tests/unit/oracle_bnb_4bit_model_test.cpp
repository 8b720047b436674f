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

// An int8 checkpoint says so (bitsandbytes' 8-bit quantization_config), so that transformers builds Linear8bitLt
// layers over the int8 codes; a 4-bit/8-bit mix, which one BitsAndBytesConfig cannot describe, is refused by
// transformers with a clear message instead of being loaded wrongly.
TEST(OracleBnb4bitModel, QtuneInt8CheckpointLoadsInTransformersAndAMixIsRefused) {
  QTUNE_REQUIRE_ORACLE();
  const auto m = manifest();
  auto ids = io::SafetensorsFile::open(m["ids"])->tensor("input_ids");
  auto base = io::ShardedCheckpoint::open(m["base16"]);
  const auto config = io::ModelConfig::load(m["base16"].get<std::string>());
  const auto dir = test::temp_dir();
  auto transformers_logits = [&](const std::string& model_dir) {
    const std::string cmd = std::string(QTUNE_TEST_PYTHON) + " " + QTUNE_TEST_SOURCE_DIR +
                            "/tests/oracle/bnb_4bit_model.py --logits " + model_dir + " " +
                            m["ids"].get<std::string>() + " " + model_dir + ".tf.safetensors > " + model_dir +
                            ".log 2>&1";
    return std::system(cmd.c_str()) == 0;
  };

  quant::QuantPlan int8;
  int8.base.format = quant::WeightFormat::Int8;
  nn::QuantLinearFactory factory(int8, kFp32);
  nn::CausalLMImpl model(config, factory, *base, kFp32);
  nn::save_pretrained(model, dir + "/q8");
  const auto qc = io::ModelConfig::load(dir + "/q8").quantization_config;
  EXPECT_TRUE(qc["load_in_8bit"].get<bool>());
  EXPECT_FALSE(qc["load_in_4bit"].get<bool>());
  torch::NoGradGuard no_grad;
  const auto ours = model.forward(ids);
  ASSERT_TRUE(transformers_logits(dir + "/q8")) << "transformers failed to load qtune's int8 checkpoint:\n"
                                                << test::read_file(dir + "/q8.log");
  const auto theirs = io::SafetensorsFile::open(dir + "/q8.tf.safetensors")->tensor("logits");
  // transformers' Linear8bitLt also quantizes the activations to int8 (LLM.int8(), fp16 inputs): close, not equal.
  // Int8 codes read as plain weights would be off by far more (codes up to 127 against weights of ~0.08).
  EXPECT_LE(max_diff(ours, theirs), 0.03 * ours.abs().max().item<double>());
  std::printf("int8 checkpoint: max |qtune - transformers Linear8bitLt| = %.4g (max |logit| %.3g)\n",
              max_diff(ours, theirs), ours.abs().max().item<double>());

  quant::QuantPlan mixed;
  mixed.rules = {{"layers.0.*", quant::WeightFormat::Int8}};
  nn::QuantLinearFactory mixed_factory(mixed, kFp32);
  nn::CausalLMImpl mix(config, mixed_factory, *base, kFp32);
  nn::save_pretrained(mix, dir + "/mix");
  EXPECT_FALSE(transformers_logits(dir + "/mix")) << "transformers must refuse a 4-bit/8-bit mix";
  const auto log = test::read_file(dir + "/mix.log");
  EXPECT_NE(log.find("only one can be used at the same time"), std::string::npos) << log;
  // qtune itself reads the mix back exactly.
  EXPECT_TRUE(at::equal(nn::load_causal_lm(dir + "/mix", kFp32)->forward(ids), mix.forward(ids)));
}

}  // namespace
