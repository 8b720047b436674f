// TRL's DPOTrainer is the reference of qtune's preference objectives: tests/oracle/trl_preference.py runs it on a
// tiny random Llama with a PEFT LoRA adapter of fixed weights (the reference: the same model with the adapter off),
// and these tests run qtune on the same files: the pairs' tokens, the first step's loss, metrics and LoRA gradients,
// and the adapter after a few AdamW steps.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "qtune/data/chat_template_match.h"
#include "qtune/data/preference.h"
#include "qtune/io/safetensors.h"
#include "qtune/train/metrics_log.h"
#include "qtune/train/objectives/dpo.h"
#include "qtune/train/run_setup.h"
#include "qtune/train/trainer.h"
#include "test_util.h"
#include "trl_oracle_compare.h"

namespace {

using namespace qtune;
using test::expect_close;
using json = nlohmann::json;

std::string oracle() { return test::oracle_dir() + "/trl_preference"; }

json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path + " (run through ctest: the oracle_trl_preference fixture)");
  return json::parse(in);
}

// The case's recipe: what the TRL config of the oracle sets, on the fp32 base.
train::Recipe recipe(const std::string& c, const std::string& out, int64_t steps) {
  const auto opts = read_json(oracle() + "/cases.json").at(c);
  std::string objective = "dpo", section;
  if (c == "orpo") {
    objective = "orpo";
    section = fmt::format("orpo:\n  beta: {}\n", opts.at("beta").get<double>());
  } else if (c == "simpo" || c == "cpo_simpo") {
    objective = "simpo";
    section = fmt::format("simpo:\n  beta: {}\n  gamma: {}\n  label_smoothing: {}\n  cpo_alpha: {}\n",
                          opts.at("beta").get<double>(), opts.at("simpo_gamma").get<double>(),
                          opts.value("label_smoothing", 0.0), opts.at("cpo_alpha").get<double>());
  } else {
    section = fmt::format("dpo:\n  beta: {}\n  loss_type: {}\n  label_smoothing: {}\n", opts.value("beta", 0.1),
                          opts.at("loss_type")[0].get<std::string>(), opts.value("label_smoothing", 0.0));
  }
  std::string text = "name: " + c + "\nmodel:\n  path: " + oracle() + "/base\n  dtype: fp32\nquant:\n  format: none\n" +
                     "lora:\n  r: 4\n  alpha: 8\n  dropout: 0\n  targets: [q_proj, v_proj, o_proj, up_proj, down_proj]\n" +
                     "  init_adapter: " + oracle() + "/adapter\n" + "data:\n  train: " + oracle() +
                     "/pairs.jsonl\n  format: preference\n  chat_template: none\n  max_seq_len: 128\n" +
                     "optim:\n  name: adamw\n  lr: 1e-3\nschedule:\n  kind: constant\n  warmup_steps: 0\n" +
                     "train:\n  objective: " + objective + "\n  precision: fp32\n  batch_size: 4\n  grad_accum: 1\n" +
                     "  max_steps: " + std::to_string(steps) + "\n  max_grad_norm: 0\n  gradient_checkpointing: false\n" +
                     "  log_every: 1\n  output_dir: " + out + "\n" +
                     (opts.value("precompute_ref_log_probs", false) ? "  precompute_ref_log_probs: true\n" : "") +
                     section;
  return train::Recipe::from_yaml_text(text, c + ".yaml");
}

// DPO's loss types (TRL's DPOTrainer), ORPO (trl.experimental's ORPOTrainer), SimPO and CPO-SimPO (its CPOTrainer);
// sigmoid_precomputed: TRL's precompute_ref_log_probs=True, qtune's train.precompute_ref_log_probs (the trainer reads
// the cached reference in every step: ThreeAdamWSteps..., whose first line is the first step's loss).
const std::vector<std::string> kCases = {"sigmoid", "ipo",  "robust",   "hinge", "sigmoid_precomputed",
                                         "orpo",    "simpo", "cpo_simpo"};
const std::vector<std::string> kMetrics = {"rewards/chosen", "rewards/rejected", "rewards/accuracies",
                                           "rewards/margins", "logps/chosen",   "logps/rejected"};

TEST(OracleTrlPreference, PairsTokenizeAsTrlsDpoTrainer) {
  const auto tokens = read_json(oracle() + "/tokens.json");
  const auto tok = data::Tokenizer::load(oracle() + "/base");
  // Conversations go through the model's own template (plain ChatML, recognised by data.chat_template auto).
  const auto format = data::resolve_chat_format("auto", oracle() + "/base", tok);
  // ORPO's and CPO's own tokenization (trl.experimental) gives the same ids on these pairs.
  for (const auto* name : {"pairs", "implicit", "chat", "chat_implicit", "orpo", "simpo"}) {
    const std::string file = std::string(name) == "orpo" || std::string(name) == "simpo" ? "pairs" : name;
    const auto records = data::read_preference_records(oracle() + "/" + file + ".jsonl");
    const auto& expected = tokens.at(name);
    ASSERT_EQ(records.size(), expected.size()) << name;
    for (size_t i = 0; i < records.size(); ++i) {
      const auto p = data::tokenize_preference(records[i], format, tok, {0, 1024, false});
      EXPECT_EQ(p.prompt, expected[i]["prompt_ids"].get<std::vector<int64_t>>()) << name << " " << i;
      EXPECT_EQ(p.chosen, expected[i]["chosen_ids"].get<std::vector<int64_t>>()) << name << " " << i;
      EXPECT_EQ(p.rejected, expected[i]["rejected_ids"].get<std::vector<int64_t>>()) << name << " " << i;
    }
  }
}

// One batch of every pair before any update: the loss, TRL's logged metrics and the gradient of every LoRA matrix.
TEST(OracleTrlPreference, FirstStepLossMetricsAndLoraGradientsMatchTrl) {
  for (const auto& c : kCases) {
    SCOPED_TRACE(c);
    auto run = train::RunSetup::create(recipe(c, test::temp_dir() + "/run", 1), nullptr);
    auto objective = train::make_objective(run.recipe);
    const auto batch = run.train_loader->batch(0, 0);
    const int64_t pairs = objective->units(batch);
    ASSERT_EQ(pairs, 4);
    run.model->train();
    auto ls = objective->loss(*run.model, batch);
    (ls.sum / static_cast<double>(pairs)).backward();
    const auto first = read_json(oracle() + "/" + c + "/first.json");
    expect_close(ls.sum.item<double>() / pairs, first.at("loss"), 1e-5, "loss");
    // TRL's six reward metrics first, then the objective's own (ORPO's nll_loss and log odds, CPO's nll_loss).
    const auto names = objective->metric_names();
    ASSERT_TRUE(std::equal(kMetrics.begin(), kMetrics.end(), names.begin()));
    for (size_t i = 0; i < names.size(); ++i) expect_close(ls.metric_sums[i] / pairs, first.at(names[i]), 1e-5, names[i]);

    test::expect_lora_grads_equal_trls(oracle() + "/" + c + "/grads.safetensors", run.trainable);
  }
}

// The trainer end to end: three AdamW steps over the same batch from the same adapter give TRL + PEFT's adapter, and
// metrics.jsonl logs TRL's loss and metrics at each step.
TEST(OracleTrlPreference, ThreeAdamWStepsGiveTrlsAdapterAndMetrics) {
  for (const auto& c : kCases) {
    SCOPED_TRACE(c);
    const auto out = test::temp_dir() + "/run";
    train::TrainOptions o;
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> devnull(std::fopen("/dev/null", "w"), &std::fclose);
    o.out = devnull.get();
    auto summary = train::run_training(recipe(c, out, 3), o);
    if (c == "sigmoid_precomputed") {  // every step read the cache: no reference forward
      EXPECT_EQ(summary.reference_cache, "computed");
      EXPECT_EQ(summary.reference_misses, 0);
    }
    test::expect_run_equal_trls(summary.adapter_dir, oracle() + "/" + c + "/adapter", out + "/metrics.jsonl",
                                read_json(oracle() + "/" + c + "/history.json"), train::make_objective(recipe(c, out, 3))->metric_names());
  }
}

// `qtune eval --preference` on the adapted model: its margin is TRL's logps/chosen - logps/rejected, its rewards
// against the base TRL's rewards/accuracies and rewards/margins at beta 0.1 (the sigmoid case's first step).
TEST(OracleTrlPreference, EvalPreferenceReportsTrlsMarginsAndRewards) {
  const auto r = test::run_qtune("eval " + oracle() + "/base --adapter " + oracle() + "/adapter --preference " +
                                 oracle() + "/pairs.jsonl --beta 0.1 --json");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const auto j = json::parse(r.out);
  const auto first = read_json(oracle() + "/sigmoid/first.json");
  EXPECT_EQ(j.at("pairs"), 4);
  expect_close(j.at("margin"), first.at("logps/chosen").get<double>() - first.at("logps/rejected").get<double>(), 1e-5,
               "margin");
  expect_close(j.at("rewards/accuracies"), first.at("rewards/accuracies"), 1e-6, "rewards/accuracies");
  expect_close(j.at("rewards/margins"), first.at("rewards/margins"), 1e-5, "rewards/margins");
}

}  // namespace
