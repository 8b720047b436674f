// The optimizers: AdamW against LibTorch's torch::optim::AdamW, paged AdamW against AdamW, 8-bit AdamW against
// fp32 AdamW on a regression problem, exact resume through a safetensors round trip for every kind, and the
// errors of the factory and of load_state_dict.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>

#include <cmath>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "qtune/io/hf_config.h"
#include "qtune/io/safetensors.h"
#include "qtune/nn/decoder.h"
#include "qtune/nn/linear.h"
#include "qtune/nn/model_io.h"
#include "qtune/optim/adamw.h"
#include "qtune/optim/adamw8bit.h"
#include "qtune/optim/optimizer.h"
#include "qtune/optim/paged_state.h"
#include "qtune/quant/nf4.h"
#include "test_util.h"

namespace {

using namespace qtune;
using optim::AdamWOptions;
using optim::NamedParams;

// A learning rate that changes every step, as a schedule's does.
double lr_at(int step) { return 1e-3 * (1.0 + 0.5 * std::sin(step)); }

// Leaf tensors that require grad, like the LoRA adapters: 40 x 130 = 5200 elements (8-bit state, with a partial
// last block of 80), 35 and 300 (fp32 state in the 8-bit optimizer).
NamedParams make_params(uint64_t seed = 1) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  NamedParams params;
  for (auto [name, shape] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
           {"lora_A", {40, 130}}, {"lora_B", {7, 5}}, {"vec", {300}}})
    params.emplace_back(name, (at::randn(shape, gen) * 0.1).set_requires_grad(true));
  return params;
}

NamedParams clone_params(const NamedParams& params) {
  NamedParams out;
  for (const auto& [name, p] : params) out.emplace_back(name, p.detach().clone().set_requires_grad(true));
  return out;
}

// The grads of step `step`: fixed per (step, parameter), some large, some tiny.
void set_grads(const NamedParams& params, int step) {
  for (size_t i = 0; i < params.size(); ++i) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(1000 * step + i);
    at::Tensor p = params[i].second;
    p.mutable_grad() = at::randn(p.sizes(), gen) * std::pow(10.0, static_cast<double>(i) - 1.0);
  }
}

void run_steps(optim::Optimizer& opt, int first, int last) {
  for (int s = first; s < last; ++s) {
    set_grads(opt.params(), s);
    opt.step(lr_at(s));
    opt.zero_grad();
  }
}

TEST(AdamW, EqualsLibTorchAdamWBitwise) {
  for (double weight_decay : {0.0, 0.01}) {
    SCOPED_TRACE(weight_decay);
    AdamWOptions o;
    o.weight_decay = weight_decay;
    auto ours = make_params();
    auto theirs = clone_params(ours);
    optim::AdamW adamw(ours, o);
    std::vector<at::Tensor> torch_params;
    for (const auto& [name, p] : theirs) torch_params.push_back(p);
    torch::optim::AdamW reference(torch_params, torch::optim::AdamWOptions(o.lr)
                                                    .betas({o.beta1, o.beta2})
                                                    .eps(o.eps)
                                                    .weight_decay(o.weight_decay));
    for (int s = 0; s < 8; ++s) {
      set_grads(ours, s);
      set_grads(theirs, s);
      adamw.step(lr_at(s));
      for (auto& group : reference.param_groups()) group.options().set_lr(lr_at(s));
      reference.step();
    }
    EXPECT_EQ(adamw.step_count(), 8);
    for (size_t i = 0; i < ours.size(); ++i) {
      SCOPED_TRACE(ours[i].first);
      EXPECT_TRUE(test::bitwise_equal(ours[i].second, theirs[i].second));
      EXPECT_FALSE(at::equal(ours[i].second, make_params()[i].second));  // it did move
    }
  }
}

TEST(AdamW, PagedEqualsUnpagedOnCpu) {
  AdamWOptions o;
  o.weight_decay = 0.1;
  for (const auto& [plain_kind, paged_kind] : {std::pair<std::string, std::string>{"adamw", "paged_adamw"},
                                               {"adamw_8bit", "paged_adamw_8bit"}}) {
    SCOPED_TRACE(paged_kind);
    auto a = make_params(), b = clone_params(a);
    auto plain = optim::make_optimizer(plain_kind, a, o);
    auto paged = optim::make_optimizer(paged_kind, b, o);
    EXPECT_EQ(paged->kind(), paged_kind);
    run_steps(*plain, 0, 6);
    run_steps(*paged, 0, 6);
    for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(test::bitwise_equal(b[i].second, a[i].second)) << a[i].first;
    EXPECT_EQ(paged->state_bytes(), plain->state_bytes());
    for (const auto& [name, t] : paged->state_dict()) EXPECT_FALSE(optim::is_managed(t)) << name;
  }
}

TEST(AdamW, ParamsWithoutGradKeepTheirStateAndStep) {
  auto params = make_params();
  const auto before = params[1].second.detach().clone();
  optim::AdamW adamw(params, {});
  set_grads(params, 0);
  params[1].second.mutable_grad().reset();
  adamw.step(1e-3);
  EXPECT_TRUE(test::bitwise_equal(params[1].second, before));
  std::map<std::string, int64_t> steps;
  for (const auto& [name, t] : adamw.state_dict())
    if (t.scalar_type() == at::kLong) steps[name] = t.item<int64_t>();
  EXPECT_EQ(steps, (std::map<std::string, int64_t>{{"step", 1}, {"lora_A.step", 1}, {"lora_B.step", 0}, {"vec.step", 1}}));
  adamw.zero_grad();
  for (const auto& [name, p] : params) EXPECT_FALSE(p.grad().defined()) << name;
}

// Every kind: k steps, state_dict written to safetensors and read back into a fresh optimizer over the params
// as they were, then more steps: bit-identical to the run that never stopped.
TEST(Optimizers, ResumeFromStateDictIsBitIdentical) {
  AdamWOptions o;
  o.weight_decay = 0.01;
  for (const auto& kind : optim::optimizer_names()) {
    SCOPED_TRACE(kind);
    auto straight = make_params();
    auto opt = optim::make_optimizer(kind, straight, o);
    run_steps(*opt, 0, 4);
    const std::string path = test::temp_dir() + "/" + kind + ".safetensors";
    io::write_safetensors(path, opt->state_dict());
    auto resumed_params = clone_params(straight);
    run_steps(*opt, 4, 9);

    auto resumed = optim::make_optimizer(kind, resumed_params, o);
    auto file = io::SafetensorsFile::open(path);
    io::NamedTensors state;
    for (const auto& info : file->tensors()) state.emplace_back(info.name, file->tensor(info.name));
    resumed->load_state_dict(state);
    EXPECT_EQ(resumed->step_count(), 4);
    run_steps(*resumed, 4, 9);
    EXPECT_EQ(resumed->step_count(), 9);
    for (size_t i = 0; i < straight.size(); ++i)
      EXPECT_TRUE(test::bitwise_equal(resumed_params[i].second, straight[i].second)) << straight[i].first;
    const auto a = opt->state_dict(), b = resumed->state_dict();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(test::bitwise_equal(b[i].second, a[i].second)) << a[i].first;
  }
}

TEST(Optimizers, LoadStateDictNamesTheFirstMismatch) {
  auto params = make_params();
  auto opt = optim::make_optimizer("adamw", params, {});
  run_steps(*opt, 0, 1);
  const auto good = opt->state_dict();
  const auto params_before = clone_params(params);

  auto without = [&](const std::string& name) {
    io::NamedTensors out;
    for (const auto& e : good)
      if (e.first != name) out.push_back(e);
    return out;
  };
  auto replaced = [&](const std::string& name, at::Tensor t) {
    auto out = good;
    for (auto& e : out)
      if (e.first == name) e.second = t;
    return out;
  };
  EXPECT_NE(test::error_of([&] { opt->load_state_dict(without("lora_B.exp_avg_sq")); }).find("'lora_B.exp_avg_sq' is missing"),
            std::string::npos);
  const auto shape_error = test::error_of([&] { opt->load_state_dict(replaced("vec.exp_avg", at::zeros({299}))); });
  EXPECT_NE(shape_error.find("'vec.exp_avg' is Float [299], expected Float [300]"), std::string::npos) << shape_error;
  const auto dtype_error =
      test::error_of([&] { opt->load_state_dict(replaced("lora_A.exp_avg", at::zeros({40, 130}, at::kDouble))); });
  EXPECT_NE(dtype_error.find("'lora_A.exp_avg' is Double [40, 130]"), std::string::npos) << dtype_error;
  EXPECT_NE(test::error_of([&] { opt->load_state_dict(replaced("step", at::scalar_tensor(int64_t{-3}, at::kLong))); })
                .find("'step' is -3"),
            std::string::npos);
  auto extra = good;
  extra.emplace_back("lora_C.exp_avg", at::zeros({1}));
  EXPECT_NE(test::error_of([&] { opt->load_state_dict(extra); }).find("unexpected entry 'lora_C.exp_avg'"),
            std::string::npos);
  // An 8-bit state does not load into fp32 AdamW: the first state entry it lacks is named.
  auto eight = optim::make_optimizer("adamw_8bit", clone_params(params), {});
  EXPECT_NE(test::error_of([&] { opt->load_state_dict(eight->state_dict()); }).find("'lora_A.exp_avg' is missing"),
            std::string::npos);
  // None of the failed loads changed anything.
  EXPECT_EQ(opt->step_count(), 1);
  const auto after = opt->state_dict();
  for (size_t i = 0; i < good.size(); ++i) EXPECT_TRUE(test::bitwise_equal(after[i].second, good[i].second));
}

TEST(Optimizers, FactoryAndOptionErrors) {
  const auto unknown = test::error_of([] { optim::make_optimizer("adam", make_params(), {}); });
  EXPECT_NE(unknown.find("unknown optimizer 'adam': expected one of adamw, paged_adamw, adamw_8bit, paged_adamw_8bit"),
            std::string::npos)
      << unknown;
  EXPECT_NE(test::error_of([] { optim::estimate_state_bytes("sgd", {1}); }).find("unknown optimizer 'sgd'"),
            std::string::npos);
  AdamWOptions bad;
  bad.beta2 = 1.0;
  EXPECT_NE(test::error_of([&] { optim::make_optimizer("adamw", make_params(), bad); }).find("beta2 must be in [0, 1)"),
            std::string::npos);
  NamedParams half{{"w", at::zeros({4}, at::kHalf)}};
  EXPECT_NE(test::error_of([&] { optim::AdamW(half, {}); }).find("parameter 'w' is Half"), std::string::npos);
  NamedParams twice{{"w", at::zeros({4})}, {"w", at::zeros({4})}};
  EXPECT_NE(test::error_of([&] { optim::AdamW(twice, {}); }).find("'w' is listed twice"), std::string::npos);
  auto params = make_params();
  optim::AdamW adamw(params, {});
  params[0].second.mutable_grad() = at::zeros({130, 40});
  EXPECT_NE(test::error_of([&] { adamw.step(1e-3); }).find("the grad of 'lora_A' is Float [130, 40]"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { adamw.step(NAN); }).find("learning rate must be a finite number"), std::string::npos);
}

TEST(Optimizers, EstimatedStateBytesEqualTheBuiltOptimizers) {
  auto params = make_params();
  std::vector<int64_t> numels;
  for (const auto& [name, p] : params) numels.push_back(p.numel());
  for (const auto& kind : optim::optimizer_names()) {
    auto opt = optim::make_optimizer(kind, clone_params(params), {});
    EXPECT_EQ(opt->state_bytes(), optim::estimate_state_bytes(kind, numels)) << kind;
  }
  // 8-bit: 2 bytes per element plus 2 absmax per 256 for large tensors, fp32 (8 bytes per element) below 4096.
  EXPECT_EQ(optim::estimate_state_bytes("adamw_8bit", {5200}), 2 * 5200 + 2 * 4 * 21);
  EXPECT_EQ(optim::estimate_state_bytes("adamw_8bit", {4095}), 8 * 4095);
  EXPECT_EQ(optim::estimate_state_bytes("adamw", {5200, 35}), 8 * 5235);
}

// --- 8-bit -----------------------------------------------------------------------------------------------

TEST(AdamW8bit, SignedMapEqualsTheNf4DoubleQuantMap) {
  EXPECT_TRUE(test::bitwise_equal(quant::dynamic_map(true), quant::dynamic_map_signed()));
  const auto u = quant::dynamic_map(false);
  ASSERT_EQ(u.numel(), 256);
  EXPECT_EQ(u[0].item<float>(), 0.0f);
  EXPECT_EQ(u[255].item<float>(), 1.0f);
  EXPECT_TRUE((u.slice(0, 1) > u.slice(0, 0, 255)).all().item<bool>());  // strictly increasing
}

TEST(AdamW8bit, BlockwiseQuantizationRoundTrips) {
  optim::BlockwiseQuantizer q(quant::dynamic_map(true));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  auto x = at::randn({256 * 3 + 17}, gen) * at::logspace(-4, 0, 256 * 3 + 17);
  x.narrow(0, 256, 256).zero_();  // an all-zero block
  optim::BlockwiseState s{at::empty({x.numel()}, at::kByte), at::empty({4}, at::kFloat)};
  q.quantize(x, s);
  EXPECT_EQ(s.absmax[1].item<float>(), 0.0f);
  EXPECT_TRUE((s.codes.narrow(0, 256, 256) == 0).all().item<bool>());
  EXPECT_EQ(s.absmax[3].item<float>(), x.narrow(0, 768, 17).abs().max().item<float>());
  const auto back = q.dequantize(s);
  // Each value lands on one of its two neighbouring codes: within one map step of the block's absmax.
  const auto scale = s.absmax.repeat_interleave(256).narrow(0, 0, x.numel());
  const auto err = ((back - x).abs() / scale.clamp_min(1e-30)).masked_fill(scale == 0, 0);
  EXPECT_LT(err.max().item<float>(), 0.015f);  // widest gap of the signed map ~0.014
  EXPECT_TRUE(at::equal(back.narrow(0, 256, 256).abs(), at::zeros({256})));
  // The block maximum maps to +-1 exactly.
  EXPECT_FLOAT_EQ(back.narrow(0, 0, 256).abs().max().item<float>(), s.absmax[0].item<float>());
  // A NaN neither raises its block's absmax nor breaks the table lookup: it gets code 0, as in bitsandbytes.
  auto with_nan = at::linspace(-2, 1, 300);
  with_nan[5] = NAN;
  optim::BlockwiseState n{at::empty({300}, at::kByte), at::empty({2}, at::kFloat)};
  q.quantize(with_nan, n);
  EXPECT_EQ(n.absmax[0].item<float>(), 2.0f);
  EXPECT_EQ(n.codes[5].item<int>(), 0);
  EXPECT_EQ(n.codes[0].item<int>(), 0);  // -2 / 2 = -1: the lowest code
}

TEST(AdamW8bit, SmallParamsKeepFp32State) {
  auto params = make_params();
  optim::AdamW8bit opt(params, {});
  EXPECT_TRUE(opt.is_quantized(0));   // 40 x 130 = 5200 elements
  EXPECT_FALSE(opt.is_quantized(1));  // 35
  EXPECT_FALSE(opt.is_quantized(2));  // 300
  std::map<std::string, at::ScalarType> dtypes;
  for (const auto& [name, t] : opt.state_dict()) dtypes[name] = t.scalar_type();
  EXPECT_EQ(dtypes.at("lora_A.exp_avg.codes"), at::kByte);
  EXPECT_EQ(dtypes.at("lora_A.exp_avg_sq.absmax"), at::kFloat);
  EXPECT_EQ(dtypes.at("vec.exp_avg"), at::kFloat);
  EXPECT_EQ(dtypes.count("lora_A.exp_avg"), 0u);
}

// Least squares y = X W* with W [64 x 96] (8-bit state), 50 steps from zero: the 8-bit parameters stay within 5%
// of the distance fp32 AdamW travelled (measured: 2.6%) and reach its loss within 10% (measured: 1.6%, both
// about 1/55 of the start). The moments' codes are coarse (the top decade of the signed map is spaced 0.014 of the
// block absmax), so the trajectories part slowly rather than agree to fp32 rounding.
TEST(AdamW8bit, TracksFp32AdamWOnARegression) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  const auto x = at::randn({128, 64}, gen);
  const auto w_star = at::randn({64, 96}, gen) * 0.1;
  const auto y = at::matmul(x, w_star);
  const auto w0 = at::zeros({64, 96});
  auto loss_of = [&](const at::Tensor& w) { return (at::matmul(x, w) - y).pow(2).mean(); };

  auto run = [&](const std::string& kind) {
    NamedParams params{{"w", w0.clone().set_requires_grad(true)}};
    AdamWOptions o;
    o.weight_decay = 0.01;
    auto opt = optim::make_optimizer(kind, params, o);
    for (int s = 0; s < 50; ++s) {
      auto loss = loss_of(params[0].second);
      loss.backward();
      opt->step(5e-3);
      opt->zero_grad();
    }
    return params[0].second.detach();
  };
  const auto w32 = run("adamw"), w8 = run("adamw_8bit");
  const double travelled = (w32 - w0).norm().item<double>();
  const double gap = (w8 - w32).norm().item<double>();
  EXPECT_GT(travelled, 0.5);
  EXPECT_LT(gap / travelled, 0.05) << "8-bit vs fp32 gap " << gap << " over a path of " << travelled;
  const double l0 = loss_of(w0).item<double>(), l32 = loss_of(w32).item<double>(), l8 = loss_of(w8).item<double>();
  EXPECT_LT(l32, 0.05 * l0);
  EXPECT_NEAR(l8, l32, 0.1 * l32) << "loss from " << l0;
}

}  // namespace

namespace {

// Issue 36 #27: train.mode full decayed the RMSNorm weights (and would decay biases); HF Trainer leaves both out. The
// names qtune's full fine-tuning trains (a Llama with attention biases) split as transformers' Trainer splits them.
TEST(OracleHfTrainer, WeightDecaySkipsTheNormsAndBiasesHfTrainerSkips) {
  const auto dir = test::temp_dir();
  auto j = nlohmann::json::parse(std::ifstream(std::string(QTUNE_TEST_SOURCE_DIR) + "/configs/models/tiny-llama.json"));
  j["attention_bias"] = true;
  j["num_hidden_layers"] = 2;
  std::ofstream(dir + "/config.json") << j.dump();
  const auto cmd = std::string(QTUNE_TEST_PYTHON) + " " + QTUNE_TEST_SOURCE_DIR + "/tests/oracle/hf_decay_parameters.py " +
                   dir + " " + dir + "/decay.json > " + dir + "/log.txt 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << test::read_file(dir + "/log.txt");
  const auto hf = nlohmann::json::parse(std::ifstream(dir + "/decay.json"));
  const auto hf_decay = hf.at("decay").get<std::set<std::string>>();
  const auto hf_names = hf.at("parameters").get<std::set<std::string>>();

  const auto config = io::ModelConfig::from_json(j, "tiny");
  nn::RandomInit init(config, 1);
  nn::DenseLinearFactory dense(at::TensorOptions().dtype(at::kFloat));
  nn::CausalLMImpl model(config, dense, init, at::TensorOptions().dtype(at::kFloat));
  int64_t compared = 0, kept = 0, biases = 0;
  for (const auto& p : model.named_parameters()) {
    SCOPED_TRACE(p.key());
    ASSERT_EQ(hf_names.count(p.key()), 1u) << "a name transformers does not have";
    EXPECT_EQ(optim::applies_weight_decay(p.key()), hf_decay.count(p.key()) == 1);
    ++compared, kept += !optim::applies_weight_decay(p.key()), biases += p.key().find("bias") != std::string::npos;
  }
  EXPECT_GT(biases, 0);
  EXPECT_EQ(kept, 2 * 2 + 1 + biases);  // two norms per layer, the final norm, the biases

  // And the optimizers apply it: with zero gradients only decay moves a weight.
  NamedParams params{{"model.norm.weight", at::ones({4}).set_requires_grad(true)},
                     {"model.layers.0.mlp.up_proj.weight", at::ones({4}).set_requires_grad(true)}};
  for (const std::string name : {"adamw", "adamw_8bit"}) {
    SCOPED_TRACE(name);
    auto copy = clone_params(params);
    AdamWOptions o;
    o.weight_decay = 0.1;
    auto opt = optim::make_optimizer(name, copy, o);
    for (auto& [n, p] : copy) p.mutable_grad() = at::zeros_like(p);
    opt->step(0.5);
    EXPECT_TRUE(at::equal(copy[0].second, at::ones({4})));
    EXPECT_TRUE(at::allclose(copy[1].second, at::full({4}, 1 - 0.5 * 0.1)));
  }
}

}  // namespace
