#pragma once
// `qtune train`: the training loop of a recipe, set up in the order torchtune writes down (model -> tokenizer ->
// adapters -> data -> optimizer -> schedule), then: micro-batches accumulated with a token-weighted loss, clipping,
// the optimizer step at the schedule's learning rate, logs, evals and saves.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "qtune/data/collate.h"
#include "qtune/dist/communicator.h"
#include "qtune/nn/decoder.h"
#include "qtune/train/objectives/objective.h"
#include "qtune/train/recipe.h"

namespace qtune::train {

struct EvalResult {
  double loss = NAN;  // mean over target tokens
  double perplexity = NAN;
  int64_t tokens = 0;
};

struct TrainSummary {
  int64_t steps = 0;
  int64_t tokens = 0;  // target tokens trained on
  int64_t skipped_steps = 0;  // fp16 steps skipped on inf/NaN gradients
  double first_loss = NAN, last_loss = NAN;  // of the first and the last updated step
  double mean_loss = NAN;    // over every updated step of the run (HF's train_loss)
  double recent_loss = NAN;  // over the steps since the previous train line of the log, at the last line (its loss_avg)
  int64_t recent_from = 0;   // the first step recent_loss counts
  std::optional<EvalResult> eval_before, eval_after;
  double seconds = 0;
  std::string run_dir;
  std::string adapter_dir;  // lora mode: the PEFT adapter written at the end
  std::string model_dir;    // full mode: the Hugging Face model written at the end
  std::string resumed_from; // the checkpoint a resumed run started from
  int64_t start_step = 0;
  // train.precompute_ref_log_probs: "computed" (before the first step) or "read" (the run directory's cache), and
  // the micro-batches whose rows were not all in it (0: no step ran the reference forward).
  std::string reference_cache;
  int64_t reference_misses = 0;
};

struct TrainOptions {
  std::string resume;  // "": a fresh run; "auto": the run directory's newest valid checkpoint (fresh if none); or a
                       // checkpoint / run directory
  bool force = false;  // resume even though run-affecting recipe keys changed
  bool overwrite = false;  // a fresh run into a directory holding a previous run removes that run first
  // The data-parallel ranks (null: this process alone). Rank 0 writes the run directory; every rank trains its share.
  std::shared_ptr<dist::Communicator> comm;
  int64_t stop_after_step = 0;  // > 0: return after this step (and its save), as if the process had been killed
  std::FILE* out = stdout;                // progress and messages
  std::optional<bool> terminal;           // default: whether `out` is a terminal
  bool eval_before = true;                // measure eval loss before the first step too
  // Called after every optimizer step with (step, loss); tests use it to watch or inject.
  std::function<void(int64_t step, double loss)> on_step;
  // Called after backward, before unscaling and clipping, with the trainable parameters: tests inject inf gradients
  // here to exercise the fp16 loss scaler.
  std::function<void(int64_t step, const std::vector<at::Tensor>& params)> after_backward;
};

// Mean loss over the target tokens of the loader's first `max_batches` batches (0: all), in eval mode, no grad.
// With a communicator of N ranks each rank evaluates its share of every batch and all get the whole result.
// `objective` (default: SFT) gives the loss and its units (then `tokens` counts those units, and perplexity is
// exp(loss) only for SFT's token loss).
EvalResult evaluate(nn::CausalLMImpl& model, const data::DataLoader& loader, int64_t max_batches = 0,
                    dist::Communicator* comm = nullptr, Objective* objective = nullptr);

TrainSummary run_training(const Recipe& recipe, const TrainOptions& options = {});

// The recipe as `ranks` data-parallel ranks run it: with train.global_batch_size, grad_accum follows from it (an
// Error when batch_size x ranks does not divide it).
Recipe with_global_batch(Recipe recipe, int64_t ranks);

}  // namespace qtune::train
