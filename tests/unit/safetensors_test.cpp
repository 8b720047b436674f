// SafetensorsFile / write_safetensors / parse_safetensors_header: bit-exact round trips for every dtype
// the format holds, and one test per way a file can be malformed. Every error must name the file and
// what was expected; none may crash.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "qtune/io/safetensors.h"
#include "qtune/io/safetensors_header.h"
#include "test_util.h"

namespace qtune::io {
namespace {

namespace fs = std::filesystem;
using qtune::test::error_of;
using qtune::test::temp_dir;

::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "message \"" << text << "\" does not contain \"" << part << "\"";
}

// A safetensors file built by hand: the 8-byte little-endian length (the header's own unless `length`
// says otherwise), the header text, then `data`.
void write_raw(const std::string& path, const std::string& header, const std::string& data = "",
               std::optional<uint64_t> length = std::nullopt) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const uint64_t n = length.value_or(header.size());
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<std::string> dir_entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Same dtype, same shape, same bytes (NaN payloads and signed zeros included).
void expect_bit_identical(const at::Tensor& expected, const at::Tensor& actual, const std::string& name) {
  SCOPED_TRACE(name);
  ASSERT_EQ(actual.scalar_type(), expected.scalar_type());
  ASSERT_EQ(actual.sizes(), expected.sizes());
  ASSERT_EQ(actual.device(), at::Device(at::kCPU));
  const auto e = expected.contiguous();
  const auto a = actual.contiguous();
  const size_t nbytes = static_cast<size_t>(e.numel()) * e.element_size();
  if (nbytes > 0) {
    EXPECT_EQ(std::memcmp(e.data_ptr(), a.data_ptr(), nbytes), 0);
  }
}

// The error SafetensorsFile::open gives for `path`, checked to name the path.
std::string open_error(const std::string& path) {
  auto msg = error_of([&] { SafetensorsFile::open(path); });
  EXPECT_TRUE(Contains(msg, path));
  return msg;
}

NamedTensors all_dtypes() {
  at::manual_seed(0);
  // F32 from raw bits: a quiet NaN with a payload, -inf, -0.0, the smallest denormal, 1.0.
  const std::vector<int32_t> f32_bits = {0x7fc00001, static_cast<int32_t>(0xff800000u),
                                         static_cast<int32_t>(0x80000000u), 0x00000001, 0x3f800000};
  const auto special = at::tensor(at::ArrayRef<int32_t>(f32_bits)).view(at::kFloat);
  return {
      {"f32", at::randn({3, 5})},
      {"f32.special", special},
      {"f16", at::randint(-32768, 32768, {4, 2}, at::kShort).view(at::kHalf)},  // every bit pattern, NaNs too
      {"bf16", at::randint(-32768, 32768, {7}, at::kShort).view(at::kBFloat16)},
      {"i8", at::randint(-128, 128, {2, 3}, at::kChar)},
      {"u8", at::randint(0, 256, {5}, at::kByte)},
      {"i32", at::randint(std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max(), {3, 3}, at::kInt)},
      {"i64", at::tensor(at::ArrayRef<int64_t>({std::numeric_limits<int64_t>::min(), -1, 0, 1,
                                                std::numeric_limits<int64_t>::max()}))},
      {"empty.f32", at::empty({0, 4}, at::kFloat)},
      {"empty.i64", at::empty({3, 0}, at::kLong)},
      {"scalar.f32", at::scalar_tensor(-2.75, at::kFloat)},
      {"scalar.i64", at::scalar_tensor(int64_t{1} << 40, at::kLong)},
      {"f64", at::randn({2, 2}, at::kDouble)},
      {"i16", at::randint(-32768, 32768, {3}, at::kShort)},
      {"bool", at::randint(0, 2, {6}, at::kByte).to(at::kBool)},
  };
}

TEST(Safetensors, RoundTripIsBitIdenticalForEveryDtype) {
  const auto path = temp_dir() + "/all.safetensors";
  const auto tensors = all_dtypes();
  write_safetensors(path, tensors);

  auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file->path(), path);
  ASSERT_EQ(file->tensors().size(), tensors.size());
  EXPECT_TRUE(file->metadata().empty());
  const std::map<std::string, std::string> dtype_of = {
      {"f32", "F32"},       {"f32.special", "F32"}, {"f16", "F16"},      {"bf16", "BF16"},
      {"i8", "I8"},         {"u8", "U8"},           {"i32", "I32"},      {"i64", "I64"},
      {"empty.f32", "F32"}, {"empty.i64", "I64"},   {"scalar.f32", "F32"}, {"scalar.i64", "I64"},
      {"f64", "F64"},       {"i16", "I16"},         {"bool", "BOOL"}};
  for (const auto& [name, expected] : tensors) {
    const TensorInfo* info = file->find(name);
    ASSERT_NE(info, nullptr) << name;
    EXPECT_EQ(dtype_name(info->dtype), dtype_of.at(name)) << name;
    EXPECT_EQ(info->shape, expected.sizes().vec()) << name;
    EXPECT_EQ(info->numel(), expected.numel()) << name;
    EXPECT_EQ(info->nbytes(), static_cast<uint64_t>(expected.numel()) * expected.element_size()) << name;
    expect_bit_identical(expected, file->tensor(name), name);
  }
  EXPECT_EQ(file->tensor("scalar.f32").dim(), 0);
  EXPECT_EQ(file->tensor("scalar.f32").item<float>(), -2.75f);
  EXPECT_EQ(file->tensor("scalar.i64").item<int64_t>(), int64_t{1} << 40);
  EXPECT_EQ(file->tensor("empty.f32").numel(), 0);
  EXPECT_EQ(file->find("absent"), nullptr);
}

TEST(Safetensors, WritesNonContiguousTensorsAsTheirValues) {
  const auto path = temp_dir() + "/t.safetensors";
  const auto base = at::arange(12, at::kFloat).reshape({3, 4});
  write_safetensors(path, {{"t", base.t()}, {"column", base.select(1, 1)}});
  auto file = SafetensorsFile::open(path);
  EXPECT_TRUE(at::equal(file->tensor("t"), base.t().contiguous()));
  EXPECT_TRUE(at::equal(file->tensor("column"), base.select(1, 1).contiguous()));
}

TEST(Safetensors, TensorsOutliveTheFileObject) {
  const auto path = temp_dir() + "/t.safetensors";
  const auto w = at::randn({64, 32});
  write_safetensors(path, {{"w", w}});
  auto file = SafetensorsFile::open(path);
  at::Tensor t = file->tensor("w");
  file.reset();  // the mapping must stay alive as long as the tensor views it
  EXPECT_TRUE(at::equal(t, w));
  t.add_(1.0f);  // copy-on-write mapping: writable without touching the file
  EXPECT_TRUE(at::equal(SafetensorsFile::open(path)->tensor("w"), w));
}

TEST(Safetensors, MetadataRoundTrips) {
  const auto path = temp_dir() + "/m.safetensors";
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"step", "12"}, {"empty", ""}, {"unicode", "h\xc3\xa9llo \xe2\x9c\x93"}, {"quote", "a\"b\\c"}};
  write_safetensors(path, {{"w", at::ones({2})}}, metadata);
  auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file->metadata(), metadata);
  ASSERT_EQ(file->tensors().size(), 1u);  // __metadata__ is not a tensor
  EXPECT_EQ(file->tensors()[0].name, "w");
}

TEST(Safetensors, DataSectionStartsEightByteAligned) {
  const auto dir = temp_dir();
  for (int len = 1; len <= 9; ++len) {
    const auto path = dir + "/a" + std::to_string(len) + ".safetensors";
    write_safetensors(path, {{std::string(len, 'x'), at::ones({3}, at::kDouble)}}, {{"k", std::string(len, 'v')}});
    const auto bytes = read_all(path);
    ASSERT_GE(bytes.size(), 8u);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(bytes[i]);
    EXPECT_EQ(header_len % 8, 0u) << path;
    EXPECT_EQ(bytes.size(), 8 + header_len + 3 * sizeof(double)) << path;
    const auto header =
        parse_safetensors_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path);
    EXPECT_EQ(header.data_start % 8, 0u) << path;
    EXPECT_EQ(header.data_start, 8 + header_len);
    EXPECT_TRUE(at::equal(SafetensorsFile::open(path)->tensor(std::string(len, 'x')), at::ones({3}, at::kDouble)));
  }
}

TEST(Safetensors, ReadsMisalignedDataByCopying) {
  // A hand-made file whose header length is odd: the F32 data is not 4-byte aligned in memory.
  const auto path = temp_dir() + "/odd.safetensors";
  std::string header = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  if (header.size() % 2 == 0) header += ' ';
  const float values[4] = {1.5f, -2.0f, 3.25f, 1e-30f};
  write_raw(path, header, std::string(reinterpret_cast<const char*>(values), sizeof(values)));
  auto t = SafetensorsFile::open(path)->tensor("w");
  EXPECT_TRUE(at::equal(t, at::from_blob(const_cast<float*>(values), {2, 2}, at::kFloat)));
}

TEST(Safetensors, WritingLeavesNoTemporaryFile) {
  const auto dir = temp_dir();
  const auto path = dir + "/model.safetensors";
  write_safetensors(path, {{"w", at::randn({8, 8})}});
  write_safetensors(path, {{"w", at::randn({4})}}, {{"format", "pt"}});  // overwrite in place
  EXPECT_EQ(dir_entries(dir), std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(SafetensorsFile::open(path)->tensor("w").sizes(), at::IntArrayRef({4}));

  // A write refused before any byte is written leaves nothing behind either.
  const auto bad = dir + "/bad.safetensors";
  auto msg = error_of([&] { write_safetensors(bad, {{"__metadata__", at::ones({1})}}); });
  EXPECT_TRUE(Contains(msg, bad));
  EXPECT_TRUE(Contains(msg, "reserved"));
  msg = error_of([&] { write_safetensors(bad, {{"w", at::ones({1})}, {"w", at::ones({2})}}); });
  EXPECT_TRUE(Contains(msg, bad));
  EXPECT_TRUE(Contains(msg, "'w' given twice"));
  EXPECT_EQ(dir_entries(dir), std::vector<std::string>{"model.safetensors"});
}

TEST(Safetensors, WritingIntoAMissingDirectoryNamesThePath) {
  const auto path = temp_dir() + "/no/such/dir/m.safetensors";
  auto msg = error_of([&] { write_safetensors(path, {{"w", at::ones({1})}}); });
  EXPECT_TRUE(Contains(msg, path));
}

TEST(Safetensors, ReadsTheRealStories260K) {
  QTUNE_REQUIRE_SHARED();
  auto file = SafetensorsFile::open(qtune::test::shared_dir() + "/models/stories260K/model.safetensors");
  ASSERT_EQ(file->tensors().size(), 48u);
  for (const auto& t : file->tensors()) {
    EXPECT_EQ(t.dtype, DType::F32) << t.name;
    EXPECT_EQ(file->tensor(t.name).scalar_type(), at::kFloat) << t.name;
  }
  const TensorInfo* embed = file->find("model.embed_tokens.weight");
  ASSERT_NE(embed, nullptr);
  EXPECT_EQ(embed->shape, (std::vector<int64_t>{512, 64}));
  const auto e = file->tensor("model.embed_tokens.weight");
  EXPECT_EQ(e.sizes(), at::IntArrayRef({512, 64}));
  EXPECT_TRUE(at::isfinite(e).all().item<bool>());
}

// ---- bad input -------------------------------------------------------------------------------------

TEST(Safetensors, RejectsFileShorterThanEightBytes) {
  const auto dir = temp_dir();
  for (size_t size : {0, 1, 7}) {
    const auto path = dir + "/short" + std::to_string(size) + ".safetensors";
    std::ofstream(path, std::ios::binary) << std::string(size, '\x01');
    const auto msg = open_error(path);
    EXPECT_TRUE(Contains(msg, "too short"));
    EXPECT_TRUE(Contains(msg, "8-byte header length"));
  }
}

TEST(Safetensors, RejectsHeaderLengthPastEndOfFile) {
  const auto path = temp_dir() + "/h.safetensors";
  write_raw(path, "{}", "", 1000);
  const auto msg = open_error(path);
  EXPECT_TRUE(Contains(msg, "header length 1000 runs past the end of the file"));
}

TEST(Safetensors, RejectsHeaderLengthOverTheLimit) {
  const auto dir = temp_dir();
  for (uint64_t len : {kMaxHeaderBytes + 1, std::numeric_limits<uint64_t>::max()}) {
    const auto path = dir + "/big" + std::to_string(len % 1000) + ".safetensors";
    write_raw(path, "{}", "", len);
    const auto msg = open_error(path);
    EXPECT_TRUE(Contains(msg, "header length " + std::to_string(len)));
    EXPECT_TRUE(Contains(msg, "exceeds the " + std::to_string(kMaxHeaderBytes) + " byte limit"));
  }
}

TEST(Safetensors, RejectsHeaderThatIsNotJson) {
  const auto dir = temp_dir();
  for (const std::string& header : {std::string("{not json"), std::string(""), std::string("{\"a\":"),
                                    std::string("\xff\xfe garbage", 10)}) {
    const auto path = dir + "/j" + std::to_string(header.size()) + ".safetensors";
    write_raw(path, header, "");
    const auto msg = open_error(path);
    EXPECT_TRUE(Contains(msg, "header is not valid JSON"));
  }
}

TEST(Safetensors, RejectsHeaderJsonThatIsNotAnObject) {
  const auto dir = temp_dir();
  for (const std::string header : {"[1,2]", "\"text\"", "42", "null"}) {
    const auto path = dir + "/o" + std::to_string(header.size()) + ".safetensors";
    write_raw(path, header, "");
    const auto msg = open_error(path);
    EXPECT_TRUE(Contains(msg, "header must be a JSON object"));
  }
}

TEST(Safetensors, RejectsUnknownDtype) {
  const auto path = temp_dir() + "/d.safetensors";
  write_raw(path, R"({"w":{"dtype":"F8_E9","shape":[2],"data_offsets":[0,2]}})", std::string(2, '\0'));
  const auto msg = open_error(path);
  EXPECT_TRUE(Contains(msg, "tensor 'w'"));
  EXPECT_TRUE(Contains(msg, "unsupported dtype 'F8_E9'"));
  EXPECT_TRUE(Contains(msg, "expected one of F64 F32 F16 BF16"));
}

TEST(Safetensors, RejectsMissingOrMistypedKeys) {
  const auto dir = temp_dir();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"w":3})", "expected a JSON object with dtype/shape/data_offsets"},
      {R"({"w":{"shape":[1],"data_offsets":[0,4]}})", "missing string key 'dtype'"},
      {R"({"w":{"dtype":5,"shape":[1],"data_offsets":[0,4]}})", "missing string key 'dtype'"},
      {R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", "missing array key 'shape'"},
      {R"({"w":{"dtype":"F32","shape":4,"data_offsets":[0,4]}})", "missing array key 'shape'"},
      {R"({"w":{"dtype":"F32","shape":[1]}})", "'data_offsets' must be [begin, end]"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", "'data_offsets' must be [begin, end]"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", "'data_offsets' must be [begin, end]"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", "'data_offsets' must be [begin, end]"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,"4"]}})", "'data_offsets' must be [begin, end]"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto path = dir + "/k" + std::to_string(i) + ".safetensors";
    write_raw(path, cases[i].first, std::string(8, '\0'));
    const auto msg = open_error(path);
    EXPECT_TRUE(Contains(msg, "tensor 'w'")) << cases[i].first;
    EXPECT_TRUE(Contains(msg, cases[i].second)) << cases[i].first;
  }
}

TEST(Safetensors, RejectsNegativeOrNonIntegerShape) {
  const auto dir = temp_dir();
  for (const std::string shape : {"[-1,2]", "[2.5]", "[2,\"3\"]", "[null]", "[[2]]"}) {
    const auto path = dir + "/s" + std::to_string(shape.size()) + shape[1] + ".safetensors";
    write_raw(path, R"({"w":{"dtype":"U8","shape":)" + shape + R"(,"data_offsets":[0,2]}})", std::string(2, '\0'));
    const auto msg = open_error(path);
    EXPECT_TRUE(Contains(msg, "tensor 'w'")) << shape;
    EXPECT_TRUE(Contains(msg, "shape entries must be non-negative integers")) << shape;
  }
}

TEST(Safetensors, RejectsShapeWhoseSizeOverflows) {
  const auto dir = temp_dir();
  const auto path = dir + "/of.safetensors";
  write_raw(path, R"({"w":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,0]}})");
  const auto msg = open_error(path);
  EXPECT_TRUE(Contains(msg, "tensor 'w'"));
  EXPECT_TRUE(Contains(msg, "overflows"));

  // numel fits in 64 bits but numel * 4 bytes does not.
  const auto path2 = dir + "/of2.safetensors";
  write_raw(path2, R"({"w":{"dtype":"F32","shape":[4611686018427387905],"data_offsets":[0,4]}})", std::string(4, '\0'));
  const auto msg2 = open_error(path2);
  EXPECT_TRUE(Contains(msg2, "tensor 'w'"));
  EXPECT_TRUE(Contains(msg2, "data_offsets give 4"));
}

TEST(Safetensors, RejectsDataOffsetsPastTheDataSection) {
  const auto path = temp_dir() + "/trunc.safetensors";
  write_safetensors(path, {{"a", at::ones({4})}, {"b", at::ones({4, 4})}});
  const auto full = fs::file_size(path);
  fs::resize_file(path, full - 5);  // the last tensor loses its tail
  const auto msg = open_error(path);
  EXPECT_TRUE(Contains(msg, "tensor 'b'"));
  EXPECT_TRUE(Contains(msg, "data_offsets [16, 80] run past the data section (75 bytes)"));
  EXPECT_TRUE(Contains(msg, "truncated"));
}

TEST(Safetensors, RejectsBeginAfterEnd) {
  const auto path = temp_dir() + "/be.safetensors";
  write_raw(path, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", std::string(8, '\0'));
  const auto msg = open_error(path);
  EXPECT_TRUE(Contains(msg, "tensor 'w'"));
  EXPECT_TRUE(Contains(msg, "data_offsets [8, 4] has begin after end"));
}

TEST(Safetensors, RejectsShapeNotMatchingTheByteRange) {
  const auto dir = temp_dir();
  const auto path = dir + "/sz.safetensors";
  write_raw(path, R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", std::string(16, '\0'));
  const auto msg = open_error(path);
  EXPECT_TRUE(Contains(msg, "tensor 'w'"));
  EXPECT_TRUE(Contains(msg, "shape [2,2] of F32 needs 16 bytes but data_offsets give 12"));

  const auto path2 = dir + "/sz2.safetensors";
  write_raw(path2, R"({"s":{"dtype":"BF16","shape":[],"data_offsets":[0,0]}})", std::string(4, '\0'));
  const auto msg2 = open_error(path2);
  EXPECT_TRUE(Contains(msg2, "tensor 's'"));
  EXPECT_TRUE(Contains(msg2, "needs 2 bytes but data_offsets give 0"));
}

TEST(Safetensors, RejectsOverlappingTensors) {
  const auto path = temp_dir() + "/ov.safetensors";
  write_raw(path,
            R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
            R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
            std::string(24, '\0'));
  const auto msg = open_error(path);
  EXPECT_TRUE(Contains(msg, "tensors 'a' [0, 16) and 'b' [8, 24) overlap"));
}

TEST(Safetensors, RejectsOverlapHiddenBehindAnEmptyTensor) {
  // An empty tensor sorted between two overlapping ones must not mask the overlap.
  const auto dir = temp_dir();
  const auto path = dir + "/ov2.safetensors";
  write_raw(path,
            R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
            R"("z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
            R"("c":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
            std::string(24, '\0'));
  const auto msg = open_error(path);
  EXPECT_TRUE(Contains(msg, "tensors 'a' [0, 16) and 'c' [8, 24) overlap"));

  // A tensor nested inside a larger one, with a third after both.
  const auto path2 = dir + "/ov3.safetensors";
  write_raw(path2,
            R"({"a":{"dtype":"U8","shape":[16],"data_offsets":[0,16]},)"
            R"("b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]},)"
            R"("c":{"dtype":"U8","shape":[8],"data_offsets":[16,24]}})",
            std::string(24, '\0'));
  EXPECT_TRUE(Contains(open_error(path2), "tensors 'a' [0, 16) and 'b' [4, 8) overlap"));
}

TEST(Safetensors, AcceptsEmptyTensorsSharingAnOffset) {
  const auto path = temp_dir() + "/e.safetensors";
  write_raw(path,
            R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
            R"("b":{"dtype":"I64","shape":[0,3],"data_offsets":[0,0]},)"
            R"("c":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
            std::string("\x07\x09", 2));
  auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file->tensor("a").numel(), 0);
  EXPECT_EQ(file->tensor("b").sizes(), at::IntArrayRef({0, 3}));
  EXPECT_EQ(file->tensor("c")[1].item<uint8_t>(), 9);
}

TEST(Safetensors, RejectsMetadataWithNonStringValue) {
  const auto dir = temp_dir();
  const auto path = dir + "/md.safetensors";
  write_raw(path, R"({"__metadata__":{"format":"pt","step":3}})");
  const auto msg = open_error(path);
  EXPECT_TRUE(Contains(msg, "'__metadata__' key 'step' must be a string, got number"));

  const auto path2 = dir + "/md2.safetensors";
  write_raw(path2, R"({"__metadata__":["pt"]})");
  EXPECT_TRUE(Contains(open_error(path2), "'__metadata__' must be an object of strings"));
}

TEST(Safetensors, MissingTensorNamesFileAndTensor) {
  const auto path = temp_dir() + "/m.safetensors";
  write_safetensors(path, {{"w", at::ones({2})}});
  auto file = SafetensorsFile::open(path);
  const auto msg = error_of([&] { file->tensor("nope"); });
  EXPECT_TRUE(Contains(msg, path));
  EXPECT_TRUE(Contains(msg, "no tensor named 'nope'"));
}

TEST(Safetensors, MissingOrUnreadableFileNamesThePath) {
  const auto dir = temp_dir();
  const auto missing = dir + "/absent.safetensors";
  EXPECT_TRUE(Contains(open_error(missing), "cannot open"));
  EXPECT_TRUE(Contains(open_error(dir), "not a regular file"));
}

TEST(Safetensors, HeaderParserRejectsGarbageWithoutCrashing) {
  // Every prefix of a valid file either parses or fails with an Error naming the path.
  const auto path = temp_dir() + "/v.safetensors";
  write_safetensors(path, {{"a", at::ones({3})}, {"b", at::zeros({2, 2}, at::kHalf)}}, {{"k", "v"}});
  const auto bytes = read_all(path);
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  for (size_t n = 0; n < bytes.size(); ++n) {
    const auto msg = error_of([&] { parse_safetensors_header(data, n, "prefix"); });
    EXPECT_TRUE(Contains(msg, "prefix")) << n;
  }
  const auto header = parse_safetensors_header(data, bytes.size(), "whole");
  EXPECT_EQ(header.tensors.size(), 2u);
  EXPECT_EQ(header.metadata.at("k"), "v");
}

}  // namespace
}  // namespace qtune::io
