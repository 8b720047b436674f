// LoRA adapters and merged models cross the boundary to PEFT / transformers both ways, in fp32 on CPU: an adapter
// PEFT saved loads into qtune with PEFT's logits, an adapter qtune saved loads into PEFT with qtune's logits, a merged
// export loads into transformers with qtune's logits, and an adapter on qtune's NF4 base matches PEFT's on bitsandbytes'.
// The oracle script tests/oracle/peft_adapters.py runs PEFT, as the ctest fixture and, for the checks of what qtune
// wrote, from here through the venv's python.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "qtune/export/merged_model.h"
#include "qtune/export/peft_adapter.h"
#include "qtune/io/safetensors.h"
#include "qtune/io/sharded_checkpoint.h"
#include "qtune/lora/inject.h"
#include "qtune/lora/lora_config.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quant_linear_factory.h"
#include "qtune/nn/quantized_linear.h"
#include "test_util.h"

namespace {

using namespace qtune;
const auto kFp32 = at::TensorOptions().dtype(at::kFloat);
constexpr double kTolerance = 1e-4;  // fp32 logits, both sides computing the same thing (reached: 0 to 4.3e-6)
// qtune's NF4 + double quant of a base against bitsandbytes' of the same fp32 weights: bitsandbytes' native 8-bit
// quantizer picks the second-nearest code for a few nested absmax values (README), which moves the logits a little.
// Reached: 6.4e-5 on logits up to 3.3; a real quantization error (a wrong block scale) moves them by ~0.1.
constexpr double kNf4Tolerance = 2e-4;
// The adapters must move the logits far beyond kTolerance, or agreeing would prove nothing.
constexpr double kMinShift = 0.05;

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  return nlohmann::json::parse(in);
}

nlohmann::json manifest() { return read_json(test::oracle_dir() + "/peft/manifest.json"); }

#define REQUIRE_PEFT_ORACLE()                                                                                  \
  do {                                                                                                         \
    if (!std::filesystem::exists(test::oracle_dir() + "/peft/manifest.json"))                                  \
      GTEST_FAIL() << "oracle outputs missing: run through ctest (the oracle_peft_adapters fixture)";          \
  } while (0)

double max_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

at::Tensor ids_of(const nlohmann::json& m) { return io::SafetensorsFile::open(m["ids"])->tensor("input_ids"); }

at::Tensor read_logits(const std::string& path) { return io::SafetensorsFile::open(path)->tensor("logits"); }

// The LoraConfigs of the oracle script's CASES (tests/oracle/peft_adapters.py), by name, with the base they sit on.
struct Case {
  std::string name, base;  // base: "base" (untied) or "base_tied"
  lora::LoraConfig config;
};

lora::LoraConfig lora_config(int64_t r, double alpha, std::vector<std::string> targets) {
  lora::LoraConfig c;
  c.r = r;
  c.alpha = alpha;
  c.dropout = 0;
  c.target_modules = std::move(targets);
  return c;
}

std::vector<Case> cases() {
  std::vector<Case> out;
  auto all = lora_config(8, 16, lora::projection_names());
  all.dropout = 0.1;
  out.push_back({"all_r8", "base", all});
  auto rs = lora_config(4, 8, {"all-linear"});
  rs.use_rslora = true;
  out.push_back({"rslora_r4", "base", rs});
  auto patterns = lora_config(4, 8, {"q_proj", "v_proj", "o_proj", "down_proj"});
  patterns.rank_pattern = {{"q_proj", 2}, {"layers.1.mlp.down_proj", 6}};
  patterns.alpha_pattern = {{"layers.1.self_attn.v_proj", 5.0}, {"o_proj", 3.0}};
  out.push_back({"patterns", "base", patterns});
  auto head = lora_config(4, 4, {"q_proj", "v_proj"});
  head.modules_to_save = {"lm_head"};
  out.push_back({"save_lm_head", "base", head});
  auto tied_head = lora_config(4, 4, {"k_proj", "up_proj"});
  tied_head.modules_to_save = {"lm_head"};
  out.push_back({"tied_save_lm_head", "base_tied", tied_head});
  auto tied_embed = lora_config(4, 8, {"o_proj", "gate_proj"});
  tied_embed.modules_to_save = {"embed_tokens"};
  out.push_back({"tied_save_embed", "base_tied", tied_embed});
  out.push_back({"full_names", "base", lora_config(4, 8, {"model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"})});
  return out;
}

const nlohmann::json& manifest_case(const nlohmann::json& m, const std::string& name) {
  for (const auto& c : m["cases"])
    if (c["name"] == name) return c;
  throw std::runtime_error("oracle manifest has no case " + name);
}

// Base weights from `base_dir` through `base_factory`, adapters as `config` says, modules_to_save applied; eval mode.
nn::CausalLM build(const std::string& base_dir, nn::LinearFactory& base_factory, const lora::LoraConfig& config) {
  auto checkpoint = io::ShardedCheckpoint::open(base_dir);
  lora::LoraLinearFactory factory(base_factory, config, /*seed=*/7);
  auto model = std::make_shared<nn::CausalLMImpl>(io::ModelConfig::load(base_dir), factory, *checkpoint, kFp32);
  lora::apply_modules_to_save(*model, config.modules_to_save);
  model->eval();
  return model;
}

nn::CausalLM build_dense(const std::string& base_dir, const lora::LoraConfig& config) {
  nn::DenseLinearFactory dense(kFp32);
  return build(base_dir, dense, config);
}

// What training would leave: every lora_A / lora_B random and non-zero, every modules_to_save copy moved.
void train_randomly(nn::CausalLMImpl& model, uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& [name, p] : lora::trainable_parameters(model)) {
    if (name.find(".lora_A.") != std::string::npos || name.find(".lora_B.") != std::string::npos)
      p.copy_(at::normal(0.0, 0.1, p.sizes(), gen, kFp32));
    else
      p.add_(at::normal(0.0, 0.05, p.sizes(), gen, kFp32));
  }
}

at::Tensor logits(nn::CausalLMImpl& model, const at::Tensor& ids) {
  torch::NoGradGuard no_grad;
  return model.forward(ids);
}

// Runs the oracle script in one of its loading modes; false when it fails (its output is in log).
bool run_oracle(const std::string& mode, const std::vector<std::string>& args, const std::string& log) {
  std::string cmd = std::string("TORCHDYNAMO_DISABLE=1 OMP_NUM_THREADS=1 ") + QTUNE_TEST_PYTHON + " " +
                    QTUNE_TEST_SOURCE_DIR + "/tests/oracle/peft_adapters.py " + mode;
  for (const auto& a : args) cmd += " '" + a + "'";
  cmd += " > '" + log + "' 2>&1";
  return std::system(cmd.c_str()) == 0;
}

std::string log_tail(const std::string& path) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.size() > 3000 ? text.substr(text.size() - 3000) : text;
}

std::vector<std::string> module_names(const io::ModelConfig& cfg) {
  std::vector<std::string> out;
  for (int64_t i = 0; i < cfg.num_hidden_layers; ++i)
    for (const auto& p : lora::projection_names()) {
      const bool attention = p == "q_proj" || p == "k_proj" || p == "v_proj" || p == "o_proj";
      out.push_back("model.layers." + std::to_string(i) + (attention ? ".self_attn." : ".mlp.") + p);
    }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// 1. PEFT → qtune

TEST(OraclePeft, PeftConfigReadsAsPeftResolvesIt) {
  REQUIRE_PEFT_ORACLE();
  const auto m = manifest();
  for (const auto& c : cases()) {
    SCOPED_TRACE(c.name);
    const auto dir = manifest_case(m, c.name)["adapter"].get<std::string>();
    lora::LoraConfig read;
    try {
      read = exporting::read_peft_config(dir);
    } catch (const Error& e) {
      ADD_FAILURE() << "qtune cannot read PEFT's adapter_config.json: " << e.what();
      continue;
    }
    EXPECT_EQ(read.use_rslora, c.config.use_rslora);
    EXPECT_EQ(read.modules_to_save, c.config.modules_to_save);
    EXPECT_DOUBLE_EQ(read.dropout, c.config.dropout);
    // Every projection gets the adapter (or none) PEFT gave it: targets, ranks and scales after the patterns.
    for (const auto& module : module_names(io::ModelConfig::load(m["bases"][c.base].get<std::string>()))) {
      SCOPED_TRACE(module);
      const auto want = c.config.resolve(module), got = read.resolve(module);
      ASSERT_EQ(got.has_value(), want.has_value());
      if (!want) continue;
      EXPECT_EQ(got->r, want->r);
      EXPECT_DOUBLE_EQ(got->scale, want->scale);
    }
  }
}

TEST(OraclePeft, PeftAdapterLoadsIntoQtuneWithPeftLogits) {
  REQUIRE_PEFT_ORACLE();
  const auto m = manifest();
  const auto ids = ids_of(m);
  for (const auto& c : cases()) {
    SCOPED_TRACE(c.name);
    const auto& mc = manifest_case(m, c.name);
    const auto dir = mc["adapter"].get<std::string>();
    // What a user does with a PEFT adapter: the config from its adapter_config.json, a dense base, then the tensors.
    lora::LoraConfig config;
    try {
      config = exporting::read_peft_config(dir);
    } catch (const Error& e) {
      // Reported, then checked with the config PEFT was given, so that the tensors and the logits are still tested.
      ADD_FAILURE() << "qtune cannot read PEFT's adapter_config.json: " << e.what();
      config = c.config;
    }
    try {
      auto model = build_dense(mc["base"], config);
      exporting::load_peft_adapter(*model, dir);
      EXPECT_LE(max_diff(logits(*model, ids), read_logits(mc["logits"])), kTolerance);
    } catch (const Error& e) {
      ADD_FAILURE() << "qtune cannot load PEFT's adapter " << dir << ": " << e.what();
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// 2. qtune → PEFT

TEST(OraclePeft, QtuneAdapterLoadsIntoPeftWithQtuneLogits) {
  REQUIRE_PEFT_ORACLE();
  const auto m = manifest();
  const auto ids = ids_of(m);
  const auto base_logits = io::SafetensorsFile::open(m["base_logits"]);
  const auto dir = test::temp_dir();
  std::vector<std::string> args;
  std::map<std::string, at::Tensor> ours;
  uint64_t seed = 20;
  for (const auto& c : cases()) {
    SCOPED_TRACE(c.name);
    const auto base_dir = m["bases"][c.base].get<std::string>();
    auto model = build_dense(base_dir, c.config);
    train_randomly(*model, seed++);
    exporting::save_peft_adapter(*model, c.config, base_dir, dir + "/" + c.name);
    ours[c.name] = logits(*model, ids);
    ASSERT_GT(max_diff(ours[c.name], base_logits->tensor(c.base)), kMinShift);
    args.insert(args.end(), {base_dir, dir + "/" + c.name, m["ids"], dir + "/" + c.name + ".peft.safetensors"});
  }
  ASSERT_TRUE(run_oracle("--load-adapter", args, dir + "/log.txt"))
      << "PEFT failed to load qtune's adapters:\n" << log_tail(dir + "/log.txt");
  for (const auto& c : cases()) {
    SCOPED_TRACE(c.name);
    EXPECT_LE(max_diff(ours[c.name], read_logits(dir + "/" + c.name + ".peft.safetensors")), kTolerance);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// 3. merged export → transformers

TEST(OraclePeft, MergedExportLoadsIntoTransformersWithQtuneLogits) {
  REQUIRE_PEFT_ORACLE();
  const auto m = manifest();
  const auto ids = ids_of(m);
  const auto dir = test::temp_dir();
  std::vector<std::string> args;
  std::map<std::string, at::Tensor> ours;
  uint64_t seed = 40;
  for (const auto& c : cases()) {
    SCOPED_TRACE(c.name);
    auto model = build_dense(m["bases"][c.base].get<std::string>(), c.config);
    train_randomly(*model, seed++);
    ours[c.name] = logits(*model, ids);
    exporting::MergedExportOptions options;
    options.dtype = at::kFloat;
    exporting::save_merged_model(*model, dir + "/" + c.name, options);
    const auto config = read_json(dir + "/" + c.name + "/config.json");
    EXPECT_FALSE(config.contains("quantization_config"));
    // lm_head trained apart from the embeddings (either way round) makes a tied base untied.
    if (c.base == "base_tied") {
      EXPECT_EQ(config["tie_word_embeddings"], false);
    }
    args.insert(args.end(), {dir + "/" + c.name, m["ids"], dir + "/" + c.name + ".tf.safetensors"});
  }
  {
    // Sharded: several model-0000i-of-0000n.safetensors and the index transformers reads.
    const auto c = cases()[0];
    auto model = build_dense(m["bases"][c.base].get<std::string>(), c.config);
    train_randomly(*model, 40);
    exporting::MergedExportOptions options;
    options.max_shard_bytes = 64 << 10;
    exporting::save_merged_model(*model, dir + "/sharded", options);
    EXPECT_TRUE(std::filesystem::exists(dir + "/sharded/model.safetensors.index.json"));
    EXPECT_FALSE(std::filesystem::exists(dir + "/sharded/model.safetensors"));
    args.insert(args.end(), {dir + "/sharded", m["ids"], dir + "/sharded.tf.safetensors"});
    ours["sharded"] = ours[c.name];
  }
  ASSERT_TRUE(run_oracle("--load-merged", args, dir + "/log.txt"))
      << "transformers failed to load qtune's merged exports:\n" << log_tail(dir + "/log.txt");
  for (const auto& [name, want] : ours) {
    SCOPED_TRACE(name);
    EXPECT_LE(max_diff(want, read_logits(dir + "/" + name + ".tf.safetensors")), kTolerance);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// 4. 4-bit: qtune's NF4 base + adapter against transformers + bitsandbytes (CPU) + PEFT

TEST(OraclePeft, AdapterOnNf4BaseMatchesPeftOnBitsandbytes) {
  REQUIRE_PEFT_ORACLE();
  const auto m = manifest();
  if (m["base_nf4"].is_null())
    GTEST_SKIP() << "bitsandbytes could not quantize the base on this CPU in the oracle run: "
                 << m["base_nf4_error"].get<std::string>();
  const auto ids = ids_of(m);
  const auto base_dir = m["bases"]["base"].get<std::string>();
  const auto dir = test::temp_dir();
  auto config = lora_config(8, 16, {"all-linear"});
  config.rank_pattern = {{"q_proj", 4}};
  config.modules_to_save = {"lm_head"};

  // (a) qtune quantizes the fp32 base itself (default plan: NF4 + double quant, block 64).
  nn::QuantLinearFactory nf4(quant::QuantPlan{}, kFp32);
  auto ours = build(base_dir, nf4, config);
  const auto untrained = logits(*ours, ids);  // B = 0 and lm_head as loaded: the 4-bit base alone
  train_randomly(*ours, 60);
  int quantized = 0;
  for (const auto& item : ours->named_modules("", false))
    quantized += std::dynamic_pointer_cast<nn::QuantizedLinearImpl>(item.value()) != nullptr;
  ASSERT_EQ(quantized, 2 * 7) << "every projection should be a 4-bit linear under its adapter";
  exporting::save_peft_adapter(*ours, config, base_dir, dir + "/adapter");
  const auto ours_logits = logits(*ours, ids);
  ASSERT_GT(max_diff(ours_logits, untrained), kMinShift);

  // (b) qtune reads the base bitsandbytes quantized (same codes as PEFT's side) and the adapter qtune saved.
  nn::QuantLinearFactory stored(quant::QuantPlan{}, kFp32, quant::StoredQuantization::bitsandbytes());
  auto on_bnb = build(m["base_nf4"].get<std::string>(), stored, exporting::read_peft_config(dir + "/adapter"));
  exporting::load_peft_adapter(*on_bnb, dir + "/adapter");
  const auto on_bnb_logits = logits(*on_bnb, ids);

  ASSERT_TRUE(run_oracle("--load-adapter-4bit",
                         {base_dir, dir + "/adapter", m["ids"], dir + "/quantized_by_bnb.safetensors",
                          m["base_nf4"], dir + "/adapter", m["ids"], dir + "/stored_bnb.safetensors"},
                         dir + "/log.txt"))
      << "transformers + bitsandbytes + PEFT failed:\n" << log_tail(dir + "/log.txt");
  const auto peft_quantized = read_logits(dir + "/quantized_by_bnb.safetensors");
  const auto peft_stored = read_logits(dir + "/stored_bnb.safetensors");
  // bitsandbytes quantizing while loading and reading its own saved checkpoint are the same model.
  EXPECT_LE(max_diff(peft_quantized, peft_stored), kTolerance);
  // Same 4-bit codes on both sides: only the arithmetic order differs.
  EXPECT_LE(max_diff(on_bnb_logits, peft_stored), kTolerance);
  // qtune's own NF4 quantization of the fp32 base against bitsandbytes'.
  const double diff = max_diff(ours_logits, peft_quantized);
  EXPECT_LE(diff, kNf4Tolerance) << "qtune's NF4 quantization differs from bitsandbytes' (max |logit| "
                              << peft_quantized.abs().max().item<double>() << ")";
}

}  // namespace
