// The pieces of one training step, each checked against the plain computation it replaces: gradient checkpointing,
// chunked cross-entropy, token-weighted accumulation, packing, clipping and fp16 loss scaling.
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <nlohmann/json.hpp>

#include "qtune/autograd/checkpoint.h"
#include "qtune/data/collate.h"
#include "qtune/lora/inject.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quant_linear_factory.h"
#include "qtune/train/chunked_loss.h"
#include "qtune/train/precision.h"
#include "qtune/util/device.h"
#include "test_util.h"

namespace qtune::train {
namespace {

const auto kFp32 = at::TensorOptions().dtype(at::kFloat);

io::ModelConfig tiny_config(bool tied = true) {
  nlohmann::json j = {{"model_type", "llama"},    {"hidden_size", 32},        {"intermediate_size", 48},
                      {"num_hidden_layers", 3},   {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                      {"vocab_size", 40},         {"rms_norm_eps", 1e-5},     {"initializer_range", 0.2},
                      {"max_position_embeddings", 64}, {"tie_word_embeddings", tied}};
  return io::ModelConfig::from_json(j, "test");
}

// An NF4 base with LoRA adapters (dropout on) whose B is random, so every adapter gets a gradient.
nn::CausalLM qlora_model(double dropout = 0.1) {
  const auto cfg = tiny_config();
  nn::RandomInit init(cfg, 3);
  quant::QuantPlan plan;  // NF4 + double quant, block 64
  nn::QuantLinearFactory base(plan, kFp32);
  lora::LoraConfig lc;
  lc.r = 4;
  lc.alpha = 8;
  lc.dropout = dropout;
  lora::LoraLinearFactory factory(base, lc, 11);
  auto model = std::make_shared<nn::CausalLMImpl>(cfg, factory, init, kFp32);
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  for (auto& [name, p] : lora::trainable_parameters(*model))
    if (name.find("lora_B") != std::string::npos) p.normal_(0, 0.1, gen);
  model->train();
  return model;
}

std::vector<at::Tensor> grads_of(nn::CausalLMImpl& model) {
  std::vector<at::Tensor> out;
  for (auto& [name, p] : lora::trainable_parameters(model)) {
    out.push_back(p.grad().defined() ? p.grad().clone() : at::Tensor());
    p.mutable_grad() = at::Tensor();
  }
  return out;
}

at::Tensor ids(std::vector<int64_t> v, int64_t rows = 1) {
  return at::tensor(v, at::kLong).view({rows, -1});
}

TEST(GradientCheckpointing, SameGradientsAndDropoutMasksAsWithout) {
  auto model = qlora_model(/*dropout=*/0.2);
  const auto input = at::randint(0, 40, {2, 12}, at::kLong);
  const auto targets = at::randint(0, 40, {2, 12}, at::kLong);
  auto run = [&](bool checkpointing, int64_t layers = -1) {
    model->set_gradient_checkpointing(checkpointing, layers);
    at::manual_seed(123);
    auto hidden = model->hidden_states(input);
    chunked_cross_entropy(hidden, model->lm_head_weight(), targets).sum.backward();
    return grads_of(*model);
  };
  const auto plain = run(false), recomputed = run(true), partly = run(true, 1);
  ASSERT_EQ(plain.size(), recomputed.size());
  ASSERT_EQ(plain.size(), partly.size());
  for (size_t i = 0; i < plain.size(); ++i)
    EXPECT_TRUE(test::bitwise_equal(partly[i], plain[i])) << "only layer 0 recomputed: parameter " << i;
  ASSERT_EQ(plain.size(), 3u * 7 * 2);
  for (size_t i = 0; i < plain.size(); ++i) {
    ASSERT_TRUE(plain[i].defined() && recomputed[i].defined()) << i;  // layer 0's adapters included
    EXPECT_GT(plain[i].abs().max().item<double>(), 0.0) << i;
    EXPECT_TRUE(test::bitwise_equal(recomputed[i], plain[i])) << "parameter " << i;
  }
  // Dropout must really draw different masks from run to run, or the equality above would prove nothing.
  at::manual_seed(124);
  model->set_gradient_checkpointing(false);
  chunked_cross_entropy(model->hidden_states(input), model->lm_head_weight(), targets).sum.backward();
  const auto other_seed = grads_of(*model);
  EXPECT_FALSE(at::equal(other_seed[0], plain[0]));
}

TEST(GradientCheckpointing, KeepsTheRandomStreamOfTheRestOfTheStep) {
  // After backward, the generator must be where it would be without recomputation.
  auto model = qlora_model(0.2);
  const auto input = at::randint(0, 40, {1, 10}, at::kLong);
  auto after = [&](bool checkpointing) {
    model->set_gradient_checkpointing(checkpointing);
    at::manual_seed(9);
    model->hidden_states(input).sum().backward();
    grads_of(*model);
    return at::rand({4});
  };
  EXPECT_TRUE(test::bitwise_equal(after(true), after(false)));
}

TEST(GradientCheckpointing, FunctionPassesGradientsToInputAndParameters) {
  auto w = at::randn({3, 3}).requires_grad_();
  auto x = at::randn({2, 3}).requires_grad_();
  auto y = autograd::checkpoint([w](const at::Tensor& in) { return at::tanh(at::matmul(in, w)); }, x, {w});
  y.sum().backward();
  auto x2 = x.detach().requires_grad_();
  auto w2 = w.detach().requires_grad_();
  at::tanh(at::matmul(x2, w2)).sum().backward();
  EXPECT_TRUE(at::allclose(x.grad(), x2.grad()));
  EXPECT_TRUE(at::allclose(w.grad(), w2.grad()));
}

TEST(ChunkedCrossEntropy, EqualsCrossEntropyOnFullLogitsWithGradients) {
  const auto hidden0 = at::randn({2, 7, 16}, kFp32);
  const auto weight0 = at::randn({30, 16}, kFp32) * 0.3;
  auto targets = at::randint(0, 30, {2, 7}, at::kLong);
  targets.index_put_({0, 2}, -100);
  targets.index_put_({1, 6}, -100);
  auto h_ref = hidden0.clone().requires_grad_(), w_ref = weight0.clone().requires_grad_();
  auto logits = at::matmul(h_ref, w_ref.t());
  auto ref = at::cross_entropy_loss(logits.view({-1, 30}), targets.view({-1}), {}, at::Reduction::Sum, -100);
  ref.backward();
  for (int64_t rows : {1, 3, 100}) {
    auto h = hidden0.clone().requires_grad_(), w = weight0.clone().requires_grad_();
    auto out = chunked_cross_entropy(h, w, targets, rows);
    EXPECT_EQ(out.tokens, 12);
    EXPECT_NEAR(out.sum.item<double>(), ref.item<double>(), 1e-4) << rows;
    (out.sum * 2).backward();  // the incoming gradient scales both
    EXPECT_TRUE(at::allclose(h.grad(), h_ref.grad() * 2, 1e-5, 1e-6)) << rows;
    EXPECT_TRUE(at::allclose(w.grad(), w_ref.grad() * 2, 1e-5, 1e-6)) << rows;
  }
  const auto msg = test::error_of([&] { chunked_cross_entropy(hidden0, weight0, at::full({2, 7}, 30, at::kLong)); });
  EXPECT_NE(msg.find("outside the vocabulary"), std::string::npos) << msg;
}

// Gemma's final_logit_softcapping: the loss of cap·tanh(logits / cap), both gradients through the tanh, chunk by chunk.
TEST(ChunkedCrossEntropy, SoftCappedLogitsEqualAutogradOnFullLogits) {
  const double cap = 2.0;  // small enough that tanh bends these logits
  const auto hidden0 = at::randn({2, 7, 16}, kFp32);
  const auto weight0 = at::randn({30, 16}, kFp32) * 0.5;
  auto targets = at::randint(0, 30, {2, 7}, at::kLong);
  targets.index_put_({1, 3}, -100);
  auto h_ref = hidden0.clone().requires_grad_(), w_ref = weight0.clone().requires_grad_();
  auto logits = at::tanh(at::matmul(h_ref, w_ref.t()) / cap) * cap;
  auto ref = at::cross_entropy_loss(logits.view({-1, 30}), targets.view({-1}), {}, at::Reduction::Sum, -100);
  ref.backward();
  for (int64_t rows : {1, 5, 100}) {
    auto h = hidden0.clone().requires_grad_(), w = weight0.clone().requires_grad_();
    auto out = chunked_cross_entropy(h, w, targets, rows, cap);
    EXPECT_NEAR(out.sum.item<double>(), ref.item<double>(), 1e-4) << rows;
    out.sum.backward();
    EXPECT_TRUE(at::allclose(h.grad(), h_ref.grad(), 1e-5, 1e-6)) << rows;
    EXPECT_TRUE(at::allclose(w.grad(), w_ref.grad(), 1e-5, 1e-6)) << rows;
  }
  // Without the cap the loss differs: the cap is applied, not ignored.
  EXPECT_GT(std::abs(chunked_cross_entropy(hidden0, weight0, targets).sum.item<double>() - ref.item<double>()), 0.1);
}

// A frozen bf16 head (the base's lm_head or tied embeddings) multiplies in bf16 and rounds the logits once, as
// transformers' bf16 lm_head does before its fp32 loss: the same loss and hidden-state gradient as autograd through
// that computation, without an fp32 copy of the whole head.
TEST(ChunkedCrossEntropy, AFrozenBf16HeadGivesTheLossOfItsBf16Logits) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  const auto hidden0 = at::randn({2, 7, 16}, gen, kFp32).to(at::kBFloat16);
  // Logits of a few units, so that rounding them to bf16 moves the loss well past the tolerance below.
  const auto weight = (at::randn({30, 16}, gen, kFp32) * 1.5).to(at::kBFloat16);
  auto targets = at::randint(0, 30, {2, 7}, gen, at::kLong);
  targets.index_put_({0, 4}, -100);
  auto h_ref = hidden0.clone().requires_grad_();
  auto logits = at::matmul(h_ref, weight.t()).to(at::kFloat);
  auto ref = at::cross_entropy_loss(logits.view({-1, 30}), targets.view({-1}), {}, at::Reduction::Sum, -100);
  ref.backward();
  // The fp32 head's loss differs by the logits' bf16 rounding: the bf16 path is taken, not the fp32 one.
  const double fp32_loss =
      chunked_cross_entropy(hidden0.to(at::kFloat), weight.to(at::kFloat), targets).sum.item<double>();
  for (int64_t rows : {1, 3, 100}) {
    auto h = hidden0.clone().requires_grad_();
    auto out = chunked_cross_entropy(h, weight, targets, rows);
    EXPECT_NEAR(out.sum.item<double>(), ref.item<double>(), 1e-6 * std::abs(ref.item<double>())) << rows;
    out.sum.backward();
    EXPECT_EQ(h.grad().scalar_type(), at::kBFloat16);
    EXPECT_TRUE(at::allclose(h.grad().to(at::kFloat), h_ref.grad().to(at::kFloat), 1e-2, 1e-3)) << rows;
  }
  EXPECT_GT(std::abs(fp32_loss - ref.item<double>()), 1e-5 * std::abs(ref.item<double>())) << fp32_loss << " " << ref;
}

std::vector<data::TokenizedSample> uneven_samples() {
  // Lengths 3..11 with prompts masked differently: the per-sample token counts differ a lot.
  std::vector<data::TokenizedSample> out;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  for (int64_t len : {11, 3, 7, 5, 9, 4}) {
    data::TokenizedSample s;
    auto t = at::randint(3, 40, {len}, gen, at::kLong);
    for (int64_t i = 0; i < len; ++i) {
      s.input_ids.push_back(t[i].item<int64_t>());
      s.labels.push_back(i < len / 3 ? data::kIgnoreLabel : s.input_ids.back());
    }
    out.push_back(s);
  }
  return out;
}

// What the trainer does: each micro-batch's Σ loss divided by the token count of the whole step.
std::vector<at::Tensor> accumulated_grads(nn::CausalLMImpl& model, const data::DataLoader& loader) {
  int64_t total = 0;
  for (int64_t i = 0; i < loader.batches_per_epoch(0); ++i) total += loader.batch(0, i).target_tokens;
  for (int64_t i = 0; i < loader.batches_per_epoch(0); ++i) {
    const auto b = loader.batch(0, i);
    nn::ForwardOptions fo;
    fo.position_ids = b.position_ids;
    fo.segment_ids = b.segment_ids;
    auto ls = chunked_cross_entropy(model.hidden_states(b.input_ids, fo), model.lm_head_weight(), b.targets);
    (ls.sum / static_cast<double>(total)).backward();
  }
  return grads_of(model);
}

TEST(GradientAccumulation, UnevenMicroBatchesGiveTheGradientOfOneBigBatch) {
  auto model = qlora_model(/*dropout=*/0.0);
  const auto samples = uneven_samples();
  data::LoaderOptions one_by_one{1, 16, /*packing=*/false, /*shuffle=*/false, 0};
  data::LoaderOptions all_at_once{6, 16, /*packing=*/false, /*shuffle=*/false, 0};
  const auto accumulated = accumulated_grads(*model, data::DataLoader(samples, one_by_one, 0));
  const auto big = accumulated_grads(*model, data::DataLoader(samples, all_at_once, 0));
  ASSERT_EQ(accumulated.size(), big.size());
  for (size_t i = 0; i < big.size(); ++i)
    EXPECT_TRUE(at::allclose(accumulated[i], big[i], 1e-4, 1e-7)) << i << " max diff "
                                                                  << (accumulated[i] - big[i]).abs().max().item<double>();
  // A mean of per-micro-batch means (the peers' bug) gives a different gradient on these lengths.
  data::DataLoader loader(samples, one_by_one, 0);
  for (int64_t i = 0; i < loader.batches_per_epoch(0); ++i) {
    const auto b = loader.batch(0, i);
    auto ls = chunked_cross_entropy(model->hidden_states(b.input_ids), model->lm_head_weight(), b.targets);
    (ls.sum / static_cast<double>(ls.tokens) / 6.0).backward();
  }
  const auto mean_of_means = grads_of(*model);
  EXPECT_FALSE(at::allclose(mean_of_means[0], big[0], 1e-3, 1e-6));
}

TEST(Packing, PackedBatchLossEqualsTheSamplesRunOneByOne) {
  auto model = qlora_model(0.0);
  model->eval();
  const auto samples = uneven_samples();
  data::DataLoader packed(samples, {1, 64, /*packing=*/true, false, 0}, 0);
  ASSERT_EQ(packed.batches_per_epoch(0), 1);  // all six in one row
  const auto b = packed.batch(0, 0);
  nn::ForwardOptions fo;
  fo.position_ids = b.position_ids;
  fo.segment_ids = b.segment_ids;
  torch::NoGradGuard no_grad;
  const auto together = chunked_cross_entropy(model->hidden_states(b.input_ids, fo), model->lm_head_weight(), b.targets);
  double separate = 0;
  int64_t tokens = 0;
  for (const auto& s : samples) {
    data::DataLoader single({s}, {1, 64, false, false, 0}, 0);
    const auto sb = single.batch(0, 0);
    const auto ls = chunked_cross_entropy(model->hidden_states(sb.input_ids), model->lm_head_weight(), sb.targets);
    separate += ls.sum.item<double>();
    tokens += ls.tokens;
  }
  EXPECT_EQ(together.tokens, tokens);
  EXPECT_NEAR(together.sum.item<double>(), separate, 1e-4 * separate);
  // Without the segment ids the samples would see each other, and the loss would change.
  const auto leaky = chunked_cross_entropy(model->hidden_states(b.input_ids), model->lm_head_weight(), b.targets);
  EXPECT_GT(std::abs(leaky.sum.item<double>() - separate), 1e-3);
}

TEST(ClipGradNorm, ReturnsTheGlobalNormAndScalesDownToTheMaximum) {
  auto a = at::zeros({2}).requires_grad_(), b = at::zeros({1}).requires_grad_();
  a.mutable_grad() = at::tensor({3.0f, 0.0f});
  b.mutable_grad() = at::tensor({4.0f});
  EXPECT_NEAR(clip_grad_norm({a, b}, 10.0), 5.0, 1e-6);
  EXPECT_NEAR(a.grad()[0].item<double>(), 3.0, 1e-6);  // under the maximum: untouched
  EXPECT_NEAR(clip_grad_norm({a, b}, 1.0), 5.0, 1e-6);
  EXPECT_NEAR(std::hypot(a.grad()[0].item<double>(), b.grad()[0].item<double>()), 1.0, 1e-5);
}

TEST(DynamicLossScaler, SkipsAndBacksOffOnInfThenGrowsAfterGoodSteps) {
  DynamicLossScaler s(1024, 2.0, 0.5, /*growth_interval=*/3);
  auto p = at::zeros({2}).requires_grad_();
  p.mutable_grad() = at::tensor({1024.0f, 2048.0f});
  EXPECT_TRUE(s.unscale_and_check({p}));
  EXPECT_TRUE(at::equal(p.grad(), at::tensor({1.0f, 2.0f})));
  p.mutable_grad() = at::tensor({INFINITY, 1.0f});
  EXPECT_FALSE(s.unscale_and_check({p}));
  EXPECT_EQ(s.scale(), 512);
  EXPECT_EQ(s.skipped_steps(), 1);
  for (int i = 0; i < 3; ++i) s.update_after_good_step();
  EXPECT_EQ(s.scale(), 1024);
  p.mutable_grad() = at::tensor({NAN, 1.0f});
  EXPECT_FALSE(s.unscale_and_check({p}));
  DynamicLossScaler restored;
  restored.load_state(s.state());
  EXPECT_EQ(restored.scale(), s.scale());
  EXPECT_EQ(restored.skipped_steps(), 2);
}

}  // namespace
}  // namespace qtune::train

namespace {

// train.precision auto on the CPU: bf16 where the CPU computes it natively and the model is large enough to gain,
// fp32 otherwise; explicit precisions are taken as given.
TEST(ComputeDtype, AutoPicksBf16OnCpusThatHaveItForModelsThatGain) {
  using qtune::train::compute_dtype;
  const bool native = qtune::cpu_has_fast_bf16();
  EXPECT_EQ(compute_dtype("auto", at::kCPU, 576), native ? at::kBFloat16 : at::kFloat);
  EXPECT_EQ(compute_dtype("auto", at::kCPU, qtune::train::kCpuBf16MinHidden - 1), at::kFloat);
  EXPECT_EQ(compute_dtype("fp32", at::kCPU, 4096), at::kFloat);
  EXPECT_EQ(compute_dtype("bf16", at::kCPU, 64), at::kBFloat16);
  EXPECT_EQ(compute_dtype("fp16", at::kCPU, 64), at::kHalf);
}

}  // namespace
