#pragma once
// What the TRL oracle tests (OracleTrlPreference, OracleTrlKto) compare with TRL's files alike: values within a
// tolerance, the LoRA gradients, the adapter after a few steps and the logged history.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "qtune/io/safetensors.h"
#include "qtune/train/metrics_log.h"

namespace qtune::test {

// |a - b| <= tol · max(1, |b|)
inline void expect_close(double actual, double expected, double tol, const std::string& what) {
  EXPECT_LE(std::abs(actual - expected), tol * std::max(1.0, std::abs(expected)))
      << what << ": qtune " << actual << ", TRL " << expected;
}

// PEFT's parameter name without its wrapper prefix and adapter name: qtune's.
inline std::string qtune_name(std::string peft) {
  const std::string prefix = "base_model.model.";
  if (peft.rfind(prefix, 0) == 0) peft.erase(0, prefix.size());
  if (const auto at = peft.find(".default"); at != std::string::npos) peft.erase(at, 8);
  return peft;
}

// Every LoRA gradient TRL + PEFT wrote (grads.safetensors) within 1e-4 of its largest element.
inline void expect_lora_grads_equal_trls(const std::string& grads_file,
                                         const std::vector<std::pair<std::string, at::Tensor>>& trainable) {
  const auto grads = io::SafetensorsFile::open(grads_file);
  std::map<std::string, at::Tensor> ours(trainable.begin(), trainable.end());
  ASSERT_EQ(grads->tensors().size(), ours.size());
  for (const auto& info : grads->tensors()) {
    const auto it = ours.find(qtune_name(info.name));
    ASSERT_NE(it, ours.end()) << info.name;
    const auto expected = grads->tensor(info.name).to(at::kFloat);
    const auto actual = it->second.grad();
    ASSERT_TRUE(actual.defined()) << info.name;
    const double scale = expected.abs().max().item<double>();
    EXPECT_GT(scale, 0) << info.name;
    EXPECT_LE((actual - expected).abs().max().item<double>(), 1e-4 * scale) << info.name;
  }
}

// The adapter qtune wrote equal to TRL's within 1e-4, and metrics.jsonl's train lines equal to TRL's history (its
// loss and `metrics` at each step) within 1e-5.
inline void expect_run_equal_trls(const std::string& adapter_dir, const std::string& trl_adapter_dir,
                                  const std::string& metrics_file, const nlohmann::json& history,
                                  const std::vector<std::string>& metrics) {
  const auto ours = io::SafetensorsFile::open(adapter_dir + "/adapter_model.safetensors");
  const auto trl = io::SafetensorsFile::open(trl_adapter_dir + "/adapter_model.safetensors");
  ASSERT_EQ(ours->tensors().size(), trl->tensors().size());
  for (const auto& info : trl->tensors()) {
    const auto expected = trl->tensor(info.name).to(at::kFloat);
    EXPECT_LE((ours->tensor(info.name).to(at::kFloat) - expected).abs().max().item<double>(), 1e-4) << info.name;
  }
  std::vector<train::MetricRecord> lines;
  for (const auto& rec : train::MetricsLog::read(metrics_file))
    if (rec.kind == "train") lines.push_back(rec);
  ASSERT_EQ(lines.size(), history.size());
  for (size_t s = 0; s < history.size(); ++s) {
    expect_close(*lines[s].value("loss"), history[s].at("loss"), 1e-5, fmt::format("step {} loss", s + 1));
    for (const auto& m : metrics)
      expect_close(*lines[s].value(m), history[s].at(m), 1e-5, fmt::format("step {} {}", s + 1, m));
  }
}

}  // namespace qtune::test
