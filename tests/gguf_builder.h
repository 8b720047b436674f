#pragma once
// GGUF files byte by byte, as gguf-py's GGUFWriter lays them out, for the tests that need a file qtune did not write:
// the header parser's valid and broken inputs, and tiny models whose tensors are ggml blocks of every type.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace qtune::test {

class GgufBuilder {
 public:
  template <typename T>
  void raw(T v) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    bytes_.append(b, sizeof(T));
  }
  void count_kv() { ++n_kv_; }  // after writing a key/value by hand with raw() and str()
  void append(const std::string& bytes) { bytes_ += bytes; }
  void str(const std::string& s) {
    raw<uint64_t>(s.size());
    bytes_ += s;
  }
  void kv_u32(const std::string& key, uint32_t v) { str(key); raw<uint32_t>(4); raw<uint32_t>(v); ++n_kv_; }
  void kv_f32(const std::string& key, float v) { str(key); raw<uint32_t>(6); raw<float>(v); ++n_kv_; }
  void kv_bool(const std::string& key, bool v) { str(key); raw<uint32_t>(7); raw<uint8_t>(v); ++n_kv_; }
  void kv_str(const std::string& key, const std::string& v) { str(key); raw<uint32_t>(8); str(v); ++n_kv_; }
  void kv_strs(const std::string& key, const std::vector<std::string>& v) {
    str(key);
    raw<uint32_t>(9);
    raw<uint32_t>(8);
    raw<uint64_t>(v.size());
    for (const auto& s : v) str(s);
    ++n_kv_;
  }
  struct Tensor {
    std::string name;
    std::vector<uint64_t> dims;
    uint32_t type;
    uint64_t offset;
  };
  void tensor(Tensor t) { tensors_.push_back(std::move(t)); }
  // magic, version, counts, metadata, tensor infos, padding to `alignment`, then `data`.
  std::string build(const std::string& data, uint32_t version = 3, uint64_t alignment = 32) const {
    GgufBuilder head;
    head.bytes_ = "GGUF";
    head.raw<uint32_t>(version);
    head.raw<uint64_t>(tensors_.size());
    head.raw<uint64_t>(n_kv_);
    head.bytes_ += bytes_;
    for (const auto& t : tensors_) {
      head.str(t.name);
      head.raw<uint32_t>(t.dims.size());
      for (auto d : t.dims) head.raw<uint64_t>(d);
      head.raw<uint32_t>(t.type);
      head.raw<uint64_t>(t.offset);
    }
    std::string out = head.bytes_;
    out.resize((out.size() + alignment - 1) / alignment * alignment, '\0');
    return out + data;
  }

 private:
  std::string bytes_;
  uint64_t n_kv_ = 0;
  std::vector<Tensor> tensors_;
};

}  // namespace qtune::test
