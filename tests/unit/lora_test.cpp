// LoRA as PEFT defines it, checked on tiny random models: config resolution, init, scaling, which parameters
// train, merge/unmerge, dropout, modules_to_save and the merged export.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cmath>
#include <map>
#include <set>

#include "qtune/kernels/dequant.h"
#include "qtune/lora/adapter_switch.h"
#include "qtune/lora/inject.h"
#include "qtune/lora/lora_config.h"
#include "qtune/lora/lora_linear.h"
#include "qtune/lora/merge.h"
#include "qtune/nn/model_io.h"
#include "qtune/export/peft_adapter.h"
#include "qtune/nn/quantized_linear.h"
#include "qtune/quant/int8.h"
#include "qtune/quant/nf4.h"
#include "test_util.h"

namespace {

using namespace qtune;

const auto kFp32 = at::TensorOptions().dtype(at::kFloat);

io::ModelConfig tiny_config(bool tied = false) {
  nlohmann::json j = {{"model_type", "llama"},      {"hidden_size", 32},
                      {"intermediate_size", 48},    {"num_hidden_layers", 2},
                      {"num_attention_heads", 4},   {"num_key_value_heads", 2},
                      {"vocab_size", 50},           {"rms_norm_eps", 1e-5},
                      {"initializer_range", 0.2},   {"max_position_embeddings", 64},
                      {"tie_word_embeddings", tied}};
  return io::ModelConfig::from_json(j, "test");
}

nn::CausalLM base_model(const io::ModelConfig& cfg, at::TensorOptions options = kFp32) {
  nn::RandomInit init(cfg, 3);
  nn::DenseLinearFactory dense(options);
  return std::make_shared<nn::CausalLMImpl>(cfg, dense, init, options);
}

nn::CausalLM lora_model(const io::ModelConfig& cfg, const lora::LoraConfig& lc, uint64_t seed = 7,
                        at::TensorOptions options = kFp32) {
  nn::RandomInit init(cfg, 3);
  nn::DenseLinearFactory dense(options);
  lora::LoraLinearFactory factory(dense, lc, seed);
  return std::make_shared<nn::CausalLMImpl>(cfg, factory, init, options);
}

lora::LoraConfig no_dropout(std::vector<std::string> targets = {"all-linear"}) {
  lora::LoraConfig c;
  c.dropout = 0;
  c.target_modules = std::move(targets);
  return c;
}

at::Tensor random_ids(int64_t b, int64_t t, int64_t vocab, uint64_t seed = 5) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randint(vocab, {b, t}, gen, at::kLong);
}

// Gives every adapter a non-zero B (small, so that logits stay O(1)).
void randomize_b(torch::nn::Module& model, uint64_t seed = 11) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& [name, layer] : lora::lora_layers(model))
    layer->lora_B().copy_(at::normal(0.0, 0.05, layer->lora_B().sizes(), gen, kFp32));
}

double max_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

nn::Linear dense_linear(const std::string& name, int64_t in, int64_t out, uint64_t seed = 1) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return std::make_shared<nn::DenseLinearImpl>(nn::LinearSpec{name, in, out, true},
                                               at::normal(0.0, 0.3, {out, in}, gen, kFp32),
                                               at::normal(0.0, 0.3, {out}, gen, kFp32));
}

// Weights read back from a state dict, to build a plain model from merged_state_dict().
class NamedSource : public io::WeightSource {
 public:
  explicit NamedSource(const io::NamedTensors& tensors) {
    for (const auto& [name, t] : tensors) map_[name] = t;
  }
  bool has(const std::string& name) const override { return map_.count(name) != 0; }
  at::Tensor get(const std::string& name, at::IntArrayRef shape) const override {
    auto it = map_.find(name);
    if (it == map_.end()) fail("no tensor '{}'", name);
    if (it->second.sizes() != shape) fail("tensor '{}' has the wrong shape", name);
    return it->second;
  }

 private:
  std::map<std::string, at::Tensor> map_;
};

TEST(LoraConfig, ErrorsNameTheField) {
  auto expect_error = [](const lora::LoraConfig& c, const std::vector<std::string>& words) {
    const auto msg = test::error_of([&] { c.validate(); });
    for (const auto& w : words) EXPECT_NE(msg.find(w), std::string::npos) << "'" << w << "' not in: " << msg;
  };
  lora::LoraConfig c;
  EXPECT_NO_THROW(c.validate());
  c.r = 0;
  expect_error(c, {"'r'", "0"});
  c = {};
  c.alpha = -1;
  expect_error(c, {"'alpha'"});
  c = {};
  c.dropout = 1.0;
  expect_error(c, {"'dropout'", "[0, 1)"});
  c.dropout = -0.1;
  expect_error(c, {"'dropout'"});
  c = {};
  c.target_modules = {"q_proj", "c_attn"};
  expect_error(c, {"'target_modules'", "c_attn", "qkv_proj"});
  c.target_modules = {"all-linear", "q_proj"};
  expect_error(c, {"'target_modules'", "all-linear"});
  c.target_modules = {};
  expect_error(c, {"'target_modules'"});
  c = {};
  c.rank_pattern = {{"q_proj", 0}};
  expect_error(c, {"'rank_pattern'", "q_proj"});
  c = {};
  c.alpha_pattern = {{"layers\\.(1", 8.0}};
  expect_error(c, {"'alpha_pattern'", "layers\\.(1"});
  c = {};
  c.modules_to_save = {"lm_head", "norm"};
  expect_error(c, {"'modules_to_save'", "norm"});
  // The factory validates before building anything.
  c = {};
  c.r = -2;
  nn::DenseLinearFactory dense(kFp32);
  const auto msg = test::error_of([&] { lora::LoraLinearFactory(dense, c, 0); });
  EXPECT_NE(msg.find("'r'"), std::string::npos) << msg;
}

TEST(LoraConfig, ResolveTargetsAndPatternsAsPeft) {
  lora::LoraConfig c = no_dropout({"q_proj", "v_proj", "down_proj"});
  c.r = 16;
  c.alpha = 32;
  c.rank_pattern = {{"layers\\.1\\.self_attn\\.q_proj", 4}};
  c.alpha_pattern = {{"down_proj", 8.0}};
  c.validate();
  EXPECT_FALSE(c.resolve("model.layers.0.self_attn.k_proj"));
  EXPECT_FALSE(c.resolve("lm_head"));
  auto q0 = c.resolve("model.layers.0.self_attn.q_proj");
  ASSERT_TRUE(q0);
  EXPECT_EQ(q0->r, 16);
  EXPECT_DOUBLE_EQ(q0->scale, 2.0);
  auto q1 = c.resolve("model.layers.1.self_attn.q_proj");
  ASSERT_TRUE(q1);
  EXPECT_EQ(q1->r, 4);
  EXPECT_DOUBLE_EQ(q1->alpha, 32.0);
  EXPECT_DOUBLE_EQ(q1->scale, 8.0);
  EXPECT_EQ(c.resolve("model.layers.11.self_attn.q_proj")->r, 16);  // `(.*\.)?KEY$`: no partial component match
  auto down = c.resolve("model.layers.0.mlp.down_proj");
  ASSERT_TRUE(down);
  EXPECT_EQ(down->r, 16);
  EXPECT_DOUBLE_EQ(down->alpha, 8.0);
  EXPECT_DOUBLE_EQ(down->scale, 0.5);
  c.use_rslora = true;
  EXPECT_DOUBLE_EQ(c.resolve("model.layers.0.self_attn.v_proj")->scale, 32.0 / 4.0);
  EXPECT_DOUBLE_EQ(c.resolve("model.layers.1.self_attn.q_proj")->scale, 32.0 / 2.0);
  lora::LoraConfig all = no_dropout();
  for (const auto& p : lora::projection_names()) EXPECT_TRUE(all.resolve("model.layers.3.mlp." + p)) << p;
  EXPECT_FALSE(all.resolve("model.embed_tokens"));
}

TEST(LoraInject, FreshAdaptersLeaveLogitsExactlyUnchanged) {
  const auto cfg = tiny_config();
  auto base = base_model(cfg);
  auto model = lora_model(cfg, no_dropout());
  torch::NoGradGuard no_grad;
  const auto ids = random_ids(2, 9, cfg.vocab_size);
  EXPECT_TRUE(at::equal(model->forward(ids), base->forward(ids)));
  // The default config (dropout 0.05) in eval mode as well.
  auto with_dropout = lora_model(cfg, lora::LoraConfig{});
  with_dropout->eval();
  EXPECT_TRUE(at::equal(with_dropout->forward(ids), base->forward(ids)));
}

TEST(LoraInject, AllLinearWrapsSevenPerLayerAndTargetsWrapTheirs) {
  const auto cfg = tiny_config();
  auto all = lora_model(cfg, no_dropout());
  auto layers = lora::lora_layers(*all);
  EXPECT_EQ(layers.size(), 7u * cfg.num_hidden_layers);
  for (const auto& [name, layer] : layers) EXPECT_EQ(name, layer->spec().name);
  auto qv = lora_model(cfg, no_dropout({"q_proj", "v_proj"}));
  std::set<std::string> names;
  for (const auto& [name, layer] : lora::lora_layers(*qv)) names.insert(name);
  EXPECT_EQ(names, (std::set<std::string>{"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                                          "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"}));
  // Parameter names are PEFT's without the adapter name; shapes A [r, in], B [out, r].
  std::map<std::string, at::Tensor> params;
  for (const auto& item : qv->named_parameters()) params[item.key()] = item.value();
  const int64_t kv_out = cfg.num_key_value_heads * cfg.head_dim;
  ASSERT_TRUE(params.count("model.layers.0.self_attn.v_proj.lora_A.weight"));
  EXPECT_EQ(params["model.layers.0.self_attn.v_proj.lora_A.weight"].sizes().vec(), (std::vector<int64_t>{16, 32}));
  EXPECT_EQ(params["model.layers.0.self_attn.v_proj.lora_B.weight"].sizes().vec(), (std::vector<int64_t>{kv_out, 16}));
  EXPECT_TRUE(params.count("model.layers.0.self_attn.v_proj.base_layer.weight"));
  EXPECT_TRUE(params.count("model.layers.0.self_attn.k_proj.weight"));  // not targeted: untouched
}

TEST(LoraInject, RankAndAlphaPatternsApplyToMatchingModulesOnly) {
  const auto cfg = tiny_config();
  auto c = no_dropout();
  c.rank_pattern = {{"layers\\.1\\.self_attn\\.q_proj", 4}};
  c.alpha_pattern = {{"down_proj", 8.0}};
  auto model = lora_model(cfg, c);
  int checked = 0;
  for (const auto& [name, layer] : lora::lora_layers(*model)) {
    const bool q1 = name == "model.layers.1.self_attn.q_proj", down = ends_with(name, ".down_proj");
    EXPECT_EQ(layer->lora_A().size(0), q1 ? 4 : 16) << name;
    EXPECT_EQ(layer->lora_B().size(1), q1 ? 4 : 16) << name;
    EXPECT_DOUBLE_EQ(layer->scale(), q1 ? 32.0 / 4 : down ? 8.0 / 16 : 32.0 / 16) << name;
    ++checked;
  }
  EXPECT_EQ(checked, 14);
}

TEST(LoraLinear, InitIsKaimingUniformAndZeroAndDependsOnlyOnSeedAndName) {
  const auto cfg = tiny_config();
  auto model = lora_model(cfg, no_dropout());
  for (const auto& [name, layer] : lora::lora_layers(*model)) {
    const auto& a = layer->lora_A();
    const double bound = 1.0 / std::sqrt(static_cast<double>(layer->spec().in_features));
    EXPECT_LE(a.abs().max().item<double>(), bound) << name;
    EXPECT_GT(a.max().item<double>() - a.min().item<double>(), 0.5 * bound) << name;  // spread, not constant
    EXPECT_EQ(a.scalar_type(), at::kFloat);
    EXPECT_TRUE(at::equal(layer->lora_B(), at::zeros_like(layer->lora_B()))) << name;
  }
  // Order of construction does not matter; seed and module name do.
  nn::DenseLinearFactory dense(kFp32);
  nn::RandomInit init(cfg, 3);
  auto spec = [](const std::string& n) { return nn::LinearSpec{n, 32, 32, false}; };
  const std::string x = "model.layers.0.self_attn.q_proj", y = "model.layers.1.self_attn.q_proj";
  lora::LoraLinearFactory f1(dense, no_dropout(), 7), f2(dense, no_dropout(), 7), f3(dense, no_dropout(), 8);
  auto x1 = std::dynamic_pointer_cast<lora::LoraLinearImpl>(f1.make(spec(x), init));
  auto y1 = std::dynamic_pointer_cast<lora::LoraLinearImpl>(f1.make(spec(y), init));
  auto y2 = std::dynamic_pointer_cast<lora::LoraLinearImpl>(f2.make(spec(y), init));
  auto x2 = std::dynamic_pointer_cast<lora::LoraLinearImpl>(f2.make(spec(x), init));
  auto x3 = std::dynamic_pointer_cast<lora::LoraLinearImpl>(f3.make(spec(x), init));
  ASSERT_TRUE(x1 && y1 && x2 && y2 && x3);
  EXPECT_TRUE(at::equal(x1->lora_A(), x2->lora_A()));
  EXPECT_TRUE(at::equal(y1->lora_A(), y2->lora_A()));
  EXPECT_FALSE(at::equal(x1->lora_A(), y1->lora_A()));
  EXPECT_FALSE(at::equal(x1->lora_A(), x3->lora_A()));
  EXPECT_EQ(f1.wrapped(), (std::vector<std::string>{x, y}));
}

TEST(LoraLinear, ScaleIsAlphaOverROrOverSqrtRWithRsLora) {
  for (const bool rslora : {false, true}) {
    lora::LoraConfig c = no_dropout();
    c.r = 4;
    c.alpha = 8;
    c.use_rslora = rslora;
    const auto target = *c.resolve("model.layers.0.mlp.up_proj");
    EXPECT_DOUBLE_EQ(target.scale, rslora ? 4.0 : 2.0);
    auto base = dense_linear("model.layers.0.mlp.up_proj", 6, 5);
    lora::LoraLinearImpl layer(base, target, 0.0, at::make_generator<at::CPUGeneratorImpl>(0));
    torch::NoGradGuard no_grad;
    // A picks the first four input features, B sums them pairwise: B·A·x is easy to write down by hand.
    layer.lora_A().copy_(at::eye(4, 6, kFp32));
    layer.lora_B().copy_(at::tensor({1.f, 1.f, 0.f, 0.f, 0.f, 0.f, 1.f, 1.f, 1.f, 0.f,
                                     0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, -1.f})
                             .view({5, 4}));
    auto x = at::arange(12, kFp32).view({2, 6}) / 10;
    auto xv = x.accessor<float, 2>();
    auto expected_delta = at::zeros({2, 5}, kFp32);
    for (int i = 0; i < 2; ++i) {
      expected_delta[i][0] = xv[i][0] + xv[i][1];
      expected_delta[i][1] = xv[i][2] + xv[i][3];
      expected_delta[i][2] = xv[i][0];
      expected_delta[i][4] = -xv[i][3];
    }
    const double scale = rslora ? 8.0 / 2.0 : 8.0 / 4.0;
    EXPECT_LE(max_diff(layer.forward(x) - base->forward(x), expected_delta * scale), 1e-6) << rslora;
  }
}

TEST(LoraInject, OnlyAdaptersTrainAndBackwardReachesThem) {
  const auto cfg = tiny_config();
  auto model = lora_model(cfg, no_dropout());
  model->train();
  const auto trainable = lora::trainable_parameters(*model);
  EXPECT_EQ(trainable.size(), 2u * 14u);
  for (const auto& [name, p] : trainable)
    EXPECT_TRUE(ends_with(name, ".lora_A.weight") || ends_with(name, ".lora_B.weight")) << name;
  const auto ids = random_ids(2, 8, cfg.vocab_size);
  auto logits = model->forward(ids);
  at::cross_entropy_loss(logits.view({-1, cfg.vocab_size}), random_ids(2, 8, cfg.vocab_size, 9).view({-1})).backward();
  for (const auto& [name, layer] : lora::lora_layers(*model)) {
    ASSERT_TRUE(layer->lora_B().grad().defined()) << name;
    ASSERT_TRUE(layer->lora_A().grad().defined()) << name;
    // B = 0 at init: dL/dB = (dL/dy)ᵀ·(A·x)·scale is not zero, dL/dA = Bᵀ·... is.
    EXPECT_GT(layer->lora_B().grad().abs().max().item<double>(), 0) << name;
    EXPECT_EQ(layer->lora_A().grad().abs().max().item<double>(), 0) << name;
  }
  for (const auto& item : model->named_parameters()) {
    if (ends_with(item.key(), ".lora_A.weight") || ends_with(item.key(), ".lora_B.weight")) continue;
    EXPECT_FALSE(item.value().requires_grad()) << item.key();
    EXPECT_FALSE(item.value().grad().defined()) << item.key();
  }
  // Once B is non-zero, A gets a gradient too (its zero gradient so far accumulates the new one).
  randomize_b(*model);
  model->forward(ids).pow(2).mean().backward();
  for (const auto& [name, layer] : lora::lora_layers(*model))
    EXPECT_GT(layer->lora_A().grad().abs().max().item<double>(), 0) << name;
}

TEST(LoraMerge, MergedLogitsMatchAndUnmergeRestoresExactly) {
  const auto cfg = tiny_config();
  auto model = lora_model(cfg, no_dropout());
  randomize_b(*model);
  torch::NoGradGuard no_grad;
  const auto ids = random_ids(2, 10, cfg.vocab_size);
  const auto adapter = model->forward(ids);
  ASSERT_GT(max_diff(adapter, base_model(cfg)->forward(ids)), 1e-3);  // the adapters do something
  lora::merge_all(*model);
  for (const auto& [name, layer] : lora::lora_layers(*model)) EXPECT_TRUE(layer->merged()) << name;
  EXPECT_LE(max_diff(model->forward(ids), adapter), 1e-5);
  lora::merge_all(*model);  // merging twice is a no-op
  EXPECT_LE(max_diff(model->forward(ids), adapter), 1e-5);
  lora::unmerge_all(*model);
  EXPECT_TRUE(at::equal(model->forward(ids), adapter));
}

// PEFT's disable_adapter(): inside the scope the model is its base alone (the reference policy of DPO), merged
// layers included; after it the adapted outputs come back exactly, and gradients still reach the adapters.
TEST(LoraAdapterSwitch, DisabledAdaptersGiveTheBaseAndComeBackExactly) {
  const auto cfg = tiny_config();
  auto model = lora_model(cfg, no_dropout());
  randomize_b(*model);
  const auto ids = random_ids(2, 10, cfg.vocab_size);
  at::Tensor adapted, base = base_model(cfg)->forward(ids).detach();
  {
    torch::NoGradGuard no_grad;
    adapted = model->forward(ids);
    ASSERT_GT(max_diff(adapted, base), 1e-3);
    lora::AdaptersDisabled off(*model);
    EXPECT_EQ(off.layers(), lora::lora_layers(*model).size());
    EXPECT_TRUE(at::equal(model->forward(ids), base));
    lora::merge_all(*model);
    EXPECT_TRUE(at::equal(model->forward(ids), base));
    lora::unmerge_all(*model);
    lora::AdaptersDisabled nested(*model);  // a nested scope restores "off", the outer one "on"
  }
  EXPECT_TRUE(at::equal(model->forward(ids).detach(), adapted));
  model->forward(ids).sum().backward();
  for (const auto& [name, layer] : lora::lora_layers(*model)) EXPECT_TRUE(layer->lora_A().grad().defined()) << name;
}

TEST(LoraMerge, MergedStateDictHasHfNamesAndRebuildsTheAdaptedModel) {
  const auto cfg = tiny_config();
  auto model = lora_model(cfg, no_dropout({"q_proj", "down_proj"}));
  randomize_b(*model);
  const auto sd = lora::merged_state_dict(*model);
  std::set<std::string> names;
  for (const auto& [name, t] : sd) {
    names.insert(name);
    EXPECT_EQ(t.scalar_type(), at::kFloat) << name;
    EXPECT_FALSE(t.requires_grad()) << name;
  }
  std::set<std::string> hf_names;
  for (const auto& item : base_model(cfg)->named_parameters()) hf_names.insert(item.key());
  EXPECT_EQ(names, hf_names);
  NamedSource source(sd);
  nn::DenseLinearFactory dense(kFp32);
  auto plain = std::make_shared<nn::CausalLMImpl>(cfg, dense, source, kFp32);
  torch::NoGradGuard no_grad;
  const auto ids = random_ids(1, 12, cfg.vocab_size);
  EXPECT_LE(max_diff(plain->forward(ids), model->forward(ids)), 1e-5);
}

TEST(LoraLinear, DropoutOnlyInTrainingMode) {
  auto base = dense_linear("model.layers.0.self_attn.o_proj", 16, 8);
  lora::LoraLinearImpl layer(base, {4, 8.0, 2.0}, 0.5, at::make_generator<at::CPUGeneratorImpl>(0));
  torch::NoGradGuard no_grad;
  layer.lora_B().fill_(0.1f);
  const auto x = at::ones({3, 16}, kFp32);
  layer.train();
  EXPECT_TRUE(layer.is_training());
  EXPECT_FALSE(at::equal(layer.forward(x), layer.forward(x)));
  layer.eval();
  const auto y = layer.forward(x);
  EXPECT_TRUE(at::equal(y, layer.forward(x)));
  EXPECT_GT(max_diff(y, base->forward(x)), 1e-3);
}

TEST(LoraLinear, SixteenBitBaseKeepsItsDtypeAndFp32Adapters) {
  auto base16 = std::make_shared<nn::DenseLinearImpl>(nn::LinearSpec{"q", 16, 8, false},
                                                      at::randn({8, 16}, kFp32).to(at::kBFloat16), at::Tensor());
  lora::LoraLinearImpl layer(base16, {4, 8.0, 2.0}, 0.0, at::make_generator<at::CPUGeneratorImpl>(0));
  torch::NoGradGuard no_grad;
  layer.lora_B().normal_(0.0, 0.1);
  EXPECT_EQ(layer.lora_A().scalar_type(), at::kFloat);
  const auto x = at::randn({2, 16}, kFp32).to(at::kBFloat16);
  const auto y = layer.forward(x);
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  // PEFT's arithmetic: base output + fp32 delta, rounded once to bf16.
  const auto delta = at::linear(at::linear(x.to(at::kFloat), layer.lora_A()), layer.lora_B()) * 2.0;
  EXPECT_TRUE(at::equal(y, (base16->forward(x) + delta).to(at::kBFloat16)));
  layer.merge();
  const auto merged = layer.forward(x);
  EXPECT_EQ(merged.scalar_type(), at::kBFloat16);
  EXPECT_LE(max_diff(merged.to(at::kFloat), y.to(at::kFloat)), 0.05 * y.abs().max().item<double>());
  EXPECT_LE(max_diff(layer.merged_weight(), base16->dense_weight() + at::mm(layer.lora_B(), layer.lora_A()) * 2.0),
            1e-6);
}

TEST(LoraModulesToSave, TiedLmHeadGetsItsOwnTrainableCopy) {
  const auto cfg = tiny_config(/*tied=*/true);
  auto model = lora_model(cfg, no_dropout({"q_proj"}));
  ASSERT_TRUE(model->lm_head_weight().is_same(model->trunk().embed_tokens->weight()));
  const auto ids = random_ids(1, 6, cfg.vocab_size);
  at::Tensor before;
  {
    torch::NoGradGuard no_grad;
    before = model->forward(ids);
  }
  const auto embed_before = model->trunk().embed_tokens->weight().clone();
  lora::apply_modules_to_save(*model, {"lm_head"});
  const auto& head = model->lm_head_weight();
  EXPECT_FALSE(head.is_same(model->trunk().embed_tokens->weight()));
  EXPECT_TRUE(head.requires_grad());
  EXPECT_EQ(head.scalar_type(), at::kFloat);
  EXPECT_FALSE(model->trunk().embed_tokens->weight().requires_grad());
  bool listed = false;
  for (const auto& [name, p] : lora::trainable_parameters(*model)) listed |= name == "lm_head.weight";
  EXPECT_TRUE(listed);
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(at::equal(model->forward(ids), before));
  }
  model->forward(ids).sum().backward();
  ASSERT_TRUE(head.grad().defined());
  {
    torch::NoGradGuard no_grad;
    head.sub_(head.grad(), 0.1);  // one SGD step, in place
    EXPECT_TRUE(at::equal(model->trunk().embed_tokens->weight(), embed_before));
    EXPECT_GT(max_diff(model->forward(ids), before), 1e-4);
  }
  EXPECT_FALSE(model->trunk().embed_tokens->weight().grad().defined());
  // merged_state_dict now carries the trained head.
  bool has_head = false;
  for (const auto& [name, t] : lora::merged_state_dict(*model))
    if (name == "lm_head.weight") has_head = at::equal(t, head);
  EXPECT_TRUE(has_head);
}

TEST(LoraModulesToSave, TiedEmbeddingsTrainApartFromTheFrozenLmHead) {
  const auto cfg = tiny_config(/*tied=*/true);
  auto model = lora_model(cfg, no_dropout({"q_proj"}), 7, at::TensorOptions().dtype(at::kBFloat16));
  const auto head_before = model->lm_head_weight().clone();
  const auto ids = random_ids(1, 6, cfg.vocab_size);
  lora::apply_modules_to_save(*model, {"embed_tokens"});
  const auto& embed = model->trunk().embed_tokens->weight();
  EXPECT_TRUE(embed.requires_grad());
  EXPECT_EQ(embed.scalar_type(), at::kFloat);
  EXPECT_FALSE(model->lm_head_weight().requires_grad());
  EXPECT_EQ(model->lm_head_weight().scalar_type(), at::kBFloat16);
  const auto logits = model->forward(ids);
  EXPECT_EQ(logits.scalar_type(), at::kBFloat16);  // the trunk still runs in the model dtype
  logits.to(at::kFloat).sum().backward();
  ASSERT_TRUE(embed.grad().defined());
  torch::NoGradGuard no_grad;
  embed.add_(1.0);
  EXPECT_TRUE(at::equal(model->lm_head_weight(), head_before));
  // Anything else is an error naming the module.
  const auto msg = test::error_of([&] { lora::apply_modules_to_save(*model, {"model.norm"}); });
  EXPECT_NE(msg.find("model.norm"), std::string::npos) << msg;
  EXPECT_NE(msg.find("modules_to_save"), std::string::npos) << msg;
}

TEST(LoraModulesToSave, UntiedLmHeadTrainsInFp32In16BitModel) {
  const auto cfg = tiny_config(/*tied=*/false);
  auto model = lora_model(cfg, no_dropout({"v_proj"}), 7, at::TensorOptions().dtype(at::kBFloat16));
  lora::apply_modules_to_save(*model, {"lm_head", "embed_tokens"});
  EXPECT_EQ(model->lm_head_weight().scalar_type(), at::kFloat);
  EXPECT_TRUE(model->lm_head_weight().requires_grad());
  EXPECT_EQ(lora::trainable_parameters(*model).size(), 2u * 2u + 2u);
  const auto logits = model->forward(random_ids(1, 5, cfg.vocab_size));
  EXPECT_EQ(logits.scalar_type(), at::kBFloat16);
  logits.to(at::kFloat).sum().backward();
  EXPECT_TRUE(model->lm_head_weight().grad().defined());
  EXPECT_TRUE(model->trunk().embed_tokens->weight().grad().defined());
}

}  // namespace

namespace {

// Merging onto a 4-bit base happens on the dequantized fp32 weight; requantizing the result keeps the update
// (it moves the codes), and the merged 4-bit layer is as close to W + scale·B·A as 4-bit rounding allows.
TEST(LoraMerge, MergedFourBitKeepsTheUpdate) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(21);
  auto w = at::randn({64, 128}, gen, at::kFloat) * 0.05;
  auto state = qtune::quant::quantize_4bit(w, {qtune::quant::Format4::NF4, 64, true});
  auto base = std::make_shared<qtune::nn::QuantizedLinearImpl>(
      qtune::nn::LinearSpec{"m.q_proj", 128, 64, false}, c10::make_intrusive<qtune::quant::Quant4Weight>(state), at::Tensor());
  qtune::lora::LoraLinearImpl lora(base, {8, 16.0, 2.0}, 0.0, at::make_generator<at::CPUGeneratorImpl>(1));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : lora.named_parameters())
      if (p.key() == "lora_B.weight") p.value().normal_(0.0, 0.02, gen);
  }
  auto merged = lora.merged_weight();
  auto requantized = qtune::kernels::dequantize_4bit(qtune::lora::merged_4bit(lora, {qtune::quant::Format4::NF4, 64, true}), at::kFloat);
  auto base_only = base->dense_weight();
  // The update survives: the requantized weight is nearer the merged weight than the old codes are.
  EXPECT_LT((requantized - merged).abs().mean().item<double>(), (base_only - merged).abs().mean().item<double>());
  EXPECT_FALSE(at::equal(requantized, base_only));
}

}  // namespace

namespace {

using namespace qtune;

// A quantized base keeps its codes in a QuantizedWeight, not in parameters or buffers: the adapter must still be
// created where the codes are. The meta device stands in for a GPU, so CPU CI catches a CPU-made adapter.
TEST(LoraDevice, AdapterLivesWhereTheQuantizedBaseLives) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  auto w = at::normal(0.0, 0.3, {16, 64}, gen, at::TensorOptions().dtype(at::kFloat));
  for (const bool int8 : {false, true}) {
    SCOPED_TRACE(int8 ? "int8" : "nf4");
    c10::intrusive_ptr<quant::QuantizedWeight> q;
    if (int8)
      q = c10::make_intrusive<quant::Int8Weight>(quant::quantize_int8_rowwise(w));
    else
      q = c10::make_intrusive<quant::Quant4Weight>(quant::quantize_4bit(w, {}));
    q->to(at::Device(at::kMeta));
    auto base = std::make_shared<nn::QuantizedLinearImpl>(nn::LinearSpec{"p", 64, 16, false}, q, at::Tensor());
    lora::LoraLinearImpl layer(base, lora::LoraTarget{4, 8, 2}, 0.0, at::make_generator<at::CPUGeneratorImpl>(1));
    EXPECT_EQ(layer.lora_A().device().type(), at::kMeta);
    EXPECT_EQ(layer.lora_B().device().type(), at::kMeta);
  }
}

}  // namespace

namespace {

using namespace qtune;

// An adapter saved with full-name targets names exactly its modules, so that qtune (and PEFT) rebuild the same
// adapters from its config; leaf names are kept where they say the same thing.
TEST(PeftTargets, SavedTargetModulesRebuildExactlyTheTrainedAdapters) {
  const auto cfg = tiny_config();
  const auto dir = test::temp_dir();
  const std::vector<std::vector<std::string>> cases = {
      {"model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"}, {"q_proj", "v_proj"}};
  for (const auto& targets : cases) {
    SCOPED_TRACE(targets[0]);
    auto config = no_dropout(targets);
    auto model = lora_model(cfg, config);
    randomize_b(*model);
    std::set<std::string> trained;
    for (const auto& [path, layer] : lora::lora_layers(*model)) trained.insert(path);
    exporting::save_peft_adapter(*model, config, "base", dir + "/a");
    const auto read = exporting::read_peft_config(dir + "/a");
    EXPECT_EQ(read.target_modules, targets);  // both lists are sorted
    auto again = lora_model(cfg, read);
    std::set<std::string> rebuilt;
    for (const auto& [path, layer] : lora::lora_layers(*again)) rebuilt.insert(path);
    EXPECT_EQ(rebuilt, trained);
    EXPECT_NO_THROW(exporting::load_peft_adapter(*again, dir + "/a"));
    qtune::remove_tree(dir + "/a");
  }
}

}  // namespace
