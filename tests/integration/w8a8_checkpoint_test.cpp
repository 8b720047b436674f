// compressed-tensors W8A8 checkpoints that qtune writes and reads: the round trip keeps every code and scale, and a
// corrupt or unsupported one (a missing or malformed scale, codes in another dtype, a group or static or weight-only
// scheme, another layout) is an error naming the file and the tensor, or config.json and the key.
#include <gtest/gtest.h>

#include <filesystem>

#include "qtune/export/compressed_tensors.h"
#include "qtune/export/merged_model.h"
#include "qtune/io/atomic_file.h"
#include "qtune/io/json_file.h"
#include "qtune/io/sharded_checkpoint.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quant_linear_factory.h"
#include "qtune/nn/quantized_linear.h"
#include "test_util.h"
#include "tiny_run.h"

namespace qtune::train {
namespace {

namespace fs = std::filesystem;
const auto kFp32 = at::TensorOptions().dtype(at::kFloat);

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// The tiny run's dense model written as W8A8 by the merged export (no adapter: round-to-nearest of its weights).
std::string write_w8a8(const TinyRun& t) {
  auto dense = nn::load_causal_lm(t.model, kFp32);
  exporting::MergedExportOptions o;
  o.quantize_w8a8 = true;
  o.source = t.model;
  const auto dir = t.dir + "/w8a8";
  exporting::save_merged_model(*dense, dir, o);
  return dir;
}

// A copy of `dir` with config.json's quantization_config edited by `edit`.
std::string with_config(const std::string& dir, const std::string& name,
                        const std::function<void(nlohmann::json&)>& edit) {
  const auto out = dir + "-" + name;
  fs::copy(dir, out, fs::copy_options::recursive);
  auto config = io::read_json_file(out + "/config.json");
  edit(config);
  io::write_text_atomically(out + "/config.json", config.dump(2));
  return out;
}

// A copy of `dir` whose tensors are edited by `edit`.
std::string with_tensors(const std::string& dir, const std::string& name, const std::function<void(io::NamedTensors&)>& edit) {
  const auto out = dir + "-" + name;
  fs::copy(dir, out, fs::copy_options::recursive);
  io::NamedTensors tensors;
  {
    auto file = io::SafetensorsFile::open(out + "/model.safetensors");
    for (const auto& info : file->tensors()) tensors.emplace_back(info.name, file->tensor(info.name).clone());
  }
  edit(tensors);
  io::write_safetensors(out + "/model.safetensors", tensors);
  return out;
}

std::string load_error(const std::string& dir) { return test::error_of([&] { nn::load_causal_lm(dir, kFp32); }); }

const std::string kDown = "model.layers.1.mlp.down_proj";

TEST(W8A8Checkpoint, RoundTripKeepsEveryCodeAndScale) {
  TinyRun t;
  const auto dir = write_w8a8(t);
  // The model quantized at load and the checkpoint read back hold the same codes and scales, so the same logits.
  quant::QuantPlan plan;
  plan.base.format = quant::WeightFormat::W8A8;
  nn::QuantLinearFactory at_load(plan, kFp32);
  auto quantized = nn::load_causal_lm(t.model, kFp32, &at_load);
  auto stored = nn::load_causal_lm(dir, kFp32);
  EXPECT_TRUE(test::bitwise_equal(probe_logits(*stored), probe_logits(*quantized)));
  auto ckpt = io::ShardedCheckpoint::open(dir);
  EXPECT_EQ(ckpt->tensor(kDown + ".weight").scalar_type(), at::kChar);
  EXPECT_EQ(ckpt->tensor(kDown + ".weight_scale").sizes(), at::IntArrayRef({64, 1}));
  EXPECT_FALSE(ckpt->has(kDown + ".weight_zero_point"));
  EXPECT_EQ(io::read_json_file(dir + "/config.json").at("torch_dtype"), "float32");

  // qtune quantize --format w8a8 writes the same checkpoint (round to nearest, as at load), read back as stored.
  const auto res = test::run_qtune("quantize " + t.model + " --format w8a8 --out " + t.dir + "/quantized");
  ASSERT_EQ(res.code, 0) << res.err;
  EXPECT_EQ(io::read_json_file(t.dir + "/quantized/config.json").at("quantization_config").at("quant_method"),
            "compressed-tensors");
  auto requantized = nn::load_causal_lm(t.dir + "/quantized", kFp32);
  EXPECT_TRUE(test::bitwise_equal(probe_logits(*requantized), probe_logits(*quantized)));

  // Scales stored in bf16 (as llm-compressor writes a bf16 model's) are read and widened.
  const auto bf16 = with_tensors(dir, "bf16-scales", [](io::NamedTensors& ts) {
    for (auto& [n, x] : ts)
      if (n.size() > 13 && n.compare(n.size() - 13, 13, ".weight_scale") == 0) x = x.to(at::kBFloat16);
  });
  auto from_bf16 = nn::load_causal_lm(bf16, kFp32);
  EXPECT_LT((probe_logits(*from_bf16) - probe_logits(*stored)).abs().max().item<double>(), 0.1);

  // The writer refuses a directory that exists and an empty model.
  EXPECT_TRUE(contains(test::error_of([&] { exporting::W8A8CheckpointWriter w(dir, {}); }), "exists"));
  EXPECT_TRUE(contains(test::error_of([&] {
                         exporting::W8A8CheckpointWriter w(t.dir + "/empty", {});
                         w.finish(nlohmann::json::object());
                       }),
                       "no linear was quantized"));
  EXPECT_FALSE(fs::exists(t.dir + "/empty.tmp"));
}

TEST(W8A8Checkpoint, CorruptTensorsNameTheFileAndTheTensor) {
  TinyRun t;
  const auto dir = write_w8a8(t);
  const auto file = "/model.safetensors: tensor '";

  auto msg = load_error(with_tensors(dir, "no-scale", [](io::NamedTensors& ts) {
    ts.erase(std::remove_if(ts.begin(), ts.end(), [](const auto& p) { return p.first == kDown + ".weight_scale"; }),
             ts.end());
  }));
  EXPECT_TRUE(contains(msg, file + kDown + ".weight'")) << msg;
  EXPECT_TRUE(contains(msg, kDown + ".weight_scale is missing")) << msg;

  msg = load_error(with_tensors(dir, "bf16-codes", [](io::NamedTensors& ts) {
    for (auto& [n, x] : ts)
      if (n == kDown + ".weight") x = x.to(at::kBFloat16);
  }));
  EXPECT_TRUE(contains(msg, file + kDown + ".weight': is BFloat16 [64, 128], expected int8 [64, 128]")) << msg;

  msg = load_error(with_tensors(dir, "scale-shape", [](io::NamedTensors& ts) {
    for (auto& [n, x] : ts)
      if (n == kDown + ".weight_scale") x = at::ones({64, 2}, at::kFloat);
  }));
  EXPECT_TRUE(contains(msg, file + kDown + ".weight_scale': is Float [64, 2], expected fp32, bf16 or fp16 [64, 1]"))
      << msg;

  msg = load_error(with_tensors(dir, "static-input", [](io::NamedTensors& ts) {
    ts.emplace_back(kDown + ".input_scale", at::ones({1}, at::kFloat));
  }));
  EXPECT_TRUE(contains(msg, file + kDown + ".input_scale': a static input scale")) << msg;

  // Codes without a quantization_config would read as a dense weight; they are refused instead, by the quantized
  // base's factory (naming the format) and by a dense load alike.
  const auto no_config = with_config(dir, "no-config", [](nlohmann::json& c) { c.erase("quantization_config"); });
  msg = test::error_of([&] {
    nn::QuantLinearFactory factory(quant::QuantPlan{}, kFp32, quant::StoredQuantization::of(nullptr, no_config + "/config.json"));
    nn::load_causal_lm(no_config, kFp32, &factory);
  });
  EXPECT_TRUE(contains(msg, "compressed-tensors W8A8 tensors (int8 codes and weight_scale) but " + no_config +
                                "/config.json has no quantization_config with quant_method \"compressed-tensors\""))
      << msg;
  msg = load_error(no_config);
  EXPECT_TRUE(contains(msg, file + std::string("model.layers.0.self_attn.q_proj.weight': is Char, not a floating-point "
                                               "tensor"))) << msg;
  // And codes for a linear the config leaves unquantized.
  msg = load_error(with_config(dir, "ignored", [](nlohmann::json& c) {
    c["quantization_config"]["ignore"].push_back(kDown);
  }));
  EXPECT_TRUE(contains(msg, "quantization_config (targets minus ignore) leaves " + kDown + " unquantized")) << msg;
}

TEST(W8A8Checkpoint, UnsupportedSchemesNameTheKey) {
  TinyRun t;
  const auto dir = write_w8a8(t);
  const std::string group = "quantization_config.config_groups.group_0";
  struct Case {
    std::string name;
    std::function<void(nlohmann::json&)> edit;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"group", [](nlohmann::json& q) { q["config_groups"]["group_0"]["weights"]["strategy"] = "group";
                                        q["config_groups"]["group_0"]["weights"]["group_size"] = 128; },
       group + ".weights.strategy is \"group\", expected \"channel\""},
      {"static", [](nlohmann::json& q) { q["config_groups"]["group_0"]["input_activations"]["dynamic"] = false; },
       group + ".input_activations.dynamic is false, expected true"},
      {"weight-only", [](nlohmann::json& q) { q["config_groups"]["group_0"]["input_activations"] = nullptr; },
       group + ".input_activations is null: weight-only int8 (W8A16) is not W8A8"},
      {"int4", [](nlohmann::json& q) { q["config_groups"]["group_0"]["weights"]["num_bits"] = 4; },
       group + ".weights.num_bits is 4, expected 8"},
      {"asym", [](nlohmann::json& q) { q["config_groups"]["group_0"]["input_activations"]["symmetric"] = false; },
       group + ".input_activations.symmetric is false, expected true"},
      {"packed", [](nlohmann::json& q) { q["format"] = "pack-quantized"; },
       "quantization_config.format is \"pack-quantized\", not the int8 layout qtune reads"},
      {"frozen", [](nlohmann::json& q) { q["quantization_status"] = "frozen"; },
       "quantization_config.quantization_status is \"frozen\""},
      {"no-groups", [](nlohmann::json& q) { q.erase("config_groups"); },
       "quantization_config.config_groups is missing or empty"},
      {"bad-regex", [](nlohmann::json& q) { q["ignore"] = {"re:(lm_head"}; },
       "quantization_config pattern 're:(lm_head' is not a regular expression"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto msg = load_error(with_config(dir, c.name, [&](nlohmann::json& j) { c.edit(j["quantization_config"]); }));
    EXPECT_TRUE(contains(msg, dir + "-" + c.name + "/config.json: " + c.expected)) << msg;
  }
}

// Targets and ignore entries match as compressed-tensors matches them.
TEST(W8A8Checkpoint, TargetsMatchAsCompressedTensorsMatches) {
  using quant::compressed_tensors_match;
  EXPECT_TRUE(compressed_tensors_match("Linear", "model.layers.0.self_attn.q_proj"));
  EXPECT_TRUE(compressed_tensors_match("re:.*q_proj", "model.layers.0.self_attn.q_proj"));
  EXPECT_TRUE(compressed_tensors_match("re:model.layers.0", "model.layers.0.self_attn.q_proj"));  // re.match: a prefix
  EXPECT_FALSE(compressed_tensors_match("re:layers.0", "model.layers.0.self_attn.q_proj"));       // anchored at 0
  EXPECT_TRUE(compressed_tensors_match("lm_head", "lm_head"));
  EXPECT_FALSE(compressed_tensors_match("q_proj", "model.layers.0.self_attn.q_proj"));
  auto config = quant::CompressedTensorsConfig::from_json(
      quant::CompressedTensorsConfig::w8a8_json({"lm_head", "re:.*layers\\.1\\.mlp\\..*"}), "config.json");
  EXPECT_TRUE(config.quantizes("model.layers.1.self_attn.o_proj"));
  EXPECT_FALSE(config.quantizes("model.layers.1.mlp.up_proj"));
  EXPECT_FALSE(config.quantizes("lm_head"));
}

}  // namespace
}  // namespace qtune::train
