#include "qtune/quant/ggml_weight.h"

#include <fmt/ranges.h>

#include <cctype>
#include <vector>

#include "qtune/kernels/dequant_ggml.h"
#include "qtune/util/error.h"

namespace qtune::quant {

bool ggml_weight_supports(GgmlType type) { return kernels::ggml_kernel_supports(type); }

GgmlWeight::GgmlWeight(GgmlType type, at::Tensor blocks, int64_t in_features)
    : type_(type), blocks_(std::move(blocks)), in_features_(in_features) {
  const auto& info = ggml_type_info(type_);
  if (!ggml_weight_supports(type_))
    fail("a kept GGUF weight must be one of the block types Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, "
         "Q6_K; got {}", info.name);
  const auto row_bytes = static_cast<int64_t>(ggml_nbytes(type_, in_features_));  // checks whole blocks
  if (blocks_.scalar_type() != at::kByte || blocks_.dim() != 2 || blocks_.size(1) != row_bytes)
    fail("a kept {} weight of {} inputs must be uint8 [out_features, {}], got {} [{}]", info.name, in_features_,
         row_bytes, c10::toString(blocks_.scalar_type()), fmt::join(blocks_.sizes(), ", "));
  blocks_ = blocks_.contiguous();
}

at::Tensor GgmlWeight::dequantize(at::ScalarType dtype) const {
  return kernels::dequantize_ggml_rows(type_, blocks_, in_features_, dtype);
}

std::string GgmlWeight::format() const {
  std::string name = ggml_type_info(type_).name;
  for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return "gguf-" + name;
}

namespace {

// Byte offsets of the f16 fields (d, and m / dmin where the type has one) in one block (ggml-common.h's block_*).
std::vector<int64_t> half_fields(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_0: case GgmlType::Q5_0: case GgmlType::Q8_0: return {0};
    case GgmlType::Q4_1: case GgmlType::Q5_1: case GgmlType::Q4_K: case GgmlType::Q5_K: return {0, 2};
    case GgmlType::Q2_K: return {80, 82};
    case GgmlType::Q3_K: return {108};
    case GgmlType::Q6_K: return {208};
    default: fail("random_ggml_blocks: {} is not a block type", ggml_type_info(type).name);
  }
}

}  // namespace

at::Tensor random_ggml_blocks(GgmlType type, int64_t rows, int64_t cols, at::Generator& gen, double max_scale) {
  const auto& info = ggml_type_info(type);
  const auto fields = half_fields(type);
  if (!(max_scale > 0 && max_scale <= 65504)) fail("random_ggml_blocks: max_scale {} is not a finite half", max_scale);
  const auto row_bytes = static_cast<int64_t>(ggml_nbytes(type, cols));
  auto bytes = at::randint(256, {rows, row_bytes}, gen, at::kByte);
  const int64_t blocks = rows * (cols / info.block_elems), n = static_cast<int64_t>(fields.size());
  const auto sign = at::randint(2, {blocks, n}, gen, at::kFloat) * 2 - 1;
  const auto magnitude = at::pow(10.0, at::rand({blocks, n}, gen) * 4 - 4) * max_scale;
  const auto halves = (sign * magnitude).masked_fill(at::rand({blocks, n}, gen) < 0.05, 0).to(at::kHalf).contiguous();
  const auto* h = halves.data_ptr<c10::Half>();
  uint8_t* b = bytes.data_ptr<uint8_t>();
  for (int64_t k = 0; k < blocks; ++k)
    for (int64_t f = 0; f < n; ++f) {
      const uint16_t bits = h[k * n + f].x;
      uint8_t* field = b + k * info.block_bytes + fields[f];  // blocks are back to back, rows too
      field[0] = static_cast<uint8_t>(bits & 0xFF);
      field[1] = static_cast<uint8_t>(bits >> 8);
    }
  return bytes;
}

}  // namespace qtune::quant
