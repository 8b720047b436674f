#pragma once
// A run directory belongs to one run. The process that writes there (rank 0) holds an exclusive advisory lock on
// DIR/.qtune-lock for the whole run: the kernel drops it when the process ends, however it ends, so kill -9 leaves
// no stale lock, and a second process is refused with the holder's pid.
//
// qtune removes only what it wrote: DIR/.qtune-run records the entries a run claimed (its recipe.yaml, metrics,
// plot, checkpoints, adapter or model) before writing them. A name a run would write that holds something qtune did
// not record (the user's base in model/, a hand-written recipe.yaml) refuses the run, with or without --overwrite; a
// fresh run (no --resume) into a directory that holds a recorded previous run is refused, naming what is there, unless
// --overwrite removes that run first, and never a path that holds one of the run's own inputs.
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

// What a run writes into its directory and what it must never remove.
struct RunClaim {
  std::vector<std::string> entries;  // names relative to the directory (run_entries)
  // The run's inputs (recipe file, model, tokenizer, data, ...): an entry that is or holds one is never removed.
  std::vector<std::string> inputs;
};

inline constexpr const char* kRunRecordFile = ".qtune-run";

// The entries a run in `mode` (lora | full) writes: recipe.yaml, metrics.jsonl, loss.svg, checkpoints, and adapter or
// model (with its temporary sibling).
std::vector<std::string> run_entries(const std::string& mode);

// The entries of `dir` that a recorded qtune run wrote and that still exist, sorted. Files of other programs, calibrated
// bases (base-*/: a cache keyed by what made it) and the lock are never listed.
std::vector<std::string> previous_run_entries(const std::string& dir);

// For a fresh run: refuses (nothing changed) when a claimed name holds something qtune did not record, or when `dir`
// holds a recorded previous run, unless `overwrite`, which removes that run's entries (refusing, before removing
// anything, when one of them holds an input). Then records the claim. Returns what it removed.
std::vector<std::string> claim_for_fresh_run(const std::string& dir, const RunClaim& claim, bool overwrite);

// For a resumed run: the same refusal of unrecorded entries, except in a directory with no record at all (a run of a
// qtune that kept none, adopted as is); then records the claim.
void claim_for_resume(const std::string& dir, const RunClaim& claim);

}  // namespace qtune::train
