// qtune's ggml block dequantization against gguf-py on the same bytes: the oracle fixture
// (tests/oracle/gguf_blocks.py) recorded gguf.quants.dequantize's float32 values for random blocks and for blocks
// gguf-py quantized itself; dequantize_ggml must reproduce them bit for bit. Also: the type table against gguf-py's
// GGML_QUANT_SIZES, and the errors for counts, types and type numbers qtune does not handle.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "qtune/io/safetensors.h"
#include "qtune/quant/gguf_blocks.h"
#include "test_util.h"

namespace {

using qtune::quant::GgmlType;

std::string oracle_file() { return qtune::test::oracle_dir() + "/gguf_blocks/gguf_blocks.safetensors"; }

#define REQUIRE_GGUF_BLOCKS_ORACLE()                                                                          \
  do {                                                                                                        \
    if (!std::filesystem::exists(oracle_file()))                                                              \
      GTEST_FAIL() << oracle_file() << " is missing: run through ctest (the oracle_gguf_blocks fixture)";     \
  } while (0)

struct Case {
  std::string name;  // "Q4_K.random"
  GgmlType type;
  at::Tensor raw, expected;
};

// Every tensor "NAME.raw", with its type number from the metadata "NAME.ggml_type".
std::vector<Case> cases(const qtune::io::SafetensorsFile& file) {
  std::vector<Case> out;
  const std::string suffix = ".raw";
  for (const auto& t : file.tensors()) {
    if (t.name.size() <= suffix.size() || t.name.compare(t.name.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    const auto name = t.name.substr(0, t.name.size() - suffix.size());
    const auto type = file.metadata().find(name + ".ggml_type");
    if (type == file.metadata().end()) {
      ADD_FAILURE() << name << ": no " << name << ".ggml_type in the metadata";
      continue;
    }
    out.push_back({name, static_cast<GgmlType>(std::stoul(type->second)), file.tensor(t.name).contiguous(),
                   file.tensor(name + ".expected").contiguous()});
  }
  return out;
}

// Every type number qtune's table knows (ggml's numbers are small; 256 leaves room).
std::vector<const qtune::quant::GgmlTypeInfo*> known_types() {
  std::vector<const qtune::quant::GgmlTypeInfo*> out;
  for (uint32_t n = 0; n < 256; ++n)
    if (const auto* info = qtune::quant::ggml_type_info(n)) out.push_back(info);
  return out;
}

TEST(OracleGgufBlocks, TypeTableEqualsGgufPy) {
  REQUIRE_GGUF_BLOCKS_ORACLE();
  auto file = qtune::io::SafetensorsFile::open(oracle_file());
  const auto sizes = nlohmann::json::parse(file->metadata().at("ggml_types"));  // {name: [number, elems, bytes]}
  const auto known = known_types();
  EXPECT_EQ(known.size(), 20u);  // every value of the header's enum
  for (const auto* info : known) {
    SCOPED_TRACE(info->name);
    ASSERT_TRUE(sizes.contains(info->name)) << "gguf-py has no type of this name";
    const auto& s = sizes.at(info->name);
    EXPECT_EQ(s[0].get<uint32_t>(), static_cast<uint32_t>(info->type));
    EXPECT_EQ(s[1].get<int64_t>(), info->block_elems);
    // gguf-py keeps Q8_1's old size (float d and s: 4 + 4 + 32); ggml-common.h's block_q8_1 holds two halves
    // (2 + 2 + 32), and that is what qtune follows. Q8_1 is an activation format, never in a model file.
    if (info->type == GgmlType::Q8_1)
      EXPECT_EQ(s[2].get<int64_t>(), 40) << "gguf-py changed its Q8_1 size: check qtune's 36 against it";
    else
      EXPECT_EQ(s[2].get<int64_t>(), info->block_bytes);
    EXPECT_EQ(&qtune::quant::ggml_type_info(info->type), info);
  }
}

TEST(OracleGgufBlocks, CoversEveryDequantizableType) {
  REQUIRE_GGUF_BLOCKS_ORACLE();
  auto file = qtune::io::SafetensorsFile::open(oracle_file());
  std::set<std::string> wanted, random, covered;
  for (const auto* info : known_types())
    if (info->dequantizable) wanted.insert(info->name);
  for (const auto& c : cases(*file)) {
    const std::string type_name = qtune::quant::ggml_type_info(c.type).name;
    EXPECT_EQ(c.name.substr(0, c.name.find('.')), type_name) << c.name << " is named after another type";
    covered.insert(type_name);
    if (c.name == type_name + ".random") random.insert(type_name);
  }
  EXPECT_EQ(covered, wanted);
  EXPECT_EQ(random, wanted);
  EXPECT_EQ(wanted, (std::set<std::string>{"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K",
                                           "Q3_K", "Q4_K", "Q5_K", "Q6_K"}));
}

TEST(OracleGgufBlocks, DequantizedValuesEqualGgufPy) {
  REQUIRE_GGUF_BLOCKS_ORACLE();
  auto file = qtune::io::SafetensorsFile::open(oracle_file());
  const auto all = cases(*file);
  EXPECT_GE(all.size(), 21u);
  for (const auto& c : all) {
    SCOPED_TRACE(c.name);
    const int64_t n = c.expected.numel();
    ASSERT_EQ(c.raw.scalar_type(), at::kByte);
    ASSERT_EQ(static_cast<uint64_t>(c.raw.numel()), qtune::quant::ggml_nbytes(c.type, n));
    EXPECT_TRUE(qtune::test::bitwise_equal(qtune::quant::dequantize_ggml(c.type, c.raw.data_ptr<uint8_t>(), n),
                                           c.expected));
  }
}

// Block ranges split across threads must land where one thread would put them: each case repeated enough times to
// need several chunks, dequantized with 4 threads.
TEST(OracleGgufBlocks, ParallelChunksEqualGgufPy) {
  REQUIRE_GGUF_BLOCKS_ORACLE();
  auto file = qtune::io::SafetensorsFile::open(oracle_file());
  const int threads = at::get_num_threads();
  at::set_num_threads(4);
  for (const auto& c : cases(*file)) {
    SCOPED_TRACE(c.name);
    const int64_t repeats = (int64_t{1} << 18) / c.expected.numel() + 1;
    const auto raw = c.raw.repeat({repeats}).contiguous();
    const auto expected = c.expected.repeat({repeats});
    EXPECT_TRUE(qtune::test::bitwise_equal(
        qtune::quant::dequantize_ggml(c.type, raw.data_ptr<uint8_t>(), expected.numel()), expected));
  }
  at::set_num_threads(threads);
}

TEST(OracleGgufBlocks, UnknownTypeNumberHasNoInfo) {
  // 4 and 5 were Q4_2 / Q4_3 (removed from ggml); 16 is IQ2_XXS, a ggml type qtune does not know.
  for (uint32_t n : {4u, 5u, 16u, 31u, 1000u}) EXPECT_EQ(qtune::quant::ggml_type_info(n), nullptr) << n;
  EXPECT_NE(qtune::quant::ggml_type_info(12u), nullptr);
  const auto message = qtune::test::error_of([] { qtune::quant::ggml_type_info(static_cast<GgmlType>(16)); });
  EXPECT_NE(message.find("16"), std::string::npos) << message;
}

TEST(OracleGgufBlocks, NbytesRejectsPartialBlocks) {
  EXPECT_EQ(qtune::quant::ggml_nbytes(GgmlType::Q4_K, 512), 288u);
  EXPECT_EQ(qtune::quant::ggml_nbytes(GgmlType::F16, 33), 66u);
  EXPECT_EQ(qtune::quant::ggml_nbytes(GgmlType::Q8_0, 0), 0u);
  auto message = qtune::test::error_of([] { qtune::quant::ggml_nbytes(GgmlType::Q4_K, 300); });
  EXPECT_NE(message.find("Q4_K"), std::string::npos) << message;
  EXPECT_NE(message.find("256"), std::string::npos) << message;
  EXPECT_NE(message.find("300"), std::string::npos) << message;
  message = qtune::test::error_of([] { qtune::quant::ggml_nbytes(GgmlType::Q8_0, 33); });
  EXPECT_NE(message.find("Q8_0"), std::string::npos) << message;
  // dequantize_ggml checks the count the same way, before reading any byte.
  message = qtune::test::error_of([] { qtune::quant::dequantize_ggml(GgmlType::Q6_K, nullptr, 100); });
  EXPECT_NE(message.find("Q6_K"), std::string::npos) << message;
}

TEST(OracleGgufBlocks, NonDequantizableTypeIsAnError) {
  const std::vector<uint8_t> bytes(256 * 4);  // enough for 256 values of any of them
  for (const auto type : {GgmlType::Q8_K, GgmlType::I32, GgmlType::Q8_1}) {
    const std::string name = qtune::quant::ggml_type_info(type).name;
    SCOPED_TRACE(name);
    EXPECT_FALSE(qtune::quant::ggml_type_info(type).dequantizable);
    const auto message = qtune::test::error_of([&] { qtune::quant::dequantize_ggml(type, bytes.data(), 256); });
    EXPECT_NE(message.find(name), std::string::npos) << message;
  }
}

}  // namespace
