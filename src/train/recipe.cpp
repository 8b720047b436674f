#include "qtune/train/recipe.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "qtune/calib/method_choice.h"
#include "qtune/data/text_file.h"
#include "qtune/io/gguf.h"
#include "qtune/quant/fake_quant.h"
#include "qtune/train/qat_layers.h"
#include "qtune/train/qat_plan.h"
#include "qtune/util/error.h"
#include "qtune/util/strings.h"

namespace qtune::train {
namespace {

// ---- values: YAML node <-> typed field -------------------------------------------------------------------------

template <typename T>
struct TypeName;
template <> struct TypeName<int64_t> { static constexpr const char* value = "int"; };
template <> struct TypeName<uint64_t> { static constexpr const char* value = "int"; };
template <> struct TypeName<double> { static constexpr const char* value = "float"; };
template <> struct TypeName<bool> { static constexpr const char* value = "bool"; };
template <> struct TypeName<std::string> { static constexpr const char* value = "string"; };
template <> struct TypeName<std::vector<std::string>> { static constexpr const char* value = "list"; };
template <> struct TypeName<std::map<std::string, int64_t>> { static constexpr const char* value = "map"; };
template <> struct TypeName<std::map<std::string, double>> { static constexpr const char* value = "map"; };

std::string describe(const YAML::Node& n) {
  if (n.IsScalar()) return "'" + n.Scalar() + "'";
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a mapping";
  return "nothing";
}

template <typename T>
T scalar_as(const YAML::Node& n, const std::string& key, const std::string& where, const char* expected) {
  if (!n.IsScalar()) fail("{}: '{}' must be {}, got {}", where, key, expected, describe(n));
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    fail("{}: '{}' must be {}, got {}", where, key, expected, describe(n));
  }
}

template <typename T>
T parse_value(const YAML::Node& n, const std::string& key, const std::string& where);

template <>
int64_t parse_value<int64_t>(const YAML::Node& n, const std::string& key, const std::string& where) {
  return scalar_as<int64_t>(n, key, where, "an integer");
}
template <>
uint64_t parse_value<uint64_t>(const YAML::Node& n, const std::string& key, const std::string& where) {
  return scalar_as<uint64_t>(n, key, where, "a non-negative integer");
}
template <>
double parse_value<double>(const YAML::Node& n, const std::string& key, const std::string& where) {
  return scalar_as<double>(n, key, where, "a number");
}
template <>
bool parse_value<bool>(const YAML::Node& n, const std::string& key, const std::string& where) {
  return scalar_as<bool>(n, key, where, "true or false");
}
template <>
std::string parse_value<std::string>(const YAML::Node& n, const std::string& key, const std::string& where) {
  if (n.IsNull()) return "";
  return scalar_as<std::string>(n, key, where, "a string");
}
template <>
std::vector<std::string> parse_value<std::vector<std::string>>(const YAML::Node& n, const std::string& key,
                                                               const std::string& where) {
  if (n.IsNull()) return {};
  if (n.IsScalar()) return {n.Scalar()};  // "all-linear" or one pattern
  if (!n.IsSequence()) fail("{}: '{}' must be a list of strings, got {}", where, key, describe(n));
  std::vector<std::string> out;
  for (const auto& e : n) out.push_back(scalar_as<std::string>(e, key, where, "a list of strings"));
  return out;
}
template <typename V>
std::map<std::string, V> parse_map(const YAML::Node& n, const std::string& key, const std::string& where,
                                   const char* expected) {
  if (n.IsNull()) return {};
  if (!n.IsMap()) fail("{}: '{}' must be a mapping of pattern: {}, got {}", where, key, expected, describe(n));
  std::map<std::string, V> out;
  for (const auto& kv : n)
    out[kv.first.as<std::string>()] = scalar_as<V>(kv.second, key + "." + kv.first.as<std::string>(), where, expected);
  return out;
}
template <>
std::map<std::string, int64_t> parse_value<std::map<std::string, int64_t>>(const YAML::Node& n, const std::string& key,
                                                                           const std::string& where) {
  return parse_map<int64_t>(n, key, where, "an integer");
}
template <>
std::map<std::string, double> parse_value<std::map<std::string, double>>(const YAML::Node& n, const std::string& key,
                                                                         const std::string& where) {
  return parse_map<double>(n, key, where, "a number");
}

std::string quote_if_needed(const std::string& s) {
  YAML::Emitter e;
  e << s;
  return e.c_str();
}
std::string show_value(int64_t v) { return std::to_string(v); }
std::string show_value(uint64_t v) { return std::to_string(v); }
std::string show_value(bool v) { return v ? "true" : "false"; }
std::string show_value(double v) { return fmt::format("{}", v); }
std::string show_value(const std::string& v) { return v.empty() ? "\"\"" : quote_if_needed(v); }
std::string show_value(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + quote_if_needed(v[i]);
  return out + "]";
}
template <typename V>
std::string show_value(const std::map<std::string, V>& m) {
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : m) {
    out += (first ? "" : ", ") + quote_if_needed(k) + ": " + show_value(v);
    first = false;
  }
  return out + "}";
}

template <typename Get>
RecipeKey key(std::string name, std::string description, Get get, std::vector<std::string> choices = {},
              bool affects_run = true) {
  using T = std::decay_t<decltype(get(std::declval<Recipe&>()))>;
  RecipeKey k;
  k.key = name;
  k.type = TypeName<T>::value;
  k.description = std::move(description);
  k.choices = choices;
  k.affects_run = affects_run;
  k.set = [name, get, choices](Recipe& r, const std::string& text, const std::string& where) {
    YAML::Node node;
    try {
      node = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      fail("{}: '{}': cannot parse '{}' as YAML ({})", where, name, text, e.msg);
    }
    T value = parse_value<T>(node, name, where);
    if constexpr (std::is_same_v<T, std::string>) {
      // "FILE.jinja" among the choices stands for any path to a Jinja template.
      const bool jinja_file = std::find(choices.begin(), choices.end(), "FILE.jinja") != choices.end() &&
                              ends_with(value, ".jinja");
      if (!choices.empty() && !jinja_file && std::find(choices.begin(), choices.end(), value) == choices.end())
        fail("{}: '{}' must be one of {}, got '{}'", where, name, fmt::format("{}", fmt::join(choices, " | ")), value);
    }
    get(r) = std::move(value);
  };
  k.show = [get](const Recipe& r) { return show_value(get(const_cast<Recipe&>(r))); };
  return k;
}

std::vector<RecipeKey> make_schema() {
  // Defaults follow the QLoRA paper (Dettmers et al. 2023) where it gives one: NF4 + double quant, paged AdamW,
  // lr 2e-4, constant schedule, warmup ratio 0.03, max grad norm 0.3, adam beta2 0.999, no weight decay.
  return {
      key("name", "Run name (shown in logs and the loss plot)", [](Recipe& r) -> auto& { return r.name; }, {}, false),
      key("device", "auto | cpu | cuda | cuda:N", [](Recipe& r) -> auto& { return r.device; }),
      key("model.path", "Hugging Face model directory (config.json + *.safetensors) or a .gguf file",
          [](Recipe& r) -> auto& { return r.model.path; }),
      key("model.tokenizer", "tokenizer.model or its directory (default: model.path)",
          [](Recipe& r) -> auto& { return r.model.tokenizer; }),
      key("model.dtype", "Compute dtype of the frozen base", [](Recipe& r) -> auto& { return r.model.dtype; },
          {"auto", "bf16", "fp16", "fp32"}),
      key("quant.format",
          "Format of the frozen projections: nf4/fp4 (4-bit), int8, w8a8 (int8 weights per channel and int8 inputs per "
          "token, multiplied in integers), none (the compute dtype), or keep (a .gguf base's own blocks, Q4_0 ... Q6_K, "
          "as stored)",
          [](Recipe& r) -> auto& { return r.quant.format; }, {"nf4", "fp4", "int8", "w8a8", "none", "keep"}),
      key("quant.double_quant", "Quantize the 4-bit absmax again (saves ~0.37 bit/param)",
          [](Recipe& r) -> auto& { return r.quant.double_quant; }),
      key("quant.block_size", "4-bit block size (32..4096, power of two)",
          [](Recipe& r) -> auto& { return r.quant.block_size; }),
      key("quant.keep_int8", "Module globs kept in int8 (e.g. \"layers.0.*\"; quant.method gptq | rtn: the 8-bit grid)",
          [](Recipe& r) -> auto& { return r.quant.keep_int8; }),
      key("quant.keep_16bit", "Module globs kept in the compute dtype (quant.method gptq | rtn: unquantized)",
          [](Recipe& r) -> auto& { return r.quant.keep_16bit; }),
      key("quant.plan", "A quantization plan YAML (qtune quantize --plan-out); replaces the keys above",
          [](Recipe& r) -> auto& { return r.quant.plan; }),
      key("quant.qat",
          "Quantization-aware training for this deployment format (the forward sees the weight as the export will "
          "store it): none, nf4, fp4, int2 ... int8, q2_k ... q5_k, or a `qtune export --gguf --type` (q8_0, q4_0, "
          "q4_1, q5_0, q5_1, q4_k_m, q5_k_m, q6_k: each projection as that file's type mix stores it)",
          [](Recipe& r) -> auto& { return r.quant.qat; }),
      key("quant.qat_group_size", "quant.qat group / block size (0: the format's default, -1: one group per row)",
          [](Recipe& r) -> auto& { return r.quant.qat_group_size; }),
      key("quant.qat_symmetric", "quant.qat int formats: symmetric (zero point 0) or asymmetric (integer zero point)",
          [](Recipe& r) -> auto& { return r.quant.qat_symmetric; }),
      key("quant.qat_activations", "Fake-quantize the projections' inputs too: none | int8 (per token, asymmetric)",
          [](Recipe& r) -> auto& { return r.quant.qat_activations; }, {"none", "int8"}),
      key("quant.qat_start", "Fraction of the steps trained before fake quantization switches on (delayed QAT)",
          [](Recipe& r) -> auto& { return r.quant.qat_start; }),
      key("quant.qat_layers",
          "Which linears quant.qat fake-quantizes: all | auto (the worst-ranked ones holding 80% of the loss increase "
          "their deployed format causes, scanned on quant.calib or the training data) | N (the N worst) | module globs; "
          "the others train as plain QLoRA",
          [](Recipe& r) -> auto& { return r.quant.qat_layers; }),
      key("quant.method",
          "Calibrate the base before training: gptq | awq (on quant.calib) | rtn | auto (each linear's method from "
          "quant.methods, chosen by its calibration loss per bit within quant.budget_bits), written once into the run "
          "directory and reused (on resume too); none: quantize at load by quant.format",
          [](Recipe& r) -> auto& { return r.quant.method; }, {"none", "gptq", "awq", "rtn", "auto"}),
      key("quant.methods", "quant.method auto: the methods a linear may get (nf4, int8, gptq, awq, 16bit)",
          [](Recipe& r) -> auto& { return r.quant.methods; }),
      key("quant.calib", "Calibration text for quant.method gptq | awq | auto and quant.qat_layers auto | N",
          [](Recipe& r) -> auto& { return r.quant.calib; }),
      key("quant.calib_samples", "Calibration sequences", [](Recipe& r) -> auto& { return r.quant.calib_samples; }),
      key("quant.calib_seq_len", "Tokens per calibration sequence", [](Recipe& r) -> auto& { return r.quant.calib_seq_len; }),
      key("quant.bits", "quant.method bits: GPTQ/RTN 2 | 4 | 8, AWQ 4", [](Recipe& r) -> auto& { return r.quant.bits; }),
      key("quant.group_size", "quant.method input columns per scale (-1: one per row; not AWQ)",
          [](Recipe& r) -> auto& { return r.quant.group_size; }),
      key("quant.symmetric", "quant.method grid: auto (GPTQ/RTN symmetric, AWQ with zero points) | true | false",
          [](Recipe& r) -> auto& { return r.quant.symmetric; }, {"auto", "true", "false"}),
      key("quant.act_order", "quant.method gptq: columns by descending Hessian diagonal",
          [](Recipe& r) -> auto& { return r.quant.act_order; }),
      key("quant.awq_search_samples", "quant.method awq: sequences the scale search scores candidates on (-1: all)",
          [](Recipe& r) -> auto& { return r.quant.awq_search_samples; }),
      key("quant.budget_bits",
          "quant.method gptq: > 0 runs the sensitivity scan first and puts its most sensitive linears on the 8-bit "
          "grid within this average bits per weight (0: all at quant.bits); quant.method auto: the average its "
          "choice stays within (required)",
          [](Recipe& r) -> auto& { return r.quant.budget_bits; }),
      key("quant.scan_tokens", "Calibration tokens the sensitivity scan scores each linear on",
          [](Recipe& r) -> auto& { return r.quant.scan_tokens; }),
      key("lora.r", "Adapter rank", [](Recipe& r) -> auto& { return r.lora.config.r; }),
      key("lora.alpha", "Adapter scale numerator (scale = alpha/r, or alpha/sqrt(r) with rslora)",
          [](Recipe& r) -> auto& { return r.lora.config.alpha; }),
      key("lora.dropout", "Dropout on the adapter input", [](Recipe& r) -> auto& { return r.lora.config.dropout; }),
      key("lora.targets",
          "Projections to adapt: all-linear, or q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (Phi-3: "
          "qkv_proj, o_proj, gate_up_proj, down_proj)",
          [](Recipe& r) -> auto& { return r.lora.config.target_modules; }),
      key("lora.rslora", "Rank-stabilised scale alpha/sqrt(r)", [](Recipe& r) -> auto& { return r.lora.config.use_rslora; }),
      key("lora.rank_pattern", "Per-module rank overrides {regex: r} (PEFT rank_pattern)",
          [](Recipe& r) -> auto& { return r.lora.config.rank_pattern; }),
      key("lora.alpha_pattern", "Per-module alpha overrides {regex: alpha} (PEFT alpha_pattern)",
          [](Recipe& r) -> auto& { return r.lora.config.alpha_pattern; }),
      key("lora.modules_to_save", "Modules trained in full: lm_head, embed_tokens",
          [](Recipe& r) -> auto& { return r.lora.config.modules_to_save; }),
      key("lora.init_adapter", "Start from this PEFT adapter directory", [](Recipe& r) -> auto& { return r.lora.init_adapter; }),
      key("data.train", "Training data file", [](Recipe& r) -> auto& { return r.data.train; }),
      key("data.eval", "Eval data file (default: data.eval_fraction of data.train)",
          [](Recipe& r) -> auto& { return r.data.eval; }),
      key("data.format", "Data file format", [](Recipe& r) -> auto& { return r.data.format; },
          {"alpaca-jsonl", "chat-jsonl", "text", "preference"}),
      key("data.chat_template", "How records become text", [](Recipe& r) -> auto& { return r.data.chat_template; },
          {"auto", "llama2", "mistral", "chatml", "llama3", "qwen2.5", "qwen3", "gemma", "phi3", "phi4", "alpaca",
           "none", "FILE.jinja"}),
      key("data.max_seq_len", "Tokens per row; longer samples are truncated",
          [](Recipe& r) -> auto& { return r.data.max_seq_len; }),
      key("data.packing", "Pack short samples into one row (attention and positions stay within each sample)",
          [](Recipe& r) -> auto& { return r.data.packing; }),
      key("data.train_on_prompt", "Also train on prompt tokens", [](Recipe& r) -> auto& { return r.data.train_on_prompt; }),
      key("data.max_prompt_length",
          "Preference data: prompt tokens kept, its end (0: all; TRL's max_prompt_length)",
          [](Recipe& r) -> auto& { return r.data.max_prompt_length; }),
      key("data.truncation_mode",
          "Preference data: a prompt + completion longer than data.max_seq_len (TRL's max_length) keeps its start or end",
          [](Recipe& r) -> auto& { return r.data.truncation_mode; }, {"keep_start", "keep_end"}),
      key("data.seed", "Shuffle and eval-split seed", [](Recipe& r) -> auto& { return r.data.seed; }),
      key("data.shuffle",
          "Shuffle the training data each epoch (false: the file's order, TRL's sequential sampling, which its "
          "KTOTrainer requires)",
          [](Recipe& r) -> auto& { return r.data.shuffle; }),
      key("data.eval_fraction", "Fraction of data.train held out for eval when data.eval is empty (0: no eval)",
          [](Recipe& r) -> auto& { return r.data.eval_fraction; }),
      key("optim.name", "Optimizer", [](Recipe& r) -> auto& { return r.optim.name; },
          {"adamw", "paged_adamw", "adamw_8bit", "paged_adamw_8bit"}),
      key("optim.lr", "Peak learning rate", [](Recipe& r) -> auto& { return r.optim.lr; }),
      key("optim.beta1", "Adam beta1", [](Recipe& r) -> auto& { return r.optim.beta1; }),
      key("optim.beta2", "Adam beta2", [](Recipe& r) -> auto& { return r.optim.beta2; }),
      key("optim.eps", "Adam epsilon", [](Recipe& r) -> auto& { return r.optim.eps; }),
      key("optim.weight_decay", "Decoupled weight decay", [](Recipe& r) -> auto& { return r.optim.weight_decay; }),
      key("schedule.kind", "Learning-rate schedule after warmup", [](Recipe& r) -> auto& { return r.schedule.kind; },
          {"constant", "linear", "cosine"}),
      key("schedule.warmup_ratio", "Warmup as a fraction of the total steps",
          [](Recipe& r) -> auto& { return r.schedule.warmup_ratio; }),
      key("schedule.warmup_steps", "Warmup steps (>= 0 overrides warmup_ratio)",
          [](Recipe& r) -> auto& { return r.schedule.warmup_steps; }),
      key("schedule.min_lr_ratio", "Floor of linear/cosine decay, as a fraction of optim.lr",
          [](Recipe& r) -> auto& { return r.schedule.min_lr_ratio; }),
      key("train.objective",
          "What training minimises: sft (next-token loss) | dpo (preference pairs, data.format preference; the "
          "reference is the base with the adapters off) | orpo | simpo (preference pairs, no reference) | kto "
          "(prompt/completion/label records, data.format preference)",
          [](Recipe& r) -> auto& { return r.train.objective; }, {"sft", "dpo", "orpo", "simpo", "kto"}),
      key("train.precompute_ref_log_probs",
          "DPO, KTO: compute the reference's log-probabilities of every train and eval record once, before the first "
          "step, and cache them in the run directory (ref_logps.safetensors, reused on resume) instead of a reference "
          "forward in every step (TRL's option of that name)",
          [](Recipe& r) -> auto& { return r.train.precompute_ref_log_probs; }, {}, false),
      key("train.mode", "lora: adapters on the frozen quantized base; full: train every weight (dense, e.g. pretraining)",
          [](Recipe& r) -> auto& { return r.train.mode; }, {"lora", "full"}),
      key("train.batch_size", "Rows per micro-batch", [](Recipe& r) -> auto& { return r.train.batch_size; }),
      key("train.grad_accum", "Micro-batches per optimizer step", [](Recipe& r) -> auto& { return r.train.grad_accum; }),
      key("train.global_batch_size",
          "Rows per optimizer step over all data-parallel ranks (0: batch_size x grad_accum x ranks); when set, "
          "grad_accum becomes global_batch_size / (batch_size x ranks), which must be a whole number",
          [](Recipe& r) -> auto& { return r.train.global_batch_size; }),
      key("train.dist_timeout_s",
          "Data parallel: seconds a rank waits for the others in a collective before it stops with an error naming "
          "the rank that did not answer",
          [](Recipe& r) -> auto& { return r.train.dist_timeout_s; }, {}, false),
      key("train.max_steps", "Optimizer steps (> 0 wins over train.epochs)",
          [](Recipe& r) -> auto& { return r.train.max_steps; }),
      key("train.epochs", "Passes over the training data", [](Recipe& r) -> auto& { return r.train.epochs; }),
      key("train.max_grad_norm", "Clip the global gradient norm (0: no clipping)",
          [](Recipe& r) -> auto& { return r.train.max_grad_norm; }),
      key("train.precision", "auto (bf16 on GPUs that have it and on AVX512-BF16 CPUs for hidden >= 256, else fp16 on GPUs, fp32 on CPUs) | bf16 | fp16 (dynamic loss scaling) | fp32",
          [](Recipe& r) -> auto& { return r.train.precision; }, {"auto", "bf16", "fp16", "fp32"}),
      key("train.gradient_checkpointing", "Recompute each decoder layer in backward instead of storing activations",
          [](Recipe& r) -> auto& { return r.train.gradient_checkpointing; }),
      key("train.memory_budget_gib",
          "With checkpointing: recompute only as many layers as `qtune plan`'s estimate needs to fit this (0: all)",
          [](Recipe& r) -> auto& { return r.train.memory_budget_gib; }, {}, false),
      key("train.seed", "Seed of adapter init and dropout", [](Recipe& r) -> auto& { return r.train.seed; }),
      key("train.log_every", "Log a metrics line every N steps", [](Recipe& r) -> auto& { return r.train.log_every; },
          {}, false),
      key("train.eval_every", "Evaluate every N steps (0: at the end only)",
          [](Recipe& r) -> auto& { return r.train.eval_every; }, {}, false),
      key("train.eval_batches", "Batches of train.batch_size rows per eval, for any number of ranks (0: the whole eval set)",
          [](Recipe& r) -> auto& { return r.train.eval_batches; }, {}, false),
      key("train.save_every", "Save a checkpoint every N steps (0: at the end only)",
          [](Recipe& r) -> auto& { return r.train.save_every; }, {}, false),
      key("train.keep_last", "Checkpoints kept", [](Recipe& r) -> auto& { return r.train.keep_last; }, {}, false),
      key("train.output_dir", "Run directory (metrics.jsonl, loss.svg, checkpoints, adapter)",
          [](Recipe& r) -> auto& { return r.train.output_dir; }, {}, false),
      key("dpo.beta", "DPO: the KL weight of the implicit reward (IPO: its regularisation tau)",
          [](Recipe& r) -> auto& { return r.dpo.beta; }),
      key("dpo.loss_type", "DPO loss: sigmoid (DPO) | ipo | robust (rDPO, with label_smoothing) | hinge (SLiC)",
          [](Recipe& r) -> auto& { return r.dpo.loss_type; }, {"sigmoid", "ipo", "robust", "hinge"}),
      key("dpo.label_smoothing", "DPO robust: the assumed fraction of pairs whose preference is flipped",
          [](Recipe& r) -> auto& { return r.dpo.label_smoothing; }),
      key("orpo.beta", "ORPO: the weight of the odds-ratio term beside the chosen answers' NLL (TRL's beta)",
          [](Recipe& r) -> auto& { return r.orpo.beta; }),
      key("simpo.beta", "SimPO: the scale of the length-normalised reward (TRL's default; the paper uses 2 to 2.5)",
          [](Recipe& r) -> auto& { return r.simpo.beta; }),
      key("simpo.gamma", "SimPO: the target reward margin (TRL's simpo_gamma)",
          [](Recipe& r) -> auto& { return r.simpo.gamma; }),
      key("simpo.label_smoothing", "SimPO: the assumed fraction of flipped pairs",
          [](Recipe& r) -> auto& { return r.simpo.label_smoothing; }),
      key("simpo.cpo_alpha",
          "SimPO: weight of the chosen completions' NLL added to the loss (0: SimPO; TRL's CPOConfig default 1 is "
          "CPO-SimPO)",
          [](Recipe& r) -> auto& { return r.simpo.cpo_alpha; }),
      key("kto.beta", "KTO: the scale of the implied reward, log-ratio to the reference minus the KL estimate",
          [](Recipe& r) -> auto& { return r.kto.beta; }),
      key("kto.desirable_weight", "KTO: the weight of the desirable (label true) records' losses",
          [](Recipe& r) -> auto& { return r.kto.desirable_weight; }),
      key("kto.undesirable_weight", "KTO: the weight of the undesirable (label false) records' losses",
          [](Recipe& r) -> auto& { return r.kto.undesirable_weight; }),
  };
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

const RecipeKey* find_key(const std::string& name) {
  for (const auto& k : recipe_schema())
    if (k.key == name) return &k;
  return nullptr;
}

[[noreturn]] void unknown_key(const std::string& name, const std::string& where) {
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const auto& k : recipe_schema()) {
    // Compare against the full key and, for a bare name, against the key's last component.
    const auto last = k.key.substr(k.key.rfind('.') + 1);
    const size_t d = std::min(edit_distance(name, k.key), edit_distance(name, last) + (name.find('.') == std::string::npos ? 0 : 99));
    if (d < best_d) best_d = d, best = k.key;
  }
  const bool close = best_d <= std::max<size_t>(2, name.size() / 3);
  fail("{}: unknown recipe key '{}'{} (qtune train --help-recipe lists every key)", where, name,
       close ? fmt::format("; did you mean '{}'?", best) : "");
}

[[noreturn]] void unknown_section(const std::string& name, const std::string& where) {
  std::vector<std::string> sections;
  for (const auto& k : recipe_schema()) {
    const auto dot = k.key.find('.');
    if (dot != std::string::npos && std::find(sections.begin(), sections.end(), k.key.substr(0, dot)) == sections.end())
      sections.push_back(k.key.substr(0, dot));
  }
  std::string best = sections.front();
  for (const auto& sec : sections)
    if (edit_distance(name, sec) < edit_distance(name, best)) best = sec;
  fail("{}: unknown recipe section '{}'{} (sections: {})", where, name,
       edit_distance(name, best) <= 2 ? fmt::format("; did you mean '{}'?", best) : "", fmt::join(sections, ", "));
}

std::string where_of(const std::string& source, const YAML::Node& node) {
  const auto mark = node.Mark();
  return mark.line >= 0 ? fmt::format("{}:{}", source, mark.line + 1) : source;
}

bool is_section(const std::string& name) {
  for (const auto& k : recipe_schema())
    if (k.key.rfind(name + ".", 0) == 0) return true;
  return false;
}

void set_from_node(Recipe& r, const std::string& name, const YAML::Node& value, const std::string& where) {
  const auto* k = find_key(name);
  if (!k) unknown_key(name, where);
  k->set(r, YAML::Dump(value), where);
}

bool exists(const std::string& p) { return std::filesystem::exists(p); }

void require_file(const std::string& path, const std::string& key, const std::string& source, bool required) {
  if (path.empty()) {
    if (required) fail("{}: '{}' is required", source, key);
    return;
  }
  if (!exists(path)) fail("{}: '{}' names '{}', which does not exist", source, key, path);
}

// Sets every key of a YAML recipe text on `r` (no validation).
void parse_into(Recipe& r, const std::string& text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail("{}:{}: not valid YAML: {}", source, e.mark.line + 1, e.msg);
  }
  if (root.IsNull()) fail("{}: the recipe is empty", source);
  if (!root.IsMap()) fail("{}: a recipe is a mapping of sections (model:, data:, ...), got {}", source, describe(root));
  for (const auto& top : root) {
    const auto name = top.first.as<std::string>();
    const auto where = where_of(source, top.first);
    if (!is_section(name)) {
      if (top.second.IsMap() && !find_key(name)) unknown_section(name, where);
      set_from_node(r, name, top.second, where);
      continue;
    }
    if (top.second.IsNull()) continue;
    if (!top.second.IsMap()) fail("{}: section '{}' must be a mapping of keys, got {}", where, name, describe(top.second));
    for (const auto& kv : top.second)
      set_from_node(r, name + "." + kv.first.as<std::string>(), kv.second, where_of(source, kv.first));
  }
}

}  // namespace

namespace {

std::vector<std::string*> input_path_fields(Recipe& r) {
  return {&r.model.path, &r.model.tokenizer, &r.data.train, &r.data.eval, &r.quant.plan, &r.quant.calib,
          &r.lora.init_adapter};
}

}  // namespace

const std::vector<RecipeKey>& recipe_schema() {
  static const std::vector<RecipeKey> schema = make_schema();
  return schema;
}

Recipe Recipe::from_yaml_text(const std::string& text, const std::string& source,
                              const std::vector<std::string>& overrides) {
  Recipe r;
  r.source = source;
  parse_into(r, text, source);
  for (const auto& o : overrides) r.apply_override(o);
  r.validate();
  return r;
}

Recipe Recipe::parse(const std::string& text, const std::string& source) {
  Recipe r;
  r.source = source;
  parse_into(r, text, source);
  return r;
}

Recipe Recipe::load(const std::string& path, const std::vector<std::string>& overrides) {
  Recipe r;
  r.source = path;
  parse_into(r, data::read_text_file(path, "recipe"), path);
  // A recipe travels with its data: a relative path that exists beside the recipe is taken from there, before the
  // working directory (which only serves paths the recipe's directory lacks, such as recipes/ naming data/ from the
  // repository's root).
  const auto base = std::filesystem::path(path).parent_path();
  for (std::string* p : input_path_fields(r)) {
    if (p->empty() || std::filesystem::path(*p).is_absolute()) continue;
    if (exists((base / *p).string())) *p = (base / *p).lexically_normal().string();
  }
  for (const auto& o : overrides) r.apply_override(o);
  for (std::string* p : input_path_fields(r))
    if (!p->empty()) *p = std::filesystem::absolute(*p).lexically_normal().string();
  r.validate();
  return r;
}

std::map<std::string, std::string> Recipe::input_paths() const {
  return {{"model.path", model.path},   {"model.tokenizer", model.tokenizer}, {"data.train", data.train},
          {"data.eval", data.eval},     {"quant.plan", quant.plan},           {"quant.calib", quant.calib},
          {"lora.init_adapter", lora.init_adapter}};
}

void Recipe::apply_override(const std::string& kv) {
  const auto eq = kv.find('=');
  const std::string where = fmt::format("override '{}'", kv);
  if (eq == std::string::npos || eq == 0) fail("{}: expected key=value (e.g. lora.r=32)", where);
  set_from_node(*this, kv.substr(0, eq), YAML::Load(kv.substr(eq + 1).empty() ? "\"\"" : kv.substr(eq + 1)), where);
}

void Recipe::validate() const {
  const auto& s = source.empty() ? std::string("recipe") : source;
  auto check = [&](bool ok, const char* k, const std::string& expected, const std::string& got) {
    if (!ok) fail("{}: '{}' must be {}, got {}", s, k, expected, got);
  };
  if (device != "auto" && device != "cpu" && device.rfind("cuda", 0) != 0)
    fail("{}: 'device' must be auto, cpu, cuda or cuda:N, got '{}'", s, device);
  require_file(model.path, "model.path", s, true);
  if (!io::is_gguf_path(model.path) && !exists(model.path + "/config.json"))
    fail("{}: 'model.path' = '{}' has no config.json (expected a Hugging Face model directory or a .gguf file)", s,
         model.path);
  if (!model.tokenizer.empty()) require_file(model.tokenizer, "model.tokenizer", s, false);
  require_file(data.train, "data.train", s, true);
  require_file(data.eval, "data.eval", s, false);
  require_file(quant.plan, "quant.plan", s, false);
  require_file(lora.init_adapter, "lora.init_adapter", s, false);
  check(quant.block_size >= 32 && quant.block_size <= 4096 && (quant.block_size & (quant.block_size - 1)) == 0,
        "quant.block_size", "a power of two in 32..4096", std::to_string(quant.block_size));
  if (train.mode == "lora") {
    try {
      lora.config.validate();
    } catch (const Error& e) {
      fail("{}: lora: {}", s, e.what());
    }
  }
  qat_format_of(quant, s);
  check(quant.qat_start >= 0 && quant.qat_start < 1, "quant.qat_start", "in [0, 1)", fmt::format("{}", quant.qat_start));
  if (parse_qat_layers(quant, s).needs_ranking()) {
    if (!quant.calib.empty()) require_file(quant.calib, "quant.calib", s, false);
    check(quant.calib_seq_len >= 8, "quant.calib_seq_len", ">= 8", std::to_string(quant.calib_seq_len));
    check(quant.scan_tokens >= 16, "quant.scan_tokens", ">= 16", std::to_string(quant.scan_tokens));
  }
  if ((quant.qat != "none" || quant.qat_activations != "none") && train.mode == "lora" && lora.config.dropout > 0)
    fail("{}: quant.qat trains the merged weight W + scale·B·A, where the adapter's dropout has no place: set "
         "lora.dropout: 0 (got {})",
         s, lora.config.dropout);
  check(data.max_seq_len >= 8, "data.max_seq_len", ">= 8", std::to_string(data.max_seq_len));
  check(data.max_prompt_length >= 0, "data.max_prompt_length", ">= 0 (0: no limit)",
        std::to_string(data.max_prompt_length));
  if ((train.objective == "sft") != (data.format != "preference"))
    fail("{}: train.objective {} needs {}: set data.format: {}", s, train.objective,
         train.objective == "sft"   ? "supervised records (alpaca-jsonl, chat-jsonl or text)"
         : train.objective == "kto" ? "KTO records (prompt, completion, label)"
                                    : "preference pairs",
         train.objective == "sft" ? "alpaca-jsonl, chat-jsonl or text (or a preference train.objective)"
                                  : "preference");
  if (train.precompute_ref_log_probs && train.objective != "dpo" && train.objective != "kto")
    fail("{}: train.precompute_ref_log_probs caches the reference of DPO and KTO; train.objective {} has none: set it "
         "to false",
         s, train.objective);
  if (train.precompute_ref_log_probs && (quant.qat != "none" || quant.qat_activations != "none"))
    fail("{}: train.precompute_ref_log_probs computes the reference before the first step, but quant.qat changes the "
         "base's forward during the run: set one of them off",
         s);
  if (train.precompute_ref_log_probs && train.mode != "lora")
    fail("{}: train.precompute_ref_log_probs needs train.mode lora (the reference is the base with the adapters off); "
         "got train.mode {}",
         s, train.mode);
  check(dpo.beta > 0, "dpo.beta", "> 0", fmt::format("{}", dpo.beta));
  check(dpo.label_smoothing >= 0 && dpo.label_smoothing < 0.5, "dpo.label_smoothing", "in [0, 0.5)",
        fmt::format("{}", dpo.label_smoothing));
  check(orpo.beta > 0, "orpo.beta", "> 0", fmt::format("{}", orpo.beta));
  check(simpo.beta > 0, "simpo.beta", "> 0", fmt::format("{}", simpo.beta));
  check(simpo.label_smoothing >= 0 && simpo.label_smoothing < 0.5, "simpo.label_smoothing", "in [0, 0.5)",
        fmt::format("{}", simpo.label_smoothing));
  check(simpo.cpo_alpha >= 0, "simpo.cpo_alpha", ">= 0", fmt::format("{}", simpo.cpo_alpha));
  check(kto.beta > 0, "kto.beta", "> 0", fmt::format("{}", kto.beta));
  check(kto.desirable_weight > 0, "kto.desirable_weight", "> 0", fmt::format("{}", kto.desirable_weight));
  check(kto.undesirable_weight > 0, "kto.undesirable_weight", "> 0", fmt::format("{}", kto.undesirable_weight));
  check(data.eval_fraction >= 0 && data.eval_fraction < 1, "data.eval_fraction", "in [0, 1)",
        fmt::format("{}", data.eval_fraction));
  check(optim.lr > 0, "optim.lr", "> 0", fmt::format("{}", optim.lr));
  check(optim.beta1 >= 0 && optim.beta1 < 1, "optim.beta1", "in [0, 1)", fmt::format("{}", optim.beta1));
  check(optim.beta2 >= 0 && optim.beta2 < 1, "optim.beta2", "in [0, 1)", fmt::format("{}", optim.beta2));
  check(optim.eps > 0, "optim.eps", "> 0", fmt::format("{}", optim.eps));
  check(optim.weight_decay >= 0, "optim.weight_decay", ">= 0", fmt::format("{}", optim.weight_decay));
  check(schedule.warmup_ratio >= 0 && schedule.warmup_ratio < 1, "schedule.warmup_ratio", "in [0, 1)",
        fmt::format("{}", schedule.warmup_ratio));
  check(schedule.min_lr_ratio >= 0 && schedule.min_lr_ratio <= 1, "schedule.min_lr_ratio", "in [0, 1]",
        fmt::format("{}", schedule.min_lr_ratio));
  check(train.batch_size >= 1, "train.batch_size", ">= 1", std::to_string(train.batch_size));
  check(train.grad_accum >= 1, "train.grad_accum", ">= 1", std::to_string(train.grad_accum));
  check(train.global_batch_size >= 0, "train.global_batch_size", ">= 0 (0: batch_size x grad_accum x ranks)",
        std::to_string(train.global_batch_size));
  check(train.dist_timeout_s > 0, "train.dist_timeout_s", "> 0 seconds", fmt::format("{}", train.dist_timeout_s));
  check(train.max_steps >= 0, "train.max_steps", ">= 0", std::to_string(train.max_steps));
  check(train.max_steps > 0 || train.epochs > 0, "train.epochs", "> 0 when train.max_steps is 0",
        fmt::format("{}", train.epochs));
  check(train.max_grad_norm >= 0, "train.max_grad_norm", ">= 0", fmt::format("{}", train.max_grad_norm));
  check(train.memory_budget_gib >= 0, "train.memory_budget_gib", ">= 0 (0: checkpoint every layer)",
        fmt::format("{}", train.memory_budget_gib));
  check(train.log_every >= 1, "train.log_every", ">= 1", std::to_string(train.log_every));
  check(train.eval_every >= 0, "train.eval_every", ">= 0", std::to_string(train.eval_every));
  check(train.save_every >= 0, "train.save_every", ">= 0", std::to_string(train.save_every));
  check(train.keep_last >= 1, "train.keep_last", ">= 1", std::to_string(train.keep_last));
  check(!train.output_dir.empty(), "train.output_dir", "a directory", "\"\"");
  if (train.mode == "full" && quant.format != "none")
    fail("{}: train.mode full trains every weight densely: set quant.format: none (got '{}')", s, quant.format);
  // Full fine-tuning updates the weights themselves, which the optimizers keep in fp32 (there are no fp32 master copies
  // of 16-bit weights); LoRA's adapters are fp32 whatever the base computes in.
  if (train.mode == "full" && train.precision != "auto" && train.precision != "fp32")
    fail("{}: train.mode full trains fp32 weights: 'train.precision' must be auto or fp32, got '{}' (16-bit compute is "
         "for train.mode lora, whose adapters stay fp32)",
         s, train.precision);
  if (train.mode == "full" && model.dtype != "auto" && model.dtype != "fp32")
    fail("{}: train.mode full trains fp32 weights: 'model.dtype' must be auto or fp32, got '{}'", s, model.dtype);
  if (quant.method != "none") {
    if (train.mode != "lora") fail("{}: quant.method {} makes a quantized base for LoRA: set train.mode: lora", s, quant.method);
    if (quant.method != "rtn" && quant.calib.empty())
      fail("{}: quant.method {} needs quant.calib, a text file like what the model will see", s, quant.method);
    if (!quant.calib.empty()) require_file(quant.calib, "quant.calib", s, false);
    if (!quant.plan.empty()) fail("{}: quant.method {} and quant.plan both say how the base is stored: keep one", s, quant.method);
    if (quant.qat != "none") fail("{}: quant.method {} and quant.qat: train on the calibrated base without QAT", s, quant.method);
    check(quant.calib_samples >= 1, "quant.calib_samples", ">= 1", std::to_string(quant.calib_samples));
    check(quant.calib_seq_len >= 8, "quant.calib_seq_len", ">= 8", std::to_string(quant.calib_seq_len));
    check(quant.budget_bits >= 0, "quant.budget_bits", ">= 0", fmt::format("{}", quant.budget_bits));
    if (quant.budget_bits > 0 && quant.method != "gptq" && quant.method != "auto")
      fail("{}: quant.budget_bits plans 8-bit GPTQ linears (quant.method gptq) or every linear's method (quant.method "
           "auto), not quant.method {}",
           s, quant.method);
    if (quant.method == "auto") {
      if (quant.budget_bits <= 0)
        fail("{}: quant.method auto chooses within quant.budget_bits: set it (e.g. 4.5 bits per weight)", s);
      if (!quant.keep_int8.empty() || !quant.keep_16bit.empty())
        fail("{}: quant.method auto chooses every linear's method itself: drop quant.keep_int8 / quant.keep_16bit (add "
             "int8 or 16bit to quant.methods instead)",
             s);
      check(quant.bits == 4, "quant.bits", "4 for quant.method auto (GPTQ and AWQ int4)", std::to_string(quant.bits));
      check(quant.group_size > 0, "quant.group_size", "> 0 for quant.method auto", std::to_string(quant.group_size));
      try {
        calib::check_methods(quant.methods, "quant.methods");
      } catch (const Error& e) {
        fail("{}: {}", s, e.what());
      }
    }
    check(quant.scan_tokens >= 16, "quant.scan_tokens", ">= 16", std::to_string(quant.scan_tokens));
    if (quant.method == "awq" && (!quant.keep_int8.empty() || !quant.keep_16bit.empty()))
      fail("{}: quant.method awq writes every projection as 4-bit AWQ: quant.keep_int8 / quant.keep_16bit work with "
           "quant.method gptq | rtn (8-bit and unquantized linears in one GPTQ checkpoint)",
           s);
    if (quant.method == "auto") {
    } else if (quant.method == "awq") {
      check(quant.bits == 4, "quant.bits", "4 for quant.method awq", std::to_string(quant.bits));
      check(quant.group_size > 0, "quant.group_size", "> 0 for quant.method awq", std::to_string(quant.group_size));
    } else {
      check(quant.bits == 2 || quant.bits == 4 || quant.bits == 8, "quant.bits", "2, 4 or 8", std::to_string(quant.bits));
      check(quant.group_size == -1 || quant.group_size > 0, "quant.group_size", "-1 or > 0", std::to_string(quant.group_size));
    }
  }
}

std::string Recipe::to_yaml() const {
  std::string out, section;
  for (const auto& k : recipe_schema()) {
    const auto dot = k.key.find('.');
    if (dot == std::string::npos) {
      out += k.key + ": " + k.show(*this) + "\n";
      continue;
    }
    const auto sec = k.key.substr(0, dot);
    if (sec != section) out += sec + ":\n", section = sec;
    out += "  " + k.key.substr(dot + 1) + ": " + k.show(*this) + "\n";
  }
  return out;
}

std::map<std::string, std::string> Recipe::run_affecting_values() const {
  std::map<std::string, std::string> out;
  for (const auto& k : recipe_schema())
    if (k.affects_run) out[k.key] = k.show(*this);
  return out;
}

std::string recipe_help() {
  Recipe defaults;
  std::string out =
      "Recipe keys (YAML sections, or key=value on the command line; e.g. `qtune train r.yaml lora.r=32`):\n\n";
  size_t width = 0;
  for (const auto& k : recipe_schema()) width = std::max(width, k.key.size());
  for (const auto& k : recipe_schema()) {
    const auto def = k.show(defaults);
    out += fmt::format("  {:<{}}  {:<6}  {:<16}  {}{}\n", k.key, width, k.type, def.size() > 16 ? def.substr(0, 13) + "..." : def,
                       k.description, k.choices.empty() ? "" : fmt::format(" [{}]", fmt::join(k.choices, " | ")));
  }
  return out;
}

}  // namespace qtune::train
