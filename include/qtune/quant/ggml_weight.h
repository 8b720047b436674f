#pragma once
// A frozen weight kept exactly as a GGUF stores it (quant.format keep): the rows of ggml blocks (Q4_0 ... Q6_K) as
// uint8 [out_features, row_bytes] and their type, no re-quantization and no 16-bit copy. Dequantized through
// kernels/dequant_ggml.h, to the same values dequantize_ggml (and gguf-py) give.
#include <string>

#include "qtune/quant/ggml_types.h"
#include "qtune/quant/quantized_weight.h"

namespace qtune::quant {

// The ggml types a GgmlWeight can hold: the block types with a kernel (F32/F16/BF16 tensors load dense instead).
bool ggml_weight_supports(GgmlType type);

class GgmlWeight : public QuantizedWeight {
 public:
  // blocks: contiguous uint8 [out_features, ggml_nbytes(type, in_features)], on any device.
  GgmlWeight(GgmlType type, at::Tensor blocks, int64_t in_features);
  at::Tensor dequantize(at::ScalarType dtype) const override;
  int64_t out_features() const override { return blocks_.size(0); }
  int64_t in_features() const override { return in_features_; }
  std::string format() const override;  // "gguf-q4_1", "gguf-q6_k"
  int64_t storage_bytes() const override { return blocks_.numel(); }
  void to(at::Device device) override { blocks_ = blocks_.to(device); }
  at::Device device() const override { return blocks_.device(); }
  GgmlType type() const { return type_; }
  const at::Tensor& blocks() const { return blocks_; }

 private:
  GgmlType type_;
  at::Tensor blocks_;
  int64_t in_features_;
};

// Valid random blocks, uint8 [rows, ggml_nbytes(type, cols)] for benchmarks and kernel tests: random bytes with every
// f16 scale and min replaced by a finite half of either sign, magnitude max_scale * 10^-4 ... max_scale (5% exactly
// zero), as tests/oracle/gguf_blocks.py makes them.
at::Tensor random_ggml_blocks(GgmlType type, int64_t rows, int64_t cols, at::Generator& gen, double max_scale = 1.0);

}  // namespace qtune::quant
