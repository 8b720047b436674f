// TRL's KTOTrainer is the reference of qtune's KTO objective: tests/oracle/trl_kto.py runs it on the tiny random
// Llama of trl_preference.py with a PEFT LoRA adapter of fixed weights (the reference: the same model with the adapter
// off), and these tests run qtune on the same files: the records' tokens and KL pairs, the first step's loss, metrics
// and LoRA gradients, and the adapter after a few AdamW steps.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "qtune/data/chat_template_match.h"
#include "qtune/data/preference.h"
#include "qtune/io/safetensors.h"
#include "qtune/train/metrics_log.h"
#include "qtune/train/objectives/objective.h"
#include "qtune/train/run_setup.h"
#include "qtune/train/trainer.h"
#include "test_util.h"
#include "trl_oracle_compare.h"

namespace {

using namespace qtune;
using test::expect_close;
using json = nlohmann::json;

std::string oracle() { return test::oracle_dir() + "/trl_kto"; }

json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path + " (run through ctest: the oracle_trl_kto fixture)");
  return json::parse(in);
}

// The case's recipe: what the KTOConfig of the oracle sets, on the fp32 base; the file's order (TRL's sequential
// sampling), the whole set as one batch.
train::Recipe recipe(const std::string& c, const std::string& out, int64_t steps) {
  const auto opts = read_json(oracle() + "/cases.json").at(c);
  const auto section = fmt::format("kto:\n  beta: {}\n  desirable_weight: {}\n  undesirable_weight: {}\n",
                                   opts.value("beta", 0.1), opts.value("desirable_weight", 1.0),
                                   opts.value("undesirable_weight", 1.0));
  std::string text = "name: " + c + "\nmodel:\n  path: " + oracle() + "/base\n  dtype: fp32\nquant:\n  format: none\n" +
                     "lora:\n  r: 4\n  alpha: 8\n  dropout: 0\n  targets: [q_proj, v_proj, o_proj, up_proj, down_proj]\n" +
                     "  init_adapter: " + oracle() + "/" + opts.at("adapter").get<std::string>() + "\n" + "data:\n  train: " + oracle() +
                     "/kto.jsonl\n  format: preference\n  chat_template: none\n  max_seq_len: 128\n  shuffle: false\n" +
                     "optim:\n  name: adamw\n  lr: 1e-3\nschedule:\n  kind: constant\n  warmup_steps: 0\n" +
                     "train:\n  objective: kto\n  precision: fp32\n  batch_size: 8\n  grad_accum: 1\n" +
                     "  max_steps: " + std::to_string(steps) + "\n  max_grad_norm: 0\n  gradient_checkpointing: false\n" +
                     "  log_every: 1\n  output_dir: " + out + "\n" +
                     (opts.value("precompute_ref_log_probs", false) ? "  precompute_ref_log_probs: true\n" : "") +
                     section;
  return train::Recipe::from_yaml_text(text, c + ".yaml");
}

// TRL's defaults, other weights, and a negative KL estimate (clamped at 0).
// kto_precomputed: TRL's precompute_ref_log_probs=True, qtune's train.precompute_ref_log_probs (read by the trainer
// in every step: ThreeAdamWSteps...).
const std::vector<std::string> kCases = {"kto", "kto_weighted", "kto_clamped", "kto_precomputed"};
// Every metric TRL's KTOTrainer logs that qtune computes (not entropy, logits/* or num_tokens: see README).
const std::vector<std::string> kMetrics = {"rewards/chosen", "rewards/rejected", "rewards/margins",
                                           "logps/chosen",   "logps/rejected",   "kl"};

std::vector<int64_t> ids(const json& j) { return j.get<std::vector<int64_t>>(); }

TEST(OracleTrlKto, RecordsAndKlPairsTokenizeAsTrlsKtoTrainer) {
  const auto tokens = read_json(oracle() + "/tokens.json");
  const auto tok = data::Tokenizer::load(oracle() + "/base");
  const auto format = data::resolve_chat_format("auto", oracle() + "/base", tok);
  for (const auto* name : {"kto", "kto_chat", "pairs"}) {  // pairs: unpaired as TRL does
    const auto records = data::read_kto_records(oracle() + "/" + name + ".jsonl");
    const auto& expected = tokens.at(name);
    ASSERT_EQ(records.size(), expected.size()) << name;
    std::vector<data::TokenizedSample> rows;
    for (size_t i = 0; i < records.size(); ++i) {
      const auto e = data::tokenize_kto(records[i], format, tok, {0, 1024, false});
      EXPECT_EQ(e.prompt, ids(expected[i]["prompt_ids"])) << name << " " << i;
      EXPECT_EQ(e.completion, ids(expected[i]["completion_ids"])) << name << " " << i;
      EXPECT_EQ(e.desirable, expected[i]["label"].get<bool>()) << name << " " << i;
      rows.push_back(data::kto_row(e, {0, 1024, false}));
    }
    std::vector<const data::TokenizedSample*> batch;
    for (const auto& r : rows) batch.push_back(&r);
    const auto kl = data::mismatched_rows(batch, 1024);  // the whole set is TRL's batch
    for (size_t i = 0; i < kl.size(); ++i) {
      auto want = ids(expected[i]["prompt_ids"]);
      const auto completion = ids(expected[i]["KL_completion_ids"]);
      want.insert(want.end(), completion.begin(), completion.end());
      EXPECT_EQ(kl[i].input_ids, want) << name << " KL " << i;
    }
  }
}

// One batch of every record before any update: the loss, TRL's logged metrics and the gradient of every LoRA matrix.
TEST(OracleTrlKto, FirstStepLossMetricsAndLoraGradientsMatchTrl) {
  for (const auto& c : kCases) {
    SCOPED_TRACE(c);
    auto run = train::RunSetup::create(recipe(c, test::temp_dir() + "/run", 1), nullptr);
    auto objective = train::make_objective(run.recipe);
    const auto batch = run.train_loader->batch(0, 0);
    const int64_t records = objective->units(batch);
    ASSERT_EQ(records, 8);
    run.model->train();
    objective->prepare(*run.model, batch, nullptr);
    auto ls = objective->loss(*run.model, batch);
    (ls.sum / static_cast<double>(records)).backward();
    const auto first = read_json(oracle() + "/" + c + "/first.json");
    expect_close(ls.sum.item<double>() / records, first.at("loss"), 1e-5, "loss");
    ASSERT_EQ(objective->metric_names(), kMetrics);
    const auto values = objective->metric_values(ls.metric_sums, ls.metric_counts);
    for (size_t i = 0; i < kMetrics.size(); ++i) expect_close(values[i], first.at(kMetrics[i]), 1e-5, kMetrics[i]);

    test::expect_lora_grads_equal_trls(oracle() + "/" + c + "/grads.safetensors", run.trainable);
  }
}

// The trainer end to end: three AdamW steps over the same batch from the same adapter give TRL + PEFT's adapter, and
// metrics.jsonl logs TRL's loss and metrics at each step.
TEST(OracleTrlKto, ThreeAdamWStepsGiveTrlsAdapterAndMetrics) {
  for (const auto& c : kCases) {
    SCOPED_TRACE(c);
    const auto out = test::temp_dir() + "/run";
    train::TrainOptions o;
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> devnull(std::fopen("/dev/null", "w"), &std::fclose);
    o.out = devnull.get();
    o.overwrite = true;
    auto summary = train::run_training(recipe(c, out, 3), o);
    if (c == "kto_precomputed") {  // every step read the cache: no reference forward
      EXPECT_EQ(summary.reference_cache, "computed");
      EXPECT_EQ(summary.reference_misses, 0);
    }
    test::expect_run_equal_trls(summary.adapter_dir, oracle() + "/" + c + "/adapter", out + "/metrics.jsonl",
                                read_json(oracle() + "/" + c + "/history.json"), kMetrics);
  }
}

}  // namespace
