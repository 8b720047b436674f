#include "qtune/train/run_setup.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cmath>
#include <filesystem>

#include "qtune/data/chat_template_match.h"
#include "qtune/data/preference.h"
#include "qtune/data/records.h"
#include "qtune/export/peft_adapter.h"
#include "qtune/io/sharded_checkpoint.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quant_linear_factory.h"
#include "qtune/qat/fake_quant_linear.h"
#include "qtune/train/memory_estimate.h"
#include "qtune/train/precision.h"
#include "qtune/train/qat_layers.h"
#include "qtune/util/device.h"
#include "qtune/util/error.h"
#include "qtune/util/strings.h"

namespace qtune::train {

quant::QuantPlan quant_plan_of(const Recipe& r) {
  quant::QuantPlan plan;
  if (!r.quant.plan.empty()) {
    plan = quant::QuantPlan::load_yaml(r.quant.plan);
  } else {
    plan.base.format = quant::parse_weight_format(r.quant.format, "quant.format");
    plan.base.blocksize = r.quant.block_size;
    plan.base.double_quant = r.quant.double_quant;
    for (const auto& p : r.quant.keep_int8) plan.rules.push_back({p, quant::WeightFormat::Int8});
    for (const auto& p : r.quant.keep_16bit) plan.rules.push_back({p, quant::WeightFormat::Dense});
    plan.validate("quant");
  }
  // Only a GGUF stores blocks to keep: said by the recipe's keys here rather than at the first weight. By name only:
  // an export may load the base from elsewhere (--base) when model.path has moved.
  if (plan.uses(quant::WeightFormat::Keep) && !ends_with(r.model.path, ".gguf"))
    fail("{}: {} trains on the ggml blocks of a GGUF base, but model.path '{}' is not a .gguf file (use nf4, fp4, "
         "int8 or none)",
         r.source, r.quant.plan.empty() ? std::string("quant.format keep") : "quant.plan " + r.quant.plan + " (format keep)",
         r.model.path);
  return plan;
}

data::Tokenizer load_tokenizer(const Recipe& r, const io::ModelConfig& config) {
  return data::Tokenizer::load(r.model.tokenizer.empty() ? r.model.path : r.model.tokenizer, &config);
}

namespace {

data::TokenizedDataset tokenize_file(const Recipe& r, const std::string& path, const data::Tokenizer& tok,
                                     DataStats& stats) {
  const auto records = data::read_records(path, data::parse_data_format(r.data.format));
  stats.records += static_cast<int64_t>(records.size());
  // Text records need no template: "auto" on a model without one only fails when the data has conversations.
  const bool needs_template = std::any_of(records.begin(), records.end(), [](const data::Record& x) { return !x.is_text(); });
  const auto format = needs_template ? data::resolve_chat_format(r.data.chat_template, r.model.path, tok)
                                     : data::ChatFormat(data::ChatTemplate::None);
  auto set = data::tokenize_records(records, format, tok, r.data.train_on_prompt, r.data.max_seq_len);
  stats.truncated += set.truncated;
  stats.dropped += set.dropped;
  if (set.samples.empty()) fail("{}: no sample left to train on (data.max_seq_len {} too short?)", path, r.data.max_seq_len);
  return set;
}

data::PreferenceLimits preference_limits(const Recipe& r) {
  return {r.data.max_prompt_length, r.data.max_seq_len, r.data.truncation_mode == "keep_end"};
}

std::vector<data::PreferencePair> tokenize_pairs(const Recipe& r, const std::string& path, const data::Tokenizer& tok,
                                                 DataStats& stats) {
  const auto records = data::read_preference_records(path);
  stats.records += static_cast<int64_t>(records.size());
  const bool needs_template = std::any_of(records.begin(), records.end(),
                                          [](const data::PreferenceRecord& x) { return x.conversational; });
  const auto format = needs_template ? data::resolve_chat_format(r.data.chat_template, r.model.path, tok)
                                     : data::ChatFormat(data::ChatTemplate::None);
  std::vector<data::PreferencePair> pairs;
  for (const auto& rec : records) pairs.push_back(data::tokenize_preference(rec, format, tok, preference_limits(r)));
  return pairs;
}

// Each pair as two adjacent samples, chosen then rejected (the loader keeps them together: rows_per_sample 2).
std::vector<data::TokenizedSample> pair_rows(const Recipe& r, const std::vector<data::PreferencePair>& pairs,
                                             DataStats& stats) {
  std::vector<data::TokenizedSample> out;
  for (const auto& p : pairs) {
    auto [chosen, rejected] = data::preference_rows(p, preference_limits(r));
    stats.truncated += chosen.truncated + rejected.truncated;
    out.push_back(std::move(chosen));
    out.push_back(std::move(rejected));
  }
  return out;
}

RunData load_preference_data(const Recipe& r, const data::Tokenizer& tok) {
  RunData d;
  auto train = tokenize_pairs(r, r.data.train, tok, d.stats);
  std::vector<data::PreferencePair> eval;
  if (!r.data.eval.empty()) {
    eval = tokenize_pairs(r, r.data.eval, tok, d.stats);
  } else if (r.data.eval_fraction > 0) {
    const auto is_eval = data::eval_split(static_cast<int64_t>(train.size()), r.data.eval_fraction, r.data.seed);
    std::vector<data::PreferencePair> kept;
    for (size_t i = 0; i < train.size(); ++i) (is_eval[i] ? eval : kept).push_back(std::move(train[i]));
    train = std::move(kept);
  }
  d.train = pair_rows(r, train, d.stats);
  d.eval = pair_rows(r, eval, d.stats);
  return d;
}

std::vector<data::TokenizedSample> tokenize_kto_file(const Recipe& r, const std::string& path,
                                                    const data::Tokenizer& tok, DataStats& stats) {
  const auto records = data::read_kto_records(path);
  stats.records += static_cast<int64_t>(records.size());
  const bool needs_template =
      std::any_of(records.begin(), records.end(), [](const data::KtoRecord& x) { return x.conversational; });
  const auto format = needs_template ? data::resolve_chat_format(r.data.chat_template, r.model.path, tok)
                                     : data::ChatFormat(data::ChatTemplate::None);
  std::vector<data::TokenizedSample> rows;
  for (const auto& rec : records) {
    rows.push_back(data::kto_row(data::tokenize_kto(rec, format, tok, preference_limits(r)), preference_limits(r)));
    stats.truncated += rows.back().truncated;
  }
  return rows;
}

// KTO: one row per record, its label carried along (the loader pairs the rows for the KL term).
RunData load_kto_data(const Recipe& r, const data::Tokenizer& tok) {
  RunData d;
  d.train = tokenize_kto_file(r, r.data.train, tok, d.stats);
  if (!r.data.eval.empty())
    d.eval = tokenize_kto_file(r, r.data.eval, tok, d.stats);
  else if (r.data.eval_fraction > 0)
    std::tie(d.train, d.eval) = data::split_eval(std::move(d.train), r.data.eval_fraction, r.data.seed);
  return d;
}

}  // namespace

bool preference_objective(const Recipe& r) { return r.train.objective != "sft"; }

RunData load_data(const Recipe& r, const data::Tokenizer& tok) {
  RunData d;
  if (r.train.objective == "kto") {
    d = load_kto_data(r, tok);
  } else if (preference_objective(r)) {
    d = load_preference_data(r, tok);
  } else {
    d.train = tokenize_file(r, r.data.train, tok, d.stats).samples;
    if (!r.data.eval.empty())
      d.eval = tokenize_file(r, r.data.eval, tok, d.stats).samples;
    else if (r.data.eval_fraction > 0)
      std::tie(d.train, d.eval) = data::split_eval(std::move(d.train), r.data.eval_fraction, r.data.seed);
  }
  d.stats.train_samples = static_cast<int64_t>(d.train.size());
  d.stats.eval_samples = static_cast<int64_t>(d.eval.size());
  for (const auto& s : d.train) {
    d.stats.train_tokens += static_cast<int64_t>(s.input_ids.size());
    d.stats.longest = std::max<int64_t>(d.stats.longest, static_cast<int64_t>(s.input_ids.size()));
    for (size_t i = 1; i < s.labels.size(); ++i) d.stats.train_targets += s.labels[i] != data::kIgnoreLabel;
  }
  return d;
}

data::LoaderOptions loader_options(const Recipe& r, bool for_eval, int64_t ranks) {
  data::LoaderOptions o;
  o.batch_size = r.train.batch_size * ranks;
  o.max_seq_len = r.data.max_seq_len;
  o.packing = r.data.packing;
  o.shuffle = !for_eval && r.data.shuffle;
  o.seed = r.data.seed;
  o.rows_per_sample = preference_objective(r) && r.train.objective != "kto" ? 2 : 1;
  return o;
}

std::string device_key(const Recipe& r) { return fmt::format("{}: 'device'", r.source.empty() ? "recipe" : r.source); }

at::ScalarType run_dtype(const Recipe& r, at::Device device, const io::ModelConfig& config) {
  if (r.train.mode == "full" && r.train.precision == "auto") return at::kFloat;
  return r.model.dtype == "auto" ? compute_dtype(r.train.precision, device, config.hidden_size)
                                : resolve_dtype(r.model.dtype, device);
}

int64_t micro_batches_in_epoch(const Recipe& r, const data::DataLoader& loader, int64_t epoch) {
  const int64_t all = loader.batches_per_epoch(epoch);
  if (r.train.max_steps > 0) return all;
  const double whole = std::floor(r.train.epochs);
  if (static_cast<double>(epoch) < whole) return all;
  const double fraction = r.train.epochs - whole;
  return static_cast<double>(epoch) == whole && fraction > 0
             ? std::max<int64_t>(1, static_cast<int64_t>(std::ceil(fraction * static_cast<double>(all))))
             : 0;
}

std::pair<int64_t, int64_t> step_counts(const Recipe& r, const data::DataLoader& loader) {
  int64_t total = r.train.max_steps;
  if (total <= 0) {
    // Each epoch ends with a step of its own, smaller when grad_accum does not divide the epoch's micro-batches.
    total = 0;
    for (int64_t e = 0; e < static_cast<int64_t>(std::ceil(r.train.epochs)); ++e)
      total += (micro_batches_in_epoch(r, loader, e) + r.train.grad_accum - 1) / r.train.grad_accum;
    total = std::max<int64_t>(1, total);
  }
  const int64_t warmup = r.schedule.warmup_steps >= 0
                             ? r.schedule.warmup_steps
                             : static_cast<int64_t>(std::ceil(r.schedule.warmup_ratio * static_cast<double>(total)));
  return {total, warmup};
}

RunSetup RunSetup::create(const Recipe& recipe, std::FILE* out, int64_t ranks) {
  auto say = [out](const std::string& s) {
    if (out) fmt::print(out, "{}\n", s), std::fflush(out);
  };
  RunSetup s;
  s.recipe = recipe;
  const auto& r = s.recipe;
  s.device = resolve_device(r.device, device_key(r));
  s.config = io::ModelConfig::load(r.model.path);
  s.dtype = run_dtype(r, s.device, s.config);
  s.tokenizer = load_tokenizer(r, s.config);
  if (s.tokenizer.vocab_size() > s.config.vocab_size)
    fail("{}: the tokenizer has {} tokens but the model's vocab_size is {}", r.model.path, s.tokenizer.vocab_size(),
         s.config.vocab_size);

  auto data = load_data(r, s.tokenizer);
  s.stats = data.stats;
  const int64_t pad = s.tokenizer.pad_id().value_or(s.tokenizer.eos_id());
  if (r.train.objective == "kto" && r.train.batch_size * ranks < 2)
    fail("{}: train.objective kto needs at least 2 records per micro-batch (train.batch_size {} x {} rank(s)): its KL "
         "term pairs each prompt with another record's completion of the same batch (TRL's KTOTrainer needs 2 too)",
         r.source, r.train.batch_size, ranks);
  s.train_loader = std::make_unique<data::DataLoader>(std::move(data.train), loader_options(r, false, ranks), pad);
  if (!data.eval.empty())
    s.eval_loader = std::make_unique<data::DataLoader>(std::move(data.eval), loader_options(r, true, ranks), pad);
  say(fmt::format("data: {} records -> {} train / {} eval samples, {} train tokens ({} trained per epoch), "
                  "longest {}, {} truncated, {} dropped",
                  s.stats.records, s.stats.train_samples, s.stats.eval_samples, s.stats.train_tokens,
                  s.stats.train_targets, s.stats.longest, s.stats.truncated, s.stats.dropped));

  const auto options = at::TensorOptions().dtype(s.dtype).device(s.device);
  s.qat = apply_qat_layers(s.recipe, s.config, qat_plan_of(r, s.config), s.device, out);
  if (r.train.mode == "full") {
    s.base_factory = std::make_unique<nn::DenseLinearFactory>(options);
    auto* factory = s.base_factory.get();
    if (s.qat.plan) {
      s.qat_factory = std::make_unique<qat::FakeQuantLinearFactory>(*s.base_factory, s.qat.plan);
      factory = s.qat_factory.get();
    }
    s.model = nn::load_causal_lm(r.model.path, options, factory);
    for (auto& p : s.model->named_parameters()) {
      p.value().set_requires_grad(true);
      s.trainable.emplace_back(p.key(), p.value());
    }
  } else {
    auto base = std::make_unique<nn::QuantLinearFactory>(
        quant_plan_of(r), options,
        quant::StoredQuantization::of(s.config.quantization_config, r.model.path + "/config.json"));
    const auto* quant_base = base.get();
    s.base_factory = std::move(base);
    auto lora_config = r.lora.config;
    if (!r.lora.init_adapter.empty()) {
      // The adapter decides its own shape; the recipe's dropout still applies to training.
      const double dropout = lora_config.dropout;
      lora_config = exporting::read_peft_config(r.lora.init_adapter);
      lora_config.dropout = dropout;
      s.recipe.lora.config = lora_config;
    }
    s.lora_factory = std::make_unique<lora::LoraLinearFactory>(*s.base_factory, lora_config, r.train.seed, s.qat.plan);
    s.model = nn::load_causal_lm(r.model.path, options, s.lora_factory.get());
    if (const auto missing = s.lora_factory->unmatched_targets(); !missing.empty())
      fail("{}: lora.targets names {} but this {} model has no such linear (its linears: {}, or all-linear)", r.source,
           fmt::join(missing, ", "), s.config.model_type, fmt::join(s.lora_factory->built_leaf_names(), ", "));
    lora::apply_modules_to_save(*s.model, lora_config.modules_to_save);
    if (!r.lora.init_adapter.empty()) exporting::load_peft_adapter(*s.model, r.lora.init_adapter);
    s.trainable = lora::trainable_parameters(*s.model);
    if (s.trainable.empty()) fail("{}: lora.targets match no module of this model", r.source);
    say(fmt::format("base: {} linears, {}", quant_base->layers().size(), quant_base->summary()));
  }
  s.checkpointed_layers = r.train.gradient_checkpointing ? s.config.num_hidden_layers : 0;
  if (r.train.gradient_checkpointing && r.train.memory_budget_gib > 0) {
    // Each layer not recomputed saves its forward pass in backward; keep as many as the budget allows.
    const auto plan = r.train.mode == "full" ? quant::QuantPlan{} : quant_plan_of(r);
    const auto m = estimate_memory(s.config, r, plan, s.dtype, s.device.is_cuda());
    s.checkpointed_layers = train::checkpointed_layers(m, r);
    const int64_t total = total_with(m, s.checkpointed_layers);
    const auto budget = static_cast<int64_t>(r.train.memory_budget_gib * double(int64_t{1} << 30));
    say(fmt::format("memory budget {:.2f} GiB: checkpointing {} of {} layers (estimate {:.2f} GiB{})",
                    r.train.memory_budget_gib, s.checkpointed_layers, s.config.num_hidden_layers,
                    double(total) / double(int64_t{1} << 30), total > budget ? ", over the budget even so" : ""));
  }
  s.model->set_gradient_checkpointing(r.train.gradient_checkpointing, s.checkpointed_layers);

  std::tie(s.total_steps, s.warmup_steps) = step_counts(r, *s.train_loader);
  if (s.qat.plan) {
    s.qat_start_step = qat::qat_start_step(r.quant.qat_start, s.total_steps);
    say(fmt::format("quantization-aware training: {}, from step {} of {}", s.qat.summary, s.qat_start_step + 1,
                    s.total_steps));
  }
  int64_t trainable = 0;
  for (const auto& [n, p] : s.trainable) trainable += p.numel();
  const int64_t base = s.config.num_parameters();
  say(fmt::format("model: {} ({} layers, hidden {}, {} parameters) on {} in {}; {} trainable parameters ({:.2f}% of the "
                  "base); {} steps ({} warmup)",
                  r.model.path, s.config.num_hidden_layers, s.config.hidden_size, base, s.device.str(),
                  dtype_label(s.dtype), trainable, 100.0 * trainable / std::max<int64_t>(base, 1), s.total_steps,
                  s.warmup_steps));
  return s;
}

void RunSetup::copy_tokenizer_files(const std::string& dir) const {
  data::copy_tokenizer_files(recipe.model.tokenizer.empty() ? recipe.model.path : recipe.model.tokenizer, dir);
}

}  // namespace qtune::train
