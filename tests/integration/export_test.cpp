// qtune export on a run trained here: the PEFT adapter and the merged model reproduce the trained model, sharding and
// NF4 re-quantization write loadable directories, and bad input is refused without touching anything.
// (PEFT and transformers themselves load these files in tests/unit/oracle_peft_test.cpp.)
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qtune/export/merged_model.h"
#include "qtune/export/peft_adapter.h"
#include "qtune/export/trained_model.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quant_linear_factory.h"
#include "qtune/train/run_setup.h"
#include "test_util.h"
#include "tiny_run.h"

namespace qtune::exporting {
namespace {

namespace fs = std::filesystem;
const auto kFp32 = at::TensorOptions().dtype(at::kFloat);

test::QtuneRun qtune(const std::string& args) { return test::run_qtune(args); }

nlohmann::json json_of(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

// A short run whose adapters are all non-trivial: rsLoRA, a per-pattern rank, and lm_head trained in full (which
// unties the tiny model's tied head).
struct TrainedRun {
  train::TinyRun t;
  std::string run = t.dir + "/run";
  TrainedRun() {
    train::run_training(t.recipe({"train.max_steps=6", "lora.rslora=true", "lora.rank_pattern={\"v_proj\": 4}",
                                  "lora.modules_to_save=[lm_head]"}),
                        train::quiet());
  }
};

TEST(Export, AdapterAndMergedModelReproduceTheTrainedModel) {
  TrainedRun r;
  auto trained = load_trained_model(r.run, "", kFp32, nullptr);
  const auto expected = train::probe_logits(*trained.model);

  ASSERT_EQ(qtune("export " + r.run + " --adapter " + r.t.dir + "/adapter_out").code, 0);
  const auto config = read_peft_config(r.t.dir + "/adapter_out");
  EXPECT_EQ(config.r, 8);
  EXPECT_TRUE(config.use_rslora);
  EXPECT_EQ(config.rank_pattern.at("v_proj"), 4);
  EXPECT_EQ(config.modules_to_save, std::vector<std::string>{"lm_head"});
  const auto j = json_of(r.t.dir + "/adapter_out/adapter_config.json");
  EXPECT_EQ(j["peft_type"], "LORA");
  EXPECT_EQ(j["task_type"], "CAUSAL_LM");
  EXPECT_EQ(j["base_model_name_or_path"], r.t.model);
  // The exported adapter on a fresh NF4 base gives the trained model's logits exactly.
  quant::QuantPlan plan;
  nn::QuantLinearFactory base(plan, kFp32);
  lora::LoraLinearFactory factory(base, config, 0);
  auto fresh = nn::load_causal_lm(r.t.model, kFp32, &factory);
  lora::apply_modules_to_save(*fresh, config.modules_to_save);
  load_peft_adapter(*fresh, r.t.dir + "/adapter_out");
  EXPECT_TRUE(test::bitwise_equal(train::probe_logits(*fresh), expected));

  // Merged in fp32 onto the dequantized NF4 base: the same function up to float rounding, with no quantization_config
  // and an untied head.
  ASSERT_EQ(qtune("export " + r.run + " --merged " + r.t.dir + "/merged --dtype fp32 --no-quality-check").code, 0);
  const auto merged_config = json_of(r.t.dir + "/merged/config.json");
  EXPECT_FALSE(merged_config.contains("quantization_config"));
  EXPECT_EQ(merged_config["tie_word_embeddings"], false);
  EXPECT_TRUE(fs::exists(r.t.dir + "/merged/tokenizer.model"));
  auto merged = nn::load_causal_lm(r.t.dir + "/merged", kFp32);
  EXPECT_LT((train::probe_logits(*merged) - expected).abs().max().item<double>(), 1e-4);

  // Sharded: several files and the index transformers reads; same weights.
  ASSERT_EQ(qtune("export " + r.run + " --merged " + r.t.dir + "/sharded --dtype fp32 --shard-mb 0 --no-quality-check").code, 0);
  const auto index = json_of(r.t.dir + "/sharded/model.safetensors.index.json");
  EXPECT_GT(index["weight_map"].size(), 10u);
  int shards = 0;
  for (const auto& e : fs::directory_iterator(r.t.dir + "/sharded"))
    shards += e.path().filename().string().rfind("model-", 0) == 0;
  EXPECT_GT(shards, 1);
  EXPECT_TRUE(fs::exists(r.t.dir + "/sharded/" + fmt::format("model-00001-of-{:05d}.safetensors", shards)));
  auto sharded = nn::load_causal_lm(r.t.dir + "/sharded", kFp32);
  EXPECT_TRUE(test::bitwise_equal(train::probe_logits(*sharded), train::probe_logits(*merged)));

  // Back to NF4: a 4-bit checkpoint with its quantization_config, loaded as stored; merging rounds, so only close.
  ASSERT_EQ(qtune("export " + r.run + " --merged " + r.t.dir + "/nf4 --quantize nf4 --dtype fp32 --no-quality-check").code, 0);
  EXPECT_EQ(json_of(r.t.dir + "/nf4/config.json")["quantization_config"]["bnb_4bit_quant_type"], "nf4");
  auto nf4 = nn::load_causal_lm(r.t.dir + "/nf4", kFp32);
  const auto diff = (train::probe_logits(*nf4) - expected).abs().max().item<double>();
  EXPECT_GT(diff, 0.0);
  EXPECT_LT(diff, 0.5 * expected.abs().max().item<double>());
}

TEST(Export, BadInputIsRefusedAndNothingIsOverwritten) {
  TrainedRun r;
  fs::create_directories(r.t.dir + "/taken");
  std::ofstream(r.t.dir + "/taken/keep.txt") << "mine";
  auto c = qtune("export " + r.run + " --adapter " + r.t.dir + "/taken");
  EXPECT_EQ(c.code, 1);
  EXPECT_NE(c.err.find("exists; choose a new directory (nothing was overwritten)"), std::string::npos) << c.err;
  EXPECT_TRUE(fs::exists(r.t.dir + "/taken/keep.txt"));
  c = qtune("export " + r.t.dir + "/nowhere --adapter " + r.t.dir + "/x");
  EXPECT_EQ(c.code, 1);
  EXPECT_NE(c.err.find("neither a checkpoint"), std::string::npos) << c.err;
  c = qtune("export " + r.run + " --merged " + r.t.dir + "/m --base " + r.t.dir + "/nowhere");
  EXPECT_EQ(c.code, 1);
  EXPECT_NE(c.err.find("pass --base DIR"), std::string::npos) << c.err;

  const auto adapter = r.run + "/adapter";
  // An adapter for another model size: every shape differs.
  nlohmann::json j = json_of(r.t.model + "/config.json");
  j["hidden_size"] = 32;
  fs::create_directories(r.t.dir + "/small");
  std::ofstream(r.t.dir + "/small/config.json") << j.dump();
  nn::RandomInit init(io::ModelConfig::from_json(j, "small"), 1);
  nn::DenseLinearFactory dense(kFp32);
  nn::CausalLMImpl small(io::ModelConfig::from_json(j, "small"), dense, init, kFp32);
  nn::save_pretrained(small, r.t.dir + "/small");
  fs::copy_file(r.t.model + "/tokenizer.model", r.t.dir + "/small/tokenizer.model");
  c = qtune("generate " + r.t.dir + "/small --adapter " + adapter + " --prompt x -n 2");
  EXPECT_EQ(c.code, 1);
  EXPECT_NE(c.err.find("different rank or model size"), std::string::npos) << c.err;
  // An unknown target module in adapter_config.json.
  fs::create_directories(r.t.dir + "/odd");
  auto cfg = json_of(adapter + "/adapter_config.json");
  cfg["target_modules"] = {"q_proj", "attn_proj"};
  std::ofstream(r.t.dir + "/odd/adapter_config.json") << cfg.dump();
  fs::copy_file(adapter + "/adapter_model.safetensors", r.t.dir + "/odd/adapter_model.safetensors");
  c = qtune("generate " + r.t.model + " --adapter " + r.t.dir + "/odd --prompt x -n 2");
  EXPECT_EQ(c.code, 1);
  EXPECT_NE(c.err.find("unknown module 'attn_proj'"), std::string::npos) << c.err;
  // A truncated adapter file, and a missing one.
  fs::create_directories(r.t.dir + "/cut");
  fs::copy_file(adapter + "/adapter_config.json", r.t.dir + "/cut/adapter_config.json");
  fs::copy_file(adapter + "/adapter_model.safetensors", r.t.dir + "/cut/adapter_model.safetensors");
  fs::resize_file(r.t.dir + "/cut/adapter_model.safetensors", fs::file_size(adapter + "/adapter_model.safetensors") / 2);
  c = qtune("generate " + r.t.model + " --adapter " + r.t.dir + "/cut --prompt x -n 2");
  EXPECT_EQ(c.code, 1);
  EXPECT_NE(c.err.find("cut/adapter_model.safetensors"), std::string::npos) << c.err;
  fs::remove(r.t.dir + "/cut/adapter_model.safetensors");
  c = qtune("generate " + r.t.model + " --adapter " + r.t.dir + "/cut --prompt x -n 2");
  EXPECT_EQ(c.code, 1);
  EXPECT_NE(c.err.find("adapter_model.safetensors is missing"), std::string::npos) << c.err;
}

TEST(Export, InitAdapterStartsARunFromAnExportedAdapter) {
  TrainedRun r;
  ASSERT_EQ(qtune("export " + r.run + " --adapter " + r.t.dir + "/start").code, 0);
  auto o = train::quiet();
  const auto s = train::run_training(
      r.t.recipe({"lora.init_adapter=" + r.t.dir + "/start", "train.max_steps=1", "optim.lr=1e-12",
                  "train.output_dir=" + r.t.dir + "/continued", "lora.r=2"}),
      o);
  // The adapter's own shape wins over the recipe's lora keys, and its weights are where the run starts: after one
  // step at a vanishing learning rate the eval loss is the exported adapter's.
  auto trained = load_trained_model(r.run, "", at::TensorOptions().dtype(train::run_dtype(r.t.recipe(), at::kCPU, io::ModelConfig::load(r.t.model))),
                                    nullptr);  // the run's compute dtype
  EXPECT_EQ(read_peft_config(s.adapter_dir).r, 8);
  ASSERT_TRUE(s.eval_before);
  auto tok = data::Tokenizer::load(r.t.model);
  auto eval = train::load_data(r.t.recipe(), tok).eval;
  data::DataLoader loader(eval, train::loader_options(r.t.recipe(), true), tok.eos_id());
  EXPECT_NEAR(s.eval_before->loss, train::evaluate(*trained.model, loader).loss, 1e-5);
}

}  // namespace
}  // namespace qtune::exporting
