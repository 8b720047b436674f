// quant.format keep: a GGUF base's projections stay in the ggml blocks the file stores (GgmlWeight), loaded through
// WeightSource::stored_blocks. On a tiny GGUF with every block type the kept model equals the same file dequantized
// (16-bit plan): the same weights bit for bit, logits within the matmul's rounding; layers report their GGUF format and
// the file's bytes; LoRA trains on it; plan rules still send modules elsewhere; the memory plan counts the file's bytes.
// On SmolLM2 (Q4_1 projections) every projection stays Q4_1 and the logits match the dequantized load.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cctype>
#include <cstring>
#include <fstream>
#include <map>
#include <string>

#include "qtune/io/gguf.h"
#include "qtune/io/gguf_model.h"
#include "qtune/io/model_weights.h"
#include "qtune/lora/inject.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quant_linear_factory.h"
#include "qtune/nn/quantized_linear.h"
#include "qtune/optim/optimizer.h"
#include "qtune/quant/ggml_weight.h"
#include "qtune/quant/gguf_blocks.h"
#include "qtune/train/memory_estimate.h"
#include "qtune/train/recipe.h"
#include "test_util.h"
#include "tiny_gguf.h"

namespace qtune {
namespace {

using quant::GgmlType;
const auto kFp32 = at::TensorOptions().dtype(at::kFloat);

bool is_block_type(GgmlType t) { return quant::ggml_weight_supports(t); }

std::string gguf_format(GgmlType t) {  // "gguf-q4_k"
  std::string name = quant::ggml_type_info(t).name;
  for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return "gguf-" + name;
}

quant::QuantPlan plan_of(quant::WeightFormat format) {
  quant::QuantPlan plan;
  plan.base.format = format;
  return plan;
}

// Every linear of `model` by its Hugging Face module name.
std::map<std::string, std::shared_ptr<nn::LinearImpl>> linears(nn::CausalLMImpl& model) {
  std::map<std::string, std::shared_ptr<nn::LinearImpl>> out;
  for (const auto& m : model.modules(/*include_self=*/false))
    if (auto l = std::dynamic_pointer_cast<nn::LinearImpl>(m)) out[l->spec().name] = l;
  return out;
}

at::Tensor some_ids(int64_t vocab) { return at::arange(24, at::kLong).mul(7).remainder(vocab).view({2, 12}); }

class GgufKeep : public ::testing::Test {
 protected:
  void SetUp() override { tiny = test::write_tiny_gguf(test::temp_dir() + "/tiny.gguf"); }
  // The tiny model's projections (not the tied lm_head).
  bool projection(const std::string& name) const { return tiny.types.count(name + ".weight") > 0; }
  test::TinyGguf tiny;
};

TEST_F(GgufKeep, StoredBlocksAreTheFilesBytesWithRotaryRowsMovedWhole) {
  auto source = io::open_model_weights(tiny.path);
  const auto file = io::GgufFile::open(tiny.path);
  for (const auto& [name, type] : tiny.types) {
    const auto stored = source->stored_blocks(name);
    ASSERT_TRUE(stored.has_value()) << name;
    EXPECT_EQ(stored->type, type) << name;
    EXPECT_EQ(static_cast<uint64_t>(stored->bytes.numel()), tiny.bytes.at(name)) << name;
    EXPECT_NE(stored->origin.find(io::GgufLayout{}.gguf_name(name)), std::string::npos) << stored->origin;
    // Dequantizing the moved rows gives what get() gives (dequantize, then unpermute the float rows).
    const auto values = quant::dequantize_ggml(type, stored->bytes.data_ptr<uint8_t>(), stored->shape[0] * stored->shape[1]);
    EXPECT_TRUE(test::bitwise_equal(values.view(stored->shape), source->get(name, stored->shape))) << name;
    const bool rotary = name.find("q_proj") != std::string::npos || name.find("k_proj") != std::string::npos;
    const auto& info = file->tensor_info(io::GgufLayout{}.gguf_name(name));
    const bool same_bytes = std::memcmp(stored->bytes.data_ptr(), file->data(info), info.nbytes) == 0;
    EXPECT_EQ(same_bytes, !rotary) << name << ": only q_proj and k_proj rows move";
  }
  nn::RandomInit fresh(io::ModelConfig::load(tiny.path), 1);
  EXPECT_FALSE(fresh.stored_blocks("model.layers.0.self_attn.q_proj.weight").has_value());
}

TEST_F(GgufKeep, KeptModelEqualsTheDequantizedLoadAndReportsTheFilesFormats) {
  torch::NoGradGuard no_grad;
  nn::QuantLinearFactory keep(plan_of(quant::WeightFormat::Keep), kFp32), dense(plan_of(quant::WeightFormat::Dense), kFp32);
  auto kept = nn::load_causal_lm(tiny.path, kFp32, &keep);
  auto reference = nn::load_causal_lm(tiny.path, kFp32, &dense);

  ASSERT_EQ(keep.layers().size(), tiny.types.size());
  for (const auto& l : keep.layers()) {
    const auto type = tiny.types.at(l.name + ".weight");
    if (is_block_type(type)) {
      EXPECT_EQ(l.format, gguf_format(type)) << l.name;
      EXPECT_EQ(static_cast<uint64_t>(l.storage_bytes), tiny.bytes.at(l.name + ".weight")) << l.name;
      EXPECT_TRUE(l.from_checkpoint) << l.name;
    } else {
      EXPECT_EQ(l.format, "16bit") << l.name << " is stored " << quant::ggml_type_info(type).name;
    }
  }
  EXPECT_EQ(keep.layers()[0].format, "gguf-q4_0");
  EXPECT_NE(keep.summary().find("gguf-q6_k x1"), std::string::npos) << keep.summary();

  const auto a = linears(*kept), b = linears(*reference);
  for (const auto& [name, layer] : a) {
    if (!projection(name)) continue;
    const bool blocks = is_block_type(tiny.types.at(name + ".weight"));
    EXPECT_EQ(std::dynamic_pointer_cast<nn::QuantizedLinearImpl>(layer) != nullptr, blocks) << name;
    EXPECT_TRUE(test::bitwise_equal(layer->dense_weight(), b.at(name)->dense_weight())) << name;
  }
  const auto ids = some_ids(64);
  const auto x = kept->forward(ids), y = reference->forward(ids);
  EXPECT_TRUE(at::allclose(x, y, 1e-4, 1e-5)) << (x - y).abs().max().item<double>();
  EXPECT_GT(y.abs().max().item<double>(), 1e-3) << "logits of a live model";
}

TEST_F(GgufKeep, Bf16KeptWeightsAreTheDequantizedWeightsRoundedOnce) {
  torch::NoGradGuard no_grad;
  const auto bf16 = at::TensorOptions().dtype(at::kBFloat16);
  nn::QuantLinearFactory keep(plan_of(quant::WeightFormat::Keep), bf16), dense(plan_of(quant::WeightFormat::Dense), bf16);
  auto kept = nn::load_causal_lm(tiny.path, bf16, &keep);
  auto reference = nn::load_causal_lm(tiny.path, bf16, &dense);
  const auto b = linears(*reference);
  for (const auto& [name, layer] : linears(*kept)) {
    if (auto q = std::dynamic_pointer_cast<nn::QuantizedLinearImpl>(layer); q && projection(name)) {
      const auto& w = std::dynamic_pointer_cast<nn::DenseLinearImpl>(b.at(name))->weight();
      EXPECT_TRUE(test::bitwise_equal(q->weight().dequantize(at::kBFloat16), w)) << name;
    }
  }
  const auto ids = some_ids(64);
  const auto x = kept->forward(ids).to(at::kFloat), y = reference->forward(ids).to(at::kFloat);
  EXPECT_TRUE(at::allclose(x, y, 2e-2, 2e-2)) << (x - y).abs().max().item<double>();
}

TEST_F(GgufKeep, LoraTrainsOnAKeptBaseAndTheBaseStaysAsStored) {
  nn::QuantLinearFactory keep(plan_of(quant::WeightFormat::Keep), kFp32);
  lora::LoraConfig lc;
  lc.r = 8;
  lc.alpha = 16;
  lc.dropout = 0;
  lora::LoraLinearFactory factory(keep, lc, 3);
  auto model = nn::load_causal_lm(tiny.path, kFp32, &factory);
  model->train();
  const auto trainable = lora::trainable_parameters(*model);
  ASSERT_EQ(trainable.size(), 2u * tiny.types.size());
  std::map<std::string, at::Tensor> kept_before;
  for (const auto& [name, layer] : linears(*model))
    if (auto q = std::dynamic_pointer_cast<nn::QuantizedLinearImpl>(layer))
      kept_before[name] = dynamic_cast<const quant::GgmlWeight&>(q->weight()).blocks().clone();
  EXPECT_EQ(kept_before.size(), 11u);  // the projections stored as blocks

  optim::AdamWOptions o;
  o.lr = 2e-2;
  auto optimizer = optim::make_optimizer("adamw", trainable, o);
  const auto ids = some_ids(64), targets = ids.roll(-1, 1);
  std::vector<double> losses;
  for (int step = 0; step < 12; ++step) {
    const auto logits = model->forward(ids);
    auto loss = at::cross_entropy_loss(logits.view({-1, logits.size(-1)}), targets.view({-1}));
    loss.backward();
    optimizer->step(o.lr);
    for (auto& [name, p] : trainable) p.mutable_grad() = at::Tensor();
    losses.push_back(loss.item<double>());
  }
  EXPECT_LT(losses.back(), losses.front() - 0.5) << losses.front() << " -> " << losses.back();
  for (const auto& [name, layer] : linears(*model)) {
    if (auto q = std::dynamic_pointer_cast<nn::QuantizedLinearImpl>(layer)) {
      EXPECT_TRUE(at::equal(dynamic_cast<const quant::GgmlWeight&>(q->weight()).blocks(), kept_before.at(name))) << name;
    }
  }
}

TEST_F(GgufKeep, PlanRulesStillSendModulesToInt8And16Bit) {
  auto plan = plan_of(quant::WeightFormat::Keep);
  plan.rules = {{"layers.1.*", quant::WeightFormat::Int8}, {"*.down_proj", quant::WeightFormat::Dense}};
  nn::QuantLinearFactory factory(plan, kFp32);
  nn::load_causal_lm(tiny.path, kFp32, &factory);
  for (const auto& l : factory.layers()) {
    if (l.name.find("layers.1.") != std::string::npos) EXPECT_EQ(l.format, "int8") << l.name;
    else if (l.name.find("down_proj") != std::string::npos) EXPECT_EQ(l.format, "16bit") << l.name;
    else EXPECT_EQ(l.format.rfind("gguf-", 0), 0u) << l.name << ": " << l.format;
  }
}

TEST_F(GgufKeep, ASourceWithoutBlocksIsAnErrorNamingTheWeight) {
  const auto config = io::ModelConfig::load(tiny.path);
  nn::RandomInit fresh(config, 1);
  nn::QuantLinearFactory keep(plan_of(quant::WeightFormat::Keep), kFp32);
  const auto msg = test::error_of([&] { std::make_shared<nn::CausalLMImpl>(config, keep, fresh, kFp32); });
  EXPECT_NE(msg.find("model.layers.0.self_attn.q_proj.weight: quant.format keep needs a GGUF base"), std::string::npos)
      << msg;
}

TEST_F(GgufKeep, AKeptModelIsNotSavedInBitsandbytesLayout) {
  nn::QuantLinearFactory keep(plan_of(quant::WeightFormat::Keep), kFp32);
  auto model = nn::load_causal_lm(tiny.path, kFp32, &keep);
  const auto msg = test::error_of([&] { nn::save_pretrained(*model, test::temp_dir() + "/out"); });
  EXPECT_NE(msg.find("a gguf-q4_0 weight has no bitsandbytes or compressed-tensors layout"), std::string::npos) << msg;
}

TEST_F(GgufKeep, MemoryEstimateCountsTheKeptBlocksAsTheFileStoresThem) {
  const auto config = io::ModelConfig::load(tiny.path);
  const auto data = tiny.path + ".train.jsonl";  // beside the model (temp_dir() would empty the test's directory)
  std::ofstream(data) << R"({"instruction": "a", "output": "b"})" << "\n";
  auto recipe = train::Recipe::from_yaml_text("model:\n  path: " + tiny.path + "\ndata:\n  train: " + data + "\n",
                                              "keep.yaml", {});
  const auto kept = train::estimate_memory(config, recipe, plan_of(quant::WeightFormat::Keep), at::kBFloat16, false);
  const auto dense = train::estimate_memory(config, recipe, plan_of(quant::WeightFormat::Dense), at::kBFloat16, false);
  int64_t saved = 0;  // block-typed projections: 2 bytes per value in bf16, their blocks kept
  for (const auto& [name, type] : tiny.types)
    if (is_block_type(type)) {
      const auto stored = io::open_model_weights(tiny.path)->stored_blocks(name);
      saved += stored->shape[0] * stored->shape[1] * 2 - static_cast<int64_t>(tiny.bytes.at(name));
    }
  EXPECT_GT(saved, 0);
  EXPECT_EQ(dense.base_weights - kept.base_weights, saved);
}

TEST(GgufKeepSmolLM2, EveryProjectionStaysQ4_1AndTheLogitsMatchTheDequantizedLoad) {
  QTUNE_REQUIRE_SMOLLM2();
  torch::NoGradGuard no_grad;
  const auto path = test::smollm2_gguf();
  nn::QuantLinearFactory keep(plan_of(quant::WeightFormat::Keep), kFp32), dense(plan_of(quant::WeightFormat::Dense), kFp32);
  auto kept = nn::load_causal_lm(path, kFp32, &keep);
  ASSERT_EQ(keep.layers().size(), 30u * 7);
  for (const auto& l : keep.layers()) EXPECT_EQ(l.format, "gguf-q4_1") << l.name;
  EXPECT_NEAR(keep.average_bits(), 5.0, 1e-9);  // 20 bytes per 32 values
  auto reference = nn::load_causal_lm(path, kFp32, &dense);
  const auto ids = at::tensor(std::vector<int64_t>{1, 9690, 314, 253, 1345, 28, 2366, 17}, at::kLong).view({1, -1});
  const auto x = kept->forward(ids), y = reference->forward(ids);
  EXPECT_LT((x - y).abs().max().item<double>(), 1e-3 * std::max(1.0, y.abs().max().item<double>()));
  EXPECT_TRUE(at::equal(x.argmax(-1), y.argmax(-1)));
}

}  // namespace
}  // namespace qtune
