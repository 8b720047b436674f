#include "qtune/io/sharded_checkpoint.h"

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "qtune/util/error.h"

namespace qtune::io {
namespace fs = std::filesystem;

namespace {

std::string shape_str(at::IntArrayRef shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

}  // namespace

std::shared_ptr<ShardedCheckpoint> ShardedCheckpoint::open(const std::string& dir) {
  if (!fs::is_directory(dir)) fail("{}: not a directory (expected a Hugging Face model directory)", dir);
  auto ckpt = std::make_shared<ShardedCheckpoint>();
  ckpt->dir_ = dir;

  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  std::vector<std::string> shard_files;
  std::map<std::string, std::string> index_map;  // tensor -> shard file, from the index
  if (fs::exists(index_path)) {
    std::ifstream in(index_path);
    nlohmann::json index;
    try {
      index = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      fail("{}: not valid JSON: {}", index_path.string(), e.what());
    }
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      fail("{}: missing object key 'weight_map'", index_path.string());
    for (const auto& [tensor, file] : index["weight_map"].items()) {
      if (!file.is_string()) fail("{}: weight_map['{}'] must be a file name", index_path.string(), tensor);
      const auto f = file.get<std::string>();
      if (f.find('/') != std::string::npos || f == "..")
        fail("{}: weight_map['{}'] = '{}' must be a file in the same directory", index_path.string(), tensor, f);
      index_map[tensor] = f;
      if (std::find(shard_files.begin(), shard_files.end(), f) == shard_files.end()) shard_files.push_back(f);
    }
    for (const auto& f : shard_files)
      if (!fs::exists(fs::path(dir) / f))
        fail("{}: shard '{}' listed in model.safetensors.index.json is missing", dir, f);
  } else if (fs::exists(fs::path(dir) / "model.safetensors")) {
    shard_files.push_back("model.safetensors");
  } else {
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file() && e.path().extension() == ".safetensors") shard_files.push_back(e.path().filename());
    std::sort(shard_files.begin(), shard_files.end());
    if (shard_files.empty()) fail("{}: no model.safetensors, model.safetensors.index.json or *.safetensors found", dir);
  }

  for (const auto& f : shard_files) {
    auto shard = SafetensorsFile::open((fs::path(dir) / f).string());
    const size_t idx = ckpt->shards_.size();
    for (const auto& t : shard->tensors()) {
      auto [it, inserted] = ckpt->where_.emplace(t.name, idx);
      if (!inserted)
        fail("{}: tensor '{}' appears in both {} and {}", dir, t.name, ckpt->shards_[it->second]->path(), shard->path());
    }
    ckpt->shards_.push_back(std::move(shard));
  }
  for (const auto& [tensor, file] : index_map) {
    auto it = ckpt->where_.find(tensor);
    if (it == ckpt->where_.end() || fs::path(ckpt->shards_[it->second]->path()).filename() != file)
      fail("{}: model.safetensors.index.json maps '{}' to {}, which does not contain it", dir, tensor, file);
  }
  return ckpt;
}

bool ShardedCheckpoint::has(const std::string& name) const { return where_.count(name) != 0; }

const SafetensorsFile& ShardedCheckpoint::shard_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail("{}: checkpoint has no tensor '{}'", dir_, name);
  return *shards_[it->second];
}

const TensorInfo& ShardedCheckpoint::info(const std::string& name) const { return *shard_of(name).find(name); }

at::Tensor ShardedCheckpoint::tensor(const std::string& name) const { return shard_of(name).tensor(name); }

std::string ShardedCheckpoint::origin(const std::string& name) const {
  auto it = where_.find(name);
  return it == where_.end() ? dir_ + ": tensor '" + name + "'" : shards_[it->second]->path() + ": tensor '" + name + "'";
}

at::Tensor ShardedCheckpoint::get(const std::string& name, at::IntArrayRef shape) const {
  const auto& shard = shard_of(name);
  const auto& ti = *shard.find(name);
  if (at::IntArrayRef(ti.shape) != shape)
    fail("{}: tensor '{}' has shape {} but the model config expects {}", shard.path(), name, shape_str(ti.shape),
         shape_str(shape));
  return shard.tensor(name);
}

std::vector<std::string> ShardedCheckpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [name, _] : where_) out.push_back(name);
  return out;
}

uint64_t ShardedCheckpoint::total_bytes() const {
  uint64_t total = 0;
  for (const auto& s : shards_)
    for (const auto& t : s->tensors()) total += t.nbytes();
  return total;
}

}  // namespace qtune::io
