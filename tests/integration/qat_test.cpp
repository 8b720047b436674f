// Quantization-aware training end to end on a tiny run: the model exported with the format the run trained for is the
// model its last forward computed (NF4 and int4-as-GPTQ logits bit for bit; GGUF blocks equal to the fake-quantized
// weights); delayed QAT switches at its step and resumes bit-exactly across that boundary; full fine-tuning with QAT;
// recipe errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "qtune/export/peft_adapter.h"
#include "qtune/io/atomic_file.h"
#include "qtune/io/gguf.h"
#include "qtune/io/gguf_model.h"
#include "qtune/io/json_file.h"
#include "qtune/io/safetensors.h"
#include "qtune/lora/inject.h"
#include "qtune/nn/model_io.h"
#include "qtune/quant/fake_quant.h"
#include "qtune/train/run_setup.h"
#include "gptqmodel_load.h"
#include "test_util.h"
#include "tiny_run.h"

namespace qtune::train {
namespace {

namespace fs = std::filesystem;
const auto kFp32 = at::TensorOptions().dtype(at::kFloat);

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Projection `name` (a Hugging Face module name) as `file` stores it, dequantized, Q/K rows back in Hugging Face order.
at::Tensor stored_projection(const io::GgufFile& file, const std::string& name, const io::ModelConfig& config) {
  const int64_t heads = io::gguf_layout(config).rotary_heads(name + ".weight");
  auto stored = file.dequantize(file.tensor_info(io::GgufLayout{}.gguf_name(name + ".weight")));
  return heads > 0 ? io::unpermute_rotary_rows(stored, heads) : stored;
}

// The run's model as its training forward computes it (fake quantization on), with the trained adapter.
RunSetup training_model(const Recipe& recipe, const std::string& run) {
  auto s = RunSetup::create(recipe, nullptr);
  exporting::load_peft_adapter(*s.model, run + "/adapter");
  return s;
}

TEST(Qat, Nf4ExportReproducesTheLastTrainingForwardBitForBit) {
  TinyRun t;
  const auto recipe = t.recipe({"quant.qat=nf4", "quant.qat_group_size=128", "lora.dropout=0", "train.max_steps=6"});
  run_training(recipe, quiet());
  auto s = training_model(recipe, t.dir + "/run");
  const auto trained = probe_logits(*s.model);
  qat::set_fake_quant(*s.model, false);
  const auto unquantized = probe_logits(*s.model);
  EXPECT_GT((trained - unquantized).abs().max().item<double>(), 1e-3) << "fake quantization changed nothing";

  const auto out = t.dir + "/merged-nf4";
  const auto res = test::run_qtune("export " + t.dir + "/run --merged " + out + " --quantize nf4 --dtype fp32");
  ASSERT_EQ(res.code, 0) << res.err;
  EXPECT_TRUE(contains(res.out, "NF4 projections (block 128, double quant)")) << res.out;
  auto deployed = nn::load_causal_lm(out, kFp32);
  EXPECT_TRUE(test::bitwise_equal(probe_logits(*deployed), trained));

  // Another format than the one trained for is exported, with a warning that it is not what training saw.
  const auto fp4 = test::run_qtune("export " + t.dir + "/run --merged " + t.dir + "/merged-fp4 --quantize fp4 "
                                   "--no-quality-check");
  ASSERT_EQ(fp4.code, 0) << fp4.err;
  EXPECT_TRUE(contains(fp4.err, "trained for nf4 block 128")) << fp4.err;
}

// The int4 deployment: a GPTQ checkpoint (fp16 scales, integer zero points) whose logits are the last training
// forward's bit for bit in qtune, and which transformers + gptqmodel load with the same logits (within the fp16
// rounding of the weight their torch kernel multiplies by, as in OracleGptqmodel).
TEST(Qat, Int4ExportIsAGptqCheckpointOfTheTrainedModelThatTransformersLoads) {
  TinyRun t;
  const auto recipe = t.recipe({"quant.qat=int4", "quant.qat_group_size=32", "quant.qat_symmetric=false",
                                "lora.dropout=0", "train.max_steps=6"});
  run_training(recipe, quiet());
  auto s = training_model(recipe, t.dir + "/run");
  const auto trained = probe_logits(*s.model);
  const auto trained_probe = test::gptqmodel_probe_logits(*s.model);

  const auto out = t.dir + "/merged-int4";
  const auto res = test::run_qtune("export " + t.dir + "/run --merged " + out + " --quantize int4 --dtype fp32");
  ASSERT_EQ(res.code, 0) << res.err;
  EXPECT_TRUE(contains(res.out, "int4 g32 asymmetric projections (GPTQ checkpoint")) << res.out;
  EXPECT_FALSE(contains(res.err, "trained for")) << res.err;
  const auto config = io::read_json_file(out + "/config.json").at("quantization_config");
  EXPECT_EQ(config.at("quant_method"), "gptq");
  EXPECT_EQ(config.at("bits"), 4);
  EXPECT_EQ(config.at("group_size"), 32);
  EXPECT_EQ(config.at("sym"), false);
  auto deployed = nn::load_causal_lm(out, kFp32);
  EXPECT_TRUE(test::bitwise_equal(probe_logits(*deployed), trained));

  const auto theirs = test::transformers_load_gptq(out, t.dir);
  ASSERT_FALSE(theirs.empty());
  const auto ref = io::SafetensorsFile::open(theirs)->tensor("logits");
  EXPECT_LT((ref - trained_probe).abs().max().item<double>() / ref.abs().max().item<double>(), 2e-3);

  // Another group than the one trained for is exported, with a warning; int3 has no checkpoint layout.
  const auto g64 = test::run_qtune("export " + t.dir + "/run --merged " + t.dir + "/merged-g64 --quantize int4 "
                                   "--group-size 64 --asym --no-quality-check");
  ASSERT_EQ(g64.code, 0) << g64.err;
  EXPECT_TRUE(contains(g64.err, "trained for int4 g32 asymmetric")) << g64.err;
  const auto int3 = test::run_qtune("export " + t.dir + "/run --merged " + t.dir + "/merged-int3 --quantize int3");
  EXPECT_NE(int3.code, 0);
  EXPECT_TRUE(contains(int3.err, "int2, int4, int8 or w8a8")) << int3.err;
  EXPECT_FALSE(fs::exists(t.dir + "/merged-int3"));
}

TEST(Qat, GgufExportStoresTheBlocksTrainingSimulated) {
  TinyRun t;
  const auto recipe = t.recipe({"quant.qat=q4_0", "lora.dropout=0", "train.max_steps=4"});
  run_training(recipe, quiet());
  auto s = training_model(recipe, t.dir + "/run");
  const auto out = t.dir + "/model-q4_0.gguf";
  const auto res = test::run_qtune("export " + t.dir + "/run --gguf " + out + " --type q4_0 --no-quality-check");
  ASSERT_EQ(res.code, 0) << res.err;
  EXPECT_FALSE(contains(res.err, "trained for")) << res.err;
  auto file = io::GgufFile::open(out);
  const auto spec = quant::parse_fake_quant("q4_0", 0, true, "test");
  const auto& config = s.model->config();
  int64_t compared = 0;
  for (const auto& [name, layer] : lora::lora_layers(*s.model)) {
    SCOPED_TRACE(name);
    EXPECT_EQ(file->tensor_info(io::GgufLayout{}.gguf_name(name + ".weight")).type, quant::GgmlType::Q4_0);
    EXPECT_TRUE(test::bitwise_equal(stored_projection(*file, name, config),
                                    quant::fake_quantize_weight(layer->merged_weight(), spec).values));
    ++compared;
  }
  EXPECT_EQ(compared, 14);
  // A type whose projections are not Q4_0 is written, with a warning.
  const auto other = test::run_qtune("export " + t.dir + "/run --gguf " + t.dir + "/q8.gguf --type q8_0 --no-quality-check");
  ASSERT_EQ(other.code, 0) << other.err;
  EXPECT_TRUE(contains(other.err, "trained for q4_0")) << other.err;
}

// quant.qat as a GGUF file type: each projection trains for the type llama-quantize's mix gives it. On the tiny model
// (rows of 64 and 128 values) Q4_K's and Q6_K's 256-blocks fall back to Q5_0 and Q8_0, and the _k_m mix gives layer 1's
// attn_v and ffn_down the Q6_K (so Q8_0) of its more-bits layers: both types must appear, each block as trained.
TEST(Qat, GgufMixTrainsEachProjectionForItsOwnType) {
  TinyRun t;
  const auto recipe = t.recipe({"quant.qat=q4_k_m", "lora.dropout=0", "train.max_steps=3"});
  run_training(recipe, quiet());
  auto s = training_model(recipe, t.dir + "/run");
  EXPECT_NE(s.qat.summary.find("q5_0 x12"), std::string::npos) << s.qat.summary;
  EXPECT_NE(s.qat.summary.find("q8_0 x2"), std::string::npos) << s.qat.summary;
  const auto out = t.dir + "/model-q4_k_m.gguf";
  const auto res = test::run_qtune("export " + t.dir + "/run --gguf " + out + " --type q4_k_m --no-quality-check");
  ASSERT_EQ(res.code, 0) << res.err;
  EXPECT_FALSE(contains(res.err, "trained for")) << res.err;
  auto file = io::GgufFile::open(out);
  const auto& config = s.model->config();
  std::map<quant::GgmlType, int64_t> types;
  for (const auto& [name, layer] : lora::lora_layers(*s.model)) {
    SCOPED_TRACE(name);
    const auto& info = file->tensor_info(io::GgufLayout{}.gguf_name(name + ".weight"));
    ++types[info.type];
    EXPECT_TRUE(test::bitwise_equal(stored_projection(*file, name, config),
                                    quant::fake_quantize_weight(layer->merged_weight(), quant::ggml_fake_quant(info.type))
                                        .values));
    // The training forward used that same type.
    ASSERT_TRUE(layer->qat().weights.has_value());
    EXPECT_EQ(layer->qat().weights->ggml, info.type);
  }
  EXPECT_EQ(types[quant::GgmlType::Q5_0], 12);
  EXPECT_EQ(types[quant::GgmlType::Q8_0], 2);
  // A calibrated export rounds otherwise, and says so.
  std::string calib;
  for (int i = 0; i < 40; ++i) calib += "Tom had a red ball. Mia went to the river and saw a fish.\n";
  io::write_text_atomically(t.dir + "/calib.txt", calib);
  const auto cal = test::run_qtune("export " + t.dir + "/run --gguf " + t.dir + "/cal.gguf --type q4_k_m --calib " +
                                   t.dir + "/calib.txt --calib-samples 4 --calib-seq-len 32 --no-quality-check");
  ASSERT_EQ(cal.code, 0) << cal.err;
  EXPECT_TRUE(contains(cal.err, "--calib")) << cal.err;
}

// Delayed QAT: the first steps are plain QLoRA (the losses of a run without QAT), fake quantization switches on at
// ceil(qat_start · steps), and a run stopped before the switch and resumed after it ends bit-identical.
TEST(Qat, DelayedStartSwitchesAtItsStepAndResumesBitExactlyAcrossIt) {
  TinyRun t;
  const std::vector<std::string> base = {"lora.dropout=0", "train.max_steps=8", "train.grad_accum=2",
                                         "train.save_every=2"};
  auto with = [&](std::vector<std::string> extra, const std::string& out) {
    auto keys = base;
    keys.insert(keys.end(), extra.begin(), extra.end());
    keys.push_back("train.output_dir=" + t.dir + "/" + out);
    return t.recipe(keys);
  };
  std::vector<double> plain, straight, resumed;
  auto collect = [](std::vector<double>& v) {
    auto o = quiet();
    o.on_step = [&v](int64_t, double loss) { v.push_back(loss); };
    return o;
  };
  run_training(with({}, "plain"), collect(plain));
  const std::vector<std::string> qat = {"quant.qat=int4", "quant.qat_group_size=32", "quant.qat_start=0.5"};
  run_training(with(qat, "straight"), collect(straight));
  ASSERT_EQ(plain.size(), 8u);
  ASSERT_EQ(straight.size(), 8u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(straight[i], plain[i]) << "step " << i + 1 << " precedes quant.qat_start";
  EXPECT_NE(straight[4], plain[4]) << "step 5 is fake-quantized";

  auto first = collect(resumed);
  first.stop_after_step = 3;
  run_training(with(qat, "resumed"), first);
  auto second = collect(resumed);
  second.resume = "auto";
  EXPECT_EQ(run_training(with(qat, "resumed"), second).start_step, 2);  // the last checkpoint before the stop
  ASSERT_EQ(resumed.size(), 3u + 6u);
  resumed.erase(resumed.begin() + 2);  // step 3 ran twice: before the stop and after resuming from step 2
  for (size_t i = 0; i < 8; ++i) EXPECT_EQ(resumed[i], straight[i]) << "step " << i + 1;
  EXPECT_EQ(test::read_file(t.dir + "/resumed/adapter/adapter_model.safetensors"),
            test::read_file(t.dir + "/straight/adapter/adapter_model.safetensors"));
}

TEST(Qat, FullFineTuningTrainsEveryProjectionForItsDeployment) {
  TinyRun t;
  const auto recipe = t.recipe({"train.mode=full", "quant.format=none", "quant.qat=q8_0", "optim.lr=1e-3",
                                "train.max_steps=4"});
  const auto summary = run_training(recipe, quiet());
  EXPECT_LT(summary.last_loss, summary.first_loss);
  const auto out = t.dir + "/full-q8_0.gguf";
  const auto res = test::run_qtune("export " + t.dir + "/run --gguf " + out + " --type q8_0");
  ASSERT_EQ(res.code, 0) << res.err;
  auto trained = nn::load_causal_lm(t.dir + "/run/model", kFp32);
  auto file = io::GgufFile::open(out);
  const auto spec = quant::parse_fake_quant("q8_0", 0, true, "test");
  int64_t compared = 0;
  for (const auto& p : trained->named_parameters()) {
    if (p.key().find("down_proj") == std::string::npos) continue;
    const auto stored = file->dequantize(file->tensor_info(io::GgufLayout{}.gguf_name(p.key())));
    EXPECT_TRUE(test::bitwise_equal(stored, quant::fake_quantize_weight(p.value(), spec).values)) << p.key();
    ++compared;
  }
  EXPECT_EQ(compared, 2);
}

TEST(Qat, RecipeErrorsNameTheKey) {
  TinyRun t;
  auto msg = test::error_of([&] { t.recipe({"quant.qat=int5x"}); });
  EXPECT_TRUE(contains(msg, "quant.qat") && contains(msg, "int5x") && contains(msg, "nf4")) << msg;
  msg = test::error_of([&] { t.recipe({"quant.qat=nf4"}); });  // the tiny recipe keeps LoRA's default dropout
  EXPECT_TRUE(contains(msg, "lora.dropout")) << msg;
  msg = test::error_of([&] { t.recipe({"quant.qat=nf4", "lora.dropout=0", "quant.qat_start=1"}); });
  EXPECT_TRUE(contains(msg, "quant.qat_start")) << msg;
  // The tiny model's rows hold 64 or 128 values: Q4_K's blocks of 256 do not fit, and the layer is named.
  msg = test::error_of([&] { RunSetup::create(t.recipe({"quant.qat=q4_k", "lora.dropout=0"}), nullptr); });
  EXPECT_TRUE(contains(msg, "q_proj") && contains(msg, "256")) << msg;
}

// The shipped QAT recipe is valid on the real model it names (checked by `qtune plan`, which loads no weights).
TEST(Qat, ShippedRecipePlansOnSmolLM2) {
  QTUNE_REQUIRE_SMOLLM2();
  const std::string src = QTUNE_TEST_SOURCE_DIR;
  const auto r = test::run_qtune("plan " + src + "/recipes/smollm2-facts-qat.yaml model.path=" + test::smollm2_gguf() +
                                 " data.train=" + src + "/data/demo/facts_train.jsonl data.eval=" + src +
                                 "/data/demo/facts_eval.jsonl");
  EXPECT_EQ(r.code, 0) << r.out << r.err;
}

}  // namespace
}  // namespace qtune::train
