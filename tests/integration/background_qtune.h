#pragma once
// A qtune process started in the background (so a test can kill it, or a rank it launched, while it trains).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <dirent.h>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace qtune::test {

struct BackgroundQtune {
  pid_t pid = -1;
  std::string out, err;  // files its stdout and stderr go to

  BackgroundQtune(const std::string& args, const std::string& dir, const std::string& env = "") {
    out = dir + "/bg.out", err = dir + "/bg.err";
    const auto cmd = "exec env " + env + " " + qtune_bin() + " " + args + " >" + out + " 2>" + err;
    pid = ::fork();
    if (pid == 0) {
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  ~BackgroundQtune() {
    if (pid > 0 && !waited_) ::kill(pid, SIGKILL), ::waitpid(pid, nullptr, 0);
  }
  // The exit status (128 + signal when killed), or nullopt when it is still running after `limit`.
  std::optional<int> wait(std::chrono::seconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      int st = 0;
      if (::waitpid(pid, &st, WNOHANG) == pid) {
        waited_ = true;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return std::nullopt;
  }

 private:
  bool waited_ = false;
};

// Waits until `path` exists (true) or `limit` passes (false).
inline bool wait_for_path(const std::string& path, std::chrono::seconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!std::filesystem::exists(path)) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

// The child of `parent` whose environment holds `var` (e.g. "RANK=1"), or -1.
inline pid_t child_with_env(pid_t parent, const std::string& var) {
  DIR* proc = ::opendir("/proc");
  pid_t found = -1;
  while (dirent* e = proc ? ::readdir(proc) : nullptr) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    std::getline(stat, line);
    const auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(line.c_str() + close + 1, " %c %d", &state, &ppid) != 2 || ppid != parent) continue;
    std::ifstream env("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
    for (std::string v; std::getline(env, v, '\0');)
      if (v == var) found = pid;
  }
  if (proc) ::closedir(proc);
  return found;
}

}  // namespace qtune::test
