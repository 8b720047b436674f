// qtune's int8 row-wise quantization against bitsandbytes on the same weights: the oracle fixture
// (tests/oracle/bnb_int8.py) recorded int8_vectorwise_quant's codes and row stats and int8_vectorwise_dequant's
// values; qtune must reproduce all of them bit for bit.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <set>

#include "qtune/io/safetensors.h"
#include "qtune/kernels/dequant_int8.h"
#include "qtune/quant/int8.h"
#include "test_util.h"

namespace {

std::string oracle_file() { return qtune::test::oracle_dir() + "/bnb_int8/int8.safetensors"; }

#define REQUIRE_BNB_INT8_ORACLE()                                                                       \
  do {                                                                                                  \
    if (!std::filesystem::exists(oracle_file()))                                                        \
      GTEST_FAIL() << oracle_file() << " is missing: run through ctest (the oracle_bnb_int8 fixture)";  \
  } while (0)

// Case names: every tensor "NAME.weight".
std::vector<std::string> case_names(const qtune::io::SafetensorsFile& file) {
  std::vector<std::string> names;
  const std::string suffix = ".weight";
  for (const auto& t : file.tensors())
    if (t.name.size() > suffix.size() && t.name.compare(t.name.size() - suffix.size(), suffix.size(), suffix) == 0)
      names.push_back(t.name.substr(0, t.name.size() - suffix.size()));
  return names;
}

TEST(OracleBnbInt8, CoversTheRequiredCases) {
  REQUIRE_BNB_INT8_ORACLE();
  auto file = qtune::io::SafetensorsFile::open(oracle_file());
  std::set<at::ScalarType> dtypes;
  bool zero_row = false, odd_width = false;
  for (const auto& name : case_names(*file)) {
    const auto weight = file->tensor(name + ".weight");
    dtypes.insert(weight.scalar_type());
    zero_row |= (file->tensor(name + ".row_stats") == 0).any().item<bool>();
    odd_width |= weight.size(1) % 2 != 0;
  }
  EXPECT_EQ(dtypes, (std::set<at::ScalarType>{at::kFloat, at::kBFloat16, at::kHalf}));
  EXPECT_TRUE(zero_row && odd_width);
}

TEST(OracleBnbInt8, CodesAndRowStatsEqualBitsandbytes) {
  REQUIRE_BNB_INT8_ORACLE();
  auto file = qtune::io::SafetensorsFile::open(oracle_file());
  for (const auto& name : case_names(*file)) {
    SCOPED_TRACE(name);
    const auto state = qtune::quant::quantize_int8_rowwise(file->tensor(name + ".weight"));
    EXPECT_TRUE(qtune::test::bitwise_equal(state.codes, file->tensor(name + ".codes"))) << "codes";
    EXPECT_TRUE(qtune::test::bitwise_equal(state.row_absmax, file->tensor(name + ".row_stats"))) << "row stats";
  }
}

TEST(OracleBnbInt8, DequantizedValuesEqualBitsandbytes) {
  REQUIRE_BNB_INT8_ORACLE();
  auto file = qtune::io::SafetensorsFile::open(oracle_file());
  for (const auto& name : case_names(*file)) {
    SCOPED_TRACE(name);
    // Dequantize bitsandbytes' own state, so this checks the dequantization alone.
    const qtune::quant::Int8State state{file->tensor(name + ".codes").contiguous(),
                                        file->tensor(name + ".row_stats").contiguous()};
    EXPECT_TRUE(qtune::test::bitwise_equal(qtune::kernels::dequantize_int8(state, at::kFloat), file->tensor(name + ".dequant_f32")));
    EXPECT_TRUE(qtune::test::bitwise_equal(qtune::kernels::dequantize_int8(state, at::kBFloat16), file->tensor(name + ".dequant_bf16")));
    EXPECT_TRUE(qtune::test::bitwise_equal(qtune::kernels::dequantize_int8(state, at::kHalf), file->tensor(name + ".dequant_f16")));
  }
}

}  // namespace
