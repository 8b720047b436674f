// qtune's adamw_8bit against bitsandbytes' AdamW8bit on the same parameters, gradients and per-step learning
// rates: the oracle fixture (tests/oracle/bnb_adamw8bit.py) ran bitsandbytes 0.50's CPU backend and recorded the
// parameters and both moments' codes and absmax after the last step; qtune must reproduce every one bit for bit.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "qtune/io/safetensors.h"
#include "qtune/optim/adamw8bit.h"
#include "qtune/quant/nf4.h"
#include "test_util.h"

namespace {

using namespace qtune;

std::string oracle_file() { return test::oracle_dir() + "/bnb_adamw8bit/adamw8bit.safetensors"; }

#define REQUIRE_BNB_ADAMW8BIT_ORACLE()                                                                     \
  do {                                                                                                     \
    if (!std::filesystem::exists(oracle_file()))                                                           \
      GTEST_FAIL() << oracle_file() << " is missing: run through ctest (the oracle_bnb_adamw8bit fixture)"; \
  } while (0)

// Parameter names: every tensor "NAME.init".
std::vector<std::string> param_names(const io::SafetensorsFile& file) {
  std::vector<std::string> names;
  const std::string suffix = ".init";
  for (const auto& t : file.tensors())
    if (t.name.size() > suffix.size() && t.name.compare(t.name.size() - suffix.size(), suffix.size(), suffix) == 0)
      names.push_back(t.name.substr(0, t.name.size() - suffix.size()));
  return names;
}

// Where two fp32 tensors differ, for the failure message: how many elements and the largest difference.
std::string diff_summary(const at::Tensor& a, const at::Tensor& b) {
  const auto ne = a.ne(b);
  return fmt::format("{} of {} differ, max |diff| {}", ne.sum().item<int64_t>(), a.numel(),
                     (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>());
}

TEST(OracleBnbAdamW8bit, MapsEqualCreateDynamicMap) {
  REQUIRE_BNB_ADAMW8BIT_ORACLE();
  auto file = io::SafetensorsFile::open(oracle_file());
  EXPECT_TRUE(test::bitwise_equal(quant::dynamic_map(true), file->tensor("map.signed")));
  EXPECT_TRUE(test::bitwise_equal(quant::dynamic_map(false), file->tensor("map.unsigned")));
}

TEST(OracleBnbAdamW8bit, StepsEqualBitsandbytesBitForBit) {
  REQUIRE_BNB_ADAMW8BIT_ORACLE();
  auto file = io::SafetensorsFile::open(oracle_file());
  const auto hp = file->tensor("hparams").contiguous();
  const auto lrs = file->tensor("lr").contiguous();
  optim::AdamWOptions o;
  o.beta1 = hp[0].item<double>();
  o.beta2 = hp[1].item<double>();
  o.eps = hp[2].item<double>();
  o.weight_decay = hp[3].item<double>();

  const auto names = param_names(*file);
  ASSERT_EQ(names.size(), 3u);
  optim::NamedParams params;
  for (const auto& name : names) params.emplace_back(name, file->tensor(name + ".init").clone().set_requires_grad(true));
  optim::AdamW8bit opt(params, o);
  for (int64_t s = 0; s < lrs.numel(); ++s) {
    for (auto& [name, p] : params) p.mutable_grad() = file->tensor(fmt::format("grad.{}.{}", s, name)).clone();
    opt.step(lrs[s].item<double>());
    opt.zero_grad();
  }

  std::map<std::string, at::Tensor> state;
  for (const auto& [name, t] : opt.state_dict()) state[name] = t;
  for (size_t i = 0; i < names.size(); ++i) {
    const auto& name = names[i];
    SCOPED_TRACE(name);
    const auto expected = file->tensor(name + ".final");
    EXPECT_TRUE(test::bitwise_equal(params[i].second, expected)) << diff_summary(params[i].second.detach(), expected);
    if (file->find(name + ".absmax1")) {
      ASSERT_TRUE(opt.is_quantized(i));
      EXPECT_TRUE(test::bitwise_equal(state.at(name + ".exp_avg.codes"), file->tensor(name + ".state1")));
      EXPECT_TRUE(test::bitwise_equal(state.at(name + ".exp_avg.absmax"), file->tensor(name + ".absmax1")));
      EXPECT_TRUE(test::bitwise_equal(state.at(name + ".exp_avg_sq.codes"), file->tensor(name + ".state2")));
      EXPECT_TRUE(test::bitwise_equal(state.at(name + ".exp_avg_sq.absmax"), file->tensor(name + ".absmax2")));
    } else {
      ASSERT_FALSE(opt.is_quantized(i));
      EXPECT_TRUE(test::bitwise_equal(state.at(name + ".exp_avg"), file->tensor(name + ".state1").view_as(params[i].second)));
      EXPECT_TRUE(test::bitwise_equal(state.at(name + ".exp_avg_sq"), file->tensor(name + ".state2").view_as(params[i].second)));
    }
  }
}

}  // namespace
