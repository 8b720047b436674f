// The launch environments qtune reads its rank from, a rank's share of a micro-batch, and dropout masks that do not
// depend on how rows are split among ranks.
#include <gtest/gtest.h>

#include <map>

#include "qtune/data/collate.h"
#include "qtune/dist/world.h"
#include "qtune/lora/row_dropout.h"
#include "test_util.h"

namespace qtune::dist {
namespace {

EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
  };
}

TEST(DistWorld, NoLauncherIsOneRank) {
  const auto w = world_from_environment(env_of({{"PATH", "/bin"}}));
  EXPECT_FALSE(w.distributed());
  EXPECT_EQ(w.rank, 0);
  EXPECT_EQ(w.launcher, "none");
}

TEST(DistWorld, Torchrun) {
  const auto w = world_from_environment(env_of({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"},
                                                {"LOCAL_WORLD_SIZE", "2"}, {"MASTER_ADDR", "node7"},
                                                {"MASTER_PORT", "29411"}, {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                                                {"TORCHELASTIC_RESTART_COUNT", "2"}}));
  EXPECT_EQ(w.launcher, "torchrun");
  EXPECT_EQ(w.rank, 3);
  EXPECT_EQ(w.size, 4);
  EXPECT_EQ(w.local_rank, 1);
  EXPECT_EQ(w.local_size, 2);
  EXPECT_EQ(w.master_addr, "node7");
  EXPECT_EQ(w.master_port, 29411);
  EXPECT_TRUE(w.agent_store);
  EXPECT_EQ(w.attempt, 2);
}

TEST(DistWorld, OpenMpiAndMpich) {
  auto w = world_from_environment(env_of({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"},
                                          {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}}));
  EXPECT_EQ(w.launcher, "mpi");
  EXPECT_EQ(w.rank, 1);
  EXPECT_EQ(w.size, 2);
  EXPECT_EQ(w.master_addr, "127.0.0.1");  // every rank on this machine
  w = world_from_environment(env_of({{"PMI_RANK", "2"}, {"PMI_SIZE", "3"}, {"MPI_LOCALRANKID", "2"},
                                     {"MPI_LOCALNRANKS", "3"}, {"MASTER_PORT", "31000"}}));
  EXPECT_EQ(w.rank, 2);
  EXPECT_EQ(w.size, 3);
  EXPECT_EQ(w.master_port, 31000);
  // Over several machines rank 0's host must be given.
  const auto e = test::error_of([&] {
    world_from_environment(env_of({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                                   {"OMPI_COMM_WORLD_LOCAL_RANK", "0"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}}));
  });
  EXPECT_NE(e.find("MASTER_ADDR"), std::string::npos) << e;
}

TEST(DistWorld, SlurmSrun) {
  const auto w = world_from_environment(env_of({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"},
                                                {"SLURM_STEP_NUM_TASKS", "8"}, {"SLURM_LOCALID", "1"},
                                                {"SLURM_STEP_NUM_NODES", "2"},
                                                {"SLURM_STEP_NODELIST", "gpu[07-08]"}}));
  EXPECT_EQ(w.launcher, "slurm");
  EXPECT_EQ(w.rank, 5);
  EXPECT_EQ(w.size, 8);
  EXPECT_EQ(w.local_rank, 1);
  EXPECT_EQ(w.local_size, 4);
  EXPECT_EQ(w.master_addr, "gpu07");
  // An sbatch script's own shell (no srun step): one process.
  EXPECT_FALSE(world_from_environment(env_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "8"}})).distributed());
  EXPECT_EQ(first_slurm_host("node[01-03,07],gpu5"), "node01");
  EXPECT_EQ(first_slurm_host("a1,b2"), "a1");
  EXPECT_EQ(first_slurm_host("rack1-[3,5]x"), "rack1-3x");
}

TEST(DistWorld, BadVariablesAreErrorsNamingThem) {
  auto e = test::error_of([] { world_from_environment(env_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}})); });
  EXPECT_NE(e.find("RANK=2"), std::string::npos) << e;
  e = test::error_of([] { world_from_environment(env_of({{"RANK", "x"}, {"WORLD_SIZE", "2"}})); });
  EXPECT_NE(e.find("RANK='x'"), std::string::npos) << e;
  e = test::error_of([] { world_from_environment(env_of({{"RANK", "0"}})); });
  EXPECT_NE(e.find("WORLD_SIZE is not set"), std::string::npos) << e;
  e = test::error_of(
      [] { world_from_environment(env_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}})); });
  EXPECT_NE(e.find("MASTER_PORT=70000"), std::string::npos) << e;
}

TEST(DistShare, SliceRowsCountsItsOwnTokensAndSamples) {
  data::Batch b;
  b.input_ids = at::arange(12, at::kLong).view({3, 4});
  b.targets = at::tensor({1, 2, -100, -100, 5, -100, 7, -100, -100, -100, -100, -100}, at::kLong).view({3, 4});
  b.position_ids = at::zeros({3, 4}, at::kLong);
  b.segment_ids = at::tensor({0, 0, 1, 1, 0, 0, 0, 0, -1, -1, -1, -1}, at::kLong).view({3, 4});
  b.target_tokens = 4;
  b.samples = 3;
  auto s = data::slice_rows(b, 0, 2);
  EXPECT_EQ(s.input_ids.size(0), 2);
  EXPECT_EQ(s.target_tokens, 4);
  EXPECT_EQ(s.samples, 3);
  s = data::slice_rows(b, 2, 4);  // the padding row, clamped
  EXPECT_EQ(s.input_ids.size(0), 1);
  EXPECT_EQ(s.target_tokens, 0);
  EXPECT_EQ(s.samples, 0);
  s = data::slice_rows(b, 4, 6);  // past the end: no rows
  EXPECT_EQ(s.input_ids.size(0), 0);
  EXPECT_EQ(s.target_tokens, 0);
}

TEST(RowKeyedDropout, MasksFollowTheGlobalRowNotTheSplit) {
  const auto x = at::randn({6, 5, 16});
  const uint64_t key = lora::dropout_key(42, 3, 1), module = lora::module_key("model.layers.0.mlp.up_proj");
  at::Tensor whole, first, second;
  {
    lora::DropoutRowsScope rows({key, 0});
    whole = lora::row_keyed_dropout(x, 0.25, module);
  }
  {
    lora::DropoutRowsScope rows({key, 0});
    first = lora::row_keyed_dropout(x.narrow(0, 0, 2), 0.25, module);
  }
  {
    lora::DropoutRowsScope rows({key, 2});
    second = lora::row_keyed_dropout(x.narrow(0, 2, 4), 0.25, module);
  }
  EXPECT_TRUE(test::bitwise_equal(at::cat({first, second}), whole));
  // Inverted dropout: kept values scaled by 1 / (1 - p), about p of them zero.
  const auto kept = whole.ne(0);
  EXPECT_TRUE(at::allclose(whole.masked_select(kept), (x / 0.75).masked_select(kept)));
  const double dropped = 1.0 - kept.to(at::kDouble).mean().item<double>();
  EXPECT_NEAR(dropped, 0.25, 0.06);
  // Another module, micro-batch or row draws other masks.
  lora::DropoutRowsScope rows({key, 0});
  EXPECT_FALSE(at::equal(lora::row_keyed_dropout(x, 0.25, module + 1).ne(0), kept));
  lora::DropoutRowsScope other({lora::dropout_key(42, 3, 2), 0});
  EXPECT_FALSE(at::equal(lora::row_keyed_dropout(x, 0.25, module).ne(0), kept));
}

// The device path's masks (run here on the CPU): split-invariant and about p dropped, as the CPU path's.
TEST(RowKeyedDropout, HashedMasksFollowTheGlobalRowToo) {
  const uint64_t key = lora::dropout_key(7, 0, 0), module = lora::module_key("model.layers.1.self_attn.q_proj");
  const auto whole = lora::hashed_row_mask({6, 5, 16}, 0.9, key, module, 10, at::kCPU);
  const auto a = lora::hashed_row_mask({2, 5, 16}, 0.9, key, module, 10, at::kCPU);
  const auto b = lora::hashed_row_mask({4, 5, 16}, 0.9, key, module, 12, at::kCPU);
  EXPECT_TRUE(at::equal(at::cat({a, b}), whole));
  EXPECT_NEAR(1.0 - whole.to(at::kDouble).mean().item<double>(), 0.1, 0.04);
  // Neighbouring rows and elements are not correlated: rows differ, and a row's first and second halves differ.
  EXPECT_FALSE(at::equal(whole[0], whole[1]));
  EXPECT_FALSE(at::equal(lora::hashed_row_mask({1, 4096}, 0.5, key, module, 0, at::kCPU),
                         lora::hashed_row_mask({1, 4096}, 0.5, key, module + 1, 0, at::kCPU)));
  EXPECT_NEAR(lora::hashed_row_mask({1, 1 << 16}, 0.5, key, module, 0, at::kCPU).to(at::kDouble).mean().item<double>(),
              0.5, 0.01);
}

}  // namespace
}  // namespace qtune::dist
