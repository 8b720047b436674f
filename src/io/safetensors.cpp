#include "qtune/io/safetensors.h"

#include <nlohmann/json.hpp>

#include <cstring>

#include "qtune/io/atomic_file.h"
#include "qtune/util/error.h"

namespace qtune::io {

at::ScalarType to_scalar_type(DType dtype) {
  switch (dtype) {
    case DType::F64: return at::kDouble;
    case DType::F32: return at::kFloat;
    case DType::F16: return at::kHalf;
    case DType::BF16: return at::kBFloat16;
    case DType::I64: return at::kLong;
    case DType::I32: return at::kInt;
    case DType::I16: return at::kShort;
    case DType::I8: return at::kChar;
    case DType::U8: return at::kByte;
    case DType::BOOL: return at::kBool;
  }
  fail("internal: unknown dtype");
}

DType from_scalar_type(at::ScalarType type) {
  switch (type) {
    case at::kDouble: return DType::F64;
    case at::kFloat: return DType::F32;
    case at::kHalf: return DType::F16;
    case at::kBFloat16: return DType::BF16;
    case at::kLong: return DType::I64;
    case at::kInt: return DType::I32;
    case at::kShort: return DType::I16;
    case at::kChar: return DType::I8;
    case at::kByte: return DType::U8;
    case at::kBool: return DType::BOOL;
    default: fail("dtype {} cannot be stored in safetensors", c10::toString(type));
  }
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto result = std::make_shared<SafetensorsFile>();
  result->file_ = MappedFile::open(path);
  result->header_ = parse_safetensors_header(result->file_->data(), result->file_->size(), path);
  for (size_t i = 0; i < result->header_.tensors.size(); ++i) result->index_[result->header_.tensors[i].name] = i;
  return result;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (info == nullptr) fail("{}: no tensor named '{}'", path(), name);
  const auto type = to_scalar_type(info->dtype);
  uint8_t* ptr = file_->data() + header_.data_start + info->begin;
  const auto opts = at::TensorOptions().dtype(type).device(at::kCPU);
  if (info->nbytes() == 0) return at::empty(info->shape, opts);
  if (reinterpret_cast<uintptr_t>(ptr) % dtype_size(info->dtype) != 0) {
    auto out = at::empty(info->shape, opts);
    std::memcpy(out.data_ptr(), ptr, info->nbytes());
    return out;
  }
  auto keep_alive = file_;
  return at::from_blob(ptr, info->shape, [keep_alive](void*) {}, opts);
}

void SafetensorsFile::release(const std::string& name) const {
  if (const TensorInfo* info = find(name)) file_->release(header_.data_start + info->begin, info->nbytes());
}

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> data;
  data.reserve(tensors.size());
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") fail("{}: '__metadata__' is reserved and cannot name a tensor", path);
    if (header.contains(name)) fail("{}: tensor '{}' given twice", path, name);
    auto cpu = t.detach().to(at::kCPU).contiguous();
    const uint64_t nbytes = cpu.numel() * cpu.element_size();
    header[name] = {{"dtype", dtype_name(from_scalar_type(cpu.scalar_type()))},
                    {"shape", cpu.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    data.push_back(std::move(cpu));
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // data section starts 8-byte aligned, as the reference writer does
  write_file_atomically(path, [&](std::ostream& out) {
    uint8_t len[8];
    uint64_t n = json.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(json.data(), static_cast<std::streamsize>(json.size()));
    for (const auto& t : data)
      out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
  });
}

}  // namespace qtune::io
