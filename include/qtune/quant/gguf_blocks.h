#pragma once
// Dequantization of ggml's block formats (quant/ggml_types.h) to float32, bit-identical to gguf-py's
// `gguf.quants.dequantize` (the reference the tests use). A type qtune cannot dequantize is an error naming it.
#include <ATen/ATen.h>

#include <cstdint>

#include "qtune/quant/ggml_types.h"

namespace qtune::quant {

// `n_elements` values stored at `data` (ggml_nbytes(type, n) bytes) as a float32 CPU tensor of shape [n_elements].
at::Tensor dequantize_ggml(GgmlType type, const uint8_t* data, int64_t n_elements);

}  // namespace qtune::quant
