// quant.qat_layers on a tiny run: globs choose exactly the linears they match; N and auto choose by the loss each
// linear's deployed format adds, checked against that loss measured here model by model (one linear fake-quantized
// in a whole dense model); the unchosen linears compute as plain QLoRA's and the chosen as full QAT's, bit for bit; the
// export quantizes every merge, chosen or not; resume is bit-exact; bad values are errors naming the recipe and key.
#include <gtest/gtest.h>

#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <numeric>

#include "qtune/export/peft_adapter.h"
#include "qtune/io/json_file.h"
#include "qtune/lora/inject.h"
#include "qtune/nn/model_io.h"
#include "qtune/quant/fake_quant.h"
#include "qtune/train/qat_layers.h"
#include "qtune/train/run_setup.h"
#include "test_util.h"
#include "tiny_run.h"

namespace qtune::train {
namespace {

namespace fs = std::filesystem;
const auto kFp32 = at::TensorOptions().dtype(at::kFloat);

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Every base of the tiny model's 14 projections fake-quantized as int4 g32 asymmetric (windows of 128 tokens: the
// tiny model's positions stop at 256).
std::vector<std::string> int4(std::vector<std::string> more = {}) {
  std::vector<std::string> keys = {"quant.qat=int4", "quant.qat_group_size=32", "quant.qat_symmetric=false",
                                   "lora.dropout=0", "quant.calib_seq_len=128", "quant.scan_tokens=512"};
  keys.insert(keys.end(), more.begin(), more.end());
  return keys;
}

// The dense model with `target`'s weight replaced by its fake-quantized version (none: the dense model).
class OneFakeQuantized : public nn::LinearFactory {
 public:
  OneFakeQuantized(std::string target, quant::FakeQuantSpec spec) : target_(std::move(target)), spec_(spec) {}
  nn::Linear make(const nn::LinearSpec& s, const io::WeightSource& weights) override {
    auto linear = dense_.make(s, weights);
    if (s.name != target_) return linear;
    auto* d = dynamic_cast<nn::DenseLinearImpl*>(linear.get());
    return std::make_shared<nn::DenseLinearImpl>(s, quant::fake_quantize_weight(d->weight(), spec_).values, d->bias());
  }

 private:
  nn::DenseLinearFactory dense_{kFp32};
  std::string target_;
  quant::FakeQuantSpec spec_;
};

// The mean next-token NLL of the whole model over the windows.
double mean_nll(nn::CausalLMImpl& model, const std::vector<std::vector<int64_t>>& windows) {
  torch::NoGradGuard no_grad;
  model.eval();
  double sum = 0;
  int64_t n = 0;
  for (const auto& w : windows) {
    const auto ids = at::tensor(w, at::kLong).unsqueeze(0);
    const auto logp = at::log_softmax(model.forward(ids).squeeze(0).to(at::kFloat), -1);
    const auto t = static_cast<int64_t>(w.size());
    sum += -logp.narrow(0, 0, t - 1).gather(1, ids.squeeze(0).narrow(0, 1, t - 1).unsqueeze(1)).sum().item<double>();
    n += t - 1;
  }
  return sum / static_cast<double>(n);
}

// Each projection's loss increase, measured with a model of its own: what the run's scan must rank by.
std::map<std::string, double> measured_increases(const TinyRun& t, const Recipe& recipe, const quant::FakeQuantSpec& spec,
                                                 const std::vector<std::string>& linears) {
  const auto config = io::ModelConfig::load(t.model);
  const auto windows = qat_scan_windows(recipe, load_tokenizer(recipe, config));
  OneFakeQuantized none("", spec);
  auto dense = nn::load_causal_lm(t.model, kFp32, &none);
  const double base = mean_nll(*dense, windows);
  std::map<std::string, double> out;
  for (const auto& name : linears) {
    OneFakeQuantized one(name, spec);
    auto model = nn::load_causal_lm(t.model, kFp32, &one);
    out[name] = mean_nll(*model, windows) - base;
  }
  return out;
}

std::vector<std::string> fake_quantized(nn::CausalLMImpl& model) {
  std::vector<std::string> out;
  for (const auto& [name, layer] : lora::lora_layers(model))
    if (layer->qat().active()) out.push_back(layer->spec().name);
  return out;
}

TEST(QatLayers, GlobsChooseExactlyTheLinearsTheyMatch) {
  TinyRun t;
  const auto recipe = t.recipe(int4({"quant.qat_layers=[layers.1.mlp.*, model.layers.0.self_attn.v_proj]"}));
  auto s = RunSetup::create(recipe, nullptr);
  const std::vector<std::string> expected = {"model.layers.0.self_attn.v_proj", "model.layers.1.mlp.gate_proj",
                                             "model.layers.1.mlp.up_proj", "model.layers.1.mlp.down_proj"};
  EXPECT_EQ(fake_quantized(*s.model), expected);
  EXPECT_EQ(s.recipe.quant.qat_layers, expected);  // what the run's saved recipe records
  EXPECT_TRUE(contains(s.qat.summary, "in 4 linears")) << s.qat.summary;
  EXPECT_FALSE(fs::exists(t.dir + "/run")) << "globs need no ranking";
}

TEST(QatLayers, CountAndAutoChooseTheWorstByTheMeasuredLossIncrease) {
  TinyRun t;
  const auto spec = quant::parse_fake_quant("int4", 32, false, "test");
  auto s = RunSetup::create(t.recipe(int4({"quant.qat_layers=3"})), nullptr);
  const auto chosen = fake_quantized(*s.model);
  ASSERT_EQ(chosen.size(), 3u);

  // The ranking the run cached, against each linear's increase measured in a model of its own.
  std::vector<std::string> scan_files;
  for (const auto& e : fs::directory_iterator(t.dir + "/run")) scan_files.push_back(e.path().filename().string());
  ASSERT_EQ(scan_files.size(), 1u);
  EXPECT_EQ(scan_files[0].rfind("qat-scan-", 0), 0u) << scan_files[0];
  const auto cached = io::read_json_file(t.dir + "/run/" + scan_files[0]).at("layers");
  ASSERT_EQ(cached.size(), 14u);
  std::vector<std::string> linears;
  for (const auto& l : cached) linears.push_back(l.at("name"));
  const auto measured = measured_increases(t, t.recipe(int4()), spec, linears);
  for (const auto& l : cached) {
    SCOPED_TRACE(l.at("name").get<std::string>());
    EXPECT_EQ(l.at("format"), spec.name());
    const double m = measured.at(l.at("name"));
    EXPECT_NEAR(l.at("loss_increase").get<double>(), m, 1e-5 + 1e-3 * std::abs(m));
  }
  std::vector<std::string> worst = linears;
  std::stable_sort(worst.begin(), worst.end(), [&](const auto& a, const auto& b) { return measured.at(a) > measured.at(b); });
  ASSERT_GT(measured.at(worst[2]) - measured.at(worst[3]), 1e-4) << "the 3rd and 4th worst must be told apart";
  std::vector<std::string> expected(worst.begin(), worst.begin() + 3);
  std::sort(expected.begin(), expected.end(), [&](const auto& a, const auto& b) {
    return std::find(linears.begin(), linears.end(), a) < std::find(linears.begin(), linears.end(), b);
  });
  EXPECT_EQ(chosen, expected);

  // auto: the fewest worst whose increases hold 80% of the positive sum; the ranking is reused from the cache.
  auto a = RunSetup::create(t.recipe(int4({"quant.qat_layers=auto"})), nullptr);
  double total = 0;
  for (const auto& [n, m] : measured) total += std::max(0.0, m);
  size_t k = 0;
  for (double held = 0; k == 0 || held < kAutoShare * total; ++k) held += std::max(0.0, measured.at(worst[k]));
  const auto chose = fake_quantized(*a.model);
  EXPECT_EQ(chose.size(), k);
  for (size_t i = 0; i < k; ++i) EXPECT_NE(std::find(chose.begin(), chose.end(), worst[i]), chose.end()) << worst[i];
  EXPECT_LT(k, 14u);
}

// The rule itself on a made-up ranking: ties keep model order, a share is reached by the fewest, at least one.
TEST(QatLayers, AutoTakesTheFewestWorstThatHoldTheShare) {
  calib::FormatScan r;
  const std::vector<std::string> names = {"a", "b", "c", "d", "e"};
  for (const auto& [n, inc] : std::vector<std::pair<std::string, double>>{{"a", 0.1}, {"b", 0.5}, {"c", 0.2}, {"d", 0.2}, {"e", -0.1}})
    r.layers.push_back({n, "int4", inc});
  QatLayers rule;
  rule.rule = QatLayerRule::Auto;
  EXPECT_EQ(choose_qat_layers(rule, names, &r, "r.yaml"), (std::vector<std::string>{"b", "c", "d"}));  // 0.9 of 1.0
  rule.rule = QatLayerRule::Count;
  rule.count = 2;
  EXPECT_EQ(choose_qat_layers(rule, names, &r, "r.yaml"), (std::vector<std::string>{"b", "c"}));
  for (auto& l : r.layers) l.loss_increase = -1;
  rule.rule = QatLayerRule::Auto;
  EXPECT_EQ(choose_qat_layers(rule, names, &r, "r.yaml"), (std::vector<std::string>{"a"}));
}

TEST(QatLayers, UnchosenLinearsComputeAsPlainQloraAndChosenAsFullQat) {
  TinyRun t;
  auto plain = RunSetup::create(t.recipe({"lora.dropout=0"}), nullptr);
  auto full = RunSetup::create(t.recipe(int4()), nullptr);
  auto some = RunSetup::create(t.recipe(int4({"quant.qat_layers=[layers.0.*]"})), nullptr);
  // One nonzero adapter in all three (A is seeded alike; B starts at zero, which would hide the merge).
  at::manual_seed(7);
  std::map<std::string, at::Tensor> b;
  for (const auto& [name, layer] : lora::lora_layers(*plain.model)) b[name] = at::randn(layer->lora_B().sizes()) * 0.05;
  for (auto* s : {&plain, &full, &some}) {
    torch::NoGradGuard no_grad;
    for (const auto& [name, layer] : lora::lora_layers(*s->model)) layer->lora_B().copy_(b.at(name));
  }
  auto layers_of = [](RunSetup& s) {
    std::map<std::string, lora::LoraLinear> m;
    for (const auto& [name, layer] : lora::lora_layers(*s.model)) m[layer->spec().name] = layer;
    return m;
  };
  auto p = layers_of(plain), f = layers_of(full), q = layers_of(some);
  ASSERT_EQ(q.size(), 14u);
  torch::NoGradGuard no_grad;
  int64_t chosen = 0;
  for (const auto& [name, layer] : q) {
    SCOPED_TRACE(name);
    const auto x = at::randn({2, 5, layer->spec().in_features});
    const bool in_layer0 = name.rfind("model.layers.0.", 0) == 0;
    chosen += in_layer0;
    EXPECT_TRUE(test::bitwise_equal(layer->forward(x), (in_layer0 ? f : p).at(name)->forward(x)));
    EXPECT_FALSE(test::bitwise_equal(layer->forward(x), (in_layer0 ? p : f).at(name)->forward(x)));
  }
  EXPECT_EQ(chosen, 7);
}

// The export quantizes every projection's merge, chosen or not: the NF4 export's logits are those of the trained
// adapter with every linear fake-quantized.
TEST(QatLayers, ExportQuantizesEveryMergeChosenOrNot) {
  TinyRun t;
  const std::vector<std::string> keys = {"quant.qat=nf4", "lora.dropout=0", "train.max_steps=4",
                                         "quant.qat_layers=[layers.1.self_attn.*]"};
  run_training(t.recipe(keys), quiet());
  EXPECT_TRUE(contains(test::read_file(t.dir + "/run/recipe.yaml"), "model.layers.1.self_attn.o_proj"));
  const auto out = t.dir + "/merged-nf4";
  const auto res = test::run_qtune("export " + t.dir + "/run --merged " + out + " --quantize nf4 --dtype fp32 "
                                   "--no-quality-check");
  ASSERT_EQ(res.code, 0) << res.err;
  EXPECT_FALSE(contains(res.err, "trained for")) << res.err;
  auto every = RunSetup::create(t.recipe({"quant.qat=nf4", "lora.dropout=0"}), nullptr);
  exporting::load_peft_adapter(*every.model, t.dir + "/run/adapter");
  auto deployed = nn::load_causal_lm(out, kFp32);
  EXPECT_TRUE(test::bitwise_equal(probe_logits(*deployed), probe_logits(*every.model)));
}

TEST(QatLayers, ResumeIsBitExact) {
  TinyRun t;
  auto with = [&](const std::string& out) {
    return t.recipe(int4({"quant.qat_layers=auto", "train.max_steps=6", "train.save_every=2",
                          "train.output_dir=" + t.dir + "/" + out}));
  };
  std::vector<double> straight, resumed;
  auto collect = [](std::vector<double>& v) {
    auto o = quiet();
    o.on_step = [&v](int64_t, double loss) { v.push_back(loss); };
    return o;
  };
  run_training(with("straight"), collect(straight));
  auto first = collect(resumed);
  first.stop_after_step = 3;
  run_training(with("resumed"), first);
  auto second = collect(resumed);
  second.resume = "auto";
  EXPECT_EQ(run_training(with("resumed"), second).start_step, 2);
  ASSERT_EQ(resumed.size(), 3u + 4u);
  resumed.erase(resumed.begin() + 2);  // step 3 ran twice
  EXPECT_EQ(resumed, straight);
  EXPECT_EQ(test::read_file(t.dir + "/resumed/adapter/adapter_model.safetensors"),
            test::read_file(t.dir + "/straight/adapter/adapter_model.safetensors"));
  // Both saved recipes name the same chosen linears.
  auto chosen_in = [&](const std::string& run) {
    const auto yaml = test::read_file(t.dir + "/" + run + "/recipe.yaml");
    const auto at = yaml.find("qat_layers:");
    return at == std::string::npos ? std::string() : yaml.substr(at, yaml.find('\n', at) - at);
  };
  EXPECT_TRUE(contains(chosen_in("straight"), "model.layers.")) << chosen_in("straight");
  EXPECT_EQ(chosen_in("resumed"), chosen_in("straight"));
}

TEST(QatLayers, BadValuesNameTheRecipeAndKey) {
  TinyRun t;
  auto named = [](const std::string& msg, const std::string& part) {
    EXPECT_TRUE(contains(msg, "tiny.yaml") && contains(msg, "quant.qat_layers") && contains(msg, part)) << msg;
  };
  named(test::error_of([&] { t.recipe(int4({"quant.qat_layers=0"})); }), "positive number");
  named(test::error_of([&] { t.recipe(int4({"quant.qat_layers=-3"})); }), "positive number");
  named(test::error_of([&] { t.recipe(int4({"quant.qat_layers=[auto, layers.0.*]"})); }), "stands alone");
  named(test::error_of([&] { t.recipe({"lora.dropout=0", "quant.qat_layers=auto"}); }), "quant.qat is none");
  // int8 activations alone quantize no weight: nothing to rank by (globs still choose).
  named(test::error_of([&] { t.recipe({"lora.dropout=0", "quant.qat_activations=int8", "quant.qat_layers=2"}); }),
        "no weight to scan");
  EXPECT_NO_THROW(t.recipe({"lora.dropout=0", "quant.qat_activations=int8", "quant.qat_layers=[layers.0.*]"}));
  named(test::error_of([&] { RunSetup::create(t.recipe(int4({"quant.qat_layers=15"})), nullptr); }), "(14)");
  named(test::error_of([&] { RunSetup::create(t.recipe(int4({"quant.qat_layers=[layers.0.*, layers.7.*]"})), nullptr); }),
        "'layers.7.*' matches none");
}

}  // namespace
}  // namespace qtune::train
