#include "qtune/util/cpu_share.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

namespace qtune {

std::vector<int> other_processes_named(const std::string& name) {
  std::vector<int> pids;
  std::error_code ec;
  const int self = static_cast<int>(::getpid());
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const auto base = entry.path().filename().string();
    if (base.empty() || base.find_first_not_of("0123456789") != std::string::npos) continue;
    const int pid = std::atoi(base.c_str());
    if (pid == self) continue;
    std::ifstream comm(entry.path() / "comm");
    std::string text;
    if (std::getline(comm, text) && text == name) pids.push_back(pid);
  }
  return pids;
}

std::string cpu_oversubscription_warning(int threads) {
  const auto others = other_processes_named("qtune");
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  if (others.empty() || static_cast<unsigned>(threads) * (others.size() + 1) <= cores) return "";
  const auto who = others.size() == 1 ? fmt::format("another qtune process (pid {}) is", others[0])
                                      : fmt::format("{} other qtune processes (pids {}) are", others.size(),
                                                    fmt::join(others, ", "));
  return fmt::format(
      "warning: {} running on these {} cores while this one uses {} threads: each will run many times slower than "
      "alone. Run one at a time, or give each its share (OMP_NUM_THREADS={})",
      who, cores, threads, std::max(1u, cores / static_cast<unsigned>(others.size() + 1)));
}

}  // namespace qtune
