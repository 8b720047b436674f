// ModelConfig: config.json in the transformers 4 layout (rope_theta + rope_scaling) and the transformers 5
// layout (rope_parameters), defaults, the to_json round trip, and errors that name the key.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "qtune/io/hf_config.h"
#include "qtune/io/model_family.h"
#include "test_util.h"

namespace qtune::io {
namespace {

using json = nlohmann::json;
using qtune::test::error_of;
using qtune::test::temp_dir;

constexpr const char* kSrc = "models/test/config.json";

::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "message \"" << text << "\" does not contain \"" << part << "\"";
}

// The smallest valid llama config.
json base() {
  return {{"model_type", "llama"},       {"hidden_size", 64},        {"intermediate_size", 172},
          {"num_hidden_layers", 2},      {"num_attention_heads", 8}, {"num_key_value_heads", 4},
          {"vocab_size", 512}};
}

// The error from_json gives for `j`, checked to name the source.
std::string config_error(const json& j) {
  const auto msg = error_of([&] { ModelConfig::from_json(j, kSrc); });
  EXPECT_TRUE(Contains(msg, kSrc));
  return msg;
}

void expect_same(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.model_type, b.model_type);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.num_key_value_heads, b.num_key_value_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.rope.type, b.rope.type);
  EXPECT_EQ(a.rope.theta, b.rope.theta);
  EXPECT_EQ(a.rope.factor, b.rope.factor);
  EXPECT_EQ(a.rope.low_freq_factor, b.rope.low_freq_factor);
  EXPECT_EQ(a.rope.high_freq_factor, b.rope.high_freq_factor);
  EXPECT_EQ(a.rope.original_max_position_embeddings, b.rope.original_max_position_embeddings);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.sliding_window, b.sliding_window);
  EXPECT_EQ(a.attention_bias, b.attention_bias);
  EXPECT_EQ(a.mlp_bias, b.mlp_bias);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
  EXPECT_EQ(a.pad_token_id, b.pad_token_id);
  EXPECT_EQ(a.initializer_range, b.initializer_range);
  EXPECT_EQ(a.torch_dtype, b.torch_dtype);
  EXPECT_EQ(a.num_parameters(), b.num_parameters());
}

TEST(HfConfig, ParsesTheRealStories260K) {
  QTUNE_REQUIRE_SHARED();
  const auto dir = qtune::test::shared_dir() + "/models/stories260K";
  const auto c = ModelConfig::load(dir);  // the directory, or the file itself
  expect_same(c, ModelConfig::load(dir + "/config.json"));
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 172);
  EXPECT_EQ(c.num_hidden_layers, 5);
  EXPECT_EQ(c.num_attention_heads, 8);
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.kv_groups(), 2);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.rope.type, "default");
  EXPECT_DOUBLE_EQ(c.rope.theta, 10000.0);
  EXPECT_EQ(c.max_position_embeddings, 512);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{2});
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_EQ(c.torch_dtype, "float32");
}

TEST(HfConfig, Transformers5RopeParameters) {
  auto j = base();
  j["rope_parameters"] = {{"rope_type", "llama3"},      {"factor", 8.0},
                          {"low_freq_factor", 1.0},     {"high_freq_factor", 4.0},
                          {"original_max_position_embeddings", 8192}, {"rope_theta", 500000.0}};
  j["dtype"] = "bfloat16";  // transformers 5 renamed torch_dtype
  const auto c = ModelConfig::from_json(j, kSrc);
  EXPECT_EQ(c.rope.type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope.theta, 500000.0);
  EXPECT_DOUBLE_EQ(c.rope.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.torch_dtype, "bfloat16");

  // rope_type "default" with only a theta.
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
  const auto d = ModelConfig::from_json(j, kSrc);
  EXPECT_EQ(d.rope.type, "default");
  EXPECT_DOUBLE_EQ(d.rope.theta, 1e6);
}

TEST(HfConfig, Transformers4RopeScaling) {
  auto j = base();
  j["rope_theta"] = 1000000.0;
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  const auto c = ModelConfig::from_json(j, kSrc);
  EXPECT_EQ(c.rope.type, "linear");
  EXPECT_DOUBLE_EQ(c.rope.factor, 2.0);
  EXPECT_DOUBLE_EQ(c.rope.theta, 1e6);

  j["rope_scaling"] = nullptr;  // the usual transformers 4 default
  j.erase("rope_theta");
  const auto d = ModelConfig::from_json(j, kSrc);
  EXPECT_EQ(d.rope.type, "default");
  EXPECT_DOUBLE_EQ(d.rope.theta, 10000.0);
  EXPECT_DOUBLE_EQ(d.rope.factor, 1.0);
}

TEST(HfConfig, MistralWithSlidingWindow) {
  auto j = base();
  j["model_type"] = "mistral";
  j["sliding_window"] = 4096;
  auto c = ModelConfig::from_json(j, kSrc);
  EXPECT_EQ(c.model_type, "mistral");
  EXPECT_EQ(c.sliding_window, 4096);

  j["sliding_window"] = nullptr;
  c = ModelConfig::from_json(j, kSrc);
  EXPECT_FALSE(c.sliding_window.has_value());

  j["sliding_window"] = 0;
  EXPECT_TRUE(Contains(config_error(j), "key 'sliding_window' must be positive or null, got 0"));
  j["sliding_window"] = "4096";
  EXPECT_TRUE(Contains(config_error(j), "key 'sliding_window' must be an integer or null"));
}

TEST(HfConfig, DefaultsHeadDimAndKvHeads) {
  auto j = base();
  j["num_attention_heads"] = 4;
  j.erase("num_key_value_heads");
  const auto c = ModelConfig::from_json(j, kSrc);
  EXPECT_EQ(c.head_dim, 16);  // hidden / heads
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.kv_groups(), 1);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_TRUE(c.eos_token_ids.empty());
  EXPECT_FALSE(c.bos_token_id.has_value());

  j["head_dim"] = nullptr;  // null means absent
  EXPECT_EQ(ModelConfig::from_json(j, kSrc).head_dim, 16);
  j["head_dim"] = 32;  // explicit head_dim wins over hidden / heads
  EXPECT_EQ(ModelConfig::from_json(j, kSrc).head_dim, 32);
}

TEST(HfConfig, EosTokenIdAsList) {
  auto j = base();
  j["eos_token_id"] = {128001, 128008, 128009};
  EXPECT_EQ(ModelConfig::from_json(j, kSrc).eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  j["eos_token_id"] = 2;
  EXPECT_EQ(ModelConfig::from_json(j, kSrc).eos_token_ids, std::vector<int64_t>{2});
  j["eos_token_id"] = {2, "x"};
  EXPECT_TRUE(Contains(config_error(j), "key 'eos_token_id' must hold integers"));
  j["eos_token_id"] = "2";
  EXPECT_TRUE(Contains(config_error(j), "key 'eos_token_id' must be an integer or a list of integers"));
}

TEST(HfConfig, ToJsonRoundTrips) {
  // A llama3 config with everything set.
  auto j = base();
  j["rope_parameters"] = {{"rope_type", "llama3"},  {"factor", 32.0},
                          {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                          {"original_max_position_embeddings", 8192}, {"rope_theta", 500000.0}};
  j["eos_token_id"] = {7, 9};
  j["bos_token_id"] = 1;
  j["pad_token_id"] = 0;
  j["tie_word_embeddings"] = true;
  j["attention_bias"] = true;
  j["mlp_bias"] = true;
  j["rms_norm_eps"] = 1e-5;
  j["max_position_embeddings"] = 131072;
  j["initializer_range"] = 0.01;
  j["torch_dtype"] = "bfloat16";
  j["head_dim"] = 16;
  const auto c = ModelConfig::from_json(j, kSrc);
  const auto back = ModelConfig::from_json(c.to_json(), "round trip");
  expect_same(c, back);
  // Through text, as written to disk.
  expect_same(c, ModelConfig::from_json(json::parse(c.to_json().dump(2)), "text"));

  // Mistral with a sliding window and linear rope; and the default rope with one eos.
  auto m = base();
  m["model_type"] = "mistral";
  m["sliding_window"] = 128;
  m["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 4.0}};
  m["eos_token_id"] = 2;
  const auto mc = ModelConfig::from_json(m, kSrc);
  expect_same(mc, ModelConfig::from_json(mc.to_json(), "round trip"));
  const auto dc = ModelConfig::from_json(base(), kSrc);
  expect_same(dc, ModelConfig::from_json(dc.to_json(), "round trip"));

  // And through a file on disk.
  const auto path = temp_dir() + "/config.json";
  std::ofstream(path) << c.to_json().dump(2);
  expect_same(c, ModelConfig::load(path));
}

// ---- the families ----------------------------------------------------------------------------------

json family(const std::string& model_type) {
  auto j = base();
  j["model_type"] = model_type;
  j["num_hidden_layers"] = 3;
  return j;
}

void expect_same_family(const ModelConfig& a, const ModelConfig& b) {
  expect_same(a, b);
  EXPECT_EQ(a.qkv_bias, b.qkv_bias);
  EXPECT_EQ(a.norm_plus_one, b.norm_plus_one);
  EXPECT_EQ(a.sandwich_norms, b.sandwich_norms);
  EXPECT_EQ(a.qk_norm, b.qk_norm);
  EXPECT_EQ(a.activation, b.activation);
  EXPECT_EQ(a.scale_embeddings, b.scale_embeddings);
  EXPECT_EQ(a.query_pre_attn_scalar, b.query_pre_attn_scalar);
  EXPECT_EQ(a.attn_logit_softcapping, b.attn_logit_softcapping);
  EXPECT_EQ(a.final_logit_softcapping, b.final_logit_softcapping);
  for (int64_t i = 0; i < a.num_hidden_layers; ++i) EXPECT_EQ(a.layer_attention(i), b.layer_attention(i)) << i;
  ASSERT_EQ(a.local_rope.has_value(), b.local_rope.has_value());
  if (a.local_rope) {
    EXPECT_EQ(a.local_rope->type, b.local_rope->type);
    EXPECT_EQ(a.local_rope->theta, b.local_rope->theta);
    EXPECT_EQ(a.local_rope->factor, b.local_rope->factor);
  }
  EXPECT_EQ(a.fused_qkv, b.fused_qkv);
  EXPECT_EQ(a.fused_gate_up, b.fused_gate_up);
}

TEST(HfConfig, EveryFamilyRoundTripsThroughToJson) {
  std::vector<json> configs;
  auto q2 = family("qwen2");
  q2["use_sliding_window"] = true, q2["sliding_window"] = 16, q2["max_window_layers"] = 1;
  configs.push_back(q2);
  auto q3 = family("qwen3");
  q3["head_dim"] = 24, q3["attention_bias"] = true;
  configs.push_back(q3);
  auto g2 = family("gemma2");
  g2["head_dim"] = 16, g2["query_pre_attn_scalar"] = 24, g2["final_logit_softcapping"] = nullptr;
  configs.push_back(g2);
  auto g3 = family("gemma3_text");
  g3["head_dim"] = 16, g3["sliding_window_pattern"] = 2, g3["rope_local_base_freq"] = 20000.0;
  g3["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 8.0}};
  configs.push_back(g3);
  auto g3_scaled_local = family("gemma3_text");  // only the transformers 5 layout can say this
  g3_scaled_local["head_dim"] = 16;
  g3_scaled_local["rope_parameters"] = {
      {"full_attention", {{"rope_type", "default"}, {"rope_theta", 1e6}}},
      {"sliding_attention", {{"rope_type", "linear"}, {"factor", 2.0}, {"rope_theta", 1e4}}}};
  configs.push_back(g3_scaled_local);
  auto p3 = family("phi3");
  p3["sliding_window"] = 2047;
  configs.push_back(p3);
  auto nemo = family("mistral");
  nemo["head_dim"] = 32, nemo["sliding_window"] = nullptr;
  configs.push_back(nemo);
  for (const auto& j : configs) {
    SCOPED_TRACE(j.dump());
    const auto c = ModelConfig::from_json(j, kSrc);
    expect_same_family(c, ModelConfig::from_json(json::parse(c.to_json().dump(2)), "round trip"));
  }
}

TEST(HfConfig, FamiliesSetTheirOptions) {
  auto j = family("gemma2");
  j["head_dim"] = 16;
  auto g = ModelConfig::from_json(j, kSrc);
  EXPECT_TRUE(g.norm_plus_one && g.sandwich_norms && g.scale_embeddings && !g.qk_norm);
  EXPECT_EQ(g.activation, Activation::GeluTanh);
  EXPECT_EQ(g.attn_logit_softcapping, 50.0);  // Gemma2Config's defaults when the keys are absent
  EXPECT_EQ(g.final_logit_softcapping, 30.0);
  EXPECT_DOUBLE_EQ(g.attention_scale(), 1.0 / 16.0);  // query_pre_attn_scalar 256
  EXPECT_EQ(g.layer_attention(0), LayerAttention::Sliding);
  EXPECT_EQ(g.layer_attention(1), LayerAttention::Full);
  EXPECT_TRUE(g.tie_word_embeddings);

  const auto q2 = ModelConfig::from_json(family("qwen2"), kSrc);
  EXPECT_TRUE(q2.has_qkv_bias() && !q2.has_o_bias());
  EXPECT_FALSE(q2.has_sliding_layers());  // use_sliding_window false by default

  const auto q3 = ModelConfig::from_json(family("qwen3"), kSrc);
  EXPECT_TRUE(q3.qk_norm);
  EXPECT_EQ(q3.head_dim, 128);  // Qwen3Config's default, not hidden / heads

  const auto p3 = ModelConfig::from_json(family("phi3"), kSrc);
  const auto linears = layer_linears(p3);
  ASSERT_EQ(linears.size(), 4u);
  EXPECT_EQ(linears[0].name, "self_attn.qkv_proj");
  EXPECT_EQ(linears[0].out_features, 64 + 2 * 4 * 8);  // q + k + v rows
  EXPECT_EQ(linears[2].name, "mlp.gate_up_proj");
  EXPECT_EQ(linears[2].out_features, 2 * 172);
  EXPECT_EQ(p3.to_json()["architectures"][0], "Phi3ForCausalLM");
}

TEST(HfConfig, LayerTypesOfTheWrongLengthNameTheKey) {
  auto j = family("gemma2");
  j["layer_types"] = {"sliding_attention", "full_attention"};
  EXPECT_TRUE(Contains(config_error(j), "key 'layer_types' has 2 entries but num_hidden_layers is 3"));
  j["layer_types"] = {"sliding_attention", "full_attention", "chunked_attention"};
  EXPECT_TRUE(Contains(config_error(j), "key 'layer_types' entry 2 is \"chunked_attention\""));
  auto q = family("qwen2");  // sliding layers but no window: use_sliding_window is false
  q["layer_types"] = {"full_attention", "sliding_attention", "sliding_attention"};
  EXPECT_TRUE(Contains(config_error(q), "key 'layer_types' has sliding_attention layers but there is no window"));
}

TEST(HfConfig, KeysAFamilyCannotHonourAreErrors) {
  auto llama = base();
  llama["final_logit_softcapping"] = 30.0;
  auto msg = config_error(llama);
  EXPECT_TRUE(Contains(msg, "key 'final_logit_softcapping' (30.0) cannot be honoured for model_type 'llama'"));
  auto qwen = family("qwen3");
  qwen["attn_logit_softcapping"] = 50.0;
  EXPECT_TRUE(Contains(config_error(qwen), "key 'attn_logit_softcapping'"));
  auto g3 = family("gemma3_text");
  g3["attn_logit_softcapping"] = 50.0;  // transformers' Gemma 3 ignores it: refused, not silently dropped
  EXPECT_TRUE(Contains(config_error(g3), "key 'attn_logit_softcapping' (50) cannot be honoured for model_type 'gemma3_text'"));
  auto phi = family("phi3");
  // LongRoPE is read (OracleFamilies' phi3_longrope), but its factors must cover every frequency of the head.
  phi["rope_scaling"] = {{"type", "longrope"}, {"short_factor", {1.0}}, {"long_factor", {1.0}}};
  msg = config_error(phi);
  EXPECT_TRUE(Contains(msg, "(rope_scaling): key 'short_factor' must list 4 numbers (head_dim / 2), got [1.0]")) << msg;
  phi["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
  EXPECT_TRUE(Contains(config_error(phi), "(rope_scaling): rope type 'dynamic' is not supported for phi3 (expected "
                                          "default or longrope)"));
  phi.erase("rope_scaling");
  phi["partial_rotary_factor"] = 0.75;
  EXPECT_TRUE(Contains(config_error(phi), "key 'partial_rotary_factor' = 0.75 is not supported"));
  phi.erase("partial_rotary_factor");
  phi["resid_pdrop"] = 0.1;
  EXPECT_TRUE(Contains(config_error(phi), "key 'resid_pdrop' = 0.1 is not supported"));
  auto g2 = family("gemma2");
  g2["hidden_activation"] = "gelu";
  EXPECT_TRUE(Contains(config_error(g2), "hidden_activation \"gelu\" is not supported (expected \"gelu_pytorch_tanh\")"));
  auto mm = family("gemma3");
  EXPECT_TRUE(Contains(config_error(mm), "model_type 'gemma3' is Gemma 3 with its vision tower"));
  EXPECT_TRUE(Contains(config_error(mm), "gemma3_text"));
}

// ---- errors naming the key -------------------------------------------------------------------------

TEST(HfConfig, MissingHiddenSize) {
  auto j = base();
  j.erase("hidden_size");
  EXPECT_TRUE(Contains(config_error(j), "missing required key 'hidden_size' (an integer)"));
  j["hidden_size"] = nullptr;
  EXPECT_TRUE(Contains(config_error(j), "missing required key 'hidden_size'"));
}

TEST(HfConfig, HiddenSizeAsString) {
  auto j = base();
  j["hidden_size"] = "64";
  EXPECT_TRUE(Contains(config_error(j), "key 'hidden_size' must be an integer, got \"64\""));
  j["hidden_size"] = 64.5;
  EXPECT_TRUE(Contains(config_error(j), "key 'hidden_size' must be an integer, got 64.5"));
  j["hidden_size"] = -64;
  EXPECT_TRUE(Contains(config_error(j), "key 'hidden_size' must be a positive integer, got -64"));
}

TEST(HfConfig, UnsupportedModelType) {
  auto j = base();
  j["model_type"] = "gpt2";
  const auto msg = config_error(j);
  EXPECT_TRUE(Contains(msg, "model_type 'gpt2' is not supported"));
  EXPECT_TRUE(Contains(msg, "expected one of llama, mistral, qwen2, qwen3, gemma2, gemma3_text, phi3"));
  j.erase("model_type");
  EXPECT_TRUE(Contains(config_error(j), "missing required key 'model_type'"));
  EXPECT_TRUE(Contains(config_error(json::array()), "expected a JSON object"));
}

TEST(HfConfig, HeadsNotAMultipleOfKvHeads) {
  auto j = base();
  j["num_key_value_heads"] = 3;
  EXPECT_TRUE(Contains(config_error(j), "num_attention_heads (8) must be a multiple of num_key_value_heads (3)"));
  j["num_key_value_heads"] = 4;
  j["hidden_size"] = 60;
  EXPECT_TRUE(Contains(config_error(j), "hidden_size (60) is not divisible by num_attention_heads (8)"));
  j["head_dim"] = 7;
  EXPECT_TRUE(Contains(config_error(j), "head_dim (7) must be even"));
}

TEST(HfConfig, UnsupportedRopeType) {
  auto j = base();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  auto msg = config_error(j);
  EXPECT_TRUE(Contains(msg, "(rope_scaling)"));
  EXPECT_TRUE(Contains(msg, "rope type 'yarn' is not supported (expected default, linear or llama3)"));
  j.erase("rope_scaling");
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"rope_theta", 1e4}};
  msg = config_error(j);
  EXPECT_TRUE(Contains(msg, "(rope_parameters)"));
  EXPECT_TRUE(Contains(msg, "rope type 'yarn'"));
}

TEST(HfConfig, MalformedRopeParameters) {
  auto j = base();
  j["rope_scaling"] = "linear";
  EXPECT_TRUE(Contains(config_error(j), "key 'rope_scaling' must be an object or null"));
  j["rope_scaling"] = {{"type", "linear"}};
  auto msg = config_error(j);
  EXPECT_TRUE(Contains(msg, "(rope_scaling)"));
  EXPECT_TRUE(Contains(msg, "missing required key 'factor'"));
  j["rope_scaling"] = {{"type", "linear"}, {"factor", -2.0}};
  EXPECT_TRUE(Contains(config_error(j), "factor must be positive, got -2"));
  j["rope_scaling"] = {{"rope_type", 3}, {"factor", 2.0}};
  msg = config_error(j);
  EXPECT_TRUE(Contains(msg, "(rope_scaling)"));
  EXPECT_TRUE(Contains(msg, "'rope_type'"));
  j.erase("rope_scaling");
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", "1e4"}};
  EXPECT_TRUE(Contains(config_error(j), "key 'rope_theta' must be a number"));
  j["rope_parameters"] = {{"rope_type", "llama3"},  {"factor", 8.0},
                          {"low_freq_factor", 4.0}, {"high_freq_factor", 1.0},
                          {"original_max_position_embeddings", 8192}};
  EXPECT_TRUE(Contains(config_error(j), "high_freq_factor (1) must exceed low_freq_factor (4)"));
}

TEST(HfConfig, Llama3RopeWithoutOriginalMaxPositions) {
  auto j = base();
  j["rope_parameters"] = {{"rope_type", "llama3"},  {"factor", 8.0},    {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0}, {"rope_theta", 5e5}};
  const auto msg = config_error(j);
  EXPECT_TRUE(Contains(msg, "(rope_parameters)"));
  EXPECT_TRUE(Contains(msg, "missing required key 'original_max_position_embeddings'"));
}

TEST(HfConfig, UnsupportedHiddenAct) {
  auto j = base();
  j["hidden_act"] = "gelu";
  EXPECT_TRUE(Contains(config_error(j), "hidden_act \"gelu\" is not supported (expected \"silu\")"));
  j["hidden_act"] = "silu";
  j["pretraining_tp"] = 2;
  EXPECT_TRUE(Contains(config_error(j), "pretraining_tp 2 is not supported (expected 1)"));
}

TEST(HfConfig, LoadMissingFileNamesThePath) {
  const auto dir = temp_dir();
  const auto path = dir + "/absent/config.json";
  auto msg = error_of([&] { ModelConfig::load(path); });
  EXPECT_TRUE(Contains(msg, path));
  EXPECT_TRUE(Contains(msg, "config.json not found"));
  // A directory without a config.json.
  msg = error_of([&] { ModelConfig::load(dir); });
  EXPECT_TRUE(Contains(msg, dir + "/config.json"));
  EXPECT_TRUE(Contains(msg, "not found"));
}

TEST(HfConfig, LoadInvalidJsonNamesThePath) {
  const auto dir = temp_dir();
  const auto path = dir + "/config.json";
  for (const std::string& text : {std::string("{\"model_type\": \"llama\","), std::string(""), std::string("{}}")}) {
    std::ofstream(path, std::ios::trunc) << text;
    const auto msg = error_of([&] { ModelConfig::load(path); });
    EXPECT_TRUE(Contains(msg, path)) << text;
    EXPECT_TRUE(Contains(msg, "not valid JSON")) << text;
  }
  // Valid JSON with a bad key: the error names the file too.
  auto j = base();
  j["vocab_size"] = 0;
  std::ofstream(path, std::ios::trunc) << j.dump();
  const auto msg = error_of([&] { ModelConfig::load(dir); });
  EXPECT_TRUE(Contains(msg, path));
  EXPECT_TRUE(Contains(msg, "key 'vocab_size' must be a positive integer, got 0"));
}

}  // namespace
}  // namespace qtune::io
