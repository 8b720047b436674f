// DPO and KTO through the whole trainer on a tiny random Llama: exact resume, data parallel (2 ranks x b pairs or
// records = 1 rank x 2b), TRL's metrics in metrics.jsonl and the progress line, and what a recipe that mixes objective
// and data says.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "qtune/io/atomic_file.h"
#include "qtune/io/safetensors.h"
#include "qtune/train/metrics_log.h"
#include "qtune/train/reference_cache.h"
#include "tiny_run.h"

namespace qtune::train {
namespace {

// Pairs from the demo questions: the right answer chosen, another question's answer rejected.
std::string write_pairs(const TinyRun& t, const std::string& name, int64_t n, uint64_t seed) {
  const auto qs = data::demo_questions(n + 1, seed);
  std::string text;
  for (int64_t i = 0; i < n; ++i) {
    if (qs[i].answer == qs[i + 1].answer) continue;
    text += nlohmann::json{{"prompt", qs[i].context + "\nQuestion: " + qs[i].question + "\nAnswer:"},
                           {"chosen", " " + qs[i].answer},
                           {"rejected", " " + qs[i + 1].answer}}
                .dump() +
            "\n";
  }
  const auto path = t.dir + "/" + name + ".jsonl";
  io::write_text_atomically(path, text);
  return path;
}

std::vector<std::string> dpo_keys(const TinyRun& t, std::vector<std::string> more) {
  std::vector<std::string> keys = {"train.objective=dpo", "data.format=preference",
                                   "data.train=" + write_pairs(t, "pairs", 40, 5),
                                   "data.eval=" + write_pairs(t, "eval_pairs", 8, 6), "optim.lr=2e-3",
                                   "train.log_every=1"};
  keys.insert(keys.end(), more.begin(), more.end());
  return keys;
}

std::vector<MetricRecord> train_lines(const std::string& run_dir) {
  std::vector<MetricRecord> out;
  for (const auto& r : MetricsLog::read(run_dir + "/metrics.jsonl"))
    if (r.kind == "train") out.push_back(r);
  return out;
}

double adapter_difference(const std::string& a_dir, const std::string& b_dir) {
  auto a = io::SafetensorsFile::open(a_dir + "/adapter_model.safetensors");
  auto b = io::SafetensorsFile::open(b_dir + "/adapter_model.safetensors");
  double worst = 0;
  for (const auto& info : a->tensors())
    worst = std::max(worst, (a->tensor(info.name) - b->tensor(info.name)).abs().max().item<double>());
  return worst;
}

// Six steps of `keys` (saving every 2) run straight into t.dir/a, and stopped after step 3 and resumed into t.dir/b:
// the resume starts from step 2's save, every step's loss is the same and the adapters are the same bytes.
void expect_six_steps_straight_equal_stopped_at_3_and_resumed(const TinyRun& t, const std::vector<std::string>& keys) {
  auto a = keys, b = keys;
  a.push_back("train.output_dir=" + t.dir + "/a");
  b.push_back("train.output_dir=" + t.dir + "/b");
  std::vector<double> straight, resumed;
  auto o = quiet();
  o.on_step = [&](int64_t, double loss) { straight.push_back(loss); };
  const auto s = run_training(t.recipe(a), o);
  ASSERT_TRUE(s.eval_after.has_value());
  EXPECT_TRUE(std::isfinite(s.eval_after->loss));
  auto first = quiet();
  first.stop_after_step = 3;
  first.on_step = [&](int64_t, double loss) { resumed.push_back(loss); };
  run_training(t.recipe(b), first);
  auto second = quiet();
  second.resume = "auto";
  second.on_step = [&](int64_t, double loss) { resumed.push_back(loss); };
  EXPECT_EQ(run_training(t.recipe(b), second).start_step, 2);  // the last save before the stop
  ASSERT_EQ(straight.size(), 6u);
  ASSERT_EQ(resumed.size(), 7u);  // step 3 redone
  resumed.erase(resumed.begin() + 2);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(resumed[i], straight[i]) << "step " << i + 1;
  EXPECT_TRUE(test::read_file(t.dir + "/a/adapter/adapter_model.safetensors") ==
              test::read_file(t.dir + "/b/adapter/adapter_model.safetensors"));
}

// N steps straight and N/2 + stop + resume: the same losses and metrics, byte-identical adapters (LoRA dropout on,
// gradient checkpointing on: the reference forward runs under no-grad between the policy's forward and backward).
TEST(PreferenceTrain, DpoStoppedAndResumedIsBitIdentical) {
  TinyRun t;
  const std::vector<std::string> common = {"lora.dropout=0.1", "train.batch_size=2", "train.grad_accum=2",
                                           "train.max_steps=6", "train.save_every=2"};
  expect_six_steps_straight_equal_stopped_at_3_and_resumed(t, dpo_keys(t, common));
  if (HasFatalFailure()) return;
  const auto lines = train_lines(t.dir + "/b");
  ASSERT_EQ(lines.size(), 6u);
  for (const auto& rec : lines)
    for (const char* m : {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                          "logps/chosen", "logps/rejected"})
      EXPECT_TRUE(rec.value(m).has_value()) << m << " at step " << rec.step;
  // The margin is the difference of the rewards; accuracy a fraction of pairs.
  const auto& last = lines.back();
  EXPECT_NEAR(*last.value("rewards/margins"), *last.value("rewards/chosen") - *last.value("rewards/rejected"), 1e-9);
  EXPECT_GE(*last.value("rewards/accuracies"), 0.0);
  EXPECT_LE(*last.value("rewards/accuracies"), 1.0);
}

// 2 ranks x 2 pairs = 1 rank x 4 pairs: a rank's share of a micro-batch is whole pairs, and the step's loss and
// metrics are means over every pair of every rank.
TEST(PreferenceTrain, TwoRanksEqualOneRankWithTwiceThePairs) {
  TinyRun t;
  auto two = dpo_keys(t, {"train.batch_size=2", "train.max_steps=4", "lora.dropout=0.1",
                          "train.output_dir=" + t.dir + "/two"});
  const auto path = t.dir + "/two.yaml";
  io::write_text_atomically(path, t.recipe(two).to_yaml());
  const auto r = test::run_qtune("train " + path + " --nproc 2");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("rewards/accuracies"), std::string::npos) << r.out;  // the progress line shows TRL's metrics
  auto one = dpo_keys(t, {"train.batch_size=4", "train.max_steps=4", "lora.dropout=0.1",
                          "train.output_dir=" + t.dir + "/one"});
  run_training(t.recipe(one), quiet());
  const auto l1 = train_lines(t.dir + "/one"), l2 = train_lines(t.dir + "/two");
  ASSERT_EQ(l1.size(), l2.size());
  for (size_t i = 0; i < l1.size(); ++i)
    for (const char* m : {"loss", "rewards/margins", "logps/chosen"})
      EXPECT_NEAR(*l2[i].value(m), *l1[i].value(m), 1e-5 * std::max(1.0, std::abs(*l1[i].value(m)))) << m << " " << i;
  EXPECT_LT(adapter_difference(t.dir + "/one/adapter", t.dir + "/two/adapter"), 1e-4);
}

TEST(PreferenceTrain, ObjectiveAndDataFormatMustAgree) {
  TinyRun t;
  auto msg = test::error_of([&] { t.recipe({"train.objective=dpo"}); });
  EXPECT_NE(msg.find("set data.format: preference"), std::string::npos) << msg;
  msg = test::error_of([&] { t.recipe({"data.format=preference"}); });
  EXPECT_NE(msg.find("train.objective sft"), std::string::npos) << msg;
  msg = test::error_of([&] { t.recipe({"train.objective=dpo", "data.format=preference", "dpo.label_smoothing=0.5"}); });
  EXPECT_NE(msg.find("dpo.label_smoothing"), std::string::npos) << msg;
}

// KTO records from the demo questions: the right answer desirable, or another question's answer undesirable.
std::string write_kto(const TinyRun& t, const std::string& name, int64_t n, uint64_t seed) {
  const auto qs = data::demo_questions(n + 1, seed);
  std::string text;
  for (int64_t i = 0; i < n; ++i) {
    const bool good = i % 3 != 1;
    if (!good && qs[i].answer == qs[i + 1].answer) continue;
    text += nlohmann::json{{"prompt", qs[i].context + "\nQuestion: " + qs[i].question + "\nAnswer:"},
                           {"completion", " " + (good ? qs[i].answer : qs[i + 1].answer)},
                           {"label", good}}
                .dump() +
            "\n";
  }
  const auto path = t.dir + "/" + name + ".jsonl";
  io::write_text_atomically(path, text);
  return path;
}

std::vector<std::string> kto_keys(const TinyRun& t, std::vector<std::string> more) {
  std::vector<std::string> keys = {"train.objective=kto", "data.format=preference",
                                   "data.train=" + write_kto(t, "records", 40, 5),
                                   "data.eval=" + write_kto(t, "eval_records", 8, 6), "optim.lr=2e-3",
                                   "train.log_every=1"};
  keys.insert(keys.end(), more.begin(), more.end());
  return keys;
}

const char* const kKtoMetrics[] = {"rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen",
                                   "logps/rejected", "kl"};

// As DPO's: N steps straight and N/2 + stop + resume give the same losses, metrics and bytes of adapter (the KL
// pairs are built from each batch, so a resumed run rebuilds the same ones).
TEST(PreferenceTrain, KtoStoppedAndResumedIsBitIdentical) {
  TinyRun t;
  const std::vector<std::string> common = {"lora.dropout=0.1", "train.batch_size=3", "train.grad_accum=2",
                                           "train.max_steps=6", "train.save_every=2"};
  expect_six_steps_straight_equal_stopped_at_3_and_resumed(t, kto_keys(t, common));
  if (HasFatalFailure()) return;
  const auto la = train_lines(t.dir + "/a"), lb = train_lines(t.dir + "/b");
  ASSERT_EQ(lb.size(), 6u);
  ASSERT_EQ(la.size(), 6u);
  for (size_t i = 0; i < 6; ++i)
    for (const char* m : kKtoMetrics) {
      ASSERT_TRUE(lb[i].value(m).has_value()) << m << " at step " << lb[i].step;
      if (std::isfinite(*la[i].value(m))) EXPECT_EQ(*lb[i].value(m), *la[i].value(m)) << m << " at step " << i + 1;
    }
  const auto& last = lb.back();
  EXPECT_GE(*last.value("kl"), 0.0);  // clamped at 0, as TRL's
}

// 2 ranks x 2 records = 1 rank x 4 records: the KL pairs are built over the global micro-batch and the estimate is
// all-reduced (TRL gathers it), so every rank uses the one estimate one rank would.
TEST(PreferenceTrain, KtoTwoRanksEqualOneRankWithTwiceTheRecords) {
  TinyRun t;
  auto two = kto_keys(t, {"train.batch_size=2", "train.max_steps=4", "lora.dropout=0.1",
                          "train.output_dir=" + t.dir + "/two"});
  const auto path = t.dir + "/two.yaml";
  io::write_text_atomically(path, t.recipe(two).to_yaml());
  const auto r = test::run_qtune("train " + path + " --nproc 2");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("| kl "), std::string::npos) << r.out;  // the progress line shows TRL's metrics
  auto one = kto_keys(t, {"train.batch_size=4", "train.max_steps=4", "lora.dropout=0.1",
                          "train.output_dir=" + t.dir + "/one"});
  run_training(t.recipe(one), quiet());
  const auto l1 = train_lines(t.dir + "/one"), l2 = train_lines(t.dir + "/two");
  ASSERT_EQ(l1.size(), l2.size());
  for (size_t i = 0; i < l1.size(); ++i)
    for (const char* m : {"loss", "kl", "rewards/chosen", "logps/rejected"}) {
      const double want = *l1[i].value(m), got = *l2[i].value(m);
      if (std::isnan(want))  // a step without an undesirable (or desirable) record: no mean, on both
        EXPECT_TRUE(std::isnan(got)) << m << " " << i;
      else
        EXPECT_NEAR(got, want, 1e-5 * std::max(1.0, std::abs(want))) << m << " " << i;
    }
  EXPECT_LT(adapter_difference(t.dir + "/one/adapter", t.dir + "/two/adapter"), 1e-4);
  // A micro-batch of one record would pair its prompt with its own completion.
  const auto msg = test::error_of([&] {
    run_training(t.recipe(kto_keys(t, {"train.batch_size=1", "train.output_dir=" + t.dir + "/b1"})), quiet());
  });
  EXPECT_NE(msg.find("at least 2 records per micro-batch"), std::string::npos) << msg;
}

// train.precompute_ref_log_probs: a run that reads the reference from the table computed before its first step
// trains as one that runs the reference forward in every step (the same losses, metrics, first-step gradients and
// adapter), for DPO (pairs) and KTO (records and their mismatched KL pairs), the eval set included.
void expect_precomputed_equals_live(const TinyRun& t, std::vector<std::string> keys, const char* const* metrics,
                                    size_t n_metrics) {
  auto live = keys, cached = keys;
  live.push_back("train.output_dir=" + t.dir + "/live");
  cached.push_back("train.output_dir=" + t.dir + "/cached");
  cached.push_back("train.precompute_ref_log_probs=true");
  std::vector<double> live_losses, cached_losses;
  std::vector<at::Tensor> live_grads, cached_grads;
  auto watch = [](std::vector<double>& losses, std::vector<at::Tensor>& grads) {
    auto o = quiet();
    o.on_step = [&losses](int64_t, double loss) { losses.push_back(loss); };
    o.after_backward = [&grads](int64_t step, const std::vector<at::Tensor>& params) {
      if (step == 1)
        for (const auto& p : params) grads.push_back(p.grad().detach().clone());
    };
    return o;
  };
  const auto a = run_training(t.recipe(live), watch(live_losses, live_grads));
  const auto b = run_training(t.recipe(cached), watch(cached_losses, cached_grads));
  EXPECT_EQ(a.reference_cache, "");
  EXPECT_EQ(b.reference_cache, "computed");
  EXPECT_EQ(b.reference_misses, 0);  // no step (nor eval) ran the reference forward
  EXPECT_TRUE(std::filesystem::exists(t.dir + "/cached/" + kReferenceCacheFile));
  ASSERT_EQ(live_losses.size(), cached_losses.size());
  for (size_t i = 0; i < live_losses.size(); ++i) EXPECT_NEAR(cached_losses[i], live_losses[i], 1e-6) << "step " << i;
  ASSERT_EQ(live_grads.size(), cached_grads.size());
  ASSERT_FALSE(live_grads.empty());
  for (size_t i = 0; i < live_grads.size(); ++i)
    EXPECT_LE((cached_grads[i] - live_grads[i]).abs().max().item<double>(), 1e-6) << "gradient " << i;
  const auto la = train_lines(t.dir + "/live"), lb = train_lines(t.dir + "/cached");
  ASSERT_EQ(la.size(), lb.size());
  for (size_t i = 0; i < la.size(); ++i)
    for (size_t m = 0; m < n_metrics; ++m) {
      const double want = *la[i].value(metrics[m]), got = *lb[i].value(metrics[m]);
      if (std::isnan(want))
        EXPECT_TRUE(std::isnan(got)) << metrics[m] << " at step " << i + 1;
      else
        EXPECT_NEAR(got, want, 1e-6) << metrics[m] << " at step " << i + 1;
    }
  ASSERT_TRUE(a.eval_after && b.eval_after);
  EXPECT_NEAR(b.eval_after->loss, a.eval_after->loss, 1e-6);
  EXPECT_LE(adapter_difference(t.dir + "/live/adapter", t.dir + "/cached/adapter"), 1e-6);
}

const char* const kDpoMetrics[] = {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
                                   "rewards/margins", "logps/chosen", "logps/rejected"};

TEST(PreferenceTrain, PrecomputedReferenceEqualsTheStepsReferenceForDpo) {
  TinyRun t;
  expect_precomputed_equals_live(
      t, dpo_keys(t, {"lora.dropout=0.1", "train.batch_size=2", "train.grad_accum=2", "train.max_steps=4"}),
      kDpoMetrics, std::size(kDpoMetrics));
}

TEST(PreferenceTrain, PrecomputedReferenceEqualsTheStepsReferenceForKto) {
  TinyRun t;
  expect_precomputed_equals_live(
      t, kto_keys(t, {"lora.dropout=0.1", "train.batch_size=3", "train.grad_accum=2", "train.max_steps=4"}),
      kKtoMetrics, std::size(kKtoMetrics));
}

// Stopped and resumed with the cache: the resumed run reads the file the first one wrote (not rewritten: the same
// modification time) and ends with the uninterrupted run's adapter, byte for byte.
TEST(PreferenceTrain, PrecomputedReferenceIsReusedOnResume) {
  TinyRun t;
  const std::vector<std::string> common = {"lora.dropout=0.1", "train.batch_size=2", "train.grad_accum=2",
                                           "train.max_steps=6", "train.save_every=2",
                                           "train.precompute_ref_log_probs=true"};
  auto a = dpo_keys(t, common), b = dpo_keys(t, common);
  a.push_back("train.output_dir=" + t.dir + "/a");
  b.push_back("train.output_dir=" + t.dir + "/b");
  EXPECT_EQ(run_training(t.recipe(a), quiet()).reference_cache, "computed");
  auto first = quiet();
  first.stop_after_step = 3;
  EXPECT_EQ(run_training(t.recipe(b), first).reference_cache, "computed");
  const auto cache = t.dir + "/b/" + kReferenceCacheFile;
  const auto written = std::filesystem::last_write_time(cache);
  const auto bytes = test::read_file(cache);
  auto second = quiet();
  second.resume = "auto";
  const auto s = run_training(t.recipe(b), second);
  EXPECT_EQ(s.start_step, 2);
  EXPECT_EQ(s.reference_cache, "read");
  EXPECT_EQ(s.reference_misses, 0);
  EXPECT_TRUE(std::filesystem::last_write_time(cache) == written);
  EXPECT_TRUE(test::read_file(cache) == bytes);
  EXPECT_TRUE(test::read_file(t.dir + "/a/adapter/adapter_model.safetensors") ==
              test::read_file(t.dir + "/b/adapter/adapter_model.safetensors"));
}

// A cache file that is not there to be trusted (corrupt bytes, another fingerprint, rows missing) is recomputed with
// a note on stderr naming why, and the run goes on as it would have.
TEST(PreferenceTrain, CorruptOrStaleReferenceCacheIsRecomputedWithANote) {
  TinyRun t;
  const auto keys = dpo_keys(t, {"train.batch_size=2", "train.max_steps=3", "train.save_every=1",
                                 "train.precompute_ref_log_probs=true", "train.output_dir=" + t.dir + "/run"});
  const auto recipe = t.recipe(keys);
  auto first = quiet();
  first.stop_after_step = 2;
  run_training(recipe, first);
  const auto cache = t.dir + "/run/" + kReferenceCacheFile;
  const auto good = test::read_file(cache);
  auto resume_and_note = [&] {
    auto o = quiet();
    o.resume = "auto";
    testing::internal::CaptureStderr();
    const auto s = run_training(recipe, o);
    const auto err = testing::internal::GetCapturedStderr();
    EXPECT_EQ(s.reference_cache, "computed") << err;
    EXPECT_EQ(s.reference_misses, 0);
    EXPECT_TRUE(test::read_file(cache) == good) << "the recomputed file differs from the first";
    return err;
  };
  io::write_text_atomically(cache, "not a safetensors file");
  auto err = resume_and_note();
  EXPECT_NE(err.find("is unreadable"), std::string::npos) << err;
  EXPECT_NE(err.find(kReferenceCacheFile), std::string::npos) << err;
  io::write_safetensors(cache, {{"keys", at::zeros({1}, at::kLong)}, {"logps", at::zeros({1})}},
                        {{"fingerprint", "0123456789abcdef"}});
  err = resume_and_note();
  EXPECT_NE(err.find("another base, data or settings"), std::string::npos) << err;
  io::write_safetensors(cache, {{"keys", at::zeros({1}, at::kLong)}, {"logps", at::zeros({1})}},
                        {{"fingerprint", reference_fingerprint(recipe)}});
  err = resume_and_note();
  EXPECT_NE(err.find("lacks"), std::string::npos) << err;
  // Only DPO and KTO have a reference to precompute.
  const auto msg = test::error_of([&] { t.recipe({"train.precompute_ref_log_probs=true"}); });
  EXPECT_NE(msg.find("train.precompute_ref_log_probs"), std::string::npos) << msg;
}

// 2 ranks x 2 pairs with the cache (each rank computes its shares' rows, gathered into one file) = 1 rank x 4 pairs
// with the reference in every step.
TEST(PreferenceTrain, PrecomputedReferenceWithTwoRanksEqualsOneRank) {
  TinyRun t;
  auto two = dpo_keys(t, {"train.batch_size=2", "train.max_steps=4", "lora.dropout=0.1",
                          "train.precompute_ref_log_probs=true", "train.output_dir=" + t.dir + "/two"});
  const auto path = t.dir + "/two.yaml";
  io::write_text_atomically(path, t.recipe(two).to_yaml());
  const auto r = test::run_qtune("train " + path + " --nproc 2");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE((r.out + r.err).find("reference log-probabilities: computed"), std::string::npos) << r.out << r.err;
  auto one = dpo_keys(t, {"train.batch_size=4", "train.max_steps=4", "lora.dropout=0.1",
                          "train.output_dir=" + t.dir + "/one"});
  run_training(t.recipe(one), quiet());
  const auto l1 = train_lines(t.dir + "/one"), l2 = train_lines(t.dir + "/two");
  ASSERT_EQ(l1.size(), l2.size());
  for (size_t i = 0; i < l1.size(); ++i)
    for (const char* m : {"loss", "rewards/margins", "logps/chosen"})
      EXPECT_NEAR(*l2[i].value(m), *l1[i].value(m), 1e-5 * std::max(1.0, std::abs(*l1[i].value(m)))) << m << " " << i;
  EXPECT_LT(adapter_difference(t.dir + "/one/adapter", t.dir + "/two/adapter"), 1e-4);
}

}  // namespace
}  // namespace qtune::train
