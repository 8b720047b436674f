#include "qtune/util/omp_wait.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <set>

namespace qtune {

namespace {

bool set(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0';
}

}  // namespace

bool qtune_chooses_omp_wait(const std::string& command) {
  // Commands that run the model; the others finish before a second start (0.4 s) would pay for itself.
  static const std::set<std::string> heavy = {"train", "bench", "eval", "generate", "quantize", "export", "convert"};
  if (!heavy.count(command)) return false;
  if (set("OMP_WAIT_POLICY") || set("GOMP_SPINCOUNT")) return false;
  // One thread has no workers that wait.
  if (const char* n = std::getenv("OMP_NUM_THREADS"); n != nullptr && std::strcmp(n, "1") == 0) return false;
  const char* choice = std::getenv("QTUNE_OMP_WAIT");
  return choice == nullptr || std::strcmp(choice, "spin") != 0;
}

void choose_omp_wait(int argc, char** argv) {
  if (argc < 2 || !qtune_chooses_omp_wait(argv[1])) return;
  if (::setenv("GOMP_SPINCOUNT", std::to_string(kOmpSpinCount).c_str(), 1) != 0) return;
  // The resolved path, not /proc/self/exe itself: the new process's name (/proc/PID/comm, what ps and the
  // core-sharing warning see) is the file's, "qtune", not "exe".
  char path[4096];
  const ssize_t n = ::readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n > 0) {
    path[n] = '\0';
    ::execv(path, argv);
  }
  // No /proc (or no exec): the run goes on with the long spin; only throughput beside other processes suffers.
  ::unsetenv("GOMP_SPINCOUNT");
}

std::string omp_wait_setting() {
  if (set("OMP_WAIT_POLICY")) return std::string("OMP_WAIT_POLICY=") + std::getenv("OMP_WAIT_POLICY");
  if (set("GOMP_SPINCOUNT")) return std::string("GOMP_SPINCOUNT=") + std::getenv("GOMP_SPINCOUNT");
  return "default";
}

}  // namespace qtune
