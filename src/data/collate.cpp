#include "qtune/data/collate.h"

#include <algorithm>
#include <cmath>
#include <mutex>

#include "qtune/data/preference.h"
#include "qtune/util/error.h"

namespace qtune::data {
namespace {

// Our own generator and shuffle: std::shuffle and std::uniform_int_distribution differ between standard
// libraries, and the batches of a seed must be the same wherever a run is resumed.
uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// A uniform value in [0, n), without modulo bias.
uint64_t below(uint64_t n, uint64_t& state) {
  const uint64_t threshold = (0 - n) % n;
  for (;;) {
    const uint64_t r = splitmix64(state);
    if (r >= threshold) return r % n;
  }
}

// A permutation of 0..n-1 (Fisher-Yates) from a stream named by (seed, salt).
std::vector<int64_t> permutation(int64_t n, uint64_t seed, uint64_t salt) {
  uint64_t state = seed;
  state = splitmix64(state) ^ (salt * 0xD1B54A32D192ED03ull);
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[below(static_cast<uint64_t>(i) + 1, state)]);
  return order;
}

constexpr uint64_t kEvalSplitSalt = 0x5EED5EED5EED5EEDull;  // not an epoch number: the split is its own stream

int64_t trained_targets(const TokenizedSample& s) {
  int64_t n = 0;
  for (size_t t = 1; t < s.labels.size(); ++t) n += s.labels[t] != kIgnoreLabel;
  return n;
}

}  // namespace

struct DataLoader::EpochRows {
  int64_t epoch = -1;
  std::vector<std::vector<int64_t>> rows;  // sample indices, in order within the row
};

struct DataLoader::Cache {
  std::mutex mutex;
  std::shared_ptr<const EpochRows> last;
};

DataLoader::DataLoader(std::vector<TokenizedSample> samples, LoaderOptions options, int64_t pad_id)
    : samples_(std::move(samples)), options_(options), pad_id_(pad_id), cache_(std::make_shared<Cache>()) {
  if (samples_.empty()) fail("data loader: no samples to train on");
  if (options_.batch_size < 1) fail("data loader: batch_size must be at least 1, got {}", options_.batch_size);
  if (options_.max_seq_len < 2) fail("data loader: max_seq_len must be at least 2, got {}", options_.max_seq_len);
  const int64_t group = options_.rows_per_sample;
  if (group < 1 || static_cast<int64_t>(samples_.size()) % group != 0)
    fail("data loader: {} samples do not come in units of {} rows", samples_.size(), group);
  if (group > 1) options_.packing = false;
  const bool labelled = samples_.front().desirable >= 0;  // KTO records: one per row, their KL pairs by row
  if (labelled) options_.packing = false;
  for (size_t i = 0; i < samples_.size(); ++i) {
    const auto& s = samples_[i];
    if (s.input_ids.empty()) fail("data loader: sample {} has no tokens", i);
    if ((s.desirable >= 0) != labelled)
      fail("data loader: sample {} {} a KTO label but sample 0 {}: all samples carry one or none", i,
           s.desirable >= 0 ? "has" : "lacks", labelled ? "has" : "lacks");
    if (s.labels.size() != s.input_ids.size())
      fail("data loader: sample {} has {} labels for {} tokens; they must be aligned", i, s.labels.size(),
           s.input_ids.size());
    if (static_cast<int64_t>(s.input_ids.size()) > options_.max_seq_len)
      fail("data loader: sample {} has {} tokens, more than max_seq_len {} (tokenize with the same max_seq_len)", i,
           s.input_ids.size(), options_.max_seq_len);
    total_target_tokens_ += trained_targets(s);
  }
}

std::vector<int64_t> DataLoader::epoch_order(int64_t epoch) const {
  if (epoch < 0) fail("data loader: epoch must be >= 0, got {}", epoch);
  const int64_t n = static_cast<int64_t>(samples_.size()) / options_.rows_per_sample;
  if (options_.shuffle) return permutation(n, options_.seed, static_cast<uint64_t>(epoch));
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  return order;
}

std::shared_ptr<const DataLoader::EpochRows> DataLoader::rows_of(int64_t epoch) const {
  {
    std::lock_guard<std::mutex> lock(cache_->mutex);
    if (cache_->last && cache_->last->epoch == epoch) return cache_->last;
  }
  auto rows = std::make_shared<EpochRows>();
  rows->epoch = epoch;
  const int64_t group = options_.rows_per_sample;
  int64_t row_len = 0;
  for (int64_t i : epoch_order(epoch)) {
    if (group > 1) {  // a unit's samples, each in its own row
      for (int64_t k = 0; k < group; ++k) rows->rows.push_back({i * group + k});
      continue;
    }
    const int64_t len = static_cast<int64_t>(samples_[i].input_ids.size());
    // Greedy, in order: a sample that does not fit in the current row starts the next one.
    if (rows->rows.empty() || !options_.packing || row_len + len > options_.max_seq_len) {
      rows->rows.emplace_back();
      row_len = 0;
    }
    rows->rows.back().push_back(i);
    row_len += len;
  }
  std::lock_guard<std::mutex> lock(cache_->mutex);
  cache_->last = rows;
  return rows;
}

int64_t DataLoader::rows_per_epoch(int64_t epoch) const {
  return static_cast<int64_t>(rows_of(epoch)->rows.size()) / options_.rows_per_sample;
}

int64_t DataLoader::batches_per_epoch(int64_t epoch) const {
  return (rows_per_epoch(epoch) + options_.batch_size - 1) / options_.batch_size;
}

int64_t DataLoader::total_batches(int64_t epochs) const {
  int64_t total = 0;
  for (int64_t e = 0; e < epochs; ++e) total += batches_per_epoch(e);
  return total;
}

int64_t DataLoader::total_target_tokens() const { return total_target_tokens_; }

namespace {

// rows[r]: the samples of row r, packed in order; T = the longest row.
Batch collate(const std::vector<std::vector<const TokenizedSample*>>& rows, int64_t pad_id) {
  const auto b = static_cast<int64_t>(rows.size());
  int64_t t_max = 0;
  for (const auto& row : rows) {
    int64_t len = 0;
    for (const auto* s : row) len += static_cast<int64_t>(s->input_ids.size());
    t_max = std::max(t_max, len);
  }
  const auto opts = at::TensorOptions().dtype(at::kLong);
  Batch out;
  out.input_ids = at::full({b, t_max}, pad_id, opts);
  out.targets = at::full({b, t_max}, kIgnoreLabel, opts);
  out.position_ids = at::empty({b, t_max}, opts);
  out.segment_ids = at::full({b, t_max}, -1, opts);
  int64_t* ids = out.input_ids.data_ptr<int64_t>();
  int64_t* targets = out.targets.data_ptr<int64_t>();
  int64_t* positions = out.position_ids.data_ptr<int64_t>();
  int64_t* segments = out.segment_ids.data_ptr<int64_t>();
  for (int64_t r = 0; r < b; ++r) {
    const int64_t row = r * t_max;
    int64_t t = 0;
    int64_t segment = 0;
    for (const auto* sample : rows[r]) {
      const auto& s = *sample;
      const int64_t len = static_cast<int64_t>(s.input_ids.size());
      for (int64_t k = 0; k < len; ++k, ++t) {
        ids[row + t] = s.input_ids[k];
        positions[row + t] = k;
        segments[row + t] = segment;
        // Position k predicts the sample's own token k + 1; its last token predicts nothing (no crossing).
        if (k + 1 < len && s.labels[k + 1] != kIgnoreLabel) {
          targets[row + t] = s.labels[k + 1];
          ++out.target_tokens;
        }
      }
      ++segment;
      ++out.samples;
    }
    // Padding: its own segment, positions counting from 0 so that a causal mask by position gives every padded
    // query at least one key (no all-masked row, no NaN).
    for (int64_t k = 0; t < t_max; ++k, ++t) positions[row + t] = k;
  }
  return out;
}

}  // namespace

Batch DataLoader::batch(int64_t epoch, int64_t index) const {
  const auto rows = rows_of(epoch);
  const int64_t n_rows = static_cast<int64_t>(rows->rows.size());
  const int64_t batch_rows = options_.batch_size * options_.rows_per_sample;
  const int64_t n_batches = (n_rows + batch_rows - 1) / batch_rows;
  if (index < 0 || index >= n_batches)
    fail("data loader: batch {} of epoch {} does not exist (the epoch has {} batches)", index, epoch, n_batches);
  const int64_t first = index * batch_rows;
  const int64_t b = std::min(batch_rows, n_rows - first);
  std::vector<std::vector<const TokenizedSample*>> picked(b);
  for (int64_t r = 0; r < b; ++r)
    for (int64_t i : rows->rows[first + r]) picked[r].push_back(&samples_[i]);
  auto out = collate(picked, pad_id_);
  if (samples_.front().desirable >= 0) {  // KTO: each row's label, and the mismatched pairs of the KL term
    std::vector<const TokenizedSample*> own;
    std::vector<uint8_t> labels;
    for (const auto& row : picked) own.push_back(row.front()), labels.push_back(row.front()->desirable == 1);
    out.desirable = at::tensor(std::vector<int64_t>(labels.begin(), labels.end()), at::kLong).to(at::kBool);
    const auto mismatched = mismatched_rows(own, options_.max_seq_len);
    std::vector<std::vector<const TokenizedSample*>> kl_rows;
    for (const auto& s : mismatched) kl_rows.push_back({&s});
    out.mismatched = std::make_shared<const Batch>(collate(kl_rows, pad_id_));
  }
  return out;
}

std::vector<bool> eval_split(int64_t n, double eval_fraction, uint64_t seed) {
  if (!(eval_fraction > 0.0 && eval_fraction < 1.0))
    fail("eval_fraction must be between 0 and 1 (exclusive), got {}", eval_fraction);
  if (n < 2) fail("cannot hold out an eval split from {} sample(s): need at least 2", n);
  const int64_t n_eval = std::clamp<int64_t>(std::llround(eval_fraction * static_cast<double>(n)), 1, n - 1);
  const auto order = permutation(n, seed, kEvalSplitSalt);
  std::vector<bool> is_eval(n, false);
  for (int64_t k = 0; k < n_eval; ++k) is_eval[order[k]] = true;
  return is_eval;
}

std::pair<std::vector<TokenizedSample>, std::vector<TokenizedSample>> split_eval(std::vector<TokenizedSample> samples,
                                                                                 double eval_fraction, uint64_t seed) {
  const int64_t n = static_cast<int64_t>(samples.size());
  const auto is_eval = eval_split(n, eval_fraction, seed);
  std::pair<std::vector<TokenizedSample>, std::vector<TokenizedSample>> out;
  for (int64_t i = 0; i < n; ++i) (is_eval[i] ? out.second : out.first).push_back(std::move(samples[i]));
  return out;
}

Batch slice_rows(const Batch& batch, int64_t begin, int64_t end) {
  const int64_t rows = batch.input_ids.size(0);
  begin = std::clamp<int64_t>(begin, 0, rows);
  end = std::clamp<int64_t>(end, begin, rows);
  Batch out;
  out.input_ids = batch.input_ids.narrow(0, begin, end - begin);
  out.targets = batch.targets.narrow(0, begin, end - begin);
  out.position_ids = batch.position_ids.narrow(0, begin, end - begin);
  out.segment_ids = batch.segment_ids.narrow(0, begin, end - begin);
  if (batch.desirable.defined()) out.desirable = batch.desirable.narrow(0, begin, end - begin);
  if (batch.mismatched) out.mismatched = std::make_shared<const Batch>(slice_rows(*batch.mismatched, begin, end));
  if (end > begin) {
    out.target_tokens = out.targets.ne(kIgnoreLabel).sum().item<int64_t>();
    out.samples = (out.segment_ids.amax(1) + 1).sum().item<int64_t>();  // padding rows have segment -1 throughout
  }
  return out;
}

}  // namespace qtune::data
