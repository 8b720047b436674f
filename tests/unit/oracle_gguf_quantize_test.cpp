// qtune's ggml block quantizers against ggml itself: the oracle fixture (tests/oracle/gguf_quantize.py) recorded the
// bytes ggml_quantize_chunk (libggml-base.so of llama-cpp-python) writes for rows of many kinds, with and without an
// importance matrix, and gguf-py's bytes where it can quantize; quantize_ggml must write ggml's bytes exactly.
// The GgufQuantize tests need no oracle: round-trip error bounds through dequantize_ggml, the errors, and thread-count
// independence.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "qtune/io/safetensors.h"
#include "qtune/quant/gguf_blocks.h"
#include "qtune/quant/gguf_quantize.h"
#include "test_util.h"

namespace {

using qtune::quant::GgmlType;

// Round-trip bounds on normal data (rms error / rms value) per type, with and without an importance matrix; the
// measured values are 2/3 to 3/4 of these (llama.cpp's test-quantize-fns.cpp keeps its thresholds at the top too).
struct RoundTripBound {
  GgmlType type;
  double rel_rmse;
};
constexpr RoundTripBound kRoundTripBounds[] = {
    {GgmlType::F32, 0.0},     {GgmlType::F16, 3e-4},    {GgmlType::BF16, 2.5e-3}, {GgmlType::Q8_0, 8e-3},
    {GgmlType::Q6_K, 2.5e-2}, {GgmlType::Q5_1, 5e-2},   {GgmlType::Q5_0, 6e-2},   {GgmlType::Q5_K, 5e-2},
    {GgmlType::Q4_1, 0.11},   {GgmlType::Q4_0, 0.12},   {GgmlType::Q4_K, 0.1},    {GgmlType::Q3_K, 0.2},
    {GgmlType::Q2_K, 0.4},
};

const std::set<std::string> kQuantizable = {"F32",  "F16",  "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
                                            "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"};

std::string oracle_file() { return qtune::test::oracle_dir() + "/gguf_quantize/gguf_quantize.safetensors"; }

#define REQUIRE_GGUF_QUANTIZE_ORACLE()                                                                          \
  do {                                                                                                          \
    if (!std::filesystem::exists(oracle_file()))                                                                \
      GTEST_FAIL() << oracle_file() << " is missing: run through ctest (the oracle_gguf_quantize fixture)";     \
  } while (0)

struct Case {
  std::string name;  // "Q4_K.256.imatrix"
  GgmlType type;
  at::Tensor input;     // float32 [rows, n]
  at::Tensor imatrix;   // float32 [n], or undefined
  at::Tensor expected;  // uint8 [rows, row bytes]: ggml's
};

// Every case with a NAME.ggml_type entry in the metadata.
std::vector<Case> cases(const qtune::io::SafetensorsFile& file) {
  std::vector<Case> out;
  const std::string suffix = ".ggml_type";
  const auto& meta = file.metadata();
  for (const auto& [key, value] : meta) {
    if (key.size() <= suffix.size() || key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const auto name = key.substr(0, key.size() - suffix.size());
    Case c{name, static_cast<GgmlType>(std::stoul(value)), file.tensor(meta.at(name + ".input")).contiguous(), {},
           file.tensor(name).contiguous()};
    if (const auto& im = meta.at(name + ".imatrix"); !im.empty()) c.imatrix = file.tensor(im).contiguous();
    out.push_back(std::move(c));
  }
  return out;
}

std::vector<std::string> row_kinds(const qtune::io::SafetensorsFile& file) {
  return nlohmann::json::parse(file.metadata().at("row_kinds")).get<std::vector<std::string>>();
}

// Byte-for-byte equality of [rows, row_bytes] uint8 tensors; on a mismatch the first differing row (and its kind),
// byte offset in the row, the block it falls in, and the two blocks' bytes.
::testing::AssertionResult same_bytes(const at::Tensor& actual, const at::Tensor& expected, GgmlType type,
                                      const std::vector<std::string>& kinds) {
  if (actual.scalar_type() != at::kByte || actual.sizes() != expected.sizes())
    return ::testing::AssertionFailure() << "got " << actual.scalar_type() << " " << actual.sizes() << ", expected "
                                         << expected.scalar_type() << " " << expected.sizes();
  const int64_t rows = expected.size(0), row_bytes = expected.size(1);
  const int64_t block_bytes = qtune::quant::ggml_type_info(type).block_bytes;
  const auto* a = actual.data_ptr<uint8_t>();
  const auto* e = expected.data_ptr<uint8_t>();
  int64_t bad_rows = 0, first = -1;
  for (int64_t i = 0; i < rows * row_bytes; ++i)
    if (a[i] != e[i]) {
      if (first < 0) first = i;
      ++bad_rows;
      i = (i / row_bytes + 1) * row_bytes - 1;  // next row
    }
  if (first < 0) return ::testing::AssertionSuccess();
  const int64_t row = first / row_bytes, offset = first % row_bytes, block = offset / block_bytes;
  std::ostringstream msg;
  msg << bad_rows << " of " << rows << " rows differ; first at row " << row << " ("
      << (row < static_cast<int64_t>(kinds.size()) ? kinds[row] : "?") << "), byte " << offset << " (block " << block
      << ", byte " << offset % block_bytes << " in it): got " << int{a[first]} << ", expected " << int{e[first]}
      << "\n  got      ";
  for (int64_t b = 0; b < block_bytes; ++b) msg << int{a[row * row_bytes + block * block_bytes + b]} << ' ';
  msg << "\n  expected ";
  for (int64_t b = 0; b < block_bytes; ++b) msg << int{e[row * row_bytes + block * block_bytes + b]} << ' ';
  return ::testing::AssertionFailure() << msg.str();
}

at::Tensor quantize(const Case& c) { return qtune::quant::quantize_ggml(c.type, c.input, c.imatrix); }

// The ggml cases of one variant ("ref" or "imatrix") each equal ggml's bytes; at least `min_cases` of them.
void expect_variant_equals_ggml(const std::string& variant, size_t min_cases) {
  auto file = qtune::io::SafetensorsFile::open(oracle_file());
  const auto kinds = row_kinds(*file);
  size_t n = 0;
  std::vector<std::string> failed;
  for (const auto& c : cases(*file)) {
    if (c.name.size() < variant.size() || c.name.compare(c.name.size() - variant.size(), variant.size(), variant)) continue;
    SCOPED_TRACE(c.name);
    ++n;
    const auto result = same_bytes(quantize(c), c.expected, c.type, kinds);
    EXPECT_TRUE(result);
    if (!result) failed.push_back(c.name);
  }
  EXPECT_GE(n, min_cases);
  std::string list;
  for (const auto& f : failed) list += " " + f;
  EXPECT_TRUE(failed.empty()) << failed.size() << " of " << n << " cases differ from ggml:" << list;
}

TEST(OracleGgufQuantize, CoversEveryQuantizableType) {
  REQUIRE_GGUF_QUANTIZE_ORACLE();
  auto file = qtune::io::SafetensorsFile::open(oracle_file());
  std::set<std::string> quantizable, covered_ref, covered_imatrix;
  for (uint32_t v = 0; v < 256; ++v)
    if (const auto* info = qtune::quant::ggml_type_info(v); info && qtune::quant::ggml_quantizable(info->type))
      quantizable.insert(info->name);
  EXPECT_EQ(quantizable, kQuantizable);
  for (const auto& c : cases(*file)) {
    const std::string type = qtune::quant::ggml_type_info(c.type).name;
    EXPECT_EQ(c.name.substr(0, c.name.find('.')), type) << c.name << " is named after another type";
    EXPECT_EQ(c.input.dim(), 2) << c.name;
    if (c.input.size(1) % 256 == 0) (c.imatrix.defined() ? covered_imatrix : covered_ref).insert(type);
  }
  EXPECT_EQ(covered_ref, kQuantizable);
  EXPECT_EQ(covered_imatrix, kQuantizable);
}

TEST(OracleGgufQuantize, BytesEqualGgmlWithoutImatrix) {
  REQUIRE_GGUF_QUANTIZE_ORACLE();
  expect_variant_equals_ggml(".ref", 34);
}

TEST(OracleGgufQuantize, BytesEqualGgmlWithImatrix) {
  REQUIRE_GGUF_QUANTIZE_ORACLE();
  expect_variant_equals_ggml(".imatrix", 34);
}

// gguf-py's numpy quantizers are a second reference for the legacy and plain types. The oracle lists the rows where
// gguf-py and ggml disagree (qtune follows ggml there; they are printed); on every other row qtune equals gguf-py too.
TEST(OracleGgufQuantize, BytesEqualGgufPyWhereItEqualsGgml) {
  REQUIRE_GGUF_QUANTIZE_ORACLE();
  auto file = qtune::io::SafetensorsFile::open(oracle_file());
  const auto kinds = row_kinds(*file);
  const auto& meta = file->metadata();
  size_t n = 0;
  for (const auto& c : cases(*file)) {
    if (c.imatrix.defined()) continue;
    const auto base = c.name.substr(0, c.name.size() - std::string(".ref").size());
    const auto agrees = meta.find(base + ".gguf_py.gguf_py_agrees");
    if (agrees == meta.end()) continue;
    SCOPED_TRACE(base + ".gguf_py");
    ++n;
    if (agrees->second != "yes")
      std::cout << "[ note     ] gguf-py and ggml disagree on " << base << ", " << agrees->second.substr(std::string("no: ").size())
                << " (qtune follows ggml)\n";
    const auto theirs = file->tensor(base + ".gguf_py").contiguous();
    const auto ours = quantize(c);
    std::set<std::string> listed;  // "no: rows a, b"
    if (agrees->second != "yes") {
      std::stringstream list(agrees->second.substr(std::string("no: rows ").size()));
      for (std::string kind; std::getline(list >> std::ws, kind, ',');) listed.insert(kind);
    }
    std::vector<int64_t> keep;
    std::vector<std::string> kept_kinds;
    for (int64_t r = 0; r < static_cast<int64_t>(kinds.size()); ++r) {
      if (!listed.count(kinds[r])) {
        keep.push_back(r);
        kept_kinds.push_back(kinds[r]);
      }
    }
    ASSERT_GT(keep.size(), kinds.size() / 2) << agrees->second;
    const auto rows = at::tensor(keep, at::kLong);
    EXPECT_TRUE(same_bytes(ours.index_select(0, rows), theirs.index_select(0, rows), c.type, kept_kinds));
  }
  EXPECT_GE(n, 24u);
}

// Rows split across threads land where one thread would put them: the 512-value inputs repeated to many rows,
// quantized with 4 threads.
TEST(OracleGgufQuantize, ParallelRowsEqualGgml) {
  REQUIRE_GGUF_QUANTIZE_ORACLE();
  auto file = qtune::io::SafetensorsFile::open(oracle_file());
  const auto kinds = row_kinds(*file);
  const int threads = at::get_num_threads();
  at::set_num_threads(4);
  for (const auto& c : cases(*file)) {
    if (c.input.size(1) != 512) continue;
    SCOPED_TRACE(c.name);
    const int64_t repeats = 64;
    const auto input = c.input.repeat({repeats, 1}).contiguous();
    const auto got = qtune::quant::quantize_ggml(c.type, input, c.imatrix);
    std::vector<std::string> many_kinds;
    for (int64_t r = 0; r < repeats; ++r) many_kinds.insert(many_kinds.end(), kinds.begin(), kinds.end());
    EXPECT_TRUE(same_bytes(got, c.expected.repeat({repeats, 1}), c.type, many_kinds));
  }
  at::set_num_threads(threads);
}

// The tensor form converts other float dtypes to float32 first: float64 copies of the inputs (exact) give the same bytes.
TEST(OracleGgufQuantize, Float64InputsEqualGgml) {
  REQUIRE_GGUF_QUANTIZE_ORACLE();
  auto file = qtune::io::SafetensorsFile::open(oracle_file());
  const auto kinds = row_kinds(*file);
  for (const auto& c : cases(*file)) {
    if (c.type != GgmlType::Q4_K && c.type != GgmlType::Q8_0) continue;
    SCOPED_TRACE(c.name);
    const auto im = c.imatrix.defined() ? c.imatrix.to(at::kDouble) : at::Tensor();
    EXPECT_TRUE(same_bytes(qtune::quant::quantize_ggml(c.type, c.input.to(at::kDouble), im), c.expected, c.type, kinds));
  }
}

// ---- no oracle ----

at::Tensor normal_rows(int64_t rows, int64_t n, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::normal(0.0, 0.02, {rows, n}, gen, at::kFloat);
}

double rel_rmse(GgmlType type, const at::Tensor& x, const at::Tensor& importance) {
  const auto q = qtune::quant::quantize_ggml(type, x, importance);
  const auto back = qtune::quant::dequantize_ggml(type, q.data_ptr<uint8_t>(), x.numel()).view(x.sizes());
  return ((back - x).pow(2).mean().sqrt() / x.pow(2).mean().sqrt()).item<double>();
}

TEST(GgufQuantize, RoundTripErrorWithinBounds) {
  const auto x = normal_rows(16, 512, 1);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(2);
  const auto importance = at::exp(at::normal(0.0, 1.0, {512}, gen, at::kFloat));
  for (const auto& b : kRoundTripBounds) {
    SCOPED_TRACE(qtune::quant::ggml_type_info(b.type).name);
    EXPECT_LE(rel_rmse(b.type, x, {}), b.rel_rmse);
    EXPECT_LE(rel_rmse(b.type, x, importance), b.rel_rmse);
  }
  EXPECT_EQ(std::size(kRoundTripBounds), kQuantizable.size());
}

// What the importance matrix is for: the imatrix-weighted error of the weighted quantizers is below the references'
// on columns of very unequal importance (K-quants and the legacy types that use it).
TEST(GgufQuantize, ImatrixLowersWeightedError) {
  const auto x = normal_rows(32, 512, 3);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(4);
  const auto importance = at::exp(at::normal(0.0, 2.0, {512}, gen, at::kFloat));
  for (const auto type : {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q2_K,
                          GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    SCOPED_TRACE(qtune::quant::ggml_type_info(type).name);
    auto weighted_error = [&](const at::Tensor& im) {
      const auto q = qtune::quant::quantize_ggml(type, x, im);
      const auto back = qtune::quant::dequantize_ggml(type, q.data_ptr<uint8_t>(), x.numel()).view(x.sizes());
      return ((back - x).pow(2) * importance).sum().item<double>();
    };
    EXPECT_LT(weighted_error(importance), weighted_error({}));
  }
}

TEST(GgufQuantize, Q8_0AndPlainTypesIgnoreTheImatrix) {
  const auto x = normal_rows(4, 256, 5);
  const auto importance = at::rand({256}) + 0.1;
  for (const auto type : {GgmlType::Q8_0, GgmlType::F16, GgmlType::BF16, GgmlType::F32}) {
    SCOPED_TRACE(qtune::quant::ggml_type_info(type).name);
    EXPECT_TRUE(qtune::test::bitwise_equal(qtune::quant::quantize_ggml(type, x, importance),
                                           qtune::quant::quantize_ggml(type, x)));
  }
  EXPECT_FALSE(qtune::quant::quantize_ggml(GgmlType::Q4_K, x, importance).equal(qtune::quant::quantize_ggml(GgmlType::Q4_K, x)));
}

TEST(GgufQuantize, ResultDoesNotDependOnThreadCount) {
  const auto x = normal_rows(300, 512, 6);  // several parallel chunks
  const auto importance = at::rand({512}) + 0.1;
  const int threads = at::get_num_threads();
  for (const auto type : {GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q4_0, GgmlType::F16}) {
    SCOPED_TRACE(qtune::quant::ggml_type_info(type).name);
    at::set_num_threads(1);
    const auto one = qtune::quant::quantize_ggml(type, x, importance);
    at::set_num_threads(4);
    const auto four = qtune::quant::quantize_ggml(type, x, importance);
    EXPECT_TRUE(qtune::test::bitwise_equal(four, one));
  }
  at::set_num_threads(threads);
}

TEST(GgufQuantize, PointerAndTensorFormsAgree) {
  const auto x = normal_rows(3, 512, 7);
  const auto im = at::rand({512}) + 0.1;
  const auto bytes = qtune::quant::quantize_ggml(GgmlType::Q5_K, x.data_ptr<float>(), 3, 512, im.data_ptr<float>());
  const auto tensor = qtune::quant::quantize_ggml(GgmlType::Q5_K, x, im);
  ASSERT_EQ(tensor.sizes(), (at::IntArrayRef{3, 176 * 2}));
  ASSERT_EQ(bytes.size(), static_cast<size_t>(tensor.numel()));
  EXPECT_EQ(std::memcmp(bytes.data(), tensor.data_ptr<uint8_t>(), bytes.size()), 0);
  EXPECT_TRUE(qtune::quant::quantize_ggml(GgmlType::Q4_K, nullptr, 0, 256).empty());
  EXPECT_EQ(qtune::quant::quantize_ggml(GgmlType::Q4_K, at::zeros({0, 256})).sizes(), (at::IntArrayRef{0, 144}));
}

TEST(GgufQuantize, BadRowLengthIsAnError) {
  const std::vector<float> x(600, 0.5f);
  auto message = qtune::test::error_of([&] { qtune::quant::quantize_ggml(GgmlType::Q4_K, x.data(), 2, 300); });
  EXPECT_NE(message.find("Q4_K"), std::string::npos) << message;
  EXPECT_NE(message.find("256"), std::string::npos) << message;
  EXPECT_NE(message.find("300"), std::string::npos) << message;
  message = qtune::test::error_of([&] { qtune::quant::quantize_ggml(GgmlType::Q8_0, x.data(), 1, 33); });
  EXPECT_NE(message.find("Q8_0"), std::string::npos) << message;
  EXPECT_NE(message.find("33"), std::string::npos) << message;
  message = qtune::test::error_of([&] { qtune::quant::quantize_ggml(GgmlType::Q6_K, at::zeros({2, 100})); });
  EXPECT_NE(message.find("Q6_K"), std::string::npos) << message;
}

TEST(GgufQuantize, UnquantizableTypeIsAnError) {
  const std::vector<float> x(256, 0.5f);
  for (const auto type : {GgmlType::Q8_K, GgmlType::Q8_1, GgmlType::I32, GgmlType::F64}) {
    const std::string name = qtune::quant::ggml_type_info(type).name;
    SCOPED_TRACE(name);
    EXPECT_FALSE(qtune::quant::ggml_quantizable(type));
    const auto message = qtune::test::error_of([&] { qtune::quant::quantize_ggml(type, x.data(), 1, 256); });
    EXPECT_NE(message.find(name), std::string::npos) << message;
    EXPECT_NE(message.find("Q4_K"), std::string::npos) << message;  // lists what it can do
  }
  EXPECT_TRUE(qtune::quant::ggml_quantizable(GgmlType::Q4_K));
}

TEST(GgufQuantize, BadTensorArgumentsAreErrors) {
  const auto x = at::zeros({2, 256});
  auto message = qtune::test::error_of([&] { qtune::quant::quantize_ggml(GgmlType::Q4_K, at::zeros({256})); });
  EXPECT_NE(message.find("[rows, row_elems]"), std::string::npos) << message;
  message = qtune::test::error_of([&] { qtune::quant::quantize_ggml(GgmlType::Q4_K, x.to(at::kInt)); });
  EXPECT_NE(message.find("floating"), std::string::npos) << message;
  message = qtune::test::error_of([&] { qtune::quant::quantize_ggml(GgmlType::Q4_K, x, at::ones({128})); });
  EXPECT_NE(message.find("[256]"), std::string::npos) << message;
  auto negative = at::ones({256});
  negative[7] = -1.0;
  message = qtune::test::error_of([&] { qtune::quant::quantize_ggml(GgmlType::Q4_K, x, negative); });
  EXPECT_NE(message.find("column 7"), std::string::npos) << message;
  auto nan = at::ones({256});
  nan[3] = std::nan("");
  message = qtune::test::error_of([&] { qtune::quant::quantize_ggml(GgmlType::Q4_K, x, nan); });
  EXPECT_NE(message.find("column 3"), std::string::npos) << message;
}

}  // namespace
