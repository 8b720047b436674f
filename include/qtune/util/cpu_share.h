#pragma once
// Two qtune processes on the same cores each spin a full ATen/OpenMP thread pool; on this 2-core machine two
// concurrent training runs each became 15x slower (issue 24). A run says so at its start instead of crawling.
#include <string>
#include <vector>

namespace qtune {

// The pids of the other running processes whose name (/proc/PID/comm) is `name`.
std::vector<int> other_processes_named(const std::string& name);

// A warning when other qtune processes share this machine's cores with this one's `threads` intra-op threads;
// "" when there are none (or /proc cannot tell).
std::string cpu_oversubscription_warning(int threads);

}  // namespace qtune
