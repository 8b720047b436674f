#include "qtune/train/run_directory.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "qtune/util/error.h"
#include "qtune/util/remove_tree.h"

namespace qtune::train {
namespace fs = std::filesystem;
namespace {

// The command line of `pid` (from /proc), for an error that says what holds the lock.
std::string command_of(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/cmdline", std::ios::binary);
  std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::replace(cmd.begin(), cmd.end(), '\0', ' ');
  while (!cmd.empty() && cmd.back() == ' ') cmd.pop_back();
  return cmd;
}

bool is_run_entry(const std::string& name) {
  static const char* files[] = {"recipe.yaml", "metrics.jsonl", "loss.svg", "checkpoints", "adapter", "model",
                                "adapter.tmp", "model.tmp"};
  // Not base-*/ (train/calibrated_base): a cache keyed by everything that made it, reused only when that matches.
  for (const char* f : files)
    if (name == f) return true;
  return false;
}

}  // namespace

RunDirectoryLock::RunDirectoryLock(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("train.output_dir '{}': cannot create it ({})", dir, ec.message());
  const auto path = (fs::path(dir) / kFileName).string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("train.output_dir '{}': cannot open its lock file {} ({})", dir, path, std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[32] = {};
    const auto n = ::pread(fd_, buf, sizeof(buf) - 1, 0);
    ::close(fd_);
    fd_ = -1;
    if (err != EWOULDBLOCK) fail("train.output_dir '{}': cannot lock {} ({})", dir, path, std::strerror(err));
    std::string pid(buf, n > 0 ? static_cast<size_t>(n) : 0);
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    const auto cmd = pid.empty() ? std::string() : command_of(pid);
    fail("train.output_dir '{}' is in use by another qtune process (pid {}{}): a run directory belongs to one run. Wait "
         "for it to finish, stop it, or train into another train.output_dir",
         dir, pid.empty() ? "unknown" : pid, cmd.empty() ? "" : ": " + cmd);
  }
  const auto text = fmt::format("{}\n", ::getpid());
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()))
    fail("train.output_dir '{}': cannot write its lock file {} ({})", dir, path, std::strerror(errno));
}

RunDirectoryLock::RunDirectoryLock(RunDirectoryLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }

RunDirectoryLock::~RunDirectoryLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the last descriptor releases the flock
}

std::vector<std::string> previous_run_entries(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const auto name = e.path().filename().string();
    if (is_run_entry(name)) out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> claim_for_fresh_run(const std::string& dir, bool overwrite) {
  const auto entries = previous_run_entries(dir);
  if (entries.empty()) return {};
  if (!overwrite)
    fail("train.output_dir '{}' holds a previous run ({}). Continue it with --resume, train into another "
         "train.output_dir, or pass --overwrite to remove that run first",
         dir, fmt::join(entries, ", "));
  for (const auto& name : entries) remove_tree((fs::path(dir) / name).string());
  return entries;
}

}  // namespace qtune::train
