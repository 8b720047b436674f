// The real stories260K quantized every way qtune offers, scored on held-out TinyStories: NF4 must beat FP4,
// and the --plan auto mixed plan at 4.5 bits (calibrated on other stories) must beat plain NF4.
#include <gtest/gtest.h>

#include "qtune/data/text_file.h"
#include "qtune/data/tokenizer.h"
#include "qtune/eval/perplexity.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quant_linear_factory.h"
#include "qtune/calib/sensitivity.h"
#include "test_util.h"

namespace {

using namespace qtune;

struct SharedQuantPerplexity : ::testing::Test {
  void SetUp() override {
    QTUNE_REQUIRE_SHARED();
    dir = test::shared_dir() + "/models/stories260K";
    const auto config = io::ModelConfig::load(dir);
    auto tok = data::Tokenizer::load(dir, &config);
    auto stories = data::split_documents(
        data::read_text_file(test::shared_dir() + "/data/tinystories_valid_head.txt", "text"), "<|endoftext|>");
    ASSERT_EQ(stories.size(), 22u);
    // Calibrate on the first 5 stories, score the other 17.
    for (size_t i = 0; i < stories.size(); ++i) (i < 5 ? calibration : heldout).push_back(tok.encode(stories[i]));
  }
  double ppl(const quant::QuantPlan* plan, at::ScalarType dtype = at::kFloat) {
    const auto options = at::TensorOptions().dtype(dtype);
    nn::CausalLM model;
    if (plan) {
      nn::QuantLinearFactory factory(*plan, options);
      model = nn::load_causal_lm(dir, options, &factory);
    } else {
      model = nn::load_causal_lm(dir, options);
    }
    return eval::document_perplexity(*model, heldout, 512).perplexity();
  }
  static quant::QuantPlan plan_of(quant::WeightFormat f, bool dq) {
    quant::QuantPlan p;
    p.base = {f, 64, dq};
    return p;
  }
  std::string dir;
  std::vector<std::vector<int64_t>> calibration, heldout;
};

TEST_F(SharedQuantPerplexity, Nf4BeatsFp4AndTheAutoPlanBeatsNf4) {
  const double fp32 = ppl(nullptr), bf16 = ppl(nullptr, at::kBFloat16);
  const auto int8_plan = plan_of(quant::WeightFormat::Int8, false);
  const auto nf4_plan = plan_of(quant::WeightFormat::NF4, false), nf4dq_plan = plan_of(quant::WeightFormat::NF4, true);
  const auto fp4_plan = plan_of(quant::WeightFormat::FP4, false);
  const double int8 = ppl(&int8_plan), nf4 = ppl(&nf4_plan), nf4dq = ppl(&nf4dq_plan), fp4 = ppl(&fp4_plan);
  calib::SensitivityOptions o;
  o.budget_bits = 4.5;
  auto scan = calib::sensitivity_scan(dir, calibration, o);
  EXPECT_LE(scan.average_bits, 4.5);
  EXPECT_GT(scan.plan.rules.size(), 0u);
  const double mixed = ppl(&scan.plan);
  std::printf("held-out perplexity: fp32 %.4f  bf16 %.4f  int8 %.4f  nf4 %.4f  nf4+dq %.4f  fp4 %.4f  auto@%.3f bits %.4f\n",
              fp32, bf16, int8, nf4, nf4dq, fp4, scan.average_bits, mixed);
  EXPECT_LT(nf4, fp4);
  EXPECT_LT(mixed, nf4);
  EXPECT_LT(int8, nf4);
  EXPECT_LT(fp32, int8 + 0.05);
  EXPECT_NEAR(bf16, fp32, 0.01);
  EXPECT_NEAR(nf4dq, nf4, 0.01) << "double quantization should cost almost nothing";
}

}  // namespace
