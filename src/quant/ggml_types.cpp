#include "qtune/quant/ggml_types.h"

#include <array>

#include "qtune/util/error.h"

namespace qtune::quant {
namespace {

constexpr int64_t QK = 32;    // values per block of the legacy types (QK4_0, QK8_0, ...)
constexpr int64_t QK_K = 256;  // values per super-block of the K-quants

// Block sizes as ggml-common.h's static_asserts; names as gguf-py's GGMLQuantizationType.
const std::array<GgmlTypeInfo, 20> kTypes = {{
    {GgmlType::F32, "F32", 1, 4, true},
    {GgmlType::F16, "F16", 1, 2, true},
    {GgmlType::Q4_0, "Q4_0", QK, 2 + QK / 2, true},
    {GgmlType::Q4_1, "Q4_1", QK, 2 + 2 + QK / 2, true},
    {GgmlType::Q5_0, "Q5_0", QK, 2 + 4 + QK / 2, true},
    {GgmlType::Q5_1, "Q5_1", QK, 2 + 2 + 4 + QK / 2, true},
    {GgmlType::Q8_0, "Q8_0", QK, 2 + QK, true},
    // An activation format (ggml never stores weights in it): d and s are halves now (gguf-py still says 40 bytes,
    // from when they were floats).
    {GgmlType::Q8_1, "Q8_1", QK, 2 + 2 + QK, false},
    {GgmlType::Q2_K, "Q2_K", QK_K, 2 + 2 + QK_K / 16 + QK_K / 4, true},
    {GgmlType::Q3_K, "Q3_K", QK_K, 2 + QK_K / 4 + QK_K / 8 + 12, true},
    {GgmlType::Q4_K, "Q4_K", QK_K, 2 + 2 + 12 + QK_K / 2, true},
    {GgmlType::Q5_K, "Q5_K", QK_K, 2 + 2 + 12 + QK_K / 8 + QK_K / 2, true},
    {GgmlType::Q6_K, "Q6_K", QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16, true},
    {GgmlType::Q8_K, "Q8_K", QK_K, 4 + QK_K + QK_K / 8, false},  // likewise an activation format
    {GgmlType::I8, "I8", 1, 1, false},
    {GgmlType::I16, "I16", 1, 2, false},
    {GgmlType::I32, "I32", 1, 4, false},
    {GgmlType::I64, "I64", 1, 8, false},
    {GgmlType::F64, "F64", 1, 8, false},
    {GgmlType::BF16, "BF16", 1, 2, true},
}};

}  // namespace

const GgmlTypeInfo* ggml_type_info(uint32_t type) {
  for (const auto& t : kTypes)
    if (static_cast<uint32_t>(t.type) == type) return &t;
  return nullptr;
}

const GgmlTypeInfo& ggml_type_info(GgmlType type) {
  const auto* t = ggml_type_info(static_cast<uint32_t>(type));
  if (!t) fail("ggml type {} is not one qtune knows (expected one of ggml's F32 ... BF16 numbers)", static_cast<uint32_t>(type));
  return *t;
}

uint64_t ggml_nbytes(GgmlType type, int64_t n_elements) {
  const auto& info = ggml_type_info(type);
  if (n_elements < 0) fail("ggml_nbytes: {} element count must be >= 0, got {}", info.name, n_elements);
  if (n_elements % info.block_elems != 0)
    fail("ggml_nbytes: {} stores values in blocks of {}, got {} values (not a whole number of blocks)", info.name,
         info.block_elems, n_elements);
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(n_elements / info.block_elems),
                             static_cast<uint64_t>(info.block_bytes), &bytes))
    fail("ggml_nbytes: {} values of {} take more than 2^64 bytes", n_elements, info.name);
  return bytes;
}

}  // namespace qtune::quant
