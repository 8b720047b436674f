// Properties of the 4-bit quantizer that hold whatever bitsandbytes does: every code maps to itself, the
// round-trip error is bounded by half the largest code gap times the block absmax, storage cost, errors.
#include "qtune/quant/nf4.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "qtune/kernels/dequant.h"
#include "test_util.h"

namespace {

using namespace qtune;

TEST(Nf4, EveryCodeMapsToItself) {
  for (auto format : {quant::Format4::NF4, quant::Format4::FP4}) {
    const auto& book = quant::codebook(format);
    // One block of 64 holding each code value 4 times, scaled by 1 (absmax = 1 from the +-1 codes).
    std::vector<float> values;
    for (int rep = 0; rep < 4; ++rep) values.insert(values.end(), book.begin(), book.end());
    auto x = at::tensor(values);
    auto state = quant::quantize_4bit(x, {format, 64, false});
    auto y = kernels::dequantize_4bit(state, at::kFloat);
    EXPECT_TRUE(at::equal(x.abs(), y.abs())) << (format == quant::Format4::NF4 ? "nf4" : "fp4");
  }
}

TEST(Nf4, RoundTripErrorWithinHalfTheLargestGap) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(4);
  auto x = at::randn({256, 384}, gen, at::kFloat);
  for (auto format : {quant::Format4::NF4, quant::Format4::FP4})
    for (int64_t bs : {32, 64, 256, 4096})
      for (bool dq : {false, true}) {
        auto state = quant::quantize_4bit(x, {format, bs, dq});
        auto y = kernels::dequantize_4bit(state, at::kFloat);
        auto sorted = std::get<0>(state.code.sort());
        const double max_gap = (sorted.narrow(0, 1, 15) - sorted.narrow(0, 0, 15)).max().item<double>();
        auto blocks_abs = x.reshape({-1, bs}).abs();
        auto absmax = std::get<0>(blocks_abs.max(1, true));
        auto err = (x - y).reshape({-1, bs}).abs();
        // With double quantization the block is scaled by the decoded absmax a': |x - c a'| <= a gap/2 + |a - a'|.
        auto absmax_error = at::zeros_like(absmax);
        if (dq) {
          const auto& n = *state.nested;
          auto decoded = n.map.index({n.codes.to(at::kLong)}) * n.absmax.repeat_interleave(n.blocksize).narrow(0, 0, n.codes.numel()) + n.offset;
          absmax_error = (decoded.view({-1, 1}) - absmax).abs();
        }
        EXPECT_TRUE((err <= absmax * (max_gap / 2) + absmax_error + 1e-6).all().item<bool>())
            << "block " << bs << " dq " << dq << " worst ratio " << (err / absmax).max().item<double>();
      }
}

TEST(Nf4, NF4IsMoreAccurateThanFP4OnGaussianWeights) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  auto x = at::randn({512, 512}, gen, at::kFloat);
  auto rmse = [&](quant::Format4 f) {
    auto y = kernels::dequantize_4bit(quant::quantize_4bit(x, {f, 64, true}), at::kFloat);
    return (x - y).pow(2).mean().sqrt().item<double>();
  };
  EXPECT_LT(rmse(quant::Format4::NF4), rmse(quant::Format4::FP4));
}

TEST(Nf4, BitsPerParameter) {
  auto x = at::randn({4096, 256});
  EXPECT_NEAR(quant::bits_per_parameter(quant::quantize_4bit(x, {quant::Format4::NF4, 64, true})), 4.127, 1e-3);
  EXPECT_NEAR(quant::bits_per_parameter(quant::quantize_4bit(x, {quant::Format4::NF4, 64, false})), 4.5, 1e-9);
}

TEST(Nf4, BadBlockSizeIsAClearError) {
  auto x = at::randn({64, 64});
  for (int64_t bs : {0, 16, 48, 8192}) {
    const auto msg = test::error_of([&] { quant::quantize_4bit(x, {quant::Format4::NF4, bs, true}); });
    EXPECT_NE(msg.find("block size " + std::to_string(bs) + " must be a power of two from 32 to 4096"), std::string::npos)
        << msg;
  }
  EXPECT_NE(test::error_of([&] { quant::quantize_4bit(at::ones({64}, at::kInt), {}); }).find("floating-point"),
            std::string::npos);
}

}  // namespace
