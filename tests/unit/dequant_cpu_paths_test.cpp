// The CPU dequantize kernels have a vectorised path chosen at run time (x86: SSSE3 for 4-bit, AVX2 for int8) and
// a portable one (other CPUs, or QTUNE_CPU_KERNELS=generic). The tests beside each kernel check whichever path
// this machine takes against a plain reference; here the two paths must agree bit for bit, so both stay covered.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#include "qtune/kernels/dequant.h"
#include "qtune/kernels/dequant_int8.h"
#include "test_util.h"

namespace {

// Sets QTUNE_CPU_KERNELS=generic for its lifetime.
struct GenericKernels {
  GenericKernels() { setenv("QTUNE_CPU_KERNELS", "generic", 1); }
  ~GenericKernels() { unsetenv("QTUNE_CPU_KERNELS"); }
};

qtune::quant::Quant4State random_4bit(std::vector<int64_t> shape, int64_t blocksize, bool nested, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto s = qtune::quant::random_quant4_state(std::move(shape), blocksize, qtune::quant::Format4::NF4, nested, gen);
  if (!nested) {
    // Spread over many binades, with a few exact zeros, so the table building meets every rounding case.
    s.absmax = at::exp(at::randn({s.blocks()}, gen, at::kFloat) * 8);
    s.absmax.slice(0, 0, s.blocks(), 7).zero_();
  }
  return s;
}

TEST(DequantCpuPaths, FourBitVectorisedEqualsPortable) {
  struct Case {
    std::vector<int64_t> shape;
    int64_t blocksize;
    bool nested;
  };
  // Partial last blocks with odd and even tails, the smallest and the largest block size.
  const std::vector<Case> cases = {{{64, 96}, 64, true},     {{33, 77}, 32, false}, {{4099}, 128, true},
                                   {{3, 5000}, 4096, false}, {{1}, 64, false},      {{300, 701}, 256, false}};
  uint64_t seed = 7;
  for (const auto& c : cases) {
    const auto state = random_4bit(c.shape, c.blocksize, c.nested, seed++);
    for (auto dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
      const auto fast = qtune::kernels::dequantize_4bit(state, dtype);
      at::Tensor portable;
      {
        GenericKernels generic;
        portable = qtune::kernels::dequantize_4bit(state, dtype);
      }
      EXPECT_TRUE(qtune::test::bitwise_equal(fast, portable)) << "numel " << state.numel() << " block " << c.blocksize << " "
                                                  << c10::toString(dtype);
    }
  }
}

TEST(DequantCpuPaths, Int8VectorisedEqualsPortable) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{5, 3}, {17, 1031}, {256, 64}}) {
    qtune::quant::Int8State state{at::randint(-128, 128, {rows, cols}, gen, at::kChar),
                                  at::exp(at::randn({rows}, gen, at::kFloat) * 8)};
    state.row_absmax[0] = 0.0f;
    for (auto dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
      const auto fast = qtune::kernels::dequantize_int8(state, dtype);
      at::Tensor portable;
      {
        GenericKernels generic;
        portable = qtune::kernels::dequantize_int8(state, dtype);
      }
      EXPECT_TRUE(qtune::test::bitwise_equal(fast, portable)) << rows << "x" << cols << " " << c10::toString(dtype);
    }
  }
}

}  // namespace
