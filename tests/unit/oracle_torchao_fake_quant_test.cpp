// qtune's fake quantization against torchao's QAT fake quantizers on the same inputs (tests/oracle/torchao_fake_quant.py):
// forward bit for bit; gradients are the straight-through estimator's (the upstream gradient where torchao's passes,
// zero where torchao clips). torchao's own gradient is g · scale · (1 / scale) through its autograd graph, which is g
// within an ulp, not always exactly: qtune passes g itself.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "qtune/autograd/fake_quant.h"
#include "qtune/io/safetensors.h"
#include "qtune/quant/fake_quant.h"
#include "test_util.h"

namespace {

std::string oracle_file() { return qtune::test::oracle_dir() + "/torchao_fake_quant/fake_quant.safetensors"; }

#define REQUIRE_TORCHAO_ORACLE()                                                                                   \
  do {                                                                                                             \
    if (!std::filesystem::exists(oracle_file()))                                                                   \
      GTEST_FAIL() << oracle_file() << " is missing: run through ctest (the oracle_torchao_fake_quant fixture)"; \
  } while (0)

struct Case {
  const char* name;
  const char* format;
  int64_t group;
  bool symmetric;
  bool fp16_scales;
};

constexpr Case kWeightCases[] = {
    {"int4_sym_g32", "int4", 32, true, false},         {"int4_sym_g128", "int4", 128, true, false},
    {"int2_sym_g32", "int2", 32, true, false},         {"int3_sym_g64", "int3", 64, true, false},
    {"int8_sym_row", "int8", -1, true, false},         {"int8_sym_g64", "int8", 64, true, false},
    {"int4_asym_g32", "int4", 32, false, false},       {"int4_asym_g128", "int4", 128, false, false},
    {"int8_asym_g32", "int8", 32, false, false},       {"int4_sym_g32_fp16", "int4", 32, true, true},
    {"int8_sym_row_fp16", "int8", -1, true, true},     {"int2_sym_g64_fp16", "int2", 64, true, true},
    {"int4_asym_g32_fp16", "int4", 32, false, true},   {"int4_asym_g64_fp16", "int4", 64, false, true},
};

// qtune's gradient: exactly the upstream gradient where torchao's is non-zero, zero where torchao's is zero; and
// torchao's within an ulp of it.
void expect_straight_through(const at::Tensor& qtune_grad, const at::Tensor& upstream, const at::Tensor& torchao_grad) {
  const auto passes = torchao_grad != 0;
  EXPECT_TRUE(qtune::test::bitwise_equal(qtune_grad, at::where(passes, upstream, at::zeros_like(upstream))));
  EXPECT_TRUE(at::allclose(torchao_grad, qtune_grad, /*rtol=*/2.5e-7, /*atol=*/0));
}

TEST(OracleTorchaoFakeQuant, WeightsEqualTorchaoForwardAndStraightThroughBackward) {
  REQUIRE_TORCHAO_ORACLE();
  auto file = qtune::io::SafetensorsFile::open(oracle_file());
  int64_t clipped = 0;
  for (const auto& c : kWeightCases) {
    SCOPED_TRACE(c.name);
    const std::string n = c.name;
    auto spec = qtune::quant::parse_fake_quant(c.format, c.group, c.symmetric, "test");
    spec.fp16_scales = c.fp16_scales;
    const auto w = file->tensor(n + ".input").clone().set_requires_grad(true);
    const auto y = qtune::autograd::fake_quantize(w, spec);
    EXPECT_TRUE(qtune::test::bitwise_equal(y.detach(), file->tensor(n + ".output"))) << "forward";
    y.backward(file->tensor(n + ".grad_output"));
    expect_straight_through(w.grad(), file->tensor(n + ".grad_output"), file->tensor(n + ".grad_input"));
    // The mask qtune computes is where torchao's gradient passes.
    const auto q = qtune::quant::fake_quantize_weight(w.detach(), spec);
    ASSERT_TRUE(q.inside.defined());
    EXPECT_TRUE(at::equal(q.inside, file->tensor(n + ".grad_input") != 0));
    clipped += q.inside.logical_not().sum().item<int64_t>();
  }
  EXPECT_GT(clipped, 0) << "no case clips: the zero-gradient side of the estimator went untested";
}

// The *_fp16 cases above take an fp32 reciprocal of the fp16 scales. torchao's own fp16 path (IntxFakeQuantizer with
// scale_precision=torch.float16) takes it in fp16, which overflows below 2^-16: it turns an all-zero group into NaN,
// where qtune's deployed zeros stay zeros and a group of tiny weights keeps finite codes.
TEST(OracleTorchaoFakeQuant, Fp16ScalesTakeAnFp32ReciprocalWhereTorchaosFp16OneOverflows) {
  REQUIRE_TORCHAO_ORACLE();
  auto file = qtune::io::SafetensorsFile::open(oracle_file());
  EXPECT_EQ(file->tensor("intx_fp16_nan").item<float>(), 1.0f) << "torchao's fp16 reciprocal no longer overflows";
  const auto spec = qtune::quant::parse_fake_quant("int4", 32, true, "test");
  ASSERT_TRUE(spec.fp16_scales);
  auto w = at::zeros({3, 64}, at::kFloat);
  w[1].uniform_(-1e-6, 1e-6);
  const auto q = qtune::quant::fake_quantize_weight(w, spec);
  EXPECT_TRUE(at::equal(q.values[0], w[0]));
  EXPECT_TRUE(q.values.isfinite().all().item<bool>());
  EXPECT_GT(q.values[1].abs().max().item<float>(), 0.0f) << "tiny weights rounded to nothing";
}

TEST(OracleTorchaoFakeQuant, Int8TokensEqualTorchaoPerTokenAsymmetric) {
  REQUIRE_TORCHAO_ORACLE();
  auto file = qtune::io::SafetensorsFile::open(oracle_file());
  const auto x = file->tensor("tokens_int8.input").clone().set_requires_grad(true);
  const auto y = qtune::autograd::fake_quantize_tokens_int8(x);
  EXPECT_TRUE(qtune::test::bitwise_equal(y.detach(), file->tensor("tokens_int8.output")));
  y.backward(file->tensor("tokens_int8.grad_output"));
  expect_straight_through(x.grad(), file->tensor("tokens_int8.grad_output"), file->tensor("tokens_int8.grad_input"));
}

}  // namespace
