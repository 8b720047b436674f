#pragma once
// Raw-pointer description of a ggml-block dequantization, shared by the CPU and CUDA implementations (plain C++, no
// ATen: the .cu file compiles with nvcc alone).
#include <cstdint>

#include "qtune/kernels/dequant_params.h"  // OutType
#include "qtune/quant/ggml_types.h"

namespace qtune::kernels {

struct DequantGgmlParams {
  quant::GgmlType type = quant::GgmlType::Q8_0;  // one of the ten block types of quant/ggml_block_layout.h
  const uint8_t* blocks = nullptr;                 // [rows, row_bytes]: each row's blocks back to back
  int64_t rows = 0;
  int64_t cols = 0;       // values per row, a whole number of blocks
  int64_t row_bytes = 0;  // ggml_nbytes(type, cols)
};

// CUDA launcher (src/kernels/cuda/dequant_ggml.cu); `stream` is a cudaStream_t.
void dequantize_ggml_cuda(const DequantGgmlParams& params, OutType out_type, void* out, void* stream);

}  // namespace qtune::kernels
