// The frozen quantized base: DequantMatmul's gradients equal a dense reference built from the same
// dequantized weight while nothing dense is saved for backward; the plan picks formats per module; states
// round-trip through bitsandbytes' safetensors layout; a 4-bit model stays close to its dense original.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/custom_function.h>

#include <fstream>

#include "qtune/autograd/dequant_matmul.h"
#include "qtune/io/sharded_checkpoint.h"
#include "qtune/kernels/dequant.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quant_linear_factory.h"
#include "qtune/nn/quantized_linear.h"
#include "qtune/quant/bnb_format.h"
#include "qtune/quant/nf4.h"
#include "test_util.h"

namespace {

using namespace qtune;
const auto kFp32 = at::TensorOptions().dtype(at::kFloat);

c10::intrusive_ptr<quant::QuantizedWeight> make_weight(const std::string& format, int64_t out, int64_t in) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  auto w = at::randn({out, in}, gen, at::kFloat) * 0.1;
  if (format == "int8") return c10::make_intrusive<quant::Int8Weight>(quant::quantize_int8_rowwise(w));
  return c10::make_intrusive<quant::Quant4Weight>(
      quant::quantize_4bit(w, {format == "nf4" ? quant::Format4::NF4 : quant::Format4::FP4, 64, true}));
}

TEST(DequantMatmul, ForwardAndGradientsEqualTheDenseReference) {
  for (const std::string format : {"nf4", "fp4", "int8"}) {
    SCOPED_TRACE(format);
    auto weight = make_weight(format, 96, 128);
    auto x = at::randn({2, 5, 128}).set_requires_grad(true);
    auto y = autograd::dequant_matmul(x, weight);
    auto dense = weight->dequantize(at::kFloat);
    auto x_ref = x.detach().clone().set_requires_grad(true);
    auto y_ref = at::matmul(x_ref, dense.t());
    EXPECT_LE((y - y_ref).abs().max().item<double>(), 1e-6);
    auto grad_y = at::randn_like(y);
    y.backward(grad_y);
    y_ref.backward(grad_y);
    EXPECT_LE((x.grad() - x_ref.grad()).abs().max().item<double>(), 1e-6);
  }
}

TEST(DequantMatmul, SavesOnlyTheQuantizedHandleForBackward) {
  auto weight = make_weight("nf4", 256, 512);
  auto x = at::randn({4, 512}).set_requires_grad(true);
  auto y = autograd::dequant_matmul(x, weight);
  auto* node = dynamic_cast<torch::autograd::CppNode<autograd::DequantMatmul>*>(y.grad_fn().get());
  ASSERT_NE(node, nullptr);
  EXPECT_TRUE(node->ctx_.get_saved_variables().empty()) << "no tensor may be saved with save_for_backward";
  int capsules = 0;
  for (const auto& [key, value] : node->ctx_.saved_data) {
    EXPECT_FALSE(value.isTensor()) << key << " holds a tensor";
    capsules += value.isCapsule();
  }
  EXPECT_EQ(capsules, 1) << "the quantized weight handle";
}

TEST(DequantMatmul, WeightHasNoGradientAndModuleHasNoTrainableParameters) {
  nn::QuantizedLinearImpl linear({"m.q", 128, 64, true}, make_weight("nf4", 64, 128), at::zeros({64}));
  for (const auto& p : linear.parameters()) EXPECT_FALSE(p.requires_grad());
  auto x = at::randn({3, 128}).set_requires_grad(true);
  linear.forward(x).sum().backward();
  EXPECT_TRUE(x.grad().defined());
  EXPECT_EQ(linear.parameters().size(), 1u) << "only the (frozen) bias is a parameter";
}

TEST(QuantPlan, RulesPickFormatsPerModule) {
  quant::QuantPlan plan;
  plan.rules = {{"layers.0.*", quant::WeightFormat::Int8}, {"*.down_proj", quant::WeightFormat::Dense}};
  EXPECT_EQ(plan.resolve("model.layers.0.self_attn.q_proj").format, quant::WeightFormat::Int8);
  EXPECT_EQ(plan.resolve("model.layers.0.mlp.down_proj").format, quant::WeightFormat::Int8) << "first rule wins";
  EXPECT_EQ(plan.resolve("model.layers.1.mlp.down_proj").format, quant::WeightFormat::Dense);
  EXPECT_EQ(plan.resolve("model.layers.10.self_attn.q_proj").format, quant::WeightFormat::NF4);
  EXPECT_EQ(plan.resolve("model.layers.1.mlp.up_proj").format, quant::WeightFormat::NF4);
}

TEST(QuantPlan, YamlRoundTripAndErrorsNameTheLine) {
  const auto dir = test::temp_dir();
  quant::QuantPlan plan;
  plan.base = {quant::WeightFormat::FP4, 128, false};
  plan.rules = {{"layers.3.*", quant::WeightFormat::Int8}, {"*.o_proj", quant::WeightFormat::Dense}};
  std::ofstream(dir + "/plan.yaml") << plan.to_yaml();
  auto back = quant::QuantPlan::load_yaml(dir + "/plan.yaml");
  EXPECT_EQ(back.base.format, quant::WeightFormat::FP4);
  EXPECT_EQ(back.base.blocksize, 128);
  EXPECT_FALSE(back.base.double_quant);
  ASSERT_EQ(back.rules.size(), 2u);
  EXPECT_EQ(back.rules[1].pattern, "*.o_proj");
  EXPECT_EQ(back.rules[1].format, quant::WeightFormat::Dense);

  std::ofstream(dir + "/bad.yaml") << "format: nf4\nblock_sise: 64\n";
  auto msg = test::error_of([&] { quant::QuantPlan::load_yaml(dir + "/bad.yaml"); });
  EXPECT_NE(msg.find("line 2: unknown key 'block_sise'"), std::string::npos) << msg;
  std::ofstream(dir + "/bad2.yaml") << "format: nf4\nrules:\n  - {pattern: 'x.*', format: int4}\n";
  msg = test::error_of([&] { quant::QuantPlan::load_yaml(dir + "/bad2.yaml"); });
  EXPECT_NE(msg.find("format 'int4' is not one of nf4, fp4, int8, w8a8, 16bit"), std::string::npos) << msg;
  std::ofstream(dir + "/bad3.yaml") << "format: nf4\nblock_size: 48\n";
  msg = test::error_of([&] { quant::QuantPlan::load_yaml(dir + "/bad3.yaml"); });
  EXPECT_NE(msg.find("block_size 48 must be a power of two"), std::string::npos) << msg;
}

TEST(BnbFormat, FourBitAndInt8StatesRoundTripThroughSafetensors) {
  const auto dir = test::temp_dir();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(2);
  auto w = at::randn({48, 160}, gen, at::kFloat);
  auto nf4 = quant::quantize_4bit(w, {quant::Format4::NF4, 64, true});
  auto fp4 = quant::quantize_4bit(w, {quant::Format4::FP4, 128, false});
  auto i8 = quant::quantize_int8_rowwise(w);
  io::NamedTensors tensors;
  quant::append_bnb_4bit(tensors, "a.weight", nf4);
  quant::append_bnb_4bit(tensors, "b.weight", fp4);
  quant::append_bnb_int8(tensors, "c", i8);
  io::write_safetensors(dir + "/model.safetensors", tensors);
  auto ckpt = io::ShardedCheckpoint::open(dir);
  EXPECT_TRUE(ckpt->has("a.weight.quant_state.bitsandbytes__nf4"));
  EXPECT_TRUE(ckpt->has("b.weight.quant_state.bitsandbytes__fp4"));
  for (auto [name, state] : {std::pair{"a.weight", &nf4}, std::pair{"b.weight", &fp4}}) {
    auto back = quant::read_bnb_4bit(*ckpt, name);
    EXPECT_EQ(back.shape, state->shape);
    EXPECT_EQ(back.blocksize, state->blocksize);
    EXPECT_EQ(back.nested.has_value(), state->nested.has_value());
    EXPECT_TRUE(at::equal(kernels::dequantize_4bit(back, at::kFloat), kernels::dequantize_4bit(*state, at::kFloat)));
  }
  auto i8_back = quant::read_bnb_int8(*ckpt, "c");
  EXPECT_TRUE(at::equal(i8_back.codes, i8.codes));
  EXPECT_TRUE(at::equal(i8_back.row_absmax, i8.row_absmax));
}

TEST(BnbFormat, MismatchedStateIsAClearError) {
  const auto dir = test::temp_dir();
  auto state = quant::quantize_4bit(at::randn({32, 64}), {quant::Format4::NF4, 64, false});
  io::NamedTensors tensors;
  quant::append_bnb_4bit(tensors, "a.weight", state);
  for (auto& [name, t] : tensors)
    if (name == "a.weight.absmax") t = t.narrow(0, 0, 5).clone();
  io::write_safetensors(dir + "/model.safetensors", tensors);
  auto ckpt = io::ShardedCheckpoint::open(dir);
  const auto msg = test::error_of([&] { quant::read_bnb_4bit(*ckpt, "a.weight"); });
  EXPECT_NE(msg.find("a.weight: absmax must hold 32 values for 2048 elements, got 5"), std::string::npos) << msg;
}

io::ModelConfig tiny_config() {
  nlohmann::json j = {{"model_type", "llama"},     {"hidden_size", 128},       {"intermediate_size", 256},
                      {"num_hidden_layers", 2},    {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                      {"vocab_size", 64},          {"rms_norm_eps", 1e-5},     {"initializer_range", 0.05},
                      {"max_position_embeddings", 64}};
  return io::ModelConfig::from_json(j, "test");
}

TEST(QuantLinearFactory, MixedPlanBuildsTheRightLinearsAndSavesALoadableCheckpoint) {
  const auto cfg = tiny_config();
  nn::RandomInit init(cfg, 5);
  quant::QuantPlan plan;
  plan.rules = {{"layers.0.*", quant::WeightFormat::Int8}, {"*.down_proj", quant::WeightFormat::Dense}};
  nn::QuantLinearFactory factory(plan, kFp32);
  nn::CausalLMImpl model(cfg, factory, init, kFp32);
  std::map<std::string, int> formats;
  for (const auto& l : factory.layers()) ++formats[l.format];
  EXPECT_EQ(formats["int8"], 7);   // all of layer 0: the first matching rule wins, down_proj included
  EXPECT_EQ(formats["16bit"], 1);  // layer 1's down_proj
  EXPECT_EQ(formats["nf4"], 6);    // the rest of layer 1
  EXPECT_GT(factory.average_bits(), 4.0);

  nn::DenseLinearFactory dense(kFp32);
  nn::CausalLMImpl reference(cfg, dense, init, kFp32);
  auto ids = at::randint(64, {1, 16});
  torch::NoGradGuard no_grad;
  auto q = model.forward(ids), d = reference.forward(ids);
  EXPECT_GT((q - d).abs().max().item<double>(), 0.0) << "quantization must change something";
  const double cosine = (q * d).sum().item<double>() / (q.norm().item<double>() * d.norm().item<double>());
  EXPECT_GT(cosine, 0.95) << "4-bit logits should point where the dense ones do";
  std::printf("cosine(4-bit/int8 logits, dense logits) = %.4f\n", cosine);

  const auto dir = test::temp_dir();
  nn::save_pretrained(model, dir);
  auto loaded = nn::load_causal_lm(dir, kFp32);
  EXPECT_TRUE(at::equal(loaded->forward(ids), q)) << "the saved quantized model reloads exactly";
  EXPECT_FALSE(loaded->config().quantization_config.is_null());
  // transformers holds either 4-bit or 8-bit layers: the mix says both, which transformers refuses outright.
  const auto& qc = loaded->config().quantization_config;
  EXPECT_TRUE(qc["load_in_4bit"].get<bool>() && qc["load_in_8bit"].get<bool>()) << qc.dump();
}

// One NaN or inf in a weight would poison its block (and, through the nested absmax mean, every block): refused,
// naming the tensor, in 4 bits as in 8.
TEST(QuantLinearFactory, NonFiniteWeightsAreRefusedNamingTheTensor) {
  const auto cfg = tiny_config();
  nn::RandomInit init(cfg, 5);
  nn::DenseLinearFactory dense(kFp32);
  nn::CausalLMImpl model(cfg, dense, init, kFp32);
  for (const auto& item : model.named_modules("", false))
    if (item.key() == "model.layers.1.mlp.up_proj") {
      torch::NoGradGuard no_grad;
      auto w = std::dynamic_pointer_cast<nn::DenseLinearImpl>(item.value())->weight();
      w[3][7] = NAN;
    }
  const auto dir = test::temp_dir();
  nn::save_pretrained(model, dir);
  const auto raw = at::full({4, 70}, 1.0f).index_put_({1, 5}, INFINITY);
  auto msg = test::error_of([&] { quant::quantize_4bit(raw, {}); });
  EXPECT_NE(msg.find("non-finite"), std::string::npos) << msg;
  for (auto format : {quant::WeightFormat::NF4, quant::WeightFormat::FP4, quant::WeightFormat::Int8}) {
    for (bool double_quant : {true, false}) {
      quant::QuantPlan plan;
      plan.base.format = format;
      plan.base.double_quant = double_quant;
      nn::QuantLinearFactory factory(plan, kFp32);
      msg = test::error_of([&] { nn::load_causal_lm(dir, kFp32, &factory); });
      EXPECT_NE(msg.find("model.layers.1.mlp.up_proj.weight"), std::string::npos) << msg;
      EXPECT_NE(msg.find("non-finite"), std::string::npos) << msg;
    }
  }
}

}  // namespace
