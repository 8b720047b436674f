#include "qtune/io/sharded_writer.h"

#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "qtune/io/atomic_file.h"

namespace qtune::io {

namespace fs = std::filesystem;

void ShardedWriter::add(const std::string& name, const at::Tensor& t) {
  const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
  if (pending_bytes_ > 0 && pending_bytes_ + bytes > max_bytes_) flush();
  pending_.emplace_back(name, t.contiguous());
  pending_bytes_ += bytes;
  result_.bytes += bytes;
  ++result_.tensors;
}

void ShardedWriter::flush() {
  if (pending_.empty()) return;
  const auto file = fmt::format("shard-{}.tmp.safetensors", shards_.size());
  std::vector<std::string> names;
  for (const auto& [n, t] : pending_) names.push_back(n);
  write_safetensors((fs::path(dir_) / file).string(), pending_, {{"format", "pt"}});
  shards_.emplace_back(file, std::move(names));
  pending_.clear();
  pending_bytes_ = 0;
}

ShardedWriter::Result ShardedWriter::finish() {
  flush();
  // Final names once the count is known, and the index transformers reads for a sharded checkpoint.
  result_.shards = static_cast<int64_t>(shards_.size());
  nlohmann::ordered_json index;
  index["metadata"]["total_size"] = result_.bytes;
  for (size_t i = 0; i < shards_.size(); ++i) {
    const auto name = shards_.size() == 1 ? std::string("model.safetensors")
                                          : fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards_.size());
    fs::rename(fs::path(dir_) / shards_[i].first, fs::path(dir_) / name);
    for (const auto& t : shards_[i].second) index["weight_map"][t] = name;
  }
  if (shards_.size() > 1) write_text_atomically((fs::path(dir_) / "model.safetensors.index.json").string(), index.dump(2) + "\n");
  return result_;
}

}  // namespace qtune::io
