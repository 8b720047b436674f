#pragma once
// What a person watching `qtune train` sees. On a terminal: one status line redrawn in place (\r) with a bar,
// step/total, loss, lr, tokens/s, memory and ETA. Anywhere else (a pipe, a CI log, nohup.out) a redrawn line
// would be one endless line of \r-separated frames, so it prints a plain line every `log_every` steps instead.
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace qtune::train {

struct ProgressInfo {
  int64_t step = 0, total_steps = 0;  // total_steps <= 0: unknown (no bar, no ETA)
  double loss = std::numeric_limits<double>::quiet_NaN(), lr = 0, tokens_per_s = 0;
  double elapsed_s = 0;               // seconds since this process started training; drives ETA and redraw rate
  int64_t mem_bytes = 0;              // <= 0: not shown (unknown, e.g. on CPU)
  std::optional<double> grad_norm;
  // An objective's own figures (DPO's "rewards/accuracies", "rewards/margins"), shown after the loss.
  std::vector<std::pair<std::string, double>> metrics;
};

class Progress {
 public:
  // is_terminal: usually stdout_is_terminal(); tests pass either. log_every (>= 1) only matters off a terminal.
  Progress(std::FILE* out, bool is_terminal, int64_t log_every);
  ~Progress();  // finish(): an exception unwinding the trainer must not leave the cursor on the bar's line
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Call every step. Terminal: redraws at most ~10 times per second of elapsed_s (and always on the first and
  // last step), so fast steps are not slowed by the terminal. Otherwise: a line when step % log_every == 0, and
  // one for the last step (step == total_steps) so the log always ends with the final numbers.
  void update(const ProgressInfo& p);
  // A line (an eval result, a checkpoint notice) printed above the bar: clears the bar, prints, redraws it.
  void message(const std::string& line);
  // Terminal: draws the latest state (it may have been throttled) and ends the line. Safe to call twice.
  void finish();

  // Columns available for the bar's line; by default the terminal's width, re-read on every redraw.
  void set_terminal_width(int columns) { width_override_ = columns; }

  // The text of the terminal status line (no \r) and of a plain log line (no newline) for `p`.
  std::string status_line(const ProgressInfo& p, int columns) const;
  std::string log_line(const ProgressInfo& p) const;

  static bool stdout_is_terminal();              // a tty that is not TERM=dumb
  static std::string format_duration(double seconds);  // "1:02:03", "4:05"; "--:--" when unknown
  static std::string format_bytes(int64_t bytes);      // "3.40 GiB"
  static std::string format_rate(double per_second);   // "512", "5.1k", "1.20M"

 private:
  std::optional<double> eta_s(const ProgressInfo& p) const;
  int columns() const;
  void draw(const ProgressInfo& p);

  std::FILE* out_;
  bool terminal_;
  int64_t log_every_;
  std::optional<int> width_override_;
  std::optional<ProgressInfo> last_;              // latest update, redrawn after message() and by finish()
  std::optional<std::pair<int64_t, double>> start_;  // (step, elapsed_s) of the first update: the ETA's baseline
  double last_draw_s_ = -std::numeric_limits<double>::infinity();
  int64_t last_logged_step_ = std::numeric_limits<int64_t>::min();
  bool bar_shown_ = false;  // the cursor is on a bar line that has not been ended with a newline
};

}  // namespace qtune::train
