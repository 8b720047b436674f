#pragma once
// LibTorch's profiler (Kineto, CPU activity) around a piece of work, summarised as the operators that took the time:
// self time (an operator's time less the operators it called), calls, and the share of the whole. What
// `qtune bench train --profile` prints, so a step's breakdown needs no Python.
#include <cstdint>
#include <cstdio>
#include <functional>

namespace qtune::cli {

// Runs `work` under the profiler and prints the `top` operators by self time, per `repeats` (e.g. per step).
void print_op_profile(const std::function<void()>& work, int64_t repeats, int64_t top, std::FILE* out);

}  // namespace qtune::cli
