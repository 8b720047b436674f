// The `qtune` binary end to end: help texts, the commands on a real model and on one it creates, and the
// errors a user sees for bad input (exit code 1, "error: ..." naming the file).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>

#include "test_util.h"

namespace {

using Run = qtune::test::QtuneRun;
Run run(const std::string& args) { return qtune::test::run_qtune(args); }

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

std::string stories() { return qtune::test::shared_dir() + "/models/stories260K"; }

TEST(Cli, HelpForEveryCommand) {
  auto top = run("--help");
  EXPECT_EQ(top.code, 0);
  for (const std::string cmd : {"inspect", "generate", "eval", "init"}) {
    EXPECT_TRUE(contains(top.out, cmd)) << cmd;
    auto help = run(cmd + " --help");
    EXPECT_EQ(help.code, 0) << cmd;
    EXPECT_TRUE(contains(help.out, "MODEL") || contains(help.out, "OUT_DIR")) << help.out;
  }
  EXPECT_TRUE(contains(run("generate --help").out, "--temperature"));
  EXPECT_TRUE(contains(run("eval --help").out, "--stride"));
}

TEST(Cli, InspectGenerateEvalOnStories260K) {
  QTUNE_REQUIRE_SHARED();
  auto inspect = run("inspect " + stories());
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  EXPECT_TRUE(contains(inspect.out, "llama (5 layers, hidden 64")) << inspect.out;
  EXPECT_TRUE(contains(inspect.out, "260032")) << inspect.out;
  EXPECT_TRUE(contains(inspect.out, "F32")) << inspect.out;

  auto gen = run("generate " + stories() + " --prompt 'Once upon a time' -n 20 --device cpu");
  ASSERT_EQ(gen.code, 0) << gen.err;
  EXPECT_TRUE(contains(gen.out, "Once upon a time, there was a little girl named Lily. She loved to play")) << gen.out;
  EXPECT_TRUE(contains(gen.err, "tokens/s")) << gen.err;

  auto ev = run("eval " + stories() + " --text " + qtune::test::shared_dir() +
                "/data/tinystories_valid_head.txt --split-on '<|endoftext|>' --seq-len 512 --json");
  ASSERT_EQ(ev.code, 0) << ev.err;
  auto j = nlohmann::json::parse(ev.out);
  EXPECT_EQ(j["predicted_tokens"].get<int64_t>(), 7158);
  EXPECT_NEAR(j["perplexity"].get<double>(), 3.3169, 5e-5);
}

TEST(Cli, InitCreatesAModelThatGeneratesAndEvaluates) {
  const auto dir = qtune::test::temp_dir();
  auto init = run("init " + dir + "/m --config " + std::string(QTUNE_TEST_SOURCE_DIR) +
                  "/configs/models/tiny-llama.json --corpus-out " + dir + "/text.txt --seed 1");
  ASSERT_EQ(init.code, 0) << init.err;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"})
    EXPECT_TRUE(std::filesystem::exists(dir + "/m/" + f)) << f;
  auto gen = run("generate " + dir + "/m --prompt 'One day, Lily' -n 8 --temperature 0.8 --seed 3");
  ASSERT_EQ(gen.code, 0) << gen.err;
  EXPECT_TRUE(contains(gen.out, "One day, Lily")) << gen.out;
  auto ev = run("eval " + dir + "/m --text " + dir + "/text.txt --seq-len 64 --json");
  ASSERT_EQ(ev.code, 0) << ev.err;
  // An untrained model is close to uniform over its 512 pieces.
  const double ppl = nlohmann::json::parse(ev.out)["perplexity"].get<double>();
  EXPECT_GT(ppl, 300.0);
  EXPECT_LT(ppl, 900.0);
}

TEST(Cli, QuantizeWritesACheckpointThatInspectEvalAndGenerateRead) {
  QTUNE_REQUIRE_SHARED();
  const auto dir = qtune::test::temp_dir();
  auto q = run("quantize " + stories() + " --out " + dir + "/q --format nf4");
  ASSERT_EQ(q.code, 0) << q.err;
  EXPECT_TRUE(contains(q.out, "nf4      35 linears")) << q.out;
  auto inspect = run("inspect " + dir + "/q");
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  EXPECT_TRUE(contains(inspect.out, "quantized    bitsandbytes nf4 with double quantization")) << inspect.out;
  EXPECT_TRUE(contains(inspect.out, "U8")) << inspect.out;
  auto ev = run("eval " + dir + "/q --text " + qtune::test::shared_dir() +
                "/data/tinystories_valid_head.txt --split-on '<|endoftext|>' --seq-len 512 --json");
  ASSERT_EQ(ev.code, 0) << ev.err;
  const double ppl = nlohmann::json::parse(ev.out)["perplexity"].get<double>();
  EXPECT_GT(ppl, 3.3169) << "4 bits cost something";
  EXPECT_LT(ppl, 4.0) << "but not much";
  auto again = run("quantize " + stories() + " --out " + dir + "/q");
  EXPECT_EQ(again.code, 1);
  EXPECT_TRUE(contains(again.err, "already holds a model.safetensors")) << again.err;
}

TEST(Cli, BadInputGivesAnErrorNamingThePath) {
  auto missing = run("inspect /nonexistent/model");
  EXPECT_EQ(missing.code, 1);
  EXPECT_TRUE(contains(missing.err, "error: /nonexistent/model")) << missing.err;

  const auto dir = qtune::test::temp_dir();
  std::ofstream(dir + "/config.json") << R"({"model_type": "gpt2", "hidden_size": 8})";
  auto unsupported = run("inspect " + dir);
  EXPECT_EQ(unsupported.code, 1);
  EXPECT_TRUE(contains(unsupported.err, dir + "/config.json")) << unsupported.err;
  EXPECT_TRUE(contains(unsupported.err, "model_type 'gpt2' is not supported")) << unsupported.err;

  auto no_args = run("generate");
  EXPECT_NE(no_args.code, 0);
  EXPECT_TRUE(contains(no_args.err + no_args.out, "MODEL")) << no_args.err;

  if (!qtune::test::shared_dir().empty()) {
    auto no_text = run("eval " + stories() + " --text /nonexistent.txt");
    EXPECT_EQ(no_text.code, 1);
    EXPECT_TRUE(contains(no_text.err, "--text /nonexistent.txt")) << no_text.err;
    auto bad_device = run("generate " + stories() + " -p hi --device tpu");
    EXPECT_EQ(bad_device.code, 1);
    EXPECT_TRUE(contains(bad_device.err, "expected auto, cpu, cuda")) << bad_device.err;
  }
}

}  // namespace

namespace {

std::string source(const std::string& rel) { return std::string(QTUNE_TEST_SOURCE_DIR) + "/" + rel; }


TEST(Cli, TrainHelpRecipeAndRecipeErrors) {
  const auto help = run("train --help-recipe");
  EXPECT_EQ(help.code, 0);
  for (const std::string key : {"lora.r", "optim.name", "train.gradient_checkpointing", "data.chat_template"})
    EXPECT_TRUE(contains(help.out, key)) << key;
  const auto dir = qtune::test::temp_dir();
  std::ofstream(dir + "/bad.yaml") << "model:\n  path: " << source("configs/models/llama-2-7b") << "\ntrian:\n  steps: 3\n";
  auto r = run("train " + dir + "/bad.yaml");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.err, "bad.yaml:3: unknown recipe section 'trian'; did you mean 'train'?")) << r.err;
  r = run("train " + dir + "/absent.yaml");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.err, "absent.yaml")) << r.err;
  r = run("train " + source("recipes/demo-qlora.yaml") + " lora.r=abc");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.err, "'lora.r' must be an integer, got 'abc'")) << r.err;
}

TEST(Cli, DemoDataInTheRepoIsWhatTheGeneratorWrites) {
  const auto dir = qtune::test::temp_dir();
  ASSERT_EQ(run("demo-data " + dir).code, 0);
  for (const std::string f : {"pretrain.txt", "pretrain_eval.txt", "qa_train.jsonl", "qa_eval.jsonl", "facts_train.jsonl",
                              "facts_eval.jsonl"})
    EXPECT_TRUE(qtune::test::read_file(dir + "/" + f) == qtune::test::read_file(source("data/demo/" + f))) << f << " differs: rerun qtune demo-data data/demo";
}

// The recipes for real use, checked the way a user checks them before renting a card: model shape from the config
// presets, data and a tokenizer from the demo (plan counts tokens), the estimate against 24 GB and 8 GB cards.
TEST(Cli, PlanChecksThe7BRecipesAgainstTheirCards) {
  const auto dir = qtune::test::temp_dir();
  ASSERT_EQ(run("init " + dir + "/tok --config " + source("configs/models/demo-llama.json") + " --tokenizer-corpus " +
                source("data/demo/pretrain_eval.txt"))
                .code,
            0);
  struct Case {
    std::string recipe, model;
    int card;
    bool fits;
  };
  for (const auto& c : std::vector<Case>{{"llama2-7b-qlora-24gb", "llama-2-7b", 24, true},
                                         {"llama2-7b-qlora-8gb", "llama-2-7b", 8, true},
                                         {"mistral-7b-qlora-24gb", "mistral-7b", 24, true},
                                         {"mistral-7b-qlora-8gb", "mistral-7b", 8, true},
                                         {"llama2-7b-qlora-24gb", "llama-2-7b", 8, false}}) {
    const auto r = run("plan " + source("recipes/" + c.recipe + ".yaml") + " model.path=" +
                       source("configs/models/" + c.model) + " model.tokenizer=" + dir + "/tok data.train=" +
                       source("data/demo/qa_train.jsonl") + " --device cuda --card-gib " + std::to_string(c.card));
    EXPECT_EQ(r.code, c.fits ? 0 : 3) << c.recipe << "\n" << r.out << r.err;
    EXPECT_TRUE(contains(r.out, c.fits ? "FITS" : "DOES NOT FIT")) << r.out;
    EXPECT_TRUE(contains(r.out, "activations with gradient checkpointing")) << r.out;
  }
  // The recipe says device: cuda; plan estimates for it on any machine, without --device.
  const auto r = run("plan " + source("recipes/llama2-7b-qlora-24gb.yaml") + " model.path=" +
                     source("configs/models/llama-2-7b") + " model.tokenizer=" + dir + "/tok data.train=" +
                     source("data/demo/qa_train.jsonl") + " --card-gib 24");
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "peak memory estimate on cuda")) << r.out;
}

}  // namespace

namespace {

// qtune bench train / decode on a tiny shape: they run, train what a QLoRA run trains (r·(in+out) per projection),
// keep the loss finite on their random codes, and report in JSON for scripts/bench_train.py.
TEST(Cli, BenchTrainAndDecodeReportWhatTheyMeasured) {
  const auto config = source("configs/models/tiny-llama.json");
  const auto cfg = nlohmann::json::parse(qtune::test::read_file(config));
  const int64_t h = cfg["hidden_size"], inter = cfg["intermediate_size"], layers = cfg["num_hidden_layers"];
  const int64_t heads = cfg["num_attention_heads"], head_dim = cfg.value("head_dim", h / heads);
  const int64_t q = heads * head_dim, kv = cfg.value("num_key_value_heads", heads) * head_dim;
  const int64_t r = 4;
  const int64_t per_layer = r * ((h + q) * 2 + (h + kv) * 2 + (h + inter) * 3);  // q o, k v, gate up down
  for (const std::string base : {"nf4", "int8", "dense"}) {
    const auto t = run("bench train --config " + config + " --base " + base +
                       " --batch 2 --seq 32 --steps 1 --warmup 1 --r 4 --alpha 8 --packed 2 --json");
    ASSERT_EQ(t.code, 0) << base << ": " << t.err;
    const auto j = nlohmann::json::parse(t.out);
    EXPECT_EQ(j["trainable_params"].get<int64_t>(), layers * per_layer) << base;
    EXPECT_GT(j["tokens_per_s"].get<double>(), 0) << base;
    EXPECT_TRUE(std::isfinite(j["last_loss"].get<double>())) << base;
    EXPECT_GT(j["plan_estimate_bytes"].get<int64_t>(), 0) << base;
  }
  const auto d = run("bench decode --config " + config + " --prompt 8 --new-tokens 5 --json");
  ASSERT_EQ(d.code, 0) << d.err;
  EXPECT_EQ(nlohmann::json::parse(d.out)["new_tokens"].get<int64_t>(), 5);
  const auto bad = run("bench train --config " + config + " --seq 100000");
  EXPECT_EQ(bad.code, 1);
  EXPECT_TRUE(contains(bad.err, "--seq 100000 is longer than the model's")) << bad.err;
}

}  // namespace

namespace {

// Commands that run the model give OpenMP's waiting workers a short spin (issue 36: the runtime's long spin lost 70%
// of the throughput beside one busy process), unless the user chose a wait or asked for the long spin.
TEST(Cli, ModelCommandsSpinBrieflyUnlessTheUserChoseAWait) {
  const auto config = source("configs/models/tiny-llama.json");
  const std::string args = "bench train --config " + config + " --batch 1 --seq 16 --steps 1 --warmup 0 --json";
  const auto wait = [&](const std::string& env) {
    const auto t = qtune::test::run_qtune(
        args, "env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT -u QTUNE_OMP_WAIT -u OMP_NUM_THREADS " + env);
    EXPECT_EQ(t.code, 0) << env << ": " << t.err;
    return t.code == 0 ? nlohmann::json::parse(t.out)["omp_wait"].get<std::string>() : "";
  };
  EXPECT_EQ(wait(""), "GOMP_SPINCOUNT=1000");
  EXPECT_EQ(wait("QTUNE_OMP_WAIT=spin"), "default");
  EXPECT_EQ(wait("OMP_WAIT_POLICY=PASSIVE"), "OMP_WAIT_POLICY=PASSIVE");
  EXPECT_EQ(wait("GOMP_SPINCOUNT=20"), "GOMP_SPINCOUNT=20");
  EXPECT_EQ(wait("OMP_NUM_THREADS=1"), "default");  // no workers wait (ctest runs the suite so)
}

}  // namespace
