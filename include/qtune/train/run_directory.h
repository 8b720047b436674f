#pragma once
// A run directory belongs to one run. The process that writes there (rank 0) holds an exclusive advisory lock on
// DIR/.qtune-lock for the whole run: the kernel drops it when the process ends, however it ends, so kill -9 leaves
// no stale lock, and a second process is refused with the holder's pid. A fresh run (no --resume) into a directory
// that holds a previous run is refused, naming what is there, unless --overwrite removes that run first.
#include <string>
#include <vector>

namespace qtune::train {

class RunDirectoryLock {
 public:
  // Creates `dir` if needed and locks it; an Error naming the holder's pid when another process holds it.
  explicit RunDirectoryLock(const std::string& dir);
  ~RunDirectoryLock();
  RunDirectoryLock(const RunDirectoryLock&) = delete;
  RunDirectoryLock& operator=(const RunDirectoryLock&) = delete;
  RunDirectoryLock(RunDirectoryLock&& other) noexcept;

  static constexpr const char* kFileName = ".qtune-lock";

 private:
  int fd_ = -1;
};

// What a previous run left in `dir` (its recipe, metrics, plot, checkpoints, adapter or model): names relative to
// dir, sorted. Files of other programs are not a run's and are never listed nor removed, nor are calibrated bases
// (base-*/: a cache keyed by the settings and data that made it, reused only when they match).
std::vector<std::string> previous_run_entries(const std::string& dir);

// For a fresh run: refuses (nothing changed) when `dir` holds a previous run, unless `overwrite`, which removes that
// run's entries. Returns what it removed.
std::vector<std::string> claim_for_fresh_run(const std::string& dir, bool overwrite);

}  // namespace qtune::train
