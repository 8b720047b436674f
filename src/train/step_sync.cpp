#include "qtune/train/step_sync.h"

#include <fmt/format.h>

#include <algorithm>

namespace qtune::train {

StepSync::StepSync(dist::Communicator& comm, dist::GradientAllReduce& gradients, int64_t log_every, int64_t total)
    : comm_(comm), gradients_(gradients), log_every_(log_every), total_(total) {}

std::string StepSync::run(int64_t done, StepTotals& totals) {
  if (!comm_.connected()) return "";
  const int64_t ranks = comm_.size(), rank = comm_.rank();
  const int64_t m = static_cast<int64_t>(totals.metric_sums.size());
  // One round: the gradients, and [Σ loss, Σ metrics.., their counts.., each rank's seconds, each rank's tokens].
  auto stats = at::zeros({1 + 2 * m + 2 * ranks}, at::kDouble);
  stats[0] = totals.loss_sum;
  for (int64_t i = 0; i < m; ++i) stats[1 + i] = totals.metric_sums[i], stats[1 + m + i] = totals.metric_counts[i];
  const int64_t at_seconds = 1 + 2 * m, at_tokens = at_seconds + ranks;
  stats[at_seconds + rank] = rank_seconds_;
  stats[at_tokens + rank] = static_cast<double>(rank_tokens_);
  const auto sync_start = std::chrono::steady_clock::now();
  gradients_.run(comm_, fmt::format("the gradients of step {}", done), {stats});
  sync_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - sync_start).count(), ++sync_steps_;
  totals.loss_sum = stats[0].item<double>();
  for (int64_t i = 0; i < m; ++i)
    totals.metric_sums[i] = stats[1 + i].item<double>(), totals.metric_counts[i] = stats[1 + m + i].item<double>();
  if (done % log_every_ != 0 && done != total_) return "";
  std::string line;
  if (comm_.is_root()) {
    for (int64_t k = 0; k < ranks; ++k)
      line += fmt::format("{}rank {} {:.1f} tok/s", k ? ", " : "", k,
                          stats[at_tokens + k].item<double>() / std::max(1e-9, stats[at_seconds + k].item<double>()));
    line = fmt::format("step {}: {}; all-reduce {:.0f} ms per step (waiting for the slowest rank included)", done, line,
                       1000 * sync_seconds_ / std::max<int64_t>(sync_steps_, 1));
  }
  rank_seconds_ = 0, rank_tokens_ = 0, sync_seconds_ = 0, sync_steps_ = 0;
  return line;
}

}  // namespace qtune::train
