// QLoRA on a W8A8 base (quant.format: w8a8): the whole model's adapter gradients equal those of a plain fp32 model whose
// linears fake-quantize their inputs with a straight-through estimator (the reference kept here), the base's codes and
// scales stay bit-identical through optimizer steps, the loss falls, and the PEFT adapter reloads over the W8A8 base with
// the run's eval loss. Also the merged W8A8 export as qtune reads it back.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "qtune/export/peft_adapter.h"
#include "qtune/io/json_file.h"
#include "qtune/lora/inject.h"
#include "qtune/lora/lora_linear.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quant_linear_factory.h"
#include "qtune/nn/quantized_linear.h"
#include "qtune/quant/w8a8.h"
#include "qtune/train/run_setup.h"
#include "test_util.h"
#include "tiny_run.h"

namespace qtune::train {
namespace {

const auto kFp32 = at::TensorOptions().dtype(at::kFloat);

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// The reference: the weight dequantized in fp32, the input fake-quantized per token (quantized and dequantized, as
// quant/w8a8.h states it), its rounding passed by the straight-through estimator (x + (fq(x) - x).detach()), and an
// fp32 matmul.
class FakeQuantW8A8LinearImpl : public nn::LinearImpl {
 public:
  FakeQuantW8A8LinearImpl(nn::LinearSpec spec, const at::Tensor& weight)
      : LinearImpl(std::move(spec)), weight_(quant::quantize_w8a8_weight(weight).dequantize(at::kFloat)) {}
  at::Tensor forward(const at::Tensor& x) override {
    const auto absmax = x.detach().abs().amax(-1, true);
    const auto inv = at::where(absmax.gt(0), 127.0f / absmax, at::zeros_like(absmax));
    const auto fq = at::round(x.detach() * inv).clamp(-127, 127) * (absmax / 127.0f);
    return at::matmul(x + (fq - x.detach()), weight_.t());
  }
  at::Tensor dense_weight() const override { return weight_; }
  at::Device device() const override { return weight_.device(); }

 private:
  at::Tensor weight_;
};

class FakeQuantW8A8Factory : public nn::LinearFactory {
 public:
  nn::Linear make(const nn::LinearSpec& spec, const io::WeightSource& weights) override {
    return std::make_shared<FakeQuantW8A8LinearImpl>(
        spec, weights.get(spec.name + ".weight", {spec.out_features, spec.in_features}).to(at::kFloat));
  }
};

std::vector<std::shared_ptr<lora::LoraLinearImpl>> adapters(nn::CausalLMImpl& model) {
  std::vector<std::shared_ptr<lora::LoraLinearImpl>> out;
  for (const auto& item : model.named_modules("", false))
    if (auto l = std::dynamic_pointer_cast<lora::LoraLinearImpl>(item.value())) out.push_back(l);
  return out;
}

at::Tensor loss_of(nn::CausalLMImpl& model, const data::Batch& b) {
  const auto logits = model.forward(b.input_ids);
  return at::cross_entropy_loss(logits.view({-1, logits.size(-1)}), b.targets.view({-1}), {}, at::Reduction::Mean, -100);
}

TEST(W8A8Train, AdapterGradientsEqualTheFakeQuantizedStraightThroughReference) {
  TinyRun t;
  const auto recipe = t.recipe({"quant.format=w8a8", "lora.dropout=0"});
  auto s = RunSetup::create(recipe, nullptr);
  lora::LoraConfig lc = recipe.lora.config;
  FakeQuantW8A8Factory fq_base;
  lora::LoraLinearFactory fq_lora(fq_base, lc, recipe.train.seed);
  auto reference = nn::load_causal_lm(t.model, kFp32, &fq_lora);
  auto got = adapters(*s.model), want = adapters(*reference);
  ASSERT_EQ(got.size(), 14u);  // 2 layers x 7 projections, every one W8A8 under an adapter
  ASSERT_EQ(want.size(), got.size());
  {
    // Non-zero B everywhere (a fresh adapter's B is zero, which would leave A without gradient), the same in both.
    torch::NoGradGuard no_grad;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
    for (size_t i = 0; i < got.size(); ++i) {
      auto q = std::dynamic_pointer_cast<nn::QuantizedLinearImpl>(got[i]->base());
      ASSERT_TRUE(q && q->weight().format() == "w8a8") << i;
      const auto b = at::randn(got[i]->lora_B().sizes(), gen) * 0.05;
      got[i]->lora_B().copy_(b), want[i]->lora_B().copy_(b);
      ASSERT_TRUE(at::equal(got[i]->lora_A(), want[i]->lora_A())) << "adapters initialised alike";
    }
  }
  s.model->train(), reference->train();
  const auto batch = s.train_loader->batch(0, 0);
  loss_of(*s.model, batch).backward();
  loss_of(*reference, batch).backward();
  for (size_t i = 0; i < got.size(); ++i)
    for (const auto& [g, w] : {std::pair{got[i]->lora_A(), want[i]->lora_A()}, std::pair{got[i]->lora_B(), want[i]->lora_B()}}) {
      ASSERT_TRUE(g.grad().defined() && w.grad().defined()) << i;
      const double norm = w.grad().norm().item<double>();
      EXPECT_GT(norm, 0) << i;
      // fp32 rounding apart: the integer matmul is exact where the reference's fp32 one rounds.
      EXPECT_LE((g.grad() - w.grad()).norm().item<double>(), 1e-4 * norm) << i;
    }
}

TEST(W8A8Train, QLoRAOnAW8a8BaseLowersTheLossAndLeavesTheBaseBitIdentical) {
  TinyRun t;
  const auto recipe = t.recipe({"quant.format=w8a8", "train.max_steps=30", "optim.lr=1e-2"});
  {
    // Optimizer steps on the trainer's own setup: the adapters move, the frozen codes and scales do not.
    auto s = RunSetup::create(recipe, nullptr);
    std::vector<quant::W8A8State> before;
    for (const auto& l : adapters(*s.model)) {
      const auto& w = dynamic_cast<const quant::W8A8Weight&>(
          std::dynamic_pointer_cast<nn::QuantizedLinearImpl>(l->base())->weight());
      before.push_back({w.state().codes.clone(), w.state().scale.clone()});
    }
    const auto a0 = adapters(*s.model)[0]->lora_A().clone();
    s.model->train();
    for (int64_t step = 0; step < 3; ++step) {
      loss_of(*s.model, s.train_loader->batch(0, step)).backward();
      torch::NoGradGuard no_grad;
      for (auto& [name, p] : s.trainable) {
        if (p.grad().defined()) p.sub_(p.grad() * 0.05), p.mutable_grad().zero_();
      }
    }
    EXPECT_FALSE(at::equal(adapters(*s.model)[0]->lora_A(), a0)) << "the adapters trained";
    const auto after = adapters(*s.model);
    for (size_t i = 0; i < after.size(); ++i) {
      const auto& w = dynamic_cast<const quant::W8A8Weight&>(
          std::dynamic_pointer_cast<nn::QuantizedLinearImpl>(after[i]->base())->weight());
      EXPECT_TRUE(test::bitwise_equal(w.state().codes, before[i].codes)) << i;
      EXPECT_TRUE(test::bitwise_equal(w.state().scale, before[i].scale)) << i;
    }
  }

  std::vector<double> losses;
  auto o = quiet();
  o.on_step = [&](int64_t, double loss) { losses.push_back(loss); };
  const auto summary = run_training(recipe, o);
  ASSERT_TRUE(summary.eval_before && summary.eval_after);
  EXPECT_LT(summary.eval_after->loss, summary.eval_before->loss - 0.5)
      << summary.eval_before->loss << " -> " << summary.eval_after->loss;
  ASSERT_EQ(losses.size(), 30u);
  EXPECT_LT(losses.back(), losses.front());

  // The PEFT adapter, exported alone, applies over the W8A8 base (quantized at load again) with the run's eval loss:
  // what a runtime that serves LoRA over the W8A8 checkpoint computes.
  const auto exported = t.dir + "/adapter-out";
  const auto res = test::run_qtune("export " + t.dir + "/run --adapter " + exported);
  ASSERT_EQ(res.code, 0) << res.err;
  quant::QuantPlan plan;
  plan.base.format = quant::WeightFormat::W8A8;
  nn::QuantLinearFactory base(plan, kFp32);
  const auto adapter = exporting::read_peft_config(exported);
  lora::LoraLinearFactory factory(base, adapter, 0);
  auto model = nn::load_causal_lm(t.model, kFp32, &factory);
  exporting::load_peft_adapter(*model, exported);
  EXPECT_TRUE(contains(base.summary(), "w8a8 x14;")) << base.summary();
  auto tok = data::Tokenizer::load(t.model);
  data::DataLoader loader(load_data(recipe, tok).eval, loader_options(recipe, true), tok.eos_id());
  EXPECT_NEAR(evaluate(*model, loader).loss, summary.eval_after->loss, 1e-5);

  // --quant w8a8 --adapter on the command line says what it built.
  const auto gen = test::run_qtune("generate " + t.model + " --quant w8a8 --adapter " + exported +
                                   " --prompt 'What is' --max-new-tokens 4");
  ASSERT_EQ(gen.code, 0) << gen.err;
  EXPECT_TRUE(contains(gen.err, "quantized 14 linears while loading: w8a8 x14")) << gen.err;
}

// The merged export as a compressed-tensors W8A8 checkpoint: qtune reads it back as stored (every projection W8A8 from
// the checkpoint), and its logits are the merged weights' re-quantization of the trained model's.
TEST(W8A8Train, MergedW8a8ExportLoadsBackAsStored) {
  TinyRun t;
  const auto recipe = t.recipe({"quant.format=w8a8", "train.max_steps=8", "lora.dropout=0"});
  run_training(recipe, quiet());
  const auto out = t.dir + "/merged-w8a8";
  const auto res = test::run_qtune("export " + t.dir + "/run --merged " + out + " --quantize w8a8 --dtype fp32");
  ASSERT_EQ(res.code, 0) << res.err;
  EXPECT_TRUE(contains(res.out, "W8A8 projections (compressed-tensors int-quantized")) << res.out;
  EXPECT_TRUE(contains(res.out, "quality on")) << res.out;
  const auto q = io::read_json_file(out + "/config.json").at("quantization_config");
  EXPECT_EQ(q.at("quant_method"), "compressed-tensors");
  EXPECT_EQ(q.at("format"), "int-quantized");
  EXPECT_EQ(q.at("ignore"), nlohmann::json::array({"lm_head"}));

  nn::QuantLinearFactory factory(quant::QuantPlan{}, kFp32,
                                 quant::StoredQuantization::of(q, out + "/config.json"));
  auto deployed = nn::load_causal_lm(out, kFp32, &factory);
  EXPECT_TRUE(contains(factory.summary(), "w8a8 x14;")) << factory.summary();
  for (const auto& l : factory.layers()) EXPECT_TRUE(l.from_checkpoint) << l.name;

  auto s = RunSetup::create(recipe, nullptr);
  exporting::load_peft_adapter(*s.model, t.dir + "/run/adapter");
  const auto trained = probe_logits(*s.model), merged = probe_logits(*deployed);
  // Merging moves each weight by the adapter's update and rounds it to the int8 grid again: a few grid steps at most.
  const double scale = trained.abs().max().item<double>();
  EXPECT_LE((trained - merged).abs().max().item<double>(), 0.05 * scale);
}

}  // namespace
}  // namespace qtune::train
