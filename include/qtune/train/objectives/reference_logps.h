#pragma once
// The reference policy's sequence log-probabilities of a batch's rows, which DPO and KTO compare the policy with: the
// base with its adapters off (lora/adapter_switch.h) under no-grad, computed in the step, or read from a table
// computed once before the first step (train.precompute_ref_log_probs, TRL's option of that name). A row is found in
// the table by its contents (its tokens and targets), so the table serves any batch that holds it: every epoch's
// order, a rank's share, KTO's mismatched pairs, the eval set.
#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <unordered_map>

#include "qtune/data/collate.h"
#include "qtune/nn/decoder.h"

namespace qtune::train {

class ReferenceTable {
 public:
  // A 64-bit hash of row `row`'s sample: its tokens and targets up to the padding.
  static uint64_t row_key(const data::Batch& batch, int64_t row);

  // Each row's log-probability [rows] fp32 on CPU, or nullopt when a row is not in the table.
  std::optional<at::Tensor> lookup(const data::Batch& batch) const;
  void insert(uint64_t key, float logp) { values_[key] = logp; }
  bool contains(uint64_t key) const { return values_.count(key) > 0; }
  size_t size() const { return values_.size(); }
  const std::unordered_map<uint64_t, float>& values() const { return values_; }
  // Batches whose rows were not all in the table, computed in the step instead (a complete table has none).
  int64_t misses() const { return misses_; }
  void count_miss() const { ++misses_; }

 private:
  std::unordered_map<uint64_t, float> values_;
  mutable int64_t misses_ = 0;
};

// The reference's Σ log p of each row [rows] fp32 on the model's device, not differentiable: from `table` where it
// holds every row, else the base with the adapters off under no-grad.
at::Tensor reference_logps(nn::CausalLMImpl& model, const data::Batch& batch, const ReferenceTable* table = nullptr);

}  // namespace qtune::train
