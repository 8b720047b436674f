#pragma once
// Raw-pointer description of a 4-bit dequantization, shared by the CPU and CUDA implementations (plain C++,
// no ATen: the .cu files compile with nvcc alone).
#include <cstdint>

namespace qtune::kernels {

enum class OutType : int { F32 = 0, BF16 = 1, F16 = 2 };

struct Dequant4bitParams {
  const uint8_t* packed = nullptr;  // ceil(n / 2) bytes, element 2i in the high nibble of byte i
  int64_t n = 0;
  int64_t blocksize = 64;
  const float* code = nullptr;      // 16 values
  const float* absmax = nullptr;    // [blocks], or null when double-quantized:
  const uint8_t* absmax_codes = nullptr;
  const float* nested_map = nullptr;     // 256 values
  const float* nested_absmax = nullptr;  // per nested block
  int64_t nested_blocksize = 256;
  float offset = 0.0f;
};

// Block b's scale, exactly as bitsandbytes computes it: fp32 code * nested absmax, then + offset.
#if defined(__CUDACC__)
__host__ __device__
#endif
inline float block_absmax(const Dequant4bitParams& p, int64_t block) {
  if (p.absmax != nullptr) return p.absmax[block];
  return p.nested_map[p.absmax_codes[block]] * p.nested_absmax[block / p.nested_blocksize] + p.offset;
}

// CUDA launcher (src/kernels/cuda/dequant_4bit.cu); `stream` is a cudaStream_t.
void dequantize_4bit_cuda(const Dequant4bitParams& params, OutType out_type, void* out, void* stream);

}  // namespace qtune::kernels
