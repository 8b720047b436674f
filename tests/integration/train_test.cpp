// qtune train end to end on tiny models made here: a run lowers eval loss, writes what it promises, stops on a NaN
// loss naming the step, and survives injected inf gradients in fp16; on ../shared's real model a short fine-tune on
// Dolly lowers held-out loss and teaches the model to stop.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qtune/data/chat_template.h"
#include "qtune/data/demo_task.h"
#include "qtune/data/records.h"
#include "qtune/data/tokenizer.h"
#include "qtune/eval/generate.h"
#include "qtune/export/peft_adapter.h"
#include "qtune/io/atomic_file.h"
#include "qtune/lora/inject.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quant_linear_factory.h"
#include "qtune/train/checkpoint.h"
#include "qtune/train/metrics_log.h"
#include "qtune/train/run_setup.h"
#include "qtune/train/trainer.h"
#include "test_util.h"
#include "tiny_run.h"

namespace qtune::train {
namespace {

namespace fs = std::filesystem;

TEST(TrainRun, QLoRAOnATinyModelLowersEvalLossAndWritesTheRun) {
  TinyRun t;
  std::vector<double> losses;
  auto o = quiet();
  o.on_step = [&](int64_t, double loss) { losses.push_back(loss); };
  const auto s = run_training(t.recipe({"train.max_steps=80", "optim.lr=1e-2"}), o);
  ASSERT_TRUE(s.eval_before && s.eval_after);
  // The random base knows nothing of the answers (uniform over 400 tokens is 5.99 nats); 80 steps of rank-8 adapters
  // on its frozen NF4 projections learn their shape: the eval loss falls by more than 1.2 nats (6.07 -> 4.33 when
  // this was written).
  EXPECT_LT(s.eval_after->loss, s.eval_before->loss - 1.2) << s.eval_before->loss << " -> " << s.eval_after->loss;
  EXPECT_EQ(s.steps, 80);
  EXPECT_EQ(losses.size(), 80u);
  EXPECT_LT(losses.back(), losses.front());
  // What the run directory promises.
  const auto run = t.dir + "/run";
  EXPECT_TRUE(fs::exists(run + "/adapter/adapter_model.safetensors"));
  EXPECT_TRUE(fs::exists(run + "/adapter/adapter_config.json"));
  EXPECT_TRUE(fs::exists(run + "/recipe.yaml"));
  EXPECT_TRUE(fs::exists(run + "/loss.svg"));
  const auto records = MetricsLog::read(run + "/metrics.jsonl");
  int train = 0, eval = 0;
  for (const auto& r : records) (r.kind == "train" ? train : eval) += 1;
  EXPECT_EQ(train, 17);  // step 1, then every 5 steps
  EXPECT_EQ(eval, 2);   // before and after
  // The saved recipe reproduces the run's settings.
  const auto saved = Recipe::from_yaml_text(
      [&] { std::ifstream in(run + "/recipe.yaml"); return std::string(std::istreambuf_iterator<char>(in), {}); }(),
      "saved");
  EXPECT_EQ(saved.run_affecting_values(), t.recipe({"train.max_steps=80", "optim.lr=1e-2"}).run_affecting_values());
  // The adapter reloads onto the base with the eval loss the run reported (in the run's compute dtype: bf16 on a
  // CPU with AVX512-BF16).
  auto config = exporting::read_peft_config(run + "/adapter");
  EXPECT_EQ(config.r, 8);
  quant::QuantPlan plan;
  const auto options = at::TensorOptions().dtype(run_dtype(t.recipe(), at::kCPU, io::ModelConfig::load(t.model)));
  nn::QuantLinearFactory base(plan, options);
  lora::LoraLinearFactory factory(base, config, 0);
  auto model = nn::load_causal_lm(t.model, options, &factory);
  exporting::load_peft_adapter(*model, run + "/adapter");
  auto tok = data::Tokenizer::load(t.model);
  auto setup_eval = load_data(t.recipe(), tok).eval;
  data::DataLoader loader(setup_eval, loader_options(t.recipe(), true), tok.eos_id());
  EXPECT_NEAR(evaluate(*model, loader).loss, s.eval_after->loss, 1e-5);
}

TEST(TrainRun, EveryOptimizerAndScheduleTrains) {
  TinyRun t;
  for (const std::string opt : {"paged_adamw", "adamw_8bit", "paged_adamw_8bit"}) {
    const auto s = run_training(t.recipe({"optim.name=" + opt, "train.max_steps=12", "schedule.kind=cosine",
                                          "train.gradient_checkpointing=false", "lora.rank_pattern={\"q_proj\": 4}",
                                          "train.output_dir=" + t.dir + "/" + opt}),
                                quiet());
    EXPECT_LT(s.eval_after->loss, s.eval_before->loss) << opt;
  }
}

TEST(TrainRun, NaNLossStopsNamingTheStepAndKeepsTheLastSave) {
  TinyRun t;
  const auto msg = test::error_of(
      [&] { run_training(t.recipe({"optim.lr=1e30", "train.save_every=1", "schedule.warmup_steps=0"}), quiet()); });
  EXPECT_NE(msg.find("step 2: the loss is"), std::string::npos) << msg;
  EXPECT_NE(msg.find("is intact"), std::string::npos) << msg;
  // Step 1 was saved before the loss went bad, and its adapter is complete.
  EXPECT_NO_THROW(verify_checkpoint(t.dir + "/run/checkpoints/step-00000001"));
  EXPECT_TRUE(fs::exists(t.dir + "/run/checkpoints/step-00000001/adapter_model.safetensors"));
  EXPECT_FALSE(fs::exists(t.dir + "/run/checkpoints/step-00000002"));
}

// Issue 36 #26: in fp32/bf16 a NaN gradient under a finite loss was applied (grad_norm -nan), the poisoned adapter
// saved, and the next step called it intact. The step now stops before the update; the last save stays the last.
TEST(TrainRun, ANonFiniteGradientUnderAFiniteLossStopsBeforeTheUpdate) {
  TinyRun t;
  for (const std::string precision : {"fp32", "bf16"}) {
    SCOPED_TRACE(precision);
    auto o = quiet();
    o.after_backward = [](int64_t step, const std::vector<at::Tensor>& params) {
      if (step == 3) params[5].mutable_grad().view(-1)[0] = NAN;
    };
    const auto dir = t.dir + "/" + precision;
    const auto msg = test::error_of([&] {
      run_training(t.recipe({"train.precision=" + precision, "train.save_every=1", "train.max_grad_norm=0",
                             "train.output_dir=" + dir}),
                   o);
    });
    EXPECT_NE(msg.find("step 3: the gradient norm is nan under a finite loss"), std::string::npos) << msg;
    EXPECT_NE(msg.find("the last checkpoint, " + dir + "/checkpoints/step-00000002 (step 2), is intact"),
              std::string::npos)
        << msg;
    EXPECT_FALSE(fs::exists(dir + "/checkpoints/step-00000003"));
    auto saved = load_checkpoint(dir + "/checkpoints/step-00000002");
    for (const auto& [name, tensor] : saved.trainable) EXPECT_TRUE(tensor.isfinite().all().item<bool>()) << name;
  }
  // Before any save, the message says there is none to resume from.
  auto o = quiet();
  o.after_backward = [](int64_t, const std::vector<at::Tensor>& params) {
    params[0].mutable_grad().view(-1)[0] = INFINITY;
  };
  const auto msg = test::error_of([&] { run_training(t.recipe({"train.output_dir=" + t.dir + "/none"}), o); });
  EXPECT_NE(msg.find("step 1: the gradient norm is inf"), std::string::npos) << msg;
  EXPECT_NE(msg.find("no checkpoint was saved yet"), std::string::npos) << msg;
}

// Issue 36 #32: the summary compared two single steps (the last may be a 16-token epoch tail). The run reports the
// mean of its last log interval and of the whole run (HF's logged loss and train_loss), in metrics.jsonl too, and a
// resume continues both sums.
TEST(TrainRun, TheRunsLossIsReportedAsMeansOverLogIntervalsAndTheRun) {
  TinyRun t;
  std::vector<double> losses;
  auto o = quiet();
  o.on_step = [&](int64_t, double loss) { losses.push_back(loss); };
  const auto keys = std::vector<std::string>{"train.max_steps=12", "train.log_every=5", "train.save_every=4"};
  const auto s = run_training(t.recipe(keys), o);
  ASSERT_EQ(losses.size(), 12u);
  double all = 0;
  for (double l : losses) all += l;
  EXPECT_NEAR(s.mean_loss, all / 12, 1e-12);
  EXPECT_NEAR(s.recent_loss, (losses[10] + losses[11]) / 2, 1e-12);  // steps 11-12: the interval after step 10's line
  EXPECT_EQ(s.recent_from, 11);
  std::vector<std::pair<int64_t, double>> averages;
  std::optional<double> train_loss;
  for (const auto& r : MetricsLog::read(t.dir + "/run/metrics.jsonl"))
    if (r.kind == "train") {
      averages.emplace_back(r.step, *r.value("loss_avg"));
      if (r.value("train_loss")) train_loss = r.value("train_loss");
    }
  ASSERT_EQ(averages.size(), 4u);  // steps 1, 5, 10, 12
  EXPECT_NEAR(averages[1].second, (losses[1] + losses[2] + losses[3] + losses[4]) / 4, 1e-12);
  ASSERT_TRUE(train_loss);
  EXPECT_NEAR(*train_loss, s.mean_loss, 1e-12);

  // Stopped after step 6 (saved at 4) and resumed: the same means.
  auto stop = quiet();
  stop.stop_after_step = 6;
  auto other = keys;
  other.push_back("train.output_dir=" + t.dir + "/resumed");
  run_training(t.recipe(other), stop);
  auto resume = quiet();
  resume.resume = "auto";
  const auto r = run_training(t.recipe(other), resume);
  EXPECT_NEAR(r.mean_loss, s.mean_loss, 1e-9);
  EXPECT_NEAR(r.recent_loss, s.recent_loss, 1e-9);
}

TEST(TrainRun, Fp16SkipsAStepWithInfGradientsAndRecovers) {
  TinyRun t;
  auto o = quiet();
  std::vector<double> losses;
  o.on_step = [&](int64_t, double loss) { losses.push_back(loss); };
  o.after_backward = [](int64_t step, const std::vector<at::Tensor>& params) {
    // An overflow in one adapter's gradient, as a too-large loss scale produces.
    if (step == 3) params[5].mutable_grad().view(-1)[0] = INFINITY;
  };
  const auto s = run_training(t.recipe({"train.precision=fp16", "train.max_steps=8"}), o);
  EXPECT_EQ(s.skipped_steps, 1);
  EXPECT_EQ(losses.size(), 7u);  // the skipped step updates nothing and reports nothing
  for (double l : losses) EXPECT_TRUE(std::isfinite(l));
  EXPECT_LT(s.eval_after->loss, s.eval_before->loss);
}

TEST(TrainRun, Bf16ComputeTracksFp32) {
  // The base computes in bf16 while adapters, gradients and optimizer state stay fp32: the losses follow fp32's.
  TinyRun t;
  std::vector<double> fp32, bf16;
  auto o = quiet();
  o.on_step = [&](int64_t, double loss) { fp32.push_back(loss); };
  const auto a = run_training(t.recipe({"train.max_steps=10", "train.precision=fp32", "lora.dropout=0"}), o);
  o.on_step = [&](int64_t, double loss) { bf16.push_back(loss); };
  const auto b = run_training(t.recipe({"train.max_steps=10", "train.precision=bf16", "lora.dropout=0",
                                        "train.output_dir=" + t.dir + "/bf16"}),
                              o);
  ASSERT_EQ(bf16.size(), fp32.size());
  for (size_t i = 0; i < fp32.size(); ++i) EXPECT_NEAR(bf16[i], fp32[i], 0.05 * fp32[i]) << "step " << i + 1;
  EXPECT_NEAR(b.eval_after->loss, a.eval_after->loss, 0.05 * a.eval_after->loss);
  EXPECT_LT(b.eval_after->loss, b.eval_before->loss);
}

TEST(TrainRun, FullModeTrainsEveryWeightAndSavesAModelTransformersCanRead) {
  TinyRun t;
  io::write_text_atomically(t.dir + "/stories.txt", data::demo_pretrain_corpus(60, 5));
  const auto s = run_training(t.recipe({"train.mode=full", "quant.format=none", "data.format=text",
                                        "data.train=" + t.dir + "/stories.txt", "data.eval=",
                                        "data.eval_fraction=0.1", "train.max_steps=15"}),
                              quiet());
  ASSERT_TRUE(s.eval_before && s.eval_after);
  EXPECT_LT(s.eval_after->loss, s.eval_before->loss - 0.5);
  ASSERT_FALSE(s.model_dir.empty());
  EXPECT_TRUE(fs::exists(s.model_dir + "/tokenizer.model"));
  auto reloaded = nn::load_causal_lm(s.model_dir, at::TensorOptions().dtype(at::kFloat));
  EXPECT_EQ(reloaded->config().num_hidden_layers, 2);
}

}  // namespace
}  // namespace qtune::train

namespace qtune::train {
namespace {

// The real pretrained model in ../shared, fine-tuned on the 35 Dolly records.
TEST(TrainShared, Stories260KOnDollyLowersHeldOutLossAndTurnsStoriesIntoAnswers) {
  QTUNE_REQUIRE_SHARED();
  const auto shared = test::shared_dir();
  const auto dir = test::temp_dir();
  const auto recipe = Recipe::load(std::string(QTUNE_TEST_SOURCE_DIR) + "/recipes/stories260k-dolly.yaml",
                                   {"model.path=" + shared + "/models/stories260K",
                                    "data.train=" + shared + "/data/dolly_tiny_train.jsonl",
                                    "data.eval=" + shared + "/data/dolly_tiny_eval.jsonl", "train.output_dir=" + dir,
                                    "train.eval_every=0"});
  const auto s = run_training(recipe, quiet());
  ASSERT_TRUE(s.eval_before && s.eval_after);
  // Held-out answer loss falls by more than half a nat (4.135 -> 3.382 when this was written).
  EXPECT_LT(s.eval_after->loss, s.eval_before->loss - 0.5) << s.eval_before->loss << " -> " << s.eval_after->loss;

  // Style: the base answers an instruction by starting a TinyStories story ("One day, Rexty was ...", or dialogue);
  // after fine-tuning on Dolly's expository answers, its greedy replies to the held-out instructions no longer do
  // (NF4 base: 8 of 8 story openings before, 0 of 8 after, when this was written).
  auto records = data::read_records(shared + "/data/dolly_tiny_eval.jsonl", data::DataFormat::AlpacaJsonl);
  auto story_openings = [&](nn::CausalLMImpl& model, const data::Tokenizer& tok) {
    int n = 0;
    eval::GenerateOptions o;
    o.max_new_tokens = 12;
    o.stop_ids = {tok.eos_id()};
    for (const auto& r : records) {
      const auto text = tok.decode(eval::generate(model, data::prompt_ids(r, data::ChatTemplate::Alpaca, tok), o).tokens);
      n += text.rfind("One day", 0) == 0 || text.rfind("Once upon", 0) == 0 || text.rfind("\"", 0) == 0;
    }
    return n;
  };
  const auto options = at::TensorOptions().dtype(at::kFloat);
  quant::QuantPlan plan;
  nn::QuantLinearFactory base_factory(plan, options);
  auto base = nn::load_causal_lm(shared + "/models/stories260K", options, &base_factory);
  base->eval();
  const auto tok = data::Tokenizer::load(shared + "/models/stories260K", &base->config());
  nn::QuantLinearFactory base2(plan, options);
  lora::LoraLinearFactory lf(base2, exporting::read_peft_config(s.adapter_dir), 0);
  auto tuned = nn::load_causal_lm(shared + "/models/stories260K", options, &lf);
  exporting::load_peft_adapter(*tuned, s.adapter_dir);
  tuned->eval();
  const auto before = story_openings(*base, tok), after = story_openings(*tuned, tok);
  EXPECT_GE(before, 6) << "of " << records.size() << " base replies open a story";
  EXPECT_LE(after, 1) << "of " << records.size() << " fine-tuned replies open a story";
}

}  // namespace
}  // namespace qtune::train
