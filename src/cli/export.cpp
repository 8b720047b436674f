// qtune export RUN_OR_CHECKPOINT --adapter OUT | --merged OUT | --gguf OUT.gguf | --gguf-adapter OUT.gguf: the trained
// adapter in PEFT's or llama.cpp's format, or the merged model as a Hugging Face directory (16-bit, fp32, NF4/FP4 again,
// int2/int4/int8 groups as a GPTQ checkpoint, W8A8 as a compressed-tensors checkpoint) or
// as a GGUF file for llama.cpp (f16 ... q4_k_m), with the quality cost of the merge printed.
#include <fmt/format.h>

#include <filesystem>
#include <map>

#include "commands.h"
#include "qtune/calib/importance.h"
#include "qtune/data/collate.h"
#include "qtune/data/tokenizer.h"
#include "qtune/export/gguf_adapter.h"
#include "qtune/export/gguf_export.h"
#include "qtune/export/gguf_type_mix.h"
#include "qtune/export/gguf_vocab.h"
#include "qtune/export/merged_model.h"
#include "qtune/export/peft_adapter.h"
#include "qtune/export/trained_model.h"
#include "qtune/io/gguf.h"
#include "qtune/io/hf_config.h"
#include "qtune/nn/model_io.h"
#include "qtune/quant/fake_quant.h"
#include "qtune/train/checkpoint.h"
#include "qtune/train/qat_plan.h"
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
  std::string source, adapter_out, merged_out, gguf_out, gguf_adapter_out, base, dtype = "bf16", quantize = "none";
  std::string gguf_type = "q8_0", adapter_type = "f32", calib;
  int64_t calib_samples = 128, calib_seq_len = 512;
  int64_t shard_mb = 2048;
  int64_t group_size = 0;  // --quantize int: 0 = the run's QAT group, else the format's default
  bool asym = false, sym = false;  // --quantize int: neither = the run's QAT zero points, else symmetric
  bool no_quality_check = false;
};

void warn(const std::string& m) { fmt::print(stderr, "warning: {}\n", m); }

// The run's recipe pointed at the base it was loaded from (--base may have moved it).
train::Recipe recipe_of(const exporting::TrainedModel& t) {
  auto r = t.recipe;
  r.model.path = t.base_dir;
  return r;
}

data::Tokenizer tokenizer_of(const exporting::TrainedModel& t) {
  return train::load_tokenizer(recipe_of(t), t.model->config());
}

// The run's eval data (or a slice of its training data), to score base + adapter and the merged model on.
data::DataLoader quality_data(const exporting::TrainedModel& t) {
  const auto r = recipe_of(t);
  const auto tok = tokenizer_of(t);
  auto data = train::load_data(r, tok);
  auto samples = data.eval.empty() ? data.train : data.eval;
  if (samples.size() > 64) samples.resize(64);
  return data::DataLoader(samples, train::loader_options(r, true), tok.pad_id().value_or(tok.eos_id()));
}

// What merging cost: the same eval data through base + adapter and through the written model.
void print_quality(const exporting::TrainedModel& t, const std::string& out, at::TensorOptions options) {
  const auto data = quality_data(t);
  const auto before = train::evaluate(*t.model, data);
  auto merged = nn::load_causal_lm(out, options);
  merged->eval();
  const auto after = train::evaluate(*merged, data);
  fmt::print("quality on {} eval tokens: base + adapter loss {:.5f} (perplexity {:.4f}); {} loss {:.5f} "
             "(perplexity {:.4f}); change {:+.5f}\n",
             before.tokens, before.loss, before.perplexity, io::is_gguf_path(out) ? "the GGUF as read back" : "merged",
             after.loss, after.perplexity, after.loss - before.loss);
}

std::string tokenizer_source(const exporting::TrainedModel& t) {
  return t.recipe.model.tokenizer.empty() ? t.base_dir : t.recipe.model.tokenizer;
}

// The format a QAT run trained for, by its name (a GGUF file type stands for its mix).
std::string qat_name(const train::Recipe& r) {
  const auto format = train::qat_format_of(r.quant, "the run's recipe");
  return format ? format->name() : r.quant.qat + " (GGUF type mix)";
}

// A base whose linears each chose a method (`qtune quantize --method auto`, qtune's own mixed checkpoint): the merge
// dequantizes all of them, so what the merged directory holds, and who loads it, is what --dtype / --quantize say.
std::string mixed_base_note(const std::string& base_dir, const std::string& out) {
  if (io::is_gguf_path(base_dir)) return "";
  const auto q = io::ModelConfig::load(base_dir).quantization_config;
  if (!q.is_object() || q.value("quant_method", std::string()) != "qtune" || !q.contains("linears")) return "";
  std::map<std::string, int64_t> n;
  for (const auto& [name, m] : q["linears"].items()) ++n[m.is_string() ? m.get<std::string>() : "?"];
  std::string counts;
  for (const auto& [m, k] : n) counts += fmt::format("{}{} {}", counts.empty() ? "" : ", ", k, m);
  return fmt::format("note: the base {} is qtune's mixed checkpoint ({}; only qtune loads it); {} holds the merge of "
                     "every linear, dequantized, in the format written above, not the base's methods: run `qtune "
                     "quantize {} --method auto --calib TEXT` to choose per-layer methods for it again",
                     base_dir, counts, out, out);
}

// How --quantize nf4|fp4 quantizes the merged projections: as the run's quantization-aware training simulated them
// when it trained for that format (the codes its last forward saw), else bitsandbytes' defaults (block 64, double
// quant). A run that trained for another format is told so.
quant::LayerQuant merged_quantization(const train::Recipe& recipe, const std::string& format) {
  quant::LayerQuant q;
  q.format = format == "fp4" ? quant::WeightFormat::FP4 : quant::WeightFormat::NF4;
  if (recipe.quant.qat == "none") return q;
  if (recipe.quant.qat == format) {
    const auto spec = *train::qat_format_of(recipe.quant, "the run's recipe");
    q.blocksize = spec.group_size;
    q.double_quant = spec.double_quant;
  } else {
    warn(fmt::format("the run trained for {} (quant.qat) but --quantize asks {}: the exported codes are not the ones "
                     "training simulated",
                     qat_name(recipe), format));
  }
  return q;
}

// How --quantize int2|int4|int8 quantizes the merged projections: with the run's own integer spec when it trained for
// that format (the codes and fp16 scales its last forward saw; --group-size and --sym/--asym may only repeat it), else
// with torchao's integer quantizer at --group-size (0: the format's default) and --asym (symmetric unless given).
quant::FakeQuantSpec merged_int_quantization(const train::Recipe& recipe, const ExportArgs& a) {
  const auto trained = train::qat_format_of(recipe.quant, "the run's recipe");
  const int64_t bits = quant::parse_fake_quant(a.quantize, a.group_size, true, "--quantize").bits;
  const bool same_format = trained && trained->kind == quant::FakeQuantKind::Int && trained->bits == bits;
  const bool symmetric = a.asym ? false : a.sym ? true : same_format ? trained->symmetric : true;
  auto asked = quant::parse_fake_quant(a.quantize, a.group_size, symmetric, "--quantize");
  if (recipe.quant.qat == "none") return asked;
  if (same_format && (a.group_size == 0 || a.group_size == trained->group_size) && symmetric == trained->symmetric)
    return *trained;
  warn(fmt::format("the run trained for {} (quant.qat) but the export asks {}: the exported codes are not the ones "
                   "training simulated",
                   qat_name(recipe), asked.name()));
  return asked;
}

// A QAT run exported as GGUF: its projections are the trained ones when --type is the file type it trained for, or
// the one block type it trained for is what --type stores them in; and only without an importance matrix, which
// changes ggml's rounding.
void check_gguf_type(const train::Recipe& recipe, const exporting::GgufFileType& type, bool calibrated) {
  if (recipe.quant.qat == "none") return;
  bool same = recipe.quant.qat == type.name;
  if (const auto spec = train::qat_format_of(recipe.quant, "the run's recipe"); !same && spec)
    same = spec->kind == quant::FakeQuantKind::Ggml && spec->ggml == type.base && !type.k_mix;
  if (!same)
    warn(fmt::format("the run trained for {} (quant.qat) but --type is {}: the exported blocks are not the ones "
                     "training simulated (train with quant.qat: {} for this file)",
                     qat_name(recipe), type.name, type.name));
  else if (calibrated)
    warn("--calib: the importance matrix changes how ggml rounds each block, so the file's projections are not the "
         "ones this quantization-aware run trained with; export without --calib to deploy exactly the trained model");
}

int export_gguf(const ExportArgs& a) {
  const auto& file_type = exporting::parse_gguf_file_type(a.gguf_type);
  if (fs::exists(a.gguf_out)) fail("'{}' exists; choose a new file name (nothing was overwritten)", a.gguf_out);
  const auto options = at::TensorOptions().dtype(at::kFloat);
  auto trained = exporting::load_trained_model(a.source, a.base, options, warn);
  check_gguf_type(trained.recipe, file_type, !a.calib.empty());
  const auto tok = tokenizer_of(trained);
  const auto vocab =
      exporting::gguf_vocab_metadata(tokenizer_source(trained), tok, trained.model->config().vocab_size, warn);
  exporting::GgufExportOptions o;
  o.type = file_type.name;
  o.name = fs::path(a.gguf_out).stem().string();
  if (!a.calib.empty()) {
    // The importance matrix comes from a second copy of the trained model whose linears record their inputs.
    calib::ImportanceCollector* collector = nullptr;
    auto observed = exporting::load_trained_model(a.source, a.base, options, warn, [&](nn::LinearFactory& inner) {
      auto c = std::make_unique<calib::ImportanceCollector>(inner);
      collector = c.get();
      return c;
    });
    const auto sequences = calib::calibration_sequences(a.calib, tok, a.calib_seq_len, a.calib_samples);
    const auto imatrix = collector->collect(*observed.model, sequences);
    o.importance = imatrix.columns;
    fmt::print("importance matrix: {} linears from {} calibration tokens ({} sequences of {}) in {}\n",
               imatrix.columns.size(), imatrix.tokens, sequences.size(), sequences.front().size(), a.calib);
  }
  const auto result = exporting::save_gguf_model(*trained.model, vocab, a.gguf_out, o);
  std::string types;
  for (const auto& [t, n] : result.tensors_by_type) types += fmt::format("{}{} {}", types.empty() ? "" : ", ", n, t);
  fmt::print("wrote {}: GGUF {} ({}), {} tensors ({}), {:.2f} bits per weight, from {}\n", a.gguf_out, file_type.name,
             format_bytes(double(result.bytes)), result.tensors, types, result.weight_bits, trained.checkpoint);
  if (!a.no_quality_check) print_quality(trained, a.gguf_out, options);
  return 0;
}

int export_gguf_adapter(const ExportArgs& a) {
  if (fs::exists(a.gguf_adapter_out))
    fail("'{}' exists; choose a new file name (nothing was overwritten)", a.gguf_adapter_out);
  auto trained = exporting::load_trained_model(a.source, a.base, at::TensorOptions().dtype(at::kFloat), warn);
  const auto result = exporting::save_gguf_adapter(*trained.model, a.gguf_adapter_out, a.adapter_type,
                                                   fs::path(a.gguf_adapter_out).stem().string());
  fmt::print("wrote {}: llama.cpp LoRA adapter ({} modules, {} tensors, {}, {}, alpha {}{}) from {}\n",
             a.gguf_adapter_out, result.modules, result.tensors, a.adapter_type, format_bytes(double(result.bytes)),
             result.alpha, result.scale_folded ? ": per-module scales folded into B" : "", trained.checkpoint);
  fmt::print("use it with the base it was trained on: llama-cli -m {} --lora {}\n", trained.base_dir, a.gguf_adapter_out);
  return 0;
}

int run_export(const ExportArgs& a) {
  const int outputs = !a.adapter_out.empty() + !a.merged_out.empty() + !a.gguf_out.empty() + !a.gguf_adapter_out.empty();
  if (outputs != 1)
    fail("qtune export: give exactly one of --adapter DIR, --merged DIR, --gguf FILE.gguf and --gguf-adapter FILE.gguf");
  if (!a.gguf_out.empty()) return export_gguf(a);
  if (!a.gguf_adapter_out.empty()) return export_gguf_adapter(a);
  const auto out = a.adapter_out.empty() ? a.merged_out : a.adapter_out;
  if (fs::exists(out)) fail("'{}' exists; choose a new directory (nothing was overwritten)", out);

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
  o.source = trained.base_dir;
  o.dtype = resolve_dtype(a.dtype == "auto" ? "fp32" : a.dtype, at::kCPU);
  const bool to_int = a.quantize == "int2" || a.quantize == "int4" || a.quantize == "int8";
  const bool to_w8a8 = a.quantize == "w8a8";
  if (a.quantize != "none" && a.quantize != "nf4" && a.quantize != "fp4" && !to_int && !to_w8a8)
    fail("--quantize must be none, nf4, fp4, int2, int4, int8 or w8a8, got '{}'", a.quantize);
  if (!to_int && (a.group_size != 0 || a.asym || a.sym))
    fail("--group-size, --sym and --asym apply to --quantize int2|int4|int8 (nf4 and fp4 take a QAT run's block or 64; "
         "w8a8 is symmetric per output channel)");
  if (a.asym && a.sym) fail("--sym and --asym exclude each other");
  if (to_int) o.quantize_int = merged_int_quantization(trained.recipe, a);
  else if (to_w8a8) o.quantize_w8a8 = true;
  else if (a.quantize != "none") o.quantize4 = merged_quantization(trained.recipe, a.quantize);
  o.max_shard_bytes = a.shard_mb << 20;
  const auto result = exporting::save_merged_model(*trained.model, out, o);
  data::copy_tokenizer_files(tokenizer_source(trained), out);
  fmt::print("wrote {}: merged model, {} tensors in {} shard(s), {} ({}{}), from {}\n", out, result.tensors,
             result.shards, format_bytes(double(result.bytes)), dtype_label(o.dtype),
             o.quantize4   ? fmt::format(", {} projections (block {}{})", a.quantize == "nf4" ? "NF4" : "FP4",
                                         o.quantize4->blocksize, o.quantize4->double_quant ? ", double quant" : "")
             : o.quantize_int ? fmt::format(", {} projections (GPTQ checkpoint, {:.3f} bits per weight)",
                                            o.quantize_int->name(), o.quantize_int->bits_per_weight())
             : o.quantize_w8a8 ? std::string(", W8A8 projections (compressed-tensors int-quantized: int8 per channel, "
                                             "int8 inputs per token at run time)")
                               : "",
             trained.checkpoint);
  const auto note = mixed_base_note(trained.base_dir, out);
  if (!note.empty()) fmt::print("{}\n", note);
  if (!a.no_quality_check) print_quality(trained, out, options);
  return 0;
}

}  // namespace

void add_export(CLI::App& app, Action& action) {
  auto a = std::make_shared<ExportArgs>();
  auto* cmd = app.add_subcommand("export", "Export a run's adapter (PEFT or GGUF) or the merged model (Hugging Face directory or GGUF)");
  cmd->add_option("RUN_OR_CHECKPOINT", a->source, "A run directory (its newest valid checkpoint) or a checkpoint")
      ->required();
  cmd->add_option("--adapter", a->adapter_out, "Write the PEFT adapter (adapter_model.safetensors, adapter_config.json)");
  cmd->add_option("--merged", a->merged_out, "Write base + adapter merged, as a Hugging Face model directory");
  cmd->add_option("--gguf", a->gguf_out, "Write base + adapter merged as one GGUF file for llama.cpp / Ollama");
  cmd->add_option("--type", a->gguf_type, "--gguf tensor types (llama-quantize's mixes): " + exporting::gguf_file_type_names())
      ->capture_default_str();
  cmd->add_option("--calib", a->calib, "--gguf: text file for an importance matrix (llama.cpp's imatrix) that guides "
                                      "the quantizers");
  cmd->add_option("--calib-samples", a->calib_samples, "--calib: at most this many sequences")->capture_default_str();
  cmd->add_option("--calib-seq-len", a->calib_seq_len, "--calib: tokens per sequence")->capture_default_str();
  cmd->add_option("--gguf-adapter", a->gguf_adapter_out, "Write the LoRA adapter as a llama.cpp GGUF adapter (--lora)");
  cmd->add_option("--adapter-type", a->adapter_type, "--gguf-adapter tensors: f32 | f16 | bf16 | q8_0")->capture_default_str();
  cmd->add_option("--dtype", a->dtype, "--merged weights: bf16 | fp16 | fp32")->capture_default_str();
  cmd->add_option("--quantize", a->quantize,
                  "--merged projections: none | nf4 | fp4 (bitsandbytes layout; a QAT run's own block and double quant) | "
                  "int2 | int4 | int8 (a GPTQ checkpoint; a QAT run's own group and zero points) | w8a8 (int8 weights "
                  "per channel and int8 inputs per token: compressed-tensors, as llm-compressor writes it for vLLM)")
      ->capture_default_str();
  cmd->add_option("--group-size", a->group_size,
                  "--quantize int*: input columns per scale, -1 for one per row (0: a QAT run's own, else 32; int8 a row)")
      ->capture_default_str();
  cmd->add_flag("--asym", a->asym, "--quantize int*: asymmetric groups (an integer zero point each; default: a QAT run's own)");
  cmd->add_flag("--sym", a->sym, "--quantize int*: symmetric groups (the default without a QAT run's own)");
  cmd->add_option("--shard-mb", a->shard_mb, "Largest safetensors shard, MiB")->capture_default_str();
  cmd->add_option("--base", a->base, "The base model (directory or .gguf), if it moved since training");
  cmd->add_flag("--no-quality-check", a->no_quality_check, "Skip the eval of base + adapter against the merged model");
  cmd->callback([&action, a] { action = [a] { return run_export(*a); }; });
}

}  // namespace qtune::cli
