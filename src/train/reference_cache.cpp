#include "qtune/train/reference_cache.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <unordered_set>
#include <vector>

#include "qtune/dist/communicator.h"
#include "qtune/io/safetensors.h"
#include "qtune/train/checkpoint.h"
#include "qtune/train/recipe.h"
#include "qtune/util/error.h"

namespace qtune::train {
namespace {

// Keys of every row of a global micro-batch and of its mismatched pairs (KTO), the rows first.
std::vector<uint64_t> keys_of(const data::Batch& b) {
  std::vector<uint64_t> out;
  for (int64_t i = 0; i < b.input_ids.size(0); ++i) out.push_back(ReferenceTable::row_key(b, i));
  if (b.mismatched)
    for (int64_t i = 0; i < b.mismatched->input_ids.size(0); ++i)
      out.push_back(ReferenceTable::row_key(*b.mismatched, i));
  return out;
}

// The rows the run reads, each once, in the order first read.
std::vector<uint64_t> needed_keys(const MicroBatchVisitor& batches) {
  std::vector<uint64_t> order;
  std::unordered_set<uint64_t> seen;
  batches([&](const data::Batch& global, int64_t) {
    for (const auto k : keys_of(global))
      if (seen.insert(k).second) order.push_back(k);
  });
  return order;
}

// The file's table when it can be used, else why not.
std::optional<ReferenceTable> read_table(const std::string& path, const std::string& fingerprint,
                                         const std::vector<uint64_t>& needed, std::string& why) {
  if (!std::filesystem::exists(path)) {
    why = "none yet";
    return std::nullopt;
  }
  try {
    const auto file = io::SafetensorsFile::open(path);
    const auto& meta = file->metadata();
    const auto it = meta.find("fingerprint");
    if (it == meta.end() || it->second != fingerprint) {
      why = fmt::format("{} was computed for another base, data or settings (fingerprint {}, this run {})", path,
                        it == meta.end() ? "none" : it->second, fingerprint);
      return std::nullopt;
    }
    const auto keys = file->tensor("keys").to(at::kCPU).contiguous();
    const auto logps = file->tensor("logps").to(at::kCPU).contiguous();
    if (keys.scalar_type() != at::kLong || logps.scalar_type() != at::kFloat || keys.dim() != 1 ||
        logps.sizes() != keys.sizes())
      fail("'keys' must be int64 [N] and 'logps' fp32 [N]");
    ReferenceTable table;
    const auto* k = keys.data_ptr<int64_t>();
    const auto* v = logps.data_ptr<float>();
    for (int64_t i = 0; i < keys.size(0); ++i) table.insert(static_cast<uint64_t>(k[i]), v[i]);
    int64_t missing = 0;
    for (const auto key : needed) missing += table.contains(key) ? 0 : 1;
    if (missing > 0) {
      why = fmt::format("{} lacks {} of the {} rows this run reads", path, missing, needed.size());
      return std::nullopt;
    }
    return table;
  } catch (const std::exception& e) {
    why = fmt::format("{} is unreadable ({})", path, e.what());
    return std::nullopt;
  }
}

// Each rank computes the reference of the rows first read in its share of a micro-batch, in that share's shape (the
// values the step would compute); a sum over the ranks gathers them, each row having one owner.
ReferenceTable compute_table(nn::CausalLMImpl& model, const MicroBatchVisitor& batches,
                             const std::vector<uint64_t>& order, dist::Communicator& comm) {
  const int64_t ranks = comm.connected() ? comm.size() : 1, rank = comm.connected() ? comm.rank() : 0;
  std::unordered_map<uint64_t, int64_t> slot;
  for (size_t i = 0; i < order.size(); ++i) slot.emplace(order[i], static_cast<int64_t>(i));
  auto values = at::zeros({static_cast<int64_t>(order.size())}, at::kDouble);
  auto* v = values.data_ptr<double>();
  std::unordered_set<uint64_t> done;
  batches([&](const data::Batch& global, int64_t share_rows) {
    const data::Batch mine =
        ranks > 1 ? data::slice_rows(global, rank * share_rows, (rank + 1) * share_rows) : global;
    // The rows of `part` (the micro-batch or its mismatched pairs) read here for the first time and in this rank's
    // share: its reference forward, kept in their slots.
    auto fill = [&](const data::Batch* part, const data::Batch* my_part) {
      if (!part) return;
      std::vector<std::pair<int64_t, uint64_t>> first;
      for (int64_t i = 0; i < part->input_ids.size(0); ++i) {
        const auto key = ReferenceTable::row_key(*part, i);
        if (done.insert(key).second && (ranks == 1 || i / share_rows == rank)) first.emplace_back(i, key);
      }
      if (first.empty() || !my_part) return;
      const auto logps = reference_logps(model, *my_part).to(at::kCPU).to(at::kDouble).contiguous();
      const auto* l = logps.data_ptr<double>();
      const int64_t offset = ranks > 1 ? rank * share_rows : 0;
      for (const auto& [i, key] : first) v[slot.at(key)] = l[i - offset];
    };
    fill(&global, &mine);
    fill(global.mismatched.get(), mine.mismatched.get());
  });
  if (comm.connected()) {
    std::vector<at::Tensor> all{values};
    comm.all_reduce_sum(all, "the precomputed reference log-probabilities");
    values = all[0].contiguous();
  }
  ReferenceTable table;
  const auto* sum = values.data_ptr<double>();
  for (size_t i = 0; i < order.size(); ++i) table.insert(order[i], static_cast<float>(sum[i]));
  return table;
}

}  // namespace

std::string reference_fingerprint(const Recipe& r) {
  std::string text = "reference log-probabilities v1\n";
  for (const auto& path : {r.data.train, r.data.eval})
    if (!path.empty()) text += "data " + file_hash(path) + "\n";
  // The base as its files stand (hashing a multi-GiB base's bytes would cost more than the forward it saves).
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  if (fs::is_directory(r.model.path)) {
    for (const auto& e : fs::directory_iterator(r.model.path))
      if (e.is_regular_file()) files.push_back(e.path());
  } else if (fs::exists(r.model.path)) {
    files.push_back(r.model.path);
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files)
    text += fmt::format("model {} {} {}\n", f.filename().string(), fs::file_size(f),
                        fs::last_write_time(f).time_since_epoch().count());
  // The keys that change neither the rows' contents nor the base with its adapters off are left out: a resume that
  // changes them (with --force) keeps the cache, whose rows are checked one by one anyway.
  auto irrelevant = [](const std::string& k) {
    for (const char* prefix : {"optim.", "schedule.", "lora.", "dpo.", "kto.", "orpo.", "simpo."})
      if (k.rfind(prefix, 0) == 0) return true;
    if (k.rfind("train.", 0) == 0) return k != "train.precision" && k != "train.mode";
    return k == "data.train" || k == "data.eval" || k == "model.path";  // their contents are hashed above
  };
  for (const auto& [k, v] : r.run_affecting_values())
    if (!irrelevant(k)) text += k + "=" + v + "\n";
  return text_hash(text);
}

PreparedReference prepare_reference(nn::CausalLMImpl& model, const std::string& path, const std::string& fingerprint,
                                    const MicroBatchVisitor& batches, dist::Communicator& comm) {
  const auto start = std::chrono::steady_clock::now();
  const bool root = !comm.connected() || comm.rank() == 0;
  const auto needed = needed_keys(batches);
  PreparedReference out;
  std::string why;
  std::optional<ReferenceTable> read;
  if (root) read = read_table(path, fingerprint, needed, why);
  const auto wait = std::chrono::hours(1);
  const auto decision = comm.share_from_root("reference_cache", read ? "read" : "compute", wait);
  if (decision == "read") {
    if (!root) {
      std::string unused;
      read = read_table(path, fingerprint, needed, unused);
      if (!read) fail("{}: rank 0 read it, this rank cannot ({})", path, unused);
    }
    out.table = std::move(*read);
    out.message = fmt::format("reference log-probabilities: read {} rows from {} (train.precompute_ref_log_probs)",
                              out.table.size(), path);
    return out;
  }
  out.table = compute_table(model, batches, needed, comm);
  out.computed = true;
  if (root) {
    std::vector<int64_t> keys;
    std::vector<float> values;
    for (const auto k : needed) keys.push_back(static_cast<int64_t>(k)), values.push_back(out.table.values().at(k));
    io::write_safetensors(path,
                          {{"keys", at::tensor(keys, at::kLong)}, {"logps", at::tensor(values, at::kFloat)}},
                          {{"fingerprint", fingerprint}, {"rows", std::to_string(keys.size())}});
  }
  comm.share_from_root("reference_cache_written", "", wait);  // the others wait for the file
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  out.message = fmt::format("reference log-probabilities: computed {} rows in {:.1f} s, cached in {} "
                            "(train.precompute_ref_log_probs)",
                            needed.size(), seconds, path);
  if (root && why != "none yet") out.note = why + "; recomputed it";
  return out;
}

}  // namespace qtune::train
