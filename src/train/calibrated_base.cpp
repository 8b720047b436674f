#include "qtune/train/calibrated_base.h"

#include <fmt/format.h>

#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "qtune/calib/importance.h"
#include "qtune/calib/layerwise_awq.h"
#include "qtune/calib/layerwise_gptq.h"
#include "qtune/calib/method_checkpoint.h"
#include "qtune/calib/method_scan.h"
#include "qtune/calib/rtn_comparison.h"
#include "qtune/calib/sensitivity.h"
#include "qtune/data/tokenizer.h"
#include "qtune/io/gguf.h"
#include "qtune/io/hf_config.h"
#include "qtune/train/checkpoint.h"
#include "qtune/util/error.h"
#include "qtune/util/strings.h"

namespace qtune::train {
namespace {
namespace fs = std::filesystem;

bool symmetric(const QuantSection& q) { return q.symmetric == "auto" ? q.method != "awq" : q.symmetric == "true"; }

std::string settings(const QuantSection& q) {
  return fmt::format("method={} bits={} group={} sym={} act_order={} samples={} seq_len={} search={} budget={} scan={} "
                     "keep_int8=[{}] keep_16bit=[{}]",
                     q.method, q.bits, q.group_size, symmetric(q), q.act_order, q.calib_samples, q.calib_seq_len,
                     q.awq_search_samples, q.budget_bits, q.scan_tokens, fmt::join(q.keep_int8, ","),
                     fmt::join(q.keep_16bit, ",")) +
         (q.method == "auto" ? fmt::format(" methods=[{}]", fmt::join(q.methods, ",")) : "");
}

// The files of a model directory the base is made from or copies: its config, weights, tokenizer, chat template and
// generation defaults. (The other files, a README or a pytorch_model.bin beside the safetensors, change nothing.)
bool source_file(const std::string& name) {
  static const std::set<std::string> named = {"config.json",           "generation_config.json", "tokenizer.model",
                                              "tokenizer.json",        "tokenizer_config.json",  "special_tokens_map.json",
                                              "chat_template.jinja",   "model.safetensors.index.json"};
  return named.count(name) > 0 || ends_with(name, ".safetensors");
}

// A model directory's (or a single file's: a .gguf, a tokenizer.model) contents. Every byte is read: a weight file
// rewritten in place keeps its size and may keep its mtime.
std::string content_hash(const std::string& path) {
  if (!fs::is_directory(path)) return file_hash(path);
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(path))
    if (e.is_regular_file() && source_file(e.path().filename().string())) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  std::string listing;
  for (const auto& f : files) listing += f.filename().string() + " " + file_hash(f.string()) + "\n";
  return text_hash(listing);
}

// What decides the base: the settings, the source model's weights and tokenizer, the calibration text.
std::string base_hash(const Recipe& r) {
  const auto& q = r.quant;
  return text_hash(settings(q) + "\n" + fs::absolute(r.model.path).lexically_normal().string() + "\n" +
                   content_hash(r.model.path) + "\n" + (r.model.tokenizer.empty() ? "" : content_hash(r.model.tokenizer)) +
                   "\n" + (q.calib.empty() ? "" : file_hash(q.calib)))
      .substr(0, 8);
}

void say(std::FILE* out, const std::string& s) {
  if (out) fmt::print(out, "{}\n", s), std::fflush(out);
}

template <class Report>
void summarise(std::FILE* out, const char* method, const Report& report, const std::string& dir) {
  const auto c = calib::compare_with_rtn(report.linears);
  say(out, fmt::format("calibrated base: {} beat round-to-nearest on {} of {} linears (mean output error {:.4e} vs "
                       "{:.4e}); {:.3f} bits per weight; wrote {} in {:.1f}s",
                       method, c.better, c.compared, c.mean_error, c.mean_rtn_error, report.bits_per_weight, dir,
                       report.seconds));
}

// quant.method auto: the method scan on up to quant.scan_tokens of the calibration sequences, the choice within
// quant.budget_bits, the checkpoint that holds it (calib/method_checkpoint.h).
void method_choice_base(const Recipe& r, const std::vector<std::vector<int64_t>>& calibration, const std::string& dir,
                        std::FILE* out) {
  const auto& q = r.quant;
  calib::MethodScanOptions o;
  o.methods = q.methods;
  o.seq_len = std::min<int64_t>(q.calib_seq_len, q.scan_tokens);
  o.gptq_grid = {4, q.group_size, symmetric(q)};
  o.awq.grid = {4, q.group_size, false};
  std::vector<std::vector<int64_t>> windows;
  int64_t tokens = 0;
  for (const auto& s : calibration) {
    if (tokens >= q.scan_tokens) break;
    windows.emplace_back(s.begin(), s.begin() + std::min<int64_t>(o.seq_len, static_cast<int64_t>(s.size())));
    tokens += static_cast<int64_t>(windows.back().size());
  }
  say(out, fmt::format("method scan: {} on {} windows of {} tokens, budget {} bits per weight", fmt::join(q.methods, ","),
                       windows.size(), o.seq_len, q.budget_bits));
  int64_t last = -1;
  o.progress = [&](const calib::LinearOptions& l, int64_t i, int64_t n, double seconds) {
    const int64_t tenth = 10 * i / n;
    if (tenth != last) say(out, fmt::format("  [{:>3}/{}] {} ({:.0f}s)", i, n, l.name, seconds)), last = tenth;
  };
  calib::MethodScan scan(r.model.path, windows, o);
  calib::MethodChoice choice;
  try {
    choice = calib::choose_methods(scan.table(), q.budget_bits, "quant.budget_bits");
  } catch (const Error& e) {
    fail("{}: {}", r.source, e.what());
  }
  const double planned = scan.loss_of(choice.chosen);
  const auto written = calib::write_method_checkpoint(scan, choice.chosen, {q.budget_bits, planned}, dir);
  std::string counts;
  for (const auto& [m, n] : written.linears_per_method) counts += fmt::format("{}{} {}", counts.empty() ? "" : ", ", n, m);
  say(out, fmt::format("calibrated base: {} at {:.3f} bits per weight; calibration loss dense {:.5f}, plan {:.5f}; "
                       "wrote {} ({} checkpoint; loads in: {})",
                       counts, written.bits_per_weight, scan.dense_loss(), planned, dir, written.runtimes.store,
                       written.runtimes.line()));
}

}  // namespace

std::string calibrated_base(const Recipe& r, std::FILE* out) {
  const auto& q = r.quant;
  if (q.method == "none") return r.model.path;
  const auto config = io::ModelConfig::load(r.model.path);
  if (!config.quantization_config.is_null()) {
    const auto stored = config.quantization_config.value("quant_method", std::string());
    if (stored == (q.method == "awq" ? "awq" : q.method == "auto" ? "qtune" : "gptq"))
      return r.model.path;  // a calibrated base already
    fail("{}: quant.method {} quantizes a 16-bit model, but model.path '{}' is already quantized ({})", r.source,
         q.method, r.model.path, stored);
  }
  const auto dir = (fs::path(r.train.output_dir) / fmt::format("base-{}-{}", q.method, base_hash(r))).string();
  if (fs::exists(fs::path(dir) / "config.json")) {
    say(out, fmt::format("calibrated base: reusing {} ({})", dir, settings(q)));
    return dir;
  }
  fs::create_directories(r.train.output_dir);
  std::vector<std::vector<int64_t>> calibration;
  if (q.method != "rtn") {
    const auto tokenizer = data::Tokenizer::load(r.model.tokenizer.empty() ? r.model.path : r.model.tokenizer, &config);
    try {
      calibration = calib::calibration_sequences_exactly(q.calib, tokenizer, q.calib_seq_len, q.calib_samples,
                                                         "quant.calib_samples", "quant.calib_seq_len");
    } catch (const Error& e) {
      fail("{}: quant.calib {}", r.source, e.what());
    }
  }
  say(out, fmt::format("calibrated base: {} int{} g{} {} on {} sequences x {} tokens of {} -> {}", q.method, q.bits,
                       q.group_size, symmetric(q) ? "sym" : "asym", calibration.size(), q.calib_seq_len,
                       q.calib.empty() ? "(none)" : q.calib, dir));
  int64_t last = -1;
  auto progress = [&](const auto& l, int64_t i, int64_t n) {
    const int64_t tenth = 10 * i / n;  // one line per tenth of the linears: this stage runs for minutes
    if (tenth != last) say(out, fmt::format("  [{:>3}/{}] {}", i, n, l.name)), last = tenth;
  };
  if (q.method == "auto") {
    method_choice_base(r, calibration, dir, out);
  } else if (q.method == "awq") {
    calib::AwqRunOptions o;
    o.awq.grid = {static_cast<int>(q.bits), q.group_size, symmetric(q)};
    o.search_sequences = q.awq_search_samples;
    summarise(out, "AWQ", calib::quantize_to_awq(r.model.path, calibration, o, dir, progress), dir);
  } else {
    calib::GptqRunOptions o;
    o.rtn = q.method == "rtn";
    o.gptq.grid = {static_cast<int>(q.bits), q.group_size, symmetric(q)};
    o.gptq.act_order = q.act_order;
    // quant.keep_16bit / keep_int8 as qtune quantize --keep-16bit / --keep-int8 take them: before any scan's rules
    // (the first matching rule decides).
    quant::QuantPlan plan;
    for (const auto& p : q.keep_16bit) plan.rules.push_back({p, quant::WeightFormat::Dense});
    for (const auto& p : q.keep_int8) plan.rules.push_back({p, quant::WeightFormat::Int8});
    if (q.budget_bits > 0) {
      {  // the shapes before the scan: a linear the layout cannot hold is refused now, not after it
        auto kept = o;
        calib::apply_mixed_plan(plan, config, kept);
        calib::check_gptq_shapes(config, kept);
      }
      // The plan stage: each linear's calibration loss in NF4 alone (qtune's scan, a proxy for the 4-bit grid's);
      // the most harmful, per bit, go to the 8-bit grid while the average stays within the budget.
      calib::SensitivityOptions so;
      so.budget_bits = q.budget_bits;
      so.seq_len = std::min<int64_t>(q.calib_seq_len, q.scan_tokens);
      so.bits_of = calib::gptq_plan_bits(o.gptq.grid);
      std::vector<std::vector<int64_t>> windows;
      int64_t tokens = 0;
      for (const auto& s : calibration) {
        if (tokens >= q.scan_tokens) break;
        windows.emplace_back(s.begin(), s.begin() + std::min<int64_t>(so.seq_len, s.size()));
        tokens += static_cast<int64_t>(windows.back().size());
      }
      say(out, fmt::format("sensitivity scan: {} windows of {} tokens, budget {} bits per weight", windows.size(),
                           so.seq_len, q.budget_bits));
      int64_t scanned_tenth = -1;
      so.progress = [&](const calib::LayerSensitivity& l, int64_t i, int64_t n, double seconds) {
        const int64_t tenth = 10 * i / n;
        if (tenth != scanned_tenth)
          say(out, fmt::format("  [{:>3}/{}] {} loss {:+.5f} ({:.0f}s)", i, n, l.name, l.loss_increase, seconds)),
              scanned_tenth = tenth;
      };
      const auto scan = calib::sensitivity_scan(r.model.path, windows, so);
      plan.rules.insert(plan.rules.end(), scan.plan.rules.begin(), scan.plan.rules.end());
      say(out, fmt::format("plan: {} of {} linears on the 8-bit grid; calibration loss dense {:.5f}, all nf4 {:.5f}, "
                           "plan {:.5f} (nf4 / int8 as the scan measures them)",
                           scan.plan.rules.size(), scan.layers.size(), scan.dense_loss, scan.all_low_loss,
                           scan.planned_loss));
    }
    if (!plan.rules.empty()) {
      const auto n = calib::apply_mixed_plan(plan, config, o);
      if (!q.keep_16bit.empty() || !q.keep_int8.empty())
        say(out, fmt::format("mixed plan: {} linears on the 8-bit grid, {} kept as they are (quant.keep_int8 / "
                             "quant.keep_16bit{}), the rest int{}",
                             n.eight_bit, n.kept, q.budget_bits > 0 ? ", then the scan's" : "", q.bits));
    }
    const auto report = calib::quantize_to_gptq(r.model.path, calibration, o, dir, progress);
    if (o.rtn)
      say(out, fmt::format("calibrated base: rtn, {:.3f} bits per weight; wrote {} in {:.1f}s", report.bits_per_weight,
                           dir, report.seconds));
    else
      summarise(out, "GPTQ", report, dir);
  }
  return dir;
}

}  // namespace qtune::train
