#pragma once
// The run's metrics as JSON lines (<run_dir>/metrics.jsonl), one object per logged step:
//   {"kind":"train","step":10,"loss":2.31,"lr":0.0002,"grad_norm":0.9,"tokens_per_s":5120,"elapsed_s":12.5,"mem_bytes":1.2e9}
//   {"kind":"eval","step":100,"loss":2.05,"perplexity":7.77}
// Each line is appended and flushed as training goes, so a crash loses at most the line being written, and any
// tool (jq, pandas.read_json(lines=True), tail -f) can read the file while the run is live.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace qtune::train {

struct MetricRecord {
  std::string kind;  // "train" or "eval" (other kinds are kept as they are)
  int64_t step = 0;
  // In file order. Non-finite values are written as null (JSON has no NaN) and read back as NaN.
  std::vector<std::pair<std::string, double>> values;

  // The value named `key`; nullopt when the record has none.
  std::optional<double> value(const std::string& key) const;
};

// One record as its JSON line (no trailing newline), and back; `where` ("file:line") prefixes parse errors.
std::string to_json_line(const MetricRecord& record);
MetricRecord parse_json_line(const std::string& line, const std::string& where);

class MetricsLog {
 public:
  // Opens `path` for appending, creating it (and its directory) if needed, so a resumed run continues the file.
  // truncate_after_step: a resumed run rewinds to its checkpoint's step and redoes the steps after it, so records
  // with step > N are dropped first (the file is rewritten atomically); otherwise the redone steps would appear twice.
  // A last line cut short by a crash (no newline, not valid JSON) is dropped with a warning rather than failing.
  explicit MetricsLog(std::string path, std::optional<int64_t> truncate_after_step = std::nullopt);

  // Writes one line and flushes it. Throws if `record` has no kind, or a value named "kind"/"step" or named twice.
  void append(const MetricRecord& record);

  // Every record of a metrics file; errors name file:line and what was expected.
  static std::vector<MetricRecord> read(const std::string& path);

  // Everything in the file so far: what was there when it was opened (after truncation) plus what was appended.
  const std::vector<MetricRecord>& records() const { return records_; }
  const std::string& path() const { return path_; }

 private:
  struct FileCloser {
    void operator()(std::FILE* f) const;
  };
  std::string path_;
  std::unique_ptr<std::FILE, FileCloser> file_;
  std::vector<MetricRecord> records_;
};

}  // namespace qtune::train
