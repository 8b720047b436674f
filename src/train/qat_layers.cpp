#include "qtune/train/qat_layers.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <numeric>
#include <optional>
#include <set>

#include "qtune/calib/importance.h"
#include "qtune/io/atomic_file.h"
#include "qtune/io/json_file.h"
#include "qtune/io/model_family.h"
#include "qtune/quant/quant_plan.h"
#include "qtune/train/checkpoint.h"
#include "qtune/train/run_setup.h"
#include "qtune/util/device.h"
#include "qtune/util/error.h"
#include "qtune/util/strings.h"

namespace qtune::train {
namespace {
namespace fs = std::filesystem;

constexpr const char* kKey = "quant.qat_layers";

bool is_integer(const std::string& s) {
  size_t i = s[0] == '-' || s[0] == '+' ? 1 : 0;
  return i < s.size() && std::all_of(s.begin() + static_cast<ptrdiff_t>(i), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The model's files that decide its weights: a .gguf, or a directory's config.json and safetensors. Every byte is
// read: a file rewritten in place may keep its size and mtime.
std::string model_files_hash(const std::string& path) {
  if (!fs::is_directory(path)) return file_hash(path);
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(path)) {
    const auto name = e.path().filename().string();
    if (e.is_regular_file() && (name == "config.json" || ends_with(name, ".safetensors"))) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  std::string listing;
  for (const auto& f : files) listing += f.filename().string() + " " + file_hash(f.string()) + "\n";
  return text_hash(listing);
}

std::string windows_hash(const std::vector<std::vector<int64_t>>& windows) {
  std::string text;
  for (const auto& w : windows) text += fmt::format("{}\n", fmt::join(w, " "));
  return text_hash(text);
}

nlohmann::json scan_json(const calib::FormatScan& scan, const std::string& settings) {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : scan.layers)
    layers.push_back({{"name", l.name}, {"format", l.format}, {"loss_increase", l.loss_increase}});
  return {{"settings", settings}, {"dense_loss", scan.dense_loss}, {"tokens", scan.tokens}, {"layers", layers}};
}

// The cached ranking when it is the one `settings` and `linears` ask for (doubles round-trip exactly through JSON, so
// a resumed run ranks exactly as the run it continues).
std::optional<calib::FormatScan> read_cached(const std::string& path, const std::string& settings,
                                             const std::vector<std::string>& linears) {
  if (!fs::exists(path)) return std::nullopt;
  try {
    const auto j = io::read_json_file(path);
    if (j.at("settings").get<std::string>() != settings) return std::nullopt;
    calib::FormatScan scan;
    scan.dense_loss = j.at("dense_loss").get<double>();
    scan.tokens = j.at("tokens").get<int64_t>();
    for (const auto& l : j.at("layers"))
      scan.layers.push_back({l.at("name").get<std::string>(), l.at("format").get<std::string>(),
                             l.at("loss_increase").get<double>()});
    std::vector<std::string> names;
    for (const auto& l : scan.layers) names.push_back(l.name);
    if (names != linears) return std::nullopt;
    return scan;
  } catch (const std::exception&) {
    return std::nullopt;  // a damaged cache is measured again
  }
}

std::vector<size_t> worst_first(const calib::FormatScan& ranking) {
  std::vector<size_t> order(ranking.layers.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return ranking.layers[a].loss_increase > ranking.layers[b].loss_increase;
  });
  return order;
}

void say(std::FILE* out, const std::string& s) {
  if (out) fmt::print(out, "{}\n", s), std::fflush(out);
}

}  // namespace

std::string QatLayers::describe() const {
  switch (rule) {
    case QatLayerRule::All: return "all";
    case QatLayerRule::Auto: return fmt::format("auto: the worst holding {:.0f}% of the loss increase", 100 * kAutoShare);
    case QatLayerRule::Count: return fmt::format("the {} worst", count);
    case QatLayerRule::Patterns: return patterns.size() == 1 ? "1 pattern" : fmt::format("{} patterns", patterns.size());
  }
  return "";
}

QatLayers parse_qat_layers(const QuantSection& q, const std::string& where) {
  const auto& v = q.qat_layers;
  const auto shown = fmt::format("[{}]", fmt::join(v, ", "));
  auto expected = [&](const std::string& got) {
    fail("{}: '{}' must be all, auto, a positive number of linears or a list of module globs, got {}", where, kKey, got);
  };
  if (v.empty()) expected("an empty list");
  QatLayers out;
  const bool alone = v.size() == 1;
  for (const auto& p : v) {
    if (p.empty()) expected("an empty pattern");
    if (!alone && (p == "all" || p == "auto" || is_integer(p)))
      fail("{}: '{}' = {}: {} stands alone, not in a list of module globs", where, kKey, shown, p);
  }
  if (alone && v[0] == "all") return out;
  if (alone && v[0] == "auto") {
    out.rule = QatLayerRule::Auto;
  } else if (alone && is_integer(v[0])) {
    out.rule = QatLayerRule::Count;
    try {
      out.count = std::stoll(v[0]);
    } catch (const std::exception&) {
      expected("'" + v[0] + "'");
    }
    if (out.count <= 0) expected("'" + v[0] + "'");
  } else {
    out.rule = QatLayerRule::Patterns;
    out.patterns = v;
  }
  if (q.qat == "none" && q.qat_activations == "none")
    fail("{}: '{}' = {} chooses among the linears quant.qat fake-quantizes, but quant.qat is none", where, kKey, shown);
  if (out.needs_ranking() && q.qat == "none")
    fail("{}: '{}' = {} ranks the linears by the loss their deployed weight format causes, but quant.qat is none "
         "(quant.qat_activations alone quantizes no weight to scan): name the linears by module globs instead",
         where, kKey, shown);
  return out;
}

std::vector<std::vector<int64_t>> qat_scan_windows(const Recipe& r, const data::Tokenizer& tok) {
  const auto& q = r.quant;
  const int64_t len = std::min(q.calib_seq_len, q.scan_tokens);
  const int64_t count = std::max<int64_t>(1, q.scan_tokens / len);
  if (!q.calib.empty()) {
    try {
      return calib::calibration_sequences(q.calib, tok, len, count);
    } catch (const Error& e) {
      fail("{}: quant.calib (for {}) {}", r.source, kKey, e.what());
    }
  }
  // The training samples one after another, as packing lays them out, cut into windows.
  const auto data = load_data(r, tok);
  std::vector<int64_t> stream;
  for (const auto& s : data.train) {
    if (static_cast<int64_t>(stream.size()) >= len * count) break;
    stream.insert(stream.end(), s.input_ids.begin(), s.input_ids.end());
  }
  std::vector<std::vector<int64_t>> windows;
  for (size_t start = 0; start < stream.size() && static_cast<int64_t>(windows.size()) < count;
       start += static_cast<size_t>(len))
    windows.emplace_back(stream.begin() + static_cast<ptrdiff_t>(start),
                         stream.begin() + static_cast<ptrdiff_t>(std::min(stream.size(), start + static_cast<size_t>(len))));
  if (windows.size() > 1 && windows.back().size() < static_cast<size_t>(len)) windows.pop_back();
  return windows;
}

std::vector<std::string> qat_linears(const io::ModelConfig& config, const RunQat& qat) {
  std::vector<std::string> out;
  if (!qat.plan) return out;
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer)
    for (const auto& l : io::layer_linears(config)) {
      auto name = fmt::format("model.layers.{}.{}", layer, l.name);
      if (qat.plan(name).active()) out.push_back(std::move(name));
    }
  return out;
}

calib::FormatScan qat_ranking(const Recipe& r, const io::ModelConfig& config, const RunQat& qat, at::Device device,
                              std::FILE* out) {
  const auto linears = qat_linears(config, qat);
  std::string formats;
  for (const auto& name : linears) {
    const auto spec = qat.plan(name).weights;
    if (!spec) fail("{}: {}: {} has no deployed weight format to rank it by", r.source, kKey, name);
    formats += name + " " + spec->name() + "\n";
  }
  const auto tok = load_tokenizer(r, config);
  const auto windows = qat_scan_windows(r, tok);
  int64_t tokens = 0;
  for (const auto& w : windows) tokens += static_cast<int64_t>(w.size());
  const auto settings = fmt::format("format sensitivity v1; formats {}; windows {}; model {}", text_hash(formats),
                                    windows_hash(windows), model_files_hash(r.model.path));
  const auto path = (fs::path(r.train.output_dir) / fmt::format("qat-scan-{}.json", text_hash(settings).substr(0, 8))).string();
  if (auto cached = read_cached(path, settings, linears)) {
    say(out, fmt::format("qat layers: reusing the ranking of {} linears in {}", linears.size(), path));
    return *cached;
  }
  say(out, fmt::format("qat layers: ranking {} linears by the loss their deployed format adds, on {} windows ({} tokens) "
                       "of {}",
                       linears.size(), windows.size(), tokens, r.quant.calib.empty() ? r.data.train : r.quant.calib));
  int64_t last = -1;
  auto progress = [&](const calib::FormatLoss& l, int64_t i, int64_t n, double seconds) {
    const int64_t tenth = 10 * i / n;  // one line per tenth: a real model's scan runs for minutes
    if (tenth != last) say(out, fmt::format("  [{:>3}/{}] {} {} {:+.5f} ({:.0f}s)", i, n, l.name, l.format, l.loss_increase, seconds)), last = tenth;
  };
  auto format_of = [&](const std::string& name) { return qat.plan(name).weights; };
  const auto start = std::chrono::steady_clock::now();
  const auto scan = calib::format_sensitivity_scan(r.model.path, windows, format_of, device, progress);
  fs::create_directories(r.train.output_dir);
  io::write_text_atomically(path, scan_json(scan, settings).dump(1) + "\n");
  say(out, fmt::format("qat layers: ranked in {:.1f}s (dense calibration loss {:.5f}), written to {}",
                       std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), scan.dense_loss,
                       path));
  return scan;
}

std::string rank_qat_layers(const Recipe& r, std::FILE* out) {
  const auto config = io::ModelConfig::load(r.model.path);
  qat_ranking(r, config, qat_plan_of(r, config), resolve_device(r.device, device_key(r)), out);
  return r.train.output_dir;
}

std::vector<std::string> choose_qat_layers(const QatLayers& rule, const std::vector<std::string>& linears,
                                           const calib::FormatScan* ranking, const std::string& where) {
  if (rule.rule == QatLayerRule::All) return linears;
  std::set<std::string> chosen;
  if (rule.rule == QatLayerRule::Patterns) {
    for (const auto& p : rule.patterns) {
      bool matched = false;
      for (const auto& name : linears)
        if (quant::glob_match(p, name)) chosen.insert(name), matched = true;
      if (!matched)
        fail("{}: '{}' pattern '{}' matches none of the {} linears quant.qat fake-quantizes (named like {}, with or "
             "without \"model.\")",
             where, kKey, p, linears.size(), linears.empty() ? std::string("model.layers.0.mlp.down_proj") : linears.front());
    }
  } else {
    if (!ranking) fail("{}: '{}' ranks linears, but no ranking was measured", where, kKey);
    std::vector<std::string> ranked;
    for (const auto& l : ranking->layers) ranked.push_back(l.name);
    if (ranked != linears) fail("{}: '{}': the ranking covers other linears than quant.qat fake-quantizes", where, kKey);
    const auto order = worst_first(*ranking);
    if (rule.rule == QatLayerRule::Count) {
      if (rule.count > static_cast<int64_t>(linears.size()))
        fail("{}: '{}' = {} asks for more linears than quant.qat fake-quantizes in this model ({})", where, kKey,
             rule.count, linears.size());
      for (int64_t i = 0; i < rule.count; ++i) chosen.insert(linears[order[static_cast<size_t>(i)]]);
    } else {
      double total = 0;
      for (const auto& l : ranking->layers) total += std::max(0.0, l.loss_increase);
      double held = 0;
      for (size_t i : order) {
        if (!chosen.empty() && held >= kAutoShare * total) break;
        chosen.insert(linears[i]);
        held += std::max(0.0, ranking->layers[i].loss_increase);
      }
    }
  }
  std::vector<std::string> out;
  for (const auto& name : linears)
    if (chosen.count(name)) out.push_back(name);
  return out;
}

RunQat restrict_qat(RunQat qat, const std::vector<std::string>& chosen, const std::string& rule) {
  if (!qat.plan) return qat;
  std::set<std::string> keep(chosen.begin(), chosen.end());
  qat.plan = [inner = std::move(qat.plan), keep = std::move(keep)](const std::string& name) {
    return keep.count(name) ? inner(name) : qat::QatOptions{};
  };
  qat.summary += fmt::format(", in {} linears (quant.qat_layers {})", chosen.size(), rule);
  return qat;
}

RunQat apply_qat_layers(Recipe& recipe, const io::ModelConfig& config, RunQat qat, at::Device device, std::FILE* out) {
  const auto rule = parse_qat_layers(recipe.quant, recipe.source);
  if (rule.rule == QatLayerRule::All || !qat.plan) return qat;
  const auto linears = qat_linears(config, qat);
  std::optional<calib::FormatScan> ranking;
  if (rule.needs_ranking()) ranking = qat_ranking(recipe, config, qat, device, out);
  const auto chosen = choose_qat_layers(rule, linears, ranking ? &*ranking : nullptr, recipe.source);
  std::string listing;
  double held = 0, total = 0;
  for (const auto& name : chosen) {
    listing += (listing.empty() ? "" : ", ") + name;
    if (!ranking) continue;
    for (const auto& l : ranking->layers)
      if (l.name == name) listing += fmt::format(" ({:+.4f})", l.loss_increase), held += std::max(0.0, l.loss_increase);
  }
  if (ranking)
    for (const auto& l : ranking->layers) total += std::max(0.0, l.loss_increase);
  say(out, fmt::format("qat layers ({}): {} of {} linears fake-quantized{}, the others train without fake quantization: {}",
                       rule.describe(), chosen.size(), linears.size(),
                       ranking ? fmt::format(", {:.1f}% of the summed loss increase", total > 0 ? 100 * held / total : 0.0)
                               : std::string(),
                       listing));
  recipe.quant.qat_layers = chosen;
  return restrict_qat(std::move(qat), chosen, rule.describe());
}

}  // namespace qtune::train
