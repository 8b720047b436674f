#include "qtune/train/progress.h"

#include <fmt/format.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "qtune/util/error.h"

namespace qtune::train {
namespace {

constexpr double kRedrawInterval_s = 0.1;  // ~10 frames a second: smooth to the eye, negligible cost
constexpr int kMinBar = 10, kMaxBar = 30;
constexpr const char* kClearToEnd = "\033[K";  // erase what a longer previous frame left on the line

// The bar in eighths of a cell, so slow runs still visibly move.
std::string bar(double fraction, int cells) {
  static const char* const kPartial[] = {"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"};
  fraction = std::clamp(std::isfinite(fraction) ? fraction : 0.0, 0.0, 1.0);
  const int eighths = static_cast<int>(fraction * cells * 8);
  const int full = eighths / 8;
  std::string s = "|";
  for (int i = 0; i < full; ++i) s += "█";
  int used = full;
  if (full < cells) {
    s += kPartial[eighths % 8];
    if (eighths % 8) ++used;
  }
  s += std::string(static_cast<size_t>(cells - used), ' ');
  return s + "|";
}

std::string format_loss(double v) { return std::isfinite(v) ? fmt::format("{:.4f}", v) : fmt::format("{}", v); }

}  // namespace

Progress::Progress(std::FILE* out, bool is_terminal, int64_t log_every)
    : out_(out), terminal_(is_terminal), log_every_(log_every) {
  if (!out_) fail("progress: no output stream");
  if (log_every_ < 1) fail("progress: log_every must be at least 1, got {}", log_every_);
}

Progress::~Progress() {
  try {
    finish();
  } catch (...) {  // a destructor must not throw; finish() only writes to the stream anyway
  }
}

bool Progress::stdout_is_terminal() {
  const char* term = std::getenv("TERM");
  return ::isatty(STDOUT_FILENO) == 1 && !(term && std::strcmp(term, "dumb") == 0);
}

std::string Progress::format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const long long total = std::llround(seconds);
  const long long h = total / 3600, m = total / 60 % 60, s = total % 60;
  if (h > 0) return fmt::format("{}:{:02}:{:02}", h, m, s);
  return fmt::format("{}:{:02}", m, s);
}

std::string Progress::format_bytes(int64_t bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int unit = 0;
  while (std::abs(v) >= 1024 && unit < 4) v /= 1024, ++unit;
  if (unit == 0) return fmt::format("{} B", bytes);
  if (std::abs(v) < 10) return fmt::format("{:.2f} {}", v, kUnits[unit]);
  if (std::abs(v) < 100) return fmt::format("{:.1f} {}", v, kUnits[unit]);
  return fmt::format("{:.0f} {}", v, kUnits[unit]);
}

std::string Progress::format_rate(double per_second) {
  if (!std::isfinite(per_second)) return "?";
  if (per_second < 1000) return fmt::format("{:.0f}", per_second);
  if (per_second < 1e6) return fmt::format("{:.1f}k", per_second / 1e3);
  return fmt::format("{:.2f}M", per_second / 1e6);
}

// From the steps this process has timed itself: after a resume, the steps done before it say nothing about speed.
std::optional<double> Progress::eta_s(const ProgressInfo& p) const {
  if (p.total_steps <= 0) return std::nullopt;
  if (p.step >= p.total_steps) return 0.0;
  if (!start_ || p.step <= start_->first) return std::nullopt;
  const double per_step = (p.elapsed_s - start_->second) / static_cast<double>(p.step - start_->first);
  if (!std::isfinite(per_step) || per_step < 0) return std::nullopt;
  return per_step * static_cast<double>(p.total_steps - p.step);
}

std::string Progress::log_line(const ProgressInfo& p) const {
  std::string s = p.total_steps > 0 ? fmt::format("step {}/{} ({:.0f}%)", p.step, p.total_steps,
                                                  100.0 * static_cast<double>(p.step) / static_cast<double>(p.total_steps))
                                    : fmt::format("step {}", p.step);
  s += fmt::format(" | loss {} | lr {:.3e}", format_loss(p.loss), p.lr);
  for (const auto& [name, value] : p.metrics) s += fmt::format(" | {} {:.4g}", name, value);
  if (p.grad_norm) s += fmt::format(" | grad_norm {:.4g}", *p.grad_norm);
  s += fmt::format(" | {} tok/s", format_rate(p.tokens_per_s));
  if (p.mem_bytes > 0) s += " | mem " + format_bytes(p.mem_bytes);
  s += " | elapsed " + format_duration(p.elapsed_s);
  if (auto eta = eta_s(p); eta && p.step < p.total_steps) s += " | ETA " + format_duration(*eta);
  return s;
}

std::string Progress::status_line(const ProgressInfo& p, int columns) const {
  // Fields in display order with a priority: when the terminal is narrow the least useful go first, because a
  // line longer than the terminal wraps and \r then redraws only its last part.
  struct Field {
    std::string text;
    int priority;
  };
  std::vector<Field> fields;
  const bool known_total = p.total_steps > 0;
  if (known_total) {
    const int digits = static_cast<int>(std::to_string(p.total_steps).size());
    fields.push_back({fmt::format("{:>{}}/{}", p.step, digits, p.total_steps), 9});
    fields.push_back({fmt::format("{:3.0f}%", 100.0 * static_cast<double>(p.step) / static_cast<double>(p.total_steps)), 3});
  } else {
    fields.push_back({fmt::format("step {}", p.step), 9});
  }
  fields.push_back({"loss " + format_loss(p.loss), 8});
  for (const auto& [name, value] : p.metrics) fields.push_back({fmt::format("{} {:.3g}", name, value), 6});
  fields.push_back({fmt::format("lr {:.2e}", p.lr), 5});
  if (p.grad_norm) fields.push_back({fmt::format("gnorm {:.3g}", *p.grad_norm), 1});
  fields.push_back({format_rate(p.tokens_per_s) + " tok/s", 4});
  if (p.mem_bytes > 0) fields.push_back({format_bytes(p.mem_bytes), 2});
  if (known_total) {
    const auto eta = eta_s(p);
    fields.push_back({p.step >= p.total_steps ? "done in " + format_duration(p.elapsed_s)
                                              : "ETA " + (eta ? format_duration(*eta) : std::string("--:--")),
                      7});
  }
  const int budget = std::max(columns - 1, 20);  // the last column stays free: writing it wraps on some terminals
  const auto text_width = [&] {
    int w = 0;
    for (const auto& f : fields) w += static_cast<int>(f.text.size()) + 2;  // ASCII only: bytes == columns
    return w;
  };
  while (text_width() + (known_total ? kMinBar + 2 : 0) > budget && fields.size() > 1) {
    auto lowest = std::min_element(fields.begin(), fields.end(),
                                   [](const Field& a, const Field& b) { return a.priority < b.priority; });
    fields.erase(lowest);
  }
  std::string line;
  if (known_total) {
    const int cells = std::clamp(budget - text_width() - 2, kMinBar, kMaxBar);
    line = bar(static_cast<double>(p.step) / static_cast<double>(p.total_steps), cells);
  }
  for (const auto& f : fields) line += (line.empty() ? "" : "  ") + f.text;
  return line;
}

int Progress::columns() const {
  if (width_override_) return *width_override_;
  winsize ws{};
  if (::ioctl(::fileno(out_), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  if (const char* env = std::getenv("COLUMNS")) {
    const int c = std::atoi(env);
    if (c > 0) return c;
  }
  return 100;
}

void Progress::draw(const ProgressInfo& p) {
  const std::string frame = "\r" + status_line(p, columns()) + kClearToEnd;
  std::fputs(frame.c_str(), out_);
  std::fflush(out_);
  bar_shown_ = true;
  last_draw_s_ = p.elapsed_s;
}

void Progress::update(const ProgressInfo& p) {
  if (!start_) start_ = {p.step, p.elapsed_s};
  last_ = p;
  const bool last_step = p.total_steps > 0 && p.step >= p.total_steps;
  if (terminal_) {
    if (!bar_shown_ || last_step || p.elapsed_s - last_draw_s_ >= kRedrawInterval_s) draw(p);
    return;
  }
  if ((p.step % log_every_ == 0 || last_step) && p.step != last_logged_step_) {
    std::fputs((log_line(p) + "\n").c_str(), out_);
    std::fflush(out_);
    last_logged_step_ = p.step;
  }
}

void Progress::message(const std::string& line) {
  if (terminal_ && bar_shown_) std::fputs((std::string("\r") + kClearToEnd).c_str(), out_);
  std::fputs((line + "\n").c_str(), out_);
  if (terminal_ && last_) {
    bar_shown_ = false;
    draw(*last_);
  }
  std::fflush(out_);
}

void Progress::finish() {
  if (!terminal_ || !bar_shown_) return;
  if (last_) draw(*last_);
  std::fputs("\n", out_);
  std::fflush(out_);
  bar_shown_ = false;
  last_.reset();  // a message() after the run ends must not bring the bar back
}

}  // namespace qtune::train
