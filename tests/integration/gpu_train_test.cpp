// The trainer on a CUDA GPU against the CPU reference (issue 12). Each test skips where no GPU is present; on the GPU
// machine scripts/gpu_check.sh runs them. Written without a GPU to run them on: the first GPU session must see them pass.
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <cmath>

#include "qtune/data/tokenizer.h"
#include "qtune/dist/local_launch.h"
#include "qtune/eval/generate.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quant_linear_factory.h"
#include "qtune/train/trainer.h"
#include "test_util.h"
#include "tiny_run.h"

namespace qtune::train {
namespace {

#define QTUNE_REQUIRE_CUDA() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine: scripts/gpu_check.sh runs this on one"

std::vector<double> losses_of(const Recipe& recipe, TrainSummary* summary = nullptr,
                              std::function<void(int64_t, const std::vector<at::Tensor>&)> after_backward = {}) {
  std::vector<double> out;
  auto o = quiet();
  o.on_step = [&](int64_t, double loss) { out.push_back(loss); };
  o.after_backward = std::move(after_backward);
  auto s = run_training(recipe, o);
  if (summary) *summary = s;
  return out;
}

TEST(GpuTrain, QLoRAStepsInFp32OnCudaEqualTheCpu) {
  QTUNE_REQUIRE_CUDA();
  TinyRun t;
  const std::vector<std::string> keys = {"train.max_steps=3", "train.precision=fp32", "lora.dropout=0"};
  auto cpu_keys = keys, cuda_keys = keys;
  cpu_keys.push_back("device=cpu");
  cuda_keys.push_back("device=cuda");
  cuda_keys.push_back("train.output_dir=" + t.dir + "/cuda");
  const auto cpu = losses_of(t.recipe(cpu_keys)), cuda = losses_of(t.recipe(cuda_keys));
  ASSERT_EQ(cpu.size(), cuda.size());
  // Different matmul kernels and reduction orders: equal to float rounding, not bit for bit.
  for (size_t i = 0; i < cpu.size(); ++i) EXPECT_NEAR(cuda[i], cpu[i], 1e-4 * std::abs(cpu[i])) << "step " << i + 1;
}

TEST(GpuTrain, Bf16StepsOnCudaTrackFp32) {
  QTUNE_REQUIRE_CUDA();
  TinyRun t;
  const auto fp32 = losses_of(t.recipe({"device=cuda", "train.max_steps=10", "train.precision=fp32", "lora.dropout=0"}));
  const auto bf16 = losses_of(t.recipe({"device=cuda", "train.max_steps=10", "train.precision=bf16", "lora.dropout=0",
                                        "train.output_dir=" + t.dir + "/bf16"}));
  ASSERT_EQ(bf16.size(), fp32.size());
  for (size_t i = 0; i < fp32.size(); ++i) EXPECT_NEAR(bf16[i], fp32[i], 0.05 * fp32[i]) << "step " << i + 1;
}

TEST(GpuTrain, Fp16LossScalingSkipsInjectedInfAndRecoversOnCuda) {
  QTUNE_REQUIRE_CUDA();
  TinyRun t;
  TrainSummary s;
  const auto losses = losses_of(t.recipe({"device=cuda", "train.max_steps=8", "train.precision=fp16"}), &s,
                                [](int64_t step, const std::vector<at::Tensor>& params) {
                                  if (step == 3) params[5].mutable_grad().view(-1)[0] = INFINITY;
                                });
  EXPECT_EQ(s.skipped_steps, 1);
  EXPECT_EQ(losses.size(), 7u);
  for (double l : losses) EXPECT_TRUE(std::isfinite(l));
  EXPECT_LT(s.eval_after->loss, s.eval_before->loss);
}

TEST(GpuTrain, PagedOptimizersGiveTheLossesOfThePlainOnesOnCuda) {
  QTUNE_REQUIRE_CUDA();
  TinyRun t;
  for (const std::string kind : {"adamw", "adamw_8bit"}) {
    const auto plain = losses_of(t.recipe({"device=cuda", "train.max_steps=6", "optim.name=" + kind, "lora.dropout=0",
                                           "train.output_dir=" + t.dir + "/plain_" + kind}));
    const auto paged = losses_of(t.recipe({"device=cuda", "train.max_steps=6", "optim.name=paged_" + kind,
                                           "lora.dropout=0", "train.output_dir=" + t.dir + "/paged_" + kind}));
    EXPECT_EQ(paged, plain) << kind;
  }
}

// The NCCL process group (world of one, as torchrun --nproc-per-node 1 forms it): the gradients go through
// ProcessGroupNCCL's all-reduce and come back as they were, so the run is the one without a group, byte for byte.
TEST(GpuTrain, NcclWorldOfOneTrainsAsAlone) {
  QTUNE_REQUIRE_CUDA();
  TinyRun t;
  const std::vector<std::string> keys = {"device=cuda", "train.max_steps=4", "train.precision=fp32"};
  auto launched = keys;
  launched.push_back("train.output_dir=" + t.dir + "/launched");
  const auto path = t.dir + "/launched.yaml";
  io::write_text_atomically(path, t.recipe(launched).to_yaml());
  const auto r = test::run_qtune("train " + path, "RANK=0 WORLD_SIZE=1 MASTER_PORT=" +
                                                      std::to_string(dist::free_local_port()));
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("by nccl"), std::string::npos) << r.out;
  auto alone = keys;
  alone.push_back("train.output_dir=" + t.dir + "/alone");
  losses_of(t.recipe(alone));
  EXPECT_EQ(test::read_file(t.dir + "/launched/adapter/adapter_model.safetensors"),
            test::read_file(t.dir + "/alone/adapter/adapter_model.safetensors"));
}

TEST(GpuGenerate, GreedyTokensOnCudaEqualTheCpu) {
  QTUNE_REQUIRE_CUDA();
  const auto shared = test::shared_dir();
  if (shared.empty()) GTEST_SKIP() << "../shared not found: needs models/stories260K";
  const auto dir = shared + "/models/stories260K";
  auto run = [&](at::Device device, bool nf4) {
    const auto options = at::TensorOptions().dtype(at::kFloat).device(device);
    quant::QuantPlan plan;
    if (!nf4) plan.base.format = quant::WeightFormat::Dense;
    nn::QuantLinearFactory factory(plan, options);
    auto model = nn::load_causal_lm(dir, options, &factory);
    model->eval();
    const auto tok = data::Tokenizer::load(dir, &model->config());
    eval::GenerateOptions o;
    o.max_new_tokens = 60;
    return eval::generate(*model, tok.encode("Once upon a time"), o).tokens;
  };
  for (bool nf4 : {false, true}) EXPECT_EQ(run(at::kCUDA, nf4), run(at::kCPU, nf4)) << (nf4 ? "NF4" : "fp32");
}

}  // namespace
}  // namespace qtune::train
