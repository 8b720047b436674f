// Checkpointing only as much as a memory budget needs: the per-layer activation terms of `qtune plan`'s estimate
// and the fewest layers to recompute so that the total fits.
#include <gtest/gtest.h>

#include "qtune/io/hf_config.h"
#include "qtune/train/memory_estimate.h"
#include "qtune/train/recipe.h"
#include "test_util.h"

namespace {

using namespace qtune;

TEST(MemoryBudget, FewestCheckpointedLayersThatFitTheBudget) {
  const auto config = io::ModelConfig::load(std::string(QTUNE_TEST_SOURCE_DIR) + "/configs/models/smollm2-135m.json");
  train::Recipe recipe;
  recipe.train.batch_size = 4;
  recipe.data.max_seq_len = 256;
  const auto m = train::estimate_memory(config, recipe, quant::QuantPlan{}, at::kBFloat16, /*cuda=*/true);
  const int64_t L = config.num_hidden_layers;
  ASSERT_EQ(m.layers, L);
  EXPECT_EQ(train::activations_with(m, L), m.activations_checkpointing);
  EXPECT_EQ(train::activations_with(m, 0), m.activations_no_checkpointing);
  for (int64_t n = 1; n < L; ++n) EXPECT_LT(train::activations_with(m, n + 1), train::activations_with(m, n)) << n;

  const int64_t rest = m.total() - m.activations;
  EXPECT_EQ(train::checkpointed_layers_for_budget(m, rest + m.activations_no_checkpointing), 0) << "everything fits";
  EXPECT_EQ(train::checkpointed_layers_for_budget(m, rest + m.activations_checkpointing), L);
  EXPECT_EQ(train::checkpointed_layers_for_budget(m, 1), L) << "nothing fits: recompute all, the caller warns";
  const int64_t midway = rest + (m.activations_checkpointing + m.activations_no_checkpointing) / 2;
  const int64_t n = train::checkpointed_layers_for_budget(m, midway);
  EXPECT_GT(n, 0);
  EXPECT_LT(n, L);
  EXPECT_LE(rest + train::activations_with(m, n), midway);
  EXPECT_GT(rest + train::activations_with(m, n - 1), midway) << "one layer fewer would not fit";
}

}  // namespace
