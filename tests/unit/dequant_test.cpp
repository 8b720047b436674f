// The 4-bit dequantize kernels (CPU, and CUDA where a GPU is present) against a plain reference kept here:
// equal bit for bit for every output dtype, block size, plain and double-quantized absmax, odd sizes.
#include "qtune/kernels/dequant.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "test_util.h"

namespace {

using qtune::quant::Format4;
using qtune::quant::Quant4State;

Quant4State random_state(std::vector<int64_t> shape, int64_t blocksize, Format4 format, bool nested, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return qtune::quant::random_quant4_state(std::move(shape), blocksize, format, nested, gen);
}

// The plain reference: element i is code[nibble i] * absmax[i / blocksize] in fp32, rounded once.
at::Tensor reference(const Quant4State& s, at::ScalarType dtype) {
  const int64_t n = s.numel();
  const auto* packed = s.packed.data_ptr<uint8_t>();
  const auto* code = s.code.data_ptr<float>();
  std::vector<float> values(n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t block = i / s.blocksize;
    float scale;
    if (s.nested) {
      float decoded = s.nested->map.data_ptr<float>()[s.nested->codes.data_ptr<uint8_t>()[block]];
      decoded = decoded * s.nested->absmax.data_ptr<float>()[block / s.nested->blocksize];
      scale = decoded + s.nested->offset;
    } else {
      scale = s.absmax.data_ptr<float>()[block];
    }
    const uint8_t byte = packed[i / 2];
    const uint8_t q = (i % 2 == 0) ? (byte >> 4) : (byte & 15);
    values[i] = code[q] * scale;
  }
  return at::tensor(values).to(dtype).view(s.shape);
}

struct Case {
  std::vector<int64_t> shape;
  int64_t blocksize;
  Format4 format;
  bool nested;
};

std::vector<Case> cases() {
  return {{{64, 96}, 64, Format4::NF4, false},   {{64, 96}, 64, Format4::NF4, true},
          {{33, 77}, 32, Format4::FP4, true},    {{4099}, 128, Format4::NF4, true},
          {{3, 5000}, 4096, Format4::FP4, false}, {{1}, 64, Format4::NF4, false},
          {{300, 700}, 256, Format4::NF4, true}};
}

TEST(Dequant4bit, CpuEqualsReferenceBitForBit) {
  uint64_t seed = 1;
  for (const auto& c : cases()) {
    auto state = random_state(c.shape, c.blocksize, c.format, c.nested, seed++);
    for (auto dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
      SCOPED_TRACE(::testing::Message() << "numel " << state.numel() << " block " << c.blocksize << " nested "
                                        << c.nested << " dtype " << c10::toString(dtype));
      auto out = qtune::kernels::dequantize_4bit(state, dtype);
      EXPECT_EQ(out.sizes(), at::IntArrayRef(c.shape));
      EXPECT_TRUE(qtune::test::bitwise_equal(out, reference(state, dtype)));
    }
  }
}

TEST(Dequant4bit, ThreadCountDoesNotChangeTheResult) {
  auto state = random_state({512, 1024}, 64, Format4::NF4, true, 9);
  const int before = at::get_num_threads();
  at::set_num_threads(1);
  auto one = qtune::kernels::dequantize_4bit(state, at::kFloat);
  at::set_num_threads(2);
  auto two = qtune::kernels::dequantize_4bit(state, at::kFloat);
  at::set_num_threads(before);
  EXPECT_TRUE(qtune::test::bitwise_equal(one, two));
}

TEST(Dequant4bit, CudaEqualsCpuBitForBit) {
  if (!qtune::kernels::cuda_kernels_built()) GTEST_SKIP() << "built with QTUNE_CUDA=OFF";
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine: the CUDA kernel runs in scripts/gpu_check.sh";
  uint64_t seed = 100;
  for (const auto& c : cases()) {
    auto cpu = random_state(c.shape, c.blocksize, c.format, c.nested, seed++);
    auto gpu = cpu.to(at::kCUDA);
    for (auto dtype : {at::kFloat, at::kBFloat16, at::kHalf})
      EXPECT_TRUE(qtune::test::bitwise_equal(qtune::kernels::dequantize_4bit(gpu, dtype), qtune::kernels::dequantize_4bit(cpu, dtype)))
          << "numel " << cpu.numel() << " dtype " << c10::toString(dtype);
  }
}

TEST(Dequant4bit, InconsistentStateIsAClearError) {
  auto state = random_state({64, 64}, 64, Format4::NF4, false, 3);
  auto bad_block = state;
  bad_block.blocksize = 48;
  EXPECT_NE(qtune::test::error_of([&] { qtune::kernels::dequantize_4bit(bad_block, at::kFloat); })
                .find("blocksize 48 must be a power of two from 32 to 4096"),
            std::string::npos);
  auto short_absmax = state;
  short_absmax.absmax = state.absmax.narrow(0, 0, 10);
  const auto msg = qtune::test::error_of([&] { qtune::kernels::dequantize_4bit(short_absmax, at::kFloat); });
  EXPECT_NE(msg.find("absmax must hold 64 values for 4096 elements, got 10"), std::string::npos) << msg;
  EXPECT_NE(qtune::test::error_of([&] { qtune::kernels::dequantize_4bit(state, at::kInt); }).find("fp32, bf16 or fp16"),
            std::string::npos);
}

}  // namespace
