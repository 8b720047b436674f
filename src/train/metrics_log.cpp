#include "qtune/train/metrics_log.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "qtune/io/atomic_file.h"
#include "qtune/util/error.h"

namespace qtune::train {
namespace {

// ordered_json keeps "kind" and "step" first and the values in the order the trainer logged them.
using Json = nlohmann::ordered_json;

const char* json_type_name(const Json& j) { return j.type_name(); }

void check_writable(const MetricRecord& r) {
  if (r.kind.empty()) fail("metrics record at step {}: kind is empty (expected \"train\" or \"eval\")", r.step);
  for (size_t i = 0; i < r.values.size(); ++i) {
    const auto& key = r.values[i].first;
    if (key.empty() || key == "kind" || key == "step")
      fail("metrics record \"{}\" at step {}: value name \"{}\" is reserved or empty", r.kind, r.step, key);
    for (size_t k = 0; k < i; ++k)
      if (r.values[k].first == key)
        fail("metrics record \"{}\" at step {}: value \"{}\" is given twice", r.kind, r.step, key);
  }
}

std::string read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open metrics log: {}", path, std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("{}: cannot read metrics log", path);
  return text.str();
}

struct ParsedFile {
  std::vector<MetricRecord> records;
  bool torn_tail = false;  // the last line had no newline and did not parse: a write a crash cut short
};

ParsedFile parse_file(const std::string& text, const std::string& path) {
  ParsedFile parsed;
  size_t begin = 0;
  for (int64_t line_no = 1; begin < text.size(); ++line_no) {
    size_t end = text.find('\n', begin);
    const bool terminated = end != std::string::npos;
    if (!terminated) end = text.size();
    std::string line = text.substr(begin, end - begin);
    begin = end + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", path, line_no);
    if (!terminated) {
      try {
        parsed.records.push_back(parse_json_line(line, where));
      } catch (const Error& e) {
        spdlog::warn("{} (the last line, cut short by a crash while writing?): ignored", e.what());
        parsed.torn_tail = true;
      }
      break;
    }
    parsed.records.push_back(parse_json_line(line, where));
  }
  return parsed;
}

}  // namespace

std::optional<double> MetricRecord::value(const std::string& key) const {
  for (const auto& [name, v] : values)
    if (name == key) return v;
  return std::nullopt;
}

std::string to_json_line(const MetricRecord& record) {
  Json j;
  j["kind"] = record.kind;
  j["step"] = record.step;
  for (const auto& [key, v] : record.values) {
    if (std::isfinite(v))
      j[key] = v;
    else
      j[key] = nullptr;  // JSON has no NaN/inf; null keeps the line valid for every reader
  }
  return j.dump();
}

MetricRecord parse_json_line(const std::string& line, const std::string& where) {
  Json j;
  try {
    j = Json::parse(line);
  } catch (const Json::parse_error& e) {
    fail("{}: not a JSON object: {}", where, e.what());
  }
  if (!j.is_object()) fail("{}: expected a JSON object {{\"kind\":...,\"step\":...}}, got {}", where, json_type_name(j));
  MetricRecord r;
  auto kind = j.find("kind");
  if (kind == j.end() || !kind->is_string() || kind->get<std::string>().empty())
    fail("{}: \"kind\" must be a non-empty string (\"train\" or \"eval\")", where);
  r.kind = kind->get<std::string>();
  auto step = j.find("step");
  if (step == j.end() || !(step->is_number_integer()))
    fail("{}: \"step\" must be an integer, got {}", where, step == j.end() ? "nothing" : json_type_name(*step));
  if (step->is_number_unsigned() && step->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
    fail("{}: \"step\" is out of range", where);
  r.step = step->get<int64_t>();
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "kind" || it.key() == "step") continue;
    if (it->is_null())
      r.values.emplace_back(it.key(), std::numeric_limits<double>::quiet_NaN());
    else if (it->is_number())
      r.values.emplace_back(it.key(), it->get<double>());
    else
      fail("{}: \"{}\" must be a number or null, got {}", where, it.key(), json_type_name(*it));
  }
  return r;
}

void MetricsLog::FileCloser::operator()(std::FILE* f) const {
  if (f) std::fclose(f);
}

MetricsLog::MetricsLog(std::string path, std::optional<int64_t> truncate_after_step) : path_(std::move(path)) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p(path_);
  if (p.has_parent_path()) {
    fs::create_directories(p.parent_path(), ec);
    if (ec) fail("{}: cannot create the metrics log's directory: {}", path_, ec.message());
  }
  if (fs::exists(p, ec)) {
    const std::string text = read_whole_file(path_);
    ParsedFile parsed = parse_file(text, path_);
    records_ = std::move(parsed.records);
    bool rewrite = parsed.torn_tail || (!text.empty() && text.back() != '\n');  // appending must start a new line
    if (truncate_after_step) {
      const size_t before = records_.size();
      records_.erase(std::remove_if(records_.begin(), records_.end(),
                                    [&](const MetricRecord& r) { return r.step > *truncate_after_step; }),
                     records_.end());
      if (records_.size() != before) {
        spdlog::info("{}: resuming at step {}: dropped {} records logged after it", path_, *truncate_after_step,
                     before - records_.size());
        rewrite = true;
      }
    }
    if (rewrite) {
      std::string kept;
      for (const auto& r : records_) kept += to_json_line(r) + "\n";
      io::write_text_atomically(path_, kept);
    }
  }
  file_.reset(std::fopen(path_.c_str(), "ab"));
  if (!file_) fail("{}: cannot open metrics log for appending: {}", path_, std::strerror(errno));
}

void MetricsLog::append(const MetricRecord& record) {
  check_writable(record);
  const std::string line = to_json_line(record) + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_.get()) != line.size() || std::fflush(file_.get()) != 0)
    fail("{}: cannot append a metrics record (disk full?): {}", path_, std::strerror(errno));
  records_.push_back(record);
  for (auto& [key, v] : records_.back().values)  // as the file will read back: inf was written as null
    if (!std::isfinite(v)) v = std::numeric_limits<double>::quiet_NaN();
}

std::vector<MetricRecord> MetricsLog::read(const std::string& path) {
  return parse_file(read_whole_file(path), path).records;
}

}  // namespace qtune::train
