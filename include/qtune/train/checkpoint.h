#pragma once
// Crash-safe training checkpoints: everything the next step depends on, in <run>/checkpoints/step-NNNNNNNN/.
// A checkpoint is written into a temporary directory (each file fsynced), its manifest (size and CRC-32 of every
// file) last, then renamed into place; `latest` is updated after that, and old checkpoints are pruned only once the new
// one is complete. A process killed at any point leaves the previous checkpoint valid; resume verifies the manifest
// before reading a byte and falls back to the newest valid checkpoint.
//
// The checkpoints of a run directory form one line: the run's start (or resume point) and each save after it.
// Starting a run (Checkpointer::start_line) moves every checkpoint that is not on its line -- newer than the resume
// point, or all of them for a fresh run or one resumed from elsewhere -- into checkpoints/abandoned/, so that nothing
// of an abandoned line is ever resumed or counted by pruning, and nothing is deleted either.
#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "qtune/io/safetensors.h"

namespace qtune::train {

// Where a run stands after `step` optimizer steps.
struct TrainerState {
  int64_t step = 0;
  int64_t epoch = 0, index = 0;  // the next micro-batch is batch(epoch, index)
  int64_t tokens_seen = 0;
  int64_t skipped_steps = 0;
  double first_loss = NAN, last_loss = NAN;
  // Σ and count of the updated steps' losses: over the run (its mean is HF's train_loss), and since the last train
  // line of the log (its mean is that line's loss_avg, HF's logged loss).
  double loss_sum = 0, window_loss_sum = 0;
  int64_t loss_steps = 0, window_steps = 0;
  std::vector<double> loss_scaler;  // DynamicLossScaler::state()
  std::string recipe_hash;          // of the run-affecting recipe values
  std::string data_hash;            // of the training (and eval) files' contents; "" in older checkpoints
  int64_t world_size = 1;           // data-parallel ranks; `index` counts global micro-batches of world_size rank shares
};

struct CheckpointContents {
  TrainerState state;
  io::NamedTensors trainable;  // every trained tensor, by parameter name
  io::NamedTensors optimizer;  // Optimizer::state_dict()
  io::NamedTensors rng;        // generator states ("cpu", "cuda:0", ...)
  std::string recipe_yaml;
  // Writes more files into the (temporary) checkpoint directory: the PEFT adapter in LoRA runs, so that a checkpoint
  // is also an adapter directory (`qtune generate --adapter`, PeftModel.from_pretrained).
  std::function<void(const std::string& dir)> write_extra;
};

// Crash points a save passes (after each file, the manifest, the rename and `latest`); tests kill the process at each.
inline constexpr int kCheckpointCrashPoints = 9;

class Checkpointer {
 public:
  Checkpointer(std::string run_dir, int64_t keep_last);
  // Begins this process's line at `resume_from` (a checkpoint directory; "" for a fresh run): checkpoints of the run
  // directory that are not on it are moved to checkpoints/abandoned/, and `latest` names the resume point (or is
  // removed). Returns where each moved checkpoint went.
  std::vector<std::string> start_line(const std::string& resume_from);
  // Writes the checkpoint, points `latest` at it, then prunes the oldest of the line beyond keep_last. Never prunes
  // the checkpoint just written nor anything newer. Returns the checkpoint's directory.
  std::string save(const CheckpointContents& contents);
  const std::string& directory() const { return dir_; }

 private:
  std::string dir_;
  int64_t keep_last_;
};

// Checks the manifest: every file present with its size and CRC-32. Throws naming the first problem.
void verify_checkpoint(const std::string& dir);
CheckpointContents load_checkpoint(const std::string& dir);  // verifies first

// The checkpoint to resume `run_dir` from: the one `latest` names when it verifies, else the newest valid one older
// than it (without a `latest` file: the newest valid one). A checkpoint newer than `latest` belongs to a save killed
// before it published it and is skipped. Each skipped candidate is reported through `warn`. nullopt when none.
std::optional<std::string> find_resume_checkpoint(const std::string& run_dir,
                                                  const std::function<void(const std::string&)>& warn);
// A checkpoint directory, or a run directory (its newest valid checkpoint).
std::string resolve_checkpoint(const std::string& path, const std::function<void(const std::string&)>& warn);

// FNV-1a of the text, as 16 hex digits (the recipe hash stored in a checkpoint).
std::string text_hash(const std::string& text);
// The same over a file's bytes, read a chunk at a time (a data file may be larger than memory wants twice).
std::string file_hash(const std::string& path);

// Test hook: the N-th crash point of the process (QTUNE_CRASH_AT=N) kills it with SIGKILL, as a power cut would.
void crash_point();

}  // namespace qtune::train
