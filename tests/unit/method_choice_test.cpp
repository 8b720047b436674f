// The per-layer method choice: a multiple-choice knapsack by loss removed per extra bit, on tables whose answer is
// worked out by hand here (each case says why), within the budget, never an option that is dominated or above a
// linear's lower convex hull; the methods' names checked.
#include "qtune/calib/method_choice.h"

#include <gtest/gtest.h>

#include "qtune/calib/method_scan.h"
#include "test_util.h"

namespace qtune::calib {
namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Two linears of 100 weights. a: 4 bits loss 1.0 → b: 8 bits loss 0.2 → c: 16 bits loss 0; e: 4 bits 0.5, f: 8 bits
// 0.4, g: 16 bits 0. f lies above e–g's line (e→f removes 0.1 per 4 bits, f→g 0.4 per 8): never chosen.
std::vector<LinearOptions> two_linears() {
  return {{"first", 100, {{"nf4", 4, 1.0}, {"int8", 8, 0.2}, {"16bit", 16, 0.0}}},
          {"second", 100, {{"nf4", 4, 0.5}, {"int8", 8, 0.4}, {"16bit", 16, 0.0}}}};
}

TEST(MethodChoice, UpgradesByLossRemovedPerExtraBitWithinTheBudget) {
  const auto t = two_linears();
  // Budget 4: everything at its cheapest.
  auto c = choose_methods(t, 4);
  EXPECT_EQ(c.chosen, (std::vector<size_t>{0, 0}));
  EXPECT_DOUBLE_EQ(c.average_bits, 4);
  EXPECT_DOUBLE_EQ(c.loss, 1.5);
  // Budget 6 (400 extra bits): first a→b removes 0.8 for 400 bits, the best step; then nothing else fits.
  c = choose_methods(t, 6);
  EXPECT_EQ(c.chosen, (std::vector<size_t>{1, 0}));
  EXPECT_DOUBLE_EQ(c.average_bits, 6);
  EXPECT_DOUBLE_EQ(c.loss, 0.7);
  // Budget 12 (1600 extra): a→b (0.8 / 400) first, then e→g (0.5 / 1200, better than b→c's 0.2 / 800) fills it.
  c = choose_methods(t, 12);
  EXPECT_EQ(c.chosen, (std::vector<size_t>{1, 2}));
  EXPECT_DOUBLE_EQ(c.average_bits, 12);
  // Budget 11 (1400 extra): after a→b, e→g (1200) no longer fits; b→c (800), the next best, does.
  c = choose_methods(t, 11);
  EXPECT_EQ(c.chosen, (std::vector<size_t>{2, 0}));
  EXPECT_DOUBLE_EQ(c.average_bits, 10);
  // Budget 16: all of it.
  c = choose_methods(t, 16);
  EXPECT_EQ(c.chosen, (std::vector<size_t>{2, 2}));
  EXPECT_DOUBLE_EQ(c.loss, 0);
}

TEST(MethodChoice, ADominatedOptionIsNeverChosen) {
  // awq costs more than nf4 and loses more: dominated. int8 is dearer and worse than gptq: dominated too. The parameter
  // counts differ, so the weighting matters: the big linear's step removes less per bit.
  const std::vector<LinearOptions> t = {
      {"big", 300, {{"nf4", 4.13, 0.30}, {"awq", 4.20, 0.35}, {"gptq", 4.16, 0.10}, {"int8", 8.1, 0.12}, {"16bit", 16, 0}}},
      {"small", 100, {{"nf4", 4.13, 0.20}, {"awq", 4.20, 0.25}, {"gptq", 4.16, 0.05}, {"int8", 8.1, 0.08}, {"16bit", 16, 0}}}};
  for (double budget = 4.13; budget <= 16.0; budget += 0.05) {
    const auto c = choose_methods(t, budget);
    EXPECT_LE(c.average_bits, budget + 1e-12);
    for (size_t i = 0; i < t.size(); ++i) {
      const auto& m = t[i].options[c.chosen[i]].method;
      EXPECT_NE(m, "awq") << budget;
      EXPECT_NE(m, "int8") << budget;
    }
  }
  // At 4.16 both reach gptq: nf4 → gptq removes 0.2 (big) and 0.15 (small) for 0.03 bits.
  const auto c = choose_methods(t, 4.16);
  EXPECT_EQ(t[0].options[c.chosen[0]].method, "gptq");
  EXPECT_EQ(t[1].options[c.chosen[1]].method, "gptq");
}

TEST(MethodChoice, ABudgetBelowTheCheapestOptionIsRefused) {
  const auto e = test::error_of([] { choose_methods(two_linears(), 3.5, "quant.budget_bits"); });
  EXPECT_TRUE(contains(e, "quant.budget_bits 3.5 is below what the cheapest method of every linear costs (4.000 bits "
                          "per weight)")) << e;
  const auto none = test::error_of([] { choose_methods({{"lonely", 10, {}}}, 8); });
  EXPECT_TRUE(contains(none, "lonely: no quantization method can store it")) << none;
}

TEST(MethodChoice, MethodNamesAreChecked) {
  EXPECT_EQ(parse_methods("nf4, gptq,16bit", "--methods"), (std::vector<std::string>{"nf4", "gptq", "16bit"}));
  EXPECT_EQ(parse_methods("nf4,int8,gptq,awq,16bit", "--methods"), kAllMethods);
  auto e = test::error_of([] { parse_methods("nf4,fp8", "--methods"); });
  EXPECT_TRUE(contains(e, "--methods: unknown method 'fp8' (expected nf4, int8, gptq, awq or 16bit)")) << e;
  e = test::error_of([] { parse_methods("gptq,gptq", "quant.methods"); });
  EXPECT_TRUE(contains(e, "quant.methods: 'gptq' is named twice")) << e;
  e = test::error_of([] { parse_methods("", "--methods"); });
  EXPECT_TRUE(contains(e, "--methods: name at least one method")) << e;
}

}  // namespace
}  // namespace qtune::calib
