#pragma once
// Batches for training: tokenized samples in a seeded order per epoch, packed greedily into rows of max_seq_len
// (or one sample per row), with next-token targets that never cross from one packed sample into the next.
// batch(epoch, index) is a pure function of (samples, options, epoch, index): a resumed run needs only the two
// numbers to continue with exactly the batches it would have seen.
#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "qtune/data/chat_template.h"

namespace qtune::data {

struct Batch {
  at::Tensor input_ids;     // [B, T] int64; padding is the pad id given to the loader (masked by position, not id)
  at::Tensor targets;       // [B, T] int64: the label of the same sample's next token, -100 where none (the last
                            // token of each sample, masked labels, padding)
  at::Tensor position_ids;  // [B, T] int64: 0, 1, .. restarting at each packed sample (and in the padding)
  at::Tensor segment_ids;   // [B, T] int64: 0, 1, 2 .. per packed sample within a row; padding is -1
  int64_t target_tokens = 0;  // targets != -100 (for a token-weighted loss across gradient accumulation)
  int64_t samples = 0;
  // KTO (samples that carry a label; one per row): each row's label, and the mismatched pairs its KL term is
  // estimated on, row i's prompt with row i-1's completion over the whole (global) micro-batch.
  at::Tensor desirable;                      // [B] bool; undefined for other data
  std::shared_ptr<const Batch> mismatched;  // B rows; null for other data
};

struct LoaderOptions {
  int64_t batch_size = 1;
  int64_t max_seq_len = 512;
  bool packing = true;
  bool shuffle = true;
  uint64_t seed = 42;
  // > 1: each run of this many consecutive samples is one unit that stays together, in adjacent rows of one batch
  // (a preference pair: chosen, then rejected, in one forward as TRL's concatenated_forward); batch_size, the order
  // and rows_per_epoch count those units, and nothing is packed.
  int64_t rows_per_sample = 1;
};

class DataLoader {
 public:
  // Every sample must be non-empty and at most max_seq_len tokens (tokenize with the same max_seq_len).
  DataLoader(std::vector<TokenizedSample> samples, LoaderOptions options, int64_t pad_id);

  // With packing the number of rows depends on the epoch's order, so it can differ from one epoch to the next.
  int64_t batches_per_epoch(int64_t epoch) const;
  int64_t rows_per_epoch(int64_t epoch) const;  // packed rows (or samples) of the epoch
  int64_t total_batches(int64_t epochs) const;  // sum over epochs 0 .. epochs-1
  // Rows [index * batch_size, ..) of the epoch; T = the longest of those rows. The last batch may be smaller.
  Batch batch(int64_t epoch, int64_t index) const;

  // The sample indices of epoch `epoch`, in the order they are fed (a seeded permutation when shuffling).
  std::vector<int64_t> epoch_order(int64_t epoch) const;

  int64_t total_target_tokens() const;  // per epoch: every trained label of every sample, once
  size_t size() const { return samples_.size(); }
  // Rows each sample fills in a batch: 1; 2 for preference pairs (chosen, then rejected, in adjacent rows).
  int64_t rows_per_sample() const { return options_.rows_per_sample; }
  const LoaderOptions& options() const { return options_; }

 private:
  struct EpochRows;
  struct Cache;
  std::shared_ptr<const EpochRows> rows_of(int64_t epoch) const;

  std::vector<TokenizedSample> samples_;
  LoaderOptions options_;
  int64_t pad_id_;
  int64_t total_target_tokens_ = 0;
  std::shared_ptr<Cache> cache_;  // the last epoch's rows (batch() is called once per index); shared by copies
};

// Rows [begin, end) of a batch (clamped to its rows; possibly none), same T: a data-parallel rank's share of a global
// micro-batch. Its target_tokens and samples count those rows only.
Batch slice_rows(const Batch& batch, int64_t begin, int64_t end);

// A deterministic train/eval split: round(eval_fraction * n) samples (at least 1, leaving at least 1 for training),
// chosen by `seed`; both parts keep the original order. eval_fraction must be in (0, 1).
// Which of n samples split_eval holds out (true: eval), for data kept in other shapes (preference pairs).
std::vector<bool> eval_split(int64_t n, double eval_fraction, uint64_t seed);
std::pair<std::vector<TokenizedSample>, std::vector<TokenizedSample>> split_eval(std::vector<TokenizedSample> samples,
                                                                                 double eval_fraction, uint64_t seed);

}  // namespace qtune::data
