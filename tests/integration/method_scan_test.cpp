// The per-layer method choice end to end on a tiny model: the scan measures each linear in NF4, int8, GPTQ, AWQ and
// 16-bit; the chosen plan stays within the budget and the checkpoint written from it, loaded back by qtune, has the
// calibration loss the scan measured for it (it holds exactly what was scored), each method's linears loaded with the
// codes written; the AWQ linear's forward is x·(Q(W·s)/s)ᵀ; a checkpoint whose tensors contradict its map is refused;
// QLoRA trains on the mixed base and leaves it as it was; the CLI and a recipe make one.
#include <gtest/gtest.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "qtune/calib/importance.h"
#include "qtune/calib/method_checkpoint.h"
#include "qtune/calib/method_scan.h"
#include "qtune/eval/perplexity.h"
#include "qtune/io/json_file.h"
#include "qtune/io/safetensors.h"
#include "qtune/lora/lora_linear.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quantized_linear.h"
#include "qtune/quant/gptq_weight.h"
#include "qtune/train/calibrated_base.h"
#include "qtune/train/run_setup.h"
#include "gptqmodel_load.h"
#include "test_util.h"
#include "tiny_run.h"

namespace qtune::calib {
namespace {
namespace fs = std::filesystem;

const auto kFp32 = at::TensorOptions().dtype(at::kFloat);

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

MethodScanOptions tiny_options() {
  MethodScanOptions o;
  o.seq_len = 64;
  o.gptq_grid.group_size = 32;  // the tiny model's 64 inputs
  o.awq.grid.group_size = 32;
  return o;
}

double loaded_nll(const std::string& dir, const std::vector<std::vector<int64_t>>& windows) {
  auto m = nn::load_causal_lm(dir, kFp32);
  return eval::document_perplexity(*m, windows, 64).mean_nll();
}

at::Tensor loss_of(nn::CausalLMImpl& model, const data::Batch& b) {
  const auto logits = model.forward(b.input_ids);
  return at::cross_entropy_loss(logits.view({-1, logits.size(-1)}), b.targets.view({-1}), {}, at::Reduction::Mean, -100);
}

// Linear i gets method i mod 5 (every method used), as an option index.
std::vector<size_t> round_robin(const MethodScan& scan) {
  std::vector<size_t> chosen;
  for (size_t i = 0; i < scan.table().size(); ++i) chosen.push_back(i % scan.table()[i].options.size());
  return chosen;
}

struct Scanned {
  train::TinyRun t;
  std::vector<std::vector<int64_t>> windows;
  std::unique_ptr<MethodScan> scan;
  Scanned() {
    windows = calibration_sequences(t.dir + "/corpus.txt", data::Tokenizer::load(t.model), 64, 3);
    scan = std::make_unique<MethodScan>(t.model, windows, tiny_options());
  }
};

TEST(MethodScan, ThePlanWithinTheBudgetLoadsBackWithTheLossItWasChosenFor) {
  Scanned s;
  const auto& table = s.scan->table();
  ASSERT_EQ(table.size(), 14u);
  // GPTQ and AWQ fitted on windows 0 and 2, every method scored on window 1.
  ASSERT_EQ(s.scan->scored_windows().size(), 1u);
  EXPECT_EQ(s.scan->scored_windows()[0], s.windows[1]);
  for (const auto& l : table) {
    ASSERT_EQ(l.options.size(), 5u) << l.name;  // every method fits the tiny shapes with groups of 32
    for (const auto& o : l.options)
      if (o.method == "16bit") EXPECT_EQ(o.bits, 16.0);
      else EXPECT_LT(o.bits, 9.0) << o.method;
  }
  const auto choice = choose_methods(table, 5.0);
  EXPECT_LE(choice.average_bits, 5.0);
  std::set<std::string> used;
  for (size_t i = 0; i < table.size(); ++i) used.insert(table[i].options[choice.chosen[i]].method);
  const double planned = s.scan->loss_of(choice.chosen);
  const auto out = s.t.dir + "/auto";
  const auto written = write_method_checkpoint(*s.scan, choice.chosen, {5.0, planned}, out);
  EXPECT_NEAR(written.bits_per_weight, choice.average_bits, 1e-12);
  EXPECT_NEAR(loaded_nll(out, s.scan->scored_windows()), planned, 2e-5) << written.runtimes.store;
  // The scan's per-linear loss is the whole model's with that one linear so stored.
  std::vector<size_t> one;  // every linear 16-bit
  for (const auto& l : table)
    one.push_back(std::find_if(l.options.begin(), l.options.end(), [](const auto& o) { return o.method == "16bit"; }) -
                  l.options.begin());
  auto only_third = one;
  only_third[3] = 2;  // gptq for model.layers.0.self_attn.o_proj alone
  EXPECT_NEAR(s.scan->loss_of(only_third) - s.scan->loss_of(one), table[3].options[2].loss - table[3].options[4].loss,
              2e-5);
  EXPECT_TRUE(fs::exists(out + "/quant_plan.yaml"));
}

TEST(MethodScan, EveryMethodLoadsBackWithTheCodesWritten) {
  Scanned s;
  const auto chosen = round_robin(*s.scan);
  const double planned = s.scan->loss_of(chosen);
  const auto out = s.t.dir + "/mixed";
  const auto written = write_method_checkpoint(*s.scan, chosen, {0, planned}, out);
  EXPECT_EQ(written.runtimes.store, "qtune");
  EXPECT_EQ(written.runtimes.loaders, (std::vector<std::string>{"qtune"}));
  EXPECT_TRUE(contains(written.runtimes.why, "awq keeps its input scale unfused")) << written.runtimes.why;
  const auto q = io::read_json_file(out + "/config.json")["quantization_config"];
  EXPECT_EQ(q["quant_method"], "qtune");
  EXPECT_EQ(q["linears"]["model.layers.0.self_attn.q_proj"], "nf4");
  EXPECT_EQ(q["linears"]["model.layers.0.self_attn.o_proj"], "awq");
  EXPECT_EQ(q["gptq"]["group_size"], 32);

  auto model = nn::load_causal_lm(out, kFp32);
  size_t i = 0;
  for (const auto& item : model->named_modules("", false)) {
    if (item.key().rfind("model.layers.", 0) != 0) continue;
    auto lin = std::dynamic_pointer_cast<nn::LinearImpl>(item.value());
    if (!lin) continue;
    ASSERT_LT(i, s.scan->table().size());
    ASSERT_EQ(item.key(), s.scan->table()[i].name);
    const auto expected = s.scan->candidate(i, chosen[i]);
    if (!expected) {
      ASSERT_TRUE(std::dynamic_pointer_cast<nn::DenseLinearImpl>(item.value())) << item.key();
      EXPECT_TRUE(test::bitwise_equal(lin->dense_weight(), s.scan->dense16(i).to(at::kFloat))) << item.key();
    } else {
      auto ql = std::dynamic_pointer_cast<nn::QuantizedLinearImpl>(item.value());
      ASSERT_TRUE(ql) << item.key();
      EXPECT_EQ(ql->weight().format(), expected->format()) << item.key();
      EXPECT_TRUE(test::bitwise_equal(ql->weight().dequantize(at::kFloat), expected->dequantize(at::kFloat)))
          << item.key();
    }
    ++i;
  }
  EXPECT_EQ(i, s.scan->table().size());
  EXPECT_NEAR(loaded_nll(out, s.scan->scored_windows()), planned, 2e-5);

  // The AWQ linear (unfused): x·(Q(W·s)/s)ᵀ, from the packed codes and the scale.
  const auto awq = s.scan->candidate(3, chosen[3]);
  const auto& g = dynamic_cast<const quant::GptqWeight&>(*awq);
  ASSERT_TRUE(g.input_scale().defined());
  const auto x = at::randn({5, g.in_features()}, at::TensorOptions().dtype(at::kFloat));
  nn::QuantizedLinearImpl linear({"o", g.in_features(), g.out_features(), false}, awq, {});
  const auto expect = at::matmul(x, (quant::unpack_gptq(g.tensors(), g.grid()).dequantize() / g.input_scale()).t());
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(linear.forward(x), expect, 1e-5, 1e-6));
}

// nf4 + 16bit and gptq + 16bit: the plainest store holds them, and the runtime it names loads it.
TEST(MethodScan, OneStoreMethodsWriteThatStoresCheckpointAndItsRuntimeLoadsIt) {
  Scanned s;
  for (const std::string first : {"nf4", "gptq"}) {
    // Alternate `first` and 16bit: the plainest store holds them.
    std::vector<size_t> chosen;
    for (size_t i = 0; i < s.scan->table().size(); ++i) {
      const auto& opts = s.scan->table()[i].options;
      const std::string want = i % 2 ? "16bit" : first;
      chosen.push_back(std::find_if(opts.begin(), opts.end(), [&](const auto& o) { return o.method == want; }) - opts.begin());
    }
    const double planned = s.scan->loss_of(chosen);
    const auto out = s.t.dir + "/" + first;
    const auto written = write_method_checkpoint(*s.scan, chosen, {0, planned}, out);
    const auto q = io::read_json_file(out + "/config.json")["quantization_config"];
    if (first == "nf4") {
      EXPECT_EQ(written.runtimes.store, "bitsandbytes");
      EXPECT_EQ(q["quant_method"], "bitsandbytes");
      EXPECT_EQ(written.runtimes.line(), "qtune, transformers + bitsandbytes");
    } else {
      EXPECT_EQ(written.runtimes.store, "gptq");
      EXPECT_EQ(q["quant_method"], "gptq");
      EXPECT_EQ(q["dynamic"].size(), 7u);  // the 16-bit linears, each a "-:" rule
      EXPECT_EQ(written.runtimes.line(), "qtune, gptqmodel, vLLM");
    }
    EXPECT_NEAR(loaded_nll(out, s.scan->scored_windows()), planned, 2e-5) << first;

    // The runtime the output names loads it: transformers + bitsandbytes, or gptqmodel (the `dynamic` skip rules),
    // with qtune's logits on the oracle's probe.
    auto ours_model = nn::load_causal_lm(out, kFp32);
    const auto ours = test::gptqmodel_probe_logits(*ours_model);
    at::Tensor theirs;
    if (first == "nf4") {
      io::write_safetensors(s.t.dir + "/ids.safetensors",
                            {{"input_ids", at::tensor(std::vector<int64_t>{1, 5, 9, 77, 200, 13, 42, 3, 250, 128, 64,
                                                                           7, 99, 31, 180, 2}).view({1, -1})}},
                            {});
      const std::string cmd = std::string(QTUNE_TEST_PYTHON) + " " + QTUNE_TEST_SOURCE_DIR +
                              "/tests/oracle/bnb_4bit_model.py --logits " + out + " " + s.t.dir + "/ids.safetensors " +
                              s.t.dir + "/tf.safetensors > " + s.t.dir + "/tf.log 2>&1";
      ASSERT_EQ(std::system(cmd.c_str()), 0) << test::read_file(s.t.dir + "/tf.log");
      theirs = io::SafetensorsFile::open(s.t.dir + "/tf.safetensors")->tensor("logits");
      EXPECT_LE((ours - theirs).abs().max().item<double>(), 1e-4);
    } else {
      const auto file = test::transformers_load_gptq(out, s.t.dir);
      ASSERT_FALSE(file.empty());
      theirs = io::SafetensorsFile::open(file)->tensor("logits");
      // gptqmodel's torch kernel rounds the dequantized weight to fp16.
      EXPECT_LT((ours - theirs).abs().max().item<double>() / theirs.abs().max().item<double>(), 2e-3);
    }
  }
}

TEST(MethodScan, AMixedCheckpointWhoseTensorsContradictItsMapIsRefused) {
  Scanned s;
  const auto chosen = round_robin(*s.scan);
  const auto out = s.t.dir + "/mixed";
  write_method_checkpoint(*s.scan, chosen, {0, 0}, out);
  auto config = io::read_json_file(out + "/config.json");
  const auto good = config;
  // k_proj is stored as GPTQ (index 2); the map says nf4.
  ASSERT_EQ(config["quantization_config"]["linears"]["model.layers.0.self_attn.k_proj"], "int8");
  ASSERT_EQ(config["quantization_config"]["linears"]["model.layers.0.self_attn.v_proj"], "gptq");
  config["quantization_config"]["linears"]["model.layers.0.self_attn.v_proj"] = "nf4";
  std::ofstream(out + "/config.json") << config.dump(2);
  auto e = test::error_of([&] { nn::load_causal_lm(out, kFp32); });
  EXPECT_TRUE(contains(e, out + "/model.safetensors: tensor 'model.layers.0.self_attn.v_proj.qweight': says "
                           "model.layers.0.self_attn.v_proj is stored as gptq, but " + out +
                           "/config.json's quantization_config.linears names it nf4")) << e;
  // A linear the map leaves out, and a method it does not know.
  config = good;
  config["quantization_config"]["linears"].erase("model.layers.1.mlp.down_proj");
  std::ofstream(out + "/config.json") << config.dump(2);
  e = test::error_of([&] { nn::load_causal_lm(out, kFp32); });
  EXPECT_TRUE(contains(e, "quantization_config.linears names no method for model.layers.1.mlp.down_proj")) << e;
  config = good;
  config["quantization_config"]["linears"]["model.layers.1.mlp.down_proj"] = "int3";
  std::ofstream(out + "/config.json") << config.dump(2);
  e = test::error_of([&] { nn::load_causal_lm(out, kFp32); });
  EXPECT_TRUE(contains(e, "quantization_config.linears.model.layers.1.mlp.down_proj is \"int3\"")) << e;
}

TEST(MethodScan, UnknownMethodsAndAnImpossibleBudgetAreRefusedByTheCli) {
  train::TinyRun t;
  auto r = test::run_qtune("quantize " + t.model + " --out " + t.dir + "/o --method auto --calib " + t.dir +
                           "/corpus.txt --methods nf4,fp8");
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.err, "--methods: unknown method 'fp8' (expected nf4, int8, gptq, awq or 16bit)")) << r.err;
  r = test::run_qtune("quantize " + t.model + " --out " + t.dir + "/o --methods int8,16bit --calib " + t.dir +
                      "/corpus.txt --budget-bits 5 --calib-tokens 128 --calib-seq-len 64");
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.err, "--budget-bits 5 is below what the cheapest method of every linear costs (8.")) << r.err;
  EXPECT_FALSE(fs::exists(t.dir + "/o"));
}

TEST(MethodScan, TheCliWritesThePlanAndSaysWhatLoadsIt) {
  train::TinyRun t;
  const auto out = t.dir + "/auto";
  const auto r = test::run_qtune("quantize " + t.model + " --out " + out + " --method auto --calib " + t.dir +
                                 "/corpus.txt --budget-bits 6 --group-size 32 --calib-tokens 192 --calib-seq-len 64");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "plan: ")) << r.out;
  EXPECT_TRUE(contains(r.out, "loads in: qtune")) << r.out;
  EXPECT_TRUE(contains(r.err, "method scan [ 14/14]")) << r.err;
  const auto q = io::read_json_file(out + "/config.json")["quantization_config"];
  EXPECT_TRUE(q.is_object());
  const auto gen = test::run_qtune("generate " + out + " --prompt 'What is' --max-new-tokens 3");
  EXPECT_EQ(gen.code, 0) << gen.err;
}

TEST(MethodScan, QLoRATrainsOnTheMixedBaseAndLeavesItAsItWas) {
  Scanned s;
  const auto out = s.t.dir + "/mixed";
  write_method_checkpoint(*s.scan, round_robin(*s.scan), {0, 0}, out);
  const auto recipe = s.t.recipe({"model.path=" + out, "model.tokenizer=" + s.t.model, "train.max_steps=20",
                                  "optim.lr=1e-2"});
  {
    auto setup = train::RunSetup::create(recipe, nullptr);
    std::vector<std::pair<std::shared_ptr<nn::LinearImpl>, at::Tensor>> before;
    for (const auto& item : setup.model->named_modules("", false))
      if (auto l = std::dynamic_pointer_cast<lora::LoraLinearImpl>(item.value()))
        before.emplace_back(l->base(), l->base()->dense_weight().clone());
    ASSERT_EQ(before.size(), 14u);
    setup.model->train();
    for (int64_t step = 0; step < 2; ++step) {
      loss_of(*setup.model, setup.train_loader->batch(0, step)).backward();
      torch::NoGradGuard no_grad;
      for (auto& [name, p] : setup.trainable)
        if (p.grad().defined()) p.sub_(p.grad() * 0.05), p.mutable_grad().zero_();
    }
    for (const auto& [base, w] : before) EXPECT_TRUE(test::bitwise_equal(base->dense_weight(), w)) << base->spec().name;
  }
  std::vector<double> losses;
  auto o = train::quiet();
  o.on_step = [&](int64_t, double loss) { losses.push_back(loss); };
  const auto summary = train::run_training(recipe, o);
  ASSERT_EQ(losses.size(), 20u);
  EXPECT_LT(losses.back(), losses.front());
  // The merged export says what it keeps of the base's methods.
  const auto merged = test::run_qtune("export " + s.t.dir + "/run --merged " + s.t.dir + "/merged --no-quality-check");
  ASSERT_EQ(merged.code, 0) << merged.err;
  EXPECT_TRUE(contains(merged.out, "is qtune's mixed checkpoint (2 16bit, 3 awq, 3 gptq, 3 int8, 3 nf4; only qtune "
                                   "loads it)")) << merged.out;
}

}  // namespace
}  // namespace qtune::calib

namespace qtune::train {
namespace {

TEST(MethodScanRecipe, QuantMethodAutoMakesTheBaseOnceAndTrainsOnIt) {
  TinyRun t;
  const std::vector<std::string> keys = {"quant.method=auto", "quant.calib=" + t.dir + "/corpus.txt",
                                         "quant.calib_samples=4", "quant.calib_seq_len=64", "quant.group_size=32",
                                         "quant.budget_bits=5", "quant.scan_tokens=128", "train.max_steps=4"};
  const auto log = t.dir + "/log.txt";
  TrainOptions o;
  o.out = std::fopen(log.c_str(), "w");
  o.terminal = false;
  const auto s = run_training(t.recipe(keys), o);
  std::fclose(o.out);
  EXPECT_EQ(s.steps, 4);
  const auto text = test::read_file(log);
  EXPECT_NE(text.find("method scan: nf4,int8,gptq,awq,16bit on 2 windows of 64 tokens, budget 5"), std::string::npos)
      << text;
  EXPECT_NE(text.find("bits per weight; calibration loss dense"), std::string::npos) << text;
  std::vector<std::string> found;
  for (const auto& e : std::filesystem::directory_iterator(t.dir + "/run"))
    if (e.path().filename().string().rfind("base-auto-", 0) == 0) found.push_back(e.path().string());
  ASSERT_EQ(found.size(), 1u);
  EXPECT_TRUE(io::read_json_file(found[0] + "/config.json").contains("quantization_config"));
  EXPECT_TRUE(std::filesystem::exists(found[0] + "/quant_plan.yaml"));
  const auto again = t.dir + "/again.txt";
  auto* f = std::fopen(again.c_str(), "w");
  EXPECT_EQ(calibrated_base(t.recipe(keys), f), found[0]);
  std::fclose(f);
  EXPECT_NE(test::read_file(again).find("calibrated base: reusing " + found[0]), std::string::npos);

  auto e = test::error_of([&] { t.recipe({"quant.method=auto", "quant.calib=" + t.dir + "/corpus.txt"}); });
  EXPECT_NE(e.find("quant.method auto chooses within quant.budget_bits: set it"), std::string::npos) << e;
  e = test::error_of([&] {
    t.recipe({"quant.method=auto", "quant.calib=" + t.dir + "/corpus.txt", "quant.budget_bits=5",
              "quant.methods=[nf4, fp8]"});
  });
  EXPECT_NE(e.find("quant.methods: unknown method 'fp8'"), std::string::npos) << e;
}

}  // namespace
}  // namespace qtune::train
