#pragma once
// A tiny random Llama (saved as a Hugging Face directory) with a BPE tokenizer trained on the demo stories, the demo's
// questions as data, and a recipe over them: what the trainer, resume and export tests run on.
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/grad_mode.h>
#include <string>
#include <vector>

#include "qtune/data/demo_task.h"
#include "qtune/data/tokenizer.h"
#include "qtune/io/atomic_file.h"
#include "qtune/nn/model_io.h"
#include "qtune/train/recipe.h"
#include "qtune/train/trainer.h"
#include "test_util.h"

namespace qtune::train {

// A tiny random Llama with a BPE tokenizer trained on the demo stories, and the demo's questions as data. `family`
// overrides config.json keys (another model_type and its keys: the same run on another family).
struct TinyRun {
  std::string dir = test::temp_dir();
  std::string model = dir + "/model";
  explicit TinyRun(const nlohmann::json& family = nlohmann::json::object(), const std::string& subdir = "") {
    if (!subdir.empty()) dir += "/" + subdir, model = dir + "/model";
    std::filesystem::create_directories(model);
    io::write_text_atomically(dir + "/corpus.txt", data::demo_pretrain_corpus(400, 1));
    data::train_bpe_tokenizer(dir + "/corpus.txt", model + "/tokenizer", 400);
    auto tok = data::Tokenizer::load(model + "/tokenizer.model");
    nlohmann::json j = {{"model_type", "llama"},       {"hidden_size", 64},          {"intermediate_size", 128},
                        {"num_hidden_layers", 2},      {"num_attention_heads", 4},   {"num_key_value_heads", 2},
                        {"vocab_size", tok.vocab_size()}, {"rms_norm_eps", 1e-5},    {"initializer_range", 0.05},
                        {"max_position_embeddings", 256}, {"tie_word_embeddings", true},
                        {"bos_token_id", tok.bos_id()}, {"eos_token_id", tok.eos_id()}};
    j.update(family);
    auto config = io::ModelConfig::from_json(j, "tiny");
    nn::RandomInit init(config, 1);
    nn::DenseLinearFactory dense(at::TensorOptions().dtype(at::kFloat));
    nn::CausalLMImpl m(config, dense, init, at::TensorOptions().dtype(at::kFloat));
    nn::save_pretrained(m, model);
    std::string train, eval;
    for (const auto& q : data::demo_questions(240, 2)) train += data::demo_question_jsonl(q) + "\n";
    for (const auto& q : data::demo_questions(24, 3)) eval += data::demo_question_jsonl(q) + "\n";
    io::write_text_atomically(dir + "/train.jsonl", train);
    io::write_text_atomically(dir + "/eval.jsonl", eval);
  }
  Recipe recipe(std::vector<std::string> overrides = {}) const {
    const std::string text = "name: tiny\nmodel:\n  path: " + model + "\ndata:\n  train: " + dir +
                             "/train.jsonl\n  eval: " + dir + "/eval.jsonl\n  chat_template: none\n  max_seq_len: 128\n"
                             "lora:\n  r: 8\n  alpha: 16\noptim:\n  name: adamw\n  lr: 5e-3\nschedule:\n  warmup_steps: 2\n"
                             "train:\n  batch_size: 4\n  grad_accum: 1\n  max_steps: 30\n  max_grad_norm: 1.0\n"
                             "  log_every: 5\n  output_dir: " + dir + "/run\n";
    return Recipe::from_yaml_text(text, "tiny.yaml", overrides);
  }
};

// The logits of a fixed 39-token probe, in eval mode and without gradients: what the export tests compare.
inline at::Tensor probe_logits(nn::CausalLMImpl& model) {
  torch::NoGradGuard no_grad;
  model.eval();
  return model.forward(at::arange(1, 40, at::kLong).remainder(300).view({1, -1}));
}

// Progress to /dev/null: the tests read results, not bars.
inline TrainOptions quiet() {
  TrainOptions o;
  o.out = std::fopen("/dev/null", "w");
  o.terminal = false;
  return o;
}

}  // namespace qtune::train
