#include "qtune/io/gguf.h"

#include <filesystem>

#include "qtune/util/error.h"
#include "qtune/util/strings.h"

namespace qtune::io {

bool is_gguf_path(const std::string& path) {
  return ends_with(path, ".gguf") && std::filesystem::is_regular_file(path);
}

std::shared_ptr<GgufFile> GgufFile::open(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) fail("{}: GGUF file not found", path);
  auto f = std::shared_ptr<GgufFile>(new GgufFile());
  f->map_ = MappedFile::open(path);
  f->header_ = parse_gguf_header(f->map_->data(), f->map_->size(), path);
  for (size_t i = 0; i < f->header_.tensors.size(); ++i) f->index_[f->header_.tensors[i].name] = i;
  return f;
}

namespace {
const char* json_kind(const nlohmann::json& v) {
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a bool";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a float";
  if (v.is_array()) return "an array";
  return "another type";
}
}  // namespace

std::optional<std::string> GgufFile::string(const std::string& key) const {
  auto it = metadata().find(key);
  if (it == metadata().end()) {
    if (header_.arrays.count(key)) fail("{}: metadata '{}' must be a string, got an array", path(), key);
    return std::nullopt;
  }
  if (!it->is_string()) fail("{}: metadata '{}' must be a string, got {}", path(), key, json_kind(*it));
  return it->get<std::string>();
}

std::optional<int64_t> GgufFile::integer(const std::string& key) const {
  auto it = metadata().find(key);
  if (it == metadata().end()) {
    if (header_.arrays.count(key)) fail("{}: metadata '{}' must be an integer, got an array", path(), key);
    return std::nullopt;
  }
  if (!it->is_number_integer()) fail("{}: metadata '{}' must be an integer, got {}", path(), key, json_kind(*it));
  if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    fail("{}: metadata '{}' = {} is out of range", path(), key, it->dump());
  return it->get<int64_t>();
}

std::optional<double> GgufFile::number(const std::string& key) const {
  auto it = metadata().find(key);
  if (it == metadata().end()) {
    if (header_.arrays.count(key)) fail("{}: metadata '{}' must be a number, got an array", path(), key);
    return std::nullopt;
  }
  if (!it->is_number()) fail("{}: metadata '{}' must be a number, got {}", path(), key, json_kind(*it));
  return it->get<double>();
}

std::optional<bool> GgufFile::boolean(const std::string& key) const {
  auto it = metadata().find(key);
  if (it == metadata().end()) {
    if (header_.arrays.count(key)) fail("{}: metadata '{}' must be a bool, got an array", path(), key);
    return std::nullopt;
  }
  if (!it->is_boolean()) fail("{}: metadata '{}' must be a bool, got {}", path(), key, json_kind(*it));
  return it->get<bool>();
}

const nlohmann::json* GgufFile::array(const std::string& key) const {
  const auto a = header_.arrays.find(key);
  if (a == header_.arrays.end()) {
    if (auto it = metadata().find(key); it != metadata().end())
      fail("{}: metadata '{}' must be an array, got {}", path(), key, json_kind(*it));
    return nullptr;
  }
  std::lock_guard lock(decoded_mutex_);
  auto& slot = decoded_[key];
  if (!slot) slot = std::make_unique<const nlohmann::json>(a->second.to_json());
  return slot.get();
}

std::string GgufFile::require_string(const std::string& key) const {
  auto v = string(key);
  if (!v) fail("{}: metadata '{}' is missing", path(), key);
  return *v;
}

int64_t GgufFile::require_integer(const std::string& key) const {
  auto v = integer(key);
  if (!v) fail("{}: metadata '{}' is missing", path(), key);
  return *v;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

const GgufTensorInfo& GgufFile::tensor_info(const std::string& name) const {
  const auto* t = find_tensor(name);
  if (t == nullptr) fail("{}: tensor '{}' not found", path(), name);
  return *t;
}

at::Tensor GgufFile::dequantize(const GgufTensorInfo& t) const {
  try {
    return quant::dequantize_ggml(t.type, data(t), t.numel()).view(t.torch_shape());
  } catch (const Error& e) {
    fail("{}: tensor '{}': {}", path(), t.name, e.what());
  }
}

}  // namespace qtune::io
