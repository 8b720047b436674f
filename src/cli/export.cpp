// qtune export RUN_OR_CHECKPOINT --adapter OUT | --merged OUT: the trained adapter in PEFT's format, or a merged
// Hugging Face model (16-bit, fp32, or NF4 again), with the quality cost of the merge printed.
#include <fmt/format.h>

#include <filesystem>

#include "commands.h"
#include "qtune/data/collate.h"
#include "qtune/data/tokenizer.h"
#include "qtune/export/merged_model.h"
#include "qtune/export/peft_adapter.h"
#include "qtune/export/trained_model.h"
#include "qtune/nn/model_io.h"
#include "qtune/train/checkpoint.h"
#include "qtune/train/run_setup.h"
#include "qtune/train/trainer.h"
#include "qtune/util/device.h"
#include "qtune/util/error.h"
#include "qtune/util/memory.h"
#include "qtune/util/remove_tree.h"

namespace qtune::cli {
namespace {

namespace fs = std::filesystem;

struct ExportArgs {
  std::string source, adapter_out, merged_out, base, dtype = "bf16", quantize = "none";
  int64_t shard_mb = 2048;
  bool no_quality_check = false;
};

// The run's eval data (or a slice of its training data), to score base + adapter and the merged model on.
data::DataLoader quality_data(const train::Recipe& recipe, const std::string& base_dir) {
  auto r = recipe;
  r.model.path = base_dir;
  const auto config = io::ModelConfig::load(base_dir);
  const auto tok = train::load_tokenizer(r, config);
  auto data = train::load_data(r, tok);
  auto samples = data.eval.empty() ? data.train : data.eval;
  if (samples.size() > 64) samples.resize(64);
  return data::DataLoader(samples, train::loader_options(r, true), tok.pad_id().value_or(tok.eos_id()));
}

int run_export(const ExportArgs& a) {
  if (a.adapter_out.empty() == a.merged_out.empty()) fail("qtune export: give exactly one of --adapter OUT and --merged OUT");
  const auto out = a.adapter_out.empty() ? a.merged_out : a.adapter_out;
  if (fs::exists(out)) fail("'{}' exists; choose a new directory (nothing was overwritten)", out);
  auto warn = [](const std::string& m) { fmt::print(stderr, "warning: {}\n", m); };

  if (!a.adapter_out.empty()) {
    const auto ckpt = train::resolve_checkpoint(a.source, warn);
    train::verify_checkpoint(ckpt);
    if (!fs::exists(ckpt + "/adapter_config.json"))
      fail("{} holds no adapter (a train.mode: full run): export it with --merged", ckpt);
    const auto tmp = out + ".tmp";
    remove_tree(tmp);
    fs::create_directories(tmp);
    for (const char* name : {"adapter_model.safetensors", "adapter_config.json"})
      fs::copy_file(fs::path(ckpt) / name, fs::path(tmp) / name);
    fs::rename(tmp, out);
    const auto c = exporting::read_peft_config(out);
    fmt::print("wrote {}: PEFT LoRA adapter (r {}, alpha {}, {} target modules{}) from {}\n", out, c.r, c.alpha,
               c.target_modules.size(), c.use_rslora ? ", rsLoRA" : "", ckpt);
    return 0;
  }

  const auto options = at::TensorOptions().dtype(at::kFloat);  // the merge is computed in fp32
  auto trained = exporting::load_trained_model(a.source, a.base, options, warn);
  exporting::MergedExportOptions o;
  o.dtype = resolve_dtype(a.dtype == "auto" ? "fp32" : a.dtype, at::kCPU);
  if (a.quantize != "none" && a.quantize != "nf4") fail("--quantize must be none or nf4, got '{}'", a.quantize);
  o.quantize_nf4 = a.quantize == "nf4";
  o.max_shard_bytes = a.shard_mb << 20;
  const auto result = exporting::save_merged_model(*trained.model, out, o);
  data::copy_tokenizer_files(trained.recipe.model.tokenizer.empty() ? trained.base_dir : trained.recipe.model.tokenizer, out);
  fmt::print("wrote {}: merged model, {} tensors in {} shard(s), {} ({}{}), from {}\n", out, result.tensors,
             result.shards, format_bytes(double(result.bytes)), dtype_label(o.dtype), o.quantize_nf4 ? ", NF4 projections" : "",
             trained.checkpoint);
  if (a.no_quality_check) return 0;
  // What merging cost: the same eval data through base + adapter and through the written model.
  const auto data = quality_data(trained.recipe, trained.base_dir);
  const auto before = train::evaluate(*trained.model, data);
  auto merged = nn::load_causal_lm(out, options);
  merged->eval();
  const auto after = train::evaluate(*merged, data);
  fmt::print("quality on {} eval tokens: base + adapter loss {:.5f} (perplexity {:.4f}); merged loss {:.5f} "
             "(perplexity {:.4f}); change {:+.5f}\n",
             before.tokens, before.loss, before.perplexity, after.loss, after.perplexity, after.loss - before.loss);
  return 0;
}

}  // namespace

void add_export(CLI::App& app, Action& action) {
  auto a = std::make_shared<ExportArgs>();
  auto* cmd = app.add_subcommand("export", "Export a run's adapter (PEFT format) or a merged Hugging Face model");
  cmd->add_option("RUN_OR_CHECKPOINT", a->source, "A run directory (its newest valid checkpoint) or a checkpoint")
      ->required();
  cmd->add_option("--adapter", a->adapter_out, "Write the PEFT adapter (adapter_model.safetensors, adapter_config.json)");
  cmd->add_option("--merged", a->merged_out, "Write base + adapter merged, as a Hugging Face model directory");
  cmd->add_option("--dtype", a->dtype, "--merged weights: bf16 | fp16 | fp32")->capture_default_str();
  cmd->add_option("--quantize", a->quantize, "--merged projections: none | nf4 (bitsandbytes layout)")->capture_default_str();
  cmd->add_option("--shard-mb", a->shard_mb, "Largest safetensors shard, MiB")->capture_default_str();
  cmd->add_option("--base", a->base, "The base model directory, if it moved since training");
  cmd->add_flag("--no-quality-check", a->no_quality_check, "Skip the eval of base + adapter against the merged model");
  cmd->callback([&action, a] { action = [a] { return run_export(*a); }; });
}

}  // namespace qtune::cli
