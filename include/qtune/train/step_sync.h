#pragma once
// The sums of one optimizer step, and the one collective a data-parallel step makes: the gradients all-reduced with
// the step's loss and metric sums (and counts) and each rank's throughput riding along in the same round. Kept out of the
// trainer's loop, which then reads as one step from top to bottom.
#include <ATen/ATen.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "qtune/dist/communicator.h"
#include "qtune/dist/gradient_all_reduce.h"

namespace qtune::train {

struct StepTotals {
  double loss_sum = 0;              // Σ of the objective's loss over the step's units (this rank's, then all ranks')
  std::vector<double> metric_sums;    // Σ of each of the objective's metrics over the same units
  std::vector<double> metric_counts;  // what each metric's sum is divided by (the units, unless the objective says)
  int64_t units = 0;                  // the step's units, every rank's: what the loss sum is divided by
  int64_t tokens = 0;                 // target tokens of the step, every rank's

  double loss() const { return loss_sum / static_cast<double>(std::max<int64_t>(units, 1)); }
};

class StepSync {
 public:
  // log_every, total: the steps whose all-reduce ends with a throughput line (as the trainer's log lines).
  StepSync(dist::Communicator& comm, dist::GradientAllReduce& gradients, int64_t log_every, int64_t total);

  // This rank's forward and backward time and target tokens of a step, for the throughput line.
  void add_compute(double seconds, int64_t tokens) { rank_seconds_ += seconds, rank_tokens_ += tokens; }
  // Sums the gradients and `totals`' loss and metric sums over the ranks (a no-op without a connection). Returns the
  // line to log after step `done` on rank 0 (each rank's tokens per second and the all-reduce's time), else "".
  std::string run(int64_t done, StepTotals& totals);

 private:
  dist::Communicator& comm_;
  dist::GradientAllReduce& gradients_;
  int64_t log_every_, total_;
  double rank_seconds_ = 0;  // this rank's forward/backward time since the last line
  int64_t rank_tokens_ = 0;
  double sync_seconds_ = 0;  // in the all-reduce, waiting for the slowest rank included
  int64_t sync_steps_ = 0;
};

}  // namespace qtune::train
