// The int8 row-wise dequantize kernels (CPU, and CUDA where a GPU is present) against a plain reference kept
// here: equal bit for bit for every output dtype and odd shapes; bad states and weights are errors naming what is
// wrong. Agreement with bitsandbytes itself is checked in oracle_bnb_int8_test.cpp.
#include "qtune/kernels/dequant_int8.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <cstring>

#include "qtune/kernels/dequant.h"  // cuda_kernels_built
#include "test_util.h"

namespace {

using qtune::quant::Int8State;

// Random but valid state over the whole int8 range (bitsandbytes writes -127..127; -128 must work too), with
// a zero row and a large row absmax among the random ones.
Int8State random_state(int64_t rows, int64_t cols, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  Int8State s;
  s.codes = at::randint(-128, 128, {rows, cols}, gen, at::kChar);
  s.row_absmax = at::rand({rows}, gen, at::kFloat) * 3 + 1e-3;
  if (rows > 1) s.row_absmax[0] = 0.0f;
  if (rows > 2) s.row_absmax[rows - 1] = 6.5e4f;
  return s;
}

// The plain reference: (fp32(code) * absmax) * fp32(1/127), as bitsandbytes' int8_vectorwise_dequant computes
// it (backends/default/ops.py), then rounded once by ATen's conversion.
at::Tensor reference(const Int8State& s, at::ScalarType dtype) {
  constexpr float kBnbInv127 = 7.874015718698502e-3f;
  const int64_t rows = s.codes.size(0), cols = s.codes.size(1);
  const auto* codes = s.codes.data_ptr<int8_t>();
  const auto* absmax = s.row_absmax.data_ptr<float>();
  std::vector<float> values(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      float v = static_cast<float>(codes[r * cols + c]) * absmax[r];
      v = v * kBnbInv127;
      values[r * cols + c] = v;
    }
  return at::tensor(values).to(dtype).view({rows, cols});
}

// Odd widths (not a multiple of any vector length), one row, one column, a tall thin matrix, an empty one.
const std::vector<std::pair<int64_t, int64_t>> kShapes = {{1, 1},   {3, 5},   {7, 4099}, {64, 96},
                                                           {300, 701}, {4100, 3}, {0, 8}};

TEST(DequantInt8, CpuEqualsReferenceBitForBit) {
  uint64_t seed = 1;
  for (const auto& [rows, cols] : kShapes) {
    auto state = random_state(rows, cols, seed++);
    for (auto dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
      SCOPED_TRACE(::testing::Message() << rows << "x" << cols << " " << c10::toString(dtype));
      auto out = qtune::kernels::dequantize_int8(state, dtype);
      EXPECT_EQ(out.sizes(), at::IntArrayRef({rows, cols}));
      EXPECT_EQ(out.scalar_type(), dtype);
      EXPECT_TRUE(qtune::test::bitwise_equal(out, reference(state, dtype)));
    }
  }
}

TEST(DequantInt8, ThreadCountDoesNotChangeTheResult) {
  auto state = random_state(513, 1031, 9);
  const int before = at::get_num_threads();
  at::set_num_threads(1);
  auto one = qtune::kernels::dequantize_int8(state, at::kBFloat16);
  at::set_num_threads(2);
  auto two = qtune::kernels::dequantize_int8(state, at::kBFloat16);
  at::set_num_threads(before);
  EXPECT_TRUE(qtune::test::bitwise_equal(one, two));
}

TEST(DequantInt8, CudaEqualsCpuBitForBit) {
  if (!qtune::kernels::cuda_kernels_built()) GTEST_SKIP() << "built with QTUNE_CUDA=OFF";
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine: the CUDA kernel runs in scripts/gpu_check.sh";
  uint64_t seed = 100;
  for (const auto& [rows, cols] : kShapes) {
    auto cpu = random_state(rows, cols, seed++);
    Int8State gpu{cpu.codes.cuda(), cpu.row_absmax.cuda()};
    for (auto dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
      auto out = qtune::kernels::dequantize_int8(gpu, dtype);
      EXPECT_TRUE(out.is_cuda());
      EXPECT_TRUE(qtune::test::bitwise_equal(out, qtune::kernels::dequantize_int8(cpu, dtype)))
          << rows << "x" << cols << " " << c10::toString(dtype);
    }
  }
}

TEST(DequantInt8, InconsistentStateIsAClearError) {
  using qtune::test::error_of;
  const auto state = random_state(6, 10, 3);
  auto message = [](Int8State s) { return error_of([&] { qtune::kernels::dequantize_int8(s, at::kFloat); }); };
  auto expect_has = [](const std::string& msg, const std::string& part) {
    EXPECT_NE(msg.find(part), std::string::npos) << "message: " << msg << "\nexpected to contain: " << part;
  };

  expect_has(message({state.codes.to(at::kByte), state.row_absmax}), "dequantize_int8: codes must be int8, got Byte");
  expect_has(message({state.codes.flatten(), state.row_absmax}), "codes must be 2-D [out, in], got shape [60]");
  expect_has(message({state.codes.t(), state.row_absmax.narrow(0, 0, 6)}), "codes must be contiguous");
  expect_has(message({state.codes, state.row_absmax.narrow(0, 0, 4)}),
             "row absmax must hold one value per row (6 rows), got shape [4]");
  expect_has(message({state.codes, state.row_absmax.view({6, 1})}), "got shape [6, 1]");
  expect_has(message({state.codes, state.row_absmax.to(at::kBFloat16)}), "row absmax must be fp32 (Float), got BFloat16");
  expect_has(message({at::Tensor(), state.row_absmax}), "missing int8 codes");
  expect_has(message({state.codes, at::Tensor()}), "missing row absmax");
  expect_has(error_of([&] { qtune::kernels::dequantize_int8(state, at::kInt); }), "fp32, bf16 or fp16, got Int");
}

// quantize_int8_rowwise is bit-checked against bitsandbytes in the oracle test; here, its contract on any input.
TEST(DequantInt8, QuantizeRoundTripIsWithinHalfAStep) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  auto weight = at::randn({37, 301}, gen, at::kFloat) * 0.05;
  weight[4].zero_();
  const auto state = qtune::quant::quantize_int8_rowwise(weight);
  state.validate("test");
  EXPECT_EQ(state.codes.abs().max().item<int>(), 127);
  EXPECT_EQ(state.codes[4].abs().max().item<int>(), 0);
  EXPECT_EQ(state.row_absmax[4].item<float>(), 0.0f);
  const auto back = qtune::kernels::dequantize_int8(state, at::kFloat);
  // Half a step is absmax / 254; the two fp32 roundings on each side add a few ulps.
  const auto bound = (state.row_absmax / 254.0 * (1 + 1e-5)).unsqueeze(1);
  EXPECT_TRUE(((back - weight).abs() <= bound).all().item<bool>());
}

TEST(DequantInt8, QuantizeRejectsBadWeightsNamingTheProblem) {
  using qtune::test::error_of;
  using qtune::quant::quantize_int8_rowwise;
  auto msg = error_of([] { quantize_int8_rowwise(at::zeros({2, 3, 4})); });
  EXPECT_NE(msg.find("quantize_int8_rowwise: weight must be 2-D [out, in], got shape [2, 3, 4]"), std::string::npos) << msg;
  msg = error_of([] { quantize_int8_rowwise(at::zeros({2, 3}, at::kInt)); });
  EXPECT_NE(msg.find("weight must be fp32, bf16 or fp16, got Int"), std::string::npos) << msg;
  auto weight = at::ones({4, 5});
  weight[2][3] = std::numeric_limits<float>::quiet_NaN();
  msg = error_of([&] { quantize_int8_rowwise(weight); });
  EXPECT_NE(msg.find("weight row 2 holds a non-finite value"), std::string::npos) << msg;
}

}  // namespace
