#include "op_profile.h"

#include <fmt/format.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace qtune::cli {

void print_op_profile(const std::function<void()>& work, int64_t repeats, int64_t top, std::FILE* out) {
  namespace prof = torch::profiler::impl;
  const prof::ProfilerConfig config(prof::ProfilerState::KINETO);
  const std::set<prof::ActivityType> activities{prof::ActivityType::CPU};
  torch::autograd::profiler::prepareProfiler(config, activities);
  torch::autograd::profiler::enableProfiler(config, activities);
  const auto start = std::chrono::steady_clock::now();
  work();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto result = torch::autograd::profiler::disableProfiler();

  // Self time: each event's duration less its direct children's, nesting found per thread by start and end times.
  struct Span {
    uint64_t start, end, thread;
    std::string name;
  };
  std::vector<Span> spans;
  for (const auto& e : result->events())
    if (e.durationNs() > 0) spans.push_back({e.startNs(), e.endNs(), e.startThreadId(), e.name()});
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.thread != b.thread ? a.thread < b.thread : a.start != b.start ? a.start < b.start : a.end > b.end;
  });
  struct Row {
    double self_s = 0;
    int64_t calls = 0;
  };
  std::map<std::string, Row> rows;
  std::vector<std::pair<const Span*, uint64_t>> stack;  // open spans and their children's time
  auto close = [&](const Span* s, uint64_t children) {
    auto& r = rows[s->name];
    r.self_s += static_cast<double>(s->end - s->start - std::min(children, s->end - s->start)) * 1e-9;
    ++r.calls;
  };
  for (size_t i = 0; i < spans.size(); ++i) {
    const auto& s = spans[i];
    while (!stack.empty() && (stack.back().first->thread != s.thread || stack.back().first->end <= s.start)) {
      close(stack.back().first, stack.back().second);
      stack.pop_back();
    }
    if (!stack.empty()) stack.back().second += s.end - s.start;
    stack.emplace_back(&s, 0);
  }
  while (!stack.empty()) close(stack.back().first, stack.back().second), stack.pop_back();

  std::vector<std::pair<std::string, Row>> sorted(rows.begin(), rows.end());
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second.self_s > b.second.self_s; });
  double profiled = 0;
  for (const auto& [name, r] : sorted) profiled += r.self_s;
  const double per = static_cast<double>(std::max<int64_t>(repeats, 1));
  fmt::print(out, "\nprofile: {:.3f} s wall per repeat, {:.3f} s of operator self time (main thread work; ATen's "
                  "intra-op threads run inside their operator)\n",
             wall / per, profiled / per);
  fmt::print(out, "{:<58} {:>10} {:>7} {:>8}\n", "operator", "self ms", "share", "calls");
  for (int64_t i = 0; i < std::min<int64_t>(top, static_cast<int64_t>(sorted.size())); ++i) {
    const auto& [name, r] = sorted[i];
    fmt::print(out, "{:<58} {:>10.2f} {:>6.1f}% {:>8.0f}\n", name.size() > 58 ? name.substr(0, 55) + "..." : name,
               1e3 * r.self_s / per, 100.0 * r.self_s / std::max(profiled, 1e-12), static_cast<double>(r.calls) / per);
  }
}

}  // namespace qtune::cli
