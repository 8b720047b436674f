// The sensitivity scan scores a linear from its own decoder layer on (the dense states before it cached): the same
// losses as the whole model evaluated with only that linear quantized, and the plan it keeps within its budget.
#include <gtest/gtest.h>

#include "qtune/calib/importance.h"
#include "qtune/calib/sensitivity.h"
#include "qtune/eval/perplexity.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quant_linear_factory.h"
#include "test_util.h"
#include "tiny_run.h"

namespace qtune::calib {
namespace {

double whole_model_nll(const std::string& model, const quant::QuantPlan& plan,
                       const std::vector<std::vector<int64_t>>& windows, int64_t seq_len) {
  nn::QuantLinearFactory factory(plan, at::TensorOptions().dtype(at::kFloat));
  auto m = nn::load_causal_lm(model, at::TensorOptions().dtype(at::kFloat), &factory);
  return eval::document_perplexity(*m, windows, seq_len).mean_nll();
}

TEST(SensitivityScan, ScoresEachLinearAsTheWholeModelWithOnlyThatLinearQuantized) {
  train::TinyRun t;
  const auto tok = data::Tokenizer::load(t.model);
  const auto windows = calibration_sequences(t.dir + "/corpus.txt", tok, 64, 4);
  SensitivityOptions o;
  o.seq_len = 64;
  o.budget_bits = 5;
  const auto r = sensitivity_scan(t.model, windows, o);
  ASSERT_EQ(r.layers.size(), 14u);
  quant::QuantPlan dense;
  dense.base.format = quant::WeightFormat::Dense;
  EXPECT_NEAR(r.dense_loss, whole_model_nll(t.model, dense, windows, 64), 1e-6);
  for (const size_t i : {size_t{2}, size_t{13}}) {  // one linear of each layer
    quant::QuantPlan only = dense;
    only.rules.push_back({r.layers[i].name, quant::WeightFormat::NF4});
    EXPECT_NEAR(r.dense_loss + r.layers[i].loss_increase, whole_model_nll(t.model, only, windows, 64), 1e-5)
        << r.layers[i].name;
  }
  quant::QuantPlan all_nf4;
  all_nf4.base = o.low;
  EXPECT_NEAR(r.all_low_loss, whole_model_nll(t.model, all_nf4, windows, 64), 1e-5);
  EXPECT_NEAR(r.planned_loss, whole_model_nll(t.model, r.plan, windows, 64), 1e-5);
  EXPECT_LE(r.average_bits, 5.0);
  EXPECT_GT(r.plan.rules.size(), 0u);
}

TEST(SensitivityScan, TheBudgetCountsTheBitsOfTheStoreThePlanIsFor) {
  train::TinyRun t;
  const auto tok = data::Tokenizer::load(t.model);
  const auto windows = calibration_sequences(t.dir + "/corpus.txt", tok, 64, 2);
  SensitivityOptions o;
  o.seq_len = 64;
  o.budget_bits = 6;
  o.bits_of = [](int64_t, int64_t, bool high) { return high ? 9.0 : 5.0; };  // a store dearer than NF4 / int8
  const auto r = sensitivity_scan(t.model, windows, o);
  for (const auto& l : r.layers) {
    EXPECT_EQ(l.low_bits, 5.0);
    EXPECT_EQ(l.high_bits, 9.0);
  }
  EXPECT_LE(r.average_bits, 6.0);
  EXPECT_GT(r.average_bits, 5.0);  // some linears kept high, counted at 9 bits
  EXPECT_NE(test::error_of([&] {
              o.budget_bits = 4.5;  // below the store's 5 bits: nothing fits
              sensitivity_scan(t.model, windows, o);
            }).find("below what the low format alone costs (5.000"),
            std::string::npos);
}

TEST(SensitivityScan, FormatsItCannotScoreAreRefusedBeforeAnyWork) {
  train::TinyRun t;
  const std::vector<std::vector<int64_t>> windows = {{1, 2, 3, 4}};
  SensitivityOptions o;
  o.low.format = quant::WeightFormat::W8A8;  // its input rounding is not what the scan's swapped weight measures
  EXPECT_NE(test::error_of([&] { sensitivity_scan(t.model, windows, o); }).find("w8a8 rounds each linear's inputs"),
            std::string::npos);
  o.low.format = quant::WeightFormat::NF4;
  o.high = quant::WeightFormat::W8A8;
  EXPECT_NE(test::error_of([&] { sensitivity_scan(t.model, windows, o); }).find("w8a8 rounds each linear's inputs"),
            std::string::npos);
  o.low.format = quant::WeightFormat::Dense;
  o.high = quant::WeightFormat::Int8;
  EXPECT_NE(test::error_of([&] { sensitivity_scan(t.model, windows, o); }).find("the low format is 16bit"),
            std::string::npos);
}

}  // namespace
}  // namespace qtune::calib
