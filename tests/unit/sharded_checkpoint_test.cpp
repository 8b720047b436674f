// ShardedCheckpoint: the three layouts of a Hugging Face weights directory (index + shards, a single
// model.safetensors, any *.safetensors) and every inconsistency between an index and its shards.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "qtune/io/safetensors.h"
#include "qtune/io/sharded_checkpoint.h"
#include "test_util.h"

namespace qtune::io {
namespace {

namespace fs = std::filesystem;
using qtune::test::error_of;
using qtune::test::temp_dir;

constexpr const char* kShard1 = "model-00001-of-00002.safetensors";
constexpr const char* kShard2 = "model-00002-of-00002.safetensors";
constexpr const char* kIndex = "model.safetensors.index.json";

::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "message \"" << text << "\" does not contain \"" << part << "\"";
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

void write_index(const std::string& dir, const std::map<std::string, std::string>& weight_map) {
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
  write_text(dir + "/" + kIndex, index.dump(2));
}

// Two shards: a, b in the first; c, d in the second.
struct TwoShards {
  std::string dir;
  NamedTensors shard1, shard2;
};

// In `dir`, or a fresh temp_dir().
TwoShards make_two_shards(bool with_index = true, std::string dir = "") {
  at::manual_seed(1);
  TwoShards s;
  s.dir = dir.empty() ? temp_dir() : dir;
  s.shard1 = {{"a", at::randn({2, 3})}, {"b", at::arange(4, at::kLong)}};
  s.shard2 = {{"c", at::randn({5}).to(at::kBFloat16)}, {"d", at::randn({1, 2})}};
  write_safetensors(s.dir + "/" + kShard1, s.shard1);
  write_safetensors(s.dir + "/" + kShard2, s.shard2);
  if (with_index) write_index(s.dir, {{"a", kShard1}, {"b", kShard1}, {"c", kShard2}, {"d", kShard2}});
  return s;
}

TEST(ShardedCheckpoint, LoadsIndexAndShardsAndFindsEveryTensorInItsShard) {
  const auto s = make_two_shards();
  auto ckpt = ShardedCheckpoint::open(s.dir);
  EXPECT_EQ(ckpt->dir(), s.dir);
  EXPECT_EQ(ckpt->names(), (std::vector<std::string>{"a", "b", "c", "d"}));
  ASSERT_EQ(ckpt->shards().size(), 2u);
  EXPECT_EQ(fs::path(ckpt->shards()[0]->path()).filename().string(), kShard1);
  EXPECT_EQ(fs::path(ckpt->shards()[1]->path()).filename().string(), kShard2);

  uint64_t bytes = 0;
  for (size_t shard = 0; shard < 2; ++shard) {
    for (const auto& [name, expected] : shard == 0 ? s.shard1 : s.shard2) {
      SCOPED_TRACE(name);
      EXPECT_TRUE(ckpt->has(name));
      EXPECT_NE(ckpt->shards()[shard]->find(name), nullptr);       // in the shard the index names
      EXPECT_EQ(ckpt->shards()[1 - shard]->find(name), nullptr);   // and only there
      EXPECT_EQ(ckpt->info(name).shape, expected.sizes().vec());
      EXPECT_TRUE(at::equal(ckpt->tensor(name), expected));
      EXPECT_TRUE(at::equal(ckpt->get(name, expected.sizes()), expected));
      bytes += expected.numel() * expected.element_size();
    }
  }
  EXPECT_EQ(ckpt->total_bytes(), bytes);
  EXPECT_FALSE(ckpt->has("e"));
}

TEST(ShardedCheckpoint, AbsentTensorNamesDirectoryAndTensor) {
  const auto s = make_two_shards();
  auto ckpt = ShardedCheckpoint::open(s.dir);
  for (const auto& msg : {error_of([&] { ckpt->tensor("nope"); }), error_of([&] { ckpt->get("nope", {1}); }),
                          error_of([&] { ckpt->info("nope"); })}) {
    EXPECT_TRUE(Contains(msg, s.dir));
    EXPECT_TRUE(Contains(msg, "no tensor 'nope'"));
  }
}

TEST(ShardedCheckpoint, MissingShardListedInIndexIsNamed) {
  const auto s = make_two_shards();
  fs::remove(s.dir + "/" + kShard2);
  const auto msg = error_of([&] { ShardedCheckpoint::open(s.dir); });
  EXPECT_TRUE(Contains(msg, s.dir));
  EXPECT_TRUE(Contains(msg, std::string("shard '") + kShard2 + "'"));
  EXPECT_TRUE(Contains(msg, "is missing"));
}

TEST(ShardedCheckpoint, IndexMappingTensorToShardThatLacksIt) {
  const auto root = temp_dir();
  // A tensor that is in no shard at all.
  {
    fs::create_directories(root + "/ghost");
    const auto s = make_two_shards(true, root + "/ghost");
    write_index(s.dir, {{"a", kShard1}, {"b", kShard1}, {"c", kShard2}, {"d", kShard2}, {"ghost", kShard1}});
    const auto msg = error_of([&] { ShardedCheckpoint::open(s.dir); });
    EXPECT_TRUE(Contains(msg, s.dir));
    EXPECT_TRUE(Contains(msg, "'ghost'"));
    EXPECT_TRUE(Contains(msg, kShard1));
    EXPECT_TRUE(Contains(msg, "does not contain it"));
  }
  // A tensor that exists, but in another shard than the index says.
  {
    fs::create_directories(root + "/moved");
    const auto s = make_two_shards(true, root + "/moved");
    write_index(s.dir, {{"a", kShard1}, {"b", kShard1}, {"c", kShard1}, {"d", kShard2}});
    const auto msg = error_of([&] { ShardedCheckpoint::open(s.dir); });
    EXPECT_TRUE(Contains(msg, s.dir));
    EXPECT_TRUE(Contains(msg, "'c'"));
    EXPECT_TRUE(Contains(msg, kShard1));
    EXPECT_TRUE(Contains(msg, "does not contain it"));
  }
}

TEST(ShardedCheckpoint, TensorInTwoShards) {
  const auto dir = temp_dir();
  write_safetensors(dir + "/" + kShard1, {{"a", at::ones({2})}, {"dup", at::ones({3})}});
  write_safetensors(dir + "/" + kShard2, {{"b", at::ones({2})}, {"dup", at::zeros({3})}});
  write_index(dir, {{"a", kShard1}, {"b", kShard2}, {"dup", kShard1}});
  const auto msg = error_of([&] { ShardedCheckpoint::open(dir); });
  EXPECT_TRUE(Contains(msg, "tensor 'dup' appears in both"));
  EXPECT_TRUE(Contains(msg, dir + "/" + kShard1));
  EXPECT_TRUE(Contains(msg, dir + "/" + kShard2));

  // Same without an index: the *.safetensors fallback.
  fs::remove(dir + "/" + kIndex);
  const auto msg2 = error_of([&] { ShardedCheckpoint::open(dir); });
  EXPECT_TRUE(Contains(msg2, "tensor 'dup' appears in both"));
}

TEST(ShardedCheckpoint, IndexThatIsNotValidJson) {
  const auto s = make_two_shards();
  const auto index = s.dir + "/" + kIndex;
  for (const std::string& text : {std::string("{\"weight_map\": {"), std::string(""), std::string("not json")}) {
    write_text(index, text);
    const auto msg = error_of([&] { ShardedCheckpoint::open(s.dir); });
    EXPECT_TRUE(Contains(msg, index)) << text;
    EXPECT_TRUE(Contains(msg, "not valid JSON")) << text;
  }
}

TEST(ShardedCheckpoint, IndexWithBadWeightMap) {
  const auto s = make_two_shards();
  const auto index = s.dir + "/" + kIndex;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"([1, 2])", "missing object key 'weight_map'"},
      {R"({"metadata": {}})", "missing object key 'weight_map'"},
      {R"({"weight_map": ["a"]})", "missing object key 'weight_map'"},
      {R"({"weight_map": {"a": 3}})", "weight_map['a'] must be a file name"},
      {R"({"weight_map": {"a": "../outside.safetensors"}})", "must be a file in the same directory"},
      {R"({"weight_map": {"a": "/etc/passwd"}})", "must be a file in the same directory"},
      {R"({"weight_map": {"a": ".."}})", "must be a file in the same directory"},
  };
  for (const auto& [text, expected] : cases) {
    write_text(index, text);
    const auto msg = error_of([&] { ShardedCheckpoint::open(s.dir); });
    EXPECT_TRUE(Contains(msg, index)) << text;
    EXPECT_TRUE(Contains(msg, expected)) << text;
  }
}

TEST(ShardedCheckpoint, CorruptShardIsNamed) {
  const auto s = make_two_shards();
  const auto shard = s.dir + "/" + kShard2;
  fs::resize_file(shard, fs::file_size(shard) - 3);
  const auto msg = error_of([&] { ShardedCheckpoint::open(s.dir); });
  EXPECT_TRUE(Contains(msg, shard));
  EXPECT_TRUE(Contains(msg, "truncated"));
}

TEST(ShardedCheckpoint, DirectoryWithNoSafetensors) {
  const auto dir = temp_dir();
  write_text(dir + "/config.json", "{}");
  write_text(dir + "/model.bin", "x");
  const auto msg = error_of([&] { ShardedCheckpoint::open(dir); });
  EXPECT_TRUE(Contains(msg, dir));
  EXPECT_TRUE(Contains(msg, "no model.safetensors, model.safetensors.index.json or *.safetensors found"));
}

TEST(ShardedCheckpoint, NotADirectory) {
  const auto dir = temp_dir();
  const auto file = dir + "/model.safetensors";
  write_safetensors(file, {{"a", at::ones({1})}});
  for (const auto& path : {file, dir + "/absent"}) {
    const auto msg = error_of([&] { ShardedCheckpoint::open(path); });
    EXPECT_TRUE(Contains(msg, path));
    EXPECT_TRUE(Contains(msg, "not a directory"));
  }
}

TEST(ShardedCheckpoint, GetWithWrongShapeNamesTensorAndBothShapes) {
  const auto s = make_two_shards();
  auto ckpt = ShardedCheckpoint::open(s.dir);
  auto msg = error_of([&] { ckpt->get("a", {3, 2}); });
  EXPECT_TRUE(Contains(msg, s.dir + "/" + kShard1));
  EXPECT_TRUE(Contains(msg, "tensor 'a' has shape [2, 3] but the model config expects [3, 2]"));
  msg = error_of([&] { ckpt->get("c", {5, 1}); });
  EXPECT_TRUE(Contains(msg, "tensor 'c' has shape [5] but the model config expects [5, 1]"));
  msg = error_of([&] { ckpt->get("b", {}); });
  EXPECT_TRUE(Contains(msg, "tensor 'b' has shape [4] but the model config expects []"));
}

TEST(ShardedCheckpoint, FallsBackToEverySafetensorsFile) {
  const auto s = make_two_shards(/*with_index=*/false);
  fs::rename(s.dir + "/" + kShard1, s.dir + "/zeta.safetensors");
  fs::rename(s.dir + "/" + kShard2, s.dir + "/alpha.safetensors");
  write_text(s.dir + "/notes.txt", "not weights");
  write_text(s.dir + "/model.safetensors.bak", "not weights");
  auto ckpt = ShardedCheckpoint::open(s.dir);
  ASSERT_EQ(ckpt->shards().size(), 2u);
  EXPECT_EQ(fs::path(ckpt->shards()[0]->path()).filename().string(), "alpha.safetensors");  // sorted by name
  EXPECT_EQ(fs::path(ckpt->shards()[1]->path()).filename().string(), "zeta.safetensors");
  EXPECT_EQ(ckpt->names(), (std::vector<std::string>{"a", "b", "c", "d"}));
  for (const auto& [name, expected] : s.shard1) EXPECT_TRUE(at::equal(ckpt->tensor(name), expected)) << name;
  for (const auto& [name, expected] : s.shard2) EXPECT_TRUE(at::equal(ckpt->tensor(name), expected)) << name;
}

TEST(ShardedCheckpoint, SingleModelSafetensorsWinsOverOtherFiles) {
  const auto dir = temp_dir();
  const auto w = at::randn({4, 4});
  write_safetensors(dir + "/model.safetensors", {{"w", w}});
  write_safetensors(dir + "/adapter_model.safetensors", {{"w", at::zeros({4, 4})}, {"extra", at::ones({1})}});
  auto ckpt = ShardedCheckpoint::open(dir);
  ASSERT_EQ(ckpt->shards().size(), 1u);
  EXPECT_EQ(ckpt->names(), std::vector<std::string>{"w"});
  EXPECT_TRUE(at::equal(ckpt->get("w", {4, 4}), w));
}

TEST(ShardedCheckpoint, ReadsTheRealStories260K) {
  QTUNE_REQUIRE_SHARED();
  auto ckpt = ShardedCheckpoint::open(qtune::test::shared_dir() + "/models/stories260K");
  EXPECT_EQ(ckpt->names().size(), 48u);
  EXPECT_EQ(ckpt->get("model.embed_tokens.weight", {512, 64}).sizes(), at::IntArrayRef({512, 64}));
}

}  // namespace
}  // namespace qtune::io
