// The model families beyond Llama, each against transformers and PEFT on the same files: the oracle fixture
// (tests/oracle/model_families.py) built tiny random Qwen2, Qwen3, Gemma 2, Gemma 3 text, Phi-3 and Mistral-Nemo-shaped
// models with transformers' own classes and recorded their logits, greedy tokens, and a PEFT adapter's loss and
// gradients. qtune loads the same directories through its one decoder and must agree; what qtune writes (PEFT adapter,
// merged model) must load back into PEFT / transformers with qtune's logits.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "qtune/eval/generate.h"
#include "qtune/export/merged_model.h"
#include "qtune/export/peft_adapter.h"
#include "qtune/io/model_family.h"
#include "qtune/io/model_weights.h"
#include "qtune/io/safetensors.h"
#include "qtune/io/sharded_checkpoint.h"
#include "qtune/lora/inject.h"
#include "qtune/nn/kv_cache.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quant_linear_factory.h"
#include "qtune/nn/quantized_linear.h"
#include "qtune/train/chunked_loss.h"
#include "test_util.h"

namespace {

using namespace qtune;
const auto kFp32 = at::TensorOptions().dtype(at::kFloat);
constexpr double kLogitTolerance = 1e-4;     // fp32 logits, absolute (the bound)
constexpr double kRelativeTolerance = 1e-4;  // loss and LoRA gradients, relative to PEFT's

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  return nlohmann::json::parse(in);
}

std::string families_dir() { return test::oracle_dir() + "/families"; }

#define REQUIRE_FAMILIES_ORACLE()                                                                                 \
  do {                                                                                                            \
    if (!std::filesystem::exists(families_dir() + "/manifest.json"))                                              \
      GTEST_FAIL() << "oracle outputs missing: run through ctest (the oracle_model_families fixture)";            \
  } while (0)

std::vector<nlohmann::json> cases() {
  return read_json(families_dir() + "/manifest.json")["cases"].get<std::vector<nlohmann::json>>();
}

at::Tensor tensor(const nlohmann::json& c, const std::string& name) {
  return io::SafetensorsFile::open(c["tensors"].get<std::string>())->tensor(name);
}

double max_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

// The model with PEFT's adapter (dense base), built as `qtune generate --adapter` builds it.
nn::CausalLM with_peft_adapter(const nlohmann::json& c, lora::LoraLinearFactory** wrapped = nullptr) {
  const auto dir = c["dir"].get<std::string>();
  static std::vector<std::unique_ptr<nn::LinearFactory>> keep;  // factories outlive the models built here
  keep.push_back(std::make_unique<nn::DenseLinearFactory>(kFp32));
  auto lora = std::make_unique<lora::LoraLinearFactory>(*keep.back(), exporting::read_peft_config(c["adapter"]), 0);
  auto model = nn::load_causal_lm(dir, kFp32, lora.get());
  exporting::load_peft_adapter(*model, c["adapter"]);
  if (wrapped) *wrapped = lora.get();
  keep.push_back(std::move(lora));
  return model;
}

// Runs the oracle script in a loading mode; false when it fails (its output is in log).
bool run_oracle(const std::string& mode, const std::vector<std::string>& args, const std::string& log) {
  std::string cmd = std::string("TORCHDYNAMO_DISABLE=1 OMP_NUM_THREADS=1 ") + QTUNE_TEST_PYTHON + " " +
                    QTUNE_TEST_SOURCE_DIR + "/tests/oracle/model_families.py " + mode;
  for (const auto& a : args) cmd += " '" + a + "'";
  cmd += " > '" + log + "' 2>&1";
  return std::system(cmd.c_str()) == 0;
}

std::string log_tail(const std::string& path) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.size() > 3000 ? text.substr(text.size() - 3000) : text;
}

TEST(OracleFamilies, CoverEveryFamilyWithItsDistinctPaths) {
  REQUIRE_FAMILIES_ORACLE();
  std::set<std::string> types;
  for (const auto& c : cases()) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const auto cfg = io::ModelConfig::load(c["dir"].get<std::string>());
    types.insert(cfg.model_type);
    EXPECT_GE(cfg.num_hidden_layers, 2);
    EXPECT_EQ(cfg.num_parameters(), c["num_parameters"].get<int64_t>());
    EXPECT_LT(cfg.num_key_value_heads, cfg.num_attention_heads);  // GQA
    if (cfg.sliding_window) {
      EXPECT_LT(*cfg.sliding_window, c["seq"].get<int64_t>());
    }
    if (cfg.model_type.rfind("gemma", 0) == 0) {
      bool local = false, global = false;
      for (int64_t i = 0; i < cfg.num_hidden_layers; ++i)
        (cfg.layer_attention(i) == io::LayerAttention::Sliding ? local : global) = true;
      EXPECT_TRUE(local && global) << "a Gemma case needs a local and a global layer";
      EXPECT_TRUE(cfg.final_logit_softcapping.has_value());
    }
  }
  EXPECT_EQ(types, (std::set<std::string>{"qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "mistral"}));
}

TEST(OracleFamilies, LogitsEqualTransformers) {
  REQUIRE_FAMILIES_ORACLE();
  for (const auto& c : cases()) {
    SCOPED_TRACE(c["name"].get<std::string>());
    auto model = nn::load_causal_lm(c["dir"], kFp32);
    torch::NoGradGuard no_grad;
    const auto logits = model->forward(tensor(c, "input_ids"));
    const auto expected = tensor(c, "logits");
    ASSERT_EQ(logits.sizes(), expected.sizes());
    EXPECT_LE(max_diff(logits, expected), kLogitTolerance);
  }
}

TEST(OracleFamilies, KvCachedGreedyTokensEqualTransformersGenerate) {
  REQUIRE_FAMILIES_ORACLE();
  for (const auto& c : cases()) {
    SCOPED_TRACE(c["name"].get<std::string>());
    auto model = nn::load_causal_lm(c["dir"], kFp32);
    const auto expected = c["greedy"].get<std::vector<int64_t>>();
    eval::GenerateOptions opts;
    opts.max_new_tokens = static_cast<int64_t>(expected.size());
    EXPECT_EQ(eval::generate(*model, c["prompt"].get<std::vector<int64_t>>(), opts).tokens, expected);

    // The same steps through the KV cache, one token at a time past every window: each step's logits equal
    // generate()'s (tiny random models often repeat one token, which alone would say little).
    torch::NoGradGuard no_grad;
    const auto want = tensor(c, "greedy_logits");
    nn::KVCache cache(model->config().num_hidden_layers);
    nn::ForwardOptions fwd;
    fwd.cache = &cache;
    auto input = at::tensor(c["prompt"].get<std::vector<int64_t>>(), at::kLong).unsqueeze(0);
    for (size_t step = 0; step < expected.size(); ++step) {
      const auto logits = model->forward(input, fwd).select(1, -1).squeeze(0);
      EXPECT_LE(max_diff(logits, want[static_cast<int64_t>(step)]), kLogitTolerance) << "step " << step;
      input = at::tensor({expected[step]}, at::kLong).unsqueeze(0);
    }
    EXPECT_GT(cache.length(), c["sliding_window"].is_null() ? 0 : c["sliding_window"].get<int64_t>());
  }
}

// Loss and lora_A/lora_B gradients of one batch (targets = the next ids), with and without gradient checkpointing.
struct LossAndGrads {
  double loss;
  std::map<std::string, at::Tensor> grads;
};

LossAndGrads loss_and_grads(nn::CausalLMImpl& model, const at::Tensor& ids, bool checkpointing) {
  model.train();  // no dropout anywhere in these adapters: train mode only lets checkpointing recompute
  model.set_gradient_checkpointing(checkpointing);
  for (auto& [name, p] : lora::trainable_parameters(model)) p.mutable_grad() = at::Tensor();
  auto targets = at::full_like(ids, -100);
  targets.narrow(1, 0, ids.size(1) - 1).copy_(ids.narrow(1, 1, ids.size(1) - 1));
  const auto ls = train::chunked_cross_entropy(model.hidden_states(ids), model.lm_head_weight(), targets, 0,
                                               model.config().final_logit_softcapping.value_or(0));
  const auto loss = ls.sum / static_cast<double>(ls.tokens);
  loss.backward();
  LossAndGrads out{loss.item<double>(), {}};
  for (auto& [name, p] : lora::trainable_parameters(model)) out.grads[name] = p.grad().clone();
  model.eval();
  return out;
}

TEST(OracleFamilies, LoraLossAndGradientsEqualPeft) {
  REQUIRE_FAMILIES_ORACLE();
  for (const auto& c : cases()) {
    SCOPED_TRACE(c["name"].get<std::string>());
    lora::LoraLinearFactory* factory = nullptr;
    auto model = with_peft_adapter(c, &factory);
    // PEFT's "all-linear" on this family adapts the linears qtune's all-linear adapts (Phi-3: the fused ones).
    std::set<std::string> leaves;
    for (const auto& name : factory->wrapped()) leaves.insert(name.substr(name.rfind('.') + 1));
    EXPECT_EQ(leaves, c["lora_targets"].get<std::set<std::string>>());
    lora::LoraConfig all;
    for (const auto& name : factory->wrapped()) EXPECT_TRUE(all.resolve(name).has_value()) << name;

    const auto ids = tensor(c, "input_ids");
    {
      torch::NoGradGuard no_grad;
      EXPECT_LE(max_diff(model->forward(ids), tensor(c, "peft_logits")), kLogitTolerance);
    }
    const double want_loss = c["loss"].get<double>();
    for (const bool checkpointing : {false, true}) {
      SCOPED_TRACE(checkpointing ? "gradient checkpointing" : "no checkpointing");
      const auto got = loss_and_grads(*model, ids, checkpointing);
      EXPECT_LE(std::abs(got.loss - want_loss), kRelativeTolerance * std::abs(want_loss));
      ASSERT_EQ(static_cast<int64_t>(got.grads.size()), c["gradients"].get<int64_t>());
      for (const auto& [name, g] : got.grads) {
        SCOPED_TRACE(name);
        const auto want = tensor(c, "grad." + name);
        ASSERT_EQ(g.sizes(), want.sizes());
        EXPECT_LE(max_diff(g, want), kRelativeTolerance * want.abs().max().item<double>());
      }
    }
  }
}

// What training leaves: every lora_A / lora_B random and non-zero.
void train_randomly(nn::CausalLMImpl& model, uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& [name, p] : lora::trainable_parameters(model)) p.copy_(at::normal(0.0, 0.1, p.sizes(), gen, kFp32));
}

TEST(OracleFamilies, QtuneAdapterAndMergedModelLoadInPeftAndTransformersWithQtuneLogits) {
  REQUIRE_FAMILIES_ORACLE();
  const auto dir = test::temp_dir();
  std::vector<std::string> adapter_args, merged_args;
  std::map<std::string, at::Tensor> ours;
  uint64_t seed = 20;
  for (const auto& c : cases()) {
    const auto name = c["name"].get<std::string>();
    SCOPED_TRACE(name);
    const auto base = c["dir"].get<std::string>();
    nn::DenseLinearFactory dense(kFp32);
    lora::LoraConfig config;  // all-linear, the recipe's defaults
    config.dropout = 0;
    lora::LoraLinearFactory factory(dense, config, 3);
    auto model = nn::load_causal_lm(base, kFp32, &factory);
    train_randomly(*model, seed++);
    model->eval();
    const auto ids_file = c["tensors"].get<std::string>();
    torch::NoGradGuard no_grad;
    ours[name] = model->forward(tensor(c, "input_ids"));
    ASSERT_GT(max_diff(ours[name], tensor(c, "logits")), 0.05) << "the adapter must move the logits";
    exporting::save_peft_adapter(*model, config, base, dir + "/" + name + "/adapter");
    exporting::MergedExportOptions merged;
    merged.source = base;
    exporting::save_merged_model(*model, dir + "/" + name + "/merged", merged);
    adapter_args.insert(adapter_args.end(), {base, dir + "/" + name + "/adapter", ids_file, dir + "/" + name + ".peft"});
    merged_args.insert(merged_args.end(), {dir + "/" + name + "/merged", ids_file, dir + "/" + name + ".merged"});
    // The merged config keeps the family: its model_type and class, and the keys transformers rebuilds it from.
    const auto written = read_json(dir + "/" + name + "/merged/config.json");
    const auto source = read_json(base + "/config.json");
    EXPECT_EQ(written["model_type"], source["model_type"]);
    EXPECT_EQ(written["architectures"], source["architectures"]);
    for (const char* key : {"head_dim", "sliding_window", "query_pre_attn_scalar", "final_logit_softcapping",
                            "attn_logit_softcapping", "layer_types", "tie_word_embeddings"})
      if (source.contains(key) && !source[key].is_null()) {
        EXPECT_EQ(written[key], source[key]) << key;
      }
  }
  ASSERT_TRUE(run_oracle("--load-adapter", adapter_args, dir + "/adapter.log"))
      << "PEFT failed to load qtune's adapters:\n" << log_tail(dir + "/adapter.log");
  ASSERT_TRUE(run_oracle("--load-merged", merged_args, dir + "/merged.log"))
      << "transformers failed to load qtune's merged models:\n" << log_tail(dir + "/merged.log");
  for (const auto& [name, want] : ours) {
    SCOPED_TRACE(name);
    EXPECT_LE(max_diff(io::SafetensorsFile::open(dir + "/" + name + ".peft")->tensor("logits"), want), kLogitTolerance);
    EXPECT_LE(max_diff(io::SafetensorsFile::open(dir + "/" + name + ".merged")->tensor("logits"), want),
              kLogitTolerance);
  }
}

// A checkpoint with some tensors replaced: the dense model on the weights a quantized one holds.
class ReplacedWeights : public io::WeightSource {
 public:
  ReplacedWeights(std::shared_ptr<io::WeightSource> base, std::map<std::string, at::Tensor> replaced)
      : base_(std::move(base)), replaced_(std::move(replaced)) {}
  bool has(const std::string& name) const override { return replaced_.count(name) || base_->has(name); }
  at::Tensor get(const std::string& name, at::IntArrayRef shape) const override {
    const auto it = replaced_.find(name);
    return it == replaced_.end() ? base_->get(name, shape) : it->second.view(shape);
  }

 private:
  std::shared_ptr<io::WeightSource> base_;
  std::map<std::string, at::Tensor> replaced_;
};

// The quantizers and the quant plan are family-blind: under a plan with an int8 rule, every linear of every family
// (Phi-3's fused ones included) is built quantized in the format the plan names, and the 4-bit model computes what
// the family's fp32 decoder computes on the dequantized weights.
TEST(OracleFamilies, EveryLinearOfEveryFamilyQuantizesUnderThePlan) {
  REQUIRE_FAMILIES_ORACLE();
  for (const auto& c : cases()) {
    SCOPED_TRACE(c["name"].get<std::string>());
    quant::QuantPlan plan;
    plan.rules.push_back({"*.o_proj", quant::WeightFormat::Int8});
    nn::QuantLinearFactory factory(plan, kFp32);
    auto model = nn::load_causal_lm(c["dir"], kFp32, &factory);
    const auto& cfg = model->config();
    std::map<std::string, at::Tensor> dequantized;
    int64_t int8 = 0;
    for (const auto& item : model->named_modules("", false)) {
      const auto q = std::dynamic_pointer_cast<nn::QuantizedLinearImpl>(item.value());
      if (!q) continue;
      dequantized[item.key() + ".weight"] = q->dense_weight();
      const bool is_o = item.key().size() > 6 && item.key().compare(item.key().size() - 6, 6, "o_proj") == 0;
      EXPECT_EQ(q->weight().format(), is_o ? "int8" : "nf4") << item.key();
      int8 += is_o;
    }
    EXPECT_EQ(static_cast<int64_t>(dequantized.size()),
              cfg.num_hidden_layers * static_cast<int64_t>(io::layer_linears(cfg).size()));
    EXPECT_EQ(int8, cfg.num_hidden_layers);
    nn::DenseLinearFactory dense(kFp32);
    const ReplacedWeights weights(io::open_model_weights(c["dir"]), dequantized);
    nn::CausalLMImpl reference(cfg, dense, weights, kFp32);
    torch::NoGradGuard no_grad;
    const auto ids = tensor(c, "input_ids");
    const auto logits = model->forward(ids);
    EXPECT_LE(max_diff(logits, reference.forward(ids)), kLogitTolerance);
    EXPECT_GT(max_diff(logits, tensor(c, "logits")), 1e-3) << "the 4-bit weights must differ from the fp32 ones";
  }
}

// A config.json that leaves keys out means transformers' defaults for its family.
TEST(OracleFamilies, MissingConfigKeysTakeTheFamilysTransformersDefaults) {
  REQUIRE_FAMILIES_ORACLE();
  const auto all = read_json(families_dir() + "/config_defaults.json");
  ASSERT_GE(all["cases"].size(), 8u);
  for (const auto& c : all["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const auto& want = c["resolved"];
    const auto got = io::ModelConfig::load(c["dir"].get<std::string>());
    EXPECT_EQ(got.num_key_value_heads, want["num_key_value_heads"].get<int64_t>());
    EXPECT_EQ(got.head_dim, want["head_dim"].get<int64_t>());
    EXPECT_DOUBLE_EQ(got.rms_norm_eps, want["rms_norm_eps"].get<double>());
    EXPECT_EQ(got.max_position_embeddings, want["max_position_embeddings"].get<int64_t>());
    EXPECT_EQ(got.tie_word_embeddings, want["tie_word_embeddings"].get<bool>());
    std::vector<std::string> types;
    for (int64_t i = 0; i < got.num_hidden_layers; ++i)
      types.push_back(got.layer_attention(i) == io::LayerAttention::Sliding ? "sliding_attention" : "full_attention");
    EXPECT_EQ(types, want["layer_types"].get<std::vector<std::string>>());
    if (got.has_sliding_layers()) EXPECT_EQ(got.sliding_window.value_or(-1), want["sliding_window"].get<int64_t>());
    EXPECT_EQ(got.rope.type, want["rope"]["type"].get<std::string>());
    EXPECT_DOUBLE_EQ(got.rope.theta, want["rope"]["theta"].get<double>());
    if (!want["rope"]["factor"].is_null()) EXPECT_DOUBLE_EQ(got.rope.factor, want["rope"]["factor"].get<double>());
    ASSERT_EQ(got.local_rope.has_value(), !want["local_rope"].is_null());
    if (got.local_rope) EXPECT_DOUBLE_EQ(got.local_rope->theta, want["local_rope"]["theta"].get<double>());
    const auto optional = [](const nlohmann::json& v) { return v.is_null() ? std::optional<double>() : v.get<double>(); };
    EXPECT_EQ(got.attn_logit_softcapping, optional(want["attn_logit_softcapping"]));
    EXPECT_EQ(got.final_logit_softcapping, optional(want["final_logit_softcapping"]));
    if (!want["query_pre_attn_scalar"].is_null())
      EXPECT_DOUBLE_EQ(got.query_pre_attn_scalar, want["query_pre_attn_scalar"].get<double>());
  }
}

// head_dim x heads that is not the checkpoint's q_proj rows: the error names config.json and the keys.
TEST(OracleFamilies, AConfigContradictingTheWeightsNamesTheFileAndKey) {
  REQUIRE_FAMILIES_ORACLE();
  for (const auto& c : cases()) {
    const auto name = c["name"].get<std::string>();
    if (name != "qwen3" && name != "phi3") continue;
    SCOPED_TRACE(name);
    const auto dir = test::temp_dir() + "/" + name;
    std::filesystem::create_directories(dir);
    for (const auto& f : std::filesystem::directory_iterator(c["dir"].get<std::string>()))
      std::filesystem::copy(f.path(), dir + "/" + f.path().filename().string());
    auto config = read_json(dir + "/config.json");
    config["head_dim"] = config["head_dim"].is_null() ? 32 : config["head_dim"].get<int64_t>() + 8;
    std::ofstream(dir + "/config.json", std::ios::trunc) << config.dump(2);
    const auto msg = test::error_of([&] { nn::load_causal_lm(dir, kFp32); });
    EXPECT_NE(msg.find(dir + "/config.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find("head_dim"), std::string::npos) << msg;
    EXPECT_NE(msg.find(name == "phi3" ? "qkv_proj" : "q_proj"), std::string::npos) << msg;
  }
}

}  // namespace
