// llama.cpp itself (llama-cpp-python, built by scripts/setup.sh; tests/oracle/llama_cpp_gguf.py) reads what
// `qtune export --gguf` and `--gguf-adapter` write, for a fine-tuned stories260K (SentencePiece vocabulary, from the
// Hugging Face directory in ../shared) and a fine-tuned SmolLM2-135M-Instruct (byte-level BPE, from its Q4_1 GGUF):
//  - its tokenization of a multilingual corpus equals qtune's;
//  - every exported type loads, and its logits are within the type's tolerance (below) of qtune's logits for the same
//    file; f16 greedy continuations are identical;
//  - llama-quantize, run on qtune's f32 file, picks the same type for every tensor as qtune's export of each type
//    and writes the same bytes;
//  - QLoRA on the GGUF itself (quant.format: keep): the GGUF LoRA adapter, applied by llama.cpp to that same file,
//    gives the logits of the model qtune trained.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qtune/data/demo_task.h"
#include "qtune/data/tokenizer.h"
#include "qtune/eval/generate.h"
#include "qtune/export/gguf_export.h"
#include "qtune/export/gguf_type_mix.h"
#include "qtune/export/gguf_vocab.h"
#include "qtune/export/peft_adapter.h"
#include "qtune/export/trained_model.h"
#include "qtune/io/atomic_file.h"
#include "qtune/io/safetensors.h"
#include "qtune/lora/inject.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quant_linear_factory.h"
#include "qtune/train/recipe.h"
#include "qtune/train/run_setup.h"
#include "qtune/train/trainer.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
const auto kFp32 = at::TensorOptions().dtype(at::kFloat);

// max |llama.cpp logit − qtune logit| over every position and token, as a fraction of max |qtune logit|, per type.
// llama.cpp (with the F32 KV cache the oracle asks for) multiplies F16/BF16 weights by activations rounded to that
// type, and quantized weights by activations quantized to Q8_0/Q8_1 (Q8_K for the K-quants): that, not the weights
// (whose bytes equal llama-quantize's), sets the error, so 8 bits of weights are barely closer than 4. Measured
// 2026-12-02 on the runs below, worst of stories260K and SmolLM2 (SmolLM2 every time): f32 1.6e-6, f16 1.0e-3,
// bf16 7.9e-3, q8_0 0.028, q4_0 0.055, q4_1 0.038, q5_0 0.026, q5_1 0.036, q4_k_m 0.043, q5_k_m 0.051,
// q6_k 0.049, and the same top-1 token at 92% to 100% of the 58 positions. Another 3-step adapter (other dropout
// masks, 2026-12-02, seventh session) moved SmolLM2's q8_0 to 0.063 and, without dropout, gave q5_1 0.058, q5_k_m
// 0.071, q6_k 0.052 with top-1 at 90%: the figure follows the trained model as much as the type, so the quantized
// types share one bound of 0.1 and top-1 0.85 (a lookup of the wrong block scale or layout moves logits by ~1); the
// weights' own check is their bytes against llama-quantize's, below. The model trains without dropout.
struct TypeTolerance {
  const char* type;
  double tolerance;
};
constexpr TypeTolerance kTypes[] = {
    {"f32", 1e-5},  {"f16", 2e-3},  {"bf16", 1.5e-2}, {"q8_0", 0.1},   {"q4_0", 0.1},  {"q4_1", 0.1},
    {"q5_0", 0.1}, {"q5_1", 0.1}, {"q4_k_m", 0.1}, {"q5_k_m", 0.1}, {"q6_k", 0.1},
};

const std::vector<std::string> kCorpus = {
    "Once upon a time, there was a little girl named Lily.",
    "  leading spaces and\ttabs\n\nnewlines  ",
    "Zahlen: 3.14159, 42, 1000000 und 2026-12-02.",
    "Émilie a mangé des crêpes à Paris; naïve façade.",
    "Привет, как дела? Всё хорошо.",
    "日本語のテキストと中文文本。",
    "emoji 🙂🚀👍🏽 and symbols ©®™ ∑∫√",
    "def f(x):\n    return x ** 2  # square",
    "",
};

const char* kPrompt =
    "Once upon a time, there was a little robot named Bolt. Bolt liked to help his friends in the garden. One day, "
    "Bolt asked the old tree: what is 12 + 30? The tree smiled and said";

std::string python() { return QTUNE_TEST_PYTHON; }
std::string script() { return std::string(QTUNE_TEST_SOURCE_DIR) + "/tests/oracle/llama_cpp_gguf.py"; }

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

// Runs the oracle on `jobs`; each job's "out" is then there to read.
void run_llama_cpp(const json& jobs, const std::string& dir) {
  const auto file = dir + "/jobs.json";
  qtune::io::write_text_atomically(file, jobs.dump());
  const auto cmd = python() + " " + script() + " " + file + " 2>" + dir + "/llama_cpp.err";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd << "\n" << qtune::test::read_file(dir + "/llama_cpp.err");
}

double relative_max_diff(const at::Tensor& actual, const at::Tensor& expected) {
  return (actual - expected).abs().max().item<double>() / expected.abs().max().item<double>();
}

// The fraction of positions whose most likely next token is the same.
double top1_agreement(const at::Tensor& a, const at::Tensor& b) {
  return a.argmax(-1).eq(b.argmax(-1)).to(at::kDouble).mean().item<double>();
}

at::Tensor qtune_logits(qtune::nn::CausalLMImpl& model, const std::vector<int64_t>& tokens) {
  torch::NoGradGuard no_grad;
  model.eval();
  return model.forward(at::tensor(tokens, at::kLong).view({1, -1}))[0].contiguous();
}

// A short LoRA run on one of the two real models, with adapters far from zero.
struct OracleRun {
  std::string name, dir, run, base, adapter_base;
  qtune::train::Recipe recipe;
};

// `lr`: the export test wants a model that stays a language model; the adapter test an adapter that moves the logits
// far more than llama.cpp's activation quantization does. `on_gguf`: QLoRA directly on the GGUF llama.cpp runs, its
// projections kept in the file's own blocks (quant.format: keep), instead of the default NF4 base.
OracleRun train_run(const std::string& name, double lr, bool on_gguf = false) {
  OracleRun r;
  r.name = name;
  r.dir = qtune::test::temp_dir();
  fs::create_directories(r.dir);
  r.run = r.dir + "/run";
  std::string data;
  if (name == "stories260K") {
    r.base = qtune::test::shared_dir() + "/models/stories260K";
    r.adapter_base = qtune::test::shared_dir() + "/originals/stories260K.gguf";
    std::string train;
    for (const auto& q : qtune::data::demo_questions(64, 2)) train += qtune::data::demo_question_jsonl(q) + "\n";
    qtune::io::write_text_atomically(r.dir + "/train.jsonl", train);
    data = "data:\n  train: " + r.dir + "/train.jsonl\n  chat_template: none\n  max_seq_len: 128\n";
  } else {
    r.base = r.adapter_base = qtune::test::smollm2_gguf();
    data = "data:\n  train: " + std::string(QTUNE_TEST_SOURCE_DIR) +
           "/data/demo/facts_train.jsonl\n  format: chat-jsonl\n  chat_template: auto\n  max_seq_len: 96\n";
  }
  if (on_gguf) r.base = r.adapter_base;
  const std::string yaml = "name: llama-cpp-oracle\nmodel:\n  path: " + r.base + "\n" +
                           (on_gguf ? "quant:\n  format: keep\n" : "") + data +
                           "lora:\n  r: 8\n  alpha: 16\n  dropout: 0.0\n  targets: all-linear\noptim:\n  name: adamw\n  lr: " + std::to_string(lr) + "\n"
                           "train:\n  batch_size: 4\n  max_steps: 3\n  log_every: 1\n  output_dir: " + r.run + "\n";
  r.recipe = qtune::train::Recipe::from_yaml_text(yaml, name + ".yaml");
  qtune::train::TrainOptions o;
  o.out = std::fopen("/dev/null", "w");
  o.terminal = false;
  qtune::train::run_training(r.recipe, o);
  return r;
}

class OracleLlamaCpp : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "stories260K") {
      QTUNE_REQUIRE_SHARED();
    } else {
      QTUNE_REQUIRE_SMOLLM2();
    }
  }
};

TEST_P(OracleLlamaCpp, ExportedTypesRunInLlamaCppAsInQtune) {
  const auto r = train_run(GetParam(), 5e-3);
  auto trained = qtune::exporting::load_trained_model(r.run, "", kFp32, nullptr);
  auto recipe = trained.recipe;
  const auto tok = qtune::train::load_tokenizer(recipe, trained.model->config());
  const auto vocab = qtune::exporting::gguf_vocab_metadata(r.base, tok, trained.model->config().vocab_size);
  const auto tokens = tok.encode(kPrompt);

  json jobs = json::array();
  std::map<std::string, std::string> files;
  for (const auto& t : kTypes) {
    const auto file = r.dir + "/" + t.type + ".gguf";
    qtune::exporting::GgufExportOptions o;
    o.type = t.type;
    qtune::exporting::save_gguf_model(*trained.model, vocab, file, o);
    files[t.type] = file;
    jobs.push_back({{"kind", "logits"}, {"model", file}, {"tokens", tokens}, {"out", file + ".logits.safetensors"}});
    jobs.push_back({{"kind", "tensors"}, {"model", file}, {"out", file + ".tensors.json"}});
    const auto& ft = qtune::exporting::parse_gguf_file_type(t.type);
    if (std::string(t.type) != "f32")
      jobs.push_back({{"kind", "quantize"}, {"model", r.dir + "/f32.gguf"}, {"ftype", ft.llama_ftype},
                      {"out", file + ".llama-quantize.gguf"}});
    if (std::string(t.type) != "f32")
      jobs.push_back({{"kind", "tensors"}, {"model", file + ".llama-quantize.gguf"}, {"out", file + ".lq.json"}});
  }
  jobs.push_back({{"kind", "tokenize"}, {"model", files["f16"]}, {"texts", kCorpus}, {"out", r.dir + "/tokenize.json"}});
  std::vector<int64_t> stop(trained.model->config().eos_token_ids);
  jobs.push_back({{"kind", "greedy"}, {"model", files["f16"]}, {"prompt", tokens}, {"n", 24}, {"stop", stop},
                  {"out", r.dir + "/greedy.json"}});
  run_llama_cpp(jobs, r.dir);

  // The vocabulary llama.cpp built from the metadata tokenizes as qtune's tokenizer of the file does.
  const auto tok_file = qtune::data::Tokenizer::load(files["f16"]);
  const auto tz = read_json(r.dir + "/tokenize.json");
  EXPECT_EQ(tz["n_vocab"].get<int64_t>(), trained.model->config().vocab_size);
  EXPECT_EQ(tz["bos"].get<int64_t>(), tok.bos_id());
  for (const auto& t : tz["texts"]) {
    const auto text = t["text"].get<std::string>();
    EXPECT_EQ(t["ids"].get<std::vector<int64_t>>(), tok_file.encode(text, false)) << "text: " << text;
    // The run's own tokenizer agrees too, unless it collapses whitespace (stories260K's tokenizer.model does, and
    // llama.cpp never does; the export warns) and the text has runs, leading or trailing spaces.
    const bool collapses = text.find("  ") != std::string::npos || (!text.empty() && (text.front() == ' ' || text.back() == ' '));
    if (GetParam() != "stories260K" || !collapses) {
      EXPECT_EQ(t["ids"].get<std::vector<int64_t>>(), tok.encode(text, false)) << "text (run's tokenizer): " << text;
    }
    EXPECT_EQ(t["ids_with_specials"].get<std::vector<int64_t>>(), tok_file.encode(text)) << "text: " << text;
  }

  for (const auto& t : kTypes) {
    SCOPED_TRACE(t.type);
    const auto& file = files[t.type];
    auto model = qtune::nn::load_causal_lm(file, kFp32);
    const auto expected = qtune_logits(*model, tokens);
    const auto theirs = qtune::io::SafetensorsFile::open(file + ".logits.safetensors")->tensor("logits");
    ASSERT_EQ(theirs.sizes(), expected.sizes());
    const double diff = relative_max_diff(theirs, expected);
    const double top1 = top1_agreement(theirs, expected);
    std::printf("[ measured ] %s %s: max |llama.cpp - qtune| / max |logit| = %.3g (tolerance %.3g), same top-1 token "
                "at %.0f%% of positions\n", GetParam().c_str(), t.type, diff, t.tolerance, 100 * top1);
    EXPECT_LE(diff, t.tolerance);
    EXPECT_GE(top1, 0.85);
    if (std::string(t.type) == "f16") {
      qtune::eval::GenerateOptions g;
      g.max_new_tokens = 24;
      g.stop_ids = stop;
      EXPECT_EQ(qtune::eval::generate(*model, tokens, g).tokens, read_json(r.dir + "/greedy.json").get<std::vector<int64_t>>());
    }
    if (std::string(t.type) == "f32") continue;
    // llama-quantize on qtune's f32 file: the same type for every tensor, the same bytes.
    const auto ours = read_json(file + ".tensors.json"), lq = read_json(file + ".lq.json");
    ASSERT_EQ(ours.size(), lq.size());
    int same_bytes = 0;
    for (const auto& [name, info] : ours.items()) {
      ASSERT_TRUE(lq.contains(name)) << name;
      EXPECT_EQ(info[0], lq[name][0]) << name << ": qtune chose " << info[0] << ", llama-quantize " << lq[name][0];
      EXPECT_EQ(info[1], lq[name][1]) << name;
      EXPECT_EQ(info[2], lq[name][2]) << name << " (" << info[0] << "): bytes differ from llama-quantize's";
      same_bytes += info[2] == lq[name][2];
    }
    std::printf("[ measured ] %s %s: %d of %zu tensors byte-identical to llama-quantize\n", GetParam().c_str(), t.type,
                same_bytes, ours.size());
  }
  for (const auto& [type, file] : files) fs::remove(file);
}

TEST_P(OracleLlamaCpp, GgufAdapterOnTheBaseGgufGivesQtuneLogits) {
  // Trained on the very file llama.cpp runs (stories260K's F32 GGUF, SmolLM2's Q4_1 one), its blocks kept as stored.
  const auto r = train_run(GetParam(), 2e-2, /*on_gguf=*/true);
  const auto adapter = r.dir + "/adapter.gguf";
  const auto res = qtune::test::run_qtune("export " + r.run + " --gguf-adapter " + adapter);
  ASSERT_EQ(res.code, 0) << res.err;
  // qtune: the trained model as the run left it, rebuilt from its checkpoint (the kept base plus the adapter).
  auto trained = qtune::exporting::load_trained_model(r.run, "", kFp32, nullptr);
  const auto* factory = dynamic_cast<const qtune::nn::QuantLinearFactory*>(trained.base_factory.get());
  ASSERT_NE(factory, nullptr);
  int kept = 0;
  for (const auto& l : factory->layers()) kept += l.format == (GetParam() == "smollm2" ? "gguf-q4_1" : "16bit");
  EXPECT_EQ(kept, GetParam() == "smollm2" ? 210 : 35);
  const auto tok = qtune::data::Tokenizer::load(r.adapter_base);
  const auto tokens = tok.encode(kPrompt);
  const auto expected = qtune_logits(*trained.model, tokens);

  json jobs = json::array({{{"kind", "logits"}, {"model", r.adapter_base}, {"tokens", tokens}, {"lora", adapter},
                            {"out", r.dir + "/with_adapter.safetensors"}},
                           {{"kind", "logits"}, {"model", r.adapter_base}, {"tokens", tokens},
                            {"out", r.dir + "/base.safetensors"}}});
  run_llama_cpp(jobs, r.dir);
  const auto theirs = qtune::io::SafetensorsFile::open(r.dir + "/with_adapter.safetensors")->tensor("logits");
  const auto base = qtune::io::SafetensorsFile::open(r.dir + "/base.safetensors")->tensor("logits");
  ASSERT_EQ(theirs.sizes(), expected.sizes());
  const double diff = relative_max_diff(theirs, expected);
  // The base's own type sets the tolerance, the one above for files of that type: stories260K is F32, SmolLM2 Q4_1.
  // Measured 2026-12-02: 1.1e-6 and 0.047 (the Q4_1 base alone, without the adapter: 0.029).
  const char* type = GetParam() == "stories260K" ? "f32" : "q4_1";
  const double tolerance = std::find_if(std::begin(kTypes), std::end(kTypes), [&](const auto& t) {
                             return std::string(t.type) == type;
                           })->tolerance;
  auto plain = qtune::nn::load_causal_lm(r.adapter_base, kFp32);
  std::printf("[ measured ] %s adapter: max |llama.cpp - qtune| / max |logit| = %.3g (tolerance %.3g, %s); the base "
              "alone %.3g; the adapter moves llama.cpp's logits by %.3g\n", GetParam().c_str(), diff, tolerance, type,
              relative_max_diff(base, qtune_logits(*plain, tokens)), relative_max_diff(theirs, base));
  EXPECT_LE(diff, tolerance);
  // The adapter matters: without it llama.cpp is much farther from qtune's adapted logits.
  EXPECT_GT(relative_max_diff(base, expected), 5 * diff);
}

INSTANTIATE_TEST_SUITE_P(RealModels, OracleLlamaCpp, ::testing::Values("stories260K", "smollm2"));

}  // namespace
