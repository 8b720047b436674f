// The GGUF reader on files the test writes byte by byte: a valid file reads back exactly, and every kind of bad
// input (truncation at any byte, bad magic or version, counts or lengths past the file, unknown types, misaligned
// or overlapping or out-of-file tensors, sizes that do not fit the type's blocks) is an error naming the file.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "qtune/io/gguf.h"
#include "qtune/io/gguf_header.h"
#include "qtune/io/gguf_model.h"
#include "qtune/util/memory.h"
#include "gguf_builder.h"
#include "test_util.h"

namespace {

using qtune::io::GgufValueType;
using qtune::quant::GgmlType;
using qtune::test::GgufBuilder;

std::string f32_bytes(const std::vector<float>& v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4); }

// A valid file: a few metadata types and two tensors (F32 [3, 2] at 0, F32 [4] at 32).
GgufBuilder valid_builder() {
  GgufBuilder b;
  b.kv_str("general.architecture", "llama");
  b.kv_u32("llama.block_count", 1);
  b.kv_f32("llama.rope.freq_base", 10000.0f);
  b.kv_bool("tokenizer.ggml.add_bos_token", true);
  b.kv_strs("tokenizer.ggml.tokens", {"<unk>", "a", "b"});
  b.tensor({"first.weight", {2, 3}, 0, 0});
  b.tensor({"second.weight", {4}, 0, 32});
  return b;
}

std::string valid_data() {
  std::string data = f32_bytes({1, 2, 3, 4, 5, 6});
  data.resize(32, '\0');
  return data + f32_bytes({7, 8, 9, 10});
}

qtune::io::GgufHeader parse(const std::string& bytes) {
  return qtune::io::parse_gguf_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "test.gguf");
}

std::string write(const std::string& dir, const std::string& bytes) {
  const auto path = dir + "/model.gguf";
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

TEST(GgufHeader, AValidFileReadsBackExactly) {
  const auto dir = qtune::test::temp_dir();
  const auto file = qtune::io::GgufFile::open(write(dir, valid_builder().build(valid_data())));
  EXPECT_EQ(file->header().version, 3u);
  EXPECT_EQ(file->require_string("general.architecture"), "llama");
  EXPECT_EQ(file->require_integer("llama.block_count"), 1);
  EXPECT_DOUBLE_EQ(*file->number("llama.rope.freq_base"), 10000.0);
  EXPECT_TRUE(*file->boolean("tokenizer.ggml.add_bos_token"));
  EXPECT_EQ(file->array("tokenizer.ggml.tokens")->size(), 3u);
  EXPECT_EQ(file->header().value_types.at("tokenizer.ggml.tokens"), GgufValueType::ARRAY);
  const auto& first = file->tensor_info("first.weight");
  EXPECT_EQ(first.torch_shape(), (std::vector<int64_t>{3, 2}));
  EXPECT_TRUE(at::equal(file->dequantize(first), at::arange(1, 7, at::kFloat).view({3, 2})));
  EXPECT_TRUE(at::equal(file->dequantize(file->tensor_info("second.weight")), at::arange(7, 11, at::kFloat)));
  // Typed reads name the key and both types.
  EXPECT_NE(qtune::test::error_of([&] { file->integer("general.architecture"); }).find("'general.architecture' must be an integer"),
            std::string::npos);
  EXPECT_NE(qtune::test::error_of([&] { file->tensor_info("missing"); }).find("tensor 'missing' not found"), std::string::npos);
}

TEST(GgufHeader, EveryTruncationIsAnErrorNeverACrash) {
  const auto bytes = valid_builder().build(valid_data());
  for (size_t n = 0; n < bytes.size(); ++n) {
    const auto msg = qtune::test::error_of([&] { parse(bytes.substr(0, n)); });
    EXPECT_NE(msg.find("test.gguf"), std::string::npos) << "cut at " << n << ": " << msg;
  }
}

TEST(GgufHeader, BadMagicAndVersionsAreRefused) {
  auto bytes = valid_builder().build(valid_data());
  auto bad = bytes;
  bad[0] = 'X';
  EXPECT_NE(qtune::test::error_of([&] { parse(bad); }).find("not a GGUF file"), std::string::npos);
  EXPECT_NE(qtune::test::error_of([&] { parse(valid_builder().build(valid_data(), 1)); }).find("version 1 is not supported"),
            std::string::npos);
  EXPECT_NO_THROW(parse(valid_builder().build(valid_data(), 2)));
}

TEST(GgufHeader, CountsAndLengthsPastTheFileAreRefusedBeforeAllocating) {
  GgufBuilder b;
  b.str("tokenizer.ggml.tokens");
  b.raw<uint32_t>(9);
  b.raw<uint32_t>(8);
  b.raw<uint64_t>(1ull << 60);  // 2^60 strings
  b.count_kv();
  EXPECT_NE(qtune::test::error_of([&] { parse(b.build("")); }).find("cannot fit"), std::string::npos);
  GgufBuilder s;
  s.str("general.name");
  s.raw<uint32_t>(8);
  s.raw<uint64_t>(1ull << 40);  // a 1 TiB string
  s.count_kv();
  EXPECT_NE(qtune::test::error_of([&] { parse(s.build("")); }).find("general.name"), std::string::npos);
}

TEST(GgufHeader, UnknownTypesAreNamed) {
  GgufBuilder v;
  v.str("general.weird");
  v.raw<uint32_t>(13);
  v.raw<uint32_t>(0);
  v.count_kv();
  EXPECT_NE(qtune::test::error_of([&] { parse(v.build("")); }).find("'general.weird' has unknown value type 13"),
            std::string::npos);
  GgufBuilder t;
  t.tensor({"w", {32}, 99, 0});
  EXPECT_NE(qtune::test::error_of([&] { parse(t.build(std::string(64, '\0'))); }).find("tensor 'w' has unknown ggml type 99"),
            std::string::npos);
}

TEST(GgufHeader, TensorPlacementIsChecked) {
  auto error = [](GgufBuilder::Tensor t, const std::string& data) {
    GgufBuilder b;
    b.tensor(t);
    return qtune::test::error_of([&] { parse(b.build(data)); });
  };
  EXPECT_NE(error({"w", {4}, 0, 4}, std::string(64, '\0')).find("not a multiple of the alignment 32"), std::string::npos);
  EXPECT_NE(error({"w", {64}, 0, 0}, std::string(64, '\0')).find("runs past the end of the file"), std::string::npos);
  EXPECT_NE(error({"w", {33}, static_cast<uint32_t>(GgmlType::Q8_0), 0}, std::string(64, '\0'))
                .find("not a multiple of the 32-value block"),
            std::string::npos);
  EXPECT_NE(error({"w", {1, 1, 1, 1, 1}, 0, 0}, std::string(64, '\0')).find("5 dimensions"), std::string::npos);
  EXPECT_NE(error({"w", {0}, 0, 0}, std::string(64, '\0')).find("dimension 0 is 0"), std::string::npos);
  GgufBuilder overlap;
  overlap.tensor({"a", {16}, 0, 0});
  overlap.tensor({"b", {16}, 0, 32});
  EXPECT_NE(qtune::test::error_of([&] { parse(overlap.build(std::string(128, '\0'))); }).find("overlap"),
            std::string::npos);
  GgufBuilder twice;
  twice.tensor({"a", {4}, 0, 0});
  twice.tensor({"a", {4}, 0, 32});
  EXPECT_NE(qtune::test::error_of([&] { parse(twice.build(std::string(64, '\0'))); }).find("'a' appears twice"),
            std::string::npos);
}

// F32 of dims [2^31, 2^31] is 2^62 values (within int64) but 2^64 bytes: the size must not wrap to a few bytes that
// pass the bounds and overlap checks.
TEST(GgufHeader, ATensorSizePast64BitsIsRefused) {
  GgufBuilder b;
  b.tensor({"w", {1ull << 31, 1ull << 31}, 0, 0});
  const auto msg = qtune::test::error_of([&] { parse(b.build(std::string(256, '\0'))); });
  EXPECT_NE(msg.find("test.gguf: tensor 'w' (F32): 4611686018427387904 values take more than 2^64 bytes"),
            std::string::npos) << msg;
  GgufBuilder f64;  // 2^61 values of 8 bytes
  f64.tensor({"w", {1ull << 31, 1ull << 30}, static_cast<uint32_t>(GgmlType::F64), 0});
  EXPECT_NE(qtune::test::error_of([&] { parse(f64.build(std::string(256, '\0'))); }).find("more than 2^64 bytes"),
            std::string::npos);
  EXPECT_NE(qtune::test::error_of([&] { qtune::quant::ggml_nbytes(GgmlType::F32, int64_t{1} << 62); })
                .find("more than 2^64 bytes"),
            std::string::npos);
}

// A metadata array is kept as the bytes the file holds until it is read: 16 MiB of uint8 and 2 Mi empty strings
// (16 MiB) add about their own size to the process, not 16 bytes or more per value as JSON would, and read back
// exactly when asked for.
TEST(GgufHeader, MetadataArraysStayBytesUntilRead) {
  constexpr uint64_t kBytes = 16ull << 20, kStrings = 2ull << 20;
  GgufBuilder b;
  b.str("big.bytes");
  b.raw<uint32_t>(static_cast<uint32_t>(GgufValueType::ARRAY));
  b.raw<uint32_t>(static_cast<uint32_t>(GgufValueType::UINT8));
  b.raw<uint64_t>(kBytes);
  std::string bytes(kBytes, '\0');
  for (uint64_t i = 0; i < kBytes; ++i) bytes[i] = static_cast<char>(i * 7);
  b.append(bytes);
  b.count_kv();
  b.str("big.strings");
  b.raw<uint32_t>(static_cast<uint32_t>(GgufValueType::ARRAY));
  b.raw<uint32_t>(static_cast<uint32_t>(GgufValueType::STRING));
  b.raw<uint64_t>(kStrings);
  b.append(std::string(kStrings * 8, '\0'));  // each string: a zero length
  b.count_kv();
  b.kv_strs("tokenizer.ggml.tokens", {"<unk>", "a", "\xC3\xA9"});
  const std::string file = b.build("");
  bytes.clear();
  bytes.shrink_to_fit();

  const int64_t before = qtune::current_rss_bytes();
  const auto h = parse(file);
  const int64_t grown = qtune::current_rss_bytes() - before;
  EXPECT_LT(grown, static_cast<int64_t>(2 * file.size())) << "a " << qtune::format_bytes(file.size())
                                                          << " header grew the process by " << qtune::format_bytes(grown);
  ASSERT_EQ(h.arrays.at("big.bytes").size, kBytes);
  EXPECT_EQ(h.arrays.at("big.strings").size, kStrings);
  EXPECT_EQ(h.value_types.at("big.bytes"), GgufValueType::ARRAY);
  EXPECT_FALSE(h.metadata.contains("big.bytes"));
  const auto tokens = h.arrays.at("tokenizer.ggml.tokens").to_json();
  EXPECT_EQ(tokens, nlohmann::json::array({"<unk>", "a", "\xC3\xA9"}));
  const auto values = h.arrays.at("big.bytes").to_json();
  ASSERT_EQ(values.size(), kBytes);
  for (uint64_t i : {uint64_t{0}, uint64_t{1}, kBytes / 3, kBytes - 1})
    EXPECT_EQ(values[i].get<uint64_t>(), static_cast<uint8_t>(i * 7)) << i;
}

// What the arrays hold is checked when the header is parsed, not when they are read: a bool other than 0/1 or a
// string that is not UTF-8 anywhere in an array is an error naming the key.
TEST(GgufHeader, ArrayValuesAreCheckedOnOpen) {
  GgufBuilder utf8;
  utf8.kv_strs("tokenizer.ggml.tokens", {"ok", "bad \xC3\x28"});
  EXPECT_NE(qtune::test::error_of([&] { parse(utf8.build("")); })
                .find("'tokenizer.ggml.tokens' holds a string that is not valid UTF-8"),
            std::string::npos);
  GgufBuilder bools;
  bools.str("flags");
  bools.raw<uint32_t>(static_cast<uint32_t>(GgufValueType::ARRAY));
  bools.raw<uint32_t>(static_cast<uint32_t>(GgufValueType::BOOL));
  bools.raw<uint64_t>(3);
  bools.raw<uint8_t>(1);
  bools.raw<uint8_t>(0);
  bools.raw<uint8_t>(2);
  bools.count_kv();
  EXPECT_NE(qtune::test::error_of([&] { parse(bools.build("")); }).find("'flags': bool value 2"), std::string::npos);
  const auto dir = qtune::test::temp_dir();
  const auto file = qtune::io::GgufFile::open(write(dir, valid_builder().build(valid_data())));
  EXPECT_NE(qtune::test::error_of([&] { file->string("tokenizer.ggml.tokens"); }).find("must be a string, got an array"),
            std::string::npos);
  EXPECT_NE(qtune::test::error_of([&] { file->array("general.architecture"); }).find("must be an array, got a string"),
            std::string::npos);
  EXPECT_TRUE(file->has("tokenizer.ggml.tokens"));
  EXPECT_EQ(file->array("tokenizer.ggml.tokens"), file->array("tokenizer.ggml.tokens")) << "decoded once, kept";
}

TEST(GgufModel, RotaryRowsUnpermuteAsTransformersReversesLlamaCpp) {
  // convert_hf_to_gguf.permute: reshape(heads, 2, half, cols).swapaxes(1, 2); our inverse must undo it exactly.
  const int64_t heads = 3, head_dim = 8, cols = 5;
  const auto hf = at::arange(heads * head_dim * cols, at::kFloat).view({heads * head_dim, cols});
  const auto gguf = hf.reshape({heads, 2, head_dim / 2, cols}).transpose(1, 2).reshape({heads * head_dim, cols});
  EXPECT_TRUE(at::equal(qtune::io::unpermute_rotary_rows(gguf, heads), hf));
  EXPECT_FALSE(at::equal(gguf, hf));
}

TEST(GgufModel, TensorNamesMapToHuggingFace) {
  EXPECT_EQ(qtune::io::GgufLayout{}.gguf_name("model.embed_tokens.weight"), "token_embd.weight");
  EXPECT_EQ(qtune::io::GgufLayout{}.gguf_name("model.layers.12.self_attn.k_proj.weight"), "blk.12.attn_k.weight");
  EXPECT_EQ(qtune::io::GgufLayout{}.gguf_name("model.layers.0.mlp.down_proj.weight"), "blk.0.ffn_down.weight");
  EXPECT_EQ(qtune::io::GgufLayout{}.gguf_name("model.layers.0.post_attention_layernorm.weight"), "blk.0.ffn_norm.weight");
  EXPECT_EQ(qtune::io::GgufLayout{}.gguf_name("lm_head.weight"), "output.weight");
  EXPECT_EQ(qtune::io::GgufLayout{}.gguf_name("model.layers.0.mlp.up_proj.lora_A"), "");
}

// llama.cpp's names of the families' own tensors (gguf-py's MODEL_TENSORS for gemma3 and phi3), both ways.
TEST(GgufModel, FamilyTensorNamesAreLlamaCpps) {
  qtune::io::GgufLayout gemma;
  gemma.architecture = "gemma3";
  gemma.sandwich_norms = gemma.norms_plus_one = true;
  gemma.interleaved_rotary = false;
  const std::pair<const char*, const char*> gemma_names[] = {
      {"model.layers.2.post_attention_layernorm.weight", "blk.2.post_attention_norm.weight"},
      {"model.layers.2.pre_feedforward_layernorm.weight", "blk.2.ffn_norm.weight"},
      {"model.layers.2.post_feedforward_layernorm.weight", "blk.2.post_ffw_norm.weight"},
      {"model.layers.2.self_attn.q_norm.weight", "blk.2.attn_q_norm.weight"},
      {"model.layers.2.self_attn.k_norm.weight", "blk.2.attn_k_norm.weight"}};
  for (const auto& [hf, gguf] : gemma_names) {
    EXPECT_EQ(gemma.gguf_name(hf), gguf);
    EXPECT_EQ(gemma.hf_name(gguf), hf);
  }
  EXPECT_TRUE(gemma.stored_plus_one("model.norm.weight"));
  EXPECT_EQ(gemma.rotary_heads("model.layers.0.self_attn.q_proj.weight"), 0);
  const auto norm = at::full({4}, 0.25f);
  EXPECT_TRUE(at::equal(gemma.to_gguf("model.layers.0.input_layernorm.weight", norm), at::full({4}, 1.25f)));
  EXPECT_TRUE(at::equal(gemma.from_gguf("model.layers.0.input_layernorm.weight", at::full({4}, 1.25f)), norm));

  qtune::io::GgufLayout phi;
  phi.architecture = "phi3";
  phi.fused_qkv = phi.fused_gate_up = true;
  EXPECT_EQ(phi.gguf_name("model.layers.1.self_attn.qkv_proj.weight"), "blk.1.attn_qkv.weight");
  EXPECT_EQ(phi.gguf_name("model.layers.1.mlp.gate_up_proj.weight"), "blk.1.ffn_up.weight");
  EXPECT_EQ(phi.hf_name("blk.1.ffn_up.weight"), "model.layers.1.mlp.gate_up_proj.weight");
  EXPECT_EQ(phi.gguf_name("model.layers.1.mlp.up_proj.weight"), "");
  EXPECT_EQ(qtune::io::GgufLayout{}.hf_name("blk.x.ffn_up.weight"), "");
}

TEST(GgufModel, AnUnsupportedArchitectureIsNamed) {
  const auto dir = qtune::test::temp_dir();
  GgufBuilder b;
  b.kv_str("general.architecture", "qwen3moe");
  const auto path = write(dir, b.build(""));
  const auto msg = qtune::test::error_of([&] { qtune::io::ModelConfig::load(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("general.architecture 'qwen3moe' is not supported"), std::string::npos) << msg;
}

}  // namespace
