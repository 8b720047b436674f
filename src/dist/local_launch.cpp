#include "qtune/dist/local_launch.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "qtune/util/error.h"

namespace qtune::dist {
namespace {

volatile sig_atomic_t g_signal = 0;
void remember_signal(int sig) { g_signal = sig; }

std::string describe(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return "stopped";
}

}  // namespace

int free_local_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) fail("--nproc: cannot open a socket to find a free port ({})", std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    fail("--nproc: cannot bind 127.0.0.1 to find a free port ({})", std::strerror(errno));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

int available_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

int run_local_ranks(const LocalLaunch& launch) {
  if (launch.nproc < 1) fail("--nproc {}: give at least 1 rank", launch.nproc);
  const std::string port = std::getenv("MASTER_PORT") ? std::getenv("MASTER_PORT") : std::to_string(free_local_port());
  const int threads = std::max(1, available_cores() / launch.nproc);
  // This binary by its path (what ps and the lock's error show), not /proc/self/exe.
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  std::vector<std::string> argv_s{ec ? std::string("/proc/self/exe") : self.string()};
  for (const auto& a : launch.args) argv_s.push_back(a);
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  // Each rank's environment, made here: after fork the child only calls what is async-signal-safe.
  std::vector<std::vector<std::string>> envs(launch.nproc);
  for (int r = 0; r < launch.nproc; ++r) {
    const std::vector<std::pair<std::string, std::string>> set = {
        {"RANK", std::to_string(r)},          {"LOCAL_RANK", std::to_string(r)},
        {"WORLD_SIZE", std::to_string(launch.nproc)}, {"LOCAL_WORLD_SIZE", std::to_string(launch.nproc)},
        {"MASTER_ADDR", "127.0.0.1"},         {"MASTER_PORT", port},
        {"QTUNE_LAUNCHED_BY", "qtune --nproc"}};
    bool has_threads = false;
    for (char** e = ::environ; *e; ++e) {
      const std::string v(*e);
      const auto name = v.substr(0, v.find('='));
      if (name == "OMP_NUM_THREADS") has_threads = true;
      bool replaced = false;
      for (const auto& [k, _] : set) replaced = replaced || name == k;
      if (!replaced) envs[r].push_back(v);
    }
    for (const auto& [k, v] : set) envs[r].push_back(k + "=" + v);
    if (!has_threads) envs[r].push_back("OMP_NUM_THREADS=" + std::to_string(threads));
  }
  std::vector<std::vector<char*>> envps(launch.nproc);
  for (int r = 0; r < launch.nproc; ++r) {
    for (auto& v : envs[r]) envps[r].push_back(v.data());
    envps[r].push_back(nullptr);
  }
  const pid_t launcher = ::getpid();

  struct sigaction sa {};
  sa.sa_handler = remember_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  std::vector<pid_t> pids;
  for (int r = 0; r < launch.nproc; ++r) {
    const pid_t pid = ::fork();
    if (pid < 0) fail("--nproc: cannot start rank {} ({})", r, std::strerror(errno));
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);     // a launcher killed by -9 takes its ranks with it
      if (::getppid() != launcher) ::_exit(1);  // ... even when it died before the line above ran
      ::execve(argv[0], argv.data(), envps[r].data());
      static const char msg[] = "qtune train --nproc: cannot start a rank (execve failed)\n";
      (void)!::write(2, msg, sizeof(msg) - 1);
      ::_exit(127);
    }
    pids.push_back(pid);
  }

  std::vector<bool> done(pids.size(), false);
  size_t running = pids.size();
  bool failed = false, forwarded = false;
  std::chrono::steady_clock::time_point deadline{};
  while (running > 0) {
    int st = 0;
    const pid_t pid = ::waitpid(-1, &st, WNOHANG);
    if (pid > 0) {
      for (size_t r = 0; r < pids.size(); ++r)
        if (pids[r] == pid) {
          done[r] = true, --running;
          const bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
          if (!ok) {
            std::fprintf(stderr, "qtune train --nproc %d: rank %zu (pid %d) %s\n", launch.nproc, r, pid,
                         describe(st).c_str());
            if (!failed) deadline = std::chrono::steady_clock::now() + launch.grace;
            failed = true;
          }
        }
      continue;
    }
    if (g_signal && !forwarded) {
      for (size_t r = 0; r < pids.size(); ++r)
        if (!done[r]) ::kill(pids[r], g_signal);
      forwarded = true;
      if (!failed) deadline = std::chrono::steady_clock::now() + launch.grace;
      failed = true;
    }
    if (failed && std::chrono::steady_clock::now() > deadline) {
      for (size_t r = 0; r < pids.size(); ++r)
        if (!done[r]) {
          std::fprintf(stderr, "qtune train --nproc %d: rank %zu (pid %d) did not stop within %lld s; killing it\n",
                       launch.nproc, r, pids[r], static_cast<long long>(launch.grace.count()));
          ::kill(pids[r], SIGKILL);
        }
      deadline = std::chrono::steady_clock::now() + std::chrono::hours(1);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return failed ? 1 : 0;
}

}  // namespace qtune::dist
