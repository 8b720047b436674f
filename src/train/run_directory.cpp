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

#include "qtune/io/atomic_file.h"
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

const char* const kRecordHeader = "# written by qtune: what its runs created here; qtune removes nothing else\n";

std::vector<std::string> read_record(const std::string& dir, bool* exists = nullptr) {
  std::vector<std::string> names;
  std::ifstream in((fs::path(dir) / kRunRecordFile).string());
  if (exists) *exists = static_cast<bool>(in);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] != '#') names.push_back(line);
  return names;
}

void write_record(const std::string& dir, std::vector<std::string> names) {
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  std::string text = kRecordHeader;
  for (const auto& n : names) text += n + "\n";
  io::write_text_atomically((fs::path(dir) / kRunRecordFile).string(), text);
}

bool present(const std::string& dir, const std::string& name) {
  std::error_code ec;
  return fs::symlink_status(fs::path(dir) / name, ec).type() != fs::file_type::not_found && !ec;
}

// The claimed names that hold something no recorded run wrote.
std::vector<std::string> unrecorded(const std::string& dir, const RunClaim& claim) {
  const auto recorded = read_record(dir);
  std::vector<std::string> out;
  for (const auto& name : claim.entries)
    if (present(dir, name) && std::find(recorded.begin(), recorded.end(), name) == recorded.end())
      out.push_back(name);
  return out;
}

void refuse_unrecorded(const std::string& dir, const std::vector<std::string>& names) {
  if (names.empty()) return;
  fail("train.output_dir '{}' holds {}, which no qtune run recorded writing (.qtune-run): a run writes there and qtune "
       "never overwrites or removes what it did not write. Move them, or train into another train.output_dir",
       dir, fmt::join(names, ", "));
}

// fs::canonical of a path that may not exist yet: its existing prefix resolved, the rest appended.
fs::path resolved(const std::string& path) {
  std::error_code ec;
  auto p = fs::weakly_canonical(fs::absolute(path, ec), ec);
  return ec ? fs::absolute(path).lexically_normal() : p;
}

// Whether `inner` is `outer` or lies inside it.
bool within(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin();
  for (auto o = outer.begin(); o != outer.end(); ++o, ++i)
    if (i == inner.end() || *i != *o) return false;
  return true;
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

std::vector<std::string> run_entries(const std::string& mode) {
  std::vector<std::string> names{"recipe.yaml", "metrics.jsonl", "loss.svg", "checkpoints"};
  const std::string result = mode == "full" ? "model" : "adapter";
  names.push_back(result);
  names.push_back(result + ".tmp");
  return names;
}

std::vector<std::string> previous_run_entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& name : read_record(dir))
    if (present(dir, name)) out.push_back(name);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> claim_for_fresh_run(const std::string& dir, const RunClaim& claim, bool overwrite) {
  refuse_unrecorded(dir, unrecorded(dir, claim));
  const auto entries = previous_run_entries(dir);
  if (!entries.empty() && !overwrite)
    fail("train.output_dir '{}' holds a previous run ({}). Continue it with --resume, train into another "
         "train.output_dir, or pass --overwrite to remove that run first",
         dir, fmt::join(entries, ", "));
  for (const auto& name : entries) {
    const auto entry = resolved((fs::path(dir) / name).string());
    for (const auto& input : claim.inputs)
      if (!input.empty() && within(resolved(input), entry))
        fail("--overwrite would remove {}, which holds this run's input '{}'; nothing was removed. Move the input out "
             "of train.output_dir, or train into another train.output_dir",
             (fs::path(dir) / name).string(), input);
  }
  for (const auto& name : entries) remove_tree((fs::path(dir) / name).string());
  write_record(dir, claim.entries);
  return entries;
}

void claim_for_resume(const std::string& dir, const RunClaim& claim) {
  bool recorded = false;
  auto names = read_record(dir, &recorded);
  if (recorded) refuse_unrecorded(dir, unrecorded(dir, claim));
  names.insert(names.end(), claim.entries.begin(), claim.entries.end());
  write_record(dir, names);
}

}  // namespace qtune::train
