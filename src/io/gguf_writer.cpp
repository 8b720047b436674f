#include "qtune/io/gguf_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <set>

#include "qtune/io/atomic_file.h"
#include "qtune/util/error.h"

namespace qtune::io {
namespace {

namespace fs = std::filesystem;

class Encoder {
 public:
  explicit Encoder(std::string& out) : out_(out) {}
  template <typename T>
  void pod(T v) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    out_.append(b, sizeof(T));
  }
  void string(const std::string& s) {
    pod<uint64_t>(s.size());
    out_ += s;
  }
  void value(GgufValueType type, const nlohmann::json& v, const std::string& key) {
    try {
      switch (type) {
        case GgufValueType::UINT8: return pod<uint8_t>(v.get<uint8_t>());
        case GgufValueType::INT8: return pod<int8_t>(v.get<int8_t>());
        case GgufValueType::UINT16: return pod<uint16_t>(v.get<uint16_t>());
        case GgufValueType::INT16: return pod<int16_t>(v.get<int16_t>());
        case GgufValueType::UINT32: return pod<uint32_t>(v.get<uint32_t>());
        case GgufValueType::INT32: return pod<int32_t>(v.get<int32_t>());
        case GgufValueType::FLOAT32: return pod<float>(v.get<float>());
        case GgufValueType::BOOL: return pod<uint8_t>(v.get<bool>() ? 1 : 0);
        case GgufValueType::STRING: return string(v.get_ref<const std::string&>());
        case GgufValueType::UINT64: return pod<uint64_t>(v.get<uint64_t>());
        case GgufValueType::INT64: return pod<int64_t>(v.get<int64_t>());
        case GgufValueType::FLOAT64: return pod<double>(v.get<double>());
        case GgufValueType::ARRAY: break;
      }
    } catch (const nlohmann::json::exception&) {
      fail("GGUF metadata '{}': the value {} does not have the declared type", key, v.dump().substr(0, 80));
    }
    fail("GGUF metadata '{}': nested arrays are not written", key);
  }

 private:
  std::string& out_;
};

uint64_t align_up(uint64_t n) { return (n + kGgufAlignment - 1) / kGgufAlignment * kGgufAlignment; }

}  // namespace

void GgufMetadata::set(const std::string& key, GgufValue value) {
  for (auto& [k, v] : entries_)
    if (k == key) {
      v = std::move(value);
      return;
    }
  entries_.emplace_back(key, std::move(value));
}

bool GgufMetadata::copy_from(const GgufHeader& header, const std::string& key) {
  const auto type = header.value_types.find(key);
  if (type == header.value_types.end()) return false;
  if (type->second == GgufValueType::ARRAY) {
    const auto& a = header.arrays.at(key);
    set(key, GgufValue{GgufValueType::ARRAY, a.to_json(), a.element_type});
  } else {
    set(key, GgufValue{type->second, header.metadata.at(key)});
  }
  return true;
}

bool GgufMetadata::contains(const std::string& key) const {
  for (const auto& e : entries_)
    if (e.first == key) return true;
  return false;
}

GgufWriter::GgufWriter(std::string path, const GgufMetadata& metadata, std::vector<GgufTensorDecl> tensors)
    : path_(std::move(path)), tmp_(path_ + ".tmp"), tensors_(std::move(tensors)) {
  if (fs::exists(path_)) fail("'{}' exists; choose a new file name (nothing was overwritten)", path_);
  std::string header;
  Encoder e(header);
  header += "GGUF";
  e.pod<uint32_t>(3);
  e.pod<uint64_t>(tensors_.size());
  e.pod<uint64_t>(metadata.entries().size());
  for (const auto& [key, v] : metadata.entries()) {
    e.string(key);
    e.pod<uint32_t>(static_cast<uint32_t>(v.type));
    if (v.type != GgufValueType::ARRAY) {
      e.value(v.type, v.value, key);
      continue;
    }
    if (!v.value.is_array()) fail("GGUF metadata '{}': declared an array, given {}", key, v.value.type_name());
    e.pod<uint32_t>(static_cast<uint32_t>(v.element_type));
    e.pod<uint64_t>(v.value.size());
    for (const auto& item : v.value) e.value(v.element_type, item, key);
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    if (!names.insert(t.name).second) fail("{}: tensor '{}' declared twice", path_, t.name);
    if (t.shape.empty() || t.shape.size() > 4) fail("{}: tensor '{}' must have 1 to 4 dimensions", path_, t.name);
    const auto& info = quant::ggml_type_info(t.type);
    if (t.shape.back() % info.block_elems != 0)
      fail("{}: tensor '{}': rows of {} values are not whole {} blocks of {}", path_, t.name, t.shape.back(), info.name,
           info.block_elems);
    int64_t numel = 1;
    for (auto d : t.shape) numel *= d;
    nbytes_.push_back(quant::ggml_nbytes(t.type, numel));
    e.string(t.name);
    e.pod<uint32_t>(static_cast<uint32_t>(t.shape.size()));
    for (auto d = t.shape.rbegin(); d != t.shape.rend(); ++d) e.pod<uint64_t>(static_cast<uint64_t>(*d));
    e.pod<uint32_t>(static_cast<uint32_t>(t.type));
    e.pod<uint64_t>(offset);
    offset = align_up(offset + nbytes_.back());
  }
  header.resize(align_up(header.size()), '\0');

  std::error_code ec;
  fs::remove(tmp_, ec);
  out_.open(tmp_, std::ios::binary | std::ios::trunc);
  if (!out_) fail("cannot write '{}' (is its directory writable?)", tmp_);
  out_.write(header.data(), static_cast<std::streamsize>(header.size()));
  written_ = 0;
}

GgufWriter::~GgufWriter() {
  if (finished_) return;
  out_.close();
  std::error_code ec;
  fs::remove(tmp_, ec);
}

void GgufWriter::write(const std::string& name, const uint8_t* data, uint64_t nbytes) {
  if (next_ >= tensors_.size()) fail("{}: tensor '{}' was not declared", path_, name);
  const auto& t = tensors_[next_];
  if (t.name != name) fail("{}: tensor '{}' written where '{}' was declared", path_, name, t.name);
  if (nbytes != nbytes_[next_])
    fail("{}: tensor '{}' has {} bytes; its shape and type {} need {}", path_, name, nbytes,
         quant::ggml_type_info(t.type).name, nbytes_[next_]);
  out_.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(nbytes));
  static const char zeros[kGgufAlignment] = {};
  const auto padded = align_up(nbytes);
  out_.write(zeros, static_cast<std::streamsize>(padded - nbytes));
  if (!out_) fail("writing '{}' failed (disk full?)", tmp_);
  written_ += padded;
  ++next_;
}

uint64_t GgufWriter::finish() {
  if (next_ != tensors_.size())
    fail("{}: {} of {} declared tensors were written", path_, next_, tensors_.size());
  out_.flush();
  if (!out_) fail("writing '{}' failed (disk full?)", tmp_);
  out_.close();
  const int fd = ::open(tmp_.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  if (fs::exists(path_)) fail("'{}' appeared while it was being written; nothing was overwritten", path_);
  fs::rename(tmp_, path_);
  fsync_directory(fs::absolute(path_).parent_path().string());
  finished_ = true;
  return fs::file_size(path_);
}

}  // namespace qtune::io
