#pragma once
// A training recipe: the only source of a run's settings. Every key is declared once in recipe_schema() with its
// type, default and one-line description; the YAML file and `key=value` overrides go through that table, so an
// unknown key, a wrong type or a bad choice is an error naming the key (with a did-you-mean) before anything loads.
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "qtune/lora/lora_config.h"

namespace qtune::train {

struct ModelSection {
  std::string path;       // Hugging Face directory (config.json + *.safetensors)
  std::string tokenizer;  // tokenizer.model or a directory holding one; default: model.path
  std::string dtype = "auto";  // compute dtype of the frozen base: auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32
};

struct QuantSection {
  std::string format = "nf4";  // nf4 | fp4 | int8 | w8a8 | none | keep
  bool double_quant = true;
  int64_t block_size = 64;
  std::vector<std::string> keep_int8, keep_16bit;  // glob patterns over module names
  std::string plan;                                // a plan YAML (qtune quantize --plan-out); overrides the keys above
  // Quantization-aware training: the deployment format the forward simulates (quant/fake_quant.h), none = off.
  std::string qat = "none";
  int64_t qat_group_size = 0;  // 0: the format's default; -1: a whole row (int formats)
  bool qat_symmetric = true;
  std::string qat_activations = "none";  // none | int8 (per token, asymmetric)
  double qat_start = 0.0;                // fraction of the steps before fake quantization switches on
  // Which of the linears quant.qat targets are fake-quantized (train/qat_layers.h): all | auto | N | module globs.
  std::vector<std::string> qat_layers = {"all"};
  // A calibrated base (train/calibrated_base.h): model.path quantized by GPTQ or AWQ on `calib` before training,
  // cached in the run directory; none = quantize at load by quant.format.
  std::string method = "none";  // none | gptq | awq | rtn | auto
  std::string calib;            // calibration text
  int64_t calib_samples = 128, calib_seq_len = 512;
  int64_t bits = 4, group_size = 128;
  std::string symmetric = "auto";  // auto (GPTQ symmetric, AWQ asymmetric) | true | false
  bool act_order = false;          // GPTQ
  int64_t awq_search_samples = 16;
  // With quant.method gptq: > 0 runs the sensitivity scan on quant.calib first and puts the linears it keeps in int8
  // on GPTQ's 8-bit grid, within this average (a mixed plan in one GPTQ checkpoint); 0: every linear at quant.bits.
  double budget_bits = 0;
  int64_t scan_tokens = 1024;  // calibration tokens the scan scores each linear on
  // With quant.method auto: the methods each linear may get (calib/method_scan.h), chosen within budget_bits.
  std::vector<std::string> methods = {"nf4", "int8", "gptq", "awq", "16bit"};
};

struct LoraSection {
  lora::LoraConfig config;
  std::string init_adapter;  // a PEFT adapter directory to start from
};

struct DataSection {
  std::string train, eval;
  std::string format = "alpaca-jsonl";  // alpaca-jsonl | chat-jsonl | text
  std::string chat_template = "auto";  // the model's own template, or a name of data::kChatTemplateNames
  int64_t max_seq_len = 512;
  bool packing = true;
  bool train_on_prompt = false;
  uint64_t seed = 42;
  bool shuffle = true;         // false: the file's order every epoch (TRL's train_sampling_strategy sequential)
  double eval_fraction = 0.0;  // held out of data.train when data.eval is empty
  // Preference data (data.format preference): TRL's max_prompt_length (0: none; a longer prompt keeps its end) and
  // how a prompt + completion longer than max_seq_len (TRL's max_length) is cut.
  int64_t max_prompt_length = 0;
  std::string truncation_mode = "keep_start";  // keep_start | keep_end
};

struct OptimSection {
  std::string name = "paged_adamw";  // adamw | paged_adamw | adamw_8bit | paged_adamw_8bit
  double lr = 2e-4;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;
};

struct ScheduleSection {
  std::string kind = "constant";  // constant | linear | cosine
  double warmup_ratio = 0.03;
  int64_t warmup_steps = -1;  // >= 0 overrides warmup_ratio
  double min_lr_ratio = 0.0;
};

struct TrainSection {
  std::string objective = "sft";  // sft | dpo | orpo | simpo | kto (train/objectives/)
  // DPO, KTO: the reference's log-probabilities computed once before the first step and cached in the run directory
  // (TRL's precompute_ref_log_probs), instead of a reference forward in every step.
  bool precompute_ref_log_probs = false;
  std::string mode = "lora";  // lora: adapters on the frozen (quantized) base | full: every weight trains, dense
  int64_t batch_size = 4;
  int64_t grad_accum = 4;
  int64_t global_batch_size = 0;  // > 0: rows per step over all ranks; grad_accum follows from it
  double dist_timeout_s = 60;     // data parallel: a collective that waits longer than this fails
  int64_t max_steps = 0;  // > 0 wins over epochs
  double epochs = 1;
  double max_grad_norm = 0.3;
  std::string precision = "auto";  // auto | bf16 | fp16 | fp32
  bool gradient_checkpointing = true;
  double memory_budget_gib = 0;  // > 0: checkpoint only as many layers as the estimate needs to fit (same gradients)
  uint64_t seed = 42;
  int64_t log_every = 10, eval_every = 0, save_every = 0;  // steps; 0 = only at the end
  int64_t eval_batches = 0;  // 0 = the whole eval set
  int64_t keep_last = 2;
  std::string output_dir = "runs/run";
};

// DPO's keys, with TRL's DPOConfig defaults.
struct DpoSection {
  double beta = 0.1;
  std::string loss_type = "sigmoid";  // sigmoid | ipo | robust | hinge
  double label_smoothing = 0.0;       // robust: the assumed fraction of flipped pairs, in [0, 0.5)
};

// ORPO's keys (TRL's ORPOConfig): beta weighs the odds-ratio term against the chosen side's NLL.
struct OrpoSection {
  double beta = 0.1;
};

// SimPO's keys (TRL's CPOConfig with loss_type simpo): length-normalised rewards, a target margin gamma.
struct SimpoSection {
  double beta = 0.1;   // CPOConfig's default (the SimPO paper suggests 2 to 2.5)
  double gamma = 0.5;  // TRL's simpo_gamma
  double label_smoothing = 0.0;
  double cpo_alpha = 0.0;  // > 0: CPO's NLL of the chosen completions added (TRL's default 1: CPO-SimPO)
};

// KTO's keys, with TRL's KTOConfig defaults: the weights of the desirable and undesirable records' losses.
struct KtoSection {
  double beta = 0.1;
  double desirable_weight = 1.0, undesirable_weight = 1.0;
};

struct Recipe {
  std::string name = "run";
  std::string device = "auto";  // auto | cpu | cuda | cuda:N
  ModelSection model;
  QuantSection quant;
  LoraSection lora;
  DataSection data;
  OptimSection optim;
  ScheduleSection schedule;
  TrainSection train;
  DpoSection dpo;
  OrpoSection orpo;
  SimpoSection simpo;
  KtoSection kto;
  std::string source;  // the file it came from, for messages

  // Reads a YAML recipe, then applies `overrides` ("lora.r=32"), then validates. Relative paths in the file are
  // taken relative to the file's directory when they exist there, else to the working directory (overrides: the
  // working directory), and made absolute.
  static Recipe load(const std::string& path, const std::vector<std::string>& overrides = {});
  static Recipe from_yaml_text(const std::string& text, const std::string& source,
                               const std::vector<std::string>& overrides = {});
  // The keys of a recipe text without validation (a checkpoint's saved recipe, whose files may have moved).
  static Recipe parse(const std::string& text, const std::string& source);
  void apply_override(const std::string& key_equals_value);
  void validate() const;  // cross-key checks (choices, ranges, files that must exist)
  std::string to_yaml() const;  // every key, in schema order (saved beside each checkpoint)
  // Keys whose values change what a run computes (all but logging/saving cadence and output_dir).
  std::map<std::string, std::string> run_affecting_values() const;
  // The keys that name an input file or directory, with their values: load() makes relative ones absolute (the
  // recipe's directory first, then the working directory), so a saved recipe names the same files from anywhere.
  std::map<std::string, std::string> input_paths() const;
};

// One row of the schema.
struct RecipeKey {
  std::string key;   // "lora.r"
  std::string type;  // int | float | bool | string | list | map
  std::string description;
  std::vector<std::string> choices;  // empty: any value of the type
  std::function<void(Recipe&, const std::string& yaml_value, const std::string& where)> set;
  std::function<std::string(const Recipe&)> show;  // the value as YAML flow text
  bool affects_run = true;
};

const std::vector<RecipeKey>& recipe_schema();
std::string recipe_help();  // the table `qtune train --help-recipe` prints

}  // namespace qtune::train
