#include "qtune/train/checkpoint.h"

#include <fmt/format.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "qtune/data/text_file.h"
#include "qtune/io/atomic_file.h"
#include "qtune/util/crc32.h"
#include "qtune/util/error.h"
#include "qtune/util/remove_tree.h"
#include "qtune/util/strings.h"

namespace qtune::train {
namespace {

namespace fs = std::filesystem;

const char* kManifest = "manifest.json";

std::string step_name(int64_t step) { return fmt::format("step-{:08d}", step); }

// The step of "step-00000012", or -1 for any other name.
int64_t step_of(const std::string& name) {
  if (name.size() != 13 || name.rfind("step-", 0) != 0) return -1;
  for (size_t i = 5; i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return -1;
  return std::stoll(name.substr(5));
}

// The checkpoints under `dir`, oldest first.
std::vector<std::pair<int64_t, std::string>> checkpoints_in(const fs::path& dir) {
  std::vector<std::pair<int64_t, std::string>> all;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const auto n = entry.path().filename().string();
    if (entry.is_directory() && step_of(n) >= 0) all.emplace_back(step_of(n), entry.path().string());
  }
  std::sort(all.begin(), all.end());
  return all;
}

std::string read_text(const std::string& path) { return data::read_text_file(path, "checkpoint file"); }

// The directory `latest` names under `dir` ("" when there is no such file or it names nothing usable).
std::string latest_of(const fs::path& dir) {
  const auto file = dir / "latest";
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) return "";
  const auto name = strip(read_text(file.string()), " \t\r\n");
  return step_of(name) >= 0 ? (dir / name).string() : "";
}

// An unused name under checkpoints/abandoned/ for the checkpoint `name`.
fs::path abandoned_path(const fs::path& dir, const std::string& name) {
  const auto base = dir / "abandoned";
  fs::create_directories(base);
  fs::path p = base / name;
  for (int n = 2; fs::exists(p); ++n) p = base / fmt::format("{}.{}", name, n);
  return p;
}

nlohmann::json state_json(const TrainerState& s) {
  auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
  return {{"step", s.step},
          {"epoch", s.epoch},
          {"index", s.index},
          {"tokens_seen", s.tokens_seen},
          {"skipped_steps", s.skipped_steps},
          {"first_loss", num(s.first_loss)},
          {"last_loss", num(s.last_loss)},
          {"loss_sum", num(s.loss_sum)},
          {"loss_steps", s.loss_steps},
          {"window_loss_sum", num(s.window_loss_sum)},
          {"window_steps", s.window_steps},
          {"loss_scaler", s.loss_scaler},
          {"recipe_hash", s.recipe_hash},
          {"data_hash", s.data_hash},
          {"world_size", s.world_size}};
}

TrainerState parse_state(const std::string& path) {
  TrainerState s;
  try {
    const auto j = nlohmann::json::parse(read_text(path));
    auto num = [&](const char* k) { return j.at(k).is_null() ? NAN : j.at(k).get<double>(); };
    s.step = j.at("step").get<int64_t>();
    s.epoch = j.at("epoch").get<int64_t>();
    s.index = j.at("index").get<int64_t>();
    s.tokens_seen = j.at("tokens_seen").get<int64_t>();
    s.skipped_steps = j.at("skipped_steps").get<int64_t>();
    s.first_loss = num("first_loss");
    s.last_loss = num("last_loss");
    // Older checkpoints have no sums: the run's mean then counts the steps since the resume only.
    auto sum = [&](const char* k) { return j.contains(k) && !j.at(k).is_null() ? j.at(k).get<double>() : 0.0; };
    s.loss_sum = sum("loss_sum");
    s.loss_steps = j.value("loss_steps", int64_t{0});
    s.window_loss_sum = sum("window_loss_sum");
    s.window_steps = j.value("window_steps", int64_t{0});
    s.loss_scaler = j.at("loss_scaler").get<std::vector<double>>();
    s.recipe_hash = j.at("recipe_hash").get<std::string>();
    s.data_hash = j.value("data_hash", std::string());
    s.world_size = j.value("world_size", int64_t{1});
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not a trainer state ({})", path, e.what());
  }
  return s;
}

io::NamedTensors read_tensors(const std::string& path) {
  auto file = io::SafetensorsFile::open(path);
  io::NamedTensors out;
  for (const auto& info : file->tensors()) out.emplace_back(info.name, file->tensor(info.name).clone());
  return out;
}

}  // namespace

void crash_point() {
  static std::atomic<int64_t> count{0};
  static const int64_t at = [] {
    const char* v = std::getenv("QTUNE_CRASH_AT");
    return v ? std::atoll(v) : 0;
  }();
  if (at > 0 && ++count == at) ::raise(SIGKILL);
}

namespace {

constexpr uint64_t kFnvOffset = 1469598103934665603ull, kFnvPrime = 1099511628211ull;

uint64_t fnv1a(uint64_t h, const char* data, size_t n) {
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<unsigned char>(data[i])) * kFnvPrime;
  return h;
}

}  // namespace

std::string text_hash(const std::string& text) { return fmt::format("{:016x}", fnv1a(kFnvOffset, text.data(), text.size())); }

std::string file_hash(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot read it to hash its contents", path);
  std::vector<char> buf(1 << 20);
  uint64_t h = kFnvOffset;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h = fnv1a(h, buf.data(), static_cast<size_t>(in.gcount()));
  }
  return fmt::format("{:016x}", h);
}

Checkpointer::Checkpointer(std::string run_dir, int64_t keep_last)
    : dir_((fs::path(run_dir) / "checkpoints").string()), keep_last_(std::max<int64_t>(1, keep_last)) {}

std::vector<std::string> Checkpointer::start_line(const std::string& resume_from) {
  std::vector<std::string> moved;
  if (!fs::is_directory(dir_)) return moved;
  // The line continues from resume_from when it is one of this run's checkpoints; its older checkpoints are that
  // line's past (the directory only ever holds one line). Otherwise the line starts anew.
  std::error_code ec;
  auto from = fs::path(resume_from).lexically_normal();
  if (from.filename().empty()) from = from.parent_path();  // "…/step-00000002/"
  const bool inside = !resume_from.empty() && fs::equivalent(from.parent_path(), fs::path(dir_), ec) &&
                      step_of(from.filename().string()) >= 0;
  const int64_t keep_up_to = inside ? step_of(from.filename().string()) : -1;
  for (const auto& [step, path] : checkpoints_in(dir_)) {
    if (step <= keep_up_to) continue;
    const auto to = abandoned_path(dir_, fs::path(path).filename().string());
    fs::rename(path, to);
    moved.push_back(to.string());
  }
  if (!moved.empty()) io::fsync_directory(dir_);
  const auto latest = (fs::path(dir_) / "latest").string();
  if (inside)
    io::write_text_atomically(latest, from.filename().string() + "\n");
  else
    fs::remove(latest);
  return moved;
}

std::string Checkpointer::save(const CheckpointContents& c) {
  fs::create_directories(dir_);
  const auto name = step_name(c.state.step);
  const auto final_dir = (fs::path(dir_) / name).string();
  const auto tmp = (fs::path(dir_) / ("." + name + ".tmp")).string();
  remove_tree(tmp);  // left by a process killed while saving this step before
  fs::create_directories(tmp);
  // Each writer below publishes its file atomically and fsyncs it.
  io::write_safetensors(tmp + "/trainable.safetensors", c.trainable);
  crash_point();
  io::write_safetensors(tmp + "/optimizer.safetensors", c.optimizer);
  crash_point();
  io::write_safetensors(tmp + "/rng.safetensors", c.rng);
  crash_point();
  io::write_text_atomically(tmp + "/trainer_state.json", state_json(c.state).dump(2) + "\n");
  crash_point();
  io::write_text_atomically(tmp + "/recipe.yaml", c.recipe_yaml);
  crash_point();
  if (c.write_extra) c.write_extra(tmp);
  crash_point();
  nlohmann::ordered_json manifest;
  manifest["step"] = c.state.step;
  for (const auto& entry : fs::directory_iterator(tmp)) {
    if (!entry.is_regular_file()) continue;
    const auto file = entry.path().filename().string();
    manifest["files"][file] = {{"size", static_cast<int64_t>(entry.file_size())},
                               {"crc32", crc32_of_file(entry.path().string())}};
  }
  io::write_text_atomically(tmp + "/" + kManifest, manifest.dump(2) + "\n");
  io::fsync_directory(tmp);
  crash_point();
  remove_tree(final_dir);  // a complete checkpoint of the same step (a re-run after resume) is replaced
  fs::rename(tmp, final_dir);
  io::fsync_directory(dir_);
  crash_point();
  io::write_text_atomically((fs::path(dir_) / "latest").string(), name + "\n");
  crash_point();

  // Prune only now that the new checkpoint is complete and `latest` names it: the oldest of those before it, keeping
  // keep_last in all with this one. Anything newer (there is none on a started line) is never touched.
  std::vector<std::string> older;
  for (const auto& [step, path] : checkpoints_in(dir_))
    if (step < c.state.step) older.push_back(path);
  const auto keep_older = static_cast<size_t>(keep_last_ - 1);
  for (size_t i = 0; i + keep_older < older.size(); ++i) remove_tree(older[i]);
  return final_dir;
}

void verify_checkpoint(const std::string& dir) {
  const auto path = (fs::path(dir) / kManifest).string();
  if (!fs::exists(path)) fail("checkpoint {} has no {} (an interrupted save?)", dir, kManifest);
  nlohmann::json manifest;
  try {
    manifest = nlohmann::json::parse(read_text(path));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", path, e.what());
  }
  if (!manifest.contains("files") || !manifest["files"].is_object()) fail("{}: no 'files' list", path);
  for (const auto& [file, info] : manifest["files"].items()) {
    const auto p = (fs::path(dir) / file).string();
    if (!fs::exists(p)) fail("checkpoint {}: {} is missing", dir, file);
    const auto size = static_cast<int64_t>(fs::file_size(p));
    if (size != info.at("size").get<int64_t>())
      fail("checkpoint {}: {} has {} bytes, the manifest says {} (truncated?)", dir, file, size,
           info.at("size").get<int64_t>());
    if (crc32_of_file(p) != info.at("crc32").get<uint32_t>())
      fail("checkpoint {}: {} does not match its checksum (corrupted)", dir, file);
  }
  for (const char* required : {"trainable.safetensors", "optimizer.safetensors", "rng.safetensors",
                               "trainer_state.json", "recipe.yaml"})
    if (!manifest["files"].contains(required)) fail("checkpoint {}: the manifest lists no {}", dir, required);
}

CheckpointContents load_checkpoint(const std::string& dir) {
  verify_checkpoint(dir);
  CheckpointContents c;
  c.state = parse_state(dir + "/trainer_state.json");
  c.trainable = read_tensors(dir + "/trainable.safetensors");
  c.optimizer = read_tensors(dir + "/optimizer.safetensors");
  c.rng = read_tensors(dir + "/rng.safetensors");
  c.recipe_yaml = read_text(dir + "/recipe.yaml");
  return c;
}

std::optional<std::string> find_resume_checkpoint(const std::string& run_dir,
                                                  const std::function<void(const std::string&)>& warn) {
  const auto dir = fs::path(run_dir) / "checkpoints";
  if (!fs::is_directory(dir)) return std::nullopt;
  auto all = checkpoints_in(dir);
  std::reverse(all.begin(), all.end());  // newest first
  // `latest` is the commit point of a save: a checkpoint newer than the one it names was renamed into place by a
  // save killed before it could publish it, and is not resumed (start_line moves it aside).
  const auto latest = latest_of(dir);
  if (!latest.empty()) {
    const int64_t latest_step = step_of(fs::path(latest).filename().string());
    if (!fs::is_directory(latest) && warn) warn(fmt::format("{} names {}, which is missing", (dir / "latest").string(), latest));
    while (!all.empty() && all.front().first > latest_step) {
      if (warn) warn(fmt::format("skipping checkpoint {}: newer than {} (its save did not finish)", all.front().second,
                                 (dir / "latest").string()));
      all.erase(all.begin());
    }
  }
  for (const auto& [step, path] : all) {
    try {
      verify_checkpoint(path);
      return path;
    } catch (const Error& e) {
      if (warn) warn(fmt::format("skipping checkpoint {}: {}", path, e.what()));
    }
  }
  return std::nullopt;
}

std::string resolve_checkpoint(const std::string& path, const std::function<void(const std::string&)>& warn) {
  if (fs::exists(fs::path(path) / kManifest)) return path;
  if (auto found = find_resume_checkpoint(path, warn)) return *found;
  fail("'{}' is neither a checkpoint (no {}) nor a run directory with a valid checkpoint", path, kManifest);
}

}  // namespace qtune::train
