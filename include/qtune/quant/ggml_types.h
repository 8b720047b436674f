#pragma once
// ggml's tensor types as GGUF stores them: numbering, block sizes and byte sizes (llama.cpp's ggml-common.h). Torch-free,
// so the GGUF header parser that validates sizes with it can be fuzzed on its own; dequantization is gguf_blocks.h.
#include <cstdint>

namespace qtune::quant {

// The numbering of ggml's `enum ggml_type` (the values stored in GGUF tensor infos).
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, BF16 = 30,
};

struct GgmlTypeInfo {
  GgmlType type;
  const char* name;      // as gguf-py names it: "Q4_K", "BF16"
  int64_t block_elems;   // values per block (1 for plain types)
  int64_t block_bytes;   // bytes per block
  bool dequantizable;    // qtune can turn it into float32 (gguf_blocks.h)
};

// nullptr for a value that is not a ggml type qtune knows.
const GgmlTypeInfo* ggml_type_info(uint32_t type);
const GgmlTypeInfo& ggml_type_info(GgmlType type);
// Bytes of `n_elements` values; an error when n_elements is not a whole number of blocks or the bytes overflow 64 bits.
uint64_t ggml_nbytes(GgmlType type, int64_t n_elements);

}  // namespace qtune::quant
