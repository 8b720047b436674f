// quant.method in a recipe: the base is calibrated (GPTQ, AWQ) once into the run directory, QLoRA trains on it, a
// resume reuses it and ends where an uninterrupted run ends, and a recipe that cannot calibrate says why.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "qtune/data/tokenizer.h"
#include "qtune/io/json_file.h"
#include "qtune/io/safetensors.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quantized_linear.h"
#include "qtune/train/calibrated_base.h"
#include "qtune/train/trainer.h"
#include "test_util.h"
#include "tiny_run.h"

namespace qtune::train {
namespace {

namespace fs = std::filesystem;

std::string read(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::vector<std::string> bases(const std::string& run_dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(run_dir))
    if (e.path().filename().string().rfind("base-", 0) == 0) out.push_back(e.path().string());
  return out;
}

TEST(CalibratedBase, TrainsOnTheCalibratedBaseAndAResumeReusesIt) {
  for (const std::string method : {"awq", "gptq"}) {
    TinyRun t;
    const std::vector<std::string> keys = {"quant.method=" + method, "quant.calib=" + t.dir + "/corpus.txt",
                                           "quant.calib_samples=8", "quant.calib_seq_len=64", "quant.group_size=32",
                                           "train.max_steps=8", "train.save_every=4"};
    const auto log = t.dir + "/log.txt";
    TrainOptions o;
    o.out = std::fopen(log.c_str(), "w");
    o.terminal = false;
    o.stop_after_step = 4;  // then resumed: the same base, and the adapter of an uninterrupted run
    const auto s = run_training(t.recipe(keys), o);
    std::fclose(o.out);
    EXPECT_EQ(s.steps, 4) << method;
    const auto found = bases(t.dir + "/run");
    ASSERT_EQ(found.size(), 1u) << method;
    EXPECT_EQ(io::read_json_file(found[0] + "/config.json")["quantization_config"]["quant_method"], method);
    const auto first = read(log);
    EXPECT_NE(first.find("calibrated base: " + std::string(method == "awq" ? "AWQ" : "GPTQ") + " beat round-to-nearest"),
              std::string::npos) << first;
    EXPECT_NE(first.find(method + "-int4-g32"), std::string::npos) << first;  // the base line names the linears' format

    o.out = std::fopen(log.c_str(), "w");
    o.stop_after_step = 0;
    o.resume = "auto";
    const auto resumed = run_training(t.recipe(keys), o);
    std::fclose(o.out);
    EXPECT_NE(read(log).find("calibrated base: reusing " + found[0]), std::string::npos) << method;
    EXPECT_EQ(resumed.start_step, 4) << method;
    EXPECT_LT(resumed.last_loss, s.first_loss) << method;

    auto straight_keys = keys;
    straight_keys.push_back("train.output_dir=" + t.dir + "/straight");
    const auto straight = run_training(t.recipe(straight_keys), quiet());
    EXPECT_EQ(read(resumed.adapter_dir + "/adapter_model.safetensors"),
              read(straight.adapter_dir + "/adapter_model.safetensors"))
        << method;
    EXPECT_EQ(bases(t.dir + "/run").size(), 1u);
  }
}

TEST(CalibratedBase, ABudgetRunsTheSensitivityScanAndWritesAMixedGptqBase) {
  TinyRun t;
  const auto log = t.dir + "/log.txt";
  TrainOptions o;
  o.out = std::fopen(log.c_str(), "w");
  o.terminal = false;
  const auto s = run_training(t.recipe({"quant.method=gptq", "quant.calib=" + t.dir + "/corpus.txt",
                                        "quant.calib_samples=8", "quant.calib_seq_len=64", "quant.group_size=32",
                                        "quant.budget_bits=6", "quant.scan_tokens=128", "train.max_steps=4"}),
                              o);
  std::fclose(o.out);
  EXPECT_LT(s.last_loss, s.first_loss);
  const auto text = read(log);
  EXPECT_NE(text.find("sensitivity scan: 2 windows of 64 tokens, budget 6"), std::string::npos) << text;
  EXPECT_NE(text.find("gptq-int8-g32"), std::string::npos) << text;  // the base line lists the 8-bit linears
  const auto found = bases(t.dir + "/run");
  ASSERT_EQ(found.size(), 1u);
  const auto q = io::read_json_file(found[0] + "/config.json")["quantization_config"];
  ASSERT_TRUE(q.contains("dynamic"));
  EXPECT_GE(q["dynamic"].size(), 1u);
  EXPECT_LT(q["dynamic"].size(), 14u);
}

// The base is keyed by what it is made of: the source's weights rewritten in place (the same size, the mtime put back),
// or another tokenizer, give a new base; the same contents reuse the old one.
TEST(CalibratedBase, ANewBaseWhenTheSourceWeightsOrTheTokenizerChange) {
  TinyRun t;
  const std::vector<std::string> keys = {"quant.method=rtn", "quant.group_size=32"};
  const auto first = calibrated_base(t.recipe(keys), nullptr);
  EXPECT_EQ(calibrated_base(t.recipe(keys), nullptr), first);

  const auto file = t.model + "/model.safetensors";
  const auto size = fs::file_size(file);
  const auto mtime = fs::last_write_time(file);
  {
    auto source = io::SafetensorsFile::open(file);
    io::NamedTensors halved;
    for (const auto& info : source->tensors()) halved.emplace_back(info.name, source->tensor(info.name) * 0.5);
    source.reset();
    io::write_safetensors(file, halved, {{"format", "pt"}});
  }
  fs::last_write_time(file, mtime);
  ASSERT_EQ(fs::file_size(file), size);
  const auto second = calibrated_base(t.recipe(keys), nullptr);
  EXPECT_NE(second, first);
  // Round to nearest on a symmetric grid: the same codes, every scale halved.
  const auto scales = [](const std::string& dir) {
    return io::SafetensorsFile::open(dir + "/model.safetensors")->tensor("model.layers.1.mlp.down_proj.scales").clone();
  };
  EXPECT_TRUE(test::bitwise_equal(scales(second), scales(first) * 0.5));

  // model.tokenizer: its contents count too.
  fs::create_directories(t.dir + "/tok");
  fs::copy_file(t.model + "/tokenizer.model", t.dir + "/tok/tokenizer.model");
  auto with_tokenizer = keys;
  with_tokenizer.push_back("model.tokenizer=" + t.dir + "/tok/tokenizer.model");
  const auto third = calibrated_base(t.recipe(with_tokenizer), nullptr);
  EXPECT_EQ(calibrated_base(t.recipe(with_tokenizer), nullptr), third);
  data::train_bpe_tokenizer(t.dir + "/corpus.txt", t.dir + "/tok/tokenizer", 350);
  const auto fourth = calibrated_base(t.recipe(with_tokenizer), nullptr);
  EXPECT_NE(fourth, third);
  EXPECT_EQ(bases(t.dir + "/run").size(), 4u);
}

// quant.keep_16bit and quant.keep_int8 shape the calibrated base as qtune quantize --keep-16bit / --keep-int8 do, and
// are part of its key; AWQ, which writes every projection in 4 bits, refuses them.
TEST(CalibratedBase, KeepRulesShapeTheBase) {
  TinyRun t;
  const auto plain = calibrated_base(t.recipe({"quant.method=rtn", "quant.group_size=32"}), nullptr);
  const auto kept = calibrated_base(t.recipe({"quant.method=rtn", "quant.group_size=32", "quant.keep_16bit=['*.down_proj']",
                                              "quant.keep_int8=['*.q_proj']"}),
                                    nullptr);
  EXPECT_NE(kept, plain);
  auto m = nn::load_causal_lm(kept, at::TensorOptions().dtype(at::kFloat));
  std::map<std::string, std::string> formats;
  for (const auto& item : m->named_modules())
    if (auto q = std::dynamic_pointer_cast<nn::QuantizedLinearImpl>(item.value())) formats[item.key()] = q->weight().format();
  EXPECT_EQ(formats.size(), 12u);  // the two down_proj are plain weights
  EXPECT_EQ(formats.count("model.layers.1.mlp.down_proj"), 0u);
  EXPECT_EQ(formats["model.layers.1.self_attn.q_proj"], "gptq-int8-g32");
  EXPECT_EQ(formats["model.layers.1.self_attn.k_proj"], "gptq-int4-g32");
  EXPECT_EQ(io::read_json_file(kept + "/config.json")["quantization_config"]["dynamic"].size(), 4u);

  const auto msg = test::error_of([&] {
    t.recipe({"quant.method=awq", "quant.calib=" + t.dir + "/corpus.txt", "quant.keep_16bit=['*.down_proj']"});
  });
  EXPECT_NE(msg.find("quant.keep_int8 / quant.keep_16bit work with quant.method gptq | rtn"), std::string::npos) << msg;
}

TEST(CalibratedBase, ARecipeThatCannotCalibrateSaysWhy) {
  TinyRun t;
  auto err = [&](std::vector<std::string> keys) { return test::error_of([&] { t.recipe(keys); }); };
  EXPECT_NE(err({"quant.method=gptq"}).find("quant.method gptq needs quant.calib"), std::string::npos);
  EXPECT_NE(err({"quant.method=awq", "quant.calib=" + t.dir + "/corpus.txt", "quant.bits=8"}).find("quant.bits"),
            std::string::npos);
  EXPECT_NE(err({"quant.method=awq", "quant.calib=" + t.dir + "/nothing.txt"}).find("nothing.txt"), std::string::npos);
  EXPECT_NE(err({"quant.method=awq", "quant.calib=" + t.dir + "/corpus.txt", "quant.budget_bits=5"})
                .find("quant.budget_bits plans 8-bit GPTQ linears"),
            std::string::npos);
  const auto msg = test::error_of([&] {
    run_training(t.recipe({"quant.method=gptq", "quant.calib=" + t.dir + "/corpus.txt", "quant.calib_samples=100000",
                           "quant.calib_seq_len=64"}),
                 quiet());
  });
  EXPECT_NE(msg.find("quant.calib_samples asks for 100000"), std::string::npos) << msg;
}

}  // namespace
}  // namespace qtune::train
