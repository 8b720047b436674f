// qtune plan RECIPE.yaml [key=value ...]: checks a recipe, its model and its data without loading weights or
// training, and prints what the run would hold at its peak, so a user knows whether it fits the card.
#include <fmt/format.h>

#include <map>

#include "commands.h"
#include "qtune/io/gguf.h"
#include "qtune/io/gguf_model.h"
#include "qtune/optim/optimizer.h"
#include "qtune/train/memory_estimate.h"
#include "qtune/train/recipe.h"
#include "qtune/train/run_setup.h"
#include "qtune/train/trainer.h"
#include "qtune/util/device.h"
#include "qtune/util/memory.h"
#include "qtune/util/strings.h"

namespace qtune::cli {
namespace {

struct PlanArgs {
  std::string recipe;
  std::vector<std::string> overrides;
  std::string device;
  double card_gib = 0;
  int64_t nproc = 1;
};

// "nf4 (block 64, double quant)", "keep: the GGUF's own blocks (Q4_1 x210)", plus the rules that send modules elsewhere.
std::string describe_quant(const quant::QuantPlan& plan, const train::Recipe& recipe) {
  if (recipe.train.mode == "full") return "none (train.mode full trains every weight densely)";
  const auto& b = plan.base;
  std::string out = quant::format_name(b.format);
  if (b.format == quant::WeightFormat::NF4 || b.format == quant::WeightFormat::FP4)
    out += fmt::format(" (block {}{})", b.blocksize, b.double_quant ? ", double quant" : "");
  if (plan.uses(quant::WeightFormat::Keep)) {
    std::map<std::string, int64_t> kept;  // ggml type -> projections kept in it
    const auto file = io::GgufFile::open(recipe.model.path);
    const auto layout = io::gguf_layout(io::gguf_model_config(*file));
    for (const auto& t : file->header().tensors) {
      const auto name = layout.hf_name(t.name);
      if (ends_with(name, "_proj.weight") &&
          plan.resolve(name.substr(0, name.size() - 7)).format == quant::WeightFormat::Keep)
        ++kept[quant::ggml_type_info(t.type).name];
    }
    std::string types;
    for (const auto& [type, n] : kept) types += fmt::format("{}{} x{}", types.empty() ? "" : ", ", type, n);
    out += fmt::format(": the GGUF's own blocks ({}; F32/F16/BF16 ones load dense)", types);
  }
  for (const auto& r : plan.rules) out += fmt::format("; {} -> {}", r.pattern, quant::format_name(r.format));
  return out;
}

int run_plan(const PlanArgs& a) {
  // The run as `--nproc` ranks train it: train.global_batch_size sets grad_accum, which sets the steps and warm-up.
  const auto recipe = train::with_global_batch(train::Recipe::load(a.recipe, a.overrides), a.nproc);
  const auto config = io::ModelConfig::load(recipe.model.path);
  const auto tokenizer = train::load_tokenizer(recipe, config);
  const auto data = train::load_data(recipe, tokenizer);
  // The recipe's device even where this machine has none: plan is for deciding before the GPU is at hand.
  const at::Device device = named_device(a.device.empty() ? recipe.device : a.device);
  const auto dtype = train::run_dtype(recipe, device, config);
  const auto plan = recipe.train.mode == "full" ? quant::QuantPlan{} : train::quant_plan_of(recipe);
  const int64_t pad = tokenizer.pad_id().value_or(tokenizer.eos_id());
  data::DataLoader loader(data.train, train::loader_options(recipe, false, a.nproc), pad);
  const auto [steps, warmup] = train::step_counts(recipe, loader);

  fmt::print("recipe {}: OK\n", a.recipe);
  fmt::print("model  {}: {} layers, hidden {}, intermediate {}, heads {}/{} kv, vocab {}\n", recipe.model.path,
             config.num_hidden_layers, config.hidden_size, config.intermediate_size, config.num_attention_heads,
             config.num_key_value_heads, config.vocab_size);
  fmt::print("data   {} records -> {} train / {} eval samples; {} train tokens, {} trained per epoch; longest {}; "
             "{} truncated, {} dropped\n",
             data.stats.records, data.stats.train_samples, data.stats.eval_samples, data.stats.train_tokens,
             data.stats.train_targets, data.stats.longest, data.stats.truncated, data.stats.dropped);
  fmt::print("steps  {} optimizer steps ({} warmup) of {} x {} rows{}; {} micro-batches per epoch\n", steps, warmup,
             recipe.train.grad_accum, recipe.train.batch_size,
             a.nproc > 1 ? fmt::format(" on each of {} ranks", a.nproc) : std::string(), loader.batches_per_epoch(0));
  fmt::print("quant  {}\n", describe_quant(plan, recipe));
  auto m = train::estimate_memory(config, recipe, plan, dtype, device.is_cuda());
  if (!device.is_cuda()) m.runtime = current_rss_bytes();  // nothing loaded yet: what the process itself holds
  fmt::print("\npeak memory estimate on {} ({} compute, {} x {} tokens per micro-batch, {} trainable parameters):\n",
             device.str(), dtype_label(dtype), recipe.train.batch_size * loader.rows_per_sample(),
             recipe.data.max_seq_len, m.trainable_params);
  for (const auto& [label, bytes] : m.rows()) fmt::print("  {:<20} {:>12}\n", label, format_bytes(double(bytes)));
  fmt::print("  {:<20} {:>12}\n", "total", format_bytes(double(m.total())));
  fmt::print("  activations with gradient checkpointing {}, without {} (train.gradient_checkpointing: {})\n",
             format_bytes(double(m.activations_checkpointing)), format_bytes(double(m.activations_no_checkpointing)),
             recipe.train.gradient_checkpointing ? "true" : "false");
  const int64_t n = train::checkpointed_layers(m, recipe);
  const int64_t total = train::total_with(m, n);
  if (recipe.train.gradient_checkpointing && recipe.train.memory_budget_gib > 0) {
    fmt::print("  train.memory_budget_gib {}: {} of {} layers recompute, total {}\n", recipe.train.memory_budget_gib, n,
               m.layers, format_bytes(double(total)));
  }
  if (a.card_gib > 0) {
    const double card = a.card_gib * 1024 * 1024 * 1024;
    // The CUDA context and allocator fragmentation take some of a card beyond what the allocator hands out.
    const double usable = card - 0.6 * 1024 * 1024 * 1024;
    fmt::print("\n{} on a {:.0f} GiB card ({} usable after ~0.6 GiB of CUDA context)\n",
               total <= usable ? "FITS" : "DOES NOT FIT", a.card_gib, format_bytes(usable));
    return total <= usable ? 0 : 3;
  }
  return 0;
}

}  // namespace

void add_plan(CLI::App& app, Action& action) {
  auto args = std::make_shared<PlanArgs>();
  auto* cmd = app.add_subcommand("plan", "Check a recipe, its model and data, and estimate the run's peak memory");
  cmd->add_option("RECIPE", args->recipe, "The recipe")->required();
  cmd->add_option("OVERRIDES", args->overrides, "key=value overrides of recipe keys");
  cmd->add_option("--device", args->device, "Estimate for this device (default: the recipe's), e.g. cuda");
  cmd->add_option("--nproc", args->nproc, "Plan for N data-parallel ranks (train.global_batch_size divides by them)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  cmd->add_option("--card-gib", args->card_gib, "Say whether the run fits a card with this many GiB (exit 3 if not)");
  cmd->callback([&action, args] { action = [args] { return run_plan(*args); }; });
}

}  // namespace qtune::cli
