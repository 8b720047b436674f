// The kept GGUF weight (quant/ggml_weight.h) and its kernels (kernels/dequant_ggml.h) against dequantize_ggml, the
// reference that equals gguf-py bit for bit (OracleGgufBlocks): for every block type, random blocks with finite f16
// scales give the reference's fp32 values exactly, and its values rounded once in bf16 and fp16; the AVX2 and generic
// CPU builds agree, and so does the GPU where there is one.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "qtune/kernels/dequant.h"  // cuda_kernels_built
#include "qtune/kernels/dequant_ggml.h"
#include "qtune/quant/ggml_block_layout.h"
#include "qtune/quant/ggml_weight.h"
#include "qtune/quant/gguf_blocks.h"
#include "test_util.h"

namespace qtune::quant {
namespace {

const std::vector<GgmlType> kBlockTypes = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                                           GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K,
                                           GgmlType::Q5_K, GgmlType::Q6_K};

std::string name_of(GgmlType t) { return ggml_type_info(t).name; }

// Random blocks of `type`, `rows` x `blocks_per_row` blocks, and the reference's fp32 values for them.
struct Case {
  GgmlType type;
  int64_t rows, cols;
  at::Tensor blocks, expected;
};

Case make_case(GgmlType type, int64_t rows, int64_t blocks_per_row, uint64_t seed, double max_scale = 1.0) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t cols = blocks_per_row * ggml_type_info(type).block_elems;
  auto blocks = random_ggml_blocks(type, rows, cols, gen, max_scale);
  auto expected = dequantize_ggml(type, blocks.data_ptr<uint8_t>(), rows * cols).view({rows, cols});
  return {type, rows, cols, blocks, expected};
}

// Runs `f` with QTUNE_CPU_KERNELS set to `choice` ("" unsets it), then restores the environment.
template <typename F>
void with_cpu_kernels(const char* choice, F&& f) {
  const char* old = std::getenv("QTUNE_CPU_KERNELS");
  const std::string saved = old ? old : "";
  if (*choice) ::setenv("QTUNE_CPU_KERNELS", choice, 1);
  else ::unsetenv("QTUNE_CPU_KERNELS");
  f();
  if (old) ::setenv("QTUNE_CPU_KERNELS", saved.c_str(), 1);
  else ::unsetenv("QTUNE_CPU_KERNELS");
}

TEST(GgmlBlockLayout, SizesMatchTheTypeTable) {
  int seen = 0;
  for (auto type : kBlockTypes) {
    const bool known = layout::with_layout(type, [&](auto block) {
      using B = decltype(block);
      const auto& info = ggml_type_info(type);
      EXPECT_EQ(B::kType, type);
      EXPECT_EQ(B::kValues, info.block_elems) << info.name;
      EXPECT_EQ(B::kBytes, info.block_bytes) << info.name;
      EXPECT_EQ(B::kPlanes * B::kLanes, B::kValues) << info.name;
      EXPECT_EQ(B::kValues % B::kGroup, 0) << info.name;
      ++seen;
    });
    EXPECT_TRUE(known) << name_of(type);
    EXPECT_TRUE(ggml_weight_supports(type)) << name_of(type);
  }
  EXPECT_EQ(seen, 10);
  for (auto plain : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_K}) EXPECT_FALSE(ggml_weight_supports(plain));
}

TEST(GgmlBlockLayout, HalfScalesWidenExactlyAndKeepNaNPayloads) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float mine = layout::half_to_float(static_cast<uint16_t>(h));
    if ((h & 0x7C00) == 0x7C00) {
      uint32_t bits;
      std::memcpy(&bits, &mine, 4);
      EXPECT_EQ(bits, ((h & 0x8000u) << 16) | 0x7F800000u | ((h & 0x3FFu) << 13)) << std::hex << h;
    } else {
      const float c10 = static_cast<float>(c10::Half(static_cast<uint16_t>(h), c10::Half::from_bits()));
      ASSERT_TRUE(std::memcmp(&mine, &c10, 4) == 0) << std::hex << h << ": " << mine << " vs " << c10;
    }
  }
}

TEST(GgmlWeight, CpuDequantEqualsDequantizeGgmlBitForBitAndItsRoundingInBf16AndFp16) {
  uint64_t seed = 1;
  for (auto type : kBlockTypes) {
    // One block, a few rows of several, and enough rows that the row loop is split across threads.
    for (auto [rows, blocks] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {5, 3}, {300, 2}}) {
      const auto c = make_case(type, rows, blocks, seed++);
      GgmlWeight w(type, c.blocks, c.cols);
      for (const char* kernels : {"", "generic"}) {
        with_cpu_kernels(kernels, [&] {
          const auto where = name_of(type) + " " + std::to_string(rows) + "x" + std::to_string(c.cols) + " " +
                             (*kernels ? kernels : "default");
          EXPECT_TRUE(test::bitwise_equal(w.dequantize(at::kFloat), c.expected)) << where;
          EXPECT_TRUE(test::bitwise_equal(w.dequantize(at::kBFloat16), c.expected.to(at::kBFloat16))) << where;
          EXPECT_TRUE(test::bitwise_equal(w.dequantize(at::kHalf), c.expected.to(at::kHalf))) << where;
        });
      }
    }
  }
}

TEST(GgmlWeight, SmallScalesRoundLikeTheReferenceToo) {
  // Weight-sized values (scales near 1e-3): the bf16/fp16 roundings happen at realistic magnitudes, fp16 subnormals
  // included.
  for (auto type : kBlockTypes) {
    const auto c = make_case(type, 17, 4, 100 + static_cast<uint64_t>(type), 1e-3);
    GgmlWeight w(type, c.blocks, c.cols);
    EXPECT_TRUE(test::bitwise_equal(w.dequantize(at::kFloat), c.expected)) << name_of(type);
    EXPECT_TRUE(test::bitwise_equal(w.dequantize(at::kBFloat16), c.expected.to(at::kBFloat16))) << name_of(type);
    EXPECT_TRUE(test::bitwise_equal(w.dequantize(at::kHalf), c.expected.to(at::kHalf))) << name_of(type);
  }
}

TEST(GgmlWeight, ReportsItsFormatShapeAndStoredBytes) {
  const auto c = make_case(GgmlType::Q4_1, 6, 3, 9);
  GgmlWeight w(GgmlType::Q4_1, c.blocks, c.cols);
  EXPECT_EQ(w.format(), "gguf-q4_1");
  EXPECT_EQ(w.out_features(), 6);
  EXPECT_EQ(w.in_features(), 96);
  EXPECT_EQ(w.storage_bytes(), 6 * 3 * 20);
  EXPECT_DOUBLE_EQ(w.bits_per_parameter(), 5.0);  // 20 bytes per 32 values
  EXPECT_EQ(GgmlWeight(GgmlType::Q6_K, make_case(GgmlType::Q6_K, 1, 1, 3).blocks, 256).format(), "gguf-q6_k");
  w.to(at::kCPU);
  EXPECT_TRUE(w.device().is_cpu());
}

TEST(GgmlWeight, WrongTypesAndShapesAreNamed) {
  const auto c = make_case(GgmlType::Q8_0, 2, 2, 4);
  auto msg = test::error_of([&] { GgmlWeight(GgmlType::F16, at::zeros({2, 128}, at::kByte), 64); });
  EXPECT_NE(msg.find("got F16"), std::string::npos) << msg;
  msg = test::error_of([&] { GgmlWeight(GgmlType::Q8_0, c.blocks, 32); });
  EXPECT_NE(msg.find("Q8_0 weight of 32 inputs must be uint8 [out_features, 34], got Byte [2, 68]"), std::string::npos)
      << msg;
  msg = test::error_of([&] { GgmlWeight(GgmlType::Q8_0, c.blocks, 60); });
  EXPECT_NE(msg.find("blocks of 32, got 60 values"), std::string::npos) << msg;
  msg = test::error_of([&] { kernels::dequantize_ggml_rows(GgmlType::Q8_0, c.blocks, 64, at::kDouble); });
  EXPECT_NE(msg.find("output dtype must be fp32, bf16 or fp16"), std::string::npos) << msg;
}

TEST(GgmlWeight, CudaDequantEqualsTheCpuBitForBit) {
  if (!kernels::cuda_kernels_built()) GTEST_SKIP() << "built with QTUNE_CUDA=OFF";
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine: the CUDA kernel runs in scripts/gpu_check.sh";
  uint64_t seed = 50;
  for (auto type : kBlockTypes) {
    // Rows of one block, and rows wider than a CUDA block's 256 threads (each thread strides over several values).
    for (auto [rows, blocks] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 3}, {130, 40}}) {
      for (double max_scale : {1.0, 1e-3}) {
        const auto c = make_case(type, rows, blocks, seed++, max_scale);
        GgmlWeight cpu(type, c.blocks, c.cols), gpu(type, c.blocks, c.cols);
        gpu.to(at::Device(at::kCUDA, 0));
        ASSERT_TRUE(gpu.device().is_cuda());
        for (auto dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
          const auto out = gpu.dequantize(dtype);
          EXPECT_TRUE(out.is_cuda());
          EXPECT_TRUE(test::bitwise_equal(out, cpu.dequantize(dtype)))
              << name_of(type) << " " << rows << "x" << c.cols << " " << c10::toString(dtype) << " scale " << max_scale;
        }
      }
    }
  }
}

}  // namespace
}  // namespace qtune::quant
