// qtune quantize MODEL_DIR --out DIR: a 4-bit (or mixed) checkpoint in bitsandbytes' layout, loadable by
// qtune and by transformers + bitsandbytes; with --method gptq|rtn, a Hugging Face GPTQ checkpoint (calibrated on
// --calib text for gptq), loadable by qtune and by transformers + gptqmodel; with --method awq, a Hugging Face AWQ
// (GEMM) checkpoint calibrated on --calib, loadable by both likewise; with --method smoothquant, the model smoothed
// for W8A8 (SmoothQuant's scales folded into its norms and linears, calibrated on --calib) and written as a
// compressed-tensors W8A8 checkpoint (vLLM, SGLang, transformers; `--quant w8a8` bases), or dense with
// --smooth-only, with smoothquant.json, the record of the smoothing; with --method smoothquant+gptq, GPTQ's int8
// per-channel checkpoint of the smoothed model; with --method auto, a method per linear chosen by the calibration
// loss per bit within --budget-bits (a GPTQ or bitsandbytes checkpoint when one holds them, else qtune's own).
#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>

#include "commands.h"
#include "qtune/calib/importance.h"
#include "qtune/calib/layerwise_awq.h"
#include "qtune/calib/layerwise_gptq.h"
#include "qtune/calib/method_checkpoint.h"
#include "qtune/calib/method_choice.h"
#include "qtune/calib/method_scan.h"
#include "qtune/calib/rtn_comparison.h"
#include "qtune/calib/smoothquant.h"
#include "qtune/data/text_file.h"
#include "qtune/data/tokenizer.h"
#include "qtune/export/w8a8_from_gptq.h"
#include "qtune/io/atomic_file.h"
#include "qtune/io/gguf.h"
#include "qtune/io/model_weights.h"
#include "qtune/io/sharded_checkpoint.h"
#include "qtune/calib/sensitivity.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quant_linear_factory.h"
#include "qtune/util/device.h"
#include "qtune/util/error.h"
#include "qtune/util/remove_tree.h"

namespace qtune::cli {
namespace {
namespace fs = std::filesystem;

struct QuantizeArgs {
  std::string model_dir, out_dir, format = "nf4", plan_file, dtype = "auto";
  bool no_double_quant = false;
  int64_t block_size = 64;
  std::vector<std::string> keep_int8, keep_16bit;
  // --plan auto
  std::string calib_file, plan_out, high = "int8";
  double budget_bits = 4.5;
  int64_t calib_tokens = 4096, calib_seq_len = 0;
  std::string stored_low;  // what the plan's table names the low linears when they are not written as --format
  // --method auto
  std::string methods;
  bool score_on_fit = false;
  // --method gptq | rtn
  std::string method, checkpoint_format = "auto";
  int bits = 4;
  int64_t group_size = 128, calib_samples = 128;
  bool asym = false, act_order = false, static_groups = false, no_true_sequential = false;
  double damp = 0.01;
  // --method awq
  int64_t awq_search_samples = 16;
  bool no_clip = false;
  // --method smoothquant
  std::string alpha = "0.5";
  bool smooth_down = false, smooth_only = false;
  std::vector<std::string> smooth;
  int64_t alpha_search_samples = 16;
};

// One progress line per linear: rewritten in place on a terminal, one line each in a log.
void print_progress(const std::string& line) {
  static const bool tty = isatty(fileno(stdout)) != 0;
  fmt::print(tty ? "\r{}\x1b[K" : "{}\n", line);
  std::fflush(stdout);
}
void end_progress() {
  if (isatty(fileno(stdout)) != 0) fmt::print("\n");
}

// --plan auto: the sensitivity scan on the calibration text, printed as a table and written as YAML.
quant::QuantPlan auto_plan(const QuantizeArgs& a, const calib::SensitivityOptions& base = {}) {
  if (a.calib_file.empty()) fail("--plan auto needs --calib FILE (text the model is meant for)");
  const auto config = io::ModelConfig::load(a.model_dir);
  const auto tokenizer = data::Tokenizer::load(a.model_dir, &config);
  const auto ids = tokenizer.encode(data::read_text_file(a.calib_file, "--calib"));
  std::vector<std::vector<int64_t>> windows;
  const auto seq_len = static_cast<size_t>(a.calib_seq_len > 0 ? a.calib_seq_len : 256);
  for (size_t i = 0; i + 1 < ids.size() && static_cast<int64_t>(i) < a.calib_tokens; i += seq_len)
    windows.emplace_back(ids.begin() + i, ids.begin() + std::min(ids.size(), i + seq_len));
  calib::SensitivityOptions o = base;
  o.low = {quant::parse_weight_format(a.format, "--format"), a.block_size, !a.no_double_quant};
  o.high = quant::parse_weight_format(a.high, "--high");
  o.budget_bits = a.budget_bits;
  o.seq_len = static_cast<int64_t>(seq_len);
  o.progress = [](const calib::LayerSensitivity& l, int64_t i, int64_t n, double seconds) {
    print_progress(fmt::format("sensitivity [{:>3}/{}] {:<40} loss {:+.6f} {:.0f}s", i, n, l.name, l.loss_increase,
                               seconds));
  };
  const auto r = calib::sensitivity_scan(a.model_dir, windows, o);
  end_progress();
  fmt::print("calibration: {} windows of up to {} tokens from {}; dense loss {:.5f}\n", windows.size(), seq_len,
             a.calib_file, r.dense_loss);
  fmt::print("{:<40} {:>10} {:>14} {:>8}  {}\n", "linear", "params", "loss increase", "bits", "kept");
  for (const auto& l : r.layers)
    fmt::print("{:<40} {:>10} {:>+14.6f} {:>8.3f}  {}\n", l.name, l.parameters, l.loss_increase,
               l.kept_high ? l.high_bits : l.low_bits, l.kept_high ? a.high : a.stored_low.empty() ? a.format : a.stored_low);
  fmt::print("plan: {} of {} linears in {}, {:.3f} bits per weight (budget {}); calibration loss dense {:.5f}, "
             "all {} {:.5f}, plan {:.5f}\n",
             r.plan.rules.size(), r.layers.size(), a.high, r.average_bits, a.budget_bits, r.dense_loss, a.format,
             r.all_low_loss, r.planned_loss);
  const std::string plan_path = a.plan_out.empty() ? (fs::path(a.out_dir) / "quant_plan.yaml").string() : a.plan_out;
  fs::create_directories(fs::path(plan_path).parent_path().empty() ? "." : fs::path(plan_path).parent_path());
  io::write_text_atomically(plan_path, r.plan.to_yaml());
  fmt::print("wrote the plan to {}\n", plan_path);
  return r.plan;
}

// --keep-16bit and --keep-int8 as plan rules.
quant::QuantPlan keep_rules(const QuantizeArgs& a) {
  quant::QuantPlan plan;
  for (const auto& p : a.keep_16bit) plan.rules.push_back({p, quant::WeightFormat::Dense});
  for (const auto& p : a.keep_int8) plan.rules.push_back({p, quant::WeightFormat::Int8});
  return plan;
}

quant::QuantPlan plan_of(const QuantizeArgs& a, const calib::SensitivityOptions& scan = {}) {
  quant::QuantPlan plan;
  if (a.plan_file == "auto") {
    plan = auto_plan(a, scan);
  } else if (!a.plan_file.empty()) {
    plan = quant::QuantPlan::load_yaml(a.plan_file);
  } else {
    plan.base.format = quant::parse_weight_format(a.format, "--format");
    plan.base.blocksize = a.block_size;
    plan.base.double_quant = !a.no_double_quant;
  }
  const auto kept = keep_rules(a);
  plan.rules.insert(plan.rules.end(), kept.rules.begin(), kept.rules.end());
  plan.validate("--plan / --block-size");
  if (plan.uses(quant::WeightFormat::Keep))
    fail("--format / --plan: keep has nothing to write in bitsandbytes' layout (it trains on a GGUF's own blocks: "
         "quant.format keep in a recipe, or --quant keep for generate and eval)");
  return plan;
}

// The checkpoint's own dtype for the layers kept dense (embeddings, norms, lm_head) unless --dtype says otherwise.
at::ScalarType output_dtype(const std::string& flag, const io::ModelConfig& config) {
  if (flag != "auto") return resolve_dtype(flag, at::kCPU);
  if (config.torch_dtype == "bfloat16") return at::kBFloat16;
  if (config.torch_dtype == "float16") return at::kHalf;
  return at::kFloat;
}

// --calib-samples sequences of --calib-seq-len tokens (512 by default) of the --calib text.
std::vector<std::vector<int64_t>> calibration_of(const QuantizeArgs& a, const io::ModelConfig& config) {
  if (a.calib_file.empty())
    fail("--method {} needs --calib FILE (text like what the model will see)", a.method);
  const int64_t seq_len = a.calib_seq_len > 0 ? a.calib_seq_len : 512;
  const auto tokenizer = data::Tokenizer::load(a.model_dir, &config);
  auto calibration = calib::calibration_sequences_exactly(a.calib_file, tokenizer, seq_len, a.calib_samples,
                                                          "--calib-samples", "--calib-seq-len");
  fmt::print("calibration: {} sequences x {} tokens from {}\n", calibration.size(), seq_len, a.calib_file);
  return calibration;
}

// --method gptq | rtn: a Hugging Face GPTQ checkpoint, a progress line per linear.
int run_gptq(const QuantizeArgs& a) {
  calib::GptqRunOptions o;
  std::string plan_moves_to;
  o.rtn = a.method == "rtn";
  o.gptq.grid = {a.bits, a.group_size, !a.asym};
  o.gptq.act_order = a.act_order;
  o.gptq.static_groups = a.static_groups;
  o.gptq.damp = a.damp;
  o.true_sequential = !a.no_true_sequential;
  if (a.checkpoint_format == "gptq") o.checkpoint_format = quant::GptqCheckpointFormat::V1;
  else if (a.checkpoint_format == "gptq_v2") o.checkpoint_format = quant::GptqCheckpointFormat::V2;
  else if (a.checkpoint_format != "auto")
    fail("--checkpoint-format {}: expected auto (gptq, or gptq_v2 for --asym), gptq (zero points stored minus one, "
         "what the hub holds) or gptq_v2", a.checkpoint_format);
  if (a.asym && o.checkpoint_format == quant::GptqCheckpointFormat::V1)
    fmt::print(stderr, "warning: --checkpoint-format gptq with --asym: gptqmodel (and so vLLM) refuses an asymmetric gptq "
                       "(v1) checkpoint that its own writer did not stamp, and transformers ignores a mixed plan's "
                       "rules; gptq_v2, the default for --asym, loads in gptqmodel and transformers\n");
  o.gptq.grid.validate("--bits / --group-size");
  const auto config = io::ModelConfig::load(a.model_dir);
  o.dtype = a.dtype == "auto" ? at::kHalf : resolve_dtype(a.dtype, at::kCPU);
  if (a.plan_file == "auto") {
    // The shapes before the scan (minutes on a real model): with only --keep-16bit / --keep-int8 applied, a linear the
    // GPTQ layout cannot hold is refused now. (quantize_to_gptq checks again with the plan.)
    auto kept = o;
    calib::apply_mixed_plan(keep_rules(a), config, kept);
    calib::check_gptq_shapes(config, kept);
  }
  if (!a.plan_file.empty() || !a.keep_int8.empty() || !a.keep_16bit.empty()) {
    // A mixed plan (--plan auto: the sensitivity scan's): its int8 linears get the 8-bit grid, its 16-bit ones stay
    // as they are, the rest this method's grid. --plan auto writes its YAML beside the output until the output
    // exists (it must not exist before), then into it.
    QuantizeArgs scan = a;
    if (scan.plan_out.empty()) scan.plan_out = a.out_dir + ".quant_plan.yaml";
    calib::SensitivityOptions budget;  // counted in GPTQ's bits (or the dtype's, --high 16bit), not the scanned ones
    budget.bits_of = calib::gptq_plan_bits(o.gptq.grid, quant::parse_weight_format(a.high, "--high"), o.dtype);
    scan.stored_low = fmt::format("gptq-int{}", a.bits);  // the scan measures --format (nf4) as its proxy
    const auto plan = plan_of(scan, budget);
    if (a.plan_out.empty() && a.plan_file == "auto") plan_moves_to = scan.plan_out;
    const auto n = calib::apply_mixed_plan(plan, config, o);
    fmt::print("mixed plan: {} linears on the 8-bit grid, {} kept as they are, the rest int{}\n", n.eight_bit, n.kept,
               a.bits);
  }
  std::vector<std::vector<int64_t>> calibration;
  if (!o.rtn) calibration = calibration_of(a, config);
  const auto report = calib::quantize_to_gptq(
      a.model_dir, calibration, o, a.out_dir, [&](const calib::GptqLinearReport& l, int64_t i, int64_t n) {
        print_progress(l.bits == 0 ? fmt::format("[{:>3}/{}] {:<40} kept as it is", i, n, l.name)
                       : o.rtn     ? fmt::format("[{:>3}/{}] {:<40} int{} {:.2f}s", i, n, l.name, l.bits, l.seconds)
                                   : fmt::format("[{:>3}/{}] {:<40} int{} error {:.4e} (rtn {:.4e}) damp {:.4f} {:.2f}s",
                                                 i, n, l.name, l.bits, l.error, l.rtn_error, l.damp, l.seconds));
      });
  end_progress();
  if (!plan_moves_to.empty()) {  // the plan travels with the checkpoint it describes
    fs::rename(plan_moves_to, fs::path(a.out_dir) / "quant_plan.yaml");
    fmt::print("moved the plan to {}\n", (fs::path(a.out_dir) / "quant_plan.yaml").string());
  }
  if (!o.rtn) {
    const auto c = calib::compare_with_rtn(report.linears);
    fmt::print("GPTQ beat round-to-nearest on {} of {} linears; mean output error {:.4e} vs {:.4e}\n", c.better,
               c.compared, c.mean_error, c.mean_rtn_error);
  }
  fmt::print("{} int{} g{} {}: {} linears at {:.3f} bits per weight; wrote {} ({:.2f} MiB) in {:.1f}s\n",
             o.rtn ? "rtn" : "gptq", a.bits, a.group_size, a.asym ? "asym" : "sym", report.linears.size(),
             report.bits_per_weight, a.out_dir, report.bytes / 1048576.0, report.seconds);
  return 0;
}

// --method awq: a Hugging Face AWQ (GEMM) checkpoint.
int run_awq(const QuantizeArgs& a) {
  if (!a.plan_file.empty() || !a.keep_int8.empty() || !a.keep_16bit.empty())
    fail("--method awq writes every projection as 4-bit AWQ: --plan / --keep-int8 / --keep-16bit work with --method "
         "gptq (8-bit and unquantized linears in one GPTQ checkpoint)");
  calib::AwqRunOptions o;
  o.awq.grid = {a.bits, a.group_size, !a.asym};
  o.awq.clip = !a.no_clip;
  o.search_sequences = a.awq_search_samples;
  if (a.bits != 4) fail("--bits {}: --method awq writes 4-bit codes (the GEMM layout transformers and vLLM load)", a.bits);
  if (a.group_size <= 0) fail("--group-size {}: --method awq needs groups of input columns (32, 64 or 128)", a.group_size);
  const auto config = io::ModelConfig::load(a.model_dir);
  o.dtype = a.dtype == "auto" ? at::kHalf : resolve_dtype(a.dtype, at::kCPU);
  const auto calibration = calibration_of(a, config);
  const auto report = calib::quantize_to_awq(
      a.model_dir, calibration, o, a.out_dir, [&](const calib::AwqLinearReport& l, int64_t i, int64_t n) {
        print_progress(fmt::format("[{:>3}/{}] {:<40} error {:.4e} (rtn {:.4e}) {} {}{:.2f}s", i, n, l.name, l.error,
                                   l.rtn_error, l.ratio < 0 ? "unscaled" : fmt::format("alpha {:.2f}", l.ratio),
                                   l.clipped ? "clipped " : "", l.seconds));
      });
  end_progress();
  const auto c = calib::compare_with_rtn(report.linears);
  fmt::print("AWQ beat round-to-nearest on {} of {} linears; mean output error {:.4e} vs {:.4e}\n", c.better,
             c.compared, c.mean_error, c.mean_rtn_error);
  fmt::print("awq int4 g{} {}: {} linears at {:.3f} bits per weight; wrote {} ({:.2f} MiB) in {:.1f}s\n", a.group_size,
             a.asym ? "asym" : "sym", report.linears.size(), report.bits_per_weight, a.out_dir,
             report.bytes / 1048576.0, report.seconds);
  return 0;
}

// --alpha: a number in [0, 1], or auto.
void parse_alpha(const std::string& text, calib::SmoothQuantOptions& o) {
  if (text == "auto") {
    o.auto_alpha = true;
    return;
  }
  size_t used = 0;
  double v = -1;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || !(v >= 0 && v <= 1))
    fail("--alpha {}: expected a migration strength in [0, 1] (0.5 is SmoothQuant's default) or auto", text);
  o.alpha = v;
}

// --method smoothquant+gptq: GPTQ on the smoothed model, on W8A8's weight grid (int8 per output channel, symmetric),
// as llm-compressor's W8A8 recipe runs GPTQModifier after SmoothQuantModifier (each with its own calibration pass),
// written as the same compressed-tensors W8A8 checkpoint as --method smoothquant. The smoothed model is in
// OUT.smoothed and GPTQ's checkpoint goes to OUT.gptq; both are removed after.
void gptq_after_smoothing(const QuantizeArgs& a, const io::ModelConfig& config,
                          const std::vector<std::vector<int64_t>>& calibration, const std::string& smoothed) {
  calib::GptqRunOptions g;
  g.gptq.grid = {8, -1, true};
  g.gptq.damp = a.damp;
  g.gptq.act_order = a.act_order;
  g.true_sequential = !a.no_true_sequential;
  g.dtype = at::kFloat;  // only its linears are read back; the dense tensors come from the smoothed model
  const auto gptq_dir = a.out_dir + ".gptq";
  remove_tree(gptq_dir);
  try {
    const auto report = calib::quantize_to_gptq(
        smoothed, calibration, g, gptq_dir, [&](const calib::GptqLinearReport& l, int64_t i, int64_t n) {
          print_progress(fmt::format("gptq [{:>3}/{}] {:<40} int8 error {:.4e} (rtn {:.4e}) {:.2f}s", i, n, l.name,
                                     l.error, l.rtn_error, l.seconds));
        });
    end_progress();
    const auto c = calib::compare_with_rtn(report.linears);
    fmt::print("GPTQ beat round-to-nearest on {} of {} smoothed linears; mean output error {:.4e} vs {:.4e}\n",
               c.better, c.compared, c.mean_error, c.mean_rtn_error);
    const auto tmp = a.out_dir + ".tmp";
    remove_tree(tmp);
    const auto written = exporting::w8a8_from_gptq(gptq_dir, smoothed, tmp, output_dtype(a.dtype, config));
    data::copy_tokenizer_files(smoothed, tmp);
    fs::copy_file(fs::path(smoothed) / "smoothquant.json", fs::path(tmp) / "smoothquant.json");
    fs::rename(tmp, a.out_dir);
    fmt::print("w8a8 (GPTQ's int8 weights per channel, int8 inputs per token) of the smoothed model: {} linears; wrote "
               "{} ({:.2f} MiB) in {:.1f}s\n",
               report.linears.size(), a.out_dir, written.bytes / 1048576.0, report.seconds);
  } catch (...) {
    remove_tree(gptq_dir);
    remove_tree(a.out_dir + ".tmp");
    throw;
  }
  remove_tree(gptq_dir);
}

// --method smoothquant: the smoothed model (in OUT.smoothed, unrounded fp32) quantized to W8A8 by round to nearest,
// written as the compressed-tensors checkpoint vLLM serves (as `quantize --format w8a8` writes one), with
// smoothquant.json beside it.
void w8a8_after_smoothing(const QuantizeArgs& a, const io::ModelConfig& config, const std::string& smoothed) {
  const auto options = at::TensorOptions().dtype(output_dtype(a.dtype, config));
  quant::QuantPlan plan;
  plan.base.format = quant::WeightFormat::W8A8;
  nn::QuantLinearFactory factory(plan, options);
  const auto model = nn::load_causal_lm(smoothed, options, &factory);
  const auto tmp = a.out_dir + ".tmp";
  remove_tree(tmp);
  try {
    nn::save_pretrained(*model, tmp, a.model_dir);
    data::copy_tokenizer_files(smoothed, tmp);
    fs::copy_file(fs::path(smoothed) / "smoothquant.json", fs::path(tmp) / "smoothquant.json");
    fs::rename(tmp, a.out_dir);
  } catch (...) {
    remove_tree(tmp);
    throw;
  }
  fmt::print("w8a8 (int8 weights per channel, int8 inputs per token) of the smoothed model: {} linears at {:.3f} bits "
             "per weight; wrote {}\n",
             factory.layers().size(), factory.average_bits(), a.out_dir);
}

// --method smoothquant: the model smoothed, then W8A8 (compressed-tensors), or GPTQ's int8 (+gptq), or left dense
// (--smooth-only); smoothquant.json records the smoothing.
int run_smoothquant(const QuantizeArgs& a) {
  if (!a.plan_file.empty() || !a.keep_int8.empty() || !a.keep_16bit.empty())
    fail("--method smoothquant smooths every layer: --plan / --keep-int8 / --keep-16bit work with --method gptq");
  calib::SmoothQuantOptions o;
  parse_alpha(a.alpha, o);
  o.smooth_down = a.smooth_down;
  o.targets = a.smooth;
  o.search_sequences = a.alpha_search_samples;
  const auto config = io::ModelConfig::load(a.model_dir);
  const bool then_gptq = a.method == "smoothquant+gptq";
  if (then_gptq && a.smooth_only) fail("--smooth-only writes the smoothed model dense: it takes --method smoothquant");
  const bool then_w8a8 = !then_gptq && !a.smooth_only;
  // GPTQ and the W8A8 rounding read the smoothed weights unrounded.
  o.dtype = then_gptq || then_w8a8 ? at::kFloat : output_dtype(a.dtype, config);
  calib::smoothquant_mappings(config, o);  // a mapping error before the calibration text is read
  if (fs::exists(a.out_dir)) fail("--out {}: exists; choose a new directory (nothing was overwritten)", a.out_dir);
  const auto calibration = calibration_of(a, config);
  const auto smoothed = a.smooth_only ? a.out_dir : a.out_dir + ".smoothed";
  if (!a.smooth_only) remove_tree(smoothed);
  const auto report = calib::smoothquant_model(
      a.model_dir, calibration, o, smoothed, [&](const calib::SmoothLayerReport& l, int64_t i, int64_t n) {
        print_progress(fmt::format("[{:>3}/{}] model.layers.{:<3} alpha {:.2f}  W8A8 block error {:.4e} (unsmoothed "
                                   "{:.4e}) {:.2f}s",
                                   i, n, l.layer, l.alpha, l.error, l.rtn_error, l.seconds));
      });
  end_progress();
  const auto c = calib::compare_with_rtn(report.layers);
  fmt::print("SmoothQuant beat unsmoothed W8A8 on {} of {} layers; mean block error {:.4e} vs {:.4e}\n", c.better,
             c.compared, c.mean_error, c.mean_rtn_error);
  std::string alphas;
  for (const auto& l : report.layers) alphas += fmt::format("{}{:.2f}", alphas.empty() ? "" : " ", l.alpha);
  fmt::print("smoothquant alpha {} ({}){}: {} layers on {} calibration tokens; wrote {} ({:.2f} MiB) in {:.1f}s\n",
             a.alpha, alphas, o.smooth_down ? ", down_proj smoothed" : "", report.layers.size(),
             report.calibration_tokens, smoothed, report.bytes / 1048576.0, report.seconds);
  if (!a.smooth_only) {
    try {
      if (then_gptq) gptq_after_smoothing(a, config, calibration, smoothed);
      else w8a8_after_smoothing(a, config, smoothed);
    } catch (...) {
      remove_tree(smoothed);
      throw;
    }
    remove_tree(smoothed);
  }
  return 0;
}

// --method auto (or --methods LIST): every linear measured in each method on the calibration text, the methods chosen
// by loss per bit within --budget-bits, written as the plainest checkpoint that holds them (calib/method_checkpoint.h).
int run_method_auto(const QuantizeArgs& a) {
  if (!a.plan_file.empty() && a.plan_file != "auto")
    fail("--method auto makes its own plan: drop --plan {} (or write --plan auto)", a.plan_file);
  if (!a.keep_int8.empty() || !a.keep_16bit.empty())
    fail("--method auto chooses every linear's method itself: --keep-int8 / --keep-16bit work with --method gptq or "
         "the bitsandbytes layout (add 16bit or int8 to --methods and raise --budget-bits instead)");
  if (a.calib_file.empty()) fail("--method auto needs --calib FILE (text the model is meant for)");
  if (fs::exists(a.out_dir)) fail("--out {}: exists; choose a new directory (nothing was overwritten)", a.out_dir);
  calib::MethodScanOptions o;
  o.methods = calib::parse_methods(a.methods.empty() ? "nf4,int8,gptq,awq,16bit" : a.methods, "--methods");
  if (a.budget_bits < 4)
    fail("--budget-bits {}: no method stores fewer than 4 bits per weight (nf4, gptq and awq cost about 4.1-4.2)",
         a.budget_bits);
  if (a.group_size <= 0)
    fail("--group-size {}: --method auto needs groups of input columns (32, 64 or 128) for GPTQ and AWQ", a.group_size);
  o.gptq_grid = {4, a.group_size, !a.asym};
  o.gptq_grid.validate("--group-size");
  o.awq.grid = {4, a.group_size, false};
  o.damp = a.damp;
  o.nf4_blocksize = a.block_size;
  o.held_out = !a.score_on_fit;
  const auto config = io::ModelConfig::load(a.model_dir);
  const auto tokenizer = data::Tokenizer::load(a.model_dir, &config);
  const auto ids = tokenizer.encode(data::read_text_file(a.calib_file, "--calib"));
  const auto seq_len = static_cast<size_t>(a.calib_seq_len > 0 ? a.calib_seq_len : 256);
  std::vector<std::vector<int64_t>> windows;
  for (size_t i = 0; i + 1 < ids.size() && static_cast<int64_t>(i) < a.calib_tokens; i += seq_len)
    windows.emplace_back(ids.begin() + i, ids.begin() + std::min(ids.size(), i + seq_len));
  o.seq_len = static_cast<int64_t>(seq_len);
  const bool tty = isatty(fileno(stderr)) != 0;
  o.progress = [&](const calib::LinearOptions& l, int64_t i, int64_t n, double seconds) {
    fmt::print(stderr, tty ? "\rmethod scan [{:>3}/{}] {:<40} {:.0f}s\x1b[K" : "method scan [{:>3}/{}] {:<40} {:.0f}s\n", i,
               n, l.name, seconds);
    if (tty && i == n) fmt::print(stderr, "\n");
  };
  const auto t0 = std::chrono::steady_clock::now();
  calib::MethodScan scan(a.model_dir, windows, o);
  const auto choice = calib::choose_methods(scan.table(), a.budget_bits, "--budget-bits");
  const double planned = scan.loss_of(choice.chosen);
  fmt::print("calibration: {} windows of up to {} tokens from {}{}; dense loss {:.5f}\n", windows.size(), seq_len,
             a.calib_file,
             scan.scored_windows().size() < windows.size()
                 ? fmt::format(" (GPTQ and AWQ fitted on {}, every method scored on the other {})",
                               windows.size() - scan.scored_windows().size(), scan.scored_windows().size())
                 : "",
             scan.dense_loss());
  std::string header = fmt::format("{:<40} {:>9}", "linear", "params");
  for (const auto& m : o.methods) header += fmt::format(" {:>17}", m + " loss/bits");
  fmt::print("{}  chosen\n", header);
  for (size_t i = 0; i < scan.table().size(); ++i) {
    const auto& l = scan.table()[i];
    std::string row = fmt::format("{:<40} {:>9}", l.name, l.parameters);
    for (const auto& m : o.methods) {
      const auto it = std::find_if(l.options.begin(), l.options.end(), [&](const auto& x) { return x.method == m; });
      row += it == l.options.end() ? fmt::format(" {:>17}", "-") : fmt::format(" {:>+10.5f}/{:<6.3f}", it->loss, it->bits);
    }
    fmt::print("{}  {}\n", row, l.options[choice.chosen[i]].method);
  }
  const auto written = calib::write_method_checkpoint(scan, choice.chosen, {a.budget_bits, planned}, a.out_dir);
  std::string counts;
  for (const auto& [m, n] : written.linears_per_method) counts += fmt::format("{}{} {}", counts.empty() ? "" : ", ", n, m);
  fmt::print("plan: {} at {:.3f} bits per weight (budget {}); calibration loss dense {:.5f}, plan {:.5f}\n", counts,
             written.bits_per_weight, a.budget_bits, scan.dense_loss(), planned);
  for (const auto& m : {"nf4", "gptq"})
    if (const auto all = scan.uniform(m)) {
      double bits = 0, params = 0;
      for (size_t i = 0; i < all->size(); ++i) {
        bits += scan.table()[i].options[(*all)[i]].bits * static_cast<double>(scan.table()[i].parameters);
        params += static_cast<double>(scan.table()[i].parameters);
      }
      fmt::print("  all {}: {:.3f} bits per weight, calibration loss {:.5f}\n", m, bits / params, scan.loss_of(*all));
    }
  fmt::print("wrote {} ({} checkpoint, {:.2f} MiB) in {:.1f}s; loads in: {}\n", a.out_dir, written.runtimes.store,
             written.bytes / 1048576.0,
             std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), written.runtimes.line());
  return 0;
}

int run_quantize(const QuantizeArgs& a) {
  if (a.method == "auto" || !a.methods.empty()) {
    if (!a.method.empty() && a.method != "auto")
      fail("--methods chooses among methods per linear (--method auto); it does not combine with --method {}", a.method);
    return run_method_auto(a);
  }
  if (a.method == "gptq" || a.method == "rtn") return run_gptq(a);
  if (a.method == "awq") return run_awq(a);
  if (a.method == "smoothquant" || a.method == "smoothquant+gptq") return run_smoothquant(a);
  if (!a.method.empty())
    fail("--method {}: expected gptq, awq, smoothquant, smoothquant+gptq, rtn or auto (or no --method: bitsandbytes' "
         "layout by --format)",
         a.method);
  const auto t0 = std::chrono::steady_clock::now();
  if (fs::exists(fs::path(a.out_dir) / "model.safetensors"))
    fail("--out {}: already holds a model.safetensors; choose an empty directory", a.out_dir);
  const auto config = io::ModelConfig::load(a.model_dir);
  if (!config.quantization_config.is_null())
    fail("{}: is already quantized (config.json has a quantization_config); quantize its 16-bit original", a.model_dir);
  const auto dtype = output_dtype(a.dtype, config);
  const auto options = at::TensorOptions().dtype(dtype);
  nn::QuantLinearFactory factory(plan_of(a), options);
  auto checkpoint = io::open_model_weights(a.model_dir);
  nn::CausalLMImpl model(config, factory, *checkpoint, options);
  nn::save_pretrained(model, a.out_dir, a.model_dir);
  data::copy_tokenizer_files(a.model_dir, a.out_dir);

  std::map<std::string, std::pair<int64_t, int64_t>> by_format;  // format -> (layers, parameters)
  for (const auto& l : factory.layers()) {
    auto& [n, p] = by_format[l.format];
    ++n;
    p += l.parameters;
  }
  for (const auto& [format, np] : by_format)
    fmt::print("{:<6} {:>4} linears, {:>12} parameters\n", format, np.first, np.second);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto before = io::is_gguf_path(a.model_dir) ? fs::file_size(a.model_dir)
                                                     : io::ShardedCheckpoint::open(a.model_dir)->total_bytes();
  const auto after = io::ShardedCheckpoint::open(a.out_dir)->total_bytes();
  fmt::print("linear weights at {:.3f} bits per parameter; checkpoint {:.2f} MiB -> {:.2f} MiB; wrote {} in {:.2f}s\n",
             factory.average_bits(), before / 1048576.0, after / 1048576.0, a.out_dir, secs);
  return 0;
}

}  // namespace

void add_quantize(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand(
      "quantize",
      "Write a 4-bit / mixed-precision checkpoint: bitsandbytes layout, or GPTQ / AWQ / SmoothQuant calibrated (--method)");
  auto a = std::make_shared<QuantizeArgs>();
  cmd->add_option("MODEL_DIR", a->model_dir, "16-bit Hugging Face model directory")->required();
  cmd->add_option("--out,-o", a->out_dir, "Output directory")->required();
  cmd->add_option("--format", a->format,
                  "nf4 | fp4 | int8 (bitsandbytes layout) | w8a8 (compressed-tensors, round to nearest) for the decoder "
                  "projections")
      ->capture_default_str();
  cmd->add_flag("--no-double-quant", a->no_double_quant, "Keep the 4-bit absmax values in fp32");
  cmd->add_option("--block-size", a->block_size, "4-bit block size (power of two, 32..4096)")->capture_default_str();
  cmd->add_option("--plan", a->plan_file,
                  "YAML quantization plan, or 'auto': a sensitivity scan on --calib picks int8 layers within --budget-bits");
  cmd->add_option("--method", a->method,
                  "gptq | awq | smoothquant | smoothquant+gptq | rtn | auto: write a Hugging Face GPTQ or AWQ checkpoint "
                  "(calibrated on --calib; rtn: GPTQ's grid, rounded to nearest), the model smoothed and written as a "
                  "compressed-tensors W8A8 checkpoint (smoothquant; dense with --smooth-only), or its weights rounded "
                  "by GPTQ on the int8 per-channel grid first (smoothquant+gptq); auto: each linear's method (--methods) "
                  "chosen by its measured calibration loss per bit within --budget-bits");
  cmd->add_option("--methods", a->methods,
                  "--method auto: the methods each linear may get, comma-separated from nf4,int8,gptq,awq,16bit "
                  "(default all five; GPTQ/AWQ int4 on --group-size)");
  cmd->add_flag("--score-on-fit", a->score_on_fit,
               "--method auto: fit GPTQ/AWQ on every calibration window and score every method on the same windows "
               "(default: fitted on every other window, all methods scored on the rest)");
  cmd->add_option("--bits", a->bits, "GPTQ/RTN bits: 2 | 4 | 8 (AWQ: 4)")->capture_default_str();
  cmd->add_option("--group-size", a->group_size, "GPTQ/AWQ/RTN input columns per scale (-1: one per row; not AWQ)")
      ->capture_default_str();
  cmd->add_flag("--asym,!--sym", a->asym,
                "Asymmetric grid with a zero point per group (default: symmetric, --sym; AWQ is usually run --asym)");
  cmd->add_flag("--act-order", a->act_order, "GPTQ: quantize columns by descending Hessian diagonal (desc_act)");
  cmd->add_flag("--static-groups", a->static_groups, "GPTQ: fit every group's grid before any update");
  cmd->add_option("--damp", a->damp, "GPTQ dampening, a fraction of the mean Hessian diagonal")->capture_default_str();
  cmd->add_flag("--no-true-sequential", a->no_true_sequential,
                "GPTQ: record all seven linears of a layer at once (faster) instead of in four rounds");
  cmd->add_option("--checkpoint-format", a->checkpoint_format,
                  "auto (gptq, or gptq_v2 with --asym: gptqmodel loads asymmetric gptq only from its own writer) | gptq "
                  "(zero points stored minus one, as the hub's checkpoints) | gptq_v2")->capture_default_str();
  cmd->add_option("--awq-search-samples", a->awq_search_samples,
                  "AWQ: calibration sequences its scale search scores candidates on (-1: all; the means and the "
                  "clipping use all)")->capture_default_str();
  cmd->add_flag("--no-clip", a->no_clip, "AWQ: skip the clipping search");
  cmd->add_option("--alpha", a->alpha,
                  "SmoothQuant migration strength in [0, 1], or auto: per layer, the grid 0, 0.05 … 1's best W8A8 "
                  "block error")->capture_default_str();
  cmd->add_flag("--smooth-down", a->smooth_down, "SmoothQuant: also smooth down_proj's inputs into up_proj's rows");
  cmd->add_flag("--smooth-only", a->smooth_only,
                "SmoothQuant: write the smoothed model dense (and smoothquant.json) instead of its W8A8 checkpoint");
  cmd->add_option("--smooth", a->smooth,
                  "SmoothQuant: a linear whose inputs are smoothed, with the others reading the same input (default: "
                  "q/k/v and gate/up); repeatable");
  cmd->add_option("--alpha-search-samples", a->alpha_search_samples,
                  "SmoothQuant: calibration sequences the W8A8 block error (and --alpha auto) is measured on (-1: "
                  "all)")->capture_default_str();
  cmd->add_option("--calib-samples", a->calib_samples, "GPTQ/AWQ/SmoothQuant calibration sequences")->capture_default_str();
  cmd->add_option("--calib-seq-len", a->calib_seq_len,
                  "Tokens per calibration sequence (GPTQ/AWQ/SmoothQuant 512, --plan auto 256)");
  cmd->add_option("--calib", a->calib_file, "Calibration text for --method gptq|awq|smoothquant and --plan auto");
  cmd->add_option("--budget-bits", a->budget_bits, "Average bits per linear weight for --plan auto and --method auto")->capture_default_str();
  cmd->add_option("--high", a->high, "Format of the layers --plan auto keeps: int8 | 16bit")->capture_default_str();
  cmd->add_option("--calib-tokens", a->calib_tokens, "Calibration tokens used by --plan auto")->capture_default_str();
  cmd->add_option("--plan-out", a->plan_out, "Where --plan auto writes its YAML (default OUT/quant_plan.yaml)");
  cmd->add_option("--keep-int8", a->keep_int8, "Glob of modules kept in int8 (e.g. 'layers.0.*'); repeatable");
  cmd->add_option("--keep-16bit", a->keep_16bit, "Glob of modules kept unquantized (e.g. '*.down_proj'); repeatable");
  cmd->add_option("--dtype", a->dtype, "dtype of the unquantized tensors: auto (the checkpoint's) | fp32 | bf16 | fp16")
      ->capture_default_str();
  cmd->callback([&action, a] { action = [a] { return run_quantize(*a); }; });
}

}  // namespace qtune::cli
