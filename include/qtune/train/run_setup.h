#pragma once
// Everything a run needs, built from a recipe in a fixed order: device and dtype -> config -> tokenizer -> data ->
// base linears (quantized by the plan) -> adapters -> modules_to_save / init_adapter -> step counts. `qtune plan`
// uses the weight-free parts (config, tokenizer, data) to check a recipe before anything heavy loads.
#include <ATen/ATen.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "qtune/data/collate.h"
#include "qtune/data/tokenizer.h"
#include "qtune/io/hf_config.h"
#include "qtune/lora/inject.h"
#include "qtune/nn/decoder.h"
#include "qtune/quant/quant_plan.h"
#include "qtune/train/qat_plan.h"
#include "qtune/train/recipe.h"

namespace qtune::train {

struct DataStats {
  int64_t records = 0;
  int64_t truncated = 0;      // samples cut at data.max_seq_len
  int64_t dropped = 0;        // samples with no trained token (e.g. a prompt longer than max_seq_len)
  int64_t train_samples = 0, eval_samples = 0;
  int64_t train_tokens = 0;   // input tokens
  int64_t train_targets = 0;  // trained target tokens per epoch
  int64_t longest = 0;
};

struct RunData {
  std::vector<data::TokenizedSample> train, eval;
  DataStats stats;
};

// The quantization plan of the recipe's quant section (quant.plan wins when set).
quant::QuantPlan quant_plan_of(const Recipe& recipe);
// The tokenizer (model.tokenizer, else model.path) with the model's special ids.
data::Tokenizer load_tokenizer(const Recipe& recipe, const io::ModelConfig& config);
// Whether train.objective trains on preference pairs (the loaders then batch pairs, chosen and rejected adjacent).
bool preference_objective(const Recipe& recipe);
// Reads, templates, tokenizes and splits the data; errors name the file and line. Preference data: each pair as two
// samples, chosen then rejected; stats count samples (rows).
RunData load_data(const Recipe& recipe, const data::Tokenizer& tokenizer);
// `ranks` data-parallel ranks share each micro-batch: its rows are ranks x train.batch_size (one rank takes a share).
data::LoaderOptions loader_options(const Recipe& recipe, bool for_eval, int64_t ranks = 1);
// How errors name the recipe's device key: "r.yaml: 'device'".
std::string device_key(const Recipe& recipe);
// The compute dtype of the run on `device`: model.dtype, else the precision's (full runs default to fp32).
at::ScalarType run_dtype(const Recipe& recipe, at::Device device, const io::ModelConfig& config);
// The micro-batches of `epoch` that the run trains on. With train.epochs E: every batch of epochs before floor(E),
// the first ceil(frac(E) * n) of epoch floor(E), none after, so that E passes are exactly E passes (packing makes n
// differ between epochs). With train.max_steps the data is one stream: every epoch whole, steps may span two.
int64_t micro_batches_in_epoch(const Recipe& recipe, const data::DataLoader& loader, int64_t epoch);
// Optimizer steps and warmup steps of the recipe over `loader`. With train.epochs a step never spans two epochs:
// the last step of an epoch takes what is left of it (as HF Trainer's loop does).
std::pair<int64_t, int64_t> step_counts(const Recipe& recipe, const data::DataLoader& loader);

struct RunSetup {
  Recipe recipe;
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;  // compute dtype of the base
  io::ModelConfig config;
  data::Tokenizer tokenizer;
  DataStats stats;
  std::unique_ptr<nn::LinearFactory> base_factory;
  std::unique_ptr<lora::LoraLinearFactory> lora_factory;
  std::unique_ptr<nn::LinearFactory> qat_factory;  // full fine-tuning with QAT: around base_factory
  RunQat qat;                  // quantization-aware training (qat.plan empty: none)
  int64_t qat_start_step = 0;  // the first step whose forward is fake-quantized
  nn::CausalLM model;
  std::unique_ptr<data::DataLoader> train_loader, eval_loader;
  std::vector<std::pair<std::string, at::Tensor>> trainable;  // what the optimizer steps
  int64_t total_steps = 0, warmup_steps = 0;
  int64_t checkpointed_layers = 0;  // decoder layers recomputed in backward

  // Loads everything; prints what it did to `out` (nullptr: silent). The loaders batch for `ranks` data-parallel ranks.
  static RunSetup create(const Recipe& recipe, std::FILE* out, int64_t ranks = 1);
  // Copies tokenizer.model (and tokenizer_config.json / special_tokens_map.json when present) into `dir`.
  void copy_tokenizer_files(const std::string& dir) const;
};

}  // namespace qtune::train
